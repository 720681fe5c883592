//! The history file (`STATE_DIR/history.shb`): this node's numeric
//! readings go into [`History`] buckets, and every ten minutes the closed
//! ones are appended in one write (six an hour); once a day the file is
//! rewritten without what aged out (`[history] retain`). A file cut by a
//! power cut or a `kill -9` is read up to its last whole batch and cut
//! there, said in the log, never fatal.
//!
//! The daily rewrite and every query read the file on a blocking thread,
//! so a slow SD card never holds up the agent's loop; batches that close
//! meanwhile wait in memory (bounded, see [`history::MAX_PENDING`]). The
//! file is read a batch at a time, never whole: a query holds one batch
//! and the buckets of its point, the rewrite one batch.

use super::history::{self, Bucket, History, Step};
use shoal_core::wire::Value;
use shoal_core::{Event, Node};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often closed buckets are written.
pub const WRITE_EVERY_MS: u64 = 10 * 60_000;
/// How often the file is rewritten without what aged out.
const COMPACT_EVERY_MS: u64 = 24 * 3_600_000;
/// The file's name in the state directory.
pub const FILE_NAME: &str = "history.shb";

/// The history of this node's points and its file.
#[derive(Debug)]
pub struct Recorder {
    history: History,
    path: PathBuf,
    retain_min: u32,
    next_write_ms: u64,
    next_compact_ms: u64,
    /// A rewrite under way on a blocking thread.
    compacting: Option<smol::Task<Result<(), String>>>,
    /// The batch that rewrite carries, answered from here until it ends.
    compacting_tail: Vec<(String, Bucket)>,
    /// Writes to the file (appends and rewrites).
    pub writes: u64,
    /// Writes that failed.
    pub write_errors: u64,
}

/// What [`scan`] found: bytes of whole batches, and why it stopped early.
type Scanned = (u64, Option<String>);

/// Reads the file a batch at a time, handing each batch's buckets to
/// `each`, until its end or its first damaged batch; a missing file is
/// empty.
fn scan(path: &Path, mut each: impl FnMut(Vec<(String, Bucket)>)) -> Result<Scanned, String> {
    let file = match super::files::open_own(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, None)),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let mut reader = std::io::BufReader::new(file);
    let mut valid = 0u64;
    loop {
        let mut header = [0u8; history::HEADER];
        let got = read_up_to(&mut reader, &mut header)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if got == 0 {
            return Ok((valid, None));
        }
        let damaged = |why: &str| Ok((valid, Some(format!("{why} at byte {valid}"))));
        if got < history::HEADER {
            return damaged("a batch cut short");
        }
        let length = match history::payload_length(&header) {
            Ok(length) => length,
            Err(why) => return damaged(&why),
        };
        let mut batch = header.to_vec();
        batch.resize(history::HEADER + length, 0);
        let got = read_up_to(&mut reader, &mut batch[history::HEADER..])
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if got < length {
            return damaged("a batch cut short (a write that did not finish)");
        }
        match history::decode_batch(&batch) {
            Ok((buckets, used)) => {
                each(buckets);
                valid += used as u64;
            }
            Err(why) => return damaged(&why),
        }
    }
}

/// Reads until `buf` is full or the file ends; how much it read.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Appends `bytes` and syncs them.
fn append(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_data()
}

/// Rewrites the file with only the buckets still kept, a batch at a time
/// into a new file beside it that then takes its place, with `tail` (the
/// batch due now) at its end: the day's rewrite is also that slot's write.
/// If the rewrite fails, `tail` is appended to the old file instead.
fn compact(path: &Path, now_min: u32, retain_min: u32, tail: &[u8]) -> Result<(), String> {
    let rewritten = rewrite(path, now_min, retain_min, tail);
    if rewritten.is_err() && !tail.is_empty() {
        if let Err(error) = append(path, tail) {
            return Err(format!(
                "{}; the batch due now is lost too: {error}",
                rewritten.err().unwrap_or_default()
            ));
        }
    }
    rewritten
}

