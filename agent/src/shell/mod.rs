//! The shell: everything that touches the OS (command line today; sockets,
//! timers, signals and files as the agent grows). The protocol decisions stay
//! in [`shoal_core`].

pub mod api;
pub mod cli;
pub mod client;
pub mod demo;
pub mod executor;
pub mod metrics;
pub mod notify;
pub mod run;
pub mod sensors;
pub mod state;
