//! Tests of the MQTT packet codec.

use super::*;
use proptest::prelude::*;

#[test]
fn connect_has_the_3_1_1_header_will_user_and_password() {
    let bytes = connect(&Connect {
        client_id: "shoal-1",
        keep_alive: 30,
        will: Some(("shoal/bridge/a", b"offline")),
        username: Some("u"),
        password: Some(b"pw"),
    });
    assert_eq!(bytes[0], 0x10);
    assert_eq!(usize::from(bytes[1]), bytes.len() - 2);
    assert_eq!(&bytes[2..8], b"\x00\x04MQTT");
    assert_eq!(bytes[8], 4, "protocol level");
    assert_eq!(bytes[9], 0x80 | 0x40 | 0x20 | 0x08 | 0x04 | 0x02, "flags");
    assert_eq!(&bytes[10..12], &[0, 30]);
    let rest = &bytes[12..];
    assert_eq!(
        rest,
        b"\x00\x07shoal-1\x00\x0eshoal/bridge/a\x00\x07offline\x00\x01u\x00\x02pw"
    );
}

#[test]
fn a_password_without_a_user_name_is_not_sent() {
    let bytes = connect(&Connect {
        client_id: "c",
        keep_alive: 5,
        will: None,
        username: None,
        password: Some(b"pw"),
    });
    assert_eq!(bytes[9], 0x02);
    assert!(!bytes.windows(2).any(|w| w == b"pw"));
}

#[test]
fn lengths_use_as_many_bytes_as_they_need() {
    for (length, encoded) in [
        (0usize, vec![0u8]),
        (127, vec![0x7f]),
        (128, vec![0x80, 0x01]),
        (16_383, vec![0xff, 0x7f]),
        (16_384, vec![0x80, 0x80, 0x01]),
        (268_435_455, vec![0xff, 0xff, 0xff, 0x7f]),
    ] {
        let mut out = Vec::new();
        put_length(&mut out, length);
        assert_eq!(out, encoded, "{length}");
    }
}

#[test]
fn a_publish_we_send_decodes_back_whole_and_split_anywhere() {
    let payload = vec![b'x'; 300];
    let mut bytes = publish("shoal/n/temperature", &payload, true);
    assert_eq!(bytes[0], 0x31);
    // As a broker would deliver it: same layout for QoS 0.
    let whole = decode(&bytes, 1024).unwrap();
    let expected = Incoming::Publish {
        topic: "shoal/n/temperature".to_owned(),
        payload: payload.clone(),
        ack: None,
        retain: true,
    };
    assert_eq!(whole, Decoded::Packet(expected.clone(), bytes.len()));
    for cut in 0..bytes.len() {
        assert_eq!(
            decode(&bytes[..cut], 1024).unwrap(),
            Decoded::Incomplete,
            "{cut}"
        );
    }
    // Two packets in one buffer: the first is taken, its length told.
    bytes.extend(pingreq());
    assert_eq!(
        decode(&bytes, 1024).unwrap(),
        Decoded::Packet(expected, bytes.len() - 2)
    );
}

#[test]
fn a_qos_1_publish_carries_its_id_to_acknowledge() {
    let mut bytes = vec![0x32, 0];
    let mut body = Vec::new();
    put_bytes(&mut body, b"t/x");
    body.extend_from_slice(&[0x12, 0x34]);
    body.extend_from_slice(b"{}");
    bytes[1] = body.len() as u8;
    bytes.extend(body);
    let Decoded::Packet(Incoming::Publish { ack, payload, .. }, _) = decode(&bytes, 100).unwrap()
    else {
        panic!("not a publish");
    };
    assert_eq!(ack, Some(0x1234));
    assert_eq!(payload, b"{}");
    assert_eq!(puback(0x1234), vec![0x40, 2, 0x12, 0x34]);
}

