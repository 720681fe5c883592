//! Multi-hop routing in the simulator: three subnets chained by gateways,
//! failover between two gateways, partitions, and loop freedom checked at
//! every step of many seeded runs with random crashes and loss; commands
//! and history pages across the gateways.

use shoal_core::peers::PeerState;
use shoal_tests::sim::{SimConfig, SimNet};
use shoal_tests::topology::{three_subnets, A, B, C, GW_AB, GW_BC, NODES};
use std::time::Duration;

const INTERVAL: Duration = Duration::from_secs(1);
const UNREACHABLE_AFTER: Duration = Duration::from_secs(3);

fn all() -> Vec<usize> {
    (0..NODES).collect()
}

fn no_loop(sim: &SimNet) -> Result<(), String> {
    match sim.find_loop() {
        Some((to, path)) => {
            let id = sim.nodes[to].identity.id();
            let mut detail = String::new();
            for &i in &path {
                if sim.is_up(i) {
                    let node = sim.node(i);
                    let dest = node.routes().get(id);
                    detail += &format!(
                        "\n  node-{i}: {:?}, peer {:?}, routes {:?}",
                        node.reach(sim.now, id),
                        node.peers()
                            .get(id)
                            .map(|p| (p.state, p.last_direct, p.alive)),
                        dest.map(|d| (&d.routes, d.selected))
                    );
                }
            }
            Err(format!("routing loop to node-{to}: {path:?}{detail}"))
        }
        None => Ok(()),
    }
}

#[test]
fn three_subnets_every_node_reaches_every_node_with_the_right_hops() {
    let mut sim = three_subnets(SimConfig::lan(NODES, 401));
    let at = sim
        .run_until("every node reaches every node", INTERVAL * 10, |sim| {
            sim.all_reach(&all())
        })
        .unwrap_or_else(|failure| panic!("{failure}"));
    assert!(at.as_millis() <= 4000, "took {at}");
    // A to C: A -> gateway AB -> gateway BC -> C.
    let reach = sim.reach(0, 8).expect("known");
    assert_eq!(reach.hops, 3, "{reach:?}");
    let path = sim.path(0, 8).expect("no loop");
    assert_eq!(path.len(), 4, "{path:?}");
    assert!(GW_AB.contains(&path[1]) && path[2] == GW_BC, "{path:?}");
    assert_eq!(sim.reach(5, 9).map(|r| r.hops), Some(2));
    assert_eq!(sim.reach(3, 4).map(|r| r.hops), Some(1));
    // Names travel with the routes.
    let far = sim.node(0).node_name(sim.node(9).id());
    assert_eq!(far.as_deref(), Some("node-9"));
    // Only the gateways advertise routes.
    for i in all() {
        let bridging = sim.node(i).is_bridging();
        let gateway = GW_AB.contains(&i) || i == GW_BC;
        assert_eq!(bridging, gateway, "node-{i}");
    }
    // And every store holds every node's points.
    sim.run_until("stores converge across subnets", INTERVAL * 10, |sim| {
        sim.points_converged(&all())
    })
    .unwrap_or_else(|failure| panic!("{failure}"));
}

