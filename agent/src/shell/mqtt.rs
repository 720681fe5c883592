//! The MQTT bridge: the whole mesh's points in a broker, Home Assistant
//! discovery, buttons and switches that run executors through the mesh,
//! and MQTT topics as sensors. One node of those with `[mqtt]` publishes at
//! a time; the others stand by, connected.
//!
//! Topics (`P` is `mqtt.topic_prefix`, `D` is `mqtt.discovery_prefix`,
//! `NODE` a node's name, `POINT` a point's name):
//!
//! | topic | retained | payload |
//! |---|---|---|
//! | `P/NODE/POINT` | yes | the value: a number, `true`/`false`, the text; `unavailable` while the sensor is in error |
//! | `P/NODE/POINT/attributes` | yes | JSON: `unit`, `age_ms`, `origin` (node name), `origin_id`, `ts_ms`, `error` (`null` or why) |
//! | `P/NODE/availability` | yes | `online` / `offline`, the mesh's view of NODE |
//! | `P/bridge/NODE` | yes | `active` / `standby` / `offline` (NODE's Last Will) |
//! | `P/bridge` | yes | the name of the node publishing now |
//! | `P/NODE/exec/EXECUTOR/run` | no | any payload runs EXECUTOR on NODE (only `mqtt = true` executors) |
//! | `P/NODE/exec/EXECUTOR/result` | no | JSON: `outcome`, `exit_code`, `output`, `at_ms` |
//! | `P/NODE/switch.ACTUATOR` | yes | `true` / `false`: an `mqtt = true` actuator's state |
//! | `P/NODE/switch.ACTUATOR/set` | no | `ON` / `OFF` drives it (through its node's `ACTUATOR.on` / `.off`) |
//! | `D/COMPONENT/shoal_ID/OBJECT/config` | yes | Home Assistant discovery (see [`discovery`]) |
//!
//! A node that becomes the bridge first reads what the broker holds (see
//! [`snapshot`]), so it also clears what earlier bridges left.

pub mod client;
pub mod discovery;
pub mod election;
pub mod packet;
pub mod snapshot;

use self::client::{Client, ClientEvent, Settings};
use self::discovery::{Device, Entity, Kind, Topics};
use self::election::Role;
use shoal_config::{BridgeRole, Config, MqttSection};
use shoal_core::peers::PeerState;
use shoal_core::time::Instant;
use shoal_core::wire::{self, Name, NodeId, Value};
use shoal_core::{Event, Node};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// The largest message from the broker kept (a larger one is dropped).
const MAX_MESSAGE: usize = 64 * 1024;
/// Handovers remembered for status.
const MAX_HANDOVERS: usize = 8;
/// Commands from MQTT waiting for their result.
const MAX_PENDING: usize = 64;
/// Prefix of the point each MQTT-exposed executor keeps its last outcome in.
pub const EXEC_POINT_PREFIX: &str = "exec.";
/// The value of `exec.NAME` / `switch.NAME` once NAME is no longer exposed
/// (a point restored from an earlier run must not keep offering it).
pub const UNEXPOSED: &str = "unexposed";

/// A change of the node publishing the mesh, as this node saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handover {
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
    /// The bridge before (`None`: none).
    pub from: Option<String>,
    /// The bridge after.
    pub to: Option<String>,
}

/// Counters for status and metrics.
#[derive(Debug, Default, Clone)]
pub struct BridgeCounters {
    /// Messages that could not be queued (the bridge then resends all).
    pub queue_full: u64,
    /// Commands from MQTT run.
    pub commands: u64,
    /// Commands from MQTT refused (not exposed, unknown node, bad topic).
    pub commands_refused: u64,
    /// Messages on subscribed topics that meant nothing.
    pub bad_messages: u64,
    /// Changes of the node publishing, as this node saw them.
    pub handovers: u64,
}

/// The MQTT subsystem of one agent. See the module docs.
#[derive(Debug)]
pub struct Bridge {
    /// `bridge = "auto"`: takes part in the election.
    bridging: bool,
    /// This node's `mqtt` sensors.
    sources: super::pushed::Sources,
    section: MqttSection,
    topics: Topics,
    client: Client,
    own: NodeId,
    own_name: String,
    role: Role,
    connected: bool,
    /// Retained topics as last published, to send only what changed and
    /// clear what went away.
    published: BTreeMap<String, u64>,
    dirty_points: BTreeSet<(NodeId, Name)>,
    dirty_all: bool,
    /// Until then this node does not take over (it is still hearing the mesh).
    settle_until: Instant,
    /// The node publishing, as last seen (for handovers).
    bridge_seen: Option<NodeId>,
    handovers: VecDeque<Handover>,
    /// Commands sent for MQTT: request id → (node name, executor).
    pending: BTreeMap<u32, (String, String)>,
    counters: BridgeCounters,
    /// When the election is looked at again (at least each second).
    next_election: Instant,
    /// When everything is compared with what the broker holds again.
    next_full: Instant,
    /// The send queue overflowed: send everything once it has drained.
    resend: bool,
    /// When the last full pass ran (at most one a second).
    last_full: Instant,
    /// Each point's last Home Assistant kind other than from an error
    /// value, so an error spell does not change its component.
    kinds: BTreeMap<(NodeId, Name), Kind>,
    /// When Home Assistant's birth message last made us resend configs.
    last_birth: Option<Instant>,
    /// When a refused command was last logged (at most one a second).
    last_refusal_log: Option<Instant>,
    /// Reading what earlier bridges left on the broker (see `snapshot.rs`).
    snapshot: snapshot::Phase,
    /// A point under a reserved name was skipped (said once).
    reserved_logged: bool,
}

