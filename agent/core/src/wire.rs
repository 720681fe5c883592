//! The wire protocol: frames, messages, encryption and replay protection.
//!
//! # Frames
//!
//! One UDP datagram carries one frame of at most [`MAX_FRAME`] (1200) bytes,
//! small enough for Wi-Fi, VPN tunnels and IPv6 without fragmentation:
//!
//! ```text
//!  0      2   3          7                 15                23
//! +------+---+----------+-----------------+-----------------+----------------+-----+
//! |magic |ver| mesh id  | sender node id  | counter         | postcard body  | tag |
//! | 'SH' | 1 | u32 BE   | u64 BE          | inc u32 | seq u32 (encrypted)    | 16  |
//! +------+---+----------+-----------------+-----------------+----------------+-----+
//! ```
//!
//! The 23-byte header is sent in clear and authenticated as associated data.
//! With a mesh key the body is sealed with XChaCha20-Poly1305 (RustCrypto's
//! `chacha20poly1305`), the nonce being `sender | counter | mesh id | 0`; a
//! mesh without a key sends the body in clear and no tag.
//!
//! The counter is `incarnation << 32 | seq`: `seq` counts the frames a node
//! sent in its current incarnation, and the incarnation is persisted and
//! bumped at every start. So `(key, nonce)` never repeats, and the counter
//! doubles as the sender's heartbeat: a higher counter proves the sender was
//! alive later. Receivers keep a [`ReplayWindow`] per sender: the highest
//! counter and the [`REPLAY_WINDOW`] (960) counters below it.
//!
//! # Messages
//!
//! | # | message | sent | carries |
//! |---|---------|------|---------|
//! | 0 | [`Beacon`] | broadcast every `beacon_interval` (85-95 % of it), unicast to non-LAN neighbors, at once when a neighbor turns SUSPECT or we are suspected | name, store hash and progress, suspects, vouches, sometimes metadata |
//! | 1 | [`Digest`] | unicast, when a beacon's store hash differs from ours | per origin `(incarnation, watermark)` for one range of origin ids |
//! | 2 | [`Delta`] | broadcast on a new reading; unicast in answer to a digest; relayed | point updates of one or more origins, each chunk a complete seq range |
//! | 3 | [`Message::Leave`] | broadcast three times on graceful shutdown; relayed beyond the LAN; sent again to answer a suspicion | the leaver's signed [`Farewell`]: who, which incarnation ends |
//! | 4 | [`Message::Peers`] | unicast to a neighbor beyond the LAN when first heard, then every 60 beacons | ids and IPv4 unicast addresses of healthy neighbors |
//! | 5 | [`RouteList`] | after each beacon, only by nodes that bridge parts of the mesh (see `routes`) | per reachable node: counter, hops, age; withdrawals |
//! | 6 | [`Command`] | unicast to the next hop towards the target | asker, request number, target, hop limit, executor, both incarnations, the asker's key and signature |
//! | 7 | [`CommandResult`] | unicast to the next hop back towards the asker | request number, outcome, the start of the output, the answerer's key and signature |
//!
//! | 8 | [`KeyOffer`] | unicast hop by hop to each member, during a key rotation | the new mesh key sealed to that member, when to switch, the initiator's signature |
//! | 9 | [`KeyConfirm`] | unicast hop by hop back to the initiator | which rotation, the member's signature |
//! | 10 | [`Cookie`] | unicast: a challenge to a source address not yet checked, or its echo | a keyed hash of the address and the minute |
//! | 11 | [`HistoryQuery`] | unicast hop by hop towards a point's origin | asker, query number, target, hop limit, point, range, step, first step wanted |
//! | 12 | [`HistoryPage`] | unicast hop by hop back to the asker | query number, status, up to 64 steps (minute, min, avg, max), where the next page starts |
//!
//! Commands, results, farewells and key messages are signed by the node they speak for
//! (see [`crate::sign`]); nothing else is, so beacons stay small.
//!
//! Anti-entropy between `A` (whose beacon `B` hears) and `B`:
//!
//! ```text
//! A                                   B
//! |-- Beacon {hash: h1, progress: 40} ->|  h1 != hB and progressB <= 40
//! |<- Digest {request, entries...} -----|
//! |-- Delta {chunks where A is ahead} ->|
//! |-- Digest {response} --------------->|  only if A is behind somewhere
//! |<- Delta {chunks where B is ahead} --|
//! ```
//!
//! # Evolving the protocol
//!
//! postcard is not self-describing, so compatibility is ours to keep:
//! 1. New messages are appended as new variants at the end of [`Message`];
//!    never reorder or remove one. An older node counts a variant it does not
//!    know as [`DecodeError::UnknownMessage`] and drops it.
//! 2. New fields go at the end of a top-level message. Decoding ignores bytes
//!    after the known fields, so older nodes keep working.
//! 3. Any other change (a field's type, an element of a list) bumps
//!    [`VERSION`]; nodes drop frames of another version, counted.
//!
//! Golden-bytes tests pin the encoding of every message.

pub use crate::sign::{PublicKey, Signature};
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use heapless::{String, Vec};
use serde::{Deserialize, Serialize};
use std::fmt;

