//! The defaults of every setting, in one place.
//!
//! The protocol core (`shoal_core::Config::default()`) and, later, the TOML
//! loader both read these constants.

use std::time::Duration;

/// UDP port of the broadcast beacons; the same on every node of a mesh.
pub const MESH_PORT: u16 = 20194;
/// UDP port of unicast sync traffic (digests, deltas, commands).
pub const SYNC_PORT: u16 = 20195;
/// How often a node sends a beacon.
pub const BEACON_INTERVAL: Duration = Duration::from_secs(1);
/// Silence after which a neighbor becomes SUSPECT.
pub const SUSPECT_AFTER: Duration = Duration::from_secs(2);
/// Silence after which a neighbor becomes UNREACHABLE, once no other
/// neighbor can vouch for it either.
pub const UNREACHABLE_AFTER: Duration = Duration::from_secs(3);

/// An UNREACHABLE or LEFT neighbor is forgotten after this long.
pub const PRUNE_AFTER: Duration = Duration::from_secs(3600);
/// Most nodes one agent keeps track of (neighbors and origins of data).
pub const MAX_NODES: usize = 256;
/// Most points one origin node may publish.
pub const MAX_POINTS_PER_NODE: usize = 128;
/// Most past values kept per point.
pub const HISTORY_PER_POINT: usize = 32;
/// Most datagrams waiting to be sent before new ones are dropped.
pub const MAX_PENDING_TRANSMITS: usize = 1024;
/// Most events waiting to be read before new ones are dropped.
pub const MAX_PENDING_EVENTS: usize = 4096;

/// HTTP API port (on `api.listen`, loopback by default).
pub const API_PORT: u16 = 8080;
/// File holding the API token for writes and exec (default: `api.token` in
/// the state directory).
pub const API_TOKEN_FILE: &str = "/var/lib/shoal/api.token";
/// State directory: node id, incarnation, peers, last values.
pub const STATE_DIR: &str = "/var/lib/shoal";
/// How long the device keeps its points' quarter-hour history.
pub const HISTORY_RETAIN: Duration = Duration::from_secs(30 * 86_400);
/// Default sampling interval of a sensor.
pub const SENSOR_INTERVAL: Duration = Duration::from_secs(10);
/// Default interval of an `mqtt` sensor: the least time between two
/// readings of one point (a change is sent at once, later ones within the
/// interval are held and the latest goes when it ends).
pub const MQTT_SENSOR_INTERVAL: Duration = Duration::from_secs(1);

/// Longest an executor may run before it is stopped (its whole process
/// group killed).
pub const EXECUTOR_TIMEOUT: Duration = Duration::from_secs(30);
