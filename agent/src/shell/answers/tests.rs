//! Unit tests of `answers`: the API's answers built from a node.
use super::*;
use serde_json::json;
use shoal_core::{Config, Identity};

#[test]
fn a_lone_node_is_an_online_mesh_of_one() {
    let identity = Identity {
        key: shoal_core::sign::NodeKey::from_seed([7; 32]),
        name: wire::name("alone").expect("valid"),
        incarnation: 1,
    };
    let node = Node::new(identity, Config::default(), 1, Instant::ZERO).expect("valid");
    let status = status(&node, Instant::from_millis(10));
    assert_eq!(status["mesh"], "online");
    assert_eq!(status["active"], 1);
    assert_eq!(status["total"], 1);
    assert_eq!(status["self"], "alone");
    assert_eq!(status["nodes"][0]["hops"], 0);
    assert_eq!(status["nodes"][0]["state"], "HEALTHY");
    assert_eq!(peers(&node, Instant::from_millis(10), false), json!([]));
}

/// A node named `name` of a keyed test mesh.
fn mesh_node(seed: u8, name: &str) -> Node {
    let identity = Identity {
        key: shoal_core::sign::NodeKey::from_seed([seed; 32]),
        name: wire::name(name).expect("valid"),
        incarnation: 1,
    };
    let config = Config {
        mesh_id: 0x5348_0001,
        key: Some(wire::MeshKey([3; 32])),
        ..Config::default()
    };
    Node::new(identity, config, u64::from(seed), Instant::ZERO).expect("valid")
}

#[test]
fn status_words_each_route_as_shoal_status_prints_it() {
    let mut here = mesh_node(1, "here");
    let mut there = mesh_node(2, "there");
    let now = Instant::from_millis(10);
    there.handle_timeout(now);
    let from = std::net::SocketAddr::from(([127, 0, 0, 2], 20195));
    while let Some(transmit) = there.poll_transmit() {
        here.handle_datagram(now, from, shoal_core::Arrival::Broadcast, &transmit.payload);
    }
    let status = status(&here, now);
    let route_of = |name: &str| {
        status["nodes"]
            .as_array()
            .and_then(|nodes| nodes.iter().find(|n| n["name"] == name))
            .map(|n| n["route"].clone())
    };
    // The dashboard shows `route` as is; the CLI prints the same words.
    assert_eq!(route_of("here"), Some(json!("0 hops")), "{status}");
    assert_eq!(route_of("there"), Some(json!("1 hop via here")), "{status}");
    let printed = client::format_status(&status);
    assert!(
        printed.contains("here: HEALTHY (route: 0 hops)\n"),
        "{printed}"
    );
    assert!(
        printed.contains("there: HEALTHY (route: 1 hop via here)\n"),
        "{printed}"
    );
}

#[test]
fn a_node_that_left_does_not_degrade_the_mesh_but_one_lost_does() {
    let mut here = mesh_node(1, "here");
    let mut there = mesh_node(2, "there");
    let mut gone = mesh_node(3, "gone");
    let mut now = Instant::from_millis(10);
    let deliver = |here: &mut Node, from: &mut Node, host: u8, now: Instant| {
        let address = std::net::SocketAddr::from(([127, 0, 0, host], 20195));
        while let Some(transmit) = from.poll_transmit() {
            here.handle_datagram(
                now,
                address,
                shoal_core::Arrival::Broadcast,
                &transmit.payload,
            );
        }
    };
    there.handle_timeout(now);
    gone.handle_timeout(now);
    deliver(&mut here, &mut there, 2, now);
    deliver(&mut here, &mut gone, 3, now);
    let status_now = status(&here, now);
    assert_eq!(
        (
            &status_now["mesh"],
            &status_now["active"],
            &status_now["total"]
        ),
        (&json!("online"), &json!(3), &json!(3)),
        "{status_now}"
    );
    // A goodbye: LEFT is listed, and counts neither way.
    gone.handle_leave(now);
    deliver(&mut here, &mut gone, 3, now);
    let status_now = status(&here, now);
    let state_of = |status: &Value, name: &str| {
        status["nodes"]
            .as_array()
            .and_then(|nodes| nodes.iter().find(|n| n["name"] == name))
            .map(|n| n["state"].clone())
    };
    assert_eq!(
        state_of(&status_now, "gone"),
        Some(json!("LEFT")),
        "{status_now}"
    );
    assert_eq!(
        (
            &status_now["mesh"],
            &status_now["active"],
            &status_now["total"]
        ),
        (&json!("online"), &json!(2), &json!(2)),
        "{status_now}"
    );
    // Silence is a fault: `there` stops answering and turns UNREACHABLE.
    for _ in 0..100 {
        now = now + std::time::Duration::from_millis(100);
        here.handle_timeout(now);
        while here.poll_transmit().is_some() {}
    }
    let status_now = status(&here, now);
    assert_eq!(
        state_of(&status_now, "there"),
        Some(json!("UNREACHABLE")),
        "{status_now}"
    );
    assert_eq!(
        (
            &status_now["mesh"],
            &status_now["active"],
            &status_now["total"]
        ),
        (&json!("degraded"), &json!(1), &json!(2)),
        "{status_now}"
    );
}

