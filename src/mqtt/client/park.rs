//! The lot: idle connections parked without a task of their own (issue 16: the bytes an
//! idle connection costs).
//!
//! A connection's task is the largest part of an idle connection: tokio allocates it as
//! one block of 896 bytes (the future and its header), and the socket's registration with
//! the runtime's reactor is 256 more — more than mosquitto's whole connection. Most
//! connections of a gateway are idle most of the time (a sensor that publishes once a
//! minute), so a connection that has been quiet for a while gives both back: its task
//! ends, its socket is taken off the runtime's reactor, and what the task held (the
//! protocol machine, the session's handle, the connection's guards: a few hundred bytes,
//! in one block) waits here, in a slot, until one of the things a task would have waited
//! for happens:
//!
//! - **bytes or a close on the socket**: one thread (`ponte-park`) polls the parked
//!   sockets with its own `epoll` ([`mio`]);
//! - **a wake** from the session's mailbox (a delivery) or the connection's bell
//!   (takeover, shutdown): the connection registered a [`waker`] with them before it
//!   parked, which names its slot and costs nothing to hold;
//! - **its deadline** (the keep-alive): the thread keeps the parked deadlines in a heap.
//!
//! Then the thread gives the connection a task again ([`Parked::resume`]): its socket is
//! registered with the runtime once more and the connection's loop carries on from where
//! it left, having missed nothing — a readiness that came before the socket was watched
//! here is reported when it is added (`epoll` checks the socket's state then), and a wake
//! that came while the connection was still parking is remembered by its slot.
//!
//! A slot is named by a [`Ticket`]: its index and a generation, so that a stale wake (a
//! waker kept by a mailbox after its connection resumed, or a deadline already passed
//! for a connection that left) finds a newer generation and is ignored. The lot is one
//! per process — a parked connection carries its gateway's state, which knows the
//! runtime to return to — and starts with the first connection that parks.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::{Arc, OnceLock};
use std::task::{RawWaker, RawWakerVTable, Waker};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};
use parking_lot::Mutex;

/// A connection waiting in the lot for something to do.
pub(super) trait Parked: Send {
    /// Give the connection a task again, with its socket (called once, by the lot's
    /// thread, or by the parking task when the lot cannot take it).
    fn resume(self: Box<Self>, stream: TcpStream);
}

/// A slot of the lot: its index (low half of the bits) and generation (high half).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Ticket(usize);

/// Bits of a ticket's index.
const HALF: u32 = usize::BITS / 2;
/// The most slots: the last index is never used, so no ticket is `usize::MAX`, the
/// token of the thread's own wake-up.
const MAX_SLOTS: usize = (1 << HALF) - 1;
/// The token of [`Inner::waker`] in the lot's poll.
const WAKE_UP: Token = Token(usize::MAX);

impl Ticket {
    fn new(index: usize, generation: u32) -> Ticket {
        Ticket(((generation as usize) << HALF) | index)
    }

    fn index(self) -> usize {
        self.0 & MAX_SLOTS
    }

    fn generation(self) -> u32 {
        // At most `HALF` (32) bits.
        (self.0 >> HALF) as u32
    }
}

/// What every parking connection and the lot's thread share.
struct Inner {
    /// Registers and deregisters the parked sockets with the lot's poll.
    registry: Registry,
    /// Wakes the lot's thread: a ticket was woken ([`Inner::woken`]).
    waker: mio::Waker,
    /// The slots, their free list and the parked deadlines.
    slots: Mutex<Slots>,
    /// Tickets woken by a waker since the thread last looked (a mailbox, a bell).
    woken: Mutex<Vec<Ticket>>,
}

/// The lot's table of slots.
struct Slots {
    /// By index.
    slots: Vec<Slot>,
    /// Indices of the free slots, reused first.
    free: Vec<usize>,
    /// Parked connections' deadlines (nanoseconds since [`Slots::epoch`]) and tickets,
    /// earliest first. An entry whose ticket is no longer parked is dropped when it comes
    /// up, or when the heap is rebuilt ([`Slots::prune`]).
    deadlines: BinaryHeap<Reverse<(u64, usize)>>,
    /// What the deadlines count from, the lot's start (16 bytes an entry as `Instant`s, 8
    /// as counts).
    epoch: Instant,
    /// Slots in use (reserved or parked).
    used: usize,
}

