//! Persistence: what the agent keeps in its state directory between runs,
//! besides its identity: remembered neighbors (knocked on at the next start),
//! the last values of its own points (republished at the next start), and
//! the other nodes' incarnations (frames of their older lives, replayed
//! after our restart, are refused).
//!
//! SD cards wear out, so writes are rare: neighbors at most once a minute
//! when they changed, otherwise every ten minutes, points every ten
//! minutes, both at shutdown. The file formats and atomic writes are in
//! `state.rs`.
//!
//! Whether neighbors changed is a look at every neighbor, so it is taken
//! at most every `LOOK_EVERY` (5 s), never after every input: at 250 agents,
//! a look after every datagram once the minute had passed saturated the
//! machine (every agent's loop late by seconds, thousands of false
//! UNREACHABLE verdicts, until those changes made the agents save).

use super::state::{self, StateDir};
use shoal_core::peers::PeerState;
use shoal_core::time::Instant;
use shoal_core::wire;
use shoal_core::{Event, Node, Reading};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The state directory and the remembered neighbors.
#[derive(Debug)]
pub struct Persistence {
    state_dir: StateDir,
    /// This node's key, to persist a new incarnation under.
    key: shoal_core::sign::NodeKey,
    known: Known,
}

impl Persistence {
    /// Reads the remembered neighbors of `state_dir`, the directory of the
    /// node with `key`.
    pub fn load(state_dir: StateDir, key: shoal_core::sign::NodeKey) -> Persistence {
        let known = Known::load(&state_dir);
        Persistence {
            state_dir,
            key,
            known,
        }
    }

    /// Remembered neighbors' addresses, to knock on.
    pub fn remembered_peers(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.known.peers.keys().copied()
    }

