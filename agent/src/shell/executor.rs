//! Executors: what a node runs when a rule or a command (local or from
//! another node) asks.
//!
//! A `command` executor runs its argv without a shell, in a process group
//! of its own, with `SHOAL_*` variables in its environment. When it outlives
//! its `timeout` the whole group is killed, so a script's children go too.
//! Its output (stdout, then stderr) is logged; the first
//! [`wire::MAX_OUTPUT`] bytes travel back to whoever asked. A second run of
//! an executor while one is going on is refused as busy, or waits its turn
//! (`policy = "queue"`).

use futures_lite::{future, AsyncReadExt};
use shoal_config::{Action, ActuatorAction, ExecutorSection, Policy};
use shoal_core::wire::{self, Outcome};
use shoal_hal::{Actuator, ActuatorCommand};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Most bytes of output read from a command; the rest is discarded.
pub const MAX_CAPTURE: usize = 64 * 1024;

/// How one run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    /// The outcome.
    pub outcome: Outcome,
    /// Its output, cut at [`MAX_CAPTURE`] bytes.
    pub output: String,
    /// How long it ran.
    pub duration: Duration,
    /// A point this node must publish (`publish` executors).
    pub publish: Option<(String, f64)>,
    /// An actuator driven, and whether it is on now.
    pub switched: Option<(String, bool)>,
}

/// Who asked for a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The asking node's name (this node's own for a local run).
    pub node: String,
    /// Whether it is this node itself.
    pub local: bool,
    /// For a rule's action: its inputs' values (`SHOAL_INPUTS`).
    pub inputs: String,
}

/// The executors of one node.
#[derive(Clone)]
pub struct Executors {
    by_name: BTreeMap<String, ExecutorSection>,
    /// Executors running now, with the number of runs waiting (queue policy).
    running: Rc<RefCell<BTreeMap<String, usize>>>,
    /// The node's actuators, by name.
    actuators: Rc<RefCell<BTreeMap<String, Box<dyn Actuator>>>>,
    node_name: String,
}

