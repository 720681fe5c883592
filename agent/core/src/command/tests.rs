//! Unit tests of `command`: commands relayed hop by hop: limits, loop guard, rate limit, retries.
use super::*;
use crate::wire::{self, Counter, Header, MeshKey};
use crate::{Arrival, Config, Identity};
use std::net::SocketAddr;

/// The id of test node `n`.
fn nid(n: u64) -> NodeId {
    crate::sign::test_key(n).id()
}

const MESH: u32 = 0x5348_0001;
const KEY: MeshKey = MeshKey([3; 32]);

fn node(id: u64, max_nodes: usize) -> Node {
    node_in(id, 1, max_nodes)
}

/// Test node `id` in its incarnation `incarnation`.
fn node_in(id: u64, incarnation: u32, max_nodes: usize) -> Node {
    let identity = Identity {
        key: crate::sign::test_key(id),
        name: wire::name(&format!("node-{id}")).expect("valid"),
        incarnation,
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
    frame_in(sender, 1, seq, message)
}

/// A frame of `sender`'s incarnation `incarnation`.
fn frame_in(sender: u64, incarnation: u32, seq: u32, message: &Message) -> wire::Datagram {
    let header = Header {
        mesh_id: MESH,
        sender: nid(sender),
        counter: Counter { incarnation, seq },
    };
    wire::encode(&header, message, Some(&wire::Cipher::new(&KEY))).expect("fits")
}

/// Test node `origin`'s command, signed, between first incarnations.
fn command(origin: u64, id: u32, target: u64, hops_left: u8) -> Message {
    Message::Command(signed(
        Command {
            origin: nid(origin),
            id,
            target: nid(target),
            hops_left,
            executor: wire::name("fan_on").expect("valid"),
            attempt: 0,
            origin_incarnation: 1,
            target_incarnation: 1,
            key: crate::sign::test_key(origin).public(),
            signature: Signature([0; SIGNATURE_LEN]),
        },
        origin,
    ))
}

/// `command` signed by test node `signer`.
fn signed(mut command: Command, signer: u64) -> Command {
    command.signature = crate::sign::test_key(signer).sign(&sign::command_payload(&command));
    command
}

/// `n` hears frames from the test nodes `ids` (at their addresses, frame 0).
fn hears(n: &mut Node, now: Instant, ids: &[u64]) {
    for &id in ids {
        n.handle_datagram(now, addr(id), Arrival::Broadcast, &frame(id, 0, &alive()));
    }
    events(n);
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
    hears(&mut n, at(0), &[2, 3, 9]);
    let message = command(9, 1, 1, 16);
    n.handle_datagram(at(0), addr(2), Arrival::Unicast, &frame(2, 1, &message));
    n.handle_datagram(at(1), addr(3), Arrival::Unicast, &frame(3, 1, &message));
    assert_eq!(requested(&events(&mut n)), 1);
    assert_eq!(n.stats().commands_duplicate, 1);
}

#[test]
fn a_flood_from_one_asker_is_rate_limited_and_others_still_get_through() {
    let mut n = node(1, 16);
    hears(&mut n, at(0), &[2, 8, 9]);
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
    // 300 askers (each a valid key) through this node to one it can't reach:
    // each gets a bucket (and its NoRoute), at most 8 kept.
    let mut n = node(1, 8);
    for origin in 100..400 {
        let f = frame(2, origin as u32, &command(origin, 1, 5, 16));
        n.handle_datagram(at(origin), addr(2), Arrival::Unicast, &f);
    }
    assert!(n.commands.buckets.as_ref().is_some_and(|b| b.len() <= 8));
    // Each either got through (its NoRoute counted twice: no route on, and
    // none back to the made-up asker) or was refused while every tracked
    // bucket was still drained (a flood of new askers resets none).
    let through = n.stats().commands_no_route / 2;
    assert_eq!(through + n.stats().commands_rate_limited, 300);
    assert!(through >= 8, "{through}");
}

#[test]
fn the_loop_guard_memory_is_bounded() {
    let mut n = node(1, 16);
    hears(&mut n, at(0), &[2, 9]);
    for id in 0..1000 {
        let f = frame(2, id + 1, &command(9, id, 1, 16));
        n.handle_datagram(at(u64::from(id) * 1000), addr(2), Arrival::Unicast, &f);
    }
    assert!(n.commands.seen.len() <= SEEN_COMMANDS);
}

#[test]
fn exec_on_itself_goes_through_the_shell_and_comes_back() {
    let mut n = node(1, 16);
    let id = n
        .exec(
            at(0),
            nid(1),
            wire::name("fan_on").expect("valid"),
            Duration::from_secs(5),
        )
        .expect("sent");
    let asked = events(&mut n);
    assert!(matches!(
        asked.as_slice(),
        [Event::CommandRequested { origin, local: true, .. }] if *origin == nid(1)
    ));
    n.complete_command(at(10), nid(1), id, Outcome::Exited(0), "done");
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
        n.exec(at(0), nid(5), executor.clone(), timeout),
        Err(ExecError::UnknownNode)
    );
    // Node 2 is heard once, saying goodbye.
    n.handle_datagram(
        at(0),
        addr(2),
        Arrival::Broadcast,
        &frame(2, 1, &farewell(2, 1)),
    );
    assert_eq!(
        n.exec(at(10), nid(2), executor, timeout),
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
        n.exec(at(10), nid(2), executor.clone(), timeout)
            .expect("sent");
    }
    assert_eq!(
        n.exec(at(10), nid(2), executor, timeout),
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
    hears(&mut n, at(0), &[2, 9]);
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
    n.complete_command(at(1000), nid(9), 1, Outcome::Exited(0), "ok");
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
    // The address check of the new neighbor.
    std::iter::from_fn(|| n.poll_transmit()).for_each(drop);
    let executor = wire::name("fan_on").expect("valid");
    n.exec(at(10), nid(2), executor, Duration::from_millis(3500))
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
    hears(&mut n, at(0), &[2, 9]);
    // Another member (2) relays a command of a third node: delivered, not local.
    n.handle_datagram(
        at(0),
        addr(2),
        Arrival::Unicast,
        &frame(2, 1, &command(9, 1, 1, 16)),
    );
    // A genuine command of this node itself, coming back from the wire (a
    // replay): dropped and counted.
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
    assert_eq!(requested, vec![(nid(9), false)]);
    assert_eq!(n.stats().commands_forged_origin, 1);
    // Naming this node as origin of a command for another: dropped too (its
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
            nid(1),
            wire::name("fan_on").expect("valid"),
            Duration::from_secs(5),
        )
        .expect("sent");
    let local: Vec<Event> = events(&mut n);
    assert!(
        local.contains(&Event::CommandRequested {
            origin: nid(1),
            id,
            executor: wire::name("fan_on").expect("valid"),
            local: true,
        }),
        "{local:?}"
    );
}