/// `P/bridge/NODE`: a node's role, and its Last Will.
fn role_topic(prefix: &str, node: &str) -> String {
    format!("{prefix}/bridge/{node}")
}

/// The words a value is published as.
fn state_payload(value: &Value) -> String {
    match value {
        Value::Float(v) => serde_json::to_string(v).unwrap_or_default(),
        Value::Int(v) => v.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Text(t) => t.to_string(),
        Value::Error(_) => "unavailable".to_owned(),
    }
}

/// How Home Assistant should show a point with this value.
fn kind(value: &Value, unit: &str) -> Kind {
    match value {
        Value::Float(_) | Value::Int(_) => Kind::Numeric,
        Value::Bool(_) => Kind::Binary,
        Value::Text(_) => Kind::Text,
        Value::Error(_) if unit.is_empty() => Kind::Text,
        Value::Error(_) => Kind::Numeric,
    }
}

/// Publishes `value` as this node's point `name`.
fn set_point(node: &mut Node, now: Instant, name: &str, value: &str) {
    match heapless::String::<{ wire::MAX_TEXT }>::try_from(value) {
        Ok(text) => super::runs::publish_own(node, now, name, Value::Text(text)),
        Err(_) => log::warn!("mqtt: {value:?} does not fit point {name:?}"),
    }
}

/// Each executor exposed to MQTT gets its point `exec.NAME` (`ready`, then
/// its last outcome): that is how the bridge, whichever node it is, knows
/// it may offer it as a button. Every node does this, with `[mqtt]` or not,
/// at start and after a reload (a point already there keeps its value).
/// Likewise each actuator exposed to MQTT gets `switch.NAME`, off: every
/// actuator driver starts its output off.
pub fn announce_executors(config: &Config, node: &mut Node, now: Instant, start: bool) {
    let own = node.id();
    let exposed_executors: Vec<String> = config
        .executors
        .iter()
        .filter(|e| e.mqtt)
        .map(|e| format!("{EXEC_POINT_PREFIX}{}", e.name))
        .collect();
    let exposed_switches: Vec<String> = config
        .actuators
        .iter()
        .filter(|a| a.mqtt)
        .map(|a| format!("{SWITCH_POINT_PREFIX}{}", a.name))
        .collect();
    for point in &exposed_executors {
        let held = node.store().point(own, point).map(|p| p.value.clone());
        let withdrawn = matches!(&held, Some(Value::Text(t)) if t.as_str() == UNEXPOSED);
        if held.is_none() || withdrawn {
            set_point(node, now, point, "ready");
        }
    }
    for actuator in config.actuators.iter().filter(|a| a.mqtt) {
        // At start the device is off, whatever the last run left.
        let point = format!("{SWITCH_POINT_PREFIX}{}", actuator.name);
        let is_bool = matches!(
            node.store().point(own, &point).map(|p| &p.value),
            Some(Value::Bool(_))
        );
        if start || !is_bool {
            actuator_switched(config, node, now, &actuator.name, false);
        }
    }
    // Points of an earlier configuration (restored from the state
    // directory) must not keep offering what is no longer exposed, nor
    // claim a bridge role this node no longer plays.
    let held: Vec<String> = node
        .store()
        .origin(own)
        .map(|o| o.points.keys().map(|k| k.to_string()).collect())
        .unwrap_or_default();
    let bridging = config
        .mqtt
        .as_ref()
        .is_some_and(|m| m.bridge == BridgeRole::Auto);
    for point in held {
        let stale = (point.starts_with(EXEC_POINT_PREFIX) && !exposed_executors.contains(&point))
            || (point.starts_with(SWITCH_POINT_PREFIX) && !exposed_switches.contains(&point));
        let value = node.store().point(own, &point).map(|p| p.value.clone());
        if stale && !matches!(&value, Some(Value::Text(t)) if t.as_str() == UNEXPOSED) {
            set_point(node, now, &point, UNEXPOSED);
        }
        let claims = matches!(&value, Some(Value::Text(t)) if t.as_str() != Role::Offline.as_str());
        if point == election::POINT && !bridging && claims {
            set_point(node, now, &point, Role::Offline.as_str());
        }
    }
}

/// An executor of this node ended: its point says how, if it is exposed.
pub fn executor_ran(config: &Config, node: &mut Node, now: Instant, executor: &str, outcome: &str) {
    if config
        .executors
        .iter()
        .any(|e| e.mqtt && e.name == executor)
    {
        set_point(
            node,
            now,
            &format!("{EXEC_POINT_PREFIX}{executor}"),
            outcome,
        );
    }
}

/// Prefix of the Bool point each MQTT-exposed actuator keeps its state in.
pub const SWITCH_POINT_PREFIX: &str = "switch.";

