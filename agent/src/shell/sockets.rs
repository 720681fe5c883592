//! The mesh's three UDP sockets, and where broadcasts go.
//!
//! Broadcasts are of two kinds ([`shoal_core::Transmit::routine`]): a
//! routine beacon, which asks nothing of its receivers (it says that its
//! sender lives and what its store holds), goes to `port`; news (values,
//! goodbyes, a newcomer's or a suspicious node's beacons) goes to
//! `news_port`. The
//! beacon socket and the news socket listen on `0.0.0.0` with SO_REUSEADDR
//! and SO_REUSEPORT, so several agents on one host all receive each
//! broadcast. The sync socket is bound to `bind:sync_port` and sends
//! everything, so a datagram's source address is always its sender's
//! unicast address.
//!
//! In a busy LAN the beacon socket rests after it is found empty: routine
//! beacons are read in batches, a few wake-ups a second instead of one per
//! beacon, and a peer's silence is judged only after what waits is read
//! (`Agent::hear_before_deadline`). The news and sync sockets never rest:
//! a value or a command is handled as soon as it arrives.
//!
//! All three are non-blocking std sockets waited on by the agent's own
//! loop (`mainloop.rs`), not by async-io: a datagram is read on the thread
//! that handles it, and every ready one is read before the loop waits
//! again.

use super::agent::{Input, RunError};
use super::mainloop::{self, Watch};
use shoal_config::{Broadcast, MeshSection};
use shoal_core::{Arrival, Destination, Node, Transmit};
use socket2::{Domain, Protocol, Socket, Type};
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::task::Poll;

/// Room for one datagram: above the largest frame, so an oversized one is
/// seen whole and refused by the core, not cut.
const RECEIVE_BUFFER: usize = 2048;

/// The kernel receive buffer asked for each socket. The default (about
/// 208 KiB, some 200 beacons) overflowed when 250 agents started at once:
/// each newcomer makes every node beacon early, and an agent still starting
/// or waiting for the CPU lost 10% of them (100,861 drops over 250 sockets
/// in the first seconds). The kernel caps the request at
/// `net.core.rmem_max` and doubles it (416 KiB on a default Pi OS); it is
/// a limit, not memory taken while the agent keeps up.
const SOCKET_RECEIVE_BUFFER: usize = 1 << 20;

/// In a busy LAN, after the beacon socket is found empty, it is not waited
/// on for this share of the beacon interval (a third: 333 ms at the
/// default 1 s): its routine beacons are then read in batches, one wake-up
/// for a third of the LAN, instead of one wake-up each. A wake-up for any
/// other reason reads them too. Only liveness waits: a peer's last beacon
/// is counted at most this much late, so a dead peer is declared at most
/// this much later. News (on the news socket) and the sync socket
/// (unicast deltas, commands, answers) are never held.
const BEACON_BATCH_DIVISOR: u32 = 3;

/// Busy: at least this many broadcasts in the last beacon interval (a LAN
/// of about this many nodes). A smaller LAN wakes once per broadcast, as
/// its few wake-ups cost little and its latency stays that of the network.
const BATCH_MIN_RATE: u32 = 16;

/// More broadcasts than this in the last beacon interval (a LAN of more
/// nodes, or a flood on the beacon port) and the rest is a tenth of the
/// interval instead of a third: a third of a second of the bench's flood
/// (3,400 frames a second) is about 1,100 frames, more than a receive
/// buffer holds, and real beacons would be dropped with them.
const BATCH_MAX_RATE: u32 = 400;

/// The rest in a LAN above `BATCH_MAX_RATE`: a share of the beacon
/// interval, as before routine beacons had a port of their own.
const FLOOD_BATCH_DIVISOR: u32 = 10;

/// The mesh sockets, the receive buffer and the broadcast targets.
#[derive(Debug)]
pub struct Sockets {
    beacon: UdpSocket,
    sync: UdpSocket,
    news: UdpSocket,
    /// The three sockets (beacon, sync, news) as the main loop knows them.
    watches: [Watch; 3],
    /// Which socket `try_recv` reads first: it goes round, so a flood on
    /// one cannot hide the others.
    first: usize,
    /// Routine beacons go to these (`port`).
    broadcasts: Vec<SocketAddr>,
    /// News goes to these (`news_port`).
    news_broadcasts: Vec<SocketAddr>,
    /// The datagram `try_recv` read last, until it is handled.
    buf: [u8; RECEIVE_BUFFER],
    /// Datagrams the kernel would not take (send buffer full).
    send_dropped: u64,
    /// The broadcasts counted for `rate`: since when, how many.
    window: (std::time::Instant, u32),
    /// The beacon interval: the length of a counting window.
    beacon_interval: std::time::Duration,
    /// Datagrams read from the beacon socket in the last full window: it
    /// rests once this is `BATCH_MIN_RATE` or more.
    rate: u32,
}

