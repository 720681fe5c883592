//! Unit tests of `mainloop`: wake-ups by sockets, deadlines and other
//! threads, the readiness cache, rests, the limit on watches.

use super::*;
use std::net::UdpSocket;

/// A non-blocking socket on loopback and a sender aimed at it.
fn pair() -> (UdpSocket, UdpSocket) {
    let receiver = UdpSocket::bind("127.0.0.1:0").expect("bind");
    receiver.set_nonblocking(true).expect("non-blocking");
    let sender = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sender
        .connect(receiver.local_addr().expect("addr"))
        .expect("connect");
    (receiver, sender)
}

/// Reads `socket` the way the agent's sockets do: only when the loop says
/// it may be readable, and asks for a wake-up otherwise.
fn read_when_ready<'a>(
    socket: &'a UdpSocket,
    watch: Watch,
    reads: &'a Cell<u32>,
) -> impl Future<Output = Vec<u8>> + 'a {
    std::future::poll_fn(move |_| {
        if watch.maybe_ready() {
            reads.set(reads.get() + 1);
            let mut buf = [0u8; 64];
            match socket.recv(&mut buf) {
                Ok(len) => return Poll::Ready(buf[..len].to_vec()),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => watch.drained(),
                Err(error) => panic!("recv: {error}"),
            }
        }
        watch.wanted();
        Poll::Pending
    })
}

#[test]
fn a_ready_future_is_returned_at_once() {
    assert_eq!(block_on(async { 7 }).expect("loop"), 7);
}

#[test]
fn sleep_until_waits_for_its_deadline() {
    let start = Instant::now();
    let at = start + Duration::from_millis(30);
    block_on(sleep_until(at)).expect("loop");
    assert!(Instant::now() >= at, "woke before the deadline");
}

#[test]
fn a_watched_socket_wakes_the_loop_when_a_datagram_arrives() {
    let (receiver, sender) = pair();
    let reads = Cell::new(0);
    let got = block_on(async {
        let watch = watch(receiver.as_fd()).expect("watch");
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            sender.send(b"hello").expect("send");
        });
        let got = read_when_ready(&receiver, watch, &reads).await;
        writer.join().expect("writer");
        got
    })
    .expect("loop");
    assert_eq!(got, b"hello");
    // The first read found nothing; the next came after `poll` said so:
    // no read per turn while the socket is idle.
    assert_eq!(reads.get(), 2);
}

#[test]
fn a_wake_from_another_thread_reaches_the_waiting_loop() {
    let (tx, rx) = smol::channel::bounded::<u32>(1);
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        tx.send_blocking(42).expect("send");
    });
    let got = block_on(rx.recv()).expect("loop").expect("value");
    writer.join().expect("writer");
    assert_eq!(got, 42);
}

#[test]
fn a_resting_socket_is_read_only_after_its_rest() {
    let (receiver, sender) = pair();
    let reads = Cell::new(0);
    let rest = Duration::from_millis(60);
    let (got, read_at, until) = block_on(async {
        let watch = watch(receiver.as_fd()).expect("watch");
        // Found empty, then told to rest: the datagram sent now waits.
        let mut buf = [0u8; 8];
        assert!(receiver.recv(&mut buf).is_err());
        watch.drained();
        let until = Instant::now() + rest;
        watch.rest_until(until);
        sender.send(b"later").expect("send");
        assert!(!watch.maybe_ready(), "resting, yet readable");
        let got = read_when_ready(&receiver, watch, &reads).await;
        (got, Instant::now(), until)
    })
    .expect("loop");
    assert_eq!(got, b"later");
    assert!(read_at >= until, "read before the rest ended");
    assert_eq!(reads.get(), 1, "one read at the end of the rest");
}

#[test]
fn a_wake_for_anything_else_ends_a_rest() {
    let (receiver, sender) = pair();
    let reads = Cell::new(0);
    let start = Instant::now();
    let (got, read_at) = block_on(async {
        let watch = watch(receiver.as_fd()).expect("watch");
        let mut buf = [0u8; 8];
        assert!(receiver.recv(&mut buf).is_err());
        watch.drained();
        watch.rest_until(start + Duration::from_secs(10));
        sender.send(b"held").expect("send");
        // The loop wakes at 30 ms for a deadline: the socket is read in
        // that turn, not 10 s later.
        futures_lite::future::or(
            async { Some(read_when_ready(&receiver, watch, &reads).await) },
            async {
                sleep_until(start + Duration::from_millis(30)).await;
                std::future::pending::<()>().await;
                None
            },
        )
        .await
        .map(|got| (got, Instant::now()))
        .expect("read")
    })
    .expect("loop");
    assert_eq!(got, b"held");
    assert!(
        read_at < start + Duration::from_secs(5),
        "read only when the rest ended"
    );
    assert!(
        read_at >= start + Duration::from_millis(30),
        "read before anything woke the loop"
    );
}

