//! Fault scenarios in the simulator: asymmetric links, duplication, frozen
//! processes, misconfigured restarts, gateways, limits, and replay.

use shoal_core::peers::PeerState;
use shoal_core::time::Instant;
use shoal_core::DropReason;
use shoal_tests::sim::{SimConfig, SimNet};
use std::time::Duration;

const INTERVAL: Duration = Duration::from_secs(1);

fn all(n: usize) -> Vec<usize> {
    (0..n).collect()
}

#[test]
fn a_broken_direct_link_is_bridged_by_vouches_for_minutes() {
    let mut sim = SimNet::new(SimConfig::lan(20, 61));
    sim.run_for(Duration::from_secs(5));
    sim.set_link_loss(3, 9, 1.0);
    sim.run_for(Duration::from_secs(120));
    let between: Vec<_> = sim
        .transitions_to(PeerState::Unreachable, Instant::ZERO)
        .collect();
    assert!(between.is_empty(), "{between:?}");
    assert!(sim.node(3).stats().vouch_saves >= 1);
    assert!(sim.node(9).stats().vouch_saves >= 1);
    assert!(sim.points_converged(&all(20)));
}

#[test]
fn duplicated_datagrams_are_dropped_as_replays_and_change_nothing() {
    let mut config = SimConfig::lan(20, 62).with_loss(0.05);
    config.duplicate = 0.2;
    let mut sim = SimNet::new(config);
    sim.run_for(Duration::from_secs(60));
    let replays: u64 = (0..20)
        .map(|i| sim.node(i).stats().dropped(DropReason::Replayed))
        .sum();
    assert!(replays > 1000, "{replays} replays dropped");
    assert_eq!(
        sim.transitions_to(PeerState::Unreachable, Instant::ZERO)
            .count(),
        0
    );
    sim.run_until("converged", INTERVAL * 10, |sim| {
        sim.points_converged(&all(20))
    })
    .unwrap_or_else(|failure| panic!("{failure}"));
}

#[test]
fn a_frozen_node_that_resumes_is_healthy_again_with_its_state() {
    let mut sim = SimNet::new(SimConfig::lan(10, 63));
    sim.run_for(Duration::from_secs(10));
    sim.crash(4);
    sim.run_for(Duration::from_secs(10));
    assert!((0..10)
        .filter(|&i| i != 4)
        .all(|i| sim.state(i, 4) == Some(PeerState::Unreachable)));
    sim.resume(4);
    sim.run_until("resumed node healthy everywhere", INTERVAL * 2, |sim| {
        (0..10)
            .filter(|&i| i != 4)
            .all(|i| sim.state(i, 4) == Some(PeerState::Healthy))
    })
    .unwrap_or_else(|failure| panic!("{failure}"));
    assert_eq!(sim.node(4).incarnation(), 1);
    sim.run_until("stores converged", INTERVAL * 5, |sim| {
        sim.points_converged(&all(10))
    })
    .unwrap_or_else(|failure| panic!("{failure}"));
}

#[test]
fn a_restart_that_reuses_its_incarnation_is_refused_as_replay() {
    // Why the shell must persist and bump the incarnation: without it, the
    // restarted node's counters repeat old ones and peers drop its frames.
    let mut sim = SimNet::new(SimConfig::lan(5, 64));
    sim.run_for(Duration::from_secs(120));
    let before = sim.node(0).stats().dropped(DropReason::Replayed);
    sim.restart_same_incarnation(2);
    sim.run_for(Duration::from_secs(10));
    let after = sim.node(0).stats().dropped(DropReason::Replayed);
    assert!(after - before >= 5, "replays dropped: {}", after - before);
    assert_ne!(sim.state(0, 2), Some(PeerState::Healthy));
    // Bumping the incarnation fixes it at once.
    sim.restart(2);
    sim.run_until("healthy after a proper restart", INTERVAL * 2, |sim| {
        (0..5)
            .filter(|&i| i != 2)
            .all(|i| sim.state(i, 2) == Some(PeerState::Healthy))
    })
    .unwrap_or_else(|failure| panic!("{failure}"));
}

