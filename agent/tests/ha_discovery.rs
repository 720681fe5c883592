//! The Home Assistant stand-in (`common::ha`) on hand-written discovery configs, good and bad, then on shoal's own.

// Only `common::ha` is used here, not the skip helper.
#[allow(dead_code)]
mod common;

use common::ha::{validate, validate_all};
use serde_json::{json, Value};

const PREFIX: &str = "homeassistant";
const SENSOR_TOPIC: &str = "homeassistant/sensor/shoal_0123456789abcdef/p_temperature/config";

fn good_sensor() -> Value {
    json!({
        "name": "temperature",
        "unique_id": "shoal_0123456789abcdef_p_temperature",
        "state_topic": "shoal/greenhouse/temperature",
        "json_attributes_topic": "shoal/greenhouse/temperature/attributes",
        "unit_of_measurement": "°C",
        "device_class": "temperature",
        "state_class": "measurement",
        "availability_mode": "all",
        "availability": [
            { "topic": "shoal/bridge/hub", "payload_available": "active", "payload_not_available": "offline" },
            { "topic": "shoal/greenhouse/availability" },
            {
                "topic": "shoal/greenhouse/temperature/attributes",
                "value_template": "{{ 'offline' if value_json.error else 'online' }}"
            }
        ],
        "device": {
            "identifiers": ["shoal_0123456789abcdef"],
            "name": "greenhouse",
            "model": "Raspberry Pi 4 Model B Rev 1.4",
            "manufacturer": "Raspberry Pi Ltd",
            "via_device": "shoal_fedcba9876543210"
        },
        "origin": { "name": "shoal", "sw_version": "0.1.0" }
    })
}

/// The good sensor with `key` set to `value` (or removed for `null`).
fn sensor_with(key: &str, value: Value) -> String {
    let mut config = good_sensor();
    let fields = config.as_object_mut().expect("an object");
    if value.is_null() {
        fields.remove(key);
    } else {
        fields.insert(key.to_owned(), value);
    }
    config.to_string()
}

/// `result` is an error whose message names every one of `words`.
fn fails_saying(result: Result<(), String>, words: &[&str]) {
    let message = result.expect_err("the validator refuses it");
    for word in words {
        assert!(message.contains(word), "{word:?} is not in: {message}");
    }
}

#[test]
fn a_complete_sensor_config_passes() {
    validate(PREFIX, SENSOR_TOPIC, &good_sensor().to_string()).expect("valid");
}

#[test]
fn abbreviated_keys_and_a_topic_base_pass() {
    let config = json!({
        "~": "shoal/greenhouse/door",
        "name": "door",
        "uniq_id": "shoal_0123456789abcdef_p_door",
        "stat_t": "~",
        "json_attr_t": "~/attributes",
        "pl_on": "true",
        "pl_off": "false",
        "avty_mode": "all",
        "avty": [{ "t": "shoal/greenhouse/availability", "pl_avail": "online" }],
        "dev": { "ids": "shoal_0123456789abcdef", "name": "greenhouse", "mdl": "shoal node" },
        "o": { "name": "shoal", "sw": "0.1.0" }
    });
    let topic = "homeassistant/binary_sensor/shoal_0123456789abcdef/p_door/config";
    validate(PREFIX, topic, &config.to_string()).expect("valid");
}

#[test]
fn a_good_button_and_switch_pass_and_a_removal_is_valid() {
    let device = json!({ "identifiers": ["shoal_0123456789abcdef"], "name": "greenhouse" });
    let button = json!({
        "name": "water",
        "unique_id": "shoal_0123456789abcdef_x_water",
        "command_topic": "shoal/greenhouse/exec/water/run",
        "payload_press": "PRESS",
        "device": device,
    });
    let switch = json!({
        "name": "fan",
        "unique_id": "shoal_0123456789abcdef_a_fan",
        "command_topic": "shoal/greenhouse/fan/set",
        "state_topic": "shoal/greenhouse/fan",
        "payload_on": "ON",
        "payload_off": "OFF",
        "state_on": "true",
        "state_off": "false",
        "device": device,
    });
    let button_topic = "homeassistant/button/shoal_0123456789abcdef/x_water/config";
    let switch_topic = "homeassistant/switch/shoal_0123456789abcdef/a_fan/config";
    validate(PREFIX, button_topic, &button.to_string()).expect("a valid button");
    validate(PREFIX, switch_topic, &switch.to_string()).expect("a valid switch");
    validate(PREFIX, switch_topic, "").expect("a removal");
}

#[test]
fn a_sensor_without_a_state_topic_fails() {
    fails_saying(
        validate(
            PREFIX,
            SENSOR_TOPIC,
            &sensor_with("state_topic", Value::Null),
        ),
        &["sensor", "state_topic"],
    );
    fails_saying(
        validate(PREFIX, SENSOR_TOPIC, &sensor_with("unique_id", Value::Null)),
        &["unique_id"],
    );
}