/// One slot.
struct Slot {
    /// Bumped each time the slot is freed: older tickets no longer name it (the high half
    /// of a ticket's bits).
    generation: u32,
    /// What it holds.
    state: State,
}

/// What a slot holds.
enum State {
    /// Nothing.
    Free,
    /// A connection is parking: it registered its wakers and is about to hand itself in;
    /// `woken` if one of them woke since (it resumes as soon as it is in).
    Reserved { woken: bool },
    /// A parked connection and its socket (watched by the lot's poll).
    Parked {
        stream: TcpStream,
        conn: Box<dyn Parked>,
    },
}

/// The process's lot, started by the first connection that parks; `None` if the
/// operating system refused its poll (connections then never park).
static LOT: OnceLock<Option<Arc<Inner>>> = OnceLock::new();

fn lot() -> Option<&'static Arc<Inner>> {
    LOT.get_or_init(|| match start() {
        Ok(inner) => Some(inner),
        Err(e) => {
            tracing::warn!(error = %e, "MQTT: cannot start the idle connections' poller; idle connections keep their tasks");
            None
        }
    })
    .as_ref()
}

/// Create the lot's poll and start its thread.
fn start() -> std::io::Result<Arc<Inner>> {
    let poll = Poll::new()?;
    let inner = Arc::new(Inner {
        registry: poll.registry().try_clone()?,
        waker: mio::Waker::new(poll.registry(), WAKE_UP)?,
        slots: Mutex::new(Slots {
            slots: Vec::new(),
            free: Vec::new(),
            deadlines: BinaryHeap::new(),
            epoch: Instant::now(),
            used: 0,
        }),
        woken: Mutex::new(Vec::new()),
    });
    let thread = inner.clone();
    std::thread::Builder::new()
        .name("ponte-park".into())
        .spawn(move || run(&thread, poll))?;
    Ok(inner)
}

/// A slot for a connection about to park; `None` if the lot is not available (the
/// connection keeps its task). The connection then registers [`waker`]`(ticket)` with
/// everything it waits for, and either hands itself in ([`park`]) or takes the slot back
/// ([`cancel`]).
pub(super) fn reserve() -> Option<Ticket> {
    let inner = lot()?;
    let mut s = inner.slots.lock();
    let index = match s.free.pop() {
        Some(i) => i,
        None if s.slots.len() < MAX_SLOTS => {
            s.slots.push(Slot {
                generation: 0,
                state: State::Free,
            });
            s.slots.len() - 1
        }
        None => return None,
    };
    s.used += 1;
    let slot = &mut s.slots[index];
    slot.state = State::Reserved { woken: false };
    Some(Ticket::new(index, slot.generation))
}

/// Give back a slot reserved by a connection that did not park after all.
pub(super) fn cancel(ticket: Ticket) {
    if let Some(inner) = lot() {
        inner.slots.lock().free_slot(ticket);
    }
}

/// Hand a connection in: its socket is watched from now on, and `deadline` (if any) will
/// wake it. If anything fails, the connection is resumed at once, as if woken.
pub(super) fn park(
    ticket: Ticket,
    stream: TcpStream,
    conn: Box<dyn Parked>,
    deadline: Option<Instant>,
) {
    let Some(inner) = lot() else {
        conn.resume(stream);
        return;
    };
    let mut s = inner.slots.lock();
    let woken = match s.reserved(ticket) {
        Some(woken) => woken,
        None => {
            drop(s);
            conn.resume(stream);
            return;
        }
    };
    // Registered under the lock: a readiness reported at once finds the connection parked.
    let fd = stream.as_raw_fd();
    if let Err(e) = inner
        .registry
        .register(&mut SourceFd(&fd), Token(ticket.0), Interest::READABLE)
    {
        s.free_slot(ticket);
        drop(s);
        tracing::debug!(error = %e, "MQTT: an idle connection could not be parked; it keeps its task");
        conn.resume(stream);
        return;
    }
    s.slots[ticket.index()].state = State::Parked { stream, conn };
    // The thread sleeps until the earliest deadline it knew of: an earlier one wakes it.
    let mut earliest = false;
    if let Some(at) = deadline {
        let at = s.since_epoch(at);
        earliest = s
            .deadlines
            .peek()
            .is_none_or(|Reverse((first, _))| at < *first);
        s.deadlines.push(Reverse((at, ticket.0)));
    }
    drop(s);
    if woken {
        inner.notify(ticket);
    } else if earliest {
        inner.wake_up();
    }
}

