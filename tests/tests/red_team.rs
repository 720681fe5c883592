//! Attacks on the core from the same LAN, reproduced: amplification by a
//! spoofed source (a made-up digest in an open mesh, a broadcast one, a
//! captured keyed one replayed), knocks steered by a peer list, and the
//! point store filled with made-up origins. Each prints the figure it
//! measures (`--nocapture`).

use shoal_core::sign::NodeKey;
use shoal_core::time::Instant;
use shoal_core::wire::{self, Counter, Header, MeshKey, Message, NodeId, Value};
use shoal_core::{Arrival, Config, Destination, Identity, Node, Reading};
use std::net::SocketAddr;
use std::time::Duration;

fn key(n: u64) -> NodeKey {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&n.to_le_bytes());
    seed[8] = 0x5a;
    NodeKey::from_seed(seed)
}

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, n], 20196))
}

/// The victim of a spoofed source: not a node.
const VICTIM: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 250)),
    53,
);

fn config(key: Option<MeshKey>) -> Config {
    Config {
        mesh_id: wire::mesh_id(key.as_ref()),
        key,
        ..Config::default()
    }
}

fn node(n: u64, key: Option<MeshKey>) -> Node {
    let identity = Identity {
        key: self::key(n),
        name: wire::name(&format!("node-{n}")).expect("valid"),
        incarnation: 1,
    };
    Node::new(identity, config(key), n, Instant::ZERO).expect("valid")
}

/// Nodes 1-3 with 40 points each, all synced by broadcast for 10 s.
fn mesh(key: Option<MeshKey>) -> Vec<Node> {
    let mut nodes: Vec<Node> = (1..=3).map(|n| node(n, key.clone())).collect();
    for (i, node) in nodes.iter_mut().enumerate() {
        for p in 0..40 {
            let reading = Reading {
                name: wire::name(&format!("sensor-{p}-of-a-long-name")).expect("valid"),
                value: Value::Float(20.0 + p as f64),
                unit: wire::unit("°C").expect("valid"),
                ts_ms: 1_763_800_000_000,
            };
            node.handle_reading(Instant::from_millis(i as u64), reading)
                .expect("stored");
        }
    }
    let mut now = Instant::ZERO;
    for _ in 0..200 {
        now = now + Duration::from_millis(50);
        exchange(&mut nodes, now);
    }
    nodes
}

/// Delivers everything the nodes send (broadcast to all, unicast to its
/// address) and drops what goes elsewhere.
fn exchange(nodes: &mut [Node], now: Instant) {
    for i in 0..nodes.len() {
        nodes[i].handle_timeout(now);
        let sent: Vec<_> = std::iter::from_fn(|| nodes[i].poll_transmit()).collect();
        for transmit in sent {
            for (j, receiver) in nodes.iter_mut().enumerate() {
                let to_j = match transmit.destination {
                    Destination::Broadcast => j != i,
                    Destination::Unicast(a) => a == addr(j as u8 + 1),
                };
                if to_j {
                    let arrival = match transmit.destination {
                        Destination::Broadcast => Arrival::Broadcast,
                        Destination::Unicast(_) => Arrival::Unicast,
                    };
                    receiver.handle_datagram(now, addr(i as u8 + 1), arrival, &transmit.payload);
                }
            }
        }
    }
}

/// Bytes `node` sends to `to` (drains everything).
fn bytes_to(node: &mut Node, to: SocketAddr) -> usize {
    std::iter::from_fn(|| node.poll_transmit())
        .filter(|t| t.destination == Destination::Unicast(to))
        .map(|t| t.payload.len())
        .sum()
}

fn digest_frame(sender: NodeId, key: Option<&MeshKey>) -> Vec<u8> {
    let header = Header {
        mesh_id: wire::mesh_id(key),
        sender,
        counter: Counter {
            incarnation: 1,
            seq: 1,
        },
    };
    let digest = wire::Digest {
        request: true,
        first: NodeId(0),
        last: NodeId(u64::MAX),
        entries: heapless::Vec::new(),
    };
    let cipher = key.map(wire::Cipher::new);
    wire::encode(&header, &Message::Digest(digest), cipher.as_ref())
        .expect("encodes")
        .to_vec()
}

