//! Line protocol, the bounded queue, and the sending task against a
//! scripted engine: batches, a refusal, an engine that is down.

use super::*;

#[test]
fn lines_are_influx_line_protocol_escaped() {
    assert_eq!(
        line(
            "temperature",
            "kitchen",
            "°C",
            &Value::Float(21.5),
            1_700_000_000_123
        ),
        Some("temperature,node=kitchen,unit=°C value=21.5 1700000000123000000".to_owned())
    );
    assert_eq!(
        line("door", "hall", "", &Value::Bool(true), 1),
        Some("door,node=hall value=1.0 1000000".to_owned())
    );
    assert_eq!(
        line("a b,c", "n=1", "k W", &Value::Int(3), 0),
        Some("a\\ b\\,c,node=n\\=1,unit=k\\ W value=3.0 0".to_owned())
    );
    assert_eq!(line("t", "n", "", &Value::Float(f64::NAN), 0), None);
    let text = Value::Text(heapless::String::try_from("open").expect("short"));
    assert_eq!(line("t", "n", "", &text, 0), None);
    assert_eq!(
        line("t", "n", "", &crate::shell::messages::error("x"), 0),
        None
    );
}

#[test]
fn the_queue_keeps_the_newest_and_removes_by_number() {
    let mut queue = Queue {
        capacity: 3,
        ..Queue::default()
    };
    for n in 0..5 {
        queue.push(format!("l{n}"));
    }
    assert_eq!(queue.lines, ["l2", "l3", "l4"]);
    assert_eq!((queue.front, queue.dropped), (2, 2));
    // A batch taken as lines 2..4 was sent while line 5 came and line 2
    // was dropped: only what was sent goes.
    queue.push("l5".to_owned());
    assert_eq!(queue.remove_until(4), 1, "l3 only: l2 was already dropped");
    assert_eq!(queue.lines, ["l4", "l5"]);
    assert_eq!(queue.remove_until(1), 0);
}

/// An engine on 127.0.0.1 answering each request with the next status of
/// `statuses` (then 204), recording bodies.
fn engine(statuses: Vec<u16>) -> (shoal_config::Url, std::sync::mpsc::Receiver<String>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut statuses = statuses.into_iter();
        for mut stream in listener.incoming().map_while(Result::ok) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let mut raw = Vec::new();
            let mut buf = [0u8; 65536];
            loop {
                let n = stream.read(&mut buf).unwrap_or(0);
                raw.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&raw).into_owned();
                let complete = text.split_once("\r\n\r\n").is_some_and(|(head, body)| {
                    head.lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .and_then(|n| n.trim().parse::<usize>().ok())
                        .is_some_and(|n| body.len() >= n)
                });
                if n == 0 || complete {
                    break;
                }
            }
            let text = String::from_utf8_lossy(&raw).into_owned();
            let _ = tx.send(text);
            let status = statuses.next().unwrap_or(204);
            let _ = write!(stream, "HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let url = shoal_config::Url {
        host: "127.0.0.1".into(),
        port,
        path: "/write?db=shoal".into(),
    };
    (url, rx)
}

fn section(url: shoal_config::Url, batch: usize) -> ExportSection {
    ExportSection {
        kind: "influx".into(),
        url_text: format!("http://{}{}", url.authority(), url.path),
        url,
        points: "*".into(),
        buffer: 100,
        batch,
        interval: Duration::from_millis(50),
        token_file: None,
        username: Some("shoal".into()),
        password_file: None,
    }
}

