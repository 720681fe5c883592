//! `shoal`: a lean mesh agent for Raspberry Pi class devices.
//!
//! The protocol lives in the `shoal-core` crate, a sans-io core: plain state
//! machines fed with `(now, input)` that return datagrams, events and
//! deadlines. This crate is the shell around it: sockets, timers, signals,
//! sensors, executors, the HTTP API, the state directory and the command
//! line ([`shell`]).
//!
//! Guarantees the shell adds: no input (datagram, API request, sensor, config
//! file) panics the agent; the channels into its one loop are bounded (API
//! calls) or hold at most one message per read or run under way.
#![warn(missing_docs)]

pub mod shell;

/// The running binary's version, target and protocol, for `shoal --version`.
pub fn version_line() -> String {
    format!(
        "shoal {} ({}, protocol {})",
        env!("CARGO_PKG_VERSION"),
        env!("SHOAL_TARGET"),
        shoal_core::wire::VERSION
    )
}
