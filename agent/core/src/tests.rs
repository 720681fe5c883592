//! Tests of `Node` as a whole, frames moved by hand between a few nodes.

use super::*;
use wire::{name, unit, Datagram, Value, MAX_FRAME};

/// The id of test node `n`.
fn nid(n: u64) -> NodeId {
    crate::sign::test_key(n).id()
}
const MESH: u32 = 0x5348_0001;

fn config() -> Config {
    Config {
        mesh_id: MESH,
        key: Some(MeshKey([3; 32])),
        ..Config::default()
    }
}

fn node_with(id: u64, incarnation: u32, config: Config) -> Node {
    let identity = Identity {
        key: crate::sign::test_key(id),
        name: name(&format!("node-{id}")).expect("valid"),
        incarnation,
    };
    Node::new(identity, config, 1, Instant::ZERO).expect("valid config")
}

fn node(id: u64) -> Node {
    node_with(id, 1, config())
}

fn addr(id: u64) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, id as u8], 20195))
}

fn at(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

/// All datagrams `node` wants to send.
fn drain(node: &mut Node) -> std::vec::Vec<Transmit> {
    std::iter::from_fn(|| node.poll_transmit()).collect()
}

/// Delivers everything `from` sends to each of `to`, as broadcast.
fn deliver(now: Instant, from: &mut Node, to: &mut [&mut Node]) {
    let from_addr = addr(from.id().0);
    for transmit in drain(from) {
        for receiver in to.iter_mut() {
            let arrival = match transmit.destination {
                Destination::Broadcast => Arrival::Broadcast,
                Destination::Unicast(_) => Arrival::Unicast,
            };
            receiver.handle_datagram(now, from_addr, arrival, &transmit.payload);
        }
    }
}

fn beacon_of(node: &mut Node, now: Instant) -> Box<[u8]> {
    node.handle_timeout(now.max(node.poll_timeout().unwrap_or(now)));
    drain(node).into_iter().next().expect("a beacon").payload
}

fn reading(point: &str, value: f64) -> Reading {
    Reading {
        name: name(point).expect("valid"),
        value: Value::Float(value),
        unit: unit("°C").expect("valid"),
        ts_ms: 1_763_800_000_000,
    }
}

#[test]
fn invalid_timings_and_limits_are_refused() {
    let bad = |change: fn(&mut Config)| {
        let mut c = config();
        change(&mut c);
        c.validate()
    };
    assert_eq!(
        bad(|c| c.beacon_interval = Duration::ZERO),
        Err(ConfigError::ZeroBeaconInterval)
    );
    assert_eq!(
        bad(|c| c.suspect_after = c.beacon_interval),
        Err(ConfigError::SuspectTooEarly)
    );
    assert_eq!(
        bad(|c| c.unreachable_after = c.suspect_after),
        Err(ConfigError::UnreachableTooEarly)
    );
    assert_eq!(
        bad(|c| c.max_nodes = 0),
        Err(ConfigError::ZeroLimit("max_nodes"))
    );
    assert_eq!(
        bad(|c| c.prune_after = Duration::from_secs(1)),
        Err(ConfigError::PruneTooEarly)
    );
    assert_eq!(config().validate(), Ok(()));
}

#[test]
fn a_dead_neighbor_is_forgotten_after_prune_after() {
    let quick = Config {
        prune_after: Duration::from_secs(10),
        ..config()
    };
    let mut a = node_with(1, 1, quick);
    let mut b = node(2);
    let beacon = beacon_of(&mut b, at(0));
    a.handle_datagram(at(1), addr(2), Arrival::Broadcast, &beacon);
    // B falls silent: UNREACHABLE at 3 s, forgotten 10 s later.
    let _ = advance(&mut a, at(3_001));
    assert_eq!(
        a.peers().get(nid(2)).map(|p| p.state),
        Some(PeerState::Unreachable)
    );
    let _ = advance(&mut a, at(13_000));
    assert!(a.peers().get(nid(2)).is_some(), "not before prune_after");
    let _ = advance(&mut a, at(13_002));
    assert!(a.peers().get(nid(2)).is_none(), "forgotten");
    assert!(std::iter::from_fn(|| a.poll_event()).any(|e| e
        == Event::PeerPruned {
            peer: nid(2),
            evicted: false
        }));
    // The deadline index holds nothing of it: the next wake-up is a beacon.
    let next = a.poll_timeout().expect("beacons go on");
    assert!(next <= at(14_000));
    // If it comes back, it is simply new again.
    let beacon = beacon_of(&mut b, at(20_000));
    a.handle_datagram(at(20_001), addr(2), Arrival::Broadcast, &beacon);
    assert_eq!(
        a.peers().get(nid(2)).map(|p| p.state),
        Some(PeerState::Healthy)
    );
}

#[test]
fn a_silent_static_peer_is_knocked_on_with_backoff() {
    let mut a = node(1);
    let far: SocketAddr = "10.1.2.3:20195".parse().expect("addr");
    a.set_static_peers(vec![far]);
    let knocks: std::vec::Vec<Instant> = (0..)
        .map_while(|_| {
            let deadline = a.poll_timeout().filter(|&t| t <= at(120_000))?;
            a.handle_timeout(deadline);
            Some((deadline, drain(&mut a)))
        })
        .filter(|(_, sent)| {
            sent.iter()
                .any(|t| t.destination == Destination::Unicast(far))
        })
        .map(|(at, _)| at)
        .collect();
    // 1, 2, 4, 8, 16, 16 ... intervals apart: far fewer than 120 beacons.
    assert!(
        knocks.len() >= 5 && knocks.len() <= 14,
        "{} knocks",
        knocks.len()
    );
    let gaps: std::vec::Vec<u64> = knocks
        .windows(2)
        .map(|w| w[1].as_millis() - w[0].as_millis())
        .collect();
    assert!(
        gaps.windows(2).all(|g| g[1] + 1_000 >= g[0]),
        "never shorter: {gaps:?}"
    );
    assert!(gaps.iter().all(|&g| g <= 17_000), "capped: {gaps:?}");
    // The first retry comes one interval later (at the next beacon after it).
    assert!(gaps[0] < 2_000, "first retry after {} ms", gaps[0]);
    // Once it answers, it is a neighbor: no more backoff state for it.
    let mut b = node(2);
    let beacon = beacon_of(&mut b, at(0));
    a.handle_datagram(at(120_001), far, Arrival::Unicast, &beacon);
    assert_eq!(
        a.peers().get(nid(2)).map(|p| p.state),
        Some(PeerState::Healthy)
    );
}

#[test]
fn the_first_beacon_goes_out_within_a_tenth_of_the_interval() {
    let mut a = node(1);
    let first = a.poll_timeout().expect("a deadline");
    assert!(first <= at(100));
    a.handle_timeout(first);
    let sent = drain(&mut a);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].destination, Destination::Broadcast);
    let next = a.poll_timeout().expect("next beacon");
    let gap = next.saturating_since(first);
    assert!(
        gap >= Duration::from_millis(850) && gap <= Duration::from_millis(950),
        "{gap:?}"
    );
}

#[test]
fn a_beacon_makes_a_healthy_named_neighbor() {
    let mut a = node(1);
    let mut b = node(2);
    let beacon = beacon_of(&mut a, at(0));
    b.handle_datagram(at(5), addr(1), Arrival::Broadcast, &beacon);
    let peer = b.peers().get(nid(1)).expect("known");
    assert_eq!(peer.state, PeerState::Healthy);
    assert_eq!(peer.name.as_deref(), Some("node-1"));
    assert_eq!(peer.addr, addr(1));
    assert!(matches!(b.poll_event(), Some(Event::PeerDiscovered { .. })));
}

