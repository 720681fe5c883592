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
//!
//! A rule that stays UNKNOWN longer than its grace (its `stale_after`, else
//! [`UNKNOWN_GRACE`]) is reported once ([`RuleStuck`]: which inputs are
//! unknown and why, with the nearest existing name for a pattern that
//! matches nothing, e.g. a typo), and runs `on_unknown` then if it has not
//! run in this spell: a rule unknown from the start never had a transition
//! into UNKNOWN, so without this its fail-safe would never run. The report
//! comes again only after the rule was known in between.

use super::time::Instant;
use shoal_config::expr::{Aggregate, Expr, Op, Pattern, PointName};
use std::fmt;
use std::time::Duration;

/// How long a rule without `stale_after` may stay UNKNOWN before it is
/// reported (a rule with one waits that long).
pub const UNKNOWN_GRACE: Duration = Duration::from_secs(60);

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

    /// Why `pattern` gives no value: the problem of the first point it
    /// matches that is unknown, or [`Problem::MatchesNothing`] (without a
    /// suggestion) when it matches none.
    fn problem(&self, pattern: &Pattern, stale_after: Option<Duration>) -> Problem;

    /// Every point there is, for suggestions.
    fn point_names(&self) -> Vec<PointName<'_>>;
}

/// Why an input of a rule has no value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The pattern matches no point at all (a typo, a node or sensor that
    /// never reported); `suggestion` is the nearest pattern that would.
    MatchesNothing {
        /// What was probably meant, e.g. `self/temperature`.
        suggestion: Option<Pattern>,
    },
    /// Its node is UNREACHABLE or LEFT.
    NotLive,
    /// It holds no number (a sensor error, a text).
    NoNumber,
    /// Its last reading is older than the rule's `stale_after`.
    Stale,
    /// More than one live node has the name it names.
    Ambiguous,
}

impl Problem {
    /// The name shown by the API.
    pub fn as_str(&self) -> &'static str {
        match self {
            Problem::MatchesNothing { .. } => "matches_nothing",
            Problem::NotLive => "not_live",
            Problem::NoNumber => "no_number",
            Problem::Stale => "stale",
            Problem::Ambiguous => "ambiguous",
        }
    }
}

/// An input of a rule that has no value, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownInput {
    /// The pattern as the rule writes it.
    pub pattern: Pattern,
    /// Why it has no value.
    pub problem: Problem,
}

impl fmt::Display for UnknownInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pattern = &self.pattern;
        match &self.problem {
            Problem::MatchesNothing {
                suggestion: Some(nearest),
            } => {
                write!(f, "{pattern} matches no point (did you mean {nearest}?)")
            }
            Problem::MatchesNothing { suggestion: None } => {
                write!(f, "{pattern} matches no point")
            }
            Problem::NotLive => write!(f, "{pattern} is from a node that is not live"),
            Problem::NoNumber => write!(f, "{pattern} holds no number"),
            Problem::Stale => write!(f, "{pattern} is stale (older than stale_after)"),
            Problem::Ambiguous => write!(f, "{pattern} names more than one live node"),
        }
    }
}

/// The inputs of `spec` (its `when` and `until`) that have no value, each
/// once, in the order written, with why; a pattern that matches nothing
/// gets the nearest existing name. `count(..)` is never unknown.
pub fn unknown_inputs(spec: &RuleSpec, points: &impl Points) -> Vec<UnknownInput> {
    fn walk<'e>(expr: &'e Expr, out: &mut Vec<(&'e Pattern, bool)>) {
        match expr {
            Expr::Point(p) => out.push((p, false)),
            Expr::Aggregate(Aggregate::Count, _) | Expr::Number(_) | Expr::Bool(_) => {}
            Expr::Aggregate(_, p) => out.push((p, true)),
            Expr::Neg(e) | Expr::Not(e) => walk(e, out),
            Expr::Binary(_, a, b) => {
                walk(a, out);
                walk(b, out);
            }
        }
    }
    let mut read = Vec::new();
    walk(&spec.when, &mut read);
    if let Some(until) = &spec.until {
        walk(until, &mut read);
    }
    let mut out: Vec<UnknownInput> = Vec::new();
    for (pattern, aggregate) in read {
        if out.iter().any(|input| input.pattern == *pattern) {
            continue;
        }
        let values = points.lookup(pattern, spec.stale_after);
        let known = if aggregate {
            values.iter().any(Option::is_some)
        } else {
            matches!(values.first(), Some(Some(_)))
        };
        if known {
            continue;
        }
        let problem = match points.problem(pattern, spec.stale_after) {
            Problem::MatchesNothing { .. } => Problem::MatchesNothing {
                suggestion: pattern.nearest(points.point_names()),
            },
            problem => problem,
        };
        out.push(UnknownInput {
            pattern: pattern.clone(),
            problem,
        });
    }
    out
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
    /// What `when` was at the last evaluation (`None`: unknown, or not
    /// evaluated yet).
    pub condition: Option<bool>,
    /// UNKNOWN for longer than its grace, and reported ([`RuleStuck`]);
    /// false again once it is known.
    pub stuck: bool,
    /// `on_unknown` was due in this UNKNOWN spell already (the transition
    /// into it, or the grace passed): it never runs twice in one spell.
    fail_safe_due: bool,
}

