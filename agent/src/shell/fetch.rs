//! Reading from outside the Pi: one HTTP/1.1 exchange over `smol::net`
//! (`http` sensors' GETs and webhooks' POSTs), and a `command` sensor's
//! run. Each returns the message the sensor maps to points
//! (`messages.rs`), or why there is none, in words for its error point.
//!
//! Bounds: an answer over [`MAX_ANSWER`] bytes is an error as soon as it
//! passes the bound (nothing larger is buffered), headers over 16 KiB too;
//! the caller bounds the time.

use super::executor;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use shoal_config::Url;
use shoal_core::wire::Outcome;
use std::time::Duration;

/// The largest answer body kept.
pub const MAX_ANSWER: usize = 1024 * 1024;
/// The largest header block accepted.
const MAX_HEAD: usize = 16 * 1024;

/// An HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Its status.
    pub status: u16,
    /// Its status line, for messages.
    pub status_line: String,
    /// Its body (de-chunked).
    pub body: Vec<u8>,
}

/// How the answer's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    Close,
}

/// Sends `method` to `url` with extra `headers` (full lines, each ending
/// in CRLF) and `body`, and reads the answer.
pub async fn exchange(
    url: &Url,
    method: &str,
    headers: &str,
    body: &[u8],
) -> Result<Answer, String> {
    let authority = url.authority();
    let mut stream = connect(&authority).await?;
    let host = if url.port == 80 {
        authority.trim_end_matches(":80").to_owned()
    } else {
        authority.clone()
    };
    let content_length = if body.is_empty() && method == "GET" {
        String::new()
    } else {
        format!("Content-Length: {}\r\n", body.len())
    };
    let head = format!(
        "{method} {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: shoal/{}\r\n{headers}{content_length}Connection: close\r\n\r\n",
        url.path,
        env!("CARGO_PKG_VERSION")
    );
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    stream
        .write_all(&request)
        .await
        .map_err(|e| format!("{authority}: sending failed: {e}"))?;
    read_answer(&mut stream).await
}

/// Connects to `host:port`; an address is used as it is (a name is
/// resolved on a blocking thread, which an address does not need).
pub async fn connect(authority: &str) -> Result<smol::net::TcpStream, String> {
    let connected = match authority.parse::<std::net::SocketAddr>() {
        Ok(address) => smol::net::TcpStream::connect(address).await,
        Err(_) => smol::net::TcpStream::connect(authority).await,
    };
    connected.map_err(|e| format!("cannot connect to {authority}: {e}"))
}

/// Reads one answer: until its length, its last chunk, or the close.
async fn read_answer(
    stream: &mut (impl futures_lite::AsyncRead + Unpin),
) -> Result<Answer, String> {
    let mut raw = Vec::new();
    let mut head: Option<(usize, u16, String, Framing)> = None;
    let mut buf = [0u8; 8192];
    loop {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("reading the answer failed: {e}"))?;
        raw.extend_from_slice(&buf[..n]);
        if head.is_none() {
            if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let (status, line, framing) = parse_head(&raw[..end])?;
                head = Some((end + 4, status, line, framing));
            } else if raw.len() > MAX_HEAD {
                return Err("the answer's headers are longer than 16 KiB".to_owned());
            }
        }
        if let Some((start, _, _, framing)) = &head {
            let body = &raw[*start..];
            // Chunk framing adds to the body: its bound is the decoded
            // size (checked below), with room for the framing here.
            let bound = if *framing == Framing::Chunked {
                2 * MAX_ANSWER
            } else {
                MAX_ANSWER
            };
            if body.len() > bound {
                return Err(format!(
                    "the answer is larger than {} KiB",
                    MAX_ANSWER / 1024
                ));
            }
            let complete = match framing {
                Framing::Length(length) => body.len() >= *length,
                // Data may end in "0\r\n" too: complete only when the
                // chunks parse from the start to a last, empty one.
                Framing::Chunked => {
                    body.ends_with(b"0\r\n\r\n") && super::client::dechunk(body).is_some()
                }
                Framing::Close => false,
            };
            if complete {
                break;
            }
        }
        if n == 0 {
            break;
        }
    }
    let Some((start, status, status_line, framing)) = head else {
        return Err(if raw.is_empty() {
            "the server closed the connection without an answer".to_owned()
        } else {
            "the server closed the connection in the middle of the headers".to_owned()
        });
    };
    let body = &raw[start..];
    let body = match framing {
        Framing::Length(length) if body.len() < length => {
            return Err(format!(
                "the answer ended early ({} of {length} bytes)",
                body.len()
            ))
        }
        Framing::Length(length) => body[..length].to_vec(),
        Framing::Chunked => {
            super::client::dechunk(body).ok_or("the answer's chunks are broken or cut off")?
        }
        Framing::Close => body.to_vec(),
    };
    if body.len() > MAX_ANSWER {
        return Err(format!(
            "the answer is larger than {} KiB",
            MAX_ANSWER / 1024
        ));
    }
    Ok(Answer {
        status,
        status_line,
        body,
    })
}

