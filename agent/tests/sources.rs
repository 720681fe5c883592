//! `http`, `command` and `websocket` sensors as real agents read them:
//! against an HTTP server and a WebSocket server the test runs on
//! 127.0.0.x (free ports, threads of this process) and a script in a
//! temporary directory. Values reach every node; a server that hangs,
//! answers 500, HTML or 10 MB, or closes mid-message gives error points
//! and recovers when it behaves again; nothing gets stuck.

mod common;

use common::agents::Mesh;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the test server answers a path.
#[derive(Debug, Clone, PartialEq)]
enum Mode {
    /// `{"apower": SECONDS, "output": true}`: changes every second.
    Counter,
    /// A fixed JSON body.
    Json(String),
    Status500,
    Html,
    /// 10 MB without a length.
    Huge,
    /// A length of 100, then 10 bytes and a close.
    Cut,
    /// Never answers (the connection stays open for a minute).
    Hang,
}

/// An HTTP server on `host` answering each path by its mode, which the
/// test changes while it runs.
struct Server {
    url: String,
    modes: Arc<Mutex<BTreeMap<String, Mode>>>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(host: &str) -> Server {
        let listener = TcpListener::bind(format!("{host}:0")).expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let modes = Arc::new(Mutex::new(BTreeMap::new()));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (modes_in, requests_in) = (Arc::clone(&modes), Arc::clone(&requests));
        let started = Instant::now();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let modes = Arc::clone(&modes_in);
                let requests = Arc::clone(&requests_in);
                std::thread::spawn(move || answer(stream, &modes, &requests, started));
            }
        });
        Server {
            url,
            modes,
            requests,
        }
    }

    fn set(&self, path: &str, mode: Mode) {
        self.modes
            .lock()
            .expect("modes")
            .insert(path.to_owned(), mode);
    }

    fn requests_for(&self, path: &str) -> usize {
        let requests = self.requests.lock().expect("requests");
        requests
            .iter()
            .filter(|r| r.contains(&format!("GET {path} ")))
            .count()
    }
}

fn answer(
    mut stream: TcpStream,
    modes: &Mutex<BTreeMap<String, Mode>>,
    requests: &Mutex<Vec<String>>,
    started: Instant,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut request = Vec::new();
    let mut buf = [0u8; 2048];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&request).into_owned();
    requests.lock().expect("requests").push(text.clone());
    let path = text.split(' ').nth(1).unwrap_or("/").to_owned();
    let mode = modes.lock().expect("modes").get(&path).cloned();
    let json = |body: &str| {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let reply = match mode {
        Some(Mode::Counter) => json(&format!(
            "{{\"apower\": {}, \"output\": true}}",
            started.elapsed().as_secs()
        )),
        Some(Mode::Json(body)) => json(&body),
        Some(Mode::Status500) => {
            "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n".to_owned()
        }
        Some(Mode::Html) => {
            let body = "<!DOCTYPE html><html><body>Login</body></html>";
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        }
        Some(Mode::Huge) => {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\n\r\n");
            let chunk = vec![b'7'; 1 << 20];
            for _ in 0..10 {
                if stream.write_all(&chunk).is_err() {
                    return;
                }
            }
            return;
        }
        Some(Mode::Cut) => "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"apower\":".to_owned(),
        Some(Mode::Hang) => {
            std::thread::sleep(Duration::from_secs(60));
            return;
        }
        None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_owned(),
    };
    let _ = stream.write_all(reply.as_bytes());
}

/// `GET /api/points/NODE/NAME`'s value at `api` (null when absent).
fn value_at(api: &str, node: &str, name: &str) -> serde_json::Value {
    let path = format!("/api/points/{node}/{name}");
    match shoal::shell::client::request(api, "GET", &path, None, Duration::from_secs(5)) {
        Ok(reply) if reply.status == 200 => reply.body["value"].clone(),
        _ => serde_json::Value::Null,
    }
}