#[test]
fn points_cross_a_gateway_between_two_lans() {
    // Nodes 0-9 on LAN 1, 10-19 on LAN 2, node 20 on both: the gateway.
    let mut sim = SimNet::new(SimConfig::lan(21, 65));
    for i in 0..10 {
        sim.set_lans(i, &[1]);
    }
    for i in 10..20 {
        sim.set_lans(i, &[2]);
    }
    sim.set_lans(20, &[1, 2]);
    sim.run_until("every point on both LANs", INTERVAL * 5, |sim| {
        sim.points_converged(&all(21))
    })
    .unwrap_or_else(|failure| panic!("{failure}"));
    // LAN 1 never hears LAN 2 directly.
    assert!(sim.node(0).peers().get(sim.node(15).id()).is_none());
    let id = sim.node(3).id();
    sim.run_for(Duration::from_secs(3));
    sim.publish(3, "door", shoal_core::wire::Value::Bool(true));
    sim.run_until("the door reaches LAN 2", INTERVAL * 3, |sim| {
        (10..20).all(|i| sim.node(i).store().point(id, "door").is_some())
    })
    .unwrap_or_else(|failure| panic!("{failure}"));
}

#[test]
fn a_mesh_larger_than_the_limits_stays_within_them() {
    let mut config = SimConfig::lan(40, 66);
    config.node.max_nodes = 32;
    let mut sim = SimNet::new(config);
    sim.run_for(Duration::from_secs(30));
    for i in 0..40 {
        let node = sim.node(i);
        assert!(node.peers().len() <= 32, "peers {}", node.peers().len());
        assert!(node.store().origins().len() <= 32);
    }
    let refused: u64 = (0..40)
        .map(|i| {
            let stats = sim.node(i).stats();
            stats.dropped(DropReason::PeerTableFull) + stats.store_limit_drops
        })
        .sum();
    assert!(refused > 0, "the limits were hit and counted");
}

#[test]
fn five_crashes_under_loss_are_all_detected_and_nobody_else_is_blamed() {
    let mut sim = SimNet::new(SimConfig::lan(50, 67).with_loss(0.1));
    sim.run_for(Duration::from_secs(20));
    let victims = [3, 14, 25, 36, 47];
    for &victim in &victims {
        sim.crash(victim);
    }
    let crashed_at = sim.now;
    let survivors: Vec<usize> = (0..50).filter(|i| !victims.contains(i)).collect();
    let limit = sim.config().node.unreachable_after + INTERVAL;
    sim.run_until("all victims UNREACHABLE everywhere", limit, |sim| {
        survivors.iter().all(|&s| {
            victims
                .iter()
                .all(|&v| sim.state(s, v) == Some(PeerState::Unreachable))
        })
    })
    .unwrap_or_else(|failure| panic!("{failure}"));
    sim.run_for(Duration::from_secs(60));
    assert!(sim
        .transitions_to(PeerState::Unreachable, crashed_at)
        .all(|t| victims.contains(&t.subject)));
}

#[test]
fn no_datagram_ever_exceeds_the_frame_limit() {
    let mut config = SimConfig::lan(30, 68);
    config.points_per_node = 40;
    config.node.max_points_per_node = 40;
    let mut sim = SimNet::new(config);
    sim.run_for(Duration::from_secs(5));
    sim.crash(0);
    sim.run_for(Duration::from_secs(5));
    sim.restart(0);
    sim.run_until("restarted node caught up", INTERVAL * 5, |sim| {
        sim.points_converged(&all(30))
    })
    .unwrap_or_else(|failure| panic!("{failure}"));
    assert_eq!(sim.net.too_large, 0);
}

#[test]
fn the_same_seed_replays_the_same_run() {
    let run = |seed| {
        let mut sim = SimNet::new(SimConfig::lan(15, seed).with_loss(0.15));
        sim.run_for(Duration::from_secs(30));
        sim.crash(2);
        sim.run_for(Duration::from_secs(10));
        (
            sim.transitions.clone(),
            sim.net.sent,
            sim.net.lost,
            sim.node(0).store().clone().hash(),
        )
    };
    let first = run(69);
    assert_eq!(first, run(69));
    assert_ne!(first.1, run(70).1);
}

#[test]
fn an_idle_mesh_settles_to_beacons_only() {
    let mut config = SimConfig::lan(20, 70);
    config.points_per_node = 0;
    let mut sim = SimNet::new(config);
    sim.run_for(Duration::from_secs(10));
    let digests = |sim: &SimNet| -> u64 { (0..20).map(|i| sim.node(i).stats().digests_sent).sum() };
    let before = digests(&sim);
    let sent_before = sim.net.sent;
    sim.run_for(Duration::from_secs(60));
    assert_eq!(digests(&sim), before, "no anti-entropy once stores agree");
    let per_node_per_second = (sim.net.sent - sent_before) as f64 / (20.0 * 60.0);
    // Beacons come every 85-95 % of the interval: about 1.1 per second.
    assert!(
        (1.0..1.2).contains(&per_node_per_second),
        "{per_node_per_second} datagrams per node per second"
    );
}

