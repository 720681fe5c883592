//! Home Assistant MQTT discovery configs: one device per mesh node, an
//! entity per point, executor and actuator exposed to MQTT. Pure functions:
//! they build messages, the bridge publishes them (always retained).
//!
//! The contract (`P` the topic prefix, `D` the discovery prefix, `ID` the
//! node id's 16 hex digits, `NODE` its name):
//!
//! - Topic `D/COMPONENT/shoal_ID/OBJECT/config`: `COMPONENT` is `sensor`,
//!   `binary_sensor`, `button` or `switch`; `OBJECT` is the entity's tag
//!   (`p_` point, `x_` executor, `a_` actuator) and then [`object_id`] of
//!   its name, so a point, an executor and an actuator of one name never
//!   share a topic. Both parts fit Home Assistant's topic pattern
//!   (`[a-zA-Z0-9_-]+`).
//! - `unique_id` `shoal_ID_TAG_NAME`: the id has a fixed length and the tag
//!   one letter, so the id, the kind and the name can be read back from it;
//!   two nodes or two kinds never share one.
//! - Availability, all of: the bridge (`P/bridge/BRIDGE` is `active`), the
//!   node (`P/NODE/availability` is `online`) and, for a point, its sensor
//!   (`P/NODE/POINT/attributes` has no `error`). Home Assistant starts each
//!   topic unavailable, so a point shows a value only once all three said so.
//! - `device`: `identifiers` `["shoal_ID"]`, the node's name, model and
//!   version, `via_device` the bridge (unless it is the bridge).
//!
//! Device and state classes ([`classes`]) come from Home Assistant's own
//! tables (`homeassistant/components/sensor/const.py`, `DEVICE_CLASS_UNITS`
//! and `DEVICE_CLASS_STATE_CLASSES`, as of 2026.2): a unit gets a device
//! class only where Home Assistant accepts that unit for it, since an MQTT
//! sensor with a unit its class does not accept is refused outright.

use serde_json::{json, Map, Value};
use shoal_core::wire::NodeId;

/// Where the bridge publishes: `mqtt.topic_prefix` and `mqtt.discovery_prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// The prefix of every shoal topic (`shoal`).
    pub prefix: String,
    /// Home Assistant's discovery prefix (`homeassistant`); empty turns
    /// discovery off.
    pub discovery: String,
}

/// A mesh node as Home Assistant sees it: one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Device<'a> {
    /// Its node id.
    pub id: NodeId,
    /// Its name, as in its topics.
    pub name: &'a str,
    /// Its board model, when known (`Raspberry Pi 4 Model B Rev 1.4`).
    pub model: Option<&'a str>,
    /// Its shoal version, when known.
    pub version: Option<&'a str>,
}

/// What a point's values are, which decides its Home Assistant component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Numbers: a `sensor` with a unit and classes.
    Numeric,
    /// `true` / `false`: a `binary_sensor`.
    Binary,
    /// Text: a `sensor` without unit or classes.
    Text,
}

/// One Home Assistant entity of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity<'a> {
    /// A data point of the node.
    Point {
        /// The point's name.
        name: &'a str,
        /// Its unit symbol, empty for none.
        unit: &'a str,
        /// Its values' kind.
        kind: Kind,
    },
    /// An executor exposed to MQTT (`mqtt = true`): a button that runs it.
    Button {
        /// The executor's name.
        executor: &'a str,
    },
    /// An actuator exposed to MQTT: a switch; its state is the node's Bool
    /// point `switch.ACTUATOR`, its command topic `P/NODE/switch.ACTUATOR/set`.
    Switch {
        /// The actuator's name.
        actuator: &'a str,
    },
}

/// A message for the broker, always published retained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its topic.
    pub topic: String,
    /// Its payload: a JSON config, or empty to remove one.
    pub payload: String,
}

impl Entity<'_> {
    /// The entity's name: its point's, executor's or actuator's.
    pub fn name(&self) -> &str {
        match self {
            Entity::Point { name, .. } => name,
            Entity::Button { executor } => executor,
            Entity::Switch { actuator } => actuator,
        }
    }

    /// The Home Assistant component that shows it.
    pub fn component(&self) -> &'static str {
        match self {
            Entity::Point {
                kind: Kind::Binary, ..
            } => "binary_sensor",
            Entity::Point { .. } => "sensor",
            Entity::Button { .. } => "button",
            Entity::Switch { .. } => "switch",
        }
    }

    /// One letter for its kind of entity, in its object id and unique id.
    fn tag(&self) -> &'static str {
        match self {
            Entity::Point { .. } => "p",
            Entity::Button { .. } => "x",
            Entity::Switch { .. } => "a",
        }
    }
}

