//! How a message becomes point values, for every sensor whose values come
//! as messages: `mqtt`, `http`, `command` and `websocket`.
//!
//! With `json`, each JSON pointer gives one point; without, the message
//! itself (trimmed) is the value. A number is a number; `true`/`false`
//! (and `ON`/`OFF` as plain text) a boolean; other text is a text point,
//! unless the point has a unit: then it takes numbers only (a numeric
//! string like `"21.5"` counts), and text is an error. NaN, infinities and
//! numbers beyond `f64` are errors, never values.
//!
//! A message that cannot be read at all (not UTF-8, not JSON) is an
//! `Err` for the whole sensor; a pointer that is missing or not a value is
//! an error on its point only.

use shoal_config::SensorSection;
use shoal_core::wire::{self, Unit, Value, MAX_TEXT};
use std::collections::BTreeMap;

/// One sensor's mapping from messages to points.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapping {
    /// Point names, each with its JSON pointer (`None`: the whole message).
    points: Vec<(String, Option<String>)>,
    units: BTreeMap<String, Unit>,
}

impl Mapping {
    /// The mapping of a `[[sensor]]` section.
    pub fn new(section: &SensorSection) -> Mapping {
        let points = if section.json.is_empty() {
            vec![(section.name.clone(), None)]
        } else {
            section
                .json
                .iter()
                .map(|(point, pointer)| (point.clone(), Some(pointer.clone())))
                .collect()
        };
        let units = shoal_config::order::map(
            section
                .units
                .iter()
                .filter_map(|(point, unit)| Some((point.clone(), wire::unit(unit)?))),
        );
        Mapping { points, units }
    }

    /// The point names.
    pub fn points(&self) -> impl Iterator<Item = &str> {
        self.points.iter().map(|(point, _)| point.as_str())
    }

    /// A point's unit (empty without one).
    pub fn unit(&self, point: &str) -> Unit {
        self.units.get(point).cloned().unwrap_or_default()
    }

    /// The value of each point in `message`, or why the message cannot be
    /// read at all.
    pub fn values(&self, message: &[u8]) -> Result<Vec<(String, Value)>, String> {
        let body =
            std::str::from_utf8(message).map_err(|_| "the message is not UTF-8".to_owned())?;
        let numeric = |point: &str| self.units.contains_key(point);
        let document = if self.points.iter().any(|(_, pointer)| pointer.is_some()) {
            Some(
                serde_json::from_str::<serde_json::Value>(body)
                    .map_err(|_| format!("the message is not JSON ({})", start_of(body)))?,
            )
        } else {
            None
        };
        Ok(self
            .points
            .iter()
            .map(|(point, pointer)| {
                let value = match (pointer, &document) {
                    (Some(pointer), Some(document)) => {
                        json_value(document.pointer(pointer), pointer, numeric(point))
                    }
                    _ => plain(body.trim(), numeric(point)),
                };
                (point.clone(), value)
            })
            .collect())
    }
}

/// The first characters of a message, for an error that says what came.
fn start_of(body: &str) -> String {
    let start: String = body.trim_start().chars().take(16).collect();
    let start: String = start
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if start.is_empty() {
        "it is empty".to_owned()
    } else {
        format!("it starts {start:?}")
    }
}

fn json_value(found: Option<&serde_json::Value>, pointer: &str, numeric: bool) -> Value {
    match found {
        None | Some(serde_json::Value::Null) => error(&format!("no {pointer}")),
        Some(serde_json::Value::Bool(b)) => Value::Bool(*b),
        Some(serde_json::Value::Number(n)) => number(n.as_f64()),
        Some(serde_json::Value::String(s)) => plain(s.trim(), numeric),
        Some(_) => error(&format!("{pointer} is not a value")),
    }
}

fn number(value: Option<f64>) -> Value {
    match value {
        Some(v) if v.is_finite() => Value::Float(v),
        _ => error("not a finite number"),
    }
}

/// A text that is the value itself.
pub fn plain(body: &str, numeric: bool) -> Value {
    if let Ok(value) = body.parse::<f64>() {
        return number(Some(value));
    }
    match body {
        "true" | "ON" | "on" => Value::Bool(true),
        "false" | "OFF" | "off" => Value::Bool(false),
        _ if numeric => error("text where a number was expected"),
        _ => text(body),
    }
}

/// An error value, cut to what a point can hold.
pub fn error(why: &str) -> Value {
    let mut text = heapless::String::<MAX_TEXT>::new();
    for c in why.chars() {
        if text.push(if c.is_control() { ' ' } else { c }).is_err() {
            break;
        }
    }
    Value::Error(text)
}

/// A text value, or an error when it is too long or not printable.
fn text(value: &str) -> Value {
    match heapless::String::<MAX_TEXT>::try_from(value) {
        Ok(text) if !value.chars().any(char::is_control) => Value::Text(text),
        _ => error("text too long or not printable"),
    }
}

/// Whether `new` is no news after `last`: a number within the deadband
/// (a change must exceed it), anything else equal.
pub fn within_deadband(last: Option<&Value>, new: &Value, deadband: f64) -> bool {
    match (last, new) {
        (Some(Value::Float(old)), Value::Float(new)) => (old - new).abs() <= deadband,
        (Some(old), new) => old == new,
        (None, _) => false,
    }
}

#[cfg(test)]
mod tests;
