//! Unit tests of `command`: commands relayed hop by hop: limits, loop guard, rate limit, retries.
use super::*;
use crate::wire::{self, Counter, Header, MeshKey};
use crate::{Arrival, Config, Identity};
use std::net::SocketAddr;

const MESH: u32 = 0x5348_0001;
const KEY: MeshKey = MeshKey([3; 32]);

fn node(id: u64, max_nodes: usize) -> Node {
    let identity = Identity {
        id: NodeId(id),
        name: wire::name(&format!("node-{id}")).expect("valid"),
        incarnation: 1,
    };
    let config = Config {
        mesh_id: MESH,
        key: Some(KEY),
        max_nodes,
        ..Config::default()
    };
    Node::new(identity, config, 1, Instant::ZERO).expect("valid config")
}

fn at(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

fn addr(id: u64) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, id as u8], 20195))
}

/// A frame `sender` sends with frame number `seq`.
fn frame(sender: u64, seq: u32, message: &Message) -> wire::Datagram {
    let header = Header {
        mesh_id: MESH,
        sender: NodeId(sender),
        counter: Counter {
            incarnation: 1,
            seq,
        },
    };
    wire::encode(&header, message, Some(&wire::Cipher::new(&KEY))).expect("fits")
}

fn command(origin: u64, id: u32, target: u64, hops_left: u8) -> Message {
    Message::Command(Command {
        origin: NodeId(origin),
        id,
        target: NodeId(target),
        hops_left,
        executor: wire::name("fan_on").expect("valid"),
        attempt: 0,
    })
}

/// A harmless frame that proves its sender alive.
fn alive() -> Message {
    Message::Routes(wire::RouteList {
        entries: heapless::Vec::new(),
    })
}

fn attempt(message: Message, attempt: u8) -> Message {
    match message {
        Message::Command(command) => Message::Command(Command { attempt, ..command }),
        other => other,
    }
}

fn events(node: &mut Node) -> Vec<Event> {
    std::iter::from_fn(|| node.poll_event()).collect()
}

fn requested(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::CommandRequested { .. }))
        .count()
}

#[test]
fn a_command_whose_hop_limit_is_used_up_is_dropped_and_counted() {
    let mut n = node(1, 16);
    n.handle_datagram(
        at(0),
        addr(2),
        Arrival::Unicast,
        &frame(2, 1, &command(9, 1, 77, 1)),
    );
    assert_eq!(n.stats().commands_hop_limit, 1);
    assert_eq!(n.stats().commands_relayed, 0);
    assert!(std::iter::from_fn(|| n.poll_transmit())
        .all(|t| !matches!(t.destination, Destination::Unicast(a) if a != addr(2))));
}

#[test]
fn a_command_seen_twice_runs_once() {
    let mut n = node(1, 16);
    let message = command(9, 1, 1, 16);
    n.handle_datagram(at(0), addr(2), Arrival::Unicast, &frame(2, 1, &message));
    n.handle_datagram(at(1), addr(3), Arrival::Unicast, &frame(3, 1, &message));
    assert_eq!(requested(&events(&mut n)), 1);
    assert_eq!(n.stats().commands_duplicate, 1);
}

#[test]
fn a_flood_from_one_asker_is_rate_limited_and_others_still_get_through() {
    let mut n = node(1, 16);
    for id in 0..30 {
        let f = frame(2, id + 1, &command(9, id, 1, 16));
        n.handle_datagram(at(0), addr(2), Arrival::Unicast, &f);
    }
    assert_eq!(requested(&events(&mut n)), COMMAND_BURST as usize);
    assert_eq!(
        n.stats().commands_rate_limited,
        30 - u64::from(COMMAND_BURST)
    );
    // Another asker is not affected.
    let f = frame(2, 100, &command(8, 1, 1, 16));
    n.handle_datagram(at(0), addr(2), Arrival::Unicast, &f);
    assert_eq!(requested(&events(&mut n)), 1);
    // One second later, five more of the first.
    for id in 30..40 {
        let f = frame(2, id + 1, &command(9, id, 1, 16));
        n.handle_datagram(at(1000), addr(2), Arrival::Unicast, &f);
    }
    assert_eq!(requested(&events(&mut n)), 5);
}

