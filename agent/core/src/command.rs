//! Commands: run an executor on any node of the mesh, relayed hop by hop
//! along the routes, and its result relayed back.
//!
//! ```text
//! asker ----Command {origin, id, target, hops_left}----> relay --...--> target
//!   ^                                                                      |
//!   '------------CommandResult {origin, id, outcome, output}---------------'
//! ```
//!
//! Each relay decrements `hops_left` and drops the message at zero (counted);
//! a message seen before (a loop, a duplicated datagram) is dropped too.
//! Datagrams get lost and routes change, so the asker sends its command
//! again every beacon interval until the answer comes (a new `attempt`,
//! the same `id`): the target runs a command once, and answers a repeated
//! attempt from a small cache of its results. The
//! target and every relay limit commands per asker with a token bucket, so a
//! flood from one node cannot monopolise another.
//!
//! Commands and results are signed ([`crate::sign`]) and checked by every
//! node before it relays or acts, so the asker of a command (whose bucket
//! it drains, whose executors `remote = false` would protect) and the
//! answerer of a result are proven, not claimed. A command names the
//! target's incarnation and the asker's: after either restarts, a captured
//! copy no longer runs; within them, each request runs at most once (a
//! replay window per asker). The core never runs
//! anything: the target's shell gets [`Event::CommandRequested`], runs the
//! executor and answers with [`Node::complete_command`]. The asker gets
//! [`Event::CommandFinished`], with [`Outcome::NoAnswer`] if nothing came back
//! in time.

use super::peers::PeerState;
use super::routes::INFINITY;
use super::sign::{self, SIGNATURE_LEN};
use super::time::{Buckets, Instant};
use super::wire::{
    Command, CommandResult, Message, Name, NodeId, Outcome, ReplayWindow, Signature, MAX_OUTPUT,
};
use super::{Destination, Event, Node};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// Most commands of ours awaiting an answer.
pub const MAX_PENDING_COMMANDS: usize = 64;
/// Commands (and results) remembered for the loop guard.
const SEEN_COMMANDS: usize = 256;
/// Commands run here for others, remembered to answer repeated attempts.
const SERVED_COMMANDS: usize = 64;
/// Askers whose replay window was dropped, remembered compactly (16 bytes
/// each) so their old requests never run again.
const MAX_RETIRED: usize = 4096;
/// Commands a node may send through or to us in a burst...
pub const COMMAND_BURST: u32 = 10;
/// ...and then one per this long.
pub const COMMAND_REFILL: Duration = Duration::from_millis(200);

/// Why a command could not be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    /// No node of that id or name is known.
    #[error("no node of that name is known in the mesh")]
    UnknownNode,
    /// The node is known but there is no route to it now.
    #[error("the node is not reachable now")]
    Unreachable,
    /// Too many commands are awaiting answers.
    #[error("too many commands are awaiting answers")]
    TooManyPending,
    /// The node is shutting down.
    #[error("the agent is shutting down")]
    Leaving,
}

/// One of our commands awaiting its answer.
#[derive(Debug, Clone)]
struct Pending {
    target: NodeId,
    executor: Name,
    deadline: Instant,
    /// When to send it again (never for a command to ourselves).
    next_try: Option<Instant>,
    attempt: u8,
    /// Our incarnation when we asked: its answer must name it.
    incarnation: u32,
    /// The target's incarnation we first sent it to: if the target
    /// restarts meanwhile, it is not sent again (it may have run).
    target_incarnation: Option<u32>,
    /// A relay said it has no route to the target (a hint, not an answer:
    /// anyone can sign one): the outcome if nothing else comes.
    no_route: bool,
}

/// A command run here for another node: its last attempt and, once done,
/// its result.
#[derive(Debug, Clone)]
struct Served {
    attempt: u8,
    /// The asker's incarnation.
    incarnation: u32,
    result: Option<CommandResult>,
}

/// Loop-guard key: origin, id, attempt, and for a result who answers (so a
/// member's bogus answer can't shadow the real one).
type SeenKey = (NodeId, u32, u8, Option<NodeId>);

