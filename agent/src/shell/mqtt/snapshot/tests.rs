//! Which retained topics a new bridge takes over, and that its filters
//! never cover a command topic.

use super::*;

fn topics() -> Topics {
    Topics {
        prefix: "shoal".into(),
        discovery: "homeassistant".into(),
    }
}

fn config(availability: &str) -> Vec<u8> {
    serde_json::json!({
        "name": "t",
        "availability": [{"topic": availability}],
    })
    .to_string()
    .into_bytes()
}

#[test]
fn the_filters_cover_every_retained_topic_and_no_command() {
    let topics = topics();
    for topic in [
        "shoal/bridge",
        "shoal/bridge/kitchen",
        "shoal/kitchen/availability",
        "shoal/kitchen/temperature",
        "shoal/kitchen/temperature/attributes",
        "shoal/kitchen/switch.fan",
        "homeassistant/sensor/shoal_00000000000000a1/p_temperature/config",
    ] {
        assert!(covers(&topics, topic), "{topic}");
    }
    for topic in [
        "shoal/kitchen/exec/hello/run",
        "shoal/kitchen/exec/hello/result",
        "shoal/kitchen/switch.fan/set",
        "homeassistant/status",
        "zigbee2mqtt/kitchen",
    ] {
        assert!(!covers(&topics, topic), "{topic}");
    }
}

#[test]
fn states_configs_and_dead_roles_are_taken_over_but_not_others() {
    let topics = topics();
    let known = |node: &str| node == "kitchen";
    let ours = config("shoal/bridge/kitchen");
    for topic in [
        "shoal/bridge",
        "shoal/gone/availability",
        "shoal/gone/temperature",
        "shoal/gone/temperature/attributes",
    ] {
        assert!(clearable(&topics, topic, b"1", known), "{topic}");
    }
    assert!(clearable(&topics, "shoal/bridge/gone", b"offline", known));
    let config_topic = "homeassistant/sensor/shoal_00000000000000a1/p_t/config";
    assert!(clearable(&topics, config_topic, &ours, known));

    // A known node's role is its own; a live one (standby) too.
    assert!(!clearable(
        &topics,
        "shoal/bridge/kitchen",
        b"offline",
        known
    ));
    assert!(!clearable(&topics, "shoal/bridge/new", b"standby", known));
    // Other integrations, other meshes, junk.
    let zigbee = "homeassistant/sensor/0x00158d/temperature/config";
    assert!(!clearable(&topics, zigbee, &ours, known));
    let other_mesh = config("upstairs/bridge/attic");
    assert!(!clearable(&topics, config_topic, &other_mesh, known));
    assert!(!clearable(&topics, config_topic, b"not json", known));
    assert!(!clearable(&topics, config_topic, b"{}", known));
    assert!(!clearable(&topics, "shoalx/gone/t", b"1", known));
}

#[test]
fn without_discovery_no_config_is_covered_or_taken() {
    let topics = Topics {
        prefix: "shoal".into(),
        discovery: String::new(),
    };
    assert_eq!(filters(&topics).len(), 3);
    let config_topic = "homeassistant/sensor/shoal_00000000000000a1/p_t/config";
    assert!(!covers(&topics, config_topic));
    let ours = config("shoal/bridge/kitchen");
    assert!(!clearable(&topics, config_topic, &ours, |_| false));
    assert!(!clearable(
        &topics,
        "/sensor/shoal_1/p_t/config",
        &ours,
        |_| false
    ));
}
