//! One MQTT connection: socket I/O around the sans-IO state machine.
//!
//! The loop (here) reads and writes at the same time — a client that publishes while not
//! reading cannot deadlock it — processes the machine's events in order, and each turn
//! moves deliveries into the machine, syncs the session's durable state, then writes. The
//! work is done by a few owned parts, each in its own file:
//!
//! - [`Link`] (`link.rs`): the session — CONNECT (login, open, takeover), the durable
//!   state synced once per turn, the will, the close;
//! - [`Pipeline`] (`pipeline.rs`): PUBLISHes staged → delivered → acknowledged, strictly in
//!   arrival order while their durable writes overlap; `publish.rs` checks a PUBLISH
//!   before it enters and answers it when it is done;
//! - [`Outbox`] (`outbox.rs`): the session's mailbox → the machine, within the in-flight
//!   window and the write buffer;
//! - `subscribe.rs`: SUBSCRIBE and UNSUBSCRIBE, filter by filter.
//!
//! Any packet other than PUBLISH — SUBSCRIBE, UNSUBSCRIBE, DISCONNECT, and PINGREQ, which
//! the machine hands up instead of answering itself — and any refusal waits until the
//! pipeline is empty, so the client sees what it would see if its packets were handled one
//! by one (a SUBSCRIBE gets the retained value the same client just published; a PINGRESP
//! means everything before it is done). At most [`MAX_PIPELINED`] PUBLISHes are in flight;
//! beyond that the socket is not read. Wire types become the model's in `wire.rs` only.

mod link;
mod outbox;
mod park;
mod pipeline;
mod publish;
mod subscribe;

use std::cell::RefCell;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Buf;
use futures_util::future::OptionFuture;
use ponte_mqtt::{reason, CloseReason, Connection, Event};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use super::access::Access;
use super::Shared;
use crate::limits::WriteLimiter;
use crate::shutdown::Shutdown;
use crate::tls::TlsPeer;
use link::Link;
use outbox::{Outbox, WRITE_HIGH_WATER};
use pipeline::{Pipeline, MAX_PIPELINED};

/// One connection's driver: the machine and the parts that act on its events.
struct Driver {
    /// Everything shared by connections.
    shared: Arc<Shared>,
    /// The protocol engine; its transmit buffer is the connection's only write buffer.
    conn: Connection,
    /// The peer, for logs.
    peer: SocketAddr,
    /// Who the client is and what the ACL lets it do (see `access.rs`).
    access: Access,
    /// `[limits] publish_rate` for this connection's PUBLISHes.
    writes: WriteLimiter,
    /// The session and its durable state.
    link: Link,
    /// PUBLISHes between the broker and their acknowledgement.
    pipeline: Pipeline,
    /// Deliveries on their way from the mailbox into the machine.
    outbox: Outbox,
    /// Where the takeover bell is listed in `shared.bells` (rung at shutdown too).
    bell: usize,
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.shared.bells.remove(self.bell);
    }
}

/// How long a connection must be quiet before it gives its buffers back ([`Driver::trim`]).
/// Busy connections keep their capacity from turn to turn (a 256 KiB write burst is not
/// allocated again for each write); an idle one holds none after this.
const QUIET: Duration = Duration::from_secs(1);

/// [`QUIET`] for a new plain TCP connection until it first parks. Connections arrive in
/// bursts (a fleet reconnecting after a restart), and each holds its task until it parks:
/// parked soon after its CONNECT (and SUBSCRIBEs), the burst's tasks are freed while the
/// next connections are accepted, and reused by them, rather than left as holes between
/// the parked connections (issue 16: the bytes an idle connection holds; 19,000
/// connections at ~14,000 a second: 1,440 bytes each with 100 ms here, 1,129 with 10 ms,
/// the holes falling from ~390 to ~60 bytes a connection). A client whose first SUBSCRIBE
/// comes later than this after its CONNACK (a round trip over a slow link) parks once
/// more and is resumed by it: tens of µs. After that, a connection that was woken stays a
/// task for a quiet second, so that one that is busy now and then does not park and
/// resume at each message.
const FIRST_QUIET: Duration = Duration::from_millis(10);

/// Bytes read from a socket at once, into the thread's scratch buffer ([`read_into`]).
const READ_CHUNK: usize = 64 * 1024;

