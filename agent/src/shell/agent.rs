//! `shoal run`: the agent on real sockets, as one loop you can read.
//!
//! [`Agent::start`] builds the core [`Node`] and every subsystem; then
//! [`run`] takes the next [`Input`] ([`Agent::waiting_datagram`], else
//! [`Agent::next_input`]) and hands it to [`Agent::step`], which never
//! waits, until SIGTERM or SIGINT; SIGHUP re-reads the configuration file
//! ([`Agent::reload`], `reload.rs`). One task owns everything, so nothing
//! is shared or locked. Each subsystem is one field with one owner
//! and its own file:
//!
//! | field | file | owns |
//! |---|---|---|
//! | `node` | `shoal-core` | the protocol |
//! | `sockets` | `sockets.rs` | the beacon and sync sockets, broadcast targets |
//! | `sensors` | `sensors.rs` | sampling schedules, reads on blocking threads |
//! | `runs` | `runs.rs` | executor runs, their records, waiting `exec`s |
//! | `feed` | `events.rs` | logs, `/api/events`, `/metrics` counters |
//! | `persistence` | `persist.rs` | remembered peers, last own values |
//! | `notifier` | `notify.rs` | systemd readiness and watchdog |
//! | `api_calls` | `api.rs`, `answers.rs` | HTTP requests, answered in `answers.rs` |
//! | `mqtt` | `mqtt.rs` | the broker connection, the bridge role, Home Assistant |
//!
//! After every input the loop drains the core ([`Agent::step`]): datagrams
//! to the sockets, events to the feed (and to persistence), and the events
//! that ask for action (commands, rule actions) to `runs`, in at most four
//! rounds since those may produce more.