#[test]
fn a_key_home_assistant_does_not_know_fails() {
    fails_saying(
        validate(PREFIX, SENSOR_TOPIC, &sensor_with("unit", json!("°C"))),
        &["`unit`", "not a sensor option"],
    );
    // A switch option on a sensor is as unknown.
    fails_saying(
        validate(
            PREFIX,
            SENSOR_TOPIC,
            &sensor_with("payload_on", json!("ON")),
        ),
        &["payload_on"],
    );
    fails_saying(
        validate(PREFIX, SENSOR_TOPIC, &sensor_with("object_id", json!("t"))),
        &["object_id", "deprecated"],
    );
}

#[test]
fn a_unit_or_state_class_the_device_class_does_not_accept_fails() {
    fails_saying(
        validate(
            PREFIX,
            SENSOR_TOPIC,
            &sensor_with("unit_of_measurement", json!("%")),
        ),
        &["`%`", "temperature"],
    );
    fails_saying(
        validate(
            PREFIX,
            SENSOR_TOPIC,
            &sensor_with("unit_of_measurement", Value::Null),
        ),
        &["no unit", "temperature"],
    );
    let mut energy = good_sensor();
    energy["device_class"] = json!("energy");
    energy["unit_of_measurement"] = json!("kWh");
    fails_saying(
        validate(PREFIX, SENSOR_TOPIC, &energy.to_string()),
        &["measurement", "energy"],
    );
    energy["state_class"] = json!("total_increasing");
    validate(PREFIX, SENSOR_TOPIC, &energy.to_string()).expect("energy as a total");
    fails_saying(
        validate(
            PREFIX,
            SENSOR_TOPIC,
            &sensor_with("state_class", json!("average")),
        ),
        &["average"],
    );
}

#[test]
fn bad_topics_fail() {
    let payload = good_sensor().to_string();
    for (topic, words) in [
        (
            "homeassistant/sensor/shoal_0123456789abcdef/p_air.temperature/config",
            &["p_air.temperature", "[a-zA-Z0-9_-]"][..],
        ),
        ("other/sensor/shoal_x/p_t/config", &["discovery prefix"][..]),
        ("homeassistant/sensor/a/b/c/config", &["OBJECT_ID"][..]),
        ("homeassistant/sensor/shoal_x/p_t", &["OBJECT_ID"][..]),
        ("homeassistant/light/shoal_x/p_t/config", &["light"][..]),
    ] {
        fails_saying(validate(PREFIX, topic, &payload), words);
    }
    for (key, topic, words) in [
        ("state_topic", "", &["state_topic", "empty"][..]),
        ("state_topic", "shoal/+/temperature", &["wildcard"][..]),
        (
            "state_topic",
            "shoal/gr+/temperature",
            &["fill its level"][..],
        ),
        (
            "json_attributes_topic",
            "shoal/#/x",
            &["json_attributes_topic"][..],
        ),
        ("state_topic", "shoal/\u{7}", &["control"][..]),
    ] {
        fails_saying(
            validate(PREFIX, SENSOR_TOPIC, &sensor_with(key, json!(topic))),
            words,
        );
    }
    let button = json!({
        "unique_id": "u",
        "command_topic": "shoal/greenhouse/exec/+/run",
        "device": { "identifiers": ["shoal_0123456789abcdef"], "name": "greenhouse" },
    });
    fails_saying(
        validate(
            PREFIX,
            "homeassistant/button/n/x_w/config",
            &button.to_string(),
        ),
        &["command_topic", "wildcards cannot be used"],
    );
}

#[test]
fn bad_availability_fails() {
    for (availability, words) in [
        (
            json!([{ "payload_available": "online" }]),
            &["no `topic`"][..],
        ),
        (
            json!([{ "topic": "a" }, { "topic": "a" }]),
            &["two availability entries"][..],
        ),
        (json!([{ "topic": "a", "expire": 3 }]), &["expire"][..]),
        (json!(["shoal/a"]), &["must be an object"][..]),
    ] {
        fails_saying(
            validate(
                PREFIX,
                SENSOR_TOPIC,
                &sensor_with("availability", availability),
            ),
            words,
        );
    }
    fails_saying(
        validate(
            PREFIX,
            SENSOR_TOPIC,
            &sensor_with("availability_mode", json!("some")),
        ),
        &["some", "all, any or latest"],
    );
    fails_saying(
        validate(
            PREFIX,
            SENSOR_TOPIC,
            &sensor_with("availability_topic", json!("a")),
        ),
        &["exclude each other"],
    );
}

#[test]
fn a_bad_device_or_origin_fails() {
    for (device, words) in [
        (json!({ "name": "greenhouse" }), &["identifier"][..]),
        (
            json!({ "identifiers": [], "name": "greenhouse" }),
            &["identifier"][..],
        ),
        (json!({ "identifiers": ["x"] }), &["name"][..]),
        (
            json!({ "identifiers": ["x"], "name": "g", "serial": "1" }),
            &["`serial`"][..],
        ),
        (
            json!({ "identifiers": [1], "name": "g" }),
            &["identifiers"][..],
        ),
    ] {
        fails_saying(
            validate(PREFIX, SENSOR_TOPIC, &sensor_with("device", device)),
            words,
        );
    }
    fails_saying(
        validate(
            PREFIX,
            SENSOR_TOPIC,
            &sensor_with("origin", json!({ "sw": "1" })),
        ),
        &["origin", "name"],
    );
}