/// The configured executors, and for each actuator with `mqtt = true` the
/// two that switch it: `NAME.on` and `NAME.off` (remote, queued, so a
/// quick off after on runs in order).
pub fn all_executors(config: &Config) -> Vec<shoal_config::ExecutorSection> {
    use shoal_config::{Action, ActuatorAction, ExecutorSection, Policy};
    let mut all = config.executors.clone();
    for actuator in config.actuators.iter().filter(|a| a.mqtt) {
        for (word, on) in [("on", true), ("off", false)] {
            let name = format!("{}.{word}", actuator.name);
            if all.iter().any(|e| e.name == name) {
                continue;
            }
            all.push(ExecutorSection {
                name,
                action: Action::Actuator {
                    actuator: actuator.name.clone(),
                    command: ActuatorAction::Set(on),
                },
                remote: true,
                mqtt: false,
                timeout: Duration::from_secs(10),
                policy: Policy::Queue,
            });
        }
    }
    all
}

/// An actuator of this node was driven: an exposed one's state point says
/// whether it is on.
pub fn actuator_switched(config: &Config, node: &mut Node, now: Instant, actuator: &str, on: bool) {
    if config
        .actuators
        .iter()
        .any(|a| a.mqtt && a.name == actuator)
    {
        let point = format!("{SWITCH_POINT_PREFIX}{actuator}");
        super::runs::publish_own(node, now, &point, Value::Bool(on));
    }
}

/// The password in `path` (its first line), read at start.
pub fn read_password(path: &std::path::Path) -> Result<Vec<u8>, String> {
    super::files::read_first_line(path, "mqtt.password_file").map(String::into_bytes)
}

impl Bridge {
    /// At the agent's start: announces this node's exposed executors and
    /// switches, reads the password, and starts the bridge if `[mqtt]`
    /// asks for one.
    pub fn open(
        ex: &smol::LocalExecutor<'static>,
        config: &Config,
        node: &mut Node,
    ) -> Result<Option<Bridge>, String> {
        let password = match config.mqtt.as_ref().and_then(|m| m.password_file.as_ref()) {
            Some(path) => Some(read_password(path)?),
            None => None,
        };
        announce_executors(config, node, Instant::ZERO, true);
        Ok(Bridge::start(ex, config, node, Instant::ZERO, password))
    }

    /// Starts the MQTT connection when the configuration has `[mqtt]` with
    /// a bridge role or `mqtt` sensors (`None` otherwise).
    pub fn start(
        ex: &smol::LocalExecutor<'static>,
        config: &Config,
        node: &mut Node,
        now: Instant,
        password: Option<Vec<u8>>,
    ) -> Option<Bridge> {
        let section = config.mqtt.clone()?;
        let sources = super::pushed::Sources::new(&config.sensors, "mqtt");
        let bridging = section.bridge == BridgeRole::Auto;
        if !bridging && sources.is_empty() {
            return None;
        }
        let topics = Topics {
            prefix: section.topic_prefix.clone(),
            discovery: section.discovery_prefix.clone(),
        };
        let own_name = node.name().to_string();
        let mut subscriptions = sources.topics();
        if bridging {
            subscriptions.push(format!("{}/+/exec/+/run", topics.prefix));
            subscriptions.push(format!("{}/+/+/set", topics.prefix));
            if !topics.discovery.is_empty() {
                subscriptions.push(format!("{}/status", topics.discovery));
            }
        }
        let settings = Settings {
            host: section.host.clone(),
            port: section.port,
            client_id: format!("shoal-{}", node.id()),
            username: section.username.clone(),
            password,
            keep_alive: section.keepalive,
            will: bridging.then(|| (role_topic(&topics.prefix, &own_name), b"offline".to_vec())),
            subscriptions,
            max_packet: MAX_MESSAGE,
        };
        log::info!(
            "mqtt: connecting to {}:{} (states under {}/, discovery {})",
            section.host,
            section.port,
            topics.prefix,
            if topics.discovery.is_empty() {
                "off"
            } else {
                &topics.discovery
            }
        );
        let timing = node.config();
        let settle_until = now + timing.unreachable_after + timing.beacon_interval;
        if bridging {
            set_point(node, now, election::POINT, Role::Offline.as_str());
        }
        Some(Bridge {
            bridging,
            sources,
            client: Client::start(ex, settings),
            section,
            topics,
            own: node.id(),
            own_name,
            role: Role::Offline,
            connected: false,
            published: BTreeMap::new(),
            dirty_points: BTreeSet::new(),
            dirty_all: false,
            settle_until,
            bridge_seen: None,
            handovers: VecDeque::new(),
            pending: BTreeMap::new(),
            counters: BridgeCounters::default(),
            next_election: now,
            next_full: now,
            resend: false,
            last_full: Instant::ZERO,
            kinds: BTreeMap::new(),
            last_birth: None,
            last_refusal_log: None,
            snapshot: snapshot::Phase::Due,
            reserved_logged: false,
        })
    }

