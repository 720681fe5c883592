//! Unit tests of `wire`: the wire format: golden bytes, round trips, arbitrary bytes.
use super::*;
use proptest::prelude::*;

const MESH: u32 = 0x5348_0001;

fn header(seq: u32) -> Header {
    Header {
        mesh_id: MESH,
        sender: NodeId(0x0102_0304_0506_0708),
        counter: Counter {
            incarnation: 3,
            seq,
        },
    }
}

fn key() -> Cipher {
    Cipher::new(&MeshKey([9; 32]))
}

/// A goodbye with made-up key and signature bytes (the wire checks neither).
fn farewell() -> Farewell {
    Farewell {
        node: NodeId(0x0102_0304_0506_0708),
        incarnation: 3,
        key: PublicKey([0xaa; 32]),
        signature: Signature([0xbb; 64]),
    }
}

fn leave() -> Message {
    Message::Leave(farewell())
}

fn beacon(name_text: &str) -> Beacon {
    Beacon {
        name: name(name_text).expect("valid"),
        store_hash: 0xdead_beef,
        progress: 1234,
        suspects: Vec::new(),
        vouches: Vec::new(),
        meta: None,
        heard: 4,
        view: 0x0102_0304,
    }
}

/// A delta frame filled the way the store's packer fills one: as many
/// realistic points of one origin as fit in a frame body.
fn full_delta() -> Delta {
    let mut delta = Delta {
        chunks: Vec::new(),
        points: Vec::new(),
    };
    let mut chunk = Chunk {
        origin: NodeId(77),
        origin_name: name("livingroom").expect("valid"),
        incarnation: 2,
        after: 100,
        upto: 100,
        base_ts_ms: 1_763_800_000_000,
        base_age_ms: 0,
        n_points: 0,
    };
    let quantities = [
        "temperature",
        "humidity",
        "pressure",
        "light",
        "co2",
        "voltage",
    ];
    let units = ["°C", "%", "hPa", "lx", "ppm", "V"];
    for i in 0..MAX_POINTS {
        let point = PointUpdate {
            seq_gap: 1,
            name: name(&format!("{}{}", quantities[i % 6], i / 6)).expect("valid"),
            value: Value::Float(21.37 + i as f64),
            unit: unit(units[i % 6]).expect("valid"),
            age_ms: 250 * i as u32,
        };
        let mut candidate = delta.clone();
        candidate.points.push(point).expect("room");
        let mut candidate_chunk = chunk.clone();
        candidate_chunk.n_points += 1;
        candidate_chunk.upto += 1;
        candidate.chunks.clear();
        candidate
            .chunks
            .push(candidate_chunk.clone())
            .expect("room");
        if encoded_len(&Message::Delta(candidate.clone())) == 0 {
            break;
        }
        delta = candidate;
        chunk = candidate_chunk;
    }
    delta
}