impl std::fmt::Debug for Executors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executors")
            .field("executors", &self.by_name.keys().collect::<Vec<_>>())
            .field(
                "actuators",
                &self.actuators.borrow().keys().cloned().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Executors {
    /// The configured executors of node `node_name`.
    pub fn new(sections: &[ExecutorSection], node_name: &str) -> Executors {
        Executors {
            by_name: shoal_config::order::map(
                sections
                    .iter()
                    .map(|section| (section.name.clone(), section.clone())),
            ),
            running: Rc::default(),
            actuators: Rc::default(),
            node_name: node_name.to_owned(),
        }
    }

    /// The same, switching `actuators`.
    pub fn with_actuators(mut self, actuators: BTreeMap<String, Box<dyn Actuator>>) -> Executors {
        self.actuators = Rc::new(RefCell::new(actuators));
        self
    }

    /// The executors of `sections` in place of these (a configuration
    /// reload), for runs started from now on. A run under way keeps the
    /// copy it started with and ends as usual, even when its executor was
    /// removed or changed; which executors are running is shared, so a
    /// changed one stays busy until its old run ends.
    pub fn reload(&mut self, sections: &[ExecutorSection]) {
        self.by_name = shoal_config::order::map(
            sections
                .iter()
                .map(|section| (section.name.clone(), section.clone())),
        );
    }

    /// Drops actuator `name` (its device released): a run under way that
    /// drives it finds it gone.
    pub fn remove_actuator(&self, name: &str) {
        self.actuators.borrow_mut().remove(name);
    }

    /// Installs actuator `name`, for runs under way too.
    pub fn add_actuator(&self, name: String, device: Box<dyn Actuator>) {
        self.actuators.borrow_mut().insert(name, device);
    }

    /// Whether `name` may run for `caller` now; `Err` is the refusal.
    pub fn check(&self, name: &str, caller: &Caller) -> Result<(), Outcome> {
        let section = self.by_name.get(name).ok_or(Outcome::UnknownExecutor)?;
        if !caller.local && !section.remote {
            return Err(Outcome::NotRemote);
        }
        if section.policy == Policy::Refuse && self.running.borrow().contains_key(name) {
            return Err(Outcome::Busy);
        }
        Ok(())
    }

    /// Runs `name` for `caller` (after [`Executors::check`]).
    pub async fn run(&self, name: &str, caller: &Caller) -> Finished {
        let started = Instant::now();
        if let Err(outcome) = self.check(name, caller) {
            return refused(outcome);
        }
        let Some(section) = self.by_name.get(name).cloned() else {
            return refused(Outcome::UnknownExecutor);
        };
        // Queue policy: wait for the running one, bounded by the timeout.
        while self.running.borrow().contains_key(name) {
            if started.elapsed() >= section.timeout {
                return refused(Outcome::Busy);
            }
            smol::Timer::after(Duration::from_millis(50)).await;
        }
        self.running.borrow_mut().insert(name.to_owned(), 0);
        let mut publish = None;
        let mut switched = None;
        let (outcome, output) = match &section.action {
            Action::Command(argv) => {
                run_command(argv, section.timeout, &self.env(name, caller)).await
            }
            Action::Actuator { actuator, command } => {
                let (outcome, output, on) = self.drive(actuator, *command).await;
                switched = on.map(|on| (actuator.clone(), on));
                (outcome, output)
            }
            Action::Webhook(url) => {
                let body = serde_json::json!({
                    "node": self.node_name,
                    "executor": name,
                    "caller": caller.node,
                    "time_ms": std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64),
                });
                webhook(url, &body.to_string(), section.timeout).await
            }
            Action::Publish { point, value } => {
                publish = Some((point.clone(), *value));
                (Outcome::Exited(0), format!("{point} = {value}\n"))
            }
        };
        self.running.borrow_mut().remove(name);
        Finished {
            outcome,
            output,
            duration: started.elapsed(),
            publish,
            switched,
        }
    }

    /// Drives actuator `name`; a pulse returns when it has ended. Also says
    /// whether it is on afterwards, when that is known.
    async fn drive(&self, name: &str, action: ActuatorAction) -> (Outcome, String, Option<bool>) {
        let command = match action {
            ActuatorAction::Set(on) => ActuatorCommand::Set(on),
            ActuatorAction::Toggle => ActuatorCommand::Toggle,
            ActuatorAction::Pulse(length) => ActuatorCommand::Pulse(length),
            ActuatorAction::Duty(duty) => ActuatorCommand::Duty(duty),
        };
        let describe = |state: f64| match action {
            ActuatorAction::Duty(_) => format!("{name}: duty {state}\n"),
            _ => format!("{name}: {}\n", if state > 0.0 { "on" } else { "off" }),
        };
        let applied = match self.actuators.borrow_mut().get_mut(name) {
            Some(device) => device.apply(command),
            None => {
                return (
                    Outcome::Failed,
                    format!(
                        "actuator {name:?} is not available on this node (see the log at start)\n"
                    ),
                    None,
                )
            }
        };
        let state = match applied {
            Ok(state) => state,
            Err(error) => return (Outcome::Failed, format!("{name}: {error}\n"), None),
        };
        let ActuatorAction::Pulse(length) = action else {
            return (Outcome::Exited(0), describe(state), Some(state > 0.0));
        };
        smol::Timer::after(length).await;
        let ended = match self.actuators.borrow_mut().get_mut(name) {
            Some(device) => device.tick(std::time::Instant::now()),
            None => Ok(None),
        };
        match ended {
            Ok(_) => (
                Outcome::Exited(0),
                format!(
                    "{name}: on for {}, then off\n",
                    shoal_config::format_duration(length)
                ),
                Some(false),
            ),
            Err(error) => (
                Outcome::Failed,
                format!("{name}: ending the pulse: {error}\n"),
                None,
            ),
        }
    }

    fn env(&self, name: &str, caller: &Caller) -> Vec<(String, String)> {
        vec![
            ("SHOAL_EXECUTOR".to_owned(), name.to_owned()),
            ("SHOAL_NODE".to_owned(), self.node_name.clone()),
            ("SHOAL_CALLER".to_owned(), caller.node.clone()),
            ("SHOAL_INPUTS".to_owned(), caller.inputs.clone()),
        ]
    }
}

