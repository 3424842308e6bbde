//! CoAP over DTLS 1.2 with pre-shared keys (`coaps://`, RFC 7252 §9.1, PreSharedKey mode):
//! one UDP socket, one DTLS session per peer address, and in each session the same CoAP
//! machinery as plain UDP — a [`ponte_coap::Endpoint`] and a `Front` — fed with the
//! decrypted datagrams. So `coaps` has the same semantics as `coap` (GET/PUT/POST/DELETE on
//! `/r/T`, Observe, Block-wise, discovery), and each request carries the session's PSK
//! identity as its `Caller` user name.
//!
//! The DTLS engine is [`dimpl`] (sans-IO, like ponte-coap), restricted to the cipher suite
//! RFC 7252 §9.1.3.1 makes mandatory, `TLS_PSK_WITH_AES_128_CCM_8`.
//!
//! Why a task per session rather than one endpoint for the socket: RFC 7252 §9.1 binds a
//! CoAP exchange — and an observation — to the DTLS session it came in on. With one
//! [`Endpoint`] per session, message deduplication, observers and Block-wise transfers of
//! one session can never be matched to another session that later uses the same address,
//! and a session that ends takes all of its state with it (as TCP connections do in
//! `tcp.rs`). The receiving task only demultiplexes datagrams by peer address.
//!
//! Bounds: at most `[coap] dtls_max_sessions` sessions; a new session is only created for
//! a ClientHello that returns the stateless cookie of our HelloVerifyRequest
//! ([`super::hello_verify`], RFC 6347 §4.2.1) — anything else from an unknown peer is
//! answered statelessly or dropped, and counted — so strangers, spoofed or not, hold no
//! session; a handshake must finish within [`HANDSHAKE_TIMEOUT`]; a session that hears
//! nothing for `[coap] dtls_idle_timeout_secs` is closed. Handshake failures (unknown
//! identity, wrong key, timeouts, protocol errors) are counted in [`DtlsStats`] and logged.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dimpl::crypto::Dtls12CipherSuite;
use dimpl::{Dtls, Output, PskResolver};
use ponte_coap::Endpoint;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::hello_verify::{ClientHello, CookieJar};
use super::{endpoint_config, send, sleep_until, Caller, Front, MAX_DATAGRAM};
use crate::auth::Auth;
use crate::broker::Broker;
use crate::config::Config;
use crate::limits::{Limits, RateLimiters};
use crate::shutdown::Shutdown;

/// Longest a DTLS handshake may take from the first ClientHello. A real handshake takes a
/// few round trips; the bound frees the slot of a peer that started one and went away (or
/// never meant to finish), while leaving room for a few retransmissions (1 s, 2 s, 4 s).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// Datagrams queued for one session before more are dropped (UDP may drop anyway; the
/// bound keeps a peer that floods from growing memory).
const SESSION_QUEUE: usize = 64;

/// Largest DTLS datagram produced. Above CoAP's own limit (a 1024-byte block plus options
/// and the record overhead of CCM_8) so one CoAP message is one record in one datagram.
const DTLS_MTU: usize = 1400;

/// Counters of the `coaps` listener; all monotonically increasing.
#[derive(Debug, Default)]
pub struct DtlsStats {
    /// HelloVerifyRequests sent: ClientHellos from peers without a session, answered with a
    /// cookie and nothing kept.
    pub hello_verify_requests: AtomicU64,
    /// Of those, ClientHellos that carried a cookie we did not make (forged, for another
    /// address, or older than two secret lifetimes).
    pub bad_cookies: AtomicU64,
    /// Sessions created: for a ClientHello that returned a valid cookie.
    pub sessions_started: AtomicU64,
    /// Handshakes that completed: the peer proved it holds the key of its identity.
    pub sessions_established: AtomicU64,
    /// Handshakes that failed (any reason, including the ones counted below).
    pub handshakes_failed: AtomicU64,
    /// Of those, handshakes whose PSK identity is not in the PSK file.
    pub unknown_identities: AtomicU64,
    /// Established sessions closed because they heard nothing for the idle timeout.
    pub idle_closed: AtomicU64,
    /// ClientHellos with a valid cookie dropped because `dtls_max_sessions` sessions already
    /// exist.
    pub refused_full: AtomicU64,
    /// Datagrams from peers without a session that are not a ClientHello (garbage, or
    /// records of a session that already ended).
    pub stray_datagrams: AtomicU64,
}

