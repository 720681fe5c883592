//! Unit tests of `mesh_history`: a point's history asked of another node
//! over real frames, page by page, and the limits.
use super::*;
use shoal_core::wire;
use shoal_core::{Arrival, Config, Event, Identity};
use std::net::SocketAddr;

const START_MS: u64 = 1_767_225_600_000; // 2026-01-01T00:00Z

fn mesh_node(seed: u8, name: &str) -> Node {
    let identity = Identity {
        key: shoal_core::sign::NodeKey::from_seed([seed; 32]),
        name: wire::name(name).expect("valid"),
        incarnation: 1,
    };
    let config = Config {
        mesh_id: 0x5348_0001,
        key: Some(wire::MeshKey([3; 32])),
        ..Config::default()
    };
    Node::new(identity, config, u64::from(seed), Instant::ZERO).expect("valid")
}

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, n], 20195))
}

/// Moves every frame `from` sent (it has one neighbor) to `to`.
fn pump(now: Instant, from: &mut Node, from_addr: SocketAddr, to: &mut Node) {
    while let Some(t) = from.poll_transmit() {
        to.handle_datagram(now, from_addr, Arrival::Unicast, &t.payload);
    }
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("shoal-mesh-history-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch");
    dir
}

/// Two nodes that hear each other: a (asking) and b (keeping history).
fn pair() -> (Node, Node) {
    let (mut a, mut b) = (mesh_node(1, "a"), mesh_node(2, "b"));
    for ms in [0, 1_000, 2_000] {
        let now = Instant::from_millis(ms);
        a.handle_timeout(now);
        b.handle_timeout(now);
        pump(now, &mut a, addr(1), &mut b);
        pump(now, &mut b, addr(2), &mut a);
    }
    (a, b)
}

/// Runs both sides until `reply` has an answer (bounded).
fn exchange(
    (a, b): (&mut Node, &mut Node),
    (asker, keeper): (&mut MeshHistory, &mut MeshHistory),
    recorder: Option<&Recorder>,
    reply: &Receiver<Answer>,
) -> Answer {
    let ex: &'static smol::LocalExecutor<'static> = Box::leak(Box::new(smol::LocalExecutor::new()));
    for round in 0..400u64 {
        let now = Instant::from_millis(3_000 + round);
        pump(now, a, addr(1), b);
        while let Some(event) = b.poll_event() {
            if let Event::HistoryRequested(request) = event {
                keeper.on_requested(b, now, recorder, ex, request);
            }
        }
        if !keeper.reading.is_empty() {
            let done = smol::block_on(ex.run(keeper.next_read()));
            keeper.on_read(b, now, done);
        }
        pump(now, b, addr(2), a);
        while let Some(event) = a.poll_event() {
            if let Event::HistoryAnswered {
                id,
                status,
                rows,
                next_min,
                ..
            } = event
            {
                asker.on_answered(a, now, id, status, rows, next_min);
            }
        }
        if let Ok(answer) = reply.try_recv() {
            return answer;
        }
    }
    panic!("no answer in 400 rounds");
}

