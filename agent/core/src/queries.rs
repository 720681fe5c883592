//! History queries: one page of a point's history asked of the node that
//! keeps it (the point's origin), relayed hop by hop along the routes like
//! a command, and the page relayed back.
//!
//! ```text
//! asker --HistoryQuery {origin, id, target, point, since, until, step, from}--> ... --> target
//!   ^                                                                                  |
//!   '---------------HistoryPage {origin, id, status, rows (≤ 64), next}---------------'
//! ```
//!
//! One query, one page of at most [`MAX_HISTORY_ROWS`] steps (about 1 KB):
//! the asker's shell asks for the next page (`from` = the page's `next`)
//! until it has the range, so no answer is larger than one frame and every
//! page is paced by the asker. Queries read what every member may read,
//! so they are not signed; the mesh key proves membership, the frame's
//! replay window makes a captured copy useless, and the page goes to the
//! asker by its node id along the routes, never to an address a frame
//! names. The target and every relay limit queries per asker with a token
//! bucket (a 4,096-step answer is 64 pages, so the burst is larger than a
//! command's), and per neighbor that handed them over (proven by its
//! frame), so a member making up askers is limited all the same; the
//! target reads nothing for an asker it has no route back to. Query
//! numbers are random, so a member off the path cannot answer a query it
//! never saw or mark its pages seen in advance. Pages are not signed: a
//! relay on the path could alter one, as it could drop it (as with point
//! updates, which are not signed either); the asker's shell checks that
//! each page lies inside the range and moves on. The asker sends again
//! every beacon interval until a page comes, or gives up at the deadline
//! ([`HistoryStatus::NoAnswer`]).
//!
//! The core keeps no history: the target's shell gets
//! [`Event::HistoryRequested`], reads its history and answers with
//! [`Node::answer_history`]; the asker gets [`Event::HistoryAnswered`].

use super::command::{ExecError, LoopGuard};
use super::routes::INFINITY;
use super::time::{Buckets, Instant};
use super::wire::{
    HistoryPage, HistoryQuery, HistoryRow, HistoryStatus, Message, Name, NodeId, MAX_HISTORY_ROWS,
};
use super::{Destination, Event, Node};
use std::collections::BTreeMap;
use std::time::Duration;

/// Most of our queries awaiting a page.
pub const MAX_PENDING_QUERIES: usize = 16;
/// Queries and pages remembered for the loop guard.
const SEEN_QUERIES: usize = 256;
/// Queries a node may send through or to us in a burst (one whole
/// 4,096-step answer)...
pub const QUERY_BURST: u32 = 64;
/// ...and then one per this long.
pub const QUERY_REFILL: Duration = Duration::from_millis(50);
/// Queries one neighbor may hand us in a burst, whoever they say asked
/// (a relay carries several askers' queries)...
pub const SENDER_BURST: u32 = 128;
/// ...and then one per this long.
pub const SENDER_REFILL: Duration = Duration::from_millis(25);

/// One of our queries awaiting its page.
#[derive(Debug, Clone)]
struct Pending {
    query: HistoryQuery,
    deadline: Instant,
    /// When to send it again (never for a query to ourselves).
    next_try: Option<Instant>,
    /// A relay said it has no route (a hint: anyone can say so).
    no_route: bool,
}

/// Loop-guard key: origin, id, attempt, and for a page who answers.
type SeenKey = (NodeId, u32, u8, Option<NodeId>);

/// The query bookkeeping of one node, bounded.
#[derive(Debug, Default)]
pub(super) struct Queries {
    pending: BTreeMap<u32, Pending>,
    seen: LoopGuard<SeenKey, SEEN_QUERIES>,
    /// Per asker (as the query says).
    buckets: Option<Buckets<NodeId>>,
    /// Per neighbor that handed us queries (as the frame proves): a member
    /// making up askers is limited all the same.
    senders: Option<Buckets<NodeId>>,
}

impl Queries {
    /// Notes a message; false if it was seen before.
    fn first_sight(&mut self, key: SeenKey) -> bool {
        self.seen.first_sight(key)
    }

    /// The earliest deadline or retry of a pending query.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.pending
            .values()
            .flat_map(|p| [Some(p.deadline), p.next_try])
            .flatten()
            .min()
    }

    /// Drops the rate limits kept for a forgotten node.
    pub(super) fn forget(&mut self, id: NodeId) {
        for buckets in [self.buckets.as_mut(), self.senders.as_mut()]
            .into_iter()
            .flatten()
        {
            buckets.remove(&id);
        }
    }
}