impl DtlsStats {
    /// Add one to `counter`.
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

thread_local! {
    /// The PSK identity the resolver was last asked for on this thread, and whether the
    /// file has it. dimpl resolves the identity inside a synchronous call into one
    /// session's [`Dtls`] and offers no accessor for it afterwards; a session clears this
    /// slot before each such call and takes it after, with no `.await` in between, so the
    /// value read is the one its own handshake asked for.
    static RESOLVED: RefCell<Option<(Vec<u8>, bool)>> = const { RefCell::new(None) };
}

/// Looks identities up in the PSK file (through [`Auth`], so a SIGHUP reload reaches new
/// handshakes) and notes what was asked in [`RESOLVED`].
struct Resolver {
    /// The identities and keys. dimpl wants an unwind-safe resolver; `Auth`'s interior
    /// mutability (the password cache, counters) is never touched by a PSK lookup, and a
    /// panic inside dimpl leaves nothing of it half-updated.
    auth: std::panic::AssertUnwindSafe<Arc<Auth>>,
}

impl PskResolver for Resolver {
    fn resolve(&self, identity: &[u8]) -> Option<Vec<u8>> {
        let key = self.auth.psk_key(identity);
        RESOLVED.with(|slot| *slot.borrow_mut() = Some((identity.to_vec(), key.is_some())));
        key
    }
}

/// Why the `coaps` listener could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot configure DTLS: {0}")]
pub struct DtlsSetupError(String);

/// A bound `coaps` socket with its DTLS configuration, ready to serve.
pub struct DtlsListener {
    /// The UDP socket every session sends and receives on.
    socket: UdpSocket,
    /// The DTLS configuration shared by all sessions (PSK server, CCM_8 only).
    dtls: Arc<dimpl::Config>,
    /// Counters, shared with the [`crate::Gateway`] for monitoring and tests.
    stats: Arc<DtlsStats>,
}

impl std::fmt::Debug for DtlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsListener")
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

impl DtlsListener {
    /// Bind `[coap] host`:`dtls_port` and prepare DTLS with the PSK file's keys (looked up
    /// through `auth`).
    pub async fn bind(config: &Config, auth: Arc<Auth>) -> Result<DtlsListener, crate::Error> {
        let addr = config.coaps_addr();
        let dtls = dimpl::Config::builder()
            .with_psk_server(
                None,
                Arc::new(Resolver {
                    auth: std::panic::AssertUnwindSafe(auth),
                }),
            )
            .dtls12_cipher_suites(&[Dtls12CipherSuite::PSK_AES128_CCM_8])
            // The cookie exchange is ours, before any session exists (hello_verify.rs).
            .use_server_cookie(false)
            .handshake_timeout(HANDSHAKE_TIMEOUT)
            .mtu(DTLS_MTU)
            .build()
            .map_err(|e| crate::Error::Dtls(DtlsSetupError(e.to_string())))?;
        let socket = UdpSocket::bind(addr)
            .await
            .map_err(|source| crate::Error::Bind {
                protocol: "CoAP/DTLS",
                addr,
                source,
            })?;
        Ok(DtlsListener {
            socket,
            dtls: Arc::new(dtls),
            stats: Arc::new(DtlsStats::default()),
        })
    }

    /// Where the socket is bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The listener's counters.
    pub fn stats(&self) -> Arc<DtlsStats> {
        self.stats.clone()
    }

