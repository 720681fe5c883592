//! The mesh's two UDP sockets, and where broadcasts go.
//!
//! The beacon socket listens on `0.0.0.0:port` with SO_REUSEADDR and
//! SO_REUSEPORT, so several agents on one host all receive each broadcast.
//! The sync socket is bound to `bind:sync_port` and sends everything,
//! beacons included, so a datagram's source address is always its sender's
//! unicast address.

use super::agent::{Input, RunError};
use futures_lite::future;
use shoal_config::{Broadcast, MeshSection};
use shoal_core::{Arrival, Destination, Node};
use smol::net::UdpSocket;
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};

/// Room for one datagram: above the largest frame, so an oversized one is
/// seen whole and refused by the core, not cut.
const RECEIVE_BUFFER: usize = 2048;

/// Both sockets, their receive buffers and the broadcast targets.
#[derive(Debug)]
pub struct Sockets {
    beacon: UdpSocket,
    sync: UdpSocket,
    broadcasts: Vec<SocketAddr>,
    beacon_buf: [u8; RECEIVE_BUFFER],
    sync_buf: [u8; RECEIVE_BUFFER],
}

impl Sockets {
    /// Opens both sockets of `[mesh]`.
    pub fn open(mesh: &MeshSection) -> Result<Sockets, RunError> {
        let beacon_addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, mesh.port));
        let beacon = udp_socket(beacon_addr, true).map_err(|source| RunError::Socket {
            what: "beacon",
            addr: beacon_addr,
            source,
        })?;
        let sync_addr = SocketAddr::new(mesh.bind, mesh.sync_port);
        let sync = udp_socket(sync_addr, false).map_err(|source| RunError::Socket {
            what: "sync",
            addr: sync_addr,
            source,
        })?;
        let broadcasts = broadcast_addresses(&mesh.broadcast, mesh.port);
        if broadcasts.is_empty() {
            log::warn!("no broadcast address: only static peers will hear this node");
        }
        Ok(Sockets {
            beacon,
            sync,
            broadcasts,
            beacon_buf: [0; RECEIVE_BUFFER],
            sync_buf: [0; RECEIVE_BUFFER],
        })
    }

    /// The next datagram on either socket (its bytes stay in the buffer
    /// until the next call: [`Sockets::received`]), or a socket's error.
    pub async fn recv(&mut self) -> Input {
        let Sockets {
            beacon,
            sync,
            beacon_buf,
            sync_buf,
            ..
        } = self;
        let from_beacon = async {
            match beacon.recv_from(beacon_buf).await {
                Ok((len, from)) => Input::Datagram(Arrival::Broadcast, len, from),
                Err(error) => Input::SocketFailed("beacon", error),
            }
        };
        let from_sync = async {
            match sync.recv_from(sync_buf).await {
                Ok((len, from)) => Input::Datagram(Arrival::Unicast, len, from),
                Err(error) => Input::SocketFailed("sync", error),
            }
        };
        future::or(from_beacon, from_sync).await
    }

    /// The bytes of the datagram [`Sockets::recv`] announced.
    pub fn received(&self, arrival: Arrival, len: usize) -> &[u8] {
        let buf = match arrival {
            Arrival::Broadcast => &self.beacon_buf,
            Arrival::Unicast => &self.sync_buf,
        };
        &buf[..len.min(RECEIVE_BUFFER)]
    }

    /// Sends every datagram the core queued (broadcasts to every target).
    pub async fn send_all(&self, node: &mut Node) {
        while let Some(transmit) = node.poll_transmit() {
            let targets: &[SocketAddr] = match &transmit.destination {
                Destination::Broadcast => &self.broadcasts,
                Destination::Unicast(addr) => std::slice::from_ref(addr),
            };
            for target in targets {
                if let Err(error) = self.sync.send_to(&transmit.payload, target).await {
                    log::debug!("send to {target} failed: {error}");
                }
            }
        }
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
    socket.bind(&addr.into())?;
    UdpSocket::try_from(std::net::UdpSocket::from(socket))
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
    out.sort();
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
