//! A stand-in for Home Assistant's MQTT discovery in tests: checks retained
//! discovery messages the way Home Assistant 2026.2 reads them, written from
//! its source (`homeassistant/components/mqtt/`: `discovery.py` for the
//! topic, `abbreviations.py`, `schemas.py` and `config.py` for the shared
//! keys, availability, device and origin, `sensor.py`, `binary_sensor.py`,
//! `button.py` and `switch.py` for each component; `sensor/const.py` for
//! units and state classes), never from shoal's own discovery module.
//!
//! Stricter than Home Assistant where its leniency hides a mistake: a
//! top-level key it does not know is an error here (Home Assistant drops it
//! silently, so the option is lost), as are a missing `unique_id` or device
//! `name`, a wildcard in any topic (shoal publishes names, never filters),
//! two availability entries on one topic (Home Assistant keeps one), a
//! deprecated `object_id`, a state class the device class does not allow
//! (Home Assistant only warns) and a `via_device` naming no device of the set.

use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};

/// Checks one retained discovery message the way Home Assistant would; Err
/// says what is wrong. An empty payload (a removal) is valid.
pub(crate) fn validate(discovery_prefix: &str, topic: &str, payload: &str) -> Result<(), String> {
    check(discovery_prefix, topic, payload).map(|_| ())
}

/// Checks a whole set of retained messages, in publishing order (a later
/// message on a topic replaces the earlier one, an empty one removes it):
/// each message valid; in what remains, `unique_id`s unique, every config
/// with a device block that agrees with the other configs of its device,
/// and every `via_device` a device of the set.
pub(crate) fn validate_all(
    discovery_prefix: &str,
    messages: &[(String, String)],
) -> Result<(), String> {
    let mut retained: BTreeMap<&str, Map<String, Value>> = BTreeMap::new();
    for (topic, payload) in messages {
        match check(discovery_prefix, topic, payload).map_err(|e| format!("{topic}: {e}"))? {
            Some(config) => retained.insert(topic, config),
            None => retained.remove(topic.as_str()),
        };
    }
    let mut unique_ids: HashMap<&str, &str> = HashMap::new();
    let mut devices: HashMap<String, (&str, Map<String, Value>)> = HashMap::new();
    for (&topic, config) in &retained {
        let unique_id = config["unique_id"].as_str().unwrap_or_default();
        if let Some(first) = unique_ids.insert(unique_id, topic) {
            return Err(format!(
                "unique_id `{unique_id}` is used by both {first} and {topic}: Home Assistant keeps only one"
            ));
        }
        let Some(Value::Object(device)) = config.get("device") else {
            return Err(format!("{topic}: no `device` block"));
        };
        for identifier in identifiers(device) {
            let facts = device_facts(device);
            match devices.get(&identifier) {
                Some((other, known)) if *known != facts => {
                    return Err(format!(
                        "device `{identifier}` is described differently by {other} ({known:?}) and {topic} ({facts:?})"
                    ))
                }
                Some(_) => {}
                None => {
                    devices.insert(identifier, (topic, facts));
                }
            }
        }
    }
    for (&topic, config) in &retained {
        if let Some(via) = config["device"].get("via_device").and_then(Value::as_str) {
            if !devices.contains_key(via) {
                return Err(format!(
                    "{topic}: via_device `{via}` is no device of the set (Home Assistant would make an empty one)"
                ));
            }
        }
    }
    Ok(())
}

/// One message checked: the config with abbreviations expanded, or `None`
/// for a removal.
fn check(
    discovery_prefix: &str,
    topic: &str,
    payload: &str,
) -> Result<Option<Map<String, Value>>, String> {
    let component = component_of(discovery_prefix, topic)?;
    if payload.is_empty() {
        return Ok(None);
    }
    let Ok(Value::Object(raw)) = serde_json::from_str::<Value>(payload) else {
        return Err(format!("the payload is not a JSON object: {payload}"));
    };
    let config = expanded(raw)?;
    check_keys(component, &config)?;
    check_availability(&config)?;
    match config.get("device") {
        Some(Value::Object(device)) => check_device(device)?,
        Some(other) => return Err(format!("`device` must be an object, not {other}")),
        None => {}
    }
    if let Some(origin) = config.get("origin") {
        check_origin(origin)?;
    }
    match component {
        "sensor" => check_sensor(&config)?,
        "binary_sensor" => check_class(&config, BINARY_SENSOR_CLASSES)?,
        "button" => check_class(&config, BUTTON_CLASSES)?,
        _ => check_class(&config, SWITCH_CLASSES)?,
    }
    Ok(Some(config))
}

