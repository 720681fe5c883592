//! The HTTP API on `api.listen` (HTTP/1.1 by [`super::http`], over smol).
//!
//! The server never touches the [`shoal_core::Node`]: each request becomes an
//! [`ApiCall`] sent to the agent's one loop, which answers from the core's
//! state. Reads are open; `POST` needs `Authorization: Bearer <token>` (the
//! token in `api.token_file`). Limits: 64 KB of body, and the connection
//! limits below.
//!
//! # Connections
//!
//! A connection costs a slot from accept to close, whatever it sends, so
//! slots are what a slow client (slowloris: headers one byte at a time)
//! attacks. These limits keep one client from shutting out the rest:
//!
//! - at most [`MAX_CONNECTIONS`] (64) at once;
//! - at most [`MAX_CONNECTIONS_PER_CLIENT`] (8) from one client address (an
//!   IPv4 address, or an IPv6 /64, which one host can fill as it likes);
//! - the last [`RESERVED_FOR_NEW_CLIENTS`] (8) slots only for addresses with
//!   no connection open, so a few addresses together still leave room for
//!   the next client;
//! - [`HEADER_TIMEOUT`] (3 s) to send a request's headers, counted from the
//!   connection's start (or the previous answer, on a kept-alive one), not
//!   reset by each byte: a slot held by a slow client comes back in 3 s;
//!   [`BODY_TIMEOUT`] (10 s) more for its body, and [`WRITE_TIMEOUT`] (10 s)
//!   for the client to take an answer or an event.
//!
//! A connection over a limit is closed at once, without an answer, and
//! counted: `api_refused_per_client` (over its address's share) or
//! `api_refused_connections` (every slot taken) in `/api/stats`.
//! The table of open connections by address has at most [`MAX_CONNECTIONS`]
//! entries; an address leaves it when its last connection closes.
//!
//! Endpoints so far: `GET /api/status`, `GET /api/peers[?healthy=true]`,
//! `GET /` (the dashboard), `GET /api/rules`, `GET /api/events`
//! (server-sent events), `GET /api/stats`, `GET /api/points`,
//! `POST /api/points`, `GET /metrics`,
//! `POST /api/exec/NODE/EXECUTOR`.

use super::http::{self, Body, Request, Response};
use serde_json::{json, Value};
use smol::channel::{Receiver, Sender};
use smol::net::TcpListener;
use std::cell::{Cell, RefCell};
use std::net::{IpAddr, Ipv6Addr};
use std::rc::Rc;
use std::time::Duration;

/// Most connections served at once; more are closed at once. A power of
/// two: the capacity of the table of connections by client.
pub const MAX_CONNECTIONS: usize = 64;
/// Most connections one client address holds at once; more from it are
/// closed at once. A browser opens at most 6 to one host; the dashboard
/// needs its event stream and a request or two.
pub const MAX_CONNECTIONS_PER_CLIENT: usize = 8;
/// The last slots, given only to a client address with no connection open.
pub const RESERVED_FOR_NEW_CLIENTS: usize = 8;
/// Longest wait for a request's headers, from the connection's start or the
/// previous answer; a connection that has not sent them by then is closed.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait for a request's body, after its headers.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a client to take an answer, or one event of a stream.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest silence on an `/api/events` stream before a comment is sent.
pub const STREAM_PING: Duration = Duration::from_secs(15);
const _: () = assert!(MAX_CONNECTIONS.is_power_of_two());
const _: () = assert!(MAX_CONNECTIONS_PER_CLIENT + RESERVED_FOR_NEW_CLIENTS < MAX_CONNECTIONS);
/// Most bytes of a request body.
pub const MAX_BODY: usize = 64 * 1024;
/// Longest wait for a command's answer.
pub const EXEC_WAIT: Duration = Duration::from_secs(60);
/// The dashboard: one page, no build step, no external resources.
const DASHBOARD: &str = include_str!("dashboard.html");