/// A waker for the connection of `ticket`: waking it resumes the connection (if it is
/// still the one parked there). It holds no memory: the ticket is its data.
pub(super) fn waker(ticket: Ticket) -> Waker {
    // SAFETY: the vtable's functions never dereference the data pointer; it carries the
    // ticket as an integer, and every function is thread-safe.
    unsafe { Waker::from_raw(raw(ticket.0)) }
}

static VTABLE: RawWakerVTable = RawWakerVTable::new(clone_raw, wake_raw, wake_raw, drop_raw);

fn raw(ticket: usize) -> RawWaker {
    RawWaker::new(std::ptr::without_provenance(ticket), &VTABLE)
}

fn clone_raw(data: *const ()) -> RawWaker {
    raw(data.addr())
}

fn wake_raw(data: *const ()) {
    if let Some(inner) = LOT.get().and_then(Option::as_ref) {
        inner.notify(Ticket(data.addr()));
    }
}

fn drop_raw(_: *const ()) {}

impl Slots {
    /// `at` as a deadline in [`Slots::deadlines`]: nanoseconds since the lot started
    /// (every deadline of a parked connection is later).
    fn since_epoch(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether `ticket` is reserved, and if so whether it was woken.
    fn reserved(&self, ticket: Ticket) -> Option<bool> {
        match self.slots.get(ticket.index()) {
            Some(Slot {
                generation,
                state: State::Reserved { woken },
            }) if *generation == ticket.generation() => Some(*woken),
            _ => None,
        }
    }

    /// Free the slot of `ticket` (if it is still its), returning what it held.
    fn free_slot(&mut self, ticket: Ticket) -> Option<State> {
        let slot = self.slots.get_mut(ticket.index())?;
        if slot.generation != ticket.generation() || matches!(slot.state, State::Free) {
            return None;
        }
        slot.generation = slot.generation.wrapping_add(1) & (MAX_SLOTS as u32);
        let state = std::mem::replace(&mut slot.state, State::Free);
        self.free.push(ticket.index());
        self.used -= 1;
        Some(state)
    }

    /// Drop the deadlines of tickets no longer parked, once they outnumber the parked
    /// ones: a connection that parks and resumes often leaves one behind each time.
    fn prune(&mut self) {
        if self.deadlines.len() <= 2 * self.used + 64 {
            return;
        }
        let slots = &self.slots;
        self.deadlines.retain(|Reverse((_, t))| {
            let t = Ticket(*t);
            slots.get(t.index()).is_some_and(|s| {
                s.generation == t.generation() && matches!(s.state, State::Parked { .. })
            })
        });
    }
}

impl Inner {
    /// Queue `ticket` for the thread, and wake it.
    fn notify(&self, ticket: Ticket) {
        self.woken.lock().push(ticket);
        self.wake_up();
    }

    /// Wake the thread (a ticket is queued, or a deadline is earlier than its sleep).
    fn wake_up(&self) {
        if let Err(e) = self.waker.wake() {
            tracing::warn!(error = %e, "MQTT: cannot wake the idle connections' poller");
        }
    }

    /// Something happened for `ticket`: resume its connection if it is parked, remember
    /// it if it is still parking, ignore it otherwise (a stale ticket).
    fn wake(&self, ticket: Ticket) {
        let mut s = self.slots.lock();
        match s.slots.get_mut(ticket.index()) {
            Some(slot) if slot.generation == ticket.generation() => {
                if let State::Reserved { woken } = &mut slot.state {
                    *woken = true;
                    return;
                }
            }
            _ => return,
        }
        let Some(State::Parked { stream, conn }) = s.free_slot(ticket) else {
            return;
        };
        drop(s);
        // Taken off this poll before the runtime's reactor takes it on.
        let _ = self.registry.deregister(&mut SourceFd(&stream.as_raw_fd()));
        conn.resume(stream);
    }