    /// Receive datagrams and hand them to their sessions until shutdown.
    pub async fn serve(
        self,
        broker: Arc<Broker>,
        auth: Arc<Auth>,
        config: Arc<Config>,
        limits: Arc<Limits>,
        mut shutdown: Shutdown,
    ) {
        let shared = Arc::new(Shared {
            writes: limits.coap.clone(),
            socket: self.socket,
            dtls: self.dtls,
            stats: self.stats,
            broker,
            auth,
            idle_timeout: Duration::from_secs(config.coap.dtls_idle_timeout_secs.max(1)),
            config,
        });
        let max_sessions = shared.config.coap.dtls_max_sessions.max(1);
        let mut sessions: HashMap<SocketAddr, SessionHandle> = HashMap::new();
        // One message per session that ends, so bounded by the number of sessions.
        let (ended_tx, mut ended_rx) = mpsc::unbounded_channel::<(SocketAddr, u64)>();
        let mut next_id: u64 = 0;
        let mut cookies = CookieJar::new(Instant::now());
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            tokio::select! {
                r = shared.socket.recv_from(&mut buf) => match r {
                    Ok((n, peer)) => {
                        let datagram = &buf[..n];
                        shared.broker.ops.bytes_received(crate::metrics::Protocol::Coap, n as u64);
                        if let Some(handle) = sessions.get(&peer) {
                            match handle.tx.try_send(Bytes::copy_from_slice(datagram)) {
                                Ok(()) => continue,
                                // The session is behind: drop, as a busy network would.
                                Err(mpsc::error::TrySendError::Full(_)) => continue,
                                // It ended (its end message is on its way): maybe start anew.
                                Err(mpsc::error::TrySendError::Closed(_)) => {
                                    sessions.remove(&peer);
                                }
                            }
                        }
                        let hello = is_client_hello(datagram)
                            .then(|| ClientHello::parse(datagram))
                            .flatten();
                        let Some(hello) = hello else {
                            DtlsStats::bump(&shared.stats.stray_datagrams);
                            tracing::trace!(%peer, len = n, "coaps: datagram outside any session dropped");
                            continue;
                        };
                        let now = Instant::now();
                        if !cookies.verify(now, peer, &hello) {
                            // RFC 6347 §4.2.1: prove you receive at this address first.
                            if !hello.cookie.is_empty() {
                                DtlsStats::bump(&shared.stats.bad_cookies);
                            }
                            DtlsStats::bump(&shared.stats.hello_verify_requests);
                            let hvr = cookies.hello_verify_request(now, peer, &hello);
                            // Never wait here: a full socket buffer drops it, as UDP may.
                            let _ = shared.socket.try_send_to(&hvr, peer);
                            continue;
                        }
                        if sessions.len() >= max_sessions {
                            DtlsStats::bump(&shared.stats.refused_full);
                            tracing::warn!(%peer, max_sessions, "coaps: ClientHello dropped: too many DTLS sessions");
                            continue;
                        }
                        let start = (hello.message_seq, hello.record_seq);
                        next_id += 1;
                        let id = next_id;
                        let (tx, rx) = mpsc::channel(SESSION_QUEUE);
                        // The first datagram fits: the queue is new.
                        let _ = tx.try_send(Bytes::copy_from_slice(datagram));
                        sessions.insert(peer, SessionHandle { id, tx });
                        DtlsStats::bump(&shared.stats.sessions_started);
                        let (shared, ended, shutdown) =
                            (shared.clone(), ended_tx.clone(), shutdown.clone());
                        let counted = shared.broker.ops.connection(crate::metrics::Transport::Coaps);
                        tokio::spawn(async move {
                            let _counted = counted;
                            session(peer, start, rx, &shared, shutdown).await;
                            let _ = ended.send((peer, id));
                        });
                    }
                    Err(e) => tracing::debug!(error = %e, "coaps recv failed"),
                },
                Some((peer, id)) = ended_rx.recv() => {
                    if sessions.get(&peer).map(|h| h.id) == Some(id) {
                        sessions.remove(&peer);
                    }
                }
                _ = shutdown.recv() => break,
            }
        }
        // Each session sees the shutdown itself and sends its close_notify.
    }
}

