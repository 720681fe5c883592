//! The agent's event loop: the main thread waits on the mesh sockets and
//! the core's next deadline itself, in one `poll(2)`.
//!
//! Under `smol::block_on`, every datagram went through async-io's reactor,
//! whose lock passes between the main thread and async-io's own thread:
//! most datagrams cost a cross-thread wake (futex, eventfd, timerfd), and a
//! fresh reactor timer per wait cost another eventfd write. That was most of
//! an idle agent's CPU in a large mesh (issue 19: about 120 µs per beacon).
//! Here the hot path stays on one thread: a future that wants a socket
//! readable or a deadline says so ([`Watch::wanted`], [`wake_at`]) instead of
//! registering with a reactor, and [`block_on`] polls those fds until one
//! is ready or the deadline passes. Everything else (the API, MQTT, child
//! processes, timers of spawned tasks) stays with async-io, whose thread
//! now drives its reactor alone and wakes this loop through an eventfd.

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

/// At most this many fds waited on directly (the three mesh sockets and
/// the signal pipe).
const MAX_FDS: usize = 4;

/// What the futures polled in this round wait for besides a wake.
#[derive(Debug, Default, Clone, Copy)]
struct Interest {
    /// Bit `i`: [`Watch`] `i` should wake the loop when readable.
    readable: u8,
    deadline: Option<Instant>,
}

thread_local! {
    /// Duplicates of the watched fds, owned by the loop (so polling them
    /// needs no borrow of the sockets, which their futures hold).
    static WATCHED: RefCell<heapless::Vec<OwnedFd, MAX_FDS>> = const { RefCell::new(heapless::Vec::new()) };
    static INTEREST: Cell<Interest> = Cell::new(Interest::default());
    /// Bit `i`: [`Watch`] `i` may have data (the last `poll` said so, or
    /// nothing said otherwise since its last read). A read that finds
    /// nothing clears it, so an idle socket costs no read per turn.
    static MAYBE_READY: Cell<u8> = const { Cell::new(0) };
    /// Per watch: not waited on before this time ([`Watch::rest_until`]).
    static RESTING: Cell<[Option<Instant>; MAX_FDS]> = const { Cell::new([None; MAX_FDS]) };
    /// True on a thread inside [`block_on`]: a wake from it needs no
    /// eventfd write, the loop looks at the flag before it waits.
    static ON_LOOP: Cell<bool> = const { Cell::new(false) };
}

/// An fd this thread's loop can wait on ([`watch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watch(u8);

/// Lets the loop of this thread wait on `fd` (a duplicate of it, so the
/// same socket). At most four per thread; [`block_on`] forgets them when
/// it returns.
pub fn watch(fd: BorrowedFd<'_>) -> io::Result<Watch> {
    let dup = rustix::io::fcntl_dupfd_cloexec(fd, 0)?;
    WATCHED.with_borrow_mut(|watched| {
        let index = u8::try_from(watched.len()).unwrap_or(u8::MAX);
        watched
            .push(dup)
            .map(|()| {
                MAYBE_READY.set(MAYBE_READY.get() | 1 << index);
                Watch(index)
            })
            .map_err(|_| io::Error::other(format!("main loop: more than {MAX_FDS} watched fds")))
    })
}

impl Watch {
    /// Called by a pending future: wake the loop when this fd is readable
    /// (not before the end of a rest, [`Watch::rest_until`]). Only
    /// meaningful under [`block_on`]; elsewhere nothing wakes it.
    pub fn wanted(self) {
        let index = usize::from(self.0);
        let mut resting = RESTING.get();
        if let Some(until) = resting[index] {
            if Instant::now() < until {
                wake_at(until);
                return;
            }
            resting[index] = None;
            RESTING.set(resting);
        }
        let mut interest = INTEREST.get();
        interest.readable |= 1 << self.0;
        INTEREST.set(interest);
    }

    /// Do not wait on this fd before `until`: whatever arrives meanwhile
    /// waits in the socket's buffer and is read in one turn at the end of
    /// the rest, instead of one wake-up per datagram.
    pub fn rest_until(self, until: Instant) {
        let mut resting = RESTING.get();
        resting[usize::from(self.0)] = Some(until);
        RESTING.set(resting);
    }

