//! The fuzz targets' seed corpus (`agent/fuzz/seeds/`): real frames of every
//! message kind, made here by two real nodes, and checked to be current.
//!
//! Seeds are hex text, one frame (or, for `node_datagram`, one input) per
//! file, so the repository holds no binaries; `agent/fuzz/seed-corpus`
//! turns them into `cargo fuzz` corpus files. When the wire format
//! changes, this test fails; `SHOAL_BLESS=1 cargo test -p shoal-tests
//! --test fuzz_seeds` writes them anew.

use shoal_core::join::{self, Secret, Tokens, SECRET_LEN};
use shoal_core::sign::NodeKey;
use shoal_core::time::Instant;
use shoal_core::wire::{self, name, Cipher, Header, MeshKey, Message, NodeId, Value};
use shoal_core::{Arrival, Config, Destination, Identity, Node, Reading};
use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The key and mesh id the `decode_frame` target tries.
const FUZZ_KEY: [u8; 32] = [7; 32];
const FUZZ_MESH: u32 = 0x5348_0001;

/// The fuzz targets with seeds.
const TARGETS: [&str; 3] = ["decode_frame", "node_datagram", "join"];

fn seeds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/fuzz/seeds")
}

fn addr(id: u64) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, id as u8], 20195))
}

fn node(id: u64, key: Option<MeshKey>) -> Node {
    let identity = Identity {
        key: NodeKey::from_seed([id as u8; 32]),
        name: name(&format!("seed-{id}")).expect("valid"),
        incarnation: 1,
    };
    let config = Config {
        mesh_id: if key.is_some() { FUZZ_MESH } else { 0 },
        key,
        ..Config::default()
    };
    Node::new(identity, config, 5, Instant::ZERO).expect("valid config")
}

/// Two nodes talking for a few seconds: beacons, a reading, a pull, an
/// exec and its result, a history page, and a goodbye. Every frame, in order.
fn conversation(key: Option<MeshKey>) -> Vec<Vec<u8>> {
    let mut nodes = [node(1, key.clone()), node(2, key)];
    let mut frames = Vec::new();
    let mut now = Instant::ZERO;
    let mut asked = false;
    for step in 0..400u64 {
        now = now + Duration::from_millis(25);
        for node in &mut nodes {
            node.handle_timeout(now);
        }
        if step == 40 {
            let reading = Reading {
                name: name("temp").expect("valid"),
                value: Value::Float(21.5),
                unit: wire::unit("°C").expect("valid"),
                ts_ms: 1_764_000_000_000,
            };
            nodes[1].handle_reading(now, reading).expect("stored");
        }
        if step == 80 && !asked {
            let executor = name("fan").expect("valid");
            asked = nodes[0]
                .exec(now, nodes[1].id(), executor, Duration::from_secs(5))
                .is_ok();
        }
        if step == 120 {
            let point = name("temp").expect("valid");
            let range = (29_400_000, 29_400_060, 5);
            let timeout = Duration::from_secs(5);
            let target = nodes[1].id();
            let _ = nodes[0].query_history(now, target, point, range, range.0, timeout);
        }
        if step == 380 {
            nodes[1].handle_leave(now);
        }
        for from in 0..2 {
            while let Some(transmit) = nodes[from].poll_transmit() {
                let arrival = match transmit.destination {
                    Destination::Broadcast => Arrival::Broadcast,
                    Destination::Unicast(_) => Arrival::Unicast,
                };
                let to = 1 - from;
                nodes[to].handle_datagram(now, addr(from as u64 + 1), arrival, &transmit.payload);
                frames.push(transmit.payload.to_vec());
            }
            while let Some(event) = nodes[from].poll_event() {
                match event {
                    shoal_core::Event::CommandRequested { origin, id, .. } => {
                        nodes[from].complete_command(
                            now,
                            origin,
                            id,
                            wire::Outcome::Exited(0),
                            "on",
                        );
                    }
                    shoal_core::Event::HistoryRequested(request) => {
                        let row = wire::HistoryRow {
                            minute: request.since_min,
                            min: 20.5,
                            avg: 21.0,
                            max: 21.5,
                        };
                        let (rows, next) = shoal_core::queries::page([row], request.from_min);
                        let status = wire::HistoryStatus::Rows;
                        nodes[from].answer_history(now, &request, status, rows, next);
                    }
                    _ => {}
                }
            }
        }
    }
    frames
}