/// What every session needs.
struct Shared {
    /// The socket, shared by the receiving task and every session for sending.
    socket: UdpSocket,
    /// DTLS configuration.
    dtls: Arc<dimpl::Config>,
    /// Counters.
    stats: Arc<DtlsStats>,
    /// The broker core.
    broker: Arc<Broker>,
    /// Who may read and write what (the session's PSK identity is the username).
    auth: Arc<Auth>,
    /// The whole configuration (the `[coap]` section drives each session's endpoint).
    config: Arc<Config>,
    /// `[coap] dtls_idle_timeout_secs`.
    idle_timeout: Duration,
    /// CoAP writes per client address (`[limits] publish_rate`).
    writes: Arc<RateLimiters>,
}

/// The receiving task's view of one session.
struct SessionHandle {
    /// Tells this session from a later one of the same peer address.
    id: u64,
    /// Datagrams for the session.
    tx: mpsc::Sender<Bytes>,
}

/// Whether `d` is a DTLS 1.x handshake record at epoch 0 carrying a ClientHello (RFC 6347
/// §4.1 record header, §4.2.2 handshake header): the only datagram that may start a session.
fn is_client_hello(d: &[u8]) -> bool {
    const RECORD_HEADER: usize = 13;
    const HANDSHAKE_HEADER: usize = 12;
    d.len() >= RECORD_HEADER + HANDSHAKE_HEADER
        && d[0] == 22 // content type: handshake
        && d[1] == 0xfe // DTLS major version (1.0 is fe ff, 1.2 is fe fd)
        && d[3] == 0
        && d[4] == 0 // epoch 0: unencrypted
        && d[RECORD_HEADER] == 1 // handshake type: client_hello
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The peer sent close_notify.
    PeerClosed,
    /// Nothing heard for the idle timeout.
    Idle,
    /// The gateway is shutting down.
    Shutdown,
    /// The DTLS engine reported a fatal error (logged and counted where it happened).
    Failed,
}

/// One DTLS session's engine with the state around it.
struct Session<'a> {
    /// The peer.
    peer: SocketAddr,
    /// What all sessions share.
    shared: &'a Shared,
    /// The DTLS engine.
    dtls: Dtls,
    /// Output buffer for [`Dtls::poll_output`].
    out: Vec<u8>,
    /// Datagrams produced, waiting to be sent.
    packets: Vec<Vec<u8>>,
    /// When the engine wants [`Dtls::handle_timeout`] called.
    deadline: Option<Instant>,
    /// Whether the handshake completed.
    established: bool,
    /// The identity the peer's ClientKeyExchange named, and whether the file has it.
    offered: Option<(Vec<u8>, bool)>,
    /// Who the requests of this session come from (set when established).
    caller: Caller,
    /// The peer closed the session.
    peer_closed: bool,
}

