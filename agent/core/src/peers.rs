//! Neighbors and their health.
//!
//! A neighbor is any node we received an authenticated frame from. Its
//! liveness is the newest counter we know of it and when that counter was
//! current: taken from its own frames, or from a *vouch* of another neighbor
//! ("I heard it at counter c, 300 ms ago"). Since counters only grow, a vouch
//! is proof of life, not an opinion, and it carries its age so a crash is
//! still detected on time.
//!
//! ```text
//!            silent >= suspect_after          silent >= unreachable_after
//!  HEALTHY ---------------------------> SUSPECT ---------------------------> UNREACHABLE
//!     ^  <------------------------------'   |                                   |
//!     |        newer counter (own frame or vouch)                               |
//!     '-------------------------------------------------------------------------'
//!  any state --Leave (or a vouch saying it left)--> LEFT --frame of a later counter--> HEALTHY
//! ```

use super::time::Instant;
use super::wire::{Counter, Meta, Name, NodeId, ReplayWindow};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// The health of a node as this agent sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PeerState {
    /// Heard (directly or through a vouch) within `suspect_after`.
    Healthy,
    /// Silent for `suspect_after`; we ask the others about it.
    Suspect,
    /// Silent for `unreachable_after` and nobody vouched for it.
    Unreachable,
    /// Said goodbye.
    Left,
}

impl PeerState {
    /// The name used by the CLI and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            PeerState::Healthy => "HEALTHY",
            PeerState::Suspect => "SUSPECT",
            PeerState::Unreachable => "UNREACHABLE",
            PeerState::Left => "LEFT",
        }
    }
}

impl fmt::Display for PeerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One neighbor.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Its id.
    pub id: NodeId,
    /// Its name, once a beacon told us.
    pub name: Option<Name>,
    /// Where its last frame came from; unicast replies go there.
    pub addr: SocketAddr,
    /// Current state.
    pub state: PeerState,
    /// Since when.
    pub state_since: Instant,
    /// Its incarnation, from the frames it sent us.
    pub incarnation: u32,
    /// Newest counter known of it (own frames or vouches).
    pub alive: Counter,
    /// When `alive` was current.
    pub last_alive: Instant,
    /// Last frame received from it directly.
    pub last_direct: Instant,
    /// Last broadcast frame from it: it shares a LAN with us.
    pub last_broadcast: Option<Instant>,
    /// Counter of its goodbye, while it is gone.
    pub left: Option<Counter>,
    /// Authenticated frames received from it.
    pub frames_in: u64,
    /// Unicast frames sent to it.
    pub frames_out: u64,
    /// Store hash of its last beacon.
    pub store_hash: u32,
    /// Store progress of its last beacon.
    pub progress: u64,
    /// Its metadata, once sent.
    pub meta: Option<Meta>,
    /// Its beacons that reached us directly.
    pub beacons_in: u64,
    /// When we first heard it (in this incarnation of it).
    pub first_heard: Instant,
    /// Nodes it heard directly lately, by its last beacon (0: no beacon yet).
    pub heard: u16,
    /// Fingerprint of those nodes, by its last beacon.
    pub view: u32,
    /// Since when `view` has been what it is.
    pub(crate) view_since: Instant,
    pub(crate) window: ReplayWindow,
    /// Silent to us (no direct frame) for `unreachable_after`.
    pub(crate) directly_silent: bool,
    /// The body of its last beacon if that one was quiet (no suspects, no
    /// vouches, no meta) and short; empty otherwise. A beacon with the same
    /// body says nothing new and is not decoded again (`Node::receive`).
    pub(crate) quiet_beacon: heapless::Vec<u8, QUIET_BEACON_MAX>,
    /// The counter of the newest beacon whose contents were taken in: an
    /// older one read later (routine beacons wait in a resting socket, news
    /// does not) still counts as a sign of life, but says nothing current.
    pub(crate) beacon_counter: u64,
}

/// The longest beacon body remembered as quiet: a steady beacon is about
/// 30 bytes (its name, hashes, counts).
pub(crate) const QUIET_BEACON_MAX: usize = 64;

impl Peer {
    fn new(now: Instant, id: NodeId, addr: SocketAddr, counter: Counter) -> Peer {
        Peer {
            id,
            name: None,
            addr,
            state: PeerState::Healthy,
            state_since: now,
            incarnation: counter.incarnation,
            alive: counter,
            last_alive: now,
            last_direct: now,
            last_broadcast: None,
            left: None,
            frames_in: 0,
            frames_out: 0,
            store_hash: 0,
            progress: 0,
            meta: None,
            beacons_in: 0,
            first_heard: now,
            heard: 0,
            view: 0,
            view_since: now,
            window: ReplayWindow::default(),
            directly_silent: false,
            quiet_beacon: heapless::Vec::new(),
            beacon_counter: 0,
        }
    }

