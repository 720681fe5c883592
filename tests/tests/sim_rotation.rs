//! Key rotation in the simulator: every reachable member moves to the new
//! key without a false UNREACHABLE or a lost point; a member left out
//! (excluded while live, or stopped) is locked out.

use shoal_core::peers::PeerState;
use shoal_core::wire::{self, MeshKey};
use shoal_tests::sim::{SimConfig, SimNet};
use std::time::Duration;

fn rotate_with(loss: f64, seed: u64) {
    let mut sim = SimNet::new(SimConfig::lan(6, seed).with_loss(loss));
    sim.run_for(Duration::from_secs(5));
    let (excluded, stopped) = (4, 5);
    sim.crash(stopped);
    sim.run_until(
        "the stopped node is UNREACHABLE",
        Duration::from_secs(10),
        |sim| (0..5).all(|i| sim.state(i, stopped) == Some(PeerState::Unreachable)),
    )
    .unwrap_or_else(|failure| panic!("{failure}"));
    let new_key = MeshKey([0x99; 32]);
    let new_mesh = wire::mesh_id(Some(&new_key));
    let excluded_id = sim.node(excluded).id();
    let started = sim.now;
    let now = sim.now;
    let plan = sim
        .node_mut(0)
        .rotate(now, new_key.clone(), [5; 32], &[excluded_id])
        .expect("a rotation starts");
    let ids: Vec<_> = [1, 2, 3].iter().map(|&i| sim.node(i).id()).collect();
    assert_eq!(plan.members, {
        let mut ids = ids.clone();
        ids.sort();
        ids
    });
    assert_eq!(plan.left_out.len(), 2, "{:?}", plan.left_out);
    let members = [0, 1, 2, 3];
    sim.run_until(
        "the members on the new key",
        Duration::from_secs(10),
        |sim| {
            members
                .iter()
                .all(|&i| sim.node(i).config().mesh_id == new_mesh)
        },
    )
    .unwrap_or_else(|failure| panic!("{failure}"));
    // Readings keep flowing on the new key, and nobody was ever thought gone.
    sim.run_for(Duration::from_secs(12));
    sim.run_until(
        "points converge on the new key",
        Duration::from_secs(12),
        |sim| sim.points_converged(&members),
    )
    .unwrap_or_else(|failure| panic!("{failure}"));
    let false_alarms: Vec<_> = sim
        .transitions_to(PeerState::Unreachable, started)
        .filter(|t| members.contains(&t.observer) && members.contains(&t.subject))
        .collect();
    assert!(false_alarms.is_empty(), "{false_alarms:?}");
    // The excluded member, live all along, is locked out once the old key
    // is dropped; so is the stopped one when it comes back.
    assert!(members
        .iter()
        .all(|&i| sim.state(i, excluded) == Some(PeerState::Unreachable)));
    sim.restart(stopped);
    sim.run_for(Duration::from_secs(10));
    for &i in &members {
        assert_ne!(sim.state(i, stopped), Some(PeerState::Healthy));
        assert_ne!(sim.state(i, excluded), Some(PeerState::Healthy));
    }
}

#[test]
fn a_rotation_moves_every_reachable_member_and_locks_out_the_rest() {
    rotate_with(0.0, 61);
}

#[test]
fn a_rotation_at_10_percent_loss_loses_no_member() {
    for seed in [62, 63, 64] {
        rotate_with(0.1, seed);
    }
}
