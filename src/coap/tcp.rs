//! CoAP over TCP (RFC 8323): the accept loop and one task per connection around the
//! sans-IO [`TcpConnection`], sharing [`Front`] (resources, writes, observations) with UDP.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ponte_coap::TcpConnection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::{endpoint_config, sleep_until, Caller, Front};
use crate::auth::Auth;
use crate::broker::Broker;
use crate::config::Config;
use crate::limits::{Limits, RateLimiters};
use crate::metrics::{Protocol, Transport};
use crate::model::{Message, TopicName};
use crate::shutdown::Shutdown;

/// How long the socket may accept nothing while frames wait before the connection is given
/// up: a client that stops reading must not hold its task (and its subscriptions) forever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Accept CoAP-over-TCP connections on `listener` until shutdown, at most
/// `[coap] tcp_max_connections` at a time (more are closed at once).
pub async fn serve_tcp(
    listener: TcpListener,
    broker: Arc<Broker>,
    auth: Arc<Auth>,
    config: Arc<Config>,
    limits: Arc<Limits>,
    mut shutdown: Shutdown,
) {
    let slots = Arc::new(Semaphore::new(config.coap.tcp_max_connections.max(1)));
    let gate = limits.gate("coap-tcp");
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    let admitted = match gate.admit(peer.ip(), Instant::now()) {
                        Ok(p) => p,
                        Err(refused) => {
                            tracing::warn!(%peer, reason = %refused, "CoAP/TCP connection refused by [limits]");
                            drop(stream);
                            continue;
                        }
                    };
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        tracing::warn!(%peer, "CoAP/TCP connection refused: too many connections");
                        broker.ops.refused_full(Transport::CoapTcp);
                        drop(stream);
                        continue;
                    };
                    let counted = broker.ops.connection(Transport::CoapTcp);
                    let (broker, auth, config, shutdown) =
                        (broker.clone(), auth.clone(), config.clone(), shutdown.clone());
                    let writes = limits.coap.clone();
                    tokio::spawn(async move {
                        connection(stream, peer, broker, auth, config, writes, shutdown).await;
                        drop(counted);
                        drop(permit);
                        drop(admitted);
                    });
                }
                Err(e) => {
                    tracing::debug!(error = %e, "CoAP/TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.recv() => break,
        }
    }
}

/// Most bytes of encoded frames held for one connection's socket. Past it the connection
/// stops reading requests (TCP flow control pushes back on the client) and stops turning
/// notifications into frames: a client that stops reading costs at most this much in
/// frames, plus one pending notification per observed topic ([`Latest`]).
const HIGH_WATER: usize = 64 * 1024;

/// Most frames handed to one vectored write.
const MAX_IOVECS: usize = 64;

/// The newest undelivered message of each observed topic, oldest topic first: what a
/// connection whose socket is full still owes its observers. A newer message on a topic
/// replaces the older one (RFC 7641 §4.5.2, RFC 8323 §7.2: an observer wants the current
/// state; intermediate states may be skipped), so a stalled observer holds one message per
/// topic however many are published, and each is one shared `Arc<Message>`.
#[derive(Default)]
struct Latest {
    /// Topic → its newest message.
    by_topic: HashMap<TopicName, Arc<Message>>,
    /// Topics in the order their pending message first arrived.
    order: VecDeque<TopicName>,
}

impl Latest {
    /// Keep `m` as its topic's pending message; true when it replaced an older one.
    fn put(&mut self, m: Arc<Message>) -> bool {
        match self.by_topic.insert(m.topic.clone(), m.clone()) {
            Some(_) => true,
            None => {
                self.order.push_back(m.topic.clone());
                false
            }
        }
    }

    /// The oldest topic's pending message.
    fn take(&mut self) -> Option<Arc<Message>> {
        while let Some(topic) = self.order.pop_front() {
            if let Some(m) = self.by_topic.remove(&topic) {
                return Some(m);
            }
        }
        None
    }
}

/// Frames on their way to the socket: taken from the machine while fewer than
/// [`HIGH_WATER`] bytes wait, written with vectored writes as the socket accepts them.
#[derive(Default)]
struct Outbox {
    /// Frames in order; the first may be partly written.
    frames: VecDeque<Bytes>,
    /// Bytes of the first frame already written.
    offset: usize,
    /// Bytes not yet written.
    bytes: usize,
}

impl Outbox {
    /// Move the machine's frames in while there is room.
    fn fill(&mut self, conn: &mut TcpConnection) {
        while self.bytes < HIGH_WATER {
            match conn.poll_transmit() {
                Some(f) => {
                    self.bytes += f.len();
                    self.frames.push_back(f);
                }
                None => break,
            }
        }
    }

    /// Whether there is room for more output (requests read, notifications encoded).
    fn has_room(&self) -> bool {
        self.bytes < HIGH_WATER
    }

    fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// Write as much as the socket takes now; the number of bytes written.
    async fn write(&mut self, wr: &mut OwnedWriteHalf) -> std::io::Result<usize> {
        let n = {
            let mut slices = Vec::with_capacity(self.frames.len().min(MAX_IOVECS));
            for (i, f) in self.frames.iter().take(MAX_IOVECS).enumerate() {
                let start = if i == 0 { self.offset } else { 0 };
                slices.push(std::io::IoSlice::new(&f[start..]));
            }
            wr.write_vectored(&slices).await?
        };
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        self.bytes -= n;
        let mut left = n;
        while left > 0 {
            let Some(first) = self.frames.front() else {
                break;
            };
            let rest = first.len() - self.offset;
            if left >= rest {
                left -= rest;
                self.frames.pop_front();
                self.offset = 0;
            } else {
                self.offset += left;
                left = 0;
            }
        }
        Ok(n)
    }

    /// Write everything (shutdown), giving up after [`WRITE_TIMEOUT`] without progress.
    async fn flush(&mut self, conn: &mut TcpConnection, wr: &mut OwnedWriteHalf) {
        loop {
            self.fill(conn);
            if self.is_empty() {
                return;
            }
            match tokio::time::timeout(WRITE_TIMEOUT, self.write(wr)).await {
                Ok(Ok(_)) => {}
                _ => return,
            }
        }
    }
}

/// Drive one connection until either side ends it.
///
/// Reading, writing, answers of writes, notifications and timers are one `select!`, so a
/// client that stops reading never stalls the rest: its frames wait in a bounded
/// [`Outbox`], further notifications wait as [`Latest`] (one per topic), and if the socket
/// accepts nothing for [`WRITE_TIMEOUT`] while frames wait, the connection is closed.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    auth: Arc<Auth>,
    config: Arc<Config>,
    writes: Arc<RateLimiters>,
    mut shutdown: Shutdown,
) {
    let _ = stream.set_nodelay(true);
    let metrics_broker = broker.clone();
    let mut conn = TcpConnection::new(endpoint_config(&config), Instant::now(), peer);
    let ops = broker.ops.clone();
    let mut front = Front::new(broker, auth, &config, writes);
    let mailbox = front.mailbox.clone();
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = vec![0u8; 16 * 1024];
    let mut out = Outbox::default();
    let mut latest = Latest::default();
    // When the socket last accepted bytes while some waited (the write stall clock).
    let mut last_progress = Instant::now();
    // CoAP over plain TCP authenticates nobody.
    let anonymous = Caller::default();
    loop {
        while let Some(ev) = conn.poll_event() {
            front.on_event(&mut conn, ev, &anonymous);
        }
        out.fill(&mut conn);
        // Notifications become frames only while the socket keeps up.
        while out.has_room() {
            let Some(m) = latest.take() else {
                break;
            };
            front.notify(&mut conn, Instant::now(), &m);
            out.fill(&mut conn);
        }
        if conn.is_closed() && out.is_empty() {
            break;
        }
        if out.is_empty() {
            last_progress = Instant::now();
        }
        let deadline = conn.poll_timeout();
        let stalled_at = last_progress + WRITE_TIMEOUT;
        tokio::select! {
            r = rd.read(&mut buf), if out.has_room() && !conn.is_closed() => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    ops.bytes_received(Protocol::Coap, n as u64);
                    conn.handle_bytes(Instant::now(), &buf[..n]);
                }
            },
            w = out.write(&mut wr), if !out.is_empty() => match w {
                Ok(n) => {
                    ops.bytes_sent(Protocol::Coap, n as u64);
                    last_progress = Instant::now();
                }
                Err(_) => break,
            },
            _ = tokio::time::sleep_until(stalled_at.into()), if !out.is_empty() => {
                tracing::debug!(%peer, waiting = out.bytes, "CoAP/TCP client stopped reading; connection closed");
                break;
            }
            done = front.next_done() => front.answer_writes(&mut conn, done),
            _ = mailbox.notified() => {
                let mut superseded = 0u64;
                while let Some(d) = mailbox.pop() {
                    superseded += u64::from(latest.put(d.message));
                }
                if superseded > 0 {
                    metrics_broker
                        .metrics
                        .dropped
                        .fetch_add(superseded, std::sync::atomic::Ordering::Relaxed);
                }
            }
            _ = sleep_until(deadline) => conn.handle_timeout(Instant::now()),
            _ = shutdown.recv() => {
                conn.release();
                out.flush(&mut conn, &mut wr).await;
                break;
            }
        }
    }
    let _ = wr.shutdown().await;
    tracing::debug!(%peer, stats = ?conn.stats(), "CoAP/TCP connection closed");
    front.close();
}
