//! Unit tests of `rotation`: offers only their member can open, signed, for its current life.

use super::*;
use crate::sign::test_key;
use crate::wire::{name, Counter, Header};
use crate::{Arrival, Config, Identity};
use std::net::SocketAddr;

const MESH: u32 = 0x5348_0001;
const OLD: MeshKey = MeshKey([3; 32]);
const NEW: MeshKey = MeshKey([0x99; 32]);

fn node(n: u64, incarnation: u32) -> Node {
    let identity = Identity {
        key: test_key(n),
        name: name(&format!("node-{n}")).expect("valid"),
        incarnation,
    };
    let config = Config {
        mesh_id: MESH,
        key: Some(OLD),
        ..Config::default()
    };
    Node::new(identity, config, 1, Instant::ZERO).expect("valid")
}

fn addr(n: u64) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, n as u8], 20195))
}

fn at(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

/// Delivers everything `from` (test node `n`) queued to `to`.
fn deliver(now: Instant, n: u64, from: &mut Node, to: &mut Node) {
    while let Some(t) = from.poll_transmit() {
        let arrival = match t.destination {
            Destination::Broadcast => crate::Arrival::Broadcast,
            Destination::Unicast(_) => crate::Arrival::Unicast,
        };
        to.handle_datagram(now, addr(n), arrival, &t.payload);
    }
}

/// Two nodes that heard each other's first beacons (with their keys).
fn pair() -> (Node, Node) {
    let (mut a, mut b) = (node(1, 1), node(2, 1));
    for t in [0, 300] {
        a.handle_timeout(at(t).max(a.poll_timeout().unwrap_or(at(t))));
        b.handle_timeout(at(t).max(b.poll_timeout().unwrap_or(at(t))));
        deliver(at(t), 1, &mut a, &mut b);
        deliver(at(t), 2, &mut b, &mut a);
    }
    (a, b)
}

fn offer_from(signer: u64, sealed_to: &Node, target: NodeId, incarnation: u32) -> Message {
    let ephemeral = [5; 32];
    let mut offer = KeyOffer {
        rotation: 1,
        initiator: test_key(signer).id(),
        target,
        hops_left: 16,
        target_incarnation: incarnation,
        ephemeral: sign::ephemeral_public(ephemeral),
        sealed: sign::seal_key(ephemeral, &sealed_to.key.public(), &NEW.0).expect("sealed"),
        switch_in_ms: 3000,
        key: test_key(signer).public(),
        signature: Signature([0; SIGNATURE_LEN]),
    };
    offer.signature = test_key(signer).sign(&sign::offer_payload(&offer));
    Message::KeyOffer(offer)
}

fn frame(sender: u64, seq: u32, message: &Message) -> wire::Datagram {
    let header = Header {
        mesh_id: MESH,
        sender: test_key(sender).id(),
        counter: Counter {
            incarnation: 1,
            seq,
        },
    };
    wire::encode(&header, message, Some(&Cipher::new(&OLD))).expect("fits")
}

#[test]
fn both_switch_and_the_initiator_learns_who_confirmed() {
    let (mut a, mut b) = pair();
    assert!(a.public_key_of(b.id()).is_some(), "keys come in beacons");
    let plan = a.rotate(at(500), NEW, [5; 32], &[]).expect("started");
    assert_eq!(plan.members, vec![b.id()]);
    deliver(at(501), 1, &mut a, &mut b);
    deliver(at(502), 2, &mut b, &mut a);
    assert_eq!(b.stats().key_offers_refused, 0);
    // Both switch at the set time; frames of either key are accepted
    // meanwhile.
    a.handle_timeout(at(3_600));
    b.handle_timeout(at(3_600));
    let new_mesh = wire::mesh_id(Some(&NEW));
    assert_eq!(a.config().mesh_id, new_mesh);
    assert_eq!(b.config().mesh_id, new_mesh);
    let events: Vec<Event> = std::iter::from_fn(|| a.poll_event()).collect();
    assert!(events.contains(&Event::RotationDone {
        rotation: plan.rotation,
        confirmed: vec![b.id()],
        unconfirmed: Vec::new(),
    }));
    assert!(events.contains(&Event::MeshKeyChanged {
        mesh_id: new_mesh,
        key: NEW
    }));
}

#[test]
fn offers_that_are_forged_not_for_this_node_or_for_an_old_life_are_refused() {
    let (_, mut b) = pair();
    let c = node(3, 1);
    // Signed by 3 in the name of 1; sealed to another node; for b's earlier life.
    let mut forged = offer_from(3, &b, b.id(), 1);
    if let Message::KeyOffer(offer) = &mut forged {
        offer.initiator = test_key(1).id();
    }
    b.handle_datagram(at(600), addr(1), Arrival::Unicast, &frame(1, 10, &forged));
    assert_eq!(b.stats().signatures_invalid, 1);
    let not_ours = offer_from(1, &c, b.id(), 1);
    b.handle_datagram(at(601), addr(1), Arrival::Unicast, &frame(1, 11, &not_ours));
    let old_life = offer_from(1, &b, b.id(), 0);
    b.handle_datagram(at(602), addr(1), Arrival::Unicast, &frame(1, 12, &old_life));
    assert_eq!(b.stats().key_offers_refused, 2);
    b.handle_timeout(at(5_000));
    assert_eq!(b.config().mesh_id, MESH, "still on the old key");
    // The genuine one is taken.
    let genuine = offer_from(1, &b, b.id(), 1);
    b.handle_datagram(
        at(5_001),
        addr(1),
        Arrival::Unicast,
        &frame(1, 13, &genuine),
    );
    b.handle_timeout(at(9_000));
    assert_eq!(b.config().mesh_id, wire::mesh_id(Some(&NEW)));
}

#[test]
fn a_second_rotation_waits_for_the_first_and_an_open_mesh_has_none() {
    let (mut a, _) = pair();
    a.rotate(at(500), NEW, [5; 32], &[]).expect("started");
    assert_eq!(
        a.rotate(at(600), MeshKey([1; 32]), [6; 32], &[]),
        Err(RotateError::InProgress)
    );
    let mut open = node(4, 1);
    open.config.key = None;
    assert_eq!(
        open.rotate(at(0), NEW, [5; 32], &[]),
        Err(RotateError::OpenMesh)
    );
}

#[test]
fn a_rollback_to_a_key_left_behind_is_refused() {
    let (mut a, mut b) = pair();
    a.rotate(at(500), NEW, [5; 32], &[]).expect("started");
    deliver(at(501), 1, &mut a, &mut b);
    b.handle_timeout(at(4_000));
    assert_eq!(b.config().mesh_id, wire::mesh_id(Some(&NEW)));
    // A member replays an offer of the old key, sealed to b (made here),
    // in a frame under the new key: refused, b stays.
    let ephemeral = [8; 32];
    let mut back = KeyOffer {
        rotation: 9,
        initiator: test_key(1).id(),
        target: b.id(),
        hops_left: 16,
        target_incarnation: 1,
        ephemeral: sign::ephemeral_public(ephemeral),
        sealed: sign::seal_key(ephemeral, &b.key.public(), &OLD.0).expect("sealed"),
        switch_in_ms: 0,
        key: test_key(1).public(),
        signature: Signature([0; SIGNATURE_LEN]),
    };
    back.signature = test_key(1).sign(&sign::offer_payload(&back));
    let header = Header {
        mesh_id: wire::mesh_id(Some(&NEW)),
        sender: test_key(1).id(),
        counter: Counter {
            incarnation: 1,
            seq: 500,
        },
    };
    let frame = wire::encode(
        &header,
        &Message::KeyOffer(back.clone()),
        Some(&Cipher::new(&NEW)),
    )
    .expect("fits");
    b.handle_datagram(at(4_100), addr(1), Arrival::Unicast, &frame);
    b.handle_timeout(at(5_000));
    assert_eq!(b.config().mesh_id, wire::mesh_id(Some(&NEW)));
    assert_eq!(b.stats().key_offers_refused, 1);
    // The same offer under the old key (still accepted a while): refused
    // before it is even read.
    let header = Header {
        mesh_id: MESH,
        counter: Counter {
            incarnation: 1,
            seq: 501,
        },
        ..header
    };
    let frame =
        wire::encode(&header, &Message::KeyOffer(back), Some(&Cipher::new(&OLD))).expect("fits");
    b.handle_datagram(at(5_100), addr(1), Arrival::Unicast, &frame);
    assert_eq!(b.stats().key_offers_refused, 2);
    assert_eq!(b.config().mesh_id, wire::mesh_id(Some(&NEW)));
}

#[test]
fn two_rotations_at_once_end_on_one_key() {
    let (mut a, mut b) = pair();
    let (k1, k2) = (MeshKey([0x11; 32]), MeshKey([0x22; 32]));
    let lower = if wire::mesh_id(Some(&k1)) < wire::mesh_id(Some(&k2)) {
        k1.clone()
    } else {
        k2.clone()
    };
    a.rotate(at(500), k1, [5; 32], &[]).expect("a starts");
    b.rotate(at(500), k2, [6; 32], &[]).expect("b starts");
    for t in [501, 502, 503] {
        deliver(at(t), 1, &mut a, &mut b);
        deliver(at(t), 2, &mut b, &mut a);
    }
    a.handle_timeout(at(4_000));
    b.handle_timeout(at(4_000));
    let mesh = wire::mesh_id(Some(&lower));
    assert_eq!(a.config().mesh_id, mesh);
    assert_eq!(b.config().mesh_id, mesh);
}
