//! One name, one node: names used by more than one live node.
//!
//! A name is how people and rules address a node (`shoal exec NAME ...`,
//! `NAME/temperature` in a rule), but ids are what the mesh trusts. Two
//! live nodes with the same name (every fresh Raspberry Pi OS image is
//! called `raspberrypi`) would make such an address pick one of them at
//! random. So:
//!
//! - every node checks the names of the live nodes it knows (itself, its
//!   neighbors, nodes beyond) whenever membership, routes or a name change
//!   (and every 10 beacons), and reports each new conflict once as
//!   [`Event::NameConflict`], with every id involved, itself included (so
//!   both sides report it);
//! - [`Node::find_node`] refuses an ambiguous name ([`FindError::Ambiguous`])
//!   instead of picking one; a node can still be addressed by its id;
//! - a rule's single point named by node (`NAME/point`) is unknown while the
//!   name is ambiguous (see `automation.rs`), so the rule's fail-safe runs.
//!
//! A conflict ends when one of the nodes is renamed, leaves or becomes
//! UNREACHABLE; it is reported again if it comes back.

use super::peers::PeerState;
use super::time::Instant;
use super::wire::{Name, NodeId};
use super::{Event, Node};
use std::collections::{BTreeMap, BTreeSet};

/// Why a name does not lead to one node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FindError {
    /// No node of that name (or id) is known.
    #[error("no node of that name is known in the mesh")]
    Unknown,
    /// More than one live node has that name: their ids.
    #[error("{} live nodes are named so; address one by its id, or rename one (node.name)", .0.len())]
    Ambiguous(Vec<NodeId>),
}

/// Names are checked whenever membership, routes or a name change, and at
/// least every this many beacons.
pub(crate) const CHECK_EVERY: u64 = 10;

/// The names whose conflict was reported, so each is reported once while
/// it lasts (a change of the ids involved is not news: no log flood from
/// nodes coming and going, or from forged ids rotating under one name).
#[derive(Debug, Default)]
pub(crate) struct NameWatch {
    reported: BTreeSet<Name>,
    /// Membership or names changed since the last check.
    pub(crate) dirty: bool,
    /// No check before this: at most one per beacon interval.
    not_before: Option<Instant>,
}

impl Node {
    /// Every name that more than one live (HEALTHY or SUSPECT) node uses,
    /// this node included, with their ids in order.
    pub fn name_conflicts(&self, now: Instant) -> Vec<(Name, Vec<NodeId>)> {
        let mut by_name: BTreeMap<Name, Vec<NodeId>> = BTreeMap::new();
        for (id, reach) in self.nodes(now) {
            if !matches!(reach.state, PeerState::Healthy | PeerState::Suspect) {
                continue;
            }
            if let Some(name) = self.node_name(id) {
                by_name.entry(name).or_default().push(id);
            }
        }
        by_name
            .into_iter()
            .filter(|(_, ids)| ids.len() > 1)
            .collect()
    }

    /// The node called `name`: this one, a neighbor, a node beyond, or an
    /// origin of points; or a node id (16 hex digits). A name that more than
    /// one live node uses is refused, never resolved to one of them.
    pub fn find_node(&self, now: Instant, name: &str) -> Result<NodeId, FindError> {
        if let Some(id) = self.known_id(name) {
            return Ok(id);
        }
        let live = |id: &NodeId| {
            *id == self.id
                || self
                    .reach(now, *id)
                    .is_some_and(|r| matches!(r.state, PeerState::Healthy | PeerState::Suspect))
        };
        let mut named: Vec<NodeId> = std::iter::once((self.id, Some(self.name.clone())))
            .chain(self.peers.iter().map(|p| (p.id, p.name.clone())))
            .chain(
                self.relay
                    .routes
                    .iter()
                    .map(|(id, d)| (*id, d.name.clone())),
            )
            .chain(
                self.store
                    .origins()
                    .iter()
                    .map(|(id, o)| (*id, Some(o.name.clone()))),
            )
            .filter(|(_, n)| n.as_deref() == Some(name))
            .map(|(id, _)| id)
            .collect();
        shoal_config::order::sort(&mut named);
        named.dedup();
        let live_ones: Vec<NodeId> = named.iter().copied().filter(live).collect();
        match (live_ones.len(), named.first()) {
            (1, _) => Ok(live_ones[0]),
            (0, Some(&only)) if named.len() == 1 => Ok(only),
            (0, Some(_)) => Err(FindError::Ambiguous(named)),
            (0, None) => Err(FindError::Unknown),
            _ => Err(FindError::Ambiguous(live_ones)),
        }
    }

    /// `text` as the id of a node this node knows.
    fn known_id(&self, text: &str) -> Option<NodeId> {
        if text.len() != 16 {
            return None;
        }
        let id = NodeId(u64::from_str_radix(text, 16).ok()?);
        let known = id == self.id
            || self.peers.get(id).is_some()
            || self.relay.routes.get(id).is_some()
            || self.store.origin(id).is_some();
        known.then_some(id)
    }

    /// [`Node::check_names`] if something changed, at most once per beacon
    /// interval: a check visits every node, and in a large mesh that
    /// changes (nodes starting, flapping under load) it would otherwise run
    /// after every frame. A conflict is reported at most one interval late;
    /// `handle_timeout` runs at least once per interval.
    pub(crate) fn check_names_now_and_then(&mut self, now: Instant) {
        if !self.names.dirty || self.names.not_before.is_some_and(|at| now < at) {
            return;
        }
        self.names.not_before = Some(now + self.config.beacon_interval);
        self.check_names(now);
    }

    /// Reports each newly conflicting name once; forgets the ones whose
    /// conflict ended (so a conflict that comes back is reported again).
    pub(crate) fn check_names(&mut self, now: Instant) {
        self.names.dirty = false;
        let current = self.name_conflicts(now);
        let names: BTreeSet<Name> =
            shoal_config::order::set(current.iter().map(|(name, _)| name.clone()));
        for (name, nodes) in current {
            if self.names.reported.contains(&name) {
                continue;
            }
            log::debug!("name {name} is used by {} live nodes", nodes.len());
            self.push_event(Event::NameConflict { name, nodes });
        }
        self.names.reported = names;
    }
}