    /// When [`Bridge::tick`] has held source readings to send.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.sources.next_due()
    }

    /// The next event of the connection.
    pub async fn next_event(&self) -> ClientEvent {
        self.client.next_event().await
    }

    /// Notes what an event of the core changes on the broker.
    pub fn observe(&mut self, event: &Event) {
        match event {
            Event::PointChanged { origin, name } => {
                if name.as_str() == election::POINT {
                    self.next_election = Instant::ZERO;
                }
                self.dirty_points.insert((*origin, name.clone()));
            }
            Event::PeerStateChanged { .. }
            | Event::RouteChanged { .. }
            | Event::PeerPruned { .. }
            | Event::OriginForgotten { .. }
            | Event::PeerRestarted { .. }
            | Event::PeerDiscovered { .. } => {
                self.dirty_all = true;
                self.next_election = Instant::ZERO;
            }
            Event::CommandFinished {
                id,
                outcome,
                output,
                ..
            } => self.command_finished(*id, *outcome, output),
            _ => {}
        }
    }

    /// What the connection reported.
    pub fn on_client(&mut self, node: &mut Node, now: Instant, event: ClientEvent) {
        match event {
            ClientEvent::Connected => {
                log::info!(
                    "mqtt: connected to {}:{}",
                    self.section.host,
                    self.section.port
                );
                self.connected = true;
                self.snapshot = snapshot::Phase::Due;
                self.published.clear();
                self.dirty_all = true;
                let before = self.role;
                self.elect(node, now);
                if self.role == before {
                    self.send_role();
                }
            }
            ClientEvent::Disconnected { reason, retry_in } => {
                log::warn!(
                    "mqtt: {} {}:{}: {reason}; trying again in {}",
                    if self.connected {
                        "lost"
                    } else {
                        "no connection to"
                    },
                    self.section.host,
                    self.section.port,
                    shoal_config::format_duration(retry_in)
                );
                self.connected = false;
                self.snapshot = snapshot::Phase::Due;
                self.elect(node, now);
            }
            ClientEvent::Message {
                topic,
                payload,
                retained,
            } => self.on_message(node, now, &topic, &payload, retained),
        }
    }

    fn on_message(
        &mut self,
        node: &mut Node,
        now: Instant,
        topic: &str,
        payload: &[u8],
        retained: bool,
    ) {
        let readings = self
            .sources
            .on_message(now, topic, payload, retained, super::unix_ms());
        let ours = !readings.is_empty() || self.sources.topics().iter().any(|t| t == topic);
        for reading in readings {
            if let Err(error) = node.handle_reading(now, reading) {
                log::warn!("mqtt: a reading was refused: {error}");
            }
        }
        if ours {
            return;
        }
        let discovery = &self.topics.discovery;
        if !discovery.is_empty() && topic.strip_prefix(discovery.as_str()) == Some("/status") {
            let recent = self
                .last_birth
                .is_some_and(|at| now.saturating_since(at) < Duration::from_secs(30));
            if payload == b"online" && self.role == Role::Active && !recent {
                self.last_birth = Some(now);
                log::info!("mqtt: Home Assistant is online: sending the discovery configs again");
                let prefix = format!("{discovery}/");
                self.published
                    .retain(|topic, _| !topic.starts_with(&prefix));
                self.dirty_all = true;
            }
            return;
        }
        if snapshot::covers(&self.topics, topic) {
            // Our own publishes come back while the snapshot is read; only
            // retained ones were there before.
            if retained {
                self.adopt(node, topic, payload);
            }
            return;
        }
        if retained {
            // A command left retained on the broker would run again at every
            // reconnect: commands count only when they are sent.
            self.counters.bad_messages += 1;
            self.log_refusal(
                now,
                &format!("ignored a retained message on {topic}: publish commands without retain"),
            );
            return;
        }
        let parts: Option<Vec<&str>> = topic
            .strip_prefix(self.topics.prefix.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            .map(|rest| rest.split('/').collect());
        match parts.as_deref() {
            Some([target, "exec", executor, "run"]) => {
                if self.role == Role::Active {
                    let (target, executor) = (target.to_string(), executor.to_string());
                    self.command(node, now, &target, &executor, None);
                }
            }
            Some([target, point, "set"]) if point.starts_with(SWITCH_POINT_PREFIX) => {
                if self.role == Role::Active {
                    self.switch(node, now, target, point, payload);
                }
            }
            _ => {
                self.counters.bad_messages += 1;
                log::debug!("mqtt: ignored a message on {topic}");
            }
        }
    }
}

impl Bridge {
    /// `ON`/`OFF` on a switch's command topic: runs `ACTUATOR.on` or
    /// `.off` on its node, if the node shows that actuator as exposed.
    fn switch(&mut self, node: &mut Node, now: Instant, target: &str, point: &str, payload: &[u8]) {
        let actuator = &point[SWITCH_POINT_PREFIX.len()..];
        let word = match payload {
            b"ON" | b"on" | b"true" | b"1" => "on",
            b"OFF" | b"off" | b"false" | b"0" => "off",
            _ => {
                self.counters.bad_messages += 1;
                self.log_refusal(now, &format!("{target}/{point}/set wants ON or OFF"));
                return;
            }
        };
        let executor = format!("{actuator}.{word}");
        self.command(node, now, target, &executor, Some(point));
    }

