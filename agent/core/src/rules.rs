//! Rules and derived points: expressions over the points of any node,
//! evaluated by the core, producing executor actions.
//!
//! Values are three-valued: a number, a truth, or **unknown**. A point is
//! unknown when it does not exist, holds no number (an error, a text), its
//! origin is UNREACHABLE or LEFT, or it is older than the rule's
//! `stale_after`. Unknown spreads through arithmetic and comparisons; `and`
//! and `or` follow Kleene's logic (`unknown and false` is false). Aggregates
//! (`avg`, `min`, `max`, `sum`, `any`, `all`) use the known points they
//! match and are unknown only when none is known; `count` counts them.
//!
//! A rule is a small state machine:
//!
//! ```text
//!             when true            held for `for`
//!  INACTIVE ------------> PENDING --------------> ACTIVE   (runs `do`)
//!     ^   <-- when false --'                         |
//!     '------------ when false (or `until` true) ----'     (runs `else`)
//!  any state --- an input unknown ---> UNKNOWN            (runs `on_unknown`)
//! ```
//!
//! Actions are edge-triggered: each runs once per transition, never per
//! evaluation. The first known evaluation after start (or after UNKNOWN)
//! counts as a transition, so a heater's `else = "heater_off"` also runs at
//! start when it is cold enough not to heat... or warm enough not to.

use super::time::Instant;
use shoal_config::expr::{Aggregate, Expr, Op, Pattern};
use std::time::Duration;

/// A value during evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Val {
    /// A number.
    Num(f64),
    /// A truth.
    Bool(bool),
    /// Not known.
    Unknown,
}

impl Val {
    fn num(self) -> Option<f64> {
        match self {
            Val::Num(v) => Some(v),
            Val::Bool(b) => Some(if b { 1.0 } else { 0.0 }),
            Val::Unknown => None,
        }
    }

    fn truth(self) -> Option<bool> {
        match self {
            Val::Num(v) => Some(v != 0.0),
            Val::Bool(b) => Some(b),
            Val::Unknown => None,
        }
    }
}

/// Where expressions find points.
pub trait Points {
    /// Every point `pattern` matches: its value, `None` when unknown.
    fn lookup(&self, pattern: &Pattern, stale_after: Option<Duration>) -> Vec<Option<f64>>;
}

/// Evaluates `expr` against `points`.
pub fn eval(expr: &Expr, points: &impl Points, stale_after: Option<Duration>) -> Val {
    match expr {
        Expr::Number(v) => Val::Num(*v),
        Expr::Bool(b) => Val::Bool(*b),
        Expr::Point(pattern) => match points.lookup(pattern, stale_after).first() {
            Some(Some(v)) => Val::Num(*v),
            _ => Val::Unknown,
        },
        Expr::Aggregate(aggregate, pattern) => {
            let known: Vec<f64> = points
                .lookup(pattern, stale_after)
                .into_iter()
                .flatten()
                .collect();
            if *aggregate == Aggregate::Count {
                return Val::Num(known.len() as f64);
            }
            if known.is_empty() {
                return Val::Unknown;
            }
            match aggregate {
                Aggregate::Avg => Val::Num(known.iter().sum::<f64>() / known.len() as f64),
                Aggregate::Min => Val::Num(known.iter().copied().fold(f64::INFINITY, f64::min)),
                Aggregate::Max => Val::Num(known.iter().copied().fold(f64::NEG_INFINITY, f64::max)),
                Aggregate::Sum => Val::Num(known.iter().sum()),
                Aggregate::Any => Val::Bool(known.iter().any(|v| *v != 0.0)),
                Aggregate::All => Val::Bool(known.iter().all(|v| *v != 0.0)),
                Aggregate::Count => Val::Unknown,
            }
        }
        Expr::Neg(inner) => match eval(inner, points, stale_after).num() {
            Some(v) => Val::Num(-v),
            None => Val::Unknown,
        },
        Expr::Not(inner) => match eval(inner, points, stale_after).truth() {
            Some(b) => Val::Bool(!b),
            None => Val::Unknown,
        },
        Expr::Binary(op, left, right) => {
            let a = eval(left, points, stale_after);
            match op {
                Op::And | Op::Or => {
                    let b = eval(right, points, stale_after);
                    kleene(*op, a.truth(), b.truth())
                }
                _ => {
                    let b = eval(right, points, stale_after);
                    let (Some(x), Some(y)) = (a.num(), b.num()) else {
                        return Val::Unknown;
                    };
                    let value = match op {
                        Op::Add => x + y,
                        Op::Sub => x - y,
                        Op::Mul => x * y,
                        Op::Div => x / y,
                        Op::Lt => return Val::Bool(x < y),
                        Op::Le => return Val::Bool(x <= y),
                        Op::Gt => return Val::Bool(x > y),
                        Op::Ge => return Val::Bool(x >= y),
                        Op::Eq => return Val::Bool(x == y),
                        Op::Ne => return Val::Bool(x != y),
                        Op::And | Op::Or => return Val::Unknown,
                    };
                    // Division by zero and overflow give no number.
                    if value.is_finite() {
                        Val::Num(value)
                    } else {
                        Val::Unknown
                    }
                }
            }
        }
    }
}