/// Most `/api/events` streams open at once.
pub const MAX_SUBSCRIBERS: usize = 32;
/// Events queued per stream; a client that falls this far behind misses
/// events (counted).
pub const SUBSCRIBER_QUEUE: usize = 256;

/// The open `/api/events` streams, shared with the agent's loop.
pub type Subscribers = Rc<RefCell<Vec<Sender<String>>>>;

/// A request for the agent's loop.
#[derive(Debug)]
pub enum ApiCall {
    /// `GET /api/status`.
    Status(Sender<Value>),
    /// `GET /api/peers`.
    Peers {
        /// Only HEALTHY ones.
        healthy: bool,
        /// Where the answer goes.
        reply: Sender<Value>,
    },
    /// `GET /api/rules`: rule states and the last executor runs.
    Rules(Sender<Value>),
    /// `GET /api/stats`.
    Stats(Sender<Value>),
    /// `GET /metrics`: the Prometheus exposition.
    Metrics(Sender<String>),
    /// `GET /api/points[?glob=NODE/NAME][&history=true]`.
    Points {
        /// The pattern (`*/*` for all).
        glob: String,
        /// With each point's recent values.
        history: bool,
        /// Where the answer goes.
        reply: Sender<Value>,
    },
    /// `GET /api/points/NODE/NAME`: one point with its history.
    Point {
        /// The node.
        node: String,
        /// The point.
        name: String,
        /// Where the answer goes.
        reply: Sender<Answer>,
    },
    /// `GET /api/points/NODE/NAME/history?since=24h&step=5m`.
    History {
        /// The node.
        node: String,
        /// The point.
        name: String,
        /// How far back (`since`, default 24 h).
        since: std::time::Duration,
        /// Step width (`step`, default 5 min).
        step: std::time::Duration,
        /// Where the answer goes.
        reply: Sender<Answer>,
    },
    /// `POST /api/points`: readings from outside, as this node's points.
    Ingest {
        /// The readings.
        readings: Vec<(String, f64, String)>,
        /// Where the answer goes.
        reply: Sender<Answer>,
    },
    /// `POST /api/exec/NODE/EXECUTOR`.
    Exec {
        /// The node's name.
        node: String,
        /// The executor's name.
        executor: String,
        /// Where the answer goes.
        reply: Sender<Answer>,
    },
    /// `POST /api/token?expire=DUR&addr=HOST:PORT`: a join token.
    Token {
        /// How long it is valid.
        valid_for: Duration,
        /// The member address it names, if not this node's own.
        member: Option<String>,
        /// Where the answer goes.
        reply: Sender<Answer>,
    },
    /// `POST /api/key/rotate?exclude=NODE,...`: a new mesh key for every
    /// reachable member; answered when it switches.
    Rotate {
        /// Names (or ids) of members to leave out.
        exclude: Vec<String>,
        /// Where the answer goes.
        reply: Sender<Answer>,
    },
    /// `POST /api/mesh/reload?knock=HOST:PORT`: read the key file again
    /// (after `shoal join`), and knock on the member joined through.
    Reload {
        /// The member to knock on.
        knock: Option<std::net::SocketAddr>,
        /// Where the answer goes.
        reply: Sender<Answer>,
    },
}

/// An HTTP status and a JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The body.
    pub body: Value,
}

impl Answer {
    /// An error answer: `{"error": message}`.
    pub fn error(status: u16, message: impl Into<String>) -> Answer {
        Answer {
            status,
            body: json!({ "error": message.into() }),
        }
    }
}

/// Counters of the API, shared with the agent's loop.
#[derive(Debug, Default)]
pub struct ApiStats {
    /// Requests answered.
    pub requests: Cell<u64>,
    /// Writes refused for a missing or wrong token.
    pub unauthorized: Cell<u64>,
    /// Connections closed at once because every slot was taken.
    pub refused_connections: Cell<u64>,
    /// Connections closed at once because their client address held its
    /// share: [`MAX_CONNECTIONS_PER_CLIENT`], or any while only the
    /// [`RESERVED_FOR_NEW_CLIENTS`] slots were left.
    pub refused_per_client: Cell<u64>,
    /// Events a slow `/api/events` client missed.
    pub events_dropped: Cell<u64>,
}

