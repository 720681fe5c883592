//! Rules and derived points across the mesh, in the simulator: the
//! distributed temperature example of the rules issue.

use shoal_config::expr::parse;
use shoal_core::rules::{ComputeSpec, RuleSpec};
use shoal_core::time::Instant;
use shoal_core::wire::Value;
use shoal_tests::sim::{SimConfig, SimNet};
use std::time::Duration;

const LIVING: usize = 0;
const BEDROOM: usize = 1;
const CENTRAL: usize = 2;

fn actions_of(sim: &SimNet, node: usize, since: Instant) -> Vec<String> {
    sim.actions
        .iter()
        .filter(|(at, n, _, _)| *n == node && *at >= since)
        .map(|(_, _, _, executor)| executor.clone())
        .collect()
}

fn point(sim: &SimNet, holder: usize, origin: usize, name: &str) -> Option<Value> {
    let id = sim.nodes[origin].identity.id();
    sim.node(holder)
        .store()
        .point(id, name)
        .map(|p| p.value.clone())
}

#[test]
fn the_bedroom_cools_when_the_living_room_is_hot_and_fails_safe_when_it_is_gone() {
    let mut config = SimConfig::lan(3, 601);
    config.points_per_node = 0;
    let mut sim = SimNet::new(config);
    sim.set_rules(
        BEDROOM,
        vec![RuleSpec {
            name: "cool".to_owned(),
            when: parse("node-0/temperature > 26").expect("parses"),
            until: None,
            hold_for: Duration::ZERO,
            run: "ac_on".to_owned(),
            otherwise: Some("ac_off".to_owned()),
            on_unknown: Some("ac_off".to_owned()),
            stale_after: Some(Duration::from_secs(120)),
        }],
        Vec::new(),
    );
    sim.set_rules(
        CENTRAL,
        Vec::new(),
        vec![ComputeSpec {
            name: "avg_temperature".to_owned(),
            expr: parse("avg(*/temperature)").expect("parses"),
        }],
    );
    sim.publish(LIVING, "temperature", Value::Float(24.0));
    sim.publish(BEDROOM, "temperature", Value::Float(22.0));
    sim.run_for(Duration::from_secs(2));
    // The first known state: not hot, the AC is switched off (once).
    assert_eq!(actions_of(&sim, BEDROOM, Instant::ZERO), ["ac_off"]);
    // The central node publishes the house average, synced everywhere.
    sim.run_until("average everywhere", Duration::from_secs(2), |sim| {
        (0..3).all(|holder| {
            point(sim, holder, CENTRAL, "avg_temperature") == Some(Value::Float(23.0))
        })
    })
    .unwrap_or_else(|failure| panic!("{failure}"));

    // The living room gets hot: the bedroom's AC within one sync interval.
    let hot_at = sim.now;
    sim.publish(LIVING, "temperature", Value::Float(27.0));
    let on_at = sim
        .run_until("AC on", Duration::from_secs(1), |sim| {
            actions_of(sim, BEDROOM, hot_at) == ["ac_on"]
        })
        .unwrap_or_else(|failure| panic!("{failure}"));
    eprintln!(
        "bedroom AC on {:?} after the living room got hot",
        on_at.saturating_since(hot_at)
    );
    sim.run_until("average follows", Duration::from_secs(2), |sim| {
        point(sim, BEDROOM, CENTRAL, "avg_temperature") == Some(Value::Float(24.5))
    })
    .unwrap_or_else(|failure| panic!("{failure}"));
    // Readings that change nothing run nothing.
    sim.publish(LIVING, "temperature", Value::Float(27.5));
    sim.run_for(Duration::from_secs(5));
    assert_eq!(actions_of(&sim, BEDROOM, hot_at), ["ac_on"]);

    // The living room's Pi dies: its temperature is unknown, the fail-safe runs.
    let crashed = sim.now;
    sim.crash(LIVING);
    let safe_at = sim
        .run_until("fail-safe", Duration::from_secs(5), |sim| {
            actions_of(sim, BEDROOM, crashed) == ["ac_off"]
        })
        .unwrap_or_else(|failure| panic!("{failure}"));
    let took = safe_at.saturating_since(crashed);
    eprintln!("fail-safe ran {took:?} after the crash");
    assert!(took <= Duration::from_secs(4), "{took:?}");
    let status: Vec<(String, &str)> = sim
        .node(BEDROOM)
        .rules()
        .map(|(name, status)| (name.to_owned(), status.state.as_str()))
        .collect();
    assert_eq!(status, [("cool".to_owned(), "unknown")]);
    // The average goes on over the known rooms.
    sim.run_until(
        "average without the dead room",
        Duration::from_secs(3),
        |sim| point(sim, BEDROOM, CENTRAL, "avg_temperature") == Some(Value::Float(22.0)),
    )
    .unwrap_or_else(|failure| panic!("{failure}"));
    // It comes back hot: the AC goes on again.
    let back = sim.now;
    sim.restart(LIVING);
    sim.publish(LIVING, "temperature", Value::Float(27.0));
    sim.run_until("AC on again", Duration::from_secs(3), |sim| {
        actions_of(sim, BEDROOM, back) == ["ac_on"]
    })
    .unwrap_or_else(|failure| panic!("{failure}"));
}

