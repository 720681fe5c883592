//! Unit tests of `rules`: rule evaluation and the rule state machines.
use super::*;
use shoal_config::expr::parse;
use std::collections::BTreeMap;

/// Points by "node/name": `None` is a known-unknown point (an error, a dead
/// origin).
#[derive(Default)]
struct Map(BTreeMap<String, Option<f64>>);

impl Map {
    fn set(&mut self, key: &str, value: Option<f64>) {
        self.0.insert(key.to_owned(), value);
    }
}

impl Points for Map {
    fn lookup(&self, pattern: &Pattern, _stale_after: Option<Duration>) -> Vec<Option<f64>> {
        self.0
            .iter()
            .filter(|(key, _)| {
                let (node, name) = key.split_once('/').expect("node/name");
                pattern.matches("me", node, name)
            })
            .map(|(_, v)| *v)
            .collect()
    }

    fn problem(&self, pattern: &Pattern, stale_after: Option<Duration>) -> Problem {
        if self.lookup(pattern, stale_after).is_empty() {
            Problem::MatchesNothing { suggestion: None }
        } else {
            Problem::NoNumber
        }
    }

    fn point_names(&self) -> Vec<PointName<'_>> {
        self.0
            .keys()
            .filter_map(|key| key.split_once('/'))
            .map(|(node, name)| PointName {
                node,
                name,
                own: node == "me",
            })
            .collect()
    }
}

fn val(text: &str, points: &Map) -> Val {
    eval(&parse(text).expect("parses"), points, None)
}

fn house() -> Map {
    let mut m = Map::default();
    m.set("living/temperature", Some(27.0));
    m.set("bed/temperature", Some(22.0));
    m.set("attic/temperature", None);
    m.set("hall/door", Some(1.0));
    m
}

#[test]
fn arithmetic_comparisons_and_aggregates() {
    let m = house();
    assert_eq!(val("living/temperature > 26", &m), Val::Bool(true));
    assert_eq!(
        val("(living/temperature + bed/temperature) / 2", &m),
        Val::Num(24.5)
    );
    // Aggregates skip unknown points; count counts the known ones.
    assert_eq!(val("avg(*/temperature)", &m), Val::Num(24.5));
    assert_eq!(val("min(*/temperature)", &m), Val::Num(22.0));
    assert_eq!(val("max(*/temperature)", &m), Val::Num(27.0));
    assert_eq!(val("sum(*/temperature)", &m), Val::Num(49.0));
    assert_eq!(val("count(*/temperature)", &m), Val::Num(2.0));
    assert_eq!(val("any(*/door)", &m), Val::Bool(true));
    assert_eq!(val("all(*/temperature)", &m), Val::Bool(true));
    assert_eq!(val("avg(*/humidity)", &m), Val::Unknown);
    assert_eq!(val("count(*/humidity)", &m), Val::Num(0.0));
    assert_eq!(val("-living/temperature * 2", &m), Val::Num(-54.0));
}

#[test]
fn unknown_spreads_but_kleene_logic_decides_when_it_can() {
    let m = house();
    assert_eq!(val("attic/temperature > 30", &m), Val::Unknown);
    assert_eq!(val("nowhere/x + 1", &m), Val::Unknown);
    assert_eq!(
        val("attic/temperature > 30 and bed/temperature > 30", &m),
        Val::Bool(false)
    );
    assert_eq!(
        val("attic/temperature > 30 or living/temperature > 26", &m),
        Val::Bool(true)
    );
    assert_eq!(
        val("attic/temperature > 30 or bed/temperature > 30", &m),
        Val::Unknown
    );
    assert_eq!(val("not attic/temperature", &m), Val::Unknown);
    assert_eq!(val("living/temperature / 0", &m), Val::Unknown);
}

fn rule(when: &str, hold_for: u64) -> RuleSpec {
    RuleSpec {
        name: "cool".to_owned(),
        when: parse(when).expect("parses"),
        until: None,
        hold_for: Duration::from_secs(hold_for),
        run: "ac_on".to_owned(),
        otherwise: Some("ac_off".to_owned()),
        on_unknown: Some("ac_safe".to_owned()),
        stale_after: None,
    }
}

fn at(s: u64) -> Instant {
    Instant::from_millis(s * 1000)
}

