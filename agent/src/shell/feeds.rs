//! `websocket` sensors: one task per feed keeps a `ws://` connection up
//! (RFC 6455 client: the upgrade, its `Sec-WebSocket-Accept` checked,
//! text and binary messages, fragments, ping and close), and hands each
//! message to the agent's loop, which maps it to points (`pushed.rs`).
//!
//! A lost or refused connection turns the feed's points into errors
//! (once) and is tried again after 1, 2, 4 ... up to 30 s; a message over
//! [`MAX_MESSAGE`] is skipped as it arrives (never buffered) and counted.
//! A feed silent for [`PING_AFTER`] is pinged, and one that stays silent
//! another [`PING_AFTER`] is reconnected. Events wait in a bounded queue;
//! a full one drops messages (counted), so a fast feed cannot grow the
//! agent's memory or starve its loop (the task yields between messages).

use super::fetch::base64;
use super::pushed::Sources;
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use shoal_config::{SensorSection, Setting, Url};
use shoal_core::time::Instant;
use shoal_core::Node;
use smol::channel::{self, Receiver, Sender};
use smol::net::TcpStream;
use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

/// The largest message kept.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Silence after which the feed is pinged.
pub const PING_AFTER: Duration = Duration::from_secs(30);
/// The longest wait between connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Events waiting for the agent's loop.
const QUEUE: usize = 256;
/// Frames one message may come in (control frames between them count).
const MAX_FRAMES: u32 = 1024;
/// Bytes of one message skipped (over [`MAX_MESSAGE`]) before the feed is
/// dropped as misbehaving.
const MAX_SKIPPED: u64 = 16 * 1024 * 1024;

/// What a feed's task reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedEvent {
    /// A whole message of the feed (sensor) `name`.
    Message {
        /// The sensor.
        name: String,
        /// The message.
        payload: Vec<u8>,
    },
    /// The connection is down (or could not be made) for this reason.
    Down {
        /// The sensor.
        name: String,
        /// Why, in words for its error point and the log.
        why: String,
    },
}

/// Counters of every feed.
#[derive(Debug, Default)]
pub struct FeedStats {
    /// Messages dropped: too large, or the queue full.
    pub dropped: Cell<u64>,
    /// Connections made.
    pub connects: Cell<u64>,
}

fn bump(counter: &Cell<u64>) {
    counter.set(counter.get().saturating_add(1));
}

/// This node's `websocket` sensors: their tasks and their mapping.
#[derive(Debug)]
pub struct Feeds {
    sources: Sources,
    events: Receiver<FeedEvent>,
    stats: Rc<FeedStats>,
    _tasks: Vec<smol::Task<()>>,
}

impl Feeds {
    /// Starts a task per `websocket` sensor of `sections` (`None`: none).
    pub fn start(ex: &smol::LocalExecutor<'static>, sections: &[SensorSection]) -> Option<Feeds> {
        let sources = Sources::new(sections, "websocket");
        if sources.is_empty() {
            return None;
        }
        let (tx, events) = channel::bounded(QUEUE);
        let stats = Rc::new(FeedStats::default());
        let tasks = sections
            .iter()
            .filter(|s| s.driver == "websocket")
            .filter_map(|section| {
                let Some(Setting::Text(url)) = section.settings.get("url") else {
                    return None;
                };
                let url = shoal_config::parse_url(url, "ws", "wss").ok()?;
                let timeout = match section.settings.get("timeout") {
                    Some(Setting::Duration(d)) => *d,
                    _ => super::sensors::DEFAULT_TIMEOUT,
                };
                let feed = Feed {
                    name: section.name.clone(),
                    url,
                    timeout,
                };
                Some(ex.spawn(keep_feed(feed, tx.clone(), Rc::clone(&stats))))
            })
            .collect();
        Some(Feeds {
            sources,
            events,
            stats,
            _tasks: tasks,
        })
    }

    /// The next event of any feed.
    pub async fn next_event(&self) -> FeedEvent {
        match self.events.recv().await {
            Ok(event) => event,
            Err(_) => future::pending().await,
        }
    }

    /// An event: its readings go to the core.
    pub fn on_event(&mut self, node: &mut Node, now: Instant, event: FeedEvent) {
        let ts_ms = super::unix_ms();
        let readings = match &event {
            FeedEvent::Message { name, payload } => {
                self.sources.on_message(now, name, payload, false, ts_ms)
            }
            FeedEvent::Down { name, why } => self.sources.on_failure(now, name, why, ts_ms),
        };
        for reading in readings {
            if let Err(error) = node.handle_reading(now, reading) {
                log::warn!("websocket: a reading was refused: {error}");
            }
        }
    }