/// Serve one connection until it closes: a TLS stream's halves, or a WebSocket bridged
/// into a byte stream (plain TCP: [`run_tcp`]). `tls` is `Some` on TLS connections;
/// `guard` is dropped when the connection is over (its `max_connections` slot, its
/// `[limits]` place, its gauge).
pub(crate) fn run<R, W, G>(
    reader: R,
    writer: W,
    peer: SocketAddr,
    tls: Option<TlsPeer>,
    shared: Arc<Shared>,
    shutdown: Shutdown,
    guard: G,
) -> impl Future<Output = ()> + Send
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
    G: Send,
{
    let mut d = Driver::new(peer, tls, shared);
    // An `async move` block rather than an `async fn` taking these: a future stores an
    // `async fn`'s arguments twice (as arguments, and as the locals they are moved into),
    // and the driver is most of a connection's memory. The halves and the shutdown handle
    // move into `drive`, so only it holds them while the connection lives.
    async move {
        drive(reader, writer, &mut d, shutdown, Start::Unparked).await;
        drop(guard);
    }
}

/// [`run`] for a plain TCP connection: its halves are borrowed from the stream (no shared
/// `Arc` per connection, as `into_split` would allocate), and once it is idle it parks
/// without a task (`park.rs`).
pub(crate) fn run_tcp<G: Send + 'static>(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Shutdown,
    guard: G,
) -> impl Future<Output = ()> + Send {
    serve_tcp(
        stream,
        Driver::new(peer, None, shared),
        shutdown,
        guard,
        Start::Fresh,
    )
}

/// A plain TCP connection's task, from its start or from the lot: it runs until the
/// connection closes, or until it is idle and parks ([`Idle`]).
fn serve_tcp<G: Send + 'static>(
    stream: TcpStream,
    d: Driver,
    shutdown: Shutdown,
    guard: G,
    start: Start,
) -> impl Future<Output = ()> + Send {
    let (mut stream, mut d) = (stream, d);
    async move {
        let (reader, writer) = stream.split();
        let Ended::Parking(ticket, shutdown) = drive(reader, writer, &mut d, shutdown, start).await
        else {
            drop(guard);
            return;
        };
        let deadline = d.conn.poll_timeout();
        match stream.into_std() {
            Ok(stream) => {
                d.shared.broker.ops.mqtt_parked(1);
                let drain = shutdown.into_drain();
                let idle = Idle { d, drain, guard };
                park::park(ticket, stream, Box::new(idle), deadline);
            }
            Err(e) => {
                // Taking the socket off the reactor failed, which closed it: the
                // connection ends as if its peer had gone (the will, the session saved).
                park::cancel(ticket);
                tracing::warn!(peer = %d.peer, error = %e, "MQTT connection lost while parking it");
                d.conn.handle_eof(Instant::now());
                let gone = drive(
                    tokio::io::empty(),
                    tokio::io::sink(),
                    &mut d,
                    shutdown,
                    Start::Unparked,
                );
                Box::pin(gone).await;
                drop(guard);
            }
        }
    }
}

/// A plain TCP connection parked in the lot (`park.rs`): what its task held, in one block
/// (its socket is the lot's to watch). Resumed, it is a task again on the runtime it came
/// from (`Shared::runtime`), carrying on from its last turn.
struct Idle<G> {
    d: Driver,
    /// Its hold on the gateway's drain; the signal is the front-end's (`Shared::signal`).
    drain: crate::shutdown::Drain,
    guard: G,
}

impl<G: Send + 'static> park::Parked for Idle<G> {
    fn resume(self: Box<Self>, stream: std::net::TcpStream) {
        let Idle { d, drain, guard } = *self;
        let shutdown = drain.with_signal(d.shared.signal.clone());
        d.shared.broker.ops.mqtt_parked(-1);
        // (Always there: a connection parks only if it is.)
        let Some(runtime) = d.shared.runtime.clone() else {
            return;
        };
        let _in_runtime = runtime.enter();
        match TcpStream::from_std(stream) {
            Ok(stream) => {
                runtime.spawn(serve_tcp(stream, d, shutdown, guard, Start::Resumed));
            }
            // The runtime is shutting down: the connection ends with it.
            Err(e) => tracing::debug!(peer = %d.peer, error = %e, "parked MQTT connection dropped"),
        }
    }
}

