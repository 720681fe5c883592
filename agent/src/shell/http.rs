//! The HTTP/1.1 server side of one API connection, on a smol TCP stream:
//! request heads parsed by `httparse`, bodies by `Content-Length` or
//! chunked, keep-alive and pipelining, `Expect: 100-continue`, answers with
//! a length, and a chunked event stream for `/api/events`.
//!
//! Every wait has a limit, so a connection's slot always comes back:
//! [`Limits::head`] to send a request's head (from the connection's start or
//! the previous answer, not reset by each byte), [`Limits::body`] more for
//! its body, [`Limits::write`] for the client to take an answer (or one
//! event). A head over [`MAX_HEAD`] bytes or [`MAX_HEADERS`] lines, a body
//! over [`Limits::max_body`] or anything malformed gets an error answer
//! (`{"error": ...}`) and the connection is closed: after a bad request the
//! stream's framing cannot be trusted. A request with both
//! `Content-Length` and `Transfer-Encoding`, or with two different lengths,
//! is malformed (the request-smuggling cases of RFC 9112 §6.3).

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use serde_json::json;
use smol::channel::Receiver;
use smol::net::TcpStream;
use smol::Timer;
use std::future::Future;
use std::time::{Duration, Instant};

/// Most bytes of a request's head (request line and headers).
pub const MAX_HEAD: usize = 16 * 1024;
/// Most header lines of a request.
pub const MAX_HEADERS: usize = 32;

/// How long each wait of a connection may take, and the largest body.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// To send a request's head.
    pub head: Duration,
    /// To send its body, after the head.
    pub body: Duration,
    /// For the client to take an answer, or one event of a stream.
    pub write: Duration,
    /// Most bytes of a body.
    pub max_body: usize,
    /// Longest silence on an event stream: a comment is sent then, so a
    /// client gone without a word is noticed (its TCP stops acknowledging;
    /// after [`Limits::write`] of that the connection ends).
    pub ping: Duration,
}

/// One request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`, ... as sent.
    pub method: String,
    /// The path, still percent-encoded.
    pub path: String,
    /// What follows `?`, or empty.
    pub query: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The body (empty without one).
    pub body: Vec<u8>,
}

/// One answer.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The `Content-Type`.
    pub content_type: &'static str,
    /// What follows the head.
    pub body: Body,
}

/// An answer's body.
#[derive(Debug)]
pub enum Body {
    /// All of it, sent with its length.
    Full(String),
    /// A stream sent chunked until the sender closes it or the client goes;
    /// the connection ends with it.
    Stream(Receiver<String>),
}

impl Response {
    /// A whole body.
    pub fn full(status: u16, content_type: &'static str, body: String) -> Response {
        Response {
            status,
            content_type,
            body: Body::Full(body),
        }
    }

    /// `{"error": message}`, as the API answers errors.
    pub fn error(status: u16, message: &str) -> Response {
        let mut body = json!({ "error": message }).to_string();
        body.push('\n');
        Response::full(status, "application/json", body)
    }
}

/// Why a connection ended, for the log.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// The client closed it, or asked to (`Connection: close`).
    Closed,
    /// A wait ran over its limit.
    TimedOut,
    /// A malformed or oversized request, answered with this status.
    Refused(u16),
    /// An event stream ended.
    StreamEnded,
    /// Reading or writing failed.
    Failed(std::io::ErrorKind),
}

/// A request head, parsed.
#[derive(Debug, PartialEq, Eq)]
pub struct Parsed {
    /// The request, without its body yet.
    pub request: Request,
    /// Bytes of the head.
    pub length: usize,
    /// How the body is framed.
    pub framing: Framing,
    /// Keep the connection open after the answer.
    pub keep_alive: bool,
    /// The client waits for `100 Continue` before sending the body.
    pub expects_continue: bool,
    /// An HTTP/1.0 client: no chunked answers, and keep-alive only on
    /// request (and then said so).
    pub http10: bool,
}

/// What [`parse_head`] made of the bytes so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Head {
    /// More bytes are needed.
    Partial,
    /// A whole head.
    Done(Parsed),
    /// Refused with this status and reason.
    Bad(u16, String),
}