/// [`compact`] itself.
fn rewrite(path: &Path, now_min: u32, retain_min: u32, tail: &[u8]) -> Result<(), String> {
    let fresh = path.with_extension("shb.new");
    let _ = std::fs::remove_file(&fresh);
    let failed = |e: std::io::Error| format!("cannot rewrite {}: {e}", path.display());
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&fresh)
        .map_err(failed)?;
    let mut written = Ok(());
    scan(path, |buckets| {
        let kept: Vec<(String, Bucket)> = buckets
            .into_iter()
            .filter(|(_, bucket)| history::kept(bucket, now_min, retain_min))
            .collect();
        if !kept.is_empty() && written.is_ok() {
            written = out.write_all(&history::encode_batch(&kept));
        }
    })?;
    written
        .and_then(|()| out.write_all(tail))
        .and_then(|()| out.sync_all())
        .map_err(failed)?;
    std::fs::rename(&fresh, path).map_err(failed)?;
    if let Some(dir) = path.parent() {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

fn minutes(ms: u64) -> u32 {
    u32::try_from(ms / 60_000).unwrap_or(u32::MAX)
}

impl Recorder {
    /// The history in state directory `dir`, kept `retain` (`None` when
    /// zero). A damaged file is cut after its last whole batch, and said.
    pub fn open(dir: &Path, retain: Duration, now_ms: u64) -> Option<Recorder> {
        if retain.is_zero() {
            return None;
        }
        let path = dir.join(FILE_NAME);
        let mut buckets = 0usize;
        match scan(&path, |batch| buckets += batch.len()) {
            Ok((valid_len, damaged)) => {
                if let Some(why) = &damaged {
                    log::warn!(
                        "history: {} has {why}; kept the {buckets} buckets before it and cut the rest",
                        path.display(),
                    );
                    let cut = std::fs::OpenOptions::new()
                        .write(true)
                        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                        .open(&path)
                        .and_then(|file| {
                            file.set_len(valid_len)?;
                            file.sync_all()
                        });
                    if let Err(error) = cut {
                        log::warn!("history: cannot cut {}: {error}", path.display());
                    }
                }
            }
            Err(why) => log::warn!("history: {why}; starting a new one"),
        }
        Some(Recorder {
            history: History::default(),
            path,
            retain_min: u32::try_from(retain.as_secs() / 60).unwrap_or(u32::MAX),
            next_write_ms: now_ms + WRITE_EVERY_MS,
            next_compact_ms: now_ms + COMPACT_EVERY_MS / 24,
            compacting: None,
            compacting_tail: Vec::new(),
            writes: 0,
            write_errors: 0,
        })
    }

    /// A reading of this node's: into the history if it is a number.
    pub fn observe(&mut self, node: &Node, event: &Event) {
        let Event::PointChanged { origin, name } = event else {
            return;
        };
        if *origin != node.id() {
            return;
        }
        let Some(point) = node.store().point(*origin, name) else {
            return;
        };
        let value = match point.value {
            Value::Float(v) => v,
            Value::Int(v) => v as f64,
            Value::Bool(b) => f64::from(u8::from(b)),
            _ => return,
        };
        self.history.record(name, point.ts_ms, value);
    }

    /// Writes closed buckets when ten minutes passed, and starts the
    /// daily rewrite when a day passed (`ex` runs it).
    pub fn tick(&mut self, ex: &smol::LocalExecutor<'static>, now_ms: u64) {
        if let Some(task) = &self.compacting {
            if !task.is_finished() {
                return;
            }
            if let Some(task) = self.compacting.take() {
                self.compacting_tail.clear();
                self.writes += 1;
                if let Some(Err(why)) =
                    futures_lite::future::block_on(futures_lite::future::poll_once(task))
                {
                    self.write_errors += 1;
                    log::warn!("history: {why}");
                }
            }
        }
        if now_ms >= self.next_compact_ms {
            // The day's rewrite carries the batch due now: one write, so
            // a day is 144 writes (6 an hour) with its rewrite.
            self.next_compact_ms = now_ms + COMPACT_EVERY_MS;
            self.next_write_ms = now_ms + WRITE_EVERY_MS;
            self.history.close_ended(now_ms);
            let batch = self.history.take_batch();
            let tail = if batch.is_empty() {
                Vec::new()
            } else {
                history::encode_batch(&batch)
            };
            self.compacting_tail = batch;
            let (path, now_min, retain) = (self.path.clone(), minutes(now_ms), self.retain_min);
            self.compacting = Some(ex.spawn(smol::unblock(move || {
                compact(&path, now_min, retain, &tail)
            })));
            return;
        }
        if now_ms >= self.next_write_ms {
            self.next_write_ms = now_ms + WRITE_EVERY_MS;
            self.write(now_ms);
        }
    }

    /// Appends what closed by `now_ms` (at a stop: everything, even the
    /// open buckets).
    pub fn write(&mut self, now_ms: u64) {
        self.history.close_ended(now_ms);
        let batch = self.history.take_batch();
        if batch.is_empty() {
            return;
        }
        match append(&self.path, &history::encode_batch(&batch)) {
            Ok(()) => self.writes += 1,
            Err(error) => {
                self.write_errors += 1;
                log::warn!(
                    "history: cannot write {}: {error}; {} buckets lost",
                    self.path.display(),
                    batch.len()
                );
            }
        }
    }

    /// What `/api/stats` says of the history: writes, failures, the
    /// file's size.
    pub fn status_json(&self) -> serde_json::Value {
        serde_json::json!({
            "writes": self.writes,
            "write_errors": self.write_errors,
            "file_bytes": std::fs::metadata(&self.path).map_or(0, |m| m.len()),
            "retain_min": self.retain_min,
        })
    }

    /// Records one reading (tests drive the recorder without a node).
    #[cfg(test)]
    pub fn record(&mut self, point: &str, ts_ms: u64, value: f64) {
        self.history.record(point, ts_ms, value);
    }

    /// The steps of `point` from `since_ms` to `now_ms`, `step_ms` wide:
    /// the file read on a blocking thread, and what is not written yet.
    pub fn query(
        &self,
        point: &str,
        since_ms: u64,
        step_ms: u64,
        now_ms: u64,
    ) -> impl std::future::Future<Output = Result<Vec<Step>, String>> + 'static {
        let step_min = u32::try_from((step_ms / 60_000).max(1)).unwrap_or(u32::MAX);
        self.query_minutes(point, minutes(since_ms), minutes(now_ms) + 1, step_min)
    }

    /// The steps of `point` from minute `since_min` to `until_min`
    /// (exclusive), `step_min` wide (minutes since the Unix epoch).
    pub fn query_minutes(
        &self,
        point: &str,
        since_min: u32,
        until_min: u32,
        step_min: u32,
    ) -> impl std::future::Future<Output = Result<Vec<Step>, String>> + 'static {
        let path = self.path.clone();
        let point = point.to_owned();
        let mut unwritten = self.history.unwritten(&point);
        let carried = self
            .compacting_tail
            .iter()
            .filter(|(name, _)| *name == point);
        unwritten.extend(carried.map(|(_, bucket)| *bucket));
        async move {
            smol::unblock(move || {
                let mut buckets: Vec<Bucket> = Vec::new();
                scan(&path, |batch| {
                    let ours = batch.into_iter().filter(|(name, _)| *name == point);
                    buckets.extend(ours.map(|(_, bucket)| bucket));
                })?;
                buckets.extend(unwritten);
                Ok(history::query(&buckets, since_min, until_min, step_min))
            })
            .await
        }
    }
}

#[cfg(test)]
mod tests;
