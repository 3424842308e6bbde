//! One MQTT connection: socket I/O around the sans-IO state machine.
//!
//! The loop reads and writes at the same time (a client that publishes while not reading
//! cannot deadlock us), processes the machine's events in order and moves deliveries from the
//! session's mailbox into the machine while its in-flight window and the write buffer have
//! room.
//!
//! PUBLISHes are pipelined: each is handed to the broker at once ([`Broker::stage`]: its
//! retained write goes to the store's writer), and the connection goes on reading while the
//! writes are made durable, so one group commit covers every PUBLISH in flight instead of one
//! commit per PUBLISH. They are delivered ([`Broker::deliver`]) strictly in arrival order once
//! their own write and every earlier one are durable, and acknowledged in arrival order once
//! persistent sessions' copies are durable too — never before. Any other packet (SUBSCRIBE,
//! UNSUBSCRIBE, PINGREQ, DISCONNECT) and any refusal waits until the pipeline is empty, so the client
//! sees the same results as if its packets were handled one by one; so does PINGREQ, whose
//! PINGRESP clients use as a barrier after QoS 0 PUBLISHes. At most
//! `MAX_PIPELINED` PUBLISHes are in flight; beyond that the socket is not read.
//!
//! [`Broker::stage`]: crate::broker::Broker::stage
//! [`Broker::deliver`]: crate::broker::Broker::deliver
//!
//! MQTT 5 connections use the same loop: the machine enforces the v5 limits and speaks the
//! v5 wire format; here v5 publish properties become the broker [`Message`]'s (Content Type
//! its content type, Message Expiry its deadline), subscription options become
//! [`SubOptions`], and a [`Delivery`]'s properties, subscription identifiers and expiry go
//! back out in [`Outgoing`]. A 3.1.1 event is handled as the v5 one with no properties.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::BytesMut;
use ponte_mqtt::{
    reason, CloseReason, Connect5, Connection, Event, LastWill, Outgoing, Properties, Publish,
    SubscriptionOptions,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

use super::access::{self, Access};
use super::session::Session;
use super::Shared;
use crate::broker::retained::Precondition;
use crate::broker::trie::SubOptions;
use crate::broker::Delivery;
use crate::broker::{Delivered, PublishOutcome, Staged, Stored};
use crate::limits::WriteLimiter;
use crate::model::{Message, Origin, QoS};
use crate::model::{TopicFilter, TopicName};
use crate::shutdown::Shutdown;
use crate::store::StoreError;
use crate::tls::TlsPeer;

/// Start of the response-topic basis a v5 client gets as CONNACK Response Information when
/// it sets Request Response Information (3.1.2.11.6, 3.2.2.3.15): the basis is this prefix,
/// the client id (bytes other than `A-Z a-z 0-9 - . _` percent-encoded, so it stays one
/// topic level without wildcards) and `/`, e.g. `ponte/response/sensor-1/`.
pub const RESPONSE_TOPIC_PREFIX: &str = "ponte/response/";

/// The Response Information for `client_id` (see [`RESPONSE_TOPIC_PREFIX`]).
pub fn response_information(client_id: &str) -> String {
    let mut out = String::with_capacity(RESPONSE_TOPIC_PREFIX.len() + client_id.len() + 1);
    out.push_str(RESPONSE_TOPIC_PREFIX);
    for b in client_id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out.push('/');
    out
}

/// Stop pulling from the mailbox while this many bytes wait to be written: a slow reader
/// backs up into its own mailbox (bounded, with its overflow policy), not into memory here.
const WRITE_HIGH_WATER: usize = 256 * 1024;

fn to_core(q: ponte_mqtt::QoS) -> QoS {
    match q {
        ponte_mqtt::QoS::AtMostOnce => QoS::AtMostOnce,
        ponte_mqtt::QoS::AtLeastOnce => QoS::AtLeastOnce,
        ponte_mqtt::QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

fn to_wire(q: QoS) -> ponte_mqtt::QoS {
    match q {
        QoS::AtMostOnce => ponte_mqtt::QoS::AtMostOnce,
        QoS::AtLeastOnce => ponte_mqtt::QoS::AtLeastOnce,
        QoS::ExactlyOnce => ponte_mqtt::QoS::ExactlyOnce,
    }
}

/// Per-connection driver state.
struct Driver {
    /// Everything shared by connections.
    shared: Arc<Shared>,
    /// The protocol engine.
    conn: Connection,
    /// The session, once CONNECT was accepted.
    session: Option<Arc<Session>>,
    /// Held while this connection owns `session` (see [`Session::owner`]).
    _owner: Option<tokio::sync::OwnedMutexGuard<()>>,
    /// This connection's takeover bell, installed in the session it owns.
    kick: Arc<Notify>,
    /// The peer, for logs.
    peer: SocketAddr,
    /// Whether the client speaks MQTT 5 (properties go out with its messages).
    v5: bool,
    /// The will's v5 properties from CONNECT (Will Delay, Content Type, Message Expiry,
    /// User Properties, ...), kept here until the will is published.
    will_properties: Properties,
    /// Session Expiry Interval from CONNECT (or DISCONNECT), bounding the Will Delay.
    session_expiry: u32,
    /// Who the client is and what the ACL lets it do (see `access.rs`).
    access: Access,
    /// `Some` on TLS connections (MQTT over TLS, WSS): what the handshake established,
    /// the verified client certificate's CN included.
    tls: Option<TlsPeer>,
    /// The username this connection acts as, once CONNECT is accepted: CONNECT's, or the
    /// certificate's CN under `tls.use_identity_as_username`.
    username: Option<String>,
    /// Messages the machine has discarded as larger than the client's Maximum Packet Size,
    /// as already added to `Metrics::too_large` (the machine's own count only grows).
    too_large_counted: u64,
    /// Inbound QoS 2 packet ids the broker has handled whose PUBREC waits until the id is
    /// durable in a persistent session, with the reason code to send (see [`Session::sync_state`]).
    unrecorded_qos2: Vec<(u16, u8)>,
    /// `[limits] publish_rate` for this connection's PUBLISHes.
    writes: WriteLimiter,
    /// PUBLISHes handed to the broker whose retained writes are not durable yet, oldest
    /// first. Their writes overlap, so one group commit covers many of them instead of the
    /// connection waiting for one commit per PUBLISH (issue 6); they are delivered strictly
    /// in this order, keeping MQTT 4.6 per-publisher ordering.
    storing: VecDeque<(Ack, Staged)>,
    /// Delivered PUBLISHes whose copies for persistent sessions are not durable yet, oldest
    /// first; each is acknowledged when it and all before it are durable.
    persisting: VecDeque<(Ack, Delivered)>,
}

/// Most PUBLISHes a connection has handed to the broker and not yet acknowledged; beyond
/// this the connection stops reading its socket until some are done (backpressure).
const MAX_PIPELINED: usize = 1024;

/// What a pipelined PUBLISH is answered with once it is done.
#[derive(Debug, Clone, Copy)]
struct Ack {
    /// The PUBLISH's packet id (meaningless at QoS 0).
    pkid: u16,
    /// The PUBLISH's QoS: QoS 0 gets no acknowledgement.
    qos: QoS,
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
        session: None,
        _owner: None,
        kick: Arc::new(Notify::new()),
        peer,
        v5: false,
        will_properties: Properties::default(),
        session_expiry: 0,
        access: Access::new(shared.auth.clone(), peer).counting(shared.broker.ops.clone()),
        tls,
        username: None,
        too_large_counted: 0,
        unrecorded_qos2: Vec::new(),
        writes: shared.limits.write_limiter(),
        storing: VecDeque::new(),
        persisting: VecDeque::new(),
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
        d.pump(&mut wbuf);
        // Nothing of this turn has been written yet: the durable state goes first.
        d.sync_state().await;
        d.conn.poll_transmit(&mut wbuf);
        let deadline = d.conn.poll_timeout();
        let mailbox = d.session.as_ref().map(|s| s.mailbox.clone());
        let kick = d.kick.clone();
        read_size.prepare(&mut rbuf);
        let reading = d.pipelined() < MAX_PIPELINED;
        let pipelined = d.pipelined() > 0;
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
                    d.conn.close(CloseReason::ServerWithReason {
                        reason_code: reason::QUOTA_EXCEEDED,
                        reason_string: format!(
                            "more than {} messages queued for this client (overflow = disconnect)",
                            d.shared.config.mqtt.max_queued
                        ),
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

/// Poll a future that is known to be ready (nothing to wait for) without a task context.
fn poll_now<F: std::future::Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    std::future::Future::poll(
        std::pin::Pin::new(f),
        &mut Context::from_waker(std::task::Waker::noop()),
    )
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

static NEXT_CLIENT: AtomicU64 = AtomicU64::new(1);

impl Driver {
    /// Handle one event; true when the connection is over.
    async fn handle_event(&mut self, ev: Event) -> bool {
        if matches!(
            ev,
            Event::Subscribe { .. }
                | Event::Subscribe5(_)
                | Event::Unsubscribe { .. }
                | Event::PingRequest
                | Event::Closed { .. }
        ) {
            // What the client published before this packet is done first, as if handled
            // one by one: a SUBSCRIBE sees the retained value the client just published,
            // and a disconnect does not cut off its last messages.
            self.drain_pipeline().await;
        }
        match ev {
            Event::Connect(c) => {
                self.on_connect(Connect5 {
                    connect: c,
                    properties: Properties::default(),
                    will_properties: Properties::default(),
                })
                .await
            }
            Event::Connect5(c) => self.on_connect(*c).await,
            Event::Publish(p) => self.on_publish(p, None).await,
            Event::Publish5(p) => {
                let p = *p;
                self.on_publish(p.publish, Some(p.properties)).await
            }
            Event::Subscribe { pkid, filters } => {
                let filters = filters
                    .into_iter()
                    .map(|(f, q)| (f, SubscriptionOptions::qos(q)))
                    .collect();
                self.on_subscribe(pkid, filters, None).await;
            }
            Event::Subscribe5(s) => {
                let s = *s;
                let id = s.properties.subscription_identifiers.first().copied();
                self.on_subscribe(s.pkid, s.filters, id).await;
            }
            Event::Unsubscribe { pkid, filters } => {
                let mut codes = Vec::with_capacity(filters.len());
                let mut refused = Refusals::default();
                if let Some(session) = &self.session {
                    for filter in filters {
                        codes.push(match TopicFilter::parse(&filter) {
                            Ok(f) => {
                                session.subscriptions.lock().remove(&f);
                                if self.shared.broker.unsubscribe(&f, session.mailbox.id()) {
                                    reason::SUCCESS
                                } else {
                                    reason::NO_SUBSCRIPTION_EXISTED
                                }
                            }
                            Err(e) => {
                                refused.add(&filter, &e.to_string());
                                reason::TOPIC_FILTER_INVALID
                            }
                        });
                    }
                    let session = session.clone();
                    if !self.session_durable(&session, "UNSUBSCRIBE").await {
                        return false;
                    }
                }
                self.conn
                    .unsuback_reasons_because(pkid, codes, refused.into_reason());
            }
            // After the drain above: PINGRESP tells the client everything it sent before
            // the PINGREQ is done.
            Event::PingRequest => self.conn.ping_response(),
            Event::InflightFreed => {
                // Exchanges finished: their durable queue entries can go (nobody waits).
                if let Some(session) = &self.session {
                    session.acknowledged(&self.shared.broker, self.conn.outgoing_pkids());
                }
            }
            Event::Closed { reason, will } => {
                self.on_closed(reason, will).await;
                return true;
            }
        }
        false
    }

    /// Answer one SUBSCRIBE (3.1.1 filters come with plain options).
    async fn on_subscribe(
        &mut self,
        pkid: u16,
        filters: Vec<(String, SubscriptionOptions)>,
        id: Option<u32>,
    ) {
        let Some(session) = self.session.clone() else {
            return;
        };
        let mut codes = Vec::with_capacity(filters.len());
        let mut refused = Refusals::default();
        let limits = &self.shared.config.mqtt;
        for (filter, o) in filters {
            if levels(&filter) > limits.max_topic_levels {
                self.limit_hit("max_topic_levels", &filter);
                refused.add(
                    &filter,
                    &format!("more than {} levels", limits.max_topic_levels),
                );
                codes.push(reason::TOPIC_FILTER_INVALID);
                continue;
            }
            let shared = filter.starts_with("$share/");
            let parsed = TopicFilter::parse(&filter)
                .map_err(|e| e.to_string())
                .and_then(|f| {
                    if shared && crate::broker::split_shared(&filter).is_none() {
                        Err("invalid shared subscription filter".to_string())
                    } else {
                        Ok(f)
                    }
                });
            match parsed {
                Ok(f) => {
                    if shared && o.no_local && self.v5 {
                        // MQTT-3.8.3-4: No Local on a shared subscription is a protocol error.
                        self.conn.close(CloseReason::ServerWithReason {
                            reason_code: reason::PROTOCOL_ERROR,
                            reason_string: format!(
                                "MQTT-3.8.3-4: No Local set on shared subscription {filter:?}"
                            ),
                        });
                        return;
                    }
                    if !self.access.may_subscribe(&filter) {
                        // A refused re-subscription ends the old one too.
                        if session.subscriptions.lock().remove(&f).is_some() {
                            self.shared.broker.unsubscribe(&f, session.mailbox.id());
                        }
                        refused.add(&filter, access::SUBSCRIBE_DENIED);
                        codes.push(reason::NOT_AUTHORIZED);
                        continue;
                    }
                    let qos = to_core(o.qos);
                    let opts = SubOptions {
                        qos,
                        no_local: o.no_local,
                        retain_as_published: o.retain_as_published,
                        id,
                    };
                    {
                        let mut subs = session.subscriptions.lock();
                        if subs.len() >= limits.max_subscriptions && !subs.contains_key(&f) {
                            drop(subs);
                            self.limit_hit("max_subscriptions", &filter);
                            refused.add(
                                &filter,
                                &format!(
                                    "more than {} subscriptions (max_subscriptions)",
                                    limits.max_subscriptions
                                ),
                            );
                            codes.push(reason::QUOTA_EXCEEDED);
                            continue;
                        }
                        // Record first so a concurrent close removes it again.
                        subs.insert(f.clone(), opts);
                    }
                    self.shared.broker.subscribe_with(
                        &f,
                        &session.mailbox,
                        opts,
                        o.retain_handling,
                    );
                    codes.push(to_wire(qos).as_u8());
                }
                Err(e) => {
                    tracing::debug!(peer = %self.peer, %filter, error = %e, "SUBSCRIBE filter refused");
                    refused.add(&filter, &e);
                    codes.push(reason::TOPIC_FILTER_INVALID);
                }
            }
        }
        if !self.session_durable(&session, "SUBSCRIBE").await {
            return;
        }
        self.conn
            .suback_reasons_because(pkid, codes, refused.into_reason());
    }

    /// Make a persistent session's record (subscriptions, expiry) durable before the packet
    /// that acknowledges a change to it goes out. False when it could not be stored: the
    /// connection is then closed without the acknowledgement (MQTT-4.8.0-2), so the client
    /// does not take for kept what a crash would lose.
    async fn session_durable(&mut self, session: &Session, what: &str) -> bool {
        let Some(durable) = session.persist_durable(&self.shared.broker) else {
            return true;
        };
        match durable.await.unwrap_or(Err(StoreError::Closed)) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(peer = %self.peer, error = %e, "session could not be stored; {what} not acknowledged");
                self.conn.close(CloseReason::ServerWithReason {
                    reason_code: reason::UNSPECIFIED_ERROR,
                    reason_string: format!("the session could not be stored: {e}"),
                });
                false
            }
        }
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

    async fn on_connect(&mut self, c5: Connect5) {
        let mut c = c5.connect;
        if let Some(tls) = &self.tls {
            if self.shared.use_identity_as_username {
                // mosquitto's use_identity_as_username: the certificate's CN is the username,
                // whatever CONNECT says; no verified certificate, no connection.
                match &tls.identity {
                    Some(cn) => c.username = Some(cn.clone()),
                    None => {
                        tracing::info!(peer = %self.peer, client_id = %c.client_id, "MQTT client refused: tls.use_identity_as_username is on and it presented no verified certificate with a CN");
                        self.conn.reject_v5(reason::NOT_AUTHORIZED);
                        return;
                    }
                }
            }
        }
        self.username = c.username.clone();
        self.v5 = c.protocol == ponte_mqtt::ProtocolVersion::V5;
        self.will_properties = c5.will_properties;
        self.session_expiry = c5.properties.session_expiry_interval.unwrap_or(0);
        let assigned = c.client_id.is_empty();
        let client_id = if assigned {
            // 3.1.1: only with Clean Session 1 (the machine refuses the rest, MQTT-3.1.3-8);
            // v5: returned as Assigned Client Identifier (MQTT-3.2.2-16).
            format!(
                "ponte-{:x}-{}",
                std::process::id(),
                NEXT_CLIENT.fetch_add(1, Ordering::Relaxed)
            )
        } else {
            c.client_id.clone()
        };
        // Before the session is opened: a refused client takes nothing over.
        let proven = self.tls.is_some() && self.shared.use_identity_as_username;
        if let Err(refusal) = self.access.login(&c, &client_id, proven).await {
            self.conn.reject_v5_because(refusal.code, refusal.reason);
            return;
        }
        // v5: the session outlives the connection iff Session Expiry Interval > 0
        // (3.1.2.11.2), whatever Clean Start says; 3.1.1: iff Clean Session is 0, for
        // `session_expiry_secs` (default: forever).
        let expiry = if self.v5 {
            self.session_expiry
        } else if c.clean_session {
            0
        } else {
            self.shared
                .config
                .mqtt
                .session_expiry_secs
                .filter(|s| *s > 0)
                .unwrap_or(super::session::NEVER)
        };
        let opened =
            self.shared
                .sessions
                .open(&client_id, c.clean_session, expiry, &self.shared.broker);
        // Wait for any previous owner to hand the session over (it was kicked).
        let owner = opened.session.owner.clone().lock_owned().await;
        if let Some(prev) = &opened.previous {
            if !Arc::ptr_eq(prev, &opened.session) {
                // A replaced session: wait for its connection to finish too.
                drop(prev.owner.lock().await);
            }
        }
        // A persistent session is on disk before CONNACK, so a client told its session
        // exists (or was created) keeps it across kill -9. `open` already submitted the
        // record (ahead of any message queued for it); it is written again here because a
        // kicked previous owner has since stored its own close ("away since"), and this
        // write, awaited, is the one that says the client is connected.
        if let Some(durable) = opened.session.persist_durable(&self.shared.broker) {
            if let Err(e) = durable.await.unwrap_or(Err(StoreError::Closed)) {
                tracing::error!(peer = %self.peer, client_id, error = %e, "session could not be stored; CONNECT refused");
                // Away again, as if this connection had closed at once.
                let _ = self
                    .shared
                    .sessions
                    .close(&opened.session, &self.shared.broker);
                drop(owner);
                self.conn.reject_v5_because(
                    reason::SERVER_UNAVAILABLE,
                    format!("the session could not be stored: {e}"),
                );
                return;
            }
        }
        *opened.session.kick.lock() = Some(self.kick.clone());
        *opened.session.connection.lock() = Some(super::ClientInfo {
            client_id: client_id.clone(),
            username: self.username.clone(),
            tls_identity: self.tls.as_ref().and_then(|t| t.identity.clone()),
            peer: self.peer,
        });
        let resume = opened.session.saved.lock().take();
        opened.session.mailbox.reset_overflow();
        opened.session.mailbox.set_online(true);
        tracing::debug!(peer = %self.peer, client_id, clean = c.clean_session, present = opened.present, v5 = self.v5, "MQTT client connected");
        let assigned = (assigned && self.v5).then(|| client_id.clone());
        // Sent only if the client asked (the machine checks, MQTT-3.1.2-28).
        self.conn
            .offer_response_information(response_information(&client_id));
        self.conn
            .accept_with(Instant::now(), opened.present, resume, assigned);
        self.session = Some(opened.session);
        self._owner = Some(owner);
    }

    async fn on_publish(&mut self, p: Publish, properties: Option<Properties>) {
        if !self.within_write_rate(&p).await {
            return;
        }
        let topic = match TopicName::parse(&p.topic) {
            Ok(t) => t,
            Err(e) => {
                self.drain_pipeline().await;
                tracing::debug!(peer = %self.peer, error = %e, "PUBLISH topic refused");
                self.conn.close(CloseReason::ServerWithReason {
                    reason_code: reason::TOPIC_NAME_INVALID,
                    reason_string: format!("PUBLISH topic {:?}: {e}", p.topic),
                });
                return;
            }
        };
        let max_levels = self.shared.config.mqtt.max_topic_levels;
        if levels(&p.topic) > max_levels {
            self.drain_pipeline().await;
            self.limit_hit("max_topic_levels", &p.topic);
            self.conn.close(CloseReason::ServerWithReason {
                reason_code: reason::TOPIC_NAME_INVALID,
                reason_string: format!(
                    "PUBLISH topic has {} levels, more than the {max_levels} allowed",
                    levels(&p.topic)
                ),
            });
            return;
        }
        if !self.access.may_publish(&p.topic) {
            // Earlier PUBLISHes are answered first: acknowledgements keep the PUBLISH order.
            self.drain_pipeline().await;
            // Nothing stored, retained or delivered. v5 QoS 1/2: PUBACK/PUBREC 0x87; 3.1.1
            // has no negative acknowledgement, so (as mosquitto) it is acknowledged and the
            // client does not resend it forever; QoS 0: dropped.
            if p.qos != ponte_mqtt::QoS::AtMostOnce {
                if self.v5 {
                    let why = access::publish_denied_reason(&p.topic);
                    self.conn
                        .publish_failed_because(p.pkid, reason::NOT_AUTHORIZED, Some(why));
                } else {
                    self.conn.publish_done(p.pkid);
                }
            }
            return;
        }
        let qos = to_core(p.qos);
        let mut message = Message {
            topic,
            payload: p.payload,
            qos,
            retain: p.retain,
            content_type: None,
            origin: Origin::Mqtt,
            properties: None,
            expires_at: None,
            publisher: self.session.as_ref().map(|s| s.mailbox.id()),
            charge: crate::model::Charge::default(),
        };
        if let Some(props) = properties {
            apply_v5_properties(&mut message, props, Instant::now());
        }
        let ack = Ack { pkid: p.pkid, qos };
        let mut staged = self.shared.broker.stage(message, Precondition::none());
        if staged.is_stored() && self.storing.is_empty() {
            // Not retained and nothing ahead of it: deliver now.
            if let Poll::Ready(stored) = poll_now(&mut staged) {
                self.stored(ack, stored);
                return;
            }
        }
        self.storing.push_back((ack, staged));
    }

    /// PUBLISHes handed to the broker and not acknowledged yet.
    fn pipelined(&self) -> usize {
        self.storing.len() + self.persisting.len()
    }

    /// A PUBLISH's retained write is done (or failed): deliver it, and acknowledge it now
    /// if nothing else has to become durable first.
    fn stored(&mut self, ack: Ack, stored: Result<Stored, StoreError>) {
        match stored {
            Err(e) => self.acknowledge(ack, Err(e)),
            Ok(stored) => {
                let mut delivered = self.shared.broker.deliver(stored);
                if delivered.is_durable() && self.persisting.is_empty() {
                    if let Poll::Ready(outcome) = poll_now(&mut delivered) {
                        self.acknowledge(ack, outcome);
                        return;
                    }
                }
                self.persisting.push_back((ack, delivered));
            }
        }
    }

    /// Move the pipeline on: deliver the oldest PUBLISHes whose writes are durable and
    /// acknowledge the oldest delivered ones whose session copies are. Ready when anything
    /// moved, so the loop writes the acknowledgements out.
    fn poll_pipeline(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut moved = false;
        loop {
            if let Some((_, staged)) = self.storing.front_mut() {
                if let Poll::Ready(stored) =
                    std::future::Future::poll(std::pin::Pin::new(staged), cx)
                {
                    if let Some((ack, _)) = self.storing.pop_front() {
                        self.stored(ack, stored);
                    }
                    moved = true;
                    continue;
                }
            }
            if let Some((_, delivered)) = self.persisting.front_mut() {
                if let Poll::Ready(outcome) =
                    std::future::Future::poll(std::pin::Pin::new(delivered), cx)
                {
                    if let Some((ack, _)) = self.persisting.pop_front() {
                        self.acknowledge(ack, outcome);
                    }
                    moved = true;
                    continue;
                }
            }
            break;
        }
        if moved {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Wait until every pipelined PUBLISH is delivered and acknowledged.
    async fn drain_pipeline(&mut self) {
        while self.pipelined() > 0 {
            std::future::poll_fn(|cx| self.poll_pipeline(cx)).await;
        }
    }

    /// Answer a PUBLISH that is done: stored, delivered and durable, or failed.
    fn acknowledge(&mut self, ack: Ack, result: Result<PublishOutcome, StoreError>) {
        let Ack { pkid, qos } = ack;
        match result {
            Ok(outcome) => {
                // v5: 0x10 when nobody here matched; still a success, and a retained
                // message was stored all the same (3.4.2.1).
                let code = if outcome.matched == 0 {
                    reason::NO_MATCHING_SUBSCRIBERS
                } else {
                    reason::SUCCESS
                };
                let durable = self
                    .session
                    .as_ref()
                    .is_some_and(|s| s.is_durable(&self.shared.broker));
                if qos == QoS::ExactlyOnce && durable {
                    // PUBREC once the id is durable, at the end of this turn.
                    self.unrecorded_qos2.push((pkid, code));
                } else if qos != QoS::AtMostOnce {
                    self.conn.publish_done_with(pkid, code);
                }
            }
            Err(e) => {
                // Not stored: do not acknowledge positively. v5 answers 0x80; 3.1.1 has no
                // negative PUBACK, so the machine closes and the client resends on reconnect.
                tracing::error!(peer = %self.peer, error = %e, "PUBLISH could not be stored");
                let why = format!("the message could not be stored: {e}");
                if qos == QoS::AtMostOnce {
                    self.conn.close(CloseReason::ServerWithReason {
                        reason_code: reason::UNSPECIFIED_ERROR,
                        reason_string: why,
                    });
                } else {
                    self.conn
                        .publish_failed_because(pkid, reason::UNSPECIFIED_ERROR, Some(why));
                }
            }
        }
    }

    /// `[limits] publish_rate`: whether `p` may be published now. Over the rate, a v5 QoS 1/2
    /// PUBLISH is answered PUBACK/PUBREC 0x97 Quota exceeded and a v5 QoS 0 one closes the
    /// connection with DISCONNECT 0x96 Message rate too high; 3.1.1 has no negative
    /// acknowledgement, so the connection is throttled instead — nothing is read from its
    /// socket until the wait is over — and nothing is lost.
    async fn within_write_rate(&mut self, p: &Publish) -> bool {
        let Err(wait) = self.writes.check(Instant::now()) else {
            return true;
        };
        self.shared
            .limits
            .mqtt_writes_refused
            .fetch_add(1, Ordering::Relaxed);
        let rate = self.shared.limits.config.publish_rate;
        // Earlier PUBLISHes are answered first: acknowledgements keep the PUBLISH order.
        self.drain_pipeline().await;
        if !self.v5 {
            tracing::debug!(peer = %self.peer, ?wait, "MQTT 3.1.1 publisher throttled: over [limits] publish_rate");
            let mut wait = wait;
            loop {
                tokio::time::sleep(wait).await;
                match self.writes.check(Instant::now()) {
                    Ok(()) => return true,
                    Err(w) => wait = w,
                }
            }
        }
        let why = format!("more than {rate} PUBLISH per second ([limits] publish_rate)");
        tracing::debug!(peer = %self.peer, qos = ?p.qos, "MQTT PUBLISH refused: {why}");
        if p.qos == ponte_mqtt::QoS::AtMostOnce {
            self.conn.close(CloseReason::ServerWithReason {
                reason_code: reason::MESSAGE_RATE_TOO_HIGH,
                reason_string: why,
            });
        } else {
            self.conn
                .publish_failed_because(p.pkid, reason::QUOTA_EXCEEDED, Some(why));
        }
        false
    }

    async fn on_closed(&mut self, reason: CloseReason, will: Option<LastWill>) {
        tracing::debug!(peer = %self.peer, %reason, "MQTT connection closed");
        if let CloseReason::ClientDisconnect {
            session_expiry_interval: Some(e),
            ..
        } = reason
        {
            // The machine refused 0 → non-zero already (0x82, MQTT-3.14.2-2).
            self.session_expiry = e;
            if let Some(s) = &self.session {
                s.expiry.store(e, Ordering::Relaxed);
            }
        }
        if let Some(w) = will {
            self.publish_will(w);
        }
        if let Some(session) = self.session.take() {
            *session.connection.lock() = None;
            if session.persistent && session.expiry.load(Ordering::Relaxed) > 0 {
                // Messages taken from the mailbox but not acknowledged go back into the
                // session, to be resent with DUP=1 (MQTT-4.4.0-1).
                let mut saved = self.conn.take_session();
                // Delivered to the broker, PUBREC not sent yet: a re-send is a duplicate.
                saved
                    .inbound_qos2
                    .extend(self.unrecorded_qos2.drain(..).map(|(id, _)| id));
                *session.saved.lock() = Some(saved);
            }
            if let Some(durable) = self.shared.sessions.close(&session, &self.shared.broker) {
                // What the last packets (PUBCOMP, PUBREL) follow from is durable first.
                if let Ok(Err(e)) = durable.await {
                    tracing::error!(peer = %self.peer, error = %e, "session state could not be stored at disconnect");
                }
            }
        }
        self._owner = None;
    }

    /// Publish the will now, or after its Will Delay Interval but never later than the
    /// session ends (MQTT-3.1.3-9): a non-persistent session ends now. A delayed will is
    /// dropped if a new connection owns the session when the delay is over.
    fn publish_will(&self, w: LastWill) {
        let topic = match TopicName::parse(&w.topic) {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!(peer = %self.peer, error = %e, "will topic refused");
                return;
            }
        };
        let delay = self.will_properties.will_delay_interval.unwrap_or(0);
        let persistent = self.session.as_ref().is_some_and(|s| s.persistent);
        let delay = if persistent {
            delay.min(self.session_expiry)
        } else {
            0
        };
        let mut m = Message {
            topic,
            payload: w.payload,
            qos: to_core(w.qos),
            retain: w.retain,
            content_type: None,
            origin: Origin::Mqtt,
            properties: None,
            expires_at: None,
            publisher: None,
            charge: crate::model::Charge::default(),
        };
        let mut props = self.will_properties.clone();
        props.will_delay_interval = None;
        let broker = self.shared.broker.clone();
        let owner = self.session.as_ref().map(|s| s.owner.clone());
        let peer = self.peer;
        let access = self.access.clone();
        tokio::spawn(async move {
            if delay > 0 {
                tokio::time::sleep(std::time::Duration::from_secs(u64::from(delay))).await;
                if owner.is_some_and(|o| o.try_lock().is_err()) {
                    tracing::debug!(%peer, "client reconnected within the Will Delay; will dropped");
                    return;
                }
            }
            // Checked at CONNECT, and again now: the ACL may have been reloaded since.
            if !access.may_publish(m.topic.as_str()) {
                return;
            }
            // The Message Expiry of a will counts from when it is published.
            apply_v5_properties(&mut m, props, Instant::now());
            if let Err(e) = broker.publish(m, Precondition::none()).await {
                tracing::error!(%peer, error = %e, "will could not be published");
            }
        });
    }

    /// Write the session's protocol state if this turn changed it, waiting for the write
    /// when what follows from the change must not go out before it is durable; then send
    /// the PUBRECs that waited for their ids.
    async fn sync_state(&mut self) {
        let Some(session) = &self.session else {
            return;
        };
        let ids: Vec<u16> = self.unrecorded_qos2.iter().map(|(id, _)| *id).collect();
        let result = match session.sync_state(&self.shared.broker, &self.conn, &ids) {
            Some(durable) => durable
                .await
                .unwrap_or(Err(crate::store::StoreError::Closed)),
            None => Ok(()),
        };
        for (pkid, code) in std::mem::take(&mut self.unrecorded_qos2) {
            match &result {
                Ok(()) => self.conn.publish_done_with(pkid, code),
                Err(e) => {
                    // Not durable: no PUBREC (v5: 0x80; 3.1.1: the connection closes, so
                    // the client re-sends the PUBLISH after reconnecting).
                    tracing::error!(peer = %self.peer, error = %e, "inbound QoS 2 id could not be stored");
                    self.conn.publish_failed(pkid, reason::UNSPECIFIED_ERROR);
                }
            }
        }
    }

    /// Move deliveries from the mailbox into the machine while there is room.
    fn pump(&mut self, wbuf: &mut BytesMut) {
        self.count_too_large();
        let Some(session) = &self.session else {
            return;
        };
        let now = Instant::now();
        let filtered = self.access.reads_filtered();
        let mut sent = 0u64;
        while wbuf.len() < WRITE_HIGH_WATER {
            let Some(d) = session.mailbox.pop() else {
                break;
            };
            if filtered && !self.access.may_receive(d.message.topic.as_str()) {
                // A wider filter than what is readable (`#`): withheld, counted by `Auth`.
                if d.durable != 0 {
                    if let Some(q) = self.shared.broker.queue() {
                        q.remove(&session.key, d.durable);
                    }
                }
                continue;
            }
            if d.message.expired(now) {
                self.shared
                    .broker
                    .metrics
                    .expired
                    .fetch_add(1, Ordering::Relaxed);
                if d.durable != 0 {
                    if let Some(q) = self.shared.broker.queue() {
                        q.remove(&session.key, d.durable);
                    }
                }
                continue;
            }
            let out = outgoing(&d, self.v5);
            let before = self.conn.outgoing_pkids().len();
            if let Err(out) = self.conn.send_publish(now, out) {
                drop(out);
                session.mailbox.push_front(d);
                break;
            }
            sent += 1;
            if d.durable != 0 {
                // Tracked until PUBACK/PUBCOMP; dropped by the machine (v5 expiry or
                // Maximum Packet Size, counted there): nothing left to deliver.
                let pkids = self.conn.outgoing_pkids();
                match (pkids.len() > before).then(|| self.conn.outgoing_pkids().last()) {
                    Some(Some(pkid)) => session.sent_durable(pkid, d.durable),
                    _ => {
                        if let Some(q) = self.shared.broker.queue() {
                            q.remove(&session.key, d.durable);
                        }
                    }
                }
            }
            self.conn.poll_transmit(wbuf);
        }
        if sent > 0 {
            let ops = &self.shared.broker.ops;
            ops.sent(crate::metrics::Protocol::Mqtt, sent);
        }
        self.count_too_large();
    }

    /// Adds the messages the machine discarded since the last call as larger than the
    /// client's Maximum Packet Size (MQTT-3.1.2-25) to `Metrics::too_large`.
    fn count_too_large(&mut self) {
        let (too_large, _) = self.conn.dropped();
        if too_large > self.too_large_counted {
            let n = too_large - self.too_large_counted;
            self.too_large_counted = too_large;
            self.shared
                .broker
                .metrics
                .too_large
                .fetch_add(n, Ordering::Relaxed);
            tracing::debug!(peer = %self.peer, discarded = n, "message(s) larger than the client's Maximum Packet Size not sent (MQTT-3.1.2-25)");
        }
    }
}

/// The refused filters of one SUBSCRIBE or UNSUBSCRIBE, as one v5 Reason String.
#[derive(Debug, Default)]
struct Refusals {
    /// `filter "x": why` entries, `; `-separated (the machine caps the length).
    text: String,
}

impl Refusals {
    fn add(&mut self, filter: &str, why: &str) {
        if !self.text.is_empty() {
            self.text.push_str("; ");
        }
        self.text.push_str(&format!("filter {filter:?}: {why}"));
    }

    fn into_reason(self) -> Option<String> {
        (!self.text.is_empty()).then_some(self.text)
    }
}

/// Number of levels in a topic name or filter (`a/b/c` has 3).
fn levels(topic: &str) -> usize {
    topic.bytes().filter(|b| *b == b'/').count() + 1
}

/// Fill a broker message from v5 PUBLISH (or Will) properties: Content Type becomes the
/// message's content type (and so the retained value's), Message Expiry its deadline; the
/// rest travels unchanged, in order, for v5 subscribers.
fn apply_v5_properties(m: &mut Message, mut props: Properties, now: Instant) {
    m.content_type = props.content_type.as_deref().map(Arc::from);
    m.expires_at = props
        .message_expiry_interval
        .take()
        .map(|s| now + std::time::Duration::from_secs(u64::from(s)));
    props.topic_alias = None;
    props.subscription_identifiers.clear();
    if !props.is_empty() {
        m.properties = Some(Arc::new(props));
    }
}

/// The machine's view of one delivery. A v5 recipient of a message that has a content type
/// but no v5 properties (an HTTP or CoAP write) gets it as Content Type.
fn outgoing(d: &Delivery, v5: bool) -> Outgoing {
    let m = &d.message;
    let properties = match (&m.properties, &m.content_type) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(ct)) if v5 => Some(Arc::new(Properties {
            content_type: Some(ct.to_string()),
            ..Properties::default()
        })),
        _ => None,
    };
    Outgoing {
        topic: m.topic.as_arc().clone(),
        payload: m.payload.clone(),
        qos: to_wire(d.qos),
        retain: d.retain,
        properties,
        subscription_ids: d.subscription_ids.clone(),
        expires_at: m.expires_at,
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
