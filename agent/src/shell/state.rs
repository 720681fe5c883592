//! The state directory: who this node is, and how often it started.
//!
//! `identity` holds the node id and the incarnation, bumped and written at
//! every start *before* the first frame is sent: reusing an incarnation would
//! reuse frame counters, which peers drop as replays (and which would reuse
//! AEAD nonces). Writes are atomic (temporary file, fsync, rename, fsync of
//! the directory) and counted, and never go through a symbolic link
//! (`files.rs`). Only a missing identity makes a new node: one that cannot
//! be read, or belongs to another user, stops the agent with the path; a
//! corrupt one is kept aside as `identity.corrupt` and replaced.

use super::files;
use shoal_core::sign::NodeKey;
use shoal_core::wire::{MeshKey, NodeId};
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Why the state directory cannot be used. The agent does not start.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The directory could not be created.
    #[error("cannot create state directory {path}: {source}")]
    Create {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A file in it could not be written (read-only, full, permissions).
    #[error("cannot write {path}: {source} (is the state directory writable by this user?)")]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The system's random source failed.
    #[error("cannot read /dev/urandom: {0}")]
    Random(io::Error),
    /// The mesh key file is missing or malformed.
    #[error("mesh key {path}: {reason}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The API token file holds no usable token.
    #[error("API token file {0} is empty or holds whitespace inside the token")]
    BadToken(PathBuf),
}

/// This node's persistent identity.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Its signing key, random, kept for the node's life; the node id is
    /// derived from it.
    pub key: NodeKey,
    /// Starts so far, this one included.
    pub incarnation: u32,
}

impl Identity {
    /// The node id.
    pub fn id(&self) -> NodeId {
        self.key.id()
    }
}

/// What loading the identity found, for the start-up log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// A valid identity file.
    Valid,
    /// No file: a new node.
    Missing,
    /// A file that did not parse: replaced by a new identity.
    Corrupt(String),
    /// An identity of protocol 1 (an id without a signing key): the node
    /// keeps its incarnation and gets a key, and with it a new id.
    Upgraded(NodeId),
    /// The node with this id used up its incarnations (`u32::MAX` starts
    /// or frame-counter spaces): it starts as a new node with a new id.
    Exhausted(NodeId),
}

/// The state directory.
#[derive(Debug)]
pub struct StateDir {
    dir: PathBuf,
    writes: u64,
}

const IDENTITY: &str = "identity";
const HEADER: &str = "shoal-state 2";
/// The identity format of protocol 1: `node_id=`, no key.
const HEADER_V1: &str = "shoal-state 1";