#[test]
fn rate_limit_buckets_are_bounded_by_max_nodes() {
    let mut n = node(1, 8);
    for origin in 100..400 {
        let f = frame(2, origin as u32, &command(origin, 1, 1, 16));
        n.handle_datagram(at(origin), addr(2), Arrival::Unicast, &f);
    }
    assert!(n.commands.buckets.len() <= 8);
    assert_eq!(requested(&events(&mut n)), 300);
}

#[test]
fn the_loop_guard_memory_is_bounded() {
    let mut n = node(1, 16);
    for id in 0..1000 {
        let f = frame(2, id + 1, &command(9, id, 1, 16));
        n.handle_datagram(at(u64::from(id) * 1000), addr(2), Arrival::Unicast, &f);
    }
    assert!(n.commands.seen.len() <= SEEN_COMMANDS);
    assert_eq!(n.commands.seen.len(), n.commands.seen_order.len());
}

#[test]
fn exec_on_itself_goes_through_the_shell_and_comes_back() {
    let mut n = node(1, 16);
    let id = n
        .exec(
            at(0),
            NodeId(1),
            wire::name("fan_on").expect("valid"),
            Duration::from_secs(5),
        )
        .expect("sent");
    let asked = events(&mut n);
    assert!(matches!(
        asked.as_slice(),
        [Event::CommandRequested {
            origin: NodeId(1),
            ..
        }]
    ));
    n.complete_command(at(10), NodeId(1), id, Outcome::Exited(0), "done");
    let done = events(&mut n);
    assert!(
        matches!(done.as_slice(), [Event::CommandFinished { outcome: Outcome::Exited(0), output, .. }] if output == "done"),
        "{done:?}"
    );
}

#[test]
fn an_unknown_or_unreachable_target_is_a_clear_error() {
    let mut n = node(1, 16);
    let executor = wire::name("fan_on").expect("valid");
    let timeout = Duration::from_secs(5);
    assert_eq!(
        n.exec(at(0), NodeId(5), executor.clone(), timeout),
        Err(ExecError::UnknownNode)
    );
    // Node 2 is heard once, then falls silent for good.
    n.handle_datagram(
        at(0),
        addr(2),
        Arrival::Broadcast,
        &frame(2, 1, &Message::Leave),
    );
    assert_eq!(
        n.exec(at(10), NodeId(2), executor, timeout),
        Err(ExecError::Unreachable)
    );
}

#[test]
fn a_command_nobody_answers_ends_as_no_answer_and_pending_is_bounded() {
    let mut n = node(1, 16);
    let executor = wire::name("fan_on").expect("valid");
    // Node 2 is a live neighbor.
    let hello = frame(2, 1, &command(2, 0, 2, 16));
    n.handle_datagram(at(0), addr(2), Arrival::Broadcast, &hello);
    let timeout = Duration::from_secs(5);
    for _ in 0..MAX_PENDING_COMMANDS {
        n.exec(at(10), NodeId(2), executor.clone(), timeout)
            .expect("sent");
    }
    assert_eq!(
        n.exec(at(10), NodeId(2), executor, timeout),
        Err(ExecError::TooManyPending)
    );
    events(&mut n);
    assert_eq!(n.poll_timeout().map(|t| t <= at(5010)), Some(true));
    n.handle_timeout(at(5010));
    let ended = events(&mut n)
        .into_iter()
        .filter(|e| {
            matches!(
                e,
                Event::CommandFinished {
                    outcome: Outcome::NoAnswer,
                    ..
                }
            )
        })
        .count();
    assert_eq!(ended, MAX_PENDING_COMMANDS);
    assert_eq!(n.stats().commands_unanswered, MAX_PENDING_COMMANDS as u64);
}

#[test]
fn output_is_cut_on_a_character_boundary() {
    let long = "é".repeat(MAX_OUTPUT);
    let cut = truncate_output(&long);
    assert!(cut.len() <= MAX_OUTPUT && cut.len() >= MAX_OUTPUT - 1);
    assert!(cut.chars().all(|c| c == 'é'));
    assert_eq!(truncate_output("short").as_str(), "short");
}

