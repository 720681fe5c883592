//! Trust in the shell: join tokens (the token text, the member's answers to
//! `POST /api/token` and `POST /api/mesh/reload`, and `shoal join` on the
//! new node: the request over the mesh port, the key written, the local
//! agent switched over) and key rotation (`POST /api/key/rotate`, the new
//! key written when the node switches). The exchanges themselves are
//! `shoal_core::join` and `shoal_core::rotation`.
//!
//! A token reads `shoal1-<32 hex digits>@HOST:PORT`: the secret, then the
//! member's mesh (sync) address, which may be on another subnet.

use super::api::Answer;
use super::state;
use serde_json::json;
use shoal_core::join::{self, Answer as JoinAnswer, JoinError, Secret, SECRET_LEN};
use shoal_core::time::Instant;
use shoal_core::wire::{self, MeshKey, NodeId};
use shoal_core::Node;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::path::Path;
use std::time::Duration;

/// What every token starts with (`1`: the version of the join exchange).
pub const PREFIX: &str = "shoal1-";
/// How long a token is valid unless `--expire` says otherwise.
pub const DEFAULT_EXPIRE: Duration = Duration::from_secs(15 * 60);
/// The longest validity a token may have.
pub const MAX_EXPIRE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Requests `shoal join` sends before it gives up, one per second.
pub const ATTEMPTS: u32 = 4;

/// A parsed token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The secret.
    pub secret: Secret,
    /// The member to ask, `HOST:PORT`.
    pub member: String,
}

impl Token {
    /// Reads a token's text.
    pub fn parse(text: &str) -> Result<Token, String> {
        let text = text.trim();
        let rest = text
            .strip_prefix(PREFIX)
            .ok_or_else(|| format!("not a shoal join token (it starts with {PREFIX:?})"))?;
        let (hex, member) = rest
            .split_once('@')
            .ok_or("the token names no member (…@HOST:PORT)")?;
        if hex.len() != 2 * SECRET_LEN || !hex.is_ascii() {
            return Err(format!(
                "the token's secret must be {} hex digits",
                2 * SECRET_LEN
            ));
        }
        let mut secret = [0u8; SECRET_LEN];
        for (byte, pair) in secret.iter_mut().zip(hex.as_bytes().chunks(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| "bad hex digit")?;
            *byte = u8::from_str_radix(pair, 16)
                .map_err(|_| format!("bad hex digit in the token: {pair:?}"))?;
        }
        if member
            .rsplit_once(':')
            .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
        {
            return Err(format!("the token's member {member:?} is not HOST:PORT"));
        }
        Ok(Token {
            secret: Secret(secret),
            member: member.to_owned(),
        })
    }

    /// The token's text.
    pub fn text(&self) -> String {
        let hex: String = self.secret.0.iter().map(|b| format!("{b:02x}")).collect();
        format!("{PREFIX}{hex}@{}", self.member)
    }
}

/// The address a token names for this node: `mesh.bind` and the sync port,
/// or, when bound to every address, the first IPv4 address of an interface
/// that is up and not loopback (loopback if there is none).
pub fn member_addr(bind: IpAddr, sync_port: u16) -> SocketAddr {
    if !bind.is_unspecified() {
        return SocketAddr::new(bind, sync_port);
    }
    let ip = if_addrs::get_if_addrs()
        .ok()
        .and_then(|interfaces| {
            interfaces
                .into_iter()
                .filter(|i| !i.is_loopback())
                .find_map(|i| match i.ip() {
                    IpAddr::V4(v4) => Some(IpAddr::V4(v4)),
                    IpAddr::V6(_) => None,
                })
        })
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    SocketAddr::new(ip, sync_port)
}

/// `POST /api/token?expire=DUR&addr=HOST:PORT`: a new token, valid for
/// `valid_for`, naming `member`.
pub fn issue(node: &mut Node, now: Instant, valid_for: Duration, member: String) -> Answer {
    let secret = match state::random_bytes::<SECRET_LEN>() {
        Ok(bytes) => Secret(bytes),
        Err(error) => return Answer::error(500, error.to_string()),
    };
    match node.issue_token(now, secret, valid_for) {
        Ok(()) => {
            log::info!(
                "issued a join token naming {member}, valid for {}s ({} outstanding)",
                valid_for.as_secs(),
                node.outstanding_tokens(now)
            );
            let token = Token { secret, member };
            Answer {
                status: 200,
                body: json!({
                    "token": token.text(),
                    "member": token.member,
                    "expires_in_s": valid_for.as_secs(),
                }),
            }
        }
        Err(error @ join::IssueError::OpenMesh) => Answer::error(409, error.to_string()),
        Err(error @ join::IssueError::TooMany) => Answer::error(503, error.to_string()),
    }
}

