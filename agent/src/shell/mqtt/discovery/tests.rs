//! Unit tests of `discovery`: each entity's payload, the unit classes, object and unique ids.

use super::*;
use proptest::prelude::*;

const NODE_ID: NodeId = NodeId(0x0123_4567_89ab_cdef);
const BRIDGE_ID: NodeId = NodeId(0xfedc_ba98_7654_3210);

fn topics() -> Topics {
    Topics {
        prefix: "shoal".to_owned(),
        discovery: "homeassistant".to_owned(),
    }
}

fn node() -> Device<'static> {
    Device {
        id: NODE_ID,
        name: "greenhouse",
        model: Some("Raspberry Pi 4 Model B Rev 1.4"),
        version: Some("0.9.0"),
    }
}

fn bridge() -> Device<'static> {
    Device {
        id: BRIDGE_ID,
        name: "hub",
        model: None,
        version: None,
    }
}

/// The config of `entity` of the greenhouse node, bridged by the hub: its
/// topic and its payload parsed.
fn published(entity: &Entity<'_>) -> (String, Value) {
    let message = config(&topics(), &node(), &bridge(), entity).expect("discovery is on");
    let payload = serde_json::from_str(&message.payload).expect("the payload is JSON");
    (message.topic, payload)
}

fn bridge_and_node_availability() -> Vec<Value> {
    vec![
        json!({
            "topic": "shoal/bridge/hub",
            "payload_available": "active",
            "payload_not_available": "offline",
        }),
        json!({
            "topic": "shoal/greenhouse/availability",
            "payload_available": "online",
            "payload_not_available": "offline",
        }),
    ]
}

fn point_availability(point: &str) -> Value {
    let mut list = bridge_and_node_availability();
    list.push(json!({
        "topic": format!("shoal/greenhouse/{point}/attributes"),
        "value_template": "{{ 'offline' if value_json.error else 'online' }}",
        "payload_available": "online",
        "payload_not_available": "offline",
    }));
    Value::Array(list)
}

fn greenhouse_device() -> Value {
    json!({
        "identifiers": ["shoal_0123456789abcdef"],
        "name": "greenhouse",
        "model": "Raspberry Pi 4 Model B Rev 1.4",
        "manufacturer": "Raspberry Pi Ltd",
        "sw_version": "0.9.0",
        "via_device": "shoal_fedcba9876543210",
    })
}

fn origin() -> Value {
    json!({ "name": "shoal", "sw_version": env!("CARGO_PKG_VERSION") })
}

#[test]
fn a_numeric_point_is_a_sensor_with_its_unit_classes_and_three_availabilities() {
    let (topic, payload) = published(&Entity::Point {
        name: "air.temperature",
        unit: "°C",
        kind: Kind::Numeric,
    });
    assert_eq!(
        topic,
        "homeassistant/sensor/shoal_0123456789abcdef/p_air_dtemperature/config"
    );
    assert_eq!(
        payload,
        json!({
            "name": "air.temperature",
            "unique_id": "shoal_0123456789abcdef_p_air.temperature",
            "state_topic": "shoal/greenhouse/air.temperature",
            "json_attributes_topic": "shoal/greenhouse/air.temperature/attributes",
            "unit_of_measurement": "°C",
            "device_class": "temperature",
            "state_class": "measurement",
            "availability_mode": "all",
            "availability": point_availability("air.temperature"),
            "device": greenhouse_device(),
            "origin": origin(),
        })
    );
}

#[test]
fn a_numeric_point_without_a_unit_has_no_unit_nor_device_class_but_is_a_measurement() {
    let (_, payload) = published(&Entity::Point {
        name: "load1",
        unit: "",
        kind: Kind::Numeric,
    });
    assert!(payload.get("unit_of_measurement").is_none());
    assert!(payload.get("device_class").is_none());
    assert_eq!(payload["state_class"], "measurement");
}

