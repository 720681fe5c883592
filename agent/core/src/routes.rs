//! Routes to nodes beyond one hop: a distance-vector table in the style of
//! Babel (RFC 8966).
//!
//! Nodes that bridge parts of the mesh (a Pi with two NICs, a node with a
//! static peer across a router) advertise, once per beacon interval, every
//! node they can reach: `(node, counter, metric, age)`. The **counter is the
//! destination's own frame counter**, which only its owner advances: it is
//! Babel's sequence number and, at the same time, the heartbeat that carries
//! the destination's liveness to us through any path.
//!
//! Loop freedom comes from Babel's feasibility condition. For each
//! destination we remember the feasibility distance `FD = (counter, metric)`
//! of what we last advertised. A route heard from a neighbor is *feasible*
//! only if its counter is newer than `FD.counter`, or as new with a metric
//! strictly below `FD.metric`; only feasible routes are selected. So no
//! node ever selects a route through a node that is (or could be) behind it,
//! and metrics never count to infinity. A destination whose only routes are
//! infeasible waits for its next heartbeat (about one beacon interval), which
//! is newer than anything in circulation and so feasible through any path.
//!
//! Metrics are hop counts; [`INFINITY`] (16) and above mean "no route" and
//! are how a lost route is withdrawn. Every route ages with its counter: a
//! route whose counter is older than the destination's timeout (see
//! [`RemoteTiming`]) is stale and never selected.

use super::peers::PeerState;
use super::time::Instant;
use super::wire::{Counter, Name, NodeId};
use std::collections::BTreeMap;
use std::time::Duration;

/// A metric meaning "unreachable": withdrawals carry it, and anything at or
/// above it is treated as one.
pub const INFINITY: u8 = 16;
/// A lost route is withdrawn in this many advertisements.
pub const WITHDRAWALS: u8 = 3;
/// Most alternative routes kept per destination (one per advertising
/// neighbor, the best ones).
pub const MAX_ALTERNATIVES: usize = 4;
/// Each hop adds up to one beacon interval of delay to a heartbeat; timeouts
/// grow with the hop count up to this many extra intervals.
pub const MAX_LAG_HOPS: u8 = 4;
/// A destination's own frames advance its counter; no node sends more than
/// this many frames per second, so a claimed counter further ahead of the
/// newest we know than this rate allows is refused as implausible.
pub const MAX_FRAME_RATE: u64 = 1000;
/// Restarts per second a node could possibly make (for the same check on
/// incarnations).
pub const MAX_RESTART_RATE: u64 = 10;

/// Liveness timeouts of a destination `hops` away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteTiming {
    /// Silence before a direct neighbor is SUSPECT.
    pub suspect_after: Duration,
    /// Silence before a direct neighbor is UNREACHABLE.
    pub unreachable_after: Duration,
    /// The beacon interval: the most delay one hop adds to a heartbeat.
    pub beacon_interval: Duration,
    /// Time without any route after which a destination is forgotten.
    pub prune_after: Duration,
}

impl RemoteTiming {
    fn lag(&self, hops: u8) -> Duration {
        let extra = hops.saturating_sub(1).min(MAX_LAG_HOPS);
        self.beacon_interval * u32::from(extra)
    }

    /// Counter age at which a destination `hops` away turns SUSPECT.
    pub fn suspect_after(&self, hops: u8) -> Duration {
        self.suspect_after + self.lag(hops)
    }

    /// Counter age at which a route `hops` long is stale.
    pub fn unreachable_after(&self, hops: u8) -> Duration {
        self.unreachable_after + self.lag(hops)
    }

    /// After this long without a usable route, a destination's feasibility
    /// distance is reset: every route derived from its old counters is stale
    /// everywhere by then.
    pub fn forget_after(&self) -> Duration {
        self.unreachable_after(INFINITY) + self.beacon_interval
    }
}

/// One neighbor's offer of a path to a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The neighbor (next hop).
    pub via: NodeId,
    /// The destination's counter the neighbor advertised.
    pub counter: Counter,
    /// The neighbor's own distance to the destination.
    pub advertised: u8,
    /// When the counter was current at the destination.
    pub heard_at: Instant,
    /// The destination said goodbye.
    pub left: bool,
}

impl Route {
    /// Our distance through this route.
    pub fn hops(&self) -> u8 {
        self.advertised.saturating_add(1)
    }
}