#[test]
fn left_nodes_count_neither_way_and_any_other_state_degrades() {
    use PeerState::{Healthy, Left, Suspect, Unreachable};
    let health = |states: &[PeerState]| {
        let health = MeshHealth::of(states.iter().copied());
        (health.active, health.total, health.is_online())
    };
    assert_eq!(health(&[Healthy]), (1, 1, true));
    assert_eq!(health(&[Healthy, Left, Healthy]), (2, 2, true));
    assert_eq!(health(&[Healthy, Left, Left]), (1, 1, true));
    assert_eq!(health(&[Healthy, Left, Unreachable]), (1, 2, false));
    assert_eq!(health(&[Healthy, Suspect, Healthy]), (2, 3, false));
    assert_eq!(health(&[]), (0, 0, true));
}

#[test]
fn rules_say_why_an_unknown_rule_is_unknown_with_the_nearest_name() {
    use shoal_core::rules::{RuleSpec, Rules};
    let mut node = mesh_node(3, "pi-1");
    node.set_wall_clock(Instant::ZERO, 1_700_000_000_000);
    let spec = |name: &str, when: &str| RuleSpec {
        name: name.to_owned(),
        when: shoal_config::expr::parse(when).expect("parses"),
        until: None,
        hold_for: Duration::ZERO,
        run: "fan_on".to_owned(),
        otherwise: Some("fan_off".to_owned()),
        on_unknown: Some("fan_off".to_owned()),
        stale_after: Some(Duration::from_secs(2)),
    };
    node.set_rules(
        Rules::new(
            vec![
                spec("typo", "pi-1/temprature > 26"),
                spec("cool", "self/temperature > 26"),
            ],
            Instant::ZERO,
        ),
        Vec::new(),
    );
    let reading = |ms: u64| Reading {
        name: wire::name("temperature").expect("valid"),
        value: wire::Value::Float(21.0),
        unit: wire::Unit::new(),
        ts_ms: 1_700_000_000_000 + ms,
    };
    for ms in [0, 1000, 2000, 3000] {
        node.handle_reading(Instant::from_millis(ms), reading(ms))
            .expect("stored");
        node.handle_timeout(Instant::from_millis(ms));
    }
    let answer = rules(&node, Instant::from_millis(3000), &VecDeque::new());
    let [typo, cool] = answer["rules"].as_array().expect("rules").as_slice() else {
        panic!("two rules: {answer}");
    };
    // The fields that were there stay as they were.
    assert_eq!(typo["name"], "typo");
    assert_eq!(typo["state"], "unknown");
    assert_eq!(typo["since_ms"], 3000);
    assert_eq!(typo["last_action"]["executor"], "fan_off", "{answer}");
    // And it says why.
    assert_eq!(typo["condition"], Value::Null);
    assert_eq!(typo["stuck"], true);
    assert_eq!(
        typo["why"],
        "pi-1/temprature matches no point (did you mean pi-1/temperature?)"
    );
    assert_eq!(
        typo["unknown_inputs"],
        json!([{"pattern": "pi-1/temprature", "problem": "matches_nothing", "suggestion": "pi-1/temperature"}])
    );
    assert_eq!(cool["state"], "inactive");
    assert_eq!(cool["condition"], false);
    assert_eq!(cool["stuck"], false);
    assert_eq!(cool["why"], Value::Null);
    assert_eq!(cool["unknown_inputs"], json!([]));
    // Readings stop: the right rule's input goes stale, and it says so.
    let later = Instant::from_millis(6000);
    node.handle_timeout(later);
    let answer = rules(&node, later, &VecDeque::new());
    assert_eq!(answer["rules"][1]["state"], "unknown");
    assert_eq!(
        answer["rules"][1]["why"],
        "self/temperature is stale (older than stale_after)"
    );
}

#[test]
fn a_reading_under_the_agents_own_names_is_refused_and_the_rest_kept() {
    let mut node = mesh_node(1, "kitchen");
    let readings = [
        "exec.door",
        "switch.fan",
        "mqtt.bridge",
        "availability",
        "ok",
    ]
    .into_iter()
    .map(|name| (name.to_owned(), 1.0, String::new()))
    .collect();
    let answer = ingest(&mut node, Instant::from_millis(10), readings);
    assert_eq!(answer.status, 422);
    let error = answer.body["error"].as_str().expect("error");
    assert!(
        error.starts_with("accepted 1; refused: exec.door: the name is the agent's own"),
        "{error}"
    );
    for name in ["switch.fan", "mqtt.bridge", "availability"] {
        assert!(
            error.contains(&format!("{name}: the name is the agent's own")),
            "{error}"
        );
        assert!(node.store().point(node.id(), name).is_none());
    }
    assert!(node.store().point(node.id(), "ok").is_some());
}
