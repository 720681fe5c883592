//! History on the device: each of this node's numeric points downsampled
//! into per-minute buckets (kept a day) and per-quarter-hour buckets (kept
//! `[history] retain`), as min, mean and max with a count.
//!
//! This module is the bookkeeping, with no I/O: [`History::record`] takes a
//! reading, [`History::take_batch`] hands out the buckets that closed (to
//! append to the file in one write), [`encode_batch`] / [`decode_batches`]
//! are the file format, and [`query`] answers `since` / `step` from
//! buckets. The file's owner appends one batch every ten minutes (six
//! writes an hour, kind to SD cards) and rewrites the file once a day
//! without what aged out.
//!
//! The file is a sequence of batches, each `SHB1`, its payload length
//! (u32 LE), the payload's CRC-32 and the payload: the point names it uses,
//! then its buckets. A batch stands alone, so a torn last batch (power cut
//! in the middle of a write) is found by its length or CRC and dropped
//! with what follows it; every batch before it is kept.

use std::collections::BTreeMap;

/// A bucket's width per tier, in minutes.
pub const TIERS: [u32; 2] = [1, 15];
/// How long minute buckets are kept, in minutes (a day).
pub const MINUTES_KEPT: u32 = 24 * 60;
/// Buckets waiting for the next batch at most (older ones are dropped,
/// counted): ten minutes of 1,024 points in both tiers fit.
pub const MAX_PENDING: usize = 16 * 1024;
/// The magic of a batch.
const MAGIC: &[u8; 4] = b"SHB1";
/// The largest batch payload read back (a corrupt length cannot make the
/// reader allocate more).
const MAX_BATCH: usize = 8 * 1024 * 1024;

/// Min, mean and max of the readings of one point in one bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// Tier: 0 minutes, 1 quarter hours.
    pub tier: u8,
    /// Start, in minutes since the Unix epoch.
    pub start: u32,
    /// Readings in it.
    pub count: u32,
    /// Smallest.
    pub min: f32,
    /// Mean.
    pub mean: f32,
    /// Largest.
    pub max: f32,
}

impl Bucket {
    fn new(tier: u8, start: u32, value: f64) -> Bucket {
        Bucket {
            tier,
            start,
            count: 1,
            min: value as f32,
            mean: value as f32,
            max: value as f32,
        }
    }

    fn add(&mut self, value: f64) {
        let n = f64::from(self.count);
        self.mean = ((f64::from(self.mean) * n + value) / (n + 1.0)) as f32;
        self.min = self.min.min(value as f32);
        self.max = self.max.max(value as f32);
        self.count = self.count.saturating_add(1);
    }

    /// Its end, in minutes.
    pub fn end(&self) -> u32 {
        self.start
            .saturating_add(TIERS[usize::from(self.tier.min(1))])
    }
}

/// The open buckets of this node's points and the closed ones not yet
/// written.
#[derive(Debug, Default)]
pub struct History {
    open: BTreeMap<(String, u8), Bucket>,
    pending: Vec<(String, Bucket)>,
    /// Closed buckets dropped because the batch was full.
    pub dropped: u64,
}

impl History {
    /// A reading of `point` at `ts_ms` (Unix ms): into its open bucket of
    /// each tier; a bucket it leaves behind is closed and waits for the
    /// next batch. Non-finite values are not samples, nor values beyond
    /// what a bucket's `f32` holds (±3.4e38): every node answers the same.
    pub fn record(&mut self, point: &str, ts_ms: u64, value: f64) {
        if !(value as f32).is_finite() {
            return;
        }
        let minute = u32::try_from(ts_ms / 60_000).unwrap_or(u32::MAX);
        for (tier, width) in TIERS.iter().enumerate() {
            let tier = tier as u8;
            let start = minute - minute % width;
            let key = (point.to_owned(), tier);
            match self.open.get_mut(&key) {
                Some(bucket) if bucket.start == start => bucket.add(value),
                // A reading older than the open bucket (a clock step back)
                // joins it rather than reopening the past.
                Some(bucket) if start < bucket.start => bucket.add(value),
                Some(bucket) => {
                    let closed = std::mem::replace(bucket, Bucket::new(tier, start, value));
                    self.close(point, closed);
                }
                None => {
                    self.open.insert(key, Bucket::new(tier, start, value));
                }
            }
        }
    }

