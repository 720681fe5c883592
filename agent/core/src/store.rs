//! The data points of the whole mesh, and the anti-entropy that keeps them equal.
//!
//! Every point belongs to an *origin* (the node that measured it) and carries
//! a version `(incarnation, seq)`: `seq` counts the origin's updates within its
//! incarnation. A new incarnation replaces the origin's whole point set (the
//! restarted node republishes its points), so within one incarnation versions
//! are plain seqs.
//!
//! For each origin the store keeps a *watermark*: it holds every update of
//! that incarnation up to this seq (an update overwritten later counts as
//! held). Updates that arrive out of order are applied at once but move the
//! watermark only when they close the gap, so a digest of watermarks tells a
//! peer exactly what to send: every point with a seq above ours.
//!
//! Origins come and leave with their node. A new origin is taken only while
//! it is *live* (a HEALTHY or SUSPECT neighbor, or reached by a route), so
//! neither made-up origins nor the leftovers of gone nodes that a neighbor
//! still holds ever enter. Only live origins count in the version vector
//! (hash, digest, what is sent), so nodes that saw a node go at different
//! times still agree. An origin that is not live and taught us nothing for
//! `prune_after` is removed. A full store makes room for a live newcomer by
//! evicting the longest-silent origin that is not live (logged once per
//! time the store fills); with every origin live, the newcomer is dropped.

use super::wire::{
    encoded_len, Chunk, Delta, Digest, DigestEntry, Name, NodeId, PointUpdate, Unit, Value,
    MAX_BODY, MAX_CHUNKS, MAX_POINTS,
};
use crate::time::Instant;
use std::cell::Cell;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// Capacities of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// Most origins (including this node).
    pub max_origins: usize,
    /// Most points per origin.
    pub max_points_per_origin: usize,
    /// Most past values kept per point (the current one included).
    pub history_per_point: usize,
}

/// One past value of a point.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Origin timestamp, ms since the Unix epoch.
    pub ts_ms: u64,
    /// The value then.
    pub value: Value,
}

/// A data point as this node knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// The current value.
    pub value: Value,
    /// Its unit, possibly empty.
    pub unit: Unit,
    /// Origin timestamp of the current value, ms since the Unix epoch.
    pub ts_ms: u64,
    /// Version of the current value within the origin's incarnation.
    pub seq: u32,
    /// Recent values, oldest first, the current one last.
    pub history: VecDeque<Sample>,
    /// When this node received the current value (its own clock).
    pub heard: Instant,
    /// How old the value was then, ms (0 for a reading of this node).
    pub age_ms: u64,
}

impl Point {
    /// How old the current value is at `now`, ms: monotonic clocks only,
    /// never the origin's wall clock.
    pub fn age(&self, now: Instant) -> u64 {
        self.age_ms
            .saturating_add(now.saturating_since(self.heard).as_millis() as u64)
    }
}

/// Everything known of one origin.
#[derive(Debug, Clone, PartialEq)]
pub struct Origin {
    /// The origin's node name.
    pub name: Name,
    /// The incarnation the points belong to.
    pub incarnation: u32,
    /// Every update up to this seq is held.
    pub watermark: u32,
    /// The points, by name.
    pub points: BTreeMap<Name, Point>,
    /// When it was last live or taught us something.
    pub heard: Instant,
    /// Whether it was live at the last check (see the module docs).
    pub live: bool,
    /// Complete ranges `(after, upto]` received above the watermark (out of
    /// order), absorbed into it once the gap below them closes. At most
    /// [`MAX_PENDING_RANGES`]; beyond that the highest is forgotten and
    /// anti-entropy fills in.
    pending: BTreeMap<u32, u32>,
}

/// Most out-of-order ranges remembered per origin.
pub const MAX_PENDING_RANGES: usize = 16;

impl Origin {
    fn new(name: Name, incarnation: u32, heard: Instant) -> Origin {
        Origin {
            name,
            incarnation,
            watermark: 0,
            points: BTreeMap::new(),
            heard,
            live: true,
            pending: BTreeMap::new(),
        }
    }