    /// How long the thread may sleep: until the earliest deadline.
    fn timeout(&self, now: Instant) -> Option<Duration> {
        let mut s = self.slots.lock();
        s.prune();
        let first = s.deadlines.peek().map(|Reverse((at, _))| *at)?;
        Some(Duration::from_nanos(
            first.saturating_sub(s.since_epoch(now)),
        ))
    }

    /// The tickets whose deadline has come, into `due`.
    fn expired(&self, now: Instant, due: &mut Vec<Ticket>) {
        let mut s = self.slots.lock();
        let now = s.since_epoch(now);
        while let Some(Reverse((at, t))) = s.deadlines.peek() {
            if *at > now {
                break;
            }
            due.push(Ticket(*t));
            s.deadlines.pop();
        }
    }
}

/// The lot's thread: wait for a parked socket, a wake or a deadline; resume whose it is.
fn run(inner: &Inner, mut poll: Poll) {
    let mut events = Events::with_capacity(1024);
    let mut due = Vec::new();
    loop {
        let timeout = inner.timeout(Instant::now());
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                tracing::warn!(error = %e, "MQTT: the idle connections' poll failed; retrying");
                std::thread::sleep(Duration::from_millis(10));
            }
            continue;
        }
        for event in events.iter() {
            if event.token() != WAKE_UP {
                due.push(Ticket(event.token().0));
            }
        }
        due.append(&mut inner.woken.lock());
        inner.expired(Instant::now(), &mut due);
        for ticket in due.drain(..) {
            // A panic resuming one connection must not strand every other one.
            let woke = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                inner.wake(ticket);
            }));
            if woke.is_err() {
                tracing::error!("MQTT: resuming a parked connection panicked; it is closed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::mpsc;

    /// A parked "connection" that reports its resumption.
    struct Probe(mpsc::Sender<TcpStream>);

    impl Parked for Probe {
        fn resume(self: Box<Self>, stream: TcpStream) {
            let _ = self.0.send(stream);
        }
    }

    fn pair() -> (TcpStream, TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        server.set_nonblocking(true).expect("nonblocking");
        (client, server)
    }

    const SOON: Duration = Duration::from_secs(5);

    #[test]
    fn a_parked_connection_resumes_on_bytes_on_a_wake_and_at_its_deadline() {
        let (tx, rx) = mpsc::channel();
        // Bytes.
        let (mut client, server) = pair();
        let t = reserve().expect("the lot starts");
        park(t, server, Box::new(Probe(tx.clone())), None);
        assert!(
            rx.recv_timeout(Duration::from_millis(100)).is_err(),
            "nothing yet"
        );
        client.write_all(b"x").expect("write");
        rx.recv_timeout(SOON).expect("resumed by its socket");
        // A wake, after which the slot's old ticket is stale.
        let (_client, server) = pair();
        let t = reserve().expect("slot");
        park(t, server, Box::new(Probe(tx.clone())), None);
        waker(t).wake_by_ref();
        rx.recv_timeout(SOON).expect("resumed by its waker");
        let (_client2, server) = pair();
        let t2 = reserve().expect("slot");
        park(t2, server, Box::new(Probe(tx.clone())), None);
        waker(t).wake();
        assert!(
            rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "a stale ticket wakes nobody"
        );
        // A wake while still parking is kept; so is a deadline.
        let (_client3, server) = pair();
        let t3 = reserve().expect("slot");
        waker(t3).wake();
        std::thread::sleep(Duration::from_millis(50));
        park(t3, server, Box::new(Probe(tx.clone())), None);
        rx.recv_timeout(SOON)
            .expect("resumed by the wake that came while parking");
        let (_client4, server) = pair();
        let t4 = reserve().expect("slot");
        let started = Instant::now();
        park(
            t4,
            server,
            Box::new(Probe(tx)),
            Some(started + Duration::from_millis(300)),
        );
        rx.recv_timeout(SOON).expect("resumed at its deadline");
        assert!(started.elapsed() >= Duration::from_millis(300));
        // t2 is still parked; cancel of a stale ticket changes nothing.
        cancel(t);
        assert_ne!(t.index(), usize::MAX);
    }
}
