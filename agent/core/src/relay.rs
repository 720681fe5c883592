//! The node's side of multi-hop: when to advertise routes, applying
//! neighbors' advertisements, and how another node is reached. The route
//! table itself and its loop-freedom argument are in [`super::routes`].

use super::peers::{PeerState, PeerTable, Timing};
use super::routes::{self, RemoteTiming, RouteRefusal, RouteTable, INFINITY};
use super::time::{duration_ms, Instant};
use super::wire::{self, Message, NodeId, RouteEntry, RouteList};
use super::{Event, Node, Reach};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// A node counts in our view (see `Beacon::view`) while heard directly
/// within this many `unreachable_after`: long enough that loss never
/// changes views, so only real topology makes a node a bridge.
const VIEW_WINDOW: u32 = 10;
/// Nodes whose view differs from a neighbor's but are not clearly the bridge
/// advertise their routes anyway this often (in beacons), so unusual
/// topologies are found too.
const ROUTE_PROBE_EVERY: u64 = 30;
/// In a large LAN (`LARGE_VIEW` nodes heard or more), a view (ours or a
/// neighbor's) counts towards bridging only once it has not changed for
/// this long (in beacon intervals): while such a LAN discovers itself every
/// view differs from every other, and a LAN where every node thought itself
/// a bridge would spend its air time on route lists (250 agents started at
/// once on loopback never settled). Smaller LANs bridge at once, as their
/// route lists are short.
const VIEW_SETTLE: u32 = 3;
/// Nodes heard directly from which a LAN counts as large (`VIEW_SETTLE`).
const LARGE_VIEW: u16 = 64;
/// Routes are re-selected at most once per this share of the beacon
/// interval (`refresh_routes`).
const REFRESH_GAP_DIVISOR: u32 = 10;
/// Names ride in route advertisements the first few times, then this often.
const ROUTE_NAMES_EVERY: u64 = 10;

/// The node's multi-hop state: its routes, and whether it bridges.
#[derive(Debug)]
pub(crate) struct Relay {
    /// Routes to nodes beyond one hop.
    pub(crate) routes: RouteTable,
    /// When routes must be re-selected at the latest.
    pub(crate) next_check: Option<Instant>,
    /// Something routes depend on changed: re-select before returning.
    pub(crate) dirty: bool,
    /// Our last beacon found us bridging parts of the mesh: we advertise
    /// routes and relay pushed data to the LAN.
    pub(crate) bridging: bool,
    /// Beacons in a row that found our view differing from a neighbor's.
    bridge_streak: u8,
    /// Our view fingerprint at the last beacon, and since when it is that.
    own_view: Option<(u32, Instant)>,
    /// When routes were last re-selected (see `REFRESH_GAP_DIVISOR`).
    last_refresh: Option<Instant>,
    /// When the peer table, full of live neighbors, last turned one away.
    pub(crate) refused_at: Option<Instant>,
}

impl Relay {
    /// No routes, not bridging; at most `max_nodes` destinations.
    pub(crate) fn new(max_nodes: usize) -> Relay {
        Relay {
            routes: RouteTable::new(max_nodes),
            next_check: None,
            dirty: false,
            bridging: false,
            bridge_streak: 0,
            own_view: None,
            last_refresh: None,
            refused_at: None,
        }
    }
}

/// The neighbors as route selection sees them.
struct Usable<'a> {
    peers: &'a PeerTable,
    timing: Timing,
    now: Instant,
}

impl routes::Neighbors for Usable<'_> {
    fn usable(&self, id: NodeId) -> Option<bool> {
        let peer = self.peers.get(id)?;
        (peer.is_direct(self.now, &self.timing)
            && matches!(peer.state, PeerState::Healthy | PeerState::Suspect))
        .then_some(peer.state == PeerState::Healthy)
    }

    fn direct(&self, id: NodeId) -> bool {
        self.usable(id).is_some()
    }
}

