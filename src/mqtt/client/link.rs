//! The link between one connection and its session: CONNECT (login, open, takeover), the
//! durable state synced once per turn, the will, and the close.
//!
//! Takeover (MQTT-3.1.4-2): the registry rings the old connection's own bell and the new
//! connection waits to own the session ([`Session::own`]) until the old one lets go, so
//! the old one saves its unfinished exchanges before the new one resumes them; a CONNECT
//! overtaken by a newer one meanwhile gives up without a CONNACK. What a persistent
//! session keeps across a crash is awaited where the protocol needs it: its record before
//! CONNACK, SUBACK and UNSUBACK ([`Link::persist`]); its protocol state before the packets
//! that follow from a change ([`Link::sync`]); its last state before the connection's
//! last bytes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ponte_mqtt::{reason, Accept, CloseReason, Connect, Connection, LastWill, PropertyList};

use super::super::access::Access;
use super::super::cluster;
use super::super::registry::{Registry, TooManySessions};
use super::super::session::{Owner, Session, NEVER};
use super::super::{wire, ClientInfo, Shared, RESERVED_CLIENT_PREFIX};
use crate::broker::doorbell::Doorbell;
use crate::broker::retained::Precondition;
use crate::durable::Receipt;
use crate::model::{Message, Origin};
use crate::tls::TlsPeer;

/// Start of the response-topic basis a v5 client gets as CONNACK Response Information when
/// it sets Request Response Information (3.1.2.11.6, 3.2.2.3.15): the basis is this prefix,
/// the client id (bytes other than `A-Z a-z 0-9 - . _` percent-encoded, so it stays one
/// topic level without wildcards) and `/`, e.g. `ponte/response/sensor-1/`.
const RESPONSE_TOPIC_PREFIX: &str = "ponte/response/";