/// The component of a discovery topic: `PREFIX/COMPONENT/[NODE_ID/]OBJECT_ID/config`,
/// as Home Assistant subscribes (`+/config`, `+/+/config`) and matches it
/// (`[a-zA-Z0-9_-]+` for both ids).
fn component_of<'t>(discovery_prefix: &str, topic: &'t str) -> Result<&'t str, String> {
    let rest = topic
        .strip_prefix(discovery_prefix)
        .and_then(|rest| rest.strip_prefix('/'))
        .ok_or_else(|| {
            format!("`{topic}` is not under the discovery prefix `{discovery_prefix}/`")
        })?;
    let levels: Vec<&str> = rest.split('/').collect();
    let (component, ids) = match levels.as_slice() {
        [component, ids @ .., "config"] if (1..=2).contains(&ids.len()) => (*component, ids),
        _ => {
            return Err(format!(
                "`{topic}` is not PREFIX/COMPONENT/[NODE_ID/]OBJECT_ID/config"
            ))
        }
    };
    let id_alphabet = |id: &str| {
        !id.is_empty()
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    if let Some(bad) = ids.iter().find(|id| !id_alphabet(id)) {
        return Err(format!(
            "`{bad}` in `{topic}` has characters outside [a-zA-Z0-9_-]: Home Assistant ignores the message"
        ));
    }
    if !["sensor", "binary_sensor", "button", "switch"].contains(&component) {
        return Err(format!(
            "component `{component}` is not one this validator knows (sensor, binary_sensor, button, switch)"
        ));
    }
    Ok(component)
}

/// The value types of configuration keys.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Type {
    /// A string.
    Text,
    /// A string or `null`.
    TextOrNull,
    /// A topic Home Assistant subscribes to.
    Subscribe,
    /// A topic Home Assistant publishes to.
    Publish,
    /// `true` or `false`.
    Bool,
    /// A whole number, 0 or more.
    Count,
    /// 0, 1 or 2.
    Qos,
    /// A list (`options`).
    List,
    /// Checked on its own (availability, device, origin).
    Block,
}

/// Keys every component knows (`MQTT_ENTITY_COMMON_SCHEMA`, the
/// availability schemas and `MQTT_BASE_SCHEMA`).
const COMMON_KEYS: &[(&str, Type)] = &[
    ("availability", Type::Block),
    ("availability_mode", Type::Text),
    ("availability_template", Type::Text),
    ("availability_topic", Type::Subscribe),
    ("default_entity_id", Type::Text),
    ("device", Type::Block),
    ("enabled_by_default", Type::Bool),
    ("encoding", Type::Text),
    ("entity_category", Type::Text),
    ("entity_picture", Type::Text),
    ("icon", Type::Text),
    ("json_attributes_template", Type::Text),
    ("json_attributes_topic", Type::Subscribe),
    ("name", Type::TextOrNull),
    ("object_id", Type::Text),
    ("origin", Type::Block),
    ("payload_available", Type::Text),
    ("payload_not_available", Type::Text),
    ("qos", Type::Qos),
    ("unique_id", Type::Text),
];

/// `sensor.py` on `MQTT_RO_SCHEMA`.
const SENSOR_KEYS: &[(&str, Type)] = &[
    ("state_topic", Type::Subscribe),
    ("value_template", Type::Text),
    ("device_class", Type::TextOrNull),
    ("expire_after", Type::Count),
    ("force_update", Type::Bool),
    ("last_reset_value_template", Type::Text),
    ("options", Type::List),
    ("suggested_display_precision", Type::Count),
    ("state_class", Type::TextOrNull),
    ("unit_of_measurement", Type::TextOrNull),
];