/// A node beyond one hop: the routes offered to it and what we advertised.
#[derive(Debug, Clone)]
pub struct Remote {
    /// Its name, once an advertisement carried it.
    pub name: Option<Name>,
    /// Its public key, once an advertisement carried it (checked against
    /// its id).
    pub key: Option<crate::wire::PublicKey>,
    /// Routes offered by neighbors, at most [`MAX_ALTERNATIVES`].
    pub routes: Vec<Route>,
    /// The next hop of the selected route.
    pub selected: Option<NodeId>,
    /// Its state, as the freshest route says.
    pub state: PeerState,
    /// Since when.
    pub state_since: Instant,
    /// Feasibility distance: counter and metric we last advertised.
    pub(crate) fd: Option<(Counter, u8)>,
    /// Newest counter heard of it, by any path, and when it arrived.
    pub(crate) newest: Option<(Counter, Instant)>,
    /// Withdrawals still to advertise after losing the route.
    pub(crate) withdrawals: u8,
    /// Since when it has had no usable route.
    pub(crate) routeless_since: Option<Instant>,
    /// Whether `state` has been worked out once (before, it is a placeholder).
    pub(crate) evaluated: bool,
}

impl Remote {
    fn new(now: Instant) -> Remote {
        Remote {
            name: None,
            key: None,
            routes: Vec::new(),
            selected: None,
            state: PeerState::Unreachable,
            state_since: now,
            fd: None,
            newest: None,
            withdrawals: 0,
            routeless_since: Some(now),
            evaluated: false,
        }
    }

    /// The selected route.
    pub fn route(&self) -> Option<&Route> {
        let via = self.selected?;
        self.routes.iter().find(|r| r.via == via)
    }

    /// Whether `route` passes the feasibility condition.
    pub fn is_feasible(&self, route: &Route) -> bool {
        self.fd.is_none_or(|(counter, metric)| {
            route.counter > counter || (route.counter == counter && route.advertised < metric)
        })
    }

    /// Records that we advertised `(counter, metric)`: the feasibility
    /// distance only ever tightens.
    pub(crate) fn advertised(&mut self, counter: Counter, metric: u8) {
        self.fd = Some(match self.fd {
            Some((fd_counter, fd_metric)) if fd_counter == counter => {
                (counter, fd_metric.min(metric))
            }
            Some((fd_counter, fd_metric)) if fd_counter > counter => (fd_counter, fd_metric),
            _ => (counter, metric),
        });
    }
}

/// Why a route update was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteRefusal {
    /// Its counter runs further ahead of what we know than the destination
    /// could have sent since.
    Implausible,
    /// The table is full of destinations with live routes.
    TableFull,
}

/// A destination whose selection or state changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteChange {
    /// The destination.
    pub node: NodeId,
    /// Its new next hop and hop count; `None`: no route.
    pub route: Option<(NodeId, u8)>,
    /// Its old and new state, when that changed.
    pub state: Option<(PeerState, PeerState)>,
}

/// The neighbors' view the table needs at selection time.
pub trait Neighbors {
    /// Whether `id` is a neighbor we can send to now, and whether it is
    /// HEALTHY (preferred over SUSPECT at equal metric).
    fn usable(&self, id: NodeId) -> Option<bool>;

    /// Whether `id` is a neighbor we reach directly (so it has a route even
    /// without any advertisement).
    fn direct(&self, id: NodeId) -> bool;
}

/// Every destination learned from advertisements, bounded.
#[derive(Debug, Clone)]
pub struct RouteTable {
    dests: BTreeMap<NodeId, Remote>,
    capacity: usize,
}

impl RouteTable {
    /// An empty table of at most `capacity` destinations.
    pub fn new(capacity: usize) -> RouteTable {
        RouteTable {
            dests: BTreeMap::new(),
            capacity,
        }
    }

    /// One destination.
    pub fn get(&self, id: NodeId) -> Option<&Remote> {
        self.dests.get(&id)
    }

    pub(crate) fn get_mut(&mut self, id: NodeId) -> Option<&mut Remote> {
        self.dests.get_mut(&id)
    }

    /// All destinations, by id.
    pub fn iter(&self) -> impl Iterator<Item = (&NodeId, &Remote)> {
        self.dests.iter()
    }

    /// Number of destinations.
    pub fn len(&self) -> usize {
        self.dests.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.dests.is_empty()
    }