    fn close(&mut self, point: &str, bucket: Bucket) {
        if self.pending.len() >= MAX_PENDING {
            self.dropped += 1;
            return;
        }
        self.pending.push((point.to_owned(), bucket));
    }

    /// Closes every open bucket that ended by `now_ms` (a point that
    /// stopped reading still gets its last buckets written).
    pub fn close_ended(&mut self, now_ms: u64) {
        let minute = u32::try_from(now_ms / 60_000).unwrap_or(u32::MAX);
        let ended: Vec<(String, u8)> = self
            .open
            .iter()
            .filter(|(_, bucket)| bucket.end() <= minute)
            .map(|(key, _)| key.clone())
            .collect();
        for key in ended {
            if let Some(bucket) = self.open.remove(&key) {
                self.close(&key.0, bucket);
            }
        }
    }

    /// The closed buckets for the next write (empty: nothing to write).
    pub fn take_batch(&mut self) -> Vec<(String, Bucket)> {
        std::mem::take(&mut self.pending)
    }

    /// Buckets of `point` not on disk yet: waiting, then open.
    pub fn unwritten(&self, point: &str) -> Vec<Bucket> {
        let waiting = self
            .pending
            .iter()
            .filter(|(name, _)| name == point)
            .map(|(_, bucket)| *bucket);
        let open = self
            .open
            .iter()
            .filter(|((name, _), _)| name == point)
            .map(|(_, bucket)| *bucket);
        waiting.chain(open).collect()
    }
}