/// First two bytes of every frame: `SH`.
pub const MAGIC: u16 = 0x5348;
/// Protocol version; frames of any other version are dropped.
pub const VERSION: u8 = 2;
/// Largest frame sent or accepted.
pub const MAX_FRAME: usize = 1200;
/// Bytes of the clear header.
pub const HEADER_LEN: usize = 23;
/// Bytes of the authentication tag (present only with a mesh key).
pub const TAG_LEN: usize = 16;
/// Room for a message body in one frame (the tag is always reserved, so a
/// message fits whether or not the mesh has a key).
pub const MAX_BODY: usize = MAX_FRAME - HEADER_LEN - TAG_LEN;

/// Longest node name, in bytes.
pub const MAX_NAME: usize = 32;
/// Longest unit, in bytes (`"°C"` is 3).
pub const MAX_UNIT: usize = 8;
/// Longest text value, in bytes.
pub const MAX_TEXT: usize = 32;
/// Most suspects or vouches in one beacon.
pub const MAX_GOSSIP: usize = 16;
/// Most origins in one digest frame.
pub const MAX_DIGEST_ENTRIES: usize = 96;
/// Most origin chunks in one delta frame.
pub const MAX_CHUNKS: usize = 16;
/// Most point updates in one delta frame.
pub const MAX_POINTS: usize = 48;

/// A node's identity, random and persisted. Eight bytes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(#[serde(with = "postcard::fixint::le")] pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A frame counter: which incarnation of the sender, which frame of it.
///
/// Ordered by incarnation first, so any frame of a newer incarnation is newer.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Counter {
    /// Bumped at every start of the sender.
    pub incarnation: u32,
    /// Frames sent in this incarnation.
    pub seq: u32,
}

impl Counter {
    /// The 64-bit form used in the header and nonce.
    pub fn as_u64(self) -> u64 {
        (u64::from(self.incarnation) << 32) | u64::from(self.seq)
    }

    /// The counter whose 64-bit form is `value`.
    pub fn from_u64(value: u64) -> Counter {
        Counter {
            incarnation: (value >> 32) as u32,
            seq: value as u32,
        }
    }
}

/// A node or point name: 1 to 32 bytes of `A-Z a-z 0-9 _ - .`.
pub type Name = String<MAX_NAME>;
/// A unit such as `°C`, `%`, `hPa`: at most 8 bytes, no control characters.
pub type Unit = String<MAX_UNIT>;

/// Whether `name` is a valid node or point name.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Builds a [`Name`], or `None` if `text` is not a valid name.
pub fn name(text: &str) -> Option<Name> {
    if is_valid_name(text) {
        String::try_from(text).ok()
    } else {
        None
    }
}

/// Builds a [`Unit`], or `None` if it is too long or has control characters.
pub fn unit(text: &str) -> Option<Unit> {
    if text.chars().any(char::is_control) {
        return None;
    }
    String::try_from(text).ok()
}

/// The value of a data point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// A measurement. Never NaN or infinite.
    Float(f64),
    /// A count or an enumeration.
    Int(i64),
    /// A contact, a switch, a motion sensor.
    Bool(bool),
    /// A short state text, at most 32 bytes.
    Text(String<MAX_TEXT>),
    /// The sensor behind the point failed: why, in at most 32 bytes. A
    /// point in error is not a measurement (rules treat it as unknown).
    Error(String<MAX_TEXT>),
}

impl Value {
    /// Whether the value may enter the store (finite floats, printable text).
    pub fn is_valid(&self) -> bool {
        match self {
            Value::Float(v) => v.is_finite(),
            Value::Text(text) | Value::Error(text) => !text.chars().any(char::is_control),
            Value::Int(_) | Value::Bool(_) => true,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Float(v) => write!(f, "{v}"),
            Value::Int(v) => write!(f, "{v}"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::Text(v) => write!(f, "{v:?}"),
            Value::Error(v) => write!(f, "error: {v}"),
        }
    }
}

/// Every message of the protocol. Append only: see the module docs.
// A decoded `Delta` is a few KB of fixed-capacity lists. It stays on the stack
// on purpose: boxing it would allocate for every datagram a stranger sends.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// The heartbeat, broadcast every beacon interval.
    Beacon(Beacon),
    /// A summary of the store, asking for what the sender lacks.
    Digest(Digest),
    /// Point updates.
    Delta(Delta),
    /// A node shuts down gracefully: its signed goodbye, sent by itself
    /// and relayed beyond its LAN.
    Leave(Farewell),
    /// Neighbors the sender knows, so a node beyond the LAN (one static
    /// peer) can reach the whole mesh.
    Peers(PeerList),
    /// Nodes the sender can reach, sent by nodes that bridge parts of the mesh.
    Routes(RouteList),
    /// Run an executor on a node, relayed hop by hop.
    Command(Command),
    /// The outcome of a [`Command`], relayed back to whoever asked.
    CommandResult(CommandResult),
    /// A new mesh key for one member, sealed to its node key, relayed.
    KeyOffer(KeyOffer),
    /// A member has the new key, relayed back to the rotation's initiator.
    KeyConfirm(KeyConfirm),
    /// An address check: a challenge to an address that has not shown it
    /// receives our replies, or its echo (see `address_check`).
    Cookie(Cookie),
    /// A question for one page of a point's history, relayed hop by hop to
    /// the point's origin.
    HistoryQuery(HistoryQuery),
    /// One page of a point's history, relayed back to whoever asked.
    HistoryPage(HistoryPage),
}

/// Most rows in one [`HistoryPage`] (16 bytes each on the wire).
pub const MAX_HISTORY_ROWS: usize = 64;