    /// A button press or a message on a command topic: runs `executor` on
    /// `target` through the mesh if it is exposed to MQTT (the point
    /// `exposed_by`, `exec.EXECUTOR` unless said, exists on the target).
    fn command(
        &mut self,
        node: &mut Node,
        now: Instant,
        target: &str,
        executor: &str,
        exposed_by: Option<&str>,
    ) {
        let checked = node
            .find_node(now, target)
            .map_err(|error| match error {
                shoal_core::names::FindError::Unknown => "no such node".to_owned(),
                shoal_core::names::FindError::Ambiguous(ids) => {
                    format!("{} nodes have that name", ids.len())
                }
            })
            .and_then(|id| {
                let point = exposed_by
                    .map_or_else(|| format!("{EXEC_POINT_PREFIX}{executor}"), str::to_owned);
                let exposed = node
                    .store()
                    .point(id, &point)
                    .is_some_and(|p| match &p.value {
                        Value::Text(text) => text.as_str() != UNEXPOSED,
                        Value::Bool(_) => true,
                        _ => exposed_by.is_none(),
                    });
                match exposed {
                    true => Ok(id),
                    false => Err(
                        "not exposed to MQTT (mqtt = true in its [[executor]] or [[actuator]])"
                            .to_owned(),
                    ),
                }
            })
            .and_then(|id| match self.pending.len() < MAX_PENDING {
                true => Ok(id),
                false => Err("too many commands waiting".to_owned()),
            })
            .and_then(|id| {
                let name = wire::name(executor).ok_or("not a valid executor name")?;
                node.exec(now, id, name, super::api::EXEC_WAIT)
                    .map_err(|error| error.to_string())
            });
        match checked {
            Ok(request) => {
                log::info!("mqtt: exec {executor} on {target} (request {request})");
                self.counters.commands += 1;
                self.pending
                    .insert(request, (target.to_owned(), executor.to_owned()));
            }
            Err(why) => {
                self.log_refusal(
                    now,
                    &format!("refused to run {executor} on {target}: {why}"),
                );
                self.counters.commands_refused += 1;
                let payload = serde_json::json!({
                    "outcome": "refused",
                    "error": why,
                    "at_ms": super::unix_ms(),
                });
                let topic = format!("{}/{target}/exec/{executor}/result", self.topics.prefix);
                self.send(topic, payload.to_string().into_bytes(), false);
            }
        }
    }

    fn command_finished(&mut self, id: u32, outcome: wire::Outcome, output: &str) {
        let Some((target, executor)) = self.pending.remove(&id) else {
            return;
        };
        log::info!("mqtt: {executor} on {target}: {outcome}");
        let exit_code = match outcome {
            wire::Outcome::Exited(code) => Some(code),
            _ => None,
        };
        let payload = serde_json::json!({
            "outcome": outcome.to_string(),
            "exit_code": exit_code,
            "output": output,
            "at_ms": super::unix_ms(),
        });
        let topic = format!("{}/{target}/exec/{executor}/result", self.topics.prefix);
        self.send(topic, payload.to_string().into_bytes(), false);
    }

    /// After every step: held source readings that are due, the election,
    /// then what changed to the broker. True when it gave the node
    /// something to send (a reading, or its role changed).
    pub fn tick(&mut self, node: &mut Node, now: Instant) -> bool {
        let due = self.sources.due(now);
        let mut changed = !due.is_empty();
        for reading in due {
            if let Err(error) = node.handle_reading(now, reading) {
                log::warn!("mqtt: a reading was refused: {error}");
            }
        }
        let role = self.role;
        if now >= self.next_election {
            self.elect(node, now);
        }
        changed |= role != self.role;
        self.read_snapshot(now);
        if self.role != Role::Active || !self.connected {
            self.dirty_points.clear();
            return changed;
        }
        if now >= self.next_full || (self.resend && self.client.queued() < client::OUT_QUEUE / 2) {
            self.resend = false;
            self.dirty_all = true;
        }
        if self.dirty_all && now >= self.last_full + Duration::from_secs(1) {
            self.dirty_all = false;
            self.last_full = now;
            self.dirty_points.clear();
            self.next_full = now + FULL_EVERY;
            self.publish_all(node, now);
            return changed;
        }
        for (origin, name) in std::mem::take(&mut self.dirty_points) {
            let mut wanted = BTreeMap::new();
            if let Some(point) = node.store().point(origin, &name) {
                self.point_messages(node, now, origin, &name, point, &mut wanted);
            }
            for (topic, (payload, signed)) in in_order(wanted) {
                self.put(topic, payload, signed);
            }
        }
        changed
    }

