//! The failure detector: when each neighbor's next deadline passes, who asked
//! about a suspect, and which neighbors only unicast reaches.
//!
//! [`super::peers`] holds what is known of each neighbor and the state its
//! liveness implies; this component owns the bookkeeping around it:
//!
//! - `deadlines`, every neighbor's next deadline in one ordered set, so a
//!   timeout visits only the neighbors whose deadline passed (O(log N) per
//!   input, not a scan of the table);
//! - `vouch_requests`, the suspects others asked about in their beacons,
//!   answered with a vouch when we have newer proof of life, until
//!   [`ENOUGH_VOUCHES`] others have answered;
//! - `unicast_only`, neighbors never heard by broadcast, which our
//!   broadcasts do not reach.
//!
//! Every change of a neighbor's liveness goes through [`Detector::update`],
//! which re-evaluates its state and re-indexes its deadline; the node acts on
//! the [`Verdict`] it returns (events, routes, logs). [`Detector::forget`]
//! removes every trace of a neighbor, whether pruned or evicted.

use super::peers::{Peer, PeerState, PeerTable, Timing};
use super::time::Instant;
use super::wire::{Counter, Liveness, Name, NodeId, Vouch, MAX_GOSSIP};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Others stay silent once this many vouches answered a question: enough
/// that the asker gets one despite loss, few enough to keep beacons small.
const ENOUGH_VOUCHES: u8 = 3;

/// Someone asked about a node; we may know it is alive.
#[derive(Debug, Clone, Copy)]
struct VouchRequest {
    asked_at: Instant,
    /// The oldest counter an asker has of the node: a vouch must beat it.
    asked: Counter,
    /// Vouches of others beating `asked`, heard since the question.
    heard: u8,
    /// We answered this question.
    answered: bool,
}

/// What one update of a neighbor changed, for the node to act on.
#[derive(Debug, Default)]
pub(crate) struct Verdict {
    /// Its state changed: its name, the old state and the new one.
    pub(crate) transition: Option<(Option<Name>, PeerState, PeerState)>,
    /// Whether it is silent to us directly changed: routes depend on it.
    pub(crate) directness_changed: bool,
    /// It became directly silent while others vouch for it: a false
    /// UNREACHABLE a detector counting only its own beacons would declare.
    pub(crate) saved_by_vouch: bool,
    /// UNREACHABLE or LEFT for `prune_after`: to be forgotten.
    pub(crate) prunable: bool,
}

/// Deadlines, vouch requests and unicast-only neighbors. See the module docs.
#[derive(Debug, Default)]
pub(crate) struct Detector {
    /// Every neighbor's next deadline, ordered: the first is the next to pass.
    deadlines: BTreeSet<(Instant, NodeId)>,
    vouch_requests: BTreeMap<NodeId, VouchRequest>,
    /// Neighbors never heard by broadcast: our broadcasts do not reach them.
    unicast_only: BTreeSet<NodeId>,
}

impl Detector {
    /// Changes neighbor `id` with `change`, re-evaluates its state at `now`
    /// and re-indexes its deadline. `None` if it is not in the table.
    pub(crate) fn update(
        &mut self,
        peers: &mut PeerTable,
        timing: &Timing,
        now: Instant,
        id: NodeId,
        change: impl FnOnce(&mut Peer),
    ) -> Option<Verdict> {
        let peer = peers.get_mut(id)?;
        let old_deadline = peer.next_deadline(timing);
        change(peer);
        let state = peer.evaluate(now, timing);
        let directly_silent = now.saturating_since(peer.last_direct) >= timing.unreachable_after;
        let mut verdict = Verdict {
            saved_by_vouch: directly_silent
                && !peer.directly_silent
                && !matches!(state, PeerState::Unreachable | PeerState::Left),
            directness_changed: peer.directly_silent != directly_silent,
            ..Verdict::default()
        };
        peer.directly_silent = directly_silent;
        if state != peer.state {
            verdict.transition = Some((peer.name.clone(), peer.state, state));
            peer.state = state;
            peer.state_since = now;
        }
        // Unconditional: a neighbor just added has no entry yet.
        if let Some(at) = old_deadline {
            self.deadlines.remove(&(at, id));
        }
        if let Some(at) = peer.next_deadline(timing) {
            self.deadlines.insert((at, id));
        }
        verdict.prunable = peer.is_prunable(now, timing);
        Some(verdict)
    }