#[test]
fn another_nodes_history_comes_page_by_page_and_equals_its_own_answer() {
    let dir = scratch("pages");
    let mut recorder =
        Recorder::open(&dir, Duration::from_secs(30 * 86_400), START_MS).expect("on");
    // Three hours of readings every 20 s: 0, 1, 2 in each minute.
    for i in 0..540u64 {
        recorder.record("temp", START_MS + i * 20_000, (i % 3) as f64);
    }
    let now_ms = START_MS + 3 * 3_600_000;
    let (mut a, mut b) = pair();
    let (mut asker, mut keeper) = (MeshHistory::default(), MeshHistory::default());
    let point = wire::name("temp").expect("valid");
    let range = range(
        point,
        Duration::from_secs(3 * 3600),
        Duration::from_secs(60),
        now_ms,
    );
    let (tx, rx) = smol::channel::bounded(1);
    asker.ask(
        &mut a,
        Instant::from_millis(3_000),
        b.id(),
        "b/temp".into(),
        range,
        tx,
    );
    let answer = exchange(
        (&mut a, &mut b),
        (&mut asker, &mut keeper),
        Some(&recorder),
        &rx,
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    let steps = answer.body.as_array().expect("list");
    assert_eq!(steps.len(), 180, "three pages of 64, 64 and 52");
    assert!(steps
        .iter()
        .all(|s| s["min"] == 0.0 && s["max"] == 2.0 && s["avg"] == 1.0));
    // Its own answer is the same.
    let local = smol::block_on(recorder.query("temp", START_MS, 60_000, now_ms)).expect("read");
    assert_eq!(steps_json(&local), answer.body);
    // The range was read once for its three pages.
    assert_eq!(keeper.cache.len(), 1);
    assert_eq!(a.stats().history_queries_sent, 3);
    assert_eq!(b.stats().history_queries_served, 3);
    assert!(asker.fetches.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_node_without_history_and_an_unknown_node_are_clear_errors() {
    let (mut a, mut b) = pair();
    let (mut asker, mut keeper) = (MeshHistory::default(), MeshHistory::default());
    let point = wire::name("temp").expect("valid");
    let range = range(
        point,
        Duration::from_secs(3600),
        Duration::from_secs(300),
        START_MS,
    );
    let (tx, rx) = smol::channel::bounded(1);
    asker.ask(
        &mut a,
        Instant::from_millis(3_000),
        b.id(),
        "b/temp".into(),
        range.clone(),
        tx,
    );
    let answer = exchange((&mut a, &mut b), (&mut asker, &mut keeper), None, &rx);
    assert_eq!(answer.status, 404, "{}", answer.body);
    assert!(answer.body["error"]
        .as_str()
        .is_some_and(|e| e.contains("keeps no history")));
    let (tx, rx) = smol::channel::bounded(1);
    let stranger = wire::NodeId(42);
    asker.ask(
        &mut a,
        Instant::from_millis(3_000),
        stranger,
        "x/temp".into(),
        range,
        tx,
    );
    let answer = rx.try_recv().expect("at once");
    assert_eq!(answer.status, 404, "{}", answer.body);
}

#[test]
fn answers_gathered_at_once_are_bounded() {
    let (mut a, b) = pair();
    let mut asker = MeshHistory::default();
    let point = wire::name("temp").expect("valid");
    let range = range(
        point,
        Duration::from_secs(3600),
        Duration::from_secs(300),
        START_MS,
    );
    let mut replies = Vec::new();
    for _ in 0..=MAX_FETCHES {
        let (tx, rx) = smol::channel::bounded(1);
        asker.ask(
            &mut a,
            Instant::from_millis(3_000),
            b.id(),
            "b/temp".into(),
            range.clone(),
            tx,
        );
        replies.push(rx);
    }
    assert_eq!(asker.fetches.len(), MAX_FETCHES);
    let refused = replies
        .last()
        .and_then(|rx| rx.try_recv().ok())
        .expect("refused at once");
    assert_eq!(refused.status, 503);
    // Nobody answers: each ends with 504 after the page timeout.
    let late = Instant::from_millis(3_000) + PAGE_TIMEOUT + Duration::from_secs(1);
    a.handle_timeout(late);
    while let Some(event) = a.poll_event() {
        if let Event::HistoryAnswered {
            id,
            status,
            rows,
            next_min,
            ..
        } = event
        {
            asker.on_answered(&mut a, late, id, status, rows, next_min);
        }
    }
    assert!(asker.fetches.is_empty());
    for rx in &replies[..MAX_FETCHES] {
        assert_eq!(rx.try_recv().map(|a| a.status).ok(), Some(504));
    }
}

#[test]
fn a_page_that_makes_no_sense_ends_the_answer_with_502() {
    let (mut a, b) = pair();
    let point = wire::name("temp").expect("valid");
    let range = range(
        point,
        Duration::from_secs(3600),
        Duration::from_secs(60),
        START_MS,
    );
    let since = range.1;
    let row = |minute| HistoryRow {
        minute,
        min: 1.0,
        avg: 1.0,
        max: 1.0,
    };
    for (rows, next) in [
        // No progress: the same page again and again.
        (vec![], Some(since)),
        // A row before the range, or after its end.
        (vec![row(since - 1)], None),
        (vec![row(range.2)], None),
        // Out of order.
        (vec![row(since + 2), row(since + 1)], None),
        // A next page behind its own rows.
        (vec![row(since + 5)], Some(since + 3)),
    ] {
        let mut asker = MeshHistory::default();
        let (tx, rx) = smol::channel::bounded(1);
        asker.ask(
            &mut a,
            Instant::from_millis(3_000),
            b.id(),
            "b/temp".into(),
            range.clone(),
            tx,
        );
        let id = *asker.fetches.keys().next().expect("asked");
        let status = HistoryStatus::Rows;
        asker.on_answered(
            &mut a,
            Instant::from_millis(3_001),
            id,
            status,
            rows.clone(),
            next,
        );
        let answer = rx.try_recv().expect("answered at once");
        assert_eq!(answer.status, 502, "{rows:?} {next:?}: {}", answer.body);
        assert!(asker.fetches.is_empty() && asker.bad_pages == 1);
    }
}

#[test]
fn reads_for_others_are_budgeted_and_a_refusal_is_said() {
    let dir = scratch("budget");
    let recorder = Recorder::open(&dir, Duration::from_secs(86_400), START_MS).expect("on");
    let (a, mut b) = pair();
    let mut keeper = MeshHistory::default();
    let ex: &'static smol::LocalExecutor<'static> = Box::leak(Box::new(smol::LocalExecutor::new()));
    let now = Instant::from_millis(3_000);
    let (asker, keeper_id) = (a.id(), b.id());
    let request = |since_min: u32, step_min: u32| HistoryQuery {
        origin: asker,
        target: keeper_id,
        hops_left: 16,
        id: since_min,
        attempt: 0,
        point: wire::name("temp").expect("valid"),
        since_min,
        until_min: 29_000_000,
        step_min,
        from_min: since_min,
    };
    // Too many steps: refused at once, said so.
    keeper.on_requested(
        &mut b,
        now,
        Some(&recorder),
        ex,
        request(29_000_000 - 4097, 1),
    );
    assert_eq!(keeper.refused, 1);
    // Four distinct ranges are read; a fifth is refused until the budget
    // refills (one read per 2 s).
    for n in 0..5 {
        keeper.on_requested(&mut b, now, Some(&recorder), ex, request(28_999_000 + n, 1));
    }
    assert_eq!((keeper.reading.len(), keeper.refused), (4, 2));
    let refusals = std::iter::from_fn(|| b.poll_transmit()).count();
    assert_eq!(refusals, 2, "each refusal is a page back to the asker");
    let _ = std::fs::remove_dir_all(&dir);
}