    /// Held readings that are due (see `pushed.rs`); true if any.
    pub fn tick(&mut self, node: &mut Node, now: Instant) -> bool {
        let due = self.sources.due(now);
        let any = !due.is_empty();
        for reading in due {
            if let Err(error) = node.handle_reading(now, reading) {
                log::warn!("websocket: a reading was refused: {error}");
            }
        }
        any
    }

    /// When held readings are due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.sources.next_due()
    }

    /// Messages that were not what their sensor expects, lost
    /// connections, and messages dropped.
    pub fn errors(&self) -> u64 {
        self.sources.errors + self.stats.dropped.get()
    }
}

/// One feed's connection settings.
#[derive(Debug, Clone)]
struct Feed {
    name: String,
    url: Url,
    timeout: Duration,
}

/// Keeps the feed connected, forever (until the task is dropped).
async fn keep_feed(feed: Feed, events: Sender<FeedEvent>, stats: Rc<FeedStats>) {
    let mut failures = 0u32;
    let mut last_why = String::new();
    loop {
        let started = std::time::Instant::now();
        let why = match session(&feed, &events, &stats).await {
            Ok(()) => return,
            Err(why) => why,
        };
        if started.elapsed() >= Duration::from_secs(60) {
            failures = 0;
        }
        let wait = (Duration::from_secs(1) * (1u32 << failures.min(5))).min(MAX_BACKOFF);
        failures = failures.saturating_add(1);
        if why != last_why {
            log::warn!(
                "sensor {} (websocket {}): {why}; trying again in {}",
                feed.name,
                feed.url.authority(),
                shoal_config::format_duration(wait)
            );
            last_why.clone_from(&why);
        }
        let down = FeedEvent::Down {
            name: feed.name.clone(),
            why,
        };
        if events.send(down).await.is_err() {
            return;
        }
        smol::Timer::after(wait).await;
    }
}

/// One connection: the upgrade, then messages until it fails. `Ok` only
/// when the agent is gone.
async fn session(feed: &Feed, events: &Sender<FeedEvent>, stats: &FeedStats) -> Result<(), String> {
    let stream = timeout(feed.timeout, connect(&feed.url))
        .await
        .ok_or_else(|| {
            format!(
                "no connection within {}",
                shoal_config::format_duration(feed.timeout)
            )
        })??;
    bump(&stats.connects);
    log::info!(
        "sensor {} (websocket {}{}): connected",
        feed.name,
        feed.url.authority(),
        feed.url.path
    );
    let mut reader = Reader {
        stream,
        buffered: Vec::new(),
    };
    let mut pinged = false;
    let mut handled = 0u32;
    loop {
        handled = handled.wrapping_add(1);
        if handled.is_multiple_of(16) {
            future::yield_now().await;
        }
        let Some(frame) = reader.message(stats, PING_AFTER).await? else {
            if pinged {
                return Err(format!(
                    "no answer to a ping within {}",
                    shoal_config::format_duration(PING_AFTER)
                ));
            }
            reader.send(0x9, b"shoal").await?;
            pinged = true;
            continue;
        };
        pinged = false;
        match frame {
            Incoming::Message(payload) => {
                let event = FeedEvent::Message {
                    name: feed.name.clone(),
                    payload,
                };
                match events.try_send(event) {
                    Ok(()) => {}
                    Err(channel::TrySendError::Full(_)) => bump(&stats.dropped),
                    Err(channel::TrySendError::Closed(_)) => return Ok(()),
                }
            }
            Incoming::Ping(data) => reader.send(0xA, &data).await?,
            Incoming::Pong | Incoming::Skipped => {}
            Incoming::Close(code) => {
                // The close is echoed with the code received, or none.
                let echo = code.map(u16::to_be_bytes);
                let _ = reader
                    .send(0x8, echo.as_ref().map_or(&[][..], |b| &b[..]))
                    .await;
                return Err(match code {
                    Some(code) => format!("the server closed the feed (code {code})"),
                    None => "the server closed the feed".to_owned(),
                });
            }
        }
    }
}

async fn timeout<T>(limit: Duration, work: impl std::future::Future<Output = T>) -> Option<T> {
    future::or(async { Some(work.await) }, async {
        smol::Timer::after(limit).await;
        None
    })
    .await
}

/// A nonce for `Sec-WebSocket-Key`: it only has to differ between
/// connections (it proves nothing about us).
fn nonce() -> [u8; 16] {
    use std::hash::{BuildHasher, Hasher};
    let mut bytes = [0u8; 16];
    for half in bytes.chunks_mut(8) {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        half.copy_from_slice(&hasher.finish().to_le_bytes());
    }
    bytes
}

