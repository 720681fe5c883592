//! Unit tests of `http`: heads, chunked bodies, and whole connections on
//! loopback (keep-alive, pipelining, `100 Continue`, limits, timeouts and
//! event streams).
use super::*;
use smol::net::TcpListener;
use std::io::{Read, Write};

fn head(text: &str) -> Head {
    parse_head(text.as_bytes(), 1024)
}

fn done(text: &str) -> (Request, Framing, bool) {
    match head(text) {
        Head::Done(parsed) => {
            assert_eq!(
                parsed.length,
                text.find("\r\n\r\n").map(|at| at + 4).unwrap()
            );
            (parsed.request, parsed.framing, parsed.keep_alive)
        }
        other => panic!("{text:?} gave {other:?}"),
    }
}

#[test]
fn a_head_gives_method_path_query_token_and_framing() {
    let (request, framing, keep_alive) = done(
        "POST /api/points?x=1 HTTP/1.1\r\nHost: a\r\nauthorization:  Bearer t \r\nContent-Length: 5\r\n\r\nhello",
    );
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/api/points");
    assert_eq!(request.query, "x=1");
    assert_eq!(request.authorization.as_deref(), Some("Bearer t"));
    assert_eq!(framing, Framing::Length(5));
    assert!(keep_alive);
    let (request, framing, keep_alive) = done("GET http://host:80/metrics HTTP/1.0\r\n\r\n");
    assert_eq!(
        (request.path.as_str(), request.query.as_str()),
        ("/metrics", "")
    );
    assert_eq!(framing, Framing::Length(0));
    assert!(!keep_alive, "HTTP/1.0 closes unless asked not to");
    assert!(done("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").2);
    assert!(!done("GET / HTTP/1.1\r\nConnection: TE, close\r\n\r\n").2);
    assert_eq!(
        done("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").1,
        Framing::Chunked
    );
}

