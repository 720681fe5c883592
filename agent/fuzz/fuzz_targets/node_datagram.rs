//! Any sequence of datagrams into a running open-mesh node: never a panic,
//! never unbounded growth.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_core::time::Instant;
use shoal_core::sign::NodeKey;
use shoal_core::wire::name;
use shoal_core::{Config, Identity, Node, Arrival};
use std::net::SocketAddr;

fuzz_target!(|data: &[u8]| {
    let identity = Identity {
        key: NodeKey::from_seed([1; 32]),
        name: name("fuzzed").expect("valid"),
        incarnation: 1,
    };
    let config = Config {
        max_nodes: 8,
        ..Config::default()
    };
    let Ok(mut node) = Node::new(identity, config, 1, Instant::ZERO) else {
        return;
    };
    let from: SocketAddr = "127.0.0.2:20195".parse().expect("addr");
    // Split the input into datagrams at every 0xFF byte, 300 ms apart.
    for (i, datagram) in data.split(|&b| b == 0xFF).enumerate() {
        let now = Instant::from_millis(i as u64 * 300);
        node.handle_datagram(now, from, Arrival::Broadcast, datagram);
        node.handle_timeout(now);
        while node.poll_transmit().is_some() {}
        while node.poll_event().is_some() {}
    }
    assert!(node.peers().len() <= 8);
});
