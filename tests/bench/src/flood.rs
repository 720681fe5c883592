//! The frames of a beacon flood: what an attacker on the LAN can send to
//! every agent's beacon port at once.
//!
//! A third is random bytes, a third random bytes behind shoal's magic and
//! protocol version (they get as far as the header checks), and a third are
//! well-formed beacons of an open mesh from made-up nodes, each from a new
//! id or a new counter: they pass every check an open mesh has, so they
//! press on the peer table, the replay windows and the route bookkeeping.

use shoal_core::sign::NodeKey;
use shoal_core::time::Instant;
use shoal_core::{wire, Config, Destination, Identity, Node};
use std::time::Duration;

/// Made-up nodes whose beacons are in the flood.
const FORGERS: u64 = 1_000;

/// `count` frames, always the same ones (a fixed seed).
pub fn frames(count: usize) -> Vec<Vec<u8>> {
    let forged = forged_beacons(count / 3);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut out = Vec::with_capacity(count);
    let mut forged = forged.into_iter();
    for i in 0..count {
        if i % 3 == 2 {
            if let Some(frame) = forged.next() {
                out.push(frame);
                continue;
            }
        }
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let len = (state % 1300) as usize;
        let mut frame: Vec<u8> = (0..len).map(|k| (state >> (k % 56)) as u8).collect();
        if i % 3 == 1 && len > 3 {
            frame[..3].copy_from_slice(&[b'S', b'H', wire::VERSION]);
        }
        out.push(frame);
    }
    out
}

/// `count` beacons from [`FORGERS`] made-up nodes of an open mesh, a
/// beacon interval apart, interleaved.
fn forged_beacons(count: usize) -> Vec<Vec<u8>> {
    let config = Config {
        mesh_id: wire::mesh_id(None),
        key: None,
        ..Config::default()
    };
    let mut forgers: Vec<Node> = (0..FORGERS)
        .filter_map(|n| {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&n.to_le_bytes());
            seed[8] = 0xf1;
            let identity = Identity {
                key: NodeKey::from_seed(seed),
                name: wire::name(&format!("forged-{n}"))?,
                incarnation: 1,
            };
            Node::new(identity, config.clone(), n, Instant::ZERO).ok()
        })
        .collect();
    let mut out = Vec::with_capacity(count);
    let mut now = Instant::ZERO;
    while out.len() < count && !forgers.is_empty() {
        now = now + config.beacon_interval + Duration::from_millis(1);
        for forger in &mut forgers {
            forger.handle_timeout(now);
            while let Some(sent) = forger.poll_transmit() {
                if sent.destination == Destination::Broadcast && out.len() < count {
                    out.push(sent.payload.to_vec());
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_third_are_beacons_a_node_of_an_open_mesh_accepts() {
        let frames = frames(300);
        assert_eq!(frames.len(), 300);
        let config = Config {
            mesh_id: wire::mesh_id(None),
            key: None,
            ..Config::default()
        };
        let identity = Identity {
            key: NodeKey::from_seed([7; 32]),
            name: wire::name("victim").expect("valid"),
            incarnation: 1,
        };
        let mut victim = Node::new(identity, config, 7, Instant::ZERO).expect("valid");
        let from = std::net::SocketAddr::from(([127, 0, 0, 9], 20196));
        let now = Instant::from_millis(1_000);
        for frame in frames.iter().skip(2).step_by(3) {
            victim.handle_datagram(now, from, shoal_core::Arrival::Broadcast, frame);
        }
        // 100 forged beacons from 100 of the made-up ids: each is a neighbor now.
        assert_eq!(victim.peers().len(), 100);
    }
}
