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
