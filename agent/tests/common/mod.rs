//! What the agent's integration tests share: how a test that cannot run
//! here says so, a plain HTTP GET, promtool's check of `/metrics`, and
//! [`ha`], Home Assistant's reading of MQTT discovery messages.
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

/// `promtool check metrics` on an exposition: a failure names what it
/// found. Without promtool, [`unavailable`] says so for `test`.
#[allow(dead_code)]
pub(crate) fn promtool_check(test: &str, text: &str) {
    use std::process::{Command, Stdio};
    let promtool = Command::new("promtool").arg("--version").output();
    if promtool.is_err() {
        unavailable(
            &format!("{test}: the promtool check"),
            "promtool is not installed (Debian package `prometheus`; .ci/run installs it)",
        );
        return;
    }
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    {
        check
            .stdin
            .take()
            .expect("piped")
            .write_all(text.as_bytes())
            .expect("writes");
    }
    let out = check.wait_with_output().expect("promtool ends");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The body of `GET path` at `api`, as text.
#[allow(dead_code)]
pub(crate) fn get_text(api: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(api).expect("connects");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("writes");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("reads");
    let text = String::from_utf8_lossy(&raw).into_owned();
    text.split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

// Used by `ha_discovery.rs` and the MQTT bridge's tests; the other test
// crates that share this module compile it unused.
#[allow(dead_code)]
pub(crate) mod ha;