#[test]
fn batches_go_out_a_refused_one_is_dropped_and_a_down_engine_is_retried() {
    // First request refused (400), the second a 503, then accepted.
    let (url, bodies) = engine(vec![400, 503]);
    let ex: &'static smol::LocalExecutor<'static> = Box::leak(Box::new(smol::LocalExecutor::new()));
    let queue = Rc::new(RefCell::new(Queue {
        capacity: 100,
        ..Queue::default()
    }));
    for n in 0..5 {
        queue.borrow_mut().push(format!("t,node=a value={n}.0 {n}"));
    }
    let section = section(url, 2);
    let headers = headers(&section).expect("no files");
    let task = ex.spawn(send(section, headers, Rc::clone(&queue)));
    smol::block_on(ex.run(async {
        for _ in 0..100 {
            if queue.borrow().lines.is_empty() {
                break;
            }
            smol::Timer::after(Duration::from_millis(50)).await;
        }
    }));
    drop(task);
    let first = bodies
        .recv_timeout(Duration::from_secs(1))
        .expect("a request");
    assert!(
        first.starts_with("POST /write?db=shoal HTTP/1.1\r\n"),
        "{first}"
    );
    assert!(first.contains("Content-Type: text/plain; charset=utf-8\r\n"));
    assert!(
        first.contains("Authorization: Basic c2hvYWw6\r\n"),
        "{first}"
    );
    assert!(
        first.ends_with("t,node=a value=0.0 0\nt,node=a value=1.0 1"),
        "{first}"
    );
    let second = bodies
        .recv_timeout(Duration::from_secs(1))
        .expect("the 503");
    assert!(
        second.ends_with("value=2.0 2\nt,node=a value=3.0 3"),
        "{second}"
    );
    let third = bodies
        .recv_timeout(Duration::from_secs(3))
        .expect("the retry");
    assert!(
        third.ends_with("value=2.0 2\nt,node=a value=3.0 3"),
        "the same batch again: {third}"
    );
    let q = queue.borrow();
    assert_eq!((q.sent, q.rejected, q.failures, q.dropped), (3, 2, 1, 0));
    assert_eq!(q.last_error, None);
}

#[test]
fn a_reload_keeps_what_waits_for_the_same_engine() {
    let ex: &'static smol::LocalExecutor<'static> = Box::leak(Box::new(smol::LocalExecutor::new()));
    let url = shoal_config::Url {
        host: "127.0.0.1".into(),
        port: 9,
        path: "/write".into(),
    };
    let mut first = section(url.clone(), 10);
    first.interval = Duration::from_secs(3600);
    first.username = None;
    let mut exports = Exports::start(ex, std::slice::from_ref(&first));
    for n in 0..50 {
        exports.exports[0].queue.borrow_mut().push(format!("l{n}"));
    }
    // Another interval and a smaller buffer, the same engine.
    let mut changed = first.clone();
    changed.interval = Duration::from_secs(1800);
    changed.buffer = 30;
    exports.reload(ex, std::slice::from_ref(&changed));
    let q = exports.exports[0].queue.borrow();
    assert_eq!(q.lines.len(), 30, "cut to the new buffer");
    assert_eq!(
        q.lines.front().map(String::as_str),
        Some("l20"),
        "the newest kept"
    );
    assert_eq!(q.dropped, 20, "and the cut counted");
    drop(q);
    // Another engine: a new, empty queue.
    let mut other = changed.clone();
    other.url.port = 10;
    other.url_text = "http://127.0.0.1:10/write".into();
    exports.reload(ex, std::slice::from_ref(&other));
    assert!(exports.exports[0].queue.borrow().lines.is_empty());
}

#[test]
fn a_line_pushed_out_while_its_request_is_under_way_is_counted_once() {
    let run = |answered: Option<bool>| {
        let mut queue = Queue {
            capacity: 3,
            ..Queue::default()
        };
        for n in 0..3 {
            queue.push(format!("l{n}"));
        }
        // Lines 0..3 go out; two more come meanwhile, pushing out 0 and 1.
        queue.in_flight_end = 3;
        queue.push("l3".to_owned());
        queue.push("l4".to_owned());
        assert_eq!(queue.dropped, 0, "not lost yet: they are in the request");
        queue.finish_request(3, answered);
        queue
    };
    let sent = run(Some(true));
    assert_eq!((sent.sent, sent.dropped, sent.rejected), (3, 0, 0));
    assert_eq!(sent.lines, ["l3", "l4"]);
    let refused = run(Some(false));
    assert_eq!((refused.sent, refused.dropped, refused.rejected), (0, 0, 3));
    let failed = run(None);
    assert_eq!((failed.sent, failed.dropped, failed.rejected), (0, 2, 0));
    assert_eq!(
        failed.lines,
        ["l2", "l3", "l4"],
        "l2 waits for the next try"
    );
    // Beyond the request, a line pushed out is dropped at once.
    let mut later = failed;
    later.push("l5".to_owned());
    assert_eq!(later.dropped, 3);
}