impl StateDir {
    /// Opens (creating if needed) the directory `dir`.
    pub fn open(dir: &Path) -> Result<StateDir, StateError> {
        fs::create_dir_all(dir).map_err(|source| StateError::Create {
            path: dir.to_owned(),
            source,
        })?;
        files::remove_stale_temporaries(dir);
        Ok(StateDir {
            dir: dir.to_owned(),
            writes: 0,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Files written since opening.
    pub fn writes(&self) -> u64 {
        self.writes
    }

    /// Loads the identity, bumps the incarnation, and persists it (mode
    /// 0600: it holds the node's secret key) before returning. A missing or
    /// corrupt file yields a new random key.
    pub fn next_identity(&mut self) -> Result<(Identity, Found), StateError> {
        let path = self.dir.join(IDENTITY);
        let (previous, mut found) = match files::read_owned_secret(&path) {
            Ok(text) => match parse_identity(&text) {
                Ok(Stored::Current { seed, incarnation }) => (
                    Some(Identity {
                        key: NodeKey::from_seed(seed),
                        incarnation,
                    }),
                    Found::Valid,
                ),
                Ok(Stored::Protocol1 { id, incarnation }) => (
                    Some(Identity {
                        key: NodeKey::from_seed(random_seed()?),
                        incarnation,
                    }),
                    Found::Upgraded(id),
                ),
                Err(reason) => {
                    // Kept for a person to look at; the node starts anew.
                    let aside = self.dir.join(format!("{IDENTITY}.corrupt"));
                    let _ = fs::rename(&path, &aside);
                    (
                        None,
                        Found::Corrupt(format!("{reason}; kept as {}", aside.display())),
                    )
                }
            },
            Err(error) if error.kind() == io::ErrorKind::NotFound => (None, Found::Missing),
            // Unreadable is not missing: starting as a new node would
            // overwrite a valid identity the service merely cannot read.
            Err(source) => return Err(StateError::Read { path, source }),
        };
        let identity = match previous {
            // The counter space of this key is used up: a node id of its
            // own, so no (key, incarnation, counter) is ever used twice.
            Some(previous) if previous.incarnation == u32::MAX => {
                found = Found::Exhausted(previous.id());
                Identity {
                    key: NodeKey::from_seed(random_seed()?),
                    incarnation: 1,
                }
            }
            Some(previous) => Identity {
                key: previous.key,
                incarnation: previous.incarnation + 1,
            },
            None => Identity {
                key: NodeKey::from_seed(random_seed()?),
                incarnation: 1,
            },
        };
        self.save_identity(&identity)?;
        Ok((identity, found))
    }

    /// Persists `identity` (mode 0600: it holds the node's secret key); also
    /// when the core moved to a new incarnation at run time.
    pub fn save_identity(&mut self, identity: &Identity) -> Result<(), StateError> {
        let seed: String = identity
            .key
            .seed()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let text = format!(
            "{HEADER}\nnode_key={seed}\nincarnation={}\nend\n",
            identity.incarnation
        );
        self.write_atomic(IDENTITY, text.as_bytes())
    }

    /// Writes `name` atomically: a reader sees the old or the new file, never half.
    pub fn write_atomic(&mut self, name: &str, bytes: &[u8]) -> Result<(), StateError> {
        let path = self.dir.join(name);
        files::write_own(&path, bytes, true)
            .map_err(|source| StateError::Write { path, source })?;
        self.writes += 1;
        Ok(())
    }
}

/// What an identity file holds.
enum Stored {
    /// This protocol's: a signing key's seed.
    Current { seed: [u8; 32], incarnation: u32 },
    /// Protocol 1's: an id without a key.
    Protocol1 { id: NodeId, incarnation: u32 },
}

fn parse_identity(text: &str) -> Result<Stored, String> {
    let mut lines = text.lines();
    let version = match lines.next() {
        Some(HEADER) => 2,
        Some(HEADER_V1) => 1,
        _ => return Err("unknown format".to_owned()),
    };
    let mut id = None;
    let mut seed = None;
    let mut incarnation = None;
    let mut complete = false;
    for line in lines {
        match line.split_once('=') {
            Some(("node_id", value)) if version == 1 => id = u64::from_str_radix(value, 16).ok(),
            Some(("node_key", value)) if version == 2 => seed = parse_seed(value),
            Some(("incarnation", value)) => incarnation = value.parse::<u32>().ok(),
            _ if line == "end" => complete = true,
            _ => return Err(format!("unexpected line {line:?}")),
        }
    }
    match (seed, id, incarnation, complete) {
        (_, _, _, false) => Err("truncated".to_owned()),
        (Some(seed), _, Some(incarnation), true) if incarnation > 0 => {
            Ok(Stored::Current { seed, incarnation })
        }
        (_, Some(id), Some(incarnation), true) if incarnation > 0 => Ok(Stored::Protocol1 {
            id: NodeId(id),
            incarnation,
        }),
        _ => Err("missing or malformed node_key or incarnation".to_owned()),
    }
}

/// 64 hex digits.
fn parse_seed(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut seed = [0u8; 32];
    for (byte, pair) in seed.iter_mut().zip(text.as_bytes().chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(seed)
}

/// 32 random bytes from the kernel.
fn random_seed() -> Result<[u8; 32], StateError> {
    random_bytes()
}

/// `N` random bytes from the kernel.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], StateError> {
    let mut bytes = [0u8; N];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(StateError::Random)?;
    Ok(bytes)
}

/// Replaces the mesh key at `path` with `key` (64 hex digits, mode 0600),
/// atomically: a reader sees the old key or the new one.
pub fn replace_key(path: &Path, key: &MeshKey) -> Result<(), StateError> {
    write_private(path, &key.0, true)
}

/// Writes the hex of `bytes` (and a newline) to a temporary file (mode
/// 0600, synced) beside `path`, then renames it over `path` (`replace`)
/// or links it there, refusing an existing file; the directory is synced.
fn write_private(path: &Path, bytes: &[u8], replace: bool) -> Result<(), StateError> {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    files::write_own(path, format!("{hex}\n").as_bytes(), replace).map_err(|source| {
        StateError::Write {
            path: path.to_owned(),
            source,
        }
    })
}

/// A neighbor remembered across restarts, so a rebooted node (or one that
/// lost every neighbor) knocks on its door at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownPeer {
    /// Its unicast address.
    pub addr: std::net::SocketAddr,
    /// Its name when last heard.
    pub name: String,
    /// When it was last heard healthy, seconds since the Unix epoch.
    pub last_seen: u64,
    /// Frames received from it, summed over runs.
    pub successes: u64,
    /// Times it became UNREACHABLE.
    pub failures: u64,
}

const PEERS: &str = "peers";
const PEERS_HEADER: &str = "shoal-peers 1";

impl StateDir {
    /// The remembered peers; a corrupt file is reported and ignored.
    pub fn load_peers(&self) -> (Vec<KnownPeer>, Found) {
        self.load_list(PEERS, parse_peers)
    }

    /// Reads a list file of the state directory; missing or corrupt: empty.
    fn load_list<T>(
        &self,
        name: &str,
        parse: fn(&str) -> Result<Vec<T>, String>,
    ) -> (Vec<T>, Found) {
        match files::read_own(&self.dir.join(name)) {
            Ok(text) => match parse(&text) {
                Ok(list) => (list, Found::Valid),
                Err(reason) => (Vec::new(), Found::Corrupt(reason)),
            },
            Err(error) if error.kind() == io::ErrorKind::NotFound => (Vec::new(), Found::Missing),
            Err(error) => (Vec::new(), Found::Corrupt(error.to_string())),
        }
    }

    /// Writes the remembered peers atomically.
    pub fn save_peers(&mut self, peers: &[KnownPeer]) -> Result<(), StateError> {
        let mut text = format!("{PEERS_HEADER}\n");
        for peer in peers {
            text.push_str(&format!(
                "{} {} {} {} {}\n",
                peer.addr, peer.name, peer.last_seen, peer.successes, peer.failures
            ));
        }
        text.push_str("end\n");
        self.write_atomic(PEERS, text.as_bytes())
    }
}

const INCARNATIONS: &str = "incarnations";
const INCARNATIONS_HEADER: &str = "shoal-incarnations 1";

impl StateDir {
    /// The other nodes' incarnations known at the last save.
    pub fn load_incarnations(&self) -> (Vec<(NodeId, u32)>, Found) {
        self.load_list(INCARNATIONS, parse_incarnations)
    }

    /// Writes the other nodes' incarnations atomically.
    pub fn save_incarnations(
        &mut self,
        known: &std::collections::BTreeMap<NodeId, u32>,
    ) -> Result<(), StateError> {
        let mut text = format!("{INCARNATIONS_HEADER}\n");
        for (id, incarnation) in known {
            text.push_str(&format!("{id} {incarnation}\n"));
        }
        text.push_str("end\n");
        self.write_atomic(INCARNATIONS, text.as_bytes())
    }
}

fn parse_incarnations(text: &str) -> Result<Vec<(NodeId, u32)>, String> {
    parse_list(text, INCARNATIONS_HEADER, |line| {
        let (id, incarnation) = line.split_once(' ')?;
        if id.len() != 16 {
            return None;
        }
        Some((
            NodeId(u64::from_str_radix(id, 16).ok()?),
            incarnation.parse().ok()?,
        ))
    })
}

fn parse_peers(text: &str) -> Result<Vec<KnownPeer>, String> {
    parse_list(text, PEERS_HEADER, |line| {
        match line.split(' ').collect::<Vec<_>>().as_slice() {
            [addr, name, last_seen, successes, failures] => Some(KnownPeer {
                addr: addr.parse().ok()?,
                name: (*name).to_owned(),
                last_seen: last_seen.parse().ok()?,
                successes: successes.parse().ok()?,
                failures: failures.parse().ok()?,
            }),
            _ => None,
        }
    })
}

/// A state list file: `header`, one item per line, then `end` (a missing
/// `end` means the file was cut short).
fn parse_list<T>(
    text: &str,
    header: &str,
    parse_line: impl Fn(&str) -> Option<T>,
) -> Result<Vec<T>, String> {
    let mut lines = text.lines();
    if lines.next() != Some(header) {
        return Err("unknown format".to_owned());
    }
    let mut items = Vec::new();
    for line in lines {
        if line == "end" {
            return Ok(items);
        }
        items.push(parse_line(line).ok_or_else(|| format!("malformed line {line:?}"))?);
    }
    Err("truncated".to_owned())
}

/// The last value of one of this node's own points.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedPoint {
    /// Point name.
    pub name: String,
    /// Its value.
    pub value: shoal_core::wire::Value,
    /// Its unit.
    pub unit: String,
    /// Origin timestamp, ms since the Unix epoch.
    pub ts_ms: u64,
}

const POINTS: &str = "points";
const POINTS_HEADER: &str = "shoal-points 1";

impl StateDir {
    /// This node's saved points; a corrupt file is reported and ignored.
    pub fn load_points(&self) -> (Vec<SavedPoint>, Found) {
        self.load_list(POINTS, parse_points)
    }

