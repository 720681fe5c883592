//! Sensors whose messages are pushed: `mqtt` (a topic; Zigbee2MQTT,
//! Tasmota, any publisher) and `websocket` (a feed). A message becomes
//! points of this node, which travel the mesh like any reading. The
//! connection that brings the messages lives elsewhere (`mqtt/client.rs`,
//! `feeds.rs`); this is what every such sensor shares.
//!
//! Messages become values as for every message sensor (`messages.rs`). A
//! message that is not what the sensor expects (not UTF-8, not JSON, a
//! pointer that is missing or not a value) turns the points into errors,
//! counted and logged once until a good message comes, as a failing sensor
//! read does; so does a lost connection ([`Sources::on_failure`]).
//! Deadband applies as for any sensor.
//!
//! `interval` (1 s unless set) is the least time between two readings of a
//! point: a change is sent at once, changes within the interval after it
//! are held and only the latest is sent when the interval ends. A
//! publisher sending 100 changes a second costs the mesh one reading a
//! second, and a door that opens is still seen at once.

use crate::shell::messages::{self, within_deadband, Mapping};
use shoal_config::{SensorSection, Setting};
use shoal_core::time::Instant;
use shoal_core::wire::{self, Value};
use shoal_core::Reading;
use std::collections::BTreeMap;
use std::time::Duration;

/// One pushed sensor.
#[derive(Debug)]
struct Source {
    section: SensorSection,
    /// What its messages come by: an MQTT topic, a websocket sensor's name.
    key: String,
    mapping: Mapping,
    /// The last value published per point, and when (for the deadband).
    last: BTreeMap<String, (Value, Instant)>,
    /// Changes within `interval` of the last reading: the latest per
    /// point, with its message's time, sent when the interval ends.
    held: BTreeMap<String, (Value, u64)>,
    /// An unchanged value is published again after this long.
    max_interval: Duration,
    /// A bad message was logged; quiet until a good one.
    warned: bool,
}

/// This node's pushed sensors of one driver.
#[derive(Debug, Default)]
pub struct Sources {
    sources: Vec<Source>,
    /// Messages that were not what their sensor expects.
    pub errors: u64,
}

impl Sources {
    /// The sensors of `driver` (`mqtt`: keyed by topic; `websocket`: by
    /// sensor name) among `sections`.
    pub fn new(sections: &[SensorSection], driver: &str) -> Sources {
        let sources = sections
            .iter()
            .filter(|s| s.driver == driver)
            .filter_map(|section| {
                let key = match section.settings.get("topic") {
                    Some(Setting::Text(topic)) if driver == "mqtt" => topic.clone(),
                    _ if driver == "mqtt" => return None,
                    _ => section.name.clone(),
                };
                let max_interval = match section.settings.get("max_interval") {
                    Some(Setting::Duration(d)) => *d,
                    _ => Duration::from_secs(60).max(section.interval),
                };
                Some(Source {
                    max_interval,
                    key,
                    section: section.clone(),
                    mapping: Mapping::new(section),
                    last: BTreeMap::new(),
                    held: BTreeMap::new(),
                    warned: false,
                })
            })
            .collect();
        Sources { sources, errors: 0 }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// The keys: for `mqtt`, the topics to subscribe to.
    pub fn topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self.sources.iter().map(|s| s.key.clone()).collect();
        shoal_config::order::sort(&mut topics);
        topics.dedup();
        topics
    }

    /// The readings a message on `topic` (a key) gives at `now` (empty when
    /// no sensor has that key, or nothing changed beyond the deadband since
    /// the last reading, sent less than `max_interval` ago: a flood of
    /// repeats costs the mesh nothing).
    /// A retained message counts only while the sensor has no value yet:
    /// the broker sends it again at every reconnect, and it may be old.
    pub fn on_message(
        &mut self,
        now: Instant,
        topic: &str,
        payload: &[u8],
        retained: bool,
        ts_ms: u64,
    ) -> Vec<Reading> {
        let mut readings = Vec::new();
        let wanted = |s: &&mut Source| s.key == topic && (s.last.is_empty() || !retained);
        for source in self.sources.iter_mut().filter(wanted) {
            let values = source
                .mapping
                .values(payload)
                .unwrap_or_else(|why| source.all(&why));
            readings.extend(source.offer(now, values, ts_ms, &mut self.errors));
        }
        readings
    }