fn sample_messages() -> std::vec::Vec<Message> {
    let mut with_gossip = beacon("node-1");
    with_gossip
        .suspects
        .push(Liveness {
            node: NodeId(5),
            counter: Counter {
                incarnation: 1,
                seq: 99,
            },
        })
        .expect("room");
    with_gossip
        .vouches
        .push(Vouch {
            liveness: Liveness {
                node: NodeId(6),
                counter: Counter {
                    incarnation: 2,
                    seq: 7,
                },
            },
            age_ms: 300,
            left: false,
        })
        .expect("room");
    with_gossip.meta = Some(Meta {
        version: String::try_from("0.1.0").expect("fits"),
        model: String::try_from("Raspberry Pi 4 Model B").expect("fits"),
        os: String::try_from("Debian 12").expect("fits"),
        key: Some(PublicKey([5; 32])),
    });
    let mut digest = Digest {
        request: true,
        first: NodeId(0),
        last: NodeId(u64::MAX),
        entries: Vec::new(),
    };
    digest
        .entries
        .push(DigestEntry {
            origin: NodeId(77),
            incarnation: 2,
            watermark: 148,
        })
        .expect("room");
    vec![
        Message::Beacon(beacon("node-1")),
        Message::Beacon(with_gossip),
        Message::Digest(digest),
        Message::Delta(full_delta()),
        leave(),
        Message::Peers(PeerList {
            peers: [PeerAddress {
                node: NodeId(9),
                ip: [192, 168, 1, 20],
                port: 20195,
            }]
            .into_iter()
            .collect(),
        }),
        Message::Routes(RouteList {
            entries: [
                RouteEntry {
                    node: NodeId(9),
                    counter: Counter {
                        incarnation: 2,
                        seq: 300,
                    },
                    metric: 2,
                    age_ms: 1500,
                    left: false,
                    name: name("gw-1"),
                    key: Some(PublicKey([6; 32])),
                },
                RouteEntry {
                    node: NodeId(10),
                    counter: Counter::default(),
                    metric: 16,
                    age_ms: 0,
                    left: false,
                    name: None,
                    key: None,
                },
            ]
            .into_iter()
            .collect(),
        }),
        Message::Command(Command {
            origin: NodeId(1),
            id: 7,
            target: NodeId(9),
            hops_left: 15,
            executor: name("fan_on").expect("valid"),
            attempt: 2,
            origin_incarnation: 4,
            target_incarnation: 5,
            key: PublicKey([1; 32]),
            signature: Signature([2; 64]),
        }),
        Message::CommandResult(CommandResult {
            origin: NodeId(1),
            id: 7,
            target: NodeId(9),
            hops_left: 15,
            outcome: Outcome::Exited(3),
            output: String::try_from("ok\n").expect("fits"),
            attempt: 2,
            origin_incarnation: 4,
            key: PublicKey([3; 32]),
            signature: Signature([4; 64]),
        }),
    ]
}

#[test]
fn outcomes_read_as_words_not_debug_text() {
    assert_eq!(Outcome::Exited(0).to_string(), "exit 0");
    assert_eq!(Outcome::Exited(3).to_string(), "exit 3");
    assert_eq!(Outcome::Exited(-1).to_string(), "exit -1");
    assert_eq!(Outcome::Failed.to_string(), "failed");
    assert_eq!(Outcome::TimedOut.to_string(), "timed out");
    assert_eq!(Outcome::UnknownExecutor.to_string(), "unknown executor");
    assert_eq!(Outcome::NotRemote.to_string(), "not remote");
    assert_eq!(Outcome::Busy.to_string(), "busy");
    assert_eq!(Outcome::RateLimited.to_string(), "rate limited");
    assert_eq!(Outcome::NoRoute.to_string(), "no route");
    assert_eq!(Outcome::NoAnswer.to_string(), "no answer");
}

#[test]
fn a_route_frame_of_the_largest_entries_fits() {
    let entry = RouteEntry {
        node: NodeId(u64::MAX),
        counter: Counter {
            incarnation: u32::MAX,
            seq: u32::MAX,
        },
        metric: u8::MAX,
        age_ms: u32::MAX,
        left: true,
        name: name(&"n".repeat(MAX_NAME)),
        key: Some(PublicKey([0xff; 32])),
    };
    // The node packs by size: as many as fit in MAX_BODY - 8.
    let one = encoded_len(&entry);
    let mut list = RouteList {
        entries: Vec::new(),
    };
    let mut size = 2;
    while size + one <= MAX_BODY - 8 && list.entries.push(entry.clone()).is_ok() {
        size += one;
    }
    // Names and keys go only into the first advertisements and now and
    // then; even then a dozen entries fit in a frame.
    assert!(list.entries.len() >= 12, "{} entries", list.entries.len());
    let frame = encode(&header(1), &Message::Routes(list), Some(&key())).expect("fits");
    assert!(frame.len() <= MAX_FRAME);
    let result = CommandResult {
        origin: NodeId(u64::MAX),
        id: u32::MAX,
        target: NodeId(u64::MAX),
        hops_left: u8::MAX,
        outcome: Outcome::Exited(i32::MIN),
        output: String::try_from("é".repeat(MAX_OUTPUT / 2).as_str()).expect("fits"),
        attempt: u8::MAX,
        origin_incarnation: u32::MAX,
        key: PublicKey([0xff; 32]),
        signature: Signature([0xff; 64]),
    };
    let frame = encode(&header(1), &Message::CommandResult(result), Some(&key())).expect("fits");
    assert!(frame.len() <= MAX_FRAME);
}

