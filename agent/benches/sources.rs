//! `sources`: the scale figure of issue 18. One agent reads `--http` HTTP
//! sources and `--ws` WebSocket feeds, each at `--rate` Hz, from servers
//! this program runs on loopback; a second agent only listens. Reports the
//! reading agent's CPU and RSS, the readings per second reaching the
//! second agent (its `shoal_sync_latency_seconds_count`) with their
//! latency, and every moment either agent saw the other as anything but
//! HEALTHY. `cargo bench -p shoal --bench sources --profile release [--
//! --http 100 --ws 100 --rate 10 --seconds 30]` (the shipped profile).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use shoal_bench::agent::{Agent, System};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const USAGE: &str =
    "usage: sources [--http 100] [--ws 100] [--rate 10] [--seconds 30] [--shoal PATH]";

struct Options {
    http: usize,
    ws: usize,
    rate: u32,
    seconds: u64,
    shoal: String,
}

fn parse_args() -> Result<Options, String> {
    let mut options = Options {
        http: 100,
        ws: 100,
        rate: 10,
        seconds: 30,
        shoal: env!("CARGO_BIN_EXE_shoal").to_owned(),
    };
    // `cargo bench` adds `--bench`; it means nothing here.
    let raw: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let mut args = raw.iter();
    while let Some(arg) = args.next() {
        let value = args.next().ok_or(format!("{arg} needs a value\n{USAGE}"))?;
        let number = || value.parse::<u64>().map_err(|_| format!("{arg}: a number"));
        match arg.as_str() {
            "--http" => options.http = number()? as usize,
            "--ws" => options.ws = number()? as usize,
            "--rate" => options.rate = number()? as u32,
            "--seconds" => options.seconds = number()?,
            "--shoal" => options.shoal.clone_from(value),
            _ => return Err(USAGE.to_owned()),
        }
    }
    Ok(options)
}

