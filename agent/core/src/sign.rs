//! Node signing keys: what makes another node act proves who asked.
//!
//! The mesh key keeps outsiders out, but every member holds it. So a
//! [`Command`], its [`CommandResult`] and a [`Farewell`] (a leave) also carry
//! the Ed25519 signature of the node they speak for, with its public key,
//! and every node checks both before acting or relaying. A node id is not
//! chosen but derived from the public key ([`node_id`]): an id can't be
//! claimed with another key, so no member can speak for another node.
//!
//! Signatures go only where a node acts on a message from afar: beacons,
//! digests and deltas stay small and unsigned (see the README's security
//! section for what a member can therefore still do).
//!
//! What is signed ([`command_payload`], [`result_payload`],
//! [`farewell_payload`]) always names the incarnations it is meant for, so a
//! captured message stops acting when the node restarts.

use crate::wire::{
    Command, CommandResult, Farewell, KeyConfirm, KeyOffer, NodeId, Outcome, SealedKey,
};
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use curve25519_dalek::MontgomeryPoint;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use serde::de::{Error as _, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha512};
use std::fmt;

/// Bytes of a public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Bytes of a signature.
pub const SIGNATURE_LEN: usize = 64;

/// A node's public key, 32 bytes on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKey(pub [u8; PUBLIC_KEY_LEN]);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey(")?;
        for byte in &self.0[..4] {
            write!(f, "{byte:02x}")?;
        }
        write!(f, "..)")
    }
}

/// An Ed25519 signature, 64 bytes on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; SIGNATURE_LEN]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Signature(..)")
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // serde derives arrays only up to 32; a tuple of bytes is the same
        // 64 raw bytes in postcard.
        let mut tuple = serializer.serialize_tuple(SIGNATURE_LEN)?;
        for byte in &self.0 {
            tuple.serialize_element(byte)?;
        }
        tuple.end()
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Signature, D::Error> {
        struct Bytes;
        impl<'de> Visitor<'de> for Bytes {
            type Value = Signature;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{SIGNATURE_LEN} bytes")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Signature, A::Error> {
                let mut out = [0u8; SIGNATURE_LEN];
                for (index, byte) in out.iter_mut().enumerate() {
                    *byte = seq
                        .next_element()?
                        .ok_or_else(|| A::Error::invalid_length(index, &self))?;
                }
                Ok(Signature(out))
            }
        }
        deserializer.deserialize_tuple(SIGNATURE_LEN, Bytes)
    }
}

/// A node's signing key. `Debug` shows the node id, never the secret.
#[derive(Clone)]
pub struct NodeKey {
    secret: SigningKey,
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeKey({})", self.id())
    }
}

impl NodeKey {
    /// The key of a 32-byte secret seed (random, kept in the state
    /// directory; the simulator derives it from its seed).
    pub fn from_seed(seed: [u8; 32]) -> NodeKey {
        NodeKey {
            secret: SigningKey::from_bytes(&seed),
        }
    }

    /// The secret seed, to persist.
    pub fn seed(&self) -> [u8; 32] {
        self.secret.to_bytes()
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.secret.verifying_key().to_bytes())
    }

    /// The node id this key speaks for.
    pub fn id(&self) -> NodeId {
        node_id(&self.public())
    }

    /// Signs `payload`.
    pub fn sign(&self, payload: &[u8]) -> Signature {
        Signature(self.secret.sign(payload).to_bytes())
    }

    /// Opens a mesh key sealed to this node with [`seal_key`]; `None` if it
    /// was not sealed to this key (or was tampered with).
    pub fn open_key(&self, ephemeral: [u8; 32], sealed: &SealedKey) -> Option<[u8; 32]> {
        // X25519 with the node key's scalar (RFC 7748 clamping).
        let shared = MontgomeryPoint(ephemeral).mul_clamped(self.secret.to_scalar_bytes());
        let cipher = seal_cipher(&shared, &ephemeral, self.id());
        let mut key = sealed.0;
        cipher
            .decrypt_inout_detached(
                &XNonce::default(),
                b"shoal rekey",
                (&mut key[..]).into(),
                &Tag::from(sealed.1),
            )
            .ok()?;
        Some(key)
    }
}

/// The key that seals a mesh key to `node`: from the X25519 secret shared
/// between the sender's one-time key and the node's key, bound to both.
fn seal_cipher(shared: &MontgomeryPoint, ephemeral: &[u8; 32], node: NodeId) -> XChaCha20Poly1305 {
    let mut hash = Sha512::new();
    hash.update(b"shoal seal key 1");
    hash.update(shared.0);
    hash.update(ephemeral);
    hash.update(node.0.to_le_bytes());
    let digest = hash.finalize();
    let mut key = [0u8; 32];
    key.copy_from_slice(&digest[..32]);
    XChaCha20Poly1305::new(&key.into())
}

/// The one-time X25519 public key of the secret `ephemeral` (random, from
/// the shell; one per rotation).
pub fn ephemeral_public(ephemeral: [u8; 32]) -> [u8; 32] {
    MontgomeryPoint::mul_base_clamped(ephemeral).0
}

