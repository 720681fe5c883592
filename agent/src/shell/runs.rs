//! Executor runs: starting them for commands and rule actions, finishing
//! them (the command's answer, the run record, a published point), and the
//! `exec` requests of this node's API awaiting their answers.
//!
//! ```text
//! Event::CommandRequested / Event::RuleAction --> Runs::start --> task: Executors::run
//! task ends --Completed--> Runs::finish --> Node::complete_command, record, SSE "run"
//! Event::CommandFinished --> the waiting exec's HTTP answer
//! ```

use super::api::{self, Answer};
use super::events::EventFeed;
use super::executor::{self, Caller, Executors};
use serde_json::{json, Value};
use shoal_core::time::Instant;
use shoal_core::wire::{self, NodeId, Outcome};
use shoal_core::{Event, Node, Reading};
use smol::channel::{Receiver, Sender};
use smol::LocalExecutor;
use std::collections::{BTreeMap, VecDeque};

/// Executor runs kept for `GET /api/rules`.
const MAX_RUN_RECORDS: usize = 64;

/// One executor run that ended, for `GET /api/rules` and `/api/events`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    /// When it ended, ms since the Unix epoch.
    pub at_ms: u64,
    /// The executor.
    pub executor: String,
    /// Who asked: a rule, a node, this node.
    pub caller: String,
    /// How it ended, as people and Prometheus read it ([`Outcome`]'s
    /// `Display`: `exit 0`, `timed out`).
    pub outcome: String,
    /// How long it ran.
    pub duration_ms: u64,
}