#[test]
fn a_payload_that_is_not_a_json_object_fails() {
    fails_saying(
        validate(PREFIX, SENSOR_TOPIC, "{\"name\":"),
        &["JSON object"],
    );
    fails_saying(validate(PREFIX, SENSOR_TOPIC, "[1, 2]"), &["JSON object"]);
}

#[test]
fn a_set_with_one_unique_id_twice_fails_until_one_is_removed() {
    let payload = good_sensor().to_string();
    let other_topic = "homeassistant/sensor/shoal_0123456789abcdef/p_temperature2/config";
    let via = json!({ "identifiers": ["shoal_fedcba9876543210"], "name": "hub" });
    let hub = sensor_with("device", via);
    let hub_topic = "homeassistant/sensor/shoal_fedcba9876543210/p_t/config";
    let mut hub_config: Value = serde_json::from_str(&hub).expect("JSON");
    hub_config["unique_id"] = json!("shoal_fedcba9876543210_p_t");
    let hub = (hub_topic.to_owned(), hub_config.to_string());
    let mut messages = vec![
        hub,
        (SENSOR_TOPIC.to_owned(), payload.clone()),
        (other_topic.to_owned(), payload),
    ];
    fails_saying(
        validate_all(PREFIX, &messages),
        &[
            "shoal_0123456789abcdef_p_temperature",
            SENSOR_TOPIC,
            other_topic,
        ],
    );
    messages.push((other_topic.to_owned(), String::new()));
    validate_all(PREFIX, &messages).expect("the duplicate was removed");
}

#[test]
fn a_set_whose_devices_disagree_or_hang_off_a_missing_bridge_fails() {
    // The good sensor names a bridge device that no config describes.
    fails_saying(
        validate_all(
            PREFIX,
            &[(SENSOR_TOPIC.to_owned(), good_sensor().to_string())],
        ),
        &["via_device", "shoal_fedcba9876543210"],
    );
    let mut renamed = good_sensor();
    renamed["unique_id"] = json!("shoal_0123456789abcdef_p_other");
    renamed["device"]["name"] = json!("glasshouse");
    let messages = [
        (SENSOR_TOPIC.to_owned(), good_sensor().to_string()),
        (
            "homeassistant/sensor/shoal_0123456789abcdef/p_other/config".to_owned(),
            renamed.to_string(),
        ),
    ];
    fails_saying(validate_all(PREFIX, &messages), &["described differently"]);
}

#[test]
fn shoals_own_discovery_configs_pass() {
    use shoal::shell::mqtt::discovery::{config, removal, Device, Entity, Kind, Topics};
    use shoal_core::wire::NodeId;

    let topics = Topics {
        prefix: "shoal".to_owned(),
        discovery: PREFIX.to_owned(),
    };
    let hub = Device {
        id: NodeId(0xfedc_ba98_7654_3210),
        name: "hub",
        model: Some("Raspberry Pi 5 Model B Rev 1.0"),
        version: Some(env!("CARGO_PKG_VERSION")),
    };
    let greenhouse = Device {
        id: NodeId(0x0123_4567_89ab_cdef),
        name: "greenhouse",
        model: None,
        version: None,
    };
    let point = |name, unit, kind| Entity::Point { name, unit, kind };
    let entities = [
        point("temperature", "°C", Kind::Numeric),
        point("env.humidity", "%", Kind::Numeric),
        point("sys.disk_free", "%", Kind::Numeric),
        point("pressure", "hPa", Kind::Numeric),
        point("light", "lx", Kind::Numeric),
        point("a0", "mV", Kind::Numeric),
        point("meter", "kWh", Kind::Numeric),
        point("uptime", "s", Kind::Numeric),
        point("mem_free", "MiB", Kind::Numeric),
        point("office.co2", "ppm", Kind::Numeric),
        point("level_cm", "cm", Kind::Numeric),
        point("load1", "", Kind::Numeric),
        point("odd", "furlongs", Kind::Numeric),
        point("door", "", Kind::Binary),
        point("mode", "", Kind::Text),
        point("fan", "", Kind::Binary),
        Entity::Button {
            executor: "water_pump",
        },
        Entity::Switch { actuator: "fan" },
    ];
    let mut messages = Vec::new();
    for device in [&hub, &greenhouse] {
        for entity in &entities {
            let message = config(&topics, device, &hub, entity).expect("discovery is on");
            validate(PREFIX, &message.topic, &message.payload)
                .unwrap_or_else(|e| panic!("{}: {e}\n{}", message.topic, message.payload));
            messages.push((message.topic, message.payload));
        }
    }
    validate_all(PREFIX, &messages).expect("the whole mesh is valid");
    let gone = removal(&topics, greenhouse.id, &entities[0]).expect("discovery is on");
    messages.push((gone.topic, gone.payload));
    validate_all(PREFIX, &messages).expect("valid after a removal");
}
