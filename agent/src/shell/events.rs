//! What the core's events become for people: log lines, the server-sent
//! events of `/api/events`, and the counters `/metrics` shows beyond the
//! core's own (sync latency, rule actions, executor runs).
//!
//! The loop hands every [`Event`] to [`EventFeed::publish`]; the events the
//! loop must act on (commands, rule actions) come back to it.

use super::answers::{name_or_id, value_json};
use super::api::{self, ApiStats};
use super::metrics::Counters;
use super::runs::RunRecord;
use serde_json::{json, Value};
use shoal_core::time::{Buckets, Instant};
use shoal_core::wire::NodeId;
use shoal_core::{Event, Node};
use std::rc::Rc;
use std::time::Duration;

/// The open `/api/events` streams and the counters. See the module docs.
#[derive(Debug)]
pub struct EventFeed {
    subscribers: api::Subscribers,
    stats: Rc<ApiStats>,
    counters: Counters,
    /// "discovered node" lines: a flood of made-up ids (each a new node
    /// for a moment) must not become one log line per frame on the SD
    /// card.
    discoveries: LogBudget,
    /// The clock of `discoveries`.
    started: std::time::Instant,
}

/// A budget of log lines: `burst` at once, then one a second; each line
/// it allows learns how many were held back before it.
#[derive(Debug)]
struct LogBudget {
    bucket: Buckets<()>,
    held: u64,
}

impl LogBudget {
    fn new(burst: u32) -> LogBudget {
        LogBudget {
            bucket: Buckets::new(burst.max(1), Duration::from_secs(1), 1),
            held: 0,
        }
    }

    /// `Some(held back since the last line)` when a line may be written
    /// at `now`; `None`: hold this one back.
    fn take(&mut self, now: Instant) -> Option<u64> {
        if self.bucket.allow(now, ()) {
            Some(std::mem::take(&mut self.held))
        } else {
            self.held += 1;
            None
        }
    }
}

/// "name (id)" once the name is known, else the id: for log lines, where
/// both matter.
pub fn name_and_id(node: &Node, id: NodeId) -> String {
    match node.node_name(id) {
        Some(name) => format!("{name} ({id})"),
        None => id.to_string(),
    }
}

impl EventFeed {
    /// A feed to `subscribers`, counting into `stats`. Up to `max_nodes`
    /// discoveries are logged at once (a whole mesh starting), then one a
    /// second.
    pub fn new(subscribers: api::Subscribers, stats: Rc<ApiStats>, max_nodes: usize) -> EventFeed {
        EventFeed {
            subscribers,
            stats,
            counters: Counters::default(),
            discoveries: LogBudget::new(u32::try_from(max_nodes).unwrap_or(u32::MAX)),
            started: std::time::Instant::now(),
        }
    }

    /// The counters `/metrics` shows.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The sockets' count of datagrams dropped at send, as `/metrics` shows it.
    pub fn note_send_dropped(&mut self, dropped: u64) {
        self.counters.send_dropped = dropped;
    }

    fn send(&self, event: &str, data: &Value) {
        api::broadcast(&self.subscribers, &self.stats, event, data);
    }

    /// A configuration reload was applied, or refused.
    pub fn count_reload(&mut self, applied: bool) {
        if applied {
            self.counters.reloads += 1;
        } else {
            self.counters.reloads_failed += 1;
        }
    }

    /// An executor run ended.
    pub fn run_ended(&mut self, record: &RunRecord) {
        self.counters.count_run(record);
        self.send("run", &record.json());
    }

