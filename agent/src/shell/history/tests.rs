//! History's bookkeeping: a simulated day (accelerated: readings carry
//! their own times) gives the expected min/avg/max per step; batches
//! survive a cut at any byte; corrupt files keep what is valid.

use super::*;

const DAY_START_MS: u64 = 1_767_225_600_000; // 2026-01-01T00:00Z

/// A reading every 10 s for `hours`: 0, 10 ... 50 within each minute, plus
/// 1000 × the hour; a batch written every ten minutes, as the agent does.
/// Returns the file and where each batch ends.
fn simulated(hours: u64) -> (Vec<u8>, Vec<usize>) {
    let mut history = History::default();
    let (mut file, mut ends) = (Vec::new(), Vec::new());
    for i in 0..hours * 360 {
        let ts = DAY_START_MS + i * 10_000;
        history.record("t", ts, (1000 * (i / 360) + (i % 6) * 10) as f64);
        if i % 60 == 59 {
            history.close_ended(ts + 10_000);
            file.extend(encode_batch(&history.take_batch()));
            ends.push(file.len());
        }
    }
    (file, ends)
}

fn buckets_of(file: &[u8]) -> Vec<Bucket> {
    decode_batches(file)
        .buckets
        .iter()
        .map(|(_, b)| *b)
        .collect()
}

#[test]
fn a_simulated_day_gives_the_expected_steps() {
    let (file, ends) = simulated(24);
    assert_eq!(ends.len(), 144, "six writes an hour");
    let decoded = decode_batches(&file);
    assert_eq!(decoded.damaged, None);
    assert_eq!(decoded.valid_len, file.len());
    let buckets = buckets_of(&file);
    assert_eq!(buckets.iter().filter(|b| b.tier == 0).count(), 24 * 60);
    assert_eq!(buckets.iter().filter(|b| b.tier == 1).count(), 24 * 4);
    let since = (DAY_START_MS / 60_000) as u32;
    let until = since + 24 * 60;
    // Five-minute steps from the minute tier: 30 readings 0..50 each.
    let steps = query(&buckets, since, until, 5);
    assert_eq!(steps.len(), 24 * 12);
    for (n, step) in steps.iter().enumerate() {
        let base = 1000.0 * (n / 12) as f64;
        assert_eq!(step.ts_ms, DAY_START_MS + n as u64 * 300_000);
        assert_eq!((step.min, step.max), (base, base + 50.0), "step {n}");
        assert!(
            (step.avg - (base + 25.0)).abs() < 1e-3,
            "step {n}: {}",
            step.avg
        );
    }
    // Hourly steps come from the quarter tier, and agree.
    let hourly = query(&buckets, since, until, 60);
    assert_eq!(hourly.len(), 24);
    assert_eq!((hourly[5].min, hourly[5].max), (5000.0, 5050.0));
    assert!((hourly[5].avg - 5025.0).abs() < 1e-3);
    assert_eq!(hourly[5].ts_ms, DAY_START_MS + 5 * 3_600_000);
}

#[test]
fn a_cut_at_any_byte_loses_at_most_the_last_batch() {
    let (file, ends) = simulated(1);
    let last_start = ends[ends.len() - 2];
    let before = buckets_of(&file[..last_start]).len();
    for cut in last_start..file.len() {
        let decoded = decode_batches(&file[..cut]);
        assert_eq!(decoded.valid_len, last_start, "cut at {cut}");
        assert_eq!(decoded.damaged.is_some(), cut > last_start, "cut at {cut}");
        assert_eq!(decoded.buckets.len(), before, "cut at {cut}");
    }
}

#[test]
fn a_corrupt_batch_keeps_those_before_and_garbage_is_no_panic() {
    let (mut file, ends) = simulated(1);
    file[ends[2] + 20] ^= 0xff;
    let decoded = decode_batches(&file);
    assert_eq!(decoded.valid_len, ends[2]);
    let why = decoded.damaged.expect("damaged");
    assert_eq!(
        why,
        format!("a batch whose checksum does not match at byte {}", ends[2])
    );
    // Random bytes, a huge length, a valid header over nothing.
    let mut seed = 7u64;
    for len in [0, 1, 11, 12, 13, 100, 5000] {
        let junk: Vec<u8> = (0..len)
            .map(|_| {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                (seed >> 33) as u8
            })
            .collect();
        let decoded = decode_batches(&junk);
        assert_eq!(decoded.valid_len, 0);
        assert_eq!(decoded.damaged.is_some(), len > 0);
    }
    let mut huge = b"SHB1".to_vec();
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    huge.extend_from_slice(&[0; 4]);
    assert!(decode_batches(&huge)
        .damaged
        .expect("damaged")
        .starts_with("a batch of 4294967295 bytes"));
    // A valid checksum over records that run past the payload.
    let mut lying = Vec::new();
    let payload = [1u8, 0, 1, b't', 9, 0, 0, 0];
    lying.extend_from_slice(b"SHB1");
    lying.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    lying.extend_from_slice(&crc32(&payload).to_le_bytes());
    lying.extend_from_slice(&payload);
    let decoded = decode_batches(&lying);
    assert_eq!(
        decoded.damaged.as_deref(),
        Some("a batch whose records run past its end at byte 0")
    );
}

#[test]
fn pending_buckets_are_bounded_and_counted() {
    let mut history = History::default();
    // Every minute a new bucket per point, never written out.
    for minute in 0..(MAX_PENDING as u64 + 100) {
        history.record("p", DAY_START_MS + minute * 60_000, 1.0);
    }
    assert_eq!(history.pending.len(), MAX_PENDING);
    assert!(history.dropped > 0);
    assert_eq!(history.take_batch().len(), MAX_PENDING);
    assert!(history.take_batch().is_empty());
}

#[test]
fn unwritten_buckets_answer_queries_and_old_ones_age_out() {
    let mut history = History::default();
    history.record("t", DAY_START_MS, 3.0);
    history.record("t", DAY_START_MS + 30_000, 5.0);
    history.record("t", DAY_START_MS + 60_000, 7.0);
    history.record("t", DAY_START_MS, f64::NAN);
    let unwritten = history.unwritten("t");
    assert_eq!(
        unwritten.len(),
        3,
        "the closed minute, the open minute and the open quarter"
    );
    let minute = unwritten[0];
    assert_eq!(
        (minute.count, minute.min, minute.mean, minute.max),
        (2, 3.0, 4.0, 5.0)
    );
    let now = (DAY_START_MS / 60_000) as u32;
    assert!(kept(&minute, now + MINUTES_KEPT, 30 * 1440));
    assert!(!kept(&minute, now + MINUTES_KEPT + 1, 30 * 1440));
    let quarter = Bucket::new(1, now, 1.0);
    assert!(kept(&quarter, now + 29 * 1440, 30 * 1440));
    assert!(!kept(&quarter, now + 31 * 1440, 30 * 1440));
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
}