#[test]
fn a_newcomer_hears_us_within_a_quarter_interval_not_a_whole_one() {
    let mut a = node(1);
    let mut b = node(2);
    // a beacons at once and is then quiet for an interval...
    let first = a.poll_timeout().expect("a deadline");
    a.handle_timeout(first);
    drain(&mut a);
    let regular = a.poll_timeout().expect("next beacon");
    // ...when b starts and beacons: a answers within a quarter interval.
    let joined = first + Duration::from_millis(300);
    let beacon = beacon_of(&mut b, joined);
    a.handle_datagram(joined, addr(2), Arrival::Broadcast, &beacon);
    let early = a.poll_timeout().expect("a deadline");
    assert!(early < regular, "{early:?} vs {regular:?}");
    assert!(early <= first + Duration::from_millis(300), "{early:?}");
    a.handle_timeout(early);
    let sent = drain(&mut a);
    assert!(sent.iter().any(|t| t.destination == Destination::Broadcast));
    // A known neighbor's next beacon changes nothing, and the early beacon
    // did not make a burst: the one after is a whole interval later.
    let again = beacon_of(&mut b, early + Duration::from_millis(10));
    a.handle_datagram(
        early + Duration::from_millis(10),
        addr(2),
        Arrival::Broadcast,
        &again,
    );
    let next = a.poll_timeout().expect("a deadline");
    assert!(next >= early + Duration::from_millis(850), "{next:?}");
}

#[test]
fn every_bad_frame_is_counted_by_reason_and_the_node_keeps_working() {
    let mut a = node(1);
    let mut b = node(2);
    let good = beacon_of(&mut a, at(0));
    let mut tampered = good.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x55;
    let mut wrong_version = good.clone();
    wrong_version[2] = 9;
    let mut wrong_mesh = good.clone();
    wrong_mesh[6] ^= 1;
    let mut other_mesh_config = config();
    other_mesh_config.key = Some(MeshKey([4; 32]));
    let mut stranger = node_with(3, 1, other_mesh_config);
    let wrong_key = beacon_of(&mut stranger, at(0));
    let mut own = node(2);
    let from_self = beacon_of(&mut own, at(0));

    let cases: [(&[u8], DropReason); 8] = [
        (&good[..5], DropReason::Decode(DecodeError::Truncated)),
        (
            &[0u8; MAX_FRAME + 1],
            DropReason::Decode(DecodeError::TooLarge),
        ),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            DropReason::Decode(DecodeError::BadMagic),
        ),
        (
            &wrong_version,
            DropReason::Decode(DecodeError::UnsupportedVersion(9)),
        ),
        (&wrong_mesh, DropReason::Decode(DecodeError::WrongMesh)),
        (&tampered, DropReason::Decode(DecodeError::BadTag)),
        (&wrong_key, DropReason::Decode(DecodeError::BadTag)),
        (&from_self, DropReason::FromSelf),
    ];
    for (frame, _) in &cases {
        b.handle_datagram(at(1), addr(9), Arrival::Broadcast, frame);
    }
    assert!(b.peers().is_empty(), "no bad frame created a neighbor");
    assert_eq!(
        b.stats()
            .dropped(DropReason::Decode(DecodeError::Truncated)),
        1
    );
    assert_eq!(
        b.stats().dropped(DropReason::Decode(DecodeError::TooLarge)),
        1
    );
    assert_eq!(
        b.stats().dropped(DropReason::Decode(DecodeError::BadMagic)),
        1
    );
    assert_eq!(
        b.stats()
            .dropped(DropReason::Decode(DecodeError::UnsupportedVersion(9))),
        1
    );
    assert_eq!(
        b.stats()
            .dropped(DropReason::Decode(DecodeError::WrongMesh)),
        1
    );
    assert_eq!(
        b.stats().dropped(DropReason::Decode(DecodeError::BadTag)),
        2
    );
    assert_eq!(b.stats().dropped(DropReason::FromSelf), 1);

    // The good frame still works, once.
    b.handle_datagram(at(2), addr(1), Arrival::Broadcast, &good);
    assert!(b.peers().get(nid(1)).is_some());
    b.handle_datagram(at(3), addr(1), Arrival::Broadcast, &good);
    assert_eq!(b.stats().dropped(DropReason::Replayed), 1);
    assert_eq!(b.stats().frames_in, 10);
}

#[test]
fn malformed_and_unknown_bodies_from_a_keyless_mesh_are_counted() {
    let open = Config {
        key: None,
        ..config()
    };
    let mut b = node_with(2, 1, open.clone());
    let mut a = node_with(1, 1, open);
    let mut frame = beacon_of(&mut a, at(0)).into_vec();
    frame.truncate(wire::HEADER_LEN + 2);
    b.handle_datagram(at(1), addr(1), Arrival::Broadcast, &frame);
    assert_eq!(
        b.stats()
            .dropped(DropReason::Decode(DecodeError::Malformed)),
        1
    );
    let mut future = beacon_of(&mut a, at(1000));
    future[wire::HEADER_LEN] = 200;
    b.handle_datagram(at(1), addr(1), Arrival::Broadcast, &future);
    assert_eq!(
        b.stats()
            .dropped(DropReason::Decode(DecodeError::UnknownMessage)),
        1
    );
    assert!(b.peers().is_empty());
}

#[test]
fn garbage_never_grows_memory() {
    let mut b = node(2);
    let mut rng = rand::Rng::new(5);
    for _ in 0..20_000 {
        let len = rng.range(0, 1300) as usize;
        let frame: std::vec::Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        b.handle_datagram(at(1), addr(9), Arrival::Broadcast, &frame);
    }
    assert!(b.peers().is_empty());
    assert_eq!(b.store().origins().len(), 1);
    assert!(b.poll_transmit().is_none());
    assert!(b.poll_event().is_none());
}

#[test]
fn a_reading_is_pushed_by_broadcast_at_once() {
    let mut a = node(1);
    let mut b = node(2);
    a.handle_reading(at(10), reading("temperature", 21.5))
        .expect("accepted");
    deliver(at(12), &mut a, &mut [&mut b]);
    let point = b.store().point(nid(1), "temperature").expect("pushed");
    assert_eq!(point.value, Value::Float(21.5));
    // The push named its sender before any beacon did.
    assert_eq!(
        b.peers().get(nid(1)).and_then(|p| p.name.as_deref()),
        Some("node-1")
    );
    assert_eq!(
        b.store().origin(nid(1)).map(|o| o.name.as_str()),
        Some("node-1")
    );
}

#[test]
fn readings_beyond_the_point_limit_are_refused() {
    let mut a = node_with(
        1,
        1,
        Config {
            max_points_per_node: 2,
            ..config()
        },
    );
    a.handle_reading(at(0), reading("a", 1.0))
        .expect("accepted");
    a.handle_reading(at(0), reading("b", 1.0))
        .expect("accepted");
    assert_eq!(
        a.handle_reading(at(0), reading("c", 1.0)),
        Err(PublishError::TooManyPoints { limit: 2 })
    );
    a.handle_reading(at(0), reading("a", 2.0))
        .expect("updates still work");
}

/// `hub` hears, at `now`, the first beacon of a fresh node `id`.
fn hear_beacon(hub: &mut Node, id: u64, now: Instant) {
    let mut other = node(id);
    let beacon = beacon_of(&mut other, at(0));
    hub.handle_datagram(now, addr(id), Arrival::Broadcast, &beacon);
}

