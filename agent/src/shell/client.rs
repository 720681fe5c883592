//! The CLI's side of the API: `shoal status`, `peers` and `exec` talk to a
//! running agent over HTTP/1.1 on loopback (one request per connection, so a
//! plain blocking socket is enough and costs no dependency).

use serde_json::Value;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Where the CLI looks for the agent without `--api`.
pub const DEFAULT_API: &str = "127.0.0.1:8080";
/// Longest answer accepted.
const MAX_REPLY: u64 = 4 * 1024 * 1024;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No agent answered (exit code 3).
    #[error("cannot reach the agent at {addr}: {source}")]
    Unreachable {
        /// The address tried.
        addr: String,
        /// Why.
        source: io::Error,
    },
    /// The address does not resolve.
    #[error("{0:?} is not an address like 127.0.0.1:8080")]
    BadAddress(String),
    /// The answer was not HTTP or not JSON.
    #[error("the agent at {addr} sent an answer that is not understood: {reason}")]
    Protocol {
        /// The address.
        addr: String,
        /// What was wrong.
        reason: String,
    },
}

/// An answer: status and JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// The JSON body (`Null` if empty).
    pub body: Value,
}

impl Reply {
    /// The `error` field of an error answer, or the status.
    pub fn error(&self) -> String {
        self.body
            .get("error")
            .and_then(Value::as_str)
            .map_or_else(|| format!("HTTP status {}", self.status), str::to_owned)
    }
}

/// Connects to the agent at `api` (3 s at most).
fn connect(api: &str) -> Result<(TcpStream, SocketAddr), ClientError> {
    let addr: SocketAddr = api
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| ClientError::BadAddress(api.to_owned()))?;
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(|source| {
        ClientError::Unreachable {
            addr: addr.to_string(),
            source,
        }
    })?;
    Ok((stream, addr))
}

/// Sends one request to the agent at `api` and reads the whole answer.
pub fn request(
    api: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    timeout: Duration,
) -> Result<Reply, ClientError> {
    let (mut stream, addr) = connect(api)?;
    let unreachable = |source| ClientError::Unreachable {
        addr: addr.to_string(),
        source,
    };
    stream
        .set_read_timeout(Some(timeout))
        .map_err(unreachable)?;
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).map_err(unreachable)?;
    let mut raw = Vec::new();
    stream
        .take(MAX_REPLY)
        .read_to_end(&mut raw)
        .map_err(|source| ClientError::Protocol {
            addr: addr.to_string(),
            reason: format!("reading failed: {source}"),
        })?;
    parse_reply(&raw).map_err(|reason| ClientError::Protocol {
        addr: addr.to_string(),
        reason,
    })
}

/// Parses an HTTP/1.1 answer (plain or chunked body) with a JSON body.
pub fn parse_reply(raw: &[u8]) -> Result<Reply, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| "headers are not text")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let chunked = lines.any(|line| {
        let line = line.to_ascii_lowercase();
        line.starts_with("transfer-encoding:") && line.contains("chunked")
    });
    let mut body = raw[split + 4..].to_vec();
    if chunked {
        body = dechunk(&body).ok_or("bad chunked body")?;
    }
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&body).map_err(|e| format!("body is not JSON: {e}"))?
    };
    Ok(Reply { status, body })
}

pub(crate) fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// How a route to a node reads, for `shoal status` and the dashboard alike
/// (`/api/status` serves it as `route`): `0 hops` for the node that answers
/// (`own`), `1 hop via OWN` for its direct neighbors, `2 hops via GATEWAY`.
pub fn route_text(hops: u64, via: Option<&str>, own: &str) -> String {
    let unit = if hops == 1 { "hop" } else { "hops" };
    match (hops, via) {
        (0, _) => "0 hops".to_owned(),
        (_, Some(via)) => format!("{hops} {unit} via {via}"),
        (_, None) => format!("{hops} {unit} via {own}"),
    }
}

