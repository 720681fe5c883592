//! Join tokens: a new node gets the mesh key from a member by proving a
//! single-use secret, without ever sending it.
//!
//! `shoal token` on a member has the agent issue a token: 16 random bytes
//! (the secret, 128 bits) and the member's address, valid for a while (15
//! minutes by default) and for one join. `shoal join TOKEN` on the new
//! node sends one request to that address over the mesh port:
//!
//! ```text
//! joiner                                         member
//!   |-- Request: id(secret), nonce, seal_req(name, id) --->|  token known, not expired,
//!   |                                                      |  seal opens: the secret is known
//!   |<- Answer: id(secret), nonce', seal_ans(status, key) -|  status: key | expired | used
//!   |<- Refused: id (12 bytes) ---------------------------|  anything else (wrong token)
//! ```
//!
//! Keys are derived from the secret (SHA-512 with a label per use: the
//! secret is uniformly random, so no HKDF extract step is needed), and the
//! seals are XChaCha20-Poly1305. So:
//! - the secret never crosses the wire; only a hash of it (the token id,
//!   to find it) does;
//! - a wrong secret learns nothing: every failure (an unknown id, a seal
//!   that does not open) gets the same 12-byte `Refused`; only a 128-byte
//!   request is answered at all, so no reply is bigger than its request;
//! - only the holder of the secret can read the key, or even the status
//!   (expired, used);
//! - a token serves one joiner: the request that used it (by its nonce) is
//!   answered again if it asks again (its answer was lost), any other gets
//!   `used`;
//! - attempts are limited per source address and in total (see
//!   [`JOIN_BURST`]); the rest are dropped unanswered, and every outcome is
//!   counted.
//!
//! The core issues and checks tokens; the shell makes the secrets and
//! nonces (from the kernel's random source) and formats the token text.

use crate::time::{Buckets, Instant};
use crate::wire::{MeshKey, Name, NodeId};
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use sha2::{Digest as _, Sha512};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

/// First bytes of every join datagram: `SJ` (mesh frames start with `SH`).
pub const MAGIC: [u8; 2] = *b"SJ";
/// Version of the join exchange.
pub const VERSION: u8 = 1;
/// Bytes of a token's secret.
pub const SECRET_LEN: usize = 16;
/// Bytes of every request.
pub const REQUEST_LEN: usize = 128;
/// Bytes of an answer.
pub const ANSWER_LEN: usize = HEAD_LEN + NONCE_LEN + ANSWER_BODY + TAG_LEN;
/// Bytes of a refusal.
pub const REFUSED_LEN: usize = HEAD_LEN;
/// Most tokens outstanding at once.
pub const MAX_TOKENS: usize = 16;
/// Attempts one source may make at once...
pub const JOIN_BURST: u32 = 3;
/// ...and then one per this long.
pub const JOIN_REFILL: Duration = Duration::from_secs(1);
/// Attempts from all sources together per second (a flood from spoofed
/// addresses costs at most this many seal checks).
pub const JOIN_TOTAL_PER_SECOND: u32 = 20;
/// Sources whose rate is tracked.
const MAX_SOURCES: usize = 64;

const KIND_REQUEST: u8 = 1;
const KIND_ANSWER: u8 = 2;
const KIND_REFUSED: u8 = 3;
const ID_LEN: usize = 8;
/// magic, version, kind, token id.
const HEAD_LEN: usize = 2 + 1 + 1 + ID_LEN;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// The sealed part of a request: name length, name (padded), node id.
const REQUEST_BODY: usize = REQUEST_LEN - HEAD_LEN - NONCE_LEN - TAG_LEN;
/// The sealed part of an answer: status, mesh key.
const ANSWER_BODY: usize = 1 + 32;

/// A token's secret.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Secret(pub [u8; SECRET_LEN]);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    fn derive(&self, label: &[u8]) -> [u8; 32] {
        let mut hash = Sha512::new();
        hash.update(b"shoal join 1 ");
        hash.update(label);
        hash.update(self.0);
        let digest = hash.finalize();
        let mut out = [0u8; 32];
        out.copy_from_slice(&digest[..32]);
        out
    }

    /// The token id: what the request names in clear.
    pub fn id(&self) -> [u8; ID_LEN] {
        let mut id = [0u8; ID_LEN];
        id.copy_from_slice(&self.derive(b"id")[..ID_LEN]);
        id
    }

    fn request_cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&self.derive(b"request").into())
    }

    fn answer_cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&self.derive(b"answer").into())
    }
}