/// `binary_sensor.py` on `MQTT_RO_SCHEMA`.
const BINARY_SENSOR_KEYS: &[(&str, Type)] = &[
    ("state_topic", Type::Subscribe),
    ("value_template", Type::Text),
    ("device_class", Type::TextOrNull),
    ("expire_after", Type::Count),
    ("force_update", Type::Bool),
    ("off_delay", Type::Count),
    ("payload_off", Type::Text),
    ("payload_on", Type::Text),
];

/// `button.py` on `MQTT_BASE_SCHEMA`.
const BUTTON_KEYS: &[(&str, Type)] = &[
    ("command_template", Type::Text),
    ("command_topic", Type::Publish),
    ("device_class", Type::TextOrNull),
    ("payload_press", Type::Text),
    ("retain", Type::Bool),
];

/// `switch.py` on `MQTT_RW_SCHEMA`.
const SWITCH_KEYS: &[(&str, Type)] = &[
    ("command_topic", Type::Publish),
    ("optimistic", Type::Bool),
    ("retain", Type::Bool),
    ("state_topic", Type::Subscribe),
    ("command_template", Type::Text),
    ("payload_off", Type::Text),
    ("payload_on", Type::Text),
    ("state_off", Type::Text),
    ("state_on", Type::Text),
    ("value_template", Type::Text),
    ("device_class", Type::TextOrNull),
];

/// Abbreviations of the keys above (`ABBREVIATIONS`), also used inside
/// availability entries.
const ABBREVIATIONS: &[(&str, &str)] = &[
    ("avty", "availability"),
    ("avty_mode", "availability_mode"),
    ("avty_t", "availability_topic"),
    ("avty_tpl", "availability_template"),
    ("cmd_t", "command_topic"),
    ("cmd_tpl", "command_template"),
    ("def_ent_id", "default_entity_id"),
    ("dev", "device"),
    ("dev_cla", "device_class"),
    ("e", "encoding"),
    ("en", "enabled_by_default"),
    ("ent_cat", "entity_category"),
    ("ent_pic", "entity_picture"),
    ("exp_aft", "expire_after"),
    ("frc_upd", "force_update"),
    ("ic", "icon"),
    ("json_attr_t", "json_attributes_topic"),
    ("json_attr_tpl", "json_attributes_template"),
    ("lrst_val_tpl", "last_reset_value_template"),
    ("o", "origin"),
    ("obj_id", "object_id"),
    ("off_dly", "off_delay"),
    ("opt", "optimistic"),
    ("ops", "options"),
    ("pl_avail", "payload_available"),
    ("pl_not_avail", "payload_not_available"),
    ("pl_off", "payload_off"),
    ("pl_on", "payload_on"),
    ("pl_prs", "payload_press"),
    ("ret", "retain"),
    ("stat_cla", "state_class"),
    ("stat_off", "state_off"),
    ("stat_on", "state_on"),
    ("stat_t", "state_topic"),
    ("sug_dsp_prc", "suggested_display_precision"),
    ("t", "topic"),
    ("uniq_id", "unique_id"),
    ("unit_of_meas", "unit_of_measurement"),
    ("val_tpl", "value_template"),
];

/// `DEVICE_ABBREVIATIONS`.
const DEVICE_ABBREVIATIONS: &[(&str, &str)] = &[
    ("cns", "connections"),
    ("cu", "configuration_url"),
    ("ids", "identifiers"),
    ("mf", "manufacturer"),
    ("mdl", "model"),
    ("mdl_id", "model_id"),
    ("hw", "hw_version"),
    ("sw", "sw_version"),
    ("sa", "suggested_area"),
    ("sn", "serial_number"),
];

/// `ORIGIN_ABBREVIATIONS`.
const ORIGIN_ABBREVIATIONS: &[(&str, &str)] = &[("sw", "sw_version"), ("url", "support_url")];

/// `config` with every abbreviation written out (top level, availability
/// entries, device, origin) and the topic base `~` applied.
fn expanded(config: Map<String, Value>) -> Result<Map<String, Value>, String> {
    let mut config = unabbreviated(config, ABBREVIATIONS)?;
    if let Some(list) = config.get_mut("availability") {
        let entries = match list {
            Value::Array(entries) => entries,
            single => std::slice::from_mut(single),
        };
        for entry in entries {
            if let Value::Object(fields) = entry {
                *fields = unabbreviated(std::mem::take(fields), ABBREVIATIONS)?;
            }
        }
    }
    for (key, table) in [
        ("device", DEVICE_ABBREVIATIONS),
        ("origin", ORIGIN_ABBREVIATIONS),
    ] {
        if let Some(Value::Object(fields)) = config.get_mut(key) {
            *fields = unabbreviated(std::mem::take(fields), table)?;
        }
    }
    if let Some(base) = config.remove("~") {
        let Value::String(base) = base else {
            return Err(format!("the topic base `~` must be a string, not {base}"));
        };
        apply_topic_base(&mut config, &base);
    }
    Ok(config)
}

