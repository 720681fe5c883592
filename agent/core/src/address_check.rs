//! Address checks: a node is never an amplifier for a spoofed source.
//!
//! A UDP source address proves nothing: an attacker can send a small frame
//! (a captured digest, or in an open mesh any digest) with the address of
//! a victim, and a node's answer (every point it holds) would go to the
//! victim. So while a source address has not shown that it receives what
//! we send it, everything we send to it while handling one of its frames
//! is limited to [`AMPLIFICATION`] times that frame's size; what does not
//! fit is not sent, and a [`Cookie`] challenge (a keyed hash of the address
//! and the minute, so nothing is stored per unchecked address) goes
//! instead. A real node echoes it at once; the echo marks the address
//! checked for [`CHECKED_FOR`], and its next pull gets the full answer.
//! Checked addresses are at most `limit`, the oldest forgotten first.
//!
//! ```text
//! B --Digest (42 B)-----------------> A   B's address not checked
//! B <-Cookie {value} (≤ 3 × 42 B)---- A   instead of 18 KB of deltas
//! B --Cookie {value, echo}----------> A   A: B's address is checked
//! B --Digest------------------------> A   (next pull)
//! B <-Delta, Delta, ...-------------- A
//! ```

use super::time::{Buckets, Instant};
use super::wire::Cookie;
use sha2::{Digest as _, Sha512};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// What a node sends to an unchecked address, at most, for each byte it got.
pub const AMPLIFICATION: usize = 3;
/// How long an echoed challenge keeps an address checked.
pub const CHECKED_FOR: Duration = Duration::from_secs(3600);
/// A challenge is valid in its minute and the next.
const EPOCH_MS: u64 = 60_000;
/// New neighbors challenged at once, before their first pull: as many as
/// a LAN's start brings in a moment...
pub const NEWCOMER_BURST: u32 = 64;
/// ...then one every this long (16 a second). Beyond that a newcomer is
/// challenged at its first pull instead (the answer cut, see the module
/// docs): a flood of made-up ids, each from a port of its own, costs no
/// hash and no datagram per frame.
pub const NEWCOMER_REFILL: Duration = Duration::from_millis(62);

/// The budget for answering one frame from an unchecked address.
#[derive(Debug)]
struct Budget {
    addr: SocketAddr,
    left: usize,
    cut: bool,
    challenged: bool,
}

/// Checked addresses and the budget of the frame being handled.
#[derive(Debug)]
pub(crate) struct AddressCheck {
    secret: [u8; 32],
    checked: BTreeMap<SocketAddr, Instant>,
    limit: usize,
    answering: Option<Budget>,
    newcomers: Buckets<()>,
}

impl AddressCheck {
    /// Checks keyed with `secret` (random per run), at most `limit` addresses.
    pub(crate) fn new(secret: [u8; 32], limit: usize) -> AddressCheck {
        AddressCheck {
            secret,
            checked: BTreeMap::new(),
            limit: limit.max(1),
            answering: None,
            newcomers: Buckets::new(NEWCOMER_BURST, NEWCOMER_REFILL, 1),
        }
    }

    fn cookie(&self, addr: SocketAddr, epoch: u64) -> u64 {
        let mut hash = Sha512::new();
        hash.update(b"shoal address check");
        hash.update(self.secret);
        match addr {
            SocketAddr::V4(v4) => hash.update(v4.ip().octets()),
            SocketAddr::V6(v6) => hash.update(v6.ip().octets()),
        }
        hash.update(addr.port().to_le_bytes());
        hash.update(epoch.to_le_bytes());
        let digest = hash.finalize();
        let mut value = [0u8; 8];
        value.copy_from_slice(&digest[..8]);
        u64::from_le_bytes(value)
    }

    /// Whether `addr` echoed a challenge within [`CHECKED_FOR`].
    pub(crate) fn is_checked(&self, addr: SocketAddr, now: Instant) -> bool {
        self.checked
            .get(&addr)
            .is_some_and(|&at| now.saturating_since(at) < CHECKED_FOR)
    }

    /// A frame of `len` bytes from `from` is being handled.
    pub(crate) fn begin(&mut self, now: Instant, from: SocketAddr, len: usize) {
        self.answering = (!self.is_checked(from, now)).then_some(Budget {
            addr: from,
            left: AMPLIFICATION * len,
            cut: false,
            challenged: false,
        });
    }

    /// Whether `len` more bytes may go to `to` now; counts them.
    pub(crate) fn allow(&mut self, to: SocketAddr, len: usize) -> bool {
        match &mut self.answering {
            Some(budget) if budget.addr == to => {
                if len > budget.left {
                    budget.cut = true;
                    false
                } else {
                    budget.left -= len;
                    true
                }
            }
            _ => true,
        }
    }

    /// A challenge for `addr` (a new neighbor is challenged at once, so
    /// its first pull is answered in full).
    pub(crate) fn challenge(&mut self, now: Instant, addr: SocketAddr) -> Cookie {
        if let Some(budget) = self.answering.as_mut().filter(|b| b.addr == addr) {
            budget.challenged = true;
        }
        Cookie {
            value: self.cookie(addr, now.as_millis() / EPOCH_MS),
            echo: false,
        }
    }