/// The last `N` messages handled (by key), to drop a second copy: a loop
/// or a duplicated datagram. The oldest is forgotten first.
#[derive(Debug)]
pub(super) struct LoopGuard<K, const N: usize> {
    set: BTreeSet<K>,
    order: VecDeque<K>,
}

impl<K, const N: usize> Default for LoopGuard<K, N> {
    fn default() -> Self {
        LoopGuard {
            set: BTreeSet::new(),
            order: VecDeque::new(),
        }
    }
}

impl<K: Ord + Copy, const N: usize> LoopGuard<K, N> {
    /// Notes `key`; false if it was seen before.
    pub(super) fn first_sight(&mut self, key: K) -> bool {
        if !self.set.insert(key) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > N {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }

    /// Whether `key` was seen (without noting it).
    pub(super) fn contains(&self, key: &K) -> bool {
        self.set.contains(key)
    }

    /// Keys remembered (at most `N`; the set and its order agree).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        debug_assert_eq!(self.set.len(), self.order.len());
        self.set.len()
    }
}

/// The command bookkeeping of one node, bounded.
#[derive(Debug, Default)]
pub(super) struct Commands {
    next_id: u32,
    /// Our commands awaiting an answer.
    pending: BTreeMap<u32, Pending>,
    /// Messages we handled, to drop a second copy (a loop, a duplicate).
    pub(super) seen: LoopGuard<SeenKey, SEEN_COMMANDS>,
    /// Commands run here for others, by (origin, id).
    served: BTreeMap<(NodeId, u32), Served>,
    served_order: VecDeque<(NodeId, u32)>,
    /// Per-asker rate limit.
    buckets: Option<Buckets<NodeId>>,
    /// Per asker: its incarnation and the request numbers of it run here.
    windows: BTreeMap<NodeId, (u32, ReplayWindow)>,
    /// Per asker whose window was dropped (forgotten, or to make room):
    /// its incarnation and the highest request number run then.
    retired: BTreeMap<NodeId, (u32, u64)>,
}

impl Commands {
    /// Notes a message; false if it was seen before.
    fn first_sight(&mut self, key: SeenKey) -> bool {
        self.seen.first_sight(key)
    }

    /// Takes a token of `origin`'s bucket; false when it is empty. At
    /// most `max_buckets` askers are tracked.
    fn allow(&mut self, now: Instant, origin: NodeId, max_buckets: usize) -> bool {
        self.buckets
            .get_or_insert_with(|| Buckets::new(COMMAND_BURST, COMMAND_REFILL, max_buckets))
            .allow(now, origin)
    }

    /// Whether request `id` of `origin`'s incarnation `incarnation` is new
    /// here; notes it if so.
    fn first_run(&mut self, origin: NodeId, incarnation: u32, id: u32) -> bool {
        match self.retired.get(&origin) {
            Some(&(old, _)) if incarnation < old => return false,
            Some(&(old, highest)) if incarnation == old && u64::from(id) <= highest => {
                return false
            }
            Some(&(old, _)) if incarnation > old => {
                self.retired.remove(&origin);
            }
            _ => {}
        }
        let entry = self
            .windows
            .entry(origin)
            .or_insert((incarnation, ReplayWindow::default()));
        if entry.0 < incarnation {
            *entry = (incarnation, ReplayWindow::default());
        }
        if entry.0 > incarnation || !entry.1.is_fresh(u64::from(id)) {
            return false;
        }
        entry.1.accept(u64::from(id));
        true
    }

    /// Drops what is kept of a forgotten node; its window shrinks to a
    /// tombstone, so its old requests still never run again.
    pub(super) fn forget(&mut self, id: NodeId) {
        self.retire(id);
        if let Some(buckets) = self.buckets.as_mut() {
            buckets.remove(&id);
        }
    }

