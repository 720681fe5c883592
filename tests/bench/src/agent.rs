//! One agent process of either system, its log read live and turned into
//! timestamped membership and value events.
//!
//! Timestamps are taken when the bench reads a line from the agent's pipe,
//! with the same clock for both systems; neither system's own log clock is
//! trusted (Serf's has one-second resolution).

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The two systems under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum System {
    /// This project's agent.
    Shoal,
    /// HashiCorp Serf (`serf agent`).
    Serf,
}

impl System {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            System::Shoal => "shoal",
            System::Serf => "serf",
        }
    }
}

/// What a log line says, if anything the bench needs.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    /// This agent's own id (shoal logs it at start).
    OwnId(String),
    /// The agent sees node `label` (a name, or a shoal id) alive.
    Alive(String),
    /// The agent declares node `label` failed (or gone).
    Dead(String),
    /// A propagated value arrived: shoal's point value, Serf's event name.
    Value(String),
    /// The agent is ready to be joined (Serf).
    Ready,
}

/// Most lines kept per agent; older ones are dropped (bounded memory).
const MAX_EVENTS: usize = 100_000;

/// PIDs of every agent running now, for [`kill_all`] when the bench panics
/// (release builds abort on panic, so no destructor would run).
static RUNNING: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

/// `kill -9` of every agent still running; for the panic hook.
pub fn kill_all() {
    let pids = std::mem::take(&mut *RUNNING.lock().unwrap_or_else(|e| e.into_inner()));
    if !pids.is_empty() {
        let _ = Command::new("kill")
            .arg("-KILL")
            .args(pids.iter().map(u32::to_string))
            .status();
    }
}

/// Reads `line` as `system` logs it.
pub fn parse(system: System, line: &str) -> Option<Seen> {
    match system {
        System::Shoal => parse_shoal(line),
        System::Serf => parse_serf(line),
    }
}

fn first_word(text: &str) -> &str {
    text.split_whitespace().next().unwrap_or("")
}

fn parse_shoal(line: &str) -> Option<Seen> {
    // "[INFO  shoal::shell::agent] node s-2 (f80a2b3af23c4170) incarnation 1 starting: ..."
    if line.contains(" incarnation ") && line.contains(" starting: ") {
        let (_, rest) = line.split_once("] node ")?;
        let id = rest.split_once('(')?.1.split_once(')')?.0;
        return Some(Seen::OwnId(id.to_owned()));
    }
    // "discovered node s-1 (a70a...) at 127.0.3.1:51001", or "discovered node a70a... at"
    if let Some((_, rest)) = line.split_once("discovered node ") {
        return Some(Seen::Alive(first_word(rest).to_owned()));
    }
    // "point s-1/bench = 42.5"
    if let Some((_, rest)) = line.split_once("] point ") {
        let (_, value) = rest.split_once(" = ")?;
        return Some(Seen::Value(first_word(value).to_owned()));
    }
    // "node s-3: SUSPECT -> UNREACHABLE", "(beyond one hop)" may follow.
    let (_, rest) = line.split_once("] node ")?;
    let (label, change) = rest.split_once(": ")?;
    let (_, to) = change.split_once(" -> ")?;
    match first_word(to) {
        "HEALTHY" => Some(Seen::Alive(label.to_owned())),
        "UNREACHABLE" | "LEFT" => Some(Seen::Dead(label.to_owned())),
        _ => None,
    }
}

fn parse_serf(line: &str) -> Option<Seen> {
    if line.contains("Serf agent running!") {
        return Some(Seen::Ready);
    }
    if let Some((_, rest)) = line.split_once("serf: EventMemberJoin: ") {
        return Some(Seen::Alive(first_word(rest).to_owned()));
    }
    for dead in ["serf: EventMemberFailed: ", "serf: EventMemberLeave: "] {
        if let Some((_, rest)) = line.split_once(dead) {
            return Some(Seen::Dead(first_word(rest).to_owned()));
        }
    }
    let (_, rest) = line.split_once("agent: Received event: user-event: ")?;
    Some(Seen::Value(first_word(rest).to_owned()))
}

/// A process's resident memory in bytes, as `/proc/PID/status` splits it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Memory {
    /// All of it (`VmRSS`).
    pub rss: u64,
    /// Anonymous pages: heap, stacks, what the process wrote (`RssAnon`).
    pub anon: u64,
    /// Pages of mapped files: its program and libraries, shared with every
    /// process that maps them (`RssFile`).
    pub file: u64,
}