/// The first frame of each message kind.
fn one_of_each_kind(
    frames: &[Vec<u8>],
    key: Option<&Cipher>,
    mesh: u32,
) -> BTreeMap<String, Vec<u8>> {
    let mut seeds = BTreeMap::new();
    for frame in frames {
        let header = Header::parse(frame, mesh).expect("a valid header");
        let message = wire::decode_body(&header, frame, key).expect("a valid frame");
        let kind = match message {
            Message::Beacon(_) => "beacon",
            Message::Digest(_) => "digest",
            Message::Delta(_) => "delta",
            Message::Leave(_) => "leave",
            Message::Peers(_) => "peers",
            Message::Routes(_) => "routes",
            Message::Command(_) => "command",
            Message::CommandResult(_) => "command_result",
            Message::KeyOffer(_) => "key_offer",
            Message::KeyConfirm(_) => "key_confirm",
            Message::Cookie(_) => "cookie",
            Message::HistoryQuery(_) => "history_query",
            Message::HistoryPage(_) => "history_page",
        };
        seeds
            .entry(kind.to_owned())
            .or_insert_with(|| frame.clone());
    }
    seeds
}

fn hex(bytes: &[u8]) -> String {
    let mut text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    text.push('\n');
    text
}

/// Every seed file: `target/name.hex` and its text.
fn seeds() -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    let cipher = Cipher::new(&MeshKey(FUZZ_KEY));
    let keyed = conversation(Some(MeshKey(FUZZ_KEY)));
    for (kind, frame) in one_of_each_kind(&keyed, Some(&cipher), FUZZ_MESH) {
        files.insert(format!("decode_frame/keyed-{kind}.hex"), hex(&frame));
    }
    let open = conversation(None);
    for (kind, frame) in one_of_each_kind(&open, None, 0) {
        files.insert(format!("decode_frame/open-{kind}.hex"), hex(&frame));
    }
    // node_datagram splits its input at every 0xFF byte: the open
    // conversation's frames that contain none, joined by 0xFF.
    let clean: Vec<&Vec<u8>> = open.iter().filter(|f| !f.contains(&0xFF)).collect();
    for (index, chunk) in clean.chunks(12).take(4).enumerate() {
        let frames: Vec<&[u8]> = chunk.iter().map(|f| f.as_slice()).collect();
        let joined: Vec<u8> = frames.join(&0xFF);
        files.insert(
            format!("node_datagram/conversation-{index}.hex"),
            hex(&joined),
        );
    }
    // join: a member's view of a request for its token (secret [7; 16],
    // as the target issues), and a joiner's of the replies.
    let secret = Secret([7; SECRET_LEN]);
    let request = join::request(
        &secret,
        [3; 24],
        &name("seed-new").expect("valid"),
        NodeId(9),
    );
    files.insert("join/request.hex".to_owned(), hex(&request));
    let mut tokens = Tokens::default();
    tokens
        .issue(Instant::ZERO, secret, Duration::from_secs(900))
        .expect("issued");
    let from = std::net::IpAddr::from([127, 0, 0, 2]);
    let (answer, _) = tokens.handle(Instant::ZERO, from, &request, &MeshKey(FUZZ_KEY));
    files.insert(
        "join/answer.hex".to_owned(),
        hex(&answer.expect("answered")),
    );
    let wrong = join::request(
        &Secret([8; SECRET_LEN]),
        [3; 24],
        &name("seed-new").expect("valid"),
        NodeId(9),
    );
    let (refused, _) = tokens.handle(Instant::ZERO, from, &wrong, &MeshKey(FUZZ_KEY));
    files.insert(
        "join/refused.hex".to_owned(),
        hex(&refused.expect("refused")),
    );
    files
}

#[test]
fn the_fuzz_seeds_are_real_frames_of_every_kind_and_current() {
    let seeds = seeds();
    for kind in [
        "beacon",
        "digest",
        "delta",
        "leave",
        "command",
        "command_result",
    ] {
        for mesh in ["keyed", "open"] {
            let file = format!("decode_frame/{mesh}-{kind}.hex");
            assert!(
                seeds.contains_key(&file),
                "no seed {file}: {:?}",
                seeds.keys()
            );
        }
    }
    assert!(
        seeds
            .keys()
            .filter(|f| f.starts_with("node_datagram/"))
            .count()
            >= 2,
        "inputs for node_datagram"
    );
    let dir = seeds_dir();
    if std::env::var_os("SHOAL_BLESS").is_some() {
        for target in TARGETS {
            let _ = fs::remove_dir_all(dir.join(target));
            fs::create_dir_all(dir.join(target)).expect("seed folder");
        }
        for (file, text) in &seeds {
            fs::write(dir.join(file), text).expect("seed written");
        }
    }
    for (file, text) in &seeds {
        let stored = fs::read_to_string(dir.join(file)).unwrap_or_default();
        assert_eq!(
            &stored, text,
            "agent/fuzz/seeds/{file} is stale or missing: run SHOAL_BLESS=1 cargo test -p shoal-tests --test fuzz_seeds"
        );
    }
    for target in TARGETS {
        let stored = fs::read_dir(dir.join(target)).expect("seed folder").count();
        let made = seeds.keys().filter(|f| f.starts_with(target)).count();
        assert_eq!(stored, made, "agent/fuzz/seeds/{target} holds stale seeds");
    }
}