#[test]
fn a_spoofed_digest_gets_at_most_three_times_its_size_back() {
    let mut nodes = mesh(None);
    let now = Instant::from_millis(20_000);
    // A made-up sender, the victim's address, one small digest.
    let frame = digest_frame(NodeId(0xbad), None);
    let mut total = 0;
    for node in nodes.iter_mut() {
        std::iter::from_fn(|| node.poll_transmit()).for_each(drop);
        node.handle_datagram(now, VICTIM, Arrival::Unicast, &frame);
        let sent = bytes_to(node, VICTIM);
        eprintln!(
            "open mesh, {} B digest: {sent} B back (x{:.1})",
            frame.len(),
            sent as f64 / frame.len() as f64
        );
        assert!(sent <= 3 * frame.len(), "{sent} B for {} B", frame.len());
        total += sent;
    }
    // The same frame by broadcast reaches all three: each answers within
    // its own budget.
    eprintln!("broadcast: {total} B back from 3 nodes");
    assert!(total <= 3 * 3 * frame.len());
    // A real node at that address echoes the challenge and then gets the
    // whole answer: the check costs one round trip.
    let cut: u64 = nodes.iter().map(|n| n.stats().amplification_cut).sum();
    assert!(cut >= 3, "answers were cut, not just small: {cut}");
}

#[test]
fn a_captured_keyed_digest_replayed_from_a_spoofed_source_is_not_amplified() {
    let key = MeshKey([9; 32]);
    let mut nodes = mesh(Some(key.clone()));
    // A real member's digest, as captured on the wire...
    let frame = digest_frame(key_id(1), Some(&key));
    // ...replayed to a member that never heard node 1's counters.
    let mut fresh = node(7, Some(key.clone()));
    let mut all = vec![node(8, Some(key.clone())), node(9, Some(key.clone()))];
    all.push(std::mem::replace(
        &mut nodes[2],
        node(10, Some(key.clone())),
    ));
    fresh.handle_datagram(Instant::ZERO, VICTIM, Arrival::Unicast, &frame);
    let sent = bytes_to(&mut fresh, VICTIM);
    eprintln!(
        "keyed replay to a fresh node: {sent} B back for {} B",
        frame.len()
    );
    assert!(sent <= 3 * frame.len());
    // And to a member holding 120 points.
    let member = &mut all[2];
    std::iter::from_fn(|| member.poll_transmit()).for_each(drop);
    let frame = digest_frame(key_id(11), Some(&key));
    member.handle_datagram(
        Instant::from_millis(20_000),
        VICTIM,
        Arrival::Unicast,
        &frame,
    );
    let sent = bytes_to(member, VICTIM);
    eprintln!(
        "keyed replay to a full member: {sent} B back for {} B",
        frame.len()
    );
    assert!(sent <= 3 * frame.len());
}

fn key_id(n: u64) -> NodeId {
    key(n).id()
}

#[test]
fn a_real_node_passes_the_address_check_and_then_gets_everything() {
    let mut nodes = mesh(None);
    let mut newcomer = node(20, None);
    let mut now = Instant::from_millis(20_000);
    // The newcomer at 10.0.0.20 hears node 1's beacons and pulls from it.
    let newcomer_addr = addr(20);
    for _ in 0..100 {
        now = now + Duration::from_millis(50);
        for (i, sender) in nodes.iter_mut().enumerate() {
            sender.handle_timeout(now);
            let sent: Vec<_> = std::iter::from_fn(|| sender.poll_transmit()).collect();
            for t in sent {
                let arrival = match t.destination {
                    Destination::Broadcast => Some(Arrival::Broadcast),
                    Destination::Unicast(a) if a == newcomer_addr => Some(Arrival::Unicast),
                    Destination::Unicast(_) => None,
                };
                if let Some(arrival) = arrival {
                    newcomer.handle_datagram(now, addr(i as u8 + 1), arrival, &t.payload);
                }
            }
        }
        newcomer.handle_timeout(now);
        let sent: Vec<_> = std::iter::from_fn(|| newcomer.poll_transmit()).collect();
        for t in sent {
            for (i, node) in nodes.iter_mut().enumerate() {
                let to_i = match t.destination {
                    Destination::Broadcast => true,
                    Destination::Unicast(a) => a == addr(i as u8 + 1),
                };
                if to_i {
                    node.handle_datagram(now, newcomer_addr, Arrival::Unicast, &t.payload);
                }
            }
        }
    }
    let points = newcomer.store().len();
    eprintln!("the newcomer holds {points} points after 5 s");
    assert_eq!(points, 120);
    assert!(nodes.iter().any(|n| n.stats().addresses_checked >= 1));
}

