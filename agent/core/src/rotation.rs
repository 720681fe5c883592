//! Key rotation: every reachable member gets a new mesh key, sealed to its
//! own node key, and all move to it together.
//!
//! ```text
//! initiator --KeyOffer {rotation, sealed key, switch in 3 intervals}--> member (hop by hop)
//!     ^                                                                     |
//!     '----------------KeyConfirm {rotation} (signed)-----------------------'
//! ```
//!
//! - The new key is sealed to each member's node key (X25519 with a
//!   one-time key of the initiator, see `sign::seal_key`), so a member left
//!   out (`--exclude`, or offline) cannot read it even though it holds the
//!   old mesh key and sees every frame.
//! - From the moment a node has the new key it accepts frames under both
//!   keys; it sends under the new one from its switch time (the offer says
//!   when: [`SWITCH_IN`] beacon intervals after the initiator sent it, the
//!   same moment for all up to the network's delay), and accepts the old
//!   one for [`GRACE`] unreachable-intervals more. So no frame is lost and
//!   no live node turns UNREACHABLE during a rotation.
//! - The initiator sends the offer again every interval to members that
//!   have not confirmed, until the switch; at the switch it reports who
//!   confirmed. Members left out must join again with a token.
//! - Offers and confirmations are signed; an offer names the target's
//!   incarnation, so a captured one is refused after a restart, and one
//!   for a rotation already applied only gets a new confirmation.

use super::sign::{self, SIGNATURE_LEN};
use super::time::Instant;
use super::wire::{self, Cipher, KeyConfirm, KeyOffer, MeshKey, Message, NodeId, Signature};
use super::{Destination, Event, Node};
use crate::peers::PeerState;
use crate::routes::INFINITY;
use std::collections::BTreeMap;
use std::time::Duration;

/// Beacon intervals from the offer to the switch.
pub const SWITCH_IN: u32 = 3;
/// After its switch a node accepts the old key this many
/// `unreachable_after` longer (laggards, reordered frames).
pub const GRACE: u32 = 2;
/// The longest wait for a switch an offer may ask for (whatever the
/// initiator's beacon interval).
pub const MAX_SWITCH_IN: Duration = Duration::from_secs(30);
/// Mesh ids of keys this life left behind, remembered to refuse a
/// rollback.
const USED_KEYS: usize = 8;

/// Why no rotation started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RotateError {
    /// An open mesh has no key to rotate.
    #[error("this mesh is open (mesh.open = true): there is no key to rotate")]
    OpenMesh,
    /// A rotation is still switching.
    #[error("a key rotation is under way: wait for it to end")]
    InProgress,
}

/// What a started rotation covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The rotation's number.
    pub rotation: u32,
    /// The members offered the new key.
    pub members: Vec<NodeId>,
    /// Members left out, and why (excluded; no public key known yet).
    pub left_out: Vec<(NodeId, &'static str)>,
    /// When all switch.
    pub switch_in: Duration,
}

/// A key a node holds besides its current one.
#[derive(Debug, Clone)]
struct Other {
    mesh_id: u32,
    key: MeshKey,
    cipher: Cipher,
    /// The next key: when to switch to it. The old one: when to drop it.
    at: Instant,
}

/// A rotation this node started.
#[derive(Debug, Clone)]
struct Started {
    rotation: u32,
    ephemeral: [u8; 32],
    key: MeshKey,
    /// Members and whether they confirmed.
    members: BTreeMap<NodeId, bool>,
    switch_at: Instant,
    next_try: Instant,
}

/// Key rotation state of one node, bounded: one next key, one old key,
/// one rotation of its own.
#[derive(Debug, Default)]
pub(crate) struct Rekey {
    next: Option<Other>,
    /// The rotation (initiator, number) the next key came from.
    next_from: Option<(NodeId, u32)>,
    old: Option<Other>,
    started: Option<Started>,
    counter: u32,
    /// Mesh ids this life switched away from, newest last.
    used: Vec<u32>,
}

