//! systemd's notify protocol, without a library: `READY=1` once the agent
//! serves, `WATCHDOG=1` from the main loop, `STOPPING=1` on the way out.
//!
//! The messages are datagrams to the socket named by `$NOTIFY_SOCKET` (a
//! path, or `@name` for the abstract namespace). The watchdog interval comes
//! from `$WATCHDOG_USEC`; pings go out at half of it, and only from the
//! agent's loop, so a wedged loop stops them and systemd restarts the
//! service. Without `$NOTIFY_SOCKET` (run by hand) every call is a no-op.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

/// The connection to systemd, if the agent runs under it.
#[derive(Debug)]
pub struct Notifier {
    socket: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
    /// Ping at least this often (half of `WATCHDOG_USEC`).
    pub watchdog: Option<Duration>,
    last_ping: Option<Instant>,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET` and `$WATCHDOG_USEC`.
    pub fn from_env() -> Notifier {
        let socket = std::env::var_os("NOTIFY_SOCKET").and_then(|path| {
            let path = path.to_string_lossy().into_owned();
            let addr = if let Some(name) = path.strip_prefix('@') {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).ok()?
            } else {
                std::os::unix::net::SocketAddr::from_pathname(&path).ok()?
            };
            let socket = UnixDatagram::unbound().ok()?;
            Some((socket, addr))
        });
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|usec| usec.parse::<u64>().ok())
            .filter(|usec| *usec > 0)
            .map(|usec| Duration::from_micros(usec) / 2);
        if socket.is_some() {
            log::debug!("systemd notify socket found; watchdog every {watchdog:?}");
        }
        Notifier {
            socket,
            watchdog,
            last_ping: None,
        }
    }

    fn send(&self, message: &str) {
        if let Some((socket, addr)) = &self.socket {
            if let Err(error) = socket.send_to_addr(message.as_bytes(), addr) {
                log::warn!("systemd notify {message:?} failed: {error}");
            }
        }
    }

    /// The agent serves: sockets bound, state loaded.
    pub fn ready(&mut self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"));
        self.last_ping = Some(Instant::now());
    }

    /// Called from the main loop at every turn: pings when due.
    pub fn tick(&mut self) {
        let Some(every) = self.watchdog else {
            return;
        };
        if self.last_ping.is_none_or(|at| at.elapsed() >= every) {
            self.send("WATCHDOG=1");
            self.last_ping = Some(Instant::now());
        }
    }

    /// When the loop must wake up at the latest to ping in time.
    pub fn next_ping(&self) -> Option<Duration> {
        let every = self.watchdog?;
        Some(
            self.last_ping
                .map_or(Duration::ZERO, |at| every.saturating_sub(at.elapsed())),
        )
    }

    /// The agent is shutting down.
    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }
}
