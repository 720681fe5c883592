//! shoal and HashiCorp Serf measured side by side, in one invocation, on the
//! same machine: convergence, failure detection, rejoin, propagation, idle
//! footprint, and the same under 10% packet loss.
//!
//! Agents run on loopback (distinct 127.0.x.k addresses; shoal broadcasts to
//! 127.255.255.255, Serf joins the first agent, no mDNS) or one per network
//! namespace on a bridge the bench creates. The two systems run one after
//! the other, alternating within each repetition, so a noisy moment of the
//! machine hits both. See `BENCHMARKS.md` for the results and `bench/run`
//! for the one command that regenerates it.
#![allow(clippy::print_stdout, clippy::print_stderr)]

pub mod agent;
pub mod cluster;
pub mod flood;
pub mod lab;
pub mod report;

use agent::System;
use cluster::{Cluster, Net, Setup};
use report::Results;
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Systems to measure.
    pub systems: Vec<System>,
    /// Mesh sizes on loopback.
    pub nodes: Vec<usize>,
    /// Mesh sizes in namespaces (with the loss scenarios); empty for none.
    pub netns_nodes: Vec<usize>,
    /// Repetitions of each scenario.
    pub reps: usize,
    /// Idle window for the footprint.
    pub idle: Duration,
    /// Window for counting false failures at 10% loss (0: skip).
    pub false_window: Duration,
    /// Packet loss of the loss scenarios.
    pub loss: f64,
    /// Frames of the beacon flood sent to shoal on loopback (0: none).
    pub flood: usize,
    /// Programs, ports and scratch space.
    pub setup: Setup,
}

/// Limits of every wait (generous: a timeout is a result, not a hang).
const CONVERGE_LIMIT: Duration = Duration::from_secs(90);
const DETECT_LIMIT: Duration = Duration::from_secs(90);
const REJOIN_LIMIT: Duration = Duration::from_secs(90);
const PROPAGATE_LIMIT: Duration = Duration::from_secs(60);

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Prints progress on stderr.
fn say(text: &str) {
    eprintln!("[bench] {text}");
}

/// One repetition of the main scenarios for one system.
fn repetition(
    results: &mut Results,
    system: System,
    n: usize,
    net: Net,
    options: &Options,
    rep: usize,
) -> Result<(), String> {
    let tag = format!("{}-{}-{n}-{rep}", system.name(), net.name());
    let group = (net.name(), n);
    let mut cluster = Cluster::start(system, n, net, &options.setup, &tag)?;
    let (converged, after_last) = cluster.converged(CONVERGE_LIMIT)?;
    results.add(
        "convergence (all see all alive)",
        group,
        system,
        "s",
        secs(converged),
    );
    results.add(
        "convergence, counted from the last agent's start",
        group,
        system,
        "s",
        secs(after_last),
    );
    // Let joins and first syncs finish before measuring anything else.
    std::thread::sleep(Duration::from_secs(2));
    let (to_all, handler) = cluster.propagate(1, rep as u32, PROPAGATE_LIMIT)?;
    results.add(
        "propagation to all (agent log)",
        group,
        system,
        "s",
        secs(to_all),
    );
    if let Some(handler) = handler {
        results.add(
            "propagation to all (Serf event handler ran)",
            group,
            system,
            "s",
            secs(handler),
        );
    }
    let idle_since = Instant::now();
    let footprint = cluster.idle(options.idle)?;
    results.add(
        "false failures while idle (all agents' verdicts)",
        group,
        system,
        "",
        cluster.failures_since(idle_since) as f64,
    );
    results.add(
        "RSS per agent, idle",
        group,
        system,
        "MiB",
        footprint.rss_mib,
    );
    results.add(
        "CPU per agent per idle minute",
        group,
        system,
        "s",
        footprint.cpu_s_per_min,
    );
    // Every agent hears every other once a beacon interval (1 s): idle CPU
    // per second over the peers is what one beacon costs its receiver.
    // Serf has no beacons; the same division is its idle cost per peer.
    if n > 1 {
        results.add(
            "CPU per beacon received (idle CPU per second / peers; Serf: per peer)",
            group,
            system,
            "µs",
            footprint.cpu_s_per_min / 60.0 / (n - 1) as f64 * 1e6,
        );
    }
    if let Some(bytes) = footprint.bytes_per_s {
        results.add(
            "bytes sent per agent per second, idle",
            group,
            system,
            "B/s",
            bytes,
        );
    }
    let victim = n;
    let killed = cluster.kill(victim);
    let (first, last) = cluster.detected(victim, killed, DETECT_LIMIT)?;
    results.add(
        "failure detection, first survivor (kill -9)",
        group,
        system,
        "s",
        secs(first),
    );
    results.add(
        "failure detection, last survivor (kill -9)",
        group,
        system,
        "s",
        secs(last),
    );
    let restarted = cluster.restart(victim)?;
    let rejoined = cluster.rejoined(victim, restarted, REJOIN_LIMIT)?;
    results.add(
        "rejoin (alive everywhere)",
        group,
        system,
        "s",
        secs(rejoined),
    );
    if system == System::Shoal && net == Net::Loopback && options.flood > 0 {
        flood(results, &mut cluster, group, options.flood)?;
    }
    if net == Net::Namespaces && options.loss > 0.0 {
        // Everyone settled again, then the loss scenarios.
        std::thread::sleep(Duration::from_secs(3));
        cluster.set_loss(options.loss)?;
        let percent = (options.loss * 100.0).round();
        let (to_all, _) = cluster.propagate(1, 1000 + rep as u32, PROPAGATE_LIMIT)?;
        results.add(
            &format!("propagation to all, {percent}% loss"),
            group,
            system,
            "s",
            secs(to_all),
        );
        let killed = cluster.kill(victim);
        let (first, last) = cluster.detected(victim, killed, DETECT_LIMIT)?;
        results.add(
            &format!("failure detection, first survivor, {percent}% loss"),
            group,
            system,
            "s",
            secs(first),
        );
        results.add(
            &format!("failure detection, last survivor, {percent}% loss"),
            group,
            system,
            "s",
            secs(last),
        );
    }
    cluster.stop();
    Ok(())
}