#[test]
fn watches_are_limited_and_forgotten_when_the_loop_returns() {
    let sockets: Vec<UdpSocket> = (0..=MAX_FDS).map(|_| pair().0).collect();
    let refused = block_on(async {
        let mut refused = 0;
        for socket in &sockets {
            if watch(socket.as_fd()).is_err() {
                refused += 1;
            }
        }
        refused
    })
    .expect("loop");
    assert_eq!(refused, 1, "one more than MAX_FDS is refused");
    // A second loop on this thread starts with none.
    let again = block_on(async { watch(sockets[0].as_fd()).map(|w| w.0) }).expect("loop");
    assert_eq!(again.expect("watch"), 0);
}

#[test]
fn a_deadline_and_a_socket_race_and_the_first_wins() {
    let (receiver, _sender) = pair();
    let reads = Cell::new(0);
    let start = Instant::now();
    let timed_out = block_on(async {
        let watch = watch(receiver.as_fd()).expect("watch");
        futures_lite::future::or(
            async {
                read_when_ready(&receiver, watch, &reads).await;
                false
            },
            async {
                sleep_until(start + Duration::from_millis(30)).await;
                true
            },
        )
        .await
    })
    .expect("loop");
    assert!(timed_out, "nothing was sent, yet the socket won");
    assert_eq!(reads.get(), 1, "an idle socket is read once, not per turn");
}

#[test]
fn refresh_sees_a_readable_fd_while_the_loop_never_waits() {
    let (busy, busy_sender) = pair();
    let (quiet, quiet_sender) = pair();
    let seen = block_on(async {
        let _busy_watch = watch(busy.as_fd()).expect("watch");
        let quiet_watch = watch(quiet.as_fd()).expect("watch");
        quiet_watch.drained();
        quiet_sender.send(b"signal").expect("send");
        // A loop kept busy: every turn finds work, so it never waits, and
        // the quiet fd's news does not reach it...
        for _ in 0..100 {
            busy_sender.send(b"work").expect("send");
            let mut buf = [0u8; 16];
            while busy.recv(&mut buf).is_ok() {}
            std::thread::sleep(Duration::from_millis(1));
        }
        let before = quiet_watch.maybe_ready();
        // ...until it asks.
        refresh();
        (before, quiet_watch.maybe_ready())
    })
    .expect("loop");
    assert_eq!(seen, (false, true));
}

#[test]
fn the_timer_slack_applies_to_the_calling_thread_and_those_it_starts() {
    let (before, set, later) = std::thread::spawn(|| {
        let before = rustix::thread::current_timer_slack().expect("PR_GET_TIMERSLACK");
        set_timer_slack(Duration::from_millis(7));
        let set = rustix::thread::current_timer_slack().expect("PR_GET_TIMERSLACK");
        let later = std::thread::spawn(rustix::thread::current_timer_slack)
            .join()
            .expect("thread")
            .expect("PR_GET_TIMERSLACK");
        (before, set, later)
    })
    .join()
    .expect("thread");
    assert_ne!(before, set, "the slack did not change");
    assert_eq!(set, 7_000_000);
    // Threads (async-io's) and processes (executors) started afterwards
    // inherit it.
    assert_eq!(later, set);
    assert_ne!(
        rustix::thread::current_timer_slack().expect("PR_GET_TIMERSLACK"),
        set,
        "the test thread's slack changed"
    );
}

#[test]
fn an_interrupted_poll_and_the_kernels_restart_codes_are_not_failures() {
    use rustix::io::Errno;
    assert!(is_interruption(Errno::INTR));
    for code in 512..=516 {
        assert!(is_interruption(Errno::from_raw_os_error(code)), "{code}");
    }
    for errno in [Errno::BADF, Errno::INVAL, Errno::NOMEM, Errno::FAULT] {
        assert!(!is_interruption(errno), "{errno}");
    }
}
