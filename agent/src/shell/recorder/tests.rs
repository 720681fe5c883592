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

/// Points the writer below records each minute.
const KILLED_BATCH: usize = 4000;

/// The writer `kill_9_during_batch_writes_loses_at_most_the_batch_being_written`
/// kills: this test binary run again with `SHOAL_RECORDER_WRITER=DIR`,
/// appending batches of [`KILLED_BATCH`] buckets (about 100 KB) to the
/// history in DIR as fast as it can, saying `wrote` after each, for at
/// most 20 s.
fn writer(dir: &Path) {
    use std::io::Write as _;
    let mut recorder = Recorder::open(dir, Duration::from_secs(86_400), START_MS).expect("on");
    let started = std::time::Instant::now();
    let mut minute = 0u64;
    while started.elapsed() < Duration::from_secs(20) {
        let at = START_MS + minute * 60_000;
        for point in 0..KILLED_BATCH {
            recorder.record(&format!("p{point:04}"), at, point as f64);
        }
        minute += 1;
        recorder.write(START_MS + minute * 60_000);
        let mut out = std::io::stdout();
        let _ = writeln!(out, "wrote");
        let _ = out.flush();
    }
}

/// Batches in the history file, and whether it ends in a torn one.
fn batches_in(path: &Path) -> (usize, bool) {
    let bytes = std::fs::read(path).unwrap_or_default();
    let (mut at, mut batches) = (0, 0);
    while let Ok((_, used)) = history::decode_batch(&bytes[at..]) {
        at += used;
        batches += 1;
    }
    (batches, at < bytes.len())
}

/// This test binary again; under `SHOAL_TEST_RUNNER` (an emulator command
/// line, as CI sets for the ARM builds under qemu-user, where no
/// binfmt_misc runs a foreign binary directly) started through it.
fn this_test_binary() -> std::process::Command {
    let me = std::env::current_exe().expect("self");
    let runner = std::env::var("SHOAL_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    match words.next() {
        Some(emulator) => {
            let mut command = std::process::Command::new(emulator);
            command.args(words).arg(me);
            command
        }
        None => std::process::Command::new(me),
    }
}

#[test]
fn kill_9_during_batch_writes_loses_at_most_the_batch_being_written() {
    if let Some(dir) = std::env::var_os("SHOAL_RECORDER_WRITER") {
        return writer(Path::new(&dir));
    }
    use std::io::BufRead as _;
    let dir = scratch("kill9");
    let path = dir.join(FILE_NAME);
    let (mut said, mut torn_seen) = (0usize, 0usize);
    for round in 0..10u64 {
        let mut child = this_test_binary()
            .args([
                "--exact",
                "shell::recorder::tests::kill_9_during_batch_writes_loses_at_most_the_batch_being_written",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("SHOAL_RECORDER_WRITER", &dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the writer starts");
        let mut lines = std::io::BufReader::new(child.stdout.take().expect("piped")).lines();
        // Let it write a few batches, then kill it at a varying moment.
        let mut wrote = 0;
        while wrote < 3 {
            match lines.next() {
                // libtest's "test NAME ... " starts the first line.
                Some(Ok(line)) if line.ends_with("wrote") => wrote += 1,
                Some(Ok(_)) => {}
                _ => panic!("the writer ended after {wrote} batches"),
            }
        }
        std::thread::sleep(Duration::from_micros(1_300 * round + 300));
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        wrote += lines
            .map_while(Result::ok)
            .filter(|l| l.ends_with("wrote"))
            .count();
        said += wrote;
        // Every batch it said it wrote is there, whole; at most the one
        // being written when it died is torn (or whole but unsaid).
        let (whole, torn) = batches_in(&path);
        assert!(
            whole == said || whole == said + 1,
            "round {round}: {whole} whole batches, {said} written"
        );
        torn_seen += usize::from(torn);
        said = whole;
        // Opening it (the next writer, or the agent) cuts the torn end.
        drop(Recorder::open(&dir, Duration::from_secs(86_400), START_MS).expect("on"));
        assert_eq!(batches_in(&path), (whole, false), "round {round}");
    }
    eprintln!("10 kills during batch writes: {torn_seen} left a torn batch, each cut at the next open; no whole batch lost");
    // A power cut can leave the last batch cut anywhere (a kill rarely
    // does: the kernel finishes most writes): at every 4 KB page and
    // around the header, opening keeps exactly the batches before it.
    let all = std::fs::read(&path).expect("history");
    let (_, first) = history::decode_batch(&all).expect("a batch");
    let (_, second) = history::decode_batch(&all[first..]).expect("a batch");
    let (bytes, whole, last) = (&all[..first + second], 2, first);
    let cuts = (last..bytes.len()).step_by(4096).chain([
        last + 1,
        last + 11,
        last + 12,
        last + 13,
        bytes.len() - 1,
    ]);
    for cut in cuts {
        std::fs::write(&path, &bytes[..cut]).expect("cut");
        drop(Recorder::open(&dir, Duration::from_secs(86_400), START_MS).expect("on"));
        assert_eq!(batches_in(&path), (whole - 1, false), "cut at {cut}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
