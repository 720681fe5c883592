//! `[mqtt]`: the broker, credentials, topic prefixes and the bridge role.

use super::{DeTable, Range, Walker};
use std::path::PathBuf;
use std::time::Duration;

/// Whether a node with `[mqtt]` may publish the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BridgeRole {
    /// One node of those with `bridge = "auto"` publishes at a time.
    Auto,
    /// Never publishes the mesh (connects for its `mqtt` sensors only).
    Never,
}

/// `[mqtt]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttSection {
    /// Broker host name or address.
    pub host: String,
    /// Broker port (1883 unless the URL says otherwise).
    pub port: u16,
    /// User name.
    pub username: Option<String>,
    /// File holding the password (its first line).
    pub password_file: Option<PathBuf>,
    /// States go under `PREFIX/NODE/POINT`.
    pub topic_prefix: String,
    /// Home Assistant discovery prefix; empty: no discovery.
    pub discovery_prefix: String,
    /// The bridge role.
    pub bridge: BridgeRole,
    /// MQTT keepalive.
    pub keepalive: Duration,
}

/// Splits `mqtt://host[:port]` into host and port.
pub fn parse_broker(url: &str) -> Result<(String, u16), String> {
    if url.starts_with("mqtts://") || url.starts_with("ssl://") {
        return Err(
            "TLS brokers (mqtts://) are not supported: use mqtt:// on the LAN, or a local \
             Mosquitto bridging to the TLS broker (see the README)"
                .to_owned(),
        );
    }
    let rest = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
        .ok_or_else(|| format!("{url:?} must look like mqtt://HOST:PORT"))?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    super::sources::host_port(rest, 1883, url)
}

/// Whether `prefix` can start MQTT topic names: not empty, no wildcards,
/// no empty level, no NUL.
fn valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.len() <= 64
        && !prefix.starts_with('$')
        && prefix.split('/').all(|level| !level.is_empty())
        && !prefix
            .chars()
            .any(|c| matches!(c, '+' | '#' | '\0') || c.is_control())
}

impl Walker<'_> {
    pub(super) fn mqtt(&mut self, table: &DeTable<'_>, span: Range<usize>) -> Option<MqttSection> {
        let p = "mqtt.";
        self.known_keys(
            table,
            p,
            &[
                "broker",
                "username",
                "password_file",
                "topic_prefix",
                "discovery_prefix",
                "bridge",
                "keepalive",
            ],
        );
        let broker = self.required_string(table, p, "broker", span);
        let broker = broker.and_then(|(url, span)| match parse_broker(&url) {
            Ok(broker) => Some(broker),
            Err(message) => {
                self.problem(span, format!("mqtt.broker {message}"));
                None
            }
        });
        let username = self.string(table, p, "username").map(|(s, _)| s);
        let password_file = self
            .string(table, p, "password_file")
            .map(|(s, _)| PathBuf::from(s));
        let prefix = |walker: &mut Self, key: &str, default: &str, may_be_empty: bool| match walker
            .string(table, p, key)
        {
            None => Some(default.to_owned()),
            Some((text, _)) if text.is_empty() && may_be_empty => Some(text),
            Some((text, _)) if valid_prefix(&text) => Some(text),
            Some((text, span)) => {
                walker.problem(
                    span,
                    format!("{p}{key} {text:?} must be topic levels without + # $ or empty levels"),
                );
                None
            }
        };
        let topic_prefix = prefix(self, "topic_prefix", "shoal", false);
        let discovery_prefix = prefix(self, "discovery_prefix", "homeassistant", true);
        let bridge = match self.string(table, p, "bridge") {
            None => Some(BridgeRole::Auto),
            Some((text, _)) if text == "auto" => Some(BridgeRole::Auto),
            Some((text, _)) if text == "never" => Some(BridgeRole::Never),
            Some((text, span)) => {
                self.problem(
                    span,
                    format!("mqtt.bridge {text:?} must be \"auto\" or \"never\""),
                );
                None
            }
        };
        let keepalive = self
            .duration(table, p, "keepalive")
            .unwrap_or(Duration::from_secs(30));
        if !(Duration::from_secs(1)..=Duration::from_secs(65_535)).contains(&keepalive) {
            let span = self.span_of(table, "keepalive").unwrap_or(0..0);
            self.problem(span, "mqtt.keepalive must be 1s to 65535s".to_owned());
        }
        let (host, port) = broker?;
        Some(MqttSection {
            host,
            port,
            username,
            password_file,
            topic_prefix: topic_prefix?,
            discovery_prefix: discovery_prefix?,
            bridge: bridge?,
            keepalive,
        })
    }
}