/// "Send me the steps of `point` from `since_min` to `until_min`, each
/// `step_min` wide, from the step at `from_min` on." Times are minutes
/// since the Unix epoch. Unsigned: it reads what every member may read,
/// and its answer goes to `origin` along the routes, never to an address
/// the frame names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryQuery {
    /// Who asked: the page goes back there.
    pub origin: NodeId,
    /// The asker's query number.
    pub id: u32,
    /// The point's origin, which keeps its history.
    pub target: NodeId,
    /// Relays left before it is dropped.
    pub hops_left: u8,
    /// Sending attempt: the asker sends again (same `id`) until answered.
    pub attempt: u8,
    /// The point.
    pub point: Name,
    /// The range's start; the steps are aligned to it.
    pub since_min: u32,
    /// The range's end (exclusive).
    pub until_min: u32,
    /// Minutes per step, at least 1.
    pub step_min: u32,
    /// The first step wanted (`since_min` for the first page).
    pub from_min: u32,
}

/// How a [`HistoryQuery`] was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HistoryStatus {
    /// Rows follow (maybe none: no readings in the range).
    Rows,
    /// The target keeps no history (`[history] retain = "0s"`).
    NoHistory,
    /// The target could not read its history file.
    Failed,
    /// The target refused: the range is too large, or it is reading too
    /// much history for others now (ask again later).
    Refused,
    /// Too many queries from the asker: refused by the rate limit.
    RateLimited,
    /// A node on the way had no route to the target.
    NoRoute,
    /// Nothing came back in time (set by the asker, never sent).
    NoAnswer,
}

// Rows are checked finite when decoded, and the shell builds them from
// finite buckets, so equality is reflexive.
impl Eq for HistoryRow {}

/// One step of a point's history: its start in minutes since the Unix
/// epoch, and the smallest, mean and largest reading in it (the device
/// stores them as `f32`, so nothing is lost).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HistoryRow {
    /// The step's start, minutes since the Unix epoch.
    pub minute: u32,
    /// Smallest reading.
    pub min: f32,
    /// Mean reading.
    pub avg: f32,
    /// Largest reading.
    pub max: f32,
}

/// One page of the answer to a [`HistoryQuery`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryPage {
    /// Who asked (where this goes).
    pub origin: NodeId,
    /// The asker's query number.
    pub id: u32,
    /// Who answers: the target, or the relay that gave up.
    pub target: NodeId,
    /// Relays left before it is dropped.
    pub hops_left: u8,
    /// The attempt of the query this answers.
    pub attempt: u8,
    /// How it was answered.
    pub status: HistoryStatus,
    /// The steps, in time order.
    pub rows: Vec<HistoryRow, MAX_HISTORY_ROWS>,
    /// Where the next page starts, if there is more.
    pub next_min: Option<u32>,
}

/// An address check. A node answers a source address it has not checked
/// with at most three times the bytes it got from it, and adds a challenge;
/// a real node echoes it, and the address is checked from then on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cookie {
    /// The challenge: a keyed hash of the address and the minute.
    pub value: u64,
    /// `false` for a challenge, `true` for the echo of one.
    pub echo: bool,
}

/// Key rotation: the new mesh key for `target`, sealed so only it can open
/// it (X25519 with its node key, see [`crate::sign::seal_key`]), signed by
/// the initiator. Members switch to it `switch_in_ms` after receiving it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyOffer {
    /// The rotation, numbered by its initiator.
    pub rotation: u32,
    /// Who rotates.
    pub initiator: NodeId,
    /// Who this copy is for.
    pub target: NodeId,
    /// Relays left before it is dropped.
    pub hops_left: u8,
    /// The target's incarnation it is meant for.
    pub target_incarnation: u32,
    /// The initiator's one-time X25519 public key.
    pub ephemeral: [u8; 32],
    /// The new key, sealed (32 bytes and a 16-byte tag).
    pub sealed: SealedKey,
    /// When to switch, from receipt.
    pub switch_in_ms: u32,
    /// The initiator's public key.
    pub key: PublicKey,
    /// Its signature over [`crate::sign::offer_payload`].
    pub signature: Signature,
}

/// "I have the new key of rotation `rotation`", signed by `from`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyConfirm {
    /// The rotation.
    pub rotation: u32,
    /// Its initiator (where this goes).
    pub initiator: NodeId,
    /// The mesh id of the key the member got.
    pub new_mesh: u32,
    /// The member confirming.
    pub from: NodeId,
    /// Relays left before it is dropped.
    pub hops_left: u8,
    /// Its public key.
    pub key: PublicKey,
    /// Its signature over [`crate::sign::confirm_payload`].
    pub signature: Signature,
}

/// A mesh key sealed to one node: 32 bytes and a 16-byte tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedKey(pub [u8; 32], pub [u8; 16]);

/// Most entries one [`RouteList`] can hold (frames are packed by size).
pub const MAX_ROUTE_ENTRIES: usize = 64;
/// Most bytes of a command's output carried back in a [`CommandResult`].
pub const MAX_OUTPUT: usize = 480;

/// The destinations the sender can reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteList {
    /// One entry per destination.
    pub entries: Vec<RouteEntry, MAX_ROUTE_ENTRIES>,
}

/// "I reach `node` in `metric` hops; its counter `counter` was current
/// `age_ms` ago." A metric of 16 or more withdraws the route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteEntry {
    /// The destination.
    pub node: NodeId,
    /// The destination's newest counter the sender has: the route's
    /// sequence number and the destination's heartbeat.
    pub counter: Counter,
    /// The sender's distance in hops.
    pub metric: u8,
    /// How long ago the counter was current at the destination.
    pub age_ms: u32,
    /// The destination said goodbye.
    pub left: bool,
    /// Its name, in the first advertisements and then now and then.
    pub name: Option<Name>,
    /// Its public key, with its name (its id derives from it).
    pub key: Option<PublicKey>,
}

