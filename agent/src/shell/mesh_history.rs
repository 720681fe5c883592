//! History through the mesh: another node's point asked of its origin a
//! page at a time (`shoal_core::queries`), and this node's own history
//! served to others.
//!
//! ```text
//! GET /api/points/b-2/temp/history (on a-1)
//!   └─ ask: Node::query_history(from = since) ──► b-2: Event::HistoryRequested
//!                                                   └─ answer: the range read once
//!                                                      (cached), one page ≤ 64 steps
//!   ◄── Event::HistoryAnswered {rows, next} ◄────────── Node::answer_history
//!   └─ next page from `next` until the range is whole, then the HTTP answer
//! ```
//!
//! Bounded: at most [`MAX_FETCHES`] answers are being gathered here (each
//! at most [`MAX_STEPS`] steps, 65 pages, 60 s); for others, at most 4
//! ranges are being read at once, then one every 2 s node-wide (beyond,
//! an explicit refusal), and the last 8 ranges read are kept 30 s so the
//! pages of one answer read the file once.

use super::api::Answer;
use super::history::Step;
use super::recorder::Recorder;
use serde_json::json;
use shoal_core::command::ExecError;
use shoal_core::queries;
use shoal_core::time::Instant;
use shoal_core::wire::{HistoryQuery, HistoryRow, HistoryStatus, Name, NodeId};
use shoal_core::Node;
use smol::channel::{Receiver, Sender};
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::time::Duration;

/// The most steps one history answer has.
pub const MAX_STEPS: u64 = 4096;
/// Answers being gathered from other nodes at once.
pub const MAX_FETCHES: usize = 8;
/// Ranges being read for other nodes at once.
const MAX_READS: usize = 4;
/// Requests waiting for those reads.
const MAX_WAITING: usize = 32;
/// Ranges read for others kept to answer their next pages (each at most
/// 4,096 steps of 16 bytes).
const CACHED: usize = 8;
/// Reads of ranges not in the cache, for others: a burst...
const READ_BURST: f64 = 4.0;
/// ...and then one per this long, whoever asks (a member making up
/// ranges and askers cannot keep the disk busy).
const READ_REFILL: Duration = Duration::from_secs(2);
/// How long one answer may take, all its pages together.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);
/// The most pages one answer takes (4,096 steps in pages of 64).
const MAX_PAGES: u32 = 65;
/// How long a range read for others is kept.
const CACHE_FOR: Duration = Duration::from_secs(30);
/// How long one page may take (the core sends the query again every
/// beacon interval meanwhile).
const PAGE_TIMEOUT: Duration = Duration::from_secs(5);

/// A range of a point's history: point, since, until, step (minutes).
type Range = (Name, u32, u32, u32);

/// One answer being gathered page by page.
#[derive(Debug)]
struct Fetch {
    reply: Sender<Answer>,
    target: NodeId,
    /// `NODE/NAME`, for messages.
    what: String,
    range: Range,
    steps: Vec<Step>,
    /// The first step of the page asked for now.
    from_min: u32,
    pages: u32,
    started: Instant,
}

/// A range read from the file for another node.
#[derive(Debug)]
struct Read {
    range: Range,
    steps: Result<Vec<Step>, String>,
}

/// Both sides of history through the mesh.
#[derive(Debug)]
pub struct MeshHistory {
    fetches: BTreeMap<u32, Fetch>,
    cache: VecDeque<(Range, Instant, Rc<Vec<HistoryRow>>)>,
    /// Ranges being read, with the requests waiting for them.
    reading: BTreeMap<Range, Vec<HistoryQuery>>,
    reads_tx: Sender<Read>,
    reads_rx: Receiver<Read>,
    /// Reads for others the budget allows now, and when it was counted.
    read_budget: (f64, Option<Instant>),
    /// Requests for others refused: too many waiting or read, too large,
    /// or the file failed.
    pub refused: u64,
    /// Pages from others that made no sense (rows outside the range or
    /// out of order, a next page that does not move on): the answer ends.
    pub bad_pages: u64,
}

impl Default for MeshHistory {
    fn default() -> MeshHistory {
        let (reads_tx, reads_rx) = smol::channel::bounded(MAX_READS);
        MeshHistory {
            fetches: BTreeMap::new(),
            cache: VecDeque::new(),
            reading: BTreeMap::new(),
            reads_tx,
            reads_rx,
            read_budget: (READ_BURST, None),
            refused: 0,
            bad_pages: 0,
        }
    }
}

/// A query's range in minutes since the Unix epoch: `since` before
/// `now_ms`, until the minute after now, `step` wide.
pub fn range(point: Name, since: Duration, step: Duration, now_ms: u64) -> Range {
    let minute = |ms: u64| u32::try_from(ms / 60_000).unwrap_or(u32::MAX);
    let since_ms = now_ms.saturating_sub(u64::try_from(since.as_millis()).unwrap_or(u64::MAX));
    let step_min = u32::try_from((step.as_secs() / 60).max(1)).unwrap_or(u32::MAX);
    (
        point,
        minute(since_ms),
        minute(now_ms).saturating_add(1),
        step_min,
    )
}