/// The point names of a sensor's JSON fields: one field is published under
/// the sensor's name; several as `NAME.FIELD`, or as plain `FIELD` when the
/// sensor is named after one of them (as for multi-quantity drivers).
pub fn field_points(sensor: &str, fields: &[String]) -> Vec<String> {
    if fields.len() == 1 {
        return vec![sensor.to_owned()];
    }
    let plain = fields.iter().any(|f| f == sensor);
    fields
        .iter()
        .map(|field| {
            if plain {
                field.clone()
            } else {
                format!("{sensor}.{field}")
            }
        })
        .collect()
}

/// Point name prefixes the agent publishes under itself (MQTT exposure and
/// the bridge role): a sensor or derived point may not use them, or it
/// would offer a button, a switch or a bridge claim nobody configured.
pub(super) const RESERVED_PREFIXES: &[&str] = &["exec.", "switch.", "mqtt."];

/// A point name the bridge's topics use (`P/NODE/availability`).
pub const RESERVED_POINT: &str = "availability";

/// Whether a point name is the agent's own (a reserved prefix, or
/// [`RESERVED_POINT`]): no sensor, compute or API reading may take it.
pub fn is_reserved_point(name: &str) -> bool {
    name == RESERVED_POINT || RESERVED_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// A node name the bridge's topics use (`P/bridge/NODE`, `P/bridge`).
pub const RESERVED_NODE: &str = "bridge";

impl Walker<'_> {
    /// A point named with a reserved prefix is a problem.
    pub(super) fn reserved_point(&mut self, point: &str, span: Range<usize>) {
        if point == RESERVED_POINT {
            self.problem(
                span.clone(),
                format!("point {point:?}: the name is the agent's own (the MQTT topic NODE/{point} says whether the node is up)"),
            );
        }
        if let Some(prefix) = RESERVED_PREFIXES.iter().find(|p| point.starts_with(**p)) {
            self.problem(
                span,
                format!("point {point:?}: names starting with {prefix:?} are the agent's own (MQTT buttons, switches and the bridge role)"),
            );
        }
    }

    /// `json = "/pointer"` or `json = { field = "/pointer", ... }`, as
    /// (field, point name, pointer); the field is empty for one pointer.
    pub(super) fn json_fields(
        &mut self,
        table: &DeTable<'_>,
        sensor: &str,
    ) -> Vec<(String, String, String)> {
        use toml::de::DeValue;
        let Some(value) = table.get("json") else {
            return Vec::new();
        };
        let mut pointers: Vec<(String, String, Range<usize>)> = Vec::new();
        match value.get_ref() {
            DeValue::String(pointer) => {
                pointers.push((String::new(), pointer.to_string(), value.span()));
            }
            DeValue::Table(fields) => {
                for (field, pointer) in fields.iter() {
                    match pointer.get_ref() {
                        DeValue::String(text) => pointers.push((
                            field.get_ref().to_string(),
                            text.to_string(),
                            pointer.span(),
                        )),
                        _ => self.problem(
                            pointer.span(),
                            format!(
                                "sensor.json.{} must be a JSON pointer string",
                                field.get_ref()
                            ),
                        ),
                    }
                }
            }
            _ => {
                self.problem(
                    value.span(),
                    "sensor.json must be a JSON pointer like \"/temperature\" or a table of them"
                        .to_owned(),
                );
                return Vec::new();
            }
        }
        let fields: Vec<String> = pointers.iter().map(|(f, _, _)| f.clone()).collect();
        let names = field_points(sensor, &fields);
        let mut out = Vec::new();
        for ((field, pointer, span), name) in pointers.into_iter().zip(names) {
            if !(pointer.is_empty() || pointer.starts_with('/')) {
                self.problem(
                    span,
                    format!("sensor.json {pointer:?} must be empty or start with /"),
                );
            } else if !super::is_valid_name(&name) {
                self.problem(
                    span,
                    format!("sensor.json makes point {name:?}: 1 to 32 of A-Z a-z 0-9 _ - ."),
                );
            } else {
                out.push((field, name, pointer));
            }
        }
        out
    }

    /// An `mqtt` sensor's `topic`: present, and a topic name (no wildcards).
    pub(super) fn check_topic(
        &mut self,
        table: &DeTable<'_>,
        settings: &std::collections::BTreeMap<String, super::Setting>,
        span: Range<usize>,
    ) {
        match settings.get("topic") {
            Some(super::Setting::Text(topic))
                if !topic.is_empty()
                    && topic.len() <= 256
                    && !topic.chars().any(|c| matches!(c, '+' | '#' | '\0')) => {}
            Some(_) => {
                let span = self.span_of(table, "topic").unwrap_or(span);
                self.problem(
                    span,
                    "sensor.topic must be one MQTT topic (no + or # wildcards)".to_owned(),
                );
            }
            None => self.problem(span, "an mqtt sensor needs `topic`".to_owned()),
        }
    }
}