/// `fields` with the abbreviations of `table` written out; both forms of
/// one key is an error (Home Assistant would keep the abbreviated one).
fn unabbreviated(
    fields: Map<String, Value>,
    table: &[(&str, &str)],
) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for (key, value) in fields {
        let full = table
            .iter()
            .find(|(short, _)| *short == key)
            .map_or(key.as_str(), |(_, full)| full)
            .to_owned();
        if out.contains_key(&full) {
            return Err(format!("`{full}` is given twice (abbreviated and in full)"));
        }
        out.insert(full, value);
    }
    Ok(out)
}

/// `~` at the start or end of a `*topic` value (and of availability
/// topics) stands for `base`.
fn apply_topic_base(config: &mut Map<String, Value>, base: &str) {
    let expand = |value: &mut Value| {
        if let Value::String(topic) = value {
            if let Some(rest) = topic.strip_prefix('~') {
                *topic = format!("{base}{rest}");
            }
            if let Some(rest) = topic.strip_suffix('~') {
                *topic = format!("{rest}{base}");
            }
        }
    };
    for (key, value) in config.iter_mut() {
        if key.ends_with("topic") {
            expand(value);
        }
    }
    if let Some(Value::Array(entries)) = config.get_mut("availability") {
        for entry in entries {
            if let Some(topic) = entry.get_mut("topic") {
                expand(topic);
            }
        }
    }
}

/// Only keys the component knows, each of its type; the required ones.
fn check_keys(component: &str, config: &Map<String, Value>) -> Result<(), String> {
    let (own, required) = match component {
        "sensor" => (SENSOR_KEYS, "state_topic"),
        "binary_sensor" => (BINARY_SENSOR_KEYS, "state_topic"),
        "button" => (BUTTON_KEYS, "command_topic"),
        _ => (SWITCH_KEYS, "command_topic"),
    };
    for (key, value) in config {
        let Some(&(_, kind)) = own.iter().chain(COMMON_KEYS).find(|(k, _)| k == key) else {
            return Err(format!(
                "`{key}` is not a {component} option: Home Assistant drops it silently"
            ));
        };
        check_type(key, kind, value)?;
    }
    for key in [required, "unique_id"] {
        if !config.contains_key(key) {
            return Err(format!("a {component} needs `{key}`"));
        }
    }
    if config.contains_key("object_id") {
        return Err("`object_id` is deprecated (Home Assistant raises a repair issue): use `default_entity_id`".to_owned());
    }
    if config["unique_id"].as_str().is_some_and(str::is_empty) {
        return Err("`unique_id` is empty".to_owned());
    }
    if let Some(category) = config.get("entity_category") {
        if category != "config" && category != "diagnostic" {
            return Err(format!(
                "entity_category {category} is not config or diagnostic"
            ));
        }
    }
    Ok(())
}

/// `value` is of type `kind` for `key`.
fn check_type(key: &str, kind: Type, value: &Value) -> Result<(), String> {
    let fits = match kind {
        Type::Text => value.is_string(),
        Type::TextOrNull => value.is_string() || value.is_null(),
        Type::Subscribe | Type::Publish => {
            let Some(topic) = value.as_str() else {
                return Err(format!("`{key}` must be a topic string, not {value}"));
            };
            return check_topic(key, topic, kind == Type::Publish);
        }
        Type::Bool => value.is_boolean(),
        Type::Count => value.is_u64(),
        Type::Qos => value.as_u64().is_some_and(|qos| qos <= 2),
        Type::List => value.is_array(),
        Type::Block => true,
    };
    if fits {
        Ok(())
    } else {
        let wanted = match kind {
            Type::Text => "a string",
            Type::TextOrNull => "a string or null",
            Type::Bool => "true or false",
            Type::Count => "a whole number, 0 or more",
            Type::Qos => "0, 1 or 2",
            _ => "a list",
        };
        Err(format!("`{key}` must be {wanted}, not {value}"))
    }
}

