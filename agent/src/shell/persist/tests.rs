//! Unit tests of `persist`: how often the agent looks whether a save is due.
use super::*;
use shoal_core::{Config, Identity};

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("shoal-persist-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn node() -> Node {
    let identity = Identity {
        key: shoal_core::sign::NodeKey::from_seed([9; 32]),
        name: wire::name("keeper").expect("valid"),
        incarnation: 1,
    };
    Node::new(identity, Config::default(), 9, Instant::ZERO).expect("valid")
}

#[test]
fn a_save_is_looked_for_every_few_seconds_once_due_never_after_every_input() {
    let dir = scratch("looks");
    let mut state_dir = StateDir::open(&dir).expect("created");
    let node = node();
    let mut known = Known::load(&state_dir);
    let start = known.last_save;
    let at = |ms: u64| start + Duration::from_millis(ms);
    // A datagram every millisecond for the first minute: nothing is due.
    for ms in 0..60_000 {
        known.maybe_save(&node, &mut state_dir, at(ms));
    }
    assert_eq!(known.looks, 0);
    // Then 20 s more of them, nothing changed: one look every 5 s.
    for ms in 60_000..80_000 {
        known.maybe_save(&node, &mut state_dir, at(ms));
    }
    assert_eq!(known.looks, 4, "looks at 60, 65, 70 and 75 s");
    assert_eq!(known.last_save, start, "nothing changed: nothing written");
    // A change is saved at the next look, then nothing is looked at for a minute.
    known.changed = true;
    for ms in 80_000..141_000 {
        known.maybe_save(&node, &mut state_dir, at(ms));
    }
    assert_eq!(known.last_save, at(80_000), "saved at the next look");
    assert!(!known.changed);
    assert_eq!(known.looks, 6, "the save at 80 s, then 140 s");
    let _ = std::fs::remove_dir_all(&dir);
}