/// Mixes a node id into a fingerprint contribution.
fn mix(id: NodeId) -> u32 {
    let mut z = id.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z ^ (z >> 32)) as u32
}

impl Node {
    /// The route table.
    pub fn routes(&self) -> &RouteTable {
        &self.relay.routes
    }

    /// Whether this node bridges parts of the mesh (and so advertises routes).
    pub fn is_bridging(&self) -> bool {
        self.relay.bridging
    }

    /// How this node reaches `id` now, if it knows it at all.
    pub fn reach(&self, now: Instant, id: NodeId) -> Option<Reach> {
        if id == self.id {
            return Some(Reach {
                state: PeerState::Healthy,
                hops: 0,
                via: None,
            });
        }
        let peer = self.peers.get(id);
        let dest = self.relay.routes.get(id);
        let routed = dest.and_then(|d| d.route().map(|r| (d.state, r.hops(), r.via)));
        if let Some(peer) = peer {
            let direct = peer.is_direct(now, &self.timing);
            let fresh = now.saturating_since(peer.last_direct) < self.timing.suspect_after;
            let routed_healthy = routed.is_some_and(|(state, _, _)| state == PeerState::Healthy);
            if direct && (fresh || !routed_healthy) {
                return Some(Reach {
                    state: peer.state,
                    hops: 1,
                    via: None,
                });
            }
        }
        if let Some((state, hops, via)) = routed {
            return Some(Reach {
                state,
                hops,
                via: Some(via),
            });
        }
        if let Some(peer) = peer {
            return Some(Reach {
                state: peer.state,
                hops: 1,
                via: None,
            });
        }
        dest.map(|d| Reach {
            state: d.state,
            hops: INFINITY,
            via: None,
        })
    }

    /// Every node this node knows (itself, neighbors, nodes beyond), by id,
    /// with how it is reached.
    pub fn nodes(&self, now: Instant) -> Vec<(NodeId, Reach)> {
        let mut ids: Vec<NodeId> = std::iter::once(self.id)
            .chain(self.peers.iter().map(|p| p.id))
            .chain(self.relay.routes.iter().map(|(id, _)| *id))
            .collect();
        shoal_config::order::sort(&mut ids);
        ids.dedup();
        ids.into_iter()
            .filter_map(|id| self.reach(now, id).map(|reach| (id, reach)))
            .collect()
    }

    /// The name of any node this node knows.
    pub fn node_name(&self, id: NodeId) -> Option<wire::Name> {
        if id == self.id {
            return Some(self.name.clone());
        }
        self.peers
            .get(id)
            .and_then(|p| p.name.clone())
            .or_else(|| self.relay.routes.get(id).and_then(|d| d.name.clone()))
            .or_else(|| self.store.origin(id).map(|o| o.name.clone()))
    }

    /// The unicast address of the next hop towards `id`.
    pub(super) fn next_hop(&self, now: Instant, id: NodeId) -> Option<SocketAddr> {
        let reach = self.reach(now, id)?;
        if matches!(reach.state, PeerState::Unreachable | PeerState::Left) || reach.hops == 0 {
            return None;
        }
        let hop = reach.via.unwrap_or(id);
        self.peers.get(hop).map(|p| p.addr)
    }

    pub(super) fn remote_timing(&self) -> RemoteTiming {
        RemoteTiming {
            suspect_after: self.timing.suspect_after,
            unreachable_after: self.timing.unreachable_after,
            beacon_interval: self.config.beacon_interval,
            prune_after: self.timing.prune_after,
        }
    }

