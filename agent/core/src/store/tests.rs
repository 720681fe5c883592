//! Unit tests of `store`: the store: versions, limits, digests and deltas.
use super::*;
use crate::wire::{self, Message, MAX_FRAME};

const HOUR: Duration = Duration::from_secs(3600);

const LIMITS: StoreLimits = StoreLimits {
    max_origins: 8,
    max_points_per_origin: 64,
    history_per_point: 4,
};

fn n(text: &str) -> Name {
    wire::name(text).expect("valid name")
}

fn store(id: u64) -> Store {
    Store::new(NodeId(id), n(&format!("node-{id}")), 1, LIMITS)
}

fn publish(store: &mut Store, point: &str, value: f64) -> u32 {
    store
        .publish(
            n(point),
            Value::Float(value),
            wire::unit("°C").expect("unit"),
            1000,
            (Instant::ZERO, 0),
        )
        .expect("accepted")
}

/// Everything `from` has that `to` lacks, through a digest exchange.
fn sync(from: &Store, to: &mut Store) {
    sync_at(from, to, Instant::ZERO, |_| true);
}

/// [`sync`] at `now`, with `live` telling which origins are live.
fn sync_at(from: &Store, to: &mut Store, now: Instant, live: impl Fn(NodeId) -> bool + Copy) {
    for digest in to.digest(true) {
        let diff = from.diff(&digest, live);
        for delta in from.deltas(&diff.to_send, Instant::ZERO) {
            to.apply(&delta, now, live);
        }
    }
}

#[test]
fn publishing_bumps_the_seq_and_the_watermark() {
    let mut s = store(1);
    assert_eq!(publish(&mut s, "t", 1.0), 1);
    assert_eq!(publish(&mut s, "h", 2.0), 2);
    assert_eq!(publish(&mut s, "t", 3.0), 3);
    let own = s.origin(NodeId(1)).expect("own");
    assert_eq!(own.watermark, 3);
    assert_eq!(s.point(NodeId(1), "t").map(|p| p.seq), Some(3));
    assert_eq!(s.len(), 2);
}

#[test]
fn history_is_bounded_and_keeps_the_newest() {
    let mut s = store(1);
    for i in 0..10 {
        publish(&mut s, "t", f64::from(i));
    }
    let point = s.point(NodeId(1), "t").expect("present");
    assert_eq!(point.history.len(), LIMITS.history_per_point);
    assert_eq!(
        point.history.back().map(|h| &h.value),
        Some(&Value::Float(9.0))
    );
    assert_eq!(
        point.history.front().map(|h| &h.value),
        Some(&Value::Float(6.0))
    );
}

#[test]
fn points_per_node_are_limited() {
    let mut s = store(1);
    for i in 0..LIMITS.max_points_per_origin {
        publish(&mut s, &format!("p{i}"), 0.0);
    }
    let refused = s.publish(
        n("one-more"),
        Value::Bool(true),
        Unit::new(),
        0,
        (Instant::ZERO, 0),
    );
    assert_eq!(refused, Err(PublishError::TooManyPoints { limit: 64 }));
    // An existing point still updates.
    publish(&mut s, "p0", 1.0);
    assert_eq!(s.len(), LIMITS.max_points_per_origin);
}

#[test]
fn invalid_readings_are_refused() {
    let mut s = store(1);
    assert_eq!(
        s.publish(
            n("t"),
            Value::Float(f64::INFINITY),
            Unit::new(),
            0,
            (Instant::ZERO, 0)
        ),
        Err(PublishError::InvalidValue)
    );
    assert!(s.is_empty());
}

#[test]
fn a_digest_exchange_copies_everything_missing() {
    let mut a = store(1);
    let mut b = store(2);
    for i in 0..5 {
        publish(&mut a, &format!("p{i}"), f64::from(i));
    }
    publish(&mut b, "q", 7.0);
    sync(&a, &mut b);
    sync(&b, &mut a);
    assert_eq!(a.hash(), b.hash());
    assert_eq!(a.point(NodeId(1), "p3"), b.point(NodeId(1), "p3"));
    assert_eq!(
        a.point(NodeId(2), "q").map(|p| &p.value),
        Some(&Value::Float(7.0))
    );
}