#[test]
fn partial_heads_wait_and_bad_ones_are_refused_with_their_status() {
    assert_eq!(head("GET /api/status HTTP/1.1\r\nHost:"), Head::Partial);
    assert_eq!(head(""), Head::Partial);
    let status = |text: &str| match head(text) {
        Head::Bad(status, _) => status,
        other => panic!("{text:?} gave {other:?}"),
    };
    assert_eq!(status("\x16\x03\x01 tls hello\r\n\r\n"), 400);
    assert_eq!(status("GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"), 400);
    assert_eq!(
        status("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
        400
    );
    assert_eq!(
        status("POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
        400,
        "both framings: the smuggling case"
    );
    assert_eq!(
        status("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
        501
    );
    assert_eq!(
        status("POST / HTTP/1.1\r\nContent-Length: 1025\r\n\r\n"),
        413
    );
    assert_eq!(status("POST / HTTP/1.1\r\nExpect: teapot\r\n\r\n"), 417);
    let many = "X-A: b\r\n".repeat(MAX_HEADERS + 1);
    assert_eq!(status(&format!("GET / HTTP/1.1\r\n{many}\r\n")), 431);
    let long = format!("GET / HTTP/1.1\r\nX-Long: {}", "a".repeat(MAX_HEAD));
    assert_eq!(status(&long), 431, "an endless header line is cut off");
    assert_eq!(status("POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n"), 400);
    assert_eq!(
        status("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
        400,
        "chunked from an HTTP/1.0 client is broken framing"
    );
    // An HTTP/1.0 client's Expect is ignored; `close` wins over keep-alive.
    assert!(matches!(
        head("GET / HTTP/1.0\r\nExpect: teapot\r\n\r\n"),
        Head::Done(_)
    ));
    assert!(!done("GET / HTTP/1.1\r\nConnection: close, keep-alive\r\n\r\n").2);
    assert!(!done("GET / HTTP/1.1\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n").2);
    // A path with `://` in its query is a path, not an absolute URL.
    let (request, _, _) = done("GET /api/points?glob=a://b/c HTTP/1.1\r\n\r\n");
    assert_eq!(
        (request.path.as_str(), request.query.as_str()),
        ("/api/points", "glob=a://b/c")
    );
    // The first Authorization counts.
    let (request, _, _) = done("GET / HTTP/1.1\r\nAuthorization: a\r\nAuthorization: b\r\n\r\n");
    assert_eq!(request.authorization.as_deref(), Some("a"));
    // Two equal lengths are one length.
    assert_eq!(
        done("POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n").1,
        Framing::Length(2)
    );
}

/// Feeds `wire` to a fresh decoder in pieces of `step` bytes, as reads
/// deliver it, dropping what it takes; the last outcome.
fn dechunk(wire: &[u8], step: usize, max_body: usize) -> (Chunks, Vec<u8>) {
    let mut chunks = Dechunker::default();
    let mut buffer = Vec::new();
    let mut outcome = Chunks::Partial;
    for piece in wire.chunks(step) {
        buffer.extend_from_slice(piece);
        let (used, now) = chunks.feed(&buffer, max_body);
        buffer.drain(..used);
        outcome = now;
        if outcome != Chunks::Partial {
            break;
        }
    }
    (outcome, buffer)
}

#[test]
fn chunked_bodies_are_joined_in_any_pieces_and_what_follows_is_kept() {
    let wire = b"4;ext=1\r\nWiki\r\n5 \r\npedia\r\n0\r\nTrailer: x\r\n\r\nNEXT";
    for step in 1..wire.len() {
        let (outcome, rest) = dechunk(wire, step, 100);
        assert_eq!(
            outcome,
            Chunks::Done(b"Wikipedia".to_vec()),
            "pieces of {step}"
        );
        assert!(b"NEXT".starts_with(&rest), "pieces of {step}: {rest:?}");
    }
    let cut = &wire[..wire.len() - 6];
    assert_eq!(dechunk(cut, 3, 100).0, Chunks::Partial);
}

#[test]
fn bad_or_oversized_chunked_bodies_are_refused() {
    let status = |wire: &str| match dechunk(wire.as_bytes(), wire.len(), 100).0 {
        Chunks::Bad(status, _) => status,
        other => panic!("{wire:?} gave {other:?}"),
    };
    assert_eq!(status("zz\r\n"), 400);
    assert_eq!(status("+2\r\nab\r\n"), 400, "no sign");
    assert_eq!(status("\r\n"), 400, "no size");
    assert_eq!(status("1234567890abcdef0\r\n"), 400, "too many digits");
    assert_eq!(status("2\r\nabX\r\n"), 400, "a chunk ends in CRLF");
    assert_eq!(status("2;a\x01b\r\nab\r\n"), 400, "control bytes");
    assert_eq!(status("65\r\n"), 413);
    assert_eq!(status(&format!("32\r\n{}\r\n33\r\n", "a".repeat(50))), 413);
    assert_eq!(
        status(&format!("1;{}", "x".repeat(2000))),
        400,
        "an endless line"
    );
    // Framing that never ends (long extensions on one-byte chunks) stops
    // at its bound too.
    let padded = format!("1;{}\r\na\r\n", "x".repeat(1000));
    let (outcome, _) = dechunk(padded.repeat(40).as_bytes(), 300, 100);
    assert!(matches!(outcome, Chunks::Bad(413, _)), "{outcome:?}");
}

#[test]
fn a_head_end_is_found_in_the_new_bytes_and_the_three_before() {
    let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    assert!(has_head_end(head, 0));
    assert!(has_head_end(head, head.len() - 1));
    assert!(!has_head_end(head, head.len() + 3));
    assert!(!has_head_end(b"GET / HTTP/1.1\r\n", 0));
    assert!(has_head_end(b"GET / HTTP/1.0\n\n", 14));
}

const LIMITS: Limits = Limits {
    head: Duration::from_millis(300),
    body: Duration::from_millis(300),
    write: Duration::from_millis(300),
    max_body: 1024,
    ping: Duration::from_millis(200),
};

/// Serves one connection on loopback with an echo handler (the answer is
/// `METHOD PATH?QUERY BODY`; `/events` streams what `events` sends) and
/// returns the client's end and the server's outcome.
fn connection(events: Option<Receiver<String>>) -> (std::net::TcpStream, Receiver<End>) {
    let listener = smol::block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let (ended, outcome) = smol::channel::bounded(1);
    std::thread::spawn(move || {
        smol::block_on(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut events = events;
            let end = serve(stream, LIMITS, |request| {
                let events = events.take();
                async move {
                    match (request.path.as_str(), events) {
                        ("/events", Some(receiver)) => Response {
                            status: 200,
                            content_type: "text/event-stream",
                            body: Body::Stream(receiver),
                        },
                        _ => Response::full(
                            200,
                            "text/plain",
                            format!(
                                "{} {}?{} {}",
                                request.method,
                                request.path,
                                request.query,
                                String::from_utf8_lossy(&request.body)
                            ),
                        ),
                    }
                }
            })
            .await;
            let _ = ended.send(end).await;
        });
    });
    let client = std::net::TcpStream::connect(addr).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    (client, outcome)
}

fn read_all(client: &mut std::net::TcpStream) -> String {
    let mut text = String::new();
    let _ = client.read_to_string(&mut text);
    text
}

fn outcome(ended: &Receiver<End>) -> End {
    smol::block_on(async {
        until(Instant::now() + Duration::from_secs(5), ended.recv())
            .await
            .expect("the connection ends in time")
            .expect("an outcome")
    })
}

#[test]
fn kept_alive_and_pipelined_requests_are_answered_in_order() {
    let (mut client, ended) = connection(None);
    client
        .write_all(
            b"GET /a?1 HTTP/1.1\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nxyz\
              POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
        )
        .unwrap();
    let text = read_all(&mut client);
    let answers: Vec<&str> = text.split("HTTP/1.1 200 OK\r\n").skip(1).collect();
    assert_eq!(answers.len(), 3, "{text}");
    assert!(answers[0].ends_with("content-length: 9\r\n\r\nGET /a?1 "));
    assert!(answers[1].ends_with("\r\n\r\nPOST /b? xyz"));
    assert!(answers[2].contains("connection: close\r\n"));
    assert!(answers[2].ends_with("\r\n\r\nPOST /c? hi"));
    assert_eq!(outcome(&ended), End::Closed);
}

#[test]
fn a_client_that_expects_100_continue_gets_it_before_sending_the_body() {
    let (mut client, ended) = connection(None);
    client
        .write_all(b"POST /p HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut interim = [0u8; 25];
    client.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    client.write_all(b"ok").unwrap();
    assert!(read_all(&mut client).ends_with("POST /p? ok"));
    assert_eq!(outcome(&ended), End::Closed);
}

#[test]
fn a_slow_head_or_body_loses_its_connection_without_an_answer() {
    let (mut client, ended) = connection(None);
    client.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    assert_eq!(outcome(&ended), End::TimedOut);
    assert_eq!(read_all(&mut client), "");
    let (mut client, ended) = connection(None);
    client
        .write_all(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc")
        .unwrap();
    assert_eq!(outcome(&ended), End::TimedOut);
    assert_eq!(read_all(&mut client), "");
}

#[test]
fn an_oversized_body_is_refused_before_it_is_read() {
    let (mut client, ended) = connection(None);
    client
        .write_all(b"POST / HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n")
        .unwrap();
    let text = read_all(&mut client);
    assert!(
        text.starts_with("HTTP/1.1 413 Content Too Large\r\n"),
        "{text}"
    );
    assert!(text.ends_with("{\"error\":\"the body is larger than 1024 bytes\"}\n"));
    assert_eq!(outcome(&ended), End::Refused(413));
}

#[test]
fn a_refused_body_still_sent_does_not_reset_the_answer_away() {
    let (mut client, ended) = connection(None);
    let mut request = b"POST / HTTP/1.1\r\nContent-Length: 100000\r\n\r\n".to_vec();
    request.extend(std::iter::repeat_n(b'x', 100_000));
    // Whatever of the body the server no longer takes fails to send; the
    // answer must still be readable, without a reset.
    let _ = client.write_all(&request);
    let text = read_all(&mut client);
    assert!(text.starts_with("HTTP/1.1 413 "), "{text:?}");
    assert_eq!(outcome(&ended), End::Refused(413));
}

#[test]
fn a_head_request_gets_the_head_alone() {
    let (mut client, ended) = connection(None);
    client
        .write_all(b"HEAD /x HTTP/1.1\r\n\r\nGET /y HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let text = read_all(&mut client);
    assert!(
        text.starts_with("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 9\r\n\r\nHTTP/1.1 200 OK\r\n"),
        "{text:?}"
    );
    assert!(text.ends_with("GET /y? "));
    assert_eq!(outcome(&ended), End::Closed);
}

#[test]
fn an_http10_client_keeps_alive_only_when_it_asks_and_is_told_so() {
    let (mut client, ended) = connection(None);
    client
        .write_all(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\n\r\n")
        .unwrap();
    let text = read_all(&mut client);
    let answers: Vec<&str> = text.split("HTTP/1.1 200 OK\r\n").skip(1).collect();
    assert_eq!(answers.len(), 2, "{text}");
    assert!(answers[0].contains("connection: keep-alive\r\n"));
    assert!(answers[1].contains("connection: close\r\n"));
    assert_eq!(outcome(&ended), End::Closed);
}

#[test]
fn garbage_gets_a_400_and_the_connection_closes() {
    let (mut client, ended) = connection(None);
    client.write_all(b"\x00\x01\x02 hello\r\n\r\n").unwrap();
    assert!(read_all(&mut client).starts_with("HTTP/1.1 400 Bad Request\r\n"));
    assert_eq!(outcome(&ended), End::Refused(400));
}

#[test]
fn an_event_stream_is_chunked_and_ends_with_its_sender() {
    let (sender, receiver) = smol::channel::bounded(4);
    let (mut client, ended) = connection(Some(receiver));
    client.write_all(b"GET /events HTTP/1.1\r\n\r\n").unwrap();
    smol::block_on(async {
        sender.send("event: a\n\n".to_owned()).await.unwrap();
        sender.send(String::new()).await.unwrap();
        sender.send("data: 1\n\n".to_owned()).await.unwrap();
    });
    drop(sender);
    let text = read_all(&mut client);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"));
    assert!(text.contains("transfer-encoding: chunked\r\n"));
    assert!(
        text.ends_with("\r\n\r\na\r\nevent: a\n\n\r\n9\r\ndata: 1\n\n\r\n0\r\n\r\n"),
        "{text:?}"
    );
    assert_eq!(outcome(&ended), End::StreamEnded);
}

#[test]
fn an_event_stream_ends_when_its_client_goes() {
    let (sender, receiver) = smol::channel::bounded::<String>(4);
    let (mut client, ended) = connection(Some(receiver));
    client.write_all(b"GET /events HTTP/1.1\r\n\r\n").unwrap();
    let mut first = [0u8; 12];
    client.read_exact(&mut first).unwrap();
    drop(client);
    assert_eq!(outcome(&ended), End::Closed);
    assert!(sender.is_closed(), "the stream's receiver went with it");
}

#[test]
fn a_quiet_event_stream_is_pinged_and_an_http10_one_is_not_chunked() {
    let (sender, receiver) = smol::channel::bounded(4);
    let (mut client, ended) = connection(Some(receiver));
    client.write_all(b"GET /events HTTP/1.0\r\n\r\n").unwrap();
    // Past the ping interval (200 ms) with nothing to send.
    std::thread::sleep(Duration::from_millis(500));
    smol::block_on(sender.send("data: 1\n\n".to_owned())).unwrap();
    drop(sender);
    let text = read_all(&mut client);
    assert!(!text.contains("transfer-encoding"), "{text:?}");
    let body = text.split("\r\n\r\n").nth(1).unwrap();
    assert!(body.starts_with(": ping\n\n"), "{body:?}");
    assert!(body.ends_with("data: 1\n\n"), "{body:?}");
    assert_eq!(outcome(&ended), End::StreamEnded);
}