/// How [`drive`] starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// A new connection that may park (plain TCP).
    Fresh,
    /// A new connection that never parks (TLS, WebSocket: their streams are not sockets
    /// the lot could watch).
    Unparked,
    /// A connection back from the lot: settled, quiet, and it may park again.
    Resumed,
}

/// How [`drive`] ended.
enum Ended {
    /// The connection is over.
    Closed,
    /// The connection is idle and parks under this ticket: its wakers are registered.
    Parking(park::Ticket, Shutdown),
}

/// The connection's loop, until it closes.
///
/// The connection is one task whose future is kept small (issue 16: most connections are
/// idle, and each idle one costs the size of this future): what a rare event needs (CONNECT,
/// SUBSCRIBE, a refusal, the close) is boxed while it runs ([`Later`]), and the task waits
/// on its sources by polling them itself ([`Driver::poll_wake`]) rather than through
/// `select!`, which would store a future per source for every wait. Unless `start` is
/// [`Start::Unparked`], it ends when the connection is idle ([`Driver::parkable`]) with
/// its wakers registered for the lot (`park.rs`).
#[allow(clippy::manual_async_fn)] // an `async fn` would store its arguments twice (see `run`)
fn drive<'a, R, W>(
    mut reader: R,
    mut writer: W,
    d: &'a mut Driver,
    shutdown: Shutdown,
    start: Start,
) -> impl Future<Output = Ended> + 'a
where
    R: AsyncRead + Unpin + 'a,
    W: AsyncWrite + Unpin + 'a,
{
    // `async move`, not `async fn`: see `run`.
    async move {
        // One timer for everything the connection waits for in time (connect timeout,
        // keep-alive, the quiet check, the close grace): re-armed only when it must fire
        // earlier than it is set for (see `Wait`).
        let mut timer = pin!(tokio::time::sleep_until(far_future()));
        let mut wait = Wait {
            settled: start == Start::Resumed,
            new: start == Start::Fresh,
            // Back from the lot, a connection stays a task for a quiet second: its first
            // waits use the task's own waker, so that what woke it reaches it through the
            // runtime's reactor and timers, which have not seen it yet (a socket just
            // registered with the runtime reports no readiness until its reactor turns).
            trim_at: (start == Start::Resumed).then(|| Instant::now() + QUIET),
            ..Wait::default()
        };
        let mut parks = start != Start::Unparked && d.shared.runtime.is_some();
        // Shutdown rings the connection's bell (`bells.rs`); one signalled before the bell
        // was listed is seen here.
        if shutdown.is_shutdown() {
            wait.closing = true;
            d.conn.close(CloseReason::ServerClose);
        }
        loop {
            // Act on everything the machine has to say. (Not `while let`: the event would
            // be kept in the future across the await, 112 bytes of every connection.)
            let mut closed = false;
            loop {
                let Some(ev) = d.conn.poll_event() else {
                    break;
                };
                // One future awaited in place (`if let` would keep the `Option` as well).
                closed |= OptionFuture::from(d.handle_event(ev)).await == Some(true);
            }
            if closed {
                break;
            }
            if let Some(session) = d.link.session() {
                d.outbox
                    .pump(&mut d.conn, session, &d.access, &d.shared.broker, d.peer);
            }
            // Nothing of this turn has been written yet: the durable state goes first.
            let synced = match d.link.sync_start(&d.conn) {
                Some(receipt) => receipt.await,
                None => Ok(()),
            };
            d.link.sync_done(&mut d.conn, synced, d.peer);
            // Once the CONNACK is out, what the CONNECT needed (its packet, the CONNACK, the
            // events) is given back at once rather than after a quiet second: connections
            // arrive in bursts, and blocks freed while the next connections are being
            // accepted are reused by them, where blocks freed a second later are holes
            // between the sessions made meanwhile (issue 16: RSS per idle connection).
            if !wait.settled && d.link.session().is_some() && d.conn.transmit_len() == 0 {
                wait.settled = true;
                d.trim();
            }
            // Idle: register the lot's waker with every source instead of this task's,
            // and park unless one of them is ready after all.
            if parks && d.parkable(&wait) {
                if let Some(ticket) = park::reserve() {
                    let waker = park::waker(ticket);
                    let mut cx = Context::from_waker(&waker);
                    let woke = d.poll_wake(
                        &mut cx,
                        &mut reader,
                        &mut writer,
                        timer.as_mut(),
                        &shutdown,
                        &mut wait,
                    );
                    if woke.is_pending() {
                        return Ended::Parking(ticket, shutdown);
                    }
                    park::cancel(ticket);
                    continue;
                }
                // No lot (its poll could not start): this connection keeps its task.
                parks = false;
                wait.new = false;
            }
            std::future::poll_fn(|cx| {
                d.poll_wake(
                    cx,
                    &mut reader,
                    &mut writer,
                    timer.as_mut(),
                    &shutdown,
                    &mut wait,
                )
            })
            .await;
        }
        // Once per connection: boxed, like the other rare work.
        Box::pin(d.close(&mut reader, &mut writer, timer)).await;
        Ended::Closed
    }
}

