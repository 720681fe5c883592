//! Every [`ApiCall`] answered in one place, from the core's state: the
//! agent's loop hands each call here with what it holds besides the node.
//!
//! The HTTP side (`api.rs`) turns requests into calls and answers into
//! responses; nothing here knows about HTTP beyond status codes.

use super::api::{self, Answer, ApiCall, ApiStats};
use super::client;
use super::metrics::{self, Counters};
use super::runs::{RunRecord, Runs};
use serde_json::{json, Value};
use shoal_core::command::ExecError;
use shoal_core::names::FindError;
use shoal_core::peers::PeerState;
use shoal_core::rules::{Problem, RuleState, UnknownInput};
use shoal_core::strangers::Difference;
use shoal_core::time::Instant;
use shoal_core::wire::{self, NodeId};
use shoal_core::{Node, Reading};
use std::collections::VecDeque;
use std::time::Duration;

/// What the loop holds besides the node, for answering.
#[derive(Debug)]
pub struct Context<'a> {
    /// Executor runs: the records, and the execs awaiting answers.
    pub runs: &'a mut Runs,
    /// Since the agent started.
    pub uptime: Duration,
    /// The API's own counters.
    pub api_stats: &'a ApiStats,
    /// The counters `/metrics` shows beyond the core's.
    pub counters: &'a Counters,
    /// Joins and key rotations.
    pub trust: &'a mut super::join::Trust,
    /// The MQTT bridge, with `[mqtt]`.
    pub mqtt: Option<&'a super::mqtt::Bridge>,
    /// Failed sensor reads and error values read, by every kind of sensor.
    pub sensor_errors: u64,
    /// `[[export]]`s and their counters.
    pub exports: &'a super::export::Exports,
    /// This node's history, unless `[history] retain = "0s"`.
    pub recorder: Option<&'a super::recorder::Recorder>,
    /// History asked of other nodes through the mesh.
    pub mesh_history: &'a mut super::mesh_history::MeshHistory,
    /// Runs answers that need the disk (history queries).
    pub ex: &'a smol::LocalExecutor<'static>,
}

/// Answers `call` at `now`. A reply channel that closed (the client went
/// away) is not an error.
pub fn answer(node: &mut Node, now: Instant, call: ApiCall, context: Context<'_>) {
    match call {
        ApiCall::Status(reply) => {
            let mut status = status(node, now);
            if let Some(bridge) = context.mqtt {
                status["mqtt"] = bridge.status_json();
            }
            let _ = reply.try_send(status);
        }
        ApiCall::Peers { healthy, reply } => {
            let _ = reply.try_send(peers(node, now, healthy));
        }
        ApiCall::Rules(reply) => {
            let _ = reply.try_send(rules(node, now, context.runs.records()));
        }
        ApiCall::Metrics(reply) => {
            let _ = reply.try_send(metrics::render(
                node,
                now,
                context.counters,
                context.api_stats,
                context.mqtt,
                context.sensor_errors,
                context.exports,
            ));
        }
        ApiCall::Stats(reply) => {
            let mut stats = stats(
                node,
                now,
                context.uptime,
                context.api_stats,
                context.counters,
                context.sensor_errors,
            );
            stats["exports"] = context.exports.status_json();
            stats["history"] = context.recorder.map_or(
                serde_json::Value::Null,
                super::recorder::Recorder::status_json,
            );
            if let Some(history) = stats["history"].as_object_mut() {
                history.insert("refused".into(), context.mesh_history.refused.into());
            }
            let _ = reply.try_send(stats);
        }
        ApiCall::Points {
            glob,
            history,
            reply,
        } => {
            let _ = reply.try_send(points(node, now, &glob, history));
        }
        ApiCall::Point {
            node: origin,
            name,
            reply,
        } => {
            let _ = reply.try_send(point(node, now, &origin, &name));
        }
        ApiCall::History {
            node: origin,
            name,
            since,
            step,
            reply,
        } => history(node, now, context, (&origin, &name), since, step, reply),
        ApiCall::Ingest { readings, reply } => {
            let _ = reply.try_send(ingest(node, now, readings));
        }
        ApiCall::Exec {
            node: target,
            executor,
            reply,
        } => match exec(node, now, &target, &executor) {
            Ok(id) => context.runs.wait_for(id, reply, target, executor),
            Err(answer) => {
                let _ = reply.try_send(answer);
            }
        },
        ApiCall::Token {
            valid_for,
            member,
            reply,
        } => {
            let member = member.unwrap_or_else(|| context.trust.member.to_string());
            let _ = reply.try_send(super::join::issue(node, now, valid_for, member));
        }
        ApiCall::Reload { knock, reply } => {
            let path = context.trust.key_path.clone();
            let _ = reply.try_send(super::join::reload(node, path.as_deref(), knock));
        }
        ApiCall::Rotate { exclude, reply } => context.trust.rotate(node, now, &exclude, reply),
    }
}