/// The discovery config of `entity` of `device`, published by `bridge`
/// (`None` when discovery is disabled).
pub fn config(
    topics: &Topics,
    device: &Device<'_>,
    bridge: &Device<'_>,
    entity: &Entity<'_>,
) -> Option<Message> {
    let topic = discovery_topic(topics, device.id, entity)?;
    let prefix = topics.prefix.as_str();
    let mut payload = Map::new();
    payload.insert("name".into(), entity.name().into());
    payload.insert("unique_id".into(), unique_id(device.id, entity).into());
    entity_fields(&mut payload, prefix, device.name, entity);
    payload.insert("availability_mode".into(), "all".into());
    payload.insert(
        "availability".into(),
        availability(prefix, device.name, bridge.name, entity),
    );
    payload.insert("device".into(), device_block(device, bridge));
    payload.insert(
        "origin".into(),
        json!({ "name": "shoal", "sw_version": env!("CARGO_PKG_VERSION") }),
    );
    Some(Message {
        topic,
        payload: Value::Object(payload).to_string(),
    })
}

/// The retained empty message that removes `entity` of `device` from Home
/// Assistant (`None` when discovery is disabled). A point removed must be
/// described as it was published: its kind decides the component.
pub fn removal(topics: &Topics, device: NodeId, entity: &Entity<'_>) -> Option<Message> {
    Some(Message {
        topic: discovery_topic(topics, device, entity)?,
        payload: String::new(),
    })
}

/// The `unique_id` of `entity` of `device`: `shoal_ID_TAG_NAME`.
pub fn unique_id(device: NodeId, entity: &Entity<'_>) -> String {
    format!("shoal_{device}_{}_{}", entity.tag(), entity.name())
}

/// The Home Assistant device identifier of a node: `shoal_ID`.
pub fn device_identifier(device: NodeId) -> String {
    format!("shoal_{device}")
}

/// An injective escape of a shoal name into Home Assistant's object id
/// alphabet `[a-zA-Z0-9_-]`: letters, digits and `-` stay, `_` becomes
/// `__`, `.` becomes `_d`, and anything else (never in a valid name)
/// `_u` + its code point in hex + `_`. Every escape starts with `_` and
/// the letter after it says how long it is, so an object id reads back
/// to exactly one name.
pub fn object_id(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for c in name.chars() {
        match c {
            '_' => out.push_str("__"),
            '.' => out.push_str("_d"),
            c if c.is_ascii_alphanumeric() || c == '-' => out.push(c),
            c => out.push_str(&format!("_u{:x}_", u32::from(c))),
        }
    }
    out
}

/// `device_class` and `state_class` of a numeric point named `point` with
/// `unit`: a device class only where Home Assistant accepts the unit for
/// it; `measurement` unless the class is a running total (energy).
///
/// `%` and `ppm` belong to several classes (humidity, moisture, battery;
/// carbon dioxide, carbon monoxide, VOC), and shoal also measures disk and
/// memory in `%`, so for those two the point's last name segment decides
/// (`env.humidity` is humidity, `sys.disk_free` has no class).
pub fn classes(point: &str, unit: &str) -> (Option<&'static str>, Option<&'static str>) {
    let device_class = match unit {
        "%" => class_by_name(point, PERCENT_CLASSES),
        "ppm" => class_by_name(point, PPM_CLASSES),
        unit => UNIT_CLASSES
            .iter()
            .find(|(_, units)| units.contains(&unit))
            .map(|(class, _)| *class),
    };
    let state_class = if TOTAL_CLASSES.contains(&device_class.unwrap_or("")) {
        "total_increasing"
    } else {
        "measurement"
    };
    (device_class, Some(state_class))
}

/// Units by device class, each unit one Home Assistant accepts for that
/// class (`DEVICE_CLASS_UNITS`); every class here allows `measurement`
/// except those in [`TOTAL_CLASSES`].
const UNIT_CLASSES: &[(&str, &[&str])] = &[
    ("temperature", &["°C", "°F", "K"]),
    (
        "pressure",
        &[
            "Pa", "hPa", "kPa", "bar", "cbar", "mbar", "mmHg", "inHg", "psi",
        ],
    ),
    ("illuminance", &["lx"]),
    ("voltage", &["V", "mV", "kV"]),
    ("current", &["A", "mA"]),
    ("power", &["W", "kW"]),
    ("energy", &["Wh", "kWh", "MWh"]),
    ("frequency", &["Hz", "kHz", "MHz", "GHz"]),
    ("duration", &["ms", "s", "min", "h", "d"]),
    (
        "data_size",
        &["B", "kB", "MB", "GB", "TB", "KiB", "MiB", "GiB", "TiB"],
    ),
    ("distance", &["mm", "cm", "m", "km"]),
];