    /// Nodes heard directly lately (see `VIEW_WINDOW`), and their fingerprint
    /// with ours.
    ///
    /// Ids heard from one source address count in no view: real nodes each
    /// have their own, so these are ids made up behind one socket (a flood
    /// of forged beacons in an open mesh). Every node keeps a different few
    /// of them, and in a LAN of 250 counting them made every view differ,
    /// so nearly every node bridged at once and the route lists saturated
    /// the mesh for minutes.
    pub(super) fn view(&self, now: Instant) -> (u16, u32) {
        let window = self.timing.unreachable_after * VIEW_WINDOW;
        let recent = |peer: &&super::peers::Peer| {
            peer.left.is_none() && now.saturating_since(peer.last_direct) < window
        };
        let mut senders: BTreeMap<SocketAddr, u16> = BTreeMap::new();
        for peer in self.peers.iter().filter(recent) {
            let count = senders.entry(peer.addr).or_insert(0);
            *count = count.saturating_add(1);
        }
        let mut heard: u16 = 0;
        let mut view = mix(self.id);
        for peer in self.peers.iter().filter(recent) {
            if senders.get(&peer.addr) == Some(&1) {
                heard = heard.saturating_add(1);
                view ^= mix(peer.id);
            }
        }
        (heard, view)
    }

    /// Whether we may be the only path between some of our neighbors: a
    /// neighbor beyond the LAN, or a live neighbor whose view differs from
    /// ours while it hears no more nodes than we do. Now and then, any
    /// difference at all. In a large LAN the views (or the unicast-only
    /// neighbor) must have settled first (`VIEW_SETTLE`); while the peer
    /// table turns nodes away, views do not count at all.
    pub(super) fn is_bridge(&mut self, now: Instant, heard: u16, view: u32) -> bool {
        let ours_since = match self.relay.own_view {
            Some((known, since)) if known == view => since,
            _ => {
                self.relay.own_view = Some((view, now));
                now
            }
        };
        let settle = self.config.beacon_interval * VIEW_SETTLE;
        let large = heard >= LARGE_VIEW;
        let settled = |since: Instant| !large || now.saturating_since(since) >= settle;
        let live = |p: &&super::peers::Peer| {
            matches!(p.state, PeerState::Healthy | PeerState::Suspect) && p.heard > 0
        };
        // Heard by unicast only, for a settle time: in a crowded LAN a
        // neighbor's answer can come before any of its beacons got through.
        let remote = self.detector.unicast_only().any(|id| {
            self.peers.get(id).is_some_and(|p| {
                matches!(p.state, PeerState::Healthy | PeerState::Suspect) && settled(p.first_heard)
            })
        });
        let probe = self.stats.beacons_sent.is_multiple_of(ROUTE_PROBE_EVERY);
        // A node turned away for want of room (lately, see `VIEW_WINDOW`)
        // means the table holds some of the LAN, a different part on every
        // node: views then differ for good and say nothing about topology
        // (500 simulated nodes with room for 256 all bridged, forever).
        // Only refusals count, not a full table: a table that fits the LAN
        // exactly, or is full of dead or forged entries, still has views.
        let window = self.timing.unreachable_after * VIEW_WINDOW;
        let overflowing = self
            .relay
            .refused_at
            .is_some_and(|at| now.saturating_since(at) < window);
        let differs =
            !overflowing
                && settled(ours_since)
                && self.peers.iter().filter(live).any(|p| {
                    p.view != view && (p.heard <= heard || probe) && settled(p.view_since)
                });
        // Views differ for a moment while nodes discover each other: only a
        // difference seen in two beacons in a row counts.
        self.relay.bridge_streak = if differs {
            self.relay.bridge_streak.saturating_add(1)
        } else {
            0
        };
        remote || self.relay.bridge_streak >= 2
    }

