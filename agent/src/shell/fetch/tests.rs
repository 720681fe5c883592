//! The HTTP exchange against scripted servers (every way an answer can go
//! wrong), base64, and a command's run.

use super::*;
use std::io::{Read, Write};

/// A server on 127.0.0.1 that answers one request with `answer` (in
/// pieces, `pause` apart) and then closes; its URL.
fn serve(answer: Vec<Vec<u8>>, pause: Duration) -> Url {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            for piece in answer {
                if stream.write_all(&piece).is_err() {
                    return;
                }
                std::thread::sleep(pause);
            }
        }
    });
    Url {
        host: "127.0.0.1".into(),
        port,
        path: "/status?id=0".into(),
    }
}

fn get_now(url: &Url) -> Result<Vec<u8>, String> {
    smol::block_on(get(url, ""))
}

#[test]
fn bodies_by_length_by_chunks_and_by_close() {
    let url = serve(
        vec![b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"t\": 21.5}".to_vec()],
        Duration::ZERO,
    );
    assert_eq!(get_now(&url), Ok(b"{\"t\": 21.5}".to_vec()));
    let url = serve(
        vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"t\"\r\n".to_vec(),
            b"6\r\n: 21.5\r\n1\r\n}\r\n0\r\n\r\n".to_vec(),
        ],
        Duration::from_millis(20),
    );
    assert_eq!(get_now(&url), Ok(b"{\"t\": 21.5}".to_vec()));
    // A chunk whose data ends in "0\r\n", the last chunk coming later.
    let url = serve(
        vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n21.0\r\n\r\n".to_vec(),
            b"0\r\n\r\n".to_vec(),
        ],
        Duration::from_millis(50),
    );
    assert_eq!(get_now(&url), Ok(b"21.0\r\n".to_vec()));
    let url = serve(
        vec![b"HTTP/1.0 200 OK\r\n\r\n42\n".to_vec()],
        Duration::ZERO,
    );
    assert_eq!(get_now(&url), Ok(b"42\n".to_vec()));
}

#[test]
fn every_bad_answer_is_an_error_in_words() {
    let cases: Vec<(Vec<Vec<u8>>, &str)> = vec![
        (
            vec![b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n".to_vec()],
            "HTTP HTTP/1.1 500 Internal Server Error",
        ),
        (
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{\"t\":".to_vec()],
            "the answer ended early (5 of 50 bytes)",
        ),
        (
            vec![b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"t\"".to_vec()],
            "chunks are broken or cut off",
        ),
        (
            vec![b"HTTP/1.1 200 OK\r\nContent-Le".to_vec()],
            "in the middle of the headers",
        ),
        (vec![], "closed the connection without an answer"),
        (
            vec![b"SSH-2.0-OpenSSH_9.2\r\n\r\n".to_vec()],
            "not an HTTP answer (\"SSH-2.0-OpenSSH_9.2\")",
        ),
        (
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 10485760\r\n\r\n".to_vec()],
            "larger than 1024 KiB (10485760 bytes)",
        ),
        (
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n".to_vec()],
            "a bad Content-Length \"x\"",
        ),
        (vec![vec![b'a'; 20_000]], "headers are longer than 16 KiB"),
    ];
    for (answer, expected) in cases {
        let url = serve(answer, Duration::ZERO);
        let error = get_now(&url).expect_err(expected);
        assert!(error.contains(expected), "{expected}: {error}");
    }
}

#[test]
fn ten_megabytes_without_a_length_stop_at_the_bound() {
    let mut answer = vec![b"HTTP/1.1 200 OK\r\n\r\n".to_vec()];
    answer.extend(std::iter::repeat_n(vec![b'x'; 1 << 20], 10));
    let url = serve(answer, Duration::ZERO);
    let error = get_now(&url).expect_err("too large");
    assert_eq!(error, "the answer is larger than 1024 KiB");
}

#[test]
fn nobody_listening_is_said() {
    let url = Url {
        host: "127.0.0.1".into(),
        port: 9,
        path: "/".into(),
    };
    let error = get_now(&url).expect_err("refused");
    assert!(
        error.starts_with("cannot connect to 127.0.0.1:9:"),
        "{error}"
    );
}

#[test]
fn request_headers_carry_accept_extra_headers_and_basic_auth() {
    let headers = request_headers(
        &[("X-Key".to_owned(), "abc".to_owned())],
        Some("admin"),
        Some("secret"),
    );
    assert_eq!(
        headers,
        "Accept: application/json, text/plain\r\nX-Key: abc\r\nAuthorization: Basic YWRtaW46c2VjcmV0\r\n"
    );
    let own = request_headers(&[("accept".to_owned(), "text/html".to_owned())], None, None);
    assert_eq!(own, "accept: text/html\r\n");
}

#[test]
fn base64_matches_the_rfc_vectors() {
    for (plain, encoded) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(base64(plain.as_bytes()), encoded);
    }
}

#[test]
fn a_command_gives_its_stdout_or_says_why_not() {
    let sh = |script: &str| vec!["/bin/sh".to_owned(), "-c".to_owned(), script.to_owned()];
    let run = |argv: Vec<String>, timeout: u64| {
        smol::block_on(command(&argv, Duration::from_millis(timeout)))
    };
    assert_eq!(
        run(sh("echo 21.5; echo noise >&2"), 5000),
        Ok(b"21.5\n".to_vec())
    );
    assert_eq!(
        run(sh("echo 'no sensor' >&2; exit 3"), 5000),
        Err("/bin/sh exited with 3: no sensor".to_owned())
    );
    assert_eq!(
        run(sh("exit 4"), 5000),
        Err("/bin/sh exited with 4".to_owned())
    );
    assert_eq!(
        run(sh("sleep 5"), 200),
        Err("read timed out after 200ms".to_owned())
    );
    let missing = run(vec!["/nonexistent/probe".to_owned()], 5000).expect_err("missing");
    assert!(missing.contains("no such program"), "{missing}");
    let flood = run(sh("head -c 200000 /dev/zero"), 5000).expect_err("too much");
    assert_eq!(flood, "/bin/sh printed more than 64 KiB");
}