fn run(rules: &mut Rules, now: Instant, m: &Map) -> Vec<String> {
    rules
        .evaluate(now, m)
        .actions
        .into_iter()
        .map(|a| a.executor)
        .collect()
}

#[test]
fn actions_are_edge_triggered_and_for_delays_them() {
    let mut m = Map::default();
    m.set("living/temperature", Some(25.0));
    let mut rules = Rules::new(vec![rule("living/temperature > 26", 30)], at(0));
    // The first known state runs its action: the AC is off.
    assert_eq!(run(&mut rules, at(0), &m), ["ac_off"]);
    assert!(run(&mut rules, at(1), &m).is_empty(), "nothing twice");
    m.set("living/temperature", Some(27.0));
    let evaluation = rules.evaluate(at(10), &m);
    assert!(evaluation.actions.is_empty());
    assert_eq!(evaluation.next, Some(at(40)));
    assert_eq!(
        rules.statuses().next().map(|(_, s)| s.state),
        Some(RuleState::Pending)
    );
    // A dip before 30 s resets the wait, with no action.
    m.set("living/temperature", Some(25.0));
    assert!(run(&mut rules, at(20), &m).is_empty());
    m.set("living/temperature", Some(27.0));
    assert!(run(&mut rules, at(25), &m).is_empty());
    assert!(run(&mut rules, at(54), &m).is_empty());
    assert_eq!(run(&mut rules, at(55), &m), ["ac_on"]);
    assert!(run(&mut rules, at(60), &m).is_empty());
    m.set("living/temperature", Some(25.0));
    assert_eq!(run(&mut rules, at(70), &m), ["ac_off"]);
}

#[test]
fn an_unknown_input_runs_the_fail_safe_once() {
    let mut m = Map::default();
    m.set("living/temperature", Some(27.0));
    let mut rules = Rules::new(vec![rule("living/temperature > 26", 0)], at(0));
    assert_eq!(run(&mut rules, at(0), &m), ["ac_on"]);
    m.set("living/temperature", None);
    assert_eq!(run(&mut rules, at(5), &m), ["ac_safe"]);
    assert!(run(&mut rules, at(6), &m).is_empty());
    let status = rules.statuses().next().expect("one rule").1.clone();
    assert_eq!(status.state, RuleState::Unknown);
    assert_eq!(status.last_action, Some((at(5), "ac_safe".to_owned())));
    // Back: the state is re-established by its action.
    m.set("living/temperature", Some(27.0));
    assert_eq!(run(&mut rules, at(9), &m), ["ac_on"]);
}

#[test]
fn hysteresis_a_value_oscillating_around_the_threshold_triggers_once() {
    let mut m = Map::default();
    let mut spec = rule("living/temperature > 26", 0);
    spec.until = Some(parse("living/temperature < 25").expect("parses"));
    let mut rules = Rules::new(vec![spec], at(0));
    let mut without = Rules::new(vec![rule("living/temperature > 26", 0)], at(0));
    let mut with_actions = Vec::new();
    let mut without_actions = Vec::new();
    for (i, t) in [25.8, 26.2, 25.9, 26.3, 25.7, 26.1, 25.95, 26.4]
        .into_iter()
        .enumerate()
    {
        m.set("living/temperature", Some(t));
        with_actions.extend(run(&mut rules, at(i as u64), &m));
        without_actions.extend(run(&mut without, at(i as u64), &m));
    }
    assert_eq!(with_actions, ["ac_off", "ac_on"]);
    assert_eq!(without_actions.len(), 8, "{without_actions:?}");
    // Below the band it ends.
    m.set("living/temperature", Some(24.9));
    assert_eq!(run(&mut rules, at(20), &m), ["ac_off"]);
}

#[test]
fn computes_are_unknown_without_inputs() {
    let m = house();
    let specs = vec![
        ComputeSpec {
            name: "avg_temperature".to_owned(),
            expr: parse("avg(*/temperature)").expect("parses"),
        },
        ComputeSpec {
            name: "nothing".to_owned(),
            expr: parse("avg(*/humidity)").expect("parses"),
        },
    ];
    assert_eq!(computes(&specs, &m), [Some(24.5), None]);
}