#[test]
fn a_binary_point_is_a_binary_sensor_reading_true_and_false() {
    let (topic, payload) = published(&Entity::Point {
        name: "door",
        unit: "",
        kind: Kind::Binary,
    });
    assert_eq!(
        topic,
        "homeassistant/binary_sensor/shoal_0123456789abcdef/p_door/config"
    );
    assert_eq!(
        payload,
        json!({
            "name": "door",
            "unique_id": "shoal_0123456789abcdef_p_door",
            "state_topic": "shoal/greenhouse/door",
            "json_attributes_topic": "shoal/greenhouse/door/attributes",
            "payload_on": "true",
            "payload_off": "false",
            "availability_mode": "all",
            "availability": point_availability("door"),
            "device": greenhouse_device(),
            "origin": origin(),
        })
    );
}

#[test]
fn a_text_point_is_a_sensor_without_unit_or_classes() {
    let (topic, payload) = published(&Entity::Point {
        name: "mode",
        unit: "°C",
        kind: Kind::Text,
    });
    assert_eq!(
        topic,
        "homeassistant/sensor/shoal_0123456789abcdef/p_mode/config"
    );
    for key in ["unit_of_measurement", "device_class", "state_class"] {
        assert!(payload.get(key).is_none(), "{key} in {payload}");
    }
    assert_eq!(payload["state_topic"], "shoal/greenhouse/mode");
    assert_eq!(payload["availability"], point_availability("mode"));
}

#[test]
fn a_button_runs_its_executor_and_is_up_with_the_bridge_and_the_node() {
    let (topic, payload) = published(&Entity::Button {
        executor: "water_pump",
    });
    assert_eq!(
        topic,
        "homeassistant/button/shoal_0123456789abcdef/x_water__pump/config"
    );
    assert_eq!(
        payload,
        json!({
            "name": "water_pump",
            "unique_id": "shoal_0123456789abcdef_x_water_pump",
            "command_topic": "shoal/greenhouse/exec/water_pump/run",
            "payload_press": "PRESS",
            "availability_mode": "all",
            "availability": bridge_and_node_availability(),
            "device": greenhouse_device(),
            "origin": origin(),
        })
    );
}

#[test]
fn a_switch_sends_on_off_and_reads_its_bool_point() {
    let (topic, payload) = published(&Entity::Switch { actuator: "fan" });
    assert_eq!(
        topic,
        "homeassistant/switch/shoal_0123456789abcdef/a_fan/config"
    );
    assert_eq!(
        payload,
        json!({
            "name": "fan",
            "unique_id": "shoal_0123456789abcdef_a_fan",
            "command_topic": "shoal/greenhouse/switch.fan/set",
            "state_topic": "shoal/greenhouse/switch.fan",
            "payload_on": "ON",
            "payload_off": "OFF",
            "state_on": "true",
            "state_off": "false",
            "availability_mode": "all",
            "availability": bridge_and_node_availability(),
            "device": greenhouse_device(),
            "origin": origin(),
        })
    );
}

#[test]
fn the_bridge_itself_has_no_via_device_and_a_plain_node_says_shoal_node() {
    let hub = bridge();
    let entity = Entity::Point {
        name: "uptime",
        unit: "s",
        kind: Kind::Numeric,
    };
    let message = config(&topics(), &hub, &hub, &entity).expect("discovery is on");
    let payload: Value = serde_json::from_str(&message.payload).expect("JSON");
    assert_eq!(
        payload["device"],
        json!({
            "identifiers": ["shoal_fedcba9876543210"],
            "name": "hub",
            "model": "shoal node",
        }),
        "no via_device, manufacturer or sw_version"
    );
    assert_eq!(payload["availability"][0]["topic"], "shoal/bridge/hub");
    assert_eq!(
        payload["availability"][1]["topic"],
        "shoal/hub/availability"
    );
}