/// Home Assistant's `valid_topic` (non-empty, at most 65535 bytes, no NUL,
/// control or non-characters), its wildcard rules, and no wildcard at all.
fn check_topic(key: &str, topic: &str, publish: bool) -> Result<(), String> {
    let problem = if topic.is_empty() {
        Some("must not be empty")
    } else if topic.len() > 65535 {
        Some("must not be longer than 65535 bytes")
    } else if topic
        .chars()
        .any(|c| c <= '\u{1f}' || ('\u{7f}'..='\u{9f}').contains(&c))
    {
        Some("must not contain control characters")
    } else if topic.chars().any(|c| {
        ('\u{fdd0}'..='\u{fdef}').contains(&c) || matches!(u32::from(c) & 0xffff, 0xfffe | 0xffff)
    }) {
        Some("must not contain non-characters")
    } else if publish && (topic.contains('+') || topic.contains('#')) {
        Some("is published to: wildcards cannot be used in topic names")
    } else if !publish && !wildcards_whole_levels(topic) {
        Some("is not a valid topic filter: a wildcard must fill its level (and `#` be last)")
    } else if topic.contains('+') || topic.contains('#') {
        Some("has a wildcard: Home Assistant accepts a filter, but shoal publishes names")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(format!("`{key}` `{topic}` {problem}")),
        None => Ok(()),
    }
}

/// Home Assistant's `valid_subscribe_topic` wildcard rules.
fn wildcards_whole_levels(topic: &str) -> bool {
    let levels: Vec<&str> = topic.split('/').collect();
    let last = levels.len() - 1;
    levels.iter().enumerate().all(|(i, level)| {
        let plus_ok = !level.contains('+') || *level == "+";
        let hash_ok = !level.contains('#') || (*level == "#" && i == last);
        plus_ok && hash_ok
    })
}

/// `availability_mode` one of all / any / latest; `availability` a list
/// (or one entry) of entries with a `topic`, exclusive with `availability_topic`.
fn check_availability(config: &Map<String, Value>) -> Result<(), String> {
    if let Some(mode) = config.get("availability_mode") {
        if !["all", "any", "latest"].iter().any(|m| mode == *m) {
            return Err(format!(
                "availability_mode {mode} is not all, any or latest"
            ));
        }
    }
    let Some(list) = config.get("availability") else {
        return Ok(());
    };
    if config.contains_key("availability_topic") {
        return Err("`availability` and `availability_topic` exclude each other".to_owned());
    }
    let entries = match list {
        Value::Array(entries) => entries.as_slice(),
        single => std::slice::from_ref(single),
    };
    let mut topics = Vec::new();
    for entry in entries {
        let Value::Object(fields) = entry else {
            return Err(format!(
                "an availability entry must be an object, not {entry}"
            ));
        };
        let Some(topic) = fields.get("topic") else {
            return Err(format!("availability entry {entry} has no `topic`"));
        };
        for (key, value) in fields {
            let kind = match key.as_str() {
                "topic" => Type::Subscribe,
                "payload_available" | "payload_not_available" | "value_template" => Type::Text,
                _ => return Err(format!("`{key}` is not an availability entry option")),
            };
            check_type(&format!("availability {key}"), kind, value)?;
        }
        if topics.contains(&topic) {
            return Err(format!(
                "two availability entries on {topic}: Home Assistant keeps only the last"
            ));
        }
        topics.push(topic);
    }
    Ok(())
}

