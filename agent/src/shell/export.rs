//! `[[export]]`: this node's own points into an existing time-series
//! engine, as InfluxDB line protocol over HTTP (InfluxDB 1.x and 2.x,
//! VictoriaMetrics, Telegraf, QuestDB take it).
//!
//! Every node exports only the points it reads itself, so nothing arrives
//! twice and no node has to be chosen. Each reading the node publishes
//! becomes one line, `POINT,node=NODE,unit=UNIT value=V TIMESTAMP_NS`
//! (numbers and booleans as 1/0; text and errors are not samples), queued
//! in a bounded buffer: when the engine is down the buffer keeps the
//! newest `buffer` lines and drops (and counts) the oldest. A task per
//! export sends what waits every `interval`, `batch` lines a request, and
//! after a failure tries again after 1, 2, 4 ... 60 s; an answer 400
//! (lines the engine refuses) drops that batch, counted, so one bad line
//! cannot block the rest.

use super::fetch;
use shoal_config::ExportSection;
use shoal_core::wire::Value;
use shoal_core::{Event, Node};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// One export's lines and counters, shared by the loop and its task.
#[derive(Debug, Default)]
struct Queue {
    lines: VecDeque<String>,
    /// The sequence number of `lines[0]` (lines are numbered as queued).
    front: u64,
    capacity: usize,
    sent: u64,
    dropped: u64,
    rejected: u64,
    failures: u64,
    last_error: Option<String>,
    /// The sequence number after the last line of the request under way
    /// (`front` when none is).
    in_flight_end: u64,
    /// Lines of the request under way pushed out of the buffer meanwhile:
    /// sent if the request succeeds, dropped if it fails.
    left_in_flight: u64,
}

impl Queue {
    fn push(&mut self, line: String) {
        if self.lines.len() >= self.capacity {
            self.lines.pop_front();
            if self.front < self.in_flight_end {
                self.left_in_flight += 1;
            } else {
                self.dropped += 1;
            }
            self.front += 1;
        }
        self.lines.push_back(line);
    }

    /// The request of the lines below `end` ended: `Some(accepted)` when
    /// the engine answered (2xx: `true`; refused: `false`), `None` when it
    /// failed. Every line of it is counted once: sent, rejected or dropped.
    fn finish_request(&mut self, end: u64, answered: Option<bool>) {
        let left = std::mem::take(&mut self.left_in_flight);
        match answered {
            Some(accepted) => {
                let removed = self.remove_until(end) + left;
                if accepted {
                    self.sent += removed;
                } else {
                    self.rejected += removed;
                }
            }
            None => self.dropped += left,
        }
        self.in_flight_end = self.front;
    }

    /// Removes the lines numbered below `end` (those sent, or refused).
    fn remove_until(&mut self, end: u64) -> u64 {
        let count = end.saturating_sub(self.front).min(self.lines.len() as u64);
        self.lines.drain(..count as usize);
        self.front += count;
        count
    }
}

/// One `[[export]]` and its sending task.
#[derive(Debug)]
struct Export {
    section: ExportSection,
    queue: Rc<RefCell<Queue>>,
    _task: smol::Task<()>,
}

/// Every `[[export]]` of this node.
#[derive(Debug, Default)]
pub struct Exports {
    exports: Vec<Export>,
}

/// The request headers of an export: content type and credentials.
fn headers(section: &ExportSection) -> Result<String, String> {
    let read = super::files::read_first_line;
    let mut text = "Content-Type: text/plain; charset=utf-8\r\n".to_owned();
    if let Some(path) = &section.token_file {
        text.push_str(&format!(
            "Authorization: Token {}\r\n",
            read(path, "export.token_file")?
        ));
    }
    if section.username.is_some() || section.password_file.is_some() {
        let password = match &section.password_file {
            Some(path) => Some(read(path, "export.password_file")?),
            None => None,
        };
        let user = section.username.as_deref().unwrap_or("");
        text.push_str(&fetch::basic_auth(user, password.as_deref()));
    }
    Ok(text)
}

