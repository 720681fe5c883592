//! History on the device, as a real agent keeps it: its own points answer
//! `/history` at once (what is not written yet included), a stop writes
//! them, and a restart answers from the file; another node's point is
//! refused with the reason.

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
    // Another node's point, a step under a minute, too many steps.
    let remote = history(&api, "/api/points/agent-2/temperature/history");
    assert_eq!(remote.status, 501);
    assert!(
        remote.error().contains("ask agent-2's API"),
        "{}",
        remote.error()
    );
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