/// A deadline far enough away to mean "not armed".
fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86_400 * 365)
}

/// What the connection's waits remember from one to the next.
#[derive(Debug, Default)]
struct Wait {
    /// When to check whether the connection was quiet since; `None` once its buffers are
    /// given back (nothing to give back until something happens).
    trim_at: Option<Instant>,
    /// The timer is registered for its deadline and has not fired yet.
    armed: bool,
    /// Something happened since the last quiet check.
    busy: bool,
    /// The shutdown signal was seen: the close is under way.
    closing: bool,
    /// The CONNACK has been written and the buffers of the CONNECT given back.
    settled: bool,
    /// A new plain TCP connection that has not parked yet: quiet after [`FIRST_QUIET`].
    new: bool,
}

impl Wait {
    /// Something happened: the quiet check is due a while after it ends.
    fn active(&mut self) {
        self.busy = true;
        if self.trim_at.is_none() {
            self.trim_at = Some(Instant::now() + self.quiet());
        }
    }

    /// How long the connection must be quiet to trim (and then park).
    fn quiet(&self) -> Duration {
        if self.new {
            FIRST_QUIET
        } else {
            QUIET
        }
    }
}

thread_local! {
    /// The buffer every connection served by this thread reads into, borrowed only for
    /// the read: an idle connection waiting for bytes holds no read buffer of its own.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Poll one read from `reader` into the thread's scratch buffer and hand what came to
/// `take` (an empty slice at end of stream). Pending without holding any buffer.
pub(super) fn read_into<R: AsyncRead + Unpin>(
    reader: &mut R,
    cx: &mut Context<'_>,
    take: impl FnOnce(std::io::Result<&[u8]>),
) -> Poll<()> {
    SCRATCH.with(|scratch| {
        let mut own = Vec::new();
        let mut shared = scratch.try_borrow_mut();
        // Re-entered on this thread (never by the driver itself): a buffer of its own.
        let buf = match &mut shared {
            Ok(buf) => buf,
            Err(_) => &mut own,
        };
        if buf.len() < READ_CHUNK {
            buf.resize(READ_CHUNK, 0);
        }
        let mut rb = ReadBuf::new(&mut buf[..]);
        match Pin::new(reader).poll_read(cx, &mut rb) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => {
                take(Ok(rb.filled()));
                Poll::Ready(())
            }
            Poll::Ready(Err(e)) => {
                take(Err(e));
                Poll::Ready(())
            }
        }
    })
}

impl Driver {
    /// A connection from `peer` that has not sent anything yet.
    fn new(peer: SocketAddr, tls: Option<TlsPeer>, shared: Arc<Shared>) -> Driver {
        let link = Link::new(tls);
        Driver {
            conn: Connection::new(Instant::now(), shared.machine.clone()),
            peer,
            access: Access::new(shared.authority.clone()),
            writes: shared.limits.write_limiter(),
            bell: shared.bells.add(link.kick().clone()),
            link,
            pipeline: Pipeline::default(),
            outbox: Outbox::default(),
            shared,
        }
    }