    /// Decides this node's role from the mesh's view (see `election.rs`).
    fn elect(&mut self, node: &mut Node, now: Instant) {
        self.next_election = now + Duration::from_secs(1);
        if !self.bridging {
            return;
        }
        let others: Vec<(NodeId, Role)> = node
            .store()
            .origins()
            .keys()
            .filter(|id| **id != self.own)
            .filter(|id| {
                // A SUSPECT node keeps its claim: a lost beacon or two on
                // Wi-Fi is not a handover.
                node.reach(now, **id).is_some_and(|reach| {
                    matches!(reach.state, PeerState::Healthy | PeerState::Suspect)
                })
            })
            .filter_map(
                |id| match &node.store().point(*id, election::POINT)?.value {
                    Value::Text(text) => Some((*id, Role::parse(text)?)),
                    _ => None,
                },
            )
            .collect();
        let settled = now >= self.settle_until;
        let next = election::next_role(self.own, self.role, self.connected, settled, &others);
        let rival = others.iter().any(|(_, role)| *role == Role::Active);
        if next == Role::Active && self.role == Role::Active && rival {
            // Another node published as the bridge for a while (a split
            // view): what the broker holds may be its, so all of ours again.
            log::info!("mqtt: another node was active too; publishing everything again");
            self.published.clear();
            self.dirty_all = true;
        }
        let bridge = match next {
            Role::Active => Some(self.own),
            _ => others
                .iter()
                .filter(|(_, role)| *role == Role::Active)
                .map(|(id, _)| *id)
                .min(),
        };
        if bridge != self.bridge_seen {
            let name = |id: Option<NodeId>| id.map(|id| super::answers::name_or_id(node, id));
            let handover = Handover {
                at_ms: super::unix_ms(),
                from: name(self.bridge_seen),
                to: name(bridge),
            };
            log::info!(
                "mqtt: the bridge is now {} (was {})",
                handover.to.as_deref().unwrap_or("none"),
                handover.from.as_deref().unwrap_or("none")
            );
            if self.handovers.len() >= MAX_HANDOVERS {
                self.handovers.pop_front();
            }
            self.handovers.push_back(handover);
            self.counters.handovers += 1;
            self.bridge_seen = bridge;
        }
        if next != self.role {
            log::info!(
                "mqtt: this node is {} (was {})",
                next.as_str(),
                self.role.as_str()
            );
            self.role = next;
            set_point(node, now, election::POINT, next.as_str());
            self.send_role();
            if next == Role::Active {
                self.published.clear();
                self.dirty_all = true;
            }
        }
    }

    /// Says this node's role on `P/bridge/NODE` (retained).
    fn send_role(&mut self) {
        if !self.bridging {
            return;
        }
        let topic = role_topic(&self.topics.prefix, &self.own_name);
        let role = self.role.as_str().as_bytes().to_vec();
        self.published.remove(&topic);
        self.send(topic, role, true);
    }
}

impl Bridge {
    /// Subscribes to what earlier bridges may have left once this node is
    /// the bridge and connected, and unsubscribes after `READ_FOR`; the
    /// full pass that follows clears what nothing wants.
    fn read_snapshot(&mut self, now: Instant) {
        use snapshot::Phase;
        let active = self.role == Role::Active && self.connected;
        match self.snapshot {
            Phase::Due if active => {
                let filters = snapshot::filters(&self.topics);
                if self.client.hand(client::Outgoing::Subscribe(filters)) {
                    self.snapshot = Phase::Reading {
                        until: now + snapshot::READ_FOR,
                        adopted: 0,
                    };
                }
            }
            Phase::Reading { until, adopted } if !active || now >= until => {
                // A lost connection took the subscription with it.
                let filters = snapshot::filters(&self.topics);
                if self.connected && !self.client.hand(client::Outgoing::Unsubscribe(filters)) {
                    return;
                }
                self.snapshot = if active { Phase::Done } else { Phase::Due };
                if active {
                    log::info!("mqtt: read the broker's retained topics: {adopted} to compare with the mesh");
                    self.dirty_all = true;
                }
            }
            Phase::Done if !active => self.snapshot = Phase::Due,
            _ => {}
        }
    }

    /// A retained message the snapshot found: remembered as published
    /// (unless this bridge published the topic itself), so the next full
    /// pass clears it when nothing in the mesh wants it.
    fn adopt(&mut self, node: &Node, topic: &str, payload: &[u8]) {
        let snapshot::Phase::Reading { until, adopted } = self.snapshot else {
            return;
        };
        if adopted >= snapshot::MAX_ADOPTED || self.published.contains_key(topic) {
            return;
        }
        let known = |name: &str| {
            name == self.own_name
                || node
                    .store()
                    .origins()
                    .values()
                    .any(|origin| origin.name.as_str() == name)
        };
        if snapshot::clearable(&self.topics, topic, payload, known) {
            self.published.insert(topic.to_owned(), signature(payload));
            self.snapshot = snapshot::Phase::Reading {
                until,
                adopted: adopted + 1,
            };
        }
    }
}

/// How often the active bridge compares everything with what it published.
const FULL_EVERY: Duration = Duration::from_secs(60);

/// A retained message wanted on the broker: its payload, and what is
/// compared to decide whether it changed (an attributes message's age
/// changes every time; that alone is not worth a message).
type Wanted = BTreeMap<String, (Vec<u8>, u64)>;

