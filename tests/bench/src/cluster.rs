//! A mesh of N agents of one system, on loopback or in namespaces, and the
//! measurements taken on it. Every wait is bounded; every process is killed
//! when the cluster is dropped (before its namespaces are deleted).

use crate::agent::{Agent, Memory, Seen, System};
use crate::lab::Lab;
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where the agents run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Net {
    /// 127.0.`octet`.k on the machine's loopback.
    Loopback,
    /// One namespace per agent on a bridge.
    Namespaces,
}

impl Net {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Net::Loopback => "loopback",
            Net::Namespaces => "namespaces",
        }
    }
}

/// Programs and ports shared by every cluster of a run.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The shoal binary.
    pub shoal: PathBuf,
    /// The serf binary.
    pub serf: String,
    /// First of the 12 ports the agents use (same on every address).
    pub port: u16,
    /// Third octet of the loopback addresses.
    pub octet: u8,
    /// Namespace name prefix (unique per run).
    pub prefix: String,
    /// Scratch directory of the run.
    pub dir: PathBuf,
}

/// Idle figures, averaged over the agents.
#[derive(Debug, Clone, Copy)]
pub struct Footprint {
    /// Resident memory per agent, MiB.
    pub rss_mib: f64,
    /// CPU seconds per agent per idle minute.
    pub cpu_s_per_min: f64,
    /// Bytes sent per agent per second (namespaces only).
    pub bytes_per_s: Option<f64>,
}

/// What a flood did to the mesh.
#[derive(Debug, Clone, Copy)]
pub struct FloodOutcome {
    /// How long sending it took (both halves, without the pause).
    pub seconds: f64,
    /// The largest growth of any agent's memory over the whole flood, in
    /// bytes, each part on its own (the largest `anon` and the largest
    /// `rss` may be different agents').
    pub growth: Memory,
    /// The largest growth of any agent's resident memory over the second
    /// half alone, in bytes: what the first half had not reached already.
    pub second_half_growth: u64,
    /// Agents still running 5 s after it.
    pub running: usize,
}

/// N agents of one system.
#[derive(Debug)]
pub struct Cluster {
    /// The system under test.
    pub system: System,
    // Dropped first: processes die before their namespaces go.
    agents: Vec<Agent>,
    lab: Option<Lab>,
    setup: Setup,
    dir: PathBuf,
    started: Instant,
    /// When the last agent was spawned (spawning hundreds takes seconds).
    last_spawned: Instant,
}

