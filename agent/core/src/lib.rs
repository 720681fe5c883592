//! The sans-io mesh core: one [`Node`] per agent.
//!
//! Nothing in this crate reads a clock, opens a socket or file, spawns a
//! thread or awaits: its dependencies (`Cargo.toml`) leave no way to. Inputs
//! are plain values with the current time passed in; outputs are pulled. The
//! same code runs under the agent's async shell and, deterministically, under
//! the simulator (`shoal-tests`).
//!
//! Modules, by what they own:
//! - [`wire`]: frames and messages (header, XChaCha20-Poly1305, the replay
//!   window), documented as the protocol;
//! - [`peers`]: what is known of each neighbor and the state it implies;
//!   `detector`: deadlines, vouch requests, unicast-only neighbors;
//! - `discovery`: static peers, peer exchange, knocks beyond the LAN;
//! - [`store`]: every origin's points, digests and deltas; `anti_entropy`:
//!   pushed deltas and the pull that repairs them;
//! - [`routes`]: the distance-vector table; `relay`: bridging, route
//!   advertisements and how any node is reached;
//! - [`command`]: commands relayed hop by hop, with their results;
//! - [`queries`]: history pages asked of a point's origin, relayed the same way;
//! - [`sign`]: node keys; the signatures on commands, results and leaves;
//! - [`names`]: one name, one node (conflicts reported, ambiguous names
//!   refused);
//! - [`rules`]: expressions and rule state machines; `automation`: rules
//!   fed from the store, derived points;
//! - [`strangers`]: nodes heard that speak another protocol or belong to
//!   another mesh, listed (never a silent split);
//! - [`time`]: the core's `Instant`; [`rand`]: the seeded generator.

#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod address_check;
mod anti_entropy;
mod automation;
pub mod command;
mod detector;
mod discovery;
pub mod join;
pub mod names;
pub mod peers;
pub mod queries;
pub mod rand;
mod relay;
pub mod rotation;
pub mod routes;
pub mod rules;
pub mod sign;
pub mod store;
pub mod strangers;
pub mod time;
pub mod wire;

use anti_entropy::AntiEntropy;
use detector::{Detector, Verdict};
use discovery::Discovery;
use peers::{PeerState, PeerTable, Timing};
use rand::Rng;
use relay::Relay;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;
use store::{PublishError, Range, Store, StoreLimits};
use time::Instant;
use wire::{
    Beacon, Cipher, Counter, DecodeError, Delta, Digest, Header, Liveness, MeshKey, Message, Meta,
    Name, NodeId, Unit, Value, MAX_GOSSIP,
};

/// How a node is tuned. Every default comes from `shoal_config::defaults`.
#[derive(Debug, Clone)]
pub struct Config {
    /// Identifies the mesh; frames of other meshes are dropped.
    pub mesh_id: u32,
    /// Mesh key; `None` runs an open mesh (bodies in clear, no tag).
    pub key: Option<MeshKey>,
    /// Upper bound of the time between two beacons.
    pub beacon_interval: Duration,
    /// Silence after which a neighbor is SUSPECT.
    pub suspect_after: Duration,
    /// Silence after which a neighbor is UNREACHABLE (no vouch either).
    pub unreachable_after: Duration,
    /// Time in UNREACHABLE or LEFT after which a neighbor is forgotten.
    pub prune_after: Duration,
    /// Most nodes tracked (neighbors; origins of data).
    pub max_nodes: usize,
    /// Most points per origin.
    pub max_points_per_node: usize,
    /// Most past values per point.
    pub history_per_point: usize,
    /// Most datagrams queued for sending.
    pub max_pending_transmits: usize,
    /// Most events queued for reading.
    pub max_pending_events: usize,
    /// Facts about this node sent now and then in beacons.
    pub meta: Option<Meta>,
}

impl Default for Config {
    fn default() -> Config {
        use shoal_config::defaults as d;
        Config {
            mesh_id: 0,
            key: None,
            beacon_interval: d::BEACON_INTERVAL,
            suspect_after: d::SUSPECT_AFTER,
            unreachable_after: d::UNREACHABLE_AFTER,
            prune_after: d::PRUNE_AFTER,
            max_nodes: d::MAX_NODES,
            max_points_per_node: d::MAX_POINTS_PER_NODE,
            history_per_point: d::HISTORY_PER_POINT,
            max_pending_transmits: d::MAX_PENDING_TRANSMITS,
            max_pending_events: d::MAX_PENDING_EVENTS,
            meta: None,
        }
    }
}

impl From<&shoal_config::Config> for Config {
    /// Timings and limits from the configuration file. The mesh id and key
    /// come from the state directory, not the file: the caller sets them.
    fn from(file: &shoal_config::Config) -> Config {
        Config {
            beacon_interval: file.mesh.beacon_interval,
            suspect_after: file.mesh.suspect_after,
            unreachable_after: file.mesh.unreachable_after,
            prune_after: file.mesh.prune_after,
            max_nodes: file.limits.max_nodes,
            max_points_per_node: file.limits.max_points_per_node,
            history_per_point: file.limits.history_per_point,
            ..Config::default()
        }
    }
}

/// A configuration the core cannot run with. Nothing was started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The beacon interval must be above zero.
    #[error("beacon_interval must be above zero")]
    ZeroBeaconInterval,
    /// One lost beacon must not look like silence.
    #[error("suspect_after must be at least twice beacon_interval")]
    SuspectTooEarly,
    /// UNREACHABLE needs time for vouches after SUSPECT.
    #[error("unreachable_after must be later than suspect_after")]
    UnreachableTooEarly,
    /// Forgetting a node before it can even be UNREACHABLE.
    #[error("prune_after must be at least unreachable_after")]
    PruneTooEarly,
    /// A capacity of zero.
    #[error("limit {0} must be at least 1")]
    ZeroLimit(&'static str),
}

impl Config {
    /// Checks the timings and limits.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.beacon_interval.is_zero() {
            return Err(ConfigError::ZeroBeaconInterval);
        }
        if self.suspect_after < self.beacon_interval * 2 {
            return Err(ConfigError::SuspectTooEarly);
        }
        if self.unreachable_after <= self.suspect_after {
            return Err(ConfigError::UnreachableTooEarly);
        }
        if self.prune_after < self.unreachable_after {
            return Err(ConfigError::PruneTooEarly);
        }
        for (name, value) in [
            ("max_nodes", self.max_nodes),
            ("max_points_per_node", self.max_points_per_node),
            ("max_pending_transmits", self.max_pending_transmits),
            ("max_pending_events", self.max_pending_events),
        ] {
            if value == 0 {
                return Err(ConfigError::ZeroLimit(name));
            }
        }
        Ok(())
    }

    fn timing(&self) -> Timing {
        Timing {
            suspect_after: self.suspect_after,
            unreachable_after: self.unreachable_after,
            prune_after: self.prune_after,
        }
    }
}

/// Who this node is. The shell persists `key` and bumps `incarnation` at
/// every start: reusing an incarnation makes peers drop its frames as replays.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Its signing key, random and persisted; the node id derives from it.
    pub key: sign::NodeKey,
    /// Node name, unique in the mesh.
    pub name: Name,
    /// Starts of this node so far, this one included (at least 1).
    pub incarnation: u32,
}

impl Identity {
    /// The node id, derived from the key.
    pub fn id(&self) -> NodeId {
        self.key.id()
    }
}

/// How a datagram arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// On the beacon port, sent to a broadcast address: a LAN neighbor.
    Broadcast,
    /// Sent to our unicast address.
    Unicast,
}

/// Where a datagram goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// Every broadcast address of the node (the shell knows them).
    Broadcast,
    /// One neighbor.
    Unicast(SocketAddr),
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub destination: Destination,
    /// The frame, exactly its bytes. Not a [`wire::Datagram`]: that holds
    /// `MAX_FRAME` bytes inline wherever it is stored, so a queue that once
    /// held a burst of hundreds of small frames kept over a kilobyte per
    /// slot of its capacity for good (0.6 MiB seen in an agent under a
    /// flood).
    pub payload: Box<[u8]>,
    /// A periodic beacon that asks nothing of its receivers: no suspects,
    /// no vouches, not one of a node's first beacons, not brought forward
    /// or given metadata for a newcomer. It tells them that the sender
    /// lives (needed when they judge its silence) and what its store holds
    /// (a change was pushed already; the hash only repairs a lost push),
    /// so it can wait a fraction of a second. Anything else broadcast is
    /// news: a value, a goodbye, a newcomer, a suspicion. The shell
    /// broadcasts the two to different ports, so that a receiver can read
    /// routine beacons in batches without holding news back
    /// (`agent/src/shell/sockets.rs`).
    pub routine: bool,
}