/// Test node `node`'s signed goodbye to its incarnation `incarnation`.
fn farewell(node: u64, incarnation: u32) -> Message {
    let key = crate::sign::test_key(node);
    let mut farewell = wire::Farewell {
        node: nid(node),
        incarnation,
        key: key.public(),
        signature: Signature([0; SIGNATURE_LEN]),
    };
    farewell.signature = key.sign(&sign::farewell_payload(&farewell));
    Message::Leave(farewell)
}

#[test]
fn a_member_cannot_speak_for_another_node_in_a_command() {
    // Member 2 holds the mesh key; it signs with its own key a command
    // claiming to come from node 9, to node 1 and through node 1 to 3.
    let mut n = node(1, 16);
    hears(&mut n, at(0), &[2, 3, 9]);
    // The address checks of the new neighbors.
    std::iter::from_fn(|| n.poll_transmit()).for_each(drop);
    let claim = |target: u64| {
        let Message::Command(c) = command(9, 1, target, 16) else {
            unreachable!("a command")
        };
        c
    };
    let forged = [
        // Its own signature under the victim's id and key.
        signed(claim(1), 2),
        // Its own key and signature under the victim's id.
        signed(
            Command {
                key: crate::sign::test_key(2).public(),
                ..claim(1)
            },
            2,
        ),
        // Through this node to another.
        signed(claim(3), 2),
        // A genuine signature of 9 on another command, moved to this one.
        Command {
            signature: signed(claim(3), 9).signature,
            ..claim(1)
        },
    ];
    for (seq, command) in forged.into_iter().enumerate() {
        let f = frame(2, seq as u32 + 1, &Message::Command(command));
        n.handle_datagram(at(10), addr(2), Arrival::Unicast, &f);
    }
    assert_eq!(requested(&events(&mut n)), 0);
    assert_eq!(n.stats().signatures_invalid, 4);
    assert_eq!(n.stats().commands_relayed, 0);
    assert!(std::iter::from_fn(|| n.poll_transmit())
        .all(|t| t.destination != Destination::Unicast(addr(3))));
    // The genuine one runs.
    let genuine = frame(2, 10, &command(9, 1, 1, 16));
    n.handle_datagram(at(20), addr(2), Arrival::Unicast, &genuine);
    assert_eq!(requested(&events(&mut n)), 1);
}