    /// Logs and streams `event`; gives it back when the loop must act on it
    /// (a command to run or answer, a rule's action).
    pub fn publish(&mut self, node: &Node, event: Event) -> Option<Event> {
        match event {
            Event::PeerDiscovered { peer, addr } => {
                let now = Instant::from_millis(
                    u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
                );
                match self.discoveries.take(now) {
                    Some(held) => {
                        if held > 0 {
                            log::info!("{held} more nodes were discovered and not logged (more than limits.max_nodes at once, then one line a second)");
                        }
                        log::info!("discovered node {} at {addr}", name_and_id(node, peer));
                    }
                    None => log::debug!("discovered node {} at {addr}", name_and_id(node, peer)),
                }
            }
            Event::PeerRestarted { peer, incarnation } => {
                log::info!(
                    "node {} restarted (incarnation {incarnation})",
                    name_and_id(node, peer)
                );
            }
            Event::PeerPruned { peer, evicted } => {
                // The core logs evictions (full table), a few of them: a
                // flood of made-up ids evicts one per frame. Otherwise the
                // node was gone for mesh.prune_after.
                if evicted {
                    log::debug!("forgot node {peer}");
                } else {
                    log::info!("forgot node {peer}");
                }
            }
            Event::OriginForgotten { origin } => {
                log::info!("forgot the points of node {origin}");
                self.send("origin_forgotten", &json!({ "origin": origin.to_string() }));
            }
            Event::RuleAction {
                ref rule,
                ref executor,
                cause,
                ref inputs,
            } => {
                *self.counters.rule_actions.entry(rule.clone()).or_insert(0) += 1;
                self.send(
                    "rule",
                    &json!({
                        "rule": rule, "executor": executor, "state": cause.as_str(), "inputs": inputs,
                    }),
                );
                return Some(event);
            }
            Event::RuleStuck {
                rule,
                unknown_for,
                inputs,
            } => {
                self.send(
                    "rule_stuck",
                    &json!({
                        "rule": rule,
                        "unknown_ms": u64::try_from(unknown_for.as_millis()).unwrap_or(u64::MAX),
                        "why": super::answers::why_text(&inputs),
                        "unknown_inputs": super::answers::unknown_inputs_json(&inputs),
                    }),
                );
                let report = shoal_core::rules::RuleStuck {
                    rule,
                    unknown_for,
                    inputs,
                };
                log::warn!("{report}");
            }
            Event::CommandRequested { .. }
            | Event::CommandFinished { .. }
            | Event::HistoryRequested(_)
            | Event::HistoryAnswered { .. } => return Some(event),
            Event::RouteChanged { node: dest, route } => self.route_changed(node, dest, route),
            Event::IncarnationChanged { incarnation } => {
                log::warn!("frame counter exhausted: now incarnation {incarnation}");
            }
            Event::CounterExhausted => return Some(event),
            Event::NameConflict { name, nodes } => self.name_conflict(node, &name, &nodes),
            Event::MeshKeyChanged { .. } | Event::RotationDone { .. } => return Some(event),
            Event::Joined { name, addr, .. } => {
                log::info!("{name} at {addr} joined the mesh with a token; it got the mesh key");
                self.send(
                    "joined",
                    &json!({ "node": name.as_str(), "addr": addr.to_string() }),
                );
            }
            Event::PointChanged { origin, name } => self.point_changed(node, origin, &name),
            // State changes are logged by the core.
            Event::PeerStateChanged { peer, from, to, .. } => {
                self.send(
                    "node",
                    &json!({
                        "node": name_or_id(node, peer), "from": from.as_str(), "to": to.as_str(),
                    }),
                );
            }
        }
        None
    }

    fn name_conflict(&self, node: &Node, name: &shoal_core::wire::Name, ids: &[NodeId]) {
        let places: Vec<String> = ids
            .iter()
            .map(|&id| {
                let place = if id == node.id() {
                    "this node".to_owned()
                } else if let Some(peer) = node.peers().get(id) {
                    format!("at {}", peer.addr)
                } else {
                    "beyond one hop".to_owned()
                };
                format!("{id} ({place})")
            })
            .collect();
        log::error!(
            "{} live nodes are named {name}: {}; exec and rules refuse the name until one gets another node.name",
            ids.len(),
            places.join(", ")
        );
        self.send("conflict", &super::answers::conflict_json(name, ids));
    }

    fn route_changed(&self, node: &Node, dest: NodeId, route: Option<(NodeId, u8)>) {
        self.send(
            "route",
            &json!({
                "node": name_or_id(node, dest),
                "hops": route.map(|(_, hops)| hops),
                "via": route.map(|(via, _)| name_or_id(node, via)),
            }),
        );
        match route {
            Some((via, hops)) => log::info!(
                "route to {}: {hops} hops via {}",
                name_and_id(node, dest),
                name_and_id(node, via)
            ),
            None => log::info!("route to {}: none through others", name_and_id(node, dest)),
        }
    }

    fn point_changed(&mut self, node: &Node, origin: NodeId, name: &shoal_core::wire::Name) {
        let store = node.store();
        let (Some(owner), Some(point)) = (store.origin(origin), store.point(origin, name)) else {
            return;
        };
        if origin != node.id() {
            // How old the value was when it arrived (monotonic clocks).
            self.counters.observe_latency(point.age_ms as f64 / 1000.0);
        }
        self.send(
            "point",
            &json!({
                "node": owner.name.as_str(),
                "name": name.as_str(),
                "value": value_json(&point.value),
                "unit": point.unit.as_str(),
                "ts_ms": point.ts_ms,
                "age_ms": point.age_ms,
            }),
        );
        log::debug!(
            "point {}/{name} = {}{}",
            owner.name,
            point.value,
            point.unit
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_budget_allows_a_burst_then_one_a_second_and_counts_the_rest() {
        let mut budget = LogBudget::new(3);
        let at = Instant::from_millis;
        assert_eq!(budget.take(at(0)), Some(0));
        assert_eq!(budget.take(at(10)), Some(0));
        assert_eq!(budget.take(at(20)), Some(0));
        assert_eq!(budget.take(at(30)), None);
        assert_eq!(budget.take(at(900)), None);
        // A second after the bucket was filled: one more line, which
        // says how many were held back.
        assert_eq!(budget.take(at(1_000)), Some(2));
        assert_eq!(budget.take(at(1_010)), None);
        assert_eq!(budget.take(at(2_000)), Some(1));
        // Quiet for long enough, the whole burst is back.
        for _ in 0..3 {
            assert_eq!(budget.take(at(10_000)), Some(0));
        }
        assert_eq!(budget.take(at(10_000)), None);
    }
}