impl Memory {
    /// From the text of `/proc/PID/status`; `None` without `VmRSS`.
    pub fn parse(status: &str) -> Option<Memory> {
        let field = |name: &str| -> Option<u64> {
            let line = status.lines().find(|l| l.starts_with(name))?;
            let kb: u64 = line[name.len()..].split_whitespace().next()?.parse().ok()?;
            Some(kb * 1024)
        };
        Some(Memory {
            rss: field("VmRSS:")?,
            anon: field("RssAnon:").unwrap_or(0),
            file: field("RssFile:").unwrap_or(0),
        })
    }
}

/// A running (or stopped) agent: its argv, its PID, its events.
#[derive(Debug)]
pub struct Agent {
    /// Its node name.
    pub name: String,
    system: System,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
    events: Arc<Mutex<Vec<(Instant, Seen)>>>,
    tail: Arc<Mutex<Vec<String>>>,
    /// Its scratch directory (state, handler output).
    pub dir: PathBuf,
}

impl Agent {
    /// Starts `argv` with `env`; `name` is the node's name in the mesh.
    pub fn start(
        system: System,
        name: &str,
        argv: Vec<String>,
        env: Vec<(String, String)>,
        dir: PathBuf,
    ) -> Result<Agent, String> {
        let mut agent = Agent {
            name: name.to_owned(),
            system,
            argv,
            env,
            child: None,
            events: Arc::new(Mutex::new(Vec::new())),
            tail: Arc::new(Mutex::new(Vec::new())),
            dir,
        };
        agent.spawn()?;
        Ok(agent)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let (program, args) = self.argv.split_first().ok_or("empty command")?;
        let mut child = Command::new(program)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {program}: {e}"))?;
        // shoal logs to stderr, Serf to stdout: read both the same way.
        let pipes: [Box<dyn Read + Send>; 2] = [
            Box::new(child.stdout.take().ok_or("no stdout")?),
            Box::new(child.stderr.take().ok_or("no stderr")?),
        ];
        for pipe in pipes {
            let events = Arc::clone(&self.events);
            let tail = Arc::clone(&self.tail);
            let system = self.system;
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let at = Instant::now();
                    if let Some(seen) = parse(system, &line) {
                        let mut events = events.lock().unwrap_or_else(|e| e.into_inner());
                        if events.len() < MAX_EVENTS {
                            events.push((at, seen));
                        }
                    }
                    let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
                    if tail.len() >= 40 {
                        tail.remove(0);
                    }
                    tail.push(line);
                }
            });
        }
        RUNNING
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(child.id());
        self.child = Some(child);
        Ok(())
    }

    fn forget(pid: u32) {
        RUNNING
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|&p| p != pid);
    }

    /// Its PID while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `kill -9`, and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            Agent::forget(child.id());
        }
    }

    /// SIGTERM, up to 3 s to exit, then `kill -9`.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    Agent::forget(child.id());
                    self.child = None;
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.kill();
    }

    /// Starts it again with the same command (after [`Agent::kill`]).
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        self.spawn()
    }

    /// What `look` makes of its events so far (read in place: with 250
    /// agents, copying them all at every check took a core from the
    /// agents under test).
    pub fn with_events<R>(&self, look: impl FnOnce(&[(Instant, Seen)]) -> R) -> R {
        look(&self.events.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The first event after `since` that `matches`.
    pub fn first(&self, since: Instant, matches: impl Fn(&Seen) -> bool) -> Option<Instant> {
        self.with_events(|events| {
            events
                .iter()
                .find(|(at, seen)| *at >= since && matches(seen))
                .map(|(at, _)| *at)
        })
    }

    /// Its last log lines, for error messages.
    pub fn tail(&self) -> String {
        self.tail
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }

    /// Resident memory in bytes, from /proc.
    pub fn rss_bytes(&self) -> Option<u64> {
        self.memory().map(|m| m.rss)
    }

    /// Resident memory in bytes and what it is made of, from /proc.
    pub fn memory(&self) -> Option<Memory> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        Memory::parse(&status)
    }

    /// CPU time of all its threads, in nanoseconds (schedstat: exact, not
    /// in clock ticks).
    pub fn cpu_ns(&self) -> Option<u64> {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.pid()?)).ok()?;
        let mut total = 0;
        for task in tasks.flatten() {
            let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
            total += stat
                .split_whitespace()
                .next()
                .and_then(|ns| ns.parse::<u64>().ok())
                .unwrap_or(0);
        }
        Some(total)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shoal_lines() {
        let s = |l| parse(System::Shoal, l);
        assert_eq!(
            s("[INFO  shoal::shell::agent] node s-2 (f80a2b3af23c4170) incarnation 1 starting: beacons on port 51000"),
            Some(Seen::OwnId("f80a2b3af23c4170".into()))
        );
        assert_eq!(
            s("[INFO  shoal::shell::events] discovered node s-1 (a70a096edc10481b) at 127.0.3.1:51001"),
            Some(Seen::Alive("s-1".into()))
        );
        assert_eq!(
            s("[INFO  shoal::shell::events] discovered node a70a096edc10481b at 127.0.3.1:51001"),
            Some(Seen::Alive("a70a096edc10481b".into()))
        );
        assert_eq!(
            s("[INFO  shoal_core] node s-3: SUSPECT -> UNREACHABLE"),
            Some(Seen::Dead("s-3".into()))
        );
        assert_eq!(
            s("[INFO  shoal_core::relay] node s-3: UNREACHABLE -> HEALTHY (beyond one hop)"),
            Some(Seen::Alive("s-3".into()))
        );
        assert_eq!(
            s("[INFO  shoal_core] node s-3: HEALTHY -> LEFT"),
            Some(Seen::Dead("s-3".into()))
        );
        assert_eq!(s("[INFO  shoal_core] node s-3: HEALTHY -> SUSPECT"), None);
        assert_eq!(
            s("[DEBUG shoal::shell::events] point s-1/bench = 42.5"),
            Some(Seen::Value("42.5".into()))
        );
        assert_eq!(
            s("[INFO  shoal::shell::agent] API on http://127.0.3.2:51002"),
            None
        );
    }

    #[test]
    fn the_panic_hook_kills_every_running_agent() {
        let start = |seconds: &str| {
            Agent::start(
                System::Shoal,
                "sleeper",
                vec!["sleep".into(), seconds.into()],
                Vec::new(),
                std::env::temp_dir(),
            )
            .expect("sleep starts")
        };
        let mut a = start("30");
        let mut b = start("31");
        let mut stopped = start("32");
        stopped.kill();
        kill_all();
        for agent in [&mut a, &mut b] {
            let child = agent.child.as_mut().expect("still owned");
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut exited = None;
            while exited.is_none() && Instant::now() < deadline {
                exited = child.try_wait().expect("waits");
                std::thread::sleep(Duration::from_millis(10));
            }
            assert!(exited.is_some(), "killed by the hook");
        }
        assert!(RUNNING.lock().expect("lock").is_empty());
    }

    #[test]
    fn memory_from_proc_status() {
        let status = "Name:\tshoal\nVmHWM:\t    4000 kB\nVmRSS:\t    3072 kB\n\
                      RssAnon:\t     1024 kB\nRssFile:\t    2048 kB\nRssShmem:\t       0 kB\n";
        assert_eq!(
            Memory::parse(status),
            Some(Memory {
                rss: 3072 * 1024,
                anon: 1024 * 1024,
                file: 2048 * 1024
            })
        );
        assert_eq!(Memory::parse("Name:\tzombie\n"), None);
        let own = std::fs::read_to_string("/proc/self/status").expect("readable");
        let own = Memory::parse(&own).expect("a running process has VmRSS");
        assert!(own.anon > 0 && own.file > 0 && own.anon + own.file <= own.rss);
    }

    #[test]
    fn serf_lines() {
        let s = |l| parse(System::Serf, l);
        assert_eq!(s("==> Serf agent running!"), Some(Seen::Ready));
        assert_eq!(
            s("    2026/11/22 09:23:38 [INFO] serf: EventMemberJoin: s3 127.0.0.203"),
            Some(Seen::Alive("s3".into()))
        );
        assert_eq!(
            s("    2026/11/22 09:23:46 [INFO] serf: EventMemberFailed: s3 127.0.0.203"),
            Some(Seen::Dead("s3".into()))
        );
        assert_eq!(
            s("    2026/11/22 09:23:39 [INFO] agent: Received event: user-event: bench7"),
            Some(Seen::Value("bench7".into()))
        );
        assert_eq!(
            s("    2026/11/22 09:23:42 [INFO] memberlist: Suspect s3 has failed, no acks received"),
            None
        );
    }
}
