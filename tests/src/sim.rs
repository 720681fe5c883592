//! A deterministic in-process mesh simulator.
//!
//! Every node runs the real [`shoal_core::Node`]; every datagram is the real
//! encoded (and, with a key, encrypted) frame, delivered after a simulated
//! latency unless the link loses it. Time is simulated: [`SimNet::step`] jumps
//! to the next delivery, timer or sensor reading. Everything random (loss,
//! latency, ids, sensor values, each node's own generator) follows from one
//! seed, so a failing run replays exactly: failures print the seed and the
//! last events.
//!
//! No socket is opened: the addresses below are labels, never bound.

use shoal_core::command::ExecError;
use shoal_core::peers::PeerState;
use shoal_core::rand::Rng;
use shoal_core::rules::{ComputeSpec, RuleSpec, Rules};
use shoal_core::sign::NodeKey;
use shoal_core::time::Instant;
use shoal_core::wire::{self, MeshKey, Name, NodeId, Outcome, Value};
use shoal_core::{Arrival, Config, Destination, Event, Identity, Node, Reach, Reading};
use shoal_hal::sim::{SimSensor, Waveform};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

/// How a simulated mesh is built.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Number of nodes.
    pub nodes: usize,
    /// The one seed everything follows from.
    pub seed: u64,
    /// The core configuration every node runs.
    pub node: Config,
    /// Probability that a datagram is lost on any link.
    pub loss: f64,
    /// Probability that a datagram is delivered twice.
    pub duplicate: f64,
    /// Fixed one-way latency.
    pub latency: Duration,
    /// Extra random latency, uniform in `0..=jitter`.
    pub jitter: Duration,
    /// Datagrams larger than this are dropped by the network.
    pub mtu: usize,
    /// Simulated sensors per node.
    pub points_per_node: usize,
    /// Time between two readings of a sensor.
    pub reading_interval: Duration,
}

impl SimConfig {
    /// `nodes` nodes on one LAN with an encrypted mesh, 1-5 ms latency, no
    /// loss, three sensors per node read every 10 s.
    pub fn lan(nodes: usize, seed: u64) -> SimConfig {
        SimConfig {
            nodes,
            seed,
            node: Config {
                mesh_id: 0x5348_0001,
                key: Some(MeshKey([7; 32])),
                ..Config::default()
            },
            loss: 0.0,
            duplicate: 0.0,
            latency: Duration::from_millis(1),
            jitter: Duration::from_millis(4),
            mtu: wire::MAX_FRAME,
            points_per_node: 3,
            reading_interval: Duration::from_secs(10),
        }
    }

    /// The same with a loss rate.
    pub fn with_loss(mut self, loss: f64) -> SimConfig {
        self.loss = loss;
        self
    }
}

/// One simulated agent.
#[derive(Debug)]
pub struct SimNode {
    /// The core, `None` while crashed.
    pub node: Option<Node>,
    /// Its (never bound) unicast address.
    pub addr: SocketAddr,
    /// Its identity; the incarnation grows with each restart.
    pub identity: Identity,
    /// Broadcast domains it is attached to.
    pub lans: BTreeSet<u32>,
    sensors: Vec<(Name, SimSensor)>,
    next_reading: Instant,
    /// Cached earliest of the core's timeout and the next reading, refreshed
    /// whenever the node is touched (scanning every node's peers at every
    /// step made the simulator quadratic).
    wake: Option<Instant>,
    started: Instant,
    /// The node's core state is kept while crashed, for `resume`.
    frozen: Option<Node>,
}

/// One state change seen by one node about another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// When.
    pub at: Instant,
    /// Who saw it.
    pub observer: usize,
    /// About whom.
    pub subject: usize,
    /// Old state.
    pub from: PeerState,
    /// New state.
    pub to: PeerState,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Delivery {
    at: Instant,
    order: u64,
    from: usize,
    to: usize,
    via_broadcast: bool,
    /// Shared by every recipient of one broadcast.
    payload: Rc<[u8]>,
}

/// Traffic figures of a run.
#[derive(Debug, Clone, Default)]
pub struct NetStats {
    /// Datagrams sent by nodes (one per broadcast).
    pub sent: u64,
    /// Bytes sent by nodes.
    pub bytes_sent: u64,
    /// Copies delivered.
    pub delivered: u64,
    /// Copies lost to the loss rate.
    pub lost: u64,
    /// Copies dropped by a partition or a crashed receiver.
    pub blocked: u64,
    /// Copies dropped as too large for the MTU.
    pub too_large: u64,
    /// The largest datagram sent, in bytes.
    pub largest: usize,
}

