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
mod pipeline;
mod publish;
mod subscribe;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use ponte_mqtt::{reason, CloseReason, Connection, Event};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

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
    /// The protocol engine.
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
}

/// Serve one connection until it closes: a TCP socket's halves, a TLS stream's, or a
/// WebSocket bridged into a byte stream. `tls` is `Some` on TLS connections.
pub(crate) async fn run<R, W>(
    mut reader: R,
    mut writer: W,
    peer: SocketAddr,
    tls: Option<TlsPeer>,
    shared: Arc<Shared>,
    mut shutdown: Shutdown,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let cfg = &shared.config.mqtt;
    let conn = Connection::new(
        Instant::now(),
        ponte_mqtt::Config {
            max_packet_size: cfg.max_packet_size,
            max_inflight: cfg.max_inflight,
            connect_timeout: cfg.connect_timeout(),
            keep_alive_factor: 1.5,
            receive_maximum: cfg.receive_maximum,
            topic_alias_maximum: cfg.topic_alias_maximum,
            max_keep_alive: cfg.max_keepalive,
        },
    );
    let mut d = Driver {
        shared: shared.clone(),
        conn,
        peer,
        access: Access::new(shared.auth.clone(), peer).counting(shared.broker.ops.clone()),
        writes: shared.limits.write_limiter(),
        link: Link::new(tls),
        pipeline: Pipeline::default(),
        outbox: Outbox::default(),
    };
    // Buffers start empty and grow with the traffic, so an idle connection costs no buffer
    // memory (issue 6: 50k idle connections); see `ReadSize`.
    let mut rbuf = BytesMut::new();
    let mut wbuf = BytesMut::new();
    let mut read_size = ReadSize::default();
    let mut closed = false;
    // Whether this connection was told to close for shutdown. Checked at the top of every
    // turn too: a signal sent while the task was busy (not waiting in `select!`) must still
    // close it, or graceful shutdown would wait for it forever.
    let mut closing = false;
    loop {
        // Act on everything the machine has to say.
        while let Some(ev) = d.conn.poll_event() {
            if d.handle_event(ev).await {
                closed = true;
            }
        }
        if closed {
            break;
        }
        if !closing && shutdown.is_shutdown() {
            closing = true;
            d.conn.close(CloseReason::ServerClose);
            continue;
        }
        if let Some(session) = d.link.session() {
            d.outbox.pump(
                &mut d.conn,
                session,
                &d.access,
                &d.shared.broker,
                &mut wbuf,
                d.peer,
            );
        }
        // Nothing of this turn has been written yet: the durable state goes first.
        d.link.sync(&mut d.conn, d.peer).await;
        d.conn.poll_transmit(&mut wbuf);
        let deadline = d.conn.poll_timeout();
        let mailbox = d.link.session().map(|s| s.mailbox.clone());
        let kick = d.link.kick().clone();
        read_size.prepare(&mut rbuf);
        let reading = d.pipeline.len() < MAX_PIPELINED;
        let pipelined = !d.pipeline.is_empty();
        tokio::select! {
            () = std::future::poll_fn(|cx| d.poll_pipeline(cx)), if pipelined => {}
            r = reader.read_buf(&mut rbuf), if reading => match r {
                Ok(0) | Err(_) => d.conn.handle_eof(Instant::now()),
                Ok(n) => {
                    d.conn.handle_bytes(Instant::now(), &rbuf);
                    rbuf.clear();
                    read_size.observe(n, &mut rbuf);
                }
            },
            w = writer.write_buf(&mut wbuf), if !wbuf.is_empty() => {
                if w.is_err() {
                    d.conn.handle_eof(Instant::now());
                }
                if wbuf.is_empty() && wbuf.capacity() > MAX_IDLE_WRITE_BUFFER {
                    // A burst is written out: give its memory back.
                    wbuf = BytesMut::new();
                }
            }
            _ = sleep_until(deadline) => d.conn.handle_timeout(Instant::now()),
            _ = async { match &mailbox { Some(m) => m.notified().await, None => std::future::pending().await } },
                if wbuf.len() < WRITE_HIGH_WATER => {
                if mailbox.as_ref().is_some_and(|m| m.overflowed()) {
                    tracing::warn!(peer = %d.peer, "MQTT client's queue overflowed; disconnecting it (overflow = disconnect)");
                    d.conn.close(CloseReason::Server {
                        reason_code: reason::QUOTA_EXCEEDED,
                        reason_string: Some(format!(
                            "more than {} messages queued for this client (overflow = disconnect)",
                            d.shared.config.mqtt.max_queued
                        )),
                    });
                }
            }
            _ = kick.notified() => {
                d.conn.close(CloseReason::TakenOver);
            }
            _ = shutdown.recv(), if !closing => {
                closing = true;
                d.conn.close(CloseReason::ServerClose);
            }
        }
    }
    // Flush what the machine still had to say (e.g. a CONNACK refusal), then close.
    d.conn.poll_transmit(&mut wbuf);
    if !wbuf.is_empty() {
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(1), writer.write_all(&wbuf)).await;
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), writer.shutdown()).await;
}