/// `shoal status` for people: the mesh line, then one line per node.
pub fn format_status(status: &Value) -> String {
    let active = status["active"].as_u64().unwrap_or(0);
    let total = status["total"].as_u64().unwrap_or(0);
    let mesh = if status["mesh"] == "online" {
        "Online"
    } else {
        "Degraded"
    };
    let own = status["self"].as_str().unwrap_or("?");
    let mut out = format!("[Mesh {mesh}] - {active}/{total} nodes active\n");
    let empty = Vec::new();
    let nodes = status["nodes"].as_array().unwrap_or(&empty);
    // This node first, then by name (then id: names can clash).
    let mut nodes: Vec<&Value> = nodes.iter().collect();
    shoal_config::order::sort_by_key(&mut nodes, |n| {
        (
            n["name"] != own,
            n["name"].as_str().unwrap_or(""),
            n["id"].as_str().unwrap_or(""),
        )
    });
    for node in nodes {
        let name = node["name"].as_str().unwrap_or("?");
        let state = node["state"].as_str().unwrap_or("?");
        out.push_str(&format!("  {name}: {state}"));
        if let Some(hops) = node["hops"].as_u64() {
            let route = route_text(hops, node["via"].as_str(), own);
            out.push_str(&format!(" (route: {route})"));
        }
        out.push('\n');
    }
    if status["open"] == true {
        out.push_str(
            "  open mesh: no key (mesh.open = true): anyone on the LAN can read and forge its frames\n",
        );
    }
    for conflict in status["conflicts"].as_array().unwrap_or(&empty) {
        let name = conflict["name"].as_str().unwrap_or("?");
        let ids: Vec<&str> = conflict["ids"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .filter_map(Value::as_str)
            .collect();
        out.push_str(&format!(
            "  name conflict: {} live nodes are named {name} ({}): give one another node.name\n",
            ids.len(),
            ids.join(", ")
        ));
    }
    for stranger in status["strangers"].as_array().unwrap_or(&empty) {
        let id = stranger["id"].as_str().unwrap_or("?");
        let who = match stranger["name"].as_str() {
            Some(name) => format!("{name} ({id})"),
            None => id.to_owned(),
        };
        let address = stranger["address"].as_str().unwrap_or("?");
        match (stranger["protocol"].as_u64(), stranger["mesh"].as_str()) {
            (Some(version), _) => out.push_str(&format!(
                "  other protocol: {who} at {address} speaks protocol {version}, this node {}: upgrade the older one\n",
                shoal_core::wire::VERSION
            )),
            (None, _) if stranger["open"] == true => out.push_str(&format!(
                "  other mesh: {who} at {address} is in an open mesh (no key): they ignore each other\n"
            )),
            (None, mesh) => out.push_str(&format!(
                "  other mesh: {who} at {address} is in mesh {} (another key): to join them, run shoal token on one and shoal join TOKEN on the other\n",
                mesh.unwrap_or("?")
            )),
        }
    }
    if status["mqtt"].is_object() {
        out.push_str(&format_mqtt(&status["mqtt"], crate::shell::unix_ms()));
    }
    out
}

/// The MQTT lines of `shoal status`: the broker, this node's role, the
/// bridge, and the last handover with how long ago (`now_ms`) it was.
pub fn format_mqtt(mqtt: &Value, now_ms: u64) -> String {
    let broker = mqtt["broker"].as_str().unwrap_or("?");
    let connection = if mqtt["connected"] == true {
        "connected"
    } else {
        "not connected"
    };
    let mut out = format!(
        "  MQTT: {broker} {connection}; this node {}; bridge: {}\n",
        mqtt["role"].as_str().unwrap_or("?"),
        mqtt["bridge"].as_str().unwrap_or("none")
    );
    if let Some(last) = mqtt["handovers"].as_array().and_then(|h| h.last()) {
        let ago = now_ms.saturating_sub(last["at_ms"].as_u64().unwrap_or(now_ms));
        out.push_str(&format!(
            "  MQTT handover: {} -> {}, {} ago\n",
            last["from"].as_str().unwrap_or("none"),
            last["to"].as_str().unwrap_or("none"),
            shoal_config::format_duration(std::time::Duration::from_secs(ago / 1000))
        ));
    }
    out
}

/// `shoal get` for people: one line per point.
pub fn format_points(points: &Value) -> String {
    let empty = Vec::new();
    let points = points.as_array().unwrap_or(&empty);
    if points.is_empty() {
        return "no points match\n".to_owned();
    }
    let mut out = String::new();
    for point in points {
        out.push_str(&format!(
            "{}/{} = {}  ({} ago)\n",
            point["node"].as_str().unwrap_or("?"),
            point["name"].as_str().unwrap_or("?"),
            show_value(&point["value"], point["unit"].as_str().unwrap_or("")),
            human_age(point["age_ms"].as_u64().unwrap_or(0)),
        ));
    }
    out
}

/// `shoal get NODE/NAME --history`: one line per step, oldest first, in
/// UTC.
pub fn format_history(steps: &Value) -> String {
    let empty = Vec::new();
    let steps = steps.as_array().unwrap_or(&empty);
    if steps.is_empty() {
        return "no history in that range (none recorded yet, or not a number)\n".to_owned();
    }
    let mut out = "time (UTC)              min        avg        max\n".to_owned();
    for step in steps {
        let number = |key: &str| {
            step[key]
                .as_f64()
                .map_or("?".to_owned(), |v| format!("{v:.4}"))
        };
        out.push_str(&format!(
            "{}  {:>9}  {:>9}  {:>9}\n",
            utc_minute(step["ts_ms"].as_u64().unwrap_or(0)),
            number("min"),
            number("avg"),
            number("max"),
        ));
    }
    out
}

/// `YYYY-MM-DD HH:MM` in UTC of `ms` since the Unix epoch (the civil
/// calendar from days, after Howard Hinnant's `civil_from_days`).
pub fn utc_minute(ms: u64) -> String {
    let minutes = ms / 60_000;
    let days = i64::try_from(minutes / 1_440).unwrap_or(0);
    let (hour, minute) = ((minutes % 1_440) / 60, minutes % 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}")
}

fn show_value(value: &Value, unit: &str) -> String {
    match value {
        Value::Object(error) => format!(
            "error: {}",
            error.get("error").and_then(Value::as_str).unwrap_or("?")
        ),
        Value::String(text) => format!("{text:?}"),
        other => format!(
            "{other}{}{unit}",
            if unit.is_empty() || unit.starts_with('°') || unit == "%" {
                ""
            } else {
                " "
            }
        ),
    }
}

fn human_age(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms} ms"),
        1000..=119_999 => format!("{} s", ms / 1000),
        _ => format!("{} min", ms / 60_000),
    }
}

