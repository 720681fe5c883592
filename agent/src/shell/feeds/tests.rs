//! The websocket client against scripted servers: the upgrade, messages,
//! fragments, ping, an oversized message, close and reconnect, and
//! servers that answer wrongly; SHA-1 and the accept key by their vectors.

use super::*;
use std::io::{Read, Write};
use std::net::TcpListener;

#[test]
fn sha1_and_the_accept_key_match_their_vectors() {
    let hex = |bytes: [u8; 20]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    assert_eq!(
        hex(sha1(b"abc")),
        "a9993e364706816aba3e25717850c26c9cd0d89d"
    );
    assert_eq!(hex(sha1(b"")), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    let long = b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    assert_eq!(hex(sha1(long)), "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
    // RFC 6455, section 1.3.
    assert_eq!(
        accept_for("dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}

/// A server frame (unmasked).
fn frame(fin: bool, opcode: u8, data: &[u8]) -> Vec<u8> {
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    match data.len() {
        n if n < 126 => out.push(n as u8),
        n if n < 65536 => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(data);
    out
}

/// Reads the upgrade request; answers it (`accept`: the right key or not).
fn upgrade(stream: &mut std::net::TcpStream, status: &str, right_key: bool) {
    let mut request = Vec::new();
    let mut byte = [0u8; 1];
    while !request.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).unwrap_or(0) == 0 {
            return;
        }
        request.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&request).into_owned();
    assert!(text.starts_with("GET /feed HTTP/1.1\r\n"), "{text}");
    assert!(text.contains("Upgrade: websocket\r\n"));
    let key = text
        .lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
        .expect("a key");
    let accept = if right_key {
        accept_for(key)
    } else {
        "wrong".to_owned()
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
}

/// What a scripted server does with one connection.
type Script = Box<dyn FnOnce(std::net::TcpStream) + Send>;

/// A server on 127.0.0.1 running `script` per connection, in order.
fn server(scripts: Vec<Script>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for script in scripts {
            match listener.accept() {
                Ok((stream, _)) => {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                    script(stream);
                }
                Err(_) => return,
            }
        }
    });
    port
}

fn section(port: u16) -> SensorSection {
    let mut settings = std::collections::BTreeMap::new();
    settings.insert(
        "url".to_owned(),
        Setting::Text(format!("ws://127.0.0.1:{port}/feed")),
    );
    SensorSection {
        name: "feed".to_owned(),
        driver: "websocket".to_owned(),
        settings,
        json: vec![("feed".to_owned(), "/p".to_owned())],
        ..SensorSection::default()
    }
}

fn next(ex: &smol::LocalExecutor<'static>, feeds: &Feeds) -> FeedEvent {
    smol::block_on(ex.run(async {
        timeout(Duration::from_secs(10), feeds.next_event())
            .await
            .expect("an event within 10 s")
    }))
}

fn message(payload: &str) -> FeedEvent {
    FeedEvent::Message {
        name: "feed".to_owned(),
        payload: payload.as_bytes().to_vec(),
    }
}

#[test]
fn messages_fragments_pings_and_a_close_then_it_comes_back() {
    let (pong_tx, pong_rx) = std::sync::mpsc::channel();
    let first: Script = Box::new(move |mut s| {
        upgrade(&mut s, "101 Switching Protocols", true);
        let _ = s.write_all(&frame(true, 0x1, br#"{"p": 1}"#));
        let _ = s.write_all(&frame(false, 0x1, br#"{"p""#));
        let _ = s.write_all(&frame(true, 0x9, b"hi"));
        let _ = s.write_all(&frame(true, 0x0, br#": 2}"#));
        let _ = s.write_all(&frame(true, 0x2, &vec![b' '; 100_000]));
        let _ = s.write_all(&frame(true, 0x1, br#"{"p": 3}"#));
        // The client's pong: masked, the ping's data.
        let mut head = [0u8; 2];
        let mut mask = [0u8; 4];
        let mut data = [0u8; 2];
        if s.read_exact(&mut head).is_ok()
            && s.read_exact(&mut mask).is_ok()
            && s.read_exact(&mut data).is_ok()
        {
            let unmasked: Vec<u8> = data
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            let _ = pong_tx.send((head, unmasked));
        }
        let _ = s.write_all(&frame(true, 0x8, &1000u16.to_be_bytes()));
        std::thread::sleep(Duration::from_millis(200));
    });
    let second: Script = Box::new(|mut s| {
        upgrade(&mut s, "101 Switching Protocols", true);
        let _ = s.write_all(&frame(true, 0x1, br#"{"p": 4}"#));
        std::thread::sleep(Duration::from_millis(500));
    });
    let port = server(vec![first, second]);
    let ex: &'static smol::LocalExecutor<'static> = Box::leak(Box::new(smol::LocalExecutor::new()));
    let feeds = Feeds::start(ex, &[section(port)]).expect("a feed");
    assert_eq!(next(ex, &feeds), message(r#"{"p": 1}"#));
    assert_eq!(
        next(ex, &feeds),
        message(r#"{"p": 2}"#),
        "fragments joined around a ping"
    );
    assert_eq!(next(ex, &feeds), message(r#"{"p": 3}"#), "100 kB skipped");
    let (head, data) = pong_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("a pong");
    assert_eq!(head, [0x8A, 0x82], "a masked pong of 2 bytes");
    assert_eq!(data, b"hi");
    assert_eq!(
        next(ex, &feeds),
        FeedEvent::Down {
            name: "feed".to_owned(),
            why: "the server closed the feed (code 1000)".to_owned()
        }
    );
    assert_eq!(
        next(ex, &feeds),
        message(r#"{"p": 4}"#),
        "reconnected after 1 s"
    );
    assert_eq!(feeds.stats.dropped.get(), 1);
    assert_eq!(feeds.stats.connects.get(), 2);
}

#[test]
fn servers_that_do_not_speak_websocket_are_said() {
    let cases: Vec<(Script, &str)> = vec![
        (
            Box::new(|mut s| upgrade(&mut s, "404 Not Found", true)),
            "the server did not upgrade: \"HTTP/1.1 404 Not Found\"",
        ),
        (
            Box::new(|mut s| upgrade(&mut s, "101 Switching Protocols", false)),
            "the server's Sec-WebSocket-Accept is missing or wrong",
        ),
        (
            Box::new(|mut s| {
                upgrade(&mut s, "101 Switching Protocols", true);
                let mut masked = frame(true, 0x1, b"x");
                masked[1] |= 0x80;
                let _ = s.write_all(&masked);
                std::thread::sleep(Duration::from_millis(200));
            }),
            "the server sent a masked frame",
        ),
        (
            Box::new(|mut s| {
                upgrade(&mut s, "101 Switching Protocols", true);
                let _ = s.write_all(&frame(true, 0x1, br#"{"p": 1}"#)[..5]);
            }),
            "the server closed the connection",
        ),
        (
            Box::new(|_| {}),
            "the server closed the connection during the upgrade",
        ),
        (
            Box::new(|mut s| {
                upgrade(&mut s, "101 Switching Protocols", true);
                // A message that never ends: empty fragments, as fast as it can.
                let mut flood = frame(false, 0x1, b"");
                for _ in 0..2000 {
                    flood.extend_from_slice(&frame(false, 0x0, b""));
                }
                let _ = s.write_all(&flood);
                std::thread::sleep(Duration::from_millis(200));
            }),
            "the server sent a message in more than 1024 frames",
        ),
        (
            Box::new(|mut s| {
                upgrade(&mut s, "101 Switching Protocols", true);
                let _ = s.write_all(&[0xC1, 1, b'x']);
                std::thread::sleep(Duration::from_millis(200));
            }),
            "the server sent a frame with reserved bits set (an extension not asked for)",
        ),
        (
            Box::new(|mut s| {
                upgrade(&mut s, "101 Switching Protocols", true);
                let _ = s.write_all(&frame(true, 0x8, b""));
                std::thread::sleep(Duration::from_millis(200));
            }),
            "the server closed the feed",
        ),
    ];
    for (script, expected) in cases {
        let port = server(vec![script]);
        let ex: &'static smol::LocalExecutor<'static> =
            Box::leak(Box::new(smol::LocalExecutor::new()));
        let feeds = Feeds::start(ex, &[section(port)]).expect("a feed");
        match next(ex, &feeds) {
            FeedEvent::Down { why, .. } => assert_eq!(why, expected),
            other => panic!("{expected}: {other:?}"),
        }
    }
    let ex: &'static smol::LocalExecutor<'static> = Box::leak(Box::new(smol::LocalExecutor::new()));
    let feeds = Feeds::start(ex, &[section(9)]).expect("a feed");
    match next(ex, &feeds) {
        FeedEvent::Down { why, .. } => {
            assert!(why.starts_with("cannot connect to 127.0.0.1:9"), "{why}")
        }
        other => panic!("{other:?}"),
    }
}
