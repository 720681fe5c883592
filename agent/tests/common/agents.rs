//! Real `shoal run` processes for tests: an `Agent` (its log read by a
//! thread, killed on drop) and a `Mesh` of them on loopback with its own
//! ports and scratch directory.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The agent binary; under `SHOAL_TEST_RUNNER` (an emulator command line,
/// as CI sets for the ARM builds under qemu-user) started through it, since
/// there is no binfmt_misc to run a foreign binary directly.
pub(crate) fn shoal_command() -> Command {
    let runner = std::env::var("SHOAL_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    match words.next() {
        Some(emulator) => {
            let mut command = Command::new(emulator);
            command.args(words).arg(env!("CARGO_BIN_EXE_shoal"));
            command
        }
        None => Command::new(env!("CARGO_BIN_EXE_shoal")),
    }
}

pub(crate) struct Agent {
    pub(crate) name: String,
    pub(crate) child: Option<Child>,
    pub(crate) log: Arc<Mutex<Vec<String>>>,
    pub(crate) config: PathBuf,
}

impl Agent {
    pub(crate) fn start(name: &str, config: &Path) -> Agent {
        Agent::start_with_env(name, config, &[])
    }

    pub(crate) fn start_with_env(name: &str, config: &Path, env: &[(&str, &str)]) -> Agent {
        let mut child = shoal_command()
            .args(["run", "--config", config.to_str().expect("utf-8 path")])
            .envs(env.iter().copied())
            .env("RUST_LOG", "info,shoal::shell=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("shoal starts");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("piped");
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("log lock").push(line);
            }
        });
        Agent {
            name: name.to_owned(),
            child: Some(child),
            log,
            config: config.to_owned(),
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub(crate) fn logged(&self, text: &str) -> bool {
        self.log
            .lock()
            .expect("log lock")
            .iter()
            .any(|line| line.contains(text))
    }

    pub(crate) fn count(&self, text: &str) -> usize {
        self.log
            .lock()
            .expect("log lock")
            .iter()
            .filter(|line| line.contains(text))
            .count()
    }

    /// Its node id (16 hex digits), from its first start's log line.
    pub(crate) fn id(&self) -> String {
        self.line_with("incarnation 1 starting")
            .split_once('(')
            .and_then(|(_, rest)| rest.split_once(')'))
            .map(|(id, _)| id.to_owned())
            .expect("the agent logs its id")
    }

    /// The first logged line containing `text`, or "".
    pub(crate) fn line_with(&self, text: &str) -> String {
        self.log
            .lock()
            .expect("log lock")
            .iter()
            .find(|line| line.contains(text))
            .cloned()
            .unwrap_or_default()
    }

    pub(crate) fn dump(&self) -> String {
        format!(
            "--- {}\n{}",
            self.name,
            self.log.lock().expect("log lock").join("\n")
        )
    }

    pub(crate) fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits (bounded) for the process to exit; its exit code.
    pub(crate) fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub(crate) fn restart(&mut self) {
        self.kill();
        let mut fresh = Agent::start(&self.name, &self.config);
        self.child = fresh.child.take();
        self.log = Arc::clone(&fresh.log);
    }

    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A test's private mesh: agents, ports, a scratch directory.
pub(crate) struct Mesh {
    pub(crate) dir: PathBuf,
    pub(crate) port: u16,
    pub(crate) agents: Vec<Agent>,
    /// Environment for the next agent added (then cleared).
    pub(crate) next_env: Vec<(&'static str, String)>,
    /// `[mesh]` settings for every agent added from now on (TOML lines).
    pub(crate) mesh_extra: String,
}

impl Mesh {
    /// `slot` separates tests of this binary; the PID separates runs.
    pub(crate) fn new(slot: u16) -> Mesh {
        // 32 slots of 4 ports per run (beacons, sync, the API and news at
        // the third, the fourth free); the PID spreads runs over 30000-49999.
        assert!(slot < 32, "slots 0 to 31");
        let port = 30_000 + (std::process::id() % 156) as u16 * 128 + slot * 4;
        let dir = std::env::temp_dir().join(format!("shoal-process-{}-{slot}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Mesh {
            dir,
            port,
            agents: Vec::new(),
            next_env: Vec::new(),
            mesh_extra: String::new(),
        }
    }

    /// Starts agent `n` on 127.0.0.`host`, with `key` (hex) or an open mesh
    /// (`mesh.open = true`).
    pub(crate) fn add(&mut self, n: usize, host: u8, key: Option<&str>) -> usize {
        self.add_with(n, host, key, "[\"127.255.255.255\"]", "[]")
    }

    /// The same with explicit broadcast and static peer lists (TOML arrays).
    pub(crate) fn add_with(
        &mut self,
        n: usize,
        host: u8,
        key: Option<&str>,
        broadcast: &str,
        peers: &str,
    ) -> usize {
        self.add_full(n, host, key, broadcast, peers, "")
    }

    /// The same with `extra` TOML appended (more sensors...).
    pub(crate) fn add_full(
        &mut self,
        n: usize,
        host: u8,
        key: Option<&str>,
        broadcast: &str,
        peers: &str,
        extra: &str,
    ) -> usize {
        self.add_named(n, &format!("agent-{n}"), host, key, broadcast, peers, extra)
    }

    /// The same with node name `node_name` (files are still `agent-N`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn add_named(
        &mut self,
        n: usize,
        node_name: &str,
        host: u8,
        key: Option<&str>,
        broadcast: &str,
        peers: &str,
        extra: &str,
    ) -> usize {
        let name = format!("agent-{n}");
        let state = self.dir.join(&name);
        let key_line = match key {
            // A fresh node: no key line, so `mesh.key` in its state directory.
            Some(FRESH) => String::new(),
            Some(hex) => {
                let path = self.dir.join(format!("{name}.key"));
                std::fs::write(&path, hex).expect("key written");
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .expect("key made private");
                format!("key_file = \"{}\"\n", path.display())
            }
            None => "open = true\n".to_owned(),
        };
        let config = self.dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "[node]\nname = \"{node_name}\"\n[mesh]\nport = {}\nsync_port = {}\nbind = \"127.0.0.{host}\"\nbroadcast = {broadcast}\npeers = {peers}\n{}{key_line}[api]\nlisten = \"127.0.0.{host}:{}\"\n[state]\ndir = \"{}\"\n[[sensor]]\nname = \"temperature\"\ndriver = \"sim\"\nmin = 18.0\nmax = 24.0\ninterval = \"1s\"\n[[executor]]\nname = \"hello\"\naction = {{ command = [\"/bin/sh\", \"-c\", \"echo hello from $SHOAL_NODE for $SHOAL_CALLER\"] }}\nremote = true\n[[executor]]\nname = \"private\"\naction = {{ command = [\"/bin/true\"] }}\n{extra}",
                self.port,
                self.port + 1,
                self.mesh_extra,
                self.port + 2,
                state.display()
            ),
        )
        .expect("config written");
        let env = std::mem::take(&mut self.next_env);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.agents
            .push(Agent::start_with_env(&name, &config, &env));
        self.agents.len() - 1
    }

    /// Waits up to `limit` for `done`; on timeout panics with every log.
    pub(crate) fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        done: impl Fn(&Mesh) -> bool,
    ) -> Duration {
        let start = Instant::now();
        while start.elapsed() < limit {
            if done(self) {
                return start.elapsed();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let logs: Vec<String> = self.agents.iter().map(Agent::dump).collect();
        panic!(
            "timed out after {limit:?} waiting for {what}\n{}",
            logs.join("\n")
        );
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.agents.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(crate) const INTERVAL: Duration = Duration::from_secs(1);

/// As the `key` of `Mesh::add`: no key configured, as on a fresh install.
pub(crate) const FRESH: &str = "";