/// One line for a server-sent event of `shoal watch`, or `None` to skip it.
pub fn format_event(event: &str, data: &Value, glob: Option<&str>) -> Option<String> {
    match event {
        "point" => {
            let (node, name) = (data["node"].as_str()?, data["name"].as_str()?);
            if let Some(glob) = glob {
                let (node_glob, name_glob) = glob.split_once('/').unwrap_or(("*", glob));
                let pattern = shoal_config::expr::Pattern {
                    node: node_glob.to_owned(),
                    name: name_glob.to_owned(),
                };
                if !pattern.matches("", node, name) {
                    return None;
                }
            }
            Some(format!(
                "{node}/{name} = {}",
                show_value(&data["value"], data["unit"].as_str().unwrap_or(""))
            ))
        }
        "node" => Some(format!(
            "node {}: {} -> {}",
            data["node"].as_str()?,
            data["from"].as_str()?,
            data["to"].as_str()?
        )),
        "rule" => Some(format!(
            "rule {} ({}): runs {}",
            data["rule"].as_str()?,
            data["state"].as_str()?,
            data["executor"].as_str()?
        )),
        "rule_stuck" => Some(format!(
            "rule {} has been unknown for {}: {}",
            data["rule"].as_str()?,
            human_age(data["unknown_ms"].as_u64()?),
            data["why"].as_str()?
        )),
        "run" => Some(format!(
            "executor {} for {}: {}",
            data["executor"].as_str()?,
            data["caller"].as_str()?,
            data["outcome"].as_str()?
        )),
        _ => None,
    }
}