#[test]
fn ids_heard_from_one_address_count_in_no_view() {
    let mut hub = node(1);
    for id in 2..=4 {
        hear_beacon(&mut hub, id, at(100));
    }
    let honest = hub.view(at(200));
    assert_eq!(honest.0, 3);
    // Made-up ids behind one socket, as a flood of forged beacons sends them.
    let flooder = addr(200);
    for id in 1_000..1_020 {
        let mut forger = node(id);
        let beacon = beacon_of(&mut forger, at(0));
        hub.handle_datagram(at(150), flooder, Arrival::Broadcast, &beacon);
    }
    assert_eq!(hub.peers().len(), 23, "they are neighbors all the same");
    assert_eq!(hub.view(at(200)), honest, "but in no view");
}

/// Address challenges (`Cookie`s of the test mesh's key) among `sent`, of
/// the datagrams `which` picks.
fn cookies(sent: &[Transmit], which: impl Fn(&Transmit) -> bool) -> usize {
    let cipher = Cipher::new(&MeshKey([3; 32]));
    sent.iter()
        .filter(|t| which(t))
        .filter(|t| {
            let header = Header::parse(&t.payload, MESH).expect("header");
            matches!(
                wire::decode_body(&header, &t.payload, Some(&cipher)),
                Ok(Message::Cookie(_))
            )
        })
        .count()
}

#[test]
fn made_up_ids_behind_one_address_get_no_early_beacon_and_no_challenge() {
    let mut hub = node(1);
    let first = hub.poll_timeout().expect("a deadline");
    hub.handle_timeout(first);
    drain(&mut hub);
    let flooder = addr(200);
    let challenges = |sent: &[Transmit], to: SocketAddr| {
        cookies(sent, |t| t.destination == Destination::Unicast(to))
    };
    // The first id at an address is a newcomer like any: an early beacon
    // and a challenge.
    let mut forger = node(1_000);
    let beacon = beacon_of(&mut forger, at(0));
    let heard = first + Duration::from_millis(300);
    hub.handle_datagram(heard, flooder, Arrival::Broadcast, &beacon);
    assert_eq!(challenges(&drain(&mut hub), flooder), 1, "a challenge");
    let early = hub.poll_timeout().expect("a deadline");
    assert!(early <= heard, "{early:?}");
    hub.handle_timeout(early);
    drain(&mut hub);
    let regular = hub.poll_timeout().expect("a deadline");
    // More ids behind that one socket, as a flood sends them: nothing.
    for id in 1_001..1_040 {
        let mut forger = node(id);
        let beacon = beacon_of(&mut forger, at(0));
        let now = early + Duration::from_millis(id - 1_000);
        hub.handle_datagram(now, flooder, Arrival::Broadcast, &beacon);
        let sent = drain(&mut hub);
        assert_eq!(challenges(&sent, flooder), 0, "no challenge for {id}");
        assert_eq!(
            hub.poll_timeout(),
            Some(regular),
            "no early beacon for {id}"
        );
    }
    assert_eq!(hub.peers().len(), 40, "they are neighbors all the same");
    // A real newcomer at its own address still gets both.
    let mut real = node(2);
    let beacon = beacon_of(&mut real, at(0));
    let now = early + Duration::from_millis(300);
    hub.handle_datagram(now, addr(2), Arrival::Broadcast, &beacon);
    assert_eq!(challenges(&drain(&mut hub), addr(2)), 1);
    assert!(hub.poll_timeout().expect("a deadline") < regular);
    // Once the made-up ids fall silent (UNREACHABLE), they hold nothing
    // back: the next node at that address is challenged again.
    let later = early + Duration::from_secs(10);
    let _ = advance(&mut hub, later);
    let mut next = node(1_100);
    let beacon = beacon_of(&mut next, at(0));
    hub.handle_datagram(later, flooder, Arrival::Broadcast, &beacon);
    assert_eq!(challenges(&drain(&mut hub), flooder), 1);
}

#[test]
fn made_up_ids_from_ports_of_their_own_get_a_bounded_number_of_challenges() {
    let mut hub = node(1);
    let first = hub.poll_timeout().expect("a deadline");
    hub.handle_timeout(first);
    drain(&mut hub);
    let unicast_cookies =
        |sent: &[Transmit]| cookies(sent, |t| matches!(t.destination, Destination::Unicast(_)));
    // 200 made-up ids in 200 ms, each from a source port of its own (the
    // shared-address rule does not see them): a burst of challenges, then
    // a few a second, not one per frame.
    let mut challenged = 0;
    for i in 0..200u64 {
        let mut forger = node(2_000 + i);
        let beacon = beacon_of(&mut forger, at(0));
        let from = SocketAddr::from(([127, 0, 0, 200], 30_000 + i as u16));
        let now = first + Duration::from_millis(i);
        hub.handle_datagram(now, from, Arrival::Broadcast, &beacon);
        challenged += unicast_cookies(&drain(&mut hub));
    }
    let budget = address_check::NEWCOMER_BURST as usize;
    assert!(
        (budget..budget + 4).contains(&challenged),
        "{challenged} challenges for 200 made-up ids"
    );
    assert_eq!(hub.peers().len(), 200, "they are neighbors all the same");
    // A real newcomer once the flood is over is challenged at once again.
    let mut real = node(2);
    let beacon = beacon_of(&mut real, at(0));
    let later = first + Duration::from_secs(2);
    hub.handle_datagram(later, addr(2), Arrival::Broadcast, &beacon);
    assert_eq!(unicast_cookies(&drain(&mut hub)), 1);
}

#[test]
fn the_peer_table_is_bounded_and_refusals_are_counted() {
    let small = Config {
        max_nodes: 4,
        ..config()
    };
    let mut hub = node_with(100, 1, small);
    for id in 1..=8 {
        hear_beacon(&mut hub, id, at(1));
    }
    assert_eq!(hub.peers().len(), 4);
    assert_eq!(hub.stats().dropped(DropReason::PeerTableFull), 4);
    // Once the known ones are unreachable, newcomers take their place.
    hub.handle_timeout(at(10_000));
    hear_beacon(&mut hub, 50, at(10_001));
    assert!(hub.peers().get(nid(50)).is_some());
    assert_eq!(hub.peers().len(), 4);
}

#[test]
fn an_evicted_neighbor_is_forgotten_like_a_pruned_one() {
    let small = Config {
        max_nodes: 4,
        ..config()
    };
    let mut hub = node_with(100, 1, small);
    for id in 1..=4 {
        hear_beacon(&mut hub, id, at(1));
    }
    // All four UNREACHABLE, none prunable yet: each keeps a deadline.
    hub.handle_timeout(at(10_000));
    let _ = std::iter::from_fn(|| hub.poll_event()).count();
    assert!((1..=4).all(|id| hub.detector.has_deadline(nid(id))));
    hear_beacon(&mut hub, 50, at(10_001));
    let evicted: std::vec::Vec<NodeId> = (1..=4)
        .map(nid)
        .filter(|&id| hub.peers().get(id).is_none())
        .collect();
    assert_eq!(evicted.len(), 1, "one made room");
    let evicted = evicted[0];
    assert!(
        !hub.detector.has_deadline(evicted),
        "no deadline of an evicted neighbor stays behind"
    );
    let events: std::vec::Vec<Event> = std::iter::from_fn(|| hub.poll_event()).collect();
    assert!(
        events.contains(&Event::PeerPruned {
            peer: evicted,
            evicted: true
        }),
        "eviction is reported like pruning: {events:?}"
    );
    assert!(hub.peers().get(nid(50)).is_some());
}