    /// The earliest neighbor deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|&(at, _)| at)
    }

    /// The first deadline entry, if it has passed at `now`.
    pub(crate) fn first_due(&self, now: Instant) -> Option<(Instant, NodeId)> {
        self.deadlines.first().copied().filter(|&(at, _)| at <= now)
    }

    /// Whether `entry` is still the first one and the set has `len` entries:
    /// an update that did not move it (a stale entry, dropped by the caller).
    pub(crate) fn is_unmoved(&self, entry: (Instant, NodeId), len: usize) -> bool {
        self.deadlines.first() == Some(&entry) && self.deadlines.len() == len
    }

    /// Drops one deadline entry.
    pub(crate) fn discard(&mut self, entry: (Instant, NodeId)) {
        self.deadlines.remove(&entry);
    }

    /// Number of deadline entries.
    pub(crate) fn deadline_count(&self) -> usize {
        self.deadlines.len()
    }

    /// Whether neighbor `id` has a deadline entry.
    #[cfg(test)]
    pub(crate) fn has_deadline(&self, id: NodeId) -> bool {
        self.deadlines.iter().any(|&(_, node)| node == id)
    }

    /// Removes every trace of neighbor `id`: its deadline, an open question
    /// about it, its unicast-only mark. Rare (pruning, eviction), so the
    /// deadline is found by a scan rather than trusted to be current.
    pub(crate) fn forget(&mut self, id: NodeId) {
        self.deadlines.retain(|&(_, node)| node != id);
        self.vouch_requests.remove(&id);
        self.unicast_only.remove(&id);
    }

    /// Records whether neighbor `id` is on our LAN (heard by broadcast).
    pub(crate) fn set_lan(&mut self, id: NodeId, lan: bool) {
        if lan {
            self.unicast_only.remove(&id);
        } else {
            self.unicast_only.insert(id);
        }
    }

    /// Whether neighbor `id` is reached by unicast only.
    pub(crate) fn is_unicast_only(&self, id: NodeId) -> bool {
        self.unicast_only.contains(&id)
    }

    /// The neighbors reached by unicast only.
    pub(crate) fn unicast_only(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.unicast_only.iter().copied()
    }

    /// A beacon asked about `suspect` at `now`. At most `max_requests` open
    /// questions are kept.
    pub(crate) fn asked(&mut self, now: Instant, suspect: &Liveness, max_requests: usize) {
        let known = self.vouch_requests.contains_key(&suspect.node);
        let room = known || self.vouch_requests.len() < max_requests;
        match self.vouch_requests.get_mut(&suspect.node) {
            // An open question asked again: serve the neediest asker.
            Some(open) if !open.answered => {
                open.asked = open.asked.min(suspect.counter);
            }
            // A new question, or asked again after we answered: the asker
            // still does not know, so answer again.
            _ if room => {
                self.vouch_requests.insert(
                    suspect.node,
                    VouchRequest {
                        asked_at: now,
                        asked: suspect.counter,
                        heard: 0,
                        answered: false,
                    },
                );
            }
            _ => {}
        }
    }

    /// Another node vouched for `node` at `counter`: one answer fewer needed.
    pub(crate) fn heard_vouch(&mut self, node: NodeId, counter: Counter) {
        if let Some(request) = self.vouch_requests.get_mut(&node) {
            if counter > request.asked {
                request.heard = request.heard.saturating_add(1);
            }
        }
    }

    /// Vouches for nodes others suspect, when we have newer proof of life;
    /// questions older than `expiry` are dropped first.
    pub(crate) fn collect_vouches(
        &mut self,
        peers: &PeerTable,
        now: Instant,
        expiry: Duration,
    ) -> heapless::Vec<Vouch, MAX_GOSSIP> {
        self.vouch_requests
            .retain(|_, request| now.saturating_since(request.asked_at) <= expiry);
        // The oldest questions first: their askers are closest to giving up.
        let mut pending: Vec<(Instant, NodeId)> = self
            .vouch_requests
            .iter()
            .map(|(node, request)| (request.asked_at, *node))
            .collect();
        shoal_config::order::sort(&mut pending);
        let mut vouches = heapless::Vec::new();
        for (_, node) in pending {
            let (Some(peer), Some(request)) = (peers.get(node), self.vouch_requests.get_mut(&node))
            else {
                continue;
            };
            let left = peer.left.is_some();
            let news = peer.alive > request.asked || (left && peer.alive >= request.asked);
            if request.answered || request.heard >= ENOUGH_VOUCHES || !news {
                continue;
            }
            let age = now.saturating_since(peer.last_alive);
            let vouch = Vouch {
                liveness: Liveness {
                    node,
                    counter: peer.alive,
                },
                age_ms: u32::try_from(age.as_millis()).unwrap_or(u32::MAX),
                left,
            };
            if vouches.push(vouch).is_err() {
                break;
            }
            request.answered = true;
        }
        vouches
    }
}
