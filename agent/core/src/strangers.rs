//! Strangers: nodes heard on our ports that this node cannot talk to,
//! because they belong to another mesh (another key, or an open mesh) or
//! speak another protocol version.
//!
//! Their frames are dropped (and counted by reason, as before), but never
//! silently: each stranger is logged once and listed, with how it differs,
//! so two fresh Pis side by side, or a mesh half upgraded, are not left to
//! split without the user being told. The first 15 bytes of every frame
//! (magic, version, mesh id, sender) keep their place in every protocol
//! version, which is what makes this possible ([`wire::peek`]).
//!
//! Anyone can send such frames, so nothing here is trusted: the list only
//! informs people. It holds at most [`MAX_STRANGERS`] entries, forgets one
//! silent for `prune_after`, and while it is full of live entries a new
//! stranger is counted and not listed, so a flood of forged senders costs
//! at most that many log lines per `prune_after`.

use super::time::Instant;
use super::wire::{self, Beacon, Header, Name, NodeId};
use super::Node;
use std::net::SocketAddr;

/// Most strangers listed at once.
pub const MAX_STRANGERS: usize = 16;

/// How a stranger differs from this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Difference {
    /// Another mesh: this mesh id (another key, or [`wire::OPEN_MESH_ID`]
    /// for an open mesh).
    Mesh(u32),
    /// Another protocol version.
    Protocol(u8),
}

/// One node heard that this node cannot talk to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stranger {
    /// Its id, as its frames say.
    pub id: NodeId,
    /// Where its last frame came from.
    pub addr: SocketAddr,
    /// How it differs.
    pub difference: Difference,
    /// Its name, when its beacons are readable (an open mesh of our version).
    pub name: Option<Name>,
    /// When its last frame arrived.
    pub last_heard: Instant,
    /// Its frames heard so far.
    pub frames: u64,
}

/// The bounded list. See the module docs.
#[derive(Debug, Default)]
pub(crate) struct Strangers {
    list: Vec<Stranger>,
    /// Strangers not listed because the list was full of live ones.
    pub(crate) unlisted: u64,
}

impl Node {
    /// The strangers heard within `prune_after`, by id.
    pub fn strangers(&self, now: Instant) -> Vec<&Stranger> {
        let mut live: Vec<&Stranger> = self
            .strangers
            .list
            .iter()
            .filter(|s| now.saturating_since(s.last_heard) < self.config.prune_after)
            .collect();
        shoal_config::order::sort_by_key(&mut live, |s| (s.id, s.difference));
        live
    }

    /// Strangers heard but not listed (the list was full).
    pub fn unlisted_strangers(&self) -> u64 {
        self.strangers.unlisted
    }

    /// A frame from `from` failed its header check: note its sender if it
    /// is of another mesh or protocol.
    pub(crate) fn note_stranger(&mut self, now: Instant, from: SocketAddr, frame: &[u8]) {
        let Some(peek) = wire::peek(frame) else {
            return;
        };
        let difference = if peek.version != wire::VERSION {
            Difference::Protocol(peek.version)
        } else if peek.mesh_id != self.config.mesh_id {
            Difference::Mesh(peek.mesh_id)
        } else {
            return;
        };
        if peek.sender == self.id {
            return;
        }
        let name = readable_name(frame, difference);
        let prune_after = self.config.prune_after;
        let list = &mut self.strangers.list;
        if let Some(known) = list
            .iter_mut()
            .find(|s| s.id == peek.sender && s.difference == difference)
        {
            known.addr = from;
            known.last_heard = now;
            known.frames += 1;
            if name.is_some() {
                known.name = name;
            }
            return;
        }
        list.retain(|s| now.saturating_since(s.last_heard) < prune_after);
        if list.len() >= MAX_STRANGERS {
            self.strangers.unlisted += 1;
            return;
        }
        let label = name.as_ref().map_or_else(
            || peek.sender.to_string(),
            |n| format!("{n} ({})", peek.sender),
        );
        match difference {
            Difference::Protocol(version) => log::warn!(
                "node {label} at {from} speaks protocol {version}, this node {}: upgrade the older one; until then they ignore each other",
                wire::VERSION
            ),
            Difference::Mesh(wire::OPEN_MESH_ID) => log::warn!(
                "node {label} at {from} is in an open mesh (no key); this node's mesh is keyed, so they ignore each other"
            ),
            Difference::Mesh(mesh) => log::warn!(
                "node {label} at {from} is in another mesh ({mesh:08x}, another key); to join the two, give them the same mesh key"
            ),
        }
        list.push(Stranger {
            id: peek.sender,
            addr: from,
            difference,
            name,
            last_heard: now,
            frames: 1,
        });
    }
}

/// The name in a stranger's beacon, when it can be read: an open mesh
/// speaking our protocol version.
fn readable_name(frame: &[u8], difference: Difference) -> Option<Name> {
    if difference != Difference::Mesh(wire::OPEN_MESH_ID) {
        return None;
    }
    let header = Header::parse(frame, wire::OPEN_MESH_ID).ok()?;
    let mut buf = [0u8; wire::MAX_FRAME];
    let (kind, body) = wire::open(&header, frame, None, &mut buf).ok()?;
    if kind != wire::kind::BEACON {
        return None;
    }
    wire::decode_part::<Beacon>(body)
        .ok()
        .map(|beacon| beacon.name)
}