impl RuleStatus {
    /// A rule that starts at `now`: UNKNOWN, nothing done yet.
    fn new(now: Instant) -> RuleStatus {
        RuleStatus {
            state: RuleState::Unknown,
            since: now,
            last_action: None,
            condition: None,
            stuck: false,
            fail_safe_due: false,
        }
    }
}

/// Why a rule is UNKNOWN when none of its inputs is.
pub const NO_UNKNOWN_INPUT: &str =
    "every input has a value, but the condition has none (a division by zero?)";

/// A rule UNKNOWN for longer than its grace: reported once per spell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleStuck {
    /// The rule.
    pub rule: String,
    /// How long it has been UNKNOWN.
    pub unknown_for: Duration,
    /// Its inputs without a value, and why (empty when every input is known
    /// and the expression itself has none, as with a division by zero).
    pub inputs: Vec<UnknownInput>,
}

impl fmt::Display for RuleStuck {
    /// `rule cool has been unknown for 60s: self/temprature matches no
    /// point (did you mean self/temperature?)`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rule {} has been unknown for {}s: ",
            self.rule,
            self.unknown_for.as_secs()
        )?;
        if self.inputs.is_empty() {
            return write!(f, "{NO_UNKNOWN_INPUT}");
        }
        for (index, input) in self.inputs.iter().enumerate() {
            if index > 0 {
                write!(f, "; ")?;
            }
            write!(f, "{input}")?;
        }
        Ok(())
    }
}

/// What one evaluation of the rules asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evaluation {
    /// The actions of the transitions (and of rules past their grace).
    pub actions: Vec<RuleAction>,
    /// Rules that just passed their grace while UNKNOWN.
    pub stuck: Vec<RuleStuck>,
    /// When a pending rule becomes due, or an UNKNOWN one's grace ends.
    pub next: Option<Instant>,
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
        let status = specs.iter().map(|_| RuleStatus::new(now)).collect();
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
                None => RuleStatus::new(now),
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

    /// The inputs of rule `name` without a value, and why (see
    /// [`unknown_inputs`]); empty for a rule that does not exist.
    pub fn unknown_inputs(&self, name: &str, points: &impl Points) -> Vec<UnknownInput> {
        self.specs
            .iter()
            .find(|spec| spec.name == name)
            .map(|spec| unknown_inputs(spec, points))
            .unwrap_or_default()
    }

    /// Evaluates every rule at `now`: the actions of the transitions, the
    /// rules that just passed their grace while UNKNOWN, and when to
    /// evaluate again at the latest.
    pub fn evaluate(&mut self, now: Instant, points: &impl Points) -> Evaluation {
        let mut actions = Vec::new();
        let mut stuck = Vec::new();
        let mut next: Option<Instant> = None;
        let mut wake_at = |due: Instant| next = Some(next.map_or(due, |n: Instant| n.min(due)));
        for (spec, status) in self.specs.iter().zip(self.status.iter_mut()) {
            let when = eval(&spec.when, points, spec.stale_after).truth();
            let until = spec
                .until
                .as_ref()
                .map(|until| eval(until, points, spec.stale_after).truth());
            status.condition = when;
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
                        wake_at(due);
                        RuleState::Pending
                    }
                }
                (_, Some(true), _) if spec.hold_for.is_zero() => RuleState::Active,
                (_, Some(true), _) => {
                    wake_at(now + spec.hold_for);
                    RuleState::Pending
                }
            };
            if target != status.state {
                let executor = match target {
                    RuleState::Active => Some(spec.run.clone()),
                    // From PENDING the action never ran: nothing to undo...
                    // except at start, when the first known state is inactive.
                    RuleState::Inactive if status.state != RuleState::Pending => {
                        spec.otherwise.clone()
                    }
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
                status.stuck = false;
                status.fail_safe_due = target == RuleState::Unknown;
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
            if status.state != RuleState::Unknown || status.stuck {
                continue;
            }
            // Unknown since `since`: reported once its grace has passed.
            let grace_ends = status.since + spec.stale_after.unwrap_or(UNKNOWN_GRACE);
            if now < grace_ends {
                wake_at(grace_ends);
                continue;
            }
            status.stuck = true;
            stuck.push(RuleStuck {
                rule: spec.name.clone(),
                unknown_for: now.saturating_since(status.since),
                inputs: unknown_inputs(spec, points),
            });
            if status.fail_safe_due {
                continue;
            }
            status.fail_safe_due = true;
            if let Some(executor) = spec.on_unknown.clone() {
                status.last_action = Some((now, executor.clone()));
                actions.push(RuleAction {
                    rule: spec.name.clone(),
                    executor,
                    cause: RuleState::Unknown,
                    inputs: inputs(&spec.when, points, spec.stale_after),
                });
            }
        }
        Evaluation {
            actions,
            stuck,
            next,
        }
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