    /// Writes this node's points atomically (tab-separated; names, units and
    /// texts never contain control characters).
    pub fn save_points(&mut self, points: &[SavedPoint]) -> Result<(), StateError> {
        use shoal_core::wire::Value;
        let mut text = format!("{POINTS_HEADER}\n");
        for point in points {
            let value = match &point.value {
                Value::Float(v) => format!("f:{v}"),
                Value::Int(v) => format!("i:{v}"),
                Value::Bool(v) => format!("b:{v}"),
                Value::Text(v) => format!("t:{v}"),
                Value::Error(v) => format!("e:{v}"),
            };
            text.push_str(&format!(
                "{}\t{value}\t{}\t{}\n",
                point.name, point.unit, point.ts_ms
            ));
        }
        text.push_str("end\n");
        self.write_atomic(POINTS, text.as_bytes())
    }
}

fn parse_points(text: &str) -> Result<Vec<SavedPoint>, String> {
    use shoal_core::wire::Value;
    parse_list(text, POINTS_HEADER, |line| {
        match line.split('\t').collect::<Vec<_>>().as_slice() {
            [name, value, unit, ts_ms] => {
                let value = match value.split_once(':')? {
                    ("f", v) => Value::Float(v.parse().ok().filter(|v: &f64| v.is_finite())?),
                    ("i", v) => Value::Int(v.parse().ok()?),
                    ("b", v) => Value::Bool(v.parse().ok()?),
                    ("t", v) => Value::Text(heapless::String::try_from(v).ok()?),
                    ("e", v) => Value::Error(heapless::String::try_from(v).ok()?),
                    _ => return None,
                };
                Some(SavedPoint {
                    name: (*name).to_owned(),
                    value,
                    unit: (*unit).to_owned(),
                    ts_ms: ts_ms.parse().ok()?,
                })
            }
            _ => None,
        }
    })
}

/// 64 random bits from the kernel.
pub fn random_u64() -> Result<u64, StateError> {
    let mut bytes = [0u8; 8];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(StateError::Random)?;
    Ok(u64::from_le_bytes(bytes))
}

/// Reads a mesh key file: 64 hex digits (whitespace ignored).
pub fn read_key(path: &Path) -> Result<MeshKey, StateError> {
    let key_error = |reason: String| StateError::Key {
        path: path.to_owned(),
        reason,
    };
    let text = files::read_own(path).map_err(|e| key_error(e.to_string()))?;
    let hex: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if !hex.is_ascii() {
        return Err(key_error("not hexadecimal".to_owned()));
    }
    if hex.len() != 64 {
        return Err(key_error(format!(
            "expected 64 hex digits, found {}",
            hex.len()
        )));
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .map_err(|_| key_error("not hexadecimal".to_owned()))?;
    }
    Ok(MeshKey(key))
}

/// The mesh key at `path`, created (random, mode 0600) if the file does not
/// exist; `true` if it was created now. A key that others may read is used,
/// with a warning naming the fix.
pub fn read_or_create_key(path: &Path) -> Result<(MeshKey, bool), StateError> {
    let created = match create_key(path) {
        Ok(()) => true,
        Err(StateError::Write { source, .. }) if source.kind() == io::ErrorKind::AlreadyExists => {
            false
        }
        Err(error) => return Err(error),
    };
    #[cfg(unix)]
    if let Ok(metadata) = fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            log::warn!(
                "the mesh key {} can be read by others (mode {mode:o}): chmod 600 {}",
                path.display(),
                path.display()
            );
        }
    }
    Ok((read_key(path)?, created))
}

