//! Time as the core sees it: milliseconds since the agent started; and
//! token buckets, the rate limits built on it.
//!
//! The core never reads a clock. The shell converts `std::time::Instant` into
//! this type once per input (see `shell`), and the simulator jumps it freely.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::{Add, Sub};
use std::time::Duration;

/// A point in time, in whole milliseconds since the agent started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    /// The moment the agent started.
    pub const ZERO: Instant = Instant(0);

    /// The instant `ms` milliseconds after start.
    pub const fn from_millis(ms: u64) -> Instant {
        Instant(ms)
    }

    /// Milliseconds since start.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Instant) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, rhs: Duration) -> Instant {
        Instant(self.0.saturating_add(duration_ms(rhs)))
    }
}

impl Sub<Duration> for Instant {
    type Output = Instant;
    fn sub(self, rhs: Duration) -> Instant {
        Instant(self.0.saturating_sub(duration_ms(rhs)))
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}s", self.0 / 1000, self.0 % 1000)
    }
}

/// A duration in whole milliseconds, saturating at `u64::MAX`.
pub(crate) fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_instead_of_panicking() {
        let t = Instant::from_millis(1500);
        assert_eq!(t + Duration::from_millis(500), Instant::from_millis(2000));
        assert_eq!(t - Duration::from_secs(5), Instant::ZERO);
        assert_eq!(
            Instant::from_millis(u64::MAX) + Duration::from_secs(1),
            Instant::from_millis(u64::MAX)
        );
        assert_eq!(
            t.saturating_since(Instant::from_millis(2000)),
            Duration::ZERO
        );
        assert_eq!(t.to_string(), "1.500s");
    }
}

/// Token buckets per key (an asker, a source address), at most `max` keys:
/// `burst` at once, then one per `every`.
#[derive(Debug, Clone)]
pub struct Buckets<K> {
    buckets: BTreeMap<K, (u32, Instant)>,
    burst: u32,
    every: Duration,
    max: usize,
}

impl<K: Ord + Copy> Buckets<K> {
    /// Buckets of `burst` tokens refilled one per `every`, for `max` keys.
    pub fn new(burst: u32, every: Duration, max: usize) -> Buckets<K> {
        Buckets {
            buckets: BTreeMap::new(),
            burst,
            every,
            max,
        }
    }

    /// Takes a token of `key`'s bucket at `now`; false when it is empty.
    /// When `max` keys are tracked, a bucket that is full again makes room
    /// (forgetting it changes nothing); with none, a new key is refused, so
    /// a flood of new keys never resets a drained bucket.
    pub fn allow(&mut self, now: Instant, key: K) -> bool {
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.max {
            let every_ms = u64::try_from(self.every.as_millis())
                .unwrap_or(u64::MAX)
                .max(1);
            let burst = u64::from(self.burst);
            let full = self
                .buckets
                .iter()
                .find(|(_, (tokens, refilled))| {
                    let earned = now.saturating_since(*refilled).as_millis() as u64 / every_ms;
                    u64::from(*tokens) + earned >= burst
                })
                .map(|(key, _)| *key);
            match full {
                Some(full) => {
                    self.buckets.remove(&full);
                }
                None => return false,
            }
        }
        let (tokens, refilled) = self.buckets.entry(key).or_insert((self.burst, now));
        let every_ms = u64::try_from(self.every.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let earned = now.saturating_since(*refilled).as_millis() as u64 / every_ms;
        if earned > 0 {
            let earned = u32::try_from(earned).unwrap_or(u32::MAX);
            *tokens = tokens.saturating_add(earned).min(self.burst);
            *refilled = *refilled + self.every.saturating_mul(earned);
        }
        if *tokens == 0 {
            return false;
        }
        *tokens -= 1;
        true
    }

    /// Forgets `key`'s bucket.
    pub fn remove(&mut self, key: &K) {
        self.buckets.remove(key);
    }

    /// Keys tracked.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}