#[test]
fn killing_one_of_two_gateways_fails_over_within_the_bound_without_loops() {
    let mut sim = three_subnets(SimConfig::lan(NODES, 402));
    sim.run_until("every node reaches every node", INTERVAL * 10, |sim| {
        sim.all_reach(&all())
    })
    .unwrap_or_else(|failure| panic!("{failure}"));
    sim.run_for(INTERVAL * 5);
    // Kill whichever gateway node 0 routes through to node 8.
    let path = sim.path(0, 8).expect("no loop");
    let dead = path[1];
    let other = if dead == GW_AB[0] { GW_AB[1] } else { GW_AB[0] };
    let crashed_at = sim.now;
    sim.crash(dead);
    let survivors: Vec<usize> = all().into_iter().filter(|&i| i != dead).collect();
    let failed_over = |sim: &SimNet| {
        A.iter().all(|&a| {
            B.iter().chain(&C).chain([&GW_BC]).all(|&far| {
                sim.path(a, far)
                    .is_ok_and(|p| p.last() == Some(&far) && p[1] == other)
            })
        }) && sim.all_reach(&survivors)
    };
    let mut done = None;
    sim.run_checked(UNREACHABLE_AFTER + INTERVAL * 2, |sim| {
        if done.is_none() && failed_over(sim) {
            done = Some(sim.now);
        }
        no_loop(sim)
    })
    .unwrap_or_else(|failure| panic!("{failure}"));
    let done = done.expect("failed over");
    let took = done.saturating_since(crashed_at);
    eprintln!("routes failed over {took:?} after the gateway crashed");
    assert!(
        took <= UNREACHABLE_AFTER + INTERVAL,
        "failover took {took:?}"
    );
    // Nobody beyond the dead gateway was ever thought unreachable.
    let false_alarms: Vec<_> = sim
        .transitions_to(PeerState::Unreachable, crashed_at)
        .filter(|t| t.subject != dead)
        .collect();
    assert!(false_alarms.is_empty(), "{false_alarms:?}");
    // The dead gateway itself is UNREACHABLE everywhere, also beyond one hop.
    sim.run_until("dead gateway unreachable everywhere", INTERVAL * 4, |sim| {
        survivors.iter().all(|&i| {
            sim.reach(i, dead)
                .is_some_and(|r| r.state == PeerState::Unreachable)
        })
    })
    .unwrap_or_else(|failure| panic!("{failure}"));
    // It comes back: routes return and every node sees it again.
    sim.restart(dead);
    sim.run_until("restarted gateway reached by all", INTERVAL * 5, |sim| {
        sim.all_reach(&all())
    })
    .unwrap_or_else(|failure| panic!("{failure}"));
}

#[test]
fn partitioning_b_from_c_and_healing_converges_the_stores() {
    let mut sim = three_subnets(SimConfig::lan(NODES, 403));
    sim.run_until("every node reaches every node", INTERVAL * 10, |sim| {
        sim.all_reach(&all())
    })
    .unwrap_or_else(|failure| panic!("{failure}"));
    // Cut the gateway BC from C: C is on its own.
    let rest: Vec<usize> = all().into_iter().filter(|i| !C.contains(i)).collect();
    sim.partition(&[&rest, &C]);
    sim.run_until("C unreachable from A", UNREACHABLE_AFTER * 3, |sim| {
        C.iter().all(|&c| {
            sim.reach(0, c)
                .is_none_or(|r| r.state == PeerState::Unreachable)
        })
    })
    .unwrap_or_else(|failure| panic!("{failure}"));
    // Both sides keep publishing while apart.
    sim.publish(0, "during_partition", shoal_core::wire::Value::Float(1.0));
    sim.publish(8, "during_partition", shoal_core::wire::Value::Float(2.0));
    sim.run_for(INTERVAL * 10);
    sim.heal();
    sim.run_checked(INTERVAL * 10, no_loop)
        .unwrap_or_else(|failure| panic!("{failure}"));
    sim.run_until("healed and converged", INTERVAL * 10, |sim| {
        sim.all_reach(&all()) && sim.points_converged(&all()) && sim.stores_identical(&all())
    })
    .unwrap_or_else(|failure| panic!("{failure}"));
}