/// `MQTT_ENTITY_DEVICE_INFO_SCHEMA`: known keys, strings, at least one
/// identifier or connection; and a name (Home Assistant asks for one).
fn check_device(device: &Map<String, Value>) -> Result<(), String> {
    const TEXT: &[&str] = &[
        "configuration_url",
        "hw_version",
        "manufacturer",
        "model",
        "model_id",
        "name",
        "serial_number",
        "suggested_area",
        "sw_version",
        "via_device",
    ];
    for (key, value) in device {
        match key.as_str() {
            "identifiers" => {
                let ok = value.is_string()
                    || value
                        .as_array()
                        .is_some_and(|ids| ids.iter().all(Value::is_string));
                if !ok {
                    return Err(format!("device identifiers must be strings, not {value}"));
                }
            }
            "connections" => {
                let pair = |c: &Value| {
                    c.as_array()
                        .is_some_and(|p| p.len() == 2 && p.iter().all(Value::is_string))
                };
                if !value.as_array().is_some_and(|cs| cs.iter().all(pair)) {
                    return Err(format!(
                        "device connections must be [type, id] pairs, not {value}"
                    ));
                }
            }
            key if TEXT.contains(&key) => {
                if !value.is_string() {
                    return Err(format!("device `{key}` must be a string, not {value}"));
                }
            }
            _ => {
                return Err(format!(
                    "`{key}` is not a device option: Home Assistant refuses the config"
                ))
            }
        }
    }
    let has_connection = device
        .get("connections")
        .and_then(Value::as_array)
        .is_some_and(|connections| !connections.is_empty());
    if identifiers(device).is_empty() && !has_connection {
        return Err("the device needs at least one identifier or connection".to_owned());
    }
    if device
        .get("name")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err("the device needs a name".to_owned());
    }
    Ok(())
}