#[test]
fn only_a_raspberry_pi_model_names_a_manufacturer() {
    let other = Device {
        model: Some("Generic x86-64"),
        ..node()
    };
    let empty = Device {
        model: Some(""),
        ..node()
    };
    let entity = Entity::Button { executor: "reboot" };
    let device_of = |device: &Device<'_>| -> Value {
        let message = config(&topics(), device, &bridge(), &entity).expect("on");
        let payload: Value = serde_json::from_str(&message.payload).expect("JSON");
        payload["device"].clone()
    };
    let other = device_of(&other);
    assert_eq!(other["model"], "Generic x86-64");
    assert!(other.get("manufacturer").is_none());
    assert_eq!(device_of(&empty)["model"], "shoal node");
    assert_eq!(device_of(&node())["manufacturer"], "Raspberry Pi Ltd");
}

#[test]
fn no_discovery_prefix_means_no_config_and_no_removal() {
    let off = Topics {
        prefix: "shoal".to_owned(),
        discovery: String::new(),
    };
    let entity = Entity::Switch { actuator: "fan" };
    assert_eq!(config(&off, &node(), &bridge(), &entity), None);
    assert_eq!(removal(&off, NODE_ID, &entity), None);
}

#[test]
fn a_removal_is_an_empty_payload_on_the_config_topic() {
    let entities = [
        Entity::Point {
            name: "door",
            unit: "",
            kind: Kind::Binary,
        },
        Entity::Point {
            name: "t",
            unit: "K",
            kind: Kind::Numeric,
        },
        Entity::Button { executor: "x" },
        Entity::Switch { actuator: "fan" },
    ];
    for entity in entities {
        let published = config(&topics(), &node(), &bridge(), &entity).expect("on");
        let removed = removal(&topics(), NODE_ID, &entity).expect("on");
        assert_eq!(removed.topic, published.topic);
        assert_eq!(removed.payload, "");
    }
}

#[test]
fn the_same_names_on_two_nodes_or_of_three_kinds_never_share_an_id_or_a_topic() {
    let other = Device {
        id: NodeId(0x0123_4567_89ab_cdee),
        name: "shed",
        ..node()
    };
    let mut unique_ids = std::collections::HashSet::new();
    let mut config_topics = std::collections::HashSet::new();
    for device in [node(), other] {
        for entity in [
            Entity::Point {
                name: "pump",
                unit: "",
                kind: Kind::Binary,
            },
            Entity::Button { executor: "pump" },
            Entity::Switch { actuator: "pump" },
        ] {
            let message = config(&topics(), &device, &bridge(), &entity).expect("on");
            let payload: Value = serde_json::from_str(&message.payload).expect("JSON");
            let unique_id = payload["unique_id"].as_str().expect("a string").to_owned();
            assert_eq!(unique_id, super::unique_id(device.id, &entity));
            unique_ids.insert(unique_id);
            config_topics.insert(message.topic);
        }
    }
    assert_eq!(unique_ids.len(), 6, "{unique_ids:?}");
    assert_eq!(config_topics.len(), 6, "{config_topics:?}");
}

#[test]
fn units_get_the_device_class_home_assistant_accepts_them_for() {
    let cases: &[(&str, &str, Option<&str>, &str)] = &[
        ("temperature", "°C", Some("temperature"), "measurement"),
        ("cpu", "°F", Some("temperature"), "measurement"),
        ("probe", "K", Some("temperature"), "measurement"),
        ("humidity", "%", Some("humidity"), "measurement"),
        ("env.humidity", "%", Some("humidity"), "measurement"),
        ("soil.moisture", "%", Some("moisture"), "measurement"),
        ("ups.battery", "%", Some("battery"), "measurement"),
        ("sys.disk_free", "%", None, "measurement"),
        ("humidity.raw", "%", None, "measurement"),
        ("pressure", "hPa", Some("pressure"), "measurement"),
        ("tank", "psi", Some("pressure"), "measurement"),
        ("bp", "mmHg", Some("pressure"), "measurement"),
        ("light", "lx", Some("illuminance"), "measurement"),
        ("a0", "V", Some("voltage"), "measurement"),
        ("a1", "mV", Some("voltage"), "measurement"),
        ("draw", "mA", Some("current"), "measurement"),
        ("load", "kW", Some("power"), "measurement"),
        ("meter", "kWh", Some("energy"), "total_increasing"),
        ("meter", "Wh", Some("energy"), "total_increasing"),
        ("mains", "Hz", Some("frequency"), "measurement"),
        ("office.co2", "ppm", Some("carbon_dioxide"), "measurement"),
        ("voc", "ppm", None, "measurement"),
        ("uptime", "s", Some("duration"), "measurement"),
        ("runtime", "min", Some("duration"), "measurement"),
        ("age", "d", Some("duration"), "measurement"),
        ("free", "B", Some("data_size"), "measurement"),
        ("free", "MiB", Some("data_size"), "measurement"),
        ("level", "cm", Some("distance"), "measurement"),
        ("range", "km", Some("distance"), "measurement"),
        // Not accepted by Home Assistant for any class we map.
        ("t", "C", None, "measurement"),
        ("t", "degC", None, "measurement"),
        ("rh", "%RH", None, "measurement"),
        ("v", "volts", None, "measurement"),
        ("count", "", None, "measurement"),
    ];
    for &(point, unit, device_class, state_class) in cases {
        assert_eq!(
            classes(point, unit),
            (device_class, Some(state_class)),
            "{point} in {unit:?}"
        );
    }
}