#[test]
fn a_slow_link_delays_but_never_breaks_membership() {
    // A 400 ms link (a congested Wi-Fi hop) between two nodes of ten.
    let mut sim = SimNet::new(SimConfig::lan(10, 71).with_loss(0.05));
    sim.set_link_latency(2, 7, Duration::from_millis(400));
    sim.run_for(Duration::from_secs(120));
    assert_eq!(
        sim.transitions_to(PeerState::Unreachable, Instant::ZERO)
            .count(),
        0
    );
    assert_eq!(sim.state(2, 7), Some(PeerState::Healthy));
    sim.run_until("converged", INTERVAL * 5, |sim| {
        sim.points_converged(&all(10))
    })
    .unwrap_or_else(|failure| panic!("{failure}"));
}

#[test]
fn a_partition_does_not_multiply_traffic() {
    // Silent LAN neighbors stay covered by broadcast: no unicast copies of
    // every beacon to the unreachable half.
    let mut config = SimConfig::lan(20, 72);
    config.points_per_node = 0;
    let mut sim = SimNet::new(config);
    sim.run_for(Duration::from_secs(10));
    let left: Vec<usize> = (0..10).collect();
    let right: Vec<usize> = (10..20).collect();
    sim.partition(&[&left, &right]);
    sim.run_for(Duration::from_secs(10));
    let sent_before = sim.net.sent;
    sim.run_for(Duration::from_secs(60));
    let per_node_per_second = (sim.net.sent - sent_before) as f64 / (20.0 * 60.0);
    assert!(
        per_node_per_second < 1.2,
        "{per_node_per_second} datagrams per node per second while partitioned"
    );
}

#[test]
fn a_static_peer_joins_two_lans_without_a_gateway() {
    // LAN 1: nodes 0-4; LAN 2: nodes 5-9; only node 0 knows node 5's address.
    let mut sim = SimNet::new(SimConfig::lan(10, 73));
    for i in 0..5 {
        sim.set_lans(i, &[1]);
    }
    for i in 5..10 {
        sim.set_lans(i, &[2]);
    }
    sim.set_static_peers(0, &[5]);
    sim.run_until("every point on both LANs", INTERVAL * 5, |sim| {
        sim.points_converged(&all(10))
    })
    .unwrap_or_else(|failure| panic!("{failure}"));
    assert_eq!(
        sim.state(5, 0),
        Some(PeerState::Healthy),
        "5 learned 0 from its beacons"
    );
    // Cut the WAN between the LANs for a while (peer exchange has linked
    // every pair by now): both sides find each other again by themselves.
    let wan = |sim: &mut SimNet, loss: f64| {
        for a in 0..5 {
            for b in 5..10 {
                sim.set_link_loss(a, b, loss);
            }
        }
    };
    wan(&mut sim, 1.0);
    sim.run_for(Duration::from_secs(10));
    assert_eq!(sim.state(0, 5), Some(PeerState::Unreachable));
    wan(&mut sim, 0.0);
    sim.run_until("re-bootstrapped", INTERVAL * 2, |sim| {
        sim.state(0, 5) == Some(PeerState::Healthy) && sim.state(5, 0) == Some(PeerState::Healthy)
    })
    .unwrap_or_else(|failure| panic!("{failure}"));
}

#[test]
fn a_node_with_one_static_peer_ends_up_knowing_the_whole_mesh() {
    // Nodes 0-8 share LAN 1; node 9 sits alone on LAN 2 (another subnet) and
    // knows only node 0's address. Peer exchange brings it everyone else.
    let mut sim = SimNet::new(SimConfig::lan(10, 74));
    for i in 0..9 {
        sim.set_lans(i, &[1]);
    }
    sim.set_lans(9, &[2]);
    sim.set_static_peers(9, &[0]);
    let everyone = all(10);
    sim.run_until("everyone knows everyone", INTERVAL * 3, |sim| {
        sim.all_see(&everyone, PeerState::Healthy)
    })
    .unwrap_or_else(|failure| panic!("{failure}"));
    sim.run_until("and every point", INTERVAL * 3, |sim| {
        sim.points_converged(&everyone)
    })
    .unwrap_or_else(|failure| panic!("{failure}"));
    // Candidates that never answer are forgotten, so they cost nothing forever.
    sim.crash(4);
    sim.run_for(Duration::from_secs(120));
    assert_eq!(sim.state(9, 4), Some(PeerState::Unreachable));
}