#[test]
fn every_message_round_trips_with_and_without_key() {
    for message in sample_messages() {
        for cipher in [None, Some(key())] {
            let frame = encode(&header(1), &message, cipher.as_ref()).expect("fits");
            let parsed = Header::parse(&frame, MESH).expect("header");
            assert_eq!(parsed, header(1));
            let decoded = decode_body(&parsed, &frame, cipher.as_ref()).expect("decodes");
            assert_eq!(decoded, message);
        }
    }
}

#[test]
fn golden_bytes_of_a_clear_beacon_and_leave() {
    // An accidental change of the encoding must fail here, not split a mesh.
    let frame = encode(&header(1), &Message::Beacon(beacon("node-1")), None).expect("fits");
    let expected: &[u8] = &[
        0x53, 0x48, 0x02, // magic, version
        0x53, 0x48, 0x00, 0x01, // mesh id
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, // sender
        0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x01, // incarnation 3, seq 1
        0x00, // Message::Beacon
        0x06, b'n', b'o', b'd', b'e', b'-', b'1', // name
        0xef, 0xbe, 0xad, 0xde, // store hash, fixed little-endian
        0xd2, 0x09, // progress 1234 as varint
        0x00, 0x00, 0x00, // no suspects, no vouches, no meta
        0x04, // heard 4
        0x04, 0x03, 0x02, 0x01, // view, fixed little-endian
    ];
    assert_eq!(frame.as_slice(), expected);
    let leave = encode(&header(2), &leave(), None).expect("fits");
    let mut body = vec![0x03]; // Message::Leave
    body.extend_from_slice(&0x0102_0304_0506_0708_u64.to_le_bytes()); // node, fixed
    body.push(0x03); // incarnation 3 as varint
    body.extend_from_slice(&[0xaa; 32]); // public key
    body.extend_from_slice(&[0xbb; 64]); // signature
    assert_eq!(&leave[HEADER_LEN..], body.as_slice());
}

#[test]
fn golden_bytes_of_a_point_update_and_digest_entry() {
    let update = PointUpdate {
        seq_gap: 1,
        name: name("t").expect("valid"),
        value: Value::Float(1.0),
        unit: unit("C").expect("valid"),
        age_ms: 300,
    };
    let mut buf = [0u8; 64];
    let bytes = postcard::to_slice(&update, &mut buf).expect("fits");
    assert_eq!(
        bytes,
        &[1, 1, b't', 0, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 1, b'C', 0xac, 0x02]
    );
    let entry = DigestEntry {
        origin: NodeId(1),
        incarnation: 2,
        watermark: 300,
    };
    let bytes = postcard::to_slice(&entry, &mut buf).expect("fits");
    assert_eq!(bytes, &[1, 0, 0, 0, 0, 0, 0, 0, 2, 0xac, 0x02]);
}

#[test]
fn a_beacon_without_gossip_is_at_most_64_bytes() {
    // Names up to 9 bytes keep an encrypted beacon within 64 bytes.
    for node_name in ["node-1", "pi-garage", "bedroom-2"] {
        let frame = encode(
            &header(u32::MAX),
            &Message::Beacon(beacon(node_name)),
            Some(&key()),
        )
        .expect("fits");
        assert!(frame.len() <= 64, "{node_name}: {} bytes", frame.len());
    }
}

#[test]
fn a_full_delta_costs_at_most_32_bytes_per_point() {
    let delta = full_delta();
    let frame = encode(&header(1), &Message::Delta(delta.clone()), Some(&key())).expect("fits");
    let per_point = frame.len() as f64 / delta.points.len() as f64;
    assert!(frame.len() <= MAX_FRAME);
    eprintln!(
        "full delta: {} points in {} bytes, {per_point:.1} bytes per point",
        delta.points.len(),
        frame.len()
    );
    assert!(
        delta.points.len() >= 30,
        "a frame holds {} points",
        delta.points.len()
    );
    assert!(per_point <= 32.0, "{per_point} bytes per point");
}

