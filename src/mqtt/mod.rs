//! The MQTT front-end: a TCP listener and one task per connection, translating the sans-IO
//! [`ponte_mqtt::Connection`]'s events into broker calls and the client's mailbox into
//! outgoing PUBLISHes. The same connection driver serves plain TCP, TLS ([`serve_tls`]),
//! WebSocket and secure WebSocket ([`ws::upgrade`], reached through [`crate::http`]: `/mqtt`
//! on the HTTP port, and `mqtt.ws_port` / `mqtt.wss_port`).
//!
//! The parts: `client/` drives one connection (its loop, and the owned parts it works
//! with), [`session`] and `registry.rs` keep sessions by client id, `wire.rs` is the one
//! place where ponte-mqtt's wire types become the model's, `access.rs` asks the gateway's
//! `Auth`, [`ws`] bridges WebSockets, `sys.rs` publishes `$SYS`, `counted.rs` counts bytes.
//! What a persistent session keeps across a crash is [`crate::durable`]'s.

mod access;
mod bells;
mod client;
mod cluster;
mod counted;
mod registry;
pub mod session;
mod wire;
pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::auth::Auth;
use crate::broker::Broker;
use crate::config::Config;
use crate::limits::{ConnPermit, ConnectionGate, Limits};
use crate::metrics::Transport;
use crate::shutdown::Shutdown;
use crate::tls::Tls;
use registry::Registry;

/// The prefix of client ids reserved for ponte's own sessions: an MQTT bridge's durable out
/// queue is a persistent session under `$bridge/<name>` (`crate::bridge`). A client asking
/// for such an id is refused (CONNACK 0x85 / 3.1.1 0x02), so no client can take over, read
/// or discard a bridge's queue.
pub(crate) const RESERVED_CLIENT_PREFIX: &str = "$bridge/";

/// State shared by every MQTT connection.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The broker core.
    pub broker: Arc<Broker>,
    /// The gateway's configuration.
    pub config: Arc<Config>,
    /// Sessions by client id.
    pub sessions: Registry,
    /// Byte counters of every transport, for `$SYS`.
    pub stats: counted::Stats,
    /// Who may connect, publish and subscribe (the gateway's one authority), and where
    /// refusals are counted.
    pub authority: Arc<access::Authority>,
    /// `tls.use_identity_as_username`: on TLS connections the client certificate's CN
    /// replaces CONNECT's username, and a client without one is refused.
    pub use_identity_as_username: bool,
    /// Abuse limits: each listener's connection gate, each connection's write limiter and
    /// the count of PUBLISHes refused.
    pub limits: Arc<Limits>,
    /// The protocol machine's limits and timers, from `[mqtt]`: one copy every connection
    /// shares.
    pub machine: Arc<ponte_mqtt::Config>,
    /// Every live connection's bell, rung at shutdown.
    pub bells: bells::Bells,
    /// The runtime the connections run on, to which a parked one returns (`client/park.rs`);
    /// `None` when made outside one (connections then never park).
    pub runtime: Option<tokio::runtime::Handle>,
    /// The shutdown signal, given back to a parked connection when it resumes (it keeps
    /// only its hold on the drain while parked).
    pub signal: tokio::sync::watch::Receiver<bool>,
}

/// One connected MQTT client, as [`Clients::list`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    /// Its client identifier (assigned by the broker when CONNECT's was empty).
    pub client_id: String,
    /// The username the connection acts as: CONNECT's, or the client certificate's CN
    /// under `tls.use_identity_as_username`.
    pub username: Option<String>,
    /// The subject CN of its verified TLS client certificate, if it presented one.
    pub tls_identity: Option<String>,
    /// Its address.
    pub peer: SocketAddr,
}

/// A read-only view of the connected MQTT clients, for embedding programs and
/// [`crate::Gateway::mqtt_clients`]. Holds no shutdown handle, so it never delays shutdown.
#[derive(Debug, Clone)]
pub struct Clients {
    /// The front-end's shared state (its session registry).
    shared: Arc<Shared>,
}

impl Clients {
    /// The clients connected right now, over any transport.
    pub fn list(&self) -> Vec<ClientInfo> {
        self.shared.sessions.connected()
    }

    /// Sessions held right now: `(online, offline)` — a persistent session whose client is
    /// away is offline.
    pub fn sessions(&self) -> (u64, u64) {
        let all = self.shared.sessions.len() as u64;
        let online = self.shared.sessions.connected().len() as u64;
        (online, all.saturating_sub(online))
    }

    /// MQTT bytes `(received, sent)` over every transport since the start.
    pub fn bytes(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering;
        (
            self.shared.stats.bytes_received.load(Ordering::Relaxed),
            self.shared.stats.bytes_sent.load(Ordering::Relaxed),
        )
    }