/// A run that did not reach its goal in time.
#[derive(Debug)]
pub struct SimFailure {
    /// What was awaited.
    pub what: String,
    /// The seed to replay with.
    pub seed: u64,
    /// Simulated time when it gave up.
    pub at: Instant,
    /// The last notable events.
    pub trace: Vec<String>,
}

impl fmt::Display for SimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "simulation (seed {}) gave up at {} waiting for: {}",
            self.seed, self.at, self.what
        )?;
        for line in &self.trace {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

const TRACE_LEN: usize = 60;

/// The simulated network and its nodes.
#[derive(Debug)]
pub struct SimNet {
    /// Current simulated time.
    pub now: Instant,
    /// The nodes, by index.
    pub nodes: Vec<SimNode>,
    /// Every state transition observed, in order.
    pub transitions: Vec<Transition>,
    /// Traffic figures.
    pub net: NetStats,
    config: SimConfig,
    rng: Rng,
    queue: BinaryHeap<Reverse<Delivery>>,
    order: u64,
    blocked: BTreeSet<(usize, usize)>,
    link_loss: BTreeMap<(usize, usize), f64>,
    link_latency: BTreeMap<(usize, usize), Duration>,
    by_addr: BTreeMap<SocketAddr, usize>,
    by_id: BTreeMap<NodeId, usize>,
    trace: VecDeque<String>,
    /// Unicast crosses only a shared LAN or a static-peer link (subnets
    /// without a router between them); otherwise it goes anywhere.
    isolated: bool,
    wan: BTreeSet<(usize, usize)>,
    /// Every command answer received, in order.
    pub finished: Vec<Finished>,
    /// Every history page received, in order.
    pub pages: Vec<Page>,
    /// Every rule action asked for: when, which node, rule, executor.
    pub actions: Vec<(Instant, usize, String, String)>,
    /// Every report of a rule stuck UNKNOWN: when, which node, the log line.
    pub stuck: Vec<(Instant, usize, String)>,
    /// Rules and derived points installed on a node at every (re)start.
    automation: BTreeMap<usize, (Vec<RuleSpec>, Vec<ComputeSpec>)>,
}

/// A command answer received by a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// When.
    pub at: Instant,
    /// The asker.
    pub node: usize,
    /// Its request number.
    pub id: u32,
    /// Where it ran.
    pub target: NodeId,
    /// How it ended.
    pub outcome: Outcome,
    /// Its output.
    pub output: String,
}

/// A history page received by a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The asker.
    pub node: usize,
    /// Its query number.
    pub id: u32,
    /// How it was answered.
    pub status: wire::HistoryStatus,
    /// The steps.
    pub rows: Vec<wire::HistoryRow>,
    /// Where the next page starts.
    pub next_min: Option<u32>,
}

/// The history every simulated node keeps of its point `temp`: one step per
/// minute, min/avg/max derived from the node's index and the minute.
pub fn sim_history_row(index: usize, minute: u32) -> wire::HistoryRow {
    let base = (index * 1000) as f32 + (minute % 1000) as f32;
    wire::HistoryRow {
        minute,
        min: base,
        avg: base + 0.5,
        max: base + 1.0,
    }
}