/// Something happened that the shell or the user may care about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// First frame from a node.
    PeerDiscovered {
        /// The node.
        peer: NodeId,
        /// Where it was heard.
        addr: SocketAddr,
    },
    /// A neighbor's health changed.
    PeerStateChanged {
        /// The node.
        peer: NodeId,
        /// Its name, if known.
        name: Option<Name>,
        /// The old state.
        from: PeerState,
        /// The new state.
        to: PeerState,
    },
    /// A neighbor restarted: its old points are replaced by its new ones.
    PeerRestarted {
        /// The node.
        peer: NodeId,
        /// Its new incarnation.
        incarnation: u32,
    },
    /// A point got a new value (ours or anyone's).
    PointChanged {
        /// The node that published it.
        origin: NodeId,
        /// The point's name.
        name: Name,
    },
    /// The route to a node changed: a new next hop or hop count, or none.
    /// (A node beyond one hop also gets `PeerStateChanged` events, from the
    /// heartbeats its route brings; a neighbor's come from direct contact.)
    RouteChanged {
        /// The node.
        node: NodeId,
        /// Next hop and hop count; `None`: no route through others.
        route: Option<(NodeId, u8)>,
    },
    /// A node asked this one to run an executor: the shell runs it (if it
    /// exists and, for another node, is marked remote) and answers with
    /// [`Node::complete_command`].
    CommandRequested {
        /// Who asked, as the command says (this node itself for a local
        /// `exec`). Not proof of anything for a command from the wire.
        origin: NodeId,
        /// The asker's request number.
        id: u32,
        /// The executor's name.
        executor: Name,
        /// Asked by this node itself ([`Node::exec`] with itself as the
        /// target): its own API or rules. A command that arrived from the
        /// wire is never local, whatever its `origin` says, so it runs only
        /// executors marked remote.
        local: bool,
    },
    /// A node asked this one for a page of a point's history: the shell
    /// answers with [`Node::answer_history`] (or never: the asker gives up).
    HistoryRequested(wire::HistoryQuery),
    /// A history query this node sent with [`Node::query_history`] was
    /// answered (or got no answer in time).
    HistoryAnswered {
        /// The query number `query_history` returned.
        id: u32,
        /// The node asked.
        target: NodeId,
        /// How it was answered.
        status: wire::HistoryStatus,
        /// The steps of this page.
        rows: Vec<wire::HistoryRow>,
        /// Where the next page starts, if there is more.
        next_min: Option<u32>,
    },
    /// A command this node sent with [`Node::exec`] ended.
    CommandFinished {
        /// The request number `exec` returned.
        id: u32,
        /// Where it ran.
        target: NodeId,
        /// How it ended.
        outcome: wire::Outcome,
        /// The start of its output.
        output: String,
    },
    /// A rule asks for an executor of this node (edge-triggered: once per
    /// transition of the rule).
    RuleAction {
        /// The rule.
        rule: String,
        /// The executor.
        executor: String,
        /// The rule's new state.
        cause: rules::RuleState,
        /// Its inputs' values (see [`rules::RuleAction::inputs`]).
        inputs: String,
    },
    /// A rule stayed UNKNOWN longer than its grace (reported once per
    /// spell; see [`rules::RuleStuck`], whose `Display` is the log line).
    RuleStuck {
        /// The rule.
        rule: String,
        /// How long it has been UNKNOWN.
        unknown_for: Duration,
        /// Its inputs without a value, and why.
        inputs: Vec<rules::UnknownInput>,
    },
    /// A neighbor UNREACHABLE or LEFT for `prune_after` was forgotten, or
    /// one was evicted from a full peer table for a newcomer.
    PeerPruned {
        /// The node.
        peer: NodeId,
        /// Evicted (then the core logs it, at the 1st, 2nd, 4th, 8th...
        /// eviction: a flood of made-up ids evicts one per frame).
        evicted: bool,
    },
    /// The points of `origin` left the store: it was not live and silent
    /// for `prune_after`, or a full store made room for a newcomer.
    OriginForgotten {
        /// The node whose points went.
        origin: NodeId,
    },
    /// This node used up its frame counter and moved to a new incarnation,
    /// which the shell must persist.
    IncarnationChanged {
        /// The new incarnation.
        incarnation: u32,
    },
    /// This node id used up every incarnation and frame counter: it sends
    /// nothing more (a nonce is never reused), and the shell restarts it
    /// under a new node id.
    CounterExhausted,
    /// This node switched to a new mesh key (a rotation): the shell writes
    /// it to the key file.
    MeshKeyChanged {
        /// The new mesh id.
        mesh_id: u32,
        /// The new key.
        key: MeshKey,
    },
    /// A rotation this node started switched.
    RotationDone {
        /// Its number.
        rotation: u32,
        /// Members that confirmed the new key.
        confirmed: Vec<NodeId>,
        /// Members offered it that did not confirm (they must join again
        /// if they did not get it).
        unconfirmed: Vec<NodeId>,
    },
    /// A new node got the mesh key with a token this node issued.
    Joined {
        /// Its name, as it said.
        name: Name,
        /// Its node id, as it said.
        node: NodeId,
        /// Where it asked from.
        addr: SocketAddr,
    },
    /// More than one live node uses this name (reported once per conflict;
    /// see [`names`]). Addressing it by name is refused until it ends.
    NameConflict {
        /// The name.
        name: Name,
        /// Every live node using it, this one included if so.
        nodes: Vec<NodeId>,
    },
}

/// A reading of one of this node's points.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// The point's name within this node.
    pub name: Name,
    /// The value.
    pub value: Value,
    /// Its unit, possibly empty.
    pub unit: Unit,
    /// Wall-clock time of the reading, ms since the Unix epoch (for people).
    pub ts_ms: u64,
}

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The frame itself was bad.
    Decode(DecodeError),
    /// A counter already seen, or too old for the replay window.
    Replayed,
    /// Our own broadcast, looped back.
    FromSelf,
    /// A new node while the peer table is full of live ones.
    PeerTableFull,
}

