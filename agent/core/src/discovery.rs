//! Finding nodes beyond the LAN: static peers, peer exchange and knocks.
//!
//! Broadcast beacons find the LAN by themselves. Beyond it, a node knows
//! configured (or remembered) static peers, and addresses learned from the
//! `Peers` lists its unicast neighbors send. Every such address that is not
//! already a neighbor gets our beacon by unicast (a *knock*), first every
//! interval, then with a doubling wait up to [`KNOCK_BACKOFF_MAX`] intervals,
//! until it answers; learned addresses expire if they never do.
//!
//! A peer list must not turn a node into a weapon: in an open mesh anyone
//! can send one, so there only addresses inside this node's own networks
//! are learned (in a keyed mesh the list comes from a member). And at most
//! [`MAX_KNOCKS_PER_BEACON`] knocks go out per beacon, static peers first.
//!
//! ```text
//! static peer / remembered / learned --knock (unicast beacon)--> answer
//!       answer: a neighbor --Peers (its healthy neighbors)--> more candidates
//! ```

use super::peers::PeerState;
use super::time::Instant;
use super::wire::{self, Message, NodeId};
use super::{Destination, Node};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

/// Longest wait between two knocks on a silent static or learned address,
/// in beacon intervals.
const KNOCK_BACKOFF_MAX: u32 = 16;
/// Neighbors beyond the LAN get our peer list this often (in beacons).
pub(crate) const PEER_LIST_EVERY: u64 = 60;
/// Most knocks sent with one beacon; the rest wait for the next.
pub(crate) const MAX_KNOCKS_PER_BEACON: usize = 8;

/// Addresses to knock on, and when. See the module docs.
#[derive(Debug, Default)]
pub(crate) struct Discovery {
    /// Configured addresses beyond the LAN: they get every beacon by unicast,
    /// so a node finds them (again) by itself.
    static_peers: Vec<SocketAddr>,
    /// Addresses learned by peer exchange, knocked on by unicast beacon until
    /// they answer or expire.
    candidates: BTreeMap<SocketAddr, Instant>,
    /// Next knock and current backoff of each address that has not answered.
    knocks: BTreeMap<SocketAddr, (Instant, Duration)>,
    /// This node's IPv4 networks, `(network, mask)`.
    local_networks: Vec<(u32, u32)>,
}

impl Discovery {
    /// Sets the static peers, at most `max` of them.
    pub(crate) fn set_static_peers(&mut self, mut addrs: Vec<SocketAddr>, max: usize) {
        shoal_config::order::sort(&mut addrs);
        addrs.dedup();
        addrs.truncate(max);
        self.static_peers = addrs;
    }

    /// Adds one static peer (at most `max` in all).
    pub(crate) fn add_static_peer(&mut self, addr: SocketAddr, max: usize) {
        if !self.static_peers.contains(&addr) && self.static_peers.len() < max {
            self.static_peers.push(addr);
            shoal_config::order::sort(&mut self.static_peers);
        }
    }

    /// Whether `addr` is inside one of this node's networks.
    pub(crate) fn is_local(&self, addr: SocketAddr) -> bool {
        match addr {
            SocketAddr::V4(v4) => {
                let ip = u32::from(*v4.ip());
                self.local_networks
                    .iter()
                    .any(|&(network, mask)| ip & mask == network)
            }
            SocketAddr::V6(_) => false,
        }
    }

    /// Learns `addr` from a peer list, to be knocked on until `expires`.
    /// At most `max` candidates are kept.
    pub(crate) fn learn(&mut self, addr: SocketAddr, expires: Instant, max: usize) {
        if self.candidates.len() < max || self.candidates.contains_key(&addr) {
            self.candidates.insert(addr, expires);
        }
    }

    /// The addresses due for a knock at `now`: static peers and candidates
    /// not `covered` by a neighbor already. Addresses that never answered
    /// are knocked on with backoff: every `interval` at first, doubling up
    /// to [`KNOCK_BACKOFF_MAX`] intervals.
    pub(crate) fn due_knocks(
        &mut self,
        now: Instant,
        covered: &BTreeSet<SocketAddr>,
        interval: Duration,
    ) -> Vec<SocketAddr> {
        self.candidates
            .retain(|addr, expires| *expires > now && !covered.contains(addr));
        let missing: BTreeSet<SocketAddr> = shoal_config::order::set(
            self.static_peers
                .iter()
                .chain(self.candidates.keys())
                .copied()
                .filter(|addr| !covered.contains(addr)),
        );
        self.knocks.retain(|addr, _| missing.contains(addr));
        let mut due = Vec::new();
        let (configured, learned): (Vec<SocketAddr>, Vec<SocketAddr>) = missing
            .into_iter()
            .partition(|addr| self.static_peers.contains(addr));
        for addr in configured.into_iter().chain(learned) {
            if due.len() == MAX_KNOCKS_PER_BEACON {
                break;
            }
            let knock = self.knocks.entry(addr).or_insert((now, interval));
            if now < knock.0 {
                continue;
            }
            // Waits of 1, 2, 4 ... intervals: a peer that starts a moment
            // after us is found at the next beacon, not two later.
            knock.0 = now + knock.1;
            knock.1 = (knock.1 * 2).min(interval * KNOCK_BACKOFF_MAX);
            due.push(addr);
        }
        due
    }
}