#[test]
fn an_action_carries_the_values_of_its_inputs() {
    let m = house();
    let expr =
        parse("avg(*/temperature) > 20 and attic/temperature > 1 or living/temperature > 26")
            .expect("parses");
    assert_eq!(
        inputs(&expr, &m, None),
        "avg(*/temperature)=24.5 attic/temperature=unknown living/temperature=27"
    );
    let mut rules = Rules::new(vec![rule("living/temperature > 26", 0)], at(0));
    let actions = rules.evaluate(at(0), &m).actions;
    assert_eq!(actions[0].inputs, "living/temperature=27");
}

#[test]
fn a_reload_keeps_unchanged_rules_and_restarts_changed_ones() {
    let mut m = Map::default();
    m.set("living/temperature", Some(27.0));
    let mut pending = rule("living/temperature > 26", 30);
    pending.name = "slow".to_owned();
    let mut rules = Rules::new(
        vec![rule("living/temperature > 26", 0), pending.clone()],
        at(0),
    );
    assert_eq!(run(&mut rules, at(0), &m), ["ac_on"]);
    // Unchanged: the same state, its `for` not restarted, no action again.
    let mut warm = rule("living/temperature > 20", 0);
    warm.name = "warm".to_owned();
    let kept = rules.reload(
        vec![pending.clone(), rule("living/temperature > 26", 0), warm],
        at(10),
    );
    assert_eq!(kept, 2);
    let states: Vec<(String, RuleState, Instant)> = rules
        .statuses()
        .map(|(name, status)| (name.to_owned(), status.state, status.since))
        .collect();
    assert_eq!(
        states,
        [
            ("slow".to_owned(), RuleState::Pending, at(0)),
            ("cool".to_owned(), RuleState::Active, at(0)),
            ("warm".to_owned(), RuleState::Unknown, at(10)),
        ]
    );
    let evaluation = rules.evaluate(at(11), &m);
    let (actions, due) = (evaluation.actions, evaluation.next);
    let run: Vec<(&str, &str)> = actions
        .iter()
        .map(|a| (a.rule.as_str(), a.executor.as_str()))
        .collect();
    assert_eq!(run, [("warm", "ac_on")], "only the new rule acts");
    assert_eq!(due, Some(at(30)), "the pending rule's wait goes on");
    // Changed (another threshold): a new rule, UNKNOWN until evaluated,
    // whose first known state acts; a removed one is gone.
    let kept = rules.reload(vec![rule("living/temperature > 30", 0)], at(12));
    assert_eq!(kept, 0);
    let actions = rules.evaluate(at(12), &m).actions;
    assert_eq!(actions.len(), 1);
    assert_eq!(actions[0].executor, "ac_off");
    assert_eq!(rules.statuses().count(), 1);
}

/// A rule on `self/temprature` (a typo) of a node that has `temperature`.
fn typo(stale_after: Option<u64>) -> (Rules, Map) {
    let mut m = Map::default();
    m.set("me/temperature", Some(21.0));
    m.set("other/temperature", Some(22.0));
    let mut spec = rule("self/temprature > 26", 0);
    spec.stale_after = stale_after.map(Duration::from_secs);
    (Rules::new(vec![spec], at(0)), m)
}

fn status(rules: &Rules) -> RuleStatus {
    rules.statuses().next().expect("one rule").1.clone()
}

#[test]
fn a_rule_unknown_from_the_start_runs_its_fail_safe_once_after_the_grace_and_says_why() {
    let (mut rules, m) = typo(Some(2));
    let first = rules.evaluate(at(0), &m);
    assert!(first.actions.is_empty() && first.stuck.is_empty());
    assert_eq!(first.next, Some(at(2)), "woken when the grace ends");
    assert!(
        rules.evaluate(at(1), &m)
            == Evaluation {
                next: Some(at(2)),
                ..Evaluation::default()
            }
    );
    let evaluation = rules.evaluate(at(2), &m);
    let executors: Vec<&str> = evaluation
        .actions
        .iter()
        .map(|a| a.executor.as_str())
        .collect();
    assert_eq!(executors, ["ac_safe"]);
    assert_eq!(evaluation.actions[0].cause, RuleState::Unknown);
    assert_eq!(evaluation.actions[0].inputs, "self/temprature=unknown");
    let [stuck] = evaluation.stuck.as_slice() else {
        panic!("one report: {:?}", evaluation.stuck);
    };
    assert_eq!(
        stuck.inputs,
        [UnknownInput {
            pattern: Pattern {
                node: "self".to_owned(),
                name: "temprature".to_owned()
            },
            problem: Problem::MatchesNothing {
                suggestion: Some(Pattern {
                    node: "self".to_owned(),
                    name: "temperature".to_owned()
                })
            },
        }]
    );
    assert_eq!(
        stuck.to_string(),
        "rule cool has been unknown for 2s: self/temprature matches no point (did you mean self/temperature?)"
    );
    assert!(status(&rules).stuck);
    // Once: no more actions, reports or wake-ups for it.
    for s in 3..300 {
        let later = rules.evaluate(at(s), &m);
        assert_eq!(later, Evaluation::default(), "at {s} s");
    }
    assert_eq!(
        status(&rules).last_action,
        Some((at(2), "ac_safe".to_owned()))
    );
}

