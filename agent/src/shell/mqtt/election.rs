//! Exactly one bridge: which node of those with `[mqtt]` publishes the mesh.
//!
//! Each such node says in its point `mqtt.bridge` whether it is `active`,
//! `standby` (connected, ready) or `offline` (no broker); the point travels
//! with every other point. Every node then decides from the same view:
//!
//! - an active node stays active, unless another live node is active with
//!   a lower id (two actives after a partition heals: the higher steps
//!   down at once, and the lower publishes everything again);
//! - a standby node becomes active only when no live node is active, it
//!   has been up long enough to have heard the mesh (a node that returns
//!   sees the bridge in place and stays standby), and its id is the lowest
//!   of the live standby nodes.
//!
//! Live means HEALTHY or SUSPECT: a beacon or two lost on Wi-Fi is not a
//! handover. A bridge that dies stops counting when it turns UNREACHABLE
//! (`unreachable_after`); one that loses the broker says `offline` within a
//! step, and the next standby takes over.

use shoal_core::wire::NodeId;

/// The point every node with `[mqtt]` and `bridge = "auto"` publishes.
pub const POINT: &str = "mqtt.bridge";

/// What a node says of itself in [`POINT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Publishing the mesh.
    Active,
    /// Connected, ready to take over.
    Standby,
    /// Not connected to the broker.
    Offline,
}

impl Role {
    /// The word in the point.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Active => "active",
            Role::Standby => "standby",
            Role::Offline => "offline",
        }
    }

    /// The role a point's text names.
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "active" => Some(Role::Active),
            "standby" => Some(Role::Standby),
            "offline" => Some(Role::Offline),
            _ => None,
        }
    }
}

/// This node's next role. `others` are the other live nodes' claims;
/// `settled` says this node has been up long enough to know the mesh.
pub fn next_role(
    own: NodeId,
    role: Role,
    connected: bool,
    settled: bool,
    others: &[(NodeId, Role)],
) -> Role {
    if !connected {
        return Role::Offline;
    }
    let lower_active = others
        .iter()
        .any(|(id, role)| *role == Role::Active && *id < own);
    let any_active = others.iter().any(|(_, role)| *role == Role::Active);
    match role {
        Role::Active if lower_active => Role::Standby,
        Role::Active => Role::Active,
        Role::Standby | Role::Offline if !settled || any_active => Role::Standby,
        Role::Standby | Role::Offline => {
            let lowest = others
                .iter()
                .filter(|(_, role)| *role == Role::Standby)
                .all(|(id, _)| *id > own);
            if lowest {
                Role::Active
            } else {
                Role::Standby
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: NodeId = NodeId(1);
    const B: NodeId = NodeId(2);
    const C: NodeId = NodeId(3);

    #[test]
    fn the_lowest_standby_takes_over_when_no_one_is_active() {
        let view = [(B, Role::Standby), (C, Role::Standby)];
        assert_eq!(next_role(A, Role::Standby, true, true, &view), Role::Active);
        let view = [(A, Role::Standby), (C, Role::Standby)];
        assert_eq!(
            next_role(B, Role::Standby, true, true, &view),
            Role::Standby
        );
        // A node offline (no broker) is not a candidate.
        let view = [(A, Role::Offline), (C, Role::Standby)];
        assert_eq!(next_role(B, Role::Standby, true, true, &view), Role::Active);
    }

    #[test]
    fn a_returning_or_unsettled_node_never_makes_a_second_bridge() {
        // B (higher id) is active; A returns with the lower id: stays standby.
        let view = [(B, Role::Active)];
        assert_eq!(
            next_role(A, Role::Standby, true, true, &view),
            Role::Standby
        );
        assert_eq!(
            next_role(A, Role::Offline, true, true, &view),
            Role::Standby
        );
        // Not settled: no takeover even when no one is seen.
        assert_eq!(next_role(A, Role::Standby, true, false, &[]), Role::Standby);
    }

    #[test]
    fn of_two_actives_the_higher_id_steps_down_and_no_broker_means_offline() {
        let view = [(A, Role::Active)];
        assert_eq!(next_role(B, Role::Active, true, true, &view), Role::Standby);
        let view = [(B, Role::Active)];
        assert_eq!(next_role(A, Role::Active, true, true, &view), Role::Active);
        assert_eq!(next_role(A, Role::Active, false, true, &[]), Role::Offline);
        for role in [Role::Active, Role::Standby, Role::Offline] {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("x"), None);
    }
}