/// CRC-32 (IEEE 802.3), bitwise.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in bytes {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// One batch of buckets as bytes.
pub fn encode_batch(buckets: &[(String, Bucket)]) -> Vec<u8> {
    let mut names: Vec<&str> = buckets.iter().map(|(name, _)| name.as_str()).collect();
    shoal_config::order::sort(&mut names);
    names.dedup();
    let mut payload = Vec::new();
    payload.extend_from_slice(&(names.len() as u16).to_le_bytes());
    for name in &names {
        let bytes = &name.as_bytes()[..name.len().min(255)];
        payload.push(bytes.len() as u8);
        payload.extend_from_slice(bytes);
    }
    payload.extend_from_slice(&(buckets.len() as u32).to_le_bytes());
    for (name, bucket) in buckets {
        let index = names.binary_search(&name.as_str()).unwrap_or(0) as u16;
        payload.extend_from_slice(&index.to_le_bytes());
        payload.push(bucket.tier);
        payload.extend_from_slice(&bucket.start.to_le_bytes());
        payload.extend_from_slice(&bucket.count.to_le_bytes());
        for value in [bucket.min, bucket.mean, bucket.max] {
            payload.extend_from_slice(&value.to_le_bytes());
        }
    }
    let mut out = Vec::with_capacity(payload.len() + 12);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// What reading a history file found.
#[derive(Debug, Default, PartialEq)]
pub struct Decoded {
    /// Every bucket of every valid batch, in file order.
    pub buckets: Vec<(String, Bucket)>,
    /// Bytes of valid batches from the start: the file is cut here when
    /// `damaged`.
    pub valid_len: usize,
    /// Why reading stopped before the end, if it did.
    pub damaged: Option<String>,
}

/// The size of a batch's header (magic, length, CRC).
pub const HEADER: usize = 12;

/// The payload length a batch header announces, or why it is no header.
pub fn payload_length(header: &[u8; HEADER]) -> Result<usize, String> {
    if &header[..4] != MAGIC {
        return Err("not a history batch".to_owned());
    }
    let length = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
    if length > MAX_BATCH {
        return Err(format!("a batch of {length} bytes"));
    }
    Ok(length)
}

/// Reads batches until the end or the first damaged one.
pub fn decode_batches(bytes: &[u8]) -> Decoded {
    let mut decoded = Decoded::default();
    let mut at = 0;
    while at < bytes.len() {
        match decode_batch(&bytes[at..]) {
            Ok((buckets, used)) => {
                decoded.buckets.extend(buckets);
                at += used;
                decoded.valid_len = at;
            }
            Err(why) => {
                decoded.damaged = Some(format!("{why} at byte {at}"));
                break;
            }
        }
    }
    decoded
}

/// A batch's buckets, and its size in bytes.
pub type Batch = (Vec<(String, Bucket)>, usize);

/// The first batch of `bytes`: its buckets and its size in bytes.
pub fn decode_batch(bytes: &[u8]) -> Result<Batch, String> {
    let header: &[u8; HEADER] = bytes
        .get(..HEADER)
        .and_then(|h| h.try_into().ok())
        .ok_or("a batch cut short")?;
    let length = payload_length(header)?;
    let crc = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    let payload = bytes
        .get(12..12 + length)
        .ok_or("a batch cut short (a write that did not finish)")?;
    if crc32(payload) != crc {
        return Err("a batch whose checksum does not match".to_owned());
    }
    let mut reader = Reader {
        bytes: payload,
        at: 0,
    };
    let count = usize::from(reader.u16()?);
    let mut names = Vec::with_capacity(count.min(4096));
    for _ in 0..count {
        let length = usize::from(reader.u8()?);
        let name = reader.take(length)?;
        names.push(String::from_utf8_lossy(name).into_owned());
    }
    let records = reader.u32()? as usize;
    let mut buckets = Vec::with_capacity(records.min(payload.len() / 23 + 1));
    for _ in 0..records {
        let index = usize::from(reader.u16()?);
        let tier = reader.u8()?;
        let start = reader.u32()?;
        let count = reader.u32()?;
        let min = f32::from_bits(reader.u32()?);
        let mean = f32::from_bits(reader.u32()?);
        let max = f32::from_bits(reader.u32()?);
        let name = names.get(index).ok_or("a bucket of an unknown point")?;
        if tier > 1 {
            return Err(format!("a bucket of tier {tier}"));
        }
        buckets.push((
            name.clone(),
            Bucket {
                tier,
                start,
                count,
                min,
                mean,
                max,
            },
        ));
    }
    Ok((buckets, 12 + length))
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let slice = self
            .bytes
            .get(self.at..self.at + n)
            .ok_or("a batch whose records run past its end")?;
        self.at += n;
        Ok(slice)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// One step of a query's answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// Its start, ms since the Unix epoch.
    pub ts_ms: u64,
    /// Smallest reading in it.
    pub min: f64,
    /// Mean of its readings (weighted by count).
    pub avg: f64,
    /// Largest reading in it.
    pub max: f64,
}

/// The buckets of one point merged into steps of `step_min` minutes from
/// `since_min` to `until_min`: the minute tier where it covers the range
/// and the step is under 15 minutes, else the quarter tier. Steps without
/// readings are left out.
pub fn query(buckets: &[Bucket], since_min: u32, until_min: u32, step_min: u32) -> Vec<Step> {
    let step_min = step_min.max(1);
    let minute_from = until_min.saturating_sub(MINUTES_KEPT);
    let tier = u8::from(step_min >= 15 || since_min < minute_from);
    let mut steps: BTreeMap<u32, (f64, f64, f64, u64)> = BTreeMap::new();
    for bucket in buckets
        .iter()
        .filter(|b| b.tier == tier && b.start >= since_min && b.start < until_min)
    {
        let at = bucket.start - (bucket.start - since_min) % step_min;
        let entry = steps
            .entry(at)
            .or_insert((f64::INFINITY, 0.0, f64::NEG_INFINITY, 0));
        entry.0 = entry.0.min(f64::from(bucket.min));
        entry.1 += f64::from(bucket.mean) * f64::from(bucket.count);
        entry.2 = entry.2.max(f64::from(bucket.max));
        entry.3 += u64::from(bucket.count);
    }
    steps
        .into_iter()
        .filter(|(_, (_, _, _, count))| *count > 0)
        .map(|(at, (min, sum, max, count))| Step {
            ts_ms: u64::from(at) * 60_000,
            min,
            // Stored as f32: the mean too, so every node answers the
            // same numbers (pages through the mesh carry f32).
            avg: f64::from((sum / count as f64) as f32),
            max,
        })
        .collect()
}

/// Whether a bucket is still kept at `now_min`: minute buckets a day,
/// quarter buckets `retain_min`.
pub fn kept(bucket: &Bucket, now_min: u32, retain_min: u32) -> bool {
    let keep = if bucket.tier == 0 {
        MINUTES_KEPT
    } else {
        retain_min
    };
    bucket.end().saturating_add(keep) > now_min
}

#[cfg(test)]
mod tests;
