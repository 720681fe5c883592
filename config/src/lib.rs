//! `shoal-config`: the configuration of a shoal agent.
//!
//! Every default the agent uses lives in [`defaults`], so the documentation,
//! the embedded configuration and the protocol core can never disagree.
//! Durations are written as strings such as `"500ms"`, `"5s"`, `"2m"`, `"1h"`
//! and parsed by [`parse_duration`].
//!
//! This crate never touches the network or the hardware; the only I/O it will
//! ever do is reading the configuration file.
#![warn(missing_docs)]
#![warn(clippy::unwrap_used)]

pub mod defaults;
mod duration;

pub use duration::{format_duration, parse_duration, DurationError};