/// One page of `steps` (in time order) from `from_min` on: at most
/// [`MAX_HISTORY_ROWS`] rows, and where the next page starts if there are
/// more.
pub fn page(
    steps: impl IntoIterator<Item = HistoryRow>,
    from_min: u32,
) -> (heapless::Vec<HistoryRow, MAX_HISTORY_ROWS>, Option<u32>) {
    let mut rows = heapless::Vec::new();
    for row in steps.into_iter().filter(|r| r.minute >= from_min) {
        if rows.push(row).is_err() {
            return (rows, Some(row.minute));
        }
    }
    (rows, None)
}

impl Node {
    /// Asks `target` for one page of `point`'s history: the steps from
    /// `since_min` to `until_min` (exclusive), `step_min` wide, from
    /// `from_min` on (minutes since the Unix epoch). The page comes as
    /// [`Event::HistoryAnswered`] with the returned query number, at the
    /// latest after `timeout` (then as [`HistoryStatus::NoAnswer`]).
    pub fn query_history(
        &mut self,
        now: Instant,
        target: NodeId,
        point: Name,
        (since_min, until_min, step_min): (u32, u32, u32),
        from_min: u32,
        timeout: Duration,
    ) -> Result<u32, ExecError> {
        if self.leaving {
            return Err(ExecError::Leaving);
        }
        if self.queries.pending.len() >= MAX_PENDING_QUERIES {
            return Err(ExecError::TooManyPending);
        }
        let hop = self.first_hop(now, target)?;
        // Random, so a member off the path cannot guess the number of a
        // query to answer it falsely or mark it seen in advance.
        let mut id = self.rng.next_u64() as u32;
        while self.queries.pending.contains_key(&id) {
            id = self.rng.next_u64() as u32;
        }
        let query = HistoryQuery {
            origin: self.id,
            id,
            target,
            hops_left: INFINITY,
            attempt: 0,
            point,
            since_min,
            until_min,
            step_min: step_min.max(1),
            from_min: from_min.clamp(since_min, until_min.max(since_min)),
        };
        let retry = self.config.beacon_interval;
        self.queries.pending.insert(
            id,
            Pending {
                query: query.clone(),
                deadline: now + timeout,
                next_try: hop.map(|_| now + retry),
                no_route: false,
            },
        );
        self.queries.first_sight((self.id, id, 0, None));
        self.stats.history_queries_sent += 1;
        match hop {
            None => self.push_event(Event::HistoryRequested(query)),
            Some(addr) => self.send(Destination::Unicast(addr), &Message::HistoryQuery(query)),
        }
        Ok(id)
    }

    /// The shell's answer to [`Event::HistoryRequested`]: one page goes
    /// back to the asker.
    pub fn answer_history(
        &mut self,
        now: Instant,
        request: &HistoryQuery,
        status: HistoryStatus,
        rows: heapless::Vec<HistoryRow, MAX_HISTORY_ROWS>,
        next_min: Option<u32>,
    ) {
        self.stats.history_queries_served += 1;
        let page = HistoryPage {
            origin: request.origin,
            id: request.id,
            target: self.id,
            hops_left: INFINITY,
            attempt: request.attempt,
            status,
            rows,
            next_min,
        };
        self.route_page(now, page);
    }

    /// A page from this node itself (a refusal) for `query`.
    fn refuse_query(&mut self, now: Instant, query: &HistoryQuery, status: HistoryStatus) {
        let page = HistoryPage {
            origin: query.origin,
            id: query.id,
            target: self.id,
            hops_left: INFINITY,
            attempt: query.attempt,
            status,
            rows: heapless::Vec::new(),
            next_min: None,
        };
        self.route_page(now, page);
    }