/// Sends one server-sent event to every open `/api/events` stream; closed
/// streams are forgotten.
pub fn broadcast(subscribers: &Subscribers, stats: &ApiStats, event: &str, data: &Value) {
    let mut subscribers = subscribers.borrow_mut();
    if subscribers.is_empty() {
        return;
    }
    let message = format!("event: {event}\ndata: {data}\n\n");
    subscribers.retain(|subscriber| match subscriber.try_send(message.clone()) {
        Ok(()) => true,
        Err(smol::channel::TrySendError::Full(_)) => {
            stats.events_dropped.set(stats.events_dropped.get() + 1);
            true
        }
        Err(smol::channel::TrySendError::Closed(_)) => false,
    });
}

struct Context {
    calls: Sender<ApiCall>,
    token: Option<String>,
    stats: Rc<ApiStats>,
    subscribers: Subscribers,
}

/// Serves `listener` until the agent stops.
pub async fn serve(
    listener: TcpListener,
    calls: Sender<ApiCall>,
    token: Option<String>,
    stats: Rc<ApiStats>,
    subscribers: Subscribers,
) {
    let context = Rc::new(Context {
        calls,
        token,
        stats,
        subscribers,
    });
    let connections = Rc::new(RefCell::new(Connections::default()));
    let ex = smol::LocalExecutor::new();
    ex.run(async {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    log::warn!("api: accept failed: {error}");
                    smol::Timer::after(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let client = client_of(peer.ip());
            let admitted = connections.borrow_mut().try_open(client);
            if let Err(refusal) = admitted {
                let counter = match refusal {
                    Refusal::Full => &context.stats.refused_connections,
                    Refusal::PerClient => &context.stats.refused_per_client,
                };
                counter.set(counter.get() + 1);
                log::debug!("api: connection from {peer} closed at once: {refusal:?}");
                continue;
            }
            let slot = Slot {
                connections: Rc::clone(&connections),
                client,
            };
            let context = Rc::clone(&context);
            ex.spawn(async move {
                let _slot = slot;
                let limits = http::Limits {
                    head: HEADER_TIMEOUT,
                    body: BODY_TIMEOUT,
                    write: WRITE_TIMEOUT,
                    max_body: MAX_BODY,
                    ping: STREAM_PING,
                };
                let end = http::serve(stream, limits, |request| {
                    let context = Rc::clone(&context);
                    async move { handle(request, &context).await }
                })
                .await;
                log::debug!("api: connection from {peer} ended: {end:?}");
            })
            .detach();
        }
    })
    .await;
}

/// Why a connection was closed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// Every slot was taken.
    Full,
    /// Its client address held [`MAX_CONNECTIONS_PER_CLIENT`], or held some
    /// while only the reserved slots were left.
    PerClient,
}

/// The open connections, counted by client address (see the module docs).
/// At most [`MAX_CONNECTIONS`] addresses, each with a count of at least 1.
#[derive(Debug, Default)]
struct Connections {
    total: usize,
    by_client: heapless::index_map::FnvIndexMap<IpAddr, usize, MAX_CONNECTIONS>,
}

impl Connections {
    /// Takes a slot for one more connection from `client`, or says why not
    /// (nothing changes then).
    fn try_open(&mut self, client: IpAddr) -> Result<(), Refusal> {
        let held = self.by_client.get(&client).copied().unwrap_or(0);
        if held >= MAX_CONNECTIONS_PER_CLIENT
            || (held > 0 && self.total >= MAX_CONNECTIONS - RESERVED_FOR_NEW_CLIENTS)
        {
            return Err(Refusal::PerClient);
        }
        if self.total >= MAX_CONNECTIONS {
            return Err(Refusal::Full);
        }
        // Fewer than MAX_CONNECTIONS are open, so the table has room.
        self.by_client
            .insert(client, held + 1)
            .map_err(|_| Refusal::Full)?;
        self.total += 1;
        Ok(())
    }