    /// Forgets everything of an older incarnation.
    fn reset(&mut self, incarnation: u32) {
        self.incarnation = incarnation;
        self.watermark = 0;
        self.points.clear();
        self.pending.clear();
    }

    /// Records that `(after, upto]` is held; returns whether the watermark moved.
    fn hold(&mut self, after: u32, upto: u32) -> bool {
        if upto <= self.watermark {
            return false;
        }
        if after > self.watermark {
            let entry = self.pending.entry(after).or_insert(upto);
            *entry = (*entry).max(upto);
            if self.pending.len() > MAX_PENDING_RANGES {
                self.pending.pop_last();
            }
            return false;
        }
        self.watermark = upto;
        // Absorb every remembered range the watermark now reaches.
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() > self.watermark {
                break;
            }
            let (_, upto) = entry.remove_entry();
            self.watermark = self.watermark.max(upto);
        }
        true
    }
}

/// Why a reading of this node could not be stored. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The point is new and this node already has `max_points_per_origin`.
    #[error("too many points on this node (limit {limit})")]
    TooManyPoints {
        /// The configured limit.
        limit: usize,
    },
    /// Float not finite, or text with control characters.
    #[error("invalid value")]
    InvalidValue,
    /// The node published `u32::MAX` updates in this incarnation.
    #[error("update counter exhausted: restart to begin a new incarnation")]
    SeqExhausted,
}

/// What applying a delta changed.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    /// Points whose value changed: `(origin, name)`.
    pub(crate) changed: Vec<(NodeId, Name)>,
    /// Chunks that taught us something, as `(origin, after, upto)`: relayed.
    pub(crate) news: Vec<(NodeId, u32, u32)>,
    /// Chunks or points dropped at a limit.
    pub(crate) dropped: u64,
    /// Origins evicted to make room for a new one.
    pub(crate) evicted: Vec<NodeId>,
    /// Chunks of unknown origins that are not live, not taken.
    pub(crate) not_live: u64,
}

/// A request for the points of `origin` with seq in `after+1..=upto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Range {
    pub(crate) origin: NodeId,
    pub(crate) after: u32,
    pub(crate) upto: u32,
}

/// What a digest showed us.
#[derive(Debug, Default)]
pub(crate) struct DigestDiff {
    /// Ranges the digest's sender lacks and we hold.
    pub(crate) to_send: Vec<Range>,
    /// The sender holds something we lack.
    pub(crate) behind: bool,
}

/// The points of every origin in the mesh.
#[derive(Debug, Clone)]
pub struct Store {
    own: NodeId,
    limits: StoreLimits,
    origins: BTreeMap<NodeId, Origin>,
    summary: Cell<Option<(u32, u64)>>,
    dropped: u64,
    evicted: u64,
    /// Whether the store is full since the last "full" log line.
    full: bool,
}

impl Store {
    /// An empty store for node `own`, named `own_name`, in `incarnation`.
    pub fn new(own: NodeId, own_name: Name, incarnation: u32, limits: StoreLimits) -> Store {
        let mut origins = BTreeMap::new();
        origins.insert(own, Origin::new(own_name, incarnation, Instant::ZERO));
        Store {
            own,
            limits,
            origins,
            summary: Cell::new(None),
            dropped: 0,
            evicted: 0,
            full: false,
        }
    }

    /// Origins evicted from a full store so far.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Notes which origins are `live` and removes every one that is not
    /// and was silent for `prune_after` (see the module docs); returns the
    /// removed ids.
    pub(crate) fn prune(
        &mut self,
        now: Instant,
        prune_after: Duration,
        live: impl Fn(NodeId) -> bool,
    ) -> Vec<NodeId> {
        let mut pruned = Vec::new();
        let mut changed = false;
        for (&id, origin) in &mut self.origins {
            if id == self.own {
                continue;
            }
            let is_live = live(id);
            changed |= origin.live != is_live;
            origin.live = is_live;
            if is_live {
                origin.heard = now;
            } else if now.saturating_since(origin.heard) >= prune_after {
                pruned.push(id);
            }
        }
        for id in &pruned {
            self.origins.remove(id);
        }
        if changed || !pruned.is_empty() {
            self.summary.set(None);
        }
        if self.origins.len() < self.limits.max_origins {
            self.full = false;
        }
        pruned
    }