#[test]
fn a_peer_list_does_not_steer_knocks_outside_our_networks() {
    let mut victim_node = node(1, None);
    victim_node.set_local_networks(&[(std::net::Ipv4Addr::new(10, 0, 0, 1), 24)]);
    // 48 addresses the sender chose, outside 10.0.0.0/24.
    let list = wire::PeerList {
        peers: (0..48)
            .map(|i| wire::PeerAddress {
                node: NodeId(1000 + i),
                ip: [192, 0, 2, i as u8],
                port: 53,
            })
            .collect(),
    };
    let header = Header {
        mesh_id: wire::mesh_id(None),
        sender: NodeId(0xbad),
        counter: Counter {
            incarnation: 1,
            seq: 1,
        },
    };
    let frame = wire::encode(&header, &Message::Peers(list.clone()), None).expect("encodes");
    victim_node.handle_datagram(Instant::ZERO, addr(99), Arrival::Unicast, &frame);
    let mut knocks = 0;
    for s in 1..=60 {
        let now = Instant::from_millis(s * 1000);
        victim_node.handle_timeout(now);
        knocks += std::iter::from_fn(|| victim_node.poll_transmit())
            .filter(|t| matches!(t.destination, Destination::Unicast(a) if a.ip().to_string().starts_with("192.0.2.")))
            .count();
    }
    eprintln!(
        "open mesh, {} B peer list: {knocks} knocks in 60 s",
        frame.len()
    );
    assert_eq!(knocks, 0);
    assert_eq!(victim_node.stats().foreign_addresses_refused, 48);
    // In a keyed mesh a member's list is followed, at most 8 knocks a beacon.
    let key = MeshKey([9; 32]);
    let mut member = node(1, Some(key.clone()));
    let cipher = wire::Cipher::new(&key);
    let header = Header {
        mesh_id: wire::mesh_id(Some(&key)),
        ..header
    };
    let frame = wire::encode(&header, &Message::Peers(list), Some(&cipher)).expect("encodes");
    member.handle_datagram(Instant::ZERO, addr(99), Arrival::Unicast, &frame);
    let mut most = 0;
    for s in 1..=60 {
        let now = Instant::from_millis(s * 1000);
        member.handle_timeout(now);
        let burst = std::iter::from_fn(|| member.poll_transmit())
            .filter(|t| matches!(t.destination, Destination::Unicast(a) if a.ip().to_string().starts_with("192.0.2.")))
            .count();
        most = most.max(burst);
    }
    eprintln!("keyed mesh: at most {most} knocks per beacon");
    assert!(most <= 8, "{most}");
}

#[test]
fn made_up_origins_never_fill_the_store_for_a_real_newcomer() {
    // One open-mesh sender, 16 deltas of 16 made-up origins each (256, the
    // store's default limit), then a real node: its points arrive.
    let mut nodes = mesh(None);
    let mut now = Instant::from_millis(20_000);
    let sender = NodeId(0xbad);
    for f in 0..16u64 {
        let mut delta = wire::Delta {
            chunks: heapless::Vec::new(),
            points: heapless::Vec::new(),
        };
        for o in 0..16u64 {
            let chunk = wire::Chunk {
                origin: NodeId(0x1000 + f * 16 + o),
                origin_name: wire::name(&format!("fake-{f}-{o}")).expect("valid"),
                incarnation: 1,
                after: 0,
                upto: 1,
                base_ts_ms: 1,
                base_age_ms: 0,
                n_points: 1,
            };
            let point = wire::PointUpdate {
                seq_gap: 1,
                name: wire::name("t").expect("valid"),
                value: Value::Float(1.0),
                unit: wire::unit("").expect("valid"),
                age_ms: 0,
            };
            delta.chunks.push(chunk).expect("room");
            delta.points.push(point).expect("room");
        }
        let header = Header {
            mesh_id: wire::mesh_id(None),
            sender,
            counter: Counter {
                incarnation: 1,
                seq: f as u32 + 1,
            },
        };
        let frame = wire::encode(&header, &Message::Delta(delta), None).expect("encodes");
        nodes[0].handle_datagram(now, addr(99), Arrival::Broadcast, &frame);
    }
    let held = nodes[0].store().origins().len();
    eprintln!("after 16 deltas of 256 made-up origins: {held} origins held");
    assert_eq!(held, 3, "only the three real nodes");
    assert_eq!(nodes[0].stats().store_not_live, 256);
    // A real newcomer's points arrive.
    let mut newcomer = node(30, None);
    newcomer
        .handle_reading(
            now,
            Reading {
                name: wire::name("t").expect("valid"),
                value: Value::Float(5.0),
                unit: wire::unit("").expect("valid"),
                ts_ms: 1,
            },
        )
        .expect("stored");
    for _ in 0..60 {
        now = now + Duration::from_millis(100);
        newcomer.handle_timeout(now);
        let sent: Vec<_> = std::iter::from_fn(|| newcomer.poll_transmit()).collect();
        for t in sent {
            if t.destination == Destination::Broadcast {
                nodes[0].handle_datagram(now, addr(30), Arrival::Broadcast, &t.payload);
            }
        }
        std::iter::from_fn(|| nodes[0].poll_transmit()).for_each(drop);
    }
    assert!(nodes[0].store().point(newcomer.id(), "t").is_some());
}