/// What `published` remembers of a payload: a hash, not the bytes.
fn signature(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

fn want(wanted: &mut Wanted, topic: String, payload: Vec<u8>) {
    let signed = signature(&payload);
    wanted.insert(topic, (payload, signed));
}

/// Attributes before states: a point going into error is unavailable in
/// Home Assistant before its `unavailable` state arrives.
fn in_order(wanted: Wanted) -> impl Iterator<Item = (String, (Vec<u8>, u64))> {
    let (first, rest): (Vec<_>, Vec<_>) = wanted
        .into_iter()
        .partition(|(topic, _)| topic.ends_with("/attributes"));
    first.into_iter().chain(rest)
}

/// A node as Home Assistant's device.
fn device(node: &Node, id: NodeId, name: &str) -> (String, Option<String>, Option<String>) {
    let meta = if id == node.id() {
        node.config().meta.clone()
    } else {
        node.peers().get(id).and_then(|peer| peer.meta.clone())
    };
    let known = |fact: &str| (!fact.is_empty()).then(|| fact.to_owned());
    (
        name.to_owned(),
        meta.as_ref().and_then(|m| known(&m.model)),
        meta.as_ref().and_then(|m| known(&m.version)),
    )
}

impl Bridge {
    /// Publishes everything that differs from what the broker holds, and
    /// clears what is no longer there (a pruned node's or point's states
    /// and discovery configs).
    fn publish_all(&mut self, node: &Node, now: Instant) {
        let mut wanted = Wanted::new();
        let prefix = &self.topics.prefix;
        want(
            &mut wanted,
            format!("{prefix}/bridge"),
            self.own_name.clone().into_bytes(),
        );
        let role = Role::Active.as_str().as_bytes().to_vec();
        want(&mut wanted, role_topic(prefix, &self.own_name), role);
        for (id, reach) in node.nodes(now) {
            let Some(name) = node.node_name(id) else {
                continue;
            };
            if name.as_str() == shoal_config::RESERVED_NODE {
                continue;
            }
            let online = matches!(reach.state, PeerState::Healthy | PeerState::Suspect);
            let word = if online { "online" } else { "offline" };
            want(
                &mut wanted,
                format!("{prefix}/{name}/availability"),
                word.into(),
            );
        }
        for (origin, held) in node.store().origins() {
            for (name, point) in &held.points {
                self.point_messages(node, now, *origin, name, point, &mut wanted);
            }
        }
        let store = node.store();
        self.kinds
            .retain(|(origin, name), _| store.point(*origin, name).is_some());
        let gone: Vec<String> = self
            .published
            .keys()
            .filter(|topic| !wanted.contains_key(*topic))
            .cloned()
            .collect();
        for (topic, (payload, signed)) in in_order(wanted) {
            self.put(topic, payload, signed);
        }
        for topic in gone {
            if self.send(topic.clone(), Vec::new(), true) {
                self.published.remove(&topic);
            }
        }
    }

    /// The state, attributes and discovery config of one point.
    fn point_messages(
        &mut self,
        node: &Node,
        now: Instant,
        origin: NodeId,
        name: &str,
        point: &shoal_core::store::Point,
        wanted: &mut Wanted,
    ) {
        let Some(origin_name) = node.store().origin(origin).map(|o| o.name.to_string()) else {
            return;
        };
        if origin_name == shoal_config::RESERVED_NODE || name == shoal_config::RESERVED_POINT {
            // Its topics would be the bridge's own (`P/bridge/...`,
            // `P/NODE/availability`); the configuration refuses these
            // names, but another agent's (an older one's) may not.
            if !self.reserved_logged {
                self.reserved_logged = true;
                log::warn!("mqtt: not publishing {origin_name}/{name}: {:?} nodes and {:?} points would overwrite the bridge's own topics; rename it", shoal_config::RESERVED_NODE, shoal_config::RESERVED_POINT);
            }
            return;
        }
        let prefix = &self.topics.prefix;
        let state = format!("{prefix}/{origin_name}/{name}");
        want(
            wanted,
            state.clone(),
            state_payload(&point.value).into_bytes(),
        );
        let error = match &point.value {
            Value::Error(why) => Some(why.as_str()),
            _ => None,
        };
        let mut attributes = serde_json::json!({
            "unit": point.unit.as_str(),
            "origin": origin_name,
            "origin_id": origin.to_string(),
            "ts_ms": point.ts_ms,
            "error": error,
        });
        let signed = signature(attributes.to_string().as_bytes());
        attributes["age_ms"] = serde_json::json!(point.age(now));
        let payload = attributes.to_string().into_bytes();
        wanted.insert(format!("{state}/attributes"), (payload, signed));
        let (device_name, model, version) = device(node, origin, &origin_name);
        let (own_name, own_model, own_version) = device(node, self.own, &self.own_name);
        let owner = Device {
            id: origin,
            name: &device_name,
            model: model.as_deref(),
            version: version.as_deref(),
        };
        let bridge = Device {
            id: self.own,
            name: &own_name,
            model: own_model.as_deref(),
            version: own_version.as_deref(),
        };
        let mut entities = Vec::new();
        match name.strip_prefix(SWITCH_POINT_PREFIX) {
            Some(actuator) if matches!(point.value, Value::Bool(_)) => {
                entities.push(Entity::Switch { actuator });
            }
            _ => {
                let key = (origin, wire::name(name).unwrap_or_default());
                let kind = match &point.value {
                    Value::Error(_) => self
                        .kinds
                        .get(&key)
                        .copied()
                        .unwrap_or_else(|| kind(&point.value, &point.unit)),
                    value => {
                        let kind = kind(value, &point.unit);
                        self.kinds.insert(key, kind);
                        kind
                    }
                };
                entities.push(Entity::Point {
                    name,
                    unit: point.unit.as_str(),
                    kind,
                });
            }
        }
        let withdrawn = matches!(&point.value, Value::Text(t) if t.as_str() == UNEXPOSED);
        if let Some(executor) = name.strip_prefix(EXEC_POINT_PREFIX).filter(|_| !withdrawn) {
            entities.push(Entity::Button { executor });
        }
        for entity in &entities {
            if let Some(message) = discovery::config(&self.topics, &owner, &bridge, entity) {
                want(wanted, message.topic, message.payload.into_bytes());
            }
        }
    }

    /// Publishes a retained message unless the broker has it already.
    fn put(&mut self, topic: String, payload: Vec<u8>, signed: u64) {
        if self.published.get(&topic) == Some(&signed) {
            return;
        }
        if self.send(topic.clone(), payload, true) {
            self.published.insert(topic, signed);
        }
    }

    /// Queues a message; when the queue is full, the next full pass (once
    /// it has half drained) sends what did not fit.
    fn send(&mut self, topic: String, payload: Vec<u8>, retain: bool) -> bool {
        if !self.connected {
            return false;
        }
        if self.client.publish(topic, payload, retain) {
            return true;
        }
        if self.counters.queue_full == 0 {
            log::warn!("mqtt: the send queue is full (the broker is slow, or the mesh is large); the rest follows once it drains");
        }
        self.counters.queue_full += 1;
        // A lost result or refusal is not resent; a retained message is:
        // what was queued stays recorded (it will be sent); what was not is
        // missing from `published`, so the next full pass sends it.
        self.resend |= retain;
        false
    }
}

impl Bridge {
    /// Logs a refusal or an ignored message, at most one a second (anyone
    /// who can publish to the broker could otherwise fill the log).
    fn log_refusal(&mut self, now: Instant, what: &str) {
        let quiet = self
            .last_refusal_log
            .is_some_and(|at| now.saturating_since(at) < Duration::from_secs(1));
        if quiet {
            log::debug!("mqtt: {what}");
        } else {
            self.last_refusal_log = Some(now);
            log::warn!("mqtt: {what}");
        }
    }

    /// Messages its `mqtt` sensors could not read.
    pub fn sensor_errors(&self) -> u64 {
        self.sources.errors
    }

    /// This node's role now.
    pub fn role(&self) -> Role {
        self.role
    }

    /// What `/api/status` says of MQTT.
    pub fn status_json(&self) -> serde_json::Value {
        let stats = self.client.stats();
        let handovers: Vec<serde_json::Value> = self
            .handovers
            .iter()
            .map(|h| serde_json::json!({"at_ms": h.at_ms, "from": h.from, "to": h.to}))
            .collect();
        serde_json::json!({
            "broker": format!("{}:{}", self.section.host, self.section.port),
            "connected": self.connected,
            "role": self.role.as_str(),
            "bridge": self.handovers.back().and_then(|h| h.to.clone()),
            "handovers": handovers,
            "connects": stats.connects.get(),
            "disconnects": stats.disconnects.get(),
            "published": stats.published.get(),
            "received": stats.received.get(),
            "dropped": stats.dropped.get(),
            "queue_full": self.counters.queue_full,
            "commands": self.counters.commands,
            "commands_refused": self.counters.commands_refused,
            "bad_messages": self.counters.bad_messages,
            "sensor_errors": self.sources.errors,
            "handovers_seen": self.counters.handovers,
        })
    }

    /// What `/metrics` says of MQTT: (name, help, type, value), the names
    /// without their `shoal_mqtt_` prefix.
    pub fn metrics(&self) -> Vec<(&'static str, &'static str, &'static str, u64)> {
        let stats = self.client.stats();
        let c = &self.counters;
        vec![
            (
                "connected",
                "1 while connected to the broker",
                "gauge",
                u64::from(self.connected),
            ),
            (
                "bridge_active",
                "1 while this node publishes the mesh",
                "gauge",
                u64::from(self.role == Role::Active),
            ),
            (
                "connects_total",
                "Connections to the broker made",
                "counter",
                stats.connects.get(),
            ),
            (
                "disconnects_total",
                "Connections that failed or ended",
                "counter",
                stats.disconnects.get(),
            ),
            (
                "published_total",
                "Messages sent to the broker",
                "counter",
                stats.published.get(),
            ),
            (
                "received_total",
                "Messages received from the broker",
                "counter",
                stats.received.get(),
            ),
            (
                "dropped_total",
                "Received messages dropped: too large, or the agent's queue full",
                "counter",
                stats.dropped.get(),
            ),
            (
                "queue_full_total",
                "Messages not queued for sending (sent on the next full pass)",
                "counter",
                c.queue_full,
            ),
            (
                "commands_total",
                "Commands from MQTT run through the mesh",
                "counter",
                c.commands,
            ),
            (
                "commands_refused_total",
                "Commands from MQTT refused (not exposed, unknown node, bad payload)",
                "counter",
                c.commands_refused,
            ),
            (
                "bad_messages_total",
                "Messages on subscribed topics that meant nothing (retained commands included)",
                "counter",
                c.bad_messages,
            ),
            (
                "sensor_errors_total",
                "Messages an mqtt sensor could not read",
                "counter",
                self.sources.errors,
            ),
            (
                "handovers_total",
                "Changes of the node publishing the mesh",
                "counter",
                c.handovers,
            ),
        ]
    }

    /// A graceful stop: this node's role topic says `offline` (the broker
    /// then never publishes the Last Will), and the connection closes.
    pub async fn close(mut self) {
        self.role = Role::Offline;
        self.send_role();
        self.client.close(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests;