/// Counters of everything the node did and refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams handed to the node.
    pub frames_in: u64,
    /// Datagrams queued for sending.
    pub frames_out: u64,
    /// Bytes handed to the node.
    pub bytes_in: u64,
    /// Bytes queued for sending.
    pub bytes_out: u64,
    /// Beacons queued (periodic and early).
    pub beacons_sent: u64,
    /// Digest frames queued.
    pub digests_sent: u64,
    /// Delta frames queued.
    pub deltas_sent: u64,
    /// Dropped datagrams, by reason (the names `DropReason::name` gives).
    pub dropped: BTreeMap<&'static str, u64>,
    /// Point updates or origins refused at a store limit.
    pub store_limit_drops: u64,
    /// Datagrams not queued because the transmit queue was full.
    pub transmits_dropped: u64,
    /// Origins evicted from a full point store for a new one.
    pub store_evictions: u64,
    /// Neighbors evicted from a full peer table for a newcomer.
    pub peer_evictions: u64,
    /// Datagrams not sent to a source address that has not passed an
    /// address check: more than three times what it sent (see
    /// `address_check`).
    pub amplification_cut: u64,
    /// Source addresses that passed an address check.
    pub addresses_checked: u64,
    /// Addresses in peer lists of an open mesh outside this node's
    /// networks: not knocked on.
    pub foreign_addresses_refused: u64,
    /// Chunks of unknown origins that are not live (made up, or a gone
    /// node's leftovers), not taken into the store.
    pub store_not_live: u64,
    /// Origins pruned from the point store (not live, silent for
    /// `prune_after`).
    pub origins_pruned: u64,
    /// Datagrams not sent because this node id used up its counters
    /// (incarnation and frame counter both at `u32::MAX`).
    pub counter_exhausted: u64,
    /// Events not queued because the event queue was full.
    pub events_dropped: u64,
    /// Times a neighbor stayed silent to us for `unreachable_after` while
    /// others vouched it alive: each is a false UNREACHABLE that a detector
    /// counting only its own missed beacons would have declared.
    pub vouch_saves: u64,
    /// Route advertisement frames queued.
    pub routes_sent: u64,
    /// Route entries refused: a counter implausibly far ahead.
    pub routes_implausible: u64,
    /// Route entries refused: the route table is full of live destinations.
    pub routes_table_full: u64,
    /// Commands this node asked for.
    pub commands_sent: u64,
    /// Commands and results relayed for others.
    pub commands_relayed: u64,
    /// Commands and results dropped: seen before (a loop or a duplicate).
    pub commands_duplicate: u64,
    /// Commands and results dropped: hop limit used up.
    pub commands_hop_limit: u64,
    /// Commands refused: too many from one asker.
    pub commands_rate_limited: u64,
    /// Commands and results with no route onwards.
    pub commands_no_route: u64,
    /// Commands from the wire that claimed to come from this node itself
    /// (forged: this node's own commands never come back to it).
    pub commands_forged_origin: u64,
    /// Our commands that got no answer in time.
    pub commands_unanswered: u64,
    /// Our commands sent again because no answer came yet.
    pub commands_retried: u64,
    /// Repeated attempts answered from the cache, without running again.
    pub commands_answered_again: u64,
    /// Commands, results and goodbyes dropped: the signature or the key
    /// does not match the node they speak for (forged or corrupted).
    pub signatures_invalid: u64,
    /// Commands refused: meant for another incarnation of this node, or
    /// from an asker's older incarnation or an unknown asker (captured
    /// before a restart, or from a node we can't answer).
    pub commands_stale: u64,
    /// Commands refused: this request of this asker already ran (a replay).
    pub commands_replayed: u64,
    /// Results refused: not for a pending command of this incarnation, or
    /// not from the node it went to.
    pub results_refused: u64,
    /// History queries this node sent (one per page).
    pub history_queries_sent: u64,
    /// History queries sent again because no page came yet.
    pub history_queries_retried: u64,
    /// Our history queries that got no page in time.
    pub history_queries_unanswered: u64,
    /// History pages this node answered for others.
    pub history_queries_served: u64,
    /// History queries and pages relayed for others.
    pub history_relayed: u64,
    /// History queries refused: too many from one asker.
    pub history_rate_limited: u64,
    /// History queries and pages dropped: seen before, hop limit used up,
    /// no route, or not for a query of ours.
    pub history_dropped: u64,
    /// Goodbyes dropped: of an ended incarnation, of an unknown node, or
    /// of this node.
    pub farewells_stale: u64,
    /// Key offers refused: for another incarnation of this node, from an
    /// unknown initiator, not sealed to this node, or while another
    /// rotation switches.
    pub key_offers_refused: u64,
    /// Join requests by outcome (`joined`, `answered_again`, `expired`,
    /// `used`, `wrong`, `malformed`, `rate_limited`, `open_mesh`).
    pub joins: BTreeMap<&'static str, u64>,
}

impl Stats {
    /// Datagrams dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped.get(reason.name()).copied().unwrap_or(0)
    }
}

impl DropReason {
    /// A stable snake_case name, for metrics labels and logs.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Decode(DecodeError::Truncated) => "truncated",
            DropReason::Decode(DecodeError::TooLarge) => "too_large",
            DropReason::Decode(DecodeError::BadMagic) => "bad_magic",
            DropReason::Decode(DecodeError::UnsupportedVersion(_)) => "unsupported_version",
            DropReason::Decode(DecodeError::WrongMesh) => "wrong_mesh",
            DropReason::Decode(DecodeError::BadTag) => "bad_tag",
            DropReason::Decode(DecodeError::UnknownMessage) => "unknown_message",
            DropReason::Decode(DecodeError::Malformed) => "malformed",
            DropReason::Replayed => "replayed",
            DropReason::FromSelf => "from_self",
            DropReason::PeerTableFull => "peer_table_full",
        }
    }
}

/// Beacons that carry metadata: the first few, then one in this many.
const META_EVERY: u64 = 30;
/// Leave is sent this many times, so one lost datagram does not hide it.
const LEAVE_COPIES: usize = 3;

/// What proves another node's life ended.
#[derive(Debug, Default)]
struct Lives {
    /// Verified goodbyes of known nodes, kept to relay and to prove a
    /// LEFT route or vouch (one per node, dropped with the node).
    farewells: BTreeMap<NodeId, wire::Farewell>,
    /// Incarnations of other nodes remembered from an earlier run (the
    /// shell persists [`Node::incarnations`]): frames of older lives of
    /// theirs, replayed after our restart, are refused.
    floors: BTreeMap<NodeId, u32>,
}

/// A received beacon against the last one taken in from its sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BeaconSeen {
    /// Older than the newest taken in (routine beacons wait in a resting
    /// socket, news does not): a sign of life that says nothing current.
    Older,
    /// Byte for byte the quiet body the sender sent last: nothing new, not
    /// decoded again.
    Repeated,
    /// Anything else: decoded and taken in.
    New,
}

/// When this node's beacons go.
#[derive(Debug)]
struct BeaconSchedule {
    next: Instant,
    last: Option<Instant>,
    /// A newcomer (or a restarted neighbor) should hear our metadata and
    /// public key in the next beacon, not 30 beacons later.
    meta_due: bool,
    /// The next beacon was brought forward for a newcomer: news, not
    /// routine ([`Transmit::routine`]).
    pulled: bool,
}

/// One agent's protocol state.
///
/// Feed it with `handle_datagram`, `handle_timeout` (at `poll_timeout()` or
/// later), `handle_reading` and `handle_leave`. After each call, drain
/// `poll_transmit` until `None` and send those, then `poll_event` until
/// `None`, then ask `poll_timeout` for the next wake-up.
#[derive(Debug)]
pub struct Node {
    config: Config,
    timing: Timing,
    cipher: Option<Cipher>,
    id: NodeId,
    key: sign::NodeKey,
    name: Name,
    counter: Counter,
    rng: Rng,
    peers: PeerTable,
    /// Deadlines, vouch requests, unicast-only neighbors.
    detector: Detector,
    /// Static peers, learned addresses, knocks.
    discovery: Discovery,
    /// Source addresses that echoed a challenge; the answer budget.
    address_check: address_check::AddressCheck,
    store: Store,
    /// Whom to pull missing data from, and when.
    anti_entropy: AntiEntropy,
    /// Routes beyond one hop, and bridging.
    relay: Relay,
    commands: command::Commands,
    queries: queries::Queries,
    automation: automation::Automation,
    /// Conflicting names reported so far.
    names: names::NameWatch,
    /// Goodbyes and incarnation floors: what proves a life ended.
    lives: Lives,
    /// Join tokens this node issued, and the join rate limits.
    tokens: join::Tokens,
    /// Keys besides the current one during a rotation.
    rekey: rotation::Rekey,
    /// Nodes of other meshes or protocol versions heard.
    strangers: strangers::Strangers,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    /// When the next beacon goes, and what it must carry.
    beacon: BeaconSchedule,
    /// When this node started: route counters older than that may have been
    /// routed through our previous incarnation and are refused.
    started: Instant,
    leaving: bool,
    stats: Stats,
}

/// How this node reaches another, for people and for forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reach {
    /// Its state: from direct contact for a neighbor, from the heartbeats
    /// its route brings otherwise.
    pub state: PeerState,
    /// Hops: 0 for this node, 1 for a direct neighbor.
    pub hops: u8,
    /// The next hop, when it is not a direct neighbor.
    pub via: Option<NodeId>,
}

