//! Unit tests of `client`: the CLI's HTTP client.
use super::*;
use serde_json::json;

#[test]
fn status_prints_the_mesh_line_and_one_line_per_node() {
    let status = json!({
        "mesh": "degraded", "active": 4, "total": 5, "self": "node-1",
        "nodes": [
            {"name": "node-3", "state": "UNREACHABLE", "hops": null, "via": null},
            {"name": "node-4", "state": "HEALTHY", "hops": 2, "via": "gw-1"},
            {"name": "node-1", "state": "HEALTHY", "hops": 0, "via": null},
            {"name": "node-2", "state": "HEALTHY", "hops": 1, "via": null},
            {"name": "gw-1", "state": "HEALTHY", "hops": 1, "via": null},
        ]
    });
    assert_eq!(
        format_status(&status),
        "[Mesh Degraded] - 4/5 nodes active\n  node-1: HEALTHY (route: 0 hops)\n  gw-1: HEALTHY (route: 1 hop via node-1)\n  node-2: HEALTHY (route: 1 hop via node-1)\n  node-3: UNREACHABLE\n  node-4: HEALTHY (route: 2 hops via gw-1)\n"
    );
}

#[test]
fn status_names_conflicts_and_strangers_after_the_nodes() {
    let status = json!({
        "mesh": "online", "active": 1, "total": 1, "self": "twin",
        "nodes": [{"name": "twin", "state": "HEALTHY", "hops": 0, "via": null}],
        "conflicts": [{"name": "twin", "ids": ["0000000000000001", "0000000000000002"]}],
        "strangers": [
            {"id": "00000000000000aa", "name": null, "address": "10.0.0.5:20195", "mesh": "0badcafe", "protocol": null, "open": false},
            {"id": "00000000000000bb", "name": "old", "address": "10.0.0.6:20195", "mesh": null, "protocol": 0, "open": false},
            {"id": "00000000000000cc", "name": "lab", "address": "10.0.0.7:20195", "mesh": "53480000", "protocol": null, "open": true},
        ]
    });
    let text = format_status(&status);
    let lines: Vec<&str> = text.lines().skip(2).collect();
    assert_eq!(
        lines,
        [
            "  name conflict: 2 live nodes are named twin (0000000000000001, 0000000000000002): give one another node.name",
            "  other mesh: 00000000000000aa at 10.0.0.5:20195 is in mesh 0badcafe (another key): to join them, run shoal token on one and shoal join TOKEN on the other",
            "  other protocol: old (00000000000000bb) at 10.0.0.6:20195 speaks protocol 0, this node 2: upgrade the older one",
            "  other mesh: lab (00000000000000cc) at 10.0.0.7:20195 is in an open mesh (no key): they ignore each other",
        ]
    );
}

#[test]
fn rules_print_state_condition_age_and_why_an_unknown_one_is() {
    let answer = json!({
        "rules": [
            {"name": "cool", "state": "active", "since_ms": 125_000, "condition": true,
             "last_action": {"executor": "fan_on", "ago_ms": 125_000},
             "stuck": false, "why": null, "unknown_inputs": []},
            {"name": "typo", "state": "unknown", "since_ms": 3_000, "condition": null,
             "last_action": {"executor": "fan_off", "ago_ms": 1_000},
             "stuck": true,
             "why": "self/temprature matches no point (did you mean self/temperature?)",
             "unknown_inputs": [{"pattern": "self/temprature", "problem": "matches_nothing",
                                 "suggestion": "self/temperature"}]},
        ],
        "runs": []
    });
    assert_eq!(
        format_rules(&answer),
        "  cool: active, condition true, for 2 min (ran fan_on 2 min ago)\n\
         \x20 typo: unknown, condition unknown, for 3 s (ran fan_off 1 s ago)\n\
         \x20   why: self/temprature matches no point (did you mean self/temperature?)\n"
    );
    assert_eq!(
        format_rules(&json!({"rules": [], "runs": []})),
        "no rules\n"
    );
    // A stand-in that answers something else prints no rules, not a panic.
    assert_eq!(format_rules(&json!({"mesh": "online"})), "no rules\n");
    let stuck =
        json!({"rule": "typo", "unknown_ms": 2_000, "why": "self/temprature matches no point"});
    assert_eq!(
        format_event("rule_stuck", &stuck, None).as_deref(),
        Some("rule typo has been unknown for 2 s: self/temprature matches no point")
    );
}

#[test]
fn replies_plain_and_chunked_are_parsed() {
    let plain = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 12\r\n\r\n{\"a\": true}\n";
    assert_eq!(
        parse_reply(plain),
        Ok(Reply {
            status: 200,
            body: json!({"a": true})
        })
    );
    let chunked = b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{\"err\r\n9\r\nor\": \"x\"}\r\n0\r\n\r\n";
    let reply = parse_reply(chunked).expect("parsed");
    assert_eq!(reply.status, 404);
    assert_eq!(reply.error(), "x");
    assert!(parse_reply(b"garbage").is_err());
    assert!(parse_reply(b"HTTP/1.1 200 OK\r\n\r\nnot json").is_err());
}

#[test]
fn an_agent_that_is_not_there_is_unreachable() {
    // Port 9 (discard) on loopback: nothing listens there in tests.
    let error = request(
        "127.0.0.1:9",
        "GET",
        "/api/status",
        None,
        Duration::from_secs(1),
    )
    .expect_err("nothing listens");
    assert!(matches!(error, ClientError::Unreachable { .. }), "{error}");
    assert!(matches!(
        request("not an address", "GET", "/", None, Duration::from_secs(1)),
        Err(ClientError::BadAddress(_))
    ));
}

#[test]
fn the_mqtt_lines_say_the_role_the_bridge_and_the_last_handover() {
    let mqtt = serde_json::json!({
        "broker": "127.0.0.1:1883",
        "connected": true,
        "role": "standby",
        "bridge": "b",
        "handovers": [
            {"at_ms": 1_000, "from": null, "to": "a"},
            {"at_ms": 50_000, "from": "a", "to": "b"}
        ]
    });
    assert_eq!(
        format_mqtt(&mqtt, 62_000),
        "  MQTT: 127.0.0.1:1883 connected; this node standby; bridge: b\n  MQTT handover: a -> b, 12s ago\n"
    );
    let alone = serde_json::json!({"broker": "h:1", "connected": false, "role": "offline", "bridge": null, "handovers": []});
    assert_eq!(
        format_mqtt(&alone, 0),
        "  MQTT: h:1 not connected; this node offline; bridge: none\n"
    );
}

#[test]
fn history_prints_one_utc_line_per_step() {
    assert_eq!(utc_minute(0), "1970-01-01 00:00");
    assert_eq!(utc_minute(1_767_225_600_000), "2026-01-01 00:00");
    assert_eq!(
        utc_minute(951_782_400_000 + 61 * 60_000),
        "2000-02-29 01:01"
    );
    let steps = serde_json::json!([
        {"ts_ms": 1_767_225_600_000u64, "min": 1.5, "avg": 2.25, "max": 3.0},
        {"ts_ms": 1_767_229_200_000u64, "min": -1.0, "avg": 0.0, "max": 1.0},
    ]);
    let text = format_history(&steps);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[1].starts_with("2026-01-01 00:00") && lines[1].contains("2.2500"),
        "{text}"
    );
    assert!(
        lines[2].starts_with("2026-01-01 01:00") && lines[2].contains("-1.0000"),
        "{text}"
    );
    assert!(format_history(&serde_json::json!([])).starts_with("no history"));
}
