//! The shell: everything that touches the OS. The protocol decisions stay
//! in `shoal-core`; [`agent`] is the loop that feeds it, and each of its
//! subsystems has a file of its own (the table in `agent`'s docs).

pub mod agent;
pub mod answers;
pub mod api;
pub mod cli;
pub mod client;
pub mod demo;
pub mod events;
pub mod executor;
pub mod export;
pub mod feeds;
pub mod fetch;
pub mod files;
pub mod history;
pub mod host;
pub mod http;
pub mod join;
pub mod mainloop;
pub mod mesh_history;
pub mod messages;
pub mod metrics;
pub mod mqtt;
pub mod notify;
pub mod pages;
pub mod persist;
pub mod preflight;
pub mod pushed;
pub mod recorder;
pub mod reload;
pub mod runs;
pub mod sensors;
pub mod sockets;
pub mod state;

/// Wall-clock time now, ms since the Unix epoch (for people and for the
/// timestamps of readings; the core's own time is `shoal_core::time`).
pub(crate) fn unix_ms() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