    /// Makes room for a new origin: evicts the longest-silent one that is
    /// not `live`. `None` when every origin is live.
    fn make_room(&mut self, live: &impl Fn(NodeId) -> bool) -> Option<NodeId> {
        let silent = self
            .origins
            .iter()
            .filter(|(&id, _)| id != self.own && !live(id))
            .min_by_key(|(&id, origin)| (origin.heard, id))
            .map(|(&id, _)| id)?;
        self.origins.remove(&silent);
        self.evicted += 1;
        self.summary.set(None);
        Some(silent)
    }

    /// All origins, by id.
    pub fn origins(&self) -> &BTreeMap<NodeId, Origin> {
        &self.origins
    }

    /// One origin.
    pub fn origin(&self, id: NodeId) -> Option<&Origin> {
        self.origins.get(&id)
    }

    /// One point.
    pub fn point(&self, origin: NodeId, name: &str) -> Option<&Point> {
        self.origins.get(&origin)?.points.get(name)
    }

    /// Number of points over all origins.
    pub fn len(&self) -> usize {
        self.origins.values().map(|o| o.points.len()).sum()
    }

    /// Whether no origin has a point.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Updates and origins dropped because a limit was reached.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Hash of the version vector (FNV-1a over `(origin, incarnation,
    /// watermark)`): equal stores have equal hashes.
    pub fn hash(&self) -> u32 {
        self.summary().0
    }

    /// Sum of all watermarks: a rough "how much do I know".
    pub fn progress(&self) -> u64 {
        self.summary().1
    }