/// What the server must answer to `key`.
pub fn accept_for(key: &str) -> String {
    let mut input = key.as_bytes().to_vec();
    input.extend_from_slice(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64(&sha1(&input))
}

/// Connects and upgrades to a websocket.
async fn connect(url: &Url) -> Result<TcpStream, String> {
    let authority = url.authority();
    let mut stream = super::fetch::connect(&authority).await?;
    let _ = stream.set_nodelay(true);
    let key = base64(&nonce());
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nUser-Agent: shoal/{}\r\n\r\n",
        url.path,
        env!("CARGO_PKG_VERSION")
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("{authority}: sending failed: {e}"))?;
    // The answer's head, byte by byte (a frame may follow it at once).
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() % 1024 == 1023 {
            future::yield_now().await;
        }
        if head.len() > 16 * 1024 {
            return Err("the upgrade answer's headers are longer than 16 KiB".to_owned());
        }
        match stream.read(&mut byte).await {
            Ok(0) => return Err("the server closed the connection during the upgrade".to_owned()),
            Ok(_) => head.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Err("the server closed the connection during the upgrade".to_owned())
            }
            Err(e) => return Err(format!("reading the upgrade answer failed: {e}")),
        }
    }
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap_or("").trim().to_owned();
    if status.split(' ').nth(1) != Some("101") {
        return Err(format!("the server did not upgrade: {status:?}"));
    }
    let expected = accept_for(&key);
    let accepted = lines.any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("sec-websocket-accept") && value.trim() == expected
        })
    });
    if !accepted {
        return Err("the server's Sec-WebSocket-Accept is missing or wrong".to_owned());
    }
    Ok(stream)
}

/// A frame or message from the server.
#[derive(Debug, PartialEq, Eq)]
enum Incoming {
    Message(Vec<u8>),
    Ping(Vec<u8>),
    Pong,
    /// A message over the bound, skipped.
    Skipped,
    /// With its status code, if it had one.
    Close(Option<u16>),
}

struct Reader {
    stream: TcpStream,
    buffered: Vec<u8>,
}

