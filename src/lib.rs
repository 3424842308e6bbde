//! # ponte
//!
//! One retained-message store and one broker core behind three front-ends: HTTP
//! (`/resources/T`), CoAP (`/r/T`) and an MQTT broker (topic `T`). A write in any protocol
//! reaches readers and subscribers in all of them.
//!
//! Embed it with [`run`] (config + shutdown future) or [`start`] (returns the bound addresses
//! and a handle to stop it); [`start_with_store`] / [`start_with_stores`] take a storage
//! engine of your own (a [`store::Store`] and a [`store::session::SessionStore`]):
//!
//! ```no_run
//! # async fn demo() -> Result<(), ponte::Error> {
//! let config = ponte::config::Config::ephemeral();
//! let gateway = ponte::start(config).await?;
//! println!("HTTP on {}", gateway.http_addr);
//! gateway.shutdown().await;
//! # Ok(()) }
//! ```

pub mod auth;
pub mod backbone;
pub mod backoff;
pub mod bridge;
pub mod broker;
pub mod cli;
pub mod coap;
pub mod config;
pub mod durable;
pub mod health;
pub mod http;
mod launch;
use launch::launch;
pub mod limits;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod mqtt;
pub mod reload;
pub mod roots;
pub mod shutdown;
pub mod stats;
pub mod store;
pub mod tls;
pub mod webhook;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use backbone::Local;
use broker::Broker;
use config::Config;
use reload::{ReloadError, Reloader};
use shutdown::ShutdownController;
use store::StoreError;
use tls::{Tls, TlsError};