    /// Hash and progress, computed once per change of the version vector.
    fn summary(&self) -> (u32, u64) {
        if let Some(summary) = self.summary.get() {
            return summary;
        }
        let mut hash: u32 = 0x811c_9dc5;
        let mut progress: u64 = 0;
        for (id, origin) in self.origins.iter().filter(|(_, o)| o.live) {
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&id.0.to_le_bytes());
            bytes[8..12].copy_from_slice(&origin.incarnation.to_le_bytes());
            bytes[12..].copy_from_slice(&origin.watermark.to_le_bytes());
            for byte in bytes {
                hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
            }
            progress += u64::from(origin.watermark);
        }
        self.summary.set(Some((hash, progress)));
        (hash, progress)
    }

    /// Stores a reading of this node made `age_ms` before `now` (0 for a
    /// fresh one); returns its seq.
    pub fn publish(
        &mut self,
        name: Name,
        value: Value,
        unit: Unit,
        ts_ms: u64,
        (now, age_ms): (Instant, u64),
    ) -> Result<u32, PublishError> {
        if !value.is_valid() {
            return Err(PublishError::InvalidValue);
        }
        let limits = self.limits;
        let Some(own) = self.origins.get_mut(&self.own) else {
            unreachable!("the own origin is inserted in new() and never removed")
        };
        let seq = own
            .watermark
            .checked_add(1)
            .ok_or(PublishError::SeqExhausted)?;
        if !own.points.contains_key(&name) && own.points.len() >= limits.max_points_per_origin {
            return Err(PublishError::TooManyPoints {
                limit: limits.max_points_per_origin,
            });
        }
        let arrived = Arrived {
            heard: now,
            age_ms,
            ts_ms,
        };
        upsert_point(&mut own.points, name, value, unit, seq, arrived, limits);
        own.watermark = seq;
        self.summary.set(None);
        Ok(seq)
    }

    /// Notes that `origin` runs `incarnation`: a newer one drops the old points.
    pub(crate) fn observe_incarnation(&mut self, origin: NodeId, name: &Name, incarnation: u32) {
        if origin == self.own {
            return;
        }
        if let Some(known) = self.origins.get_mut(&origin) {
            if incarnation > known.incarnation {
                known.reset(incarnation);
                known.name = name.clone();
                self.summary.set(None);
            }
        }
    }

    /// Moves this node's own points to a new incarnation, renumbering them
    /// `1..=n` in their current order (used when the frame counter wraps).
    pub(crate) fn reincarnate(&mut self, incarnation: u32) {
        let Some(own) = self.origins.get_mut(&self.own) else {
            unreachable!("the own origin is inserted in new() and never removed")
        };
        let mut order: Vec<(u32, Name)> = own
            .points
            .iter()
            .map(|(name, p)| (p.seq, name.clone()))
            .collect();
        shoal_config::order::sort(&mut order);
        for (new_seq, (_, name)) in (1..).zip(order) {
            if let Some(point) = own.points.get_mut(&name) {
                point.seq = new_seq;
                own.watermark = new_seq;
            }
        }
        if own.points.is_empty() {
            own.watermark = 0;
        }
        own.incarnation = incarnation;
        self.summary.set(None);
    }

    /// The digest frames of the whole store, covering every possible id.
    pub(crate) fn digest(&self, request: bool) -> Vec<Digest> {
        let mut frames = Vec::new();
        let mut current = Digest {
            request,
            first: NodeId(0),
            last: NodeId(u64::MAX),
            entries: heapless::Vec::new(),
        };
        // Fixed part: variant, bool, two ids, list length (<= 96 is one byte).
        let fixed = 1 + 1 + 8 + 8 + 1;
        let mut size = fixed;
        for (id, origin) in self.origins.iter().filter(|(_, o)| o.live) {
            let entry = DigestEntry {
                origin: *id,
                incarnation: origin.incarnation,
                watermark: origin.watermark,
            };
            let entry_len = encoded_len(&entry);
            if size + entry_len > MAX_BODY || current.entries.is_full() {
                current.last = NodeId(id.0 - 1);
                let next_first = *id;
                frames.push(std::mem::replace(
                    &mut current,
                    Digest {
                        request,
                        first: next_first,
                        last: NodeId(u64::MAX),
                        entries: heapless::Vec::new(),
                    },
                ));
                size = fixed;
            }
            // Cannot fail: the frame was closed above when full.
            let _ = current.entries.push(entry);
            size += entry_len;
        }
        frames.push(current);
        frames
    }

    /// Compares a peer's digest with this store.
    /// Origins that are not `live` are neither offered nor asked for.
    pub(crate) fn diff(&self, digest: &Digest, live: impl Fn(NodeId) -> bool) -> DigestDiff {
        let mut diff = DigestDiff::default();
        let mut theirs = digest.entries.iter().peekable();
        for (id, mine) in self.origins.range(digest.first..=digest.last) {
            // Entries of theirs below this id: origins we do not know.
            while let Some(entry) = theirs.next_if(|e| e.origin < *id) {
                diff.behind |= live(entry.origin);
            }
            let entry = theirs.next_if(|e| e.origin == *id);
            if !mine.live {
                continue;
            }
            match entry {
                Some(entry) if entry.incarnation == mine.incarnation => {
                    if mine.watermark > entry.watermark {
                        diff.to_send.push(Range {
                            origin: *id,
                            after: entry.watermark,
                            upto: mine.watermark,
                        });
                    } else if mine.watermark < entry.watermark {
                        diff.behind = true;
                    }
                }
                Some(entry) if entry.incarnation > mine.incarnation => diff.behind = true,
                // They hold an older incarnation, or nothing: send it all. Even
                // an origin without points is sent (an empty chunk announces its
                // name and incarnation), or the version vectors never match.
                _ => diff.to_send.push(Range {
                    origin: *id,
                    after: 0,
                    upto: mine.watermark,
                }),
            }
        }
        diff.behind |= theirs.any(|entry| live(entry.origin));
        diff
    }

    /// Packs the points of `ranges` into as few delta frames as fit, with
    /// their ages at `now`.
    pub(crate) fn deltas(&self, ranges: &[Range], now: Instant) -> Vec<Delta> {
        let mut packer = DeltaPacker::default();
        for range in ranges {
            let Some(origin) = self.origins.get(&range.origin) else {
                continue;
            };
            let mut points: Vec<(&Name, &Point)> = origin
                .points
                .iter()
                .filter(|(_, p)| p.seq > range.after && p.seq <= range.upto)
                .collect();
            shoal_config::order::sort_by_key(&mut points, |(_, p)| p.seq);
            // The freshest point dates the range for people.
            let base = points
                .iter()
                .min_by_key(|(_, p)| p.age(now))
                .map_or((0, 0), |(_, p)| (p.ts_ms, p.age(now)));
            packer.add_range(range, origin, base, now, &points);
        }
        packer.finish()
    }

    /// Applies a delta received from a peer at `now`; `live` tells which
    /// origins are live (only they are taken, and never evicted).
    pub(crate) fn apply(
        &mut self,
        delta: &Delta,
        now: Instant,
        live: impl Fn(NodeId) -> bool,
    ) -> Applied {
        let mut applied = Applied::default();
        let mut points = delta.points.iter();
        for chunk in &delta.chunks {
            let chunk_points = points.by_ref().take(usize::from(chunk.n_points));
            if chunk.origin == self.own {
                // We are the authority on our own points.
                chunk_points.for_each(drop);
                continue;
            }
            let known = self.origins.contains_key(&chunk.origin);
            if !known && !live(chunk.origin) {
                // Made up, or the leftovers of a gone node: not taken.
                applied.not_live += 1;
                chunk_points.for_each(drop);
                continue;
            }
            if !known && self.origins.len() >= self.limits.max_origins {
                if !self.full {
                    self.full = true;
                    log::warn!(
                        "the point store is full ({} nodes, limits.max_nodes): new nodes take the place of the longest-silent node that is not live",
                        self.limits.max_origins
                    );
                }
                match self.make_room(&live) {
                    Some(evicted) => applied.evicted.push(evicted),
                    None => {
                        applied.dropped += 1;
                        chunk_points.for_each(drop);
                        continue;
                    }
                }
            }
            let limits = self.limits;
            if !self.origins.contains_key(&chunk.origin) {
                // A new origin changes the version vector even without points.
                self.summary.set(None);
            }
            let origin = self
                .origins
                .entry(chunk.origin)
                .or_insert_with(|| Origin::new(chunk.origin_name.clone(), chunk.incarnation, now));
            if chunk.incarnation < origin.incarnation {
                chunk_points.for_each(drop);
                continue;
            }
            if chunk.incarnation > origin.incarnation {
                origin.reset(chunk.incarnation);
                self.summary.set(None);
            }
            origin.name = chunk.origin_name.clone();
            let mut learned = false;
            let mut seq = chunk.after;
            for update in chunk_points {
                seq = seq.saturating_add(update.seq_gap);
                let newer = origin.points.get(&update.name).is_none_or(|p| p.seq < seq);
                if !newer {
                    continue;
                }
                if !origin.points.contains_key(&update.name)
                    && origin.points.len() >= limits.max_points_per_origin
                {
                    applied.dropped += 1;
                    continue;
                }
                let ts_ms = (chunk.base_ts_ms + u64::from(chunk.base_age_ms))
                    .saturating_sub(u64::from(update.age_ms));
                let arrived = Arrived {
                    heard: now,
                    age_ms: u64::from(update.age_ms),
                    ts_ms,
                };
                upsert_point(
                    &mut origin.points,
                    update.name.clone(),
                    update.value.clone(),
                    update.unit.clone(),
                    seq,
                    arrived,
                    limits,
                );
                applied.changed.push((chunk.origin, update.name.clone()));
                learned = true;
            }
            if origin.hold(chunk.after, chunk.upto) {
                self.summary.set(None);
                learned = true;
            }
            if learned {
                origin.heard = now;
                applied.news.push((chunk.origin, chunk.after, chunk.upto));
            }
        }
        self.dropped += applied.dropped;
        applied
    }
}