#[test]
fn a_rule_on_a_misspelt_point_fails_safe_once_after_its_grace_and_says_what_was_meant() {
    let mut config = SimConfig::lan(3, 602);
    config.points_per_node = 0;
    let mut sim = SimNet::new(config);
    let rule = |name: &str, when: &str| RuleSpec {
        name: name.to_owned(),
        when: parse(when).expect("parses"),
        until: None,
        hold_for: Duration::ZERO,
        run: "ac_on".to_owned(),
        otherwise: Some("ac_off".to_owned()),
        on_unknown: Some("ac_safe".to_owned()),
        stale_after: Some(Duration::from_secs(2)),
    };
    sim.set_rules(
        BEDROOM,
        vec![
            rule("typo", "node-0/temprature > 26"),
            rule("right", "node-0/temperature > 26"),
        ],
        Vec::new(),
    );
    sim.publish(LIVING, "temperature", Value::Float(24.0));
    // Readings keep coming, so the right rule stays known.
    for _ in 0..30 {
        sim.run_for(Duration::from_millis(500));
        sim.publish(LIVING, "temperature", Value::Float(24.0));
    }
    let of = |rule: &str| -> Vec<(Instant, String)> {
        sim.actions
            .iter()
            .filter(|(_, node, r, _)| *node == BEDROOM && r == rule)
            .map(|(at, _, _, executor)| (*at, executor.clone()))
            .collect()
    };
    // The typo: its fail-safe exactly once, when the 2 s grace ends.
    let typo = of("typo");
    assert_eq!(typo.len(), 1, "{typo:?}");
    assert_eq!(typo[0].1, "ac_safe");
    assert_eq!(typo[0].0, Instant::from_millis(2000), "{typo:?}");
    let stuck: Vec<&str> = sim
        .stuck
        .iter()
        .map(|(_, node, line)| {
            assert_eq!(*node, BEDROOM);
            line.as_str()
        })
        .collect();
    assert_eq!(
        stuck,
        ["rule typo has been unknown for 2s: node-0/temprature matches no point (did you mean node-0/temperature?)"]
    );
    // The right rule went its way: known once node-0's point arrived.
    assert_eq!(
        of("right")
            .iter()
            .map(|(_, e)| e.as_str())
            .collect::<Vec<_>>(),
        ["ac_off"]
    );
    // The API's view, from the core: why the typo is unknown.
    let status: Vec<(String, &str, bool)> = sim
        .node(BEDROOM)
        .rules()
        .map(|(name, status)| (name.to_owned(), status.state.as_str(), status.stuck))
        .collect();
    assert_eq!(
        status,
        [
            ("typo".to_owned(), "unknown", true),
            ("right".to_owned(), "inactive", false)
        ]
    );
    let why = sim.node(BEDROOM).rule_unknown_inputs(sim.now, "typo");
    assert_eq!(why.len(), 1);
    assert_eq!(
        why[0].to_string(),
        "node-0/temprature matches no point (did you mean node-0/temperature?)"
    );
}
