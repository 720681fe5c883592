//! `cargo bench -p shoal-tests --bench hot`: wire sizes and the hot paths of
//! the core, wall clock per operation: frame encode/decode with and without
//! the key, merging a full delta, and rule evaluation over 1,000 points.
//!
//! `bench/run` runs it twice, built with the bench profile (opt-level 3) and
//! with the shipped release profile (opt-level "z"), for the size/speed
//! trade-off. Under `cargo test --benches` (no `--bench`) it runs a few
//! iterations only.
#![allow(clippy::print_stdout)]

use shoal_config::expr::{parse, Pattern, PointName};
use shoal_core::rules::{self, Points, Problem, RuleSpec, Rules};
use shoal_core::time::Instant as SimInstant;
use shoal_core::wire::{self, Cipher, Counter, Header, MeshKey, Message, NodeId, Value};
use shoal_core::{Arrival, Destination, Reading};
use shoal_tests::sim::{SimConfig, SimNet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Iterations are divided by this outside `cargo bench`.
static SCALE: AtomicU32 = AtomicU32::new(1);

fn time_per_op(iterations: u32, mut op: impl FnMut()) -> f64 {
    let iterations = (iterations / SCALE.load(Ordering::Relaxed)).max(1);
    for _ in 0..iterations / 10 {
        op();
    }
    let start = Instant::now();
    for _ in 0..iterations {
        op();
    }
    start.elapsed().as_nanos() as f64 / f64::from(iterations)
}

fn hot_paths() {
    let cipher = Cipher::new(&MeshKey([7; 32]));
    let header = Header {
        mesh_id: 1,
        sender: NodeId(42),
        counter: Counter {
            incarnation: 1,
            seq: 1,
        },
    };
    // Real frames from a node: a beacon and a full catch-up delta.
    let mut sim = SimNet::new({
        let mut config = SimConfig::lan(1, 5);
        config.points_per_node = 46;
        config.node.max_points_per_node = 46;
        config
    });
    sim.run_for(Duration::from_secs(3));
    let store = sim.node(0).store().clone();
    let beacon = Message::Beacon(wire::Beacon {
        name: wire::name("node-12").expect("valid"),
        store_hash: 1,
        progress: 1000,
        suspects: heapless::Vec::new(),
        vouches: heapless::Vec::new(),
        meta: None,
        heard: 12,
        view: 0x1234_5678,
    });
    let clear_beacon = wire::encode(&header, &beacon, None).expect("fits");
    let sealed_beacon = wire::encode(&header, &beacon, Some(&cipher)).expect("fits");
    println!("| frame | bytes |");
    println!("|---|---|");
    println!(
        "| beacon, name `node-12`, no key | {} |",
        clear_beacon.len()
    );
    println!(
        "| beacon, name `node-12`, with key | {} |",
        sealed_beacon.len()
    );

    // A delta as a newcomer receives it: all 46 points of node 0.
    let own = sim.node(0).id();
    let origin = store.origin(own).expect("own origin");
    let delta_frames = delta_frames_of(&mut sim, own);
    let points: usize = origin.points.len();
    let delta_bytes: usize = delta_frames.iter().map(Vec::len).sum();
    println!(
        "| full delta, {points} realistic points, with key | {delta_bytes} in {} frame(s), {:.1} per point |",
        delta_frames.len(),
        delta_bytes as f64 / points as f64
    );
    println!();

    let iterations = 200_000;
    let encode_clear = time_per_op(iterations, || {
        std::hint::black_box(wire::encode(&header, &beacon, None).expect("fits"));
    });
    let encode_sealed = time_per_op(iterations, || {
        std::hint::black_box(wire::encode(&header, &beacon, Some(&cipher)).expect("fits"));
    });
    let decode_clear = time_per_op(iterations, || {
        let parsed = Header::parse(&clear_beacon, 1).expect("header");
        std::hint::black_box(wire::decode_body(&parsed, &clear_beacon, None).expect("decodes"));
    });
    let decode_sealed = time_per_op(iterations, || {
        let parsed = Header::parse(&sealed_beacon, 1).expect("header");
        std::hint::black_box(
            wire::decode_body(&parsed, &sealed_beacon, Some(&cipher)).expect("decodes"),
        );
    });
    let delta = delta_frames[0].clone();
    let delta_header = Header::parse(&delta, sim.config().node.mesh_id).expect("header");
    let delta_cipher = Cipher::new(sim.config().node.key.as_ref().expect("keyed"));
    let decode_delta = time_per_op(20_000, || {
        std::hint::black_box(
            wire::decode_body(&delta_header, &delta, Some(&delta_cipher)).expect("decodes"),
        );
    });
    // Merge: a fresh node takes in the full delta (decode + apply).
    let merge = time_per_op(2_000, || {
        let mut receiver = SimNet::new({
            let mut config = SimConfig::lan(1, 8);
            config.points_per_node = 0;
            config
        });
        let node = receiver.node_mut(0);
        node.handle_datagram(
            SimInstant::ZERO,
            "127.0.0.2:20195".parse().expect("addr"),
            Arrival::Unicast,
            &delta,
        );
        std::hint::black_box(node.store().len());
    });
    let empty_node = time_per_op(2_000, || {
        let receiver = SimNet::new({
            let mut config = SimConfig::lan(1, 8);
            config.points_per_node = 0;
            config
        });
        std::hint::black_box(receiver.now);
    });
    println!("| operation | time per op |");
    println!("|---|---|");
    println!("| encode beacon, no key | {encode_clear:.0} ns |");
    println!("| encode beacon, XChaCha20-Poly1305 | {encode_sealed:.0} ns |");
    println!("| decode beacon, no key | {decode_clear:.0} ns |");
    println!("| decode beacon, XChaCha20-Poly1305 | {decode_sealed:.0} ns |");
    println!("| decode full delta frame ({points} points), keyed | {decode_delta:.0} ns |");
    println!(
        "| merge full delta into a fresh store (decode + apply) | {:.0} ns |",
        (merge - empty_node).max(0.0)
    );
    println!();
}

/// The delta frames node 0 of `sim` sends about `origin` to a newcomer whose
/// digest is empty (a response digest, so node 0 does not ask back).
fn delta_frames_of(sim: &mut SimNet, origin: NodeId) -> Vec<Vec<u8>> {
    let now = sim.now;
    let node = sim.node_mut(0);
    while node.poll_transmit().is_some() {}
    let mesh_id = node.config().mesh_id;
    let cipher = node.config().key.as_ref().map(Cipher::new);
    let empty_digest = Message::Digest(wire::Digest {
        request: false,
        first: NodeId(0),
        last: NodeId(u64::MAX),
        entries: heapless::Vec::new(),
    });
    let header = Header {
        mesh_id,
        sender: NodeId(999),
        counter: Counter {
            incarnation: 1,
            seq: 1,
        },
    };
    let frame = wire::encode(&header, &empty_digest, cipher.as_ref()).expect("fits");
    node.handle_datagram(
        now,
        "127.0.0.99:20195".parse().expect("addr"),
        Arrival::Unicast,
        &frame,
    );
    let mut frames = Vec::new();
    while let Some(transmit) = node.poll_transmit() {
        if transmit.destination == Destination::Broadcast {
            continue;
        }
        let header = Header::parse(&transmit.payload, mesh_id).expect("own frame");
        if let Ok(Message::Delta(delta)) =
            wire::decode_body(&header, &transmit.payload, cipher.as_ref())
        {
            if delta.chunks.iter().any(|c| c.origin == origin) {
                frames.push(transmit.payload.to_vec());
            }
        }
    }
    frames
}

/// The rules of a busy house: aggregates over globs, single points, logic.
fn house_rules() -> Vec<RuleSpec> {
    let rule = |name: &str, when: &str| RuleSpec {
        name: name.to_owned(),
        when: parse(when).expect("parses"),
        until: None,
        hold_for: Duration::ZERO,
        run: "on".to_owned(),
        otherwise: Some("off".to_owned()),
        on_unknown: None,
        stale_after: Some(Duration::from_secs(120)),
    };
    vec![
        rule("warm", "avg(*/temperature*) > 20"),
        rule("humid", "max(*/humidity*) > 24"),
        rule("everyone", "count(*/*) > 500"),
        rule("co2", "any(*/co2*)"),
        rule("dark", "min(*/light*) < 16 and node-3/light > 15"),
        rule("pair", "node-3/temperature > 22 and node-4/humidity < 18"),
        rule("spread", "max(*/pressure*) - min(*/pressure*) > 5"),
        rule(
            "volts",
            "sum(node-1*/voltage*) > 100 or node-2/voltage < 15.5",
        ),
        rule("one", "node-7/temperature2 > 21"),
        rule("all", "all(*/humidity3)"),
    ]
}

/// A store walked the way the core walks it, for [`rules::eval`] alone.
struct Store<'a>(&'a shoal_core::store::Store);