impl Reader {
    async fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), String> {
        self.stream.read_exact(buf).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                "the server closed the connection".to_owned()
            } else {
                format!("reading failed: {e}")
            }
        })
    }

    /// Reads `length` bytes, kept (appended) or skipped. Yields every
    /// 64 KiB: a socket that always has data never makes a read wait, so
    /// without it a fast server would hold the agent's loop.
    async fn payload(&mut self, length: u64, keep: bool) -> Result<(), String> {
        let mut left = length;
        let mut chunk = [0u8; 4096];
        let mut since_yield = 0usize;
        while left > 0 {
            let n = usize::try_from(left.min(chunk.len() as u64)).unwrap_or(chunk.len());
            self.read_exact(&mut chunk[..n]).await?;
            if keep {
                self.buffered.extend_from_slice(&chunk[..n]);
            }
            left -= n as u64;
            since_yield += n;
            if since_yield >= 64 * 1024 {
                since_yield = 0;
                future::yield_now().await;
            }
        }
        Ok(())
    }

    /// The next whole message or control frame; `None` when nothing at
    /// all came for `idle`. Only the wait for its first byte can end that
    /// way (a read of one byte is all or nothing); a message that stalls
    /// halfway for `idle` is an error (the connection is out of step).
    async fn message(
        &mut self,
        stats: &FeedStats,
        idle: Duration,
    ) -> Result<Option<Incoming>, String> {
        let mut first = [0u8; 1];
        match timeout(idle, self.stream.read(&mut first)).await {
            None => return Ok(None),
            Some(Ok(0)) => return Err("the server closed the connection".to_owned()),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("reading failed: {e}")),
        }
        timeout(idle, self.rest(first[0], stats))
            .await
            .unwrap_or_else(|| Err("the server stalled in the middle of a message".to_owned()))
            .map(Some)
    }

    /// The rest of a message whose first byte was `first`.
    async fn rest(&mut self, first: u8, stats: &FeedStats) -> Result<Incoming, String> {
        self.buffered.clear();
        let mut skipping = false;
        let mut skipped = 0u64;
        let mut started = false;
        let mut next_first = Some(first);
        let mut frames = 0u32;
        loop {
            frames += 1;
            if frames > MAX_FRAMES {
                return Err(format!(
                    "the server sent a message in more than {MAX_FRAMES} frames"
                ));
            }
            if frames.is_multiple_of(16) {
                future::yield_now().await;
            }
            let mut head = [0u8; 2];
            match next_first.take() {
                Some(byte) => {
                    head[0] = byte;
                    self.read_exact(&mut head[1..]).await?;
                }
                None => self.read_exact(&mut head).await?,
            }
            let fin = head[0] & 0x80 != 0;
            let opcode = head[0] & 0x0f;
            if head[0] & 0x70 != 0 {
                return Err(
                    "the server sent a frame with reserved bits set (an extension not asked for)"
                        .to_owned(),
                );
            }
            if head[1] & 0x80 != 0 {
                return Err("the server sent a masked frame".to_owned());
            }
            let length = match head[1] & 0x7f {
                126 => {
                    let mut b = [0u8; 2];
                    self.read_exact(&mut b).await?;
                    u64::from(u16::from_be_bytes(b))
                }
                127 => {
                    let mut b = [0u8; 8];
                    self.read_exact(&mut b).await?;
                    u64::from_be_bytes(b)
                }
                n => u64::from(n),
            };
            if opcode >= 0x8 {
                if !fin || length > 125 {
                    return Err("the server sent a bad control frame".to_owned());
                }
                match self.control(opcode, length as usize, started).await? {
                    Some(incoming) => return Ok(incoming),
                    None => continue,
                }
            }
            match opcode {
                0x0 if !started => {
                    return Err("the server sent a continuation without a start".to_owned())
                }
                0x1 | 0x2 if started => {
                    return Err("the server started a message inside another".to_owned())
                }
                0x0..=0x2 => started = true,
                other => return Err(format!("the server sent an unknown opcode {other:#x}")),
            }
            let fits = (self.buffered.len() as u64).saturating_add(length) <= MAX_MESSAGE as u64;
            if !fits && !skipping {
                skipping = true;
                skipped = self.buffered.len() as u64;
                self.buffered.clear();
            }
            if skipping {
                skipped = skipped.saturating_add(length);
                if skipped > MAX_SKIPPED {
                    return Err("the server sent a message over 16 MiB".to_owned());
                }
            }
            self.payload(length, !skipping).await?;
            if fin {
                if skipping {
                    bump(&stats.dropped);
                    return Ok(Incoming::Skipped);
                }
                return Ok(Incoming::Message(std::mem::take(&mut self.buffered)));
            }
        }
    }

    /// A control frame of `length` bytes: returned, or (between the
    /// fragments of a message, `started`) a ping answered here and the
    /// message read on (`None`).
    async fn control(
        &mut self,
        opcode: u8,
        length: usize,
        started: bool,
    ) -> Result<Option<Incoming>, String> {
        let mut data = vec![0u8; length];
        self.read_exact(&mut data).await?;
        match opcode {
            0x8 => {
                let code = data.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]));
                Ok(Some(Incoming::Close(code)))
            }
            0x9 if started => self.send(0xA, &data).await.map(|()| None),
            0xA if started => Ok(None),
            0x9 => Ok(Some(Incoming::Ping(data))),
            0xA => Ok(Some(Incoming::Pong)),
            other => Err(format!("the server sent an unknown opcode {other:#x}")),
        }
    }

    /// Sends a control frame (masked, as a client must).
    async fn send(&mut self, opcode: u8, data: &[u8]) -> Result<(), String> {
        let mask = nonce();
        let mut frame = vec![0x80 | opcode, 0x80 | (data.len().min(125) as u8)];
        frame.extend_from_slice(&mask[..4]);
        for (i, byte) in data.iter().take(125).enumerate() {
            frame.push(byte ^ mask[i % 4]);
        }
        // A server that never reads would otherwise hold this feed (and
        // its points' last values) forever.
        timeout(PING_AFTER, self.stream.write_all(&frame))
            .await
            .ok_or("the server stopped reading")?
            .map_err(|e| format!("sending failed: {e}"))
    }
}

/// SHA-1 (FIPS 180-4), for the upgrade's `Sec-WebSocket-Accept` only.
pub fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [
        0x6745_2301,
        0xEFCD_AB89,
        0x98BA_DCFE,
        0x1032_5476,
        0xC3D2_E1F0,
    ];
    let mut message = data.to_vec();
    let bits = (data.len() as u64).wrapping_mul(8);
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&bits.to_be_bytes());
    for block in message.chunks(64) {
        let mut w = [0u32; 80];
        for (i, word) in block.chunks(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, word) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*word);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (state, add) in h.iter_mut().zip([a, b, c, d, e]) {
            *state = state.wrapping_add(add);
        }
    }
    let mut out = [0u8; 20];
    for (i, word) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&word.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests;