impl Session<'_> {
    /// Call into the engine, noting the PSK identity it resolved meanwhile (see
    /// [`RESOLVED`]). A fatal error is logged and counted here.
    fn call(&mut self, f: impl FnOnce(&mut Dtls) -> Result<(), dimpl::Error>) -> Result<(), End> {
        RESOLVED.with(|slot| slot.borrow_mut().take());
        let result = f(&mut self.dtls);
        if let Some(resolved) = RESOLVED.with(|slot| slot.borrow_mut().take()) {
            self.offered = Some(resolved);
        }
        result.map_err(|e| self.fail(&e.to_string()))
    }

    /// Log and count a fatal error.
    fn fail(&mut self, reason: &str) -> End {
        let peer = self.peer;
        if self.established {
            tracing::info!(%peer, user = ?self.caller.username, %reason, "coaps session failed");
            return End::Failed;
        }
        let stats = &self.shared.stats;
        DtlsStats::bump(&stats.handshakes_failed);
        match &self.offered {
            Some((identity, false)) => {
                DtlsStats::bump(&stats.unknown_identities);
                let identity = String::from_utf8_lossy(identity);
                tracing::warn!(%peer, %identity, %reason, "coaps handshake failed: unknown PSK identity");
            }
            Some((identity, true)) => {
                let identity = String::from_utf8_lossy(identity);
                tracing::warn!(%peer, %identity, %reason, "coaps handshake failed (wrong key?)");
            }
            None => tracing::warn!(%peer, %reason, "coaps handshake failed"),
        }
        End::Failed
    }

    /// Drain the engine's output: datagrams to send, the end of the handshake, and
    /// decrypted CoAP messages, which go to `endpoint`.
    fn drain(&mut self, endpoint: &mut Endpoint) -> Result<(), End> {
        loop {
            match self.dtls.poll_output(&mut self.out) {
                Output::Packet(p) => self.packets.push(p.to_vec()),
                Output::BufferTooSmall { needed } => self.out.resize(needed, 0),
                Output::Timeout(t) => {
                    self.deadline = Some(t);
                    return Ok(());
                }
                Output::Connected => self.established()?,
                // Application data only exists after the handshake; the guard is belt and
                // braces so nothing unauthenticated ever reaches the endpoint.
                Output::ApplicationData(data) if self.established => {
                    endpoint.handle_datagram(Instant::now(), self.peer, data);
                }
                Output::CloseNotify => self.peer_closed = true,
                // Certificates and SRTP keying material do not occur with PSK.
                _ => {}
            }
        }
    }

    /// The handshake completed: the peer holds the key of the identity it named.
    fn established(&mut self) -> Result<(), End> {
        let username = match &self.offered {
            Some((identity, true)) => std::str::from_utf8(identity).ok().map(Arc::<str>::from),
            _ => None,
        };
        // The PSK file is text, so a known identity is UTF-8; anything else would be a bug.
        let Some(username) = username else {
            return Err(self.fail("handshake completed without a known PSK identity"));
        };
        DtlsStats::bump(&self.shared.stats.sessions_established);
        tracing::debug!(peer = %self.peer, user = %username, "coaps session established");
        self.established = true;
        self.caller = Caller {
            username: Some(username),
        };
        Ok(())
    }

    /// Send the datagrams produced so far.
    async fn flush(&mut self) {
        for p in self.packets.drain(..) {
            self.shared
                .broker
                .ops
                .bytes_sent(crate::metrics::Protocol::Coap, p.len() as u64);
            send(&self.shared.socket, self.peer, &p).await;
        }
    }
}