    /// Wait for the next thing to do, polling every source of the connection in turn:
    /// its bell (takeover, or shutdown), the publish pipeline, the socket (write, then
    /// read), the mailbox, the timer. Every source is polled each time (so a client that
    /// both floods and is flooded is still read), and the wait is over when any of them
    /// did something.
    fn poll_wake<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut R,
        writer: &mut W,
        mut timer: Pin<&mut Sleep>,
        shutdown: &Shutdown,
        wait: &mut Wait,
    ) -> Poll<()>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut woke = false;
        if self.link.kick().poll_rung(cx).is_ready() {
            if !shutdown.is_shutdown() {
                self.conn.close(CloseReason::TakenOver);
            } else if !wait.closing {
                wait.closing = true;
                self.conn.close(CloseReason::ServerClose);
            }
            woke = true;
        }
        if !self.pipeline.is_empty() && self.poll_pipeline(cx).is_ready() {
            wait.active();
            woke = true;
        }
        // Write what the machine has, as far as the socket takes it. (Its length is asked
        // first: `transmit` would make the buffers of a connection with nothing to write.)
        let mut failed = false;
        if self.conn.transmit_len() > 0 {
            let tx = self.conn.transmit();
            while !tx.is_empty() {
                match Pin::new(&mut *writer).poll_write(cx, tx) {
                    Poll::Pending => break,
                    Poll::Ready(Ok(n)) if n > 0 => {
                        tx.advance(n);
                        self.shared.stats.sent(n);
                        wait.active();
                        woke = true;
                    }
                    Poll::Ready(_) => {
                        // The peer is gone: nothing more can be written.
                        tx.clear();
                        failed = true;
                    }
                }
            }
        }
        if failed {
            self.conn.handle_eof(Instant::now());
            woke = true;
        }
        // Beyond MAX_PIPELINED PUBLISHes in flight the socket is not read (backpressure).
        if self.pipeline.len() < MAX_PIPELINED {
            let (conn, stats) = (&mut self.conn, &self.shared.stats);
            let read = read_into(reader, cx, |got| match got {
                Ok(bytes) if !bytes.is_empty() => {
                    stats.received(bytes.len());
                    conn.handle_bytes(Instant::now(), bytes)
                }
                Ok(_) | Err(_) => conn.handle_eof(Instant::now()),
            });
            if read.is_ready() {
                wait.active();
                woke = true;
            }
        }
        // Deliveries, while the write buffer has room (backpressure into the mailbox).
        if self.conn.transmit_len() < WRITE_HIGH_WATER {
            if let Some(mailbox) = self.link.session().map(|s| &s.mailbox) {
                if mailbox.poll_notified(cx).is_ready() {
                    if mailbox.overflowed() {
                        tracing::warn!(peer = %self.peer, "MQTT client's queue overflowed; disconnecting it (overflow = disconnect)");
                        self.conn.close(CloseReason::Server {
                            reason_code: reason::QUOTA_EXCEEDED,
                            reason_string: Some(format!(
                                "more than {} messages queued for this client (overflow = disconnect)",
                                self.shared.config.mqtt.max_queued
                            )),
                        });
                    }
                    wait.active();
                    woke = true;
                }
            }
        }
        // The timer: the machine's deadline or the quiet check, whichever is first. It is
        // moved only when it must fire earlier; firing early costs one check.
        let due = match (self.conn.poll_timeout(), wait.trim_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(due) = due.map(tokio::time::Instant::from_std) {
            if !wait.armed || timer.deadline() > due {
                timer.as_mut().reset(due);
                wait.armed = true;
            }
        }
        if wait.armed && timer.as_mut().poll(cx).is_ready() {
            wait.armed = false;
            let now = Instant::now();
            self.conn.handle_timeout(now);
            if wait.trim_at.is_some_and(|at| at <= now) {
                if std::mem::take(&mut wait.busy) {
                    wait.trim_at = Some(now + wait.quiet());
                } else {
                    self.trim();
                    wait.trim_at = None;
                }
            }
            woke = true;
        }
        if woke {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Whether the connection is idle enough to park: settled, quiet long enough for its
    /// buffers to have been given back, nothing in flight through the broker, nothing
    /// to write, not closing. (Deliveries it is owed, a PUBACK it waits for, its
    /// keep-alive: all of them wake it in the lot.)
    fn parkable(&self, wait: &Wait) -> bool {
        wait.settled
            && wait.trim_at.is_none()
            && !wait.closing
            && self.pipeline.is_empty()
            && self.conn.transmit_len() == 0
            && self.link.session().is_some()
            // A deadline just passed is the runtime timer's to fire (it rounds up to its
            // next millisecond): parked, the connection would come straight back.
            && self
                .conn
                .poll_timeout()
                .is_none_or(|due| due > Instant::now())
    }

    /// The connection has been quiet: give back the memory of everything empty (the
    /// machine's buffers and tables, the pipeline's queues, the mailbox's queue).
    fn trim(&mut self) {
        self.conn.trim();
        self.pipeline.trim();
        self.link.trim();
    }

    /// The connection is over: flush what the machine still had to say (a refusal, a
    /// DISCONNECT with its reason), then close gracefully ([`linger`]).
    async fn close<R, W>(&mut self, reader: &mut R, writer: &mut W, timer: Pin<&mut Sleep>)
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let cfg = &self.shared.config.mqtt;
        let (grace, max) = (cfg.close_grace(), cfg.close_grace_bytes);
        let stats = &self.shared.stats;
        let tx = self.conn.transmit();
        let flush = async {
            let n = tx.len();
            writer.write_all_buf(tx).await?;
            stats.sent(n);
            writer.shutdown().await
        };
        if tokio::time::timeout(Duration::from_secs(1), flush)
            .await
            .is_ok_and(|r| r.is_ok())
        {
            linger(reader, timer, grace, max, stats).await;
        }
    }
}