impl SimNet {
    /// Builds and starts the mesh at time zero, all nodes on LAN 0.
    pub fn new(config: SimConfig) -> SimNet {
        let mut rng = Rng::new(config.seed);
        let mut nodes = Vec::with_capacity(config.nodes);
        let mut by_addr = BTreeMap::new();
        let mut by_id = BTreeMap::new();
        for index in 0..config.nodes {
            let mut seed = [0u8; 32];
            for chunk in seed.chunks_mut(8) {
                chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
            }
            let key = NodeKey::from_seed(seed);
            let id = key.id();
            let addr = SocketAddr::from((
                [127, 0, (index / 250) as u8, (index % 250 + 2) as u8],
                20195,
            ));
            let identity = Identity {
                key,
                name: wire::name(&format!("node-{index}")).expect("valid name"),
                incarnation: 1,
            };
            by_addr.insert(addr, index);
            by_id.insert(id, index);
            nodes.push(SimNode {
                node: None,
                addr,
                identity,
                lans: BTreeSet::from([0]),
                sensors: Vec::new(),
                next_reading: Instant::ZERO,
                wake: None,
                started: Instant::ZERO,
                frozen: None,
            });
        }
        let mut sim = SimNet {
            now: Instant::ZERO,
            nodes,
            transitions: Vec::new(),
            net: NetStats::default(),
            rng,
            queue: BinaryHeap::new(),
            order: 0,
            blocked: BTreeSet::new(),
            link_loss: BTreeMap::new(),
            link_latency: BTreeMap::new(),
            by_addr,
            by_id,
            trace: VecDeque::new(),
            isolated: false,
            wan: BTreeSet::new(),
            finished: Vec::new(),
            pages: Vec::new(),
            actions: Vec::new(),
            stuck: Vec::new(),
            automation: BTreeMap::new(),
            config,
        };
        for index in 0..sim.nodes.len() {
            sim.boot(index);
        }
        sim
    }

    /// The seed of this run.
    pub fn seed(&self) -> u64 {
        self.config.seed
    }