impl Sockets {
    /// Opens the three sockets of `[mesh]` and lets the main loop watch
    /// them (in this order: beacon, sync, news).
    pub fn open(mesh: &MeshSection) -> Result<Sockets, RunError> {
        let open = |what, addr, shared| {
            let error = |source| RunError::Socket { what, addr, source };
            let socket = udp_socket(addr, shared).map_err(error)?;
            let watch = mainloop::watch(socket.as_fd()).map_err(error)?;
            Ok::<_, RunError>((socket, watch))
        };
        let any = Ipv4Addr::UNSPECIFIED;
        let (beacon, beacon_watch) = open("beacon", SocketAddr::from((any, mesh.port)), true)?;
        let sync_addr = SocketAddr::new(mesh.bind, mesh.sync_port);
        let (sync, sync_watch) = open("sync", sync_addr, false)?;
        let (news, news_watch) = open("news", SocketAddr::from((any, mesh.news_port)), true)?;
        let watches = [beacon_watch, sync_watch, news_watch];
        let broadcasts = broadcast_addresses(&mesh.broadcast, mesh.port);
        if broadcasts.is_empty() {
            log::warn!("no broadcast address: only static peers will hear this node");
        }
        let news_broadcasts = broadcasts
            .iter()
            .map(|target| SocketAddr::new(target.ip(), mesh.news_port))
            .collect();
        Ok(Sockets {
            beacon,
            sync,
            news,
            watches,
            first: 0,
            broadcasts,
            news_broadcasts,
            buf: [0; RECEIVE_BUFFER],
            send_dropped: 0,
            window: (std::time::Instant::now(), 0),
            beacon_interval: mesh.beacon_interval,
            rate: 0,
        })
    }

    /// A datagram already waiting on any socket (its bytes stay in the
    /// buffer until the next call: [`Sockets::received`]), a socket's
    /// error, or `None`: nothing waiting. Never blocks.
    pub fn try_recv(&mut self) -> Option<Input> {
        let first = self.first;
        self.first = (first + 1) % 3;
        let beacon_interval = self.beacon_interval;
        let beacon_batch = beacon_interval / BEACON_BATCH_DIVISOR;
        let window = &mut self.window;
        let rate = &mut self.rate;
        let buf = &mut self.buf;
        (0..3).find_map(|k| {
            let index = (first + k) % 3;
            let (socket, arrival, what) = match index {
                0 => (&self.beacon, Arrival::Broadcast, "beacon"),
                1 => (&self.sync, Arrival::Unicast, "sync"),
                _ => (&self.news, Arrival::Broadcast, "news"),
            };
            let watch = self.watches[index];
            if !watch.maybe_ready() {
                return None;
            }
            match socket.recv_from(buf) {
                Ok((len, from)) => {
                    if index == 0 {
                        window.1 = window.1.saturating_add(1);
                    }
                    Some(Input::Datagram(arrival, len, from))
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    watch.drained();
                    if index == 0 {
                        let now = std::time::Instant::now();
                        if now.duration_since(window.0) >= beacon_interval {
                            *rate = window.1;
                            *window = (now, 0);
                        }
                        if *rate > BATCH_MAX_RATE {
                            watch.rest_until(now + beacon_interval / FLOOD_BATCH_DIVISOR);
                        } else if *rate >= BATCH_MIN_RATE {
                            watch.rest_until(now + beacon_batch);
                        }
                    }
                    None
                }
                Err(error) => Some(Input::SocketFailed(what, error)),
            }
        })
    }

