//! History on the device, as a real agent keeps it: its own points answer
//! `/history` at once (what is not written yet included), a stop writes
//! them, and a restart answers from the file; another node's point is
//! asked of it through the mesh.

mod common;

use common::agents::Mesh;
use std::time::Duration;

fn history(api: &str, path: &str) -> shoal::shell::client::Reply {
    shoal::shell::client::request(api, "GET", path, None, Duration::from_secs(5)).expect("answers")
}

#[test]
fn history_answers_at_once_survives_a_restart_and_says_what_it_cannot_do() {
    let mut mesh = Mesh::new(0);
    let extra = "[[sensor]]\nname = \"fast\"\ndriver = \"sim\"\nmin = 10.0\nmax = 20.0\nperiod = \"4s\"\ninterval = \"100ms\"\n";
    mesh.add_full(1, 151, None, "[\"127.255.255.255\"]", "[]", extra);
    mesh.add(2, 152, None);
    let api = format!("127.0.0.151:{}", mesh.port + 2);
    mesh.wait_for("the two agents", Duration::from_secs(10), |m| {
        m.agents.iter().all(|a| a.logged("discovered node"))
    });
    std::thread::sleep(Duration::from_secs(3));
    let path = "/api/points/agent-1/fast/history?since=1h&step=1m";
    let reply = history(&api, path);
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let steps = reply.body.as_array().expect("a list").clone();
    assert!(
        !steps.is_empty(),
        "the open minute answers before anything is written"
    );
    let last = steps.last().expect("a step");
    let (min, avg, max) = (
        last["min"].as_f64().expect("min"),
        last["avg"].as_f64().expect("avg"),
        last["max"].as_f64().expect("max"),
    );
    assert!(
        (10.0..=20.0).contains(&min) && min <= avg && avg <= max && max <= 20.0,
        "{last}"
    );
    // Stopped and started again: the same minutes come from the file.
    mesh.agents[0].signal("TERM");
    assert_eq!(mesh.agents[0].wait_exit(Duration::from_secs(5)), Some(0));
    let file = mesh.dir.join("agent-1").join("history.shb");
    assert!(std::fs::metadata(&file).expect("written at the stop").len() > 12);
    mesh.agents[0].restart();
    let mut reread = serde_json::Value::Null;
    for _ in 0..50 {
        if let Ok(reply) =
            shoal::shell::client::request(&api, "GET", path, None, Duration::from_secs(5))
        {
            reread = reply.body;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let first = &reread.as_array().expect("a list")[0];
    assert_eq!(first["ts_ms"], steps[0]["ts_ms"], "{reread}");
    assert!(first["min"].as_f64() <= steps[0]["min"].as_f64());
    // Another node's point, asked of it through the mesh (here: the CLI
    // on agent-2 asks agent-1); a step under a minute, too many steps.
    let api2 = format!("127.0.0.152:{}", mesh.port + 2);
    let remote = history(&api2, path);
    assert_eq!(remote.status, 200, "{}", remote.body);
    let own = history(&api, path);
    let (remote, own) = (
        remote.body.as_array().cloned(),
        own.body.as_array().cloned(),
    );
    let (remote, own) = (remote.expect("list"), own.expect("list"));
    assert_eq!(
        remote.first(),
        own.first(),
        "the first minute, from agent-1's file"
    );
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args([
            "get",
            "agent-1/fast",
            "--history",
            "--since",
            "1h",
            "--step",
            "1m",
        ])
        .args(["--api", &api2])
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&cli.stdout);
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    assert!(
        text.starts_with("time (UTC)") && text.lines().count() >= 2,
        "{text}"
    );
    let unknown = history(&api2, "/api/points/nobody/fast/history");
    assert_eq!(unknown.status, 404, "{}", unknown.error());
    let usage = std::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["get", "*/fast", "--history", "--api", &api2])
        .output()
        .expect("runs");
    assert_eq!(usage.status.code(), Some(2));
    let fine = history(&api, "/api/points/agent-1/fast/history?step=10s");
    assert_eq!(
        (fine.status, fine.error().contains("at least 1m")),
        (400, true)
    );
    let many = history(&api, "/api/points/agent-1/fast/history?since=30d&step=1m");
    assert_eq!(many.status, 400, "{}", many.error());
    let bad = history(&api, "/api/points/agent-1/fast/history?since=yesterday");
    assert_eq!(bad.status, 400, "{}", bad.error());
}

/// libfaketime, speeding up a process's wall clock (Debian: `faketime`).
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

#[test]
fn an_hour_of_history_costs_at_most_six_writes() {
    // The agent's wall clock runs 120 times faster (libfaketime; its
    // monotonic clock and so its sensors and beacons run normally): 31 s
    // here are an hour and two minutes of its history schedule.
    if !std::path::Path::new(LIBFAKETIME).exists() {
        return common::unavailable(
            "an_hour_of_history_costs_at_most_six_writes",
            "libfaketime missing (apt-get install faketime)",
        );
    }
    let mut mesh = Mesh::new(1);
    mesh.next_env = vec![
        ("LD_PRELOAD", LIBFAKETIME.to_owned()),
        ("FAKETIME", "+0 x120".to_owned()),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_owned()),
        ("FAKETIME_DONT_RESET", "1".to_owned()),
    ];
    let extra = "[[sensor]]\nname = \"fast\"\ndriver = \"sim\"\nmin = 10.0\nmax = 20.0\nperiod = \"4s\"\ninterval = \"100ms\"\n";
    mesh.add_full(1, 153, None, "[\"127.255.255.255\"]", "[]", extra);
    let api = format!("127.0.0.153:{}", mesh.port + 2);
    let started = std::time::Instant::now();
    let stats = |api: &str| history(api, "/api/stats").body["history"].clone();
    let mut seen = serde_json::Value::Null;
    while started.elapsed() < Duration::from_secs(31) {
        if let Ok(reply) =
            shoal::shell::client::request(&api, "GET", "/api/stats", None, Duration::from_secs(5))
        {
            seen = reply.body["history"].clone();
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let now = stats(&api);
    let writes = now["writes"].as_u64().expect("counted");
    let hours = started.elapsed().as_secs_f64() * 120.0 / 3600.0;
    eprintln!(
        "history writes in {:.2} h of wall clock: {writes} ({:.1} an hour, the daily rewrite included); file {} bytes",
        hours,
        writes as f64 / hours,
        now["file_bytes"]
    );
    assert_eq!(now["write_errors"], 0, "{now}");
    assert!(
        (5..=6).contains(&writes),
        "10-minute batches and the first rewrite at one hour: {writes} writes ({seen})"
    );
    // What it wrote answers: about an hour of 10-minute steps.
    let steps = history(&api, "/api/points/agent-1/fast/history?since=2h&step=10m");
    let steps = steps.body.as_array().cloned().unwrap_or_default();
    assert!(steps.len() >= 6, "{steps:?}");
}
