//! Agents in network namespaces made by the test: `broadcast = ["auto"]`
//! finds the namespace's directed broadcast, and a link taken down is
//! noticed and healed. Needs root and iproute2; without them the test says
//! so and skips. Traffic never leaves the namespaces.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn can_make_namespaces() -> Result<(), String> {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|uid| uid == "0"))
        })
        .unwrap_or(false);
    if !root {
        return Err("not root".into());
    }
    if !ip(&["-V"]) {
        return Err("iproute2 (`ip`) is not installed".into());
    }
    Ok(())
}

/// Namespaces and agents of one test run; removed on drop, also on failure.
struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    agents: Vec<(Child, Arc<Mutex<Vec<String>>>)>,
    dir: PathBuf,
}

impl Lab {
    fn new() -> Lab {
        let prefix = format!("sh{}", std::process::id() % 100_000);
        let dir = std::env::temp_dir().join(format!("shoal-netns-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Lab {
            prefix,
            namespaces: Vec::new(),
            agents: Vec::new(),
            dir,
        }
    }

    fn ns(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn add_namespace(&mut self, name: &str) {
        let ns = self.ns(name);
        assert!(ip(&["netns", "add", &ns]), "ip netns add {ns}");
        self.namespaces.push(ns.clone());
        assert!(ip(&["-n", &ns, "link", "set", "lo", "up"]));
    }

    /// A bridge namespace and one host namespace per address in 10.77.0.0/24.
    fn build(&mut self, hosts: &[u8]) {
        self.add_namespace("br");
        let br = self.ns("br");
        assert!(ip(&["-n", &br, "link", "add", "br0", "type", "bridge"]));
        assert!(ip(&["-n", &br, "link", "set", "br0", "up"]));
        for host in hosts {
            let name = format!("h{host}");
            self.add_namespace(&name);
            let ns = self.ns(&name);
            let outer = format!("v{host}");
            assert!(ip(&[
                "-n", &br, "link", "add", &outer, "type", "veth", "peer", "name", "eth0", "netns",
                &ns
            ]));
            assert!(ip(&["-n", &br, "link", "set", &outer, "master", "br0"]));
            assert!(ip(&["-n", &br, "link", "set", &outer, "up"]));
            let address = format!("10.77.0.{host}/24");
            assert!(ip(&[
                "-n", &ns, "addr", "add", &address, "brd", "+", "dev", "eth0"
            ]));
            assert!(ip(&["-n", &ns, "link", "set", "eth0", "up"]));
        }
    }

    fn start(&mut self, host: u8) -> usize {
        let config = self.dir.join(format!("h{host}.toml"));
        std::fs::write(
            &config,
            format!(
                "[node]\nname = \"host-{host}\"\n[mesh]\nbind = \"0.0.0.0\"\nbroadcast = [\"auto\"]\n[state]\ndir = \"{}\"\n",
                self.dir.join(format!("state{host}")).display()
            ),
        )
        .expect("config");
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns(&format!("h{host}"))])
            .arg(env!("CARGO_BIN_EXE_shoal"))
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("agent starts");
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        let stderr = child.stderr.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("log lock").push(line);
            }
        });
        self.agents.push((child, log));
        self.agents.len() - 1
    }

    fn logged(&self, agent: usize, text: &str) -> bool {
        self.agents[agent]
            .1
            .lock()
            .expect("log lock")
            .iter()
            .any(|l| l.contains(text))
    }

    fn wait_for(&self, what: &str, limit: Duration, done: impl Fn(&Lab) -> bool) -> Duration {
        let start = Instant::now();
        while start.elapsed() < limit {
            if done(self) {
                return start.elapsed();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let logs: Vec<String> = self
            .agents
            .iter()
            .map(|(_, log)| log.lock().expect("log lock").join("\n"))
            .collect();
        panic!(
            "timed out after {limit:?} waiting for {what}\n{}",
            logs.join("\n---\n")
        );
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (child, _) in &mut self.agents {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in &self.namespaces {
            ip(&["netns", "del", ns]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn auto_broadcast_finds_neighbors_and_a_downed_link_heals() {
    if let Err(reason) = can_make_namespaces() {
        eprintln!("SKIPPED auto_broadcast_finds_neighbors_and_a_downed_link_heals: {reason}; it needs root and iproute2");
        return;
    }
    let mut lab = Lab::new();
    lab.build(&[1, 2, 3]);
    let agents: Vec<usize> = [1, 2, 3].iter().map(|&h| lab.start(h)).collect();
    let took = lab.wait_for("all discover each other", Duration::from_secs(2), |lab| {
        agents.iter().all(|&a| {
            (1..=3usize)
                .filter(|&h| h != a + 1)
                .all(|h| lab.logged(a, &format!(" at 10.77.0.{h}:20195")))
        })
    });
    eprintln!("3 namespaces discovered each other by directed broadcast in {took:?}");
    // Take host 3's link down: the others mark it UNREACHABLE; up: HEALTHY.
    let ns3 = lab.ns("h3");
    assert!(ip(&["-n", &ns3, "link", "set", "eth0", "down"]));
    lab.wait_for(
        "UNREACHABLE after link down",
        Duration::from_secs(4),
        |lab| {
            lab.logged(0, "node host-3: SUSPECT -> UNREACHABLE")
                && lab.logged(1, "node host-3: SUSPECT -> UNREACHABLE")
        },
    );
    assert!(ip(&["-n", &ns3, "link", "set", "eth0", "up"]));
    lab.wait_for("HEALTHY after link up", Duration::from_secs(4), |lab| {
        lab.logged(0, "node host-3: UNREACHABLE -> HEALTHY")
            && lab.logged(1, "node host-3: UNREACHABLE -> HEALTHY")
    });
}