fn refused(outcome: Outcome) -> Finished {
    Finished {
        outcome,
        output: String::new(),
        duration: Duration::ZERO,
        publish: None,
        switched: None,
    }
}

/// POSTs `body` (JSON) to an `http://` URL; 2xx is success. (No TLS in this
/// build: an `https://` webhook is refused with a reason.)
pub async fn webhook(url: &str, body: &str, timeout: Duration) -> (Outcome, String) {
    let target = match shoal_config::parse_url(url, "http", "https") {
        Ok(target) => target,
        Err(why) => return (Outcome::Failed, format!("webhook {why}")),
    };
    let exchange = async {
        Some(
            super::fetch::exchange(
                &target,
                "POST",
                "Content-Type: application/json\r\n",
                body.as_bytes(),
            )
            .await,
        )
    };
    let deadline = async {
        smol::Timer::after(timeout).await;
        None
    };
    match future::or(exchange, deadline).await {
        None => (
            Outcome::TimedOut,
            format!(
                "{url}: no answer within {}",
                shoal_config::format_duration(timeout)
            ),
        ),
        Some(Err(error)) => (Outcome::Failed, format!("{url}: {error}")),
        Some(Ok(answer)) if (200..300).contains(&answer.status) => {
            (Outcome::Exited(0), format!("{}\n", answer.status_line))
        }
        Some(Ok(answer)) => (Outcome::Failed, format!("{url}: {}\n", answer.status_line)),
    }
}

/// Runs `argv` in its own process group; kills the group after `timeout`.
/// The output is stdout then stderr, and what became of the program.
pub async fn run_command(
    argv: &[String],
    timeout: Duration,
    env: &[(String, String)],
) -> (Outcome, String) {
    let ran = run_argv(argv, timeout, env).await;
    let mut text = String::from_utf8_lossy(&ran.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&ran.stderr));
    text.push_str(&ran.note);
    (ran.outcome, text)
}

/// What a program run by [`run_argv`] did.
#[derive(Debug)]
pub struct Ran {
    /// Its exit, a kill by timeout, or a failure to run it.
    pub outcome: Outcome,
    /// Its stdout, cut at [`MAX_CAPTURE`] bytes.
    pub stdout: Vec<u8>,
    /// Its stderr, cut the same way.
    pub stderr: Vec<u8>,
    /// What the agent has to say about the run (a signal, a timeout, why
    /// it could not start), empty when it ran and exited.
    pub note: String,
}