/// `GET /api/points/NODE/NAME`: one point with its history; 404 if there is
/// none, 409 if more than one live node has that name.
fn point(node: &Node, now: Instant, origin_name: &str, name: &str) -> Answer {
    if let Err(FindError::Ambiguous(ids)) = node.find_node(now, origin_name) {
        return Answer::error(
            409,
            format!(
                "{} nodes are named {origin_name:?}: give one another node.name",
                ids.len()
            ),
        );
    }
    node.store()
        .origins()
        .values()
        .find(|o| o.name.as_str() == origin_name)
        .and_then(|o| o.points.get(name).map(|p| (o, p)))
        .map_or_else(
            || Answer::error(404, format!("no point {origin_name}/{name} in this mesh")),
            |(origin, point)| Answer {
                status: 200,
                body: point_json(&origin.name, name, point, now, true),
            },
        )
}

/// `GET /api/points/NODE/NAME/history`: this node's own points from its
/// history file, answered by a task (the file is read on a blocking
/// thread); another node's asked of it through the mesh.
fn history(
    node: &mut Node,
    now: Instant,
    context: Context<'_>,
    (origin, name): (&str, &str),
    since: Duration,
    step: Duration,
    reply: smol::channel::Sender<Answer>,
) {
    use super::mesh_history::{self, MAX_STEPS};
    let answer = |status, text: String| {
        let _ = reply.try_send(Answer::error(status, text));
    };
    if step < Duration::from_secs(60) {
        return answer(
            400,
            "step: at least 1m (the finest history is per minute)".to_owned(),
        );
    }
    let Some(point) = wire::name(name) else {
        return answer(404, format!("no point {origin}/{name} in this mesh"));
    };
    let now_ms = super::unix_ms();
    let range = mesh_history::range(point, since, step, now_ms);
    if mesh_history::steps_in(&range) > MAX_STEPS {
        return answer(400, format!("since/step: at most {MAX_STEPS} steps"));
    }
    let own = node.name().as_str();
    if origin != own && origin != "self" {
        let target = match node.find_node(now, origin) {
            Ok(id) => id,
            Err(FindError::Ambiguous(ids)) => {
                return answer(
                    409,
                    format!(
                        "{} nodes are named {origin:?}: give one another node.name",
                        ids.len()
                    ),
                )
            }
            Err(_) => return answer(404, format!("no node {origin} in this mesh")),
        };
        let what = format!("{origin}/{name}");
        return context
            .mesh_history
            .ask(node, now, target, what, range, reply);
    }
    let Some(recorder) = context.recorder else {
        return answer(
            404,
            "this node keeps no history ([history] retain = \"0s\")".to_owned(),
        );
    };
    // The range the mesh path asks for, read here.
    let query = recorder.query_minutes(&range.0, range.1, range.2, range.3);
    context
        .ex
        .spawn(async move {
            let answer = match query.await {
                Ok(steps) => Answer {
                    status: 200,
                    body: mesh_history::steps_json(&steps),
                },
                Err(why) => Answer::error(500, why),
            };
            let _ = reply.send(answer).await;
        })
        .detach();
}

