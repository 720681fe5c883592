//! One MQTT connection, kept up by a task: connect (with a Last Will, user
//! name and password), subscribe, publish what the bridge hands it, ping,
//! and reconnect with backoff when anything goes wrong.
//!
//! The task and the agent's loop talk through two bounded channels: what to
//! publish goes in (a full queue is refused, so the bridge knows to send its
//! whole state again later), and [`ClientEvent`]s come out (a full queue
//! drops incoming messages, counted). Nothing the broker sends can make the
//! task buffer more than `max_packet` bytes: a larger packet is read and
//! discarded as it arrives.

use super::packet::{self, Connect, Decoded, Incoming};
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use smol::channel::{self, Receiver, Sender, TrySendError};
use smol::net::TcpStream;
use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How long a TCP connect and the broker's CONNACK may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The first wait after a failure; doubled each time up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A connection that lasted this long starts the backoff over.
const STABLE: Duration = Duration::from_secs(60);
/// Messages waiting to be sent.
pub const OUT_QUEUE: usize = 1024;
/// Events waiting for the agent's loop.
const EVENT_QUEUE: usize = 256;

/// Where and how to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Broker host name or address.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Client id (unique per node).
    pub client_id: String,
    /// User name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<Vec<u8>>,
    /// Keepalive.
    pub keep_alive: Duration,
    /// Last Will topic and payload (retained).
    pub will: Option<(String, Vec<u8>)>,
    /// Topic filters to subscribe to after each connect.
    pub subscriptions: Vec<String>,
    /// The largest packet from the broker kept; larger ones are dropped.
    pub max_packet: usize,
}

/// What happened to the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// Connected and subscribed: whatever was queued before is dropped, so
    /// publish the current state now.
    Connected,
    /// The connection ended or could not be made; the next attempt follows
    /// after `retry_in`.
    Disconnected {
        /// Why, for the log.
        reason: String,
        /// The backoff.
        retry_in: Duration,
    },
    /// A message on a subscribed topic.
    Message {
        /// Topic.
        topic: String,
        /// Payload.
        payload: Vec<u8>,
        /// A retained message, sent because we subscribed (it may be old).
        retained: bool,
    },
}

/// Counters the task keeps (read by status and metrics).
#[derive(Debug, Default)]
pub struct ClientStats {
    /// Connections made.
    pub connects: Cell<u64>,
    /// Connections that failed or ended.
    pub disconnects: Cell<u64>,
    /// Messages published.
    pub published: Cell<u64>,
    /// Messages received.
    pub received: Cell<u64>,
    /// Received messages dropped: over `max_packet`, or the agent's queue full.
    pub dropped: Cell<u64>,
    /// Whether the connection is up now.
    pub up: Cell<bool>,
}

fn bump(counter: &Cell<u64>) {
    counter.set(counter.get().saturating_add(1));
}

/// What the bridge hands the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// A message to publish.
    Publish {
        /// Topic.
        topic: String,
        /// Payload.
        payload: Vec<u8>,
        /// Retained.
        retain: bool,
    },
    /// Subscribe to these filters for this connection only (they are not
    /// renewed after a reconnect).
    Subscribe(Vec<String>),
    /// Unsubscribe from these filters.
    Unsubscribe(Vec<String>),
}

/// The packet id of the subscriptions made at connect.
const SETTINGS_SUBSCRIPTION: u16 = 1;
/// The packet id of a later [`Outgoing::Subscribe`] or `Unsubscribe`.
const LATER_SUBSCRIPTION: u16 = 2;

/// The agent's end of the connection. Dropping it cancels the task (the
/// broker then publishes the Last Will); [`Client::close`] ends it with a
/// DISCONNECT instead.
#[derive(Debug)]
pub struct Client {
    out: Sender<Outgoing>,
    events: Receiver<ClientEvent>,
    stats: Rc<ClientStats>,
    _task: smol::Task<()>,
}

impl Client {
    /// Starts the connection task on `ex`.
    pub fn start(ex: &smol::LocalExecutor<'static>, settings: Settings) -> Client {
        let (out, out_rx) = channel::bounded(OUT_QUEUE);
        let (events_tx, events) = channel::bounded(EVENT_QUEUE);
        let stats = Rc::new(ClientStats::default());
        let task = ex.spawn(keep_connected(
            settings,
            out_rx,
            events_tx,
            Rc::clone(&stats),
        ));
        Client {
            out,
            events,
            stats,
            _task: task,
        }
    }

    /// Queues a message; `false` when the queue is full (the bridge then
    /// sends its whole state again once the connection drains it).
    pub fn publish(&self, topic: String, payload: Vec<u8>, retain: bool) -> bool {
        self.hand(Outgoing::Publish {
            topic,
            payload,
            retain,
        })
    }