/// After the last packet and our FIN: read and discard what the client still sends,
/// until it closes too, for at most `grace` and `max` bytes. Closing a socket with unread
/// bytes in it makes the kernel answer with a reset, which destroys what the client had
/// not read yet — the DISCONNECT or CONNACK saying why it is closed (issue 16: a paho
/// client still publishing got ECONNRESET instead of its 0x93). Draining lets the client
/// read it, see our FIN, and close in turn.
async fn linger<R: AsyncRead + Unpin>(
    reader: &mut R,
    mut timer: Pin<&mut Sleep>,
    grace: Duration,
    max: usize,
    stats: &super::counted::Stats,
) {
    if grace.is_zero() {
        return;
    }
    timer.as_mut().reset(tokio::time::Instant::now() + grace);
    let mut left = max;
    std::future::poll_fn(|cx| {
        loop {
            let mut done = false;
            let read = read_into(reader, cx, |got| match got {
                Ok(bytes) if !bytes.is_empty() && bytes.len() < left => {
                    stats.received(bytes.len());
                    left -= bytes.len();
                }
                Ok(bytes) => {
                    stats.received(bytes.len());
                    done = true;
                }
                Err(_) => done = true,
            });
            match read {
                Poll::Ready(()) if !done => continue,
                Poll::Ready(()) => return Poll::Ready(()),
                Poll::Pending => break,
            }
        }
        timer.as_mut().poll(cx)
    })
    .await;
}

/// Number of levels in a topic name or filter (`a/b/c` has 3).
fn levels(topic: &str) -> usize {
    topic.bytes().filter(|b| *b == b'/').count() + 1
}

/// Work an event leaves to await, boxed; `true` when the connection is over.
type Later<'a> = Pin<Box<dyn Future<Output = bool> + Send + 'a>>;