/// Classes whose values only grow: Home Assistant allows `total` and
/// `total_increasing` for them, never `measurement`.
const TOTAL_CLASSES: &[&str] = &["energy"];

/// `%` classes by a word in the point's name.
const PERCENT_CLASSES: &[(&str, &str)] = &[
    ("humid", "humidity"),
    ("moist", "moisture"),
    ("battery", "battery"),
];

/// `ppm` classes by a word in the point's name.
const PPM_CLASSES: &[(&str, &str)] = &[("co2", "carbon_dioxide")];

/// The class of the first word of `table` in the last segment of `point`.
fn class_by_name(point: &str, table: &[(&str, &'static str)]) -> Option<&'static str> {
    let last = point
        .rsplit('.')
        .next()
        .unwrap_or(point)
        .to_ascii_lowercase();
    table
        .iter()
        .find(|(word, _)| last.contains(word))
        .map(|(_, class)| *class)
}

/// `D/COMPONENT/shoal_ID/TAG_OBJECT/config`, or `None` without a prefix.
fn discovery_topic(topics: &Topics, device: NodeId, entity: &Entity<'_>) -> Option<String> {
    if topics.discovery.is_empty() {
        return None;
    }
    Some(format!(
        "{}/{}/{}/{}_{}/config",
        topics.discovery,
        entity.component(),
        device_identifier(device),
        entity.tag(),
        object_id(entity.name()),
    ))
}

/// Adds the fields particular to the entity's component to `payload`.
fn entity_fields(payload: &mut Map<String, Value>, prefix: &str, node: &str, entity: &Entity<'_>) {
    let mut put = |key: &str, value: String| {
        payload.insert(key.to_owned(), Value::String(value));
    };
    match *entity {
        Entity::Point { name, unit, kind } => {
            put("state_topic", format!("{prefix}/{node}/{name}"));
            put(
                "json_attributes_topic",
                format!("{prefix}/{node}/{name}/attributes"),
            );
            match kind {
                Kind::Numeric => {
                    if !unit.is_empty() {
                        put("unit_of_measurement", unit.to_owned());
                    }
                    let (device_class, state_class) = classes(name, unit);
                    if let Some(device_class) = device_class {
                        put("device_class", device_class.to_owned());
                    }
                    if let Some(state_class) = state_class {
                        put("state_class", state_class.to_owned());
                    }
                }
                Kind::Binary => {
                    put("payload_on", "true".to_owned());
                    put("payload_off", "false".to_owned());
                }
                Kind::Text => {}
            }
        }
        Entity::Button { executor } => {
            put(
                "command_topic",
                format!("{prefix}/{node}/exec/{executor}/run"),
            );
            put("payload_press", "PRESS".to_owned());
        }
        Entity::Switch { actuator } => {
            put(
                "command_topic",
                format!("{prefix}/{node}/switch.{actuator}/set"),
            );
            put("state_topic", format!("{prefix}/{node}/switch.{actuator}"));
            put("payload_on", "ON".to_owned());
            put("payload_off", "OFF".to_owned());
            put("state_on", "true".to_owned());
            put("state_off", "false".to_owned());
        }
    }
}

/// The bridge, the node and (for a point) its sensor must all be up.
fn availability(prefix: &str, node: &str, bridge: &str, entity: &Entity<'_>) -> Value {
    let mut list = vec![
        json!({
            "topic": format!("{prefix}/bridge/{bridge}"),
            "payload_available": "active",
            "payload_not_available": "offline",
        }),
        json!({
            "topic": format!("{prefix}/{node}/availability"),
            "payload_available": "online",
            "payload_not_available": "offline",
        }),
    ];
    if let Entity::Point { name, .. } = entity {
        list.push(json!({
            "topic": format!("{prefix}/{node}/{name}/attributes"),
            "value_template": "{{ 'offline' if value_json.error else 'online' }}",
            "payload_available": "online",
            "payload_not_available": "offline",
        }));
    }
    Value::Array(list)
}

/// The `device` block: the node, reached through the bridge.
fn device_block(device: &Device<'_>, bridge: &Device<'_>) -> Value {
    let model = device
        .model
        .filter(|model| !model.is_empty())
        .unwrap_or("shoal node");
    let mut block = json!({
        "identifiers": [device_identifier(device.id)],
        "name": device.name,
        "model": model,
    });
    if model.starts_with("Raspberry Pi") {
        block["manufacturer"] = "Raspberry Pi Ltd".into();
    }
    if let Some(version) = device.version.filter(|version| !version.is_empty()) {
        block["sw_version"] = version.into();
    }
    if device.id != bridge.id {
        block["via_device"] = device_identifier(bridge.id).into();
    }
    block
}

#[cfg(test)]
mod tests;