    /// Whether a read may find data: false after [`Watch::drained`] until
    /// the loop's `poll` reports the fd readable or a rest ends.
    pub fn maybe_ready(self) -> bool {
        if MAYBE_READY.get() & (1 << self.0) != 0 {
            return true;
        }
        // At the end of a rest: read, without a `poll` first to ask.
        let index = usize::from(self.0);
        let mut resting = RESTING.get();
        match resting[index] {
            Some(until) if Instant::now() >= until => {
                resting[index] = None;
                RESTING.set(resting);
                true
            }
            _ => false,
        }
    }

    /// A read found nothing (`WouldBlock`).
    pub fn drained(self) {
        MAYBE_READY.set(MAYBE_READY.get() & !(1 << self.0));
    }
}

/// Lets the kernel end this thread's waits up to `slack` late
/// (`PR_SET_TIMERSLACK`; Linux's default is 50 µs), so that they can share
/// a wake-up with other timers instead of each costing one. Idle, an agent
/// wakes ten times a second in a busy LAN, and here a wake-up costs more
/// CPU than the beacons it reads (BENCHMARKS.md). Threads and processes
/// started from this thread afterwards (async-io's, executors) inherit the
/// slack, as everything in a unit with systemd's `TimerSlackNSec=` does.
/// Failing is harmless: the waits stay as precise.
pub fn set_timer_slack(slack: Duration) {
    let nanos = u64::try_from(slack.as_nanos()).unwrap_or(u64::MAX);
    if let Err(error) = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(nanos)) {
        log::debug!("main loop: timer slack left at the default: {error}");
    }
}

/// Called by a pending future: poll again at `at` at the latest.
pub fn wake_at(at: Instant) {
    let mut interest = INTEREST.get();
    interest.deadline = Some(interest.deadline.map_or(at, |d| d.min(at)));
    INTEREST.set(interest);
}

/// A future that is ready at `at`, timed by [`block_on`] (no reactor timer).
pub async fn sleep_until(at: Instant) {
    std::future::poll_fn(|_| {
        if Instant::now() >= at {
            Poll::Ready(())
        } else {
            wake_at(at);
            Poll::Pending
        }
    })
    .await;
}

/// Wakes the loop: sets the flag, and from another thread also writes the
/// eventfd the loop's `poll` watches.
struct LoopWaker {
    woken: AtomicBool,
    eventfd: OwnedFd,
}

impl Wake for LoopWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.woken.swap(true, Ordering::SeqCst) && !ON_LOOP.get() {
            // Full (never: the loop reads it each round) or closed: the
            // flag is set either way and the loop's timeout bounds the wait.
            let _ = rustix::io::write(&self.eventfd, &1u64.to_ne_bytes());
        }
    }
}

/// Runs `future` to completion on this thread (see the module docs).
pub fn block_on<T>(future: impl Future<Output = T>) -> io::Result<T> {
    use rustix::event::{eventfd, EventfdFlags};
    let eventfd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
    let waker = Arc::new(LoopWaker {
        woken: AtomicBool::new(false),
        eventfd,
    });
    let task_waker = Waker::from(Arc::clone(&waker));
    let mut cx = Context::from_waker(&task_waker);
    let mut future = pin!(future);
    let was_on_loop = ON_LOOP.replace(true);
    let result = loop {
        INTEREST.set(Interest::default());
        waker.woken.store(false, Ordering::SeqCst);
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            break Ok(out);
        }
        if waker.woken.load(Ordering::SeqCst) {
            continue;
        }
        if let Err(error) = wait(waker.eventfd.as_fd(), INTEREST.get()) {
            break Err(error);
        }
    };
    ON_LOOP.set(was_on_loop);
    WATCHED.with_borrow_mut(heapless::Vec::clear);
    MAYBE_READY.set(0);
    RESTING.set([None; MAX_FDS]);
    result
}