/// The status and the body's framing from the header block.
fn parse_head(head: &[u8]) -> Result<(u16, String, Framing), String> {
    let text = std::str::from_utf8(head).map_err(|_| "the answer's headers are not text")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("").trim().to_owned();
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.split(' ').nth(1))
        .and_then(|code| code.parse::<u16>().ok())
        .filter(|code| (100..600).contains(code))
        .ok_or_else(|| {
            let start: String = status_line.chars().take(24).collect();
            format!("not an HTTP answer ({start:?})")
        })?;
    let mut framing = Framing::Close;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding")
            && value.to_ascii_lowercase().contains("chunked")
        {
            framing = Framing::Chunked;
        } else if name.eq_ignore_ascii_case("content-length") && framing != Framing::Chunked {
            let length = value
                .parse::<usize>()
                .map_err(|_| format!("a bad Content-Length {value:?}"))?;
            if length > MAX_ANSWER {
                return Err(format!(
                    "the answer is larger than {} KiB ({length} bytes)",
                    MAX_ANSWER / 1024
                ));
            }
            framing = Framing::Length(length);
        }
    }
    Ok((status, status_line, framing))
}

/// An `http` sensor's read: GET `url`; a 2xx answer's body is the message.
pub async fn get(url: &Url, headers: &str) -> Result<Vec<u8>, String> {
    let answer = exchange(url, "GET", headers, &[]).await?;
    if (200..300).contains(&answer.status) {
        Ok(answer.body)
    } else {
        Err(format!("HTTP {}", answer.status_line))
    }
}

/// The request headers of an `http` sensor: its own, and basic auth when
/// it has a user (the password is the first line of its file).
pub fn request_headers(
    headers: &[(String, String)],
    user: Option<&str>,
    password: Option<&str>,
) -> String {
    let mut text = String::new();
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("accept"))
    {
        text.push_str("Accept: application/json, text/plain\r\n");
    }
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(user) = user {
        text.push_str(&basic_auth(user, password));
    }
    text
}

/// The `Authorization: Basic ...` header line.
pub fn basic_auth(user: &str, password: Option<&str>) -> String {
    let credentials = format!("{user}:{}", password.unwrap_or(""));
    format!(
        "Authorization: Basic {}\r\n",
        base64(credentials.as_bytes())
    )
}

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A `command` sensor's read: its stdout, if it exits 0 within `timeout`.
pub async fn command(argv: &[String], timeout: Duration) -> Result<Vec<u8>, String> {
    let ran = executor::run_argv(argv, timeout, &[]).await;
    let program = argv.first().map_or("", String::as_str);
    let first_line = |bytes: &[u8]| {
        String::from_utf8_lossy(bytes)
            .lines()
            .find(|line| !line.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_owned()
    };
    match ran.outcome {
        Outcome::Exited(0) if ran.stdout.len() >= executor::MAX_CAPTURE => Err(format!(
            "{program} printed more than {} KiB",
            executor::MAX_CAPTURE / 1024
        )),
        Outcome::Exited(0) => Ok(ran.stdout),
        Outcome::Exited(code) => {
            let said = first_line(&ran.stderr);
            Err(if said.is_empty() {
                format!("{program} exited with {code}")
            } else {
                format!("{program} exited with {code}: {said}")
            })
        }
        Outcome::TimedOut => Err(format!(
            "read timed out after {}",
            shoal_config::format_duration(timeout)
        )),
        _ => Err(ran.note.trim().to_owned()),
    }
}

#[cfg(test)]
mod tests;