/// `POST /api/mesh/reload?knock=HOST:PORT`: reads the key file again (after
/// `shoal join` wrote it) and switches the mesh; knocks on the member.
pub fn reload(node: &mut Node, key_path: Option<&Path>, knock: Option<SocketAddr>) -> Answer {
    let Some(path) = key_path else {
        return Answer::error(
            409,
            "this mesh is open (mesh.open = true): there is no key to reload",
        );
    };
    let key = match state::read_key(path) {
        Ok(key) => key,
        Err(error) => return Answer::error(500, error.to_string()),
    };
    let mesh_id = state::mesh_id(Some(&key));
    let changed = node.config().mesh_id != mesh_id;
    if changed {
        node.set_mesh(mesh_id, key);
        log::warn!(
            "switched to mesh {mesh_id:08x} with the key in {}: neighbors of the old mesh fall silent",
            path.display()
        );
    }
    if let Some(addr) = knock {
        node.knock(addr);
    }
    Answer {
        status: 200,
        body: json!({ "mesh": format!("{mesh_id:08x}"), "changed": changed }),
    }
}

/// What the agent keeps for joins and rotations: one owner, a field of
/// `Agent`.
#[derive(Debug)]
pub struct Trust {
    /// The address join tokens name by default (this node's mesh address).
    pub member: SocketAddr,
    /// The mesh key file (`None`: an open mesh).
    pub key_path: Option<std::path::PathBuf>,
    /// The `POST /api/key/rotate` waiting for its rotation to switch, with
    /// who was left out.
    rotating: Option<(u32, smol::channel::Sender<Answer>, Vec<serde_json::Value>)>,
}

impl Trust {
    /// Trust for a node whose mesh address is `member` and key file `key_path`.
    pub fn new(member: SocketAddr, key_path: Option<std::path::PathBuf>) -> Trust {
        Trust {
            member,
            key_path,
            rotating: None,
        }
    }

    /// `POST /api/key/rotate?exclude=NODE,...`: starts a rotation; the
    /// answer comes when it switches.
    pub fn rotate(
        &mut self,
        node: &mut Node,
        now: Instant,
        exclude: &[String],
        reply: smol::channel::Sender<Answer>,
    ) {
        let mut excluded = Vec::new();
        for name in exclude {
            match node.find_node(now, name) {
                Ok(id) => excluded.push(id),
                Err(error) => {
                    let _ =
                        reply.try_send(Answer::error(404, format!("--exclude {name}: {error}")));
                    return;
                }
            }
        }
        let (key, ephemeral) = match (state::random_bytes::<32>(), state::random_bytes::<32>()) {
            (Ok(key), Ok(ephemeral)) => (MeshKey(key), ephemeral),
            (Err(error), _) | (_, Err(error)) => {
                let _ = reply.try_send(Answer::error(500, error.to_string()));
                return;
            }
        };
        match node.rotate(now, key, ephemeral, &excluded) {
            Ok(plan) => {
                let left_out = plan
                    .left_out
                    .iter()
                    .map(|(id, why)| json!({ "node": super::answers::name_or_id(node, *id), "why": why }))
                    .collect();
                if let Some((_, earlier, _)) =
                    self.rotating.replace((plan.rotation, reply, left_out))
                {
                    let _ = earlier.try_send(Answer::error(409, "another rotation started"));
                }
            }
            Err(error) => {
                let _ = reply.try_send(Answer::error(409, error.to_string()));
            }
        }
    }

    /// A new key to write, or a rotation of ours that switched.
    pub fn on_event(&mut self, node: &Node, event: shoal_core::Event) {
        match event {
            shoal_core::Event::MeshKeyChanged { mesh_id, key } => match &self.key_path {
                Some(path) => match state::replace_key(path, &key) {
                    Ok(()) => log::warn!(
                        "switched to mesh {mesh_id:08x}: the new key is in {}",
                        path.display()
                    ),
                    Err(error) => log::error!(
                        "switched to mesh {mesh_id:08x} but {error}: after a restart this node must join again with a token"
                    ),
                },
                None => log::error!("switched to mesh {mesh_id:08x}, but there is no key file to keep it in"),
            },
            shoal_core::Event::RotationDone {
                rotation,
                confirmed,
                unconfirmed,
            } => {
                let names = |ids: &[NodeId]| -> Vec<String> {
                    ids.iter().map(|&id| super::answers::name_or_id(node, id)).collect()
                };
                log::warn!(
                    "rotation {rotation} switched: {} members confirmed, {} did not ({})",
                    confirmed.len(),
                    unconfirmed.len(),
                    names(&unconfirmed).join(", ")
                );
                if let Some((waiting, reply, left_out)) = self.rotating.take() {
                    if waiting == rotation {
                        let _ = reply.try_send(Answer {
                            status: 200,
                            body: json!({
                                "rotation": rotation,
                                "mesh": format!("{:08x}", node.config().mesh_id),
                                "confirmed": names(&confirmed),
                                "unconfirmed": names(&unconfirmed),
                                "left_out": left_out,
                            }),
                        });
                    }
                }
            }
            _ => {}
        }
    }
}