/// Checks an export's credential files (for `shoal check` and `run`).
pub fn check(section: &ExportSection) -> Result<(), String> {
    headers(section).map(|_| ())
}

impl Exports {
    /// Starts a task per section.
    pub fn start(ex: &smol::LocalExecutor<'static>, sections: &[ExportSection]) -> Exports {
        let mut exports = Exports::default();
        exports.reload(ex, sections);
        exports
    }

    /// The exports of `sections` from now on: an unchanged one keeps its
    /// buffer and task; a changed one to the same engine keeps its buffer
    /// (cut to the new size, counted); a new one starts empty. What waits
    /// for a removed export is said in the log.
    pub fn reload(&mut self, ex: &smol::LocalExecutor<'static>, sections: &[ExportSection]) {
        let mut previous = std::mem::take(&mut self.exports);
        for section in sections {
            if let Some(index) = previous.iter().position(|e| e.section == *section) {
                self.exports.push(previous.swap_remove(index));
                continue;
            }
            let headers = match headers(section) {
                Ok(headers) => headers,
                Err(why) => {
                    log::warn!("export to {}: {why}; not exporting", section.url_text);
                    continue;
                }
            };
            // The same engine with other settings keeps what waits for it.
            let same_engine = previous
                .iter()
                .position(|e| e.section.url == section.url && e.section.kind == section.kind);
            let queue = match same_engine {
                Some(index) => {
                    let old = previous.swap_remove(index);
                    let mut waiting = old.queue.borrow_mut();
                    waiting.capacity = section.buffer;
                    while waiting.lines.len() > section.buffer {
                        waiting.lines.pop_front();
                        waiting.front += 1;
                        waiting.dropped += 1;
                    }
                    drop(waiting);
                    old.queue
                }
                None => Rc::new(RefCell::new(Queue {
                    capacity: section.buffer,
                    ..Queue::default()
                })),
            };
            log::info!(
                "export: this node's points matching {:?} to {} every {}",
                section.points,
                section.url_text,
                shoal_config::format_duration(section.interval)
            );
            let task = ex.spawn(send(section.clone(), headers, Rc::clone(&queue)));
            self.exports.push(Export {
                section: section.clone(),
                queue,
                _task: task,
            });
        }
        for gone in previous {
            let waiting = gone.queue.borrow().lines.len();
            if waiting > 0 {
                log::warn!(
                    "export to {} removed: {waiting} samples that waited for it are dropped",
                    gone.section.url_text
                );
            }
        }
    }

    /// A reading of this node's, published: one line for every export
    /// whose `points` it matches.
    pub fn observe(&mut self, node: &Node, event: &Event) {
        let Event::PointChanged { origin, name } = event else {
            return;
        };
        if self.exports.is_empty() || *origin != node.id() {
            return;
        }
        let Some(point) = node.store().point(*origin, name) else {
            return;
        };
        let own = node.name().to_string();
        let Some(line) = line(name, &own, point.unit.as_str(), &point.value, point.ts_ms) else {
            return;
        };
        let full = format!("{own}/{name}");
        for export in &self.exports {
            let pattern = export.section.points.as_bytes();
            let target = if export.section.points.contains('/') {
                full.as_bytes()
            } else {
                name.as_bytes()
            };
            if shoal_config::expr::glob(pattern, target) {
                export.queue.borrow_mut().push(line.clone());
            }
        }
    }

    /// Each export's state for `/api/stats`.
    pub fn status_json(&self) -> serde_json::Value {
        self.exports
            .iter()
            .map(|export| {
                let q = export.queue.borrow();
                serde_json::json!({
                    "url": export.section.url_text,
                    "pending": q.lines.len(),
                    "sent": q.sent,
                    "dropped": q.dropped,
                    "rejected": q.rejected,
                    "failures": q.failures,
                    "last_error": q.last_error,
                })
            })
            .collect()
    }