impl Node {
    /// Sets the static peers: addresses beyond the LAN (another subnet, a
    /// VPN) that get a unicast beacon every interval until they answer, and
    /// after. At most `max_nodes` are kept.
    pub fn set_static_peers(&mut self, addrs: Vec<SocketAddr>) {
        self.discovery
            .set_static_peers(addrs, self.config.max_nodes);
    }

    /// Knocks on `addr` from now on, as on a static peer (the member a
    /// node joined through, maybe beyond the LAN). Not remembered across
    /// restarts unless it becomes a neighbor.
    pub fn knock(&mut self, addr: SocketAddr) {
        self.discovery.add_static_peer(addr, self.config.max_nodes);
    }

    /// This node's IPv4 networks `(address, prefix length)`: in an open
    /// mesh, only addresses inside them are learned from peer lists.
    pub fn set_local_networks(&mut self, networks: &[(std::net::Ipv4Addr, u8)]) {
        self.discovery.local_networks = networks
            .iter()
            .map(|&(ip, prefix)| {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(prefix.min(32)))
                    .unwrap_or(0);
                (u32::from(ip) & mask, mask)
            })
            .collect();
    }

    /// Peer exchange: unknown addresses become candidates, knocked on by
    /// unicast beacon for `10 × unreachable_after` (in an open mesh only
    /// those inside our networks).
    pub(crate) fn on_peers(&mut self, now: Instant, list: &wire::PeerList) {
        let expires = now + self.config.unreachable_after * 10;
        for entry in &list.peers {
            let known = entry.node == self.id || self.peers.get(entry.node).is_some();
            if !known {
                let addr = SocketAddr::from((entry.ip, entry.port));
                if self.cipher.is_none() && !self.discovery.is_local(addr) {
                    self.stats.foreign_addresses_refused += 1;
                    continue;
                }
                self.discovery.learn(addr, expires, self.config.max_nodes);
            }
        }
    }

    /// Sends `to` (node `except`) the healthy neighbors we know.
    pub(crate) fn send_peer_list(&mut self, to: SocketAddr, except: NodeId) {
        let entries: Vec<wire::PeerAddress> = self
            .peers
            .iter()
            .filter(|peer| peer.id != except && peer.state == PeerState::Healthy)
            .filter_map(|peer| match peer.addr {
                SocketAddr::V4(v4) => Some(wire::PeerAddress {
                    node: peer.id,
                    ip: v4.ip().octets(),
                    port: v4.port(),
                }),
                SocketAddr::V6(_) => None,
            })
            .collect();
        for chunk in entries.chunks(wire::MAX_PEER_ADDRESSES) {
            let list = wire::PeerList {
                peers: chunk.iter().copied().collect(),
            };
            self.send(Destination::Unicast(to), &Message::Peers(list));
        }
    }

    /// After a beacon: knocks with it on the static peers and candidates
    /// that no neighbor covers, and now and then sends our peer list to the
    /// neighbors beyond the LAN.
    pub(crate) fn knock_and_exchange(&mut self, now: Instant, beacon: &Message) {
        // Static peers not already reached by broadcast or as a known
        // unicast-only neighbor.
        let covered: BTreeSet<SocketAddr> = shoal_config::order::set(
            self.peers
                .iter()
                .filter(|peer| peer.is_lan() || self.detector.is_unicast_only(peer.id))
                .map(|peer| peer.addr),
        );
        let interval = self.config.beacon_interval;
        for addr in self.discovery.due_knocks(now, &covered, interval) {
            self.send(Destination::Unicast(addr), beacon);
        }
        if self.stats.beacons_sent.is_multiple_of(PEER_LIST_EVERY) {
            let remote: Vec<(SocketAddr, NodeId)> = self
                .detector
                .unicast_only()
                .filter_map(|id| self.peers.get(id))
                .filter(|peer| peer.state == PeerState::Healthy)
                .map(|peer| (peer.addr, peer.id))
                .collect();
            for (addr, id) in remote {
                self.send_peer_list(addr, id);
            }
        }
    }
}