    /// Gives back a slot of `client`; its entry goes with its last one.
    fn close(&mut self, client: IpAddr) {
        let Some(held) = self.by_client.get_mut(&client) else {
            return;
        };
        *held -= 1;
        if *held == 0 {
            self.by_client.remove(&client);
        }
        self.total -= 1;
    }
}

/// One open connection's slot, given back when its task ends (also if the
/// task is dropped).
#[derive(Debug)]
struct Slot {
    connections: Rc<RefCell<Connections>>,
    client: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.connections.borrow_mut().close(self.client);
    }
}

/// The address a connection is counted against: its IPv4 address (also
/// when it arrives IPv4-mapped), or the /64 of its IPv6 address, since a
/// host picks any address in its prefix.
fn client_of(peer: IpAddr) -> IpAddr {
    match peer.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u64::MAX as u128))),
        v4 => v4,
    }
}

async fn handle(request: Request, context: &Context) -> Response {
    let stats = &context.stats;
    stats.requests.set(stats.requests.get() + 1);
    let path = request.path.clone();
    let query = request.query.clone();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = request.method.clone();
    // HEAD is GET without the body (the connection leaves it out).
    let routed = if method == "HEAD" {
        "GET"
    } else {
        method.as_str()
    };
    let answer = match (routed, segments.as_slice()) {
        ("GET", ["api", "status"]) => ask(context, ApiCall::Status).await,
        ("GET", ["api", "rules"]) => ask(context, ApiCall::Rules).await,
        ("GET", ["api", "stats"]) => ask(context, ApiCall::Stats).await,
        ("GET", ["api", "points"]) => {
            let glob = query_value(&query, "glob").unwrap_or_else(|| "*/*".to_owned());
            let history = query_flag(&query, "history");
            ask(context, |reply| ApiCall::Points {
                glob,
                history,
                reply,
            })
            .await
        }
        ("GET", ["api", "points", node, name, "history"]) => {
            let (node, name) = (percent_decode(node), percent_decode(name));
            let duration = |key: &str, default: u64| match query_value(&query, key) {
                None => Ok(std::time::Duration::from_secs(default)),
                Some(text) => shoal_config::parse_duration(&text)
                    .map_err(|e| Answer::error(400, format!("{key}: {e}"))),
            };
            match (duration("since", 86_400), duration("step", 300)) {
                (Ok(since), Ok(step)) => {
                    call(context, |reply| ApiCall::History {
                        node,
                        name,
                        since,
                        step,
                        reply,
                    })
                    .await
                }
                (Err(answer), _) | (_, Err(answer)) => answer,
            }
        }
        ("GET", ["api", "points", node, name]) => {
            let (node, name) = (percent_decode(node), percent_decode(name));
            call(context, |reply| ApiCall::Point { node, name, reply }).await
        }
        ("GET", ["api", "events"]) => return events(context),
        ("GET", [""]) => return text_response(DASHBOARD.to_owned(), "text/html; charset=utf-8"),
        ("GET", ["metrics"]) => match round_trip(context, ApiCall::Metrics).await {
            Some(text) => return text_response(text, "text/plain; version=0.0.4; charset=utf-8"),
            None => stopping(),
        },
        ("GET", ["api", "peers"]) => {
            let healthy = query_flag(&query, "healthy");
            ask(context, |reply| ApiCall::Peers { healthy, reply }).await
        }
        ("POST", _) if is_write(&segments) => write(request, context, &segments, &query).await,
        (_, ["api", "status" | "peers" | "rules" | "events" | "stats" | "points" | "token"])
        | (_, ["api", "mesh", "reload"])
        | (_, ["api", "key", "rotate"])
        | (_, ["api", "points", _, _])
        | (_, ["api", "exec", _, _]) => {
            Answer::error(405, format!("{method} is not allowed on {path}"))
        }
        _ => Answer::error(404, format!("no such endpoint: {path}")),
    };
    respond(answer)
}