/// `POST /api/points`: readings as this node's points; 422 names the
/// refused ones (the others are kept).
fn ingest(node: &mut Node, now: Instant, readings: Vec<(String, f64, String)>) -> Answer {
    let mut accepted = 0;
    let mut refused = Vec::new();
    for (name, value, unit) in readings {
        let (Some(point), Some(unit)) = (wire::name(&name), wire::unit(&unit)) else {
            refused.push(format!("{name}: invalid"));
            continue;
        };
        if shoal_config::is_reserved_point(&name) {
            refused.push(format!(
                "{name}: the name is the agent's own (exec., switch., mqtt., availability)"
            ));
            continue;
        }
        let reading = Reading {
            name: point,
            value: wire::Value::Float(value),
            unit,
            ts_ms: super::unix_ms(),
        };
        match node.handle_reading(now, reading) {
            Ok(()) => accepted += 1,
            Err(error) => refused.push(format!("{name}: {error}")),
        }
    }
    if refused.is_empty() {
        Answer {
            status: 200,
            body: json!({ "accepted": accepted }),
        }
    } else {
        Answer::error(
            422,
            format!("accepted {accepted}; refused: {}", refused.join("; ")),
        )
    }
}

/// `POST /api/exec/NODE/EXECUTOR`: sends the command; its request number,
/// or the answer that it could not be sent.
fn exec(node: &mut Node, now: Instant, target_name: &str, executor: &str) -> Result<u32, Answer> {
    let Some(executor_name) = wire::name(executor) else {
        return Err(Answer::error(
            400,
            format!("{executor:?} is not a valid executor name"),
        ));
    };
    let target = match node.find_node(now, target_name) {
        Ok(target) => target,
        Err(FindError::Unknown) => {
            return Err(Answer::error(
                404,
                format!(
                    "unknown node {target_name:?}: not in this mesh (shoal status lists the nodes)"
                ),
            ))
        }
        Err(FindError::Ambiguous(ids)) => {
            let ids: Vec<String> = ids.iter().map(NodeId::to_string).collect();
            return Err(Answer::error(
                409,
                format!(
                    "{} nodes are named {target_name:?} (ids {}): address one by its id, or give one another node.name",
                    ids.len(),
                    ids.join(", ")
                ),
            ));
        }
    };
    match node.exec(now, target, executor_name, api::EXEC_WAIT) {
        Ok(id) => {
            log::info!("exec {executor} on {target_name} (request {id})");
            Ok(id)
        }
        Err(error) => {
            let status = match error {
                ExecError::UnknownNode => 404,
                ExecError::TooManyPending => 429,
                ExecError::Unreachable | ExecError::Leaving => 503,
            };
            Err(Answer::error(
                status,
                format!("cannot run {executor} on {target_name}: {error}"),
            ))
        }
    }
}

/// The name of node `id`, or its id (for people: the API, the dashboard).
pub fn name_or_id(node: &Node, id: NodeId) -> String {
    node.node_name(id)
        .map_or_else(|| id.to_string(), |name| name.to_string())
}

/// A fact of a node's metadata, `None` when it did not say.
fn known(fact: &str) -> Option<String> {
    (!fact.is_empty()).then(|| fact.to_owned())
}

/// How the mesh is: of the known nodes that count (`total`), how many are
/// HEALTHY (`active`). A node that LEFT stopped deliberately and said so:
/// it counts neither way, so a planned stop does not degrade the mesh for
/// the hour until it is forgotten; SUSPECT and UNREACHABLE count against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MeshHealth {
    /// HEALTHY nodes.
    pub active: usize,
    /// Nodes that are not LEFT.
    pub total: usize,
}