/// When and how old a value arrived, and its origin's timestamp.
#[derive(Debug, Clone, Copy)]
struct Arrived {
    heard: Instant,
    age_ms: u64,
    ts_ms: u64,
}

fn upsert_point(
    points: &mut BTreeMap<Name, Point>,
    name: Name,
    value: Value,
    unit: Unit,
    seq: u32,
    arrived: Arrived,
    limits: StoreLimits,
) {
    let ts_ms = arrived.ts_ms;
    let sample = Sample {
        ts_ms,
        value: value.clone(),
    };
    let point = points.entry(name).or_insert_with(|| Point {
        value: value.clone(),
        unit: unit.clone(),
        ts_ms,
        seq,
        history: VecDeque::new(),
        heard: arrived.heard,
        age_ms: arrived.age_ms,
    });
    point.value = value;
    point.unit = unit;
    point.ts_ms = ts_ms;
    point.seq = seq;
    point.heard = arrived.heard;
    point.age_ms = arrived.age_ms;
    if limits.history_per_point > 0 {
        while point.history.len() >= limits.history_per_point {
            point.history.pop_front();
        }
        point.history.push_back(sample);
    }
}

/// Fills delta frames chunk by chunk, splitting an origin's range across
/// frames when it does not fit, so that every chunk still claims a complete
/// seq range.
#[derive(Default)]
struct DeltaPacker {
    frames: Vec<Delta>,
    current: Option<Delta>,
    size: usize,
}