    /// The session registry, for the MQTT bridges' durable out queues
    /// ([`crate::bridge`]), which are sessions under reserved client ids.
    pub(crate) fn registry(&self) -> &Registry {
        &self.shared.sessions
    }
}

/// A handle on the MQTT front-end, shared by its TCP listener and by the WebSocket
/// endpoints (on the HTTP port at `/mqtt`, and on `mqtt.ws_port`).
#[derive(Debug, Clone)]
pub struct Mqtt {
    /// Broker, configuration and sessions, shared by every connection of every transport.
    shared: Arc<Shared>,
    /// One connection limit for every transport.
    slots: Arc<Semaphore>,
    /// Cloned into every connection task.
    shutdown: Shutdown,
}

impl Mqtt {
    /// The MQTT front-end over `broker`, checking clients with `auth`.
    /// Stored persistent sessions are restored here, before any listener accepts.
    pub fn new(
        broker: Arc<Broker>,
        config: Arc<Config>,
        auth: Arc<Auth>,
        limits: Arc<Limits>,
        shutdown: Shutdown,
    ) -> Self {
        let sessions = Registry::new(
            config.mqtt.max_queued,
            config.mqtt.overflow,
            config.mqtt.queue_qos0,
            config.mqtt.max_persistent_sessions,
        );
        let (restored, messages) = sessions.restore(&broker);
        if restored > 0 {
            tracing::info!(
                sessions = restored,
                messages,
                "persistent MQTT sessions restored"
            );
        }
        let kicks = broker.durable().and_then(|d| d.keeper().kicks());
        let shared = Arc::new(Shared {
            sessions,
            stats: counted::Stats::default(),
            authority: Arc::new(access::Authority::new(auth, Some(broker.ops.clone()))),
            broker,
            use_identity_as_username: config.tls.use_identity_as_username,
            limits,
            machine: Arc::new(machine_config(&config.mqtt)),
            bells: bells::Bells::default(),
            runtime: tokio::runtime::Handle::try_current().ok(),
            signal: shutdown.signal(),
            config: config.clone(),
        });
        if let Some(mut kicks) = kicks {
            // In a cluster: another node takes a session over (or this node lost it), so
            // its connection here closes (v5 DISCONNECT 0x8E, MQTT-3.1.4-2).
            let shared = Arc::downgrade(&shared);
            tokio::spawn(async move {
                while let Some(kick) = kicks.recv().await {
                    match shared.upgrade() {
                        Some(s) => s.sessions.kick(&kick),
                        None => return,
                    }
                }
            });
        }
        Mqtt {
            shared,
            slots: Arc::new(Semaphore::new(config.mqtt.max_connections)),
            shutdown,
        }
    }

    /// Connections open right now (TCP and WebSocket).
    pub fn connected(&self) -> usize {
        self.shared
            .config
            .mqtt
            .max_connections
            .saturating_sub(self.slots.available_permits())
    }

    /// A view of the connected clients.
    pub fn clients(&self) -> Clients {
        Clients {
            shared: self.shared.clone(),
        }
    }

    /// The guard of a WebSocket port of its own (`mqtt.ws_port`, `mqtt.wss_port`, served by
    /// [`crate::http`]): the port's own gate, `http.header_timeout_secs` and
    /// `body_timeout_secs`; no HTTP connection cap and no HTTP counting, since `[mqtt]
    /// max_connections` bounds these once they are MQTT sessions and MQTT counts their bytes.
    pub(crate) fn ws_guard(&self, listener: &'static str) -> crate::tls::HttpGuard {
        crate::tls::HttpGuard {
            gate: self.shared.limits.gate(listener),
            header_timeout: self.shared.config.http.header_timeout(),
            body_deadline: self.shared.config.http.body_deadline(),
            slots: None,
            metrics: None,
        }
    }

    /// The shutdown signal the front-end's tasks watch.
    pub(crate) fn shutdown(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// A connection slot, or `None` when `max_connections` are open.
    fn try_slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }
}

/// The protocol machine's limits and timers for `[mqtt]`.
fn machine_config(cfg: &crate::config::MqttConfig) -> ponte_mqtt::Config {
    ponte_mqtt::Config {
        max_packet_size: cfg.max_packet_size,
        max_inflight: cfg.max_inflight,
        connect_timeout: cfg.connect_timeout(),
        keep_alive_factor: 1.5,
        receive_maximum: cfg.receive_maximum,
        topic_alias_maximum: cfg.topic_alias_maximum,
        max_keep_alive: cfg.max_keepalive,
        max_session_expiry: cfg.max_session_expiry_secs,
    }
}

/// Accept MQTT connections over TCP until shutdown. Also runs the front-end's
/// housekeeping: the session expiry, and the shutdown of every connection (of every
/// transport).
pub async fn serve(listener: TcpListener, mqtt: Mqtt) {
    tokio::spawn(expire_sessions(mqtt.clone()));
    tokio::spawn(ring_at_shutdown(mqtt.clone()));
    serve_also(listener, mqtt).await;
}