/// A full transmit queue costs what its frames hold: at the default limit
/// of 1,024, a slot the size of the largest frame was 1.2 MiB, and a queue
/// keeps the capacity a burst gave it.
#[test]
fn a_queued_transmit_holds_its_frame_and_not_a_buffer_for_the_largest() {
    let limit = Config::default().max_pending_transmits;
    let mut a = node_with(1, 1, config());
    for i in 0..limit + 10 {
        a.handle_reading(at(0), reading("t", i as f64))
            .expect("accepted");
    }
    let queued = drain(&mut a);
    assert_eq!(queued.len(), limit);
    assert_eq!(a.stats().transmits_dropped, 10);
    let bytes: usize = queued.iter().map(|t| t.payload.len()).sum();
    let slots = limit * std::mem::size_of::<Transmit>();
    assert!(
        slots <= 64 * 1024,
        "{limit} queue slots take {slots} B: a slot must not hold a whole frame"
    );
    assert!(
        bytes + slots < 256 * 1024,
        "{limit} queued deltas take {bytes} B of frames and {slots} B of slots"
    );
}

#[test]
fn the_transmit_and_event_queues_are_bounded() {
    let mut a = node_with(
        1,
        1,
        Config {
            max_pending_transmits: 3,
            max_pending_events: 2,
            ..config()
        },
    );
    for i in 0..5 {
        a.handle_reading(at(0), reading("t", f64::from(i)))
            .expect("accepted");
    }
    assert_eq!(drain(&mut a).len(), 3);
    assert_eq!(a.stats().transmits_dropped, 2);
    assert_eq!(std::iter::from_fn(|| a.poll_event()).count(), 2);
    assert_eq!(a.stats().events_dropped, 3);
}

#[test]
fn leaving_sends_three_goodbyes_and_goes_quiet() {
    let mut a = node(1);
    let mut b = node(2);
    let beacon = beacon_of(&mut a, at(0));
    b.handle_datagram(at(1), addr(1), Arrival::Broadcast, &beacon);
    a.handle_leave(at(500));
    let goodbyes = drain(&mut a);
    assert_eq!(goodbyes.len(), 3);
    assert_eq!(a.poll_timeout(), None);
    while b.poll_event().is_some() {}
    for goodbye in &goodbyes {
        b.handle_datagram(at(501), addr(1), Arrival::Broadcast, &goodbye.payload);
    }
    assert_eq!(
        b.peers().get(nid(1)).map(|p| p.state),
        Some(PeerState::Left)
    );
    // Three copies, one transition: a later copy must not revive it first.
    let transitions: std::vec::Vec<Event> = std::iter::from_fn(|| b.poll_event()).collect();
    assert_eq!(
        transitions,
        vec![Event::PeerStateChanged {
            peer: nid(1),
            name: name("node-1"),
            from: PeerState::Healthy,
            to: PeerState::Left,
        }]
    );
    a.handle_timeout(at(5000));
    assert!(a.poll_transmit().is_none());
}

/// A frame of test node `sender` (incarnation `incarnation`, frame `seq`)
/// carrying `message`: what a member holding the mesh key can send.
fn crafted(sender: u64, incarnation: u32, seq: u32, message: &Message) -> Datagram {
    let header = Header {
        mesh_id: MESH,
        sender: nid(sender),
        counter: Counter { incarnation, seq },
    };
    wire::encode(&header, message, Some(&Cipher::new(&MeshKey([3; 32])))).expect("fits")
}

/// A goodbye for test node `node`'s incarnation, signed by `signer`.
fn farewell_by(signer: u64, node: u64, incarnation: u32) -> Message {
    let key = sign::test_key(signer);
    let mut farewell = wire::Farewell {
        node: nid(node),
        incarnation,
        key: key.public(),
        signature: wire::Signature([0; sign::SIGNATURE_LEN]),
    };
    farewell.signature = key.sign(&sign::farewell_payload(&farewell));
    Message::Leave(farewell)
}

#[test]
fn a_member_cannot_say_goodbye_for_another_node() {
    let mut b = node(2);
    let mut a = node(1);
    let beacon = beacon_of(&mut a, at(0));
    b.handle_datagram(at(1), addr(1), Arrival::Broadcast, &beacon);
    // Member 3 holds the mesh key: it claims node 1 left, in its own frame
    // and in one claiming to be node 1's; with its own key, or node 1's key
    // and its own signature.
    let mut stolen = farewell_by(3, 1, 1);
    if let Message::Leave(f) = &mut stolen {
        f.key = sign::test_key(1).public();
    }
    for (seq, message) in [farewell_by(3, 1, 1), stolen].iter().enumerate() {
        b.handle_datagram(
            at(10),
            addr(3),
            Arrival::Broadcast,
            &crafted(3, 1, seq as u32, message),
        );
        b.handle_datagram(
            at(10),
            addr(3),
            Arrival::Broadcast,
            &crafted(1, 1, 100 + seq as u32, message),
        );
    }
    assert_eq!(b.stats().signatures_invalid, 4);
    assert_eq!(
        b.peers().get(nid(1)).map(|p| p.state),
        Some(PeerState::Healthy)
    );
    // A vouch saying it left, without the goodbye, changes nothing either.
    let vouch = wire::Vouch {
        liveness: Liveness {
            node: nid(1),
            counter: Counter {
                incarnation: 1,
                seq: 5,
            },
        },
        age_ms: 0,
        left: true,
    };
    let frame = beacon_of(&mut node(3), at(20));
    let header = Header::parse(&frame, MESH).expect("a header");
    let mut lie = match wire::decode_body(&header, &frame, Some(&Cipher::new(&MeshKey([3; 32])))) {
        Ok(Message::Beacon(beacon)) => beacon,
        other => panic!("a beacon: {other:?}"),
    };
    lie.vouches.push(vouch).expect("room");
    b.handle_datagram(
        at(30),
        addr(3),
        Arrival::Broadcast,
        &crafted(3, 1, 10, &Message::Beacon(lie)),
    );
    assert_eq!(
        b.peers().get(nid(1)).map(|p| p.state),
        Some(PeerState::Healthy)
    );
}

#[test]
fn a_goodbye_of_an_ended_incarnation_or_an_unknown_node_changes_nothing() {
    let mut b = node(2);
    // Node 1 in its second life; its goodbye of the first is replayed.
    let mut a = node_with(1, 2, config());
    let beacon = beacon_of(&mut a, at(0));
    b.handle_datagram(at(1), addr(1), Arrival::Broadcast, &beacon);
    b.handle_datagram(
        at(10),
        addr(3),
        Arrival::Broadcast,
        &crafted(3, 1, 1, &farewell_by(1, 1, 1)),
    );
    // Node 4, never heard: nothing to end (a replay to a restarted node).
    b.handle_datagram(
        at(10),
        addr(3),
        Arrival::Broadcast,
        &crafted(3, 1, 2, &farewell_by(4, 4, 1)),
    );
    // This node's own goodbye of an earlier life.
    b.handle_datagram(
        at(10),
        addr(3),
        Arrival::Broadcast,
        &crafted(3, 1, 3, &farewell_by(2, 2, 1)),
    );
    assert_eq!(b.stats().farewells_stale, 3);
    assert_eq!(b.stats().signatures_invalid, 0);
    assert_eq!(
        b.peers().get(nid(1)).map(|p| p.state),
        Some(PeerState::Healthy)
    );
    assert!(b.peers().get(nid(4)).is_none());
    // Its goodbye of this life, relayed by another node, counts.
    b.handle_datagram(
        at(20),
        addr(3),
        Arrival::Broadcast,
        &crafted(3, 1, 4, &farewell_by(1, 1, 2)),
    );
    assert_eq!(
        b.peers().get(nid(1)).map(|p| p.state),
        Some(PeerState::Left)
    );
    // And a later frame of that same life does not bring it back; a new
    // life does.
    let beacon = beacon_of(&mut a, at(1_000));
    b.handle_datagram(at(1_001), addr(1), Arrival::Broadcast, &beacon);
    assert_eq!(
        b.peers().get(nid(1)).map(|p| p.state),
        Some(PeerState::Left)
    );
    let mut reborn = node_with(1, 3, config());
    let beacon = beacon_of(&mut reborn, at(0));
    b.handle_datagram(at(2_000), addr(1), Arrival::Broadcast, &beacon);
    assert_eq!(
        b.peers().get(nid(1)).map(|p| p.state),
        Some(PeerState::Healthy)
    );
}

