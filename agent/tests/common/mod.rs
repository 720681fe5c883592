//! What the agent's integration tests share: how a test that cannot run
//! here says so, and [`ha`], Home Assistant's reading of MQTT discovery
//! messages.
//!
//! With `CI=true` a missing tool or privilege fails the test (CI installs
//! everything, so a skip there would hide a gap). Otherwise the test is
//! skipped loudly: the line goes straight to the terminal (the test
//! harness does not capture it), and into `target/skipped-tests.txt`,
//! which `.ci/run` lists at the end of the run.

pub(crate) mod agents;

use std::io::Write;

/// Says that `test` cannot run here because of `reason`: a failure under
/// `CI=true`, a visible and recorded skip otherwise. The caller returns.
pub(crate) fn unavailable(test: &str, reason: &str) {
    let message = format!("SKIPPED {test}: {reason}");
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{message} (CI must be able to run it)"
    );
    // Not `eprintln!`: the harness captures that and shows it only on failure.
    let _ = writeln!(std::io::stderr(), "{message}");
    let list = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("../skipped-tests.txt");
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(list)
    {
        let _ = writeln!(file, "{message}");
    }
}

// Used by `ha_discovery.rs` and the MQTT bridge's tests; the other test
// crates that share this module compile it unused.
#[allow(dead_code)]
pub(crate) mod ha;
