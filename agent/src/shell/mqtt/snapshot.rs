//! What a new bridge reads from the broker before it trusts its own view:
//! the retained messages earlier bridges left. A node pruned while another
//! node was the bridge, or a point that went away then, left retained
//! states and discovery configs nobody would clear; the new bridge
//! subscribes to its own topics for [`READ_FOR`], remembers every retained
//! topic it finds as "published", unsubscribes, and its next full pass
//! clears what the mesh no longer has (and leaves alone what is already
//! right).
//!
//! The filters never overlap the command subscriptions (`P/+/exec/+/run`,
//! `P/+/+/set`): a broker that delivers one message once per matching
//! filter would otherwise run a command twice.

use super::discovery::Topics;
use super::packet;
use shoal_core::time::Instant;
use std::time::Duration;

/// How long the retained messages are read after subscribing.
pub const READ_FOR: Duration = Duration::from_secs(3);
/// Retained topics taken over from one snapshot at most (a broker full of
/// junk under our prefix costs bounded memory; the rest stays).
pub const MAX_ADOPTED: usize = 8192;

/// Where the snapshot of this bridge stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// To read when this node is the bridge and connected.
    Due,
    /// Subscribed; reading until `until`.
    Reading {
        /// When to unsubscribe.
        until: Instant,
        /// Topics taken over so far.
        adopted: usize,
    },
    /// Read for this connection and this term as the bridge.
    Done,
}

/// The filters that cover every retained topic a bridge publishes.
pub fn filters(topics: &Topics) -> Vec<String> {
    let prefix = &topics.prefix;
    let mut filters = vec![
        format!("{prefix}/+"),
        format!("{prefix}/+/+"),
        format!("{prefix}/+/+/attributes"),
    ];
    if !topics.discovery.is_empty() {
        filters.push(format!("{}/+/+/+/config", topics.discovery));
    }
    filters
}

/// Whether a message arrived through one of the snapshot's filters (then
/// it is never a command or a source's message to act on).
pub fn covers(topics: &Topics, topic: &str) -> bool {
    filters(topics)
        .iter()
        .any(|filter| packet::matches(filter, topic))
}

/// Whether a retained message found by the snapshot is the bridge's to
/// clear once nothing in the mesh wants it. Not: a known node's role topic
/// (its owner keeps it; a pruned node's `offline` goes), or another
/// integration's discovery config, or another shoal mesh's (one with a
/// different topic prefix sharing the discovery prefix).
pub fn clearable(
    topics: &Topics,
    topic: &str,
    payload: &[u8],
    known_node: impl Fn(&str) -> bool,
) -> bool {
    let prefix = &topics.prefix;
    if let Some(rest) = topic.strip_prefix(prefix.as_str()) {
        return match rest.strip_prefix("/bridge/") {
            Some(node) => payload == b"offline" && !known_node(node),
            None => rest.starts_with('/'),
        };
    }
    let Some(rest) = topic
        .strip_prefix(topics.discovery.as_str())
        .and_then(|rest| rest.strip_prefix('/'))
        .filter(|_| !topics.discovery.is_empty())
    else {
        return false;
    };
    let device = rest.split('/').nth(1).unwrap_or("");
    if !device.starts_with("shoal_") {
        return false;
    }
    let Ok(config) = serde_json::from_slice::<serde_json::Value>(payload) else {
        return false;
    };
    let bridge_topic = format!("{prefix}/bridge/");
    config["availability"][0]["topic"]
        .as_str()
        .is_some_and(|topic| topic.starts_with(&bridge_topic))
}

#[cfg(test)]
mod tests;
