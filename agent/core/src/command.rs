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
//! flood from one node cannot monopolise another. The core never runs
//! anything: the target's shell gets [`Event::CommandRequested`], runs the
//! executor and answers with [`Node::complete_command`]. The asker gets
//! [`Event::CommandFinished`], with [`Outcome::NoAnswer`] if nothing came back
//! in time.

use super::peers::PeerState;
use super::routes::INFINITY;
use super::time::Instant;
use super::wire::{Command, CommandResult, Message, Name, NodeId, Outcome, MAX_OUTPUT};
use super::{Destination, Event, Node};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// Most commands of ours awaiting an answer.
pub const MAX_PENDING_COMMANDS: usize = 64;
/// Commands (and results) remembered for the loop guard.
const SEEN_COMMANDS: usize = 256;
/// Commands run here for others, remembered to answer repeated attempts.
const SERVED_COMMANDS: usize = 64;
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

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: u32,
    refilled: Instant,
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
}

/// A command run here for another node: its last attempt and, once done,
/// its result.
#[derive(Debug, Clone)]
struct Served {
    attempt: u8,
    result: Option<CommandResult>,
}

/// Loop-guard key: origin, id, attempt, is a result.
type SeenKey = (NodeId, u32, u8, bool);

/// The command bookkeeping of one node, bounded.
#[derive(Debug, Default)]
pub(super) struct Commands {
    next_id: u32,
    /// Our commands awaiting an answer.
    pending: BTreeMap<u32, Pending>,
    /// Messages we handled, to drop a second copy (a loop, a duplicate).
    seen: BTreeSet<SeenKey>,
    seen_order: VecDeque<SeenKey>,
    /// Commands run here for others, by (origin, id).
    served: BTreeMap<(NodeId, u32), Served>,
    served_order: VecDeque<(NodeId, u32)>,
    /// Per-asker rate limit.
    buckets: BTreeMap<NodeId, Bucket>,
}

