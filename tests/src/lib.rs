//! `shoal-tests`: whole-system tests of shoal.
//!
//! [`sim`] is the deterministic mesh simulator that runs many real
//! [`shoal_core::Node`]s with simulated time, loss, latency, partitions and
//! crashes. The scenario tests in `tests/` drive it; `benches/sim.rs`
//! measures it and reports the protocol figures.
#![warn(missing_docs)]

pub mod sim;
pub mod topology;