impl Node {
    /// A node starting at `now`. The first beacon goes out within a tenth of
    /// the beacon interval (a random phase, so nodes started together spread).
    pub fn new(
        identity: Identity,
        config: Config,
        seed: u64,
        now: Instant,
    ) -> Result<Node, ConfigError> {
        config.validate()?;
        let id = identity.id();
        let mut rng = Rng::new(seed ^ id.0);
        let phase = rng.range(0, time::duration_ms(config.beacon_interval) / 10 + 1);
        let cookie = cookie_secret(&identity.key, seed);
        let limits = StoreLimits {
            max_origins: config.max_nodes,
            max_points_per_origin: config.max_points_per_node,
            history_per_point: config.history_per_point,
        };
        Ok(Node {
            timing: config.timing(),
            cipher: config.key.as_ref().map(Cipher::new),
            id,
            key: identity.key,
            name: identity.name.clone(),
            counter: Counter {
                incarnation: identity.incarnation,
                seq: 0,
            },
            rng,
            peers: PeerTable::new(config.max_nodes),
            detector: Detector::default(),
            discovery: Discovery::default(),
            address_check: address_check::AddressCheck::new(cookie, 2 * config.max_nodes),
            store: Store::new(id, identity.name, identity.incarnation, limits),
            anti_entropy: AntiEntropy::new(now),
            relay: Relay::new(config.max_nodes),
            commands: command::Commands::default(),
            queries: queries::Queries::default(),
            automation: automation::Automation::default(),
            names: names::NameWatch::default(),
            lives: Lives::default(),
            tokens: join::Tokens::default(),
            rekey: rotation::Rekey::default(),
            strangers: strangers::Strangers::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            beacon: BeaconSchedule {
                next: now + Duration::from_millis(phase),
                last: None,
                meta_due: false,
                pulled: false,
            },
            started: now,
            leaving: false,
            stats: Stats::default(),
            config,
        })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// This node's name.
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// Whether `handle_leave` was called.
    pub fn is_leaving(&self) -> bool {
        self.leaving
    }

    /// This node's current incarnation.
    pub fn incarnation(&self) -> u32 {
        self.counter.incarnation
    }

    /// The neighbors.
    pub fn peers(&self) -> &PeerTable {
        &self.peers
    }

    /// The points of the mesh.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Hash of the store's version vector (equal stores, equal hashes).
    pub fn store_hash(&self) -> u32 {
        self.store.hash()
    }

    /// What the node did and refused.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When `handle_timeout` must be called next; `None` after leaving.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.leaving {
            return None;
        }
        [
            Some(self.beacon.next),
            self.anti_entropy.next_deadline(),
            self.detector.next_deadline(),
            self.relay.next_check,
            self.commands.next_deadline(),
            self.queries.next_deadline(),
            self.automation.next,
            self.rekey.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Time passed: send due beacons, update neighbor states.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.leaving {
            return;
        }
        self.expire(now);
        if self.relay.next_check.is_some_and(|at| now >= at) {
            self.relay.dirty = true;
        }
        self.refresh_routes(now);
        self.expire_commands(now);
        self.expire_queries(now);
        self.expire_rekey(now);
        if now >= self.beacon.next {
            self.send_beacon(now);
            self.prune_origins(now);
        }
        if self
            .anti_entropy
            .next_deadline()
            .is_some_and(|at| now >= at)
        {
            self.pull(now);
        }
        self.run_rules(now);
        self.check_names_now_and_then(now);
    }

    /// Publishes a reading of this node and pushes it to the neighbors.
    pub fn handle_reading(&mut self, now: Instant, reading: Reading) -> Result<(), PublishError> {
        self.restore_reading(now, reading, Duration::ZERO)
    }

    /// Publishes a reading made `age` before `now` (a value saved by the
    /// previous run): it counts as that old everywhere.
    pub fn restore_reading(
        &mut self,
        now: Instant,
        reading: Reading,
        age: Duration,
    ) -> Result<(), PublishError> {
        self.expire(now);
        let result = self.publish_reading(now, reading, time::duration_ms(age));
        self.run_rules(now);
        result
    }

    fn publish_reading(
        &mut self,
        now: Instant,
        reading: Reading,
        age_ms: u64,
    ) -> Result<(), PublishError> {
        let seq = self.store.publish(
            reading.name.clone(),
            reading.value,
            reading.unit,
            reading.ts_ms,
            (now, age_ms),
        )?;
        self.push_event(Event::PointChanged {
            origin: self.id,
            name: reading.name,
        });
        let ranges = [Range {
            origin: self.id,
            after: seq - 1,
            upto: seq,
        }];
        for delta in self.store.deltas(&ranges, now) {
            self.send_everywhere(&Message::Delta(delta), None);
        }
        self.refresh_routes(now);
        Ok(())
    }

    /// Graceful shutdown: says goodbye (three copies) and goes quiet.
    pub fn handle_leave(&mut self, now: Instant) {
        if self.leaving {
            return;
        }
        self.expire(now);
        let mut farewell = wire::Farewell {
            node: self.id,
            incarnation: self.counter.incarnation,
            key: self.key.public(),
            signature: wire::Signature([0; sign::SIGNATURE_LEN]),
        };
        farewell.signature = self.key.sign(&sign::farewell_payload(&farewell));
        let message = Message::Leave(farewell);
        for _ in 0..LEAVE_COPIES {
            self.send_everywhere(&message, None);
        }
        self.leaving = true;
    }