    /// The state its liveness implies at `now`.
    pub(crate) fn evaluate(&self, now: Instant, timing: &Timing) -> PeerState {
        if self.left.is_some() {
            return PeerState::Left;
        }
        let silence = now.saturating_since(self.last_alive);
        if silence >= timing.unreachable_after {
            PeerState::Unreachable
        } else if silence >= timing.suspect_after {
            PeerState::Suspect
        } else {
            PeerState::Healthy
        }
    }

    /// When it must next be looked at if nothing is heard: its state changes,
    /// or its direct silence reaches `unreachable_after` (counted as a vouch
    /// save if others keep it alive).
    pub(crate) fn next_deadline(&self, timing: &Timing) -> Option<Instant> {
        let state_change = match self.state {
            PeerState::Healthy => Some(self.last_alive + timing.suspect_after),
            PeerState::Suspect => Some(self.last_alive + timing.unreachable_after),
            PeerState::Unreachable | PeerState::Left => Some(self.state_since + timing.prune_after),
        };
        let direct_silence = (!self.directly_silent
            && matches!(self.state, PeerState::Healthy | PeerState::Suspect))
        .then(|| self.last_direct + timing.unreachable_after);
        [state_change, direct_silence].into_iter().flatten().min()
    }

    /// Whether it has been UNREACHABLE or LEFT for `prune_after` at `now`.
    pub(crate) fn is_prunable(&self, now: Instant, timing: &Timing) -> bool {
        matches!(self.state, PeerState::Unreachable | PeerState::Left)
            && now.saturating_since(self.state_since) >= timing.prune_after
    }

    /// Whether it shares a broadcast domain with us: one of its broadcasts
    /// reached us. A LAN neighbor that falls silent stays one (our broadcasts
    /// still cover it); only a neighbor never heard by broadcast (a static
    /// peer across a router or VPN) is sent to by unicast.
    pub fn is_lan(&self) -> bool {
        self.last_broadcast.is_some()
    }

    /// Share of its beacons that reached us since we first heard it: it
    /// sends one every 85-95 % of `interval` (0.9 on average). At most 1.
    pub fn beacon_rate(&self, now: Instant, interval: Duration) -> f64 {
        let period = interval.as_secs_f64() * 0.9;
        let known = now.saturating_since(self.first_heard).as_secs_f64();
        let expected = (known / period).floor() + 1.0;
        if period <= 0.0 {
            return 1.0;
        }
        (self.beacons_in as f64 / expected).min(1.0)
    }

    /// Whether a frame sent to it now has a fair chance: heard directly
    /// within `unreachable_after` and not gone.
    pub fn is_direct(&self, now: Instant, timing: &Timing) -> bool {
        self.left.is_none() && now.saturating_since(self.last_direct) < timing.unreachable_after
    }

    /// Notes proof of life: counter `counter` was current at `at`.
    pub(crate) fn observe(&mut self, counter: Counter, at: Instant) {
        if counter > self.alive {
            self.alive = counter;
            self.last_alive = self.last_alive.max(at);
        }
        if self.left.is_some_and(|left| counter > left) {
            self.left = None;
        }
    }
}

/// The failure-detector timing, copied from the node's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Silence after which a neighbor is SUSPECT.
    pub suspect_after: Duration,
    /// Silence after which a neighbor is UNREACHABLE.
    pub unreachable_after: Duration,
    /// Time in UNREACHABLE or LEFT after which a neighbor is forgotten.
    pub prune_after: Duration,
}

/// The table is full of live neighbors; the newcomer was not added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TableFull;

/// All neighbors, bounded.
#[derive(Debug, Clone)]
pub struct PeerTable {
    peers: BTreeMap<NodeId, Peer>,
    capacity: usize,
}

impl PeerTable {
    /// An empty table holding at most `capacity` neighbors.
    pub fn new(capacity: usize) -> PeerTable {
        PeerTable {
            peers: BTreeMap::new(),
            capacity,
        }
    }

    /// One neighbor.
    pub fn get(&self, id: NodeId) -> Option<&Peer> {
        self.peers.get(&id)
    }

    pub(crate) fn get_mut(&mut self, id: NodeId) -> Option<&mut Peer> {
        self.peers.get_mut(&id)
    }