    /// Notes what an event means for the remembered neighbors, and
    /// persists a new incarnation at once: if it were lost, the next start
    /// would reuse its frame counters. That write failing stops the agent.
    pub fn observe(&mut self, node: &Node, event: &Event) -> Result<(), state::StateError> {
        match event {
            Event::PeerStateChanged {
                peer,
                to: PeerState::Unreachable,
                ..
            } => {
                if let Some(addr) = node.peers().get(*peer).map(|p| p.addr) {
                    self.known.note_failure(addr);
                }
            }
            Event::IncarnationChanged { incarnation } => {
                self.state_dir.save_identity(&state::Identity {
                    key: self.key.clone(),
                    incarnation: *incarnation,
                })?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Saves what is due at `now` (see the module docs).
    pub fn maybe_save(&mut self, node: &Node, now: std::time::Instant) {
        self.known.maybe_save(node, &mut self.state_dir, now);
    }

    /// Saves everything now (at shutdown).
    pub fn save(&mut self, node: &Node) {
        self.known.save(node, &mut self.state_dir);
    }

    /// State files written by this run.
    pub fn writes(&self) -> u64 {
        self.state_dir.writes()
    }

    /// Republishes the last values of this node's own points, saved by the
    /// previous run, under the new incarnation.
    pub fn restore_points(&self, node: &mut Node) {
        restore_points(node, &self.state_dir);
    }

    /// Hands the core the other nodes' incarnations of the previous run.
    pub fn restore_incarnations(&mut self, node: &mut Node) {
        let (list, found) = self.state_dir.load_incarnations();
        if let state::Found::Corrupt(reason) = found {
            log::warn!(
                "state file {}/incarnations was unreadable ({reason}); it will be rewritten",
                self.state_dir.path().display()
            );
        }
        for &(id, incarnation) in &list {
            node.remember_incarnation(id, incarnation);
        }
        self.known.incarnations = shoal_config::order::map(list);
    }
}

/// Remembered neighbors, written to the state directory rarely (SD cards
/// wear out): at most once a minute when the set of neighbors changed,
/// otherwise every ten minutes, and at shutdown.
#[derive(Debug)]
struct Known {
    peers: BTreeMap<SocketAddr, state::KnownPeer>,
    /// Successes stored before this run, per address.
    base: BTreeMap<SocketAddr, u64>,
    changed: bool,
    last_save: std::time::Instant,
    /// When it last looked whether a save was due.
    last_look: std::time::Instant,
    /// Looks taken (each visits every neighbor).
    looks: u64,
    last_points_save: std::time::Instant,
    /// Other nodes' incarnations as last written.
    incarnations: BTreeMap<wire::NodeId, u32>,
}

/// Known peers not heard for this long are forgotten.
const KNOWN_PEER_TTL: Duration = Duration::from_secs(3600);
const SAVE_CHANGES_EVERY: Duration = Duration::from_secs(60);
const SAVE_ANYWAY_EVERY: Duration = Duration::from_secs(600);
/// Once a save may be due, whether it is is looked at this often.
const LOOK_EVERY: Duration = Duration::from_secs(5);

impl Known {
    fn load(state_dir: &StateDir) -> Known {
        let (list, found) = state_dir.load_peers();
        if let state::Found::Corrupt(reason) = found {
            log::warn!(
                "state file {}/peers was unreadable ({reason}); it will be rewritten",
                state_dir.path().display()
            );
        }
        let now = unix_seconds();
        let peers: BTreeMap<SocketAddr, state::KnownPeer> = shoal_config::order::map(
            list.into_iter()
                .filter(|p| now.saturating_sub(p.last_seen) < KNOWN_PEER_TTL.as_secs())
                .map(|p| (p.addr, p)),
        );
        if !peers.is_empty() {
            log::info!("knocking on {} remembered peers", peers.len());
        }
        Known {
            base: shoal_config::order::map(peers.iter().map(|(a, p)| (*a, p.successes))),
            peers,
            changed: false,
            last_save: std::time::Instant::now(),
            last_look: std::time::Instant::now(),
            looks: 0,
            last_points_save: std::time::Instant::now(),
            incarnations: BTreeMap::new(),
        }
    }

    fn note_failure(&mut self, addr: SocketAddr) {
        if let Some(peer) = self.peers.get_mut(&addr) {
            peer.failures += 1;
            self.changed = true;
        }
    }

    /// Copies the healthy neighbors in; marks a change when a new one appears.
    fn update(&mut self, node: &Node) {
        let now = unix_seconds();
        for peer in node.peers().iter() {
            if peer.state != PeerState::Healthy {
                continue;
            }
            let base = self.base.get(&peer.addr).copied().unwrap_or(0);
            let name = peer
                .name
                .as_ref()
                .map_or_else(|| peer.id.to_string(), |n| n.to_string());
            let entry = self.peers.entry(peer.addr).or_insert_with(|| {
                self.changed = true;
                state::KnownPeer {
                    addr: peer.addr,
                    name: name.clone(),
                    last_seen: now,
                    successes: 0,
                    failures: 0,
                }
            });
            entry.name = name;
            entry.last_seen = now;
            entry.successes = base + peer.frames_in;
        }
        self.peers
            .retain(|_, p| now.saturating_sub(p.last_seen) < KNOWN_PEER_TTL.as_secs());
    }

    fn maybe_save(&mut self, node: &Node, state_dir: &mut StateDir, now: std::time::Instant) {
        let since = now.saturating_duration_since(self.last_save);
        if since < SAVE_CHANGES_EVERY || now.saturating_duration_since(self.last_look) < LOOK_EVERY
        {
            return;
        }
        self.last_look = now;
        self.looks += 1;
        let new_neighbor = node
            .peers()
            .iter()
            .any(|p| p.state == PeerState::Healthy && !self.peers.contains_key(&p.addr));
        let restarted = node.incarnations() != self.incarnations;
        if self.changed || new_neighbor || restarted || since >= SAVE_ANYWAY_EVERY {
            self.save(node, state_dir);
            self.last_save = now;
        }
    }

    fn save(&mut self, node: &Node, state_dir: &mut StateDir) {
        if self.last_points_save.elapsed() >= SAVE_ANYWAY_EVERY || node.is_leaving() {
            save_points(node, state_dir);
            self.last_points_save = std::time::Instant::now();
        }
        self.update(node);
        let list: Vec<state::KnownPeer> = self.peers.values().cloned().collect();
        match state_dir.save_peers(&list) {
            Ok(()) => log::debug!("saved {} known peers", list.len()),
            Err(error) => log::warn!("{error}"),
        }
        let incarnations = node.incarnations();
        if incarnations != self.incarnations {
            match state_dir.save_incarnations(&incarnations) {
                Ok(()) => self.incarnations = incarnations,
                Err(error) => log::warn!("{error}"),
            }
        }
        self.changed = false;
        self.last_save = std::time::Instant::now();
    }
}

fn restore_points(node: &mut Node, state_dir: &StateDir) {
    let (points, found) = state_dir.load_points();
    if let state::Found::Corrupt(reason) = found {
        log::warn!(
            "state file {}/points was unreadable ({reason}); it will be rewritten",
            state_dir.path().display()
        );
    }
    let mut restored = 0;
    for point in points {
        let (Some(name), Some(unit)) = (wire::name(&point.name), wire::unit(&point.unit)) else {
            continue;
        };
        // As old as this node's own wall clock says (the same clock that
        // stamped it; a restored value must not look fresh to stale rules).
        let age = Duration::from_millis(super::unix_ms().saturating_sub(point.ts_ms));
        let reading = Reading {
            name,
            value: point.value,
            unit,
            ts_ms: point.ts_ms,
        };
        if node.restore_reading(Instant::ZERO, reading, age).is_ok() {
            restored += 1;
        }
    }
    if restored > 0 {
        log::info!("restored the last values of {restored} own points");
    }
}

fn save_points(node: &Node, state_dir: &mut StateDir) {
    let Some(own) = node.store().origin(node.id()) else {
        return;
    };
    let points: Vec<state::SavedPoint> = own
        .points
        .iter()
        .map(|(name, point)| state::SavedPoint {
            name: name.to_string(),
            value: point.value.clone(),
            unit: point.unit.to_string(),
            ts_ms: point.ts_ms,
        })
        .collect();
    if let Err(error) = state_dir.save_points(&points) {
        log::warn!("{error}");
    }
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