#[test]
fn the_largest_messages_fit_in_a_frame() {
    let long_name = name(&"n".repeat(MAX_NAME)).expect("valid");
    let liveness = Liveness {
        node: NodeId(u64::MAX),
        counter: Counter {
            incarnation: u32::MAX,
            seq: u32::MAX,
        },
    };
    let mut beacon = beacon("x");
    beacon.name = long_name;
    beacon.progress = u64::MAX;
    while beacon.suspects.push(liveness).is_ok() {}
    while beacon
        .vouches
        .push(Vouch {
            liveness,
            age_ms: u32::MAX,
            left: true,
        })
        .is_ok()
    {}
    beacon.meta = Some(Meta {
        version: String::try_from("x".repeat(16).as_str()).expect("fits"),
        model: String::try_from("x".repeat(48).as_str()).expect("fits"),
        os: String::try_from("x".repeat(48).as_str()).expect("fits"),
        key: Some(PublicKey([0xff; 32])),
    });
    let frame = encode(&header(1), &Message::Beacon(beacon), Some(&key())).expect("fits");
    assert!(frame.len() <= MAX_FRAME, "{}", frame.len());
}

fn encrypted_beacon() -> Datagram {
    encode(&header(5), &Message::Beacon(beacon("node-1")), Some(&key())).expect("fits")
}

fn decode(frame: &[u8], cipher: Option<&Cipher>) -> Result<Message, DecodeError> {
    let header = Header::parse(frame, MESH)?;
    decode_body(&header, frame, cipher)
}

#[test]
fn each_kind_of_bad_frame_has_its_own_error() {
    let good = encrypted_beacon();
    assert!(decode(&good, Some(&key())).is_ok());

    assert_eq!(
        decode(&good[..10], Some(&key())),
        Err(DecodeError::Truncated)
    );
    assert_eq!(
        decode(&[0u8; MAX_FRAME + 1], Some(&key())),
        Err(DecodeError::TooLarge)
    );

    let mut bad_magic = good.clone();
    bad_magic[0] = b'X';
    assert_eq!(decode(&bad_magic, Some(&key())), Err(DecodeError::BadMagic));

    let mut newer = good.clone();
    newer[2] = VERSION + 1;
    assert_eq!(
        decode(&newer, Some(&key())),
        Err(DecodeError::UnsupportedVersion(VERSION + 1))
    );

    assert_eq!(
        Header::parse(&good, MESH + 1).err(),
        Some(DecodeError::WrongMesh)
    );

    let mut tampered = good.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert_eq!(decode(&tampered, Some(&key())), Err(DecodeError::BadTag));
    let other_key = Cipher::new(&MeshKey([1; 32]));
    assert_eq!(decode(&good, Some(&other_key)), Err(DecodeError::BadTag));
    let clear = encode(&header(5), &leave(), None).expect("fits");
    assert_eq!(decode(&clear, Some(&key())), Err(DecodeError::BadTag));

    let mut unknown = encode(&header(5), &leave(), None).expect("fits");
    unknown[HEADER_LEN] = KNOWN_MESSAGES;
    assert_eq!(decode(&unknown, None), Err(DecodeError::UnknownMessage));

    let mut malformed = encode(&header(5), &Message::Beacon(beacon("node-1")), None).expect("fits");
    malformed.truncate(HEADER_LEN + 3);
    assert_eq!(decode(&malformed, None), Err(DecodeError::Malformed));
    let empty_body = encode(&header(5), &leave(), None).expect("fits");
    assert_eq!(
        decode(&empty_body[..HEADER_LEN], None),
        Err(DecodeError::Malformed)
    );
}

#[test]
fn invalid_values_are_malformed_even_when_they_decode() {
    let mut delta = full_delta();
    delta.points[0].value = Value::Float(f64::NAN);
    let frame = encode(&header(1), &Message::Delta(delta), None).expect("fits");
    assert_eq!(decode(&frame, None), Err(DecodeError::Malformed));

    let mut delta = full_delta();
    delta.chunks[0].n_points -= 1;
    let frame = encode(&header(1), &Message::Delta(delta), None).expect("fits");
    assert_eq!(decode(&frame, None), Err(DecodeError::Malformed));

    let mut delta = full_delta();
    delta.chunks[0].upto -= 1;
    let frame = encode(&header(1), &Message::Delta(delta), None).expect("fits");
    assert_eq!(
        decode(&frame, None),
        Err(DecodeError::Malformed),
        "seqs beyond upto"
    );

    let mut bad_name = beacon("node-1");
    bad_name.name = String::try_from("bad/name").expect("fits");
    let frame = encode(&header(1), &Message::Beacon(bad_name), None).expect("fits");
    assert_eq!(decode(&frame, None), Err(DecodeError::Malformed));
}