fn stats_at(api: &str) -> serde_json::Value {
    shoal::shell::client::request(api, "GET", "/api/stats", None, Duration::from_secs(5))
        .expect("stats")
        .body
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {limit:?} waiting for {what}");
}

/// A point's value as the other node shows it, as text ("error: ..." for
/// an error).
fn shown(api: &str, name: &str) -> String {
    let value = value_at(api, "agent-1", name);
    match (&value, value["error"].as_str()) {
        (_, Some(error)) => format!("error: {error}"),
        (serde_json::Value::String(text), _) => text.clone(),
        (serde_json::Value::Null, _) => String::new(),
        (other, _) => other.to_string(),
    }
}

const KEY: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";

fn http_sensor(name: &str, url: &str, extra: &str) -> String {
    format!(
        "[[sensor]]\nname = \"{name}\"\ndriver = \"http\"\nurl = \"{url}\"\njson = {{ power = \"/apower\", on = \"/output\" }}\nunit = {{ power = \"W\" }}\ninterval = \"300ms\"\ntimeout = \"1s\"\n{extra}"
    )
}

#[test]
fn http_and_command_sources_reach_every_node_and_bad_servers_are_errors_that_heal() {
    let server = Server::start("127.0.0.130");
    server.set("/plug", Mode::Counter);
    for path in ["/flaky", "/hang", "/e500", "/html", "/huge", "/cut"] {
        server.set(
            path,
            Mode::Json("{\"apower\": 1.5, \"output\": false}".to_owned()),
        );
    }
    let mut mesh = Mesh::new(0);
    let password = mesh.dir.join("plug.password");
    std::fs::write(&password, "secret\n").expect("password written");
    let script = mesh.dir.join("fan-speed");
    std::fs::write(
        &script,
        "#!/bin/sh\nn=$(cat \"$0.count\" 2>/dev/null || echo 0)\necho $((n + 1)) > \"$0.count\"\necho \"{\\\"rpm\\\": $((1000 + n))}\"\n",
    )
    .expect("script written");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut sources = http_sensor(
        "plug",
        &format!("{}/plug", server.url),
        &format!(
            "username = \"admin\"\npassword_file = \"{}\"\nheaders = {{ X-Token = \"t1\" }}\n",
            password.display()
        ),
    );
    for name in ["flaky", "hang", "e500", "html", "huge", "cut"] {
        sources.push_str(&http_sensor(name, &format!("{}/{name}", server.url), ""));
    }
    sources.push_str(&format!(
        "[[sensor]]\nname = \"fan\"\ndriver = \"command\"\ncommand = [\"{}\"]\njson = \"/rpm\"\nunit = \"rpm\"\ninterval = \"300ms\"\n\
         [[sensor]]\nname = \"broken\"\ndriver = \"command\"\ncommand = [\"/bin/sh\", \"-c\", \"echo 'no fan' >&2; exit 3\"]\ninterval = \"300ms\"\n",
        script.display()
    ));
    mesh.add_full(1, 131, Some(KEY), "[\"127.255.255.255\"]", "[]", &sources);
    mesh.add(2, 132, Some(KEY));
    let api = format!("127.0.0.132:{}", mesh.port + 2);
    // Values on the other node, with units; the counter moves.
    let took = wait_until(
        "the plug's power on agent-2",
        Duration::from_secs(20),
        || value_at(&api, "agent-1", "plug.power").is_number(),
    );
    eprintln!("an http value reached the other node {took:?} after start");
    let first = value_at(&api, "agent-1", "plug.power");
    wait_until(
        "the plug's power to change",
        Duration::from_secs(10),
        || value_at(&api, "agent-1", "plug.power") != first,
    );
    assert_eq!(
        value_at(&api, "agent-1", "plug.on"),
        serde_json::json!(true)
    );
    let point = shoal::shell::client::request(
        &api,
        "GET",
        "/api/points/agent-1/plug.power",
        None,
        Duration::from_secs(5),
    )
    .expect("point");
    assert_eq!(point.body["unit"], "W", "{}", point.body);
    wait_until("the fan's rpm to count up", Duration::from_secs(10), || {
        value_at(&api, "agent-1", "fan")
            .as_f64()
            .is_some_and(|rpm| rpm >= 1002.0)
    });
    wait_until(
        "the broken command's error",
        Duration::from_secs(10),
        || shown(&api, "broken") == "error: /bin/sh exited with 3: no fan",
    );
    // Basic auth and the extra header were sent.
    let requests = server.requests.lock().expect("requests").clone();
    let plug = requests
        .iter()
        .find(|r| r.starts_with("GET /plug "))
        .expect("a plug request");
    assert!(
        plug.contains("Authorization: Basic YWRtaW46c2VjcmV0\r\n"),
        "{plug}"
    );
    assert!(plug.contains("X-Token: t1\r\n"), "{plug}");
    // Every bad server at once.
    wait_until(
        "the bad servers' values first",
        Duration::from_secs(10),
        || {
            ["flaky", "hang", "e500", "html", "huge", "cut"]
                .iter()
                .all(|name| {
                    value_at(&api, "agent-1", &format!("{name}.power")) == serde_json::json!(1.5)
                })
        },
    );
    server.set("/hang", Mode::Hang);
    server.set("/e500", Mode::Status500);
    server.set("/html", Mode::Html);
    server.set("/huge", Mode::Huge);
    server.set("/cut", Mode::Cut);
    server.set("/flaky", Mode::Json("{\"output\": false}".to_owned()));
    let expected = [
        ("hang.power", "error: read timed out after 1s"),
        ("e500.power", "error: HTTP HTTP/1.1 500 Internal Se"),
        ("html.power", "error: the message is not JSON (it"),
        ("huge.power", "error: the answer is larger than 1"),
        ("cut.power", "error: the answer ended early (10 o"),
        ("flaky.power", "error: no /apower"),
    ];
    let took = wait_until(
        "every bad server's error on agent-2",
        Duration::from_secs(20),
        || {
            expected
                .iter()
                .all(|(name, error)| shown(&api, name).starts_with(error))
        },
    );
    eprintln!("six bad servers were error points on the other node {took:?} later");
    assert_eq!(
        value_at(&api, "agent-1", "flaky.on"),
        serde_json::json!(false),
        "only the missing field"
    );
    let errors = stats_at(&format!("127.0.0.131:{}", mesh.port + 2))["sensor_errors"]
        .as_u64()
        .expect("sensor_errors");
    assert!(errors >= 7, "{errors}");
    // They behave again: every sensor reads again, none is stuck.
    let hang_requests = server.requests_for("/hang");
    for path in ["/flaky", "/hang", "/e500", "/html", "/huge", "/cut"] {
        server.set(
            path,
            Mode::Json("{\"apower\": 2.5, \"output\": true}".to_owned()),
        );
    }
    let took = wait_until("every sensor healed", Duration::from_secs(45), || {
        ["flaky", "hang", "e500", "html", "huge", "cut"]
            .iter()
            .all(|name| {
                value_at(&api, "agent-1", &format!("{name}.power")) == serde_json::json!(2.5)
            })
    });
    eprintln!("all six healed {took:?} after the servers behaved");
    assert!(
        server.requests_for("/hang") > hang_requests,
        "the hung sampler asked again"
    );
    let agent = &mesh.agents[0];
    assert!(agent.logged("sensor hang: read timed out after 1s; retrying in"));
    assert!(agent.logged("sensor hang: reads again"));
    assert!(agent.logged("sensor flaky: point flaky.power: no /apower"));
}

