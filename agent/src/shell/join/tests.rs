//! Unit tests of `join`: token text, the key written, and `ask` against a member on loopback.

use super::*;
use shoal_core::join::Tokens;

fn token(member: &str) -> Token {
    Token {
        secret: Secret([0xab; SECRET_LEN]),
        member: member.to_owned(),
    }
}

#[test]
fn a_token_reads_back_as_written_and_bad_ones_say_why() {
    let token = token("192.168.1.20:20195");
    let text = token.text();
    assert_eq!(
        text,
        "shoal1-abababababababababababababababab@192.168.1.20:20195"
    );
    assert_eq!(Token::parse(&format!("  {text}\n")), Ok(token));
    for (bad, why) in [
        ("abab@1.2.3.4:5", "not a shoal join token"),
        ("shoal1-abab", "names no member"),
        ("shoal1-abab@1.2.3.4:5", "32 hex digits"),
        (
            "shoal1-zzababababababababababababababab@1.2.3.4:5",
            "bad hex digit",
        ),
        (
            "shoal1-abababababababababababababababab@1.2.3.4",
            "HOST:PORT",
        ),
        ("shoal1-abababababababababababababababab@:5", "HOST:PORT"),
        (
            "shoal1-éabababababababababababababababa@1.2.3.4:5",
            "32 hex digits",
        ),
    ] {
        let error = Token::parse(bad).expect_err(bad);
        assert!(error.contains(why), "{bad}: {error}");
    }
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("shoal-join-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn the_key_is_written_private_and_replaces_a_mesh_of_one() {
    let dir = scratch("key");
    let path = dir.join("mesh.key");
    state::create_private_dir(&dir).expect("dir");
    state::create_key(&path).expect("own key");
    let joined = MeshKey([0x5a; 32]);
    assert_eq!(write_key(&path, &joined), Ok(true));
    assert_eq!(state::read_key(&path).expect("readable").0, joined.0);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)
            .expect("written")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // The same key again: nothing to do.
    assert_eq!(write_key(&path, &joined), Ok(false));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A member on 127.0.0.1 answering with `Tokens`, for one test.
fn member(tokens: Tokens, key: MeshKey) -> (SocketAddr, std::thread::JoinHandle<Tokens>) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let addr = socket.local_addr().expect("addr");
    let handle = std::thread::spawn(move || {
        let mut tokens = tokens;
        let mut buf = [0u8; 512];
        let started = std::time::Instant::now();
        let mut idle = 0;
        while idle < 10 && started.elapsed() < Duration::from_secs(10) {
            let Ok((len, from)) = socket.recv_from(&mut buf) else {
                idle += 1;
                continue;
            };
            idle = 0;
            let now = Instant::from_millis(started.elapsed().as_millis() as u64);
            let (reply, _) = tokens.handle(now, from.ip(), &buf[..len], &key);
            if let Some(reply) = reply {
                let _ = socket.send_to(&reply, from);
            }
        }
        tokens
    });
    (addr, handle)
}

#[test]
fn ask_gets_the_key_once_and_names_every_failure() {
    let key = MeshKey([0x11; 32]);
    let mut tokens = Tokens::default();
    let good = token("placeholder:1").secret;
    tokens
        .issue(Instant::ZERO, good, Duration::from_secs(60))
        .expect("issued");
    let expiring = Secret([0xcd; SECRET_LEN]);
    tokens
        .issue(Instant::ZERO, expiring, Duration::from_millis(1))
        .expect("issued");
    let (addr, member_thread) = member(tokens, key.clone());
    let name = wire::name("pi-new").expect("valid");
    let at = |secret: Secret| Token {
        secret,
        member: addr.to_string(),
    };
    let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
    assert_eq!(ask(&at(good), local, &name), Ok(key.0));
    assert_eq!(ask(&at(good), local, &name), Err(JoinFailure::Used));
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(ask(&at(expiring), local, &name), Err(JoinFailure::Expired));
    assert_eq!(
        ask(&at(Secret([1; SECRET_LEN])), local, &name),
        Err(JoinFailure::Wrong(JoinError::Refused))
    );
    let _ = member_thread.join();
    // Nobody there.
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let nobody = Token {
        secret: good,
        member: silent.local_addr().expect("addr").to_string(),
    };
    let failure = ask(&nobody, local, &name).expect_err("unreachable");
    assert!(matches!(failure, JoinFailure::Unreachable(_)));
    assert!(failure
        .to_string()
        .starts_with("unreachable: no answer from 127.0.0.1:"));
}