impl Points for Store<'_> {
    fn lookup(&self, pattern: &Pattern, _stale_after: Option<Duration>) -> Vec<Option<f64>> {
        let mut out = Vec::new();
        for origin in self.0.origins().values() {
            for (name, point) in &origin.points {
                if pattern.matches("node-0", &origin.name, name) {
                    out.push(match point.value {
                        Value::Float(v) => Some(v),
                        _ => None,
                    });
                }
            }
        }
        out
    }

    fn problem(&self, pattern: &Pattern, stale_after: Option<Duration>) -> Problem {
        if self.lookup(pattern, stale_after).is_empty() {
            Problem::MatchesNothing { suggestion: None }
        } else {
            Problem::NoNumber
        }
    }

    fn point_names(&self) -> Vec<PointName<'_>> {
        Vec::new()
    }
}

fn rule_evaluation() {
    // 20 nodes of 50 points each: 1,000 points in every store.
    let mut sim = SimNet::new({
        let mut config = SimConfig::lan(20, 11);
        config.points_per_node = 50;
        config.node.max_points_per_node = 64;
        config
    });
    let everyone: Vec<usize> = (0..20).collect();
    sim.run_until("converged", Duration::from_secs(120), |sim| {
        sim.points_converged(&everyone)
    })
    .unwrap_or_else(|failure| panic!("{failure}"));
    let store = sim.node(0).store().clone();
    let points: usize = store.origins().values().map(|o| o.points.len()).sum();
    let specs = house_rules();
    let expressions: Vec<_> = specs.iter().map(|r| r.when.clone()).collect();
    let view = Store(&store);
    let eval_all = time_per_op(2_000, || {
        for expr in &expressions {
            std::hint::black_box(rules::eval(expr, &view, Some(Duration::from_secs(120))));
        }
    });
    // The whole path in the node: a new reading of its own, which marks the
    // rules dirty, with and without the 10 rules installed.
    let now = sim.now;
    let mut value = 0.0;
    let mut reading = |node: &mut shoal_core::Node| {
        value += 0.25;
        let reading = Reading {
            name: wire::name("temperature").expect("valid"),
            value: Value::Float(15.0 + value % 10.0),
            unit: wire::unit("C").expect("valid"),
            ts_ms: 1,
        };
        node.handle_reading(now, reading).expect("publishes");
        while node.poll_transmit().is_some() {}
        while node.poll_event().is_some() {}
    };
    let node = sim.node_mut(0);
    let without = time_per_op(2_000, || reading(node));
    node.set_rules(Rules::new(specs, now), Vec::new());
    let with = time_per_op(2_000, || reading(node));
    println!("| rule evaluation over {points} points | time per op |");
    println!("|---|---|");
    println!(
        "| 10 rules (aggregates over globs, single points, logic), `rules::eval` | {:.1} µs ({:.2} µs per rule) |",
        eval_all / 1000.0,
        eval_all / 10_000.0
    );
    println!(
        "| a reading of its own at a node with those 10 rules (publish + evaluate), minus the same without rules | {:.1} µs |",
        (with - without).max(0.0) / 1000.0
    );
    println!(
        "| the same reading without rules (publish, push to 19 neighbors) | {:.1} µs |",
        without / 1000.0
    );
    println!();
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        SCALE.store(1000, Ordering::Relaxed);
    }
    hot_paths();
    rule_evaluation();
}