/// One `poll(2)` on the eventfd and the wanted fds until the deadline;
/// drains the eventfd if it fired.
fn wait(eventfd: BorrowedFd<'_>, interest: Interest) -> io::Result<()> {
    let timeout = interest.deadline.map(|at| {
        // At least 50 µs: a deadline a hair away is not worth a busy turn.
        let left = at
            .saturating_duration_since(Instant::now())
            .max(Duration::from_micros(50));
        Timespec {
            tv_sec: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(left.subsec_nanos()),
        }
    });
    if poll_watched(Some(eventfd), interest.readable, timeout.as_ref())? {
        let _ = rustix::io::read(eventfd, &mut [0u8; 8]);
    }
    end_rests();
    Ok(())
}

/// Ends every rest now. The loop calls it whenever it woke (for whatever
/// reason): what waits in a resting socket is read in this turn, which is
/// paid for already, instead of in a wake-up of its own at the end of the
/// rest, so timers and batches share wake-ups. The agent calls it before
/// a deadline, which may come without a wait: a peer's silence is judged
/// after the beacons that arrived before it are read.
pub fn end_rests() {
    let resting = RESTING.get();
    let ended = (0u8..)
        .zip(resting)
        .filter(|(_, until)| until.is_some())
        .fold(0u8, |acc, (i, _)| acc | 1 << i);
    if ended != 0 {
        MAYBE_READY.set(MAYBE_READY.get() | ended);
        RESTING.set([None; MAX_FDS]);
    }
}

/// Asks `poll(2)`, without waiting, which watched fds are readable. The
/// loop learns that only when it waits, and a loop kept busy (datagrams
/// waiting every time it looks) never waits: a signal went unseen for
/// minutes while 250 agents said goodbye at once. The agent calls this
/// after each full burst of datagrams. (Should the `poll` fail, nothing is
/// learned now; the next wait asks again.)
pub fn refresh() {
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    if let Err(error) = poll_watched(None, u8::MAX, Some(&zero)) {
        log::debug!("main loop: poll without waiting failed: {error}");
    }
}

/// One `poll(2)` on `eventfd` (if any) and the watched fds whose bit is in
/// `readable`; marks those readable as maybe ready. Whether `eventfd` fired.
fn poll_watched(
    eventfd: Option<BorrowedFd<'_>>,
    readable: u8,
    timeout: Option<&Timespec>,
) -> io::Result<bool> {
    WATCHED.with_borrow(|watched| {
        let mut polled: heapless::Vec<PollFd<'_>, { MAX_FDS + 1 }> = heapless::Vec::new();
        let mut bits: heapless::Vec<u8, { MAX_FDS + 1 }> = heapless::Vec::new();
        if let Some(eventfd) = &eventfd {
            let _ = polled.push(PollFd::new(eventfd, PollFlags::IN));
        }
        let first = polled.len();
        for (i, fd) in (0u8..).zip(watched.iter()) {
            if readable & (1 << i) != 0 {
                let _ = polled.push(PollFd::new(fd, PollFlags::IN));
                let _ = bits.push(1 << i);
            }
        }
        match rustix::event::poll(&mut polled, timeout) {
            Ok(_) => {}
            Err(error) if is_interruption(error) => {}
            Err(error) => return Err(io::Error::from(error)),
        }
        // Readable, or an error or hang-up a read will report.
        let ready = polled[first..]
            .iter()
            .zip(&bits)
            .filter(|(fd, _)| !fd.revents().is_empty())
            .fold(0, |acc, (_, bit)| acc | bit);
        MAYBE_READY.set(MAYBE_READY.get() | ready);
        Ok(eventfd.is_some() && polled[0].revents().contains(PollFlags::IN))
    })
}

/// `EINTR`, or one of the kernel's own restart codes (`ERESTARTSYS` 512 to
/// `ERESTART_RESTARTBLOCK` 516), which reach a process only when a tracer
/// rewrote its registers inside the call: gdb calling a function in the
/// agent (`call malloc_stats()`) ended it with "Unknown error 514". Either
/// way the loop just polls again.
fn is_interruption(error: rustix::io::Errno) -> bool {
    error == rustix::io::Errno::INTR || (512..=516).contains(&error.raw_os_error())
}

#[cfg(test)]
mod tests;