/// What a member answers a joiner who holds the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Welcome: the mesh key.
    Key([u8; 32]),
    /// The token expired.
    Expired,
    /// Another joiner used the token.
    Used,
}

/// Why a joiner got no key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// The member knows no such token, or the proof failed: a wrong (or
    /// mistyped) token, or one the member forgot (it restarted).
    #[error("wrong token: the member knows no such token (mistyped, or issued before the member restarted)")]
    Refused,
    /// Not an answer to this request (another sender, or corrupted).
    #[error("not an answer to this request")]
    NotAnAnswer,
}

fn head(kind: u8, id: [u8; ID_LEN]) -> [u8; HEAD_LEN] {
    let mut head = [0u8; HEAD_LEN];
    head[..2].copy_from_slice(&MAGIC);
    head[2] = VERSION;
    head[3] = kind;
    head[4..].copy_from_slice(&id);
    head
}

/// The joiner's request for `secret`'s token, with a random `nonce` (the
/// shell's), naming the joiner.
pub fn request(
    secret: &Secret,
    nonce: [u8; NONCE_LEN],
    name: &Name,
    node: NodeId,
) -> [u8; REQUEST_LEN] {
    let mut out = [0u8; REQUEST_LEN];
    let head = head(KIND_REQUEST, secret.id());
    out[..HEAD_LEN].copy_from_slice(&head);
    out[HEAD_LEN..HEAD_LEN + NONCE_LEN].copy_from_slice(&nonce);
    let body_at = HEAD_LEN + NONCE_LEN;
    let body = &mut out[body_at..body_at + REQUEST_BODY];
    body[0] = name.len() as u8;
    body[1..1 + name.len()].copy_from_slice(name.as_bytes());
    body[33..41].copy_from_slice(&node.0.to_le_bytes());
    let tag =
        secret
            .request_cipher()
            .encrypt_inout_detached(&XNonce::from(nonce), &head, body.into());
    if let Ok(tag) = tag {
        out[body_at + REQUEST_BODY..].copy_from_slice(&tag);
    }
    out
}

/// The answer's nonce: the request's with its first bit flipped (one
/// answer per request, so never reused under the answer key).
fn answer_nonce(request_nonce: [u8; NONCE_LEN]) -> [u8; NONCE_LEN] {
    let mut nonce = request_nonce;
    nonce[0] ^= 0x80;
    nonce
}

fn seal_answer(
    secret: &Secret,
    request_nonce: [u8; NONCE_LEN],
    answer: &Answer,
) -> [u8; ANSWER_LEN] {
    let mut out = [0u8; ANSWER_LEN];
    let head = head(KIND_ANSWER, secret.id());
    out[..HEAD_LEN].copy_from_slice(&head);
    let nonce = answer_nonce(request_nonce);
    out[HEAD_LEN..HEAD_LEN + NONCE_LEN].copy_from_slice(&nonce);
    let body_at = HEAD_LEN + NONCE_LEN;
    let body = &mut out[body_at..body_at + ANSWER_BODY];
    match answer {
        Answer::Key(key) => {
            body[0] = 1;
            body[1..].copy_from_slice(key);
        }
        Answer::Expired => body[0] = 2,
        Answer::Used => body[0] = 3,
    }
    let tag =
        secret
            .answer_cipher()
            .encrypt_inout_detached(&XNonce::from(nonce), &head, body.into());
    if let Ok(tag) = tag {
        out[body_at + ANSWER_BODY..].copy_from_slice(&tag);
    }
    out
}

/// Reads the member's reply to the request made with `secret` and `nonce`.
pub fn open_reply(
    secret: &Secret,
    nonce: [u8; NONCE_LEN],
    reply: &[u8],
) -> Result<Answer, JoinError> {
    let id = secret.id();
    if reply.len() == REFUSED_LEN && reply[..] == head(KIND_REFUSED, id) {
        return Err(JoinError::Refused);
    }
    let Some(reply) = reply.first_chunk::<ANSWER_LEN>() else {
        return Err(JoinError::NotAnAnswer);
    };
    let head = head(KIND_ANSWER, id);
    let expected_nonce = answer_nonce(nonce);
    if reply[..HEAD_LEN] != head || reply[HEAD_LEN..HEAD_LEN + NONCE_LEN] != expected_nonce {
        return Err(JoinError::NotAnAnswer);
    }
    let body_at = HEAD_LEN + NONCE_LEN;
    let mut body = [0u8; ANSWER_BODY];
    body.copy_from_slice(&reply[body_at..body_at + ANSWER_BODY]);
    let mut tag = [0u8; TAG_LEN];
    tag.copy_from_slice(&reply[body_at + ANSWER_BODY..]);
    secret
        .answer_cipher()
        .decrypt_inout_detached(
            &XNonce::from(expected_nonce),
            &head,
            (&mut body[..]).into(),
            &Tag::from(tag),
        )
        .map_err(|_| JoinError::NotAnAnswer)?;
    match body[0] {
        1 => {
            let mut key = [0u8; 32];
            key.copy_from_slice(&body[1..]);
            Ok(Answer::Key(key))
        }
        2 => Ok(Answer::Expired),
        3 => Ok(Answer::Used),
        _ => Err(JoinError::NotAnAnswer),
    }
}