/// Follows `GET /api/events` of the agent at `api`, calling `on_event`
/// with each event's name and data until the agent closes the stream.
pub fn follow_events(api: &str, mut on_event: impl FnMut(&str, &Value)) -> Result<(), ClientError> {
    let (mut stream, addr) = connect(api)?;
    let unreachable = |source| ClientError::Unreachable {
        addr: addr.to_string(),
        source,
    };
    let head =
        format!("GET /api/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
    stream.write_all(head.as_bytes()).map_err(unreachable)?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let mut headers_done = false;
    let mut text = String::new();
    loop {
        let n = stream
            .read(&mut buf)
            .map_err(|source| ClientError::Protocol {
                addr: addr.to_string(),
                reason: format!("reading failed: {source}"),
            })?;
        if n == 0 {
            return Ok(());
        }
        raw.extend_from_slice(&buf[..n]);
        if !headers_done {
            let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let status = String::from_utf8_lossy(&raw[..end]).to_string();
            if !status.starts_with("HTTP/1.1 200") {
                return Err(ClientError::Protocol {
                    addr: addr.to_string(),
                    reason: status.lines().next().unwrap_or("").to_owned(),
                });
            }
            raw.drain(..end + 4);
            headers_done = true;
        }
        // The body is chunked: take every complete chunk.
        while let Some(line_end) = raw.windows(2).position(|w| w == b"\r\n") {
            let size_text = String::from_utf8_lossy(&raw[..line_end]).to_string();
            let Ok(size) = usize::from_str_radix(size_text.trim(), 16) else {
                return Err(ClientError::Protocol {
                    addr: addr.to_string(),
                    reason: format!("bad chunk size {size_text:?}"),
                });
            };
            if size == 0 {
                return Ok(());
            }
            if raw.len() < line_end + 2 + size + 2 {
                break;
            }
            text.push_str(&String::from_utf8_lossy(
                &raw[line_end + 2..line_end + 2 + size],
            ));
            raw.drain(..line_end + 2 + size + 2);
        }
        while let Some(end) = text.find("\n\n") {
            let message: String = text.drain(..end + 2).collect();
            let mut event = "message";
            let mut data = String::new();
            for line in message.lines() {
                if let Some(name) = line.strip_prefix("event: ") {
                    event = name;
                } else if let Some(payload) = line.strip_prefix("data: ") {
                    data.push_str(payload);
                }
            }
            if let Ok(value) = serde_json::from_str::<Value>(&data) {
                on_event(event, &value);
            }
        }
    }
}

/// `shoal rules` for people: per rule its state, the condition's value
/// and for how long, the last action; for an UNKNOWN one, why.
pub fn format_rules(answer: &Value) -> String {
    let empty = Vec::new();
    let rules = answer["rules"].as_array().unwrap_or(&empty);
    if rules.is_empty() {
        return "no rules\n".to_owned();
    }
    let mut out = String::new();
    for rule in rules {
        let state = rule["state"].as_str().unwrap_or("?");
        let condition = match rule["condition"].as_bool() {
            Some(true) => "true",
            Some(false) => "false",
            None => "unknown",
        };
        out.push_str(&format!(
            "  {}: {state}, condition {condition}, for {}",
            rule["name"].as_str().unwrap_or("?"),
            human_age(rule["since_ms"].as_u64().unwrap_or(0)),
        ));
        let action = &rule["last_action"];
        if let Some(executor) = action["executor"].as_str() {
            out.push_str(&format!(
                " (ran {executor} {} ago)",
                human_age(action["ago_ms"].as_u64().unwrap_or(0))
            ));
        }
        out.push('\n');
        if let Some(why) = rule["why"].as_str() {
            out.push_str(&format!("    why: {why}\n"));
        }
    }
    out
}

/// `shoal peers` for people: one line per direct neighbor.
pub fn format_peers(peers: &Value) -> String {
    let empty = Vec::new();
    let peers = peers.as_array().unwrap_or(&empty);
    if peers.is_empty() {
        return "no direct peers\n".to_owned();
    }
    let mut out = String::new();
    for peer in peers {
        let rate = peer["success_rate"].as_f64().unwrap_or(0.0) * 100.0;
        out.push_str(&format!(
            "  {}: {} at {}, last seen {} ms ago, {} frames in, {} out, {rate:.0}% of beacons heard\n",
            peer["name"].as_str().unwrap_or("?"),
            peer["state"].as_str().unwrap_or("?"),
            peer["address"].as_str().unwrap_or("?"),
            peer["last_seen_ms"].as_u64().unwrap_or(0),
            peer["frames_in"].as_u64().unwrap_or(0),
            peer["frames_out"].as_u64().unwrap_or(0),
        ));
    }
    out
}

#[cfg(test)]
mod tests;