/// How a request's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// This many bytes.
    Length(usize),
    /// Chunked.
    Chunked,
}

/// Whether `data` holds the end of a head (an empty line) at or after
/// `from`: so each byte of a head sent slowly is looked at about once,
/// and [`parse_head`] runs only on a whole head.
pub fn has_head_end(data: &[u8], from: usize) -> bool {
    let rest = data.get(from.saturating_sub(3)..).unwrap_or(&[]);
    rest.windows(2).any(|pair| pair == b"\n\n") || rest.windows(3).any(|triple| triple == b"\n\r\n")
}

/// The value of a header if it is all digits (no sign, no space inside).
fn digits(value: &str) -> Option<usize> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// Parses a request head from the start of `data`.
pub fn parse_head(data: &[u8], max_body: usize) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let length = match parsed.parse(data) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) if data.len() >= MAX_HEAD => {
            return Head::Bad(431, format!("the request head is over {MAX_HEAD} bytes"))
        }
        Ok(httparse::Status::Partial) => return Head::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            return Head::Bad(431, format!("more than {MAX_HEADERS} header lines"))
        }
        Err(error) => return Head::Bad(400, format!("not an HTTP request: {error}")),
    };
    if length > MAX_HEAD {
        return Head::Bad(431, format!("the request head is over {MAX_HEAD} bytes"));
    }
    let (Some(method), Some(target), Some(version)) = (parsed.method, parsed.path, parsed.version)
    else {
        return Head::Bad(400, "not an HTTP request".to_owned());
    };
    let http10 = version == 0;
    let (mut close, mut keep_alive_asked) = (false, false);
    let mut expects_continue = false;
    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    let mut authorization = None;
    for header in parsed.headers.iter() {
        let value = String::from_utf8_lossy(header.value);
        let value = value.trim();
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            let Some(length) = digits(value) else {
                return Head::Bad(400, format!("Content-Length {value:?} is not a number"));
            };
            if content_length.is_some_and(|seen| seen != length) {
                return Head::Bad(400, "two different Content-Length headers".to_owned());
            }
            content_length = Some(length);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if http10 {
                return Head::Bad(400, "Transfer-Encoding in an HTTP/1.0 request".to_owned());
            }
            if !value.eq_ignore_ascii_case("chunked") || chunked {
                return Head::Bad(501, format!("Transfer-Encoding {value:?} is not supported"));
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case("connection") {
            for option in value.split(',').map(str::trim) {
                close |= option.eq_ignore_ascii_case("close");
                keep_alive_asked |= option.eq_ignore_ascii_case("keep-alive");
            }
        } else if name.eq_ignore_ascii_case("expect") && !http10 {
            // (RFC 9110 §10.1.1: an HTTP/1.0 client's Expect is ignored.)
            if !value.eq_ignore_ascii_case("100-continue") {
                return Head::Bad(417, format!("Expect {value:?} is not supported"));
            }
            expects_continue = true;
        } else if name.eq_ignore_ascii_case("authorization") && authorization.is_none() {
            authorization = Some(value.to_owned());
        }
    }
    let framing = match (content_length, chunked) {
        (Some(_), true) => {
            return Head::Bad(
                400,
                "both Content-Length and Transfer-Encoding were sent".to_owned(),
            )
        }
        (Some(length), false) if length > max_body => {
            return Head::Bad(413, format!("the body is larger than {max_body} bytes"))
        }
        (Some(length), false) => Framing::Length(length),
        (None, true) => Framing::Chunked,
        (None, false) => Framing::Length(0),
    };
    // Absolute form (`GET http://host/path`) is allowed to a server too.
    let target = match target.split_once("://") {
        Some((_, rest)) if !target.starts_with('/') => {
            rest.find('/').map_or("/", |slash| &rest[slash..])
        }
        _ => target,
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Head::Done(Parsed {
        request: Request {
            method: method.to_owned(),
            path: path.to_owned(),
            query: query.to_owned(),
            authorization,
            body: Vec::new(),
        },
        length,
        framing,
        keep_alive: !close && (!http10 || keep_alive_asked),
        expects_continue,
        http10,
    })
}

/// What a [`Dechunker`] made of the bytes so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunks {
    /// More bytes are needed.
    Partial,
    /// The whole body.
    Done(Vec<u8>),
    /// Malformed, or over the limit: refused with this status.
    Bad(u16, String),
}