#[test]
fn a_node_that_missed_every_goodbye_gets_it_with_the_vouch() {
    let mut a = node(1);
    let mut b = node(2);
    let mut c = node(3);
    let now = at(0);
    for t in [0, 900] {
        let now = at(t);
        for n in [&mut a, &mut b, &mut c] {
            n.handle_timeout(now.max(n.poll_timeout().unwrap_or(now)));
        }
        deliver(now, &mut a, &mut [&mut b, &mut c]);
        deliver(now, &mut b, &mut [&mut a, &mut c]);
        deliver(now, &mut c, &mut [&mut a, &mut b]);
    }
    let _ = now;
    // A leaves; only B hears it.
    a.handle_leave(at(1_000));
    deliver(at(1_000), &mut a, &mut [&mut b]);
    assert_eq!(
        b.peers().get(nid(1)).map(|p| p.state),
        Some(PeerState::Left)
    );
    // C suspects A, asks; B vouches "left" with the signed goodbye.
    let mut t = 1_000;
    while t < 4_000 && c.peers().get(nid(1)).map(|p| p.state) != Some(PeerState::Left) {
        t += 50;
        for n in [&mut b, &mut c] {
            n.handle_timeout(at(t));
        }
        deliver(at(t), &mut b, &mut [&mut c]);
        deliver(at(t), &mut c, &mut [&mut b]);
    }
    assert_eq!(
        c.peers().get(nid(1)).map(|p| p.state),
        Some(PeerState::Left),
        "at {t} ms"
    );
}

#[test]
fn a_restarted_peer_is_healthy_at_once_and_its_old_points_go() {
    let mut a = node(1);
    let mut b = node(2);
    a.handle_reading(at(0), reading("old", 1.0))
        .expect("accepted");
    let beacon = beacon_of(&mut a, at(0));
    deliver(at(1), &mut a, &mut [&mut b]);
    b.handle_datagram(at(1), addr(1), Arrival::Broadcast, &beacon);
    assert!(b.store().point(nid(1), "old").is_some());
    b.handle_timeout(at(5000));
    assert_eq!(
        b.peers().get(nid(1)).map(|p| p.state),
        Some(PeerState::Unreachable)
    );

    let mut reborn = node_with(1, 2, config());
    let beacon = beacon_of(&mut reborn, at(0));
    b.handle_datagram(at(5001), addr(1), Arrival::Broadcast, &beacon);
    assert_eq!(
        b.peers().get(nid(1)).map(|p| p.state),
        Some(PeerState::Healthy)
    );
    assert!(
        b.store().point(nid(1), "old").is_none(),
        "replaced by the new incarnation"
    );
    let events: std::vec::Vec<Event> = std::iter::from_fn(|| b.poll_event()).collect();
    assert!(events.contains(&Event::PeerRestarted {
        peer: nid(1),
        incarnation: 2
    }));
}

#[test]
fn a_restart_that_reuses_the_incarnation_is_rejected_as_replay() {
    let mut a = node(1);
    let mut b = node(2);
    for t in 0..5 {
        let beacon = beacon_of(&mut a, at(t * 1000));
        b.handle_datagram(at(t * 1000 + 1), addr(1), Arrival::Broadcast, &beacon);
    }
    let mut broken = node(1);
    let beacon = beacon_of(&mut broken, at(0));
    b.handle_datagram(at(6000), addr(1), Arrival::Broadcast, &beacon);
    assert_eq!(b.stats().dropped(DropReason::Replayed), 1);
}

/// Runs `node` through all its deadlines up to `until`; returns what it sent.
fn advance(node: &mut Node, until: Instant) -> std::vec::Vec<Transmit> {
    let mut sent = std::vec::Vec::new();
    while let Some(deadline) = node.poll_timeout().filter(|&t| t <= until) {
        node.handle_timeout(deadline);
        sent.extend(drain(node));
    }
    sent
}

fn suspects_in(frame: &[u8]) -> std::vec::Vec<NodeId> {
    let header = Header::parse(frame, MESH).expect("header");
    match wire::decode_body(&header, frame, Some(&Cipher::new(&MeshKey([3; 32])))) {
        Ok(Message::Beacon(beacon)) => beacon.suspects.iter().map(|s| s.node).collect(),
        Ok(_) => std::vec::Vec::new(),
        Err(error) => panic!("undecodable frame: {error}"),
    }
}

#[test]
fn a_suspected_node_answers_at_once() {
    let mut a = node(1);
    let mut x = node(2);
    let beacon = beacon_of(&mut x, at(0));
    a.handle_datagram(at(1), addr(2), Arrival::Broadcast, &beacon);
    // X stays silent; at 2 s A suspects it and asks at once, off its schedule.
    let before = advance(&mut a, at(2001 + 250));
    assert_eq!(
        a.peers().get(nid(2)).map(|p| p.state),
        Some(PeerState::Suspect)
    );
    let question = before.last().expect("a beacon with the question");
    assert_eq!(suspects_in(&question.payload), vec![nid(2)]);
    // X hears its id among the suspects and answers within a quarter interval.
    let _ = advance(&mut x, at(2000));
    let scheduled = x.poll_timeout().expect("deadline");
    x.handle_datagram(at(2002), addr(1), Arrival::Broadcast, &question.payload);
    let answer_at = x.poll_timeout().expect("deadline");
    assert!(
        answer_at <= scheduled && answer_at <= at(2002 + 250),
        "{answer_at}"
    );
    let answer = advance(&mut x, answer_at);
    for transmit in answer {
        a.handle_datagram(answer_at, addr(2), Arrival::Broadcast, &transmit.payload);
    }
    assert_eq!(
        a.peers().get(nid(2)).map(|p| p.state),
        Some(PeerState::Healthy)
    );
}