    /// Queues a subscribe or unsubscribe; `false` when the queue is full.
    pub fn hand(&self, outgoing: Outgoing) -> bool {
        match self.out.try_send(outgoing) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Closed(_)) => false,
        }
    }

    /// How many messages wait to be sent.
    pub fn queued(&self) -> usize {
        self.out.len()
    }

    /// The next event (pending forever once the task is gone).
    pub async fn next_event(&self) -> ClientEvent {
        match self.events.recv().await {
            Ok(event) => event,
            Err(_) => future::pending().await,
        }
    }

    /// The task's counters.
    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }

    /// Sends what is queued, then DISCONNECT, within `wait`; the task ends.
    pub async fn close(self, wait: Duration) {
        self.out.close();
        let _ = future::or(self._task, async {
            smol::Timer::after(wait).await;
        })
        .await;
    }
}

/// The backoff after `failures` consecutive failures.
pub fn backoff(failures: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1 << failures.min(10))
        .min(MAX_BACKOFF)
}

async fn keep_connected(
    settings: Settings,
    out: Receiver<Outgoing>,
    events: Sender<ClientEvent>,
    stats: Rc<ClientStats>,
) {
    let mut failures = 0u32;
    loop {
        let began = Instant::now();
        let reason = match session(&settings, &out, &events, &stats).await {
            Ok(()) => return, // closed by the agent
            Err(reason) => reason,
        };
        stats.up.set(false);
        bump(&stats.disconnects);
        if began.elapsed() >= STABLE {
            failures = 0;
        }
        let retry_in = backoff(failures);
        failures = failures.saturating_add(1);
        let event = ClientEvent::Disconnected { reason, retry_in };
        if events.send(event).await.is_err() {
            return;
        }
        // Queued messages are stale by the next connect; the bridge sends
        // its state again on `Connected`.
        let closed = future::or(
            async {
                smol::Timer::after(retry_in).await;
                false
            },
            async {
                while out.recv().await.is_ok() {}
                true
            },
        )
        .await;
        if closed {
            return;
        }
    }
}