/// Creates directory `dir` (and its parents) readable by its owner only.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Writes a new random mesh key to `path` (mode 0600), refusing to overwrite.
/// The key is written whole to a temporary file first and then linked into
/// place, so `path` never exists half-written (a crash or a full disk leaves
/// no empty key behind), and two processes creating it at once cannot both
/// win.
pub fn create_key(path: &Path) -> Result<(), StateError> {
    let write_error = |source| StateError::Write {
        path: path.to_owned(),
        source,
    };
    // Checked first so an existing key (every start but the first) costs
    // no read of /dev/urandom; the link below still refuses a race.
    if fs::symlink_metadata(path).is_ok() {
        return Err(write_error(io::Error::from(io::ErrorKind::AlreadyExists)));
    }
    let bytes = random_bytes::<32>()?;
    write_private(path, &bytes, false)
}

/// The API token in `path`, created (random, mode 0600) if the file does
/// not exist; `true` when it was created.
pub fn read_or_create_token(path: &Path) -> Result<(String, bool), StateError> {
    let created = match std::fs::symlink_metadata(path) {
        Ok(_) => false,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            create_key(path)?;
            true
        }
        Err(source) => {
            return Err(StateError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    Ok((read_token(path)?, created))
}

/// The API token in `path`: one word, not through a link.
pub fn read_token(path: &Path) -> Result<String, StateError> {
    let text = files::read_own(path).map_err(|source| StateError::Read {
        path: path.to_owned(),
        source,
    })?;
    let token = text.trim().to_owned();
    if token.is_empty() || token.chars().any(char::is_whitespace) {
        return Err(StateError::BadToken(path.to_owned()));
    }
    Ok(token)
}

/// Whether [`StateDir::open`] can use `dir`, found without creating it: an
/// existing directory must take a new file; a missing one, its nearest
/// existing parent (where `create_dir_all` starts). The errors are those
/// `open` and the first write would meet.
pub fn check_dir(dir: &Path) -> Result<(), StateError> {
    let create_error = |source| StateError::Create {
        path: dir.to_owned(),
        source,
    };
    match fs::metadata(dir) {
        Ok(metadata) if metadata.is_dir() => {
            files::probe_writable(dir).map_err(|source| StateError::Write {
                path: dir.to_owned(),
                source,
            })
        }
        Ok(_) => Err(create_error(errno(rustix::io::Errno::NOTDIR))),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            let parent = nearest_existing(dir).map_err(create_error)?;
            files::probe_writable(&parent).map_err(create_error)
        }
        Err(error) => Err(create_error(error)),
    }
}

/// Whether the identity in `dir`, if there is one, can be read (not
/// whether it parses: a corrupt one is replaced, and the agent starts).
/// Its owner is not compared with this user: `shoal check` may well run as
/// another user than the service, which checks the owner at start.
pub fn check_identity(dir: &Path) -> Result<(), StateError> {
    let path = dir.join(IDENTITY);
    match files::open_own(&path) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StateError::Read { path, source }),
    }
}