/// How long shutdown waits for connections and in-flight writes before closing anyway.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not bind (port in use, address not available, permission).
    #[error("cannot listen for {protocol} on {addr}: {source}")]
    Bind {
        /// Which front-end.
        protocol: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The store could not be opened or loaded.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A password, ACL or JWT key file named in `[auth]` could not be used.
    #[error("auth: {0}")]
    Auth(#[from] auth::AuthError),
    /// The DTLS engine refused its configuration (`coaps`).
    #[error("coaps: {0}")]
    Dtls(#[from] coap::dtls::DtlsSetupError),
    /// `[tls]` or one of its files cannot be used (a configuration error: exit code 2).
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    /// A `[[bridge]]` or `[[webhook]]` value, or a file it names, cannot be used (a
    /// configuration error: exit code 2). The message names the section and key or file.
    #[error("config: {0}")]
    Config(String),
    /// `[cluster]` cannot be used, or this node cannot join (its name is taken).
    #[error("cluster: {0}")]
    Cluster(#[from] backbone::nats::ClusterError),
}

/// A running gateway.
#[derive(Debug)]
pub struct Gateway {
    /// Where HTTP listens (the real port when 0 was asked for).
    pub http_addr: SocketAddr,
    /// Where CoAP listens.
    pub coap_addr: SocketAddr,
    /// Where CoAP over DTLS (`coaps`) listens; `None` when no PSK file was given.
    pub coaps_addr: Option<SocketAddr>,
    /// Counters of the `coaps` listener (handshake failures and the like), when it runs.
    pub coaps_stats: Option<Arc<coap::DtlsStats>>,
    /// Where MQTT listens.
    pub mqtt_addr: SocketAddr,
    /// Where MQTT over WebSocket has a port of its own (`mqtt.ws_port`); it is always also
    /// at `/mqtt` on the HTTP port.
    pub mqtt_ws_addr: Option<SocketAddr>,
    /// Where MQTT over TLS listens (`mqtt.tls_port`), when `[tls]` is configured.
    pub mqtts_addr: Option<SocketAddr>,
    /// Where HTTPS listens (`http.tls_port`; MQTT over secure WebSocket is at `/mqtt`).
    pub https_addr: Option<SocketAddr>,
    /// Where MQTT over secure WebSocket has a port of its own (`mqtt.wss_port`).
    pub wss_addr: Option<SocketAddr>,
    /// The broker core, for embedding programs that want to publish directly.
    pub broker: Arc<Broker>,
    /// Who may do what; every front-end asks it. [`Gateway::reload`] re-reads its files.
    pub auth: Arc<auth::Auth>,
    /// Where HTTP's `/metrics`, `/livez` and `/readyz` have a port of their own
    /// (`http.metrics_port`).
    pub metrics_addr: Option<SocketAddr>,
    /// The checks behind `/readyz`; add one with [`health::Readiness::add`] or
    /// [`health::Readiness::flag`].
    pub readiness: Arc<health::Readiness>,
    /// Every counter, for [`Gateway::metrics`] (and `/metrics`, `$SYS`).
    sources: stats::Sources,
    /// The connected MQTT clients, for [`Gateway::mqtt_clients`].
    clients: mqtt::Clients,
    /// The abuse limits of every front-end, for [`Gateway::refused`].
    limits: Arc<limits::Limits>,
    /// What [`Gateway::reload`] re-reads (TLS certificates today).
    reloader: Reloader,
    /// The MQTT bridges (`[[bridge]]`), for [`Gateway::bridge_stats`].
    bridges: Arc<bridge::Bridges>,
    /// The webhooks (`[[webhook]]`), for [`Gateway::webhook_stats`].
    webhooks: Arc<webhook::Webhooks>,
    /// Signals the tasks and waits for them.
    controller: ShutdownController,
    /// The front-end tasks.
    tasks: Vec<JoinHandle<()>>,
}

/// Open the store, bind every listener and start serving.
///
/// The store is the one `[store]` names: sled in `store.db` with persistent MQTT sessions
/// in the same database, or nothing on disk with `store.memory`. To supply another engine,
/// see [`start_with_store`].
///
/// With `[auth] psk_file`, also serve CoAP over DTLS (`coaps`, RFC 7252 §9.1.3.1) on
/// `[coap] dtls_port`, authenticating peers with the identities and keys of that file.
pub async fn start(config: Config) -> Result<Gateway, Error> {
    let Prepared { config, tls, auth } = prepare(config)?;
    if config.cluster.enabled() {
        return start_clustered(config, tls, auth).await;
    }
    let broker = if config.store.memory {
        Broker::new(store::memory::MemoryStore, Arc::new(Local))?
    } else {
        let path = config.store.db.clone();
        let sync = config.store.log_sync();
        let (sled, sessions) = tokio::task::spawn_blocking(move || {
            store::sled::SledStore::open_with_sessions(&path, sync)
        })
        .await
        .map_err(|e| StoreError::Engine(e.to_string()))??;
        Broker::with_sessions(sled, sessions, Arc::new(Local))?
    };
    let name = if config.store.memory {
        "memory".to_string()
    } else {
        config.store.db.display().to_string()
    };
    launch(config, tls, auth, broker, name).await
}

/// [`start`] with `[cluster]`: the NATS backbone decides retained values and logs every
/// write, and keeps the clients' persistent MQTT sessions (they follow their client from
/// node to node); `store.db` keeps only this node's own MQTT bridges' out queues, and
/// `$SYS` values live in memory.
async fn start_clustered(
    config: Arc<Config>,
    tls: Option<Arc<Tls>>,
    auth: Arc<auth::Auth>,
) -> Result<Gateway, Error> {
    let nats = backbone::nats::Nats::start(&config.cluster).await?;
    let backbone: Arc<dyn backbone::Backbone> = Arc::new(nats.clone());
    let local: Box<dyn durable::Keeper> = if config.store.memory {
        Box::new(durable::LocalKeeper::open(store::session::MemorySessions)?)
    } else {
        let path = config.store.db.clone();
        // Only this node's bridge queues live here: nothing reads the retained log.
        let (_, sessions) = tokio::task::spawn_blocking(move || {
            store::sled::SledStore::open_with_sessions(&path, store::sled::LogSync::Always)
        })
        .await
        .map_err(|e| StoreError::Engine(e.to_string()))??;
        Box::new(durable::LocalKeeper::open(sessions)?)
    };
    let durable = durable::DurableSessions::with_local(Box::new(nats.keeper()), local);
    let broker = Broker::with_durable(store::memory::MemoryStore, durable, backbone)?;
    // Wait (`[cluster] start_wait_secs`) for the node to be ready — connected, streams and
    // buckets in place, node name claimed, mirror in sync — then serve, ready or not.
    let wait = std::time::Duration::from_secs(config.cluster.start_wait_secs);
    match nats.wait_ready(wait).await {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            "the cluster backbone is not ready yet; serving reads, refusing writes, and retrying"
        ),
        Err(e) => {
            broker.close();
            return Err(e.into());
        }
    }
    let config = fit_to_nats(config, nats.max_payload());
    let bridges = if config.store.memory {
        "memory".to_string()
    } else {
        config.store.db.display().to_string()
    };
    let name = format!(
        "{}; MQTT sessions in NATS, bridge queues in {bridges}",
        nats.describe()
    );
    launch(config, tls, auth, broker, name).await
}

/// Room a message needs in NATS besides its body: the envelope's fixed part, headers, and
/// for HTTP and CoAP writes the topic (up to 65,535 bytes, carried whole when hashed) and
/// content type; an MQTT packet's size already counts its topic and properties.
const NATS_BODY_ROOM: usize = 80 * 1024;
/// [`NATS_BODY_ROOM`] for an MQTT packet.
const NATS_PACKET_ROOM: usize = 4 * 1024;

/// Lower the body and packet limits so every write that is accepted fits in one NATS
/// message (`max_payload`, 1 MiB by default): a larger one then gets the protocols' own
/// "too large" answers (HTTP 413, CoAP 4.13, MQTT packet too large) instead of a 503 that
/// no retry could cure.
fn fit_to_nats(config: Arc<Config>, max_payload: Option<usize>) -> Arc<Config> {
    let Some(max) = max_payload else {
        tracing::warn!("NATS's max_payload is not known yet (not connected): the body and packet limits are not lowered to it");
        return config;
    };
    let body = max.saturating_sub(NATS_BODY_ROOM);
    let packet = max.saturating_sub(NATS_PACKET_ROOM);
    if config.http.max_body <= body
        && config.coap.max_body <= body
        && config.mqtt.max_packet_size <= packet
    {
        return config;
    }
    let mut c = (*config).clone();
    c.http.max_body = c.http.max_body.min(body);
    c.coap.max_body = c.coap.max_body.min(body);
    c.mqtt.max_packet_size = c.mqtt.max_packet_size.min(packet);
    tracing::info!(
        max_payload = max,
        http_max_body = c.http.max_body,
        coap_max_body = c.coap.max_body,
        mqtt_max_packet_size = c.mqtt.max_packet_size,
        "limits lowered so every accepted write fits in one NATS message (raise max_payload in nats-server to allow more)"
    );
    Arc::new(c)
}

/// Like [`start`], with the retained values kept in `store`, an engine of the embedder's
/// choosing: the seam through which the storage engine can be swapped (see
/// [`store::Store`]: load everything at start, apply a batch durably, flush). `[store]` in
/// `config` is ignored. Persistent MQTT sessions are then kept in memory only, as with
/// `store.memory`; [`start_with_stores`] takes a session store too.
///
/// The store is owned by the retained writer thread. When its `apply` fails, the write is
/// refused in every protocol — MQTT 3.1.1 closes the connection (MQTT-4.8.0-2) so the
/// client re-sends, MQTT 5 answers PUBACK/PUBREC 0x80 (QoS 0: DISCONNECT 0x80), HTTP 503
/// `application/problem+json`, CoAP 5.03 — and nothing is delivered or retained.
///
/// ```no_run
/// # async fn demo() -> Result<(), ponte::Error> {
/// let config = ponte::config::Config::ephemeral();
/// let gateway = ponte::start_with_store(config, ponte::store::memory::MemoryStore).await?;
/// gateway.shutdown().await;
/// # Ok(()) }
/// ```
pub async fn start_with_store<S: store::Store>(config: Config, store: S) -> Result<Gateway, Error> {
    let Prepared { config, tls, auth } = prepare(config)?;
    let broker = Broker::new(store, Arc::new(Local))?;
    launch(config, tls, auth, broker, "supplied by the embedder".into()).await
}

/// Like [`start_with_store`], with persistent MQTT sessions (records, protocol state,
/// queued messages) kept durably in `sessions` (see [`store::session::SessionStore`]).
pub async fn start_with_stores<S: store::Store, Q: store::session::SessionStore>(
    config: Config,
    store: S,
    sessions: Q,
) -> Result<Gateway, Error> {
    let Prepared { config, tls, auth } = prepare(config)?;
    let broker = Broker::with_sessions(store, sessions, Arc::new(Local))?;
    launch(config, tls, auth, broker, "supplied by the embedder".into()).await
}

/// What [`prepare`] checked and loaded, for [`launch`].
struct Prepared {
    /// The configuration, shared by every front-end.
    config: Arc<Config>,
    /// The TLS acceptors, when `[tls]` is configured.
    tls: Option<Arc<Tls>>,
    /// The gateway's one authority, built from `[auth]`'s files.
    auth: Arc<auth::Auth>,
}

/// Check what the configuration names before any store is opened or port taken: the TLS
/// files and options, and the auth files.
fn prepare(config: Config) -> Result<Prepared, Error> {
    // Configuration errors first, before the store is opened or a port is taken.
    let tls = Tls::load(&config.tls)?;
    if tls.is_none() {
        for (set, key) in [
            (config.http.tls_port.is_some(), "http.tls_port"),
            (config.mqtt.wss_port.is_some(), "mqtt.wss_port"),
        ] {
            if set {
                return Err(TlsError::NotConfigured { key }.into());
            }
        }
    }
    // Bridges and webhooks: their values and the files they name (CA, certificates,
    // secrets), so a bad one stops the start with a message naming it.
    config.validate().map_err(Error::Config)?;
    bridge::check(&config.bridge).map_err(Error::Config)?;
    webhook::check(&config.webhook).map_err(Error::Config)?;
    let config = Arc::new(config);
    // The auth files first: a typo in them must stop the start before any port opens.
    let auth = Arc::new(auth::Auth::new(config.auth.clone())?);
    Ok(Prepared { config, tls, auth })
}

impl Gateway {
    /// Re-read every file the gateway serves from (SIGHUP): the auth files (password, ACL,
    /// PSK, JWT key) and the TLS certificate, key and client CA. New connections use the new files; existing ones keep going as they
    /// are. A file that cannot be used is logged and named in the error, and the old
    /// configuration stays in force.
    pub fn reload(&self) -> Result<(), ReloadError> {
        self.reloader.reload()
    }

    /// A handle that runs [`Gateway::reload`], for a signal handler that outlives a borrow.
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// The MQTT clients connected right now, over every transport: client id, the username
    /// the connection acts as, TLS client identity, address.
    pub fn mqtt_clients(&self) -> Vec<mqtt::ClientInfo> {
        self.clients.list()
    }

    /// Every counter now: what `GET /metrics` renders and `$SYS` publishes.
    pub fn metrics(&self) -> stats::Snapshot {
        self.sources.snapshot()
    }

    /// Every MQTT bridge's counters (`[[bridge]]`): connected or not, messages out and
    /// in, queue — what `ponte_bridge_up{bridge}` and
    /// `ponte_bridge_messages_total{bridge,direction}` report.
    pub fn bridge_stats(&self) -> Vec<bridge::BridgeStats> {
        self.bridges.stats()
    }

    /// Every webhook's counters (`[[webhook]]`): deliveries by outcome and events held —
    /// what `ponte_webhook_deliveries_total{webhook,outcome}` and
    /// `ponte_webhook_queue{webhook}` report.
    pub fn webhook_stats(&self) -> Vec<webhook::WebhookStats> {
        self.webhooks.stats()
    }

    /// Whether this node can take writes: always on a single node; in a cluster, once it
    /// is connected to NATS, its streams and buckets exist, its node name is claimed and
    /// its mirror of the retained values is in sync (issue 11). The readiness check
    /// "backbone".
    pub fn backbone_ready(&self) -> bool {
        self.broker.backbone().ready()
    }

    /// What the abuse limits (`[limits]`) refused so far: connections per listener and
    /// writes per protocol.
    pub fn refused(&self) -> limits::Refused {
        self.limits.refused()
    }

    /// Stop accepting, let in-flight writes finish, flush the store.
    pub async fn shutdown(self) {
        // In-flight work gets a bounded grace period: a peer that never lets its connection
        // finish must not keep SIGTERM from flushing the store and exiting.
        if tokio::time::timeout(SHUTDOWN_GRACE, self.controller.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                grace = ?SHUTDOWN_GRACE,
                "connections still open after the shutdown grace period; closing anyway"
            );
        }
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
        let broker = self.broker;
        let _ = tokio::task::spawn_blocking(move || broker.close()).await;
        tracing::info!("ponte stopped");
    }
}

/// Run the gateway until `shutdown` completes, then stop it gracefully.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    run_with_reload(config, |_| shutdown).await
}

/// Like [`run`], with the [`Reloader`] handed to `until`, which builds the future that runs
/// the gateway: it may call [`Reloader::reload`] (on SIGHUP) as often as it likes until it
/// completes, then the gateway stops gracefully.
pub async fn run_with_reload<F: Future<Output = ()>>(
    config: Config,
    until: impl FnOnce(Reloader) -> F,
) -> Result<(), Error> {
    let gateway = start(config).await?;
    until(gateway.reloader()).await;
    gateway.shutdown().await;
    Ok(())
}