#[test]
fn trailing_bytes_from_a_newer_revision_are_ignored() {
    let mut frame = encode(&header(1), &leave(), None).expect("fits");
    frame.extend_from_slice(&[1, 2, 3]).expect("room");
    assert_eq!(decode(&frame, None), Ok(leave()));
}

#[test]
fn a_declared_huge_list_is_rejected_without_allocating() {
    // Beacon whose suspect list claims 2^28 entries.
    let mut frame = encode(&header(1), &Message::Beacon(beacon("n")), None).expect("fits");
    frame.truncate(HEADER_LEN + 1 + 2 + 4 + 2);
    frame
        .extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x01])
        .expect("room");
    assert_eq!(decode(&frame, None), Err(DecodeError::Malformed));
}

#[test]
fn replay_window_accepts_each_counter_once_and_rejects_old_ones() {
    let mut window = ReplayWindow::default();
    assert!(window.is_fresh(100));
    window.accept(100);
    assert!(!window.is_fresh(100), "replay");
    assert!(window.is_fresh(99), "late but inside the window");
    window.accept(99);
    assert!(!window.is_fresh(99));
    assert!(window.is_fresh(101));
    window.accept(100 + REPLAY_WINDOW + 10);
    assert!(!window.is_fresh(100), "fell out of the window");
    assert!(!window.is_fresh(105), "fell out of the window");
    let edge = 100 + 10;
    assert!(window.is_fresh(edge + 1) && !window.is_fresh(edge));
    window.accept(edge + 1);
    assert!(!window.is_fresh(edge + 1));
    let new_incarnation = Counter {
        incarnation: 1,
        seq: 1,
    };
    assert!(window.is_fresh(new_incarnation.as_u64()));
}

#[test]
fn replay_window_survives_a_burst_to_other_peers() {
    // A sender replies to 200 other peers between two frames to us, and the
    // older frame arrives last: it is still accepted, once.
    let mut window = ReplayWindow::default();
    window.accept(1);
    window.accept(202);
    assert!(window.is_fresh(2));
    window.accept(2);
    assert!(!window.is_fresh(2) && !window.is_fresh(202) && !window.is_fresh(1));
}

#[test]
fn replay_window_matches_a_simple_model() {
    // Against a set of every counter ever accepted, over a long random walk.
    let mut window = ReplayWindow::default();
    let mut accepted = std::collections::BTreeSet::new();
    let mut rng = crate::rand::Rng::new(11);
    let mut highest = 0u64;
    for _ in 0..50_000 {
        let counter = if rng.chance(0.5) {
            highest + rng.range(1, 300)
        } else {
            highest.saturating_sub(rng.range(0, REPLAY_WINDOW + 200))
        };
        let model_fresh = !accepted.contains(&counter)
            && (accepted.is_empty() || counter > highest || highest - counter < REPLAY_WINDOW);
        assert_eq!(
            window.is_fresh(counter),
            model_fresh,
            "counter {counter}, highest {highest}"
        );
        if model_fresh {
            window.accept(counter);
            accepted.insert(counter);
            highest = highest.max(counter);
        }
    }
}

#[test]
fn counters_order_by_incarnation_first() {
    let old = Counter {
        incarnation: 1,
        seq: u32::MAX,
    };
    let new = Counter {
        incarnation: 2,
        seq: 0,
    };
    assert!(new > old && new.as_u64() > old.as_u64());
    assert_eq!(Counter::from_u64(new.as_u64()), new);
}