    /// Replaces `id`'s replay window with its highest request number.
    fn retire(&mut self, id: NodeId) {
        let Some((incarnation, window)) = self.windows.remove(&id) else {
            return;
        };
        let Some(highest) = window.highest() else {
            return;
        };
        if !self.retired.contains_key(&id) && self.retired.len() >= MAX_RETIRED {
            self.retired.pop_first();
        }
        let entry = self.retired.entry(id).or_insert((incarnation, highest));
        if (incarnation, highest) > *entry {
            *entry = (incarnation, highest);
        }
    }

    /// Remembers a command run here for another node; false when every
    /// remembered one is still running (no room: the caller refuses).
    fn serve(&mut self, key: (NodeId, u32), incarnation: u32, attempt: u8) -> bool {
        if !self.served.contains_key(&key) && self.served.len() >= SERVED_COMMANDS {
            // The oldest finished one makes room; a running one must stay
            // (its result names the asker's incarnation kept here).
            let finished = self
                .served_order
                .iter()
                .position(|k| self.served.get(k).is_none_or(|s| s.result.is_some()));
            match finished.and_then(|at| self.served_order.remove(at)) {
                Some(old) => {
                    self.served.remove(&old);
                }
                None => return false,
            }
        }
        let fresh = Served {
            attempt,
            incarnation,
            result: None,
        };
        if self.served.insert(key, fresh).is_none() {
            self.served_order.push_back(key);
        }
        true
    }

    /// The earliest deadline or retry of a pending command.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.pending
            .values()
            .flat_map(|p| [Some(p.deadline), p.next_try])
            .flatten()
            .min()
    }
}

/// Cuts `text` to at most [`MAX_OUTPUT`] bytes on a character boundary.
pub fn truncate_output(text: &str) -> heapless::String<MAX_OUTPUT> {
    heapless::String::try_from(cut(text, MAX_OUTPUT)).unwrap_or_default()
}

