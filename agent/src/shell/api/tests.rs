use super::*;
use shoal_core::{wire, Config, Identity};

#[test]
fn percent_escapes_are_decoded_and_bad_ones_kept() {
    assert_eq!(percent_decode("gw%2D1"), "gw-1");
    assert_eq!(percent_decode("plain"), "plain");
    assert_eq!(percent_decode("bad%zz%"), "bad%zz%");
    assert_eq!(percent_decode("é%"), "é%");
}

#[test]
fn the_token_comparison_needs_the_whole_token() {
    assert!(constant_time_eq(b"secret", b"secret"));
    assert!(!constant_time_eq(b"secret", b"secre"));
    assert!(!constant_time_eq(b"", b"secret"));
    assert!(!constant_time_eq(b"secret!", b"secret"));
}

#[test]
fn query_flags() {
    assert!(query_flag("healthy=true", "healthy"));
    assert!(query_flag("x=1&healthy", "healthy"));
    assert!(!query_flag("healthy=false", "healthy"));
    assert!(!query_flag("", "healthy"));
}

#[test]
fn a_lone_node_is_an_online_mesh_of_one() {
    let identity = Identity {
        id: wire::NodeId(7),
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