#[test]
fn a_vouch_keeps_a_node_alive_that_only_others_hear() {
    // A cannot hear X; B can. A suspects X and asks; B vouches.
    let mut a = node(1);
    let mut b = node(2);
    let mut x = node(3);
    let first = beacon_of(&mut x, at(0));
    a.handle_datagram(at(1), addr(3), Arrival::Broadcast, &first);
    b.handle_datagram(at(1), addr(3), Arrival::Broadcast, &first);
    let mut a_sent = std::vec::Vec::new();
    for step in 1..=60u64 {
        let now = at(step * 100);
        for transmit in advance(&mut x, now) {
            b.handle_datagram(now, addr(3), Arrival::Broadcast, &transmit.payload);
        }
        for transmit in advance(&mut b, now) {
            a.handle_datagram(now, addr(2), Arrival::Broadcast, &transmit.payload);
        }
        let sent = advance(&mut a, now);
        for transmit in &sent {
            b.handle_datagram(now, addr(1), Arrival::Broadcast, &transmit.payload);
        }
        a_sent.extend(sent);
    }
    assert!(
        a_sent
            .iter()
            .any(|t| suspects_in(&t.payload).contains(&nid(3))),
        "A asked about X"
    );
    let x_at_a = a.peers().get(nid(3)).expect("known");
    assert_ne!(
        x_at_a.state,
        PeerState::Unreachable,
        "6 s of direct silence, yet vouched"
    );
    assert!(x_at_a.last_alive > at(1000), "the vouch moved X's liveness");
    assert!(a.stats().vouch_saves >= 1);
    let never_unreachable = std::iter::from_fn(|| a.poll_event()).all(|event| {
        !matches!(
            event,
            Event::PeerStateChanged {
                to: PeerState::Unreachable,
                ..
            }
        )
    });
    assert!(never_unreachable);
    assert!(a
        .peers()
        .get(nid(3))
        .is_some_and(|p| p.last_direct == at(1)));
}

fn named(id: u64, name_text: &str) -> Node {
    let identity = Identity {
        key: crate::sign::test_key(id),
        name: name(name_text).expect("valid"),
        incarnation: 1,
    };
    Node::new(identity, config(), 1, Instant::ZERO).expect("valid config")
}

#[test]
fn two_live_nodes_with_one_name_are_reported_once_and_never_picked_between() {
    let mut observer = node(1);
    let mut twin_a = named(2, "twin");
    let mut twin_b = named(3, "twin");
    let mut now = at(0);
    for _ in 0..3 {
        now = now + Duration::from_millis(900);
        for twin in [&mut twin_a, &mut twin_b] {
            twin.handle_timeout(now);
        }
        deliver(now, &mut twin_a, &mut [&mut observer, &mut twin_b]);
        deliver(now, &mut twin_b, &mut [&mut observer, &mut twin_a]);
        observer.handle_timeout(now);
    }
    // Listed in id order.
    let mut twins = vec![nid(2), nid(3)];
    twins.sort();
    let conflict = Event::NameConflict {
        name: name("twin").expect("valid"),
        nodes: twins.clone(),
    };
    // Reported once, by the observer and by each twin (itself included).
    for node in [&mut observer, &mut twin_a, &mut twin_b] {
        let events: std::vec::Vec<Event> = std::iter::from_fn(|| node.poll_event()).collect();
        let reports = events.iter().filter(|e| **e == conflict).count();
        assert_eq!(reports, 1, "{}: {events:?}", node.name());
        assert_eq!(
            node.name_conflicts(now),
            vec![(name("twin").expect("valid"), twins.clone())]
        );
    }
    // The name is refused, an id is not.
    assert_eq!(
        observer.find_node(now, "twin"),
        Err(names::FindError::Ambiguous(twins.clone()))
    );
    assert_eq!(observer.find_node(now, &nid(3).to_string()), Ok(nid(3)));
    assert_eq!(observer.find_node(now, "node-1"), Ok(nid(1)));
    assert_eq!(
        observer.find_node(now, "nobody"),
        Err(names::FindError::Unknown)
    );
    // A third node takes the name: the same conflict, not news again.
    let mut twin_c = named(5, "twin");
    let beacon = beacon_of(&mut twin_c, now);
    observer.handle_datagram(now, addr(5), Arrival::Broadcast, &beacon);
    observer.handle_timeout(now + Duration::from_millis(1));
    let events: std::vec::Vec<Event> = std::iter::from_fn(|| observer.poll_event()).collect();
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::NameConflict { .. })),
        "{events:?}"
    );
    assert_eq!(observer.name_conflicts(now)[0].1.len(), 3);
    twin_c.handle_leave(now);
    deliver(now, &mut twin_c, &mut [&mut observer]);
    // One twin leaves: the name leads to the other one again.
    twin_b.handle_leave(now);
    deliver(now, &mut twin_b, &mut [&mut observer]);
    assert_eq!(observer.find_node(now, "twin"), Ok(nid(2)));
    assert!(observer.name_conflicts(now).is_empty());
}

#[test]
fn a_rule_reading_an_ambiguous_node_name_is_unknown() {
    use rules::{RuleSpec, RuleState, Rules};
    let spec = RuleSpec {
        name: "hot".to_owned(),
        when: shoal_config::expr::parse("twin/temp > 5").expect("valid"),
        until: None,
        hold_for: Duration::ZERO,
        run: "fan".to_owned(),
        otherwise: None,
        on_unknown: None,
        stale_after: None,
    };
    let state_of = |node: &Node| node.rules().next().map(|(_, status)| status.state);
    let mut observer = node(1);
    observer.set_rules(Rules::new(vec![spec], at(0)), std::vec::Vec::new());
    let mut twin_a = named(2, "twin");
    let mut twin_b = named(3, "twin");
    let hear = |now: Instant, twin: &mut Node, observer: &mut Node| {
        twin.handle_timeout(now);
        twin.handle_reading(now, reading("temp", 9.0))
            .expect("stored");
        deliver(now, twin, &mut [observer]);
        observer.handle_timeout(now);
    };
    hear(at(500), &mut twin_a, &mut observer);
    assert_eq!(
        state_of(&observer),
        Some(RuleState::Active),
        "one twin: known"
    );
    hear(at(600), &mut twin_b, &mut observer);
    assert_eq!(
        state_of(&observer),
        Some(RuleState::Unknown),
        "two live nodes named twin: the point is unknown, not one of them"
    );
}

#[test]
fn nodes_of_other_meshes_and_protocols_are_listed_not_silently_dropped() {
    use strangers::{Difference, MAX_STRANGERS};
    let mut a = node(1);
    // Another key (so another mesh id), and an open mesh.
    let other_mesh = Config {
        mesh_id: 0x0bad_cafe,
        key: Some(MeshKey([9; 32])),
        ..config()
    };
    let open = Config {
        mesh_id: wire::OPEN_MESH_ID,
        key: None,
        ..config()
    };
    let mut b = node_with(2, 1, other_mesh);
    let mut c = node_with(3, 1, open);
    for now in [at(100), at(1_100)] {
        let beacon = beacon_of(&mut b, now);
        a.handle_datagram(now, addr(2), Arrival::Broadcast, &beacon);
        let beacon = beacon_of(&mut c, now);
        a.handle_datagram(now, addr(3), Arrival::Broadcast, &beacon);
    }
    // Another protocol version: the same mesh, version byte changed.
    let mut d = node(4);
    let mut newer = beacon_of(&mut d, at(0)).to_vec();
    newer[2] = wire::VERSION + 1;
    a.handle_datagram(at(1_200), addr(4), Arrival::Broadcast, &newer);
    let listed: std::vec::Vec<(NodeId, Difference, Option<&str>, u64)> = a
        .strangers(at(1_300))
        .into_iter()
        .map(|s| (s.id, s.difference, s.name.as_deref(), s.frames))
        .collect();
    let mut expected = vec![
        (nid(2), Difference::Mesh(0x0bad_cafe), None, 2),
        (
            nid(3),
            Difference::Mesh(wire::OPEN_MESH_ID),
            Some("node-3"),
            2,
        ),
        (nid(4), Difference::Protocol(wire::VERSION + 1), None, 1),
    ];
    expected.sort_by_key(|stranger| stranger.0);
    assert_eq!(listed, expected);
    assert!(a.peers().is_empty(), "none of them is a neighbor");
    assert_eq!(
        a.stats()
            .dropped(DropReason::Decode(DecodeError::WrongMesh)),
        4
    );
    // A flood of forged senders: the list stays bounded, the rest counted.
    let mut forged = beacon_of(&mut b, at(2_000)).to_vec();
    for sender in 100..300u64 {
        forged[7..15].copy_from_slice(&sender.to_be_bytes());
        a.handle_datagram(at(2_000), addr(9), Arrival::Broadcast, &forged);
    }
    assert_eq!(a.strangers(at(2_000)).len(), MAX_STRANGERS);
    assert_eq!(a.unlisted_strangers(), 200 - (MAX_STRANGERS as u64 - 3));
    // Silent ones are forgotten after prune_after, making room again.
    let later = at(2_000) + a.config().prune_after;
    assert!(a.strangers(later).is_empty());
    a.handle_datagram(later, addr(2), Arrival::Broadcast, &forged);
    assert_eq!(a.strangers(later).len(), 1);
}