/// The API's writes, each behind the token.
fn is_write(segments: &[&str]) -> bool {
    matches!(
        segments,
        ["api", "points"]
            | ["api", "exec", _, _]
            | ["api", "token"]
            | ["api", "key", "rotate"]
            | ["api", "mesh", "reload"]
    )
}

/// Answers one of the writes `is_write` names (the body was read whole,
/// within [`MAX_BODY`], by the connection).
async fn write(request: Request, context: &Context, segments: &[&str], query: &str) -> Answer {
    if !authorized(&request, context) {
        return unauthorized(&context.stats);
    }
    match segments {
        ["api", "points"] => match parse_readings(&request.body) {
            Err(message) => Answer::error(400, message),
            Ok(readings) => call(context, |reply| ApiCall::Ingest { readings, reply }).await,
        },
        ["api", "exec", node, executor] => {
            let (node, executor) = (percent_decode(node), percent_decode(executor));
            call(context, |reply| ApiCall::Exec {
                node,
                executor,
                reply,
            })
            .await
        }
        ["api", "token"] => match token_query(query) {
            Ok((valid_for, member)) => {
                call(context, |reply| ApiCall::Token {
                    valid_for,
                    member,
                    reply,
                })
                .await
            }
            Err(message) => Answer::error(400, message),
        },
        ["api", "key", "rotate"] => {
            let exclude: Vec<String> = query_value(query, "exclude")
                .map(|list| {
                    list.split(',')
                        .filter(|n| !n.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            call(context, |reply| ApiCall::Rotate { exclude, reply }).await
        }
        ["api", "mesh", "reload"] => {
            match query_value(query, "knock").map(|a| a.parse::<std::net::SocketAddr>()) {
                Some(Err(_)) => Answer::error(400, "knock must be IP:PORT"),
                knock => {
                    let knock = knock.and_then(Result::ok);
                    call(context, |reply| ApiCall::Reload { knock, reply }).await
                }
            }
        }
        _ => Answer::error(404, "no such endpoint"),
    }
}

/// Hands a call to the agent's loop and waits for its answer; `None` when
/// the agent is stopping.
async fn round_trip<T>(context: &Context, make: impl FnOnce(Sender<T>) -> ApiCall) -> Option<T> {
    let (reply, answer) = smol::channel::bounded(1);
    context.calls.send(make(reply)).await.ok()?;
    answer.recv().await.ok()
}

fn stopping() -> Answer {
    Answer::error(503, "the agent is stopping")
}

/// Sends a call whose answer carries its own status.
async fn call(context: &Context, make: impl FnOnce(Sender<Answer>) -> ApiCall) -> Answer {
    round_trip(context, make).await.unwrap_or_else(stopping)
}

/// `POST /api/points` bodies: `[{"name": "outdoor_temp", "value": 21.5,
/// "unit": "°C"}]` (a single object is accepted too).
pub fn parse_readings(body: &[u8]) -> Result<Vec<(String, f64, String)>, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let items = match value {
        Value::Array(items) => items,
        object @ Value::Object(_) => vec![object],
        _ => return Err("expected [{\"name\": ..., \"value\": ...}]".to_owned()),
    };
    if items.is_empty() || items.len() > 64 {
        return Err("send 1 to 64 readings at a time".to_owned());
    }
    items
        .iter()
        .map(|item| {
            let name = item["name"]
                .as_str()
                .filter(|n| shoal_config::is_valid_name(n))
                .ok_or("each reading needs a \"name\" of 1-32 letters, digits, _ - .")?;
            let value = item["value"]
                .as_f64()
                .filter(|v| v.is_finite())
                .or_else(|| item["value"].as_bool().map(|b| if b { 1.0 } else { 0.0 }))
                .ok_or_else(|| format!("reading {name:?} needs a numeric \"value\""))?;
            let unit = item["unit"].as_str().unwrap_or("");
            if shoal_core::wire::unit(unit).is_none() {
                return Err(format!(
                    "reading {name:?}: unit {unit:?} is longer than 8 bytes"
                ));
            }
            Ok((name.to_owned(), value, unit.to_owned()))
        })
        .collect()
}

fn query_value(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
        .map(percent_decode)
}

/// Sends a call whose answer is a JSON body for a 200.
async fn ask(context: &Context, make: impl FnOnce(Sender<Value>) -> ApiCall) -> Answer {
    match round_trip(context, make).await {
        Some(body) => Answer { status: 200, body },
        None => stopping(),
    }
}

/// `GET /api/events`: a server-sent event stream of point changes
/// (`point`), node state and route changes (`node`, `route`), rule actions
/// (`rule`) and executor runs (`run`).
fn events(context: &Context) -> Response {
    let mut subscribers = context.subscribers.borrow_mut();
    subscribers.retain(|s| !s.is_closed());
    if subscribers.len() >= MAX_SUBSCRIBERS {
        drop(subscribers);
        return respond(Answer::error(
            503,
            format!("{MAX_SUBSCRIBERS} event streams are open already"),
        ));
    }
    let (sender, receiver) = smol::channel::bounded::<String>(SUBSCRIBER_QUEUE);
    let _ = sender.try_send(": connected\n\n".to_owned());
    subscribers.push(sender);
    Response {
        status: 200,
        content_type: "text/event-stream",
        body: Body::Stream(receiver),
    }
}

fn text_response(text: String, content_type: &'static str) -> Response {
    Response::full(200, content_type, text)
}

fn respond(answer: Answer) -> Response {
    let mut body = answer.body.to_string();
    body.push('\n');
    Response::full(answer.status, "application/json", body)
}

/// The answer to a write without the token, counted.
fn unauthorized(stats: &ApiStats) -> Answer {
    stats.unauthorized.set(stats.unauthorized.get() + 1);
    Answer::error(
        401,
        "this needs the API token: Authorization: Bearer <token>",
    )
}

fn authorized(request: &Request, context: &Context) -> bool {
    let Some(token) = context.token.as_deref() else {
        return false;
    };
    let given = request
        .authorization
        .as_deref()
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    constant_time_eq(given.as_bytes(), token.as_bytes())
}

/// Compares without an early exit, so timing does not leak the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for (i, &x) in a.iter().enumerate() {
        diff |= x ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

/// `expire=DUR` (default 15 minutes, at most a week) and `addr=HOST:PORT`.
fn token_query(query: &str) -> Result<(Duration, Option<String>), String> {
    let valid_for = match query_value(query, "expire") {
        None => super::join::DEFAULT_EXPIRE,
        Some(text) => shoal_config::parse_duration(&text)
            .ok()
            .filter(|d| !d.is_zero() && *d <= super::join::MAX_EXPIRE)
            .ok_or_else(|| format!("expire {text:?} must be a duration such as 15m, up to 168h"))?,
    };
    let member = query_value(query, "addr");
    if let Some(addr) = &member {
        if addr
            .rsplit_once(':')
            .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
        {
            return Err(format!("addr {addr:?} must be HOST:PORT"));
        }
    }
    Ok((valid_for, member))
}

fn query_flag(query: &str, name: &str) -> bool {
    query
        .split('&')
        .any(|pair| pair == name || pair == format!("{name}=true") || pair == format!("{name}=1"))
}

/// Decodes `%XX` escapes (names are plain ASCII, but clients may escape).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((high * 16 + low) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Receives the next call (for the agent's loop).
pub async fn next_call(calls: &Receiver<ApiCall>) -> Option<ApiCall> {
    calls.recv().await.ok()
}

#[cfg(test)]
mod tests;