/// A device's identifiers (a string is a list of one).
fn identifiers(device: &Map<String, Value>) -> Vec<String> {
    match device.get("identifiers") {
        Some(Value::String(id)) => vec![id.clone()],
        Some(Value::Array(ids)) => ids
            .iter()
            .filter_map(|id| id.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// What every config of one device must say alike.
fn device_facts(device: &Map<String, Value>) -> Map<String, Value> {
    device
        .iter()
        .filter(|(key, _)| {
            ["name", "model", "manufacturer", "sw_version", "via_device"].contains(&key.as_str())
        })
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

/// `MQTT_ORIGIN_INFO_SCHEMA`: a `name`, optional `sw_version` and
/// `support_url`; anything else and Home Assistant drops the message.
fn check_origin(origin: &Value) -> Result<(), String> {
    let Value::Object(fields) = origin else {
        return Err(format!("`origin` must be an object, not {origin}"));
    };
    for (key, value) in fields {
        if !["name", "sw_version", "support_url"].contains(&key.as_str()) {
            return Err(format!(
                "`{key}` is not an origin option: Home Assistant drops the message"
            ));
        }
        if !value.is_string() {
            return Err(format!("origin `{key}` must be a string, not {value}"));
        }
    }
    if !fields.contains_key("name") {
        return Err("the origin needs a name: Home Assistant drops the message".to_owned());
    }
    Ok(())
}

/// `BinarySensorDeviceClass`.
const BINARY_SENSOR_CLASSES: &[&str] = &[
    "battery",
    "battery_charging",
    "carbon_monoxide",
    "cold",
    "connectivity",
    "door",
    "garage_door",
    "gas",
    "heat",
    "light",
    "lock",
    "moisture",
    "motion",
    "moving",
    "occupancy",
    "opening",
    "plug",
    "power",
    "presence",
    "problem",
    "running",
    "safety",
    "smoke",
    "sound",
    "tamper",
    "update",
    "vibration",
    "window",
];

/// `ButtonDeviceClass`.
const BUTTON_CLASSES: &[&str] = &["identify", "restart", "update"];

/// `SwitchDeviceClass`.
const SWITCH_CLASSES: &[&str] = &["outlet", "switch"];

/// A `device_class`, if any, is one of `classes`.
fn check_class(config: &Map<String, Value>, classes: &[&str]) -> Result<(), String> {
    match config.get("device_class") {
        Some(Value::String(class)) if !classes.contains(&class.as_str()) => {
            Err(format!("device_class `{class}` is not one of {classes:?}"))
        }
        _ => Ok(()),
    }
}

/// `SensorStateClass`.
const STATE_CLASSES: &[&str] = &[
    "measurement",
    "measurement_angle",
    "total",
    "total_increasing",
];

/// For the sensor classes this validator knows: the units Home Assistant
/// accepts (`DEVICE_CLASS_UNITS`) and the state classes it allows
/// (`DEVICE_CLASS_STATE_CLASSES`).
const SENSOR_CLASSES: &[(&str, &[&str], &[&str])] = &[
    ("temperature", &["°C", "°F", "K"], &["measurement"]),
    ("humidity", &["%"], &["measurement"]),
    ("moisture", &["%"], &["measurement"]),
    ("battery", &["%"], &["measurement"]),
    ("pressure", PRESSURE_UNITS, &["measurement"]),
    ("atmospheric_pressure", PRESSURE_UNITS, &["measurement"]),
    ("illuminance", &["lx"], &["measurement"]),
    ("voltage", &["μV", "mV", "V", "kV", "MV"], &["measurement"]),
    ("current", &["mA", "A"], &["measurement"]),
    (
        "power",
        &["mW", "W", "kW", "MW", "GW", "TW"],
        &["measurement"],
    ),
    (
        "energy",
        &[
            "J", "kJ", "MJ", "GJ", "mWh", "Wh", "kWh", "MWh", "GWh", "TWh", "cal", "kcal", "Mcal",
            "Gcal",
        ],
        &["total", "total_increasing"],
    ),
    ("frequency", &["Hz", "kHz", "MHz", "GHz"], &["measurement"]),
    ("carbon_dioxide", &["ppm"], &["measurement"]),
    (
        "duration",
        &["d", "h", "min", "s", "ms", "μs"],
        STATE_CLASSES,
    ),
    (
        "data_size",
        &[
            "bit", "kbit", "Mbit", "Gbit", "B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB",
            "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB",
        ],
        STATE_CLASSES,
    ),
    (
        "distance",
        &["mm", "cm", "m", "km", "in", "ft", "yd", "mi", "nmi"],
        STATE_CLASSES,
    ),
];

/// `UnitOfPressure`.
const PRESSURE_UNITS: &[&str] = &[
    "mPa", "Pa", "hPa", "kPa", "bar", "cbar", "mbar", "mmHg", "inHg", "inH₂O", "psi",
];

/// `validate_sensor_state_and_device_class_config`, plus the state class
/// the device class allows.
fn check_sensor(config: &Map<String, Value>) -> Result<(), String> {
    let text = |key: &str| config.get(key).and_then(Value::as_str);
    // Home Assistant drops a blank unit and reads the micro sign as mu.
    let unit = text("unit_of_measurement")
        .filter(|unit| !unit.trim().is_empty())
        .map(|unit| unit.replacen('\u{b5}', "\u{3bc}", 1));
    let unit = unit.as_deref();
    let state_class = text("state_class");
    if let Some(state_class) = state_class {
        if !STATE_CLASSES.contains(&state_class) {
            return Err(format!(
                "state_class `{state_class}` is not one of {STATE_CLASSES:?}"
            ));
        }
        if state_class == "measurement_angle" && unit != Some("°") {
            return Err("state_class `measurement_angle` needs the unit `°`".to_owned());
        }
    }
    if config.contains_key("last_reset_value_template") && state_class != Some("total") {
        return Err("`last_reset_value_template` needs state_class `total`".to_owned());
    }
    if let Some(options) = config.get("options") {
        let enum_only =
            text("device_class") == Some("enum") && state_class.is_none() && unit.is_none();
        if options.as_array().is_some_and(Vec::is_empty) || !enum_only {
            return Err("`options` must be a non-empty list, with device_class `enum` and no unit or state_class".to_owned());
        }
    }
    let Some(class) = text("device_class") else {
        return Ok(());
    };
    let Some((_, units, state_classes)) = SENSOR_CLASSES.iter().find(|(c, _, _)| *c == class)
    else {
        return Err(format!(
            "device_class `{class}` is not in this validator's table: add its units and state classes from Home Assistant's sensor/const.py"
        ));
    };
    if !unit.is_some_and(|unit| units.contains(&unit)) {
        let unit = unit.map_or("no unit".to_owned(), |unit| format!("the unit `{unit}`"));
        return Err(format!(
            "{unit} is not valid together with device class `{class}` (Home Assistant accepts {units:?})"
        ));
    }
    if let Some(state_class) = state_class {
        if !state_classes.contains(&state_class) {
            return Err(format!(
                "state_class `{state_class}` is not allowed for device class `{class}` (only {state_classes:?})"
            ));
        }
    }
    Ok(())
}