/// Longest chunk-size or trailer line.
pub const MAX_CHUNK_LINE: usize = 1024;

/// Decodes a chunked body as it arrives: [`Dechunker::feed`] takes the
/// whole chunks and lines at the start of the buffer, so each byte is
/// decoded once (a line waiting for its end is looked at again, and is at
/// most [`MAX_CHUNK_LINE`] bytes). Extensions and trailers are checked and
/// dropped. The framing may take at most `max_body` bytes more than the
/// content, plus one head's worth: one-byte chunks with long extensions
/// must not keep the body's reading going without bound.
#[derive(Debug, Default)]
pub struct Dechunker {
    body: Vec<u8>,
    wire: usize,
    trailers: bool,
}

impl Dechunker {
    /// Decodes what it can from the start of `data`; says how many bytes
    /// it took (the caller drops them) and what came of it.
    pub fn feed(&mut self, data: &[u8], max_body: usize) -> (usize, Chunks) {
        let mut at = 0;
        let outcome = loop {
            let Some(line) = line_at(data, at) else {
                if data.len() - at > MAX_CHUNK_LINE {
                    break Chunks::Bad(400, "a chunk line is too long".to_owned());
                }
                break Chunks::Partial;
            };
            let text = &data[at..line];
            if text.iter().any(|&b| b.is_ascii_control() && b != b'\t') {
                break Chunks::Bad(400, "a control character in a chunk line".to_owned());
            }
            if self.trailers {
                at = line + 2;
                if text.is_empty() {
                    break Chunks::Done(std::mem::take(&mut self.body));
                }
                continue;
            }
            let size_text = text.split(|&b| b == b';').next().unwrap_or(&[]);
            let size_text = String::from_utf8_lossy(size_text);
            let size_text = size_text.trim_end_matches([' ', '\t']);
            let size = match size_text.len() {
                1..=15 if size_text.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    usize::from_str_radix(size_text, 16).ok()
                }
                _ => None,
            };
            let Some(size) = size else {
                break Chunks::Bad(400, format!("bad chunk size {size_text:?}"));
            };
            if size == 0 {
                self.trailers = true;
                at = line + 2;
                continue;
            }
            if size > max_body.saturating_sub(self.body.len()) {
                break Chunks::Bad(413, format!("the body is larger than {max_body} bytes"));
            }
            let start = line + 2;
            match data.get(start + size..start + size + 2) {
                None => break Chunks::Partial,
                Some(b"\r\n") => {}
                Some(_) => break Chunks::Bad(400, "a chunk does not end in CRLF".to_owned()),
            }
            self.body.extend_from_slice(&data[start..start + size]);
            at = start + size + 2;
        };
        self.wire += at;
        if outcome == Chunks::Partial && self.wire > max_body * 2 + MAX_HEAD {
            return (
                at,
                Chunks::Bad(413, format!("the body is larger than {max_body} bytes")),
            );
        }
        (at, outcome)
    }
}

/// The position of the next CRLF at or after `from`, within a line's
/// length of it.
fn line_at(data: &[u8], from: usize) -> Option<usize> {
    let rest = data.get(from..)?;
    let rest = &rest[..rest.len().min(MAX_CHUNK_LINE + 2)];
    rest.windows(2)
        .position(|pair| pair == b"\r\n")
        .map(|at| from + at)
}

/// The reason phrase of the statuses the API answers.
fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

/// How an answer's body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delimit {
    /// `Content-Length`.
    Length(usize),
    /// Chunked (a stream to an HTTP/1.1 client).
    Chunked,
    /// By closing the connection (a stream to an HTTP/1.0 client).
    Close,
}