/// Run `executor` on `target`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Who asked: the result goes back there.
    pub origin: NodeId,
    /// The asker's request number.
    pub id: u32,
    /// Where it runs.
    pub target: NodeId,
    /// Relays left before it is dropped.
    pub hops_left: u8,
    /// The executor's name on the target.
    pub executor: Name,
    /// Sending attempt: the asker sends again (same `id`) until answered;
    /// the target runs a command once and answers every attempt.
    pub attempt: u8,
    /// The asker's incarnation: its request numbers restart with it.
    pub origin_incarnation: u32,
    /// The target's incarnation the command is meant for: after the target
    /// restarts, the command (a captured copy too) no longer runs.
    pub target_incarnation: u32,
    /// The asker's public key; the origin id is derived from it.
    pub key: PublicKey,
    /// The asker's signature over [`crate::sign::command_payload`].
    pub signature: Signature,
}

/// A node's signed goodbye: "`node` ends incarnation `incarnation`".
/// Self-contained, so any node can relay it and every node checks it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Farewell {
    /// Who leaves.
    pub node: NodeId,
    /// The incarnation that ends (a later one is a new life).
    pub incarnation: u32,
    /// Its public key; `node` is derived from it.
    pub key: PublicKey,
    /// Its signature over [`crate::sign::farewell_payload`].
    pub signature: Signature,
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// It ran and exited with this code (0: success).
    Exited(i32),
    /// It ran and failed without an exit code (killed, a webhook error...).
    Failed,
    /// It did not finish in time and was stopped.
    TimedOut,
    /// The target has no executor of that name.
    UnknownExecutor,
    /// The executor exists but is not marked `remote = true`.
    NotRemote,
    /// The executor is running and its policy refuses a second run.
    Busy,
    /// Too many commands from the asker: refused by the rate limit.
    RateLimited,
    /// A node on the way had no route to the target.
    NoRoute,
    /// Nothing came back in time (set by the asker, never sent).
    NoAnswer,
}

/// How a person (the dashboard, a log line) and Prometheus (the `outcome`
/// label) read an outcome: `exit 0`, `exit 3`, `timed out`, `no route`.
impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Outcome::Exited(code) => return write!(f, "exit {code}"),
            Outcome::Failed => "failed",
            Outcome::TimedOut => "timed out",
            Outcome::UnknownExecutor => "unknown executor",
            Outcome::NotRemote => "not remote",
            Outcome::Busy => "busy",
            Outcome::RateLimited => "rate limited",
            Outcome::NoRoute => "no route",
            Outcome::NoAnswer => "no answer",
        };
        f.write_str(text)
    }
}

/// The outcome of a command, on its way back to the asker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult {
    /// Who asked (where this goes).
    pub origin: NodeId,
    /// The asker's request number.
    pub id: u32,
    /// Who answers: the target, or the relay that gave up.
    pub target: NodeId,
    /// Relays left before it is dropped.
    pub hops_left: u8,
    /// How it ended.
    pub outcome: Outcome,
    /// The start of its output (the rest is in the target's log).
    pub output: String<MAX_OUTPUT>,
    /// The attempt of the command this answers.
    pub attempt: u8,
    /// The asker's incarnation, from the command.
    pub origin_incarnation: u32,
    /// The answering node's public key; `target` is derived from it.
    pub key: PublicKey,
    /// Its signature over [`crate::sign::result_payload`].
    pub signature: Signature,
}

/// Most addresses in one [`PeerList`] frame.
pub const MAX_PEER_ADDRESSES: usize = 48;

/// Neighbors of the sender with their unicast IPv4 addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerList {
    /// The neighbors.
    pub peers: Vec<PeerAddress, MAX_PEER_ADDRESSES>,
}

/// One neighbor's id and unicast address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerAddress {
    /// Its id.
    pub node: NodeId,
    /// Its IPv4 address.
    pub ip: [u8; 4],
    /// Its sync port.
    pub port: u16,
}

/// Number of [`Message`] variants this version knows.
const KNOWN_MESSAGES: u8 = kind::HISTORY_PAGE + 1;

/// The heartbeat. Without suspects, vouches and metadata it is 58 bytes
/// with a key for a 7-character name (see the size tests).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Beacon {
    /// The sender's node name.
    pub name: Name,
    /// Hash of the sender's version vector; a mismatch starts anti-entropy.
    #[serde(with = "postcard::fixint::le")]
    pub store_hash: u32,
    /// Sum of the sender's watermarks: the side with less asks first.
    pub progress: u64,
    /// Neighbors the sender has not heard for `suspect_after`, with the last
    /// counter it has of each: "has anyone heard them since?"
    pub suspects: Vec<Liveness, MAX_GOSSIP>,
    /// Answers to others' suspects: a newer counter proves life.
    pub vouches: Vec<Vouch, MAX_GOSSIP>,
    /// Sent in the first beacons and then every 30th.
    pub meta: Option<Meta>,
    /// How many nodes the sender heard directly lately.
    pub heard: u16,
    /// Fingerprint of the set of nodes the sender heard directly lately,
    /// itself included: equal on every node of a LAN where all hear all, so
    /// a difference tells a bridge between parts of the mesh.
    #[serde(with = "postcard::fixint::le")]
    pub view: u32,
}