use super::answers;
use super::api::{self, ApiCall, ApiStats};
use super::events::EventFeed;
use super::executor::Executors;
use super::feeds::Feeds;
use super::mqtt::Bridge;
use super::notify::Notifier;
use super::persist::Persistence;
use super::preflight;
use super::reload;
use super::runs::{Completed, Runs};
use super::sensors::{self, SensorRead, Sensors};
use super::sockets::{self, Sockets};
use super::state::{self, StateDir, StateError};
use async_signal::{Signal, Signals};
use futures_lite::{future, StreamExt};
use shoal_config::Config;
use shoal_core::rules::{ComputeSpec, RuleSpec, Rules};
use shoal_core::time::Instant;
use shoal_core::wire::{self, Name, NodeId};
use shoal_core::{Arrival, Identity, Node};
use smol::channel::Receiver;
use smol::net::TcpListener;
use smol::LocalExecutor;
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

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
    Core(#[from] shoal_core::ConfigError),
    /// No usable node name.
    #[error("{0}")]
    Name(String),
    /// A `command` executor whose program cannot start.
    #[error("executor {name:?}: {reason}")]
    Executor {
        /// The executor.
        name: String,
        /// Why its program cannot start.
        reason: String,
    },
    /// A `command` sensor whose program cannot start, or an `http` sensor
    /// whose password file cannot be read.
    #[error("sensor {name:?}: {reason}")]
    Sensor {
        /// The sensor.
        name: String,
        /// Why it cannot be read.
        reason: String,
    },
    /// An `[[export]]` whose token or password file cannot be read.
    #[error("export to {url}: {reason}")]
    Export {
        /// Its URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// This node id used up its incarnations and frame counters.
    #[error("this node id used up every frame counter of its last incarnation; it sends nothing more so that no nonce is reused. Start it again: it takes a new node id")]
    CounterExhausted,
    /// `[mqtt]` cannot be used (its password file).
    #[error("{0}")]
    Mqtt(String),
    /// A socket failed while running.
    #[error("the {what} socket failed: {source}")]
    Io {
        /// Which socket.
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

/// One thing that happened, for [`Agent::step`].
#[derive(Debug)]
pub enum Input {
    /// A datagram of `len` bytes from an address, in the socket's buffer.
    Datagram(Arrival, usize, SocketAddr),
    /// The earliest deadline passed: the core's, a sensor's or the watchdog's.
    Deadline,
    /// A sensor read returned.
    SensorRead(SensorRead),
    /// A request of the HTTP API.
    Api(ApiCall),
    /// An executor run ended.
    ExecutorDone(Completed),
    /// SIGTERM or SIGINT.
    Stop,
    /// SIGHUP.
    Reload,
    /// A socket reported an error.
    SocketFailed(&'static str, io::Error),
    /// The MQTT connection reported something.
    Mqtt(super::mqtt::client::ClientEvent),
    /// A websocket feed brought a message or went down.
    Feed(super::feeds::FeedEvent),
    /// A range of this node's history was read for another node.
    HistoryRead(super::mesh_history::ReadDone),
}

/// Whether the loop goes on after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Wait for the next input.
    Continue,
    /// SIGTERM or SIGINT: say goodbye, save the state and return.
    Stop,
}

/// The agent: the core and every subsystem. See the module docs.
#[derive(Debug)]
pub struct Agent<'ex> {
    /// Runs the API server, executor runs and sensor reads (all `'static`).
    ex: &'ex LocalExecutor<'static>,
    node: Node,
    started: std::time::Instant,
    sockets: Sockets,
    sensors: Sensors,
    runs: Runs,
    feed: EventFeed,
    persistence: Persistence,
    notifier: Notifier,
    api_calls: Receiver<ApiCall>,
    api_stats: Rc<ApiStats>,
    signals: Signals,
    /// Joins and key rotations.
    trust: super::join::Trust,
    /// The MQTT bridge, with `[mqtt]`.
    mqtt: Option<Bridge>,
    /// The `websocket` sensors' connections, if any.
    feeds: Option<Feeds>,
    /// `[[export]]`: this node's points to time-series engines.
    exports: super::export::Exports,
    /// This node's history on the device (`[history]`).
    recorder: Option<super::recorder::Recorder>,
    /// History asked of other nodes and answered to them.
    mesh_history: super::mesh_history::MeshHistory,
    /// The configuration in effect (see `reload.rs`).
    config: Config,
    /// The file it came from; `None`: the embedded defaults.
    config_path: Option<PathBuf>,
    /// Datagrams taken in a row without looking at the other inputs.
    burst: u32,
    /// The signal pipe, as the main loop knows it.
    signal_watch: super::mainloop::Watch,
}

/// At most this many waiting datagrams are taken in a row before the other
/// inputs (the API, signals, deadlines) are looked at: a flood on the mesh
/// port delays them by one burst. A deadline then first hears what waits
/// (up to [`DEADLINE_DRAIN`]).
const FAIR_BURST: u32 = 32;

/// At a deadline, up to this many waiting datagrams are read before it is
/// judged, whatever the burst: more than both mesh sockets' receive queues
/// hold (at most 2 MiB each, as the kernel doubles the 1 MiB asked for, of
/// datagrams taking at least 512 bytes there). What arrived before a
/// deadline is then heard before a peer's silence is: with a fair burst
/// only, an agent behind a flood judged peers whose beacons waited in its
/// queue (the process test `a_deadline_hears_...`). At most a few hundred
/// milliseconds of reading on a slow CPU, and only when that much waits.
const DEADLINE_DRAIN: u32 = 8192;

/// The most the kernel may delay the end of a wait to share its wake-up
/// with other timers ([`super::mainloop::set_timer_slack`]).
const TIMER_SLACK: Duration = Duration::from_millis(10);

/// The agent's whole run, as [`run`] polls it.
type AgentFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), RunError>> + 'a>>;
/// [`Agent::start`], as [`run`] polls it.
type StartFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Agent<'a>, RunError>> + 'a>>;

/// Runs the agent until SIGTERM or SIGINT; `path` is the file `config` was
/// read from (`None`: the embedded defaults), re-read at SIGHUP.
pub fn run(config: Config, path: Option<PathBuf>) -> Result<(), RunError> {
    let ex: LocalExecutor<'static> = LocalExecutor::new();
    // The agent's future lives behind a pointer and is polled through it.
    // Inline, it was 12 KB, held four times over by the executor's and
    // the loop's wrappers (an async fn keeps its argument besides what it
    // makes of it): a 140 KiB stack frame at start and a 40 KiB one on
    // every wake-up, each probed page by page and so resident for good.
    let agent: AgentFuture<'_> = Box::pin(async {
        // Likewise start's state (7 KB), needed once.
        let start: StartFuture<'_> = Box::pin(Agent::start(&config, &ex));
        let mut agent = start.await?;
        agent.config_path = path;
        // Start-up's code is done with: its pages need not stay mapped.
        let released = super::pages::release_startup_pages();
        match released.refused {
            None => log::debug!(
                "start-up done: {} kB of the program's and libraries' pages released \
                 ({} runs, {} private pages kept)",
                released.resident_bytes / 1024,
                released.runs,
                released.kept_pages
            ),
            Some(why) => log::debug!("start-up done: no pages released: {why}"),
        }
        loop {
            // A waiting datagram needs no future built, polled and dropped.
            let input = match agent.waiting_datagram() {
                Some(input) => input,
                None => agent.next_input().await,
            };
            if matches!(input, Input::Deadline) {
                // What waits in a socket (a resting one: `sockets.rs`, or
                // one behind a flood) arrived before the deadline: a peer's
                // beacon held there is heard before its silence is judged.
                super::mainloop::end_rests();
                if !agent.hear_before_deadline()? {
                    // A signal came first, with beacons still waiting: no
                    // judging now. The deadline comes again after it.
                    continue;
                }
            }
            if agent.step(input)? == Flow::Stop {
                agent.stop().await;
                return Ok(());
            }
        }
    });
    // A wait may end this much late: at most 1% of the beacon interval, so
    // a beacon stays within 85-96% of it (one lost beacon still does not
    // make a peer SUSPECT), and 10 ms at most.
    super::mainloop::set_timer_slack((config.mesh.beacon_interval / 100).min(TIMER_SLACK));
    let looped = super::mainloop::block_on(ex.run(agent));
    looped.map_err(|source| RunError::Io {
        what: "main loop",
        source,
    })?
}

