//! Sync: pushed deltas and the anti-entropy pull that repairs what they
//! missed.
//!
//! A reading is pushed at once as a `Delta`, and relayed onwards by those
//! who learn something new from it. Lost datagrams are repaired by pulls:
//! every beacon carries a hash of the sender's version vector and its
//! progress (how much it knows). A node whose hash differs and who knows
//! less (or as much) sends its `Digest`, at most once per beacon interval,
//! to the neighbor that showed the most progress; the answer is the
//! `Delta`s of exactly what it lacks, and a digest back if the other side
//! is behind too.
//!
//! ```text
//! A --Beacon {store_hash, progress}--> B     (B differs and knows less)
//! A <--Digest {watermarks, request}--- B
//! A ---Delta {what B lacks}----------> B     (+ Digest back if A is behind)
//! ```

use super::peers::{PeerState, PeerTable};
use super::routes::RouteTable;
use super::store::Range;
use super::time::Instant;
use super::wire::{Delta, Digest, Message, NodeId};
use super::{Destination, Event, Node};
use std::net::SocketAddr;

/// Whom to pull from, and when next. See the module docs.
#[derive(Debug)]
pub(crate) struct AntiEntropy {
    /// No digest is sent before this (one per beacon interval).
    next_digest: Instant,
    /// The neighbor to pull from when `next_digest` comes: the one whose
    /// beacon showed the most progress among those differing from us.
    pull_from: Option<(NodeId, SocketAddr, u64)>,
}

impl AntiEntropy {
    /// Nothing to pull yet; the first pull may go at `now`.
    pub(crate) fn new(now: Instant) -> AntiEntropy {
        AntiEntropy {
            next_digest: now,
            pull_from: None,
        }
    }

    /// When a pull is due, if there is anyone to pull from.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.pull_from.map(|_| self.next_digest)
    }

    /// Whether a pull may go at `now`.
    pub(crate) fn may_pull(&self, now: Instant) -> bool {
        now >= self.next_digest
    }

    /// A neighbor differing from us showed `progress`: it becomes the pull
    /// candidate if it knows more than the current one.
    pub(crate) fn consider(&mut self, sender: NodeId, from: SocketAddr, progress: u64) {
        let better = self.pull_from.is_none_or(|(_, _, best)| progress > best);
        if better {
            self.pull_from = Some((sender, from, progress));
        }
    }
}

impl Node {
    /// Sends our digest to the best pull candidate, if it still differs.
    pub(crate) fn pull(&mut self, now: Instant) {
        let Some((candidate, addr, _)) = self.anti_entropy.pull_from.take() else {
            return;
        };
        let my_hash = self.store.hash();
        let still_differs = self
            .peers
            .get(candidate)
            .is_some_and(|peer| peer.store_hash != my_hash && peer.state != PeerState::Left);
        if !still_differs {
            return;
        }
        self.anti_entropy.next_digest = now + self.config.beacon_interval;
        for digest in self.store.digest(true) {
            self.send(Destination::Unicast(addr), &Message::Digest(digest));
        }
    }

    pub(crate) fn on_digest(&mut self, now: Instant, from: SocketAddr, digest: &Digest) {
        let (peers, routes) = (&self.peers, &self.relay.routes);
        let diff = self.store.diff(digest, |id| is_live(peers, routes, id));
        for delta in self.store.deltas(&diff.to_send, now) {
            self.send(Destination::Unicast(from), &Message::Delta(delta));
        }
        if digest.request && diff.behind {
            for response in self.store.digest(false) {
                let overlaps = response.first <= digest.last && digest.first <= response.last;
                if overlaps {
                    self.send(Destination::Unicast(from), &Message::Digest(response));
                }
            }
        }
    }

    pub(crate) fn on_delta(&mut self, now: Instant, sender: NodeId, delta: &Delta) {
        // A sender's own chunk names it: known before its first beacon.
        if let Some(own) = delta.chunks.iter().find(|chunk| chunk.origin == sender) {
            if let Some(peer) = self.peers.get_mut(sender) {
                if peer.name.is_none() {
                    peer.name = Some(own.origin_name.clone());
                    self.names.dirty = true;
                }
            }
        }
        let (peers, routes) = (&self.peers, &self.relay.routes);
        let live = |id| is_live(peers, routes, id);
        let applied = self.store.apply(delta, now, live);
        self.stats.store_limit_drops += applied.dropped;
        self.stats.store_not_live += applied.not_live;
        self.stats.store_evictions += applied.evicted.len() as u64;
        for origin in applied.evicted {
            self.push_event(Event::OriginForgotten { origin });
        }
        for (origin, name) in applied.changed {
            self.push_event(Event::PointChanged { origin, name });
        }
        // A bridge relays to the LAN too: the sender's broadcast reached only
        // its own part of the mesh (duplicates are dropped by version).
        let sender_on_lan = self.peers.get(sender).is_some_and(|peer| peer.is_lan());
        let nobody_else = sender_on_lan
            && !self.relay.bridging
            && self.unicast_targets(false, Some(sender)).is_empty();
        if applied.news.is_empty() || nobody_else {
            return;
        }
        // Relay what was new to neighbors the sender's broadcast cannot reach.
        let ranges: Vec<Range> = applied
            .news
            .iter()
            .map(|&(origin, after, upto)| Range {
                origin,
                after,
                upto,
            })
            .collect();
        for relay in self.store.deltas(&ranges, now) {
            self.send_everywhere(&Message::Delta(relay), Some(sender));
        }
    }
}

/// Whether `id` is live: a HEALTHY or SUSPECT neighbor, or reached by a
/// route. A live origin's points are never pruned or evicted.
pub(crate) fn is_live(peers: &PeerTable, routes: &RouteTable, id: NodeId) -> bool {
    peers
        .get(id)
        .is_some_and(|p| matches!(p.state, PeerState::Healthy | PeerState::Suspect))
        || routes.get(id).is_some_and(|r| r.route().is_some())
}
