//! Topologies the scenario tests and the bench share.

use crate::sim::{SimConfig, SimNet};

/// Subnet A of [`three_subnets`].
pub const A: [usize; 3] = [0, 1, 2];
/// The two gateways between A and B.
pub const GW_AB: [usize; 2] = [3, 4];
/// Subnet B.
pub const B: [usize; 2] = [5, 6];
/// The gateway between B and C.
pub const GW_BC: usize = 7;
/// Subnet C.
pub const C: [usize; 2] = [8, 9];
/// Nodes of [`three_subnets`].
pub const NODES: usize = 10;

/// Three subnets chained by gateways, with no router between them (unicast
/// stays inside a subnet): A (nodes 0-2) and B (5, 6) joined by gateways 3
/// and 4; B and C (8, 9) joined by gateway 7. `config.nodes` must be
/// [`NODES`].
pub fn three_subnets(config: SimConfig) -> SimNet {
    assert_eq!(config.nodes, NODES, "three_subnets has {NODES} nodes");
    let mut sim = SimNet::new(config);
    for i in A {
        sim.set_lans(i, &[1]);
    }
    for i in GW_AB {
        sim.set_lans(i, &[1, 2]);
    }
    for i in B {
        sim.set_lans(i, &[2]);
    }
    sim.set_lans(GW_BC, &[2, 3]);
    for i in C {
        sim.set_lans(i, &[3]);
    }
    sim.isolate_lans();
    sim
}