impl<'ex> Agent<'ex> {
    /// Checks what it needs ([`preflight::problems`], the same checks as
    /// `shoal check`), reads the state directory, builds the node and
    /// every subsystem, and opens the API and the mesh sockets, on `ex`.
    pub async fn start(
        config: &Config,
        ex: &'ex LocalExecutor<'static>,
    ) -> Result<Agent<'ex>, RunError> {
        // First: from here on a SIGHUP is a reload, never its default
        // action (the end of the process).
        let signals =
            Signals::new([Signal::Term, Signal::Int, Signal::Hup]).map_err(RunError::Signals)?;
        check_before_start(config)?;
        let mut state_dir = StateDir::open(&config.state.dir)?;
        let identity = load_identity(&mut state_dir, config)?;
        let name = identity.name.clone();
        let node_key = identity.key.clone();
        // The core's time zero.
        let started = std::time::Instant::now();
        let mut node = start_node(config, identity)?;
        let mut persistence = Persistence::load(state_dir, node_key);
        let mut static_peers = sockets::resolve_peers(&config.mesh.peers);
        static_peers.extend(persistence.remembered_peers());
        node.set_static_peers(static_peers);
        node.set_local_networks(&sockets::local_networks());
        persistence.restore_points(&mut node);
        persistence.restore_incarnations(&mut node);
        let sensors = Sensors::new(&config.sensors, &name, Instant::ZERO);
        let runs = Runs::new(executors(config, &name));
        let token = api_token(config)?;
        log::info!(
            "node {name} ({}) incarnation {} starting: beacons on port {}, sync on {}:{}, news on port {}, {} sensors",
            node.id(),
            node.incarnation(),
            config.mesh.port,
            config.mesh.bind,
            config.mesh.sync_port,
            config.mesh.news_port,
            sensors.len()
        );
        let listener = TcpListener::bind(config.api.listen)
            .await
            .map_err(|source| RunError::Socket {
                what: "api",
                addr: config.api.listen,
                source,
            })?;
        let (calls_tx, api_calls) = smol::channel::bounded::<ApiCall>(64);
        let api_stats = Rc::new(ApiStats::default());
        let subscribers: api::Subscribers = Rc::default();
        let feed = EventFeed::new(
            Rc::clone(&subscribers),
            Rc::clone(&api_stats),
            config.limits.max_nodes,
        );
        ex.spawn(api::serve(
            listener,
            calls_tx,
            Some(token),
            Rc::clone(&api_stats),
            subscribers,
        ))
        .detach();
        log::info!("API on http://{}", config.api.listen);
        let sockets = Sockets::open(&config.mesh)?;
        let signal_watch = super::mainloop::watch(std::os::fd::AsFd::as_fd(&signals))
            .map_err(RunError::Signals)?;
        let mqtt = Bridge::open(ex, config, &mut node).map_err(RunError::Mqtt)?;
        let mut notifier = Notifier::from_env();
        notifier.ready(&format!("serving as {name}"));
        Ok(Agent {
            ex,
            node,
            started,
            sockets,
            sensors,
            runs,
            feed,
            persistence,
            notifier,
            api_calls,
            api_stats,
            signals,
            trust: super::join::Trust::new(
                super::join::member_addr(config.mesh.bind, config.mesh.sync_port),
                config.key_path(),
            ),
            mqtt,
            feeds: Feeds::start(ex, &config.sensors),
            exports: super::export::Exports::start(ex, &config.exports),
            recorder: super::recorder::Recorder::open(
                &config.state.dir,
                config.history.retain,
                super::unix_ms(),
            ),
            mesh_history: super::mesh_history::MeshHistory::default(),
            config: config.clone(),
            config_path: None,
            burst: 0,
            signal_watch,
        })
    }

    /// The core's time now: ms since the agent started.
    fn now(&self) -> Instant {
        Instant::from_millis(u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    /// A datagram already waiting, taken at once (the loop asks this first,
    /// before [`Agent::next_input`] builds anything). `None` when none
    /// waits, or after a burst of them: the other inputs get their turn.
    pub fn waiting_datagram(&mut self) -> Option<Input> {
        // Pinged from here only: a wedged loop stops the pings.
        self.notifier.tick();
        if self.burst < FAIR_BURST {
            if let Some(input) = self.sockets.try_recv() {
                self.burst += 1;
                return Some(input);
            }
        }
        None
    }

    /// Reads and handles what waits in the mesh sockets when a deadline
    /// comes, whatever the burst: up to `DEADLINE_DRAIN` datagrams, until
    /// none waits or a signal does (asked after every `FAIR_BURST`, so
    /// SIGTERM is not held up by a flood). The next [`Agent::next_input`]
    /// then looks at the other inputs first. False if it stopped for a
    /// signal with datagrams still waiting: the deadline is then not for
    /// judging yet.
    pub fn hear_before_deadline(&mut self) -> Result<bool, RunError> {
        for read in 1..=DEADLINE_DRAIN {
            self.notifier.tick();
            let Some(datagram) = self.sockets.try_recv() else {
                return Ok(true);
            };
            self.burst = self.burst.max(FAIR_BURST);
            self.step(datagram)?;
            if read % FAIR_BURST == 0 {
                super::mainloop::refresh();
                if self.signal_watch.maybe_ready() {
                    return Ok(false);
                }
            }
        }
        // As much as the queues can hold was read: judge.
        Ok(true)
    }

    /// Waits for whatever happens first (after [`Agent::waiting_datagram`]).
    pub async fn next_input(&mut self) -> Input {
        if std::mem::take(&mut self.burst) >= FAIR_BURST {
            // Datagrams waited every time we looked: the loop never
            // waited, so ask which other fds are ready (a signal is seen
            // however busy the mesh keeps us), and let the executor's
            // tasks (the API server, exports, MQTT) run once.
            super::mainloop::refresh();
            futures_lite::future::yield_now().await;
        }
        let now = self.now();
        let ping_due = self
            .notifier
            .next_ping()
            .map(|d| now + d.max(Duration::from_millis(10)));
        let wake = [
            self.node.poll_timeout(),
            self.sensors.next_deadline(),
            self.mqtt.as_ref().and_then(Bridge::next_deadline),
            self.feeds.as_ref().and_then(Feeds::next_deadline),
            ping_due,
        ]
        .into_iter()
        .flatten()
        .min();
        let started = self.started;
        let Agent {
            sockets,
            sensors,
            runs,
            api_calls,
            signals,
            mqtt,
            feeds,
            mesh_history,
            signal_watch,
            ..
        } = self;
        let deadline = async {
            match wake {
                Some(at) => {
                    let at = started + Duration::from_millis(at.as_millis());
                    super::mainloop::sleep_until(at).await;
                }
                None => future::pending::<()>().await,
            }
            Input::Deadline
        };
        // The signal pipe is read only when the loop saw it readable.
        let signal_watch = *signal_watch;
        let signal = std::future::poll_fn(|cx| {
            if !signal_watch.maybe_ready() {
                signal_watch.wanted();
                return Poll::Pending;
            }
            match signals.poll_next(cx) {
                Poll::Ready(Some(Ok(Signal::Hup))) => Poll::Ready(Input::Reload),
                Poll::Ready(Some(_)) => Poll::Ready(Input::Stop),
                Poll::Ready(None) => Poll::Pending,
                Poll::Pending => {
                    signal_watch.drained();
                    signal_watch.wanted();
                    Poll::Pending
                }
            }
        });
        let call = async {
            match api_calls.recv().await {
                Ok(call) => Input::Api(call),
                Err(_) => future::pending().await,
            }
        };
        let finished = async { Input::ExecutorDone(runs.next_finished().await) };
        let read = async { Input::SensorRead(sensors.next_read().await) };
        let broker = async {
            match mqtt {
                Some(bridge) => Input::Mqtt(bridge.next_event().await),
                None => future::pending().await,
            }
        };
        let feed = async {
            match feeds {
                Some(feeds) => Input::Feed(feeds.next_event().await),
                None => future::pending().await,
            }
        };
        let history = async { Input::HistoryRead(mesh_history.next_read().await) };
        // The mesh last: whatever else is ready goes first after a burst.
        future::or(
            future::or(
                // A signal first: one due deadline after another (a loop
                // slowed by a flood) must not hold it off.
                future::or(signal, deadline),
                future::or(
                    call,
                    future::or(
                        finished,
                        future::or(read, future::or(broker, future::or(feed, history))),
                    ),
                ),
            ),
            sockets.recv(),
        )
        .await
    }

    /// Feeds one input to its owner, then drains the core. For
    /// [`Input::Stop`] it does neither and returns [`Flow::Stop`]: the
    /// caller then says goodbye ([`Agent::stop`]).
    pub fn step(&mut self, input: Input) -> Result<Flow, RunError> {
        let now = self.now();
        let ex = self.ex;
        match input {
            Input::Datagram(arrival, len, from) => {
                let frame = self.sockets.received(len);
                self.node.handle_datagram(now, from, arrival, frame);
            }
            Input::Deadline => {
                self.node.handle_timeout(now);
                self.sensors.start_due(ex, &mut self.node, now);
            }
            Input::SensorRead(read) => self.sensors.finish(ex, &mut self.node, now, read),
            Input::Api(call) => {
                self.feed.note_send_dropped(self.sockets.send_dropped());
                let context = answers::Context {
                    runs: &mut self.runs,
                    uptime: self.started.elapsed(),
                    api_stats: &self.api_stats,
                    counters: self.feed.counters(),
                    trust: &mut self.trust,
                    mqtt: self.mqtt.as_ref(),
                    sensor_errors: self.sensors.errors()
                        + self.mqtt.as_ref().map_or(0, Bridge::sensor_errors)
                        + self.feeds.as_ref().map_or(0, Feeds::errors),
                    exports: &self.exports,
                    recorder: self.recorder.as_ref(),
                    mesh_history: &mut self.mesh_history,
                    ex: self.ex,
                };
                answers::answer(&mut self.node, now, call, context);
            }
            Input::ExecutorDone(completed) => {
                let (executor, outcome) = completed.summary();
                super::mqtt::executor_ran(&self.config, &mut self.node, now, &executor, &outcome);
                if let Some((actuator, on)) = completed.switched() {
                    super::mqtt::actuator_switched(
                        &self.config,
                        &mut self.node,
                        now,
                        &actuator,
                        on,
                    );
                }
                self.runs
                    .finish(&mut self.node, now, completed, &mut self.feed);
            }
            Input::Mqtt(event) => {
                if let Some(bridge) = &mut self.mqtt {
                    bridge.on_client(&mut self.node, now, event);
                }
            }
            Input::Feed(event) => {
                if let Some(feeds) = &mut self.feeds {
                    feeds.on_event(&mut self.node, now, event);
                }
            }
            Input::HistoryRead(done) => self.mesh_history.on_read(&mut self.node, now, done),
            Input::Stop => return Ok(Flow::Stop),
            Input::Reload => self.reload(now),
            Input::SocketFailed(what, source) => {
                // Transient errors (ICMP unreachable reported on a UDP
                // socket) are normal; anything else ends the agent.
                if !sockets::is_transient(&source) {
                    return Err(RunError::Io { what, source });
                }
                log::debug!("{what} socket: {source}");
            }
        }
        self.settle()?;
        self.persistence
            .maybe_save(&self.node, std::time::Instant::now());
        if let Some(recorder) = &mut self.recorder {
            recorder.tick(self.ex, super::unix_ms());
        }
        Ok(Flow::Continue)
    }

    /// After an input: sends what the core queued and acts on its events,
    /// in bounded rounds (actions may produce more datagrams and events),
    /// with the subsystems' ticks (held readings, the MQTT bridge).
    fn settle(&mut self) -> Result<(), RunError> {
        for _ in 0..4 {
            let actions = self.drain()?;
            let later = self.now();
            let mut published = match &mut self.mqtt {
                Some(bridge) => bridge.tick(&mut self.node, later),
                None => false,
            };
            if let Some(feeds) = &mut self.feeds {
                published |= feeds.tick(&mut self.node, later);
            }
            if actions.is_empty() && !published {
                break;
            }
            let now = self.now();
            for event in actions {
                match event {
                    shoal_core::Event::CounterExhausted => {
                        self.persistence.save(&self.node);
                        return Err(RunError::CounterExhausted);
                    }
                    shoal_core::Event::MeshKeyChanged { .. }
                    | shoal_core::Event::RotationDone { .. } => {
                        self.trust.on_event(&self.node, event);
                    }
                    shoal_core::Event::HistoryRequested(request) => {
                        self.mesh_history.on_requested(
                            &mut self.node,
                            now,
                            self.recorder.as_ref(),
                            self.ex,
                            request,
                        );
                    }
                    shoal_core::Event::HistoryAnswered {
                        id,
                        status,
                        rows,
                        next_min,
                        ..
                    } => {
                        self.mesh_history.on_answered(
                            &mut self.node,
                            now,
                            id,
                            status,
                            rows,
                            next_min,
                        );
                    }
                    other => self.runs.on_event(self.ex, &mut self.node, now, other),
                }
            }
        }
        Ok(())
    }

    /// Sends every queued datagram and publishes every event; returns the
    /// events that ask for action.
    fn drain(&mut self) -> Result<Vec<shoal_core::Event>, RunError> {
        self.sockets.send_all(&mut self.node);
        let mut actions = Vec::new();
        while let Some(event) = self.node.poll_event() {
            self.persistence.observe(&self.node, &event)?;
            if let Some(bridge) = &mut self.mqtt {
                bridge.observe(&event);
            }
            self.exports.observe(&self.node, &event);
            if let Some(recorder) = &mut self.recorder {
                recorder.observe(&self.node, &event);
            }
            if let Some(action) = self.feed.publish(&self.node, event) {
                actions.push(action);
            }
        }
        Ok(actions)
    }

    /// SIGHUP: re-reads the configuration file. A file that does not
    /// validate is refused whole (the problems logged on one line) and the
    /// running configuration stays; otherwise sensors, actuators,
    /// executors, rules and derived points are replaced, and each setting
    /// that needs a restart is named in the log and left as it runs.
    pub fn reload(&mut self, now: Instant) {
        let Some(path) = self.config_path.clone() else {
            log::warn!("SIGHUP: running on the embedded defaults, no configuration file to reload (start with --config FILE)");
            self.feed.count_reload(false);
            return;
        };
        let new = match shoal_config::load(&path) {
            Ok(new) => new,
            Err(error) => {
                let problems = match error {
                    shoal_config::LoadError::Invalid(problems) => {
                        problems.to_string().replace('\n', "; ")
                    }
                    read => read.to_string(),
                };
                log::error!(
                    "reload of {} refused, the running configuration stays: {problems}",
                    path.display()
                );
                self.feed.count_reload(false);
                return;
            }
        };
        for warning in &new.warnings {
            log::warn!(
                "configuration {}:{}: {}",
                warning.line,
                warning.col,
                warning.message
            );
        }
        for key in reload::restart_needed(&self.config, &new) {
            log::warn!("{key} changed: restart to apply");
        }
        let new = reload::in_effect(&self.config, new);
        let old = std::mem::replace(&mut self.config, new);
        let config = &self.config;
        let changes = [
            reload::changes("sensor", &old.sensors, &config.sensors, |s| &s.name),
            reload::changes("actuator", &old.actuators, &config.actuators, |a| &a.name),
            reload::changes("executor", &old.executors, &config.executors, |e| &e.name),
            reload::changes("rule", &old.rules, &config.rules, |r| &r.name),
            reload::changes("derived point", &old.computes, &config.computes, |c| {
                &c.name
            }),
        ]
        .concat();
        if !changes.is_empty() {
            log::info!("reload: {}", changes.join(", "));
        }
        let name = self.node.name().to_string();
        self.sensors.reload(&config.sensors, &name, now);
        let websockets = |c: &Config| -> Vec<shoal_config::SensorSection> {
            let sensors = c.sensors.iter().filter(|s| s.driver == "websocket");
            sensors.cloned().collect()
        };
        if websockets(&old) != websockets(config) {
            self.feeds = Feeds::start(self.ex, &config.sensors);
        }
        self.exports.reload(self.ex, &config.exports);
        reload_actuators(self.runs.executors_mut(), &old, config);
        self.runs
            .executors_mut()
            .reload(&super::mqtt::all_executors(config));
        super::mqtt::announce_executors(config, &mut self.node, now, false);
        let rules: Vec<RuleSpec> = config.rules.iter().map(RuleSpec::from).collect();
        let computes: Vec<ComputeSpec> = config.computes.iter().map(ComputeSpec::from).collect();
        self.node.reload_rules(now, rules, computes);
        log::info!(
            "reloaded {}: {} sensors, {} rules, {} executors",
            path.display(),
            self.sensors.len(),
            config.rules.len(),
            config.executors.len()
        );
        self.feed.count_reload(true);
    }

    /// Says goodbye to the mesh and saves the state.
    pub async fn stop(&mut self) {
        let now = self.now();
        self.notifier.stopping();
        log::info!("stopping: saying goodbye to the mesh");
        self.node.handle_leave(now);
        if let Err(error) = self.drain() {
            log::error!("while stopping: {error}");
        }
        self.persistence.save(&self.node);
        if let Some(recorder) = &mut self.recorder {
            // Everything, open buckets too: a restart goes on from there.
            recorder.write(u64::MAX);
        }
        if let Some(bridge) = self.mqtt.take() {
            bridge.close().await;
        }
        log_stats(&self.node);
        log::info!(
            "stopped ({} state writes this run)",
            self.persistence.writes()
        );
    }
}

/// The configuration's warnings said, and its problems refused before
/// anything is created or written (no identity bumped for a start that
/// cannot happen): the first returned, the rest logged.
fn check_before_start(config: &Config) -> Result<(), RunError> {
    for warning in &config.warnings {
        log::warn!(
            "configuration {}:{}: {}",
            warning.line,
            warning.col,
            warning.message
        );
    }
    let mut problems = preflight::problems(config).into_iter();
    if let Some(first) = problems.next() {
        for other in problems {
            log::error!("{other}");
        }
        return Err(first);
    }
    Ok(())
}

/// The next identity from the state directory (the incarnation bumped and
/// written before the first frame), with the node's name.
fn load_identity(state_dir: &mut StateDir, config: &Config) -> Result<Identity, RunError> {
    let (identity, found) = state_dir.next_identity()?;
    match found {
        state::Found::Valid => {}
        state::Found::Missing => log::info!(
            "new node: identity created in {}",
            state_dir.path().display()
        ),
        state::Found::Corrupt(reason) => log::warn!(
            "state file {}/identity was corrupt ({reason}); starting as a new node",
            state_dir.path().display()
        ),
        state::Found::Exhausted(old) => log::warn!(
            "node {old} used up its incarnations (a 32-bit counter of starts); starting as a new node with the id {} so that no frame counter is ever reused",
            identity.id()
        ),
        state::Found::Upgraded(old) => log::warn!(
            "upgraded from protocol 1: this node now has a signing key, and with it the id {} (was {old}); nodes still on protocol 1 list it as another protocol until they are upgraded",
            identity.id()
        ),
    }
    let id = identity.id();
    Ok(Identity {
        key: identity.key,
        name: node_name(config, id)?,
        incarnation: identity.incarnation,
    })
}

/// The core node of `config` with its key, rules and derived points.
fn start_node(config: &Config, identity: Identity) -> Result<Node, RunError> {
    let key = match config.key_path() {
        Some(path) => {
            let (key, created) = state::read_or_create_key(&path)?;
            if created {
                log::warn!(
                    "created a new mesh key in {}: this node is a mesh of one. To add a node: `shoal token` here, then `shoal join TOKEN` there (until then each lists the other as another mesh in shoal status)",
                    path.display()
                );
            }
            Some(key)
        }
        None => {
            log::warn!(
                "mesh.open = true: frames are neither encrypted nor authenticated; anyone on the LAN can read them and forge any node"
            );
            None
        }
    };
    let core_config = shoal_core::Config {
        mesh_id: state::mesh_id(key.as_ref()),
        key,
        meta: Some(super::host::meta(std::path::Path::new("/"))),
        ..shoal_core::Config::from(config)
    };
    let seed = state::random_u64()?;
    let mut node = Node::new(identity, core_config, seed, Instant::ZERO)?;
    node.set_wall_clock(Instant::ZERO, super::unix_ms());
    let rules: Vec<RuleSpec> = config.rules.iter().map(RuleSpec::from).collect();
    let computes: Vec<ComputeSpec> = config.computes.iter().map(ComputeSpec::from).collect();
    if !rules.is_empty() || !computes.is_empty() {
        log::info!("{} rules, {} derived points", rules.len(), computes.len());
    }
    node.set_rules(Rules::new(rules, Instant::ZERO), computes);
    Ok(node)
}

/// The executors, with the actuators they drive.
fn executors(config: &Config, name: &str) -> Executors {
    let mut actuators = BTreeMap::new();
    for section in &config.actuators {
        if let Some(device) = actuator(section) {
            actuators.insert(section.name.clone(), device);
        }
    }
    Executors::new(&super::mqtt::all_executors(config), name).with_actuators(actuators)
}

/// The device of an `[[actuator]]`, or `None` (logged).
fn actuator(section: &shoal_config::ActuatorSection) -> Option<Box<dyn shoal_hal::Actuator>> {
    match sensors::actuator(section) {
        Ok(device) => Some(device),
        Err(reason) => {
            log::warn!(
                "actuator {} ({}): {reason}; executors using it will fail",
                section.name,
                section.driver
            );
            None
        }
    }
}

/// Actuators from `old` to `new`: an unchanged one keeps its device (and
/// its state); a removed or changed one is dropped first, so that a changed
/// one can open the same pin again; then new and changed ones are opened.
fn reload_actuators(executors: &mut Executors, old: &Config, new: &Config) {
    let unchanged = |section: &shoal_config::ActuatorSection,
                     list: &[shoal_config::ActuatorSection]| {
        list.contains(section)
    };
    for section in &old.actuators {
        if !unchanged(section, &new.actuators) {
            executors.remove_actuator(&section.name);
        }
    }
    for section in &new.actuators {
        if !unchanged(section, &old.actuators) {
            if let Some(device) = actuator(section) {
                executors.add_actuator(section.name.clone(), device);
            }
        }
    }
}

/// The API token, created at the first start. One that cannot be read or
/// made stops the agent (as `shoal check` says beforehand): an agent that
/// silently refuses every write is a fault found too late.
fn api_token(config: &Config) -> Result<String, RunError> {
    let (token, created) = state::read_or_create_token(&config.api.token_file)?;
    if created {
        log::info!(
            "created the API token in {} (needed for writes and exec)",
            config.api.token_file.display()
        );
    }
    Ok(token)
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

/// Hostnames that distributions give every fresh install: a node named
/// after one gets a short suffix of its id, so two fresh Pis side by side
/// do not share a name.
const DEFAULT_HOSTNAMES: [&str; 6] = [
    "raspberrypi",
    "localhost",
    "localhost.localdomain",
    "dietpi",
    "debian",
    "ubuntu",
];

/// The configured name, or the hostname (see [`default_name`]).
pub(crate) fn node_name(config: &Config, id: NodeId) -> Result<Name, RunError> {
    let text = match &config.node.name {
        Some(name) => name.clone(),
        None => {
            let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .or_else(|_| std::fs::read_to_string("/etc/hostname"))
                .unwrap_or_default();
            default_name(&hostname, id)
        }
    };
    wire::name(&text).ok_or_else(|| {
        RunError::Name(format!(
            "no usable node name (got {text:?}): set node.name in the configuration"
        ))
    })
}

/// A node name from a hostname: cut down to valid characters and length;
/// a distribution's default hostname, or `bridge` (the MQTT bridge's
/// topics use it), gets `-` and 4 hex digits of the id.
pub fn default_name(hostname: &str, id: NodeId) -> String {
    let clean: String = hostname
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        .take(wire::MAX_NAME)
        .collect();
    let lower = clean.to_ascii_lowercase();
    if !DEFAULT_HOSTNAMES.contains(&lower.as_str()) && lower != shoal_config::RESERVED_NODE {
        return clean;
    }
    let suffix = format!("-{:04x}", id.0 >> 48);
    let room = wire::MAX_NAME - suffix.len();
    format!("{}{suffix}", &clean[..clean.len().min(room)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_distribution_default_hostname_gets_an_id_suffix() {
        let id = NodeId(0xa1b2_c3d4_e5f6_0718);
        assert_eq!(default_name("raspberrypi\n", id), "raspberrypi-a1b2");
        assert_eq!(default_name("localhost", id), "localhost-a1b2");
        assert_eq!(default_name("RaspberryPi", id), "RaspberryPi-a1b2");
        assert_eq!(default_name("kitchen\n", id), "kitchen");
        assert_eq!(default_name("raspberrypi-2", id), "raspberrypi-2");
        assert_eq!(default_name("bridge", id), "bridge-a1b2");
        assert_eq!(default_name("my host!", id), "myhost");
        let other = NodeId(0x0000_c3d4_e5f6_0718);
        assert_ne!(
            default_name("raspberrypi", id),
            default_name("raspberrypi", other)
        );
        for name in [
            default_name("localhost.localdomain", id),
            default_name(&"x".repeat(80), id),
        ] {
            assert!(wire::name(&name).is_some(), "{name:?} is a valid name");
        }
    }
}