/// Whether the mesh key at `path` is valid ([`read_key`]), or, missing, can
/// be created there ([`read_or_create_key`]) once the state directory
/// `state_dir` exists.
pub fn check_key(path: &Path, state_dir: &Path) -> Result<(), StateError> {
    match fs::symlink_metadata(path) {
        Ok(_) => read_key(path).map(|_| ()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => check_creatable(path, state_dir),
        Err(source) => Err(StateError::Write {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Whether the API token at `path` is valid ([`read_token`]), or, missing,
/// can be created there ([`read_or_create_token`]) once the state
/// directory `state_dir` exists.
pub fn check_token(path: &Path, state_dir: &Path) -> Result<(), StateError> {
    match fs::symlink_metadata(path) {
        Ok(_) => read_token(path).map(|_| ()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => check_creatable(path, state_dir),
        Err(source) => Err(StateError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Whether a file can be created at `path` ([`files::write_own`]: in its
/// directory, which is not made for it) once `state_dir` exists: the
/// directory must exist and take a new file, or be `state_dir` or one of
/// its parents, which the agent creates first.
fn check_creatable(path: &Path, state_dir: &Path) -> Result<(), StateError> {
    let write_error = |source| StateError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    match fs::metadata(dir) {
        Ok(metadata) if metadata.is_dir() => files::probe_writable(dir).map_err(write_error),
        Ok(_) => Err(write_error(errno(rustix::io::Errno::NOTDIR))),
        // Made with the state directory (checked on its own).
        Err(error) if error.kind() == io::ErrorKind::NotFound && state_dir.starts_with(dir) => {
            Ok(())
        }
        Err(error) => Err(write_error(error)),
    }
}

/// The nearest existing parent of missing directory `dir`, which must be
/// a directory.
fn nearest_existing(dir: &Path) -> io::Result<PathBuf> {
    for parent in dir.ancestors().skip(1) {
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        match fs::metadata(parent) {
            Ok(metadata) if metadata.is_dir() => return Ok(parent.to_owned()),
            Ok(_) => return Err(errno(rustix::io::Errno::NOTDIR)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
    }
    Err(errno(rustix::io::Errno::NOENT))
}

/// The OS error `errno`, worded as the OS words it.
fn errno(errno: rustix::io::Errno) -> io::Error {
    io::Error::from_raw_os_error(errno.raw_os_error())
}

/// A 32-bit mesh id derived from the key (FNV-1a), so meshes with different
/// keys drop each other's frames by header, before any decryption; open
/// meshes share one id.
pub fn mesh_id(key: Option<&MeshKey>) -> u32 {
    shoal_core::wire::mesh_id(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("shoal-state-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn the_incarnation_grows_at_every_start_and_the_id_stays() {
        let dir = scratch("grow");
        let mut state = StateDir::open(&dir).expect("created");
        let (first, found) = state.next_identity().expect("written");
        assert_eq!((first.incarnation, found), (1, Found::Missing));
        let mut again = StateDir::open(&dir).expect("opened");
        let (second, found) = again.next_identity().expect("written");
        assert_eq!(found, Found::Valid);
        assert_eq!((second.id(), second.incarnation), (first.id(), 2));
        assert_eq!(again.writes(), 1);
        // It holds the node's secret key: readable by the service only.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.join(IDENTITY))
                .expect("written")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_identity_of_protocol_1_keeps_its_incarnation_and_gets_a_key() {
        let dir = scratch("upgrade");
        fs::create_dir_all(&dir).expect("dir");
        let old = "shoal-state 1\nnode_id=00000000000000ab\nincarnation=41\nend\n";
        fs::write(dir.join(IDENTITY), old).expect("written");
        let mut state = StateDir::open(&dir).expect("opened");
        let (identity, found) = state.next_identity().expect("upgraded");
        assert_eq!(found, Found::Upgraded(NodeId(0xab)));
        assert_eq!(identity.incarnation, 42);
        let (again, found) = state.next_identity().expect("written");
        assert_eq!(found, Found::Valid);
        assert_eq!((again.id(), again.incarnation), (identity.id(), 43));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_last_incarnation_is_followed_by_a_new_node_id_never_a_reused_one() {
        let dir = scratch("exhausted");
        let mut state = StateDir::open(&dir).expect("created");
        let (first, _) = state.next_identity().expect("written");
        for incarnation in [u32::MAX - 1, u32::MAX] {
            let mut stored = first.clone();
            stored.incarnation = incarnation;
            state.save_identity(&stored).expect("saved");
            let (next, found) = state.next_identity().expect("written");
            if incarnation == u32::MAX - 1 {
                assert_eq!(
                    (found, next.id(), next.incarnation),
                    (Found::Valid, first.id(), u32::MAX)
                );
            } else {
                assert_eq!(found, Found::Exhausted(first.id()));
                assert_ne!(next.id(), first.id());
                assert_eq!(next.incarnation, 1);
            }
        }
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_identity_that_cannot_be_read_is_an_error_not_a_new_node() {
        let dir = scratch("unreadable");
        fs::create_dir_all(dir.join(IDENTITY)).expect("a directory in its place");
        let mut state = StateDir::open(&dir).expect("opened");
        let error = state.next_identity().expect_err("refused");
        let message = error.to_string();
        assert!(
            message.contains(&format!("{}/identity", dir.display()))
                && message.contains("not a regular file"),
            "{message}"
        );
        assert!(dir.join(IDENTITY).is_dir(), "left as it was");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_corrupt_or_truncated_identity_is_reported_and_replaced() {
        for (case, text) in [
            ("garbage", "\u{0}\u{1}binary"),
            ("truncated", "shoal-state 1\nnode_id=abc\n"),
            ("bad", "shoal-state 1\nnode_id=xyz\nincarnation=1\nend\n"),
            ("zero", "shoal-state 1\nnode_id=ab\nincarnation=0\nend\n"),
            (
                "short key",
                "shoal-state 2\nnode_key=abcd\nincarnation=1\nend\n",
            ),
            (
                "id in v2",
                "shoal-state 2\nnode_id=ab\nincarnation=1\nend\n",
            ),
        ] {
            let dir = scratch(case);
            fs::create_dir_all(&dir).expect("dir");
            fs::write(dir.join(IDENTITY), text).expect("written");
            let mut state = StateDir::open(&dir).expect("opened");
            let (identity, found) = state.next_identity().expect("replaced");
            assert!(matches!(found, Found::Corrupt(_)), "{case}: {found:?}");
            assert_eq!(identity.incarnation, 1);
            let kept = fs::read_to_string(dir.join("identity.corrupt")).expect("kept aside");
            assert_eq!(kept, text, "{case}");
            let (next, found) = state.next_identity().expect("written");
            assert_eq!((found, next.id()), (Found::Valid, identity.id()), "{case}");
            let _ = fs::remove_dir_all(&dir);
        }
    }

    #[test]
    fn incarnations_round_trip_and_a_corrupt_list_is_ignored() {
        let dir = scratch("incarnations");
        let mut state = StateDir::open(&dir).expect("created");
        assert_eq!(state.load_incarnations(), (Vec::new(), Found::Missing));
        let known = std::collections::BTreeMap::from([(NodeId(0xab), 3), (NodeId(u64::MAX), 1)]);
        state.save_incarnations(&known).expect("written");
        assert_eq!(
            state.load_incarnations(),
            (vec![(NodeId(0xab), 3), (NodeId(u64::MAX), 1)], Found::Valid)
        );
        fs::write(
            dir.join(INCARNATIONS),
            "shoal-incarnations 1\n00000000000000ab x\nend\n",
        )
        .expect("written");
        assert!(matches!(state.load_incarnations(), (list, Found::Corrupt(_)) if list.is_empty()));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn known_peers_round_trip_and_a_corrupt_list_is_ignored() {
        let dir = scratch("peers");
        let mut state = StateDir::open(&dir).expect("created");
        assert_eq!(state.load_peers(), (Vec::new(), Found::Missing));
        let peers = vec![KnownPeer {
            addr: "127.0.0.12:20195".parse().expect("addr"),
            name: "kitchen".into(),
            last_seen: 1_763_800_000,
            successes: 42,
            failures: 1,
        }];
        state.save_peers(&peers).expect("written");
        assert_eq!(state.load_peers(), (peers, Found::Valid));
        fs::write(
            dir.join(PEERS),
            "shoal-peers 1\n127.0.0.12:20195 kitchen 17",
        )
        .expect("written");
        assert!(matches!(state.load_peers(), (list, Found::Corrupt(_)) if list.is_empty()));
        fs::write(
            dir.join(PEERS),
            "shoal-peers 1\n127.0.0.12:20195 kitchen 1 2 3\n",
        )
        .expect("written");
        assert_eq!(state.load_peers().1, Found::Corrupt("truncated".into()));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn own_points_round_trip_and_a_corrupt_list_is_ignored() {
        use shoal_core::wire::Value;
        let dir = scratch("points");
        let mut state = StateDir::open(&dir).expect("created");
        let points = vec![
            SavedPoint {
                name: "t".into(),
                value: Value::Float(21.5),
                unit: "°C".into(),
                ts_ms: 1,
            },
            SavedPoint {
                name: "n".into(),
                value: Value::Int(-3),
                unit: String::new(),
                ts_ms: 2,
            },
            SavedPoint {
                name: "door".into(),
                value: Value::Bool(true),
                unit: String::new(),
                ts_ms: 3,
            },
            SavedPoint {
                name: "mode".into(),
                value: Value::Text(heapless::String::try_from("eco: on").expect("fits")),
                unit: String::new(),
                ts_ms: 4,
            },
        ];
        state.save_points(&points).expect("written");
        assert_eq!(state.load_points(), (points, Found::Valid));
        fs::write(dir.join(POINTS), "shoal-points 1\nt\tf:NaN\t\t1\nend\n").expect("written");
        assert!(matches!(state.load_points(), (list, Found::Corrupt(_)) if list.is_empty()));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn checks_find_what_start_would_meet_and_create_nothing() {
        let dir = scratch("checks");
        let state = dir.join("new/state");
        fs::create_dir_all(&dir).expect("dir");
        // A state directory to be made, with the key and token it will hold.
        check_dir(&state).expect("creatable");
        check_key(&state.join("mesh.key"), &state).expect("created at start");
        check_token(&state.join("api.token"), &state).expect("created at start");
        // Beside it, in an existing directory: fine; in a missing one: not.
        check_key(&dir.join("mesh.key"), &state).expect("creatable beside");
        let error = check_key(&dir.join("gone/mesh.key"), &state).expect_err("no directory");
        assert!(
            error.to_string().starts_with(&format!(
                "cannot write {}/gone/mesh.key: No such file or directory",
                dir.display()
            )),
            "{error}"
        );
        assert_eq!(fs::read_dir(&dir).expect("list").count(), 0, "nothing made");
        // Under a regular file: what create_dir_all would say.
        fs::write(dir.join("file"), "x").expect("file");
        let error = check_dir(&dir.join("file/state")).expect_err("not a directory");
        let made = fs::create_dir_all(dir.join("file/state")).expect_err("not a directory");
        assert_eq!(
            error.to_string(),
            format!(
                "cannot create state directory {}/file/state: {made}",
                dir.display()
            )
        );
        // An existing identity must be readable; a missing one is a new node.
        fs::create_dir_all(&state).expect("state");
        check_identity(&state).expect("none yet");
        fs::create_dir_all(state.join(IDENTITY)).expect("a directory in its place");
        let error = check_identity(&state).expect_err("unreadable");
        assert!(error.to_string().contains("not a regular file"), "{error}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unwritable_directory_is_a_clear_error() {
        let error = StateDir::open(Path::new("/proc/shoal-cannot-exist")).expect_err("unwritable");
        assert!(error
            .to_string()
            .starts_with("cannot create state directory /proc/shoal-cannot-exist"));
    }

    #[test]
    fn keys_round_trip_and_bad_keys_are_explained() {
        let dir = scratch("key");
        fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("mesh.key");
        create_key(&path).expect("created");
        assert!(create_key(&path).is_err(), "never overwrites a key");
        // Written whole, then linked in: no temporary file stays behind.
        let left: Vec<_> = fs::read_dir(&dir)
            .expect("readable")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".new-"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        assert_eq!(fs::read_to_string(&path).expect("key").trim().len(), 64);
        let key = read_key(&path).expect("valid");
        assert_ne!(mesh_id(Some(&key)), mesh_id(None));
        fs::write(&path, "abcd").expect("written");
        let error = read_key(&path).expect_err("short");
        assert!(
            error
                .to_string()
                .contains("expected 64 hex digits, found 4"),
            "{error}"
        );
        fs::write(&path, "zz".repeat(32)).expect("written");
        assert!(read_key(&path)
            .expect_err("not hex")
            .to_string()
            .contains("not hexadecimal"));
        let _ = fs::remove_dir_all(&dir);
    }
}
