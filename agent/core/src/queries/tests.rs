//! Unit tests of `queries`: history pages asked hop by hop: paging, relaying, limits, forged pages.
use super::*;
use crate::wire::{self, Counter, Header, MeshKey};
use crate::{Arrival, Config, Identity};
use std::net::SocketAddr;

fn nid(n: u64) -> NodeId {
    crate::sign::test_key(n).id()
}

const MESH: u32 = 0x5348_0001;
const KEY: MeshKey = MeshKey([3; 32]);
const TIMEOUT: Duration = Duration::from_secs(5);

fn node(id: u64, max_nodes: usize) -> Node {
    let identity = Identity {
        key: crate::sign::test_key(id),
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

fn frame(sender: u64, seq: u32, message: &Message) -> wire::Datagram {
    let header = Header {
        mesh_id: MESH,
        sender: nid(sender),
        counter: Counter {
            incarnation: 1,
            seq,
        },
    };
    wire::encode(&header, message, Some(&wire::Cipher::new(&KEY))).expect("fits")
}

/// `n` hears frames from the test nodes `ids` (at their addresses).
fn hears(n: &mut Node, now: Instant, ids: &[u64]) {
    for &id in ids {
        let alive = Message::Routes(wire::RouteList {
            entries: heapless::Vec::new(),
        });
        n.handle_datagram(now, addr(id), Arrival::Broadcast, &frame(id, 0, &alive));
    }
    events(n);
}

fn events(node: &mut Node) -> Vec<Event> {
    std::iter::from_fn(|| node.poll_event()).collect()
}

/// What `n` sent: (address, message), history unicasts only.
fn sent(n: &mut Node) -> Vec<(SocketAddr, Message)> {
    std::iter::from_fn(|| n.poll_transmit())
        .filter_map(|t| match t.destination {
            Destination::Unicast(to) => {
                let header = Header::parse(&t.payload, MESH).ok()?;
                let cipher = wire::Cipher::new(&KEY);
                let message = wire::decode_body(&header, &t.payload, Some(&cipher)).ok()?;
                matches!(message, Message::HistoryQuery(_) | Message::HistoryPage(_))
                    .then_some((to, message))
            }
            Destination::Broadcast => None,
        })
        .collect()
}

fn query(origin: u64, id: u32, target: u64, hops_left: u8) -> HistoryQuery {
    HistoryQuery {
        origin: nid(origin),
        id,
        target: nid(target),
        hops_left,
        attempt: 0,
        point: wire::name("temp").expect("valid"),
        since_min: 1_000,
        until_min: 2_440,
        step_min: 5,
        from_min: 1_000,
    }
}

fn row(minute: u32) -> HistoryRow {
    HistoryRow {
        minute,
        min: 1.0,
        avg: 2.0,
        max: 3.0,
    }
}

#[test]
fn pages_hold_at_most_64_rows_and_name_where_the_next_starts() {
    let steps: Vec<HistoryRow> = (0..150).map(|i| row(1_000 + 5 * i)).collect();
    let (first, next) = page(steps.iter().copied(), 1_000);
    assert_eq!(first.len(), MAX_HISTORY_ROWS);
    assert_eq!(next, Some(1_000 + 5 * 64));
    let (second, next) = page(steps.iter().copied(), 1_320);
    assert_eq!(second.first().map(|r| r.minute), Some(1_320));
    let (third, last) = page(steps.iter().copied(), next.expect("more"));
    assert_eq!((third.len(), last), (150 - 128, None));
    // A full page fits one frame.
    let full = HistoryPage {
        origin: nid(1),
        id: u32::MAX,
        target: nid(2),
        hops_left: 16,
        attempt: 255,
        status: HistoryStatus::Rows,
        rows: first,
        next_min: Some(u32::MAX),
    };
    assert!(wire::encoded_len(&Message::HistoryPage(full)) > 0);
}

#[test]
fn a_query_of_itself_goes_through_the_shell_and_comes_back() {
    let mut n = node(1, 16);
    let point = wire::name("temp").expect("valid");
    let id = n
        .query_history(at(0), nid(1), point, (1_000, 2_000, 5), 1_000, TIMEOUT)
        .expect("asked");
    let asked = events(&mut n);
    let [Event::HistoryRequested(request)] = asked.as_slice() else {
        panic!("{asked:?}");
    };
    assert_eq!(
        (request.origin, request.id, request.step_min),
        (nid(1), id, 5)
    );
    let (rows, next) = page([row(1_000), row(1_005)], request.from_min);
    n.answer_history(at(1), request, HistoryStatus::Rows, rows, next);
    let done = events(&mut n);
    assert!(
        matches!(done.as_slice(), [Event::HistoryAnswered { status: HistoryStatus::Rows, rows, next_min: None, .. }] if rows.len() == 2),
        "{done:?}"
    );
    assert_eq!(n.queries.pending.len(), 0);
}

#[test]
fn a_query_for_this_node_is_answered_to_the_asker_and_relays_pass_it_on() {
    // Node 1 hears 2 (a relay) and 9 (the asker) and 3.
    let mut n = node(1, 16);
    hears(&mut n, at(0), &[2, 3, 9]);
    let q = Message::HistoryQuery(query(9, 7, 1, 16));
    n.handle_datagram(at(10), addr(2), Arrival::Unicast, &frame(2, 1, &q));
    let asked = events(&mut n);
    let [Event::HistoryRequested(request)] = asked.as_slice() else {
        panic!("{asked:?}");
    };
    let (rows, next) = page((0..100).map(|i| row(1_000 + 5 * i)), request.from_min);
    n.answer_history(at(11), request, HistoryStatus::Rows, rows, next);
    let out = sent(&mut n);
    assert!(
        matches!(out.as_slice(), [(to, Message::HistoryPage(p))] if *to == addr(9) && p.rows.len() == 64 && p.next_min == Some(1_320) && p.target == nid(1)),
        "{out:?}"
    );
    assert_eq!(n.stats().history_queries_served, 1);
    // A query for node 3 is relayed to it, its page back to the asker.
    let q = Message::HistoryQuery(query(9, 8, 3, 16));
    n.handle_datagram(at(20), addr(2), Arrival::Unicast, &frame(2, 2, &q));
    let out = sent(&mut n);
    assert!(
        matches!(out.as_slice(), [(to, Message::HistoryQuery(q))] if *to == addr(3) && q.hops_left == 15),
        "{out:?}"
    );
    let answer = HistoryPage {
        origin: nid(9),
        id: 8,
        target: nid(3),
        hops_left: 16,
        attempt: 0,
        status: HistoryStatus::Rows,
        rows: heapless::Vec::new(),
        next_min: None,
    };
    let p = Message::HistoryPage(answer);
    n.handle_datagram(at(21), addr(3), Arrival::Unicast, &frame(3, 1, &p));
    let out = sent(&mut n);
    assert!(
        matches!(out.as_slice(), [(to, Message::HistoryPage(p))] if *to == addr(9) && p.hops_left == 15),
        "{out:?}"
    );
    assert_eq!(n.stats().history_relayed, 2);
}

#[test]
fn duplicates_used_up_hop_limits_and_own_queries_from_the_wire_are_dropped() {
    let mut n = node(1, 16);
    hears(&mut n, at(0), &[2, 3, 9]);
    let q = Message::HistoryQuery(query(9, 1, 1, 16));
    n.handle_datagram(at(10), addr(2), Arrival::Unicast, &frame(2, 1, &q));
    n.handle_datagram(at(11), addr(3), Arrival::Unicast, &frame(3, 1, &q));
    assert_eq!(events(&mut n).len(), 1);
    let spent = Message::HistoryQuery(query(9, 2, 3, 1));
    n.handle_datagram(at(12), addr(2), Arrival::Unicast, &frame(2, 2, &spent));
    let mine = Message::HistoryQuery(query(1, 3, 3, 16));
    n.handle_datagram(at(13), addr(2), Arrival::Unicast, &frame(2, 3, &mine));
    assert!(sent(&mut n).is_empty());
    assert_eq!(n.stats().history_dropped, 3);
}

#[test]
fn a_flood_of_queries_is_rate_limited_per_asker_and_answered_so() {
    let mut n = node(1, 16);
    hears(&mut n, at(0), &[2, 8, 9]);
    for id in 0..100 {
        let q = Message::HistoryQuery(query(9, id, 1, 16));
        n.handle_datagram(at(0), addr(2), Arrival::Unicast, &frame(2, id + 1, &q));
    }
    let asked = events(&mut n).len();
    assert_eq!(asked, QUERY_BURST as usize);
    assert_eq!(n.stats().history_rate_limited, 100 - u64::from(QUERY_BURST));
    let refusals = sent(&mut n)
        .into_iter()
        .filter(|(_, m)| matches!(m, Message::HistoryPage(p) if p.status == HistoryStatus::RateLimited && p.rows.is_empty()))
        .count();
    assert_eq!(refusals, 100 - QUERY_BURST as usize);
    // Another asker is not affected.
    let q = Message::HistoryQuery(query(8, 1, 1, 16));
    n.handle_datagram(at(0), addr(2), Arrival::Unicast, &frame(2, 200, &q));
    assert_eq!(events(&mut n).len(), 1);
}

#[test]
fn the_loop_guard_and_rate_limits_are_bounded() {
    let mut n = node(1, 8);
    hears(&mut n, at(0), &[2]);
    for origin in 100..400u64 {
        let q = Message::HistoryQuery(query(origin, 1, 1, 16));
        n.handle_datagram(
            at(origin),
            addr(2),
            Arrival::Unicast,
            &frame(2, origin as u32, &q),
        );
    }
    assert!(n.queries.seen.len() <= SEEN_QUERIES);
    assert!(n.queries.buckets.as_ref().is_some_and(|b| b.len() <= 8));
}

#[test]
fn an_unanswered_query_is_sent_again_then_ends_as_no_answer_and_pending_is_bounded() {
    let mut n = node(1, 16);
    hears(&mut n, at(0), &[2]);
    let point = wire::name("temp").expect("valid");
    assert_eq!(
        n.query_history(at(10), nid(5), point.clone(), (0, 100, 1), 0, TIMEOUT),
        Err(ExecError::UnknownNode)
    );
    for _ in 0..MAX_PENDING_QUERIES {
        n.query_history(at(10), nid(2), point.clone(), (0, 100, 1), 0, TIMEOUT)
            .expect("sent");
    }
    assert_eq!(
        n.query_history(at(10), nid(2), point, (0, 100, 1), 0, TIMEOUT),
        Err(ExecError::TooManyPending)
    );
    let first = sent(&mut n);
    assert_eq!(first.len(), MAX_PENDING_QUERIES);
    // One beacon interval later each is sent again, as attempt 1.
    let retry_at = at(10) + n.config.beacon_interval;
    n.handle_timeout(retry_at);
    let again = sent(&mut n)
        .into_iter()
        .filter(|(_, m)| matches!(m, Message::HistoryQuery(q) if q.attempt == 1))
        .count();
    assert_eq!(again, MAX_PENDING_QUERIES);
    n.handle_timeout(at(5010));
    let ended = events(&mut n)
        .into_iter()
        .filter(|e| {
            matches!(
                e,
                Event::HistoryAnswered {
                    status: HistoryStatus::NoAnswer,
                    ..
                }
            )
        })
        .count();
    assert_eq!(ended, MAX_PENDING_QUERIES);
    assert_eq!(n.queries.pending.len(), 0);
    assert_eq!(
        n.stats().history_queries_unanswered,
        MAX_PENDING_QUERIES as u64
    );
}

#[test]
fn a_page_counts_only_from_the_node_asked_and_a_relays_no_route_is_a_hint() {
    let mut n = node(1, 16);
    hears(&mut n, at(0), &[2, 3]);
    let point = wire::name("temp").expect("valid");
    let id = n
        .query_history(at(10), nid(2), point, (0, 100, 1), 0, TIMEOUT)
        .expect("sent");
    sent(&mut n);
    let forged = |status, rows: &[HistoryRow]| HistoryPage {
        origin: nid(1),
        id,
        target: nid(3),
        hops_left: 16,
        attempt: 0,
        status,
        rows: rows.iter().copied().collect(),
        next_min: None,
    };
    // Node 3 answers for node 2's history: not delivered.
    let fake = Message::HistoryPage(forged(HistoryStatus::Rows, &[row(1)]));
    n.handle_datagram(at(20), addr(3), Arrival::Unicast, &frame(3, 1, &fake));
    // Node 3 says it has no route: only a hint.
    let hint = HistoryPage {
        attempt: 1,
        ..forged(HistoryStatus::NoRoute, &[])
    };
    let hint = Message::HistoryPage(hint);
    n.handle_datagram(at(21), addr(3), Arrival::Unicast, &frame(3, 2, &hint));
    assert!(!events(&mut n)
        .iter()
        .any(|e| matches!(e, Event::HistoryAnswered { .. })));
    assert_eq!(n.stats().history_dropped, 1);
    n.handle_timeout(at(5010));
    let ended: Vec<Event> = events(&mut n)
        .into_iter()
        .filter(|e| matches!(e, Event::HistoryAnswered { .. }))
        .collect();
    assert!(
        matches!(
            ended.as_slice(),
            [Event::HistoryAnswered {
                status: HistoryStatus::NoRoute,
                ..
            }]
        ),
        "{ended:?}"
    );
}

#[test]
fn malformed_queries_and_pages_do_not_decode() {
    let backwards = HistoryQuery {
        from_min: 10,
        since_min: 20,
        ..query(9, 1, 1, 16)
    };
    let zero_step = HistoryQuery {
        step_min: 0,
        ..query(9, 1, 1, 16)
    };
    for q in [backwards, zero_step] {
        let f = frame(2, 1, &Message::HistoryQuery(q));
        let header = Header::parse(&f, MESH).expect("header");
        let cipher = wire::Cipher::new(&KEY);
        assert!(wire::decode_body(&header, &f, Some(&cipher)).is_err());
    }
    let nan = HistoryRow {
        avg: f32::NAN,
        ..row(5)
    };
    let unsorted = [row(5), row(4)];
    for rows in [&[nan][..], &unsorted[..]] {
        let p = HistoryPage {
            origin: nid(1),
            id: 1,
            target: nid(2),
            hops_left: 16,
            attempt: 0,
            status: HistoryStatus::Rows,
            rows: rows.iter().copied().collect(),
            next_min: None,
        };
        let f = frame(2, 1, &Message::HistoryPage(p));
        let header = Header::parse(&f, MESH).expect("header");
        let cipher = wire::Cipher::new(&KEY);
        assert!(wire::decode_body(&header, &f, Some(&cipher)).is_err());
    }
}

#[test]
fn a_member_making_up_askers_is_limited_by_what_its_frames_prove() {
    let mut n = node(1, 1024);
    hears(&mut n, at(0), &[2]);
    let mut served = 0;
    for origin in 0..400u64 {
        // Each claims another asker, all handed over by node 2.
        let q = Message::HistoryQuery(query(1000 + origin, 1, 3, 16));
        n.handle_datagram(
            at(0),
            addr(2),
            Arrival::Unicast,
            &frame(2, origin as u32 + 1, &q),
        );
        served += usize::from(!events(&mut n).is_empty());
    }
    assert_eq!(
        served, 0,
        "no route to node 3: relayed or refused, never read"
    );
    assert_eq!(
        n.stats().history_rate_limited,
        400 - u64::from(SENDER_BURST)
    );
}

#[test]
fn a_query_for_this_node_from_an_asker_it_cannot_reach_is_not_read() {
    let mut n = node(1, 16);
    hears(&mut n, at(0), &[2]);
    // Node 77 is unknown here: its page could go nowhere.
    let q = Message::HistoryQuery(query(77, 1, 1, 16));
    n.handle_datagram(at(10), addr(2), Arrival::Unicast, &frame(2, 1, &q));
    assert!(events(&mut n).is_empty());
    assert_eq!(n.stats().history_dropped, 1);
}

#[test]
fn query_numbers_are_not_guessable_in_sequence() {
    let mut n = node(1, 16);
    hears(&mut n, at(0), &[2]);
    let point = wire::name("temp").expect("valid");
    let ids: Vec<u32> = (0..4)
        .map(|_| {
            n.query_history(at(10), nid(2), point.clone(), (0, 100, 1), 0, TIMEOUT)
                .expect("sent")
        })
        .collect();
    assert!(
        ids.windows(2).all(|w| w[1] != w[0].wrapping_add(1)),
        "{ids:?}"
    );
}
