//! Any bytes as a join datagram, on both sides: a member with an issued
//! token (`Tokens::handle`) and a joiner reading a reply (`open_reply`).
//! Never a panic, and never a reply longer than what came.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_core::join::{open_reply, Secret, Tokens, SECRET_LEN};
use shoal_core::time::Instant;
use shoal_core::wire::MeshKey;
use std::net::IpAddr;
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    let secret = Secret([7; SECRET_LEN]);
    let mut tokens = Tokens::default();
    if tokens
        .issue(Instant::ZERO, secret, Duration::from_secs(900))
        .is_err()
    {
        return;
    }
    let from = IpAddr::from([127, 0, 0, 2]);
    let (reply, _) = tokens.handle(Instant::from_millis(1), from, data, &MeshKey([9; 32]));
    if let Some(reply) = reply {
        assert!(reply.len() <= data.len());
    }
    let _ = open_reply(&secret, [3; 24], data);
});
