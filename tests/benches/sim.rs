//! `cargo bench -p shoal-tests`: the mesh core's figures, measured.
//!
//! Prints a Markdown report: simulator speed, convergence, failure detection,
//! loss tolerance, partitions and routing. Scenario figures are simulated
//! time (deterministic per seed, min/median/max over seeds); only the speed
//! lines are wall-clock. Wire sizes and hot paths are `benches/hot.rs`.
#![allow(clippy::print_stdout)]

use shoal_core::peers::PeerState;
use shoal_core::time::Instant as SimInstant;
use shoal_core::wire;
use shoal_tests::sim::{SimConfig, SimNet};
use shoal_tests::topology::{self, three_subnets};
use std::time::{Duration, Instant};

const SEEDS: [u64; 5] = [101, 102, 103, 104, 105];

fn summary(mut values: Vec<f64>) -> String {
    values.sort_by(f64::total_cmp);
    let median = values[values.len() / 2];
    format!(
        "{:.3} / {:.3} / {:.3}",
        values[0],
        median,
        values[values.len() - 1]
    )
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn convergence(nodes: usize, loss: f64, seed: u64) -> f64 {
    let mut sim = SimNet::new(SimConfig::lan(nodes, seed).with_loss(loss));
    let everyone: Vec<usize> = (0..nodes).collect();
    let at = sim
        .run_until("converged", Duration::from_secs(60), |sim| {
            sim.all_see(&everyone, PeerState::Healthy) && sim.points_converged(&everyone)
        })
        .unwrap_or_else(|failure| panic!("{failure}"));
    at.as_millis() as f64 / 1000.0
}

/// First and last survivor's detection of a crash, and the rejoin time.
fn crash_and_rejoin(nodes: usize, loss: f64, seed: u64) -> (f64, f64, f64) {
    let mut sim = SimNet::new(SimConfig::lan(nodes, seed).with_loss(loss));
    sim.run_for(Duration::from_secs(20));
    let victim = nodes / 3;
    sim.crash(victim);
    let crashed = sim.now;
    let survivors: Vec<usize> = (0..nodes).filter(|&i| i != victim).collect();
    sim.run_until("detected", Duration::from_secs(30), |sim| {
        survivors
            .iter()
            .all(|&s| sim.state(s, victim) == Some(PeerState::Unreachable))
    })
    .unwrap_or_else(|failure| panic!("{failure}"));
    let times: Vec<SimInstant> = sim
        .transitions_to(PeerState::Unreachable, crashed)
        .filter(|t| t.subject == victim)
        .map(|t| t.at)
        .collect();
    let first = times
        .iter()
        .min()
        .map_or(0.0, |t| seconds(t.saturating_since(crashed)));
    let last = times
        .iter()
        .max()
        .map_or(0.0, |t| seconds(t.saturating_since(crashed)));
    sim.run_for(Duration::from_secs(5));
    sim.restart(victim);
    let restarted = sim.now;
    let id = sim.node(victim).id();
    let at = sim
        .run_until("rejoined", Duration::from_secs(30), |sim| {
            let fresh = sim.node(victim).store().origin(id).cloned();
            survivors.iter().all(|&s| {
                sim.state(s, victim) == Some(PeerState::Healthy)
                    && sim.node(s).store().origin(id).is_some_and(|o| {
                        fresh.as_ref().is_some_and(|f| {
                            o.incarnation == f.incarnation && o.watermark >= f.watermark
                        })
                    })
            })
        })
        .unwrap_or_else(|failure| panic!("{failure}"));
    (first, last, seconds(at.saturating_since(restarted)))
}

fn propagation(nodes: usize, loss: f64, seed: u64) -> f64 {
    let mut sim = SimNet::new(SimConfig::lan(nodes, seed).with_loss(loss));
    sim.run_for(Duration::from_secs(15));
    sim.publish(1, "probe", wire::Value::Int(1));
    let id = sim.node(1).id();
    let start = sim.now;
    let at = sim
        .run_until("probe everywhere", Duration::from_secs(30), |sim| {
            (0..nodes).all(|i| sim.node(i).store().point(id, "probe").is_some())
        })
        .unwrap_or_else(|failure| panic!("{failure}"));
    seconds(at.saturating_since(start))
}

fn partition_heal(seed: u64) -> f64 {
    let mut sim = SimNet::new(SimConfig::lan(50, seed));
    sim.run_for(Duration::from_secs(10));
    let left: Vec<usize> = (0..25).collect();
    let right: Vec<usize> = (25..50).collect();
    sim.partition(&[&left, &right]);
    sim.run_for(Duration::from_secs(60));
    sim.heal();
    let healed = sim.now;
    let everyone: Vec<usize> = (0..50).collect();
    let at = sim
        .run_until("identical", Duration::from_secs(30), |sim| {
            sim.stores_identical(&everyone) && sim.points_converged(&everyone)
        })
        .unwrap_or_else(|failure| panic!("{failure}"));
    seconds(at.saturating_since(healed))
}

fn leave(seed: u64) -> f64 {
    let mut sim = SimNet::new(SimConfig::lan(50, seed));
    sim.run_for(Duration::from_secs(5));
    sim.leave(7);
    let start = sim.now;
    let at = sim
        .run_until("left", Duration::from_secs(30), |sim| {
            (0..50)
                .filter(|&i| i != 7)
                .all(|i| sim.state(i, 7) == Some(PeerState::Left))
        })
        .unwrap_or_else(|failure| panic!("{failure}"));
    seconds(at.saturating_since(start))
}

fn soak(loss: f64, seed: u64, minutes: u64) -> (usize, usize, u64) {
    let mut sim = SimNet::new(SimConfig::lan(50, seed).with_loss(loss));
    sim.run_for(Duration::from_secs(60 * minutes));
    let suspects = sim
        .transitions_to(PeerState::Suspect, SimInstant::ZERO)
        .count();
    let unreachable = sim
        .transitions_to(PeerState::Unreachable, SimInstant::ZERO)
        .count();
    let saves = (0..50).map(|i| sim.node(i).stats().vouch_saves).sum();
    (suspects, unreachable, saves)
}

/// Idle traffic per node, readings off, with room for `max_nodes`
/// neighbors, over `window` after 10 s of settling: bytes and datagrams per
/// second, and the largest datagram of the window.
fn idle_traffic(nodes: usize, max_nodes: usize, window: Duration) -> (f64, f64, usize) {
    let mut config = SimConfig::lan(nodes, 7);
    config.points_per_node = 0;
    config.node.max_nodes = max_nodes;
    let mut sim = SimNet::new(config);
    sim.run_for(Duration::from_secs(10));
    let (bytes, sent) = (sim.net.bytes_sent, sim.net.sent);
    sim.net.largest = 0;
    sim.run_for(window);
    let per = window.as_secs_f64() * nodes as f64;
    (
        (sim.net.bytes_sent - bytes) as f64 / per,
        (sim.net.sent - sent) as f64 / per,
        sim.net.largest,
    )
}

/// The idle-traffic curve from 5 to 1,000 nodes in one LAN.
fn idle_curve() {
    println!("## Idle traffic per node (sensors off, simulated)\n");
    println!(
        "One LAN; 10 s to settle, then the window. The largest datagram is the biggest frame \
         any node sent in the window (beacons, route lists, digests, deltas). `max_nodes` \
         (default 256) is raised to fit LANs above it, as the README tells users to; the last \
         row keeps the default in a LAN four times larger.\n"
    );
    println!("| nodes | max_nodes | window | bytes/s | datagrams/s | largest datagram (B) |");
    println!("|---|---|---|---|---|---|");
    let default = SimConfig::lan(1, 0).node.max_nodes;
    let rows = [5, 20, 50, 100, 250, 500, 1000]
        .map(|nodes| (nodes, default.max(nodes)))
        .into_iter()
        .chain([(1000, default)]);
    for (nodes, max_nodes) in rows {
        let window = Duration::from_secs(if nodes <= 100 { 60 } else { 20 });
        let (bytes, datagrams, largest) = idle_traffic(nodes, max_nodes, window);
        println!(
            "| {nodes} | {max_nodes} | {} s | {bytes:.1} | {datagrams:.2} | {largest} |",
            window.as_secs()
        );
    }
    println!();
}

/// Three subnets: time until every node reaches every node.
fn routed_convergence(loss: f64, seed: u64) -> f64 {
    let mut sim = three_subnets(SimConfig::lan(topology::NODES, seed).with_loss(loss));
    let everyone: Vec<usize> = (0..topology::NODES).collect();
    let at = sim
        .run_until("all reach all", Duration::from_secs(60), |sim| {
            sim.all_reach(&everyone)
        })
        .unwrap_or_else(|failure| panic!("{failure}"));
    seconds(at.saturating_since(SimInstant::ZERO))
}

/// Three subnets: the gateway subnet A routes through crashes; time until
/// every A node routes to every farther node through the other gateway.
fn gateway_failover(loss: f64, seed: u64) -> f64 {
    let mut sim = three_subnets(SimConfig::lan(topology::NODES, seed).with_loss(loss));
    let everyone: Vec<usize> = (0..topology::NODES).collect();
    sim.run_until("all reach all", Duration::from_secs(60), |sim| {
        sim.all_reach(&everyone)
    })
    .unwrap_or_else(|failure| panic!("{failure}"));
    sim.run_for(Duration::from_secs(5));
    let dead = sim.path(0, 8).expect("no loop")[1];
    let other = if dead == topology::GW_AB[0] {
        topology::GW_AB[1]
    } else {
        topology::GW_AB[0]
    };
    let crashed = sim.now;
    sim.crash(dead);
    let far: Vec<usize> = topology::B
        .iter()
        .chain(&topology::C)
        .chain([&topology::GW_BC])
        .copied()
        .collect();
    let at = sim
        .run_until("failover", Duration::from_secs(30), |sim| {
            topology::A.iter().all(|&a| {
                far.iter().all(|&f| {
                    sim.path(a, f)
                        .is_ok_and(|p| p.last() == Some(&f) && p[1] == other)
                })
            })
        })
        .unwrap_or_else(|failure| panic!("{failure}"));
    seconds(at.saturating_since(crashed))
}

/// Three subnets: an exec from subnet A to subnet C and its answer.
fn routed_exec(seed: u64) -> f64 {
    let mut sim = three_subnets(SimConfig::lan(topology::NODES, seed));
    let everyone: Vec<usize> = (0..topology::NODES).collect();
    sim.run_until("all reach all", Duration::from_secs(60), |sim| {
        sim.all_reach(&everyone)
    })
    .unwrap_or_else(|failure| panic!("{failure}"));
    let asked = sim.now;
    let id = sim.exec(0, 9, "ping").expect("sent");
    let at = sim
        .run_until("answer", Duration::from_secs(10), |sim| {
            sim.answer(0, id).is_some()
        })
        .unwrap_or_else(|failure| panic!("{failure}"));
    seconds(at.saturating_since(asked))
}

/// Three subnets, sensors off: bytes per second sent by a gateway and by a
/// node inside a subnet, and the route frames among them.
fn routed_idle_traffic() -> (f64, f64, f64) {
    let mut config = SimConfig::lan(topology::NODES, 9);
    config.points_per_node = 0;
    let mut sim = three_subnets(config);
    sim.run_for(Duration::from_secs(10));
    let bytes_of = |sim: &SimNet, i: usize| sim.node(i).stats().bytes_out;
    let gateway = topology::GW_AB[0];
    let inner = topology::A[0];
    let (g0, i0, r0) = (
        bytes_of(&sim, gateway),
        bytes_of(&sim, inner),
        sim.node(gateway).stats().routes_sent,
    );
    sim.run_for(Duration::from_secs(60));
    (
        (bytes_of(&sim, gateway) - g0) as f64 / 60.0,
        (bytes_of(&sim, inner) - i0) as f64 / 60.0,
        (sim.node(gateway).stats().routes_sent - r0) as f64 / 60.0,
    )
}

fn speed(nodes: usize, minutes: u64, keyed: bool) -> (f64, f64, u64) {
    let mut config = SimConfig::lan(nodes, 9);
    if !keyed {
        config.node.key = None;
    }
    let mut sim = SimNet::new(config);
    let start = Instant::now();
    sim.run_for(Duration::from_secs(60 * minutes));
    let wall = start.elapsed().as_secs_f64();
    (
        wall,
        (nodes as u64 * 60 * minutes) as f64 / wall,
        sim.net.delivered,
    )
}

/// The loss soak: 50 nodes, 10 simulated minutes at 10% and 20% loss,
/// three seeds each, nothing failing.
fn loss_soak() {
    println!("## Loss soak: 50 nodes, 10 simulated minutes, no real failure\n");
    println!("| loss | seed | false SUSPECT | false UNREACHABLE | vouch saves (naive detector's false UNREACHABLE) |");
    println!("|---|---|---|---|---|");
    for loss in [0.1, 0.2] {
        for seed in [201, 202, 203] {
            let (suspects, unreachable, saves) = soak(loss, seed, 10);
            println!(
                "| {:.0}% | {seed} | {suspects} | {unreachable} | {saves} |",
                loss * 100.0
            );
        }
    }
    println!();
}

fn main() {
    // `cargo test --benches` runs this with `--bench` absent: keep that cheap.
    let quick = !std::env::args().any(|a| a == "--bench");
    let started = Instant::now();
    println!("# shoal mesh core: measured figures\n");
    println!(
        "Simulated figures are min / median / max over seeds {SEEDS:?}, in simulated seconds; \
         defaults: beacon 1 s, suspect 2 s, unreachable 3 s, 3 sensors per node read every 10 s, \
         1-5 ms latency, encrypted frames.\n"
    );
    // `cargo bench -p shoal-tests --bench sim -- idle`: the idle curve
    // alone; `-- soak`: the loss soak alone.
    if std::env::args().any(|a| a == "idle") {
        idle_curve();
        return;
    }
    if std::env::args().any(|a| a == "soak") {
        loss_soak();
        return;
    }
    if quick {
        println!("(quick mode: run `cargo bench -p shoal-tests` for the full report)");
        println!("convergence 5 nodes: {:.3} s", convergence(5, 0.0, 1));
        return;
    }

    println!("## Scenarios (simulated time)\n");
    println!("| scenario | nodes | loss | min / median / max (s) |");
    println!("|---|---|---|---|");
    for (nodes, loss) in [(50, 0.0), (50, 0.2), (100, 0.0)] {
        let values = SEEDS.iter().map(|&s| convergence(nodes, loss, s)).collect();
        println!(
            "| every node knows every node and point | {nodes} | {:.0}% | {} |",
            loss * 100.0,
            summary(values)
        );
    }
    for (nodes, loss) in [(50, 0.0), (50, 0.1)] {
        let runs: Vec<(f64, f64, f64)> = SEEDS
            .iter()
            .map(|&s| crash_and_rejoin(nodes, loss, s))
            .collect();
        let pct = loss * 100.0;
        println!(
            "| crash: first survivor marks UNREACHABLE | {nodes} | {pct:.0}% | {} |",
            summary(runs.iter().map(|r| r.0).collect())
        );
        println!(
            "| crash: last survivor marks UNREACHABLE | {nodes} | {pct:.0}% | {} |",
            summary(runs.iter().map(|r| r.1).collect())
        );
        println!(
            "| restart: HEALTHY with new points everywhere | {nodes} | {pct:.0}% | {} |",
            summary(runs.iter().map(|r| r.2).collect())
        );
    }
    for (nodes, loss) in [(50, 0.0), (50, 0.1), (50, 0.2)] {
        let values = SEEDS.iter().map(|&s| propagation(nodes, loss, s)).collect();
        println!(
            "| one new reading reaches every node | {nodes} | {:.0}% | {} |",
            loss * 100.0,
            summary(values)
        );
    }
    let values = SEEDS.iter().map(|&s| partition_heal(s)).collect();
    println!(
        "| partition 25/25 for 60 s, heal: identical stores | 50 | 0% | {} |",
        summary(values)
    );
    let values = SEEDS.iter().map(|&s| leave(s)).collect();
    println!(
        "| graceful leave: LEFT everywhere | 50 | 0% | {} |",
        summary(values)
    );
    println!();

    println!("## Multi-hop: three subnets chained by gateways (simulated time)\n");
    println!("A (3 nodes) = 2 gateways = B (2 nodes) = 1 gateway = C (2 nodes); no router between the subnets.\n");
    println!("| scenario | loss | min / median / max (s) |");
    println!("|---|---|---|");
    for loss in [0.0, 0.1] {
        let values = SEEDS.iter().map(|&s| routed_convergence(loss, s)).collect();
        println!(
            "| every node reaches every node (up to 3 hops) | {:.0}% | {} |",
            loss * 100.0,
            summary(values)
        );
    }
    for loss in [0.0, 0.1] {
        let values = SEEDS.iter().map(|&s| gateway_failover(loss, s)).collect();
        println!(
            "| gateway crash: all of A routes through the other one | {:.0}% | {} |",
            loss * 100.0,
            summary(values)
        );
    }
    let values = SEEDS.iter().map(|&s| routed_exec(s)).collect();
    println!(
        "| exec from A on C (3 hops) and its answer back | 0% | {} |",
        summary(values)
    );
    let (gateway, inner, route_frames) = routed_idle_traffic();
    println!(
        "\nIdle traffic, sensors off: a gateway sends {gateway:.1} B/s ({route_frames:.2} route frames/s), \
         a node inside a subnet {inner:.1} B/s.\n"
    );

    loss_soak();

    idle_curve();

    println!("## Simulator speed (wall clock)\n");
    println!("Every broadcast is delivered to every node: deliveries grow as N².\n");
    println!("| nodes | simulated | frames | wall | node-seconds per wall second | datagrams delivered |");
    println!("|---|---|---|---|---|---|");
    for (nodes, minutes) in [(50, 10), (100, 10)] {
        for keyed in [true, false] {
            let (wall, rate, delivered) = speed(nodes, minutes, keyed);
            let frames = if keyed { "encrypted" } else { "open mesh" };
            println!(
                "| {nodes} | {minutes} min | {frames} | {wall:.2} s | {rate:.0} | {delivered} |"
            );
        }
    }
    println!("\nreport took {:.1} s", started.elapsed().as_secs_f64());
}