impl Driver {
    /// Handle one event. PUBLISH, acknowledgements and PINGREQ are handled here at once;
    /// what has to wait for something — the rare events, whose handling awaits logins,
    /// locks and durable writes ([`Driver::handle_rare`]), a refused PUBLISH or a PINGREQ
    /// behind pipelined PUBLISHes — comes back as work to await, boxed while it runs so
    /// that its state does not enlarge every connection's future.
    fn handle_event(&mut self, ev: Event) -> Option<Later<'_>> {
        match ev {
            Event::Publish(p) => self.on_publish(p),
            Event::InflightFreed => {
                // Exchanges finished: their durable queue entries can go (nobody waits).
                if let Some(session) = self.link.session() {
                    self.outbox.finished(&self.conn, session);
                }
                None
            }
            // PINGRESP tells the client everything it sent before the PINGREQ is done.
            Event::PingRequest if self.pipeline.is_empty() => {
                self.conn.ping_response();
                None
            }
            Event::PingRequest => Some(Box::pin(async move {
                self.drain_pipeline().await;
                self.conn.ping_response();
                false
            })),
            rare => Some(Box::pin(self.handle_rare(rare))),
        }
    }

    /// CONNECT, SUBSCRIBE, UNSUBSCRIBE and the close; true when the connection is over.
    async fn handle_rare(&mut self, ev: Event) -> bool {
        if !matches!(ev, Event::Connect(_)) {
            // What the client published before this packet is done first, as if handled
            // one by one: a SUBSCRIBE sees the retained value the client just published,
            // and a disconnect does not cut off its last messages.
            self.drain_pipeline().await;
        }
        match ev {
            Event::Connect(c) => {
                self.link
                    .connect(
                        *c,
                        &mut self.conn,
                        &self.shared,
                        &mut self.access,
                        self.peer,
                    )
                    .await
            }
            Event::Subscribe(s) => {
                let id = s.properties.subscription_identifiers.first().copied();
                self.on_subscribe(s.pkid, s.filters, id).await;
            }
            Event::Unsubscribe(u) => self.on_unsubscribe(u).await,
            Event::Closed { reason, will } => {
                self.link
                    .closed(
                        reason,
                        will,
                        &mut self.conn,
                        &self.shared,
                        &self.access,
                        self.peer,
                    )
                    .await;
                return true;
            }
            Event::Publish(_) | Event::InflightFreed | Event::PingRequest => {}
        }
        false
    }

    /// A request refused by a configured limit: counted and logged, never silent.
    fn limit_hit(&self, limit: &'static str, what: &str) {
        let n = self
            .shared
            .broker
            .metrics
            .limits_hit
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        tracing::warn!(peer = %self.peer, limit, topic = %what, refused = n, "MQTT request refused by a limit");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future a function returns, without calling it.
    fn future_size<Args, F: Future>(_: impl FnOnce(Args) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// The task future of one plain TCP connection, without the listener's guards (a
    /// connection slot, a `[limits]` place and a gauge: 64 bytes more).
    fn tcp_connection_future() -> usize {
        future_size(|(stream, peer, shared, shutdown)| run_tcp(stream, peer, shared, shutdown, ()))
    }

    #[test]
    fn an_idle_connection_is_a_small_task() {
        // BENCHMARKS.md quotes these; `cargo test --lib connection_is_a_small -- --nocapture`.
        let sizes = [
            ("TCP connection future", tcp_connection_future()),
            ("Driver", std::mem::size_of::<Driver>()),
            (
                "Idle (a parked connection, without the listener's guards)",
                std::mem::size_of::<Idle<()>>(),
            ),
            ("ponte_mqtt::Connection", std::mem::size_of::<Connection>()),
            ("Link", std::mem::size_of::<Link>()),
            ("Access", std::mem::size_of::<Access>()),
            ("tokio Sleep", std::mem::size_of::<Sleep>()),
            (
                "Session",
                std::mem::size_of::<super::super::session::Session>(),
            ),
            (
                "Mailbox",
                std::mem::size_of::<crate::broker::mailbox::Mailbox>(),
            ),
        ];
        for (what, size) in sizes {
            eprintln!("{what}: {size} bytes");
        }
        // Was 2.6 KB before issue 16 (CONNECT's login future, select! of six futures, the
        // will's properties and both buffers inline). tokio allocates a task as a header
        // and a trailer (96 bytes) around the future and the listener's guards (64 bytes),
        // rounded up to 128: at most 608 here keeps the task within 768 bytes (896 at 728,
        // before the machine's buffers were boxed together; 1,024 at 840; measured with
        // massif, BENCHMARKS.md).
        assert!(tcp_connection_future() <= 608, "{sizes:?}");
        assert!(std::mem::size_of::<Driver>() <= 240, "{sizes:?}");
        // Parked, a connection is this block plus the guards' 64 bytes: 312 with them, in
        // a 320-byte heap block (glibc adds 8 and rounds to 16: 264 here was a 336-byte
        // block).
        assert!(std::mem::size_of::<Idle<()>>() <= 248, "{sizes:?}");
        // Idle, the machine holds nothing outside these bytes (`Connection::heap_size`).
        assert!(std::mem::size_of::<Connection>() <= 72, "{sizes:?}");
        // Every connection's session, in a block of 160 (its owner is a flag in it, not
        // a lock of its own: 64 bytes fewer a connection).
        assert!(
            std::mem::size_of::<super::super::session::Session>() <= 152,
            "{sizes:?}"
        );
    }
}
