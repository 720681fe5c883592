//! The MQTT bridge against a real Mosquitto that each test starts on
//! loopback (a free port, a temporary directory, stopped by PID): the whole
//! mesh under `shoal/`, Home Assistant discovery checked as Home Assistant
//! would, buttons that run executors through the mesh, exactly one bridge
//! across a kill and a return, and a broker restart.

mod common;

use common::agents::{Agent, Mesh};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The broker's binary: on PATH, or where Debian puts it (`/usr/sbin`,
/// not on a user's PATH).
fn mosquitto() -> String {
    let packaged = "/usr/sbin/mosquitto";
    if std::path::Path::new(packaged).exists() {
        packaged.to_owned()
    } else {
        "mosquitto".to_owned()
    }
}

/// A Mosquitto of the test's own; killed on drop.
struct Broker {
    child: Option<Child>,
    host: String,
    port: u16,
    dir: PathBuf,
    /// Its log (`log_type all`: every packet), across restarts.
    log: Arc<Mutex<Vec<String>>>,
    /// Access settings for its configuration.
    access: String,
}

impl Broker {
    /// Starts Mosquitto on `host` and a free port; `None` (said) when it is
    /// not installed.
    fn start(test: &str, host: &str) -> Option<Broker> {
        let installed = |tool: &str| {
            Command::new(tool)
                .arg("--help")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok()
        };
        if !installed(&mosquitto()) || !installed("mosquitto_sub") || !installed("mosquitto_pub") {
            common::unavailable(test, "mosquitto and mosquitto-clients are not installed");
            return None;
        }
        let port = std::net::TcpListener::bind((host, 0))
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = std::env::temp_dir().join(format!("shoal-mqtt-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("broker dir");
        let mut broker = Broker {
            child: None,
            host: host.to_owned(),
            port,
            dir,
            log: Arc::default(),
            access: "allow_anonymous true\n".to_owned(),
        };
        broker.restart();
        Some(broker)
    }

    /// (Re)starts the broker on the same port, with nothing retained.
    fn restart(&mut self) {
        let conf = self.dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {} {}\n{}persistence false\nlog_dest stdout\nlog_type all\n",
                self.port, self.host, self.access
            ),
        )
        .expect("broker config");
        let mut child = Command::new(mosquitto())
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto starts");
        let stdout = child.stdout.take().expect("piped");
        let sink = Arc::clone(&self.log);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().expect("log").push(line);
            }
        });
        self.child = Some(child);
        let start = Instant::now();
        while std::net::TcpStream::connect((self.host.as_str(), self.port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "mosquitto did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// From now on only `user` with `password` may connect (restarts it).
    fn require_password(&mut self, user: &str, password: &str) {
        let file = self.dir.join("passwords");
        let status = Command::new("mosquitto_passwd")
            .args(["-c", "-b"])
            .arg(&file)
            .args([user, password])
            .status()
            .expect("mosquitto_passwd runs");
        assert!(status.success());
        // Read by the broker after it drops root for its own user.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        self.access = format!("allow_anonymous false\npassword_file {}\n", file.display());
        self.stop();
        self.restart();
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("mqtt://{}:{}", self.host, self.port)
    }

    /// `mosquitto_sub` or `mosquitto_pub` pointed at this broker.
    fn client(&self, tool: &str) -> Command {
        let mut command = Command::new(tool);
        command.args(["-h", &self.host, "-p", &self.port.to_string()]);
        command
    }

    /// Every retained message under `filter` now: topic → payload.
    fn retained(&self, filter: &str) -> BTreeMap<String, String> {
        let output = self
            .client("mosquitto_sub")
            .args(["-t", filter, "-v", "--retained-only", "-W", "1"])
            .output()
            .expect("mosquitto_sub runs");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| line.split_once(' '))
            .map(|(topic, payload)| (topic.to_owned(), payload.to_owned()))
            .collect()
    }

    fn publish(&self, topic: &str, payload: &str) {
        let status = self
            .client("mosquitto_pub")
            .args(["-t", topic, "-m", payload])
            .status()
            .expect("mosquitto_pub runs");
        assert!(status.success());
    }

    fn publish_retained(&self, topic: &str, payload: &str) {
        let status = self
            .client("mosquitto_pub")
            .args(["-r", "-t", topic, "-m", payload])
            .status()
            .expect("mosquitto_pub runs");
        assert!(status.success());
    }

    /// Client ids that published to a topic matching `part` since line
    /// `from` of the broker's log, and the log's line count.
    fn publishers(&self, part: &str, from: usize) -> (BTreeSet<String>, usize) {
        let lines = self.log.lock().expect("log");
        let ids = lines[from.min(lines.len())..]
            .iter()
            .filter(|line| line.contains("Received PUBLISH from") && line.contains(part))
            .filter_map(|line| line.split("Received PUBLISH from ").nth(1))
            .filter_map(|rest| rest.split_whitespace().next())
            .map(str::to_owned)
            .collect();
        (ids, lines.len())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `mosquitto_sub` on `#`, every line stamped with when it arrived.
struct Subscriber {
    child: Child,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Subscriber {
    fn start(broker: &Broker, filter: &str) -> Subscriber {
        let mut child = broker
            .client("mosquitto_sub")
            .args(["-t", filter, "-v"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let stdout = child.stdout.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().expect("lines").push((Instant::now(), line));
            }
        });
        Subscriber { child, lines }
    }

    /// Lines since index `from` starting with `topic ` (the payloads).
    fn payloads(&self, from: usize, topic: &str) -> Vec<(Instant, String)> {
        let prefix = format!("{topic} ");
        let lines = self.lines.lock().expect("lines");
        lines[from.min(lines.len())..]
            .iter()
            .filter_map(|(at, line)| Some((*at, line.strip_prefix(&prefix)?.to_owned())))
            .collect()
    }

    fn len(&self) -> usize {
        self.lines.lock().expect("lines").len()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {limit:?} waiting for {what}");
}

/// An executor every node has, exposed to MQTT.
const BUTTON: &str = "[[executor]]\nname = \"button\"\naction = { command = [\"/bin/sh\", \"-c\", \"echo pressed on $SHOAL_NODE\"] }\nremote = true\nmqtt = true\n";

/// Three agents on 127.0.0.(base+1..3); the first two with `[mqtt]`.
fn three_agents(mesh: &mut Mesh, broker: &Broker, base: u8) {
    let key = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let mqtt = format!(
        "[mqtt]\nbroker = \"{}\"\nkeepalive = \"5s\"\n",
        broker.url()
    );
    for n in 1..=3u8 {
        let mut extra = BUTTON.to_owned();
        if n < 3 {
            extra.push_str(&mqtt);
        } else {
            extra.push_str("[[actuator]]\nname = \"door\"\ndriver = \"sim\"\nmqtt = true\n");
            extra.push_str("[[sensor]]\nname = \"fast\"\ndriver = \"sim\"\nwaveform = \"sine\"\nmin = 0.0\nmax = 100.0\nperiod = \"7s\"\ninterval = \"100ms\"\n");
        }
        let peers = "[]";
        mesh.add_full(
            usize::from(n),
            base + n,
            Some(key),
            "[\"127.255.255.255\"]",
            peers,
            &extra,
        );
    }
}

/// The active bridge's name, if exactly one node says `active`.
fn active_bridge(broker: &Broker) -> Option<String> {
    let roles = broker.retained("shoal/bridge/+");
    let active: Vec<&String> = roles
        .iter()
        .filter(|(_, role)| role.as_str() == "active")
        .map(|(topic, _)| topic)
        .collect();
    match active.as_slice() {
        [one] => one.strip_prefix("shoal/bridge/").map(str::to_owned),
        _ => None,
    }
}

fn agent_named<'m>(mesh: &'m mut Mesh, name: &str) -> &'m mut Agent {
    let n: usize = name.trim_start_matches("agent-").parse().expect("agent-N");
    &mut mesh.agents[n - 1]
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[test]
fn the_whole_mesh_appears_with_discovery_and_buttons_run_through_the_mesh() {
    let Some(broker) = Broker::start(
        "the_whole_mesh_appears_with_discovery_and_buttons_run_through_the_mesh",
        "127.0.0.100",
    ) else {
        return;
    };
    let subscriber = Subscriber::start(&broker, "shoal/#");
    let mut mesh = Mesh::new(0);
    three_agents(&mut mesh, &broker, 100);
    // Every node's points and availability, retained.
    wait_until(
        "every node's states retained",
        Duration::from_secs(20),
        || {
            let states = broker.retained("shoal/#");
            (1..=3).all(|n| {
                states.contains_key(&format!("shoal/agent-{n}/temperature"))
                    && states.contains_key(&format!("shoal/agent-{n}/exec.button"))
                    && states
                        .get(&format!("shoal/agent-{n}/availability"))
                        .map(String::as_str)
                        == Some("online")
            }) && active_bridge(&broker).is_some()
        },
    );
    let states = broker.retained("shoal/#");
    let attributes: serde_json::Value =
        serde_json::from_str(&states["shoal/agent-3/temperature/attributes"]).expect("JSON");
    assert_eq!(attributes["origin"], "agent-3");
    assert!(attributes["age_ms"].as_u64().is_some(), "{attributes}");
    assert!(states["shoal/agent-3/temperature"].parse::<f64>().is_ok());
    // Every discovery config, as Home Assistant would check it.
    let configs = broker.retained("homeassistant/#");
    let messages: Vec<(String, String)> = configs.clone().into_iter().collect();
    common::ha::validate_all("homeassistant", &messages).expect("valid discovery");
    for n in 1..=3 {
        let id = mesh.agents[n - 1].id();
        for topic in [
            format!("homeassistant/sensor/shoal_{id}/p_temperature/config"),
            format!("homeassistant/button/shoal_{id}/x_button/config"),
        ] {
            assert!(
                configs.contains_key(&topic),
                "{topic} missing: {configs:#?}"
            );
        }
    }
    let bridge = active_bridge(&broker).expect("one bridge");
    eprintln!("bridge: {bridge}");

    // A button of agent-3 (no MQTT of its own) runs there, through the mesh.
    let from = subscriber.len();
    broker.publish("shoal/agent-3/exec/button/run", "PRESS");
    wait_until("the button's result", Duration::from_secs(10), || {
        !subscriber
            .payloads(from, "shoal/agent-3/exec/button/result")
            .is_empty()
    });
    let result = &subscriber.payloads(from, "shoal/agent-3/exec/button/result")[0].1;
    let result: serde_json::Value = serde_json::from_str(result).expect("JSON");
    assert_eq!(result["outcome"], "exit 0", "{result}");
    assert_eq!(result["output"], "pressed on agent-3\n");
    // `hello` is remote but not exposed to MQTT: refused, and said.
    let from = subscriber.len();
    broker.publish("shoal/agent-3/exec/hello/run", "PRESS");
    wait_until("the refusal", Duration::from_secs(10), || {
        !subscriber
            .payloads(from, "shoal/agent-3/exec/hello/result")
            .is_empty()
    });
    let refusal = &subscriber.payloads(from, "shoal/agent-3/exec/hello/result")[0].1;
    assert!(refusal.contains("\"outcome\":\"refused\""), "{refusal}");
    assert!(refusal.contains("not exposed to MQTT"), "{refusal}");
    assert!(agent_named(&mut mesh, &bridge).logged("refused to run hello on agent-3"));
    assert!(!mesh.agents[2].logged("hello from agent-3"));
    // The same counted in /metrics, on the bridge and not on the other.
    let n: u8 = bridge
        .trim_start_matches("agent-")
        .parse()
        .expect("agent-N");
    let metrics = common::get_text(
        &format!("127.0.0.{}:{}", 100 + n, mesh.port + 2),
        "/metrics",
    );
    for sample in [
        "shoal_mqtt_connected 1\n",
        "shoal_mqtt_bridge_active 1\n",
        "shoal_mqtt_commands_total 1\n",
        "shoal_mqtt_commands_refused_total 1\n",
    ] {
        assert!(metrics.contains(sample), "no {sample:?} in\n{metrics}");
    }
    common::promtool_check(
        "the_whole_mesh_appears_with_discovery_and_buttons_run_through_the_mesh",
        &metrics,
    );
    let standby = common::get_text(
        &format!("127.0.0.{}:{}", 103 - n, mesh.port + 2),
        "/metrics",
    );
    assert!(
        standby.contains("shoal_mqtt_bridge_active 0\n"),
        "{standby}"
    );
    assert!(
        standby.contains("shoal_mqtt_commands_total 0\n"),
        "{standby}"
    );

    // agent-3's actuator `door` is a switch: ON and OFF drive it through
    // the mesh, and its state comes back.
    let id = mesh.agents[2].id();
    wait_until("the switch's config", Duration::from_secs(10), || {
        broker
            .retained("homeassistant/switch/#")
            .contains_key(&format!("homeassistant/switch/shoal_{id}/a_door/config"))
    });
    for (command, state) in [("ON", "true"), ("OFF", "false")] {
        let from = subscriber.len();
        broker.publish("shoal/agent-3/switch.door/set", command);
        wait_until("the switch's state", Duration::from_secs(10), || {
            subscriber
                .payloads(from, "shoal/agent-3/switch.door")
                .iter()
                .any(|(_, s)| s == state)
        });
    }
    let messages: Vec<(String, String)> = broker.retained("homeassistant/#").into_iter().collect();
    common::ha::validate_all("homeassistant", &messages).expect("valid discovery");

    // Home Assistant restarts with its retained configs gone: its birth
    // message brings them all back.
    let topic = format!("homeassistant/sensor/shoal_{id}/p_temperature/config");
    let status = broker
        .client("mosquitto_pub")
        .args(["-t", &topic, "-r", "-n"])
        .status()
        .expect("mosquitto_pub runs");
    assert!(status.success());
    assert!(!broker.retained("homeassistant/#").contains_key(&topic));
    broker.publish("homeassistant/status", "online");
    wait_until("the configs sent again", Duration::from_secs(10), || {
        broker.retained("homeassistant/#").contains_key(&topic)
    });

    // Latency from a reading on agent-3 (no MQTT) to the broker: the
    // reading's own wall-clock time against the subscriber's arrival time.
    let from = subscriber.len();
    wait_until(
        "100 readings of agent-3's fast point",
        Duration::from_secs(30),
        || {
            subscriber
                .payloads(from, "shoal/agent-3/fast/attributes")
                .len()
                >= 100
        },
    );
    let now_ms = unix_ms();
    let now = Instant::now();
    let mut latencies: Vec<u64> = subscriber
        .payloads(from, "shoal/agent-3/fast/attributes")
        .iter()
        .filter_map(|(at, payload)| {
            let attributes: serde_json::Value = serde_json::from_str(payload).ok()?;
            let arrived_ms = now_ms - now.duration_since(*at).as_millis() as u64;
            Some(arrived_ms.saturating_sub(attributes["ts_ms"].as_u64()?))
        })
        .collect();
    latencies.sort_unstable();
    let median = latencies[latencies.len() / 2];
    let p99 = latencies[latencies.len() * 99 / 100];
    eprintln!(
        "reading to broker through the bridge: median {median} ms, p99 {p99} ms over {} readings",
        latencies.len()
    );
}

#[test]
fn a_killed_bridge_is_replaced_and_its_return_makes_no_second_bridge() {
    let Some(broker) = Broker::start(
        "a_killed_bridge_is_replaced_and_its_return_makes_no_second_bridge",
        "127.0.0.104",
    ) else {
        return;
    };
    let subscriber = Subscriber::start(&broker, "shoal/#");
    let mut mesh = Mesh::new(1);
    three_agents(&mut mesh, &broker, 104);
    wait_until("a bridge", Duration::from_secs(20), || {
        active_bridge(&broker).is_some()
    });
    let first = active_bridge(&broker).expect("a bridge");
    let other = if first == "agent-1" {
        "agent-2"
    } else {
        "agent-1"
    };
    // A command published retained runs once, live; the copy the broker
    // keeps must not run again when a node (re)subscribes (below).
    let pressed = subscriber.len();
    let status = broker
        .client("mosquitto_pub")
        .args(["-t", "shoal/agent-3/exec/button/run", "-m", "PRESS", "-r"])
        .status()
        .expect("mosquitto_pub runs");
    assert!(status.success());
    wait_until(
        "the retained press run once",
        Duration::from_secs(10),
        || {
            !subscriber
                .payloads(pressed, "shoal/agent-3/exec/button/result")
                .is_empty()
        },
    );
    let from = subscriber.len();
    agent_named(&mut mesh, &first).kill();
    let killed = Instant::now();
    // The other takes over; states flow again from it.
    let took_over = wait_until("the other node takes over", Duration::from_secs(15), || {
        subscriber
            .payloads(from, &format!("shoal/bridge/{other}"))
            .iter()
            .any(|(_, role)| role == "active")
    });
    let flowing = wait_until("states flow again", Duration::from_secs(5), || {
        subscriber
            .payloads(from, "shoal/agent-3/temperature")
            .iter()
            .any(|(at, _)| at.duration_since(killed) >= took_over)
    });
    eprintln!(
        "bridge {first} killed: {other} active after {took_over:?}, states flowing after {:?}",
        took_over + flowing
    );
    let dead = format!("shoal/{first}/availability");
    wait_until("the dead bridge offline", Duration::from_secs(5), || {
        broker
            .retained("shoal/+/availability")
            .get(&dead)
            .map(String::as_str)
            == Some("offline")
    });
    let availability = broker.retained("shoal/+/availability");
    assert_eq!(
        availability[&format!("shoal/{other}/availability")],
        "online"
    );
    assert_eq!(availability["shoal/agent-3/availability"], "online");
    // `shoal status` on the new bridge shows the handover.
    let host = if other == "agent-1" { 105 } else { 106 };
    let output = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args([
            "status",
            "--api",
            &format!("127.0.0.{host}:{}", mesh.port + 2),
        ])
        .output()
        .expect("shoal status runs");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(printed.contains("this node active"), "{printed}");
    assert!(
        printed.contains(&format!("MQTT handover: {first} -> {other}")),
        "{printed}"
    );
    // Its Last Will said so too.
    assert_eq!(
        broker.retained("shoal/bridge/+")[&format!("shoal/bridge/{first}")],
        "offline"
    );

    // It returns: still exactly one node publishes states, for 60 s.
    agent_named(&mut mesh, &first).restart();
    let (_, mark) = broker.publishers("/temperature", 0);
    std::thread::sleep(Duration::from_secs(60));
    let (publishers, _) = broker.publishers("/temperature", mark);
    assert_eq!(publishers.len(), 1, "states published by {publishers:?}");
    assert_eq!(active_bridge(&broker).as_deref(), Some(other));
    let returned = agent_named(&mut mesh, &first);
    assert!(
        returned.logged("mqtt: this node is standby"),
        "{}",
        returned.dump()
    );
    assert!(
        returned.logged("ignored a retained message on shoal/agent-3/exec/button/run"),
        "{}",
        returned.dump()
    );
    let runs = subscriber.payloads(pressed, "shoal/agent-3/exec/button/result");
    assert_eq!(runs.len(), 1, "the retained press ran again: {runs:?}");
    assert_eq!(
        returned.count("mqtt: this node is active"),
        0,
        "{}",
        returned.dump()
    );
}

#[test]
fn after_the_broker_was_down_30_s_the_bridge_reconnects_and_publishes_everything_again() {
    let Some(mut broker) = Broker::start(
        "after_the_broker_was_down_30_s_the_bridge_reconnects_and_publishes_everything_again",
        "127.0.0.108",
    ) else {
        return;
    };
    let mut mesh = Mesh::new(2);
    three_agents(&mut mesh, &broker, 108);
    wait_until("a bridge", Duration::from_secs(20), || {
        active_bridge(&broker).is_some()
    });
    let bridge = active_bridge(&broker).expect("a bridge");
    let rss = |agent: &Agent| -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let before = rss(agent_named(&mut mesh, &bridge));
    let before_count = broker.retained("homeassistant/#").len();
    broker.stop();
    std::thread::sleep(Duration::from_secs(30));
    broker.restart();
    // Nothing retained survived the restart: all of it comes back.
    let took = wait_until(
        "everything published again",
        Duration::from_secs(45),
        || {
            broker.retained("homeassistant/#").len() >= before_count
                && active_bridge(&broker).is_some()
                && broker.retained("shoal/+/temperature").len() == 3
        },
    );
    eprintln!("republished {took:?} after the broker came back ({before_count} configs)");
    for agent in &mesh.agents {
        assert!(
            agent.logged("mqtt: lost") || !agent.logged("mqtt: connected"),
            "{}",
            agent.dump()
        );
    }
    let after = rss(agent_named(&mut mesh, &bridge));
    eprintln!("bridge RSS {before} kB before, {after} kB after");
    assert!(
        after < before + 2048,
        "RSS grew from {before} kB to {after} kB"
    );
    let messages: Vec<(String, String)> = broker.retained("homeassistant/#").into_iter().collect();
    common::ha::validate_all("homeassistant", &messages).expect("valid discovery");
}

/// `GET /api/status` at `api`.
fn status_at(api: &str) -> serde_json::Value {
    shoal::shell::client::request(api, "GET", "/api/status", None, Duration::from_secs(5))
        .expect("status")
        .body
}

/// `GET /api/points/NODE/NAME`'s value at `api`, if it answers.
fn point_value(api: &str, node: &str, name: &str) -> Option<serde_json::Value> {
    let path = format!("/api/points/{node}/{name}");
    let reply =
        shoal::shell::client::request(api, "GET", &path, None, Duration::from_secs(5)).ok()?;
    (reply.status == 200).then(|| reply.body["value"].clone())
}

#[test]
fn an_mqtt_sensor_turns_published_json_into_points_on_every_node() {
    let Some(broker) = Broker::start(
        "an_mqtt_sensor_turns_published_json_into_points_on_every_node",
        "127.0.0.112",
    ) else {
        return;
    };
    let mut mesh = Mesh::new(3);
    let key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    // agent-1 reads Zigbee2MQTT's topic and never bridges; agent-2 has no MQTT.
    let source = format!(
        "[mqtt]\nbroker = \"{}\"\nbridge = \"never\"\n[[sensor]]\nname = \"kitchen\"\ndriver = \"mqtt\"\ntopic = \"zigbee2mqtt/kitchen\"\njson = {{ temperature = \"/temperature\", humidity = \"/humidity\" }}\nunit = \"°C\"\n",
        broker.url()
    );
    mesh.add_full(1, 113, Some(key), "[\"127.255.255.255\"]", "[]", &source);
    mesh.add_full(2, 114, Some(key), "[\"127.255.255.255\"]", "[]", "");
    let api = format!("127.0.0.114:{}", mesh.port + 2);
    mesh.wait_for("agent-1 connected", Duration::from_secs(10), |m| {
        m.agents[0].logged("mqtt: connected")
    });
    broker.publish(
        "zigbee2mqtt/kitchen",
        r#"{"temperature":21.5,"humidity":40,"linkquality":99}"#,
    );
    let took = wait_until("the points on agent-2", Duration::from_secs(10), || {
        point_value(&api, "agent-1", "kitchen.temperature") == Some(serde_json::json!(21.5))
            && point_value(&api, "agent-1", "kitchen.humidity") == Some(serde_json::json!(40.0))
    });
    eprintln!("an MQTT message became points on another node in {took:?}");
    // Garbage: the points turn into errors everywhere, logged once.
    for bad in ["{oops", "{oops", "\u{1}\u{2} binary"] {
        broker.publish("zigbee2mqtt/kitchen", bad);
    }
    wait_until("the error on agent-2", Duration::from_secs(10), || {
        point_value(&api, "agent-1", "kitchen.temperature").is_some_and(|v| {
            v["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("the message is not JSON"))
        })
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        mesh.agents[0].count("until a good message"),
        1,
        "{}",
        mesh.agents[0].dump()
    );
    let status = status_at(&format!("127.0.0.113:{}", mesh.port + 2));
    assert_eq!(status["mqtt"]["sensor_errors"], 3, "{status}");
    // A good message again.
    broker.publish("zigbee2mqtt/kitchen", r#"{"temperature":22,"humidity":41}"#);
    wait_until("the value back", Duration::from_secs(10), || {
        point_value(&api, "agent-1", "kitchen.temperature") == Some(serde_json::json!(22.0))
    });
    // A flood of 20,000 bad messages and one of 100 kB: counted, dropped,
    // and the mesh's timing undisturbed (no beacon late enough for SUSPECT).
    let mut flood = broker
        .client("mosquitto_pub")
        .args(["-t", "zigbee2mqtt/kitchen", "-l"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("mosquitto_pub runs");
    {
        use std::io::Write;
        let mut stdin = flood.stdin.take().expect("piped");
        for n in 0..20_000 {
            writeln!(stdin, "{{\"temperature\": oops {n}").expect("written");
        }
    }
    assert!(flood.wait().expect("mosquitto_pub ends").success());
    broker.publish("zigbee2mqtt/kitchen", &"x".repeat(100_000));
    // QoS 0 under a flood may lose a message: say it again until it lands.
    let mut said = Instant::now() - Duration::from_secs(1);
    wait_until("the value after the flood", Duration::from_secs(20), || {
        if said.elapsed() >= Duration::from_secs(1) {
            broker.publish("zigbee2mqtt/kitchen", r#"{"temperature":23,"humidity":42}"#);
            said = Instant::now();
        }
        point_value(&api, "agent-1", "kitchen.temperature") == Some(serde_json::json!(23.0))
    });
    let status = status_at(&format!("127.0.0.113:{}", mesh.port + 2));
    let mqtt = &status["mqtt"];
    eprintln!(
        "flood: {} received, {} bad, {} dropped",
        mqtt["received"], mqtt["sensor_errors"], mqtt["dropped"]
    );
    assert!(
        mqtt["dropped"].as_u64() >= Some(1),
        "the 100 kB message: {mqtt}"
    );
    assert!(mqtt["sensor_errors"].as_u64() > Some(3), "{mqtt}");
    for agent in &mesh.agents {
        assert!(!agent.logged("-> SUSPECT"), "{}", agent.dump());
    }
    // `bridge = "never"`: it publishes nothing of the mesh.
    assert!(
        broker.retained("shoal/#").is_empty(),
        "{:?}",
        broker.retained("shoal/#")
    );
}

#[test]
fn a_wrong_password_is_said_counted_and_retried_and_the_right_one_connects() {
    let Some(mut broker) = Broker::start(
        "a_wrong_password_is_said_counted_and_retried_and_the_right_one_connects",
        "127.0.0.116",
    ) else {
        return;
    };
    broker.require_password("shoal", "right horse battery");
    let mut mesh = Mesh::new(4);
    let key = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";
    let password = mesh.dir.join("mqtt.password");
    std::fs::write(&password, "wrong\n").expect("password written");
    let mqtt = format!(
        "[mqtt]\nbroker = \"{}\"\nusername = \"shoal\"\npassword_file = \"{}\"\n",
        broker.url(),
        password.display()
    );
    mesh.add_full(1, 117, Some(key), "[\"127.255.255.255\"]", "[]", &mqtt);
    let api = format!("127.0.0.117:{}", mesh.port + 2);
    mesh.wait_for("two refusals", Duration::from_secs(10), |m| {
        m.agents[0].count("refused: not authorized")
            + m.agents[0].count("refused: bad user name or password")
            >= 2
    });
    let status = status_at(&api);
    assert!(
        status["mqtt"]["disconnects"].as_u64() >= Some(2),
        "{status}"
    );
    assert_eq!(status["mqtt"]["connected"], false);
    // The mesh runs on meanwhile, and with the right password it connects.
    std::fs::write(&password, "right horse battery\n").expect("password written");
    mesh.agents[0].restart();
    mesh.wait_for("connected", Duration::from_secs(10), |m| {
        m.agents[0].logged("mqtt: connected")
    });
}

#[test]
fn a_pruned_node_leaves_the_broker_and_home_assistant() {
    let Some(broker) = Broker::start(
        "a_pruned_node_leaves_the_broker_and_home_assistant",
        "127.0.0.120",
    ) else {
        return;
    };
    let mut mesh = Mesh::new(5);
    mesh.mesh_extra = "prune_after = \"4s\"\n".to_owned();
    three_agents(&mut mesh, &broker, 120);
    mesh.wait_for("agent-3 started", Duration::from_secs(5), |m| {
        m.agents[2].logged("incarnation")
    });
    let id = mesh.agents[2].id();
    let ours = |topics: &BTreeMap<String, String>| {
        topics
            .keys()
            .filter(|t| t.contains(&format!("shoal_{id}")) || t.starts_with("shoal/agent-3/"))
            .count()
    };
    wait_until("agent-3 on the broker", Duration::from_secs(20), || {
        let all = broker.retained("#");
        all.contains_key(&format!(
            "homeassistant/sensor/shoal_{id}/p_temperature/config"
        )) && all.contains_key("shoal/agent-3/temperature")
    });
    let before = ours(&broker.retained("#"));
    mesh.agents[2].signal("TERM");
    assert_eq!(mesh.agents[2].wait_exit(Duration::from_secs(5)), Some(0));
    let took = wait_until(
        "agent-3 gone from the broker",
        Duration::from_secs(20),
        || ours(&broker.retained("#")) == 0,
    );
    eprintln!(
        "{before} retained topics of agent-3 removed {took:?} after it left (prune_after 4s)"
    );
    assert!(broker.retained("shoal/agent-1/temperature").len() == 1);
}

#[test]
fn a_new_bridge_clears_what_earlier_bridges_left_and_nothing_else() {
    let Some(broker) = Broker::start(
        "a_new_bridge_clears_what_earlier_bridges_left_and_nothing_else",
        "127.0.0.124",
    ) else {
        return;
    };
    // What a bridge leaves when a node is pruned while another node is
    // the bridge: a ghost node's states, role and Home Assistant configs.
    let ghost_config = serde_json::json!({
        "name": "temperature",
        "unique_id": "shoal_00000000000000ff_p_temperature",
        "state_topic": "shoal/ghost/temperature",
        "availability": [{"topic": "shoal/bridge/agent-9", "payload_available": "active"}],
        "device": {"identifiers": ["shoal_00000000000000ff"], "name": "ghost"},
    });
    let ghost_topic = "homeassistant/sensor/shoal_00000000000000ff/p_temperature/config";
    let leftovers = [
        ("shoal/ghost/temperature", "21.5".to_owned()),
        (
            "shoal/ghost/temperature/attributes",
            "{\"unit\":\"°C\"}".to_owned(),
        ),
        ("shoal/ghost/availability", "online".to_owned()),
        ("shoal/bridge/agent-9", "offline".to_owned()),
        (ghost_topic, ghost_config.to_string()),
    ];
    // Not the bridge's: another integration's config, another shoal mesh's
    // (other topic prefix) under the same device-id pattern, and a
    // command left retained by mistake.
    let mut other_mesh = ghost_config.clone();
    other_mesh["availability"][0]["topic"] = "upstairs/bridge/attic".into();
    let other_topic = "homeassistant/sensor/shoal_00000000000000ee/p_temperature/config";
    let foreign = [
        (
            "homeassistant/sensor/0x00158d0001/temperature/config",
            "{\"name\":\"zigbee\"}".to_owned(),
        ),
        (other_topic, other_mesh.to_string()),
        ("upstairs/attic/temperature", "19.0".to_owned()),
        ("shoal/agent-3/exec/button/run", "press".to_owned()),
    ];
    for (topic, payload) in leftovers.iter().chain(foreign.iter()) {
        broker.publish_retained(topic, payload);
    }
    let mut mesh = Mesh::new(6);
    three_agents(&mut mesh, &broker, 124);
    wait_until("a bridge", Duration::from_secs(20), || {
        active_bridge(&broker).is_some()
    });
    let took = wait_until("the leftovers cleared", Duration::from_secs(20), || {
        let all = broker.retained("#");
        leftovers.iter().all(|(topic, _)| !all.contains_key(*topic))
    });
    eprintln!(
        "{} leftover topics cleared {took:?} after a bridge was active",
        leftovers.len()
    );
    let all = broker.retained("#");
    for (topic, payload) in &foreign {
        assert_eq!(all.get(*topic), Some(payload), "{topic} kept as it was");
    }
    assert!(all.contains_key("shoal/agent-3/temperature"));
    for agent in &mesh.agents {
        assert!(
            !agent.logged("pressed on"),
            "a retained command never runs (nor twice through the snapshot)"
        );
    }
    let bridge = active_bridge(&broker).expect("one bridge");
    let agent = agent_named(&mut mesh, &bridge);
    assert!(agent.logged("read the broker's retained topics"));
    assert!(agent.logged("ignored a retained message on shoal/agent-3/exec/button/run"));
}