    /// Advertises every node we reach, and withdrawals of those just lost.
    pub(super) fn send_routes(&mut self, now: Instant) {
        let with_names = self.stats.routes_sent < 3
            || (self.stats.routes_sent / 3).is_multiple_of(ROUTE_NAMES_EVERY);
        let mut ids: Vec<NodeId> = self
            .peers
            .iter()
            .map(|p| p.id)
            .chain(self.relay.routes.iter().map(|(id, _)| *id))
            .collect();
        shoal_config::order::sort(&mut ids);
        ids.dedup();
        let entries: Vec<RouteEntry> = ids
            .into_iter()
            .filter_map(|id| self.route_entry(now, id, with_names))
            .collect();
        // Feasibility distances follow what we advertise.
        for entry in &entries {
            if entry.metric >= INFINITY {
                if let Some(dest) = self.relay.routes.get_mut(entry.node) {
                    dest.withdrawals = dest.withdrawals.saturating_sub(1);
                }
                continue;
            }
            if self.relay.routes.get(entry.node).is_none() {
                let _ = self.relay.routes.ensure(now, entry.node);
            }
            if let Some(dest) = self.relay.routes.get_mut(entry.node) {
                dest.advertised(entry.counter, entry.metric);
            }
        }
        // Pack by size: names and counters vary in length.
        let mut list = RouteList {
            entries: heapless::Vec::new(),
        };
        let mut size = 2;
        for entry in entries {
            let len = wire::encoded_len(&entry);
            if size + len > wire::MAX_BODY - 8 || list.entries.is_full() {
                self.flush_routes(&mut list);
                size = 2;
            }
            size += len;
            if list.entries.push(entry).is_err() {
                break;
            }
        }
        self.flush_routes(&mut list);
        // A tighter feasibility distance may rule out a selected route.
        self.relay.dirty = true;
        self.refresh_routes(now);
    }

    /// What we advertise about `id`: exactly the route in use, so what
    /// others learn from us is what we forward along; a recent goodbye; a
    /// withdrawal; or nothing.
    fn route_entry(&self, now: Instant, id: NodeId, with_names: bool) -> Option<RouteEntry> {
        let age_ms =
            |at: Instant| u32::try_from(duration_ms(now.saturating_since(at))).unwrap_or(u32::MAX);
        let left_window = self.timing.unreachable_after * 2;
        let name = |id: NodeId| if with_names { self.node_name(id) } else { None };
        let key = |id: NodeId| {
            if with_names {
                self.public_key_of(id)
            } else {
                None
            }
        };
        let reach = self.reach(now, id);
        let peer = self.peers.get(id);
        let dest = self.relay.routes.get(id);
        let live =
            reach.is_some_and(|r| matches!(r.state, PeerState::Healthy | PeerState::Suspect));
        let entry = match (reach, peer, dest.and_then(|d| d.route())) {
            (Some(r), Some(peer), _) if live && r.via.is_none() => RouteEntry {
                node: id,
                counter: peer.alive,
                metric: 1,
                age_ms: age_ms(peer.last_alive),
                left: false,
                name: name(id),
                key: key(id),
            },
            (Some(r), _, Some(route)) if live && r.via.is_some() => RouteEntry {
                node: id,
                counter: route.counter,
                metric: route.hops(),
                age_ms: age_ms(route.heard_at),
                left: false,
                name: name(id),
                key: key(id),
            },
            (_, Some(peer), _)
                if peer.state == PeerState::Left
                    && now.saturating_since(peer.state_since) < left_window =>
            {
                RouteEntry {
                    node: id,
                    counter: peer.alive,
                    metric: 1,
                    age_ms: age_ms(peer.last_alive),
                    left: true,
                    name: None,
                    key: None,
                }
            }
            (_, _, _) if dest.is_some_and(|d| d.withdrawals > 0) => RouteEntry {
                node: id,
                counter: dest
                    .and_then(|d| d.newest)
                    .map(|(c, _)| c)
                    .unwrap_or_default(),
                metric: INFINITY,
                age_ms: 0,
                left: false,
                name: None,
                key: None,
            },
            _ => return None,
        };
        Some(entry)
    }

    fn flush_routes(&mut self, list: &mut RouteList) {
        if list.entries.is_empty() {
            return;
        }
        let message = Message::Routes(std::mem::replace(
            list,
            RouteList {
                entries: heapless::Vec::new(),
            },
        ));
        self.stats.routes_sent += 1;
        self.send_everywhere(&message, None);
    }

