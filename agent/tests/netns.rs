//! Agents in network namespaces made by the test: `broadcast = ["auto"]`
//! finds the namespace's directed broadcast, and a link taken down is
//! noticed and healed. Needs root and iproute2; without them the test says
//! so and skips. Traffic never leaves the namespaces.

mod common;

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

/// Root and `ip`, checked the way the Serf benchmark checks them.
fn can_make_namespaces() -> Result<(), String> {
    match shoal_bench::lab::unavailable_with(&[("ip", "iproute2")]) {
        Some(reason) => Err(reason),
        None => Ok(()),
    }
}

/// Starts `command` (an agent) with its stderr collected line by line.
fn spawn_logged(command: &mut Command) -> (Child, Arc<Mutex<Vec<String>>>) {
    let mut child = command
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
    (child, log)
}

/// Namespaces and agents of one test run; removed on drop, also on failure.
struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    agents: Vec<(Child, Arc<Mutex<Vec<String>>>)>,
    dir: PathBuf,
    /// Agents started from now on make their own keys (fresh installs)
    /// instead of sharing the lab's.
    fresh_keys: bool,
}

impl Lab {
    fn new() -> Lab {
        // Unique per run and per lab: tests of this binary run in parallel.
        static LABS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let lab = LABS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let prefix = format!("sh{}x{lab}", std::process::id() % 100_000);
        let dir = std::env::temp_dir().join(format!("shoal-netns-{}-{lab}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Lab {
            prefix,
            namespaces: Vec::new(),
            agents: Vec::new(),
            dir,
            fresh_keys: false,
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

    /// Two subnets with no router between them: 10.78.1.0/24 on bridge
    /// `br1` and 10.78.2.0/24 on `br2`. `a` hosts on subnet 1, `b` hosts on
    /// subnet 2, and `gateways` dual-homed (eth1 on 1, eth2 on 2); the
    /// namespaces are named after the hosts.
    fn build_two_subnets(&mut self, a: &[&str], b: &[&str], gateways: &[&str]) {
        self.add_namespace("br");
        let br = self.ns("br");
        for bridge in ["br1", "br2"] {
            assert!(ip(&["-n", &br, "link", "add", bridge, "type", "bridge"]));
            assert!(ip(&["-n", &br, "link", "set", bridge, "up"]));
        }
        let mut host_number = 10u8;
        let mut attach = |lab: &mut Lab, name: &str, subnet: u8| {
            host_number += 1;
            let ns = lab.ns(name);
            let outer = format!("v{}{subnet}", name.replace('-', ""));
            let inner = format!("eth{subnet}");
            assert!(ip(&[
                "-n", &br, "link", "add", &outer, "type", "veth", "peer", "name", &inner, "netns",
                &ns
            ]));
            assert!(ip(&[
                "-n",
                &br,
                "link",
                "set",
                &outer,
                "master",
                &format!("br{subnet}")
            ]));
            assert!(ip(&["-n", &br, "link", "set", &outer, "up"]));
            let address = format!("10.78.{subnet}.{host_number}/24");
            assert!(ip(&[
                "-n", &ns, "addr", "add", &address, "brd", "+", "dev", &inner
            ]));
            assert!(ip(&["-n", &ns, "link", "set", &inner, "up"]));
        };
        for (names, subnets) in [(a, &[1u8][..]), (b, &[2][..]), (gateways, &[1, 2][..])] {
            for name in names {
                self.add_namespace(name);
                for &subnet in subnets {
                    attach(self, name, subnet);
                }
            }
        }
    }

    fn start(&mut self, host: u8) -> usize {
        let ns = self.ns(&format!("h{host}"));
        self.start_in(&format!("host-{host}"), &ns)
    }

    /// Starts agent `name` in namespace `ns`: auto broadcast, the API on the
    /// namespace's own loopback, a remote `hello` executor, a sensor.
    fn start_in(&mut self, name: &str, ns: &str) -> usize {
        let config = self.dir.join(format!("{name}.toml"));
        let state = self.dir.join(format!("state-{name}"));
        // One mesh key for the whole lab, readable by its owner only.
        let key = self.dir.join("mesh.key");
        if !key.exists() {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&key)
                .and_then(|mut file| file.write_all("5a".repeat(32).as_bytes()))
                .expect("mesh key written");
        }
        let key_line = if self.fresh_keys {
            String::new()
        } else {
            format!("key_file = \"{}\"\n", key.display())
        };
        std::fs::write(
            &config,
            format!(
                "[node]\nname = \"{name}\"\n[mesh]\nbind = \"0.0.0.0\"\nbroadcast = [\"auto\"]\n{key_line}[state]\ndir = \"{}\"\n\
                 [[sensor]]\nname = \"temperature\"\ndriver = \"sim\"\nwaveform = \"sine\"\nperiod = \"4s\"\nmin = 0.0\nmax = 100.0\ninterval = \"500ms\"\ndeadband = 0.0\n\
                 [[executor]]\nname = \"hello\"\naction = {{ command = [\"/bin/sh\", \"-c\", \"echo hello from $SHOAL_NODE\"] }}\nremote = true\n",
                state.display()
            ),
        )
        .expect("config");
        let agent = spawn_logged(
            Command::new("ip")
                .args(["netns", "exec", ns])
                .arg(env!("CARGO_BIN_EXE_shoal"))
                .args(["run", "--config"])
                .arg(&config)
                .env("RUST_LOG", "info,shoal::shell=debug"),
        );
        self.agents.push(agent);
        self.agents.len() - 1
    }

    /// Runs the `shoal` CLI inside namespace `ns`: exit code and stdout.
    fn cli(&self, ns: &str, args: &[&str]) -> (Option<i32>, String, String) {
        let output = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(env!("CARGO_BIN_EXE_shoal"))
            .args(args)
            .output()
            .expect("shoal runs");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// The status the agent in `ns` reports, parsed (exit 4: degraded,
    /// an answer all the same).
    fn status(&self, ns: &str) -> Option<serde_json::Value> {
        let (code, out, _) = self.cli(ns, &["status", "--json"]);
        matches!(code, Some(0 | 4))
            .then(|| serde_json::from_str(&out).ok())
            .flatten()
    }

    /// Lines of agent `agent`'s log so far.
    fn log_len(&self, agent: usize) -> usize {
        self.agents[agent].1.lock().expect("log lock").len()
    }

    /// Whether agent `agent` logged `text` after its first `from` lines.
    fn logged_since(&self, agent: usize, from: usize, text: &str) -> bool {
        self.agents[agent]
            .1
            .lock()
            .expect("log lock")
            .iter()
            .skip(from)
            .any(|l| l.contains(text))
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
        common::unavailable(
            "auto_broadcast_finds_neighbors_and_a_downed_link_heals",
            &format!("{reason}; it needs root and iproute2"),
        );
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

/// Nodes of `status` by name: (state, hops, via).
fn routes_of(status: &serde_json::Value) -> Vec<(String, String, Option<u64>, Option<String>)> {
    status["nodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .map(|n| {
                    (
                        n["name"].as_str().unwrap_or("").to_owned(),
                        n["state"].as_str().unwrap_or("").to_owned(),
                        n["hops"].as_u64(),
                        n["via"].as_str().map(str::to_owned),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn two_subnets_joined_by_two_gateways_fail_over_for_exec_and_sync() {
    if let Err(reason) = can_make_namespaces() {
        common::unavailable(
            "two_subnets_joined_by_two_gateways_fail_over_for_exec_and_sync",
            &format!("{reason}; it needs root and iproute2"),
        );
        return;
    }
    let a = ["a-1", "a-2", "a-3"];
    let b = ["b-1", "b-2"];
    let gateways = ["gw-1", "gw-2"];
    let mut lab = Lab::new();
    lab.build_two_subnets(&a, &b, &gateways);
    let mut index = std::collections::BTreeMap::new();
    for name in a.iter().chain(&b).chain(&gateways) {
        let ns = lab.ns(name);
        index.insert(*name, lab.start_in(name, &ns));
    }
    let a1 = lab.ns("a-1");
    let b1 = lab.ns("b-1");
    // A node beyond a gateway is listed by id until its name arrives with
    // its points (only a routed, live origin's points are taken).
    let took = lab.wait_for(
        "all 7 see each other, by name",
        Duration::from_secs(10),
        |lab| {
            [&a1, &b1].iter().all(|ns| {
                lab.status(ns).is_some_and(|s| {
                    s["active"] == 7
                        && s["total"] == 7
                        && routes_of(&s).iter().all(|(name, ..)| name.len() < 16)
                })
            })
        },
    );
    eprintln!("7 agents on two subnets see each other after {took:?}");
    let status = lab.status(&a1).expect("status");
    let to_b2 = routes_of(&status)
        .into_iter()
        .find(|(name, ..)| name == "b-2")
        .unwrap_or_else(|| panic!("b-2 listed: {status}"));
    assert_eq!(to_b2.2, Some(2), "{status}");
    let via = to_b2.3.clone().expect("routed via a gateway");
    assert!(gateways.contains(&via.as_str()), "{status}");
    let (_, text, _) = lab.cli(&a1, &["status"]);
    assert!(
        text.contains(&format!("b-2: HEALTHY (route: 2 hops via {via})")),
        "{text}"
    );

    // exec from subnet A on a node of subnet B, through a gateway.
    let token = std::fs::read_to_string(lab.dir.join("state-a-1/api.token")).expect("token");
    let token = token.trim().to_owned();
    let exec = |lab: &Lab| lab.cli(&a1, &["exec", "b-2", "hello", "--token", &token]);
    let (code, out, err) = exec(&lab);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "hello from b-2\n");

    // b-2's history, asked of b-2 through the gateway, page by page:
    // the same steps b-2 answers itself (but the open minute, which
    // moves between the two asks).
    let history = [
        "get",
        "b-2/temperature",
        "--history",
        "--since",
        "1h",
        "--step",
        "1m",
        "--json",
    ];
    let (code, out, err) = lab.cli(&a1, &history);
    assert_eq!(code, Some(0), "{err}");
    let remote: serde_json::Value = serde_json::from_str(&out).expect("json");
    let (code, out, err) = lab.cli(&lab.ns("b-2"), &history);
    assert_eq!(code, Some(0), "{err}");
    let local: serde_json::Value = serde_json::from_str(&out).expect("json");
    let (remote, local) = (
        remote.as_array().expect("list"),
        local.as_array().expect("list"),
    );
    assert!(!remote.is_empty(), "b-2 has history");
    // A minute may begin between the two asks.
    assert!(
        local.len().abs_diff(remote.len()) <= 1,
        "{remote:?} vs {local:?}"
    );
    let whole = remote.len().min(local.len()) - 1;
    assert_eq!(remote[..whole], local[..whole]);
    assert_eq!(
        remote[0]["ts_ms"], local[0]["ts_ms"],
        "the same first minute"
    );
    assert!(
        remote.iter().all(|s| {
            let (min, avg, max) = (s["min"].as_f64(), s["avg"].as_f64(), s["max"].as_f64());
            min <= avg && avg <= max && min >= Some(0.0) && max <= Some(100.0)
        }),
        "{remote:?}"
    );
    let (code, text, err) = lab.cli(&a1, &history[..7]);
    assert_eq!(code, Some(0), "{err}");
    assert!(text.starts_with("time (UTC)"), "{text}");
    eprintln!(
        "b-2's history through {via}: {} steps, as b-2 answers it",
        remote.len()
    );

    // Take the subnet-B link of the gateway in use down.
    let other = if via == "gw-1" { "gw-2" } else { "gw-1" };
    let gw_ns = lab.ns(&via);
    let a1_agent = index["a-1"];
    let mark = lab.log_len(a1_agent);
    let down_at = Instant::now();
    assert!(ip(&["-n", &gw_ns, "link", "set", "eth2", "down"]));
    let mut exec_back = None;
    while down_at.elapsed() < Duration::from_secs(10) {
        let (code, out, _) = exec(&lab);
        if code == Some(0) && out == "hello from b-2\n" {
            let status = lab.status(&a1).expect("status");
            let now_via = routes_of(&status)
                .into_iter()
                .find(|(name, ..)| name == "b-2")
                .and_then(|r| r.3);
            if now_via.as_deref() == Some(other) {
                exec_back = Some(down_at.elapsed());
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let exec_back = exec_back.expect("exec works through the other gateway");
    eprintln!("gateway {via} lost subnet B: a-1 routes to b-2 via {other}, exec works again, {exec_back:?} after the link went down");
    assert!(
        exec_back <= Duration::from_secs(4) + Duration::from_millis(500),
        "{exec_back:?}"
    );
    // Sync keeps flowing: a fresh reading of b-1 reaches a-1 after the
    // failover (b-1 publishes a new value every 500 ms).
    let failed_over = lab.log_len(a1_agent);
    let sync_back = lab.wait_for("a new b-1 reading at a-1", Duration::from_secs(4), |lab| {
        lab.logged_since(a1_agent, failed_over, "point b-1/temperature = ")
    });
    eprintln!("a reading of b-1 reached a-1 {sync_back:?} after the failover");
    // Nothing in B was ever thought unreachable by a-1.
    assert!(!lab.logged_since(a1_agent, mark, "node b-1: HEALTHY -> UNREACHABLE"));
    assert!(!lab.logged_since(a1_agent, mark, "node b-2: HEALTHY -> UNREACHABLE"));

    // Link back up: the gateway reaches subnet B directly again.
    assert!(ip(&["-n", &gw_ns, "link", "set", "eth2", "up"]));
    let back = lab.wait_for(
        "routes return through the healed gateway",
        Duration::from_secs(6),
        |lab| {
            lab.status(&gw_ns).is_some_and(|s| {
                routes_of(&s)
                    .iter()
                    .filter(|(name, ..)| name.starts_with("b-"))
                    .all(|(_, state, hops, _)| state == "HEALTHY" && *hops == Some(1))
            }) && lab.status(&a1).is_some_and(|s| s["active"] == 7)
        },
    );
    eprintln!("routes through {via} returned {back:?} after its link came back");
    let (code, _, err) = exec(&lab);
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn a_join_token_works_across_an_ip_gateway() {
    if let Err(reason) = can_make_namespaces() {
        common::unavailable(
            "a_join_token_works_across_an_ip_gateway",
            &format!("{reason}; it needs root and iproute2"),
        );
        return;
    }
    // a-1 (10.78.1.11) and b-1 (10.78.2.12) on two subnets, routed through
    // r (10.78.1.13 / 10.78.2.14), which runs no agent: no broadcast
    // crosses, only unicast through the router.
    let mut lab = Lab::new();
    lab.build_two_subnets(&["a-1"], &["b-1"], &["r"]);
    let (a1, b1, r) = (lab.ns("a-1"), lab.ns("b-1"), lab.ns("r"));
    let forwarding = Command::new("ip")
        .args([
            "netns",
            "exec",
            &r,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ])
        .status()
        .is_ok_and(|s| s.success());
    assert!(forwarding, "ip_forward in the router namespace");
    assert!(ip(&[
        "-n",
        &a1,
        "route",
        "add",
        "10.78.2.0/24",
        "via",
        "10.78.1.13"
    ]));
    assert!(ip(&[
        "-n",
        &b1,
        "route",
        "add",
        "10.78.1.0/24",
        "via",
        "10.78.2.14"
    ]));
    lab.fresh_keys = true;
    let member = lab.start_in("a-1", &a1);
    let joiner = lab.start_in("b-1", &b1);
    // The API token is made a moment after the key: wait for both.
    lab.wait_for("both made their own keys", Duration::from_secs(5), |lab| {
        lab.logged(member, "created a new mesh key")
            && lab.logged(joiner, "created a new mesh key")
            && lab.dir.join("state-a-1/api.token").exists()
    });
    let api_token = std::fs::read_to_string(lab.dir.join("state-a-1/api.token")).expect("token");
    let (code, out, err) = lab.cli(&a1, &["token", "--token", api_token.trim()]);
    assert_eq!(code, Some(0), "{err}");
    let token = out.trim().to_owned();
    assert!(token.ends_with("@10.78.1.11:20195"), "{token}");
    let config = lab.dir.join("b-1.toml");
    let started = Instant::now();
    let (code, out, err) = lab.cli(
        &b1,
        &["join", &token, "--config", config.to_str().expect("utf-8")],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("switched to the mesh"), "{out}");
    lab.wait_for(
        "both HEALTHY through the router",
        Duration::from_secs(10),
        |lab| {
            [&a1, &b1].iter().all(|ns| {
                lab.status(ns)
                    .is_some_and(|s| s["active"] == 2 && s["total"] == 2)
            })
        },
    );
    eprintln!(
        "joined across an IP gateway: both HEALTHY {:?} after shoal join started",
        started.elapsed()
    );
    assert_eq!(
        std::fs::read(lab.dir.join("state-a-1/mesh.key")).expect("key"),
        std::fs::read(lab.dir.join("state-b-1/mesh.key")).expect("key")
    );
    assert!(lab.logged(member, "joined the mesh with a token"));
}

#[test]
fn the_debian_package_makes_a_keyed_node_and_an_upgrade_keeps_its_key() {
    const TEST: &str = "the_debian_package_makes_a_keyed_node_and_an_upgrade_keeps_its_key";
    let missing = ["dpkg-deb", "unshare", "mount"].into_iter().find(|tool| {
        Command::new("which")
            .arg(tool)
            .output()
            .map_or(true, |o| !o.status.success())
    });
    let reason = match (can_make_namespaces(), missing) {
        (Err(reason), _) => Some(reason),
        (_, Some(tool)) => Some(format!("{tool} is not installed")),
        _ => None,
    };
    if let Some(reason) = reason {
        common::unavailable(
            TEST,
            &format!("{reason}; it needs root, iproute2, dpkg-deb and util-linux"),
        );
        return;
    }
    // The package, built as cross/deb builds it, from this build's binary.
    let mut lab = Lab::new();
    let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    // Stripped, as a release build is: packing debug info takes a minute.
    let binary = lab.dir.join("shoal");
    let stripped = Command::new("strip")
        .arg("-o")
        .arg(&binary)
        .arg(env!("CARGO_BIN_EXE_shoal"))
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        std::fs::copy(env!("CARGO_BIN_EXE_shoal"), &binary).expect("binary copied");
    }
    let build = |out: &std::path::Path| {
        let made = Command::new(format!("{repo}/cross/deb"))
            .arg("--binary")
            .arg(&binary)
            .args(["--arch", "amd64", "--out"])
            .arg(out)
            .output()
            .expect("cross/deb runs");
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&made.stdout).trim())
    };
    let deb = build(&lab.dir.join("first"));
    // Unpacked into a throwaway root, never installed on this machine: the
    // maintainer scripts (groupadd, systemctl) are read, not run.
    let root = lab.dir.join("root");
    let unpack = |deb: &std::path::Path| {
        let status = Command::new("dpkg-deb")
            .arg("-x")
            .arg(deb)
            .arg(&root)
            .status();
        assert!(status.is_ok_and(|s| s.success()), "dpkg-deb -x");
    };
    unpack(&deb);
    let unit =
        std::fs::read_to_string(root.join("lib/systemd/system/shoal.service")).expect("unit");
    for line in ["DynamicUser=yes", "StateDirectoryMode=0700", "UMask=0077"] {
        assert!(
            unit.contains(line),
            "the unit keeps the key to the service: {line}"
        );
    }
    let config = std::fs::read_to_string(root.join("etc/shoal/shoal.toml")).expect("config");
    assert!(
        !config
            .lines()
            .any(|l| l.trim_start().starts_with("open") || l.trim_start().starts_with("key_file")),
        "the packaged configuration is keyed by default, the key in the state directory"
    );
    let scripts = lab.dir.join("control");
    let status = Command::new("dpkg-deb")
        .arg("-e")
        .arg(&deb)
        .arg(&scripts)
        .status();
    assert!(status.is_ok_and(|s| s.success()), "dpkg-deb -e");
    for script in ["postinst", "prerm", "postrm"] {
        let text = std::fs::read_to_string(scripts.join(script)).expect("script");
        assert!(!text.contains("mesh.key"), "{script} never touches the key");
        if script != "postrm" {
            assert!(!text.contains("rm "), "{script} removes nothing");
        }
    }
    let postrm = std::fs::read_to_string(scripts.join("postrm")).expect("postrm");
    assert!(
        postrm.contains("\"$1\" = purge"),
        "only a purge removes the state"
    );
    // The packaged binary and configuration, as the unit runs them, in a
    // namespace (broadcast = auto finds only the namespace's subnet) with
    // /var/lib a private directory of this test.
    lab.build(&[1]);
    let ns = lab.ns("h1");
    let var_lib = lab.dir.join("var-lib");
    std::fs::create_dir_all(&var_lib).expect("var-lib");
    let start = |lab: &Lab| {
        let script = format!(
            "mount --bind {} /var/lib && exec {} run --config {}",
            var_lib.display(),
            root.join("usr/bin/shoal").display(),
            root.join("etc/shoal/shoal.toml").display()
        );
        let _ = lab;
        spawn_logged(
            Command::new("ip")
                .args([
                    "netns", "exec", &ns, "unshare", "--mount", "sh", "-c", &script,
                ])
                .env("RUST_LOG", "info"),
        )
    };
    let key_path = var_lib.join("shoal/mesh.key");
    let (child, log) = start(&lab);
    lab.agents.push((child, log));
    lab.wait_for(
        "the packaged node is up, keyed",
        Duration::from_secs(10),
        |lab| {
            lab.status(&ns)
                .is_some_and(|s| s["open"] == false && s["total"] == 1)
        },
    );
    assert!(lab.logged(0, "created a new mesh key in /var/lib/shoal/mesh.key"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key_path)
        .expect("key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let key = std::fs::read(&key_path).expect("key");
    // Stopped as systemd stops it; upgraded (unpacked again over the root);
    // started again: the same key, none made.
    let (mut child, _) = lab.agents.remove(0);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let upgrade = build(&lab.dir.join("second"));
    unpack(&upgrade);
    let (child, log) = start(&lab);
    lab.agents.push((child, log));
    lab.wait_for("the upgraded node is up", Duration::from_secs(10), |lab| {
        lab.status(&ns).is_some_and(|s| s["open"] == false)
    });
    assert!(lab.logged(0, "incarnation 2 starting"), "the same identity");
    assert!(!lab.logged(0, "created a new mesh key"));
    assert_eq!(std::fs::read(&key_path).expect("key"), key);
}
