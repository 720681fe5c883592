//! The node's side of rules and derived points: where expressions find
//! points (the store, with each origin's liveness), when rules are
//! evaluated, and how derived points are published.

use super::peers::PeerState;
use super::rules::{self, ComputeSpec, Evaluation, Points, Problem, RuleAction, RuleStuck, Rules};
use super::time::Instant;
use super::wire::{self, NodeId, Value};
use super::{Event, Node, Reading};
use shoal_config::expr::{Pattern, PointName};
use std::time::Duration;

/// Rules are evaluated at least this often (staleness needs no input to
/// change).
const RULES_EVERY: Duration = Duration::from_secs(1);

/// The rules and derived points of a node.
#[derive(Debug, Default)]
pub(super) struct Automation {
    rules: Rules,
    computes: Vec<ComputeSpec>,
    /// What each compute last published (`None`: unknown).
    published: Vec<Option<Option<f64>>>,
    /// Something changed since the last evaluation.
    pub(super) dirty: bool,
    /// When a pending rule becomes due, or the periodic evaluation.
    pub(super) next: Option<Instant>,
    /// Wall-clock ms at core time zero (for `stale_after` against the
    /// origins' timestamps).
    pub(super) wall_offset_ms: u64,
}

/// The store as expressions see it at one moment.
struct StorePoints<'a> {
    node: &'a Node,
    now: Instant,
}

impl StorePoints<'_> {
    /// Every point `pattern` matches, with its value or why it has none;
    /// `Err(Ambiguous)` when it names a node more than one live node is
    /// called.
    fn find(
        &self,
        pattern: &Pattern,
        stale_after: Option<Duration>,
    ) -> Result<Vec<Result<f64, Problem>>, Problem> {
        let node = self.node;
        let own = node.name.as_str();
        let is_live = |id: NodeId| {
            id == node.id
                || node
                    .reach(self.now, id)
                    .is_some_and(|r| matches!(r.state, PeerState::Healthy | PeerState::Suspect))
        };
        // `self` is this node by id, never another that took its name. A node
        // named literally must be one node: two live ones with that name make
        // its points unknown (see `names`), and while one lives, origins of
        // the name that are gone (a re-imaged Pi's old id) are left out.
        let literal = pattern.node != "self" && !pattern.node.contains(['*', '?']);
        let live_named = if literal {
            node.store
                .origins()
                .iter()
                .filter(|(id, o)| o.name.as_str() == pattern.node && is_live(**id))
                .count()
        } else {
            0
        };
        if live_named > 1 {
            return Err(Problem::Ambiguous);
        }
        let mut out = Vec::new();
        for (id, origin) in node.store.origins() {
            if pattern.node == "self" && *id != node.id {
                continue;
            }
            let live = is_live(*id);
            if literal && live_named == 1 && !live {
                continue;
            }
            for (name, point) in &origin.points {
                if !pattern.matches(own, &origin.name, name) {
                    continue;
                }
                // Monotonic ages: an origin's wall clock (most Pis have no
                // real-time clock) never makes a fresh value look stale.
                let fresh = stale_after.is_none_or(|limit| {
                    point.age(self.now) <= u64::try_from(limit.as_millis()).unwrap_or(u64::MAX)
                });
                let value = match point.value {
                    Value::Float(v) => Some(v),
                    Value::Int(v) => Some(v as f64),
                    Value::Bool(b) => Some(if b { 1.0 } else { 0.0 }),
                    Value::Text(_) | Value::Error(_) => None,
                };
                out.push(match value {
                    _ if !live => Err(Problem::NotLive),
                    None => Err(Problem::NoNumber),
                    Some(_) if !fresh => Err(Problem::Stale),
                    Some(v) => Ok(v),
                });
            }
        }
        Ok(out)
    }
}

impl Points for StorePoints<'_> {
    fn lookup(&self, pattern: &Pattern, stale_after: Option<Duration>) -> Vec<Option<f64>> {
        match self.find(pattern, stale_after) {
            Ok(found) => found.into_iter().map(Result::ok).collect(),
            Err(_) => vec![None],
        }
    }

    fn problem(&self, pattern: &Pattern, stale_after: Option<Duration>) -> Problem {
        match self.find(pattern, stale_after) {
            Ok(found) => found
                .into_iter()
                .find_map(Result::err)
                .unwrap_or(Problem::MatchesNothing { suggestion: None }),
            Err(problem) => problem,
        }
    }

    fn point_names(&self) -> Vec<PointName<'_>> {
        let node = self.node;
        node.store
            .origins()
            .iter()
            .flat_map(|(id, origin)| {
                origin.points.keys().map(move |name| PointName {
                    node: origin.name.as_str(),
                    name: name.as_str(),
                    own: *id == node.id,
                })
            })
            .collect()
    }
}