    /// A neighbor's advertisement.
    pub(super) fn on_routes(&mut self, now: Instant, sender: NodeId, list: RouteList) {
        for entry in list.entries {
            if entry.node == self.id || entry.node == sender {
                continue;
            }
            let known = self.peers.get(entry.node).map(|p| p.alive);
            let age = Duration::from_millis(u64::from(entry.age_ms));
            if age > now.saturating_since(self.started) {
                // Older than this incarnation: it may have been routed
                // through our previous life, which left no feasibility
                // distances behind. Fresher counters follow within a beacon.
                continue;
            }
            // "It left" counts only with its signed goodbye in hand, and
            // then whatever the entry says (a neighbor that has not got the
            // goodbye yet still advertises it alive).
            let left = self
                .lives
                .farewells
                .get(&entry.node)
                .is_some_and(|f| f.incarnation >= entry.counter.incarnation);
            let result = self.relay.routes.update(
                now,
                sender,
                entry.node,
                entry.counter,
                entry.metric,
                age,
                left,
                entry.name,
                known,
            );
            if let Some(key) = entry.key.filter(|k| crate::sign::node_id(k) == entry.node) {
                self.relay.routes.set_key(entry.node, key);
            }
            match result {
                Ok(()) => {}
                Err(RouteRefusal::Implausible) => {
                    self.stats.routes_implausible += 1;
                    log::debug!(
                        "refused a route to {} from {sender}: implausible counter",
                        entry.node
                    );
                }
                Err(RouteRefusal::TableFull) => self.stats.routes_table_full += 1,
            }
        }
        self.relay.dirty = true;
    }

    /// Re-selects routes if anything they depend on changed, and reports
    /// the changes.
    pub(super) fn refresh_routes(&mut self, now: Instant) {
        if !self.relay.dirty || self.relay.routes.is_empty() {
            self.relay.dirty = false;
            return;
        }
        // Not again within a tenth of a beacon interval: selection visits
        // every destination, and a large mesh in flux (hundreds of nodes
        // starting at once) changes something with nearly every frame.
        // `next_check` brings the pending re-selection at the end of the gap.
        let gap = self.config.beacon_interval / REFRESH_GAP_DIVISOR;
        if let Some(at) = self.relay.last_refresh.map(|last| last + gap) {
            if now < at {
                // Any earlier check is due already: it waits for the gap too.
                self.relay.next_check = Some(at);
                return;
            }
        }
        self.relay.last_refresh = Some(now);
        self.relay.dirty = false;
        let timing = self.remote_timing();
        let usable = Usable {
            peers: &self.peers,
            timing: self.timing,
            now,
        };
        let (changes, next) = self.relay.routes.select(now, &timing, &usable);
        self.relay.next_check = next;
        for change in changes {
            let name = self.node_name(change.node);
            let label = name
                .as_ref()
                .map_or_else(|| change.node.to_string(), |n| n.to_string());
            let neighbor = self.peers.get(change.node).is_some();
            if let Some((from, to)) = change.state {
                if !neighbor {
                    let level = match (from, to) {
                        (PeerState::Healthy, PeerState::Suspect)
                        | (PeerState::Suspect, PeerState::Healthy) => log::Level::Debug,
                        _ => log::Level::Info,
                    };
                    log::log!(level, "node {label}: {from} -> {to} (beyond one hop)");
                    self.push_event(Event::PeerStateChanged {
                        peer: change.node,
                        name: name.clone(),
                        from,
                        to,
                    });
                }
            }
            log::debug!(
                "route to {label}: {}",
                match change.route {
                    Some((via, hops)) => format!("{hops} hops via {via}"),
                    None => "none".to_owned(),
                }
            );
            self.push_event(Event::RouteChanged {
                node: change.node,
                route: change.route,
            });
        }
    }
}
