//! MQTT 3.1.1 packets, the few the bridge needs: encoded into a `Vec`,
//! decoded from a byte buffer that may hold half a packet or several.
//!
//! Out: CONNECT (with a Last Will, user name and password), PUBLISH (QoS 0,
//! retained or not), PUBACK, SUBSCRIBE (QoS 0), PINGREQ, DISCONNECT. In:
//! CONNACK, PUBLISH (QoS 0 or 1), PUBACK, SUBACK, PINGRESP. Anything else a
//! broker sends is a protocol error. Decoding never panics: a property test
//! feeds it arbitrary bytes.

use thiserror::Error;

/// The largest remaining length MQTT can express (4 length bytes).
const MAX_REMAINING: usize = 268_435_455;

/// The parts of a CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect<'a> {
    /// Client identifier.
    pub client_id: &'a str,
    /// Seconds between packets before the broker gives up on us.
    pub keep_alive: u16,
    /// The Last Will: topic and payload, published retained at QoS 1
    /// when the broker loses us without a DISCONNECT.
    pub will: Option<(&'a str, &'a [u8])>,
    /// User name.
    pub username: Option<&'a str>,
    /// Password (sent only with a user name, as 3.1.1 requires).
    pub password: Option<&'a [u8]>,
}

/// A packet from the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// CONNECT answered: 0 accepted, else refused (see [`refusal`]).
    ConnAck {
        /// The return code.
        code: u8,
    },
    /// A message on a subscribed topic.
    Publish {
        /// Topic.
        topic: String,
        /// Payload.
        payload: Vec<u8>,
        /// The packet id of a QoS 1 message, to acknowledge.
        ack: Option<u16>,
        /// Retained (sent because we subscribed, not just published).
        retain: bool,
    },
    /// A QoS 1 publish of ours arrived (we send QoS 0; counted only).
    PubAck,
    /// A SUBSCRIBE answered: one code per filter, 0x80 for a refusal.
    SubAck {
        /// Packet id of the SUBSCRIBE.
        id: u16,
        /// Granted QoS or 0x80 per filter.
        codes: Vec<u8>,
    },
    /// An UNSUBSCRIBE answered.
    UnsubAck,
    /// Our PINGREQ answered.
    PingResp,
}

/// What the decoder found at the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A whole packet, and how many bytes it took.
    Packet(Incoming, usize),
    /// A packet larger than the limit: its header takes `header` bytes and
    /// `body` more follow; the reader discards them without buffering.
    Oversized {
        /// Fixed header length.
        header: usize,
        /// Remaining length.
        body: usize,
    },
    /// More bytes are needed.
    Incomplete,
}

/// Why bytes from the broker are not MQTT we accept.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PacketError {
    /// The remaining length is longer than 4 bytes.
    #[error("a packet length longer than 4 bytes")]
    BadLength,
    /// A packet type a broker never sends a client (or that we never asked
    /// for, like QoS 2).
    #[error("unexpected packet type {0}")]
    Unexpected(u8),
    /// A packet whose body does not match its type.
    #[error("a malformed {0} packet")]
    Malformed(&'static str),
}

/// The CONNACK return codes' meaning.
pub fn refusal(code: u8) -> &'static str {
    match code {
        0 => "accepted",
        1 => "the broker does not speak MQTT 3.1.1",
        2 => "the client id was refused",
        3 => "the broker is unavailable",
        4 => "bad user name or password",
        5 => "not authorized",
        _ => "refused with an unknown code",
    }
}

fn put_length(out: &mut Vec<u8>, mut length: usize) {
    loop {
        let mut byte = (length % 128) as u8;
        length /= 128;
        if length > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if length == 0 {
            break;
        }
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // Strings and binary fields are at most 65,535 bytes; callers bound
    // theirs far below (topics and client ids are short).
    let length = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&bytes[..usize::from(length)]);
}

fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(first);
    put_length(&mut out, body.len());
    out.extend_from_slice(body);
    out
}

/// CONNECT, clean session.
pub fn connect(connect: &Connect<'_>) -> Vec<u8> {
    let mut body = Vec::new();
    put_bytes(&mut body, b"MQTT");
    body.push(4); // protocol level 3.1.1
    let mut flags = 0x02; // clean session
    if connect.will.is_some() {
        flags |= 0x04 | 0x08 | 0x20; // will, QoS 1, retained
    }
    let password = connect.password.filter(|_| connect.username.is_some());
    if connect.username.is_some() {
        flags |= 0x80;
    }
    if password.is_some() {
        flags |= 0x40;
    }
    body.push(flags);
    body.extend_from_slice(&connect.keep_alive.to_be_bytes());
    put_bytes(&mut body, connect.client_id.as_bytes());
    if let Some((topic, payload)) = connect.will {
        put_bytes(&mut body, topic.as_bytes());
        put_bytes(&mut body, payload);
    }
    if let Some(username) = connect.username {
        put_bytes(&mut body, username.as_bytes());
    }
    if let Some(password) = password {
        put_bytes(&mut body, password);
    }
    packet(0x10, &body)
}