#[test]
fn out_of_order_updates_apply_at_once_and_the_watermark_closes_over_them() {
    let mut a = store(1);
    let mut b = store(2);
    publish(&mut a, "t", 1.0);
    publish(&mut a, "h", 2.0);
    let second = a.deltas(
        &[Range {
            origin: NodeId(1),
            after: 1,
            upto: 2,
        }],
        Instant::ZERO,
    );
    b.apply(&second[0], Instant::ZERO, |_| true);
    assert!(b.point(NodeId(1), "h").is_some());
    assert_eq!(b.origin(NodeId(1)).map(|o| o.watermark), Some(0));
    let first = a.deltas(
        &[Range {
            origin: NodeId(1),
            after: 0,
            upto: 1,
        }],
        Instant::ZERO,
    );
    b.apply(&first[0], Instant::ZERO, |_| true);
    // The gap closed: the remembered range (1, 2] is absorbed at once.
    assert_eq!(b.origin(NodeId(1)).map(|o| o.watermark), Some(2));
    sync(&b, &mut a);
    assert_eq!(a.hash(), b.hash());
}

#[test]
fn replayed_deltas_change_nothing() {
    let mut a = store(1);
    let mut b = store(2);
    publish(&mut a, "t", 1.0);
    let deltas = a.deltas(
        &[Range {
            origin: NodeId(1),
            after: 0,
            upto: 1,
        }],
        Instant::ZERO,
    );
    assert_eq!(
        b.apply(&deltas[0], Instant::ZERO, |_| true).changed.len(),
        1
    );
    let again = b.apply(&deltas[0], Instant::ZERO, |_| true);
    assert!(again.changed.is_empty() && again.news.is_empty());
}

#[test]
fn a_new_incarnation_replaces_the_old_points() {
    let mut a = store(1);
    let mut b = store(2);
    publish(&mut a, "t", 1.0);
    publish(&mut a, "gone", 5.0);
    sync(&a, &mut b);
    assert!(b.point(NodeId(1), "gone").is_some());
    let mut reborn = Store::new(NodeId(1), n("node-1"), 2, LIMITS);
    publish(&mut reborn, "t", 9.0);
    sync(&reborn, &mut b);
    assert_eq!(b.origin(NodeId(1)).map(|o| o.incarnation), Some(2));
    assert_eq!(
        b.point(NodeId(1), "t").map(|p| &p.value),
        Some(&Value::Float(9.0))
    );
    assert!(b.point(NodeId(1), "gone").is_none());
    // Old-incarnation data arriving late is ignored.
    sync(&a, &mut b);
    assert_eq!(
        b.point(NodeId(1), "t").map(|p| &p.value),
        Some(&Value::Float(9.0))
    );
}

#[test]
fn nobody_overwrites_our_own_points() {
    let mut a = store(1);
    publish(&mut a, "t", 1.0);
    let mut impostor = Store::new(NodeId(1), n("node-1"), 9, LIMITS);
    publish(&mut impostor, "t", 666.0);
    publish(&mut impostor, "t", 667.0);
    sync(&impostor, &mut a);
    assert_eq!(
        a.point(NodeId(1), "t").map(|p| &p.value),
        Some(&Value::Float(1.0))
    );
}

#[test]
fn a_full_store_of_live_origins_drops_newcomers_and_counts_them() {
    let mut receiver = store(100);
    for id in 1..=10 {
        let mut origin = store(id);
        publish(&mut origin, "t", 1.0);
        sync_at(&origin, &mut receiver, Instant::ZERO, |_| true);
    }
    assert_eq!(receiver.origins().len(), LIMITS.max_origins);
    assert_eq!((receiver.dropped(), receiver.evicted()), (3, 0));
}

#[test]
fn origins_that_are_not_live_are_never_taken() {
    // Made-up origins (anyone may send them in an open mesh) or a gone
    // node's leftovers: counted, not stored, and they fill nothing.
    let mut receiver = store(100);
    for id in 1..=50 {
        let mut fake = store(id);
        publish(&mut fake, "t", 1.0);
        let digest = receiver.digest(true);
        for delta in fake.deltas(&fake.diff(&digest[0], |_| true).to_send, Instant::ZERO) {
            let applied = receiver.apply(&delta, Instant::ZERO, |_| false);
            assert_eq!(applied.not_live, 1);
        }
    }
    assert_eq!(receiver.origins().len(), 1, "only its own");
    let mut newcomer = store(60);
    publish(&mut newcomer, "t", 21.5);
    sync_at(&newcomer, &mut receiver, Instant::ZERO, |id| {
        id == NodeId(60)
    });
    assert!(receiver.point(NodeId(60), "t").is_some());
}

