//! `shoal run`: the agent on real sockets.
//!
//! One task owns the [`Node`]. It races the beacon socket, the sync socket,
//! the next deadline (core timers and sensor readings) and SIGTERM/SIGINT,
//! feeds the one input that won into the core, then drains every datagram
//! and event the core produced. No locks, no shared state.
//!
//! Sockets: the beacon socket listens on `0.0.0.0:port` with SO_REUSEADDR
//! and SO_REUSEPORT, so several agents on one host all receive each
//! broadcast; the sync socket is bound to `bind:sync_port` and sends
//! everything, beacons included, so a datagram's source address is always
//! its sender's unicast address.

use super::api::{self, Answer, ApiCall, ApiStats};
use super::executor::{self, Caller, Executors};
use super::sensors;
use super::state::{self, StateDir, StateError};
use async_signal::{Signal, Signals};
use futures_lite::{future, StreamExt};
use shoal_config::{Broadcast, Config};
use shoal_core::time::Instant;
use shoal_core::wire::{self, Name};
use shoal_core::{self as node, Destination, Event, Node, Reading, Via};
use smol::channel::Sender;
use smol::net::{TcpListener, UdpSocket};
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The state directory or the mesh key.
    #[error(transparent)]
    State(#[from] StateError),
    /// A socket could not be opened.
    #[error("cannot open the {what} socket on {addr}: {source}")]
    Socket {
        /// Which socket.
        what: &'static str,
        /// Its address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// Signal handling could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(io::Error),
    /// A setting the core refuses (validated earlier; kept for safety).
    #[error("invalid mesh settings: {0}")]
    Core(#[from] node::ConfigError),
    /// No usable node name.
    #[error("{0}")]
    Name(String),
    /// A socket failed while running.
    #[error("the {what} socket failed: {source}")]
    Io {
        /// Which socket.
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

/// Runs the agent until SIGTERM or SIGINT.
pub fn run(config: Config) -> Result<(), RunError> {
    let name = node_name(&config)?;
    for warning in &config.warnings {
        log::warn!(
            "configuration {}:{}: {}",
            warning.line,
            warning.col,
            warning.message
        );
    }
    let mut state_dir = StateDir::open(&config.state.dir)?;
    let (identity, found) = state_dir.next_identity()?;
    match found {
        state::Found::Valid => {}
        state::Found::Missing => log::info!(
            "new node: identity created in {}",
            state_dir.path().display()
        ),
        state::Found::Corrupt(reason) => log::warn!(
            "state file {}/identity was unreadable ({reason}); starting as a new node",
            state_dir.path().display()
        ),
    }
    let key = match &config.mesh.key_file {
        Some(path) => Some(state::read_key(path)?),
        None => {
            log::warn!("no mesh key configured: frames are neither encrypted nor authenticated");
            None
        }
    };
    let core_config = node::Config {
        mesh_id: state::mesh_id(key.as_ref()),
        key,
        beacon_interval: config.mesh.beacon_interval,
        suspect_after: config.mesh.suspect_after,
        unreachable_after: config.mesh.unreachable_after,
        prune_after: config.mesh.prune_after,
        max_nodes: config.limits.max_nodes,
        max_points_per_node: config.limits.max_points_per_node,
        history_per_point: config.limits.history_per_point,
        ..node::Config::default()
    };
    let seed = state::random_u64()?;
    let started = std::time::Instant::now();
    let mut node = Node::new(
        node::Identity {
            id: identity.id,
            name: name.clone(),
            incarnation: identity.incarnation,
        },
        core_config,
        seed,
        Instant::ZERO,
    )?;
    node.set_wall_clock(Instant::ZERO, unix_ms());
    let (rules, computes) = rules_of(&config);
    if !rules.is_empty() || !computes.is_empty() {
        log::info!(
            "{} rules, {} derived points",
            config.rules.len(),
            computes.len()
        );
    }
    node.set_rules(rules, computes);
    let mut known = Known::load(&state_dir);
    let mut static_peers = resolve_peers(&config.mesh.peers);
    static_peers.extend(known.peers.keys().copied());
    node.set_static_peers(static_peers);
    restore_points(&mut node, &state_dir);
    let mut samplers = sensors::samplers(&config.sensors, Instant::ZERO);
    let mut actuators = std::collections::BTreeMap::new();
    for section in &config.actuators {
        match sensors::actuator(section) {
            Ok(device) => {
                actuators.insert(section.name.clone(), device);
            }
            Err(reason) => log::warn!(
                "actuator {} ({}): {reason}; executors using it will fail",
                section.name,
                section.driver
            ),
        }
    }
    let executors = Executors::new(&config.executors, &name).with_actuators(actuators);
    let token = match state::read_or_create_token(&config.api.token_file) {
        Ok((token, created)) => {
            if created {
                log::info!(
                    "created the API token in {} (needed for writes and exec)",
                    config.api.token_file.display()
                );
            }
            Some(token)
        }
        Err(error) => {
            log::warn!("{error}: writes and exec through the API are refused");
            None
        }
    };
    log::info!(
        "node {name} ({}) incarnation {} starting: beacons on port {}, sync on {}:{}, {} sensors",
        identity.id,
        identity.incarnation,
        config.mesh.port,
        config.mesh.bind,
        config.mesh.sync_port,
        samplers.len()
    );
    let ex = smol::LocalExecutor::new();
    smol::block_on(ex.run(async {
        let api_listener = TcpListener::bind(config.api.listen)
            .await
            .map_err(|source| RunError::Socket {
                what: "api",
                addr: config.api.listen,
                source,
            })?;
        let (calls_tx, calls) = smol::channel::bounded::<ApiCall>(64);
        let api_stats = Rc::new(ApiStats::default());
        let subscribers: api::Subscribers = Rc::default();
        let sse = Sse {
            subscribers: Rc::clone(&subscribers),
            stats: Rc::clone(&api_stats),
            counters: std::cell::RefCell::default(),
        };
        ex.spawn(api::serve(
            api_listener,
            calls_tx,
            token,
            Rc::clone(&api_stats),
            subscribers,
        ))
        .detach();
        log::info!("API on http://{}", config.api.listen);
        let (done_tx, done) = smol::channel::unbounded::<Completed>();
        let (reads_tx, reads) = smol::channel::unbounded::<SensorRead>();
        let mut pending: BTreeMap<u32, PendingExec> = BTreeMap::new();
        let mut runs: std::collections::VecDeque<api::RunRecord> =
            std::collections::VecDeque::new();
        let beacon_addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, config.mesh.port));
        let beacon = udp_socket(beacon_addr, true).map_err(|source| RunError::Socket {
            what: "beacon",
            addr: beacon_addr,
            source,
        })?;
        let sync_addr = SocketAddr::new(config.mesh.bind, config.mesh.sync_port);
        let sync = udp_socket(sync_addr, false).map_err(|source| RunError::Socket {
            what: "sync",
            addr: sync_addr,
            source,
        })?;
        let broadcasts = broadcast_addresses(&config.mesh.broadcast, config.mesh.port);
        if broadcasts.is_empty() {
            log::warn!("no broadcast address: only static peers will hear this node");
        }
        let mut signals = Signals::new([Signal::Term, Signal::Int]).map_err(RunError::Signals)?;
        let mut beacon_buf = [0u8; 2048];
        let mut sync_buf = [0u8; 2048];
        let mut notifier = super::notify::Notifier::from_env();
        notifier.ready(&format!("serving as {name}"));
        loop {
            // Pinged from here only: a wedged loop stops the pings.
            notifier.tick();
            let now = elapsed(started);
            let sensor_due = samplers.iter().filter_map(|s| s.deadline()).min();
            let ping_due = notifier
                .next_ping()
                .map(|d| now + d.max(Duration::from_millis(10)));
            let wake = [node.poll_timeout(), sensor_due, ping_due]
                .into_iter()
                .flatten()
                .min();
            let timer = async {
                match wake {
                    Some(at) => {
                        let delay =
                            Duration::from_millis(at.as_millis().saturating_sub(now.as_millis()));
                        smol::Timer::after(delay).await;
                    }
                    None => future::pending::<()>().await,
                }
                Input::Timer
            };
            let from_beacon = async {
                match beacon.recv_from(&mut beacon_buf).await {
                    Ok((len, from)) => Input::Datagram(Via::Broadcast, len, from),
                    Err(error) => Input::Failed("beacon", error),
                }
            };
            let from_sync = async {
                match sync.recv_from(&mut sync_buf).await {
                    Ok((len, from)) => Input::Datagram(Via::Unicast, len, from),
                    Err(error) => Input::Failed("sync", error),
                }
            };
            let signal = async {
                match signals.next().await {
                    Some(_) => Input::Stop,
                    None => future::pending().await,
                }
            };
            let call = async {
                match calls.recv().await {
                    Ok(call) => Input::Call(call),
                    Err(_) => future::pending().await,
                }
            };
            let completed = async {
                match done.recv().await {
                    Ok(completed) => Input::Completed(completed),
                    Err(_) => future::pending().await,
                }
            };
            let read = async {
                match reads.recv().await {
                    Ok(read) => Input::Read(read),
                    Err(_) => future::pending().await,
                }
            };
            let input = future::or(
                future::or(from_beacon, from_sync),
                future::or(
                    future::or(timer, signal),
                    future::or(call, future::or(completed, read)),
                ),
            )
            .await;
            let now = elapsed(started);
            match input {
                Input::Datagram(via, len, from) => {
                    let buf = if via == Via::Broadcast {
                        &beacon_buf
                    } else {
                        &sync_buf
                    };
                    node.handle_datagram(now, from, via, &buf[..len]);
                }
                Input::Timer => {
                    node.handle_timeout(now);
                    start_reads(&ex, &mut node, &mut samplers, now, &reads_tx);
                }
                Input::Read((index, device, result)) => {
                    if let Some(sampler) = samplers.get_mut(index) {
                        let readings = sampler.finish(now, device, result);
                        publish(&mut node, now, &sampler.name, readings);
                    }
                    start_reads(&ex, &mut node, &mut samplers, now, &reads_tx);
                }
                Input::Call(call) => {
                    let counters = sse.counters.borrow();
                    let context = CallContext {
                        runs: &runs,
                        uptime: started.elapsed(),
                        api_stats: &api_stats,
                        counters: &counters,
                    };
                    answer_call(&mut node, now, call, &mut pending, &context);
                }
                Input::Completed(completed) => {
                    log_run(&completed.executor, &completed.caller, &completed.finished);
                    if runs.len() >= MAX_RUN_RECORDS {
                        runs.pop_front();
                    }
                    *sse.counters
                        .borrow_mut()
                        .executor_runs
                        .entry((
                            completed.executor.clone(),
                            format!("{:?}", completed.finished.outcome),
                        ))
                        .or_insert(0) += 1;
                    sse.send(
                        "run",
                        &serde_json::json!({
                            "executor": completed.executor,
                            "caller": completed.caller,
                            "outcome": format!("{:?}", completed.finished.outcome),
                            "duration_ms": u64::try_from(completed.finished.duration.as_millis()).unwrap_or(u64::MAX),
                        }),
                    );
                    runs.push_back(api::RunRecord {
                        at_ms: unix_ms(),
                        executor: completed.executor.clone(),
                        caller: completed.caller.clone(),
                        outcome: format!("{:?}", completed.finished.outcome),
                        duration_ms: u64::try_from(completed.finished.duration.as_millis())
                            .unwrap_or(u64::MAX),
                    });
                    if let Some((point, value)) = &completed.finished.publish {
                        publish_value(&mut node, now, point, *value);
                    }
                    if let Some((origin, id)) = completed.request {
                        node.complete_command(
                            now,
                            origin,
                            id,
                            completed.finished.outcome,
                            executor::summary(&completed.finished.output),
                        );
                    }
                }
                Input::Stop => {
                    notifier.stopping();
                    log::info!("stopping: saying goodbye to the mesh");
                    node.handle_leave(now);
                    let _ = flush(&mut node, &sync, &broadcasts, &mut known, &sse).await;
                    known.save(&node, &mut state_dir);
                    log_stats(&node);
                    log::info!("stopped ({} state writes this run)", state_dir.writes());
                    return Ok(());
                }
                Input::Failed(what, source) => {
                    // Transient errors (ICMP unreachable reported on a UDP
                    // socket) are normal; anything else ends the agent.
                    if is_transient(&source) {
                        log::debug!("{what} socket: {source}");
                    } else {
                        return Err(RunError::Io { what, source });
                    }
                }
            }
            // Command events may produce more datagrams: bounded rounds.
            for _ in 0..4 {
                let commands = flush(&mut node, &sync, &broadcasts, &mut known, &sse).await;
                if commands.is_empty() {
                    break;
                }
                let now = elapsed(started);
                for event in commands {
                    on_command_event(
                        &ex,
                        &mut node,
                        now,
                        event,
                        &executors,
                        &done_tx,
                        &mut pending,
                    );
                }
            }
            known.maybe_save(&node, &mut state_dir);
        }
    }))
}

/// A sensor read that returned: the sampler's index, its device back, and
/// what it read.
type SensorRead = (
    usize,
    Box<dyn shoal_hal::Sensor>,
    Result<Vec<shoal_hal::Sample>, shoal_hal::HalError>,
);

/// Starts a read of every due sensor on a blocking thread, and turns reads
/// stuck past their timeout into errors.
fn start_reads(
    ex: &smol::LocalExecutor<'_>,
    node: &mut Node,
    samplers: &mut [sensors::Sampler],
    now: Instant,
    reads: &Sender<SensorRead>,
) {
    for (index, sampler) in samplers.iter_mut().enumerate() {
        let stuck = sampler.check_timeout(now);
        publish(node, now, &sampler.name, stuck);
        if !sampler.is_due(now) {
            continue;
        }
        let Some(mut device) = sampler.start(now) else {
            continue;
        };
        let reads = reads.clone();
        ex.spawn(async move {
            let (device, result) = smol::unblock(move || {
                let result = device.read();
                (device, result)
            })
            .await;
            let _ = reads.send((index, device, result)).await;
        })
        .detach();
    }
}

/// Executor runs kept for `GET /api/rules`.
const MAX_RUN_RECORDS: usize = 64;

/// A `publish` executor's point.
fn publish_value(node: &mut Node, now: Instant, point: &str, value: f64) {
    let Some(name) = wire::name(point) else {
        log::warn!("publish: {point:?} is not a valid point name");
        return;
    };
    let reading = Reading {
        name,
        value: wire::Value::Float(value),
        unit: wire::Unit::new(),
        ts_ms: unix_ms(),
    };
    if let Err(error) = node.handle_reading(now, reading) {
        log::warn!("publish {point}: refused: {error}");
    }
}

fn publish(node: &mut Node, now: Instant, sensor: &str, readings: Vec<Reading>) {
    for reading in readings {
        let name = reading.name.clone();
        if let Err(error) = node.handle_reading(now, reading) {
            log::warn!("sensor {sensor}: point {name} refused: {error}");
        }
    }
}

/// An executor run finished, for the loop to answer.
struct Completed {
    /// The command it answers; `None` for a rule's action.
    request: Option<(wire::NodeId, u32)>,
    /// Who asked, for the log.
    caller: String,
    executor: String,
    finished: executor::Finished,
}

/// An `exec` from the API awaiting its answer.
struct PendingExec {
    reply: Sender<Answer>,
    node: String,
    executor: String,
}

/// What the loop holds besides the node, for answering API calls.
struct CallContext<'a> {
    runs: &'a std::collections::VecDeque<api::RunRecord>,
    uptime: Duration,
    api_stats: &'a ApiStats,
    counters: &'a super::metrics::Counters,
}

/// Answers an API call from the core's state.
fn answer_call(
    node: &mut Node,
    now: Instant,
    call: ApiCall,
    pending: &mut BTreeMap<u32, PendingExec>,
    context: &CallContext<'_>,
) {
    match call {
        ApiCall::Status(reply) => {
            let _ = reply.try_send(api::status(node, now));
        }
        ApiCall::Peers { healthy, reply } => {
            let _ = reply.try_send(api::peers(node, now, healthy));
        }
        ApiCall::Rules(reply) => {
            let _ = reply.try_send(api::rules(node, now, context.runs));
        }
        ApiCall::Metrics(reply) => {
            let _ = reply.try_send(super::metrics::render(
                node,
                now,
                context.counters,
                context.api_stats.requests.get(),
                context.api_stats.unauthorized.get(),
            ));
        }
        ApiCall::Stats(reply) => {
            let _ = reply.try_send(api::stats(node, context.uptime, context.api_stats));
        }
        ApiCall::Points {
            glob,
            history,
            reply,
        } => {
            let _ = reply.try_send(api::points(node, unix_ms(), &glob, history));
        }
        ApiCall::Point {
            node: origin_name,
            name,
            reply,
        } => {
            let answer = node
                .store()
                .origins()
                .values()
                .find(|o| o.name.as_str() == origin_name)
                .and_then(|o| o.points.get(name.as_str()).map(|p| (o, p)))
                .map_or_else(
                    || Answer::error(404, format!("no point {origin_name}/{name} in this mesh")),
                    |(origin, point)| Answer {
                        status: 200,
                        body: api::point_json(&origin.name, &name, point, unix_ms(), true),
                    },
                );
            let _ = reply.try_send(answer);
        }
        ApiCall::Ingest { readings, reply } => {
            let mut accepted = 0;
            let mut refused = Vec::new();
            for (name, value, unit) in readings {
                let (Some(point), Some(unit)) = (wire::name(&name), wire::unit(&unit)) else {
                    refused.push(format!("{name}: invalid"));
                    continue;
                };
                let reading = Reading {
                    name: point,
                    value: wire::Value::Float(value),
                    unit,
                    ts_ms: unix_ms(),
                };
                match node.handle_reading(now, reading) {
                    Ok(()) => accepted += 1,
                    Err(error) => refused.push(format!("{name}: {error}")),
                }
            }
            let answer = if refused.is_empty() {
                Answer {
                    status: 200,
                    body: serde_json::json!({ "accepted": accepted }),
                }
            } else {
                Answer::error(
                    422,
                    format!("accepted {accepted}; refused: {}", refused.join("; ")),
                )
            };
            let _ = reply.try_send(answer);
        }
        ApiCall::Exec {
            node: target_name,
            executor,
            reply,
        } => {
            let Some(executor_name) = wire::name(&executor) else {
                let _ = reply.try_send(Answer::error(
                    400,
                    format!("{executor:?} is not a valid executor name"),
                ));
                return;
            };
            let Some(target) = node.find_node(&target_name) else {
                let _ = reply.try_send(Answer::error(404, format!("unknown node {target_name:?}: not in this mesh (shoal status lists the nodes)")));
                return;
            };
            match node.exec(now, target, executor_name, api::EXEC_WAIT) {
                Ok(id) => {
                    log::info!("exec {executor} on {target_name} (request {id})");
                    pending.insert(
                        id,
                        PendingExec {
                            reply,
                            node: target_name,
                            executor,
                        },
                    );
                }
                Err(error) => {
                    let status = match error {
                        node::command::ExecError::UnknownNode => 404,
                        node::command::ExecError::TooManyPending => 429,
                        node::command::ExecError::Unreachable
                        | node::command::ExecError::Leaving => 503,
                    };
                    let _ = reply.try_send(Answer::error(
                        status,
                        format!("cannot run {executor} on {target_name}: {error}"),
                    ));
                }
            }
        }
    }
}

/// Runs what a command asks for, or hands a finished command to its asker.
fn on_command_event(
    ex: &smol::LocalExecutor<'_>,
    node: &mut Node,
    now: Instant,
    event: Event,
    executors: &Executors,
    done_tx: &Sender<Completed>,
    pending: &mut BTreeMap<u32, PendingExec>,
) {
    match event {
        Event::CommandRequested {
            origin,
            id,
            executor: name,
        } => {
            let caller = Caller {
                node: api::label(node, origin),
                local: origin == node.id(),
                inputs: String::new(),
            };
            if let Err(outcome) = executors.check(&name, &caller) {
                log::info!("refused executor {name} for {}: {outcome:?}", caller.node);
                node.complete_command(now, origin, id, outcome, "");
                return;
            }
            spawn_run(
                ex,
                executors,
                done_tx,
                name.to_string(),
                caller,
                Some((origin, id)),
            );
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
            if let Err(outcome) = executors.check(&name, &caller) {
                log::warn!("rule {rule}: executor {name} refused: {outcome:?}");
                return;
            }
            spawn_run(ex, executors, done_tx, name, caller, None);
        }
        Event::CommandFinished {
            id,
            target,
            outcome,
            output,
        } => {
            let Some(waiting) = pending.remove(&id) else {
                return;
            };
            let answer = exec_answer(&waiting, &api::label(node, target), outcome, output);
            let _ = waiting.reply.try_send(answer);
        }
        _ => {}
    }
}

/// Runs executor `name` on a task; its end comes back through `done_tx`.
fn spawn_run(
    ex: &smol::LocalExecutor<'_>,
    executors: &Executors,
    done_tx: &Sender<Completed>,
    name: String,
    caller: Caller,
    request: Option<(wire::NodeId, u32)>,
) {
    let executors = executors.clone();
    let done_tx = done_tx.clone();
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

/// The HTTP answer to an exec: 200 when the executor ran (whatever its exit
/// code), an error status when it did not.
fn exec_answer(
    waiting: &PendingExec,
    target: &str,
    outcome: wire::Outcome,
    output: String,
) -> Answer {
    use wire::Outcome as O;
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
        body: serde_json::json!({
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
    match finished.outcome {
        wire::Outcome::Exited(0) => {
            log::info!("executor {executor} for {caller}: exited 0 after {took}")
        }
        outcome => log::warn!("executor {executor} for {caller}: {outcome:?} after {took}"),
    }
    for line in finished.output.lines().take(20) {
        log::info!("executor {executor}: {line}");
    }
}

/// Remembered neighbors, written to the state directory rarely (SD cards
/// wear out): at most once a minute when the set of neighbors changed,
/// otherwise every ten minutes, and at shutdown.
struct Known {
    peers: std::collections::BTreeMap<SocketAddr, state::KnownPeer>,
    /// Successes stored before this run, per address.
    base: std::collections::BTreeMap<SocketAddr, u64>,
    changed: bool,
    last_save: std::time::Instant,
    last_points_save: std::time::Instant,
}

/// Known peers not heard for this long are forgotten.
const KNOWN_PEER_TTL: Duration = Duration::from_secs(3600);
const SAVE_CHANGES_EVERY: Duration = Duration::from_secs(60);
const SAVE_ANYWAY_EVERY: Duration = Duration::from_secs(600);

impl Known {
    fn load(state_dir: &StateDir) -> Known {
        let (list, found) = state_dir.load_peers();
        if let state::Found::Corrupt(reason) = found {
            log::warn!(
                "state file {}/peers was unreadable ({reason}); it will be rewritten",
                state_dir.path().display()
            );
        }
        let now = unix_seconds();
        let peers: std::collections::BTreeMap<SocketAddr, state::KnownPeer> = list
            .into_iter()
            .filter(|p| now.saturating_sub(p.last_seen) < KNOWN_PEER_TTL.as_secs())
            .map(|p| (p.addr, p))
            .collect();
        if !peers.is_empty() {
            log::info!("knocking on {} remembered peers", peers.len());
        }
        Known {
            base: peers.iter().map(|(a, p)| (*a, p.successes)).collect(),
            peers,
            changed: false,
            last_save: std::time::Instant::now(),
            last_points_save: std::time::Instant::now(),
        }
    }

    fn note_failure(&mut self, addr: SocketAddr) {
        if let Some(peer) = self.peers.get_mut(&addr) {
            peer.failures += 1;
            self.changed = true;
        }
    }

    /// Copies the healthy neighbors in; marks a change when a new one appears.
    fn update(&mut self, node: &Node) {
        let now = unix_seconds();
        for peer in node.peers().iter() {
            if peer.state != shoal_core::peers::PeerState::Healthy {
                continue;
            }
            let base = self.base.get(&peer.addr).copied().unwrap_or(0);
            let name = peer
                .name
                .as_ref()
                .map_or_else(|| peer.id.to_string(), |n| n.to_string());
            let entry = self.peers.entry(peer.addr).or_insert_with(|| {
                self.changed = true;
                state::KnownPeer {
                    addr: peer.addr,
                    name: name.clone(),
                    last_seen: now,
                    successes: 0,
                    failures: 0,
                }
            });
            entry.name = name;
            entry.last_seen = now;
            entry.successes = base + peer.frames_in;
        }
        self.peers
            .retain(|_, p| now.saturating_sub(p.last_seen) < KNOWN_PEER_TTL.as_secs());
    }

    fn maybe_save(&mut self, node: &Node, state_dir: &mut StateDir) {
        let since = self.last_save.elapsed();
        if since < SAVE_CHANGES_EVERY {
            return;
        }
        let new_neighbor = node.peers().iter().any(|p| {
            p.state == shoal_core::peers::PeerState::Healthy && !self.peers.contains_key(&p.addr)
        });
        if self.changed || new_neighbor || since >= SAVE_ANYWAY_EVERY {
            self.save(node, state_dir);
        }
    }

    fn save(&mut self, node: &Node, state_dir: &mut StateDir) {
        if self.last_points_save.elapsed() >= SAVE_ANYWAY_EVERY || node.is_leaving() {
            save_points(node, state_dir);
            self.last_points_save = std::time::Instant::now();
        }
        self.update(node);
        let list: Vec<state::KnownPeer> = self.peers.values().cloned().collect();
        match state_dir.save_peers(&list) {
            Ok(()) => log::debug!("saved {} known peers", list.len()),
            Err(error) => log::warn!("{error}"),
        }
        self.changed = false;
        self.last_save = std::time::Instant::now();
    }
}

/// Republishes the last values of this node's own points, saved by the
/// previous run, under the new incarnation.
fn restore_points(node: &mut Node, state_dir: &StateDir) {
    let (points, found) = state_dir.load_points();
    if let state::Found::Corrupt(reason) = found {
        log::warn!(
            "state file {}/points was unreadable ({reason}); it will be rewritten",
            state_dir.path().display()
        );
    }
    let mut restored = 0;
    for point in points {
        let (Some(name), Some(unit)) = (wire::name(&point.name), wire::unit(&point.unit)) else {
            continue;
        };
        let reading = Reading {
            name,
            value: point.value,
            unit,
            ts_ms: point.ts_ms,
        };
        if node.handle_reading(Instant::ZERO, reading).is_ok() {
            restored += 1;
        }
    }
    if restored > 0 {
        log::info!("restored the last values of {restored} own points");
    }
}

fn save_points(node: &Node, state_dir: &mut StateDir) {
    let Some(own) = node.store().origin(node.id()) else {
        return;
    };
    let points: Vec<state::SavedPoint> = own
        .points
        .iter()
        .map(|(name, point)| state::SavedPoint {
            name: name.to_string(),
            value: point.value.clone(),
            unit: point.unit.to_string(),
            ts_ms: point.ts_ms,
        })
        .collect();
    if let Err(error) = state_dir.save_points(&points) {
        log::warn!("{error}");
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The rules and derived points of the configuration, parsed (the file was
/// validated, so a parse error here is a bug: logged, and the rule skipped).
fn rules_of(config: &Config) -> (node::rules::Rules, Vec<node::rules::ComputeSpec>) {
    use shoal_config::expr::parse;
    let mut specs = Vec::new();
    for rule in &config.rules {
        let until = match rule.until.as_deref().map(parse).transpose() {
            Ok(until) => until,
            Err(error) => {
                log::error!("rule {}: until: {error}; rule skipped", rule.name);
                continue;
            }
        };
        match parse(&rule.when) {
            Ok(when) => specs.push(node::rules::RuleSpec {
                name: rule.name.clone(),
                when,
                until,
                hold_for: rule.hold_for,
                run: rule.run.clone(),
                otherwise: rule.otherwise.clone(),
                on_unknown: rule.on_unknown.clone(),
                stale_after: rule.stale_after,
            }),
            Err(error) => log::error!("rule {}: when: {error}; rule skipped", rule.name),
        }
    }
    let computes = config
        .computes
        .iter()
        .filter_map(|compute| match parse(&compute.expr) {
            Ok(expr) => Some(node::rules::ComputeSpec {
                name: compute.name.clone(),
                expr,
            }),
            Err(error) => {
                log::error!("compute {}: {error}; skipped", compute.name);
                None
            }
        })
        .collect();
    (node::rules::Rules::new(specs, Instant::ZERO), computes)
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One line of what the node did and refused, at shutdown.
fn log_stats(node: &Node) {
    let stats = node.stats();
    let dropped: Vec<String> = stats
        .dropped
        .iter()
        .filter(|(reason, _)| **reason != "from_self")
        .map(|(reason, count)| format!("{reason} {count}"))
        .collect();
    log::info!(
        "frames in {} out {}, bytes in {} out {}, dropped: {}",
        stats.frames_in,
        stats.frames_out,
        stats.bytes_in,
        stats.bytes_out,
        if dropped.is_empty() {
            "none".to_owned()
        } else {
            dropped.join(", ")
        }
    );
}

enum Input {
    Datagram(Via, usize, SocketAddr),
    Timer,
    Read(SensorRead),
    Call(ApiCall),
    Completed(Completed),
    Stop,
    Failed(&'static str, io::Error),
}

fn is_transient(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

fn elapsed(started: std::time::Instant) -> Instant {
    Instant::from_millis(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX))
}

/// Sends every queued datagram and logs every event; returns the command
/// events, for the caller to act on.
async fn flush(
    node: &mut Node,
    sync: &UdpSocket,
    broadcasts: &[SocketAddr],
    known: &mut Known,
    sse: &Sse,
) -> Vec<Event> {
    let mut commands = Vec::new();
    while let Some(transmit) = node.poll_transmit() {
        let targets: &[SocketAddr] = match &transmit.destination {
            Destination::Broadcast => broadcasts,
            Destination::Unicast(addr) => std::slice::from_ref(addr),
        };
        for target in targets {
            if let Err(error) = sync.send_to(&transmit.payload, target).await {
                log::debug!("send to {target} failed: {error}");
            }
        }
    }
    while let Some(event) = node.poll_event() {
        match event {
            Event::PeerDiscovered { peer, addr } => {
                log::info!("discovered node {} at {addr}", label(node, peer));
            }
            Event::PeerRestarted { peer, incarnation } => {
                log::info!(
                    "node {} restarted (incarnation {incarnation})",
                    label(node, peer)
                );
            }
            Event::PeerPruned { peer } => {
                log::info!("forgot node {peer}: gone longer than mesh.prune_after");
            }
            Event::RuleAction {
                ref rule,
                ref executor,
                cause,
                ref inputs,
            } => {
                *sse.counters
                    .borrow_mut()
                    .rule_actions
                    .entry(rule.clone())
                    .or_insert(0) += 1;
                sse.send(
                    "rule",
                    &serde_json::json!({
                        "rule": rule, "executor": executor, "state": cause.as_str(), "inputs": inputs,
                    }),
                );
                commands.push(event);
            }
            Event::CommandRequested { .. } | Event::CommandFinished { .. } => {
                commands.push(event);
            }
            Event::RouteChanged { node: dest, route } => {
                sse.send(
                    "route",
                    &serde_json::json!({
                        "node": api::label(node, dest),
                        "hops": route.map(|(_, hops)| hops),
                        "via": route.map(|(via, _)| api::label(node, via)),
                    }),
                );
                match route {
                    Some((via, hops)) => log::info!(
                        "route to {}: {hops} hops via {}",
                        label(node, dest),
                        label(node, via)
                    ),
                    None => log::info!("route to {}: none through others", label(node, dest)),
                }
            }
            Event::IncarnationChanged { incarnation } => {
                log::warn!("frame counter exhausted: now incarnation {incarnation}");
            }
            Event::PointChanged { origin, name } => {
                let store = node.store();
                if let (Some(owner), Some(point)) =
                    (store.origin(origin), store.point(origin, &name))
                {
                    if origin != node.id() {
                        let age_ms = unix_ms().saturating_sub(point.ts_ms);
                        sse.counters
                            .borrow_mut()
                            .observe_latency(age_ms as f64 / 1000.0);
                    }
                    sse.send(
                        "point",
                        &serde_json::json!({
                            "node": owner.name.as_str(),
                            "name": name.as_str(),
                            "value": api::value_json(&point.value),
                            "unit": point.unit.as_str(),
                            "ts_ms": point.ts_ms,
                        }),
                    );
                }
                if log::log_enabled!(log::Level::Debug) {
                    let store = node.store();
                    if let (Some(owner), Some(point)) =
                        (store.origin(origin), store.point(origin, &name))
                    {
                        log::debug!(
                            "point {}/{name} = {}{}",
                            owner.name,
                            point.value,
                            point.unit
                        );
                    }
                }
            }
            // State changes are logged by the core; failures are remembered.
            Event::PeerStateChanged { peer, from, to, .. } => {
                sse.send(
                    "node",
                    &serde_json::json!({
                        "node": api::label(node, peer), "from": from.as_str(), "to": to.as_str(),
                    }),
                );
                if to == shoal_core::peers::PeerState::Unreachable {
                    if let Some(addr) = node.peers().get(peer).map(|p| p.addr) {
                        known.note_failure(addr);
                    }
                }
            }
        }
    }
    commands
}

/// The open `/api/events` streams, and the counters `/metrics` shows.
struct Sse {
    subscribers: api::Subscribers,
    stats: Rc<ApiStats>,
    counters: std::cell::RefCell<super::metrics::Counters>,
}

impl Sse {
    fn send(&self, event: &str, data: &serde_json::Value) {
        api::broadcast(&self.subscribers, &self.stats, event, data);
    }
}

/// "name (id)" once the name is known, else the id.
fn label(node: &Node, peer: wire::NodeId) -> String {
    match node.node_name(peer) {
        Some(name) => format!("{name} ({peer})"),
        None => peer.to_string(),
    }
}

fn udp_socket(addr: SocketAddr, shared: bool) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_broadcast(true)?;
    if shared {
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::try_from(std::net::UdpSocket::from(socket))
}

/// The broadcast targets: explicit addresses, or every up IPv4 interface's
/// directed broadcast for `auto`.
fn broadcast_addresses(config: &[Broadcast], port: u16) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for entry in config {
        match entry {
            Broadcast::Address(ip) => out.push(SocketAddr::from((*ip, port))),
            Broadcast::Auto => match if_addrs::get_if_addrs() {
                Ok(interfaces) => {
                    for interface in interfaces {
                        if let if_addrs::IfAddr::V4(v4) = interface.addr {
                            if let Some(broadcast) = v4.broadcast.filter(|_| !v4.ip.is_loopback()) {
                                out.push(SocketAddr::from((broadcast, port)));
                            }
                        }
                    }
                }
                Err(error) => log::warn!("cannot list network interfaces: {error}"),
            },
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Resolves the static peers (`host:port`); one that does not resolve is
/// reported and skipped.
fn resolve_peers(peers: &[String]) -> Vec<SocketAddr> {
    use std::net::ToSocketAddrs;
    let mut out = Vec::new();
    for peer in peers {
        match peer.to_socket_addrs() {
            Ok(addrs) => match addrs.into_iter().find(SocketAddr::is_ipv4) {
                Some(addr) => out.push(addr),
                None => log::warn!("static peer {peer} has no IPv4 address; skipped"),
            },
            Err(error) => log::warn!("cannot resolve static peer {peer}: {error}; skipped"),
        }
    }
    out
}

/// The configured name, or the hostname cut down to a valid name.
fn node_name(config: &Config) -> Result<Name, RunError> {
    let text = match &config.node.name {
        Some(name) => name.clone(),
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::fs::read_to_string("/etc/hostname"))
            .unwrap_or_default()
            .trim()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            .take(wire::MAX_NAME)
            .collect(),
    };
    wire::name(&text).ok_or_else(|| {
        RunError::Name(format!(
            "no usable node name (got {text:?}): set node.name in the configuration"
        ))
    })
}