#[test]
fn a_command_for_an_earlier_incarnation_of_the_target_never_runs() {
    // Node 1 restarted (incarnation 2); a command captured before (for
    // incarnation 1) is replayed.
    let mut n = node_in(1, 2, 16);
    hears(&mut n, at(0), &[2, 9]);
    n.handle_datagram(
        at(10),
        addr(2),
        Arrival::Unicast,
        &frame(2, 1, &command(9, 1, 1, 16)),
    );
    assert_eq!(requested(&events(&mut n)), 0);
    assert_eq!(n.stats().commands_stale, 1);
    // A request for this incarnation runs.
    let Message::Command(current) = command(9, 2, 1, 16) else {
        unreachable!("a command")
    };
    let current = signed(
        Command {
            target_incarnation: 2,
            ..current
        },
        9,
    );
    n.handle_datagram(
        at(20),
        addr(2),
        Arrival::Unicast,
        &frame(2, 2, &Message::Command(current)),
    );
    assert_eq!(requested(&events(&mut n)), 1);
}

#[test]
fn a_command_from_an_earlier_incarnation_of_the_asker_or_an_unknown_asker_never_runs() {
    let mut n = node(1, 16);
    // Node 9 is alive in its incarnation 2; a command of its incarnation 1
    // is replayed. Node 7 was never heard: its command can't be answered.
    n.handle_datagram(
        at(0),
        addr(9),
        Arrival::Broadcast,
        &frame_in(9, 2, 0, &alive()),
    );
    hears(&mut n, at(0), &[2]);
    n.handle_datagram(
        at(10),
        addr(2),
        Arrival::Unicast,
        &frame(2, 1, &command(9, 1, 1, 16)),
    );
    n.handle_datagram(
        at(10),
        addr(2),
        Arrival::Unicast,
        &frame(2, 2, &command(7, 1, 1, 16)),
    );
    assert_eq!(requested(&events(&mut n)), 0);
    assert_eq!(n.stats().commands_stale, 2);
}

#[test]
fn a_command_that_ran_never_runs_again_past_every_cache() {
    let mut n = node(1, 16);
    hears(&mut n, at(0), &[2, 9]);
    let first = command(9, 1, 1, 16);
    n.handle_datagram(at(0), addr(2), Arrival::Unicast, &frame(2, 1, &first));
    assert_eq!(requested(&events(&mut n)), 1);
    n.complete_command(at(1), nid(9), 1, Outcome::Exited(0), "ok");
    // Enough other requests of 9 (paced under the rate limit) to push the
    // first out of the result cache.
    let others = SERVED_COMMANDS as u32 + 6;
    for id in 2..2 + others {
        let t = u64::from(id) * COMMAND_REFILL.as_millis() as u64;
        n.handle_datagram(
            at(t),
            addr(2),
            Arrival::Unicast,
            &frame(2, id, &command(9, id, 1, 16)),
        );
        n.complete_command(at(t), nid(9), id, Outcome::Exited(0), "ok");
    }
    assert_eq!(requested(&events(&mut n)), others as usize);
    // A member re-sends the captured first command in a frame of its own,
    // with a new attempt number (not signed) to pass the loop guard.
    let later = at(100_000);
    n.handle_datagram(
        later,
        addr(2),
        Arrival::Unicast,
        &frame(2, 500, &attempt(first, 9)),
    );
    assert_eq!(requested(&events(&mut n)), 0);
    assert_eq!(n.stats().commands_replayed, 1);
    assert_eq!(n.stats().commands_answered_again, 0);
}