#[test]
fn without_stale_after_the_grace_is_a_minute() {
    let (mut rules, m) = typo(None);
    assert!(run(&mut rules, at(0), &m).is_empty());
    assert!(run(&mut rules, at(59), &m).is_empty());
    assert_eq!(run(&mut rules, at(60), &m), ["ac_safe"]);
    // Without on_unknown it is reported all the same, and runs nothing.
    let mut spec = rule("nowhere/x > 1", 0);
    spec.on_unknown = None;
    let mut rules = Rules::new(vec![spec], at(0));
    let evaluation = rules.evaluate(at(60), &Map::default());
    assert!(evaluation.actions.is_empty());
    assert_eq!(
        evaluation.stuck[0].to_string(),
        "rule cool has been unknown for 60s: nowhere/x matches no point"
    );
}

#[test]
fn a_rule_that_is_known_is_never_reported() {
    let mut m = house();
    let mut rules = Rules::new(vec![rule("max(*/temperature) > 26", 0)], at(0));
    let mut actions = Vec::new();
    for s in 0..600 {
        m.set(
            "living/temperature",
            Some(if s % 200 < 100 { 27.0 } else { 25.0 }),
        );
        let evaluation = rules.evaluate(at(s), &m);
        assert!(evaluation.stuck.is_empty(), "at {s} s");
        actions.extend(evaluation.actions.into_iter().map(|a| a.executor));
    }
    // The attic is unknown throughout, but `max` goes by the known rooms.
    assert_eq!(
        actions,
        ["ac_on", "ac_off", "ac_on", "ac_off", "ac_on", "ac_off"]
    );
    assert!(!status(&rules).stuck);
}

#[test]
fn a_rule_whose_input_appears_becomes_known_and_is_reported_again_only_when_stuck_again() {
    let (mut rules, mut m) = typo(Some(2));
    assert!(run(&mut rules, at(0), &m).is_empty());
    assert_eq!(run(&mut rules, at(2), &m), ["ac_safe"]);
    // The point appears (the sensor got that name after all): known.
    m.set("me/temprature", Some(27.0));
    let evaluation = rules.evaluate(at(5), &m);
    assert_eq!(evaluation.actions[0].executor, "ac_on");
    assert!(evaluation.stuck.is_empty());
    let known = status(&rules);
    assert_eq!(
        (known.state, known.condition, known.stuck),
        (RuleState::Active, Some(true), false)
    );
    assert!(rules.unknown_inputs("cool", &m).is_empty());
    for s in 6..100 {
        assert_eq!(rules.evaluate(at(s), &m), Evaluation::default(), "at {s} s");
    }
    // It breaks (an error value): the fail-safe runs at the transition,
    // the report comes after the grace, and the fail-safe does not run twice.
    m.set("me/temprature", None);
    assert_eq!(run(&mut rules, at(100), &m), ["ac_safe"]);
    assert!(run(&mut rules, at(101), &m).is_empty());
    let evaluation = rules.evaluate(at(102), &m);
    assert!(evaluation.actions.is_empty(), "{:?}", evaluation.actions);
    assert_eq!(
        evaluation.stuck[0].to_string(),
        "rule cool has been unknown for 2s: self/temprature holds no number"
    );
    for s in 103..200 {
        assert_eq!(rules.evaluate(at(s), &m), Evaluation::default(), "at {s} s");
    }
}
