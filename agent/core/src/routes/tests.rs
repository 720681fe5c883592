//! Unit tests of `routes`: the route table: feasibility, failover, and the loop-freedom attack.
use super::*;

const A: NodeId = NodeId(1);
const B: NodeId = NodeId(2);
const C: NodeId = NodeId(3);
const D: NodeId = NodeId(4);

const TIMING: RemoteTiming = RemoteTiming {
    suspect_after: Duration::from_secs(2),
    unreachable_after: Duration::from_secs(3),
    beacon_interval: Duration::from_secs(1),
    prune_after: Duration::from_secs(60),
};

fn at(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

fn c(seq: u32) -> Counter {
    Counter {
        incarnation: 1,
        seq,
    }
}

/// Every neighbor usable and healthy, except those listed as suspect.
struct All {
    suspect: Vec<NodeId>,
}

impl Neighbors for All {
    fn usable(&self, id: NodeId) -> Option<bool> {
        Some(!self.suspect.contains(&id))
    }
    fn direct(&self, _: NodeId) -> bool {
        false
    }
}

fn healthy() -> All {
    All {
        suspect: Vec::new(),
    }
}

fn offer(table: &mut RouteTable, now: Instant, via: NodeId, counter: Counter, metric: u8) {
    table
        .update(
            now,
            via,
            D,
            counter,
            metric,
            Duration::ZERO,
            false,
            None,
            None,
        )
        .expect("accepted");
}

fn selected(table: &RouteTable) -> Option<(NodeId, u8)> {
    table
        .get(D)
        .and_then(|d| d.route().map(|r| (r.via, r.hops())))
}

#[test]
fn the_lowest_metric_wins_and_a_tie_keeps_the_current_route() {
    let mut table = RouteTable::new(8);
    offer(&mut table, at(0), A, c(5), 2);
    offer(&mut table, at(0), B, c(5), 1);
    table.select(at(0), &TIMING, &healthy());
    assert_eq!(selected(&table), Some((B, 2)));
    // C offers the same metric with a newer counter: B stays.
    offer(&mut table, at(100), C, c(6), 1);
    table.select(at(100), &TIMING, &healthy());
    assert_eq!(selected(&table), Some((B, 2)));
    // B turns SUSPECT: the healthy equal alternative takes over.
    let suspect = All { suspect: vec![B] };
    table.select(at(200), &TIMING, &suspect);
    assert_eq!(selected(&table), Some((C, 2)));
}

#[test]
fn feasibility_refuses_a_route_that_could_lead_back_through_us() {
    let mut table = RouteTable::new(8);
    offer(&mut table, at(0), A, c(5), 1);
    table.select(at(0), &TIMING, &healthy());
    // We advertise (5, 2): our feasibility distance.
    table.get_mut(D).expect("dest").advertised(c(5), 2);
    // A loses its route; B offers the same counter at our own distance,
    // which may well be through us.
    table.remove_via(A);
    offer(&mut table, at(10), B, c(5), 2);
    table.select(at(10), &TIMING, &healthy());
    assert_eq!(selected(&table), None);
    let dest = table.get(D).expect("dest");
    assert_eq!(dest.withdrawals, WITHDRAWALS, "the loss is withdrawn");
    // Strictly closer at the same counter is feasible...
    offer(&mut table, at(20), C, c(5), 1);
    table.select(at(20), &TIMING, &healthy());
    assert_eq!(selected(&table), Some((C, 2)));
    // ...and so is any newer counter, at any metric: the destination's
    // next heartbeat ends the wait.
    table.remove_via(C);
    offer(&mut table, at(900), B, c(6), 7);
    table.select(at(900), &TIMING, &healthy());
    assert_eq!(selected(&table), Some((B, 8)));
}

#[test]
fn the_feasibility_distance_only_tightens() {
    let mut dest = Remote::new(at(0));
    dest.advertised(c(5), 3);
    dest.advertised(c(5), 4);
    assert_eq!(dest.fd, Some((c(5), 3)));
    dest.advertised(c(4), 1);
    assert_eq!(dest.fd, Some((c(5), 3)));
    dest.advertised(c(6), 5);
    assert_eq!(dest.fd, Some((c(6), 5)));
}

#[test]
fn an_absurd_metric_is_a_withdrawal() {
    let mut table = RouteTable::new(8);
    offer(&mut table, at(0), A, c(5), 1);
    offer(&mut table, at(0), A, c(6), 255);
    table.select(at(0), &TIMING, &healthy());
    assert_eq!(selected(&table), None);
    assert!(table.get(D).expect("dest").routes.is_empty());
}

#[test]
fn a_counter_far_in_the_future_is_refused() {
    let mut table = RouteTable::new(8);
    offer(&mut table, at(0), A, c(5), 1);
    let far = Counter {
        incarnation: 1,
        seq: u32::MAX,
    };
    let refused = table.update(at(10), B, D, far, 1, Duration::ZERO, false, None, None);
    assert_eq!(refused, Err(RouteRefusal::Implausible));
    let reborn_many_times = Counter {
        incarnation: 1000,
        seq: 1,
    };
    let refused = table.update(
        at(10),
        B,
        D,
        reborn_many_times,
        1,
        Duration::ZERO,
        false,
        None,
        None,
    );
    assert_eq!(refused, Err(RouteRefusal::Implausible));
    // What the destination could really have sent is fine.
    let restarted = Counter {
        incarnation: 2,
        seq: 40,
    };
    offer(&mut table, at(2000), B, restarted, 1);
    assert!(plausible(c(5), c(5 + 2000), Duration::from_millis(1500)));
    assert!(!plausible(c(5), c(5 + 2001), Duration::from_millis(1500)));
}

#[test]
fn a_bogus_but_plausible_counter_blocks_real_routes_only_until_forgotten() {
    let mut table = RouteTable::new(8);
    // A buggy node claims a counter 900 ahead, once, and goes quiet.
    offer(&mut table, at(0), A, c(900), 1);
    table.select(at(0), &TIMING, &healthy());
    table.get_mut(D).expect("dest").advertised(c(900), 2);
    // The real destination's counters now arrive through B: infeasible.
    let mut now = 0;
    let mut recovered_at = None;
    for seq in 1..60 {
        now = u64::from(seq) * 1000;
        offer(&mut table, at(now), B, c(seq), 1);
        table.select(at(now), &TIMING, &healthy());
        if selected(&table) == Some((B, 2)) {
            recovered_at = Some(now);
            break;
        }
    }
    let recovered_at = recovered_at.expect("real routes return");
    // The bogus route went stale after unreachable_after; then every route
    // derived from it is stale everywhere within forget_after.
    let bound = TIMING.unreachable_after(2) + TIMING.forget_after() + TIMING.beacon_interval;
    assert!(
        Duration::from_millis(recovered_at) <= bound,
        "blocked for {recovered_at} ms (bound {bound:?})"
    );
    let _ = now;
}

#[test]
fn routes_go_stale_with_their_counter_and_later_hops_get_more_time() {
    let mut table = RouteTable::new(8);
    offer(&mut table, at(0), A, c(5), 1);
    table.select(at(0), &TIMING, &healthy());
    assert_eq!(table.get(D).map(|d| d.state), Some(PeerState::Healthy));
    // Two hops: suspect after 2 s + 1 interval, stale after 3 s + 1 interval.
    table.select(at(2999), &TIMING, &healthy());
    assert_eq!(table.get(D).map(|d| d.state), Some(PeerState::Healthy));
    let (changes, _) = table.select(at(3000), &TIMING, &healthy());
    assert_eq!(table.get(D).map(|d| d.state), Some(PeerState::Suspect));
    assert_eq!(changes.len(), 1);
    let (changes, _) = table.select(at(4000), &TIMING, &healthy());
    assert_eq!(selected(&table), None);
    assert_eq!(table.get(D).map(|d| d.state), Some(PeerState::Unreachable));
    assert_eq!(
        changes,
        vec![RouteChange {
            node: D,
            route: None,
            state: Some((PeerState::Suspect, PeerState::Unreachable)),
        }]
    );
}

#[test]
fn the_next_check_is_when_a_route_changes_state() {
    let mut table = RouteTable::new(8);
    offer(&mut table, at(0), A, c(5), 2);
    let (_, next) = table.select(at(0), &TIMING, &healthy());
    // Three hops: suspect at 2 s + 2 intervals.
    assert_eq!(next, Some(at(4000)));
}

#[test]
fn alternatives_are_bounded_and_the_worst_makes_room() {
    let mut table = RouteTable::new(8);
    for via in 10..10 + MAX_ALTERNATIVES as u64 {
        offer(&mut table, at(0), NodeId(via), c(5), 3);
    }
    offer(&mut table, at(0), NodeId(99), c(5), 1);
    let dest = table.get(D).expect("dest");
    assert_eq!(dest.routes.len(), MAX_ALTERNATIVES);
    assert!(dest.routes.iter().any(|r| r.via == NodeId(99)));
}

#[test]
fn a_full_table_evicts_a_lost_destination_and_refuses_when_all_are_live() {
    let mut table = RouteTable::new(2);
    for node in [A, B] {
        table
            .update(at(0), C, node, c(1), 1, Duration::ZERO, false, None, None)
            .expect("room");
    }
    table.select(at(0), &TIMING, &healthy());
    let full = table.update(at(0), C, D, c(1), 1, Duration::ZERO, false, None, None);
    assert_eq!(full, Err(RouteRefusal::TableFull));
    // A's route goes stale: it makes room.
    table
        .update(
            at(0),
            C,
            B,
            c(9),
            1,
            Duration::from_millis(0),
            false,
            None,
            None,
        )
        .expect("refresh");
    table
        .update(at(3500), C, B, c(12), 1, Duration::ZERO, false, None, None)
        .expect("refresh");
    table.select(at(4500), &TIMING, &healthy());
    table
        .update(at(4500), C, D, c(1), 1, Duration::ZERO, false, None, None)
        .expect("evicts A");
    assert!(table.get(A).is_none());
    assert_eq!(table.len(), 2);
}

#[test]
fn a_destination_without_routes_is_forgotten_after_prune_after() {
    let mut table = RouteTable::new(8);
    offer(&mut table, at(0), A, c(5), 1);
    table.select(at(0), &TIMING, &healthy());
    table.select(at(10_000), &TIMING, &healthy());
    assert!(table.get(D).is_some());
    table.select(at(10_000 + 60_000), &TIMING, &healthy());
    assert!(table.get(D).is_none());
}

#[test]
fn a_destination_first_heard_healthy_is_a_new_route_not_a_state_change() {
    let mut table = RouteTable::new(8);
    offer(&mut table, at(0), A, c(5), 1);
    let (changes, _) = table.select(at(0), &TIMING, &healthy());
    assert_eq!(
        changes,
        vec![RouteChange {
            node: D,
            route: Some((A, 2)),
            state: None,
        }]
    );
    assert_eq!(table.get(D).map(|d| d.state), Some(PeerState::Healthy));
    // Later changes are news again.
    let (changes, _) = table.select(at(3000), &TIMING, &healthy());
    assert_eq!(
        changes[0].state,
        Some((PeerState::Healthy, PeerState::Suspect))
    );
}