#[test]
fn a_full_store_makes_room_from_the_longest_silent_origin_that_is_not_live() {
    let mut receiver = store(100);
    for id in 1..LIMITS.max_origins as u64 {
        let mut node = store(id);
        publish(&mut node, "t", 1.0);
        sync_at(
            &node,
            &mut receiver,
            Instant::from_millis(id * 1000),
            |_| true,
        );
    }
    assert_eq!(receiver.origins().len(), LIMITS.max_origins);
    // All gone now, the first ones longest.
    receiver.prune(Instant::from_millis(9_000), HOUR, |_| false);
    let newcomers = |id: NodeId| id.0 >= 50;
    for id in [50, 51] {
        let mut newcomer = store(id);
        publish(&mut newcomer, "t", 21.5);
        sync_at(
            &newcomer,
            &mut receiver,
            Instant::from_millis(60_000),
            newcomers,
        );
        assert_eq!(
            receiver.point(NodeId(id), "t").map(|p| &p.value),
            Some(&Value::Float(21.5))
        );
    }
    // The two longest silent went, oldest first.
    assert!(receiver.origin(NodeId(1)).is_none() && receiver.origin(NodeId(2)).is_none());
    assert!(receiver.origin(NodeId(3)).is_some());
    assert_eq!((receiver.evicted(), receiver.dropped()), (2, 0));
    assert_eq!(receiver.origins().len(), LIMITS.max_origins);
    // Live origins are never evicted: with only live ones, a live
    // newcomer is dropped.
    let mut another = store(60);
    publish(&mut another, "t", 1.0);
    sync_at(
        &another,
        &mut receiver,
        Instant::from_millis(61_000),
        |_| true,
    );
    assert!(receiver.origin(NodeId(60)).is_none());
    assert_eq!(receiver.dropped(), 1);
}

#[test]
fn a_gone_origin_leaves_after_prune_after_and_is_not_handed_back() {
    let mut a = store(100);
    let mut b = store(101);
    let mut gone = store(7);
    publish(&mut gone, "t", 1.0);
    let all = |_| true;
    sync_at(&gone, &mut a, Instant::ZERO, all);
    sync_at(&gone, &mut b, Instant::ZERO, all);
    sync_at(&b, &mut a, Instant::ZERO, all);
    sync_at(&a, &mut b, Instant::ZERO, all);
    let hash = a.hash();
    assert_eq!(hash, b.hash());
    let not_7 = |id| id != NodeId(7);
    let hour = Instant::ZERO + HOUR;
    // Live keeps it, however long.
    assert!(a.prune(hour, HOUR, all).is_empty());
    assert!(b.prune(hour, HOUR, all).is_empty());
    // Gone: out of the version vector at once (so `a`, which noticed
    // first, and `b` still agree on what matters), out of the store after
    // prune_after.
    assert!(a.prune(hour + HOUR / 2, HOUR, not_7).is_empty());
    assert!(a.origin(NodeId(7)).is_some());
    assert_ne!(a.hash(), hash);
    assert!(b.prune(hour + HOUR / 2, HOUR, not_7).is_empty());
    assert_eq!(a.hash(), b.hash());
    assert_eq!(a.prune(hour + HOUR, HOUR, not_7), vec![NodeId(7)]);
    assert!(a.origin(NodeId(7)).is_none());
    // `b` still holds it: neither its digest nor its deltas bring it back.
    assert!(!b.digest(false).iter().any(|d| a.diff(d, not_7).behind));
    sync_at(&b, &mut a, hour + HOUR, not_7);
    assert!(a.origin(NodeId(7)).is_none());
    assert_eq!(a.hash(), b.hash());
    // Live again (a partition healed): its points come back once `b`
    // sees it live too (at its next check, within a beacon interval).
    b.prune(hour + HOUR, HOUR, all);
    sync_at(&b, &mut a, hour + HOUR, all);
    assert!(a.point(NodeId(7), "t").is_some());
}