/// The Response Information for `client_id` (see [`RESPONSE_TOPIC_PREFIX`]).
fn response_information(client_id: &str) -> String {
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

/// Source of the ids assigned to clients that sent an empty one.
static NEXT_CLIENT: AtomicU64 = AtomicU64::new(1);

/// One connection's hold on its session.
#[derive(Debug)]
pub(super) struct Link {
    /// The session, owned (see [`Session::own`]) from CONNECT's acceptance to the end of
    /// the close: the ownership is the connection's handle on it.
    session: Option<Owner>,
    /// This connection's takeover bell, installed in the session it owns.
    kick: Arc<Doorbell>,
    /// Whether the client speaks MQTT 5.
    v5: bool,
    /// `Some` on TLS connections (MQTT over TLS, WSS): what the handshake established,
    /// the verified client certificate's CN included.
    tls: Option<Box<TlsPeer>>,
    /// The will's v5 properties from CONNECT (Will Delay, Content Type, Message Expiry,
    /// User Properties, ...), kept here until the will is published; a `PropertyList`, so
    /// nothing is allocated when there are none.
    will_properties: PropertyList,
    /// Session Expiry Interval from CONNECT (or DISCONNECT), bounding the Will Delay.
    session_expiry: u32,
    /// Inbound QoS 2 packet ids the broker has handled whose PUBREC waits until the id is
    /// durable in a persistent session, with the reason code to send (see [`Link::sync`]).
    /// Boxed, made at the first: a `Vec` is 24 bytes of every connection's task even empty.
    #[allow(clippy::box_collection)] // 8 bytes inline instead of 24, for a list most never use
    unrecorded_qos2: Option<Box<Vec<(u16, u8)>>>,
}

impl Link {
    /// A connection that has not sent CONNECT yet; `tls` is `Some` on TLS connections.
    pub(super) fn new(tls: Option<TlsPeer>) -> Self {
        Link {
            session: None,
            kick: Arc::new(Doorbell::new()),
            v5: false,
            tls: tls.map(Box::new),
            will_properties: PropertyList::default(),
            session_expiry: 0,
            unrecorded_qos2: None,
        }
    }

    /// The session, once CONNECT was accepted.
    pub(super) fn session(&self) -> Option<&Arc<Session>> {
        self.session.as_ref().map(Owner::session)
    }

    /// Whether the client speaks MQTT 5 (known once CONNECT arrived).
    pub(super) fn is_v5(&self) -> bool {
        self.v5
    }

    /// This connection's takeover bell.
    pub(super) fn kick(&self) -> &Arc<Doorbell> {
        &self.kick
    }

    /// Whether the session keeps durable state, so an inbound QoS 2 id must be durable
    /// before its PUBREC.
    pub(super) fn durable(&self) -> bool {
        self.session.as_ref().is_some_and(|s| s.durable.is_some())
    }

    /// An inbound QoS 2 PUBLISH was handled: its PUBREC (with `code`) goes out at the end
    /// of this turn, once its id is durable ([`Link::sync`]).
    pub(super) fn record_qos2(&mut self, pkid: u16, code: u8) {
        self.unrecorded_qos2
            .get_or_insert_with(Box::default)
            .push((pkid, code));
    }

    /// Answer a CONNECT: the username it acts as, the login and will check (before the
    /// session is opened, so a refused client takes nothing over), the session opened or
    /// resumed (waiting for a previous owner to hand it over), a persistent session made
    /// durable before CONNACK, then CONNACK with the session's saved exchanges resumed.
    pub(super) async fn connect(
        &mut self,
        mut c: Connect,
        conn: &mut Connection,
        shared: &Shared,
        access: &mut Access,
        peer: SocketAddr,
    ) {
        if !self.username(&mut c, conn, shared, peer) {
            return;
        }
        self.v5 = c.protocol.is_v5();
        self.will_properties = c
            .will
            .as_mut()
            .map(|w| std::mem::take(&mut w.properties))
            .unwrap_or_default();
        // The machine holds it to `[mqtt] max_session_expiry_secs` (told in CONNACK).
        self.session_expiry = conn.session_expiry_interval();
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
        if client_id.starts_with(RESERVED_CLIENT_PREFIX) {
            // The bridges' durable queues are sessions under these ids (src/bridge).
            conn.reject(
                reason::CLIENT_IDENTIFIER_NOT_VALID,
                Some(format!(
                    "client identifier {client_id:?}: the prefix {:?} is reserved for ponte's MQTT bridges",
                    RESERVED_CLIENT_PREFIX
                )),
            );
            return;
        }
        let proven = self.tls.is_some() && shared.use_identity_as_username;
        if let Err(refusal) = access.login(&c, &client_id, proven, peer).await {
            conn.reject(refusal.code, Some(refusal.reason));
            return;
        }
        let expiry = self.expiry(&c, shared);
        let mut opened = match shared.sessions.open_for_client(
            &client_id,
            c.clean_session,
            expiry,
            &shared.broker,
        ) {
            Ok(opened) => opened,
            Err(TooManySessions(limit)) => {
                let metrics = &shared.broker.metrics;
                let n = metrics.limits_hit.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(%peer, client_id, limit, refused = n, "MQTT CONNECT refused by a limit: max_persistent_sessions");
                conn.reject(
                    reason::QUOTA_EXCEEDED,
                    Some(format!(
                        "this server keeps at most {limit} persistent sessions ([mqtt] max_persistent_sessions); connect with a clean session, or reuse a client identifier"
                    )),
                );
                return;
            }
        };
        access.share_client_id(&opened.session.client_id);
        // Wait for any previous owner to hand the session over (it was kicked); a session
        // made for this CONNECT is its own already.
        let owner = match opened.owner.take() {
            Some(owner) => Some(owner),
            None => opened.session.own(opened.claim).await,
        };
        if let (Some(_), Some(prev)) = (&owner, &opened.previous) {
            if !Arc::ptr_eq(prev, &opened.session) {
                // A replaced session: wait for its connection to finish too.
                prev.released().await;
            }
        }
        // Taken over by a newer CONNECT while waiting (which resumed this session or
        // discarded it): that one wins (MQTT-3.1.4-2), and this one closes without a
        // CONNACK.
        let Some(owner) = owner.filter(|o| !o.overtaken(opened.claim)) else {
            tracing::debug!(%peer, client_id, "MQTT CONNECT taken over by a newer one before its CONNACK");
            conn.close(CloseReason::TakenOver);
            return;
        };
        let mut present = opened.present;
        let written = if Registry::clustered(&client_id, &shared.broker) {
            // Kept in the cluster: claimed from wherever it was (another node hands it
            // over, or is presumed dead) and resumed here; the claim's write, awaited, is
            // the one that says the client is connected here.
            match cluster::resume(&opened.session, c.clean_session, expiry, shared).await {
                Ok(p) => {
                    present = p;
                    None
                }
                Err(e) => Some(Err(e)),
            }
        } else {
            // A persistent session is on disk before CONNACK, so a client told its session
            // exists (or was created) keeps it across kill -9. `open` already submitted the
            // record (ahead of any message queued for it); it is written again here because
            // a kicked previous owner has since stored its own close ("away since"), and
            // this write, awaited, is the one that says the client is connected: so the
            // session is no longer away (that close left it so), or the record would say
            // "away since" the takeover, and a crash more than its expiry later would
            // end it at the restart.
            opened.session.resume(expiry);
            match opened.session.persist(true) {
                Some(durable) => Some(durable.await),
                None => None,
            }
        };
        if let Some(Err(e)) = written {
            tracing::error!(%peer, client_id, error = %e, "session could not be stored; CONNECT refused");
            // Away again, as if this connection had closed at once.
            if let Some(released) = shared.sessions.close(&opened.session, &shared.broker) {
                let _ = released.await;
            }
            drop(owner);
            conn.reject(
                reason::SERVER_UNAVAILABLE,
                Some(format!("the session could not be stored: {e}")),
            );
            return;
        }
        let resume = opened.session.connected(
            opened.claim,
            self.kick.clone(),
            ClientInfo {
                client_id: client_id.clone(),
                username: c.username.clone(),
                tls_identity: self.tls.as_ref().and_then(|t| t.identity.clone()),
                peer,
            },
        );
        opened.session.mailbox.reset_overflow();
        opened.session.mailbox.set_online(true);
        tracing::debug!(%peer, client_id, clean = c.clean_session, present, v5 = self.v5, "MQTT client connected");
        conn.accept(
            Instant::now(),
            Accept {
                session_present: present,
                resume,
                assigned_client_id: (assigned && self.v5).then(|| client_id.clone()),
                // Sent only if the client asked (the machine checks, MQTT-3.1.2-28).
                response_information: Some(response_information(&client_id)),
            },
        );
        debug_assert!(Arc::ptr_eq(owner.session(), &opened.session));
        self.session = Some(owner);
    }

    /// Settle the username the connection acts as: CONNECT's or, under
    /// `tls.use_identity_as_username` (mosquitto's), the client certificate's CN whatever
    /// CONNECT says. False (refused with CONNACK 0x05 / v5 0x87) for a TLS client without
    /// one.
    fn username(
        &self,
        c: &mut Connect,
        conn: &mut Connection,
        shared: &Shared,
        peer: SocketAddr,
    ) -> bool {
        let Some(tls) = self
            .tls
            .as_ref()
            .filter(|_| shared.use_identity_as_username)
        else {
            return true;
        };
        match &tls.identity {
            Some(cn) => {
                c.username = Some(cn.clone());
                true
            }
            None => {
                tracing::info!(%peer, client_id = %c.client_id, "MQTT client refused: tls.use_identity_as_username is on and it presented no verified certificate with a CN");
                conn.reject(reason::NOT_AUTHORIZED, None);
                false
            }
        }
    }

    /// How long the session outlives the connection. v5: the Session Expiry Interval
    /// (3.1.2.11.2), whatever Clean Start says, at most `max_session_expiry_secs` (the
    /// machine applied it); 3.1.1: 0 with Clean Session 1, otherwise `session_expiry_secs`
    /// (default: forever), at most `max_session_expiry_secs`.
    fn expiry(&self, c: &Connect, shared: &Shared) -> u32 {
        if self.v5 {
            self.session_expiry
        } else if c.clean_session {
            0
        } else {
            let expiry = shared.config.mqtt.session_expiry_secs.filter(|s| *s > 0);
            shared.machine.session_expiry(expiry.unwrap_or(NEVER))
        }
    }

    /// Make a persistent session's record (subscriptions, expiry) durable before the packet
    /// that acknowledges a change to it goes out. False when it could not be stored: the
    /// connection is then closed without the acknowledgement (MQTT-4.8.0-2), so the client
    /// does not take for kept what a crash would lose.
    pub(super) async fn persist(
        &self,
        conn: &mut Connection,
        what: &str,
        peer: SocketAddr,
    ) -> bool {
        let Some(durable) = self.session.as_ref().and_then(|s| s.persist(true)) else {
            return true;
        };
        match durable.await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(%peer, error = %e, "session could not be stored; {what} not acknowledged");
                conn.close(CloseReason::Server {
                    reason_code: reason::UNSPECIFIED_ERROR,
                    reason_string: Some(format!("the session could not be stored: {e}")),
                });
                false
            }
        }
    }

    /// Hand the session's protocol state to its durable side if this turn changed it: the
    /// receipt to await when what follows from the change must not go out before it is
    /// durable (then [`Link::sync_done`]). `None` at once for a session without a durable
    /// side.
    pub(super) fn sync_start(&self, conn: &Connection) -> Option<Receipt> {
        let session = self.session.as_ref()?;
        session.durable.as_ref()?;
        // Empty (no allocation) unless a QoS 2 PUBLISH was handled this turn.
        let ids: Vec<u16> = self
            .unrecorded_qos2
            .iter()
            .flat_map(|v| v.iter())
            .map(|(id, _)| *id)
            .collect();
        session.sync(conn, &ids)
    }

    /// The state of this turn is durable (or could not be made so): send the PUBRECs that
    /// waited for their ids.
    pub(super) fn sync_done(
        &mut self,
        conn: &mut Connection,
        result: Result<(), crate::store::StoreError>,
        peer: SocketAddr,
    ) {
        for (pkid, code) in self.unrecorded_qos2.iter_mut().flat_map(|v| v.drain(..)) {
            match &result {
                Ok(()) => conn.publish_done(pkid, code, None),
                Err(e) => {
                    // Not durable: no PUBREC (v5: 0x80; 3.1.1: the connection closes, so
                    // the client re-sends the PUBLISH after reconnecting).
                    tracing::error!(%peer, error = %e, "inbound QoS 2 id could not be stored");
                    conn.publish_done(pkid, reason::UNSPECIFIED_ERROR, None);
                }
            }
        }
    }

    /// The connection is quiet: give back what is empty (the PUBRECs' list, the mailbox's
    /// queue).
    pub(super) fn trim(&mut self) {
        if self.unrecorded_qos2.as_ref().is_some_and(|v| v.is_empty()) {
            self.unrecorded_qos2 = None;
        }
        if let Some(session) = &self.session {
            session.mailbox.trim();
        }
    }

    /// The connection is over: a v5 DISCONNECT's new Session Expiry, the will, the
    /// unfinished exchanges saved into a session that continues, and the session closed —
    /// its last durable write awaited before the connection's last bytes go out.
    pub(super) async fn closed(
        &mut self,
        reason: CloseReason,
        will: Option<LastWill>,
        conn: &mut Connection,
        shared: &Shared,
        access: &Access,
        peer: SocketAddr,
    ) {
        tracing::debug!(%peer, %reason, "MQTT connection closed");
        if let CloseReason::ClientDisconnect {
            session_expiry_interval: Some(e),
            ..
        } = reason
        {
            // The machine refused 0 → non-zero already (0x82, MQTT-3.14.2-2).
            self.session_expiry = e;
            if let Some(s) = &self.session {
                s.set_expiry(e);
            }
        }
        if let Some(w) = will {
            self.publish_will(w, shared, access, peer);
        }
        if let Some(session) = self.session.take() {
            let saved = (session.persistent && session.expiry() > 0).then(|| {
                // Messages taken from the mailbox but not acknowledged go back into the
                // session, to be resent with DUP=1 (MQTT-4.4.0-1).
                let mut saved = conn.take_session();
                // Delivered to the broker, PUBREC not sent yet: a re-send is a duplicate.
                saved.inbound_qos2.extend(
                    self.unrecorded_qos2
                        .take()
                        .into_iter()
                        .flat_map(|v| *v)
                        .map(|(id, _)| id),
                );
                saved
            });
            session.disconnected(saved);
            if let Some(durable) = shared.sessions.close(&session, &shared.broker) {
                // What the last packets (PUBCOMP, PUBREL) follow from is durable first.
                if let Err(e) = durable.await {
                    tracing::error!(%peer, error = %e, "session state could not be stored at disconnect");
                }
            }
            // The ownership goes here, once the session holds what this connection left:
            // a takeover waiting for it resumes that.
            drop(session);
        }
    }

    /// Publish the will now, or after its Will Delay Interval but never later than the
    /// session ends (MQTT-3.1.3-9): a non-persistent session ends now. A delayed will is
    /// dropped if a connection took the session back within the delay, even one that has
    /// left again since (a Clean Start reconnect ends the session instead: its will goes).
    fn publish_will(&self, w: LastWill, shared: &Shared, access: &Access, peer: SocketAddr) {
        let delay = self.will_properties.will_delay_interval.unwrap_or(0);
        let persistent = self.session.as_ref().is_some_and(|s| s.persistent);
        let delay = if persistent {
            delay.min(self.session_expiry)
        } else {
            0
        };
        let mut m = Message {
            // Checked by the codec: validated once.
            topic: wire::topic(&w.topic),
            payload: w.payload,
            qos: w.qos.into(),
            retain: w.retain,
            content_type: None,
            origin: Origin::Mqtt(self.session.as_ref().map(|s| s.client_id.clone())),
            properties: None,
            expires_at: None,
            publisher: None,
            charge: crate::model::Charge::default(),
        };
        let mut props = self.will_properties.clone().into_inner();
        props.will_delay_interval = None;
        let broker = shared.broker.clone();
        // The session and its claim as this connection leaves it: a CONNECT since, even one
        // that has left again by the end of the delay, means the client came back.
        let session = self.session().map(|s| (s.clone(), s.claim()));
        // In a cluster the client may come back on any node: the kept session says.
        let resumed = match (&self.session, delay) {
            (Some(s), 1..) => s.durable.as_ref().and_then(|d| d.resumed_check()),
            _ => None,
        };
        let access = access.clone();
        tokio::spawn(async move {
            if delay > 0 {
                tokio::time::sleep(std::time::Duration::from_secs(u64::from(delay))).await;
                let back = match resumed {
                    Some(check) => check.await,
                    None => session.is_some_and(|(s, claim)| s.reconnected_since(claim)),
                };
                if back {
                    tracing::debug!(%peer, "client reconnected within the Will Delay; will dropped");
                    return;
                }
            }
            // Checked at CONNECT, and again now: the ACL may have been reloaded since.
            if !access.may_publish(m.topic.as_str()) {
                return;
            }
            // The Message Expiry of a will counts from when it is published.
            wire::apply_properties(&mut m, props, Instant::now());
            if let Err(e) = broker.publish(m, Precondition::none()).await {
                tracing::error!(%peer, error = %e, "will could not be published");
            }
        });
    }
}
