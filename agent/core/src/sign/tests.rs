//! Node keys, ids bound to keys, and what each signature covers.

use super::*;
use crate::wire::{name, Signature};

fn key(seed: u8) -> NodeKey {
    NodeKey::from_seed([seed; 32])
}

fn farewell(signer: &NodeKey, node: NodeId, incarnation: u32) -> Farewell {
    let mut farewell = Farewell {
        node,
        incarnation,
        key: signer.public(),
        signature: Signature([0; SIGNATURE_LEN]),
    };
    farewell.signature = signer.sign(&farewell_payload(&farewell));
    farewell
}

fn valid(farewell: &Farewell) -> bool {
    verify(
        farewell.node,
        &farewell.key,
        &farewell_payload(farewell),
        &farewell.signature,
    )
}

#[test]
fn the_id_is_the_keys_and_the_seed_round_trips() {
    let a = key(1);
    assert_eq!(a.id(), node_id(&a.public()));
    assert_ne!(a.id(), key(2).id());
    assert_eq!(NodeKey::from_seed(a.seed()).id(), a.id());
    // Debug never shows the secret.
    assert_eq!(format!("{a:?}"), format!("NodeKey({})", a.id()));
}

#[test]
fn a_signature_verifies_only_for_its_node_its_key_and_its_payload() {
    let a = key(1);
    let b = key(2);
    let good = farewell(&a, a.id(), 3);
    assert!(valid(&good));
    // Another node's id with one's own key and signature: the key is not
    // the one the id derives from.
    assert!(!valid(&farewell(&b, a.id(), 3)));
    // The victim's key with the forger's signature.
    let mut forged = farewell(&b, a.id(), 3);
    forged.key = a.public();
    assert!(!valid(&forged));
    // A valid signature moved to another incarnation.
    let mut moved = good.clone();
    moved.incarnation = 4;
    assert!(!valid(&moved));
    // Garbage keys and signatures are refused, not a panic.
    let mut garbage = good;
    garbage.key = PublicKey([0xff; 32]);
    garbage.signature = Signature([0xff; SIGNATURE_LEN]);
    assert!(!valid(&garbage));
}

#[test]
fn a_command_signature_covers_both_incarnations_and_the_executor() {
    let a = key(1);
    let mut command = Command {
        origin: a.id(),
        id: 7,
        target: key(2).id(),
        hops_left: 16,
        executor: name("open_valve").expect("valid"),
        attempt: 0,
        origin_incarnation: 1,
        target_incarnation: 5,
        key: a.public(),
        signature: Signature([0; SIGNATURE_LEN]),
    };
    command.signature = a.sign(&command_payload(&command));
    let check = |c: &Command| verify(c.origin, &c.key, &command_payload(c), &c.signature);
    assert!(check(&command));
    // Relays may change the hop limit and the attempt.
    let relayed = Command {
        hops_left: 3,
        attempt: 2,
        ..command.clone()
    };
    assert!(check(&relayed));
    for changed in [
        Command {
            target_incarnation: 6,
            ..command.clone()
        },
        Command {
            origin_incarnation: 2,
            ..command.clone()
        },
        Command {
            id: 8,
            ..command.clone()
        },
        Command {
            executor: name("close_valve").expect("valid"),
            ..command.clone()
        },
        Command {
            target: key(3).id(),
            ..command.clone()
        },
    ] {
        assert!(!check(&changed), "{changed:?}");
    }
}

#[test]
fn a_result_signature_covers_outcome_and_output() {
    let b = key(2);
    let mut result = CommandResult {
        origin: key(1).id(),
        id: 7,
        target: b.id(),
        hops_left: 16,
        outcome: Outcome::Exited(0),
        output: crate::command::truncate_output("ok"),
        attempt: 0,
        origin_incarnation: 1,
        key: b.public(),
        signature: Signature([0; SIGNATURE_LEN]),
    };
    result.signature = b.sign(&result_payload(&result));
    let check = |r: &CommandResult| verify(r.target, &r.key, &result_payload(r), &r.signature);
    assert!(check(&result));
    for changed in [
        CommandResult {
            outcome: Outcome::Exited(1),
            ..result.clone()
        },
        CommandResult {
            outcome: Outcome::Failed,
            ..result.clone()
        },
        CommandResult {
            output: crate::command::truncate_output("pwned"),
            ..result.clone()
        },
        CommandResult {
            origin_incarnation: 2,
            ..result.clone()
        },
    ] {
        assert!(!check(&changed), "{changed:?}");
    }
}

#[test]
fn signatures_round_trip_through_postcard_as_64_raw_bytes() {
    let a = key(1);
    let good = farewell(&a, a.id(), 9);
    let bytes = postcard::to_allocvec(&good).expect("encodes");
    // id (8, fixint) + incarnation (varint, 1) + key (32) + signature (64).
    assert_eq!(bytes.len(), 8 + 1 + 32 + 64);
    let back: Farewell = postcard::from_bytes(&bytes).expect("decodes");
    assert_eq!(back, good);
    assert!(postcard::from_bytes::<Farewell>(&bytes[..bytes.len() - 1]).is_err());
}

#[test]
fn a_sealed_mesh_key_opens_only_for_its_node() {
    let (a, b) = (key(1), key(2));
    let mesh_key = [0x42; 32];
    let ephemeral = [9; 32];
    let sealed = seal_key(ephemeral, &a.public(), &mesh_key).expect("a valid key");
    let public = ephemeral_public(ephemeral);
    assert_eq!(a.open_key(public, &sealed), Some(mesh_key));
    // Another node (an excluded member holding the mesh key) cannot.
    assert_eq!(b.open_key(public, &sealed), None);
    let mut tampered = sealed;
    tampered.0[0] ^= 1;
    assert_eq!(a.open_key(public, &tampered), None);
    assert_eq!(a.open_key([7; 32], &sealed), None);
}