    /// Pending queries whose time is up get their `NoAnswer`; the others
    /// due for a retry are sent again, along the route of now.
    pub(super) fn expire_queries(&mut self, now: Instant) {
        let retry = self.config.beacon_interval;
        let due: Vec<u32> = self
            .queries
            .pending
            .iter()
            .filter(|(_, p)| p.deadline > now && p.next_try.is_some_and(|at| at <= now))
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            let Some(pending) = self.queries.pending.get_mut(&id) else {
                continue;
            };
            pending.query.attempt = pending.query.attempt.saturating_add(1);
            pending.next_try = Some(now + retry);
            let query = pending.query.clone();
            let Some(addr) = self.next_hop(now, query.target) else {
                continue;
            };
            self.queries.first_sight((self.id, id, query.attempt, None));
            self.stats.history_queries_retried += 1;
            self.send(Destination::Unicast(addr), &Message::HistoryQuery(query));
        }
        let expired: Vec<u32> = self
            .queries
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in expired {
            let Some(pending) = self.queries.pending.remove(&id) else {
                continue;
            };
            self.stats.history_queries_unanswered += 1;
            let status = if pending.no_route {
                HistoryStatus::NoRoute
            } else {
                HistoryStatus::NoAnswer
            };
            self.push_event(Event::HistoryAnswered {
                id,
                target: pending.query.target,
                status,
                rows: Vec::new(),
                next_min: None,
            });
        }
    }

    /// A query that `sender` (proven by the frame) handed us.
    pub(super) fn on_history_query(&mut self, now: Instant, sender: NodeId, query: HistoryQuery) {
        let key = (query.origin, query.id, query.attempt, None);
        if !self.queries.first_sight(key) {
            self.stats.history_dropped += 1;
            return;
        }
        if query.origin == self.id {
            // Our own queries never come back to us as queries.
            self.stats.history_dropped += 1;
            return;
        }
        let max_buckets = self.config.max_nodes;
        let from_sender = self
            .queries
            .senders
            .get_or_insert_with(|| Buckets::new(SENDER_BURST, SENDER_REFILL, max_buckets))
            .allow(now, sender);
        if !from_sender {
            // Whoever it claims asked, this neighbor sends too many: no
            // answer (it would go to the claimed asker).
            self.stats.history_rate_limited += 1;
            return;
        }
        if !self
            .queries
            .buckets
            .get_or_insert_with(|| Buckets::new(QUERY_BURST, QUERY_REFILL, max_buckets))
            .allow(now, query.origin)
        {
            self.stats.history_rate_limited += 1;
            if query.target == self.id {
                self.refuse_query(now, &query, HistoryStatus::RateLimited);
            }
            return;
        }
        if query.target == self.id {
            if self.next_hop(now, query.origin).is_none() {
                // No way back: reading the history would be for nothing.
                self.stats.history_dropped += 1;
                return;
            }
            self.push_event(Event::HistoryRequested(query));
            return;
        }
        let Some(hops_left) = query.hops_left.checked_sub(1).filter(|&h| h > 0) else {
            self.stats.history_dropped += 1;
            return;
        };
        match self.next_hop(now, query.target) {
            Some(addr) => {
                self.stats.history_relayed += 1;
                let relayed = HistoryQuery { hops_left, ..query };
                self.send(Destination::Unicast(addr), &Message::HistoryQuery(relayed));
            }
            None => self.refuse_query(now, &query, HistoryStatus::NoRoute),
        }
    }

    pub(super) fn on_history_page(&mut self, now: Instant, page: HistoryPage) {
        let key = (page.origin, page.id, page.attempt, Some(page.target));
        if !self.queries.first_sight(key) {
            self.stats.history_dropped += 1;
            return;
        }
        if page.origin == self.id {
            self.route_page(now, page);
            return;
        }
        let Some(hops_left) = page.hops_left.checked_sub(1).filter(|&h| h > 0) else {
            self.stats.history_dropped += 1;
            return;
        };
        self.route_page(now, HistoryPage { hops_left, ..page });
    }

    /// Delivers a page here, or sends it one hop closer to its asker.
    fn route_page(&mut self, now: Instant, page: HistoryPage) {
        if page.origin != self.id {
            match self.next_hop(now, page.origin) {
                Some(addr) => {
                    if page.target != self.id {
                        self.stats.history_relayed += 1;
                    }
                    self.send(Destination::Unicast(addr), &Message::HistoryPage(page));
                }
                None => self.stats.history_dropped += 1,
            }
            return;
        }
        let Some(pending) = self.queries.pending.get_mut(&page.id) else {
            return;
        };
        if page.target != pending.query.target {
            if page.status == HistoryStatus::NoRoute {
                pending.no_route = true;
            } else {
                self.stats.history_dropped += 1;
            }
            return;
        }
        if page.status == HistoryStatus::NoAnswer {
            // Never sent by a real node.
            self.stats.history_dropped += 1;
            return;
        }
        self.queries.pending.remove(&page.id);
        self.push_event(Event::HistoryAnswered {
            id: page.id,
            target: page.target,
            status: page.status,
            rows: page.rows.into_iter().collect(),
            next_min: page.next_min,
        });
    }
}

#[cfg(test)]
mod tests;
