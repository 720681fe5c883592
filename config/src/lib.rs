//! `shoal-config`: the configuration of a shoal agent.
//!
//! Every default the agent uses lives in [`defaults`], so the documentation,
//! the embedded configuration and the protocol core can never disagree.
//! Durations are written as strings such as `"500ms"`, `"5s"`, `"2m"`, `"1h"`
//! and parsed by [`parse_duration`].
//!
//! The file is validated by [`parse`] / [`load`], which report every problem
//! at once as `file:line:col: message` ([`Problems`]); [`embedded`] is the
//! configuration used when no file exists (loopback only, simulated sensors).
//!
//! This crate never touches the network or the hardware; its only I/O is
//! reading the configuration file in [`load`].
#![warn(missing_docs)]
#![warn(clippy::unwrap_used)]

pub mod defaults;
mod duration;
pub mod expr;
mod file;
pub mod order;

pub use duration::{format_duration, parse_duration, DurationError};
pub use file::{
    embedded, field_points, is_reserved_point, is_valid_name, load, parse, parse_broker, parse_url,
    read_bounded, Action, ActuatorAction, ActuatorSection, ApiSection, BridgeRole, Broadcast,
    ComputeSection, Config, ExecutorSection, ExportSection, Expression, HistorySection,
    LimitsSection, LoadError, MeshSection, MqttSection, NodeSection, Policy, Problem, Problems,
    RuleSection, SensorSection, Setting, StateSection, Url, EMBEDDED, MAX_FILE_BYTES,
    MESSAGE_DRIVERS, RESERVED_NODE, RESERVED_POINT,
};
