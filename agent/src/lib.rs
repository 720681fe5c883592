//! `shoal`: a lean mesh agent for Raspberry Pi class devices.
//!
//! The protocol lives in [`node`], a sans-io core: plain state machines fed
//! with `(now, input)` that return datagrams, events and deadlines. It never
//! reads a clock, opens a socket or spawns a thread, so the simulator in
//! `shoal-tests` runs it deterministically with hundreds of nodes. The async
//! shell that puts it on real sockets (`shell`) and the CLI build on top.
//!
//! Guarantees of the core: no panic on any datagram; every table and queue
//! bounded by [`node::Config`]; every refused input counted in
//! [`node::Stats`].
#![warn(missing_docs)]

pub mod node;
pub mod shell;

/// The running binary's version, target and protocol, for `shoal --version`.
pub fn version_line() -> String {
    format!(
        "shoal {} ({}, protocol {})",
        env!("CARGO_PKG_VERSION"),
        env!("SHOAL_TARGET"),
        node::wire::VERSION
    )
}