impl Commands {
    /// Notes a message; false if it was seen before.
    fn first_sight(&mut self, key: SeenKey) -> bool {
        if !self.seen.insert(key) {
            return false;
        }
        self.seen_order.push_back(key);
        if self.seen_order.len() > SEEN_COMMANDS {
            if let Some(old) = self.seen_order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }

    /// Takes a token of `origin`'s bucket; false when it is empty.
    fn allow(&mut self, now: Instant, origin: NodeId, max_buckets: usize) -> bool {
        if !self.buckets.contains_key(&origin) && self.buckets.len() >= max_buckets {
            // Make room: the bucket refilled longest ago is full by now.
            let oldest = self
                .buckets
                .iter()
                .min_by_key(|(_, b)| b.refilled)
                .map(|(id, _)| *id);
            if let Some(id) = oldest {
                self.buckets.remove(&id);
            }
        }
        let bucket = self.buckets.entry(origin).or_insert(Bucket {
            tokens: COMMAND_BURST,
            refilled: now,
        });
        let refill_ms = COMMAND_REFILL.as_millis() as u64;
        let earned = now.saturating_since(bucket.refilled).as_millis() as u64 / refill_ms;
        if earned > 0 {
            let earned = u32::try_from(earned).unwrap_or(u32::MAX);
            bucket.tokens = bucket.tokens.saturating_add(earned).min(COMMAND_BURST);
            bucket.refilled = bucket.refilled + COMMAND_REFILL * earned;
        }
        if bucket.tokens == 0 {
            return false;
        }
        bucket.tokens -= 1;
        true
    }

    /// Remembers a command run here for another node.
    fn serve(&mut self, key: (NodeId, u32), attempt: u8) {
        self.served.insert(
            key,
            Served {
                attempt,
                result: None,
            },
        );
        self.served_order.push_back(key);
        if self.served_order.len() > SERVED_COMMANDS {
            if let Some(old) = self.served_order.pop_front() {
                self.served.remove(&old);
            }
        }
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
        let hop = if target == self.id {
            None
        } else {
            let reach = self.reach(now, target).ok_or(ExecError::UnknownNode)?;
            if matches!(reach.state, PeerState::Unreachable | PeerState::Left) {
                return Err(ExecError::Unreachable);
            }
            Some(self.next_hop(now, target).ok_or(ExecError::Unreachable)?)
        };
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
            },
        );
        self.commands.first_sight((self.id, id, 0, false));
        self.stats.commands_sent += 1;
        match hop {
            None => self.push_event(Event::CommandRequested {
                origin: self.id,
                id,
                executor,
                local: true,
            }),
            Some(addr) => {
                let command = Command {
                    origin: self.id,
                    id,
                    target,
                    hops_left: INFINITY,
                    executor,
                    attempt: 0,
                };
                self.send(Destination::Unicast(addr), &Message::Command(command));
            }
        }
        Ok(id)
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
        let attempt = match self.commands.served.get_mut(&(origin, id)) {
            Some(served) => served.attempt,
            None => 0,
        };
        let result = CommandResult {
            origin,
            id,
            target: self.id,
            hops_left: INFINITY,
            outcome,
            output: truncate_output(output),
            attempt,
        };
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
            let attempt = pending.attempt.saturating_add(1);
            if let Some(entry) = self.commands.pending.get_mut(&id) {
                entry.attempt = attempt;
                entry.next_try = Some(now + retry);
            }
            let Some(addr) = self.next_hop(now, pending.target) else {
                continue;
            };
            self.commands.first_sight((self.id, id, attempt, false));
            self.stats.commands_retried += 1;
            let command = Command {
                origin: self.id,
                id,
                target: pending.target,
                hops_left: INFINITY,
                executor: pending.executor,
                attempt,
            };
            self.send(Destination::Unicast(addr), &Message::Command(command));
        }
        let expired: Vec<(u32, NodeId)> = self
            .commands
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(&id, p)| (id, p.target))
            .collect();
        for (id, target) in expired {
            self.commands.pending.remove(&id);
            self.stats.commands_unanswered += 1;
            self.push_event(Event::CommandFinished {
                id,
                target,
                outcome: Outcome::NoAnswer,
                output: String::new(),
            });
        }
    }

    pub(super) fn on_command(&mut self, now: Instant, command: Command) {
        if command.origin == self.id {
            // This node's commands never come back to it as commands (its
            // own to itself never leave it; routes are loop-free and the
            // loop guard would drop a copy anyway): forged.
            self.stats.commands_forged_origin += 1;
            log::debug!("dropped a command from the wire claiming this node as its origin");
            return;
        }
        let key = (command.origin, command.id, command.attempt, false);
        if !self.commands.first_sight(key) {
            self.stats.commands_duplicate += 1;
            return;
        }
        if !self
            .commands
            .allow(now, command.origin, self.config.max_nodes)
        {
            self.stats.commands_rate_limited += 1;
            log::debug!("rate-limited a command from {}", command.origin);
            self.complete_command(now, command.origin, command.id, Outcome::RateLimited, "");
            return;
        }
        if command.target == self.id {
            let key = (command.origin, command.id);
            match self.commands.served.get_mut(&key) {
                // Run once; a repeated attempt gets the same answer.
                Some(served) => {
                    served.attempt = command.attempt;
                    if let Some(mut result) = served.result.clone() {
                        result.attempt = command.attempt;
                        self.stats.commands_answered_again += 1;
                        self.route_result(now, result);
                    }
                }
                None => {
                    self.commands.serve(key, command.attempt);
                    self.push_event(Event::CommandRequested {
                        origin: command.origin,
                        id: command.id,
                        executor: command.executor,
                        local: false,
                    });
                }
            }
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
                let result = CommandResult {
                    origin: command.origin,
                    id: command.id,
                    target: self.id,
                    hops_left: INFINITY,
                    outcome: Outcome::NoRoute,
                    output: truncate_output(&format!("{} has no route to the target", self.name)),
                    attempt: command.attempt,
                };
                self.route_result(now, result);
            }
        }
    }

    pub(super) fn on_command_result(&mut self, now: Instant, result: CommandResult) {
        if !self
            .commands
            .first_sight((result.origin, result.id, result.attempt, true))
        {
            self.stats.commands_duplicate += 1;
            return;
        }
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