impl RunRecord {
    /// The record of a run of `executor` for `caller` that ended at `at_ms`.
    pub fn ended(
        at_ms: u64,
        executor: String,
        caller: String,
        finished: &executor::Finished,
    ) -> RunRecord {
        RunRecord {
            at_ms,
            executor,
            caller,
            outcome: finished.outcome.to_string(),
            duration_ms: u64::try_from(finished.duration.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// The record as JSON: one shape for `/api/rules` and the `run` event.
    pub fn json(&self) -> Value {
        json!({
            "at_ms": self.at_ms,
            "executor": self.executor,
            "caller": self.caller,
            "outcome": self.outcome,
            "duration_ms": self.duration_ms,
        })
    }
}

/// An executor run that finished, for the loop to hand to [`Runs::finish`].
#[derive(Debug)]
pub struct Completed {
    /// The command it answers; `None` for a rule's action.
    request: Option<(NodeId, u32)>,
    /// Who asked, for the log.
    caller: String,
    executor: String,
    finished: executor::Finished,
}

impl Completed {
    /// The executor's name and its outcome in words (`exit 0`, `timed out`).
    pub fn summary(&self) -> (String, String) {
        (self.executor.clone(), self.finished.outcome.to_string())
    }

    /// The actuator it drove and whether that is on now, if known.
    pub fn switched(&self) -> Option<(String, bool)> {
        self.finished.switched.clone()
    }
}

/// An `exec` from the API awaiting its answer.
#[derive(Debug)]
struct PendingExec {
    reply: Sender<Answer>,
    node: String,
    executor: String,
}

/// Executors, the runs under way, their records, and the waiting `exec`s.
#[derive(Debug)]
pub struct Runs {
    executors: Executors,
    done_tx: Sender<Completed>,
    done: Receiver<Completed>,
    /// `exec` requests by the core's request number.
    pending: BTreeMap<u32, PendingExec>,
    records: VecDeque<RunRecord>,
}

impl Runs {
    /// No runs yet.
    pub fn new(executors: Executors) -> Runs {
        let (done_tx, done) = smol::channel::unbounded();
        Runs {
            executors,
            done_tx,
            done,
            pending: BTreeMap::new(),
            records: VecDeque::new(),
        }
    }

    /// The next run that finished.
    pub async fn next_finished(&self) -> Completed {
        match self.done.recv().await {
            Ok(completed) => completed,
            // Never: this owns a sender.
            Err(_) => futures_lite::future::pending().await,
        }
    }

    /// The executors, for a configuration reload.
    pub fn executors_mut(&mut self) -> &mut Executors {
        &mut self.executors
    }

    /// The last runs, oldest first.
    pub fn records(&self) -> &VecDeque<RunRecord> {
        &self.records
    }

    /// Command `id` of this node's API waits for its answer on `reply`.
    pub fn wait_for(&mut self, id: u32, reply: Sender<Answer>, node: String, executor: String) {
        self.pending.insert(
            id,
            PendingExec {
                reply,
                node,
                executor,
            },
        );
    }

    /// Acts on an event the loop handed over: runs what a command or a rule
    /// asks for, or answers the `exec` a finished command belongs to.
    pub fn on_event(
        &mut self,
        ex: &LocalExecutor<'_>,
        node: &mut Node,
        now: Instant,
        event: Event,
    ) {
        match event {
            Event::CommandRequested {
                origin,
                id,
                executor: name,
                local,
            } => {
                // Trust comes from how it arrived, never from the origin the
                // command names: from the wire it is not local.
                let caller = Caller {
                    node: super::answers::name_or_id(node, origin),
                    local,
                    inputs: String::new(),
                };
                if let Err(outcome) = self.executors.check(&name, &caller) {
                    log::info!("refused executor {name} for {}: {outcome}", caller.node);
                    node.complete_command(now, origin, id, outcome, "");
                    return;
                }
                self.start(ex, name.to_string(), caller, Some((origin, id)));
            }
            Event::RuleAction {
                rule,
                executor: name,
                cause,
                inputs,
            } => {
                log::info!(
                    "rule {rule} ({}): runs {name}; inputs: {inputs}",
                    cause.as_str()
                );
                let caller = Caller {
                    node: format!("rule {rule} ({})", cause.as_str()),
                    local: true,
                    inputs,
                };
                if let Err(outcome) = self.executors.check(&name, &caller) {
                    log::warn!("rule {rule}: executor {name} refused: {outcome}");
                    return;
                }
                self.start(ex, name, caller, None);
            }
            Event::CommandFinished {
                id,
                target,
                outcome,
                output,
            } => {
                let Some(waiting) = self.pending.remove(&id) else {
                    return;
                };
                let target = super::answers::name_or_id(node, target);
                let answer = exec_answer(&waiting, &target, outcome, output);
                let _ = waiting.reply.try_send(answer);
            }
            _ => {}
        }
    }

    /// Runs executor `name` on a task; its end comes back through
    /// [`Runs::next_finished`].
    fn start(
        &self,
        ex: &LocalExecutor<'_>,
        name: String,
        caller: Caller,
        request: Option<(NodeId, u32)>,
    ) {
        let executors = self.executors.clone();
        let done_tx = self.done_tx.clone();
        ex.spawn(async move {
            let finished = executors.run(&name, &caller).await;
            let _ = done_tx
                .send(Completed {
                    request,
                    caller: caller.node,
                    executor: name,
                    finished,
                })
                .await;
        })
        .detach();
    }

    /// A run ended: logs it, records it (also as a `run` event), publishes
    /// its point and answers its command.
    pub fn finish(
        &mut self,
        node: &mut Node,
        now: Instant,
        completed: Completed,
        feed: &mut EventFeed,
    ) {
        let Completed {
            request,
            caller,
            executor,
            finished,
        } = completed;
        log_run(&executor, &caller, &finished);
        let record = RunRecord::ended(super::unix_ms(), executor, caller, &finished);
        feed.run_ended(&record);
        if self.records.len() >= MAX_RUN_RECORDS {
            self.records.pop_front();
        }
        self.records.push_back(record);
        if let Some((point, value)) = &finished.publish {
            publish_own(node, now, point, wire::Value::Float(*value));
        }
        if let Some((origin, id)) = request {
            let summary = executor::summary(&finished.output);
            node.complete_command(now, origin, id, finished.outcome, summary);
        }
    }
}

/// Publishes `value` as this node's point `point` (a `publish` executor,
/// and the MQTT bridge's own points); a bad name or a refusal is logged.
pub fn publish_own(node: &mut Node, now: Instant, point: &str, value: wire::Value) {
    let Some(name) = wire::name(point) else {
        log::warn!("publish: {point:?} is not a valid point name");
        return;
    };
    let reading = Reading {
        name,
        value,
        unit: wire::Unit::new(),
        ts_ms: super::unix_ms(),
    };
    if let Err(error) = node.handle_reading(now, reading) {
        log::warn!("publish {point}: refused: {error}");
    }
}

/// The HTTP answer to an exec: 200 when the executor ran (whatever its exit
/// code), an error status when it did not.
fn exec_answer(waiting: &PendingExec, target: &str, outcome: Outcome, output: String) -> Answer {
    use Outcome as O;
    let (node, executor) = (&waiting.node, &waiting.executor);
    let refusal = match outcome {
        O::Exited(_) | O::Failed | O::TimedOut => None,
        O::UnknownExecutor => Some((404, format!("{node} has no executor {executor}"))),
        O::NotRemote => Some((
            403,
            format!("executor {executor} on {node} is not marked remote = true"),
        )),
        O::Busy => Some((
            409,
            format!("executor {executor} on {node} is running already"),
        )),
        O::RateLimited => Some((
            429,
            format!("{target} refused: too many commands from this node"),
        )),
        O::NoRoute => Some((503, format!("{target} has no route to {node}"))),
        O::NoAnswer => Some((
            504,
            format!(
                "no answer from {node} within {}",
                shoal_config::format_duration(api::EXEC_WAIT)
            ),
        )),
    };
    if let Some((status, message)) = refusal {
        return Answer::error(status, message);
    }
    let (name, code) = match outcome {
        O::Exited(code) => ("exited", Some(code)),
        O::TimedOut => ("timed_out", None),
        _ => ("failed", None),
    };
    Answer {
        status: 200,
        body: json!({
            "node": node,
            "executor": executor,
            "outcome": name,
            "exit_code": code,
            "output": output,
        }),
    }
}

fn log_run(executor: &str, caller: &str, finished: &executor::Finished) {
    let took = shoal_config::format_duration(finished.duration);
    let outcome = finished.outcome;
    if outcome == Outcome::Exited(0) {
        log::info!("executor {executor} for {caller}: {outcome} after {took}");
    } else {
        log::warn!("executor {executor} for {caller}: {outcome} after {took}");
    }
    for line in finished.output.lines().take(20) {
        log::info!("executor {executor}: {line}");
    }
}