    /// The next datagram on any socket, waiting for one under the agent's
    /// loop ([`mainloop::block_on`]).
    pub fn recv(&mut self) -> impl Future<Output = Input> + '_ {
        std::future::poll_fn(move |_| match self.try_recv() {
            Some(input) => Poll::Ready(input),
            None => {
                self.watches.iter().for_each(|watch| watch.wanted());
                Poll::Pending
            }
        })
    }

    /// The bytes of the datagram [`Sockets::recv`] (or
    /// [`Sockets::try_recv`]) announced last.
    pub fn received(&self, len: usize) -> &[u8] {
        &self.buf[..len.min(RECEIVE_BUFFER)]
    }

    /// Sends every datagram the core queued: a broadcast to every target,
    /// at `port` if routine and at `news_port` if news.
    /// A datagram the kernel will not take now (its send buffer is full)
    /// is dropped and counted, as the network would drop it: the protocol
    /// repairs loss.
    pub fn send_all(&mut self, node: &mut Node) {
        while let Some(transmit) = node.poll_transmit() {
            let mut dropped = 0;
            for target in self.targets(&transmit) {
                if let Err(error) = self.sync.send_to(&transmit.payload, target) {
                    if error.kind() == io::ErrorKind::WouldBlock {
                        dropped += 1;
                    }
                    log::debug!("send to {target} failed: {error}");
                }
            }
            self.send_dropped += dropped;
        }
    }

    /// Where `transmit` goes.
    fn targets<'a>(&'a self, transmit: &'a Transmit) -> &'a [SocketAddr] {
        match &transmit.destination {
            Destination::Broadcast if transmit.routine => &self.broadcasts,
            Destination::Broadcast => &self.news_broadcasts,
            Destination::Unicast(addr) => std::slice::from_ref(addr),
        }
    }

    /// Datagrams dropped because the socket's send buffer was full.
    pub fn send_dropped(&self) -> u64 {
        self.send_dropped
    }
}

/// Errors a UDP socket reports that are normal (an ICMP unreachable for an
/// earlier send, an interrupted call): logged, and the agent goes on.
pub fn is_transient(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

fn udp_socket(addr: SocketAddr, shared: bool) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_broadcast(true)?;
    if shared {
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    if let Err(error) = socket.set_recv_buffer_size(SOCKET_RECEIVE_BUFFER) {
        log::debug!("socket receive buffer left at the default: {error}");
    }
    socket.bind(&addr.into())?;
    Ok(UdpSocket::from(socket))
}

/// The broadcast targets: explicit addresses, or every up IPv4 interface's
/// directed broadcast for `auto`.
fn broadcast_addresses(config: &[Broadcast], port: u16) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for entry in config {
        match entry {
            Broadcast::Address(ip) => out.push(SocketAddr::from((*ip, port))),
            Broadcast::Auto => match if_addrs::get_if_addrs() {
                Ok(interfaces) => {
                    for interface in interfaces {
                        if let if_addrs::IfAddr::V4(v4) = interface.addr {
                            if let Some(broadcast) = v4.broadcast.filter(|_| !v4.ip.is_loopback()) {
                                out.push(SocketAddr::from((broadcast, port)));
                            }
                        }
                    }
                }
                Err(error) => log::warn!("cannot list network interfaces: {error}"),
            },
        }
    }
    shoal_config::order::sort(&mut out);
    out.dedup();
    out
}

/// This host's IPv4 networks, `(address, prefix length)`, loopback
/// included (agents on one host talk over 127.0.0.0/8).
pub fn local_networks() -> Vec<(std::net::Ipv4Addr, u8)> {
    match if_addrs::get_if_addrs() {
        Ok(interfaces) => interfaces
            .into_iter()
            .filter_map(|interface| match interface.addr {
                if_addrs::IfAddr::V4(v4) => {
                    let prefix = u32::from(v4.netmask).leading_ones();
                    Some((v4.ip, u8::try_from(prefix).unwrap_or(32)))
                }
                if_addrs::IfAddr::V6(_) => None,
            })
            .collect(),
        Err(error) => {
            log::warn!("cannot list network interfaces: {error}");
            Vec::new()
        }
    }
}

/// Resolves the static peers (`host:port`); one that does not resolve is
/// reported and skipped.
pub fn resolve_peers(peers: &[String]) -> Vec<SocketAddr> {
    use std::net::ToSocketAddrs;
    let mut out = Vec::new();
    for peer in peers {
        match peer.to_socket_addrs() {
            Ok(addrs) => match addrs.into_iter().find(SocketAddr::is_ipv4) {
                Some(addr) => out.push(addr),
                None => log::warn!("static peer {peer} has no IPv4 address; skipped"),
            },
            Err(error) => log::warn!("cannot resolve static peer {peer}: {error}; skipped"),
        }
    }
    out
}

#[cfg(test)]
mod tests;
