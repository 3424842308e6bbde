//! CoAP over TCP (RFC 8323): the accept loop and one task per connection around the
//! sans-IO [`TcpConnection`], sharing [`Front`] (resources, writes, observations) with UDP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
use crate::metrics::{Metrics, Protocol, Transport};
use crate::shutdown::Shutdown;

/// How long one write to a client may take before the connection is given up: a client
/// that stops reading must not hold its task (and its subscriptions) forever.
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

/// Write every queued frame; false when the socket failed or stalled.
async fn flush(conn: &mut TcpConnection, wr: &mut OwnedWriteHalf, ops: &Metrics) -> bool {
    while let Some(bytes) = conn.poll_transmit() {
        ops.bytes_sent(Protocol::Coap, bytes.len() as u64);
        match tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(&bytes)).await {
            Ok(Ok(())) => {}
            _ => return false,
        }
    }
    true
}

/// Drive one connection until either side ends it.
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
    let mut conn = TcpConnection::new(endpoint_config(&config), Instant::now(), peer);
    let ops = broker.ops.clone();
    let mut front = Front::new(broker, auth, &config, writes);
    let mailbox = front.mailbox.clone();
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = vec![0u8; 16 * 1024];
    // CoAP over plain TCP authenticates nobody.
    let anonymous = Caller::default();
    loop {
        while let Some(ev) = conn.poll_event() {
            front.on_event(&mut conn, ev, &anonymous);
        }
        if !flush(&mut conn, &mut wr, &ops).await || conn.is_closed() {
            break;
        }
        let deadline = conn.poll_timeout();
        tokio::select! {
            r = rd.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    ops.bytes_received(Protocol::Coap, n as u64);
                    conn.handle_bytes(Instant::now(), &buf[..n]);
                }
            },
            done = front.next_done() => front.answer_writes(&mut conn, done),
            _ = mailbox.notified() => front.on_deliveries(&mut conn),
            _ = sleep_until(deadline) => conn.handle_timeout(Instant::now()),
            _ = shutdown.recv() => {
                conn.release();
                let _ = flush(&mut conn, &mut wr, &ops).await;
                break;
            }
        }
    }
    let _ = wr.shutdown().await;
    tracing::debug!(%peer, stats = ?conn.stats(), "CoAP/TCP connection closed");
    front.close();
}