impl Beacon {
    /// Says only what a steady node repeats: no suspects, no vouches, no
    /// meta. A receiver may skip decoding the same body again.
    pub fn is_quiet(&self) -> bool {
        self.suspects.is_empty() && self.vouches.is_empty() && self.meta.is_none()
    }
}

/// A node and the newest counter someone has of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Liveness {
    /// The node in question.
    pub node: NodeId,
    /// The newest counter known of it.
    pub counter: Counter,
}

/// "I heard `node` at `counter`, `age_ms` ago" (or: it left).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vouch {
    /// The node vouched for and the newest counter the voucher has of it.
    pub liveness: Liveness,
    /// How long ago the voucher got that counter.
    pub age_ms: u32,
    /// The counter is that of its `Leave`: it left the mesh.
    pub left: bool,
}

/// Descriptive facts about a node, for people.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Meta {
    /// shoal version, e.g. `0.1.0`.
    pub version: String<16>,
    /// Hardware model, e.g. `Raspberry Pi 4 Model B Rev 1.4`.
    pub model: String<48>,
    /// Operating system, e.g. `Debian GNU/Linux 12 (bookworm)`.
    pub os: String<48>,
    /// The node's public key (its id derives from it), so others can seal
    /// a rotated mesh key to it.
    pub key: Option<PublicKey>,
}

/// One frame of a store summary, covering origin ids `first..=last`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Digest {
    /// True when this starts an exchange; a response never gets a digest back.
    pub request: bool,
    /// Lowest origin id this frame covers.
    pub first: NodeId,
    /// Highest origin id this frame covers.
    pub last: NodeId,
    /// The sender's origins in the range, ascending.
    pub entries: Vec<DigestEntry, MAX_DIGEST_ENTRIES>,
}

/// What the sender has of one origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestEntry {
    /// The origin.
    pub origin: NodeId,
    /// Its incarnation the sender holds.
    pub incarnation: u32,
    /// The sender has every update of that incarnation up to this seq.
    pub watermark: u32,
}

/// Point updates, grouped in chunks per origin.
///
/// Each chunk claims a complete range: its points are all the points of
/// `origin` whose current seq lies in `after..=upto` (exclusive of `after`).
/// `points` holds the chunks' points in order, `n_points` of each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    /// The chunks, in order.
    pub chunks: Vec<Chunk, MAX_CHUNKS>,
    /// The points of all chunks, chunk after chunk.
    pub points: Vec<PointUpdate, MAX_POINTS>,
}

/// The header of one origin's updates in a [`Delta`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    /// The node that published the points.
    pub origin: NodeId,
    /// Its name, so points are named `NODE/NAME` even before its beacon.
    pub origin_name: Name,
    /// The origin's incarnation these seqs belong to.
    pub incarnation: u32,
    /// Range start, exclusive.
    pub after: u32,
    /// Range end, inclusive.
    pub upto: u32,
    /// The origin's wall-clock timestamp (ms since the epoch) of the
    /// freshest point of the range, for people: ages never compare wall
    /// clocks (most Pis have no real-time clock).
    pub base_ts_ms: u64,
    /// That point's age when sent, ms (see [`PointUpdate::age_ms`]).
    pub base_age_ms: u32,
    /// How many of `Delta::points` belong to this chunk.
    pub n_points: u8,
}

/// One point's new value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointUpdate {
    /// Seq minus the previous point's seq (the first: minus `after`); >= 1.
    pub seq_gap: u32,
    /// The point's name within its origin.
    pub name: Name,
    /// The value.
    pub value: Value,
    /// Its unit, possibly empty.
    pub unit: Unit,
    /// How old the value was when this frame was sent, ms, by monotonic
    /// clocks only: the origin's time since the reading, plus for a relayed
    /// value each relay's time since it received it. The receiver adds its
    /// own time since receipt; a point's timestamp for people is
    /// `base_ts_ms + base_age_ms - age_ms`.
    pub age_ms: u32,
}

/// Why a datagram was dropped. Every reason has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than a header.
    #[error("truncated frame")]
    Truncated,
    /// Longer than [`MAX_FRAME`].
    #[error("frame too large")]
    TooLarge,
    /// Not a shoal frame.
    #[error("bad magic")]
    BadMagic,
    /// A protocol version this node does not speak.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    /// Another mesh on the same port.
    #[error("frame of another mesh")]
    WrongMesh,
    /// Authentication failed: wrong key, tampered, or no tag.
    #[error("bad authentication tag")]
    BadTag,
    /// A message variant from a newer protocol revision.
    #[error("unknown message type")]
    UnknownMessage,
    /// The body does not decode, or holds invalid values.
    #[error("malformed body")]
    Malformed,
}

/// The clear header of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Which mesh this frame belongs to.
    pub mesh_id: u32,
    /// Who sent it.
    pub sender: NodeId,
    /// The sender's frame counter.
    pub counter: Counter,
}

impl Header {
    /// Writes the header into `out[..HEADER_LEN]`.
    fn write(&self, out: &mut [u8; HEADER_LEN]) {
        out[0..2].copy_from_slice(&MAGIC.to_be_bytes());
        out[2] = VERSION;
        out[3..7].copy_from_slice(&self.mesh_id.to_be_bytes());
        out[7..15].copy_from_slice(&self.sender.0.to_be_bytes());
        out[15..23].copy_from_slice(&self.counter.as_u64().to_be_bytes());
    }