fn wait_until<T>(limit: Duration, mut done: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = done() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        // Every event carries the time it was read, so how often this
        // looks changes no result, only the CPU taken from the agents.
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

impl Cluster {
    /// Starts `n` agents of `system` and returns when all are spawned (Serf:
    /// the first agent must be up before the others can join it).
    pub fn start(
        system: System,
        n: usize,
        net: Net,
        setup: &Setup,
        tag: &str,
    ) -> Result<Cluster, String> {
        let dir = setup.dir.join(tag);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let lab = match net {
            Net::Loopback => None,
            Net::Namespaces => Some(Lab::new(&setup.prefix, n)?),
        };
        let mut cluster = Cluster {
            system,
            agents: Vec::new(),
            lab,
            setup: setup.clone(),
            dir,
            started: Instant::now(),
            last_spawned: Instant::now(),
        };
        if system == System::Serf {
            let handler = cluster.dir.join("handler.sh");
            std::fs::write(
                &handler,
                format!(
                    "#!/bin/sh\nread -r payload\necho \"$(date +%s%N) $SERF_USER_EVENT $payload\" >> \"{}/events.$SERF_SELF_NAME\"\n",
                    cluster.dir.display()
                ),
            )
            .map_err(|e| format!("handler: {e}"))?;
            let _ = Command::new("chmod").arg("+x").arg(&handler).status();
        }
        cluster.started = Instant::now();
        for k in 1..=n {
            cluster.spawn(k)?;
            if system == System::Serf && k == 1 {
                let seed = &cluster.agents[0];
                wait_until(Duration::from_secs(10), || {
                    seed.first(cluster.started, |s| *s == Seen::Ready)
                })
                .ok_or_else(|| format!("serf did not start:\n{}", seed.tail()))?;
            }
        }
        cluster.last_spawned = Instant::now();
        Ok(cluster)
    }

    fn address(&self, k: usize) -> String {
        match self.lab {
            None => format!("127.0.{}.{k}", self.setup.octet),
            Some(_) => Lab::address(k),
        }
    }

    /// Where the agent's API (shoal) or RPC (Serf) listens.
    fn control(&self, k: usize) -> String {
        let host = match self.lab {
            None => self.address(k),
            Some(_) => "127.0.0.1".to_owned(),
        };
        let port = match self.system {
            System::Shoal => self.setup.port + 2,
            System::Serf => self.setup.port + 11,
        };
        format!("{host}:{port}")
    }

    fn wrap(&self, k: usize, argv: Vec<String>) -> Vec<String> {
        match &self.lab {
            None => argv,
            Some(lab) => lab.wrap(k, argv),
        }
    }

    fn spawn(&mut self, k: usize) -> Result<(), String> {
        let name = format!("{}-{k}", &self.system.name()[..2]);
        let address = self.address(k);
        let port = self.setup.port;
        let state = self.dir.join(&name);
        let (argv, env) = match self.system {
            System::Shoal => {
                let (bind, broadcast) = match self.lab {
                    None => (address.clone(), "127.255.255.255".to_owned()),
                    Some(_) => ("0.0.0.0".to_owned(), "auto".to_owned()),
                };
                let config = self.dir.join(format!("{name}.toml"));
                std::fs::write(
                    &config,
                    format!(
                        "[node]\nname = \"{name}\"\n[mesh]\nport = {port}\nsync_port = {}\nbind = \"{bind}\"\nbroadcast = [\"{broadcast}\"]\nopen = true\n[api]\nlisten = \"{}\"\n[state]\ndir = \"{}\"\n",
                        port + 1,
                        self.control(k),
                        state.display()
                    ),
                )
                .map_err(|e| format!("config: {e}"))?;
                let argv = vec![
                    self.setup.shoal.display().to_string(),
                    "run".into(),
                    "--config".into(),
                    config.display().to_string(),
                ];
                let env = vec![("RUST_LOG".into(), "info,shoal::shell::events=debug".into())];
                (argv, env)
            }
            System::Serf => {
                let mut argv = vec![
                    self.setup.serf.clone(),
                    "agent".into(),
                    format!("-node={name}"),
                    format!("-bind={address}:{}", port + 10),
                    format!("-rpc-addr={}", self.control(k)),
                    format!(
                        "-event-handler=user={}",
                        self.dir.join("handler.sh").display()
                    ),
                ];
                if k > 1 {
                    argv.push(format!("-join={}:{}", self.address(1), port + 10));
                }
                (argv, Vec::new())
            }
        };
        let argv = self.wrap(k, argv);
        let agent = Agent::start(self.system, &name, argv, env, state)?;
        self.agents.push(agent);
        Ok(())
    }

    /// shoal ids (as logged by each agent at start) to names.
    fn names(&self) -> HashMap<String, String> {
        let mut names = HashMap::new();
        for agent in &self.agents {
            agent.with_events(|events| {
                for (_, seen) in events {
                    if let Seen::OwnId(id) = seen {
                        names.insert(id.clone(), agent.name.clone());
                    }
                }
            });
        }
        names
    }

    fn resolve<'a>(names: &'a HashMap<String, String>, label: &'a str) -> &'a str {
        names.get(label).map_or(label, String::as_str)
    }

    /// Time from the first spawn until every agent sees all others alive,
    /// and from the last spawn (zero if that was before: with many agents
    /// the spawning itself takes seconds).
    pub fn converged(&self, limit: Duration) -> Result<(Duration, Duration), String> {
        let n = self.agents.len();
        let at = wait_until(limit, || {
            let names = self.names();
            let mut last = self.started;
            for agent in &self.agents {
                let full = agent.with_events(|events| {
                    let mut alive = BTreeSet::new();
                    let mut full = None;
                    for (at, seen) in events {
                        match seen {
                            Seen::Alive(label) => {
                                let name = Cluster::resolve(&names, label);
                                if name != agent.name {
                                    alive.insert(name);
                                }
                            }
                            Seen::Dead(label) => {
                                alive.remove(Cluster::resolve(&names, label));
                            }
                            _ => continue,
                        }
                        if alive.len() >= n - 1 && full.is_none() {
                            full = Some(*at);
                        } else if alive.len() < n - 1 {
                            full = None;
                        }
                    }
                    full
                });
                last = last.max(full?);
            }
            Some(last)
        });
        at.map(|at| {
            (
                at - self.started,
                at.saturating_duration_since(self.last_spawned),
            )
        })
        .ok_or_else(|| self.failure("convergence", limit))
    }

    fn failure(&self, what: &str, limit: Duration) -> String {
        let tails: Vec<String> = self
            .agents
            .iter()
            .take(3)
            .map(|a| format!("--- {}:\n{}", a.name, a.tail()))
            .collect();
        format!(
            "{} {what}: not within {limit:?}\n{}",
            self.system.name(),
            tails.join("\n")
        )
    }

    /// `kill -9` of agent `k` (from 1); returns the moment.
    pub fn kill(&mut self, k: usize) -> Instant {
        self.agents[k - 1].kill();
        Instant::now()
    }

    /// Restarts agent `k` with the same command (Serf: joining the first).
    pub fn restart(&mut self, k: usize) -> Result<Instant, String> {
        let at = Instant::now();
        self.agents[k - 1].restart()?;
        Ok(at)
    }

    /// For each agent but `k`, the first event after `since` about `k` that
    /// `matches`: (first, last) delay once all have one.
    fn everyone_sees(
        &self,
        k: usize,
        since: Instant,
        limit: Duration,
        what: &str,
        matches: impl Fn(&Seen, &str) -> bool,
    ) -> Result<(Duration, Duration), String> {
        let target = self.agents[k - 1].name.clone();
        let times = wait_until(limit, || {
            let names = self.names();
            let mut times = Vec::new();
            for (i, agent) in self.agents.iter().enumerate() {
                if i + 1 == k {
                    continue;
                }
                let at = agent.first(since, |seen| {
                    let label = match seen {
                        Seen::Alive(l) | Seen::Dead(l) | Seen::Value(l) => l,
                        _ => return false,
                    };
                    matches(seen, Cluster::resolve(&names, label))
                })?;
                times.push(at - since);
            }
            Some(times)
        })
        .ok_or_else(|| self.failure(&format!("{what} of {target}"), limit))?;
        let first = times.iter().min().copied().unwrap_or_default();
        let last = times.iter().max().copied().unwrap_or_default();
        Ok((first, last))
    }

    /// Time until the first and the last survivor mark agent `k` failed.
    pub fn detected(
        &self,
        k: usize,
        since: Instant,
        limit: Duration,
    ) -> Result<(Duration, Duration), String> {
        let target = self.agents[k - 1].name.clone();
        self.everyone_sees(k, since, limit, "failure detection", |seen, name| {
            matches!(seen, Seen::Dead(_)) && name == target
        })
    }

    /// Time until every other agent sees agent `k` alive again.
    pub fn rejoined(&self, k: usize, since: Instant, limit: Duration) -> Result<Duration, String> {
        let target = self.agents[k - 1].name.clone();
        self.everyone_sees(k, since, limit, "rejoin", |seen, name| {
            matches!(seen, Seen::Alive(_)) && name == target
        })
        .map(|(_, last)| last)
    }

    /// Publishes one small value on agent `k` through its client (`curl` to
    /// the API for shoal, `serf event` for Serf; both a process start) and
    /// returns the time until every other agent has it, and for Serf also
    /// the time until its event handler ran on every other agent.
    pub fn propagate(
        &self,
        k: usize,
        seq: u32,
        limit: Duration,
    ) -> Result<(Duration, Option<Duration>), String> {
        let value = format!("{}.5", 1000 + seq);
        let event = format!("bench{seq}");
        let argv: Vec<String> = match self.system {
            System::Shoal => {
                let token_file = self.agents[k - 1].dir.join("api.token");
                let token = std::fs::read_to_string(&token_file)
                    .map_err(|e| format!("{}: {e}", token_file.display()))?;
                vec![
                    "curl".into(),
                    "-sf".into(),
                    "-m".into(),
                    "5".into(),
                    "-X".into(),
                    "POST".into(),
                    "-H".into(),
                    format!("Authorization: Bearer {}", token.trim()),
                    "--data".into(),
                    format!("[{{\"name\": \"bench\", \"value\": {value}}}]"),
                    format!("http://{}/api/points", self.control(k)),
                ]
            }
            System::Serf => vec![
                self.setup.serf.clone(),
                "event".into(),
                "-coalesce=false".into(),
                format!("-rpc-addr={}", self.control(k)),
                event.clone(),
                value.clone(),
            ],
        };
        let argv = self.wrap(k, argv);
        let sent_wall = unix_ns();
        let sent = Instant::now();
        let status = Command::new(&argv[0])
            .args(&argv[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| format!("{}: {e}", argv[0]))?;
        if !status.success() {
            return Err(format!("{} failed: {status}", argv.join(" ")));
        }
        let wanted = match self.system {
            System::Shoal => value,
            System::Serf => event.clone(),
        };
        let (_, last) = self.everyone_sees(k, sent, limit, "propagation", |seen, label| {
            matches!(seen, Seen::Value(_)) && label == wanted
        })?;
        if self.system == System::Shoal {
            return Ok((last, None));
        }
        // The handlers' own timestamps (they run after the log line).
        let handled = wait_until(Duration::from_secs(5), || {
            let mut latest = 0u128;
            for (i, agent) in self.agents.iter().enumerate() {
                if i + 1 == k {
                    continue;
                }
                let text = std::fs::read_to_string(self.dir.join(format!("events.{}", agent.name)))
                    .ok()?;
                let line = text
                    .lines()
                    .find(|l| l.split_whitespace().nth(1) == Some(event.as_str()))?;
                let ns: u128 = line.split_whitespace().next()?.parse().ok()?;
                latest = latest.max(ns);
            }
            Some(latest)
        });
        let handler = handled.map(|ns| Duration::from_nanos(ns.saturating_sub(sent_wall) as u64));
        Ok((last, handler))
    }

    /// Idles for `window` and measures every agent.
    pub fn idle(&self, window: Duration) -> Result<Footprint, String> {
        let n = self.agents.len();
        let bytes = |k: usize| self.lab.as_ref().map(|lab| lab.sent_bytes(k)).transpose();
        let cpu0: Vec<Option<u64>> = self.agents.iter().map(Agent::cpu_ns).collect();
        let bytes0: Vec<Option<u64>> = (1..=n).map(bytes).collect::<Result<_, _>>()?;
        let start = Instant::now();
        std::thread::sleep(window);
        let elapsed = start.elapsed().as_secs_f64();
        let cpu1: Vec<Option<u64>> = self.agents.iter().map(Agent::cpu_ns).collect();
        let bytes1: Vec<Option<u64>> = (1..=n).map(bytes).collect::<Result<_, _>>()?;
        let mut rss = 0.0;
        let mut cpu = 0.0;
        let mut sent = 0.0;
        for k in 0..n {
            let memory = self.agents[k]
                .rss_bytes()
                .ok_or_else(|| format!("{} exited while idle", self.agents[k].name))?;
            rss += memory as f64 / (1024.0 * 1024.0);
            let (Some(a), Some(b)) = (cpu0[k], cpu1[k]) else {
                return Err(format!("no CPU figures for {}", self.agents[k].name));
            };
            cpu += b.saturating_sub(a) as f64 / 1e9 / elapsed * 60.0;
            if let (Some(a), Some(b)) = (bytes0[k], bytes1[k]) {
                sent += b.saturating_sub(a) as f64 / elapsed;
            }
        }
        let per = n as f64;
        Ok(Footprint {
            rss_mib: rss / per,
            cpu_s_per_min: cpu / per,
            bytes_per_s: self.lab.as_ref().map(|_| sent / per),
        })
    }

    /// Agents in the cluster.
    pub fn len(&self) -> usize {
        self.agents.len()
    }

    /// Whether it has none.
    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }

    /// Broadcasts every frame to the beacon port, from an address no agent
    /// uses, as fast as the socket takes them (loopback only), in two
    /// halves, measuring every agent 5 s after each: memory that a flood
    /// fills up to a bound grows in the first half, a leak in both.
    pub fn flood(&self, frames: &[Vec<u8>]) -> Result<FloodOutcome, String> {
        if self.lab.is_some() {
            return Err("the flood runs on loopback only".into());
        }
        let memory = || -> Vec<Option<Memory>> { self.agents.iter().map(Agent::memory).collect() };
        let from = format!("127.0.{}.254:0", self.setup.octet);
        let socket = std::net::UdpSocket::bind(&from).map_err(|e| format!("bind {from}: {e}"))?;
        socket
            .set_broadcast(true)
            .map_err(|e| format!("broadcast: {e}"))?;
        let to = format!("127.255.255.255:{}", self.setup.port);
        let send = |half: &[Vec<u8>]| {
            let start = Instant::now();
            for frame in half {
                // A full socket buffer is the attacker's problem: skip on.
                let _ = socket.send_to(frame, &to);
            }
            let seconds = start.elapsed().as_secs_f64();
            std::thread::sleep(Duration::from_secs(5));
            seconds
        };
        let (first, second) = frames.split_at(frames.len().div_ceil(2));
        let before = memory();
        let mut seconds = send(first);
        let middle = memory();
        seconds += send(second);
        let after = memory();
        let largest = |from: &[Option<Memory>], part: fn(&Memory) -> u64| {
            from.iter()
                .zip(&after)
                .filter_map(|(a, b)| Some(part(b.as_ref()?).saturating_sub(part(a.as_ref()?))))
                .max()
                .unwrap_or(0)
        };
        Ok(FloodOutcome {
            seconds,
            growth: Memory {
                rss: largest(&before, |m| m.rss),
                anon: largest(&before, |m| m.anon),
                file: largest(&before, |m| m.file),
            },
            second_half_growth: largest(&middle, |m| m.rss),
            running: after.iter().filter(|m| m.is_some()).count(),
        })
    }

    /// Failures declared by any agent between `since` and now (false ones
    /// when nothing failed).
    pub fn failures_since(&self, since: Instant) -> usize {
        self.agents
            .iter()
            .map(|a| {
                a.with_events(|events| {
                    events
                        .iter()
                        .filter(|(at, seen)| *at >= since && matches!(seen, Seen::Dead(_)))
                        .count()
                })
            })
            .sum()
    }

    /// Failures of the cluster's own agents declared by any agent between
    /// `since` and now (not those of nodes a flood made up).
    pub fn failures_of_agents_since(&self, since: Instant) -> usize {
        let names = self.names();
        let ours: BTreeSet<&str> = self.agents.iter().map(|a| a.name.as_str()).collect();
        self.agents
            .iter()
            .map(|a| {
                a.with_events(|events| {
                    events
                        .iter()
                        .filter(|(at, seen)| match seen {
                            Seen::Dead(label) => {
                                *at >= since && ours.contains(Cluster::resolve(&names, label))
                            }
                            _ => false,
                        })
                        .count()
                })
            })
            .sum()
    }

    /// Packet loss on every namespace's eth0 (namespaces only).
    pub fn set_loss(&self, share: f64) -> Result<(), String> {
        self.lab
            .as_ref()
            .ok_or("loss needs namespaces")?
            .set_loss(share)
    }

    /// Stops every agent (SIGTERM, then kill -9).
    pub fn stop(mut self) {
        for agent in &mut self.agents {
            agent.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