/// Runs `argv` in its own process group, without a shell, and kills the
/// group after `timeout`; stdout and stderr kept apart.
pub async fn run_argv(argv: &[String], timeout: Duration, env: &[(String, String)]) -> Ran {
    let failed = |note: String| Ran {
        outcome: Outcome::Failed,
        stdout: Vec::new(),
        stderr: Vec::new(),
        note,
    };
    let Some((program, args)) = argv.split_first() else {
        return failed("empty command".to_owned());
    };
    // Said plainly before spawning (some systems, qemu-user among them,
    // report a failed exec only as exit code 127 of the child).
    if let Err(reason) = find_program(program) {
        return failed(reason);
    }
    let mut command = std::process::Command::new(program);
    command
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .process_group(0);
    // async-process tracks the pipes itself: set them on its command.
    let mut command = smol::process::Command::from(command);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => return failed(format!("cannot start {program}: {error}")),
    };
    let pid = child.id();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    // Both pipes at once: a child filling one while we wait on the other
    // would block forever.
    let outputs = future::zip(
        async {
            match stdout {
                Some(pipe) => capture(pipe).await,
                None => Vec::new(),
            }
        },
        async {
            match stderr {
                Some(pipe) => capture(pipe).await,
                None => Vec::new(),
            }
        },
    );
    let work = async {
        let ((out, err), status) = future::zip(outputs, child.status()).await;
        Some((out, err, status))
    };
    let deadline = async {
        smol::Timer::after(timeout).await;
        None
    };
    match future::or(work, deadline).await {
        Some((stdout, stderr, status)) => {
            let mut note = String::new();
            let outcome = match status {
                Ok(status) => match status.code() {
                    Some(code) => Outcome::Exited(code),
                    None => {
                        // The wire has no variant for it; the output says.
                        use std::os::unix::process::ExitStatusExt;
                        if let Some(signal) = status.signal() {
                            note = format!("{program} was killed by signal {signal}\n");
                        }
                        Outcome::Failed
                    }
                },
                Err(error) => {
                    note = format!("cannot wait for {program}: {error}");
                    Outcome::Failed
                }
            };
            Ran {
                outcome,
                stdout,
                stderr,
                note,
            }
        }
        None => {
            kill_group(pid);
            // Reap it so no zombie is left.
            let _ = child.status().await;
            Ran {
                outcome: Outcome::TimedOut,
                stdout: Vec::new(),
                stderr: Vec::new(),
                note: format!(
                    "{program} ran longer than {}; its process group was killed",
                    shoal_config::format_duration(timeout)
                ),
            }
        }
    }
}

/// The file a command's `program` runs, as `exec` finds it: a path with a
/// `/` as it is, a bare name in the first directory of `$PATH` (without
/// `$PATH`, `/bin:/usr/bin`) that holds it executable. `Err` says why it
/// cannot start, in the words a failed run and `shoal check` use.
pub fn find_program(program: &str) -> Result<std::path::PathBuf, String> {
    let no_such =
        || format!("cannot start {program}: no such program (a full path, or a name on $PATH)");
    let not_executable = || {
        format!("cannot start {program}: not executable by this user (chmod +x, or fix the path)")
    };
    if program.is_empty() {
        return Err("empty command".to_owned());
    }
    if program.contains('/') {
        let path = std::path::Path::new(program);
        return match std::fs::metadata(path) {
            Ok(metadata) if metadata.is_file() && is_executable(path) => Ok(path.to_owned()),
            Ok(metadata) if metadata.is_file() => Err(not_executable()),
            Ok(_) => Err(format!("cannot start {program}: not a file")),
            Err(_) => Err(no_such()),
        };
    }
    let search = std::env::var_os("PATH").unwrap_or_else(|| "/bin:/usr/bin".into());
    let mut found_unexecutable = false;
    for dir in std::env::split_paths(&search) {
        let path = dir.join(program);
        if path.is_file() {
            if is_executable(&path) {
                return Ok(path);
            }
            found_unexecutable = true;
        }
    }
    Err(if found_unexecutable {
        not_executable()
    } else {
        no_such()
    })
}

/// Whether this process may execute `path` (as the kernel decides: its
/// mode bits, owner and groups; root needs one `x` bit).
fn is_executable(path: &std::path::Path) -> bool {
    rustix::fs::access(path, rustix::fs::Access::EXEC_OK).is_ok()
}

/// Reads a pipe to its end, keeping the first [`MAX_CAPTURE`] bytes.
async fn capture(mut pipe: impl futures_lite::AsyncRead + Unpin) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = MAX_CAPTURE.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

fn kill_group(pid: u32) {
    let group = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw);
    if let Some(group) = group {
        if let Err(error) =
            rustix::process::kill_process_group(group, rustix::process::Signal::KILL)
        {
            log::warn!("cannot kill process group {pid}: {error}");
        }
    }
}

/// The part of an output that travels back in a command result.
pub fn summary(output: &str) -> &str {
    shoal_core::command::cut(output, wire::MAX_OUTPUT)
}

#[cfg(test)]
mod tests;