/// A WebSocket server on `host` sending `{"p": N}` every 100 ms to each
/// connection, until the test sets `down` (then it closes them all and
/// refuses upgrades) and clears it again.
struct Feed {
    url: String,
    down: Arc<Mutex<bool>>,
    connections: Arc<Mutex<usize>>,
}

impl Feed {
    fn start(host: &str) -> Feed {
        let listener = TcpListener::bind(format!("{host}:0")).expect("bind");
        let url = format!("ws://{}/feed", listener.local_addr().expect("addr"));
        let down = Arc::new(Mutex::new(false));
        let connections = Arc::new(Mutex::new(0));
        let (down_in, connections_in) = (Arc::clone(&down), Arc::clone(&connections));
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let down = Arc::clone(&down_in);
                let connections = Arc::clone(&connections_in);
                std::thread::spawn(move || feed(stream, &down, &connections));
            }
        });
        Feed {
            url,
            down,
            connections,
        }
    }
}

fn feed(mut stream: TcpStream, down: &Mutex<bool>, connections: &Mutex<usize>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut request = Vec::new();
    let mut byte = [0u8; 1];
    while !request.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => request.push(byte[0]),
            _ => return,
        }
    }
    if *down.lock().expect("down") {
        let _ = stream.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");
        return;
    }
    let text = String::from_utf8_lossy(&request).into_owned();
    let key = text
        .lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
        .unwrap_or("");
    let accept = shoal::shell::feeds::accept_for(key.trim());
    let _ = write!(
        stream,
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    *connections.lock().expect("connections") += 1;
    for n in 0u32.. {
        if *down.lock().expect("down") {
            let _ = stream.write_all(&[0x88, 2, 0x03, 0xe9]);
            return;
        }
        let body = format!("{{\"p\": {n}, \"name\": \"ticker\"}}");
        let mut frame = vec![0x81, body.len() as u8];
        frame.extend_from_slice(body.as_bytes());
        if stream.write_all(&frame).is_err() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_websocket_feed_reaches_every_node_goes_to_error_when_lost_and_comes_back() {
    let ticker = Feed::start("127.0.0.133");
    let mut mesh = Mesh::new(1);
    let sensor = format!(
        "[[sensor]]\nname = \"ticker\"\ndriver = \"websocket\"\nurl = \"{}\"\njson = {{ count = \"/p\", label = \"/name\" }}\nunit = {{ count = \"n\" }}\ninterval = \"200ms\"\n",
        ticker.url
    );
    mesh.add_full(1, 134, Some(KEY), "[\"127.255.255.255\"]", "[]", &sensor);
    mesh.add(2, 135, Some(KEY));
    let api = format!("127.0.0.135:{}", mesh.port + 2);
    let took = wait_until(
        "the feed's count on agent-2",
        Duration::from_secs(20),
        || value_at(&api, "agent-1", "ticker.count").is_number(),
    );
    eprintln!("a websocket value reached the other node {took:?} after start");
    let first = value_at(&api, "agent-1", "ticker.count");
    wait_until("the count to move", Duration::from_secs(10), || {
        value_at(&api, "agent-1", "ticker.count") != first
    });
    assert_eq!(
        value_at(&api, "agent-1", "ticker.label"),
        serde_json::json!("ticker")
    );
    // The server closes the feed and refuses to upgrade for a while.
    *ticker.down.lock().expect("down") = true;
    let took = wait_until("the lost feed's error", Duration::from_secs(10), || {
        shown(&api, "ticker.count") == "error: the server closed the feed (co"
            || shown(&api, "ticker.count").starts_with("error: the server did not upgrade")
    });
    eprintln!("the lost feed was an error on the other node {took:?} later");
    std::thread::sleep(Duration::from_secs(3));
    *ticker.down.lock().expect("down") = false;
    let took = wait_until("the feed back", Duration::from_secs(40), || {
        value_at(&api, "agent-1", "ticker.count").is_number()
    });
    eprintln!("the feed was back {took:?} after the server was");
    assert!(*ticker.connections.lock().expect("connections") >= 2);
    let agent = &mesh.agents[0];
    assert!(agent.logged("sensor ticker (websocket 127.0.0.133:"));
    assert!(agent.logged("connected"));
}