impl MeshHealth {
    /// The count over the nodes' `states`.
    pub fn of(states: impl IntoIterator<Item = PeerState>) -> MeshHealth {
        let mut health = MeshHealth::default();
        for state in states {
            if state != PeerState::Left {
                health.total += 1;
            }
            if state == PeerState::Healthy {
                health.active += 1;
            }
        }
        health
    }

    /// Every node that counts is HEALTHY (`/api/status` `mesh`: `online`,
    /// else `degraded`).
    pub fn is_online(self) -> bool {
        self.active == self.total
    }
}

/// `GET /api/status`: the mesh as this node sees it.
pub fn status(node: &Node, now: Instant) -> Value {
    let ms = |at: Instant| u64::try_from(now.saturating_since(at).as_millis()).unwrap_or(u64::MAX);
    let mut nodes = Vec::new();
    let mut states = Vec::new();
    for (id, reach) in node.nodes(now) {
        let live = matches!(reach.state, PeerState::Healthy | PeerState::Suspect);
        states.push(reach.state);
        let peer = node.peers().get(id);
        let last_seen = if id == node.id() {
            Some(0)
        } else if reach.via.is_some() {
            node.routes()
                .get(id)
                .and_then(|d| d.route())
                .map(|r| ms(r.heard_at))
        } else {
            peer.map(|p| ms(p.last_alive))
        };
        let meta = if id == node.id() {
            node.config().meta.clone()
        } else {
            peer.and_then(|p| p.meta.clone())
        };
        let via = reach.via.map(|via| name_or_id(node, via));
        let route =
            live.then(|| client::route_text(u64::from(reach.hops), via.as_deref(), node.name()));
        nodes.push(json!({
            "name": name_or_id(node, id),
            "id": id.to_string(),
            "state": reach.state.as_str(),
            "hops": live.then_some(reach.hops),
            "via": via,
            "route": route,
            "last_seen_ms": last_seen,
            "version": meta.as_ref().and_then(|m| known(&m.version)),
            "model": meta.as_ref().and_then(|m| known(&m.model)),
            "os": meta.as_ref().and_then(|m| known(&m.os)),
        }));
    }
    let health = MeshHealth::of(states);
    let conflicts: Vec<Value> = node
        .name_conflicts(now)
        .into_iter()
        .map(|(name, ids)| conflict_json(&name, &ids))
        .collect();
    json!({
        "mesh": if health.is_online() { "online" } else { "degraded" },
        "active": health.active,
        "total": health.total,
        "self": node.name().to_string(),
        "nodes": nodes,
        "conflicts": conflicts,
        "strangers": strangers(node, now),
        "open": node.config().key.is_none(),
    })
}

/// One name used by several live nodes: `{"name", "ids"}` (the API's
/// `conflicts` and the `conflict` event).
pub fn conflict_json(name: &wire::Name, ids: &[NodeId]) -> Value {
    json!({
        "name": name.as_str(),
        "ids": ids.iter().map(NodeId::to_string).collect::<Vec<_>>(),
    })
}

/// Nodes heard that this node cannot talk to (another mesh or protocol).
fn strangers(node: &Node, now: Instant) -> Vec<Value> {
    node.strangers(now)
        .into_iter()
        .map(|stranger| {
            let (mesh, protocol) = match stranger.difference {
                Difference::Mesh(mesh) => (Some(format!("{mesh:08x}")), None),
                Difference::Protocol(version) => (None, Some(version)),
            };
            let open = stranger.difference == Difference::Mesh(shoal_core::wire::OPEN_MESH_ID);
            json!({
                "id": stranger.id.to_string(),
                "name": stranger.name.as_ref().map(|n| n.as_str()),
                "address": stranger.addr.to_string(),
                "mesh": mesh,
                "protocol": protocol,
                "open": open,
                "frames": stranger.frames,
                "last_heard_ms": u64::try_from(now.saturating_since(stranger.last_heard).as_millis()).unwrap_or(u64::MAX),
            })
        })
        .collect()
}