/// Drive one DTLS session (and the CoAP endpoint inside it) until it ends. `start`: the
/// handshake `message_seq` and record sequence number of the ClientHello whose cookie was
/// verified, which the session's engine continues from.
async fn session(
    peer: SocketAddr,
    start: (u16, u64),
    mut rx: mpsc::Receiver<Bytes>,
    shared: &Shared,
    mut shutdown: Shutdown,
) {
    let config = &shared.config;
    let mut endpoint = Endpoint::new(endpoint_config(config));
    let mut front = Front::new(
        shared.broker.clone(),
        shared.auth.clone(),
        config,
        shared.writes.clone(),
    );
    let mailbox = front.mailbox.clone();
    let mut s = Session {
        peer,
        shared,
        dtls: Dtls::new_12_psk_hello_verified(
            shared.dtls.clone(),
            Instant::now(),
            start.0,
            start.1,
        ),
        out: vec![0u8; 2048],
        packets: Vec::new(),
        deadline: None,
        established: false,
        offered: None,
        caller: Caller::default(),
        peer_closed: false,
    };
    let mut last_heard = Instant::now();
    let end = loop {
        // Engine output first (it may carry requests), then the endpoint's events (which
        // may answer them), then the endpoint's datagrams into the engine — until quiet.
        let pumped = (|| -> Result<(), End> {
            loop {
                s.drain(&mut endpoint)?;
                while let Some(ev) = endpoint.poll_event() {
                    front.on_event(&mut endpoint, ev, &s.caller);
                }
                let mut moved = false;
                while let Some((_, bytes)) = endpoint.poll_transmit() {
                    moved = true;
                    s.call(|d| d.send_application_data(&bytes).map(|_| ()))?;
                    // Drain after each record so the engine's transmit queue never fills.
                    s.drain(&mut endpoint)?;
                }
                if !moved {
                    return Ok(());
                }
            }
        })();
        s.flush().await;
        if let Err(end) = pumped {
            break end;
        }
        if s.peer_closed {
            break End::PeerClosed;
        }
        let idle_at = last_heard + shared.idle_timeout;
        tokio::select! {
            d = rx.recv() => match d {
                Some(d) => {
                    let now = Instant::now();
                    last_heard = now;
                    // dimpl wants its clock refreshed before a packet at a new instant.
                    if let Err(end) = s.call(|dtls| dtls.handle_timeout(now)) {
                        break end;
                    }
                    if let Err(end) = s.call(|dtls| dtls.handle_packet(&d)) {
                        break end;
                    }
                }
                None => break End::Shutdown,
            },
            done = front.next_done() => front.answer_writes(&mut endpoint, done),
            _ = mailbox.notified() => front.on_deliveries(&mut endpoint),
            _ = sleep_until(endpoint.poll_timeout()) => endpoint.handle_timeout(Instant::now()),
            _ = sleep_until(s.deadline) => {
                let now = Instant::now();
                if let Err(end) = s.call(|dtls| dtls.handle_timeout(now)) {
                    break end;
                }
            }
            _ = tokio::time::sleep_until(idle_at.into()) => break End::Idle,
            _ = shutdown.recv() => break End::Shutdown,
        }
    };
    match end {
        End::Idle | End::Shutdown => {
            if end == End::Idle && s.established {
                DtlsStats::bump(&shared.stats.idle_closed);
            }
            if end == End::Idle && !s.established {
                // A handshake that never finished: the engine's own deadline normally
                // fires first, but the idle bound may be shorter.
                s.fail("no handshake progress before the idle timeout");
            }
            // A close_notify for an established session; nothing for a handshake.
            let _ = s.call(|dtls| dtls.close());
            let _ = s.drain(&mut endpoint);
            s.flush().await;
        }
        End::PeerClosed | End::Failed => {}
    }
    tracing::debug!(%peer, ?end, user = ?s.caller.username, stats = ?endpoint.stats(), "coaps session ended");
    front.close();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resolver_notes_the_identity_asked_for_and_whether_it_is_known() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("psk");
        std::fs::write(&file, "alice:00ff\n").unwrap();
        let auth = Auth::new(crate::auth::AuthConfig {
            psk_file: Some(file),
            ..Default::default()
        })
        .unwrap();
        let r = Resolver {
            auth: std::panic::AssertUnwindSafe(Arc::new(auth)),
        };
        RESOLVED.with(|s| s.borrow_mut().take());
        assert_eq!(r.resolve(b"alice"), Some(vec![0x00, 0xff]));
        assert_eq!(
            RESOLVED.with(|s| s.borrow_mut().take()),
            Some((b"alice".to_vec(), true))
        );
        assert_eq!(r.resolve(b"mallory"), None);
        assert_eq!(
            RESOLVED.with(|s| s.borrow_mut().take()),
            Some((b"mallory".to_vec(), false))
        );
    }

    #[test]
    fn rfc6347_4_1_only_an_epoch_0_client_hello_starts_a_session() {
        let mut hello = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 40, 1];
        hello.resize(13 + 40, 0);
        assert!(is_client_hello(&hello));
        let mut d = hello.clone();
        d[0] = 23; // application data
        assert!(!is_client_hello(&d));
        let mut d = hello.clone();
        d[4] = 1; // epoch 1
        assert!(!is_client_hello(&d));
        let mut d = hello.clone();
        d[13] = 16; // client_key_exchange
        assert!(!is_client_hello(&d));
        assert!(!is_client_hello(&hello[..20]));
        assert!(
            !is_client_hello(b"\x40\x01\x00\x01"),
            "plain CoAP is not DTLS"
        );
        assert!(!is_client_hello(&[]));
    }
}
