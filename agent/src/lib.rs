//! `shoal`: a lean mesh agent for Raspberry Pi class devices.
//!
//! The protocol lives in the `shoal-core` crate, a sans-io core: plain state
//! machines fed with `(now, input)` that return datagrams, events and
//! deadlines. This crate is the shell around it: sockets, timers, signals,
//! sensors, executors, the HTTP API, the state directory and the command
//! line ([`shell`]). The core is re-exported as [`core`] for callers of this
//! library that need its types.
//!
//! Guarantees the shell adds: no input (datagram, API request, sensor, config
//! file) panics the agent; every queue between the loop and its subsystems
//! is bounded or drained every step.
#![warn(missing_docs)]

pub use shoal_core as core;

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