/// Why `shoal join` failed: each prints one sentence, exit code 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinFailure {
    /// The member knows no such token.
    #[error("{0}")]
    Wrong(JoinError),
    /// The token expired.
    #[error("the token expired: ask for a new one (shoal token on a member)")]
    Expired,
    /// Another node used the token.
    #[error("the token was used already, by another node: ask for a new one")]
    Used,
    /// No answer.
    #[error("unreachable: no answer from {0} in {ATTEMPTS} s (is shoal running there, and can this node reach it on UDP?)")]
    Unreachable(String),
    /// The member's address does not resolve, or no socket could be opened.
    #[error("{0}")]
    Local(String),
}

/// Asks the member named in `token` for the mesh key, from `bind` (the
/// node's own address, or unspecified), as node `name`.
pub fn ask(token: &Token, bind: IpAddr, name: &wire::Name) -> Result<[u8; 32], JoinFailure> {
    let member = token
        .member
        .to_socket_addrs()
        .map_err(|error| JoinFailure::Local(format!("cannot resolve {}: {error}", token.member)))?
        .find(SocketAddr::is_ipv4)
        .ok_or_else(|| JoinFailure::Local(format!("{} has no IPv4 address", token.member)))?;
    let socket = UdpSocket::bind(SocketAddr::new(bind, 0))
        .map_err(|error| JoinFailure::Local(format!("cannot open a UDP socket: {error}")))?;
    socket
        .set_read_timeout(Some(Duration::from_millis(250)))
        .map_err(|error| JoinFailure::Local(error.to_string()))?;
    let nonce =
        state::random_bytes::<24>().map_err(|error| JoinFailure::Local(error.to_string()))?;
    let request = join::request(&token.secret, nonce, name, NodeId(0));
    let mut buf = [0u8; 256];
    // A refusal is not authenticated (anyone could send one): it ends the
    // resending, but an authentic answer still wins within that second.
    let mut refused = false;
    for _ in 0..ATTEMPTS {
        if refused {
            break;
        }
        socket
            .send_to(&request, member)
            .map_err(|error| JoinFailure::Local(format!("cannot send to {member}: {error}")))?;
        let until = std::time::Instant::now() + Duration::from_secs(1);
        while std::time::Instant::now() < until {
            let Ok((len, from)) = socket.recv_from(&mut buf) else {
                continue;
            };
            if from != member {
                continue;
            }
            match join::open_reply(&token.secret, nonce, &buf[..len]) {
                Ok(JoinAnswer::Key(key)) => return Ok(key),
                Ok(JoinAnswer::Expired) => return Err(JoinFailure::Expired),
                Ok(JoinAnswer::Used) => return Err(JoinFailure::Used),
                Err(JoinError::Refused) => refused = true,
                Err(JoinError::NotAnAnswer) => {}
            }
        }
    }
    if refused {
        return Err(JoinFailure::Wrong(JoinError::Refused));
    }
    Err(JoinFailure::Unreachable(token.member.clone()))
}

/// Writes the mesh key `key` to `path` (mode 0600, replacing this node's own
/// key of a mesh of one; owned like its directory when run as root, so the
/// service can read it). False if it held that key already.
pub fn write_key(path: &Path, key: &MeshKey) -> Result<bool, String> {
    if let Ok(existing) = state::read_key(path) {
        if existing.0 == key.0 {
            return Ok(false);
        }
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    state::create_private_dir(dir).map_err(|error| error.to_string())?;
    state::replace_key(path, key).map_err(|error| error.to_string())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let Ok(owner) = std::fs::metadata(dir) {
            // Only root may change the owner; for anyone else it is theirs.
            let _ = std::os::unix::fs::chown(path, Some(owner.uid()), Some(owner.gid()));
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests;