    /// A challenge for a new neighbor at `addr`, sent at once so that its
    /// first pull is answered in full; `None` beyond [`NEWCOMER_BURST`] at
    /// once and one per [`NEWCOMER_REFILL`] after.
    pub(crate) fn challenge_newcomer(&mut self, now: Instant, addr: SocketAddr) -> Option<Cookie> {
        self.newcomers
            .allow(now, ())
            .then(|| self.challenge(now, addr))
    }

    /// The frame is handled: the challenge to send, if an answer was cut
    /// and none went yet.
    pub(crate) fn end(&mut self, now: Instant) -> Option<(SocketAddr, Cookie)> {
        let budget = self.answering.take()?;
        (budget.cut && !budget.challenged).then(|| {
            let value = self.cookie(budget.addr, now.as_millis() / EPOCH_MS);
            (budget.addr, Cookie { value, echo: false })
        })
    }

    /// An echo from `from`: true if it is ours, and `from` is checked now.
    pub(crate) fn on_echo(&mut self, now: Instant, from: SocketAddr, value: u64) -> bool {
        let epoch = now.as_millis() / EPOCH_MS;
        let ours = value == self.cookie(from, epoch)
            || (epoch > 0 && value == self.cookie(from, epoch - 1));
        if !ours {
            return false;
        }
        self.checked
            .retain(|_, at| now.saturating_since(*at) < CHECKED_FOR);
        if self.checked.len() >= self.limit && !self.checked.contains_key(&from) {
            let oldest = self.checked.iter().min_by_key(|(_, at)| **at);
            if let Some(&oldest) = oldest.map(|(addr, _)| addr) {
                self.checked.remove(&oldest);
            }
        }
        self.checked.insert(from, now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, last], 20196))
    }

    #[test]
    fn an_unchecked_source_gets_three_times_its_bytes_then_a_challenge() {
        let mut check = AddressCheck::new([7; 32], 4);
        let now = Instant::from_millis(5_000);
        check.begin(now, addr(1), 42);
        assert!(check.allow(addr(1), 100));
        assert!(!check.allow(addr(1), 900), "over 3 × 42");
        assert!(check.allow(addr(1), 26), "what is left still goes");
        assert!(check.allow(addr(2), 5_000), "others are not limited");
        let (to, cookie) = check.end(now).expect("a challenge");
        assert_eq!((to, cookie.echo), (addr(1), false));
        // A forged echo does nothing; the real one checks the address,
        // in its minute and the next, and only for that address.
        assert!(!check.on_echo(now, addr(1), cookie.value ^ 1));
        assert!(!check.on_echo(now, addr(2), cookie.value));
        let later = now + Duration::from_secs(70);
        assert!(check.on_echo(later, addr(1), cookie.value));
        assert!(check.is_checked(addr(1), later));
        check.begin(later, addr(1), 42);
        assert!(check.allow(addr(1), 100_000));
        assert!(check.end(later).is_none());
        // Two minutes on, the challenge is stale.
        let stale = now + Duration::from_secs(130);
        assert!(!check.on_echo(stale, addr(3), check.cookie(addr(3), 0)));
        // Checks expire.
        assert!(!check.is_checked(addr(1), later + CHECKED_FOR));
    }

    #[test]
    fn newcomers_are_challenged_in_a_burst_then_sixteen_a_second() {
        let mut check = AddressCheck::new([7; 32], 4);
        let now = Instant::from_millis(5_000);
        let port = |p: u16| SocketAddr::from(([10, 0, 0, 9], p));
        let challenged = (0..200)
            .filter(|&p| check.challenge_newcomer(now, port(30_000 + p)).is_some())
            .count();
        assert_eq!(challenged, NEWCOMER_BURST as usize);
        let later = now + NEWCOMER_REFILL;
        assert!(check.challenge_newcomer(later, port(1)).is_some());
        assert!(check.challenge_newcomer(later, port(2)).is_none());
        // Quiet for a few seconds, the whole burst is back.
        let quiet = later + Duration::from_secs(5);
        let challenged = (0..200)
            .filter(|&p| check.challenge_newcomer(quiet, port(40_000 + p)).is_some())
            .count();
        assert_eq!(challenged, NEWCOMER_BURST as usize);
    }

    #[test]
    fn checked_addresses_are_bounded() {
        let mut check = AddressCheck::new([7; 32], 4);
        for last in 1..=20 {
            let now = Instant::from_millis(u64::from(last) * 1000);
            let value = check.cookie(addr(last), now.as_millis() / EPOCH_MS);
            assert!(check.on_echo(now, addr(last), value));
            assert!(check.checked.len() <= 4);
        }
        assert!(check.is_checked(addr(20), Instant::from_millis(20_000)));
        assert!(!check.is_checked(addr(1), Instant::from_millis(20_000)));
    }
}