/// How many steps `range` has (the asker and the target count alike).
pub fn steps_in(range: &Range) -> u64 {
    u64::from(range.2.saturating_sub(range.1)).div_ceil(u64::from(range.3.max(1)))
}

/// The JSON answer of `steps`.
pub fn steps_json(steps: &[Step]) -> serde_json::Value {
    steps
        .iter()
        .map(|s| json!({"ts_ms": s.ts_ms, "min": s.min, "avg": s.avg, "max": s.max}))
        .collect()
}

impl MeshHistory {
    /// Asks `target` for `range` of its point for the HTTP request `reply`
    /// waits on; a refusal is answered at once.
    pub fn ask(
        &mut self,
        node: &mut Node,
        now: Instant,
        target: NodeId,
        what: String,
        range: Range,
        reply: Sender<Answer>,
    ) {
        if self.fetches.len() >= MAX_FETCHES {
            let _ = reply.try_send(Answer::error(
                503,
                format!(
                    "{MAX_FETCHES} history answers are being gathered from other nodes: try again"
                ),
            ));
            return;
        }
        let fetch = Fetch {
            reply,
            target,
            what,
            steps: Vec::new(),
            range: range.clone(),
            from_min: range.1,
            pages: 0,
            started: now,
        };
        self.next_page(node, now, fetch, range.1);
    }

    /// Asks for the page of `fetch` from `from_min` on.
    fn next_page(&mut self, node: &mut Node, now: Instant, mut fetch: Fetch, from_min: u32) {
        if fetch.reply.is_closed() {
            // The client went away: nothing more to ask for.
            return;
        }
        fetch.from_min = from_min;
        fetch.pages += 1;
        let (point, since, until, step) = fetch.range.clone();
        match node.query_history(
            now,
            fetch.target,
            point,
            (since, until, step),
            from_min,
            PAGE_TIMEOUT,
        ) {
            Ok(id) => {
                self.fetches.insert(id, fetch);
            }
            Err(error) => {
                let status = match error {
                    ExecError::UnknownNode => 404,
                    ExecError::TooManyPending => 503,
                    ExecError::Unreachable | ExecError::Leaving => 504,
                };
                let _ = fetch
                    .reply
                    .try_send(Answer::error(status, format!("{}: {error}", fetch.what)));
            }
        }
    }

    /// A page came (or none in time): the next is asked for, or the
    /// answer goes out.
    pub fn on_answered(
        &mut self,
        node: &mut Node,
        now: Instant,
        id: u32,
        status: HistoryStatus,
        rows: Vec<HistoryRow>,
        next_min: Option<u32>,
    ) {
        let Some(mut fetch) = self.fetches.remove(&id) else {
            return;
        };
        let failed = |text: &str| Answer::error(504, format!("{}: {text}", fetch.what));
        let answer = match status {
            HistoryStatus::Rows if !fits(&fetch, &rows, next_min) => {
                self.bad_pages += 1;
                Answer::error(
                    502,
                    format!(
                        "{}: a page of its history made no sense (rows outside the range, or no progress)",
                        fetch.what
                    ),
                )
            }
            HistoryStatus::Rows => {
                fetch.steps.extend(rows.iter().map(|r| Step {
                    ts_ms: u64::from(r.minute) * 60_000,
                    min: f64::from(r.min),
                    avg: f64::from(r.avg),
                    max: f64::from(r.max),
                }));
                match next_min {
                    Some(_) if now.saturating_since(fetch.started) > FETCH_TIMEOUT => {
                        failed("its pages took too long")
                    }
                    Some(_) if fetch.pages >= MAX_PAGES => failed("too many pages"),
                    Some(next) => return self.next_page(node, now, fetch, next),
                    None => Answer {
                        status: 200,
                        body: steps_json(&fetch.steps),
                    },
                }
            }
            HistoryStatus::Refused => Answer::error(
                503,
                format!(
                    "{}: that node refused (a range over {MAX_STEPS} steps, or it is busy reading history for others: try again)",
                    fetch.what
                ),
            ),
            HistoryStatus::NoHistory => Answer::error(
                404,
                format!(
                    "{}: that node keeps no history ([history] retain = \"0s\")",
                    fetch.what
                ),
            ),
            HistoryStatus::Failed => failed("that node could not read its history file"),
            HistoryStatus::RateLimited => Answer::error(
                503,
                format!(
                    "{}: that node refused: too many history queries",
                    fetch.what
                ),
            ),
            HistoryStatus::NoRoute => failed("a node on the way had no route to it"),
            HistoryStatus::NoAnswer => failed("no answer in time"),
        };
        let _ = fetch.reply.try_send(answer);
    }