    /// All neighbors, by id.
    pub fn iter(&self) -> impl Iterator<Item = &Peer> {
        self.peers.values()
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Peer> {
        self.peers.values_mut()
    }

    /// Number of neighbors.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Forgets a neighbor.
    pub(crate) fn remove(&mut self, id: NodeId) -> Option<Peer> {
        self.peers.remove(&id)
    }

    /// Adds a neighbor first heard at `now` (nothing if it is known). When the
    /// table is full, the stalest UNREACHABLE or LEFT neighbor makes room and
    /// its id is returned; live ones are never evicted, so then the newcomer
    /// is refused.
    pub(crate) fn insert(
        &mut self,
        now: Instant,
        id: NodeId,
        addr: SocketAddr,
        counter: Counter,
        unproven_evictable: Option<&dyn Fn(SocketAddr) -> bool>,
    ) -> Result<Option<NodeId>, TableFull> {
        let mut evicted = None;
        if !self.peers.contains_key(&id) && self.peers.len() >= self.capacity {
            let stalest = self
                .peers
                .values()
                .filter(|p| matches!(p.state, PeerState::Unreachable | PeerState::Left))
                .min_by_key(|p| p.last_alive)
                .map(|p| p.id);
            let victim = match (stalest, unproven_evictable) {
                (Some(stalest), _) => stalest,
                (None, Some(checked)) => self.least_proven(checked).ok_or(TableFull)?,
                (None, None) => return Err(TableFull),
            };
            self.peers.remove(&victim);
            evicted = Some(victim);
        }
        self.peers
            .entry(id)
            .or_insert_with(|| Peer::new(now, id, addr, counter));
        Ok(evicted)
    }

    /// In an open mesh, a table full of live neighbors makes room by
    /// evicting one that has not proven itself: proven is a node alone at
    /// its address whose address passed an address check (`checked`), which
    /// neither ids made up behind one address nor spoofed sources can be.
    /// The victim is in the largest group of ids sharing an address, and
    /// the longest there without proving itself; `None` when all are proven.
    fn least_proven(&self, checked: &dyn Fn(SocketAddr) -> bool) -> Option<NodeId> {
        let mut sharing: BTreeMap<SocketAddr, usize> = BTreeMap::new();
        for peer in self.peers.values() {
            *sharing.entry(peer.addr).or_insert(0) += 1;
        }
        let group = |peer: &Peer| sharing.get(&peer.addr).copied().unwrap_or(0);
        self.peers
            .values()
            .filter(|p| group(p) > 1 || !checked(p.addr))
            .max_by_key(|p| (group(p), std::cmp::Reverse(p.first_heard), p.id))
            .map(|p| p.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMING: Timing = Timing {
        suspect_after: Duration::from_secs(2),
        unreachable_after: Duration::from_secs(3),
        prune_after: Duration::from_secs(60),
    };

    fn addr() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 2], 20195))
    }

    fn counter(seq: u32) -> Counter {
        Counter {
            incarnation: 1,
            seq,
        }
    }

    #[test]
    fn silence_walks_healthy_suspect_unreachable() {
        let peer = Peer::new(Instant::ZERO, NodeId(1), addr(), counter(1));
        let at = |ms| Instant::from_millis(ms);
        assert_eq!(peer.evaluate(at(1999), &TIMING), PeerState::Healthy);
        assert_eq!(peer.evaluate(at(2000), &TIMING), PeerState::Suspect);
        assert_eq!(peer.evaluate(at(3000), &TIMING), PeerState::Unreachable);
    }

    #[test]
    fn a_vouch_carries_its_age() {
        let mut peer = Peer::new(Instant::ZERO, NodeId(1), addr(), counter(1));
        // At 2.5 s someone says: counter 3 was current 700 ms ago.
        peer.observe(counter(3), Instant::from_millis(1800));
        assert_eq!(peer.last_alive, Instant::from_millis(1800));
        assert_eq!(
            peer.evaluate(Instant::from_millis(4799), &TIMING),
            PeerState::Suspect
        );
        assert_eq!(
            peer.evaluate(Instant::from_millis(4800), &TIMING),
            PeerState::Unreachable
        );
    }

    #[test]
    fn an_older_counter_proves_nothing() {
        let mut peer = Peer::new(Instant::ZERO, NodeId(1), addr(), counter(5));
        peer.observe(counter(4), Instant::from_millis(1500));
        assert_eq!(peer.last_alive, Instant::ZERO);
        assert_eq!(peer.alive, counter(5));
    }

    #[test]
    fn left_is_sticky_until_a_later_counter() {
        let mut peer = Peer::new(Instant::ZERO, NodeId(1), addr(), counter(5));
        peer.left = Some(counter(6));
        peer.observe(counter(6), Instant::from_millis(10));
        assert_eq!(
            peer.evaluate(Instant::from_millis(10), &TIMING),
            PeerState::Left
        );
        let reborn = Counter {
            incarnation: 2,
            seq: 1,
        };
        peer.observe(reborn, Instant::from_millis(20));
        assert_eq!(
            peer.evaluate(Instant::from_millis(20), &TIMING),
            PeerState::Healthy
        );
    }

    #[test]
    fn full_table_evicts_the_stalest_dead_peer_and_refuses_when_all_live() {
        let mut table = PeerTable::new(2);
        table
            .insert(Instant::ZERO, NodeId(1), addr(), counter(1), None)
            .expect("room");
        table
            .insert(Instant::ZERO, NodeId(2), addr(), counter(1), None)
            .expect("room");
        assert_eq!(
            table
                .insert(Instant::ZERO, NodeId(3), addr(), counter(1), None)
                .err(),
            Some(TableFull)
        );
        assert_eq!(table.len(), 2);
        table.get_mut(NodeId(2)).expect("present").state = PeerState::Unreachable;
        table
            .insert(Instant::ZERO, NodeId(3), addr(), counter(1), None)
            .expect("evicts 2");
        assert!(table.get(NodeId(2)).is_none());
        assert!(table.get(NodeId(3)).is_some());
        assert_eq!(table.len(), 2);
    }
}