#[test]
fn large_ranges_split_into_frames_that_each_claim_a_complete_range() {
    let limits = StoreLimits {
        max_points_per_origin: 128,
        ..LIMITS
    };
    let mut a = Store::new(NodeId(1), n("node-1"), 1, limits);
    for i in 0..128 {
        a.publish(
            n(&format!("temperature-sensor-{i}")),
            Value::Float(20.0 + f64::from(i) / 7.0),
            wire::unit("°C").expect("unit"),
            1_763_800_000_000 + u64::from(i as u32) * 10_000,
            // Read every 10 s, as the timestamps say.
            (Instant::from_millis(u64::from(i as u32) * 10_000), 0),
        )
        .expect("accepted");
    }
    let sent = Instant::from_millis(1_280_000);
    let frames = a.deltas(
        &[Range {
            origin: NodeId(1),
            after: 0,
            upto: 128,
        }],
        sent,
    );
    assert!(frames.len() >= 3, "{} frames", frames.len());
    let mut next_after = 0;
    for delta in &frames {
        let body = Message::Delta(delta.clone());
        let len = body.body_len();
        assert!(len > 0 && len <= MAX_FRAME - 39, "{len} bytes");
        for chunk in &delta.chunks {
            assert_eq!(chunk.after, next_after, "ranges are contiguous");
            next_after = chunk.upto;
        }
    }
    assert_eq!(next_after, 128);
    // Applied in reverse, the watermark waits for the first frame, then
    // absorbs the ranges remembered above it; in order, it just advances.
    let mut b = Store::new(NodeId(2), n("node-2"), 1, limits);
    for delta in frames.iter().skip(1).rev() {
        b.apply(delta, Instant::ZERO, |_| true);
    }
    assert_eq!(b.origin(NodeId(1)).map(|o| o.watermark), Some(0));
    b.apply(&frames[0], Instant::ZERO, |_| true);
    assert_eq!(b.origin(NodeId(1)).map(|o| o.points.len()), Some(128));
    assert_eq!(b.origin(NodeId(1)).map(|o| o.watermark), Some(128));
    let mut c = Store::new(NodeId(3), n("node-3"), 1, limits);
    let received = Instant::from_millis(500);
    for delta in &frames {
        c.apply(delta, received, |_| true);
    }
    let copied = c.origin(NodeId(1)).expect("learned");
    let original = a.origin(NodeId(1)).expect("own");
    assert_eq!(copied.watermark, 128);
    for (name, point) in &original.points {
        let copy = copied.points.get(name).expect("every point arrived");
        assert_eq!(
            (copy.seq, &copy.value, &copy.unit, copy.ts_ms),
            (point.seq, &point.value, &point.unit, point.ts_ms)
        );
        // Its age on `c`'s own clock: as old as at `a` when sent, plus the
        // time since `c` received it; no wall clock compared.
        let later = received + Duration::from_secs(3);
        assert_eq!(copy.age(later), point.age(sent) + 3_000);
    }
}

#[test]
fn ages_come_from_monotonic_clocks_whatever_the_origins_wall_clock_says() {
    // The origin's wall clock is an hour behind (no real-time clock): its
    // fresh reading still arrives as fresh, and ages only by our clock.
    let mut origin = store(1);
    let hour_behind = 1_763_800_000_000 - 3_600_000;
    origin
        .publish(
            n("t"),
            Value::Float(20.0),
            Unit::new(),
            hour_behind,
            (Instant::from_millis(10_000), 0),
        )
        .expect("accepted");
    let mut receiver = store(2);
    let sent = Instant::from_millis(10_250);
    let diff = origin.diff(&receiver.digest(true)[0], |_| true);
    for delta in origin.deltas(&diff.to_send, sent) {
        receiver.apply(&delta, Instant::from_millis(99_000), |_| true);
    }
    let point = receiver.point(NodeId(1), "t").expect("arrived");
    assert_eq!(point.age(Instant::from_millis(99_000)), 250);
    assert_eq!(point.age(Instant::from_millis(104_000)), 5_250);
    assert_eq!(point.ts_ms, hour_behind, "shown as the origin stamped it");
}