#[test]
fn a_repeated_attempt_is_answered_again_without_running_again() {
    let mut n = node(1, 16);
    let first = command(9, 1, 1, 16);
    n.handle_datagram(at(0), addr(2), Arrival::Unicast, &frame(2, 1, &first));
    assert_eq!(requested(&events(&mut n)), 1);
    // Still running: a second attempt is not run again, and not answered yet.
    n.handle_datagram(
        at(900),
        addr(2),
        Arrival::Unicast,
        &frame(2, 2, &attempt(first.clone(), 1)),
    );
    assert_eq!(requested(&events(&mut n)), 0);
    n.complete_command(at(1000), NodeId(9), 1, Outcome::Exited(0), "ok");
    // The answer got lost; the third attempt is answered from the cache.
    std::iter::from_fn(|| n.poll_transmit()).for_each(drop);
    n.handle_datagram(
        at(1900),
        addr(2),
        Arrival::Unicast,
        &frame(2, 3, &attempt(first, 2)),
    );
    assert_eq!(requested(&events(&mut n)), 0);
    assert_eq!(n.stats().commands_answered_again, 1);
}

#[test]
fn an_unanswered_command_is_sent_again_every_interval_until_its_deadline() {
    let mut n = node(1, 16);
    let hello = frame(2, 1, &alive());
    n.handle_datagram(at(0), addr(2), Arrival::Broadcast, &hello);
    events(&mut n);
    let executor = wire::name("fan_on").expect("valid");
    n.exec(at(10), NodeId(2), executor, Duration::from_millis(3500))
        .expect("sent");
    let commands = |n: &mut Node| {
        std::iter::from_fn(|| n.poll_transmit())
            .filter(|t| t.destination == Destination::Unicast(addr(2)))
            .count()
    };
    assert_eq!(commands(&mut n), 1);
    let mut sent = 0;
    let mut t = 10;
    while let Some(next) = n.poll_timeout() {
        if next > at(3510) {
            break;
        }
        t = next.as_millis().max(t);
        // Keep node 2 alive, so the route stays.
        let beat = frame(2, 10 + t as u32, &alive());
        n.handle_datagram(at(t), addr(2), Arrival::Broadcast, &beat);
        n.handle_timeout(at(t));
        sent += commands(&mut n);
    }
    assert_eq!(n.stats().commands_retried, 3, "sent {sent}");
    let ended = events(&mut n).into_iter().any(|e| {
        matches!(
            e,
            Event::CommandFinished {
                outcome: Outcome::NoAnswer,
                ..
            }
        )
    });
    assert!(ended);
}

#[test]
fn a_command_from_the_wire_is_never_local_whatever_its_origin_says() {
    let mut n = node(1, 16);
    // Another member (2) names a third node as origin: delivered, not local.
    n.handle_datagram(
        at(0),
        addr(2),
        Arrival::Unicast,
        &frame(2, 1, &command(9, 1, 1, 16)),
    );
    // It names the target itself as origin: forged, dropped and counted.
    n.handle_datagram(
        at(1),
        addr(2),
        Arrival::Unicast,
        &frame(2, 2, &command(1, 2, 1, 16)),
    );
    let requested: Vec<(NodeId, bool)> = events(&mut n)
        .into_iter()
        .filter_map(|e| match e {
            Event::CommandRequested { origin, local, .. } => Some((origin, local)),
            _ => None,
        })
        .collect();
    assert_eq!(requested, vec![(NodeId(9), false)]);
    assert_eq!(n.stats().commands_forged_origin, 1);
    // Naming this node as origin of a command for another: forged too (its
    // result would answer one of this node's own requests).
    n.handle_datagram(
        at(1),
        addr(2),
        Arrival::Unicast,
        &frame(2, 3, &command(1, 3, 5, 16)),
    );
    assert_eq!(n.stats().commands_forged_origin, 2);
    assert_eq!(n.stats().commands_relayed, 0);
    // Only this node's own exec to itself is local.
    let id = n
        .exec(
            at(2),
            NodeId(1),
            wire::name("fan_on").expect("valid"),
            Duration::from_secs(5),
        )
        .expect("sent");
    let local: Vec<Event> = events(&mut n);
    assert!(
        local.contains(&Event::CommandRequested {
            origin: NodeId(1),
            id,
            executor: wire::name("fan_on").expect("valid"),
            local: true,
        }),
        "{local:?}"
    );
}
