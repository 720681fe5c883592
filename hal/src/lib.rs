//! `shoal-hal`: what a shoal agent can measure and switch.
//!
//! Today it holds the deterministic simulated sensor ([`sim`]) that the demo
//! and the mesh simulator use; the Pi drivers (I2C, GPIO, 1-wire, SoC
//! temperature) are added behind the `rpi` feature with the same reading
//! types.
//!
//! This crate never knows about the network: it turns time into readings and
//! commands into pin changes, nothing else. The simulated backend is a pure
//! function of its seed and the time it is given, so every test replays.
#![warn(missing_docs)]
#![warn(clippy::unwrap_used)]

pub mod sim;