    /// The destination `node`, added if missing (to hold the feasibility
    /// distance of a neighbor we advertise).
    pub(crate) fn ensure(&mut self, now: Instant, node: NodeId) -> Result<(), RouteRefusal> {
        if !self.dests.contains_key(&node) {
            self.make_room()?;
            self.dests.insert(node, Remote::new(now));
        }
        Ok(())
    }

    /// Notes `node`'s public key (the caller checked it against the id).
    pub(crate) fn set_key(&mut self, node: NodeId, key: crate::wire::PublicKey) {
        if let Some(dest) = self.dests.get_mut(&node) {
            dest.key = Some(key);
        }
    }

    /// A verified goodbye of `node`: its routes of that incarnation (or
    /// older) now say it left.
    pub(crate) fn mark_left(&mut self, node: NodeId, incarnation: u32) {
        if let Some(dest) = self.dests.get_mut(&node) {
            for route in &mut dest.routes {
                if route.counter.incarnation <= incarnation {
                    route.left = true;
                }
            }
        }
    }

    /// Applies one entry of neighbor `via`'s advertisement, heard at `now`.
    /// `known` is the newest counter of the destination we have from
    /// elsewhere (its own frames, if it is also a neighbor).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn update(
        &mut self,
        now: Instant,
        via: NodeId,
        node: NodeId,
        counter: Counter,
        metric: u8,
        age: Duration,
        left: bool,
        name: Option<Name>,
        known: Option<Counter>,
    ) -> Result<(), RouteRefusal> {
        if !self.dests.contains_key(&node) {
            if metric >= INFINITY {
                // A withdrawal of something we never had.
                return Ok(());
            }
            self.make_room()?;
            self.dests.insert(node, Remote::new(now));
        }
        let Some(dest) = self.dests.get_mut(&node) else {
            return Ok(());
        };
        if let Some(name) = name {
            dest.name = Some(name);
        }
        let newest = match (dest.newest, known) {
            (Some((c, at)), Some(k)) if k > c => Some((k, now.min(at))),
            (None, Some(k)) => Some((k, now)),
            (n, _) => n,
        };
        if let Some((newest, since)) = newest {
            if !plausible(newest, counter, now.saturating_since(since)) {
                return Err(RouteRefusal::Implausible);
            }
        }
        if metric >= INFINITY {
            dest.routes.retain(|r| r.via != via);
            return Ok(());
        }
        if dest.newest.is_none_or(|(c, _)| counter > c) {
            dest.newest = Some((counter, now));
        }
        let heard_at = now - age;
        let route = Route {
            via,
            counter,
            advertised: metric,
            heard_at,
            left,
        };
        if let Some(existing) = dest.routes.iter_mut().find(|r| r.via == via) {
            // An older counter through the same neighbor is a reordered
            // datagram: keep the newer one.
            if counter >= existing.counter {
                *existing = route;
            }
        } else if dest.routes.len() < MAX_ALTERNATIVES {
            dest.routes.push(route);
        } else if let Some(worst) = dest
            .routes
            .iter_mut()
            .filter(|r| r.advertised > metric || r.heard_at < heard_at)
            .max_by_key(|r| (r.advertised, std::cmp::Reverse(r.heard_at)))
        {
            *worst = route;
        }
        Ok(())
    }

    /// A neighbor is gone: every route through it is withdrawn.
    pub(crate) fn remove_via(&mut self, via: NodeId) {
        for dest in self.dests.values_mut() {
            dest.routes.retain(|r| r.via != via);
        }
    }

    fn make_room(&mut self) -> Result<(), RouteRefusal> {
        if self.dests.len() < self.capacity {
            return Ok(());
        }
        let victim = self
            .dests
            .iter()
            .filter(|(_, d)| d.routeless_since.is_some())
            .min_by_key(|(_, d)| (d.withdrawals > 0, d.routeless_since))
            .map(|(id, _)| *id)
            .ok_or(RouteRefusal::TableFull)?;
        self.dests.remove(&victim);
        Ok(())
    }

    /// Re-selects every destination's route at `now`: the feasible, fresh
    /// route with the lowest metric through a usable neighbor (HEALTHY over
    /// SUSPECT, then the current one, then the newest counter). Returns what
    /// changed and when this must run again at the latest.
    pub(crate) fn select(
        &mut self,
        now: Instant,
        timing: &RemoteTiming,
        neighbors: &impl Neighbors,
    ) -> (Vec<RouteChange>, Option<Instant>) {
        let mut changes = Vec::new();
        let mut next: Option<Instant> = None;
        let mut forget = Vec::new();
        for (&node, dest) in &mut self.dests {
            let fresh = |r: &Route| {
                r.advertised < INFINITY
                    && now.saturating_since(r.heard_at) < timing.unreachable_after(r.hops())
            };
            // Stale routes are dropped: their counters can never be fresh again.
            dest.routes.retain(|r| fresh(r));
            let best = dest
                .routes
                .iter()
                .filter(|r| dest.is_feasible(r) && !r.left)
                .filter_map(|r| neighbors.usable(r.via).map(|healthy| (r, healthy)))
                .min_by_key(|(r, healthy)| {
                    (
                        r.hops(),
                        !healthy,
                        Some(r.via) != dest.selected,
                        std::cmp::Reverse(r.counter),
                        r.via,
                    )
                })
                .map(|(r, _)| *r);
            let selected = best.map(|r| r.via);
            // Liveness: the freshest counter through any path.
            let freshest = dest.routes.iter().max_by_key(|r| (r.counter, r.heard_at));
            let state = match (freshest, best) {
                (Some(r), _) if r.left => PeerState::Left,
                (Some(r), Some(b)) => {
                    let age = now.saturating_since(r.heard_at);
                    if age < timing.suspect_after(b.hops()) {
                        next = earliest(next, r.heard_at + timing.suspect_after(b.hops()));
                        PeerState::Healthy
                    } else {
                        PeerState::Suspect
                    }
                }
                _ => PeerState::Unreachable,
            };
            for r in &dest.routes {
                next = earliest(next, r.heard_at + timing.unreachable_after(r.hops()));
            }
            let route_changed = selected != dest.selected
                || best.map(|b| b.hops()) != dest.route().map(Route::hops);
            // A destination's first state is news only if it is bad: the
            // shell reports the new route itself ("route to X: ...").
            let first = !dest.evaluated && state == PeerState::Healthy;
            dest.evaluated = true;
            let state_changed = state != dest.state;
            let reached = selected.is_some() || neighbors.direct(node);
            if !reached && dest.routeless_since.is_none() {
                dest.withdrawals = WITHDRAWALS;
            }
            if reached {
                dest.routeless_since = None;
            } else if dest.routeless_since.is_none() {
                dest.routeless_since = Some(now);
            }
            if route_changed || state_changed {
                changes.push(RouteChange {
                    node,
                    route: best.map(|b| (b.via, b.hops())),
                    state: (state_changed && !first).then_some((dest.state, state)),
                });
            }
            dest.selected = selected;
            if state_changed {
                dest.state = state;
                dest.state_since = now;
            }
            if let Some(since) = dest.routeless_since {
                if now.saturating_since(since) >= timing.forget_after() {
                    // Every route derived from its old counters is stale
                    // everywhere now: start afresh (bounds a bogus counter).
                    dest.fd = None;
                    dest.newest = None;
                }
                let prune_at = since + timing.prune_after;
                if now >= prune_at && dest.routes.is_empty() {
                    forget.push(node);
                } else {
                    next = earliest(next, (since + timing.forget_after()).min(prune_at));
                }
            }
        }
        for node in forget {
            self.dests.remove(&node);
        }
        (changes, next.filter(|&at| at > now))
    }
}

fn earliest(a: Option<Instant>, b: Instant) -> Option<Instant> {
    Some(a.map_or(b, |a| a.min(b)))
}

/// Whether `claimed` is a counter the destination could have reached
/// `elapsed` after `newest`: it cannot send faster than [`MAX_FRAME_RATE`]
/// or restart faster than [`MAX_RESTART_RATE`].
pub fn plausible(newest: Counter, claimed: Counter, elapsed: Duration) -> bool {
    let secs = elapsed.as_secs() + 1;
    if claimed.incarnation == newest.incarnation {
        u64::from(claimed.seq) <= u64::from(newest.seq) + MAX_FRAME_RATE * secs
    } else if claimed.incarnation > newest.incarnation {
        u64::from(claimed.incarnation - newest.incarnation) <= MAX_RESTART_RATE * secs
            && u64::from(claimed.seq) <= MAX_FRAME_RATE * secs
    } else {
        // Older than what we know: harmless, never feasible over the newer.
        true
    }
}

#[cfg(test)]
mod tests;