    /// Reads and checks the header of `frame` (size, magic, version, mesh).
    pub fn parse(frame: &[u8], mesh_id: u32) -> Result<Header, DecodeError> {
        if frame.len() > MAX_FRAME {
            return Err(DecodeError::TooLarge);
        }
        let Some(head) = frame.first_chunk::<HEADER_LEN>() else {
            return Err(DecodeError::Truncated);
        };
        if u16::from_be_bytes([head[0], head[1]]) != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        if head[2] != VERSION {
            return Err(DecodeError::UnsupportedVersion(head[2]));
        }
        let mut mesh = [0u8; 4];
        mesh.copy_from_slice(&head[3..7]);
        if u32::from_be_bytes(mesh) != mesh_id {
            return Err(DecodeError::WrongMesh);
        }
        let mut sender = [0u8; 8];
        sender.copy_from_slice(&head[7..15]);
        let mut counter = [0u8; 8];
        counter.copy_from_slice(&head[15..23]);
        Ok(Header {
            mesh_id,
            sender: NodeId(u64::from_be_bytes(sender)),
            counter: Counter::from_u64(u64::from_be_bytes(counter)),
        })
    }

    fn nonce(&self) -> XNonce {
        let mut nonce = [0u8; 24];
        nonce[0..8].copy_from_slice(&self.sender.0.to_be_bytes());
        nonce[8..16].copy_from_slice(&self.counter.as_u64().to_be_bytes());
        nonce[16..20].copy_from_slice(&self.mesh_id.to_be_bytes());
        XNonce::from(nonce)
    }
}

/// The mesh id of an open mesh (no key). A keyed mesh's id is derived from
/// its key and always odd, so it never equals this.
pub const OPEN_MESH_ID: u32 = 0x5348_0000;

/// The mesh id of `key` (FNV-1a of the key, odd), or [`OPEN_MESH_ID`].
pub fn mesh_id(key: Option<&MeshKey>) -> u32 {
    match key {
        None => OPEN_MESH_ID,
        Some(key) => {
            key.0.iter().fold(0x811c_9dc5u32, |hash, byte| {
                (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
            }) | 1
        }
    }
}

/// What the first bytes of any frame say, whatever its version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peek {
    /// The protocol version it claims.
    pub version: u8,
    /// Its mesh id.
    pub mesh_id: u32,
    /// Its sender.
    pub sender: NodeId,
}

/// Reads version, mesh id and sender from a frame of any protocol version:
/// magic, version, mesh id and sender are the first 15 bytes in every
/// version, past and future (a rule of this protocol: a node must be able
/// to say who speaks what, see `strangers`). `None` without our magic.
/// Nothing here is authenticated.
pub fn peek(frame: &[u8]) -> Option<Peek> {
    let head = frame.first_chunk::<15>()?;
    if u16::from_be_bytes([head[0], head[1]]) != MAGIC {
        return None;
    }
    let mut mesh = [0u8; 4];
    mesh.copy_from_slice(&head[3..7]);
    let mut sender = [0u8; 8];
    sender.copy_from_slice(&head[7..15]);
    Some(Peek {
        version: head[2],
        mesh_id: u32::from_be_bytes(mesh),
        sender: NodeId(u64::from_be_bytes(sender)),
    })
}

/// The 32-byte mesh key. Its `Debug` never prints the key.
#[derive(Clone, PartialEq, Eq)]
pub struct MeshKey(pub [u8; 32]);

impl fmt::Debug for MeshKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MeshKey(..)")
    }
}

/// Seals and opens frame bodies with the mesh key.
#[derive(Clone)]
pub struct Cipher {
    aead: XChaCha20Poly1305,
}

impl fmt::Debug for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cipher(XChaCha20-Poly1305)")
    }
}

impl Cipher {
    /// A cipher for `key`.
    pub fn new(key: &MeshKey) -> Cipher {
        Cipher {
            aead: XChaCha20Poly1305::new(&key.0.into()),
        }
    }
}

/// A frame ready to send: at most [`MAX_FRAME`] bytes, on the stack.
pub type Datagram = Vec<u8, MAX_FRAME>;

/// Why a message could not be encoded. Nothing was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The message does not fit in one frame (a builder bug: builders split).
    #[error("message larger than one frame")]
    TooLarge,
    /// The cipher refused (cannot happen for bodies under a frame).
    #[error("encryption failed")]
    Crypto,
}

/// Encodes `message` into a frame.
pub fn encode(
    header: &Header,
    message: &Message,
    cipher: Option<&Cipher>,
) -> Result<Datagram, EncodeError> {
    let mut buf = [0u8; MAX_FRAME];
    let mut head = [0u8; HEADER_LEN];
    header.write(&mut head);
    buf[..HEADER_LEN].copy_from_slice(&head);
    let body_len = postcard::to_slice(message, &mut buf[HEADER_LEN..HEADER_LEN + MAX_BODY])
        .map_err(|_| EncodeError::TooLarge)?
        .len();
    let mut end = HEADER_LEN + body_len;
    if let Some(cipher) = cipher {
        let tag = cipher
            .aead
            .encrypt_inout_detached(&header.nonce(), &head, (&mut buf[HEADER_LEN..end]).into())
            .map_err(|_| EncodeError::Crypto)?;
        buf[end..end + TAG_LEN].copy_from_slice(&tag);
        end += TAG_LEN;
    }
    Datagram::from_slice(&buf[..end]).map_err(|_| EncodeError::TooLarge)
}