#[test]
fn a_result_counts_only_from_the_node_asked_for_this_incarnation() {
    let mut n = node(1, 16);
    hears(&mut n, at(0), &[2, 3, 4]);
    let id = n
        .exec(
            at(10),
            nid(2),
            wire::name("fan_on").expect("valid"),
            Duration::from_secs(5),
        )
        .expect("sent");
    let result = |answerer: u64, signer: u64, incarnation: u32, outcome: Outcome| {
        let mut result = CommandResult {
            origin: nid(1),
            id,
            target: nid(answerer),
            hops_left: 16,
            outcome,
            output: truncate_output("done"),
            attempt: 0,
            origin_incarnation: incarnation,
            key: crate::sign::test_key(signer).public(),
            signature: Signature([0; SIGNATURE_LEN]),
        };
        result.signature = crate::sign::test_key(signer).sign(&sign::result_payload(&result));
        Message::CommandResult(result)
    };
    let finished = |n: &mut Node| {
        events(n)
            .into_iter()
            .filter(|e| matches!(e, Event::CommandFinished { .. }))
            .count()
    };
    // Member 3 answers in its own name, or claims to be 2.
    n.handle_datagram(
        at(20),
        addr(3),
        Arrival::Unicast,
        &frame(3, 1, &result(3, 3, 1, Outcome::Exited(0))),
    );
    n.handle_datagram(
        at(20),
        addr(3),
        Arrival::Unicast,
        &frame(3, 2, &result(2, 3, 1, Outcome::Exited(0))),
    );
    // Node 2's genuine answer to the same request of an earlier incarnation of 1.
    n.handle_datagram(
        at(20),
        addr(2),
        Arrival::Unicast,
        &frame(2, 1, &result(2, 2, 0, Outcome::Exited(0))),
    );
    assert_eq!(finished(&mut n), 0);
    assert_eq!(n.stats().results_refused, 2);
    assert_eq!(n.stats().signatures_invalid, 1);
    // A relay's signed NoRoute ends nothing (any member could sign one);
    // the genuine answer (of a later attempt) still counts.
    n.handle_datagram(
        at(30),
        addr(4),
        Arrival::Unicast,
        &frame(4, 1, &result(4, 4, 1, Outcome::NoRoute)),
    );
    assert_eq!(finished(&mut n), 0);
    let Message::CommandResult(genuine) = result(2, 2, 1, Outcome::Exited(0)) else {
        unreachable!("a result")
    };
    let genuine = CommandResult {
        attempt: 1,
        ..genuine
    };
    n.handle_datagram(
        at(40),
        addr(2),
        Arrival::Unicast,
        &frame(2, 2, &Message::CommandResult(genuine)),
    );
    assert_eq!(finished(&mut n), 1);
}

#[test]
fn a_relays_no_route_is_the_outcome_only_when_nothing_else_comes() {
    let mut n = node(1, 16);
    hears(&mut n, at(0), &[2, 4]);
    let id = n
        .exec(
            at(10),
            nid(2),
            wire::name("fan_on").expect("valid"),
            Duration::from_secs(5),
        )
        .expect("sent");
    let mut no_route = CommandResult {
        origin: nid(1),
        id,
        target: nid(4),
        hops_left: 16,
        outcome: Outcome::NoRoute,
        output: truncate_output("node-4 has no route to the target"),
        attempt: 0,
        origin_incarnation: 1,
        key: crate::sign::test_key(4).public(),
        signature: Signature([0; SIGNATURE_LEN]),
    };
    no_route.signature = crate::sign::test_key(4).sign(&sign::result_payload(&no_route));
    let f = frame(4, 1, &Message::CommandResult(no_route));
    n.handle_datagram(at(20), addr(4), Arrival::Unicast, &f);
    events(&mut n);
    // Keep node 2 alive (same life) until the deadline.
    let mut t = 20;
    let mut outcome = None;
    while outcome.is_none() && t < 6_000 {
        t += 100;
        n.handle_datagram(
            at(t),
            addr(2),
            Arrival::Broadcast,
            &frame(2, t as u32, &alive()),
        );
        n.handle_timeout(at(t));
        outcome = events(&mut n).into_iter().find_map(|e| match e {
            Event::CommandFinished {
                outcome, output, ..
            } => Some((outcome, output)),
            _ => None,
        });
    }
    let (outcome, output) = outcome.expect("finished by the deadline");
    assert_eq!(outcome, Outcome::NoRoute);
    assert!(
        !output.contains("node-4"),
        "the relay's text is not shown: {output}"
    );
}