/// Whether `datagram` is a join datagram (to hand to [`Tokens::handle`]).
pub fn is_join(datagram: &[u8]) -> bool {
    datagram.starts_with(&MAGIC)
}

/// How a join request ended, for counters and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The key went to `name` (`node`).
    Joined {
        /// The joiner's name.
        name: Name,
        /// The joiner's node id, as it said.
        node: NodeId,
    },
    /// The joiner asked again (its answer was lost): answered again.
    AnsweredAgain,
    /// A valid proof for an expired token.
    Expired,
    /// A valid proof for a token another joiner used.
    Used,
    /// Unknown token, or a proof that failed.
    Wrong,
    /// Not a request of this version: dropped unanswered.
    Malformed,
    /// Over the rate limit: dropped unanswered.
    RateLimited,
}

/// Why no token was issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IssueError {
    /// An open mesh has no key to hand out.
    #[error("this mesh is open (mesh.open = true): there is no key to join with")]
    OpenMesh,
    /// [`MAX_TOKENS`] are outstanding.
    #[error("{MAX_TOKENS} join tokens are outstanding; wait for one to be used or to expire")]
    TooMany,
}

#[derive(Debug, Clone)]
struct Issued {
    secret: Secret,
    expires: Instant,
    /// The request that used it (its nonce), when, and the key it got.
    used_by: Option<([u8; NONCE_LEN], Instant, [u8; 32])>,
}

/// A joiner whose answer got lost asks again within this long; later, or
/// once the mesh key changed (a rotation), a used token says only "used".
pub const ANSWER_AGAIN_FOR: Duration = Duration::from_secs(60);

/// A member's outstanding tokens and the join rate limits, bounded.
#[derive(Debug)]
pub struct Tokens {
    issued: BTreeMap<[u8; ID_LEN], Issued>,
    sources: Buckets<IpAddr>,
    total: Buckets<()>,
}

impl Default for Tokens {
    fn default() -> Tokens {
        Tokens {
            issued: BTreeMap::new(),
            sources: Buckets::new(JOIN_BURST, JOIN_REFILL, MAX_SOURCES),
            total: Buckets::new(
                JOIN_TOTAL_PER_SECOND,
                Duration::from_secs(1) / JOIN_TOTAL_PER_SECOND,
                1,
            ),
        }
    }
}

/// A reply to send back, at most [`ANSWER_LEN`] bytes.
pub type Reply = heapless::Vec<u8, ANSWER_LEN>;

impl Tokens {
    /// Issues a token for `secret`, valid for `valid_for` from `now`.
    pub fn issue(
        &mut self,
        now: Instant,
        secret: Secret,
        valid_for: Duration,
    ) -> Result<(), IssueError> {
        // Tokens expired for a while are gone (a late joiner gets "wrong").
        self.issued.retain(|_, token| {
            now.saturating_since(token.expires) < valid_for.max(Duration::from_secs(60))
        });
        if self.issued.len() >= MAX_TOKENS {
            // Make room from the expired or used ones first.
            let spent = self
                .issued
                .iter()
                .filter(|(_, t)| t.expires <= now || t.used_by.is_some())
                .min_by_key(|(_, t)| t.expires)
                .map(|(id, _)| *id);
            match spent {
                Some(id) => {
                    self.issued.remove(&id);
                }
                None => return Err(IssueError::TooMany),
            }
        }
        self.issued.insert(
            secret.id(),
            Issued {
                secret,
                expires: now + valid_for,
                used_by: None,
            },
        );
        Ok(())
    }

    /// Tokens issued and not yet used or expired.
    pub fn outstanding(&self, now: Instant) -> usize {
        self.issued
            .values()
            .filter(|t| t.used_by.is_none() && t.expires > now)
            .count()
    }