fn kleene(op: Op, a: Option<bool>, b: Option<bool>) -> Val {
    match (op, a, b) {
        (Op::And, Some(false), _) | (Op::And, _, Some(false)) => Val::Bool(false),
        (Op::And, Some(true), Some(true)) => Val::Bool(true),
        (Op::Or, Some(true), _) | (Op::Or, _, Some(true)) => Val::Bool(true),
        (Op::Or, Some(false), Some(false)) => Val::Bool(false),
        _ => Val::Unknown,
    }
}

/// A configured rule, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSpec {
    /// Its name.
    pub name: String,
    /// The condition.
    pub when: Expr,
    /// Hysteresis: once active, it ends only when this holds.
    pub until: Option<Expr>,
    /// How long `when` must hold before the rule is active.
    pub hold_for: Duration,
    /// Run when the rule becomes active.
    pub run: String,
    /// Run when it becomes inactive.
    pub otherwise: Option<String>,
    /// Run when an input becomes unknown.
    pub on_unknown: Option<String>,
    /// Inputs older than this are unknown.
    pub stale_after: Option<Duration>,
}

impl From<&shoal_config::RuleSection> for RuleSpec {
    /// A `[[rule]]` of the configuration, its expressions parsed already.
    fn from(section: &shoal_config::RuleSection) -> RuleSpec {
        RuleSpec {
            name: section.name.clone(),
            when: section.when.parsed.clone(),
            until: section.until.as_ref().map(|until| until.parsed.clone()),
            hold_for: section.hold_for,
            run: section.run.clone(),
            otherwise: section.otherwise.clone(),
            on_unknown: section.on_unknown.clone(),
            stale_after: section.stale_after,
        }
    }
}

/// Where a rule is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleState {
    /// Not evaluated yet, or an input is unknown.
    Unknown,
    /// The condition is false.
    Inactive,
    /// The condition holds, for less than `for` so far.
    Pending,
    /// The condition held for `for`: `do` ran.
    Active,
}

impl RuleState {
    /// The name shown by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleState::Unknown => "unknown",
            RuleState::Inactive => "inactive",
            RuleState::Pending => "pending",
            RuleState::Active => "active",
        }
    }
}

/// A rule's state as people see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleStatus {
    /// The state.
    pub state: RuleState,
    /// Since when.
    pub since: Instant,
    /// The last executor it asked for, and when.
    pub last_action: Option<(Instant, String)>,
}

/// An executor a rule asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleAction {
    /// The rule.
    pub rule: String,
    /// The executor.
    pub executor: String,
    /// Why: `active`, `inactive` or `unknown`.
    pub cause: RuleState,
    /// The inputs of `when` at that moment, for people and commands:
    /// `living/temperature=27 avg(*/temperature)=24.5 attic/t=unknown`.
    pub inputs: String,
}

/// The points and aggregates `expr` reads, with their values now.
pub fn inputs(expr: &Expr, points: &impl Points, stale_after: Option<Duration>) -> String {
    fn walk(expr: &Expr, points: &dyn Fn(&Expr) -> Val, out: &mut Vec<String>) {
        match expr {
            Expr::Point(p) => out.push(format!("{p}={}", show(points(expr)))),
            Expr::Aggregate(a, p) => {
                let name = format!("{a:?}").to_lowercase();
                out.push(format!("{name}({p})={}", show(points(expr))));
            }
            Expr::Neg(e) | Expr::Not(e) => walk(e, points, out),
            Expr::Binary(_, a, b) => {
                walk(a, points, out);
                walk(b, points, out);
            }
            Expr::Number(_) | Expr::Bool(_) => {}
        }
    }
    fn show(value: Val) -> String {
        match value {
            Val::Num(v) => format!("{v}"),
            Val::Bool(b) => format!("{b}"),
            Val::Unknown => "unknown".to_owned(),
        }
    }
    let mut out = Vec::new();
    walk(expr, &|e| eval(e, points, stale_after), &mut out);
    out.dedup();
    out.join(" ")
}

/// Every rule of a node, with its state.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    specs: Vec<RuleSpec>,
    status: Vec<RuleStatus>,
}