/// Smallest read buffer once a connection has traffic.
const MIN_READ: usize = 256;
/// Largest read buffer: a publisher streaming at full speed reads this much per wake-up.
const MAX_READ: usize = 64 * 1024;
/// A write buffer larger than this is dropped once empty, so bursts do not pin memory.
const MAX_IDLE_WRITE_BUFFER: usize = 64 * 1024;

/// Adaptive read-buffer size: doubles while reads fill the buffer (a busy publisher gets big
/// reads, few syscalls), halves when they use under a quarter of it, and lets the memory go
/// when it shrinks, so an idle connection holds next to nothing.
#[derive(Debug)]
struct ReadSize {
    /// Bytes to have room for before the next read.
    want: usize,
}

impl Default for ReadSize {
    fn default() -> Self {
        ReadSize { want: MIN_READ }
    }
}

impl ReadSize {
    /// Make room for the next read.
    fn prepare(&self, buf: &mut BytesMut) {
        if buf.capacity() < self.want {
            buf.reserve(self.want);
        }
    }

    /// Learn from a read of `n` bytes into an emptied `buf`.
    fn observe(&mut self, n: usize, buf: &mut BytesMut) {
        if n >= self.want {
            self.want = (self.want * 2).min(MAX_READ);
        } else if n < self.want / 4 && self.want > MIN_READ {
            self.want /= 2;
            if buf.capacity() > self.want * 2 {
                *buf = BytesMut::new();
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// Number of levels in a topic name or filter (`a/b/c` has 3).
fn levels(topic: &str) -> usize {
    topic.bytes().filter(|b| *b == b'/').count() + 1
}

impl Driver {
    /// Handle one event; true when the connection is over.
    async fn handle_event(&mut self, ev: Event) -> bool {
        if matches!(
            ev,
            Event::Subscribe(_) | Event::Unsubscribe(_) | Event::PingRequest | Event::Closed { .. }
        ) {
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
            Event::Publish(p) => self.on_publish(p).await,
            Event::Subscribe(s) => {
                let id = s.properties.subscription_identifiers.first().copied();
                self.on_subscribe(s.pkid, s.filters, id).await;
            }
            Event::Unsubscribe(u) => self.on_unsubscribe(u).await,
            // After the drain above: PINGRESP tells the client everything it sent before
            // the PINGREQ is done.
            Event::PingRequest => self.conn.ping_response(),
            Event::InflightFreed => {
                // Exchanges finished: their durable queue entries can go (nobody waits).
                if let Some(session) = self.link.session() {
                    self.outbox.finished(&self.conn, session);
                }
            }
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
mod read_size_tests {
    use super::*;

    #[test]
    fn read_buffer_grows_with_traffic_and_is_released_when_idle() {
        let mut size = ReadSize::default();
        let mut buf = BytesMut::new();
        assert_eq!(
            buf.capacity(),
            0,
            "an idle connection starts with no buffer"
        );
        // A publisher filling every read doubles the size up to the cap.
        for _ in 0..16 {
            size.prepare(&mut buf);
            let n = buf.capacity();
            size.observe(n, &mut buf);
        }
        assert_eq!(size.want, MAX_READ);
        size.prepare(&mut buf);
        assert!(buf.capacity() >= MAX_READ);
        // Small reads (pings) shrink it again and give the memory back.
        for _ in 0..16 {
            size.prepare(&mut buf);
            size.observe(2, &mut buf);
        }
        assert_eq!(size.want, MIN_READ);
        assert!(
            buf.capacity() < MAX_READ,
            "capacity {} kept",
            buf.capacity()
        );
    }
}