#[test]
fn names_and_units_are_checked() {
    assert!(name("livingroom").is_some());
    assert!(name("pi-4.b_2").is_some());
    assert!(name("").is_none());
    assert!(name("a/b").is_none());
    assert!(name("with space").is_none());
    assert!(name(&"x".repeat(33)).is_none());
    assert!(unit("°C").is_some());
    assert!(unit("").is_some());
    assert!(unit("a\nb").is_none());
    assert!(unit("toolongunit").is_none());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1300)) {
        let _ = decode(&bytes, None);
        let _ = decode(&bytes, Some(&key()));
    }

    #[test]
    fn arbitrary_bodies_behind_a_valid_header_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..1177)
    ) {
        let mut frame = encode(&header(1), &leave(), None).expect("fits");
        frame.truncate(HEADER_LEN);
        frame.extend_from_slice(&body).expect("room");
        let _ = decode(&frame, None);
    }

    #[test]
    fn mutated_frames_never_panic(
        which in 0usize..6,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
    ) {
        let message = sample_messages().swap_remove(which);
        let mut frame = encode(&header(1), &message, None).expect("fits").to_vec();
        for (position, xor) in flips {
            let index = position % frame.len();
            frame[index] ^= xor;
        }
        let keep = HEADER_LEN + cut % (frame.len() - HEADER_LEN + 1);
        frame.truncate(keep.max(1));
        let _ = decode(&frame, None);
    }

    #[test]
    fn random_point_values_round_trip(
        value in prop_oneof![
            any::<f64>().prop_filter("finite", |v| v.is_finite()).prop_map(Value::Float),
            any::<i64>().prop_map(Value::Int),
            any::<bool>().prop_map(Value::Bool),
            "[a-z ]{0,32}".prop_map(|s| Value::Text(String::try_from(s.as_str()).expect("fits"))),
        ],
        seq_gap in 1u32..,
        age_ms in any::<u32>(),
    ) {
        let mut delta = Delta { chunks: Vec::new(), points: Vec::new() };
        let chunk = Chunk {
            origin: NodeId(1),
            origin_name: name("n").expect("valid"),
            incarnation: 1,
            after: 0,
            upto: seq_gap,
            base_ts_ms: u64::MAX,
            base_age_ms: u32::MAX,
            n_points: 1,
        };
        delta.chunks.push(chunk).expect("room");
        delta.points.push(PointUpdate {
            seq_gap,
            name: name("p").expect("valid"),
            value,
            unit: unit("").expect("valid"),
            age_ms,
        }).expect("room");
        let message = Message::Delta(delta);
        let frame = encode(&header(1), &message, Some(&key())).expect("fits");
        prop_assert_eq!(decode(&frame, Some(&key())), Ok(message));
    }
}

#[test]
fn golden_bytes_of_a_history_query_and_page() {
    let query = Message::HistoryQuery(HistoryQuery {
        origin: NodeId(1),
        id: 2,
        target: NodeId(3),
        hops_left: 16,
        attempt: 0,
        point: name("t").expect("valid"),
        since_min: 300,
        until_min: 301,
        step_min: 1,
        from_min: 300,
    });
    let mut buf = [0u8; MAX_BODY];
    let bytes = postcard::to_slice(&query, &mut buf).expect("fits");
    assert_eq!(
        bytes,
        &[
            11, // Message::HistoryQuery
            1, 0, 0, 0, 0, 0, 0, 0, // origin, fixed
            2, // id
            3, 0, 0, 0, 0, 0, 0, 0, // target
            16, 0, // hops left, attempt
            1, b't', // point
            0xac, 0x02, 0xad, 0x02, 1, 0xac, 0x02, // since, until, step, from
        ][..]
    );
    let mut rows = Vec::new();
    rows.push(HistoryRow {
        minute: 300,
        min: 1.0,
        avg: 1.0,
        max: 1.0,
    })
    .expect("room");
    let page = Message::HistoryPage(HistoryPage {
        origin: NodeId(1),
        id: 2,
        target: NodeId(3),
        hops_left: 16,
        attempt: 0,
        status: HistoryStatus::Rows,
        rows,
        next_min: None,
    });
    let bytes = postcard::to_slice(&page, &mut buf).expect("fits");
    let mut expected = vec![12, 1, 0, 0, 0, 0, 0, 0, 0, 2, 3, 0, 0, 0, 0, 0, 0, 0, 16, 0];
    expected.extend_from_slice(&[0, 1, 0xac, 0x02]); // Rows, one row, minute 300
    for _ in 0..3 {
        expected.extend_from_slice(&1.0f32.to_le_bytes());
    }
    expected.push(0); // no next page
    assert_eq!(bytes, expected.as_slice());
}