/// The variant index of each [`Message`] on the wire (one varint byte).
pub mod kind {
    /// [`super::Message::Beacon`].
    pub const BEACON: u8 = 0;
    /// [`super::Message::Digest`].
    pub const DIGEST: u8 = 1;
    /// [`super::Message::Delta`].
    pub const DELTA: u8 = 2;
    /// [`super::Message::Leave`].
    pub const LEAVE: u8 = 3;
    /// [`super::Message::Peers`].
    pub const PEERS: u8 = 4;
    /// [`super::Message::Routes`].
    pub const ROUTES: u8 = 5;
    /// [`super::Message::Command`].
    pub const COMMAND: u8 = 6;
    /// [`super::Message::CommandResult`].
    pub const COMMAND_RESULT: u8 = 7;
    /// [`super::Message::KeyOffer`].
    pub const KEY_OFFER: u8 = 8;
    /// [`super::Message::KeyConfirm`].
    pub const KEY_CONFIRM: u8 = 9;
    /// [`super::Message::Cookie`].
    pub const COOKIE: u8 = 10;
    /// [`super::Message::HistoryQuery`].
    pub const HISTORY_QUERY: u8 = 11;
    /// [`super::Message::HistoryPage`].
    pub const HISTORY_PAGE: u8 = 12;
}

/// Authenticates and decrypts the body of `frame` (whose header `header`
/// the caller parsed and checked against the replay window) into `buf`, and
/// splits off the message kind: `(kind, encoded message)`.
///
/// Never panics and never allocates.
pub fn open<'b>(
    header: &Header,
    frame: &[u8],
    cipher: Option<&Cipher>,
    buf: &'b mut [u8; MAX_FRAME],
) -> Result<(u8, &'b [u8]), DecodeError> {
    if frame.len() > MAX_FRAME {
        return Err(DecodeError::TooLarge);
    }
    let Some((head, body)) = frame.split_first_chunk::<HEADER_LEN>() else {
        return Err(DecodeError::Truncated);
    };
    let plain: &[u8] = match cipher {
        Some(cipher) => {
            let Some((sealed, tag)) = body.split_last_chunk::<TAG_LEN>() else {
                return Err(DecodeError::BadTag);
            };
            let plain = &mut buf[..sealed.len()];
            plain.copy_from_slice(sealed);
            cipher
                .aead
                .decrypt_inout_detached(&header.nonce(), head, plain.into(), &Tag::from(*tag))
                .map_err(|_| DecodeError::BadTag)?;
            plain
        }
        None => {
            let plain = &mut buf[..body.len()];
            plain.copy_from_slice(body);
            plain
        }
    };
    match plain.split_first() {
        None => Err(DecodeError::Malformed),
        // The variant index is a varint; every known index fits in one byte.
        Some((&kind, _)) if kind >= KNOWN_MESSAGES => Err(DecodeError::UnknownMessage),
        Some((&kind, rest)) => Ok((kind, rest)),
    }
}

/// A message part that carries values serde cannot check.
pub trait Checked {
    /// Names, finite values, consistent counts and ranges.
    fn is_valid(&self) -> bool;
}

/// Decodes one message of the kind [`open`] returned, and validates it.
/// Trailing bytes are fields of a newer revision and are ignored (rule 2).
pub fn decode_part<T: serde::de::DeserializeOwned + Checked>(
    encoded: &[u8],
) -> Result<T, DecodeError> {
    let (part, _newer_fields) =
        postcard::take_from_bytes::<T>(encoded).map_err(|_| DecodeError::Malformed)?;
    if part.is_valid() {
        Ok(part)
    } else {
        Err(DecodeError::Malformed)
    }
}

/// Opens and decodes a whole frame body into a [`Message`].
///
/// Never panics and never allocates: bodies decode into fixed-capacity types
/// and a copy of the frame on the stack. (The agent itself decodes only the
/// kind a frame holds, with [`open`] and [`decode_part`], to avoid moving
/// the largest variant for every beacon.)
pub fn decode_body(
    header: &Header,
    frame: &[u8],
    cipher: Option<&Cipher>,
) -> Result<Message, DecodeError> {
    let mut buf = [0u8; MAX_FRAME];
    let (kind, encoded) = open(header, frame, cipher, &mut buf)?;
    Ok(match kind {
        kind::BEACON => Message::Beacon(decode_part(encoded)?),
        kind::DIGEST => Message::Digest(decode_part(encoded)?),
        kind::DELTA => Message::Delta(decode_part(encoded)?),
        kind::PEERS => Message::Peers(decode_part(encoded)?),
        kind::ROUTES => Message::Routes(decode_part(encoded)?),
        kind::COMMAND => Message::Command(decode_part(encoded)?),
        kind::COMMAND_RESULT => Message::CommandResult(decode_part(encoded)?),
        kind::KEY_OFFER => Message::KeyOffer(decode_part(encoded)?),
        kind::KEY_CONFIRM => Message::KeyConfirm(decode_part(encoded)?),
        kind::COOKIE => Message::Cookie(decode_part(encoded)?),
        kind::HISTORY_QUERY => Message::HistoryQuery(decode_part(encoded)?),
        kind::HISTORY_PAGE => Message::HistoryPage(decode_part(encoded)?),
        _ => Message::Leave(decode_part(encoded)?),
    })
}

impl Checked for Beacon {
    fn is_valid(&self) -> bool {
        is_valid_name(&self.name)
    }
}

