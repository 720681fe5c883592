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