/// An HTTP server answering every GET with a value that changes each time.
fn http_server(host: &str, served: Arc<AtomicU64>) -> Result<u16, String> {
    let listener = TcpListener::bind(format!("{host}:0")).map_err(|e| format!("bind: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().map_while(Result::ok) {
            let served = Arc::clone(&served);
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                let mut request = Vec::new();
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let n = served.fetch_add(1, Ordering::Relaxed);
                let body = format!("{{\"v\": {n}}}");
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    Ok(port)
}

/// A WebSocket server sending `{"v": N}` at `rate` Hz on every connection.
fn ws_server(host: &str, rate: u32, sent: Arc<AtomicU64>) -> Result<u16, String> {
    let listener = TcpListener::bind(format!("{host}:0")).map_err(|e| format!("bind: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let sent = Arc::clone(&sent);
            std::thread::spawn(move || feed(stream, rate, &sent));
        }
    });
    Ok(port)
}

fn feed(mut stream: TcpStream, rate: u32, sent: &AtomicU64) {
    let mut request = Vec::new();
    let mut byte = [0u8; 1];
    while !request.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => request.push(byte[0]),
            _ => return,
        }
    }
    let text = String::from_utf8_lossy(&request).into_owned();
    let key = text
        .lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
        .unwrap_or("")
        .trim()
        .to_owned();
    let accept = shoal::shell::feeds::accept_for(&key);
    let _ = write!(
        stream,
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    let period = Duration::from_secs(1) / rate.max(1);
    let mut next = Instant::now();
    for n in 0u64.. {
        let body = format!("{{\"v\": {n}}}");
        let mut frame = vec![0x81, body.len() as u8];
        frame.extend_from_slice(body.as_bytes());
        if stream.write_all(&frame).is_err() {
            return;
        }
        sent.fetch_add(1, Ordering::Relaxed);
        next += period;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
}

/// The body of `GET path` at `api`.
fn get(api: &str, path: &str) -> String {
    let Ok(mut stream) = TcpStream::connect(api) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

/// A sample of the exposition at `api`.
fn metric(api: &str, name: &str) -> f64 {
    get(api, "/metrics")
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The states `api`'s agent sees other nodes in, other than HEALTHY.
fn unhealthy(api: &str) -> Vec<String> {
    let status: serde_json::Value =
        serde_json::from_str(&get(api, "/api/status")).unwrap_or_default();
    status["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["state"] != "HEALTHY")
        .map(|n| format!("{} {}", n["name"], n["state"]))
        .collect()
}

fn config(n: u8, port: u16, dir: &std::path::Path, sensors: &str) -> String {
    format!(
        "[node]\nname = \"agent-{n}\"\n[mesh]\nport = {port}\nsync_port = {}\nbind = \"127.0.0.{}\"\nbroadcast = [\"127.255.255.255\"]\nopen = true\n[api]\nlisten = \"127.0.0.{}:{}\"\n[state]\ndir = \"{}\"\n[limits]\nmax_points_per_node = 1024\n{sensors}",
        port + 1,
        200 + n,
        200 + n,
        port + 2,
        dir.join(format!("state-{n}")).display()
    )
}

fn main() -> std::process::ExitCode {
    let options = match parse_args() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return std::process::ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(report) => {
            println!("{report}");
            std::process::ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("sources: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(options: &Options) -> Result<String, String> {
    let pid = std::process::id();
    let dir = std::env::temp_dir().join(format!("shoal-sources-bench-{pid}"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let port = 40_000 + (pid % 800) as u16 * 12;
    let served = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let http = http_server("127.0.0.210", Arc::clone(&served))?;
    let ws = ws_server("127.0.0.211", options.rate, Arc::clone(&sent))?;
    let interval = format!("{}ms", 1000 / options.rate.max(1));
    let mut sensors = String::new();
    for i in 0..options.http {
        sensors.push_str(&format!(
            "[[sensor]]\nname = \"h{i}\"\ndriver = \"http\"\nurl = \"http://127.0.0.210:{http}/v{i}\"\njson = \"/v\"\ninterval = \"{interval}\"\ntimeout = \"2s\"\n"
        ));
    }
    for i in 0..options.ws {
        sensors.push_str(&format!(
            "[[sensor]]\nname = \"w{i}\"\ndriver = \"websocket\"\nurl = \"ws://127.0.0.211:{ws}/f{i}\"\njson = \"/v\"\ninterval = \"{interval}\"\n"
        ));
    }
    let mut agents = Vec::new();
    for (n, sensors) in [(1u8, sensors.as_str()), (2, "")] {
        let path = dir.join(format!("agent-{n}.toml"));
        std::fs::write(&path, config(n, port, &dir, sensors)).map_err(|e| e.to_string())?;
        let argv = vec![
            options.shoal.clone(),
            "run".to_owned(),
            "--config".to_owned(),
            path.display().to_string(),
        ];
        let env = vec![("RUST_LOG".to_owned(), "warn".to_owned())];
        agents.push(Agent::start(
            System::Shoal,
            &format!("agent-{n}"),
            argv,
            env,
            dir.clone(),
        )?);
    }
    let (api1, api2) = (
        format!("127.0.0.201:{}", port + 2),
        format!("127.0.0.202:{}", port + 2),
    );
    // Warm up: both see each other, every feed connected.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        let seen = get(&api2, "/api/status").contains("agent-1");
        if seen && unhealthy(&api1).is_empty() && unhealthy(&api2).is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(5));
    let window = Duration::from_secs(options.seconds);
    let cpu0 = agents[0].cpu_ns().ok_or("agent-1 is gone")?;
    let arrived0 = metric(&api2, "shoal_sync_latency_seconds_count");
    let sum0 = metric(&api2, "shoal_sync_latency_seconds_sum");
    let (served0, sent0) = (served.load(Ordering::Relaxed), sent.load(Ordering::Relaxed));
    let began = Instant::now();
    let mut not_healthy = Vec::new();
    let mut rss_max = 0;
    while began.elapsed() < window {
        for (api, who) in [(&api1, "agent-1"), (&api2, "agent-2")] {
            for state in unhealthy(api) {
                not_healthy.push(format!(
                    "{:.1}s {who} saw {state}",
                    began.elapsed().as_secs_f64()
                ));
            }
        }
        rss_max = rss_max.max(agents[0].rss_bytes().unwrap_or(0));
        std::thread::sleep(Duration::from_millis(500));
    }
    let took = began.elapsed().as_secs_f64();
    let cpu = agents[0]
        .cpu_ns()
        .ok_or("agent-1 died")?
        .saturating_sub(cpu0) as f64
        / 1e9;
    let arrived = metric(&api2, "shoal_sync_latency_seconds_count") - arrived0;
    let latency = (metric(&api2, "shoal_sync_latency_seconds_sum") - sum0) / arrived.max(1.0);
    let errors = metric(&api1, "shoal_sensor_errors_total");
    let requests = (served.load(Ordering::Relaxed) - served0) as f64 / took;
    let messages = (sent.load(Ordering::Relaxed) - sent0) as f64 / took;
    for agent in &mut agents {
        agent.stop();
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(format!(
        "| sources | requests/s served | feed messages/s sent | agent-1 CPU (% of a core) | agent-1 RSS max | readings/s at agent-2 | mean age on arrival | sensor errors | not HEALTHY |\n\
         |---|---|---|---|---|---|---|---|---|\n\
         | {} http + {} websocket at {} Hz, {} s | {requests:.0} | {messages:.0} | {:.1} % | {:.1} MiB | {:.0} | {:.1} ms | {errors} | {} |\n{}",
        options.http,
        options.ws,
        options.rate,
        options.seconds,
        cpu / took * 100.0,
        rss_max as f64 / 1048576.0,
        arrived / took,
        latency * 1000.0,
        if not_healthy.is_empty() { "never".to_owned() } else { not_healthy.len().to_string() },
        not_healthy.join("\n")
    ))
}