#[test]
fn object_ids_escape_underscores_and_dots_and_stay_readable() {
    assert_eq!(object_id("temperature"), "temperature");
    assert_eq!(object_id("a-b"), "a-b");
    assert_eq!(object_id("a_b"), "a__b");
    assert_eq!(object_id("a.b"), "a_db");
    // The pairs a naive escape would merge.
    assert_ne!(object_id("a_d"), object_id("a."));
    assert_ne!(object_id("a__"), object_id("a_"));
    assert_eq!(object_id("a/b"), "a_u2f_b");
}

/// Reads an object id back; `None` if no name escapes to it.
fn name_of(object: &str) -> Option<String> {
    let mut name = String::new();
    let mut chars = object.chars();
    while let Some(c) = chars.next() {
        if c != '_' {
            name.push(c);
            continue;
        }
        match chars.next()? {
            '_' => name.push('_'),
            'd' => name.push('.'),
            'u' => {
                let hex: String = chars.by_ref().take_while(|&c| c != '_').collect();
                name.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
            }
            _ => return None,
        }
    }
    Some(name)
}

fn in_home_assistants_alphabet(object: &str) -> bool {
    !object.is_empty()
        && object
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

proptest! {
    #[test]
    fn an_object_id_reads_back_to_its_name(name in "\\PC{1,24}") {
        let object = object_id(&name);
        prop_assert!(in_home_assistants_alphabet(&object), "{object}");
        prop_assert_eq!(name_of(&object), Some(name));
    }

    #[test]
    fn distinct_names_give_distinct_object_ids(a in "[a_.d-]{1,6}", b in "[a_.d-]{1,6}") {
        // A small alphabet full of the characters an escape could confuse.
        prop_assume!(a != b);
        prop_assert_ne!(object_id(&a), object_id(&b));
    }

    #[test]
    fn config_topics_fit_home_assistants_pattern_and_ids_differ_by_name(
        a in "[A-Za-z0-9_.-]{1,32}",
        b in "[A-Za-z0-9_.-]{1,32}",
    ) {
        prop_assume!(a != b);
        let entity_a = Entity::Point { name: &a, unit: "", kind: Kind::Numeric };
        let entity_b = Entity::Point { name: &b, unit: "", kind: Kind::Numeric };
        let topic = removal(&topics(), NODE_ID, &entity_a).expect("on").topic;
        let parts: Vec<&str> = topic.split('/').collect();
        prop_assert_eq!(parts.len(), 5, "{}", topic);
        prop_assert_eq!(parts[0], "homeassistant");
        prop_assert!(parts[1].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        prop_assert!(in_home_assistants_alphabet(parts[2]));
        prop_assert!(in_home_assistants_alphabet(parts[3]));
        prop_assert_eq!(parts[4], "config");
        prop_assert_ne!(unique_id(NODE_ID, &entity_a), unique_id(NODE_ID, &entity_b));
        prop_assert_ne!(topic, removal(&topics(), NODE_ID, &entity_b).expect("on").topic);
    }
}