/// Seals `mesh_key` to the node of public key `to` with the one-time
/// secret `ephemeral`: only that node's secret opens it. `None` if `to` is
/// not a valid key.
pub fn seal_key(ephemeral: [u8; 32], to: &PublicKey, mesh_key: &[u8; 32]) -> Option<SealedKey> {
    let point = VerifyingKey::from_bytes(&to.0).ok()?.to_montgomery();
    let shared = point.mul_clamped(ephemeral);
    let cipher = seal_cipher(&shared, &ephemeral_public(ephemeral), node_id(to));
    let mut sealed = *mesh_key;
    let tag = cipher
        .encrypt_inout_detached(&XNonce::default(), b"shoal rekey", (&mut sealed[..]).into())
        .ok()?;
    let mut tag_bytes = [0u8; 16];
    tag_bytes.copy_from_slice(&tag);
    Some(SealedKey(sealed, tag_bytes))
}

/// The node id of a public key: the first 8 bytes of
/// SHA-512("shoal node id" | key), little-endian. Finding another key with a
/// given id takes about 2^64 key generations.
pub fn node_id(key: &PublicKey) -> NodeId {
    let mut hash = Sha512::new();
    hash.update(b"shoal node id");
    hash.update(key.0);
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    NodeId(u64::from_le_bytes(first))
}

/// Whether `signature` is `claimed`'s over `payload`: the key must be the
/// one `claimed` is derived from, and the signature valid (strictly: no
/// malleable or small-order encodings).
pub fn verify(claimed: NodeId, key: &PublicKey, payload: &[u8], signature: &Signature) -> bool {
    if node_id(key) != claimed {
        return false;
    }
    let Ok(key) = VerifyingKey::from_bytes(&key.0) else {
        return false;
    };
    let signature = ed25519_dalek::Signature::from_bytes(&signature.0);
    key.verify_strict(payload, &signature).is_ok()
}

/// Longest signed payload: a result's fixed fields and its whole output.
const MAX_PAYLOAD: usize = 64 + crate::wire::MAX_OUTPUT;

/// A signed payload, on the stack.
pub type Payload = heapless::Vec<u8, MAX_PAYLOAD>;

fn payload(domain: &[u8], parts: &[&[u8]]) -> Payload {
    let mut out = Payload::new();
    // Every part is bounded by the wire types, so this never truncates;
    // a truncated payload would only fail to verify.
    let _ = out.extend_from_slice(domain);
    for part in parts {
        let _ = out.extend_from_slice(&(part.len() as u16).to_le_bytes());
        let _ = out.extend_from_slice(part);
    }
    out
}

/// What the asker signs in a command: who asks (and in which incarnation),
/// which request, which node in which incarnation, which executor. Not the
/// relay fields (`hops_left`, `attempt`).
pub fn command_payload(command: &Command) -> Payload {
    payload(
        b"shoal command 2",
        &[
            &command.origin.0.to_le_bytes(),
            &command.origin_incarnation.to_le_bytes(),
            &command.id.to_le_bytes(),
            &command.target.0.to_le_bytes(),
            &command.target_incarnation.to_le_bytes(),
            command.executor.as_bytes(),
        ],
    )
}

/// What the answering node (the target, or a relay that found no route)
/// signs in a result: for which asker incarnation and request, how it ended,
/// the output.
pub fn result_payload(result: &CommandResult) -> Payload {
    let code = match result.outcome {
        Outcome::Exited(code) => code,
        _ => 0,
    };
    let mut outcome = [outcome_tag(result.outcome); 5];
    outcome[1..].copy_from_slice(&code.to_le_bytes());
    payload(
        b"shoal result 2",
        &[
            &result.origin.0.to_le_bytes(),
            &result.origin_incarnation.to_le_bytes(),
            &result.id.to_le_bytes(),
            &result.target.0.to_le_bytes(),
            &outcome,
            result.output.as_bytes(),
        ],
    )
}

fn outcome_tag(outcome: Outcome) -> u8 {
    match outcome {
        Outcome::Exited(_) => 0,
        Outcome::Failed => 1,
        Outcome::TimedOut => 2,
        Outcome::UnknownExecutor => 3,
        Outcome::NotRemote => 4,
        Outcome::Busy => 5,
        Outcome::RateLimited => 6,
        Outcome::NoRoute => 7,
        Outcome::NoAnswer => 8,
    }
}

/// What a rotation's initiator signs in an offer: everything but the hop
/// limit.
pub fn offer_payload(offer: &KeyOffer) -> Payload {
    payload(
        b"shoal key offer 2",
        &[
            &offer.rotation.to_le_bytes(),
            &offer.initiator.0.to_le_bytes(),
            &offer.target.0.to_le_bytes(),
            &offer.target_incarnation.to_le_bytes(),
            &offer.ephemeral,
            &offer.sealed.0,
            &offer.sealed.1,
            &offer.switch_in_ms.to_le_bytes(),
        ],
    )
}

/// What a member signs to confirm a rotation.
pub fn confirm_payload(confirm: &KeyConfirm) -> Payload {
    payload(
        b"shoal key confirm 2",
        &[
            &confirm.rotation.to_le_bytes(),
            &confirm.initiator.0.to_le_bytes(),
            &confirm.new_mesh.to_le_bytes(),
            &confirm.from.0.to_le_bytes(),
        ],
    )
}

/// What a leaving node signs: itself and the incarnation that ends.
pub fn farewell_payload(farewell: &Farewell) -> Payload {
    payload(
        b"shoal leave 2",
        &[
            &farewell.node.0.to_le_bytes(),
            &farewell.incarnation.to_le_bytes(),
        ],
    )
}

#[cfg(test)]
mod tests;

/// The key of test node `n` (its id is `test_key(n).id()`).
#[cfg(test)]
pub(crate) fn test_key(n: u64) -> NodeKey {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&n.to_le_bytes());
    NodeKey::from_seed(seed)
}