#[test]
fn broker_answers_decode() {
    assert_eq!(
        decode(&[0x20, 2, 0, 4], 10).unwrap(),
        Decoded::Packet(Incoming::ConnAck { code: 4 }, 4)
    );
    assert_eq!(refusal(4), "bad user name or password");
    assert_eq!(
        decode(&[0x90, 4, 0, 7, 0, 0x80], 10).unwrap(),
        Decoded::Packet(
            Incoming::SubAck {
                id: 7,
                codes: vec![0, 0x80]
            },
            6
        )
    );
    assert_eq!(
        decode(&[0xd0, 0], 10).unwrap(),
        Decoded::Packet(Incoming::PingResp, 2)
    );
    assert_eq!(
        decode(&[0x40, 2, 0, 1], 10).unwrap(),
        Decoded::Packet(Incoming::PubAck, 4)
    );
    assert_eq!(
        decode(&[0xb0, 2, 0, 2], 10).unwrap(),
        Decoded::Packet(Incoming::UnsubAck, 4)
    );
    assert_eq!(
        decode(&[0xb0, 1, 0], 10),
        Err(PacketError::Malformed("UNSUBACK"))
    );
}

#[test]
fn subscribe_and_unsubscribe_bytes() {
    let filters = vec!["a/+".to_owned(), "b".to_owned()];
    assert_eq!(
        subscribe(2, &filters),
        vec![0x82, 12, 0, 2, 0, 3, b'a', b'/', b'+', 0, 0, 1, b'b', 0]
    );
    assert_eq!(
        unsubscribe(2, &filters),
        vec![0xa2, 10, 0, 2, 0, 3, b'a', b'/', b'+', 0, 1, b'b']
    );
}

#[test]
fn what_a_broker_never_sends_is_an_error() {
    assert_eq!(decode(&[0x10, 0], 10), Err(PacketError::Unexpected(1)));
    assert_eq!(
        decode(&[0x20, 1, 0], 10),
        Err(PacketError::Malformed("CONNACK"))
    );
    assert_eq!(
        decode(&[0x34, 5, 0, 1, b'a', 0, 1], 10),
        Err(PacketError::Unexpected(3))
    );
    assert_eq!(
        decode(&[0x30, 3, 0, 5, b'a'], 10),
        Err(PacketError::Malformed("PUBLISH"))
    );
    assert_eq!(
        decode(&[0x30, 0x80, 0x80, 0x80, 0x80, 1], 10),
        Err(PacketError::BadLength)
    );
    // Invalid UTF-8 in a topic.
    assert_eq!(
        decode(&[0x30, 3, 0, 1, 0xff], 10),
        Err(PacketError::Malformed("PUBLISH"))
    );
}

#[test]
fn a_packet_over_the_limit_is_reported_before_its_body_arrives() {
    assert_eq!(
        decode(&[0x30, 0x80, 0x80, 0x01], 1000).unwrap(),
        Decoded::Oversized {
            header: 4,
            body: 16_384
        }
    );
}

#[test]
fn topic_filters_match_as_mqtt_says() {
    assert!(matches("shoal/+/exec/+/run", "shoal/a/exec/open/run"));
    assert!(!matches("shoal/+/exec/+/run", "shoal/a/exec/open/run/x"));
    assert!(!matches("shoal/+/exec/+/run", "shoal/a/exec/run"));
    assert!(matches("zigbee2mqtt/#", "zigbee2mqtt"));
    assert!(matches("zigbee2mqtt/#", "zigbee2mqtt/kitchen/sensor"));
    assert!(matches("a/b", "a/b"));
    assert!(!matches("a/b", "a/c"));
    assert!(!matches("a/+", "a"));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..64), limit in 0usize..64) {
        match decode(&bytes, limit) {
            Ok(Decoded::Packet(_, used)) => prop_assert!(used <= bytes.len()),
            Ok(Decoded::Oversized { body, .. }) => prop_assert!(body > limit),
            Ok(Decoded::Incomplete) | Err(_) => {}
        }
    }

    #[test]
    fn any_publish_round_trips(topic in "[a-z/+#]{0,40}", payload in proptest::collection::vec(any::<u8>(), 0..400), retain: bool) {
        let bytes = publish(&topic, &payload, retain);
        prop_assert_eq!(
            decode(&bytes, 1000).unwrap(),
            Decoded::Packet(Incoming::Publish { topic, payload, ack: None, retain }, bytes.len())
        );
    }
}