/// The head of an answer; `connection` is `close`, `keep-alive` (said to
/// an HTTP/1.0 client that asked for it) or empty.
pub fn response_head(
    status: u16,
    content_type: &str,
    delimit: Delimit,
    connection: &str,
) -> String {
    let status = if (100..1000).contains(&status) {
        status
    } else {
        500
    };
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: {content_type}\r\n",
        reason(status)
    );
    match delimit {
        Delimit::Length(length) => head.push_str(&format!("content-length: {length}\r\n")),
        Delimit::Chunked => {
            head.push_str("cache-control: no-cache\r\ntransfer-encoding: chunked\r\n")
        }
        Delimit::Close => head.push_str("cache-control: no-cache\r\n"),
    }
    if !connection.is_empty() {
        head.push_str(&format!("connection: {connection}\r\n"));
    }
    head.push_str("\r\n");
    head
}

/// Runs `future` for at most until `deadline`; `None` if it ran over.
async fn until<T>(deadline: Instant, future: impl Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(future.await) }, async {
        Timer::at(deadline).await;
        None
    })
    .await
}

/// Writes all of `bytes` within `limit`.
async fn send(stream: &mut TcpStream, bytes: &[u8], limit: Duration) -> Result<(), End> {
    match until(Instant::now() + limit, stream.write_all(bytes)).await {
        None => Err(End::TimedOut),
        Some(Err(error)) => Err(End::Failed(error.kind())),
        Some(Ok(())) => Ok(()),
    }
}

/// Reads more bytes into `buffer` before `deadline`.
async fn fill(stream: &mut TcpStream, buffer: &mut Vec<u8>, deadline: Instant) -> Result<(), End> {
    let mut chunk = [0u8; 4096];
    match until(deadline, stream.read(&mut chunk)).await {
        None => Err(End::TimedOut),
        Some(Err(error)) => Err(End::Failed(error.kind())),
        Some(Ok(0)) => Err(End::Closed),
        Some(Ok(read)) => {
            buffer.extend_from_slice(&chunk[..read]);
            Ok(())
        }
    }
}

/// After a refusal: how long, and how many bytes, the rest of what the
/// client sent is read and dropped, so closing does not reset the
/// connection before the client has read the answer.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1024 * 1024;