    /// Per export (its URL): sent, dropped, rejected, failures, pending.
    pub fn metrics(&self) -> Vec<(String, [u64; 5])> {
        self.exports
            .iter()
            .map(|export| {
                let q = export.queue.borrow();
                (
                    export.section.url_text.clone(),
                    [
                        q.sent,
                        q.dropped,
                        q.rejected,
                        q.failures,
                        q.lines.len() as u64,
                    ],
                )
            })
            .collect()
    }
}

/// `POINT,node=NODE[,unit=UNIT] value=V TS_NS`, or `None` for text and errors.
pub fn line(point: &str, node: &str, unit: &str, value: &Value, ts_ms: u64) -> Option<String> {
    let number = match value {
        Value::Float(v) if v.is_finite() => *v,
        Value::Int(v) => *v as f64,
        Value::Bool(b) => f64::from(u8::from(*b)),
        _ => return None,
    };
    let escape = |text: &str, extra: &[char]| {
        let mut out = String::with_capacity(text.len());
        for c in text.chars() {
            if c == ',' || c == ' ' || c == '\\' || extra.contains(&c) {
                out.push('\\');
            }
            out.push(if c.is_control() { ' ' } else { c });
        }
        out
    };
    let mut line = format!("{},node={}", escape(point, &[]), escape(node, &['=']));
    if !unit.is_empty() {
        line.push_str(&format!(",unit={}", escape(unit, &['='])));
    }
    line.push_str(&format!(
        " value={number:?} {}",
        ts_ms.saturating_mul(1_000_000)
    ));
    Some(line)
}

/// The export's task: every `interval` (or after a failure, its backoff),
/// sends what waits, a batch a request.
async fn send(section: ExportSection, headers: String, queue: Rc<RefCell<Queue>>) {
    let mut failures = 0u32;
    loop {
        let wait = if failures == 0 {
            section.interval
        } else {
            (Duration::from_secs(1) * (1u32 << (failures - 1).min(6))).min(MAX_BACKOFF)
        };
        smol::Timer::after(wait).await;
        loop {
            let (start, batch): (u64, Vec<String>) = {
                let q = queue.borrow();
                (
                    q.front,
                    q.lines.iter().take(section.batch).cloned().collect(),
                )
            };
            if batch.is_empty() {
                break;
            }
            let end = start + batch.len() as u64;
            queue.borrow_mut().in_flight_end = end;
            let body = batch.join("\n");
            let answer = futures_lite::future::or(
                async {
                    Some(fetch::exchange(&section.url, "POST", &headers, body.as_bytes()).await)
                },
                async {
                    smol::Timer::after(REQUEST_TIMEOUT).await;
                    None
                },
            )
            .await;
            let outcome = match answer {
                None => Err("no answer within 10s".to_owned()),
                Some(Err(why)) => Err(why),
                Some(Ok(answer)) if (200..300).contains(&answer.status) => Ok(true),
                Some(Ok(answer)) if answer.status == 400 => {
                    let said: String = String::from_utf8_lossy(&answer.body)
                        .chars()
                        .take(200)
                        .collect();
                    log::warn!(
                        "export to {}: the engine refused {} lines: {said}",
                        section.url_text,
                        batch.len()
                    );
                    Ok(false)
                }
                Some(Ok(answer)) => Err(format!("HTTP {}", answer.status_line)),
            };
            let mut q = queue.borrow_mut();
            q.finish_request(end, outcome.as_ref().ok().copied());
            match outcome {
                Ok(_) => {
                    if failures > 0 {
                        log::info!("export to {}: sending again", section.url_text);
                    }
                    failures = 0;
                    q.last_error = None;
                    if batch.len() < section.batch {
                        break;
                    }
                }
                Err(why) => {
                    q.failures += 1;
                    if failures == 0 {
                        log::warn!(
                            "export to {}: {why}; {} lines wait (at most {}), trying again with backoff",
                            section.url_text,
                            q.lines.len(),
                            q.capacity
                        );
                    }
                    q.last_error = Some(why);
                    failures = failures.saturating_add(1);
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
