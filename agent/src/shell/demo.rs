//! `shoal demo`: a local mesh of real agents on 127.0.0.x.
//!
//! Each agent is a `shoal run` child process with its own configuration and
//! state directory under one temporary directory, simulated sensors, and a
//! demo mesh key of its own, on ports apart from the real mesh's, so the demo
//! never mixes with a real mesh. Nothing leaves loopback. Ctrl-C (or
//! SIGTERM) stops every agent gracefully and removes the directory.
#![allow(clippy::print_stdout)]

use super::state;
use async_signal::{Signal, Signals};
use futures_lite::{future, StreamExt};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// Beacon port of the demo (sync is the next one).
pub const DEMO_PORT: u16 = 20394;
/// Most agents a demo starts (127.0.0.11 upwards).
pub const MAX_DEMO_NODES: usize = 200;

/// Runs the demo until a signal; the exit code.
pub fn run(nodes: usize, port: u16) -> ExitCode {
    let dir = std::env::temp_dir().join(format!("shoal-demo-{}", std::process::id()));
    match start(&dir, nodes, port) {
        Ok(mut children) => {
            let code = supervise(&mut children);
            stop(&mut children);
            let _ = std::fs::remove_dir_all(&dir);
            println!("demo: stopped {nodes} agents and removed {}", dir.display());
            code
        }
        Err(message) => {
            let _ = std::fs::remove_dir_all(&dir);
            eprintln!("shoal demo: {message}");
            ExitCode::from(1)
        }
    }
}

fn start(dir: &Path, nodes: usize, port: u16) -> Result<Vec<(String, Child)>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let key = dir.join("mesh.key");
    state::create_key(&key).map_err(|e| e.to_string())?;
    state::create_key(&dir.join("api.token")).map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the shoal binary: {e}"))?;
    let mut children = Vec::new();
    for n in 1..=nodes {
        let name = format!("demo-{n}");
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, config_text(n, port, &key, &dir.join(&name)))
            .map_err(|e| format!("cannot write {}: {e}", config.display()))?;
        let mut child = Command::new(&exe)
            .args(["run", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start agent {name}: {e}"))?;
        if let Some(stderr) = child.stderr.take() {
            let prefix = name.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let _ = writeln!(std::io::stderr(), "{prefix:>8} | {line}");
                }
            });
        }
        children.push((name, child));
    }
    println!(
        "demo: {nodes} agents on 127.0.0.11-{} (beacons on UDP {port}, broadcast 127.255.255.255, \
         encrypted with a demo key), state in {}",
        10 + nodes,
        dir.display()
    );
    println!("demo: dashboard at http://127.0.0.11:{}/", port + 2);
    println!(
        "demo: see the mesh with `shoal status --api 127.0.0.11:{api}`; run an executor on another node with \
         `SHOAL_TOKEN=$(cat {token}) shoal exec demo-{last} hello --api 127.0.0.11:{api}`",
        api = port + 2,
        token = dir.join("api.token").display(),
        last = nodes,
    );
    println!("demo: their logs follow; stop one with `kill -TERM PID` to see it leave; Ctrl-C ends the demo");
    for (name, child) in &children {
        println!("demo: {name} is PID {}", child.id());
    }
    Ok(children)
}

/// The first agent of the demo also runs a rule over every agent's
/// temperature, with a simulated fan, and publishes the average.
const DEMO_RULE: &str = r#"
[[actuator]]
name = "fan"
driver = "sim"

[[executor]]
name = "fan_on"
action = { actuator = "fan", set = true }

[[executor]]
name = "fan_off"
action = { actuator = "fan", set = false }

[[rule]]
name = "cool"
when = "avg(*/temperature) > 20.5"
until = "avg(*/temperature) < 20"
do = "fan_on"
else = "fan_off"
on_unknown = "fan_off"

[[compute]]
name = "avg_temperature"
expr = "avg(*/temperature)"
"#;

fn config_text(n: usize, port: u16, key: &Path, state_dir: &Path) -> String {
    let host = 10 + n;
    let rule = if n == 1 { DEMO_RULE } else { "" };
    format!(
        r#"[node]
name = "demo-{n}"

[mesh]
port = {port}
sync_port = {sync}
bind = "127.0.0.{host}"
broadcast = ["127.255.255.255"]
key_file = "{key}"

[api]
listen = "127.0.0.{host}:{api_port}"
token_file = "{token}"

[state]
dir = "{state}"

[[executor]]
name = "hello"
action = {{ command = ["/bin/sh", "-c", "echo hello from $SHOAL_NODE, asked by $SHOAL_CALLER"] }}
remote = true

[[sensor]]
name = "temperature"
driver = "sim"
waveform = "sine"
min = {tmin}
max = {tmax}
period = "2m"
unit = "°C"
interval = "2s"
deadband = 0.05
seed = {n}

[[sensor]]
name = "humidity"
driver = "sim"
waveform = "walk"
min = 35.0
max = 65.0
period = "5m"
unit = "%"
interval = "5s"
deadband = 0.5
seed = {seed2}

[[sensor]]
name = "light"
driver = "sim"
waveform = "step"
min = 5.0
max = 400.0
period = "1m"
unit = "lx"
interval = "2s"
"#,
        sync = port + 1,
        api_port = port + 2,
        token = key.with_file_name("api.token").display(),
        key = key.display(),
        state = state_dir.display(),
        tmin = 17 + n % 4,
        tmax = 23 + n % 4,
        seed2 = 100 + n,
    ) + rule
}

/// Waits for Ctrl-C or SIGTERM, reporting agents that die meanwhile.
fn supervise(children: &mut [(String, Child)]) -> ExitCode {
    let Ok(mut signals) = Signals::new([Signal::Term, Signal::Int]) else {
        eprintln!("shoal demo: cannot install signal handlers");
        return ExitCode::from(1);
    };
    let mut exited = vec![false; children.len()];
    smol::block_on(async {
        loop {
            let signal = async { signals.next().await.is_some() };
            let tick = async {
                smol::Timer::after(Duration::from_millis(500)).await;
                false
            };
            if future::or(signal, tick).await {
                return ExitCode::SUCCESS;
            }
            for ((name, child), reported) in children.iter_mut().zip(exited.iter_mut()) {
                if *reported {
                    continue;
                }
                if let Ok(Some(status)) = child.try_wait() {
                    eprintln!("demo: agent {name} exited ({status})");
                    *reported = true;
                }
            }
            if exited.iter().all(|&gone| gone) {
                eprintln!("demo: every agent has exited");
                return ExitCode::from(1);
            }
        }
    })
}

/// Asks every agent to leave (SIGTERM), then kills what is left after 2 s.
fn stop(children: &mut [(String, Child)]) {
    for (_, child) in children.iter() {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    for (_, child) in children.iter_mut() {
        while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if matches!(child.try_wait(), Ok(None)) {
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}