#[test]
fn a_thousand_nodes_coming_and_going_never_fill_the_store_for_a_newcomer() {
    // Five nodes stay; twelve slots host 1,000 distinct nodes over about
    // three simulated hours, each up for two minutes, half of them
    // crashing and half leaving. The store holds 40 nodes and forgets a
    // gone one after 5 minutes: about 17 live and 25 gone-but-not-yet-
    // pruned nodes do not fit, so both pruning and eviction happen, and
    // every newcomer's points must still reach all five within 60 s.
    // Beacons every 10 s (timings scaled) keep the run short.
    const STAYING: usize = 5;
    const SLOTS: usize = 12;
    const DISTINCT: usize = 1000;
    const UP: Duration = Duration::from_secs(120);
    const DOWN: Duration = Duration::from_secs(20);
    const ARRIVE: Duration = Duration::from_secs(60);
    const MAX_NODES: usize = 40;
    let mut config = SimConfig::lan(STAYING + SLOTS, 91);
    config.node.max_nodes = MAX_NODES;
    config.node.beacon_interval = Duration::from_secs(10);
    config.node.suspect_after = Duration::from_secs(20);
    config.node.unreachable_after = Duration::from_secs(30);
    config.node.prune_after = Duration::from_secs(300);
    config.points_per_node = 1;
    let mut sim = SimNet::new(config);
    for slot in STAYING..STAYING + SLOTS {
        sim.crash(slot);
    }
    // Per slot: when its node started (if up), whether checked, when down.
    let mut started: Vec<Option<Instant>> = vec![None; SLOTS];
    let mut checked = [false; SLOTS];
    let mut next_start: Vec<Instant> = (0..SLOTS)
        .map(|k| Instant::ZERO + Duration::from_secs(10 + 11 * k as u64))
        .collect();
    let (mut born, mut arrived, mut late) = (0usize, 0usize, Vec::new());
    let step = Duration::from_secs(2);
    for _ in 0..20_000 {
        if born == DISTINCT && started.iter().all(Option::is_none) {
            break;
        }
        sim.run_for(step);
        let now = sim.now;
        for k in 0..SLOTS {
            let slot = STAYING + k;
            match started[k] {
                None if born < DISTINCT && now >= next_start[k] => {
                    sim.start_new_node(slot, &format!("visitor-{born}"));
                    born += 1;
                    started[k] = Some(now);
                    checked[k] = false;
                }
                Some(at) if !checked[k] && now.saturating_since(at) >= ARRIVE => {
                    checked[k] = true;
                    let id = sim.node(slot).id();
                    let everywhere = (0..STAYING).all(|p| {
                        sim.node(p)
                            .store()
                            .origin(id)
                            .is_some_and(|o| !o.points.is_empty())
                    });
                    if everywhere {
                        arrived += 1;
                    } else {
                        late.push(sim.node(slot).name().to_string());
                    }
                }
                Some(at) if now.saturating_since(at) >= UP => {
                    if k % 2 == 0 {
                        sim.crash(slot);
                    } else {
                        sim.leave(slot);
                    }
                    started[k] = None;
                    next_start[k] = now + DOWN;
                }
                _ => {}
            }
        }
        for p in 0..STAYING {
            assert!(sim.node(p).store().origins().len() <= MAX_NODES);
        }
    }
    assert_eq!(born, DISTINCT);
    assert!(late.is_empty(), "{} arrived, late: {late:?}", arrived);
    assert_eq!(arrived, DISTINCT);
    let pruned: u64 = (0..STAYING)
        .map(|p| sim.node(p).stats().origins_pruned)
        .sum();
    let evicted: u64 = (0..STAYING)
        .map(|p| sim.node(p).stats().store_evictions)
        .sum();
    assert!(
        pruned > 0 && evicted > 0,
        "pruned {pruned}, evicted {evicted}"
    );
    eprintln!(
        "churn: {DISTINCT} nodes in {:.1} simulated hours; per staying node {} pruned, {} evicted",
        sim.now.as_millis() as f64 / 3.6e6,
        pruned / STAYING as u64,
        evicted / STAYING as u64
    );
}