/// PUBLISH at QoS 0.
pub fn publish(topic: &str, payload: &[u8], retain: bool) -> Vec<u8> {
    let mut body = Vec::with_capacity(topic.len() + payload.len() + 2);
    put_bytes(&mut body, topic.as_bytes());
    body.extend_from_slice(payload);
    packet(0x30 | u8::from(retain), &body)
}

/// PUBACK for a QoS 1 message received.
pub fn puback(id: u16) -> Vec<u8> {
    packet(0x40, &id.to_be_bytes())
}

/// SUBSCRIBE to `filters` at QoS 0.
pub fn subscribe(id: u16, filters: &[String]) -> Vec<u8> {
    let mut body = id.to_be_bytes().to_vec();
    for filter in filters {
        put_bytes(&mut body, filter.as_bytes());
        body.push(0);
    }
    packet(0x82, &body)
}

/// UNSUBSCRIBE from `filters`.
pub fn unsubscribe(id: u16, filters: &[String]) -> Vec<u8> {
    let mut body = id.to_be_bytes().to_vec();
    for filter in filters {
        put_bytes(&mut body, filter.as_bytes());
    }
    packet(0xa2, &body)
}

/// PINGREQ.
pub fn pingreq() -> Vec<u8> {
    vec![0xc0, 0]
}

/// DISCONNECT: the broker then drops the Last Will.
pub fn disconnect() -> Vec<u8> {
    vec![0xe0, 0]
}

/// Decodes the packet at the start of `buffer`; a packet whose remaining
/// length exceeds `limit` is reported as [`Decoded::Oversized`].
pub fn decode(buffer: &[u8], limit: usize) -> Result<Decoded, PacketError> {
    let Some(&first) = buffer.first() else {
        return Ok(Decoded::Incomplete);
    };
    let mut length = 0usize;
    let mut header = 1;
    loop {
        let Some(&byte) = buffer.get(header) else {
            return Ok(Decoded::Incomplete);
        };
        length += usize::from(byte & 0x7f) << (7 * (header - 1));
        header += 1;
        if byte & 0x80 == 0 {
            break;
        }
        if header == 5 {
            return Err(PacketError::BadLength);
        }
    }
    if length > limit.min(MAX_REMAINING) {
        return Ok(Decoded::Oversized {
            header,
            body: length,
        });
    }
    let Some(body) = buffer.get(header..header + length) else {
        return Ok(Decoded::Incomplete);
    };
    let packet = parse(first, body)?;
    Ok(Decoded::Packet(packet, header + length))
}

fn parse(first: u8, body: &[u8]) -> Result<Incoming, PacketError> {
    match first >> 4 {
        2 if body.len() == 2 => Ok(Incoming::ConnAck { code: body[1] }),
        2 => Err(PacketError::Malformed("CONNACK")),
        3 => parse_publish(first, body),
        4 if body.len() == 2 => Ok(Incoming::PubAck),
        4 => Err(PacketError::Malformed("PUBACK")),
        9 if body.len() >= 3 => Ok(Incoming::SubAck {
            id: u16::from_be_bytes([body[0], body[1]]),
            codes: body[2..].to_vec(),
        }),
        9 => Err(PacketError::Malformed("SUBACK")),
        11 if body.len() == 2 => Ok(Incoming::UnsubAck),
        11 => Err(PacketError::Malformed("UNSUBACK")),
        13 if body.is_empty() => Ok(Incoming::PingResp),
        13 => Err(PacketError::Malformed("PINGRESP")),
        other => Err(PacketError::Unexpected(other)),
    }
}

fn parse_publish(first: u8, body: &[u8]) -> Result<Incoming, PacketError> {
    let malformed = PacketError::Malformed("PUBLISH");
    let qos = (first >> 1) & 3;
    if qos > 1 {
        return Err(PacketError::Unexpected(3));
    }
    let topic_length = match body {
        [high, low, ..] => usize::from(u16::from_be_bytes([*high, *low])),
        _ => return Err(malformed),
    };
    let topic = body.get(2..2 + topic_length).ok_or(malformed.clone())?;
    let topic = std::str::from_utf8(topic).map_err(|_| malformed.clone())?;
    let mut rest = &body[2 + topic_length..];
    let ack = if qos == 1 {
        let [high, low, tail @ ..] = rest else {
            return Err(malformed);
        };
        rest = tail;
        Some(u16::from_be_bytes([*high, *low]))
    } else {
        None
    };
    Ok(Incoming::Publish {
        topic: topic.to_owned(),
        payload: rest.to_vec(),
        ack,
        retain: first & 1 == 1,
    })
}

/// Whether `topic` (a concrete topic name) matches `filter` (with `+` and
/// `#` wildcards).
pub fn matches(filter: &str, topic: &str) -> bool {
    let mut levels = topic.split('/');
    for part in filter.split('/') {
        match (part, levels.next()) {
            ("#", _) => return true,
            ("+", Some(_)) => {}
            (part, Some(level)) if part == level => {}
            _ => return false,
        }
    }
    levels.next().is_none()
}

#[cfg(test)]
mod tests;