/// Answers a refused request and ends the connection.
async fn refuse(stream: &mut TcpStream, status: u16, message: &str, limits: &Limits) -> End {
    if let Body::Full(text) = Response::error(status, message).body {
        let head = response_head(
            status,
            "application/json",
            Delimit::Length(text.len()),
            "close",
        );
        let _ = send(stream, format!("{head}{text}").as_bytes(), limits.write).await;
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let deadline = Instant::now() + LINGER;
    let mut scratch = [0u8; 4096];
    let mut dropped = 0;
    while dropped < LINGER_BYTES {
        match until(deadline, stream.read(&mut scratch)).await {
            Some(Ok(read)) if read > 0 => dropped += read,
            _ => break,
        }
    }
    End::Refused(status)
}

/// Reads the next request's head (from `buffer` and the stream) within
/// [`Limits::head`]; a bad one is answered here.
async fn next_head(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
    limits: &Limits,
) -> Result<Parsed, End> {
    let deadline = Instant::now() + limits.head;
    let mut scanned = 0;
    loop {
        if has_head_end(buffer, scanned) || buffer.len() >= MAX_HEAD {
            match parse_head(buffer, limits.max_body) {
                Head::Done(parsed) => return Ok(parsed),
                Head::Bad(status, message) => {
                    return Err(refuse(stream, status, &message, limits).await)
                }
                Head::Partial => {}
            }
        }
        scanned = buffer.len();
        fill(stream, buffer, deadline).await?;
    }
}

/// Reads the body `framing` says follows (from `buffer` and the stream)
/// within [`Limits::body`]; a bad one is answered here.
async fn read_body(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
    framing: Framing,
    limits: &Limits,
) -> Result<Vec<u8>, End> {
    let deadline = Instant::now() + limits.body;
    let mut chunks = Dechunker::default();
    loop {
        match framing {
            Framing::Length(length) if buffer.len() >= length => {
                return Ok(buffer.drain(..length).collect());
            }
            Framing::Length(_) => {}
            Framing::Chunked => {
                let (used, outcome) = chunks.feed(buffer, limits.max_body);
                buffer.drain(..used);
                match outcome {
                    Chunks::Done(body) => return Ok(body),
                    Chunks::Bad(status, message) => {
                        return Err(refuse(stream, status, &message, limits).await)
                    }
                    Chunks::Partial => {}
                }
            }
        }
        fill(stream, buffer, deadline).await?;
    }
}

/// Serves the requests of one connection with `handle` until it ends.
pub async fn serve<F, Fut>(mut stream: TcpStream, limits: Limits, mut handle: F) -> End
where
    F: FnMut(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let mut buffer = Vec::new();
    loop {
        let parsed = match next_head(&mut stream, &mut buffer, &limits).await {
            Ok(parsed) => parsed,
            Err(end) => return end,
        };
        let Parsed {
            mut request,
            framing,
            keep_alive,
            http10,
            ..
        } = parsed;
        buffer.drain(..parsed.length);
        let needs_body = framing != Framing::Length(0);
        if parsed.expects_continue && needs_body && buffer.is_empty() {
            let interim = "HTTP/1.1 100 Continue\r\n\r\n";
            if let Err(end) = send(&mut stream, interim.as_bytes(), limits.write).await {
                return end;
            }
        }
        request.body = match read_body(&mut stream, &mut buffer, framing, &limits).await {
            Ok(body) => body,
            Err(end) => return end,
        };
        let head_only = request.method == "HEAD";
        let response = handle(request).await;
        let connection = match (keep_alive, http10) {
            (false, _) => "close",
            (true, true) => "keep-alive",
            (true, false) => "",
        };
        let text = match response.body {
            Body::Full(text) => text,
            Body::Stream(_) if head_only => String::new(),
            Body::Stream(events) => {
                let delimit = if http10 {
                    Delimit::Close
                } else {
                    Delimit::Chunked
                };
                return stream_events(
                    stream,
                    response.status,
                    response.content_type,
                    delimit,
                    events,
                    limits,
                )
                .await;
            }
        };
        let delimit = Delimit::Length(text.len());
        let mut answer = response_head(response.status, response.content_type, delimit, connection);
        if !head_only {
            answer.push_str(&text);
        }
        if let Err(end) = send(&mut stream, answer.as_bytes(), limits.write).await {
            return end;
        }
        if !keep_alive {
            return End::Closed;
        }
    }
}

/// Sends `events` (chunked, or delimited by the close) until the sender
/// closes or the client closes the connection; a comment every
/// [`Limits::ping`] of silence finds a client gone without a word.
async fn stream_events(
    mut stream: TcpStream,
    status: u16,
    content_type: &str,
    delimit: Delimit,
    events: Receiver<String>,
    limits: Limits,
) -> End {
    let head = response_head(status, content_type, delimit, "close");
    // Data the client's TCP has not acknowledged for this long ends the
    // connection: with the pings, a client gone without a word (powered
    // off, cable out) loses its stream too.
    let _ = socket2::SockRef::from(&stream).set_tcp_user_timeout(Some(limits.write));
    if let Err(end) = send(&mut stream, head.as_bytes(), limits.write).await {
        return end;
    }
    let mut watcher = stream.clone();
    loop {
        // Wait for an event, or for the client to go away (anything it
        // sends now is read and dropped), or for the next ping.
        let waited = until(
            Instant::now() + limits.ping,
            futures_lite::future::or(async { Some(events.recv().await.ok()) }, async {
                let mut scratch = [0u8; 512];
                loop {
                    match watcher.read(&mut scratch).await {
                        Ok(0) | Err(_) => return None,
                        Ok(_) => continue,
                    }
                }
            }),
        )
        .await;
        let text = match waited {
            None => ": ping\n\n".to_owned(),
            Some(None) => return End::Closed,
            Some(Some(None)) => {
                if delimit == Delimit::Chunked {
                    let _ = send(&mut stream, b"0\r\n\r\n", limits.write).await;
                }
                return End::StreamEnded;
            }
            Some(Some(Some(text))) if text.is_empty() => continue,
            Some(Some(Some(text))) => text,
        };
        let bytes = match delimit {
            Delimit::Chunked => format!("{:x}\r\n{text}\r\n", text.len()),
            _ => text,
        };
        if let Err(end) = send(&mut stream, bytes.as_bytes(), limits.write).await {
            return end;
        }
    }
}

#[cfg(test)]
mod tests;
