//! The history file: written in batches, cut back to its last whole batch
//! after a torn write, rewritten without what aged out, queried.

use super::*;

const START_MS: u64 = 1_767_225_600_000; // 2026-01-01T00:00Z

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shoal-recorder-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch");
    dir
}

/// An hour of readings every 10 s, written as the agent would.
fn an_hour(recorder: &mut Recorder, ex: &smol::LocalExecutor<'static>, from_ms: u64) {
    for i in 0..360u64 {
        let now = from_ms + i * 10_000;
        recorder.history.record("t", now, (i % 6) as f64);
        recorder.tick(ex, now);
    }
}

#[test]
fn an_hour_is_six_writes_and_a_torn_write_loses_only_its_batch() {
    let dir = scratch("torn");
    let ex: &'static smol::LocalExecutor<'static> = Box::leak(Box::new(smol::LocalExecutor::new()));
    let mut recorder =
        Recorder::open(&dir, Duration::from_secs(30 * 86_400), START_MS).expect("on");
    an_hour(&mut recorder, ex, START_MS);
    assert_eq!(recorder.writes, 5, "at 10, 20, 30, 40 and 50 minutes");
    recorder.write(START_MS + 3_600_000);
    assert_eq!(recorder.writes, 6);
    let path = dir.join(FILE_NAME);
    let whole = std::fs::read(&path).expect("written");
    let steps =
        smol::block_on(recorder.query("t", START_MS, 600_000, START_MS + 3_600_000)).expect("read");
    assert_eq!(steps.len(), 6);
    assert!(
        steps
            .iter()
            .all(|s| s.min == 0.0 && s.max == 5.0 && (s.avg - 2.5).abs() < 1e-6),
        "{steps:?}"
    );
    // A kill -9 in the middle of the last append: the file ends 7 bytes
    // into a batch. Opening cuts it back, and says so.
    let mut torn = whole.clone();
    torn.extend_from_slice(
        &history::encode_batch(&[(
            "t".to_owned(),
            history::Bucket {
                tier: 0,
                start: 1,
                count: 1,
                min: 1.0,
                mean: 1.0,
                max: 1.0,
            },
        )])[..7],
    );
    std::fs::write(&path, &torn).expect("torn");
    let reopened =
        Recorder::open(&dir, Duration::from_secs(30 * 86_400), START_MS + 3_600_000).expect("on");
    assert_eq!(
        std::fs::read(&path).expect("cut"),
        whole,
        "cut back to the last whole batch"
    );
    let again =
        smol::block_on(reopened.query("t", START_MS, 600_000, START_MS + 3_600_000)).expect("read");
    assert_eq!(again, steps);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_daily_rewrite_drops_what_aged_out() {
    let dir = scratch("compact");
    let ex: &'static smol::LocalExecutor<'static> = Box::leak(Box::new(smol::LocalExecutor::new()));
    let mut recorder = Recorder::open(&dir, Duration::from_secs(86_400), START_MS).expect("on");
    an_hour(&mut recorder, ex, START_MS);
    recorder.write(START_MS + 3_600_000);
    let size = std::fs::metadata(dir.join(FILE_NAME)).expect("file").len();
    // Two days later: minute buckets and (retain = 1 day) quarter buckets
    // are all older than kept.
    recorder.next_compact_ms = 0;
    recorder.tick(ex, START_MS + 2 * 86_400_000);
    smol::block_on(ex.run(async {
        for _ in 0..100 {
            if recorder
                .compacting
                .as_ref()
                .is_some_and(smol::Task::is_finished)
            {
                break;
            }
            smol::Timer::after(Duration::from_millis(20)).await;
        }
    }));
    recorder.tick(ex, START_MS + 2 * 86_400_000 + 1);
    assert_eq!(recorder.write_errors, 0);
    let after = std::fs::metadata(dir.join(FILE_NAME)).expect("file").len();
    assert!(after < size / 10, "{size} -> {after} bytes");
    let steps =
        smol::block_on(recorder.query("t", START_MS, 600_000, START_MS + 3_600_000)).expect("read");
    assert!(steps.is_empty(), "{steps:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn no_history_when_retain_is_zero_and_junk_files_are_replaced() {
    let dir = scratch("junk");
    assert!(Recorder::open(&dir, Duration::ZERO, START_MS).is_none());
    std::fs::write(dir.join(FILE_NAME), b"not a history file at all").expect("junk");
    let recorder = Recorder::open(&dir, Duration::from_secs(86_400), START_MS).expect("on");
    assert_eq!(std::fs::read(dir.join(FILE_NAME)).expect("cut").len(), 0);
    let steps = smol::block_on(recorder.query("t", START_MS, 60_000, START_MS)).expect("read");
    assert!(steps.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}