impl Rules {
    /// The rules `specs`, all UNKNOWN at `now`.
    pub fn new(specs: Vec<RuleSpec>, now: Instant) -> Rules {
        let status = specs
            .iter()
            .map(|_| RuleStatus {
                state: RuleState::Unknown,
                since: now,
                last_action: None,
            })
            .collect();
        Rules { specs, status }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// The rules `specs` in place of these: a rule whose spec is unchanged
    /// (same name, same everything) keeps its state, so a reload neither
    /// re-runs its action nor restarts its `for`; a new or changed rule
    /// starts UNKNOWN at `now`, like at start. Returns how many kept their
    /// state.
    pub fn reload(&mut self, specs: Vec<RuleSpec>, now: Instant) -> usize {
        let mut old: Vec<(RuleSpec, RuleStatus)> = std::mem::take(&mut self.specs)
            .into_iter()
            .zip(std::mem::take(&mut self.status))
            .collect();
        let mut kept = 0;
        for spec in specs {
            let status = match old.iter().position(|(previous, _)| *previous == spec) {
                Some(index) => {
                    kept += 1;
                    old.swap_remove(index).1
                }
                None => RuleStatus {
                    state: RuleState::Unknown,
                    since: now,
                    last_action: None,
                },
            };
            self.specs.push(spec);
            self.status.push(status);
        }
        kept
    }

    /// Each rule's name and status.
    pub fn statuses(&self) -> impl Iterator<Item = (&str, &RuleStatus)> {
        self.specs
            .iter()
            .map(|spec| spec.name.as_str())
            .zip(self.status.iter())
    }

    /// Evaluates every rule at `now`; returns the actions of the
    /// transitions, and when a pending rule becomes due.
    pub fn evaluate(
        &mut self,
        now: Instant,
        points: &impl Points,
    ) -> (Vec<RuleAction>, Option<Instant>) {
        let mut actions = Vec::new();
        let mut next: Option<Instant> = None;
        for (spec, status) in self.specs.iter().zip(self.status.iter_mut()) {
            let when = eval(&spec.when, points, spec.stale_after).truth();
            let until = spec
                .until
                .as_ref()
                .map(|until| eval(until, points, spec.stale_after).truth());
            let target = match (status.state, when, until) {
                (_, None, _) => RuleState::Unknown,
                // Hysteresis: an active rule with `until` ends only by it.
                (RuleState::Active, Some(_), Some(None)) => RuleState::Unknown,
                (RuleState::Active, Some(_), Some(Some(done))) => {
                    if done {
                        RuleState::Inactive
                    } else {
                        RuleState::Active
                    }
                }
                (RuleState::Active, Some(true), None) => RuleState::Active,
                (_, Some(false), _) => RuleState::Inactive,
                (RuleState::Pending, Some(true), _) => {
                    let due = status.since + spec.hold_for;
                    if now >= due {
                        RuleState::Active
                    } else {
                        next = Some(next.map_or(due, |n| n.min(due)));
                        RuleState::Pending
                    }
                }
                (_, Some(true), _) if spec.hold_for.is_zero() => RuleState::Active,
                (_, Some(true), _) => {
                    let due = now + spec.hold_for;
                    next = Some(next.map_or(due, |n| n.min(due)));
                    RuleState::Pending
                }
            };
            if target == status.state {
                continue;
            }
            let executor = match target {
                RuleState::Active => Some(spec.run.clone()),
                // From PENDING the action never ran: nothing to undo... except
                // at start, when the first known state is inactive.
                RuleState::Inactive if status.state != RuleState::Pending => spec.otherwise.clone(),
                RuleState::Unknown => spec.on_unknown.clone(),
                _ => None,
            };
            log::info!(
                "rule {}: {} -> {}",
                spec.name,
                status.state.as_str(),
                target.as_str()
            );
            status.state = target;
            status.since = now;
            if let Some(executor) = executor {
                status.last_action = Some((now, executor.clone()));
                actions.push(RuleAction {
                    rule: spec.name.clone(),
                    executor,
                    cause: target,
                    inputs: inputs(&spec.when, points, spec.stale_after),
                });
            }
        }
        (actions, next)
    }
}

/// A derived point: published as this node's point `name`.
#[derive(Debug, Clone, PartialEq)]
pub struct ComputeSpec {
    /// The point's name.
    pub name: String,
    /// Its expression.
    pub expr: Expr,
}

impl From<&shoal_config::ComputeSection> for ComputeSpec {
    /// A `[[compute]]` of the configuration, its expression parsed already.
    fn from(section: &shoal_config::ComputeSection) -> ComputeSpec {
        ComputeSpec {
            name: section.name.clone(),
            expr: section.expr.parsed.clone(),
        }
    }
}

/// Evaluates computes: the value of each, `None` when unknown.
pub fn computes(specs: &[ComputeSpec], points: &impl Points) -> Vec<Option<f64>> {
    specs
        .iter()
        .map(|spec| eval(&spec.expr, points, None).num())
        .collect()
}

#[cfg(test)]
mod tests;