    /// A datagram arrived from `from`. What is sent back to `from` while
    /// handling it is limited until `from` passed an address check
    /// (`address_check`).
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        arrival: Arrival,
        frame: &[u8],
    ) {
        self.address_check.begin(now, from, frame.len());
        self.receive(now, from, arrival, frame);
        if let Some((to, cookie)) = self.address_check.end(now) {
            self.send(Destination::Unicast(to), &Message::Cookie(cookie));
        }
    }

    fn receive(&mut self, now: Instant, from: SocketAddr, arrival: Arrival, frame: &[u8]) {
        self.stats.frames_in += 1;
        self.stats.bytes_in += frame.len() as u64;
        if self.leaving {
            return;
        }
        if join::is_join(frame) {
            return self.on_join(now, from, frame);
        }
        // The current mesh, or the next or old key of a rotation.
        let other = wire::peek(frame)
            .filter(|peek| peek.mesh_id != self.config.mesh_id)
            .and_then(|peek| {
                self.rekey
                    .cipher_of(peek.mesh_id)
                    .map(|c| (peek.mesh_id, c.clone()))
            });
        let (mesh_id, cipher) = match &other {
            Some((mesh_id, cipher)) => (*mesh_id, Some(cipher)),
            None => (self.config.mesh_id, self.cipher.as_ref()),
        };
        let header = match Header::parse(frame, mesh_id) {
            Ok(header) => header,
            Err(error) => {
                if matches!(
                    error,
                    DecodeError::WrongMesh | DecodeError::UnsupportedVersion(_)
                ) {
                    self.note_stranger(now, from, frame);
                }
                return self.drop_frame(DropReason::Decode(error), from);
            }
        };
        if header.sender == self.id {
            return self.drop_frame(DropReason::FromSelf, from);
        }
        match self.peers.get(header.sender) {
            Some(peer) if !peer.window.is_fresh(header.counter.as_u64()) => {
                return self.drop_frame(DropReason::Replayed, from);
            }
            None if self
                .lives
                .floors
                .get(&header.sender)
                .is_some_and(|&floor| header.counter.incarnation < floor) =>
            {
                // An older life of a node we knew before our restart.
                return self.drop_frame(DropReason::Replayed, from);
            }
            _ => {}
        }
        let mut buf = [0u8; wire::MAX_FRAME];
        let (kind, encoded) = match wire::open(&header, frame, cipher, &mut buf) {
            Ok(opened) => opened,
            Err(error) => return self.drop_frame(DropReason::Decode(error), from),
        };
        // Decode only the kind this frame holds: the largest (a delta) is
        // several KB of fixed-capacity lists, too much to move for a beacon.
        let sender = header.sender;
        let seen = (kind == wire::kind::BEACON)
            .then(|| self.beacon_seen(sender, header.counter.as_u64(), encoded));
        let result = match kind {
            wire::kind::BEACON if seen == Some(BeaconSeen::Older) => {
                // Alive, but its contents were overtaken by a newer beacon.
                if self.accept_frame(now, &header, from, arrival) {
                    if let Some(peer) = self.peers.get_mut(sender) {
                        peer.beacons_in += 1;
                    }
                }
                Ok(())
            }
            wire::kind::BEACON if seen == Some(BeaconSeen::Repeated) => {
                if self.accept_frame(now, &header, from, arrival) {
                    self.on_same_beacon(now, sender, from, header.counter.as_u64());
                }
                Ok(())
            }
            wire::kind::BEACON => wire::decode_part::<Beacon>(encoded).map(|beacon| {
                if self.accept_frame(now, &header, from, arrival) {
                    let quiet = beacon.is_quiet();
                    self.on_beacon(now, sender, from, beacon);
                    if let Some(peer) = self.peers.get_mut(sender) {
                        peer.beacon_counter = header.counter.as_u64();
                        peer.quiet_beacon.clear();
                        if quiet {
                            // Too long to remember: decoded every time.
                            let _ = peer.quiet_beacon.extend_from_slice(encoded);
                        }
                    }
                }
            }),
            wire::kind::DIGEST => wire::decode_part::<Digest>(encoded).map(|digest| {
                if self.accept_frame(now, &header, from, arrival) {
                    self.on_digest(now, from, &digest);
                }
            }),
            wire::kind::DELTA => wire::decode_part::<Delta>(encoded).map(|delta| {
                if self.accept_frame(now, &header, from, arrival) {
                    self.on_delta(now, sender, &delta);
                }
            }),
            wire::kind::PEERS => wire::decode_part::<wire::PeerList>(encoded).map(|list| {
                if self.accept_frame(now, &header, from, arrival) {
                    self.on_peers(now, &list);
                }
            }),
            wire::kind::ROUTES => wire::decode_part::<wire::RouteList>(encoded).map(|list| {
                if self.accept_frame(now, &header, from, arrival) {
                    self.on_routes(now, sender, list);
                }
            }),
            wire::kind::COMMAND => wire::decode_part::<wire::Command>(encoded).map(|command| {
                if self.accept_frame(now, &header, from, arrival) {
                    self.refresh_routes(now);
                    self.on_command(now, command);
                }
            }),
            wire::kind::COMMAND_RESULT => {
                wire::decode_part::<wire::CommandResult>(encoded).map(|result| {
                    if self.accept_frame(now, &header, from, arrival) {
                        self.refresh_routes(now);
                        self.on_command_result(now, result);
                    }
                })
            }
            wire::kind::HISTORY_QUERY => {
                wire::decode_part::<wire::HistoryQuery>(encoded).map(|query| {
                    if self.accept_frame(now, &header, from, arrival) {
                        self.refresh_routes(now);
                        self.on_history_query(now, sender, query);
                    }
                })
            }
            wire::kind::HISTORY_PAGE => {
                wire::decode_part::<wire::HistoryPage>(encoded).map(|page| {
                    if self.accept_frame(now, &header, from, arrival) {
                        self.refresh_routes(now);
                        self.on_history_page(now, page);
                    }
                })
            }
            // Key messages count only under the current key: one left out
            // of a rotation holds the old key until it is dropped.
            wire::kind::KEY_OFFER | wire::kind::KEY_CONFIRM if other.is_some() => {
                self.stats.key_offers_refused += 1;
                Ok(())
            }
            wire::kind::KEY_OFFER => wire::decode_part::<wire::KeyOffer>(encoded).map(|offer| {
                if self.accept_frame(now, &header, from, arrival) {
                    self.refresh_routes(now);
                    self.on_key_offer(now, offer);
                }
            }),
            wire::kind::KEY_CONFIRM => {
                wire::decode_part::<wire::KeyConfirm>(encoded).map(|confirm| {
                    if self.accept_frame(now, &header, from, arrival) {
                        self.refresh_routes(now);
                        self.on_key_confirm(now, confirm);
                    }
                })
            }
            // An address check is not membership: from a sender not known
            // yet (our challenge can arrive before our beacon) it is
            // answered without making it a neighbor, whose first frame
            // should be the beacon that names it.
            wire::kind::COOKIE => wire::decode_part::<wire::Cookie>(encoded).map(|cookie| {
                if self.peers.get(sender).is_none()
                    || self.accept_frame(now, &header, from, arrival)
                {
                    self.on_cookie(now, from, cookie);
                }
            }),
            _ => wire::decode_part::<wire::Farewell>(encoded).map(|farewell| {
                if self.accept_frame(now, &header, from, arrival) {
                    self.on_farewell(now, sender, farewell);
                }
            }),
        };
        if let Err(error) = result {
            self.drop_frame(DropReason::Decode(error), from);
        }
        self.refresh_routes(now);
        self.run_rules(now);
        self.check_names_now_and_then(now);
    }

    /// Bookkeeping for an authenticated, fresh, valid frame: its sender is a
    /// neighbor, alive now. False if the table is full of live neighbors.
    fn accept_frame(
        &mut self,
        now: Instant,
        header: &Header,
        from: SocketAddr,
        arrival: Arrival,
    ) -> bool {
        let sender = header.sender;
        let counter = header.counter;
        let old_addr = self.peers.get(sender).map(|p| p.addr);
        let known = old_addr.is_some();
        let check = &self.address_check;
        let checked = move |addr: SocketAddr| check.is_checked(addr, now);
        // Keyed meshes need no such policy: only members get in.
        let open = self
            .cipher
            .is_none()
            .then_some(&checked as &dyn Fn(SocketAddr) -> bool);
        match self.peers.insert(now, sender, from, counter, open) {
            Err(_) => {
                self.drop_frame(DropReason::PeerTableFull, from);
                self.relay.refused_at = Some(now);
                // At the 1st, 2nd, 4th, 8th... refusal: a LAN larger than
                // the table is a setting to change, said in a few lines.
                let refused = self.stats.dropped(DropReason::PeerTableFull);
                if refused.is_power_of_two() {
                    log::warn!(
                        "the peer table is full ({} live neighbors): node {sender} at {from} \
                         was not added ({refused} so far); if the LAN is this large, raise \
                         limits.max_nodes",
                        self.config.max_nodes
                    );
                }
                return false;
            }
            Ok(Some(evicted)) => {
                self.stats.peer_evictions += 1;
                let count = self.stats.peer_evictions;
                if count.is_power_of_two() {
                    log::info!(
                        "forgot node {evicted} to make room for {sender}: the peer table is \
                         full ({count} evictions so far)"
                    );
                }
                self.forget(evicted, true);
            }
            Ok(None) => {}
        }
        let mut restarted = false;
        self.update_peer(now, sender, |peer| {
            peer.window.accept(counter.as_u64());
            peer.addr = from;
            peer.frames_in += 1;
            peer.last_direct = now;
            if arrival == Arrival::Broadcast {
                peer.last_broadcast = Some(now);
            }
            restarted = known && counter.incarnation > peer.incarnation;
            if restarted {
                peer.incarnation = counter.incarnation;
                peer.first_heard = now;
                peer.beacons_in = 0;
                peer.quiet_beacon.clear();
            }
            peer.observe(counter, now);
        });
        let peer = self.peers.get(sender);
        let peer_name = peer.and_then(|p| p.name.clone());
        let lan = peer.is_some_and(|p| p.is_lan());
        self.detector.set_lan(sender, lan);
        // Another live node at this very address: real nodes each have
        // their own, so these are most likely ids made up behind one socket
        // (a flood of forged beacons in an open mesh). They get no early
        // beacon and no challenge, which cost every node of the LAN a
        // beacon with metadata and a hash per forged frame. Only a HEALTHY
        // or SUSPECT holder counts: one forged beacon cannot hold this back
        // from the real node at that address for long, nor can a crashed
        // node's old id from its new one. (Either waits at most an
        // interval for our next beacon, and is challenged at its first
        // pull: `AddressCheck::end`.)
        let shared = (!known || old_addr != Some(from))
            && self.peers.iter().any(|p| {
                p.id != sender
                    && p.addr == from
                    && matches!(p.state, PeerState::Healthy | PeerState::Suspect)
            });
        if (!known || restarted) && !shared {
            // A newcomer (or a node back from a restart) that started after
            // our last beacon would otherwise wait up to a whole interval to
            // hear of us: beacon early (at most four per interval, so a
            // crowd joining at once costs a few beacons, not one each).
            self.pull_beacon(now);
            self.beacon.meta_due = true;
        }
        if (old_addr != Some(from) || restarted)
            && !shared
            && !self.address_check.is_checked(from, now)
        {
            // Checked before its first pull, which is then answered in full
            // (within a budget; beyond it, at that first pull).
            if let Some(cookie) = self.address_check.challenge_newcomer(now, from) {
                self.send(Destination::Unicast(from), &Message::Cookie(cookie));
            }
        }
        if !known {
            self.push_event(Event::PeerDiscovered {
                peer: sender,
                addr: from,
            });
            if arrival == Arrival::Unicast {
                // Beyond our LAN: tell it whom we know.
                self.send_peer_list(from, sender);
            }
        }
        if restarted {
            // Its routes came from its previous life.
            self.relay.routes.remove_via(sender);
            self.relay.dirty = true;
            if let Some(name) = &peer_name {
                self.store
                    .observe_incarnation(sender, name, counter.incarnation);
            }
            self.push_event(Event::PeerRestarted {
                peer: sender,
                incarnation: counter.incarnation,
            });
        }
        true
    }

    fn drop_frame(&mut self, reason: DropReason, from: SocketAddr) {
        log::debug!("dropped a frame from {from}: {reason:?}");
        *self.stats.dropped.entry(reason.name()).or_insert(0) += 1;
    }

    fn on_beacon(&mut self, now: Instant, sender: NodeId, from: SocketAddr, beacon: Beacon) {
        if let Some(peer) = self.peers.get_mut(sender) {
            if peer.name.as_ref() != Some(&beacon.name) {
                self.names.dirty = true;
                let name = beacon.name.clone();
                peer.name = Some(name.clone());
                self.store
                    .observe_incarnation(sender, &name, peer.incarnation);
            }
            if let Some(mut meta) = beacon.meta {
                // A key that is not the sender's is no key of it.
                if meta.key.is_some_and(|key| sign::node_id(&key) != sender) {
                    meta.key = None;
                }
                peer.meta = Some(meta);
            }
            peer.store_hash = beacon.store_hash;
            peer.progress = beacon.progress;
            peer.heard = beacon.heard;
            if peer.view != beacon.view {
                peer.view = beacon.view;
                peer.view_since = now;
            }
            peer.beacons_in += 1;
        }
        self.after_beacon(now, sender, from, beacon.store_hash, beacon.progress);
        for suspect in &beacon.suspects {
            if suspect.node == self.id {
                // We are alive: say so now rather than at the next beacon.
                self.pull_beacon(now);
            } else if self.peers.get(suspect.node).is_some() {
                self.detector.asked(now, suspect, self.config.max_nodes);
            }
        }
        for vouch in &beacon.vouches {
            self.apply_vouch(now, vouch);
        }
    }

    /// What a beacon of `sender` with `counter` and body `encoded` is to
    /// what we took in from it last (one look into the peer table).
    fn beacon_seen(&self, sender: NodeId, counter: u64, encoded: &[u8]) -> BeaconSeen {
        match self.peers.get(sender) {
            Some(peer) if counter < peer.beacon_counter => BeaconSeen::Older,
            Some(peer) if !peer.quiet_beacon.is_empty() && peer.quiet_beacon == encoded => {
                BeaconSeen::Repeated
            }
            _ => BeaconSeen::New,
        }
    }

    /// A beacon equal to the sender's last, quiet one: what `on_beacon`
    /// would do with it, without decoding it again. Its fields are the
    /// peer's already; only the count and anti-entropy look again.
    fn on_same_beacon(&mut self, now: Instant, sender: NodeId, from: SocketAddr, counter: u64) {
        let Some(peer) = self.peers.get_mut(sender) else {
            return;
        };
        peer.beacons_in += 1;
        peer.beacon_counter = counter;
        let (store_hash, progress) = (peer.store_hash, peer.progress);
        self.after_beacon(now, sender, from, store_hash, progress);
    }

    /// Anti-entropy after a beacon: the side that knows less (or as much)
    /// asks, at most once per interval, the neighbor that knows the most.
    fn after_beacon(
        &mut self,
        now: Instant,
        sender: NodeId,
        from: SocketAddr,
        store_hash: u32,
        progress: u64,
    ) {
        if store_hash != self.store.hash() && self.store.progress() <= progress {
            self.anti_entropy.consider(sender, from, progress);
            if self.anti_entropy.may_pull(now) {
                self.pull(now);
            }
        }
    }

    fn apply_vouch(&mut self, now: Instant, vouch: &wire::Vouch) {
        let node = vouch.liveness.node;
        let counter = vouch.liveness.counter;
        if node == self.id {
            return;
        }
        self.detector.heard_vouch(node, counter);
        let heard_at = now - Duration::from_millis(u64::from(vouch.age_ms));
        if vouch.left {
            // Unsigned: only the goodbye that comes with it counts.
            return;
        }
        self.update_peer(now, node, |peer| peer.observe(counter, heard_at));
    }

    /// A signed goodbye, from the leaver itself or relayed (`sender`).
    fn on_farewell(&mut self, now: Instant, sender: NodeId, farewell: wire::Farewell) {
        let node = farewell.node;
        if self.lives.farewells.get(&node) == Some(&farewell) {
            // Known already: no verification, no relay.
            return;
        }
        let payload = sign::farewell_payload(&farewell);
        if !sign::verify(node, &farewell.key, &payload, &farewell.signature) {
            self.stats.signatures_invalid += 1;
            log::debug!("dropped a goodbye for {node} from {sender}: bad signature");
            return;
        }
        // Ours (a replay), of a node we don't know (nothing to end), or of
        // an incarnation already over: bytes captured before a restart.
        let known = self.known_incarnation(node);
        if node == self.id || known.is_none_or(|known| farewell.incarnation < known) {
            self.stats.farewells_stale += 1;
            log::debug!("dropped a stale goodbye for {node} from {sender}");
            return;
        }
        if self
            .lives
            .farewells
            .get(&node)
            .is_some_and(|old| old.incarnation >= farewell.incarnation)
        {
            return;
        }
        let ended = Counter {
            incarnation: farewell.incarnation,
            seq: u32::MAX,
        };
        if self.peers.get(node).is_some() {
            self.update_peer(now, node, |peer| {
                if peer.left.is_none_or(|left| left < ended) {
                    peer.left = Some(ended);
                }
            });
        }
        self.relay.routes.mark_left(node, farewell.incarnation);
        self.relay.dirty = true;
        if !self.lives.farewells.contains_key(&node)
            && self.lives.farewells.len() >= self.config.max_nodes
        {
            // Bounded: goodbyes of nodes no longer known make room.
            let gone: Vec<NodeId> = self
                .lives
                .farewells
                .keys()
                .copied()
                .filter(|&id| self.peers.get(id).is_none() && self.relay.routes.get(id).is_none())
                .collect();
            for id in gone {
                self.lives.farewells.remove(&id);
            }
        }
        if self.lives.farewells.contains_key(&node)
            || self.lives.farewells.len() < self.config.max_nodes
        {
            self.lives.farewells.insert(node, farewell.clone());
        }
        // Beyond the sender's broadcast, as a delta is relayed.
        let sender_on_lan = self.peers.get(sender).is_some_and(|peer| peer.is_lan());
        let nobody_else = sender_on_lan
            && !self.relay.bridging
            && self.unicast_targets(false, Some(sender)).is_empty();
        if !nobody_else {
            self.send_everywhere(&Message::Leave(farewell), Some(sender));
        }
    }

    /// Issues a join token for `secret` (random, from the shell), valid for
    /// `valid_for` and one joiner.
    pub fn issue_token(
        &mut self,
        now: Instant,
        secret: join::Secret,
        valid_for: Duration,
    ) -> Result<(), join::IssueError> {
        if self.config.key.is_none() {
            return Err(join::IssueError::OpenMesh);
        }
        self.tokens.issue(now, secret, valid_for)
    }

    /// Join tokens issued and neither used nor expired.
    pub fn outstanding_tokens(&self, now: Instant) -> usize {
        self.tokens.outstanding(now)
    }

    /// Switches to another mesh: its id and key (a node that joined with a
    /// token). Neighbors of the old mesh fall silent and are forgotten in
    /// time; those of the new one are heard at once.
    pub fn set_mesh(&mut self, mesh_id: u32, key: MeshKey) {
        self.rekey.clear();
        self.cipher = Some(Cipher::new(&key));
        self.config.mesh_id = mesh_id;
        self.config.key = Some(key);
        self.pull_beacon(self.beacon.last.unwrap_or(self.started));
    }

    /// A join request (or stray join datagram) from `from`.
    fn on_join(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let Some(key) = self.config.key.clone() else {
            *self.stats.joins.entry("open_mesh").or_insert(0) += 1;
            return;
        };
        let (reply, outcome) = self.tokens.handle(now, from.ip(), datagram, &key);
        let counter = match &outcome {
            join::Outcome::Joined { .. } => "joined",
            join::Outcome::AnsweredAgain => "answered_again",
            join::Outcome::Expired => "expired",
            join::Outcome::Used => "used",
            join::Outcome::Wrong => "wrong",
            join::Outcome::Malformed => "malformed",
            join::Outcome::RateLimited => "rate_limited",
        };
        *self.stats.joins.entry(counter).or_insert(0) += 1;
        // A join reply (at most `join::ANSWER_LEN` bytes) fits in a frame.
        const _: () = assert!(join::ANSWER_LEN <= wire::MAX_FRAME);
        if let Some(reply) = reply {
            if self.room_to_send() {
                self.queue(Destination::Unicast(from), &reply, false);
            }
        }
        match outcome {
            join::Outcome::Joined { name, node } => self.push_event(Event::Joined {
                name,
                node,
                addr: from,
            }),
            other => log::debug!("join request from {from}: {other:?}"),
        }
    }

    /// The public key of `node`, if a beacon or an advertisement carried it
    /// (checked against its id).
    pub fn public_key_of(&self, node: NodeId) -> Option<wire::PublicKey> {
        if node == self.id {
            return Some(self.key.public());
        }
        self.peers
            .get(node)
            .and_then(|peer| peer.meta.as_ref()?.key)
            .or_else(|| self.relay.routes.get(node)?.key)
    }

    /// The incarnation of `node` we know: from its frames, or its routes
    /// (at least the one remembered from our previous run).
    pub(crate) fn known_incarnation(&self, node: NodeId) -> Option<u32> {
        if node == self.id {
            return Some(self.counter.incarnation);
        }
        let heard = match self.peers.get(node) {
            // Its own frames, or a vouch's newer counter (a neighbor heard
            // only through others after a restart).
            Some(peer) => Some(peer.incarnation.max(peer.alive.incarnation)),
            None => self
                .relay
                .routes
                .get(node)
                .and_then(|dest| dest.newest)
                .map(|(counter, _)| counter.incarnation),
        };
        match (heard, self.lives.floors.get(&node)) {
            (Some(heard), Some(&floor)) => Some(heard.max(floor)),
            (heard, _) => heard,
        }
    }

    /// Remembers, from an earlier run, that `node` was in its incarnation
    /// `incarnation`: frames of its older lives are refused from now on
    /// (captured before our restart, replayed after it). At most
    /// `max_nodes` are kept.
    pub fn remember_incarnation(&mut self, node: NodeId, incarnation: u32) {
        if node == self.id {
            return;
        }
        if self.lives.floors.len() < self.config.max_nodes || self.lives.floors.contains_key(&node)
        {
            let floor = self.lives.floors.entry(node).or_insert(incarnation);
            *floor = (*floor).max(incarnation);
        }
    }

    /// The newest incarnation known of every other node, to persist for
    /// [`Node::remember_incarnation`] at the next start.
    pub fn incarnations(&self) -> BTreeMap<NodeId, u32> {
        let mut known = self.lives.floors.clone();
        let heard = self
            .peers
            .iter()
            .map(|peer| (peer.id, peer.incarnation))
            .chain(
                self.relay
                    .routes
                    .iter()
                    .filter_map(|(id, dest)| dest.newest.map(|(c, _)| (*id, c.incarnation))),
            );
        for (id, incarnation) in heard {
            let entry = known.entry(id).or_insert(incarnation);
            *entry = (*entry).max(incarnation);
        }
        known
    }

    /// Sends to the LAN by broadcast and to every non-LAN neighbor by unicast
    /// (beacons even to unreachable ones, so they can come back; data only to
    /// live ones). With `relayed_from`, the LAN is skipped when the sender is
    /// on it (it reached the LAN itself), and the sender gets nothing back.
    fn send_everywhere(&mut self, message: &Message, relayed_from: Option<NodeId>) {
        self.send_everywhere_as(message, relayed_from, false);
    }

    /// [`Node::send_everywhere`], the broadcast marked routine or not
    /// ([`Transmit::routine`]; unicasts never are).
    fn send_everywhere_as(
        &mut self,
        message: &Message,
        relayed_from: Option<NodeId>,
        routine: bool,
    ) {
        let sender_on_lan = !self.relay.bridging
            && relayed_from
                .and_then(|id| self.peers.get(id))
                .is_some_and(|peer| peer.is_lan());
        if !sender_on_lan {
            self.send_as(Destination::Broadcast, message, routine);
        }
        let is_beacon = matches!(message, Message::Beacon(_));
        let unicast = self.unicast_targets(is_beacon, relayed_from);
        for addr in unicast {
            self.send(Destination::Unicast(addr), message);
        }
    }

    /// The unicast-only neighbors a message goes to: beacons even to
    /// unreachable ones (so they can come back), data only to live ones.
    fn unicast_targets(&self, is_beacon: bool, except: Option<NodeId>) -> Vec<SocketAddr> {
        self.detector
            .unicast_only()
            .filter(|&id| Some(id) != except)
            .filter_map(|id| self.peers.get(id))
            .filter(|peer| match peer.state {
                PeerState::Left => false,
                PeerState::Unreachable => is_beacon,
                PeerState::Healthy | PeerState::Suspect => true,
            })
            .map(|peer| peer.addr)
            .collect()
    }

    fn send_beacon(&mut self, now: Instant) {
        // The most urgent first: the suspects closest to UNREACHABLE.
        let mut suspected: Vec<&peers::Peer> = self
            .peers
            .iter()
            .filter(|p| p.state == PeerState::Suspect)
            .collect();
        shoal_config::order::sort_by_key(&mut suspected, |p| (p.last_alive, p.id));
        let suspects: heapless::Vec<Liveness, MAX_GOSSIP> = suspected
            .iter()
            .take(MAX_GOSSIP)
            .map(|peer| Liveness {
                node: peer.id,
                counter: peer.alive,
            })
            .collect();
        let vouches =
            self.detector
                .collect_vouches(&self.peers, now, self.config.beacon_interval * 2);
        // Facts for people and this node's public key (so others can seal
        // a rotated mesh key to it), in the first beacons and now and then.
        let first = self.stats.beacons_sent < 3;
        let periodic = !first && self.stats.beacons_sent.is_multiple_of(META_EVERY);
        let meta = if first || periodic || std::mem::take(&mut self.beacon.meta_due) {
            let mut meta = self.config.meta.clone().unwrap_or_default();
            meta.key = Some(self.key.public());
            Some(meta)
        } else {
            None
        };
        let (heard, view) = self.view(now);
        let beacon = Beacon {
            name: self.name.clone(),
            store_hash: self.store.hash(),
            progress: self.store.progress(),
            suspects,
            vouches,
            meta,
            heard,
            view,
        };
        self.stats.beacons_sent += 1;
        if self.stats.beacons_sent.is_multiple_of(names::CHECK_EVERY) {
            // Now and then anyway: a name learned only through a route
            // advertisement changes no membership.
            self.names.dirty = true;
        }
        // A vouch that a node left proves nothing by itself: its signed
        // goodbye goes along, for whoever missed it.
        let farewells: Vec<wire::Farewell> = beacon
            .vouches
            .iter()
            .filter(|vouch| vouch.left)
            .filter_map(|vouch| self.lives.farewells.get(&vouch.liveness.node).cloned())
            .collect();
        // Routine: not a first beacon, no suspects, no vouches, metadata
        // only when it is its turn (not asked for by a newcomer), and not
        // brought forward.
        let pulled = std::mem::take(&mut self.beacon.pulled);
        let routine = !first
            && !pulled
            && beacon.suspects.is_empty()
            && beacon.vouches.is_empty()
            && (beacon.meta.is_none() || periodic);
        let message = Message::Beacon(beacon);
        self.send_everywhere_as(&message, None, routine);
        for farewell in farewells {
            self.send_everywhere(&Message::Leave(farewell), None);
        }
        self.relay.bridging = self.is_bridge(now, heard, view);
        if self.relay.bridging {
            self.send_routes(now);
        }
        self.knock_and_exchange(now, &message);
        self.beacon.last = Some(now);
        // 85-95 % of the interval: one lost beacon never reaches suspect_after.
        let interval = time::duration_ms(self.config.beacon_interval);
        let next = self.rng.range(interval * 85 / 100, interval * 95 / 100 + 1);
        self.beacon.next = now + Duration::from_millis(next);
    }

    /// Sends the next beacon as soon as allowed (at most four per interval).
    fn pull_beacon(&mut self, now: Instant) {
        let earliest = self
            .beacon
            .last
            .map_or(now, |at| at + self.config.beacon_interval / 4)
            .max(now);
        self.beacon.next = self.beacon.next.min(earliest);
        self.beacon.pulled = true;
    }

    /// Changes one neighbor, then acts on what the failure detector found:
    /// routes, events, logs, and forgetting it when it is prunable. Every
    /// change of a neighbor's liveness goes through here.
    fn update_peer(&mut self, now: Instant, id: NodeId, change: impl FnOnce(&mut peers::Peer)) {
        let Some(verdict) = self
            .detector
            .update(&mut self.peers, &self.timing, now, id, change)
        else {
            return;
        };
        let Verdict {
            transition,
            directness_changed,
            saved_by_vouch,
            prunable,
        } = verdict;
        if directness_changed {
            self.relay.dirty = true;
        }
        if let Some((_, _, to)) = transition {
            self.relay.dirty = true;
            if matches!(to, PeerState::Unreachable | PeerState::Left) {
                // Withdrawal: nothing goes through a neighbor we lost.
                self.relay.routes.remove_via(id);
            }
        }
        if saved_by_vouch {
            self.stats.vouch_saves += 1;
        }
        if let Some((name, from, to)) = transition {
            let label = name
                .as_ref()
                .map_or_else(|| id.to_string(), |n| n.to_string());
            // SUSPECT comes and goes under loss; only the verdicts are news.
            let level = match (from, to) {
                (PeerState::Healthy, PeerState::Suspect)
                | (PeerState::Suspect, PeerState::Healthy) => log::Level::Debug,
                _ => log::Level::Info,
            };
            log::log!(level, "node {label}: {from} -> {to}");
            if to == PeerState::Suspect {
                // Ask the others at once: their vouches must beat unreachable_after.
                self.pull_beacon(now);
            }
            self.push_event(Event::PeerStateChanged {
                peer: id,
                name,
                from,
                to,
            });
        }
        if prunable {
            self.forget(id, false);
        }
    }

    /// Forgets neighbor `id` entirely, whether pruned (UNREACHABLE or LEFT
    /// for `prune_after`) or evicted from a full table (then it is gone from
    /// the table already): no deadline, question, route or mark of it stays.
    fn forget(&mut self, id: NodeId, evicted: bool) {
        self.peers.remove(id);
        self.lives.farewells.remove(&id);
        self.commands.forget(id);
        self.queries.forget(id);
        self.detector.forget(id);
        self.relay.routes.remove_via(id);
        self.push_event(Event::PeerPruned { peer: id, evicted });
    }

    /// A challenge is echoed to its source; an echo of ours checks `from`.
    fn on_cookie(&mut self, now: Instant, from: SocketAddr, cookie: wire::Cookie) {
        if cookie.echo {
            if self.address_check.on_echo(now, from, cookie.value) {
                self.stats.addresses_checked += 1;
            }
        } else {
            let echo = wire::Cookie {
                value: cookie.value,
                echo: true,
            };
            self.send(Destination::Unicast(from), &Message::Cookie(echo));
        }
    }

    /// Removes the points of origins gone for `prune_after` (once per
    /// beacon interval).
    fn prune_origins(&mut self, now: Instant) {
        let (peers, routes) = (&self.peers, &self.relay.routes);
        let live = |id| anti_entropy::is_live(peers, routes, id);
        let pruned = self.store.prune(now, self.config.prune_after, live);
        self.stats.origins_pruned += pruned.len() as u64;
        for origin in pruned {
            self.push_event(Event::OriginForgotten { origin });
        }
    }

    /// Applies every neighbor deadline that has passed.
    fn expire(&mut self, now: Instant) {
        // Each neighbor passes at most three deadlines (naive silence, SUSPECT,
        // UNREACHABLE); the budget only guards against a bookkeeping bug.
        let mut budget = 3 * self.peers.len() + 3;
        while let Some(entry) = self.detector.first_due(now) {
            if budget == 0 {
                break;
            }
            budget -= 1;
            let before = self.detector.deadline_count();
            self.update_peer(now, entry.1, |_| {});
            if self.detector.is_unmoved(entry, before) {
                // Not moved: drop the stale entry rather than spin.
                self.detector.discard(entry);
            }
        }
    }

    fn push_event(&mut self, event: Event) {
        if matches!(
            event,
            Event::PointChanged { .. }
                | Event::PeerStateChanged { .. }
                | Event::RouteChanged { .. }
        ) {
            // Rules read points and their origins' liveness.
            self.automation.dirty = true;
        }
        if matches!(
            event,
            Event::PeerDiscovered { .. }
                | Event::PeerStateChanged { .. }
                | Event::PeerRestarted { .. }
                | Event::RouteChanged { .. }
        ) {
            // Who is alive, and so which names conflict.
            self.names.dirty = true;
        }
        if self.events.len() >= self.config.max_pending_events {
            self.stats.events_dropped += 1;
            return;
        }
        self.events.push_back(event);
    }

    /// The counter of the next frame; `None` once every (incarnation,
    /// counter) pair of this node id is used: then nothing more is sent.
    fn next_counter(&mut self) -> Option<Counter> {
        if self.counter.seq == u32::MAX {
            if self.counter.incarnation == u32::MAX {
                // Never reuse a nonce: the shell restarts under a new id.
                if self.stats.counter_exhausted == 0 {
                    self.push_event(Event::CounterExhausted);
                }
                self.stats.counter_exhausted += 1;
                return None;
            }
            // 4 billion frames in one incarnation: move on rather than reuse a nonce.
            self.counter.incarnation += 1;
            self.counter.seq = 0;
            self.store.reincarnate(self.counter.incarnation);
            self.push_event(Event::IncarnationChanged {
                incarnation: self.counter.incarnation,
            });
        }
        self.counter.seq += 1;
        Some(self.counter)
    }

    fn send(&mut self, destination: Destination, message: &Message) {
        self.send_as(destination, message, false);
    }

    /// [`Node::send`], marked routine or not ([`Transmit::routine`]).
    fn send_as(&mut self, destination: Destination, message: &Message, routine: bool) {
        if !self.room_to_send() {
            return;
        }
        let Some(counter) = self.next_counter() else {
            return;
        };
        let header = Header {
            mesh_id: self.config.mesh_id,
            sender: self.id,
            counter,
        };
        let payload = match wire::encode(&header, message, self.cipher.as_ref()) {
            Ok(payload) => payload,
            Err(error) => {
                log::warn!("could not encode a message: {error}");
                return;
            }
        };
        if let Destination::Unicast(addr) = destination {
            if !self.address_check.allow(addr, payload.len()) {
                self.stats.amplification_cut += 1;
                return;
            }
        }
        match message {
            Message::Beacon(_) => {}
            Message::Digest(_) => self.stats.digests_sent += 1,
            Message::Delta(_) => self.stats.deltas_sent += 1,
            Message::Leave(_)
            | Message::Peers(_)
            | Message::Routes(_)
            | Message::Command(_)
            | Message::CommandResult(_)
            | Message::KeyOffer(_)
            | Message::KeyConfirm(_)
            | Message::Cookie(_)
            | Message::HistoryQuery(_)
            | Message::HistoryPage(_) => {}
        }
        if let Destination::Unicast(addr) = destination {
            if let Some(peer) = self.peers.iter_mut().find(|p| p.addr == addr) {
                peer.frames_out += 1;
            }
        }
        self.queue(destination, &payload, routine);
    }

    /// Whether the transmit queue has room (`max_pending_transmits`); a
    /// frame it has none for is counted as dropped.
    fn room_to_send(&mut self) -> bool {
        let room = self.transmits.len() < self.config.max_pending_transmits;
        if !room {
            self.stats.transmits_dropped += 1;
        }
        room
    }

    /// Queues a frame for the shell and counts it sent.
    fn queue(&mut self, destination: Destination, payload: &[u8], routine: bool) {
        self.stats.frames_out += 1;
        self.stats.bytes_out += payload.len() as u64;
        self.transmits.push_back(Transmit {
            destination,
            payload: Box::from(payload),
            routine,
        });
    }
}

/// The key of this run's address checks: from the node's secret key and
/// the shell's random seed, so no one can compute a challenge's answer.
fn cookie_secret(key: &sign::NodeKey, seed: u64) -> [u8; 32] {
    use sha2::Digest as _;
    let mut hash = sha2::Sha512::new();
    hash.update(b"shoal address check secret");
    hash.update(key.seed());
    hash.update(seed.to_le_bytes());
    let mut secret = [0u8; 32];
    secret.copy_from_slice(&hash.finalize()[..32]);
    secret
}

#[cfg(test)]
mod tests;
