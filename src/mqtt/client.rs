//! One MQTT connection: socket I/O around the sans-IO state machine.
//!
//! The loop reads and writes at the same time (a client that publishes while not reading
//! cannot deadlock us), processes the machine's events in order — a PUBLISH is acknowledged
//! only after [`Broker::publish`] returned, i.e. after a retained value is durable — and moves
//! deliveries from the session's mailbox into the machine while its in-flight window and the
//! write buffer have room.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use ponte_mqtt::{
    CloseReason, Connect, Connection, Event, LastWill, Outgoing, Publish, SubscribeReturnCode,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

use super::session::Session;
use super::Shared;
use crate::broker::message::{Message, Origin, QoS};
use crate::broker::retained::Precondition;
use crate::broker::topic::{TopicFilter, TopicName};
use crate::shutdown::Shutdown;

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
}

/// Serve one connection until it closes: a TCP socket's halves, or a WebSocket bridged into
/// a byte stream.
pub(crate) async fn run<R, W>(
    mut reader: R,
    mut writer: W,
    peer: SocketAddr,
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
        },
    );
    let mut d = Driver {
        shared: shared.clone(),
        conn,
        session: None,
        _owner: None,
        kick: Arc::new(Notify::new()),
        peer,
    };
    let mut rbuf = BytesMut::with_capacity(8 * 1024);
    let mut wbuf = BytesMut::with_capacity(8 * 1024);
    let mut closed = false;
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
        d.pump(&mut wbuf);
        d.conn.poll_transmit(&mut wbuf);
        let deadline = d.conn.poll_timeout();
        let mailbox = d.session.as_ref().map(|s| s.mailbox.clone());
        let kick = d.kick.clone();
        tokio::select! {
            r = reader.read_buf(&mut rbuf) => match r {
                Ok(0) | Err(_) => d.conn.handle_eof(Instant::now()),
                Ok(_) => {
                    d.conn.handle_bytes(Instant::now(), &rbuf);
                    rbuf.clear();
                }
            },
            w = writer.write_buf(&mut wbuf), if !wbuf.is_empty() => {
                if w.is_err() {
                    d.conn.handle_eof(Instant::now());
                }
            }
            _ = sleep_until(deadline) => d.conn.handle_timeout(Instant::now()),
            _ = async { match &mailbox { Some(m) => m.notified().await, None => std::future::pending().await } },
                if wbuf.len() < WRITE_HIGH_WATER => {
                if mailbox.as_ref().is_some_and(|m| m.overflowed()) {
                    tracing::warn!(peer = %d.peer, "MQTT client's queue overflowed; disconnecting it (overflow = disconnect)");
                    d.conn.close(CloseReason::ServerClose);
                }
            }
            _ = kick.notified() => {
                d.conn.close(CloseReason::TakenOver);
            }
            _ = shutdown.recv(), if !shutdown.is_shutdown() => d.conn.close(CloseReason::ServerClose),
        }
    }
    // Flush what the machine still had to say (e.g. a CONNACK refusal), then close.
    d.conn.poll_transmit(&mut wbuf);
    if !wbuf.is_empty() {
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(1), writer.write_all(&wbuf)).await;
    }
    let _ = writer.shutdown().await;
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
        match ev {
            Event::Connect(c) => self.on_connect(c).await,
            Event::Publish(p) => self.on_publish(p).await,
            Event::Subscribe { pkid, filters } => {
                let Some(session) = self.session.clone() else {
                    return false;
                };
                let mut codes = Vec::with_capacity(filters.len());
                for (filter, qos) in filters {
                    match TopicFilter::parse(&filter) {
                        Ok(f) => {
                            let qos = to_core(qos);
                            // Record first so a concurrent close removes it again.
                            session.subscriptions.lock().insert(f.clone(), qos);
                            self.shared
                                .broker
                                .subscribe(&f, &session.mailbox, qos, true);
                            codes.push(SubscribeReturnCode::Success(to_wire(qos)));
                        }
                        Err(e) => {
                            tracing::debug!(peer = %self.peer, %filter, error = %e, "SUBSCRIBE filter refused");
                            codes.push(SubscribeReturnCode::Failure);
                        }
                    }
                }
                self.conn.suback(pkid, codes);
            }
            Event::Unsubscribe { pkid, filters } => {
                if let Some(session) = &self.session {
                    for filter in filters {
                        if let Ok(f) = TopicFilter::parse(&filter) {
                            session.subscriptions.lock().remove(&f);
                            self.shared.broker.unsubscribe(&f, session.mailbox.id());
                        }
                    }
                }
                self.conn.unsuback(pkid);
            }
            Event::InflightFreed => {}
            Event::Closed { reason, will } => {
                self.on_closed(reason, will).await;
                return true;
            }
        }
        false
    }

    async fn on_connect(&mut self, c: Connect) {
        let client_id = if c.client_id.is_empty() {
            // Only reaches us with Clean Session 1 (the machine refuses the rest, MQTT-3.1.3-8).
            format!(
                "ponte-{:x}-{}",
                std::process::id(),
                NEXT_CLIENT.fetch_add(1, Ordering::Relaxed)
            )
        } else {
            c.client_id.clone()
        };
        let opened = self
            .shared
            .sessions
            .open(&client_id, c.clean_session, &self.shared.broker);
        // Wait for any previous owner to hand the session over (it was kicked).
        let owner = opened.session.owner.clone().lock_owned().await;
        if let Some(prev) = &opened.previous {
            if !Arc::ptr_eq(prev, &opened.session) {
                // A replaced session: wait for its connection to finish too.
                drop(prev.owner.lock().await);
            }
        }
        *opened.session.kick.lock() = Some(self.kick.clone());
        let resume = opened.session.saved.lock().take();
        opened.session.mailbox.reset_overflow();
        opened.session.mailbox.set_online(true);
        tracing::debug!(peer = %self.peer, client_id, clean = c.clean_session, present = opened.present, "MQTT client connected");
        self.conn.accept(Instant::now(), opened.present, resume);
        self.session = Some(opened.session);
        self._owner = Some(owner);
    }

    async fn on_publish(&mut self, p: Publish) {
        let topic = match TopicName::parse(&p.topic) {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!(peer = %self.peer, error = %e, "PUBLISH topic refused");
                self.conn.close(CloseReason::ServerClose);
                return;
            }
        };
        let qos = to_core(p.qos);
        let message = Message {
            topic,
            payload: p.payload,
            qos,
            retain: p.retain,
            content_type: None,
            origin: Origin::Mqtt,
        };
        match self
            .shared
            .broker
            .publish(message, Precondition::none())
            .await
        {
            Ok(_) => {
                if qos != QoS::AtMostOnce {
                    self.conn.publish_done(p.pkid);
                }
            }
            Err(e) => {
                // Not stored: do not acknowledge. MQTT 3.1.1 has no negative PUBACK, so
                // close; the client resends on reconnect.
                tracing::error!(peer = %self.peer, error = %e, "PUBLISH could not be stored; closing");
                self.conn.close(CloseReason::ServerClose);
            }
        }
    }

    async fn on_closed(&mut self, reason: CloseReason, will: Option<LastWill>) {
        tracing::debug!(peer = %self.peer, %reason, "MQTT connection closed");
        if let Some(w) = will {
            match TopicName::parse(&w.topic) {
                Ok(topic) => {
                    let m = Message {
                        topic,
                        payload: w.payload,
                        qos: to_core(w.qos),
                        retain: w.retain,
                        content_type: None,
                        origin: Origin::Mqtt,
                    };
                    if let Err(e) = self.shared.broker.publish(m, Precondition::none()).await {
                        tracing::error!(peer = %self.peer, error = %e, "will could not be published");
                    }
                }
                Err(e) => tracing::debug!(peer = %self.peer, error = %e, "will topic refused"),
            }
        }
        if let Some(session) = self.session.take() {
            if session.persistent {
                // Messages taken from the mailbox but not acknowledged go back into the
                // session, to be resent with DUP=1 (MQTT-4.4.0-1).
                *session.saved.lock() = Some(self.conn.take_session());
            }
            self.shared.sessions.close(&session, &self.shared.broker);
        }
        self._owner = None;
    }

    /// Move deliveries from the mailbox into the machine while there is room.
    fn pump(&mut self, wbuf: &mut BytesMut) {
        let Some(session) = &self.session else {
            return;
        };
        let now = Instant::now();
        while wbuf.len() < WRITE_HIGH_WATER {
            let Some(d) = session.mailbox.pop() else {
                break;
            };
            let out = Outgoing {
                topic: d.message.topic.as_arc().clone(),
                payload: d.message.payload.clone(),
                qos: to_wire(d.qos),
                retain: d.retain,
            };
            if self.conn.send_publish(now, out).is_err() {
                session.mailbox.push_front(d);
                break;
            }
            self.conn.poll_transmit(wbuf);
        }
    }
}