#[test]
fn many_origins_split_the_digest_over_contiguous_frames() {
    let limits = StoreLimits {
        max_origins: 300,
        ..LIMITS
    };
    let mut big = Store::new(NodeId(0), n("node-0"), 1, limits);
    for id in 1..300u64 {
        let mut origin = Store::new(NodeId(id * 1_000_003), n(&format!("node-{id}")), 1, limits);
        publish(&mut origin, "t", 1.0);
        sync(&origin, &mut big);
    }
    let frames = big.digest(true);
    assert!(frames.len() >= 3);
    assert_eq!(frames[0].first, NodeId(0));
    assert_eq!(frames.last().map(|d| d.last), Some(NodeId(u64::MAX)));
    for pair in frames.windows(2) {
        assert_eq!(pair[0].last.0 + 1, pair[1].first.0);
    }
    let total: usize = frames.iter().map(|d| d.entries.len()).sum();
    assert_eq!(total, 300);
    for frame in &frames {
        assert!(
            Message::Digest(frame.clone()).body_len() > 0,
            "fits a frame"
        );
    }
    // A fresh store asks and gets everything, digest frame by digest frame.
    let mut fresh = Store::new(NodeId(u64::MAX), n("fresh"), 1, limits);
    sync(&big, &mut fresh);
    assert_eq!(fresh.origins().len(), 300, "299 learned plus its own");
}

#[test]
fn diff_tells_who_is_behind() {
    let mut a = store(1);
    let mut b = store(2);
    publish(&mut a, "t", 1.0);
    let a_digest = a.digest(true);
    let diff = b.diff(&a_digest[0], |_| true);
    assert!(diff.behind, "b lacks origin 1");
    assert_eq!(
        diff.to_send,
        vec![Range {
            origin: NodeId(2),
            after: 0,
            upto: 0
        }],
        "b announces its own origin even without points"
    );
    publish(&mut b, "q", 1.0);
    let diff = b.diff(&a_digest[0], |_| true);
    assert_eq!(
        diff.to_send,
        vec![Range {
            origin: NodeId(2),
            after: 0,
            upto: 1
        }]
    );
}

#[test]
fn reincarnation_renumbers_own_points() {
    let mut a = store(1);
    publish(&mut a, "t", 1.0);
    publish(&mut a, "h", 1.0);
    publish(&mut a, "t", 2.0);
    a.reincarnate(2);
    let own = a.origin(NodeId(1)).expect("own");
    assert_eq!((own.incarnation, own.watermark), (2, 2));
    assert_eq!(a.point(NodeId(1), "h").map(|p| p.seq), Some(1));
    assert_eq!(a.point(NodeId(1), "t").map(|p| p.seq), Some(2));
}

#[test]
fn origins_without_points_still_make_equal_hashes() {
    let mut a = store(1);
    let mut b = store(2);
    // Compute (and cache) the hashes before the exchange.
    let _ = (a.hash(), b.hash());
    sync(&a, &mut b);
    sync(&b, &mut a);
    assert_eq!(a.origins().len(), 2);
    assert_eq!(a.hash(), b.hash());
}

#[test]
fn out_of_order_ranges_are_remembered_up_to_a_limit() {
    let mut a = store(1);
    for i in 0..(MAX_PENDING_RANGES as u32 + 5) {
        publish(&mut a, "t", f64::from(i));
    }
    let last = MAX_PENDING_RANGES as u32 + 5;
    let mut b = store(2);
    // Every single-update range but the first, newest first.
    for seq in (2..=last).rev() {
        let delta = a.deltas(
            &[Range {
                origin: NodeId(1),
                after: seq - 1,
                upto: seq,
            }],
            Instant::ZERO,
        );
        if let Some(delta) = delta.first() {
            b.apply(delta, Instant::ZERO, |_| true);
        }
    }
    let origin = b.origin(NodeId(1)).expect("known");
    assert_eq!(origin.watermark, 0);
    assert_eq!(origin.pending.len(), MAX_PENDING_RANGES, "bounded");
    b.apply(
        &a.deltas(
            &[Range {
                origin: NodeId(1),
                after: 0,
                upto: 1,
            }],
            Instant::ZERO,
        )[0],
        Instant::ZERO,
        |_| true,
    );
    // The lowest ranges were kept: the watermark climbs as far as they reach,
    // anti-entropy fills the rest.
    assert_eq!(
        b.origin(NodeId(1)).map(|o| o.watermark),
        Some(MAX_PENDING_RANGES as u32 + 1)
    );
    sync(&a, &mut b);
    assert_eq!(b.origin(NodeId(1)).map(|o| o.watermark), Some(last));
}