/// One connection, from TCP connect to its end: `Ok` when the agent closed
/// it (after a DISCONNECT), else why it ended.
async fn session(
    settings: &Settings,
    out: &Receiver<Outgoing>,
    events: &Sender<ClientEvent>,
    stats: &ClientStats,
) -> Result<(), String> {
    let address = format!("{}:{}", settings.host, settings.port);
    let mut stream = timeout(CONNECT_TIMEOUT, TcpStream::connect(address.as_str()))
        .await
        .ok_or_else(|| format!("no answer from {address} within 5 s"))?
        .map_err(|e| format!("cannot connect to {address}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let will = settings
        .will
        .as_ref()
        .map(|(topic, payload)| (topic.as_str(), payload.as_slice()));
    let hello = packet::connect(&Connect {
        client_id: &settings.client_id,
        keep_alive: u16::try_from(settings.keep_alive.as_secs()).unwrap_or(u16::MAX),
        will,
        username: settings.username.as_deref(),
        password: settings.password.as_deref(),
    });
    write(&mut stream, &hello).await?;
    let mut reader = Reader::new(settings.max_packet);
    let answer = timeout(CONNECT_TIMEOUT, reader.next(&mut stream, stats))
        .await
        .ok_or_else(|| format!("{address} did not answer CONNECT within 5 s"))??;
    match answer {
        Incoming::ConnAck { code: 0 } => {}
        Incoming::ConnAck { code } => {
            return Err(format!("{address} refused: {}", packet::refusal(code)))
        }
        other => return Err(format!("{address} answered CONNECT with {other:?}")),
    }
    while out.try_recv().is_ok() {}
    if !settings.subscriptions.is_empty() {
        let subscribe = packet::subscribe(SETTINGS_SUBSCRIPTION, &settings.subscriptions);
        write(&mut stream, &subscribe).await?;
    }
    stats.up.set(true);
    bump(&stats.connects);
    if events.send(ClientEvent::Connected).await.is_err() {
        return Ok(());
    }
    serve(settings, stream, reader, out, events, stats).await
}

/// What woke a connected session.
enum Wake {
    Packet(Result<Incoming, String>),
    Send(Option<Outgoing>),
    Tick,
}

async fn serve(
    settings: &Settings,
    mut stream: TcpStream,
    mut reader: Reader,
    out: &Receiver<Outgoing>,
    events: &Sender<ClientEvent>,
    stats: &ClientStats,
) -> Result<(), String> {
    let keep_alive = settings.keep_alive.max(Duration::from_secs(1));
    let mut last_sent = Instant::now();
    let mut last_received = Instant::now();
    let mut ping_sent: Option<Instant> = None;
    let mut handled = 0u32;
    loop {
        // Other tasks (the agent's loop) run between packets, however fast
        // the broker sends.
        handled = handled.wrapping_add(1);
        if handled.is_multiple_of(16) {
            future::yield_now().await;
        }
        let quiet = last_sent.min(last_received);
        let tick = match ping_sent {
            Some(at) => keep_alive.saturating_sub(at.elapsed()),
            None => keep_alive.saturating_sub(quiet.elapsed()),
        };
        let mut read_stream = stream.clone();
        let wake = future::or(
            async { Wake::Packet(reader.next(&mut read_stream, stats).await) },
            future::or(async { Wake::Send(out.recv().await.ok()) }, async {
                smol::Timer::after(tick.max(Duration::from_millis(50))).await;
                Wake::Tick
            }),
        )
        .await;
        match wake {
            Wake::Packet(packet) => match packet.inspect(|_| last_received = Instant::now())? {
                Incoming::Publish {
                    topic,
                    payload,
                    ack,
                    retain,
                } => {
                    if let Some(id) = ack {
                        write(&mut stream, &packet::puback(id)).await?;
                    }
                    bump(&stats.received);
                    if events
                        .try_send(ClientEvent::Message {
                            topic,
                            payload,
                            retained: retain,
                        })
                        .is_err()
                    {
                        bump(&stats.dropped);
                    }
                }
                Incoming::SubAck { id, codes } => {
                    let filters = (id == SETTINGS_SUBSCRIPTION).then_some(&settings.subscriptions);
                    for (filter, code) in filters.into_iter().flatten().zip(codes) {
                        if code == 0x80 {
                            log::warn!("mqtt: the broker refused the subscription to {filter}");
                        }
                    }
                }
                Incoming::PingResp => ping_sent = None,
                Incoming::PubAck | Incoming::UnsubAck => {}
                Incoming::ConnAck { .. } => return Err("a second CONNACK".to_owned()),
            },
            Wake::Send(Some(outgoing)) => {
                write(&mut stream, &outgoing_bytes(&outgoing, stats)).await?;
                last_sent = Instant::now();
            }
            Wake::Send(None) => {
                let _ = write(&mut stream, &packet::disconnect()).await;
                return Ok(());
            }
            Wake::Tick => {
                if ping_sent.is_some_and(|at| at.elapsed() >= keep_alive) {
                    return Err("the broker did not answer a ping".to_owned());
                }
                // Ping when we sent nothing (the broker needs a packet per
                // keepalive) or heard nothing (a half-open connection
                // otherwise goes unnoticed while we keep publishing).
                let quiet =
                    last_sent.elapsed() >= keep_alive || last_received.elapsed() >= keep_alive;
                if quiet && ping_sent.is_none() {
                    write(&mut stream, &packet::pingreq()).await?;
                    ping_sent = Some(Instant::now());
                    last_sent = Instant::now();
                }
            }
        }
    }
}

/// The packet of what the bridge handed over (a publish is counted).
fn outgoing_bytes(outgoing: &Outgoing, stats: &ClientStats) -> Vec<u8> {
    match outgoing {
        Outgoing::Publish {
            topic,
            payload,
            retain,
        } => {
            bump(&stats.published);
            packet::publish(topic, payload, *retain)
        }
        Outgoing::Subscribe(filters) => packet::subscribe(LATER_SUBSCRIPTION, filters),
        Outgoing::Unsubscribe(filters) => packet::unsubscribe(LATER_SUBSCRIPTION, filters),
    }
}

async fn write(stream: &mut TcpStream, bytes: &[u8]) -> Result<(), String> {
    timeout(CONNECT_TIMEOUT, stream.write_all(bytes))
        .await
        .ok_or("the broker stopped reading")?
        .map_err(|e| format!("write failed: {e}"))
}

async fn timeout<T>(limit: Duration, work: impl std::future::Future<Output = T>) -> Option<T> {
    future::or(async { Some(work.await) }, async {
        smol::Timer::after(limit).await;
        None
    })
    .await
}

/// Bytes from the broker, cut into packets.
struct Reader {
    buffer: Vec<u8>,
    /// Bytes of an oversized packet still to discard.
    skip: usize,
    limit: usize,
}

impl Reader {
    fn new(limit: usize) -> Reader {
        Reader {
            buffer: Vec::new(),
            skip: 0,
            limit,
        }
    }

    /// The next whole packet; an error ends the connection. Cancel-safe:
    /// bytes read stay in the buffer.
    async fn next(
        &mut self,
        stream: &mut TcpStream,
        stats: &ClientStats,
    ) -> Result<Incoming, String> {
        loop {
            let skipped = self.skip.min(self.buffer.len());
            self.buffer.drain(..skipped);
            self.skip -= skipped;
            if self.skip == 0 {
                match packet::decode(&self.buffer, self.limit) {
                    Ok(Decoded::Packet(packet, used)) => {
                        self.buffer.drain(..used);
                        return Ok(packet);
                    }
                    Ok(Decoded::Oversized { header, body }) => {
                        log::warn!(
                            "mqtt: dropped a {body}-byte packet (larger than {} bytes)",
                            self.limit
                        );
                        bump(&stats.dropped);
                        self.skip = header + body;
                        continue;
                    }
                    Ok(Decoded::Incomplete) => {}
                    Err(error) => return Err(format!("the broker sent {error}")),
                }
            }
            let mut chunk = [0u8; 4096];
            let read = stream
                .read(&mut chunk)
                .await
                .map_err(|e| format!("read failed: {e}"))?;
            if read == 0 {
                return Err("the broker closed the connection".to_owned());
            }
            self.buffer.extend_from_slice(&chunk[..read]);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