/// A beacon flood of `frames` frames from an address no agent uses, once
/// the mesh is settled: every agent keeps running, its memory flat.
fn flood(
    results: &mut Results,
    cluster: &mut Cluster,
    group: (&'static str, usize),
    frames: usize,
) -> Result<(), String> {
    std::thread::sleep(Duration::from_secs(3));
    let frames = flood::frames(frames);
    let since = Instant::now();
    let outcome = cluster.flood(&frames)?;
    let system = System::Shoal;
    let name = |what: &str| format!("beacon flood of {} frames: {what}", frames.len());
    results.add(
        &name("seconds to send"),
        group,
        system,
        "s",
        outcome.seconds,
    );
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    let growth = outcome.growth;
    for (what, bytes) in [
        ("largest RSS growth of an agent", growth.rss),
        (
            "largest growth of an agent's anonymous memory (heap, stacks)",
            growth.anon,
        ),
        (
            "largest growth of an agent's mapped file pages (program, libraries)",
            growth.file,
        ),
        (
            "largest RSS growth of an agent in its second half",
            outcome.second_half_growth,
        ),
    ] {
        results.add(&name(what), group, system, "MiB", mib(bytes));
    }
    results.add(
        &name("agents running after it"),
        group,
        system,
        "",
        outcome.running as f64,
    );
    results.add(
        &name("agents' failures declared while it lasted and 5 s after"),
        group,
        system,
        "",
        cluster.failures_of_agents_since(since) as f64,
    );
    if outcome.running < cluster.len() {
        return Err(format!(
            "{} of {} agents died in the flood",
            cluster.len() - outcome.running,
            cluster.len()
        ));
    }
    Ok(())
}

/// False failures over `options.false_window` at `options.loss`, nothing failing.
fn false_failures(
    results: &mut Results,
    system: System,
    n: usize,
    options: &Options,
) -> Result<(), String> {
    let tag = format!("{}-false-{n}", system.name());
    let cluster = Cluster::start(system, n, Net::Namespaces, &options.setup, &tag)?;
    cluster.converged(CONVERGE_LIMIT)?;
    std::thread::sleep(Duration::from_secs(2));
    cluster.set_loss(options.loss)?;
    let since = Instant::now();
    std::thread::sleep(options.false_window);
    let count = cluster.failures_since(since);
    let percent = (options.loss * 100.0).round();
    let minutes = options.false_window.as_secs_f64() / 60.0;
    results.add(
        &format!("false failures in {minutes:.1} min, {percent}% loss (all agents' verdicts)"),
        (Net::Namespaces.name(), n),
        system,
        "",
        count as f64,
    );
    cluster.stop();
    Ok(())
}

/// Runs everything `options` asks for. Failed measurements are recorded
/// (and reported) rather than aborting the run.
pub fn run(options: &Options) -> Results {
    let mut results = Results::default();
    let mut blocks: Vec<(Net, usize)> = options.nodes.iter().map(|&n| (Net::Loopback, n)).collect();
    blocks.extend(options.netns_nodes.iter().map(|&n| (Net::Namespaces, n)));
    let started = Instant::now();
    for (net, n) in blocks {
        for rep in 0..options.reps {
            for &system in &options.systems {
                say(&format!(
                    "{} x{n} on {}, repetition {} of {} ({:.0} s so far)",
                    system.name(),
                    net.name(),
                    rep + 1,
                    options.reps,
                    started.elapsed().as_secs_f64()
                ));
                if let Err(error) = repetition(&mut results, system, n, net, options, rep) {
                    say(&format!("FAILED: {error}"));
                    results.fail(
                        system,
                        &format!(
                            "{} x{n} repetition {}: {}",
                            net.name(),
                            rep + 1,
                            first_line(&error)
                        ),
                    );
                }
            }
        }
    }
    if !options.false_window.is_zero() && options.loss > 0.0 {
        for &n in &options.netns_nodes {
            for &system in &options.systems {
                say(&format!(
                    "{} x{n}: counting false failures for {:.0} s at {:.0}% loss",
                    system.name(),
                    options.false_window.as_secs_f64(),
                    options.loss * 100.0
                ));
                if let Err(error) = false_failures(&mut results, system, n, options) {
                    say(&format!("FAILED: {error}"));
                    results.fail(
                        system,
                        &format!("false failures x{n}: {}", first_line(&error)),
                    );
                }
            }
        }
    }
    say(&format!("done in {:.0} s", started.elapsed().as_secs_f64()));
    results
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}