impl Rekey {
    /// The cipher of a mesh id this node accepts besides its current one.
    pub(crate) fn cipher_of(&self, mesh_id: u32) -> Option<&Cipher> {
        [&self.next, &self.old]
            .into_iter()
            .flatten()
            .find(|other| other.mesh_id == mesh_id)
            .map(|other| &other.cipher)
    }

    /// The next switch, retry or drop.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        [
            self.next.as_ref().map(|n| n.at),
            self.old.as_ref().map(|o| o.at),
            self.started.as_ref().map(|s| s.next_try.min(s.switch_at)),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Forgets every key but the current one (after a join).
    pub(crate) fn clear(&mut self) {
        self.next = None;
        self.next_from = None;
        self.old = None;
        self.started = None;
    }
}

impl Node {
    /// Starts a rotation to `new_key` (random, from the shell), sealed with
    /// the one-time secret `ephemeral`, for every reachable member but
    /// those in `exclude`.
    pub fn rotate(
        &mut self,
        now: Instant,
        new_key: MeshKey,
        ephemeral: [u8; 32],
        exclude: &[NodeId],
    ) -> Result<Plan, RotateError> {
        if self.config.key.is_none() {
            return Err(RotateError::OpenMesh);
        }
        if self.rekey.next.is_some() || self.rekey.started.is_some() {
            return Err(RotateError::InProgress);
        }
        let mut candidates: Vec<NodeId> = self.peers.iter().map(|p| p.id).collect();
        candidates.extend(self.relay.routes.iter().map(|(id, _)| *id));
        shoal_config::order::sort(&mut candidates);
        candidates.dedup();
        let mut members = BTreeMap::new();
        let mut left_out = Vec::new();
        for id in candidates {
            if id == self.id {
                continue;
            }
            let live = self
                .reach(now, id)
                .is_some_and(|r| matches!(r.state, PeerState::Healthy | PeerState::Suspect));
            if exclude.contains(&id) {
                left_out.push((id, "excluded"));
            } else if !live {
                left_out.push((id, "not reachable"));
            } else if self.public_key_of(id).is_none() {
                left_out.push((id, "no public key known yet"));
            } else {
                members.insert(id, false);
            }
        }
        self.rekey.counter = self.rekey.counter.wrapping_add(1);
        let rotation = self.rekey.counter;
        let switch_in = self.config.beacon_interval * SWITCH_IN;
        let plan = Plan {
            rotation,
            members: members.keys().copied().collect(),
            left_out,
            switch_in,
        };
        self.rekey.next = Some(Other {
            mesh_id: wire::mesh_id(Some(&new_key)),
            cipher: Cipher::new(&new_key),
            key: new_key.clone(),
            at: now + switch_in,
        });
        self.rekey.next_from = Some((self.id, rotation));
        self.rekey.started = Some(Started {
            rotation,
            ephemeral,
            key: new_key,
            members,
            switch_at: now + switch_in,
            next_try: now,
        });
        log::warn!(
            "rotating the mesh key (rotation {rotation}): {} members offered, {} left out; switching in {:?}",
            plan.members.len(),
            plan.left_out.len(),
            switch_in
        );
        self.offer_keys(now);
        Ok(plan)
    }