impl Checked for Digest {
    fn is_valid(&self) -> bool {
        self.first <= self.last
            && self
                .entries
                .iter()
                .all(|e| self.first <= e.origin && e.origin <= self.last)
            && self.entries.windows(2).all(|w| w[0].origin < w[1].origin)
    }
}

impl Checked for Delta {
    fn is_valid(&self) -> bool {
        let claimed: usize = self.chunks.iter().map(|c| usize::from(c.n_points)).sum();
        let mut points = self.points.iter();
        claimed == self.points.len()
            && self.chunks.iter().all(|c| {
                // The points' seqs must stay inside the claimed range.
                let last_seq = points
                    .by_ref()
                    .take(usize::from(c.n_points))
                    .fold(u64::from(c.after), |seq, p| seq + u64::from(p.seq_gap));
                is_valid_name(&c.origin_name) && c.after <= c.upto && last_seq <= u64::from(c.upto)
            })
            && self.points.iter().all(|p| {
                p.seq_gap >= 1
                    && is_valid_name(&p.name)
                    && p.value.is_valid()
                    && unit(&p.unit).is_some()
            })
    }
}

impl Checked for PeerList {
    fn is_valid(&self) -> bool {
        self.peers.iter().all(|p| p.port != 0 && p.ip != [0; 4])
    }
}

impl Checked for RouteList {
    fn is_valid(&self) -> bool {
        self.entries
            .iter()
            .all(|e| e.name.as_ref().is_none_or(|n| is_valid_name(n)))
    }
}

impl Checked for Command {
    fn is_valid(&self) -> bool {
        is_valid_name(&self.executor)
    }
}

impl Checked for CommandResult {
    fn is_valid(&self) -> bool {
        true
    }
}

impl Checked for Farewell {
    fn is_valid(&self) -> bool {
        true
    }
}

impl Checked for KeyOffer {
    fn is_valid(&self) -> bool {
        true
    }
}

impl Checked for KeyConfirm {
    fn is_valid(&self) -> bool {
        true
    }
}

impl Checked for Cookie {
    fn is_valid(&self) -> bool {
        true
    }
}

impl Checked for HistoryQuery {
    fn is_valid(&self) -> bool {
        is_valid_name(&self.point)
            && self.step_min >= 1
            && self.since_min <= self.from_min
            && self.from_min <= self.until_min
    }
}

impl Checked for HistoryPage {
    fn is_valid(&self) -> bool {
        self.rows.windows(2).all(|w| w[0].minute < w[1].minute)
            && self
                .rows
                .iter()
                .all(|r| r.min.is_finite() && r.avg.is_finite() && r.max.is_finite())
            && self
                .next_min
                .is_none_or(|next| self.rows.last().is_none_or(|r| r.minute < next))
    }
}

impl Message {
    /// The encoded size of the message body alone.
    pub fn body_len(&self) -> usize {
        encoded_len(self)
    }
}

/// Encoded postcard size of `value` (0 if it exceeds a frame body).
pub fn encoded_len<T: Serialize>(value: &T) -> usize {
    let mut scratch = [0u8; MAX_BODY];
    postcard::to_slice(value, &mut scratch).map_or(0, |bytes| bytes.len())
}

/// Words of the replay bitmap.
const REPLAY_WORDS: usize = 16;

/// How many counters below the highest are still accepted once. A node's
/// counter is shared by all its destinations, so a burst of unicast replies
/// to many peers advances it by hundreds between two frames to one peer;
/// with ordinary reordering, a 64-frame window dropped real frames.
pub const REPLAY_WINDOW: u64 = ((REPLAY_WORDS - 1) * 64) as u64;

/// Anti-replay state for one sender (RFC 6479): the highest counter accepted
/// and a ring bitmap of the counters below it, 128 bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    highest: Option<u64>,
    bitmap: [u64; REPLAY_WORDS],
}

impl ReplayWindow {
    fn slot(counter: u64) -> (usize, u64) {
        let word = (counter / 64) as usize % REPLAY_WORDS;
        (word, 1u64 << (counter % 64))
    }

    /// The highest counter accepted so far.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }

    /// Whether a frame with `counter` would be new.
    pub fn is_fresh(&self, counter: u64) -> bool {
        let Some(highest) = self.highest else {
            return true;
        };
        if counter > highest {
            return true;
        }
        if highest - counter >= REPLAY_WINDOW {
            return false;
        }
        let (word, bit) = Self::slot(counter);
        self.bitmap[word] & bit == 0
    }

    /// Records `counter` as seen; call only after the frame authenticated
    /// and `is_fresh` said yes.
    pub fn accept(&mut self, counter: u64) {
        match self.highest {
            Some(highest) if counter <= highest => {
                if highest - counter >= REPLAY_WINDOW {
                    return;
                }
            }
            Some(highest) => {
                // Clear the words the window slides over (all, past a full turn).
                let from_word = highest / 64 + 1;
                let to_word = counter / 64;
                let steps = (to_word + 1)
                    .saturating_sub(from_word)
                    .min(REPLAY_WORDS as u64);
                for step in 0..steps {
                    self.bitmap[((from_word + step) as usize) % REPLAY_WORDS] = 0;
                }
                self.highest = Some(counter);
            }
            None => self.highest = Some(counter),
        }
        let (word, bit) = Self::slot(counter);
        self.bitmap[word] |= bit;
    }
}

#[cfg(test)]
mod tests;