impl Node {
    /// Installs the node's rules and derived points (replacing any).
    pub fn set_rules(&mut self, rules: Rules, computes: Vec<ComputeSpec>) {
        self.automation.published = vec![None; computes.len()];
        self.automation.rules = rules;
        self.automation.computes = computes;
        self.automation.dirty = true;
        self.automation.next = None;
    }

    /// Replaces the rules and derived points at run time (a configuration
    /// reload): unchanged rules keep their state and unchanged derived
    /// points what they published (see [`Rules::reload`]); new and changed
    /// ones start as at start. Everything is evaluated at once, so the
    /// actions of new rules are queued by the time this returns. A removed
    /// derived point keeps its last value in the store, as after a restart.
    pub fn reload_rules(
        &mut self,
        now: Instant,
        rules: Vec<rules::RuleSpec>,
        computes: Vec<ComputeSpec>,
    ) {
        let automation = &mut self.automation;
        automation.rules.reload(rules, now);
        let published = computes
            .iter()
            .map(|compute| {
                automation
                    .computes
                    .iter()
                    .position(|previous| previous == compute)
                    .and_then(|index| automation.published.get(index).copied().flatten())
            })
            .collect();
        automation.published = published;
        automation.computes = computes;
        automation.dirty = true;
        automation.next = None;
        if !self.leaving {
            self.run_rules(now);
        }
    }

    /// Tells the core the wall clock: `wall_ms` (ms since the Unix epoch)
    /// is `now`. Used for `stale_after` against origin timestamps.
    pub fn set_wall_clock(&mut self, now: Instant, wall_ms: u64) {
        self.automation.wall_offset_ms = wall_ms.saturating_sub(now.as_millis());
    }

    /// Each rule's name and status.
    pub fn rules(&self) -> impl Iterator<Item = (&str, &rules::RuleStatus)> {
        self.automation.rules.statuses()
    }

    /// The inputs of rule `name` without a value at `now`, and why (with
    /// the nearest existing name for a pattern that matches nothing).
    pub fn rule_unknown_inputs(&self, now: Instant, name: &str) -> Vec<rules::UnknownInput> {
        let points = StorePoints { node: self, now };
        self.automation.rules.unknown_inputs(name, &points)
    }

    /// Evaluates rules and derived points if anything changed or one is due.
    pub(super) fn run_rules(&mut self, now: Instant) {
        let automation = &self.automation;
        if automation.rules.is_empty() && automation.computes.is_empty() {
            return;
        }
        let due = automation.next.is_some_and(|at| now >= at);
        if !automation.dirty && !due {
            return;
        }
        self.automation.dirty = false;
        let mut rules = std::mem::take(&mut self.automation.rules);
        let Evaluation {
            actions,
            stuck,
            next: pending,
        } = {
            let points = StorePoints { node: self, now };
            rules.evaluate(now, &points)
        };
        self.automation.rules = rules;
        let values = {
            let points = StorePoints { node: self, now };
            rules::computes(&self.automation.computes, &points)
        };
        let periodic = now + RULES_EVERY;
        self.automation.next = Some(pending.map_or(periodic, |at| at.min(periodic)));
        for RuleStuck {
            rule,
            unknown_for,
            inputs,
        } in stuck
        {
            self.push_event(Event::RuleStuck {
                rule,
                unknown_for,
                inputs,
            });
        }
        for RuleAction {
            rule,
            executor,
            cause,
            inputs,
        } in actions
        {
            self.push_event(Event::RuleAction {
                rule,
                executor,
                cause,
                inputs,
            });
        }
        for (index, value) in values.into_iter().enumerate() {
            if self.automation.published.get(index) == Some(&Some(value)) {
                continue;
            }
            let Some(name) = wire::name(&self.automation.computes[index].name) else {
                continue;
            };
            let reading = Reading {
                name,
                value: match value {
                    Some(v) => Value::Float((v * 1000.0).round() / 1000.0),
                    None => Value::Error(
                        heapless::String::try_from("unknown inputs").unwrap_or_default(),
                    ),
                },
                unit: wire::Unit::new(),
                ts_ms: now.as_millis() + self.automation.wall_offset_ms,
            };
            if self.publish_reading(now, reading, 0).is_ok() {
                self.automation.published[index] = Some(value);
            }
        }
    }
}