/// Runs of the random-fault scenario; `SHOAL_ROUTE_RUNS` overrides.
fn runs() -> u64 {
    std::env::var("SHOAL_ROUTE_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// First seed of the random-fault scenario; `SHOAL_ROUTE_SEED` overrides.
fn first_seed() -> u64 {
    std::env::var("SHOAL_ROUTE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

#[test]
fn no_routing_loop_at_any_step_over_many_seeded_runs_with_crashes_and_loss() {
    let runs = runs();
    let mut failovers = 0;
    for run in 0..runs {
        let seed = first_seed() + run;
        let mut sim = three_subnets(SimConfig::lan(NODES, seed).with_loss(0.1));
        let mut rng = shoal_core::rand::Rng::new(seed);
        sim.run_checked(INTERVAL * 5, no_loop)
            .unwrap_or_else(|failure| panic!("{failure}"));
        // Two random crashes (gateways are as likely as anyone), restarts.
        for _ in 0..2 {
            let victim = rng.range(0, NODES as u64) as usize;
            if !sim.is_up(victim) {
                continue;
            }
            if GW_AB.contains(&victim) {
                failovers += 1;
            }
            sim.crash(victim);
            let pause = Duration::from_millis(rng.range(500, 6000));
            sim.run_checked(pause, no_loop)
                .unwrap_or_else(|failure| panic!("{failure}"));
        }
        for i in all() {
            if !sim.is_up(i) {
                sim.restart(i);
            }
        }
        sim.run_checked(INTERVAL * 4, no_loop)
            .unwrap_or_else(|failure| panic!("{failure}"));
        sim.run_until("all reach all again", INTERVAL * 10, |sim| {
            sim.all_reach(&all())
        })
        .unwrap_or_else(|failure| panic!("{failure}"));
    }
    assert!(
        runs < 50 || failovers > runs / 10,
        "{failovers} gateway crashes"
    );
}

#[test]
fn a_flat_lan_sends_no_route_advertisements_once_settled_even_under_loss() {
    let mut sim = SimNet::new(SimConfig::lan(20, 404).with_loss(0.2));
    // While nodes discover each other their views differ for a moment, and
    // each discovery pulls a beacon forward: a few route frames per node
    // at most (26 in all with this seed).
    sim.run_for(Duration::from_secs(10));
    let startup: Vec<u64> = (0..20).map(|i| sim.node(i).stats().routes_sent).collect();
    assert!(startup.iter().sum::<u64>() <= 40, "{startup:?}");
    assert!(startup.iter().all(|&n| n <= 4), "{startup:?}");
    sim.run_for(Duration::from_secs(300));
    for (i, before) in startup.iter().enumerate() {
        assert_eq!(sim.node(i).stats().routes_sent, *before, "node-{i}");
        assert!(!sim.node(i).is_bridging());
    }
}

#[test]
fn a_lan_larger_than_the_peer_table_stops_advertising_routes() {
    // Room for 16 neighbors in a LAN of 40: every node keeps a different
    // part of the LAN, so views differ for good. They must not make every
    // node a bridge (500 simulated nodes with room for 256 sent route
    // lists without end: 16 KB/s per node).
    let mut config = SimConfig::lan(40, 406);
    config.node.max_nodes = 16;
    config.points_per_node = 0;
    let mut sim = SimNet::new(config);
    sim.run_for(Duration::from_secs(20));
    assert!((0..40).all(|i| sim.node(i).peers().len() == 16));
    let settled: Vec<u64> = (0..40).map(|i| sim.node(i).stats().routes_sent).collect();
    sim.run_for(Duration::from_secs(120));
    for (i, before) in settled.iter().enumerate() {
        assert_eq!(sim.node(i).stats().routes_sent, *before, "node-{i}");
        assert!(!sim.node(i).is_bridging(), "node-{i}");
    }
}

#[test]
fn a_gateway_whose_table_fits_both_lans_exactly_still_bridges() {
    // Nodes 0-9 on LAN 1, 10-19 on LAN 2, node 20 on both with room for
    // exactly its 20 neighbors: a full table that turns nobody away.
    let mut config = SimConfig::lan(21, 407);
    config.node.max_nodes = 20;
    let mut sim = SimNet::new(config);
    for i in 0..20 {
        sim.set_lans(i, &[if i < 10 { 1 } else { 2 }]);
    }
    sim.set_lans(20, &[1, 2]);
    let everyone: Vec<usize> = (0..21).collect();
    sim.run_until(
        "all reach all through the gateway",
        Duration::from_secs(30),
        |sim| sim.all_reach(&everyone),
    )
    .unwrap_or_else(|failure| panic!("{failure}"));
    assert_eq!(sim.node(20).peers().len(), 20);
    assert!(sim.node(20).is_bridging());
}

#[test]
fn a_chain_of_static_peers_across_routers_is_routed_end_to_end() {
    // Four nodes on four subnets, each linked only to the next by a static
    // peer (a VPN chain): 0 - 1 - 2 - 3.
    let mut sim = SimNet::new(SimConfig::lan(4, 405));
    for i in 0..4 {
        sim.set_lans(i, &[10 + i as u32]);
    }
    sim.isolate_lans();
    for i in 0..3 {
        sim.set_static_peers(i, &[i + 1]);
    }
    sim.run_until("the chain reaches end to end", INTERVAL * 10, |sim| {
        sim.all_reach(&[0, 1, 2, 3])
    })
    .unwrap_or_else(|failure| panic!("{failure}"));
    assert_eq!(sim.reach(0, 3).map(|r| r.hops), Some(3));
    assert_eq!(sim.path(0, 3), Ok(vec![0, 1, 2, 3]));
    sim.run_until("points converge along the chain", INTERVAL * 10, |sim| {
        sim.points_converged(&[0, 1, 2, 3])
    })
    .unwrap_or_else(|failure| panic!("{failure}"));
}

#[test]
fn a_command_crosses_two_gateways_and_its_result_comes_back() {
    use shoal_core::wire::Outcome;
    let mut sim = three_subnets(SimConfig::lan(NODES, 406));
    sim.run_until("every node reaches every node", INTERVAL * 10, |sim| {
        sim.all_reach(&all())
    })
    .unwrap_or_else(|failure| panic!("{failure}"));
    let asked_at = sim.now;
    let id = sim.exec(0, 9, "ping").expect("sent");
    sim.run_until("answer", INTERVAL, |sim| sim.answer(0, id).is_some())
        .unwrap_or_else(|failure| panic!("{failure}"));
    let answer = sim.answer(0, id).expect("answered").clone();
    assert_eq!(answer.outcome, Outcome::Exited(0));
    assert_eq!(answer.output, "pong from node-9");
    assert!(answer.at.saturating_since(asked_at) < Duration::from_millis(100));
    // Two relays there (a gateway AB, the gateway BC) and two back.
    let relayed: u64 = all()
        .iter()
        .map(|&i| sim.node(i).stats().commands_relayed)
        .sum();
    assert_eq!(relayed, 4);
    // Clear refusals travel back the same way.
    let not_remote = sim.exec(0, 9, "local_only").expect("sent");
    let unknown = sim.exec(0, 6, "no_such_executor").expect("sent");
    let own = sim.exec(0, 0, "local_only").expect("sent");
    sim.run_for(INTERVAL);
    let outcome = |id| sim.answer(0, id).map(|a| a.outcome);
    assert_eq!(outcome(not_remote), Some(Outcome::NotRemote));
    assert_eq!(outcome(unknown), Some(Outcome::UnknownExecutor));
    assert_eq!(outcome(own), Some(Outcome::Exited(0)));
}

#[test]
fn exec_keeps_working_through_the_other_gateway_within_the_failover_bound() {
    use shoal_core::wire::Outcome;
    let mut sim = three_subnets(SimConfig::lan(NODES, 407));
    sim.run_until("every node reaches every node", INTERVAL * 10, |sim| {
        sim.all_reach(&all())
    })
    .unwrap_or_else(|failure| panic!("{failure}"));
    let path = sim.path(1, 6).expect("no loop");
    let dead = path[1];
    let crashed_at = sim.now;
    sim.crash(dead);
    // Ask every 100 ms until a command gets through again.
    let mut answered_at = None;
    for _ in 0..60 {
        if let Ok(id) = sim.exec(1, 6, "ping") {
            sim.run_for(Duration::from_millis(100));
            if sim
                .answer(1, id)
                .is_some_and(|a| a.outcome == Outcome::Exited(0))
            {
                answered_at = Some(sim.now);
                break;
            }
        } else {
            sim.run_for(Duration::from_millis(100));
        }
    }
    let answered_at = answered_at.expect("exec works again");
    let took = answered_at.saturating_since(crashed_at);
    eprintln!("exec through the other gateway again {took:?} after the crash");
    assert!(
        took <= UNREACHABLE_AFTER + INTERVAL,
        "exec back after {took:?}"
    );
    // The unreachable gateway itself is a clear error.
    sim.run_for(UNREACHABLE_AFTER * 2);
    assert_eq!(
        sim.exec(1, dead, "ping"),
        Err(shoal_core::command::ExecError::Unreachable)
    );
}

/// Node `from` gathers `target`'s history of `temp` page by page, asking
/// again after a page that got no answer; the steps, and how many pages
/// were asked for. Bounded: at most 100 asks.
fn gather(
    sim: &mut SimNet,
    from: usize,
    target: usize,
    range: (u32, u32, u32),
) -> (Vec<shoal_core::wire::HistoryRow>, u32) {
    use shoal_core::wire::HistoryStatus;
    let (mut rows, mut next, mut asks) = (Vec::new(), Some(range.0), 0);
    while let Some(from_min) = next {
        asks += 1;
        assert!(asks <= 100, "gathering did not end");
        let Ok(id) = sim.query_history(from, target, "temp", range, from_min) else {
            sim.run_for(Duration::from_millis(200));
            continue;
        };
        sim.run_until("a page or its timeout", INTERVAL * 6, |sim| {
            sim.page(from, id).is_some()
        })
        .unwrap_or_else(|failure| panic!("{failure}"));
        let page = sim.page(from, id).expect("answered").clone();
        match page.status {
            HistoryStatus::Rows => {
                rows.extend(page.rows);
                next = page.next_min;
            }
            // No answer in time (a gateway died on the way): ask again.
            HistoryStatus::NoAnswer | HistoryStatus::NoRoute => {}
            other => panic!("{other:?}"),
        }
    }
    (rows, asks)
}

#[test]
fn history_of_a_point_beyond_two_gateways_comes_whole_under_loss_and_a_gateway_crash() {
    use shoal_tests::sim::sim_history_row;
    let mut sim = three_subnets(SimConfig::lan(NODES, 408).with_loss(0.05));
    sim.run_until("every node reaches every node", INTERVAL * 20, |sim| {
        sim.all_reach(&all())
    })
    .unwrap_or_else(|failure| panic!("{failure}"));
    // A day of 5-minute steps: 288 steps, 5 pages, across two gateways.
    let range = (29_000_000, 29_000_000 + 1_440, 5);
    let expected: Vec<_> = (range.0..range.1)
        .step_by(5)
        .map(|minute| sim_history_row(9, minute))
        .collect();
    let (rows, asks) = gather(&mut sim, 0, 9, range);
    assert_eq!(rows, expected);
    let relayed: u64 = all()
        .iter()
        .map(|&i| sim.node(i).stats().history_relayed)
        .sum();
    eprintln!("288 steps of node-9 at node-0 in {asks} pages under 5 % loss; {relayed} relays");
    assert!(relayed >= 4 * 5, "two relays each way per page: {relayed}");
    // A gateway on the path dies: the next asks go the other way.
    let path = sim.path(1, 6).expect("no loop");
    sim.crash(path[1]);
    let (rows, asks) = gather(&mut sim, 1, 6, range);
    let expected: Vec<_> = expected
        .iter()
        .map(|r| sim_history_row(6, r.minute))
        .collect();
    assert_eq!(rows, expected);
    eprintln!(
        "after gateway node-{} crashed: node-6's history whole at node-1 in {asks} asks",
        path[1]
    );
    // A point without history is an empty answer, not an error.
    let id = sim
        .query_history(0, 9, "nothing", range, range.0)
        .expect("sent");
    sim.run_until("the empty answer", INTERVAL * 6, |sim| {
        sim.page(0, id).is_some()
    })
    .unwrap_or_else(|failure| panic!("{failure}"));
    let page = sim.page(0, id).expect("answered");
    assert!(page.rows.is_empty() && page.next_min.is_none(), "{page:?}");
}