/// Variant byte plus the two list lengths (each at most 48: one byte).
const DELTA_FIXED: usize = 3;

impl DeltaPacker {
    fn add_range(
        &mut self,
        range: &Range,
        origin: &Origin,
        (base_ts_ms, base_age_ms): (u64, u64),
        now: Instant,
        points: &[(&Name, &Point)],
    ) {
        let mut chunk = Chunk {
            origin: range.origin,
            origin_name: origin.name.clone(),
            incarnation: origin.incarnation,
            after: range.after,
            // Largest value the chunk may claim: sizes below are upper bounds.
            upto: range.upto,
            base_ts_ms,
            base_age_ms: u32::try_from(base_age_ms).unwrap_or(u32::MAX),
            n_points: 0,
        };
        self.open_chunk(encoded_len(&chunk));
        let mut previous_seq = range.after;
        for (name, point) in points {
            let update = PointUpdate {
                seq_gap: point.seq - previous_seq,
                name: (*name).clone(),
                value: point.value.clone(),
                unit: point.unit.clone(),
                age_ms: u32::try_from(point.age(now)).unwrap_or(u32::MAX),
            };
            let update_len = encoded_len(&update);
            let frame = self.current.as_ref().map_or(0, |d| d.points.len());
            if self.size + update_len > MAX_BODY || frame >= MAX_POINTS {
                // Close the chunk at the last point that fit, continue in a new frame.
                let mut closing = chunk.clone();
                closing.upto = previous_seq;
                self.close_chunk(closing);
                self.flush();
                chunk.after = previous_seq;
                chunk.n_points = 0;
                self.open_chunk(encoded_len(&chunk));
            }
            self.push_point(update, update_len);
            chunk.n_points += 1;
            previous_seq = point.seq;
        }
        self.close_chunk(chunk);
    }

    /// Makes room for a chunk header of `len` bytes in the current frame.
    fn open_chunk(&mut self, len: usize) {
        let full = self
            .current
            .as_ref()
            .is_some_and(|d| d.chunks.len() >= MAX_CHUNKS || d.points.len() >= MAX_POINTS);
        if full || self.size + len > MAX_BODY {
            self.flush();
        }
        if self.current.is_none() {
            self.current = Some(Delta {
                chunks: heapless::Vec::new(),
                points: heapless::Vec::new(),
            });
            self.size = DELTA_FIXED;
        }
        self.size += len;
    }

    fn push_point(&mut self, update: PointUpdate, len: usize) {
        if let Some(delta) = self.current.as_mut() {
            // Cannot fail: callers flush at MAX_POINTS.
            let _ = delta.points.push(update);
            self.size += len;
        }
    }

    fn close_chunk(&mut self, chunk: Chunk) {
        if let Some(delta) = self.current.as_mut() {
            // Cannot fail: open_chunk flushed at MAX_CHUNKS.
            let _ = delta.chunks.push(chunk);
        }
    }

    fn flush(&mut self) {
        if let Some(delta) = self.current.take() {
            if !delta.chunks.is_empty() {
                self.frames.push(delta);
            }
        }
        self.size = 0;
    }

    fn finish(mut self) -> Vec<Delta> {
        self.flush();
        self.frames
    }
}

#[cfg(test)]
mod tests;