#[test]
fn a_command_is_not_sent_again_to_a_target_that_restarted() {
    let mut n = node(1, 16);
    hears(&mut n, at(0), &[2]);
    n.exec(
        at(10),
        nid(2),
        wire::name("fan_on").expect("valid"),
        Duration::from_secs(5),
    )
    .expect("sent");
    events(&mut n);
    std::iter::from_fn(|| n.poll_transmit()).for_each(drop);
    // Node 2 restarts before answering: the command may have run.
    n.handle_datagram(
        at(500),
        addr(2),
        Arrival::Broadcast,
        &frame_in(2, 2, 0, &alive()),
    );
    n.handle_timeout(at(1_010));
    let sent_again = std::iter::from_fn(|| n.poll_transmit())
        .any(|t| t.destination == Destination::Unicast(addr(2)) && n_is_command(&t.payload));
    assert!(!sent_again);
    let ended = events(&mut n).into_iter().find_map(|e| match e {
        Event::CommandFinished {
            outcome, output, ..
        } => Some((outcome, output)),
        _ => None,
    });
    let (outcome, output) = ended.expect("ended at once");
    assert_eq!(outcome, Outcome::NoAnswer);
    assert!(output.contains("may or may not have run"), "{output}");
}

/// Whether `frame` (of this test mesh) holds a command.
fn n_is_command(frame: &[u8]) -> bool {
    let Ok(header) = Header::parse(frame, MESH) else {
        return false;
    };
    matches!(
        wire::decode_body(&header, frame, Some(&wire::Cipher::new(&KEY))),
        Ok(Message::Command(_))
    )
}

#[test]
fn a_replay_window_dropped_with_its_node_leaves_a_tombstone() {
    // Node 9 asks, is forgotten (a long outage), comes back in the same
    // life: its old request, replayed, never runs again; a new one does.
    let mut n = node(1, 16);
    hears(&mut n, at(0), &[2, 9]);
    let first = command(9, 5, 1, 16);
    n.handle_datagram(at(10), addr(2), Arrival::Unicast, &frame(2, 1, &first));
    assert_eq!(requested(&events(&mut n)), 1);
    n.complete_command(at(20), nid(9), 5, Outcome::Exited(0), "ok");
    n.forget(nid(9), false);
    assert!(!n.commands.windows.contains_key(&nid(9)));
    hears(&mut n, at(30), &[9]);
    // Push it out of the result cache too.
    n.commands.served.clear();
    n.commands.served_order.clear();
    n.handle_datagram(
        at(40),
        addr(2),
        Arrival::Unicast,
        &frame(2, 2, &attempt(first, 7)),
    );
    assert_eq!(requested(&events(&mut n)), 0);
    assert_eq!(n.stats().commands_replayed, 1);
    n.handle_datagram(
        at(50),
        addr(2),
        Arrival::Unicast,
        &frame(2, 3, &command(9, 6, 1, 16)),
    );
    assert_eq!(requested(&events(&mut n)), 1);
}

#[test]
fn replay_windows_are_bounded_and_go_with_their_node() {
    let mut n = node(1, 4);
    hears(&mut n, at(0), &[2, 3, 4]);
    for (seq, origin) in [2u64, 3, 4].into_iter().enumerate() {
        let f = frame(origin, seq as u32 + 1, &command(origin, 1, 1, 16));
        n.handle_datagram(at(10), addr(origin), Arrival::Unicast, &f);
    }
    assert_eq!(requested(&events(&mut n)), 3);
    assert_eq!(n.commands.windows.len(), 3);
    n.forget(nid(3), false);
    assert_eq!(n.commands.windows.len(), 2);
    assert!(!n.commands.windows.contains_key(&nid(3)));
}