    /// A join datagram from `from`: the reply to send back (none when rate
    /// limited) and what happened. `key` is the mesh key to hand out.
    pub fn handle(
        &mut self,
        now: Instant,
        from: IpAddr,
        datagram: &[u8],
        key: &MeshKey,
    ) -> (Option<Reply>, Outcome) {
        // Replies go to one address that sent us a whole request, never to
        // a broadcast or multicast one.
        let unicast = match from {
            IpAddr::V4(v4) => !v4.is_broadcast() && !v4.is_multicast() && !v4.is_unspecified(),
            IpAddr::V6(v6) => !v6.is_multicast() && !v6.is_unspecified(),
        };
        if !unicast {
            return (None, Outcome::Malformed);
        }
        if !self.allow(now, from) {
            return (None, Outcome::RateLimited);
        }
        let Some((id, nonce, sealed)) = parse_request(datagram) else {
            // Not a request of this version (its size least of all): no
            // reply, which could be bigger than what came.
            return (None, Outcome::Malformed);
        };
        let Some(token) = self.issued.get_mut(&id) else {
            return (refusal(id), Outcome::Wrong);
        };
        let head = head(KIND_REQUEST, id);
        let mut body = sealed.0;
        let opened = token.secret.request_cipher().decrypt_inout_detached(
            &XNonce::from(nonce),
            &head,
            (&mut body[..]).into(),
            &Tag::from(sealed.1),
        );
        if opened.is_err() {
            return (refusal(id), Outcome::Wrong);
        }
        let secret = token.secret;
        let (answer, outcome) = match token.used_by {
            // The same request, soon, for the same key: its answer got
            // lost. (The same bytes again, never a new key under the same
            // nonce.)
            Some((used, at, given))
                if used == nonce
                    && given == key.0
                    && now.saturating_since(at) < ANSWER_AGAIN_FOR =>
            {
                (Answer::Key(key.0), Outcome::AnsweredAgain)
            }
            Some(_) => (Answer::Used, Outcome::Used),
            None if token.expires <= now => (Answer::Expired, Outcome::Expired),
            None => {
                token.used_by = Some((nonce, now, key.0));
                let name = parse_name(&body)
                    .unwrap_or_else(|| Name::try_from("unnamed").unwrap_or_default());
                let mut node = [0u8; 8];
                node.copy_from_slice(&body[33..41]);
                (
                    Answer::Key(key.0),
                    Outcome::Joined {
                        name,
                        node: NodeId(u64::from_le_bytes(node)),
                    },
                )
            }
        };
        let sealed = seal_answer(&secret, nonce, &answer);
        (Reply::from_slice(&sealed).ok(), outcome)
    }

    fn allow(&mut self, now: Instant, from: IpAddr) -> bool {
        self.sources.allow(now, from) && self.total.allow(now, ())
    }
}

/// A request's token id, nonce and sealed body with its tag; `None` if it
/// is not a well-formed request of this version.
#[allow(clippy::type_complexity)]
fn parse_request(
    datagram: &[u8],
) -> Option<(
    [u8; ID_LEN],
    [u8; NONCE_LEN],
    ([u8; REQUEST_BODY], [u8; TAG_LEN]),
)> {
    if datagram.len() != REQUEST_LEN
        || datagram[..2] != MAGIC
        || datagram[2] != VERSION
        || datagram[3] != KIND_REQUEST
    {
        return None;
    }
    let mut id = [0u8; ID_LEN];
    id.copy_from_slice(&datagram[4..HEAD_LEN]);
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&datagram[HEAD_LEN..HEAD_LEN + NONCE_LEN]);
    let body_at = HEAD_LEN + NONCE_LEN;
    let mut body = [0u8; REQUEST_BODY];
    body.copy_from_slice(&datagram[body_at..body_at + REQUEST_BODY]);
    let mut tag = [0u8; TAG_LEN];
    tag.copy_from_slice(&datagram[body_at + REQUEST_BODY..]);
    Some((id, nonce, (body, tag)))
}

fn parse_name(body: &[u8; REQUEST_BODY]) -> Option<Name> {
    let len = usize::from(body[0]);
    let text = std::str::from_utf8(body.get(1..1 + len)?).ok()?;
    crate::wire::name(text)
}

fn refusal(id: [u8; ID_LEN]) -> Option<Reply> {
    Reply::from_slice(&head(KIND_REFUSED, id)).ok()
}

#[cfg(test)]
mod tests;