#[test]
fn reloaded_rules_keep_unchanged_state_and_new_ones_act_at_once() {
    use rules::{ComputeSpec, RuleSpec, RuleState, Rules};
    let rule = |name: &str, when: &str, run: &str| RuleSpec {
        name: name.to_owned(),
        when: shoal_config::expr::parse(when).expect("valid"),
        until: None,
        hold_for: Duration::ZERO,
        run: run.to_owned(),
        otherwise: Some(format!("{run}_off")),
        on_unknown: None,
        stale_after: None,
    };
    let compute = |name: &str, expr: &str| ComputeSpec {
        name: name.to_owned(),
        expr: shoal_config::expr::parse(expr).expect("valid"),
    };
    let actions = |node: &mut Node| -> std::vec::Vec<(String, String)> {
        std::iter::from_fn(|| node.poll_event())
            .filter_map(|event| match event {
                Event::RuleAction { rule, executor, .. } => Some((rule, executor)),
                _ => None,
            })
            .collect()
    };
    let point = |node: &Node, name: &str| {
        node.store()
            .point(node.id(), name)
            .map(|point| point.value.clone())
    };
    let mut a = node(1);
    a.set_rules(
        Rules::new(vec![rule("hot", "self/temp > 5", "fan")], at(0)),
        vec![compute("double", "self/temp * 2")],
    );
    a.handle_reading(at(100), reading("temp", 9.0))
        .expect("stored");
    assert_eq!(actions(&mut a), [("hot".to_owned(), "fan".to_owned())]);
    assert_eq!(point(&a, "double"), Some(Value::Float(18.0)));
    let double_seq = a.store().point(a.id(), "double").map(|p| p.seq);

    // Unchanged rule and compute kept, one rule and one compute added.
    a.reload_rules(
        at(200),
        vec![
            rule("hot", "self/temp > 5", "fan"),
            rule("warm", "self/temp > 8", "heat"),
        ],
        vec![
            compute("double", "self/temp * 2"),
            compute("triple", "self/temp * 3"),
        ],
    );
    assert_eq!(
        actions(&mut a),
        [("warm".to_owned(), "heat".to_owned())],
        "only the new rule acts, and at once"
    );
    assert_eq!(point(&a, "triple"), Some(Value::Float(27.0)));
    assert_eq!(
        a.store().point(a.id(), "double").map(|p| p.seq),
        double_seq,
        "an unchanged derived point is not published again"
    );
    let states: std::vec::Vec<(String, RuleState)> = a
        .rules()
        .map(|(name, status)| (name.to_owned(), status.state))
        .collect();
    assert_eq!(
        states,
        [
            ("hot".to_owned(), RuleState::Active),
            ("warm".to_owned(), RuleState::Active)
        ]
    );

    // A changed rule starts over (its first known state acts); a removed
    // one is gone and acts no more.
    a.reload_rules(
        at(300),
        vec![rule("hot", "self/temp > 10", "fan")],
        std::vec::Vec::new(),
    );
    assert_eq!(actions(&mut a), [("hot".to_owned(), "fan_off".to_owned())]);
    a.handle_reading(at(400), reading("temp", 1.0))
        .expect("stored");
    assert!(actions(&mut a).is_empty(), "warm was removed");
    assert_eq!(a.rules().count(), 1);
}

/// `observer` runs one rule, `when`; its state after `twins` publish.
fn rule_state_with(
    observer: &mut Node,
    when: &str,
    publishers: &mut [(&mut Node, f64)],
    now: Instant,
) -> Option<rules::RuleState> {
    use rules::{RuleSpec, Rules};
    let spec = RuleSpec {
        name: "hot".to_owned(),
        when: shoal_config::expr::parse(when).expect("valid"),
        until: None,
        hold_for: Duration::ZERO,
        run: "fan".to_owned(),
        otherwise: None,
        on_unknown: None,
        stale_after: None,
    };
    observer.set_rules(Rules::new(vec![spec], now), std::vec::Vec::new());
    for (node, value) in publishers.iter_mut() {
        node.handle_timeout(now);
        node.handle_reading(now, reading("temp", *value))
            .expect("stored");
        deliver(now, node, &mut [&mut *observer]);
    }
    observer.handle_timeout(now + Duration::from_millis(1));
    observer.rules().next().map(|(_, status)| status.state)
}

#[test]
fn self_in_a_rule_is_this_node_by_id_not_a_node_that_took_its_name() {
    let mut me = named(5, "x");
    me.handle_reading(at(0), reading("temp", 1.0))
        .expect("stored");
    let mut impostor = named(2, "x");
    let state = rule_state_with(
        &mut me,
        "self/temp > 5",
        &mut [(&mut impostor, 9.0)],
        at(100),
    );
    assert_eq!(
        state,
        Some(rules::RuleState::Inactive),
        "its own 1.0, not 9.0"
    );
}

#[test]
fn a_gone_node_of_the_same_name_does_not_hide_the_live_one() {
    let mut observer = node(1);
    // A Pi re-imaged: its old id (2) left, the new one (3) has the name.
    let mut old = named(2, "twin");
    old.handle_timeout(at(0));
    old.handle_reading(at(0), reading("temp", 9.0))
        .expect("stored");
    deliver(at(0), &mut old, &mut [&mut observer]);
    old.handle_leave(at(10));
    deliver(at(10), &mut old, &mut [&mut observer]);
    let mut new = named(3, "twin");
    let state = rule_state_with(
        &mut observer,
        "twin/temp > 5",
        &mut [(&mut new, 9.0)],
        at(100),
    );
    assert_eq!(state, Some(rules::RuleState::Active));
}

#[test]
fn older_lives_of_nodes_remembered_from_an_earlier_run_are_refused() {
    // Node 2 restarted: it remembers (from its state directory) node 1 in
    // its incarnation 3. Frames of node 1's incarnation 2, captured before,
    // are replays; its goodbye of that life is too.
    let mut b = node(2);
    b.remember_incarnation(nid(1), 3);
    b.remember_incarnation(nid(2), 9); // its own id: ignored
    let mut old = node_with(1, 2, config());
    let beacon = beacon_of(&mut old, at(0));
    b.handle_datagram(at(1), addr(1), Arrival::Broadcast, &beacon);
    let goodbye = crafted(1, 2, 50, &farewell_by(1, 1, 2));
    b.handle_datagram(at(2), addr(1), Arrival::Broadcast, &goodbye);
    assert_eq!(b.stats().dropped(DropReason::Replayed), 2);
    assert!(b.peers().get(nid(1)).is_none());
    // Its current life is heard as usual, and remembered for the next run.
    let mut current = node_with(1, 3, config());
    let beacon = beacon_of(&mut current, at(0));
    b.handle_datagram(at(3), addr(1), Arrival::Broadcast, &beacon);
    assert_eq!(
        b.peers().get(nid(1)).map(|p| p.state),
        Some(PeerState::Healthy)
    );
    assert_eq!(b.incarnations().get(&nid(1)), Some(&3));
    assert_eq!(b.incarnations().get(&nid(2)), None);
    // Bounded by max_nodes.
    let mut small = node_with(
        5,
        1,
        Config {
            max_nodes: 4,
            ..config()
        },
    );
    for id in 100..200 {
        small.remember_incarnation(nid(id), 1);
    }
    assert_eq!(small.incarnations().len(), 4);
}