/// The longest start of `text` of at most `max` bytes that ends on a
/// character boundary.
pub fn cut(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl Node {
    /// Asks `target` to run `executor`. The answer comes as
    /// [`Event::CommandFinished`] with the returned request number, at the
    /// latest after `timeout` (then as [`Outcome::NoAnswer`]).
    pub fn exec(
        &mut self,
        now: Instant,
        target: NodeId,
        executor: Name,
        timeout: Duration,
    ) -> Result<u32, ExecError> {
        if self.leaving {
            return Err(ExecError::Leaving);
        }
        if self.commands.pending.len() >= MAX_PENDING_COMMANDS {
            return Err(ExecError::TooManyPending);
        }
        let hop = self.first_hop(now, target)?;
        if hop.is_some() && self.known_incarnation(target).is_none() {
            return Err(ExecError::Unreachable);
        }
        self.commands.next_id = self.commands.next_id.wrapping_add(1);
        let id = self.commands.next_id;
        let retry = self.config.beacon_interval;
        self.commands.pending.insert(
            id,
            Pending {
                target,
                executor: executor.clone(),
                deadline: now + timeout,
                next_try: hop.map(|_| now + retry),
                attempt: 0,
                incarnation: self.counter.incarnation,
                target_incarnation: hop.and_then(|_| self.known_incarnation(target)),
                no_route: false,
            },
        );
        self.commands.first_sight((self.id, id, 0, None));
        self.stats.commands_sent += 1;
        match hop {
            None => self.push_event(Event::CommandRequested {
                origin: self.id,
                id,
                executor,
                local: true,
            }),
            Some(addr) => {
                if let Some(command) = self.signed_command(id, target, executor, 0) {
                    self.send(Destination::Unicast(addr), &Message::Command(command));
                }
            }
        }
        Ok(id)
    }

    /// Where a message of ours to `target` goes first: `None` for this
    /// node itself, else the next hop of a live route.
    pub(super) fn first_hop(
        &mut self,
        now: Instant,
        target: NodeId,
    ) -> Result<Option<std::net::SocketAddr>, ExecError> {
        if target == self.id {
            return Ok(None);
        }
        let reach = self.reach(now, target).ok_or(ExecError::UnknownNode)?;
        if matches!(reach.state, PeerState::Unreachable | PeerState::Left) {
            return Err(ExecError::Unreachable);
        }
        self.next_hop(now, target)
            .map(Some)
            .ok_or(ExecError::Unreachable)
    }

    /// Our command `id` to `target` as it goes on the wire now: for the
    /// target's incarnation we know (none known: `None`), signed.
    fn signed_command(
        &self,
        id: u32,
        target: NodeId,
        executor: Name,
        attempt: u8,
    ) -> Option<Command> {
        let origin_incarnation = self.commands.pending.get(&id)?.incarnation;
        let mut command = Command {
            origin: self.id,
            id,
            target,
            hops_left: INFINITY,
            executor,
            attempt,
            origin_incarnation,
            target_incarnation: self.known_incarnation(target)?,
            key: self.key.public(),
            signature: Signature([0; SIGNATURE_LEN]),
        };
        command.signature = self.key.sign(&sign::command_payload(&command));
        Some(command)
    }

    /// This node's signed answer to request `id` of `origin`.
    fn signed_result(
        &self,
        origin: NodeId,
        origin_incarnation: u32,
        id: u32,
        attempt: u8,
        outcome: Outcome,
        output: &str,
    ) -> CommandResult {
        let mut result = CommandResult {
            origin,
            id,
            target: self.id,
            hops_left: INFINITY,
            outcome,
            output: truncate_output(output),
            attempt,
            origin_incarnation,
            key: self.key.public(),
            signature: Signature([0; SIGNATURE_LEN]),
        };
        result.signature = self.key.sign(&sign::result_payload(&result));
        result
    }

    /// The shell ran (or refused) the command `id` of `origin` that
    /// [`Event::CommandRequested`] asked for: the result goes back.
    pub fn complete_command(
        &mut self,
        now: Instant,
        origin: NodeId,
        id: u32,
        outcome: Outcome,
        output: &str,
    ) {
        let (attempt, incarnation) = match self.commands.served.get(&(origin, id)) {
            Some(served) => (served.attempt, served.incarnation),
            // A command of our own to ourselves is not in `served`.
            None if origin == self.id => (0, self.counter.incarnation),
            // Cannot happen (running commands stay in `served`); an answer
            // without the asker's incarnation would be refused anyway.
            None => return,
        };
        let result = self.signed_result(origin, incarnation, id, attempt, outcome, output);
        if let Some(served) = self.commands.served.get_mut(&(origin, id)) {
            served.result = Some(result.clone());
        }
        self.route_result(now, result);
    }

    /// Pending commands whose time is up get their `NoAnswer`; the others
    /// due for a retry are sent again, along the route of now.
    pub(super) fn expire_commands(&mut self, now: Instant) {
        let retry = self.config.beacon_interval;
        let due: Vec<(u32, Pending)> = self
            .commands
            .pending
            .iter()
            .filter(|(_, p)| p.deadline > now && p.next_try.is_some_and(|at| at <= now))
            .map(|(&id, p)| (id, p.clone()))
            .collect();
        for (id, pending) in due {
            if pending.target_incarnation.is_some()
                && self.known_incarnation(pending.target) != pending.target_incarnation
            {
                // Sending it to the new life could run it twice.
                self.commands.pending.remove(&id);
                self.stats.commands_unanswered += 1;
                self.push_event(Event::CommandFinished {
                    id,
                    target: pending.target,
                    outcome: Outcome::NoAnswer,
                    output: "the target restarted before answering: it may or may not have run"
                        .to_owned(),
                });
                continue;
            }
            let attempt = pending.attempt.saturating_add(1);
            if let Some(entry) = self.commands.pending.get_mut(&id) {
                entry.attempt = attempt;
                entry.next_try = Some(now + retry);
            }
            let Some(addr) = self.next_hop(now, pending.target) else {
                continue;
            };
            // Signed again: the target may have restarted meanwhile.
            let Some(command) = self.signed_command(id, pending.target, pending.executor, attempt)
            else {
                continue;
            };
            self.commands.first_sight((self.id, id, attempt, None));
            self.stats.commands_retried += 1;
            self.send(Destination::Unicast(addr), &Message::Command(command));
        }
        let expired: Vec<(u32, NodeId, bool)> = self
            .commands
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(&id, p)| (id, p.target, p.no_route))
            .collect();
        for (id, target, no_route) in expired {
            self.commands.pending.remove(&id);
            self.stats.commands_unanswered += 1;
            let (outcome, output) = if no_route {
                (
                    Outcome::NoRoute,
                    "a node on the way had no route to the target",
                )
            } else {
                (Outcome::NoAnswer, "")
            };
            self.push_event(Event::CommandFinished {
                id,
                target,
                outcome,
                output: output.to_owned(),
            });
        }
    }

    pub(super) fn on_command(&mut self, now: Instant, command: Command) {
        // The cheap check first: a copy seen before costs no verification.
        let key = (command.origin, command.id, command.attempt, None);
        if self.commands.seen.contains(&key) {
            self.stats.commands_duplicate += 1;
            return;
        }
        let payload = sign::command_payload(&command);
        if !sign::verify(command.origin, &command.key, &payload, &command.signature) {
            self.stats.signatures_invalid += 1;
            log::debug!(
                "dropped a command claiming {}: bad signature",
                command.origin
            );
            return;
        }
        if command.origin == self.id {
            // This node's commands never come back to it as commands (its
            // own to itself never leave it; routes are loop-free and the
            // loop guard would drop a copy anyway): a replay.
            self.stats.commands_forged_origin += 1;
            log::debug!("dropped a command from the wire claiming this node as its origin");
            return;
        }
        self.commands.first_sight(key);
        if !self
            .commands
            .allow(now, command.origin, self.config.max_nodes)
        {
            self.stats.commands_rate_limited += 1;
            log::debug!("rate-limited a command from {}", command.origin);
            if command.target != self.id {
                // A relay drops it: the asker gets no answer from a relay
                // it would trust anyway, and signing costs.
                return;
            }
            let result = self.signed_result(
                command.origin,
                command.origin_incarnation,
                command.id,
                command.attempt,
                Outcome::RateLimited,
                "",
            );
            self.route_result(now, result);
            return;
        }
        if command.target == self.id {
            self.serve_command(now, command);
            return;
        }
        let Some(hops_left) = command.hops_left.checked_sub(1).filter(|&h| h > 0) else {
            self.stats.commands_hop_limit += 1;
            return;
        };
        match self.next_hop(now, command.target) {
            Some(addr) => {
                self.stats.commands_relayed += 1;
                let relayed = Command {
                    hops_left,
                    ..command
                };
                self.send(Destination::Unicast(addr), &Message::Command(relayed));
            }
            None => {
                self.stats.commands_no_route += 1;
                let result = self.signed_result(
                    command.origin,
                    command.origin_incarnation,
                    command.id,
                    command.attempt,
                    Outcome::NoRoute,
                    &format!("{} has no route to the target", self.name),
                );
                self.route_result(now, result);
            }
        }
    }

    /// A verified command for this node: run once, if meant for this
    /// incarnation, from an asker's current one.
    fn serve_command(&mut self, now: Instant, command: Command) {
        let origin = command.origin;
        let asker_current = self
            .known_incarnation(origin)
            .is_some_and(|known| command.origin_incarnation >= known);
        if command.target_incarnation != self.counter.incarnation || !asker_current {
            self.stats.commands_stale += 1;
            log::debug!(
                "refused command {} of {origin}: for incarnation {} of this node (now {}), \
                 from its incarnation {} (known: {:?})",
                command.id,
                command.target_incarnation,
                self.counter.incarnation,
                command.origin_incarnation,
                self.known_incarnation(origin),
            );
            return;
        }
        let key = (origin, command.id);
        if let Some(served) = self
            .commands
            .served
            .get_mut(&key)
            .filter(|served| served.incarnation == command.origin_incarnation)
        {
            // Run once; a repeated attempt gets the same answer.
            served.attempt = command.attempt;
            if let Some(mut result) = served.result.clone() {
                result.attempt = command.attempt;
                self.stats.commands_answered_again += 1;
                self.route_result(now, result);
            }
            return;
        }
        if !self.commands.windows.contains_key(&origin)
            && self.commands.windows.len() >= self.config.max_nodes
        {
            // Make room: askers no longer known shrink to tombstones (their
            // old requests still never run again).
            let gone: Vec<NodeId> = self
                .commands
                .windows
                .keys()
                .copied()
                .filter(|&id| self.known_incarnation(id).is_none())
                .collect();
            for id in gone {
                self.commands.retire(id);
            }
            if self.commands.windows.len() >= self.config.max_nodes {
                self.stats.commands_stale += 1;
                return;
            }
        }
        if !self
            .commands
            .first_run(origin, command.origin_incarnation, command.id)
        {
            self.stats.commands_replayed += 1;
            log::debug!("refused command {} of {origin}: it ran before", command.id);
            return;
        }
        if !self
            .commands
            .serve(key, command.origin_incarnation, command.attempt)
        {
            // Every remembered command is still running.
            let result = self.signed_result(
                origin,
                command.origin_incarnation,
                command.id,
                command.attempt,
                Outcome::Busy,
                "too many commands running on this node",
            );
            self.route_result(now, result);
            return;
        }
        self.push_event(Event::CommandRequested {
            origin,
            id: command.id,
            executor: command.executor,
            local: false,
        });
    }

    pub(super) fn on_command_result(&mut self, now: Instant, result: CommandResult) {
        let key = (
            result.origin,
            result.id,
            result.attempt,
            Some(result.target),
        );
        if self.commands.seen.contains(&key) {
            self.stats.commands_duplicate += 1;
            return;
        }
        let payload = sign::result_payload(&result);
        if !sign::verify(result.target, &result.key, &payload, &result.signature) {
            self.stats.signatures_invalid += 1;
            log::debug!("dropped a result claiming {}: bad signature", result.target);
            return;
        }
        self.commands.first_sight(key);
        if result.origin == self.id {
            self.route_result(now, result);
            return;
        }
        let Some(hops_left) = result.hops_left.checked_sub(1).filter(|&h| h > 0) else {
            self.stats.commands_hop_limit += 1;
            return;
        };
        self.route_result(
            now,
            CommandResult {
                hops_left,
                ..result
            },
        );
    }

    /// Delivers a result here, or sends it one hop closer to its asker.
    fn route_result(&mut self, now: Instant, result: CommandResult) {
        if result.origin == self.id {
            let Some(pending) = self.commands.pending.get_mut(&result.id) else {
                return;
            };
            if pending.incarnation == result.origin_incarnation
                && result.target != pending.target
                && result.outcome == Outcome::NoRoute
            {
                // A relay found no route: the outcome if nothing better
                // comes (any member could say so, so it ends nothing).
                pending.no_route = true;
                return;
            }
            // From the node asked, for this command of this incarnation of ours.
            if pending.incarnation != result.origin_incarnation || result.target != pending.target {
                self.stats.results_refused += 1;
                log::debug!(
                    "refused a result for command {} from {}",
                    result.id,
                    result.target
                );
                return;
            }
            if let Some(pending) = self.commands.pending.remove(&result.id) {
                self.push_event(Event::CommandFinished {
                    id: result.id,
                    target: pending.target,
                    outcome: result.outcome,
                    output: result.output.as_str().to_owned(),
                });
            }
            return;
        }
        match self.next_hop(now, result.origin) {
            Some(addr) => {
                if result.target != self.id {
                    self.stats.commands_relayed += 1;
                }
                self.send(Destination::Unicast(addr), &Message::CommandResult(result));
            }
            None => {
                self.stats.commands_no_route += 1;
                log::debug!("no route back to {} for a command result", result.origin);
            }
        }
    }
}

#[cfg(test)]
mod tests;