/// At shutdown, ring every connection's bell: each closes (v5: DISCONNECT 0x8B) and
/// saves its session (see `bells.rs`). A connection that starts later sees the signal
/// when it starts.
async fn ring_at_shutdown(mqtt: Mqtt) {
    let mut shutdown = mqtt.shutdown.clone();
    shutdown.recv().await;
    mqtt.shared.bells.ring_all();
}

/// Accept MQTT connections over TCP on one more address (`host` with several addresses)
/// until shutdown; [`serve`] on the first one also runs the session expiry.
pub async fn serve_also(listener: TcpListener, mqtt: Mqtt) {
    let m = mqtt.clone();
    accept_each(
        listener,
        &mqtt,
        Transport::Mqtt,
        move |stream, peer, guard| {
            let _ = stream.set_nodelay(true);
            tokio::spawn(client::run_tcp(
                stream,
                peer,
                m.shared.clone(),
                m.shutdown.clone(),
                guard,
            ));
        },
    )
    .await
}

/// Accept MQTT over TLS (`mqtts`) until shutdown. A connection takes its slot (the same
/// `max_connections` as every transport) before its handshake, which runs in its own task
/// under `tls.handshake_timeout_secs`, so a slow or idle handshake never stalls the accept
/// loop and handshakes cannot exceed the limit either.
pub async fn serve_tls(listener: TcpListener, mqtt: Mqtt, tls: Arc<Tls>) {
    let m = mqtt.clone();
    accept_each(
        listener,
        &mqtt,
        Transport::Mqtts,
        move |stream, peer, guard| {
            let _ = stream.set_nodelay(true);
            let shared = m.shared.clone();
            let mut shutdown = m.shutdown.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let Some((stream, tls_peer)) = tls
                    .accept(crate::tls::Kind::Mqtt, stream, peer, &mut shutdown)
                    .await
                else {
                    return;
                };
                let (reader, writer) = tokio::io::split(stream);
                client::run(
                    reader,
                    writer,
                    peer,
                    Some(tls_peer),
                    shared,
                    shutdown,
                    guard,
                )
                .await;
            });
        },
    )
    .await
}

/// What a connection holds while it lives, dropped when it ends: its `max_connections`
/// slot, its place under `[limits]`, its place in the connections gauge.
type Guard = (
    tokio::sync::OwnedSemaphorePermit,
    ConnPermit,
    crate::metrics::Connection,
);

/// The accept loop of one MQTT listener (`transport`: plain or TLS) until shutdown: each
/// connection is admitted by the listener's gate and takes a `max_connections` slot (a
/// refusal is logged and counted, and the connection closed before any MQTT byte), then
/// `serve` gets it with its guard (slot, admission, counted connection).
async fn accept_each(
    listener: TcpListener,
    mqtt: &Mqtt,
    transport: Transport,
    mut serve: impl FnMut(tokio::net::TcpStream, SocketAddr, Guard),
) {
    let (what, gate) = match transport {
        Transport::Mqtts => ("MQTT/TLS", "mqtts"),
        _ => ("MQTT", "mqtt"),
    };
    let mut shutdown = mqtt.shutdown.clone();
    let limit = mqtt.shared.config.mqtt.max_connections;
    let gate = mqtt.shared.limits.gate(gate);
    while let Some((stream, peer)) = shutdown.accept(&listener, what).await {
        let Some(admitted) = admit(&gate, peer, what) else {
            continue;
        };
        let Some(permit) = mqtt.try_slot() else {
            tracing::warn!(%peer, limit, "{what} connection refused: max_connections reached");
            mqtt.shared.broker.ops.refused_full(transport);
            continue;
        };
        let counted = mqtt.shared.broker.ops.connection(transport);
        serve(stream, peer, (permit, admitted, counted));
    }
}

/// Ask the listener's gate ([`crate::limits`]) whether `peer` may connect; a refused
/// connection is logged here and closed by the caller before any MQTT byte.
fn admit(gate: &Arc<ConnectionGate>, peer: SocketAddr, what: &'static str) -> Option<ConnPermit> {
    match gate.admit(peer.ip(), std::time::Instant::now()) {
        Ok(p) => Some(p),
        Err(refused) => {
            tracing::warn!(%peer, listener = what, reason = %refused, "MQTT connection refused by [limits]");
            None
        }
    }
}

/// End away sessions whose expiry passed, checked every second until shutdown.
async fn expire_sessions(mqtt: Mqtt) {
    let mut shutdown = mqtt.shutdown.clone();
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.recv() => break,
            _ = tick.tick() => {
                mqtt.shared.sessions.expire(std::time::Instant::now(), &mqtt.shared.broker);
            }
        }
    }
}