    /// The readings of a lost connection for the sensors of `key`: every
    /// point an error saying `why` (counted and logged once, as a bad
    /// message is).
    pub fn on_failure(&mut self, now: Instant, key: &str, why: &str, ts_ms: u64) -> Vec<Reading> {
        let mut readings = Vec::new();
        for source in self.sources.iter_mut().filter(|s| s.key == key) {
            let values = source.all(why);
            readings.extend(source.offer(now, values, ts_ms, &mut self.errors));
        }
        readings
    }

    /// When the next held change is due, if any.
    pub fn next_due(&self) -> Option<Instant> {
        self.sources
            .iter()
            .flat_map(|source| {
                source.held.keys().filter_map(|point| {
                    let (_, at) = source.last.get(point)?;
                    Some(*at + source.section.interval)
                })
            })
            .min()
    }

    /// The held changes whose interval has ended at `now`.
    pub fn due(&mut self, now: Instant) -> Vec<Reading> {
        let mut readings = Vec::new();
        for source in &mut self.sources {
            let interval = source.section.interval;
            let ended: Vec<String> = source
                .held
                .keys()
                .filter(|point| {
                    source
                        .last
                        .get(*point)
                        .is_none_or(|(_, at)| now.saturating_since(*at) >= interval)
                })
                .cloned()
                .collect();
            for point in ended {
                if let Some((value, ts_ms)) = source.held.remove(&point) {
                    readings.extend(source.send(now, point, value, ts_ms));
                }
            }
        }
        readings
    }
}

impl Source {
    /// Every point of the sensor as an error saying `why`.
    fn all(&self, why: &str) -> Vec<(String, Value)> {
        let error = messages::error(why);
        self.mapping
            .points()
            .map(|point| (point.to_owned(), error.clone()))
            .collect()
    }

    /// The readings `values` give: errors counted into `errors` (and
    /// logged once until a good message), then deadband, `max_interval`
    /// and the holding of changes within `interval`.
    fn offer(
        &mut self,
        now: Instant,
        values: Vec<(String, Value)>,
        ts_ms: u64,
        errors: &mut u64,
    ) -> Vec<Reading> {
        let bad = values.iter().find_map(|(_, value)| match value {
            Value::Error(why) => Some(why.to_string()),
            _ => None,
        });
        match bad {
            Some(why) => {
                *errors += 1;
                if !std::mem::replace(&mut self.warned, true) {
                    log::warn!(
                        "sensor {} ({} {}): {why}; until a good message its points are in error",
                        self.section.name,
                        self.section.driver,
                        self.key
                    );
                }
            }
            None => self.warned = false,
        }
        let mut readings = Vec::new();
        for (point, value) in values {
            let since = self
                .last
                .get(&point)
                .map(|(_, at)| now.saturating_since(*at));
            let last = self.last.get(&point).map(|(value, _)| value);
            if since.is_some_and(|since| since < self.max_interval)
                && within_deadband(last, &value, self.section.deadband)
            {
                // Back where it was sent: a held change is void.
                self.held.remove(&point);
                continue;
            }
            if since.is_some_and(|since| since < self.section.interval) {
                self.held.insert(point, (value, ts_ms));
                continue;
            }
            readings.extend(self.send(now, point, value, ts_ms));
        }
        readings
    }

    /// A reading of `point`, remembered as the last one sent.
    fn send(&mut self, now: Instant, point: String, value: Value, ts_ms: u64) -> Option<Reading> {
        let name = wire::name(&point)?;
        let unit = self.mapping.unit(&point);
        self.held.remove(&point);
        self.last.insert(point, (value.clone(), now));
        Some(Reading {
            unit,
            name,
            value,
            ts_ms,
        })
    }
}

#[cfg(test)]
mod tests;