#[test]
fn a_flood_of_made_up_ids_does_not_lock_a_real_newcomer_out_of_an_open_mesh() {
    // The table holds 64; 100 made-up ids beacon from one attacker's
    // address (which even echoes address checks), about 100 frames a
    // second. A real node arriving during the flood gets in within 2 s and
    // stays.
    let attacker = addr(200);
    let mut config = config(None);
    config.max_nodes = 64;
    let mut victim = Node::new(
        Identity {
            key: key(1),
            name: wire::name("victim").expect("valid"),
            incarnation: 1,
        },
        config.clone(),
        1,
        Instant::ZERO,
    )
    .expect("valid");
    let mut fakes: Vec<Node> = (0..100).map(|n| node(5000 + n, None)).collect();
    let mut newcomer = node(2, None);
    let mut now = Instant::ZERO;
    let mut joined_at = None;
    let mut dropped_out = 0;
    for step in 0..700u64 {
        now = now + Duration::from_millis(50);
        for fake in fakes.iter_mut() {
            fake.handle_timeout(now);
            let sent: Vec<_> = std::iter::from_fn(|| fake.poll_transmit()).collect();
            for t in sent {
                victim.handle_datagram(now, attacker, Arrival::Broadcast, &t.payload);
            }
        }
        // The newcomer starts after 5 s of flood.
        if step >= 100 {
            newcomer.handle_timeout(now);
            let sent: Vec<_> = std::iter::from_fn(|| newcomer.poll_transmit()).collect();
            for t in sent {
                let arrival = match t.destination {
                    Destination::Broadcast => Arrival::Broadcast,
                    Destination::Unicast(_) => Arrival::Unicast,
                };
                victim.handle_datagram(now, addr(2), arrival, &t.payload);
            }
        }
        victim.handle_timeout(now);
        let answers: Vec<_> = std::iter::from_fn(|| victim.poll_transmit()).collect();
        for t in answers {
            match t.destination {
                Destination::Unicast(a) if a == attacker => {
                    // The attacker answers address checks too.
                    fakes[0].handle_datagram(now, addr(1), Arrival::Unicast, &t.payload);
                }
                Destination::Unicast(a) if a == addr(2) => {
                    newcomer.handle_datagram(now, addr(1), Arrival::Unicast, &t.payload);
                }
                Destination::Broadcast if step >= 100 => {
                    newcomer.handle_datagram(now, addr(1), Arrival::Broadcast, &t.payload);
                }
                _ => {}
            }
        }
        // fakes[0]'s echoes go back from the attacker's address.
        let echoes: Vec<_> = std::iter::from_fn(|| fakes[0].poll_transmit())
            .filter(|t| t.destination != Destination::Broadcast)
            .collect();
        for t in echoes {
            victim.handle_datagram(now, attacker, Arrival::Unicast, &t.payload);
        }
        let healthy = victim
            .peers()
            .get(newcomer.id())
            .is_some_and(|p| p.state == shoal_core::peers::PeerState::Healthy);
        match (healthy, joined_at) {
            (true, None) => joined_at = Some(now),
            (false, Some(_)) => dropped_out += 1,
            _ => {}
        }
    }
    let full = victim.peers().len();
    let refused = victim
        .stats()
        .dropped(shoal_core::DropReason::PeerTableFull);
    eprintln!(
        "100 made-up ids at {:.0} frames/s, table {full}/64, {refused} frames refused: newcomer joined after {:?}, dropped out {dropped_out} times",
        victim.stats().frames_in as f64 / 35.0,
        joined_at.map(|at| at.saturating_since(Instant::from_millis(5_000)))
    );
    let joined = joined_at.expect("the newcomer got in");
    assert!(joined <= Instant::from_millis(7_000), "joined at {joined}");
    assert_eq!(dropped_out, 0, "and stayed");
}