    /// The configuration of this run.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    fn boot(&mut self, index: usize) {
        let now = self.now;
        let seed = self.rng.next_u64();
        let sim_node = &mut self.nodes[index];
        let node = Node::new(
            sim_node.identity.clone(),
            self.config.node.clone(),
            seed,
            now,
        )
        .expect("simulation config is valid");
        let incarnation = u64::from(sim_node.identity.incarnation);
        sim_node.sensors = (0..self.config.points_per_node)
            .map(|k| {
                let name = [
                    "temperature",
                    "humidity",
                    "pressure",
                    "light",
                    "co2",
                    "voltage",
                ][k % 6]
                    .to_owned()
                    + &if k >= 6 {
                        format!("{}", k / 6)
                    } else {
                        String::new()
                    };
                let sensor = SimSensor::new(
                    Waveform::Walk,
                    15.0,
                    25.0,
                    Duration::from_secs(600),
                    self.config.seed ^ (index as u64) << 16 ^ (k as u64) << 8 ^ incarnation,
                )
                .expect("valid sensor");
                (wire::name(&name).expect("valid name"), sensor)
            })
            .collect();
        sim_node.next_reading = now;
        sim_node.started = now;
        sim_node.node = Some(node);
        sim_node.frozen = None;
        self.refresh_wake(index);
        self.install_rules(index);
    }

    fn note(&mut self, line: String) {
        if self.trace.len() >= TRACE_LEN {
            self.trace.pop_front();
        }
        self.trace.push_back(format!("{} {line}", self.now));
    }

    /// Whether node `index` is running.
    pub fn is_up(&self, index: usize) -> bool {
        self.nodes[index].node.is_some()
    }

    /// The core of node `index` (panics if it is down: a test bug).
    pub fn node(&self, index: usize) -> &Node {
        self.nodes[index].node.as_ref().expect("node is up")
    }

    /// Mutable core of node `index`.
    pub fn node_mut(&mut self, index: usize) -> &mut Node {
        self.nodes[index].node.as_mut().expect("node is up")
    }

    /// The node index of `id`.
    pub fn index_of(&self, id: NodeId) -> Option<usize> {
        self.by_id.get(&id).copied()
    }

    /// Attaches node `index` to the broadcast domains `lans` only.
    pub fn set_lans(&mut self, index: usize, lans: &[u32]) {
        self.nodes[index].lans = lans.iter().copied().collect();
    }

    /// From now on, unicast reaches only nodes on a shared LAN or across a
    /// static-peer link: the LANs are subnets with no router between them,
    /// and only nodes on two of them (gateways) carry the mesh across.
    pub fn isolate_lans(&mut self) {
        self.isolated = true;
    }

    /// Gives node `index` the unicast addresses of `peers` as static peers
    /// (and, with isolated LANs, a link to each).
    pub fn set_static_peers(&mut self, index: usize, peers: &[usize]) {
        for &p in peers {
            self.wan.insert((index, p));
            self.wan.insert((p, index));
        }
        let addrs = peers.iter().map(|&p| self.nodes[p].addr).collect();
        if let Some(node) = self.nodes[index].node.as_mut() {
            node.set_static_peers(addrs);
        }
    }

    /// Sets the loss rate of the link between `a` and `b`, both directions.
    pub fn set_link_loss(&mut self, a: usize, b: usize, loss: f64) {
        self.link_loss.insert((a, b), loss);
        self.link_loss.insert((b, a), loss);
    }

    /// Sets the fixed one-way latency of the link between `a` and `b`, both
    /// directions (the jitter still adds to it).
    pub fn set_link_latency(&mut self, a: usize, b: usize, latency: Duration) {
        self.link_latency.insert((a, b), latency);
        self.link_latency.insert((b, a), latency);
    }

    /// Cuts every link between nodes of different groups.
    pub fn partition(&mut self, groups: &[&[usize]]) {
        for (g, group) in groups.iter().enumerate() {
            for other in &groups[g + 1..] {
                for &a in group.iter() {
                    for &b in other.iter() {
                        self.blocked.insert((a, b));
                        self.blocked.insert((b, a));
                    }
                }
            }
        }
        self.note(format!("partition into {} groups", groups.len()));
    }

    /// Restores every cut link.
    pub fn heal(&mut self) {
        self.blocked.clear();
        self.note("heal".to_owned());
    }

    /// Kills node `index` without a goodbye; its state is kept for `resume`.
    pub fn crash(&mut self, index: usize) {
        self.nodes[index].frozen = self.nodes[index].node.take();
        self.refresh_wake(index);
        self.note(format!("crash node-{index}"));
    }

    /// Restarts a crashed (or running) node from scratch in a new incarnation,
    /// as the real agent does: empty store, new readings.
    pub fn restart(&mut self, index: usize) {
        self.nodes[index].identity.incarnation += 1;
        self.boot(index);
        self.note(format!(
            "restart node-{index} incarnation {}",
            self.nodes[index].identity.incarnation
        ));
    }

    /// Starts slot `index` as a node never seen before: a new key (and so a
    /// new id and name), incarnation 1, an empty store. The slot's old node
    /// is gone for good, as if unplugged and replaced by another Pi.
    pub fn start_new_node(&mut self, index: usize, name: &str) {
        let mut seed = [0u8; 32];
        for chunk in seed.chunks_mut(8) {
            chunk.copy_from_slice(&self.rng.next_u64().to_le_bytes());
        }
        let old = self.nodes[index].identity.key.id();
        self.by_id.remove(&old);
        let key = NodeKey::from_seed(seed);
        self.by_id.insert(key.id(), index);
        self.nodes[index].identity = Identity {
            key,
            name: wire::name(name).expect("valid name"),
            incarnation: 1,
        };
        self.nodes[index].frozen = None;
        self.boot(index);
        self.note(format!("slot {index} starts new node {name}"));
    }

    /// Restarts a node from scratch *without* bumping its incarnation, as a
    /// broken deployment would (state directory not persisted).
    pub fn restart_same_incarnation(&mut self, index: usize) {
        self.boot(index);
        self.note(format!("restart node-{index} with the same incarnation"));
    }

    /// Brings back a crashed node with its state intact (a frozen process,
    /// an unplugged cable): same incarnation, counters continue.
    pub fn resume(&mut self, index: usize) {
        if let Some(node) = self.nodes[index].frozen.take() {
            self.nodes[index].node = Some(node);
            self.refresh_wake(index);
            self.note(format!("resume node-{index}"));
        }
    }

    /// Graceful shutdown of node `index`: its goodbye is sent, then it stops.
    pub fn leave(&mut self, index: usize) {
        let now = self.now;
        if let Some(node) = self.nodes[index].node.as_mut() {
            node.handle_leave(now);
        }
        self.drain(index);
        self.nodes[index].node = None;
        self.refresh_wake(index);
        self.note(format!("leave node-{index}"));
    }

    /// Publishes a reading on node `index` now.
    pub fn publish(&mut self, index: usize, name: &str, value: Value) {
        let now = self.now;
        let reading = Reading {
            name: wire::name(name).expect("valid name"),
            value,
            unit: wire::unit("").expect("empty unit"),
            ts_ms: 1_700_000_000_000 + now.as_millis(),
        };
        if let Some(node) = self.nodes[index].node.as_mut() {
            node.handle_reading(now, reading).expect("reading accepted");
        }
        self.drain(index);
    }

    /// Recomputes node `index`'s cached wake-up time.
    fn refresh_wake(&mut self, index: usize) {
        let sim_node = &mut self.nodes[index];
        sim_node.wake = sim_node.node.as_ref().and_then(|node| {
            let reading = (!sim_node.sensors.is_empty()).then_some(sim_node.next_reading);
            [node.poll_timeout(), reading].into_iter().flatten().min()
        });
    }

    /// The next moment anything happens.
    fn next_time(&self) -> Option<Instant> {
        let delivery = self.queue.peek().map(|Reverse(d)| d.at);
        let timers = self.nodes.iter().filter_map(|n| n.wake).min();
        [delivery, timers].into_iter().flatten().min()
    }

    /// Advances to the next moment something happens and handles all of it.
    /// Returns false when nothing is left to happen.
    pub fn step(&mut self) -> bool {
        let Some(at) = self.next_time() else {
            return false;
        };
        self.now = self.now.max(at);
        let now = self.now;
        while self.queue.peek().is_some_and(|Reverse(d)| d.at <= now) {
            let Some(Reverse(delivery)) = self.queue.pop() else {
                break;
            };
            let to = delivery.to;
            let from_addr = self.nodes[delivery.from].addr;
            let arrival = if delivery.via_broadcast {
                Arrival::Broadcast
            } else {
                Arrival::Unicast
            };
            match self.nodes[to].node.as_mut() {
                Some(node) => {
                    node.handle_datagram(now, from_addr, arrival, &delivery.payload);
                    self.net.delivered += 1;
                }
                None => self.net.blocked += 1,
            }
            self.drain(to);
        }
        for index in 0..self.nodes.len() {
            if self.nodes[index].wake.is_none_or(|t| t > now) {
                continue;
            }
            if self.nodes[index].next_reading <= now && !self.nodes[index].sensors.is_empty() {
                self.read_sensors(index);
            }
            if let Some(node) = self.nodes[index].node.as_mut() {
                if node.poll_timeout().is_some_and(|t| t <= now) {
                    node.handle_timeout(now);
                }
            }
            self.drain(index);
        }
        true
    }

    fn read_sensors(&mut self, index: usize) {
        let now = self.now;
        let interval = self.config.reading_interval;
        let sim_node = &mut self.nodes[index];
        let since_start = now.saturating_since(sim_node.started);
        let readings: Vec<Reading> = sim_node
            .sensors
            .iter()
            .map(|(name, sensor)| Reading {
                name: name.clone(),
                // Two decimals, like a real sensor driver reports.
                value: Value::Float((sensor.sample(since_start) * 100.0).round() / 100.0),
                unit: wire::unit("°C").expect("valid unit"),
                ts_ms: 1_700_000_000_000 + now.as_millis(),
            })
            .collect();
        sim_node.next_reading = now + interval;
        if let Some(node) = sim_node.node.as_mut() {
            for reading in readings {
                node.handle_reading(now, reading)
                    .expect("simulated reading accepted");
            }
        }
    }

    /// Moves node `index`'s queued datagrams onto the network and its events
    /// into the transition log.
    fn drain(&mut self, index: usize) {
        self.refresh_wake(index);
        let now = self.now;
        let mut transmits = Vec::new();
        let mut events = Vec::new();
        if let Some(node) = self.nodes[index].node.as_mut() {
            while let Some(transmit) = node.poll_transmit() {
                transmits.push(transmit);
            }
            while let Some(event) = node.poll_event() {
                events.push(event);
            }
        }
        let mut answers = Vec::new();
        let mut history_answers = Vec::new();
        for event in events {
            if let Event::HistoryRequested(request) = &event {
                // Each step of the range (only the point `temp` exists).
                let rows = (request.since_min..request.until_min)
                    .step_by(request.step_min as usize)
                    .map(|minute| sim_history_row(index, minute))
                    .filter(|_| request.point.as_str() == "temp");
                let (rows, next) = shoal_core::queries::page(rows, request.from_min);
                history_answers.push((request.clone(), rows, next));
            }
            if let Event::HistoryAnswered {
                id,
                status,
                rows,
                next_min,
                ..
            } = &event
            {
                self.pages.push(Page {
                    node: index,
                    id: *id,
                    status: *status,
                    rows: rows.clone(),
                    next_min: *next_min,
                });
            }
            if let Event::CommandRequested {
                origin,
                id,
                executor,
                ..
            } = &event
            {
                answers.push((*origin, *id, self.run_executor(index, *origin, executor)));
            }
            if let Event::CommandFinished {
                id,
                target,
                outcome,
                output,
            } = &event
            {
                self.finished.push(Finished {
                    at: now,
                    node: index,
                    id: *id,
                    target: *target,
                    outcome: *outcome,
                    output: output.clone(),
                });
            }
            if let Event::RuleAction { rule, executor, .. } = &event {
                self.actions
                    .push((now, index, rule.clone(), executor.clone()));
                self.note(format!("node-{index} rule {rule} runs {executor}"));
            }
            if let Event::RuleStuck {
                rule,
                unknown_for,
                inputs,
            } = &event
            {
                let report = shoal_core::rules::RuleStuck {
                    rule: rule.clone(),
                    unknown_for: *unknown_for,
                    inputs: inputs.clone(),
                };
                self.note(format!("node-{index} {report}"));
                self.stuck.push((now, index, report.to_string()));
            }
            if let Event::PeerStateChanged { peer, from, to, .. } = event {
                if let Some(subject) = self.index_of(peer) {
                    self.transitions.push(Transition {
                        at: now,
                        observer: index,
                        subject,
                        from,
                        to,
                    });
                    if to == PeerState::Unreachable || to == PeerState::Left {
                        self.note(format!("node-{index} sees node-{subject} {from} -> {to}"));
                    }
                }
            }
        }
        let again = !answers.is_empty() || !history_answers.is_empty();
        if let Some(node) = self.nodes[index].node.as_mut() {
            for (origin, id, (outcome, output)) in answers {
                node.complete_command(now, origin, id, outcome, &output);
            }
            for (request, rows, next) in history_answers {
                let status = wire::HistoryStatus::Rows;
                node.answer_history(now, &request, status, rows, next);
            }
        }
        for transmit in transmits {
            self.net.sent += 1;
            self.net.bytes_sent += transmit.payload.len() as u64;
            self.net.largest = self.net.largest.max(transmit.payload.len());
            let payload: Rc<[u8]> = Rc::from(transmit.payload);
            match transmit.destination {
                Destination::Broadcast => {
                    let lans = self.nodes[index].lans.clone();
                    for to in 0..self.nodes.len() {
                        if !self.nodes[to].lans.is_disjoint(&lans) {
                            self.deliver(index, to, true, &payload);
                        }
                    }
                }
                Destination::Unicast(addr) => {
                    if let Some(&to) = self.by_addr.get(&addr) {
                        self.deliver(index, to, false, &payload);
                    }
                }
            }
        }
        if again {
            self.drain(index);
        }
    }

    /// Every simulated node has two executors: `ping` (remote) answers
    /// `pong from node-N`; `local_only` runs only for the node itself.
    fn run_executor(&self, index: usize, origin: NodeId, executor: &str) -> (Outcome, String) {
        let own = origin == self.nodes[index].identity.id();
        match executor {
            "ping" => (Outcome::Exited(0), format!("pong from node-{index}")),
            "local_only" if own => (Outcome::Exited(0), String::new()),
            "local_only" => (Outcome::NotRemote, String::new()),
            _ => (Outcome::UnknownExecutor, String::new()),
        }
    }

    /// Installs rules and derived points on node `index`, now and at every
    /// restart (simulated readings carry wall-clock 1_700_000_000_000 + t).
    pub fn set_rules(&mut self, index: usize, rules: Vec<RuleSpec>, computes: Vec<ComputeSpec>) {
        self.automation.insert(index, (rules, computes));
        self.install_rules(index);
    }

    fn install_rules(&mut self, index: usize) {
        let now = self.now;
        let Some((rules, computes)) = self.automation.get(&index).cloned() else {
            return;
        };
        if let Some(node) = self.nodes[index].node.as_mut() {
            node.set_wall_clock(now, 1_700_000_000_000 + now.as_millis());
            node.set_rules(Rules::new(rules, now), computes);
        }
        self.drain(index);
    }

    /// Node `from` asks node `target` to run `executor`.
    pub fn exec(&mut self, from: usize, target: usize, executor: &str) -> Result<u32, ExecError> {
        let now = self.now;
        let target_id = self.nodes[target].identity.id();
        let name = wire::name(executor).expect("valid executor name");
        let result = match self.nodes[from].node.as_mut() {
            Some(node) => node.exec(now, target_id, name, Duration::from_secs(5)),
            None => Err(ExecError::Leaving),
        };
        self.drain(from);
        result
    }

    /// Node `from` asks node `target` for a page of its point `point`'s
    /// history: `(since, until, step)` minutes, from minute `from_min`.
    pub fn query_history(
        &mut self,
        from: usize,
        target: usize,
        point: &str,
        range: (u32, u32, u32),
        from_min: u32,
    ) -> Result<u32, ExecError> {
        let now = self.now;
        let target_id = self.nodes[target].identity.id();
        let point = wire::name(point).expect("valid point name");
        let timeout = Duration::from_secs(5);
        let result = match self.nodes[from].node.as_mut() {
            Some(node) => node.query_history(now, target_id, point, range, from_min, timeout),
            None => Err(ExecError::Leaving),
        };
        self.drain(from);
        result
    }

    /// The page node `node` got for its query `id`.
    pub fn page(&self, node: usize, id: u32) -> Option<&Page> {
        self.pages.iter().find(|p| p.node == node && p.id == id)
    }

    /// The answer node `node` got to its request `id`.
    pub fn answer(&self, node: usize, id: u32) -> Option<&Finished> {
        self.finished.iter().find(|f| f.node == node && f.id == id)
    }

    fn deliver(&mut self, from: usize, to: usize, via_broadcast: bool, payload: &Rc<[u8]>) {
        if payload.len() > self.config.mtu {
            self.net.too_large += 1;
            return;
        }
        if from != to && self.blocked.contains(&(from, to)) {
            self.net.blocked += 1;
            return;
        }
        let unrouted = self.isolated
            && !via_broadcast
            && self.nodes[from].lans.is_disjoint(&self.nodes[to].lans)
            && !self.wan.contains(&(from, to));
        if unrouted {
            self.net.blocked += 1;
            return;
        }
        let loss = self
            .link_loss
            .get(&(from, to))
            .copied()
            .unwrap_or(self.config.loss);
        if from != to && self.rng.chance(loss) {
            self.net.lost += 1;
            return;
        }
        let copies = if self.rng.chance(self.config.duplicate) {
            2
        } else {
            1
        };
        let latency = self
            .link_latency
            .get(&(from, to))
            .copied()
            .unwrap_or(self.config.latency);
        for _ in 0..copies {
            let jitter = self.rng.range(0, self.config.jitter.as_millis() as u64 + 1);
            let at = self.now + latency + Duration::from_millis(jitter);
            self.order += 1;
            self.queue.push(Reverse(Delivery {
                at,
                order: self.order,
                from,
                to,
                via_broadcast,
                payload: Rc::clone(payload),
            }));
        }
    }

    /// Runs until `until` (simulated).
    pub fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        while self.next_time().is_some_and(|t| t <= end) {
            self.step();
        }
        self.now = self.now.max(end);
    }

    /// Runs until `done` holds, checked after every step, or fails after
    /// `limit` of simulated time with the seed and the last events.
    pub fn run_until(
        &mut self,
        what: &str,
        limit: Duration,
        mut done: impl FnMut(&mut SimNet) -> bool,
    ) -> Result<Instant, SimFailure> {
        let end = self.now + limit;
        loop {
            if done(self) {
                return Ok(self.now);
            }
            match self.next_time() {
                Some(t) if t <= end => {
                    self.step();
                }
                _ => {
                    self.now = self.now.max(end);
                    if done(self) {
                        return Ok(self.now);
                    }
                    return Err(SimFailure {
                        what: what.to_owned(),
                        seed: self.config.seed,
                        at: self.now,
                        trace: self.trace.iter().cloned().collect(),
                    });
                }
            }
        }
    }

    /// Indexes of the running nodes.
    pub fn up_nodes(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&i| self.is_up(i)).collect()
    }

    /// What `observer` thinks of `subject`.
    pub fn state(&self, observer: usize, subject: usize) -> Option<PeerState> {
        let id = self.nodes[subject].identity.id();
        self.node(observer).peers().get(id).map(|peer| peer.state)
    }

    /// How `observer` reaches `subject` (through any path).
    pub fn reach(&self, observer: usize, subject: usize) -> Option<Reach> {
        let id = self.nodes[subject].identity.id();
        self.node(observer).reach(self.now, id)
    }

    /// Whether every running node of `group` reaches every other running
    /// node of it, HEALTHY.
    pub fn all_reach(&self, group: &[usize]) -> bool {
        let up: Vec<usize> = group.iter().copied().filter(|&i| self.is_up(i)).collect();
        up.iter().all(|&observer| {
            up.iter().all(|&subject| {
                self.reach(observer, subject)
                    .is_some_and(|r| r.state == PeerState::Healthy)
            })
        })
    }

    /// The hop-by-hop path from `from` to `to` as the next hops of the
    /// running nodes say: `Ok(path)` when it arrives, `Ok(partial)` when a
    /// node on the way has no route (a black hole, not a loop), `Err` with
    /// the path when it comes back to a node it passed: a routing loop.
    pub fn path(&self, from: usize, to: usize) -> Result<Vec<usize>, Vec<usize>> {
        let target = self.nodes[to].identity.id();
        let mut path = vec![from];
        let mut at = from;
        while at != to {
            let Some(node) = self.nodes[at].node.as_ref() else {
                break;
            };
            let Some(reach) = node.reach(self.now, target) else {
                break;
            };
            if matches!(reach.state, PeerState::Unreachable | PeerState::Left) {
                break;
            }
            let next = match reach.via {
                None => to,
                Some(via) => match self.index_of(via) {
                    Some(next) => next,
                    None => break,
                },
            };
            if path.contains(&next) {
                path.push(next);
                return Err(path);
            }
            path.push(next);
            at = next;
        }
        Ok(path)
    }

    /// The first routing loop among the running nodes, if any: the
    /// destination and the path that came back on itself.
    pub fn find_loop(&self) -> Option<(usize, Vec<usize>)> {
        let up = self.up_nodes();
        for &from in &up {
            for to in 0..self.nodes.len() {
                if from != to {
                    if let Err(path) = self.path(from, to) {
                        return Some((to, path));
                    }
                }
            }
        }
        None
    }

    /// Runs for `duration`, checking `check` after every step; fails with
    /// the seed, the time and the trace at the first violation.
    pub fn run_checked(
        &mut self,
        duration: Duration,
        mut check: impl FnMut(&SimNet) -> Result<(), String>,
    ) -> Result<(), SimFailure> {
        let end = self.now + duration;
        while self.next_time().is_some_and(|t| t <= end) {
            self.step();
            if let Err(what) = check(self) {
                return Err(SimFailure {
                    what,
                    seed: self.config.seed,
                    at: self.now,
                    trace: self.trace.iter().cloned().collect(),
                });
            }
        }
        self.now = self.now.max(end);
        Ok(())
    }

    /// Whether every running node sees every other node of `group` in `state`.
    pub fn all_see(&self, group: &[usize], state: PeerState) -> bool {
        group.iter().all(|&observer| {
            !self.is_up(observer)
                || group.iter().all(|&subject| {
                    subject == observer || self.state(observer, subject) == Some(state)
                })
        })
    }

    /// Whether every running node of `group` holds every other running node's
    /// own points, at the version the origin has.
    pub fn points_converged(&self, group: &[usize]) -> bool {
        let up: Vec<usize> = group.iter().copied().filter(|&i| self.is_up(i)).collect();
        up.iter().all(|&origin| {
            let origin_node = self.node(origin);
            let Some(own) = origin_node.store().origin(origin_node.id()) else {
                return false;
            };
            up.iter().all(|&holder| {
                holder == origin
                    || self
                        .node(holder)
                        .store()
                        .origin(origin_node.id())
                        .is_some_and(|theirs| {
                            theirs.incarnation == own.incarnation
                                && own.points.iter().all(|(name, point)| {
                                    theirs.points.get(name).is_some_and(|p| p.seq == point.seq)
                                })
                        })
            })
        })
    }

    /// Whether all running nodes of `group` have identical version vectors.
    pub fn stores_identical(&mut self, group: &[usize]) -> bool {
        let mut hashes = BTreeSet::new();
        for &index in group {
            if let Some(node) = self.nodes[index].node.as_mut() {
                hashes.insert(node.store_hash());
            }
        }
        hashes.len() <= 1
    }

    /// All transitions `observer -> subject` into `to` after `since`.
    pub fn transitions_to(
        &self,
        to: PeerState,
        since: Instant,
    ) -> impl Iterator<Item = &Transition> {
        self.transitions
            .iter()
            .filter(move |t| t.to == to && t.at >= since)
    }
}