    /// Sends the offer to every member that has not confirmed.
    fn offer_keys(&mut self, now: Instant) {
        let Some(started) = self.rekey.started.clone() else {
            return;
        };
        if now >= started.switch_at {
            return;
        }
        let public = sign::ephemeral_public(started.ephemeral);
        let switch_in_ms =
            u32::try_from(started.switch_at.saturating_since(now).as_millis()).unwrap_or(u32::MAX);
        for (&target, _) in started.members.iter().filter(|(_, confirmed)| !**confirmed) {
            let (Some(key), Some(incarnation), Some(hop)) = (
                self.public_key_of(target),
                self.known_incarnation(target),
                self.next_hop(now, target),
            ) else {
                continue;
            };
            let Some(sealed) = sign::seal_key(started.ephemeral, &key, &started.key.0) else {
                continue;
            };
            let mut offer = KeyOffer {
                rotation: started.rotation,
                initiator: self.id,
                target,
                hops_left: INFINITY,
                target_incarnation: incarnation,
                ephemeral: public,
                sealed,
                switch_in_ms,
                key: self.key.public(),
                signature: Signature([0; SIGNATURE_LEN]),
            };
            offer.signature = self.key.sign(&sign::offer_payload(&offer));
            self.send(Destination::Unicast(hop), &Message::KeyOffer(offer));
        }
        if let Some(started) = self.rekey.started.as_mut() {
            started.next_try = now + self.config.beacon_interval;
        }
    }

    /// Switches, retries and drops that are due.
    pub(crate) fn expire_rekey(&mut self, now: Instant) {
        if self
            .rekey
            .started
            .as_ref()
            .is_some_and(|s| s.next_try <= now && now < s.switch_at)
        {
            self.offer_keys(now);
        }
        if self.rekey.next.as_ref().is_some_and(|next| next.at <= now) {
            self.switch_key(now);
        }
        if self.rekey.old.as_ref().is_some_and(|old| old.at <= now) {
            if let Some(old) = self.rekey.old.take() {
                log::info!("dropped the old mesh key (mesh {:08x})", old.mesh_id);
            }
        }
    }

    /// Moves to the next key: sends under it from now on, accepts the old
    /// one a while longer.
    fn switch_key(&mut self, now: Instant) {
        let Some(next) = self.rekey.next.take() else {
            return;
        };
        self.rekey.next_from = None;
        let grace = self.config.unreachable_after * GRACE;
        // By the key itself (the mesh id a key derives to).
        self.rekey
            .used
            .push(wire::mesh_id(self.config.key.as_ref()));
        if self.rekey.used.len() > USED_KEYS {
            self.rekey.used.remove(0);
        }
        if let (Some(key), Some(cipher)) = (self.config.key.take(), self.cipher.take()) {
            self.rekey.old = Some(Other {
                mesh_id: self.config.mesh_id,
                key,
                cipher,
                at: now + grace,
            });
        }
        self.config.mesh_id = next.mesh_id;
        self.config.key = Some(next.key.clone());
        self.cipher = Some(next.cipher);
        log::warn!("switched to the new mesh key (mesh {:08x})", next.mesh_id);
        self.push_event(Event::MeshKeyChanged {
            mesh_id: next.mesh_id,
            key: next.key,
        });
        if let Some(started) = self.rekey.started.take() {
            let (confirmed, unconfirmed): (Vec<_>, Vec<_>) =
                started.members.iter().partition(|(_, c)| **c);
            self.push_event(Event::RotationDone {
                rotation: started.rotation,
                confirmed: confirmed.into_iter().map(|(id, _)| *id).collect(),
                unconfirmed: unconfirmed.into_iter().map(|(id, _)| *id).collect(),
            });
        }
    }