/// A point's value as JSON: a number, a truth, a text, or `{"error": ...}`.
pub fn value_json(value: &shoal_core::wire::Value) -> Value {
    use shoal_core::wire::Value as V;
    match value {
        V::Float(v) => json!(v),
        V::Int(v) => json!(v),
        V::Bool(b) => json!(b),
        V::Text(t) => json!(t.as_str()),
        V::Error(e) => json!({ "error": e.as_str() }),
    }
}

/// `GET /api/points`: every point matching `glob` (`NODE/NAME`, or just
/// `NAME` for any node), by node name, then point name.
pub fn points(node: &Node, now: Instant, glob: &str, history: bool) -> Value {
    let (node_glob, name_glob) = glob.split_once('/').unwrap_or(("*", glob));
    let pattern = shoal_config::expr::Pattern {
        node: node_glob.to_owned(),
        name: name_glob.to_owned(),
    };
    let own = node.name().as_str();
    let mut list = Vec::new();
    let mut origins: Vec<_> = node.store().origins().iter().collect();
    shoal_config::order::sort_by(&mut origins, |(a_id, a), (b_id, b)| {
        a.name.cmp(&b.name).then(a_id.cmp(b_id))
    });
    for (_, origin) in origins {
        for (name, point) in &origin.points {
            if pattern.matches(own, &origin.name, name) {
                list.push(point_json(&origin.name, name, point, now, history));
            }
        }
    }
    Value::Array(list)
}

/// One point as JSON; with `history`, its recent values too.
pub fn point_json(
    node: &str,
    name: &str,
    point: &shoal_core::store::Point,
    now: Instant,
    history: bool,
) -> Value {
    let mut value = json!({
        "node": node,
        "name": name,
        "value": value_json(&point.value),
        "unit": point.unit.as_str(),
        "ts_ms": point.ts_ms,
        // By monotonic clocks, not the origin's wall clock (`ts_ms`).
        "age_ms": point.age(now),
    });
    if history {
        value["history"] = point
            .history
            .iter()
            .map(|s| json!({ "ts_ms": s.ts_ms, "value": value_json(&s.value) }))
            .collect();
    }
    value
}

/// `GET /api/stats`.
pub fn stats(
    node: &Node,
    now: Instant,
    uptime: Duration,
    api: &ApiStats,
    counters: &Counters,
    sensor_errors: u64,
) -> Value {
    let s = node.stats();
    let peers = node.peers();
    json!({
        "total_peers": peers.len(),
        "healthy_peers": peers.iter().filter(|p| p.state == PeerState::Healthy).count(),
        "data_sent": s.bytes_out,
        "data_received": s.bytes_in,
        "frames_sent": s.frames_out,
        "frames_received": s.frames_in,
        "uptime": uptime.as_secs(),
        "dropped": s.dropped,
        "peer_evictions": s.peer_evictions,
        "points": node.store().len(),
        "sensor_errors": sensor_errors,
        "routes_sent": s.routes_sent,
        "commands_relayed": s.commands_relayed,
        "commands_rate_limited": s.commands_rate_limited,
        "commands_forged_origin": s.commands_forged_origin,
        "commands_stale": s.commands_stale,
        "commands_replayed": s.commands_replayed,
        "command_results_refused": s.results_refused,
        "signatures_invalid": s.signatures_invalid,
        "farewells_stale": s.farewells_stale,
        "history_queries": {
            "sent": s.history_queries_sent,
            "unanswered": s.history_queries_unanswered,
            "served": s.history_queries_served,
            "relayed": s.history_relayed,
            "rate_limited": s.history_rate_limited,
            "dropped": s.history_dropped,
        },
        "joins": s.joins,
        "join_tokens_outstanding": node.outstanding_tokens(now),
        "strangers_unlisted": node.unlisted_strangers(),
        "api_requests": api.requests.get(),
        "api_unauthorized": api.unauthorized.get(),
        "api_events_dropped": api.events_dropped.get(),
        "api_refused_connections": api.refused_connections.get(),
        "api_refused_per_client": api.refused_per_client.get(),
        "config_reloads": counters.reloads,
        "config_reloads_failed": counters.reloads_failed,
    })
}