    /// Another node asks for a page of this node's history: answered from
    /// the cache, or once the range is read.
    pub fn on_requested(
        &mut self,
        node: &mut Node,
        now: Instant,
        recorder: Option<&Recorder>,
        ex: &smol::LocalExecutor<'static>,
        request: HistoryQuery,
    ) {
        let Some(recorder) = recorder else {
            node.answer_history(
                now,
                &request,
                HistoryStatus::NoHistory,
                Default::default(),
                None,
            );
            return;
        };
        let range: Range = (
            request.point.clone(),
            request.since_min,
            request.until_min,
            request.step_min,
        );
        self.cache.retain(|(_, at, _)| now < *at + CACHE_FOR);
        if let Some((_, _, rows)) = self.cache.iter().find(|(r, _, _)| *r == range) {
            let (page, next) = queries::page(rows.iter().copied(), request.from_min);
            node.answer_history(now, &request, HistoryStatus::Rows, page, next);
            return;
        }
        let waiting: usize = self.reading.values().map(Vec::len).sum();
        if let Some(list) = self
            .reading
            .get_mut(&range)
            .filter(|_| waiting < MAX_WAITING)
        {
            list.push(request);
            return;
        }
        if steps_in(&range) > MAX_STEPS
            || waiting >= MAX_WAITING
            || self.reading.len() >= MAX_READS
            || !self.may_read(now)
        {
            self.refused += 1;
            node.answer_history(
                now,
                &request,
                HistoryStatus::Refused,
                Default::default(),
                None,
            );
            return;
        }
        self.reading.insert(range.clone(), vec![request]);
        let read = recorder.query_minutes(&range.0, range.1, range.2, range.3);
        let done = self.reads_tx.clone();
        ex.spawn(async move {
            let steps = read.await;
            let _ = done.send(Read { range, steps }).await;
        })
        .detach();
    }

    /// Takes a read from the node-wide budget, if there is one.
    fn may_read(&mut self, now: Instant) -> bool {
        let (tokens, last) = self.read_budget;
        let refill = last.map_or(0.0, |at| {
            now.saturating_since(at).as_secs_f64() / READ_REFILL.as_secs_f64()
        });
        let tokens = (tokens + refill).min(READ_BURST);
        if tokens < 1.0 {
            self.read_budget = (tokens, Some(now));
            return false;
        }
        self.read_budget = (tokens - 1.0, Some(now));
        true
    }

    /// The next range read for another node.
    pub async fn next_read(&self) -> ReadDone {
        match self.reads_rx.recv().await {
            Ok(read) => ReadDone(read),
            Err(_) => std::future::pending().await,
        }
    }

    /// A range was read: the requests waiting for it are answered.
    pub fn on_read(&mut self, node: &mut Node, now: Instant, done: ReadDone) {
        let Read { range, steps } = done.0;
        let waiting = self.reading.remove(&range).unwrap_or_default();
        let rows: Vec<HistoryRow> = match steps {
            Ok(steps) => steps
                .iter()
                .map(|s| HistoryRow {
                    minute: u32::try_from(s.ts_ms / 60_000).unwrap_or(u32::MAX),
                    min: s.min as f32,
                    avg: s.avg as f32,
                    max: s.max as f32,
                })
                .filter(|r| r.min.is_finite() && r.avg.is_finite() && r.max.is_finite())
                .collect(),
            Err(why) => {
                log::warn!("history: cannot answer another node: {why}");
                self.refused += waiting.len() as u64;
                for request in &waiting {
                    node.answer_history(
                        now,
                        request,
                        HistoryStatus::Failed,
                        Default::default(),
                        None,
                    );
                }
                return;
            }
        };
        let rows = Rc::new(rows);
        for request in &waiting {
            let (page, next) = queries::page(rows.iter().copied(), request.from_min);
            node.answer_history(now, request, HistoryStatus::Rows, page, next);
        }
        if self.cache.len() >= CACHED {
            self.cache.pop_front();
        }
        self.cache.push_back((range, now, rows));
    }
}

/// Whether a page fits the answer gathered so far: its rows inside the
/// range, from the step asked, after the last step kept and in order, and
/// its next page (if any) further on and inside the range.
fn fits(fetch: &Fetch, rows: &[HistoryRow], next_min: Option<u32>) -> bool {
    let (_, _, until, _) = fetch.range;
    let after = fetch
        .steps
        .last()
        .map(|s| u32::try_from(s.ts_ms / 60_000).unwrap_or(u32::MAX));
    let ordered = rows.windows(2).all(|w| w[0].minute < w[1].minute);
    let inside = rows.iter().all(|r| {
        r.minute >= fetch.from_min && r.minute < until && after.is_none_or(|a| r.minute > a)
    });
    let onward = next_min.is_none_or(|next| {
        next > fetch.from_min && next < until && rows.last().is_none_or(|r| next > r.minute)
    });
    ordered && inside && onward
}

/// A range read for another node, for the agent's loop.
#[derive(Debug)]
pub struct ReadDone(Read);

#[cfg(test)]
mod tests;