    pub(super) fn on_key_offer(&mut self, now: Instant, offer: KeyOffer) {
        let payload = sign::offer_payload(&offer);
        if !sign::verify(offer.initiator, &offer.key, &payload, &offer.signature) {
            self.stats.signatures_invalid += 1;
            return;
        }
        if offer.target != self.id {
            // Relay it towards its member, like a command.
            let Some(hops_left) = offer.hops_left.checked_sub(1).filter(|&h| h > 0) else {
                return;
            };
            if let Some(hop) = self.next_hop(now, offer.target) {
                let relayed = KeyOffer { hops_left, ..offer };
                self.send(Destination::Unicast(hop), &Message::KeyOffer(relayed));
            }
            return;
        }
        // For this life, from a member this node knows.
        if offer.target_incarnation != self.counter.incarnation
            || offer.initiator == self.id
            || self.known_incarnation(offer.initiator).is_none()
        {
            self.stats.key_offers_refused += 1;
            return;
        }
        let from = (offer.initiator, offer.rotation);
        let mut new_mesh = self.rekey.next.as_ref().map(|n| n.mesh_id);
        if self.rekey.next_from != Some(from) {
            let Some(key) = self.key.open_key(offer.ephemeral, &offer.sealed) else {
                self.stats.key_offers_refused += 1;
                return;
            };
            let key = MeshKey(key);
            let mesh_id = wire::mesh_id(Some(&key));
            if mesh_id != self.config.mesh_id && self.rekey.used.contains(&mesh_id) {
                // A key this life left behind: a replay, or a rollback.
                self.stats.key_offers_refused += 1;
                return;
            }
            if let Some(next) = &self.rekey.next {
                // Two rotations at once: every node keeps the one whose key
                // has the lower mesh id, so all end on the same key.
                if mesh_id >= next.mesh_id {
                    self.stats.key_offers_refused += 1;
                    return;
                }
                if let Some(lost) = self.rekey.started.take() {
                    log::warn!(
                        "rotation {} gives way to rotation {} of {}",
                        lost.rotation,
                        offer.rotation,
                        offer.initiator
                    );
                    self.push_event(Event::RotationDone {
                        rotation: lost.rotation,
                        confirmed: Vec::new(),
                        unconfirmed: lost.members.keys().copied().collect(),
                    });
                }
            }
            if mesh_id != self.config.mesh_id {
                let switch_in =
                    Duration::from_millis(u64::from(offer.switch_in_ms)).min(MAX_SWITCH_IN);
                log::warn!(
                    "got a new mesh key from {} (rotation {}): switching in {:?}",
                    offer.initiator,
                    offer.rotation,
                    switch_in
                );
                self.rekey.next = Some(Other {
                    mesh_id,
                    cipher: Cipher::new(&key),
                    key,
                    at: now + switch_in,
                });
                self.rekey.next_from = Some(from);
            }
            new_mesh = Some(mesh_id);
        }
        let Some(new_mesh) = new_mesh else {
            return;
        };
        let mut confirm = KeyConfirm {
            rotation: offer.rotation,
            initiator: offer.initiator,
            new_mesh,
            from: self.id,
            hops_left: INFINITY,
            key: self.key.public(),
            signature: Signature([0; SIGNATURE_LEN]),
        };
        confirm.signature = self.key.sign(&sign::confirm_payload(&confirm));
        if let Some(hop) = self.next_hop(now, offer.initiator) {
            self.send(Destination::Unicast(hop), &Message::KeyConfirm(confirm));
        }
    }

    pub(super) fn on_key_confirm(&mut self, now: Instant, confirm: KeyConfirm) {
        let payload = sign::confirm_payload(&confirm);
        if !sign::verify(confirm.from, &confirm.key, &payload, &confirm.signature) {
            self.stats.signatures_invalid += 1;
            return;
        }
        if confirm.initiator != self.id {
            let Some(hops_left) = confirm.hops_left.checked_sub(1).filter(|&h| h > 0) else {
                return;
            };
            if let Some(hop) = self.next_hop(now, confirm.initiator) {
                let relayed = KeyConfirm {
                    hops_left,
                    ..confirm
                };
                self.send(Destination::Unicast(hop), &Message::KeyConfirm(relayed));
            }
            return;
        }
        let next_mesh = self.rekey.next.as_ref().map(|n| n.mesh_id);
        if let Some(started) = self
            .rekey
            .started
            .as_mut()
            .filter(|s| s.rotation == confirm.rotation && next_mesh == Some(confirm.new_mesh))
        {
            if let Some(confirmed) = started.members.get_mut(&confirm.from) {
                if !*confirmed {
                    *confirmed = true;
                    log::info!("{} has the new mesh key", confirm.from);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