/// `GET /api/rules`: each rule's state, and the last runs (newest first).
/// An UNKNOWN rule says why: `why` (one sentence) and `unknown_inputs`
/// (each input without a value: `pattern`, `problem`, `suggestion`);
/// `stuck` once it has been UNKNOWN longer than its grace.
pub fn rules(node: &Node, now: Instant, runs: &VecDeque<RunRecord>) -> Value {
    let ms = |at: Instant| u64::try_from(now.saturating_since(at).as_millis()).unwrap_or(u64::MAX);
    let rules: Vec<Value> = node
        .rules()
        .map(|(name, status)| {
            let unknown = status.state == RuleState::Unknown;
            let inputs = if unknown {
                node.rule_unknown_inputs(now, name)
            } else {
                Vec::new()
            };
            let why = unknown.then(|| why_text(&inputs));
            json!({
                "name": name,
                "state": status.state.as_str(),
                "since_ms": ms(status.since),
                "last_action": status.last_action.as_ref().map(|(at, executor)| json!({
                    "executor": executor,
                    "ago_ms": ms(*at),
                })),
                "condition": status.condition,
                "stuck": status.stuck,
                "why": why,
                "unknown_inputs": unknown_inputs_json(&inputs),
            })
        })
        .collect();
    let runs: Vec<Value> = runs.iter().rev().map(RunRecord::json).collect();
    json!({ "rules": rules, "runs": runs })
}

/// Why a rule is UNKNOWN, in one line: each input without a value and why.
pub fn why_text(inputs: &[UnknownInput]) -> String {
    if inputs.is_empty() {
        return shoal_core::rules::NO_UNKNOWN_INPUT.to_owned();
    }
    let each: Vec<String> = inputs.iter().map(ToString::to_string).collect();
    each.join("; ")
}

/// Inputs of a rule without a value, for the API and the event stream:
/// `[{"pattern", "problem", "suggestion"}]` (`suggestion` null unless a
/// pattern that matches nothing is close to an existing point).
pub fn unknown_inputs_json(inputs: &[UnknownInput]) -> Value {
    inputs
        .iter()
        .map(|input| {
            let suggestion = match &input.problem {
                Problem::MatchesNothing {
                    suggestion: Some(nearest),
                } => Some(nearest.to_string()),
                _ => None,
            };
            json!({
                "pattern": input.pattern.to_string(),
                "problem": input.problem.as_str(),
                "suggestion": suggestion,
            })
        })
        .collect()
}

/// `GET /api/peers`: direct neighbors with health figures.
pub fn peers(node: &Node, now: Instant, healthy_only: bool) -> Value {
    let list: Vec<Value> = node
        .peers()
        .iter()
        .filter(|p| !healthy_only || p.state == PeerState::Healthy)
        .map(|p| {
            json!({
                "name": name_or_id(node, p.id),
                "id": p.id.to_string(),
                "address": p.addr.to_string(),
                "state": p.state.as_str(),
                "last_seen_ms": u64::try_from(now.saturating_since(p.last_alive).as_millis()).unwrap_or(u64::MAX),
                "frames_in": p.frames_in,
                "frames_out": p.frames_out,
                "success_rate": p.beacon_rate(now, node.config().beacon_interval),
                "lan": p.is_lan(),
            })
        })
        .collect();
    Value::Array(list)
}

#[cfg(test)]
mod tests;