#[test]
fn goodbyes_kept_are_bounded_and_go_with_their_node() {
    let small = Config {
        max_nodes: 4,
        ..config()
    };
    let mut b = node_with(2, 1, small);
    for id in [1, 3, 4, 5] {
        hear_beacon(&mut b, id, at(1));
        let goodbye = crafted(id, 1, 50, &farewell_by(id, id, 1));
        b.handle_datagram(at(2), addr(id), Arrival::Broadcast, &goodbye);
    }
    assert_eq!(b.lives.farewells.len(), 4);
    // A copy already held costs no verification and changes nothing.
    let again = crafted(3, 1, 60, &farewell_by(1, 1, 1));
    b.handle_datagram(at(3), addr(3), Arrival::Broadcast, &again);
    assert_eq!(b.lives.farewells.len(), 4);
    b.forget(nid(3), false);
    assert_eq!(b.lives.farewells.len(), 3);
    assert!(!b.lives.farewells.contains_key(&nid(3)));
}

#[test]
fn a_node_at_the_end_of_its_counter_space_stops_sending_rather_than_reuse_a_nonce() {
    let mut a = node_with(1, u32::MAX - 1, config());
    let mut b = node(2);
    let events = |n: &mut Node| std::iter::from_fn(|| n.poll_event()).collect::<Vec<_>>();
    // The last frame of incarnation MAX-1, then incarnation MAX.
    a.counter.seq = u32::MAX - 1;
    deliver(at(0), &mut a, &mut [&mut b]);
    a.handle_timeout(at(2_000));
    let last = drain(&mut a);
    assert!(!last.is_empty());
    let header = wire::Header::parse(&last[0].payload, MESH).expect("header");
    assert_eq!(header.counter.seq, u32::MAX);
    assert_eq!(header.counter.incarnation, u32::MAX - 1);
    a.handle_timeout(at(4_000));
    let next = drain(&mut a);
    let header = wire::Header::parse(&next[0].payload, MESH).expect("header");
    assert_eq!(
        (header.counter.incarnation, header.counter.seq),
        (u32::MAX, 1)
    );
    assert!(events(&mut a).iter().any(|e| matches!(
        e,
        Event::IncarnationChanged {
            incarnation: u32::MAX
        }
    )));
    // Every counter of incarnation MAX used: nothing more goes out, and
    // the shell hears it once.
    a.counter.seq = u32::MAX;
    for t in 1..=5 {
        a.handle_timeout(at(4_000 + t * 2_000));
        assert!(drain(&mut a).is_empty(), "no frame after the last counter");
    }
    let exhausted = events(&mut a)
        .iter()
        .filter(|e| matches!(e, Event::CounterExhausted))
        .count();
    assert_eq!(exhausted, 1);
    assert!(a.stats().counter_exhausted >= 5);
}

/// The broadcasts `node` sends at its next deadline, as (routine, frame).
fn next_broadcasts(node: &mut Node) -> std::vec::Vec<(bool, Box<[u8]>)> {
    let due = node.poll_timeout().expect("a deadline");
    node.handle_timeout(due);
    drain(node)
        .into_iter()
        .filter(|t| t.destination == Destination::Broadcast)
        .map(|t| (t.routine, t.payload))
        .collect()
}

#[test]
fn a_beacon_is_routine_unless_it_asks_something_of_its_receivers() {
    let mut a = node(1);
    // The first beacons (with metadata, so that a newcomer learns who it
    // hears) are news.
    let first: std::vec::Vec<bool> = (0..3).map(|_| next_broadcasts(&mut a)[0].0).collect();
    assert_eq!(first, [false; 3]);
    // Alone and steady: routine.
    for _ in 0..3 {
        let sent = next_broadcasts(&mut a);
        assert_eq!(sent.len(), 1);
        assert!(sent[0].0, "a steady beacon is routine");
    }
    // A value: its delta is news. The next beacon names the new store, but
    // the change went out already: routine.
    let now = a.poll_timeout().expect("a deadline");
    a.handle_reading(now, reading("temperature", 21.5))
        .expect("accepted");
    let pushed = drain(&mut a);
    assert!(!pushed.is_empty() && pushed.iter().all(|t| !t.routine));
    assert!(next_broadcasts(&mut a)[0].0);
    // A newcomer: our beacon comes early, with metadata, and is news.
    let mut b = node(2);
    let now = a.poll_timeout().expect("a deadline") - Duration::from_millis(500);
    let hello = beacon_of(&mut b, now);
    a.handle_datagram(now, addr(2), Arrival::Broadcast, &hello);
    let answers = drain(&mut a);
    assert!(answers.iter().all(|t| !t.routine), "{answers:?}");
    let early = next_broadcasts(&mut a);
    assert!(!early.is_empty() && early.iter().all(|(routine, _)| !routine));
    // Steady with b: nothing is news, the metadata repeated now and then
    // included.
    let mut kinds = std::vec::Vec::new();
    for round in 0..10 + 2 * META_EVERY {
        let beacon = beacon_of(&mut b, a.poll_timeout().expect("a deadline"));
        a.handle_datagram(
            a.poll_timeout().expect("a deadline"),
            addr(2),
            Arrival::Broadcast,
            &beacon,
        );
        drain(&mut a);
        let sent = next_broadcasts(&mut a);
        if round >= 10 {
            kinds.extend(sent.into_iter().map(|(routine, _)| routine));
        }
    }
    assert_eq!(kinds.len(), 2 * META_EVERY as usize);
    assert!(kinds.iter().all(|routine| *routine), "{kinds:?}");
    // b falls silent: a suspects it, and says so in beacons that are news.
    let mut suspecting = std::vec::Vec::new();
    for _ in 0..4 {
        suspecting.extend(
            next_broadcasts(&mut a)
                .into_iter()
                .map(|(routine, _)| routine),
        );
    }
    assert!(suspecting.iter().any(|routine| !routine), "{suspecting:?}");
}

#[test]
fn an_older_beacon_read_after_a_newer_one_counts_as_life_but_changes_nothing() {
    let mut a = node(1);
    let mut b = node(2);
    let older = beacon_of(&mut b, at(0));
    // b's store changes; its next beacon says so. The older beacon waited
    // (a resting socket) and is read after the newer one.
    b.handle_reading(at(100), reading("temperature", 21.5))
        .expect("accepted");
    drain(&mut b);
    let newer = beacon_of(&mut b, at(950));
    a.handle_datagram(at(1000), addr(2), Arrival::Broadcast, &newer);
    let hash = a.peers().get(nid(2)).expect("known").store_hash;
    a.handle_datagram(at(1010), addr(2), Arrival::Broadcast, &older);
    let peer = a.peers().get(nid(2)).expect("known");
    assert_eq!(
        peer.store_hash, hash,
        "the older beacon's store was taken in"
    );
    assert_eq!(peer.beacons_in, 2, "the older beacon was not counted");
    assert_eq!(a.stats().dropped(DropReason::Replayed), 0);
}
