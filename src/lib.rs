//! # ponte
//!
//! One retained-message store and one broker core behind three front-ends: HTTP
//! (`/resources/T`), CoAP (`/r/T`) and an MQTT broker (topic `T`). A write in any protocol
//! reaches readers and subscribers in all of them.
//!
//! Embed it with [`run`] (config + shutdown future) or [`start`] (returns the bound addresses
//! and a handle to stop it):
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
pub mod broker;
pub mod cli;
pub mod coap;
pub mod config;
pub mod http;
pub mod mqtt;
pub mod shutdown;
pub mod store;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use backbone::Local;
use broker::Broker;
use config::Config;
use shutdown::ShutdownController;
use store::StoreError;

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
}

/// A running gateway.
#[derive(Debug)]
pub struct Gateway {
    /// Where HTTP listens (the real port when 0 was asked for).
    pub http_addr: SocketAddr,
    /// Where CoAP listens.
    pub coap_addr: SocketAddr,
    /// Where MQTT listens.
    pub mqtt_addr: SocketAddr,
    /// Where MQTT over WebSocket has a port of its own (`mqtt.ws_port`); it is always also
    /// at `/mqtt` on the HTTP port.
    pub mqtt_ws_addr: Option<SocketAddr>,
    /// The broker core, for embedding programs that want to publish directly.
    pub broker: Arc<Broker>,
    /// Who may do what; every front-end asks it. [`Gateway::reload`] re-reads its files.
    pub auth: Arc<auth::Auth>,
    /// Signals the tasks and waits for them.
    controller: ShutdownController,
    /// The front-end tasks.
    tasks: Vec<JoinHandle<()>>,
}

/// Open the store, bind every listener and start serving.
pub async fn start(config: Config) -> Result<Gateway, Error> {
    let config = Arc::new(config);
    // The auth files first: a typo in them must stop the start before any port opens.
    let auth = Arc::new(auth::Auth::new(config.auth.clone())?);
    let broker = if config.store.memory {
        Broker::new(store::memory::MemoryStore, Arc::new(Local))?
    } else {
        let path = config.store.db.clone();
        let (sled, sessions) =
            tokio::task::spawn_blocking(move || store::sled::SledStore::open_with_sessions(&path))
                .await
                .map_err(|e| StoreError::Engine(e.to_string()))??;
        Broker::with_sessions(sled, sessions, Arc::new(Local))?
    };

    let bind_tcp = |protocol, addr| async move {
        TcpListener::bind(addr).await.map_err(|source| Error::Bind {
            protocol,
            addr,
            source,
        })
    };
    let http = bind_tcp("HTTP", config.http_addr()).await?;
    let mqtt = bind_tcp("MQTT", config.mqtt_addr()).await?;
    let coap_addr = config.coap_addr();
    // UDP and, with `[coap] tcp`, TCP (RFC 8323) on the same port number.
    let (coap, coap_tcp) = coap::bind(&config).await?;
    let local = |r: std::io::Result<SocketAddr>, protocol, addr| {
        r.map_err(|source| Error::Bind {
            protocol,
            addr,
            source,
        })
    };
    let ws = match config.mqtt_ws_addr() {
        Some(addr) => Some(bind_tcp("MQTT/WebSocket", addr).await?),
        None => None,
    };
    let http_addr = local(http.local_addr(), "HTTP", config.http_addr())?;
    let mqtt_addr = local(mqtt.local_addr(), "MQTT", config.mqtt_addr())?;
    let coap_addr = local(coap.local_addr(), "CoAP", coap_addr)?;

    let mqtt_ws_addr = match &ws {
        Some(l) => {
            let asked = config.mqtt_ws_addr().unwrap_or(config.mqtt_addr());
            Some(local(l.local_addr(), "MQTT/WebSocket", asked)?)
        }
        None => None,
    };

    let controller = ShutdownController::new();
    let front = mqtt::Mqtt::new(
        broker.clone(),
        config.clone(),
        auth.clone(),
        controller.subscribe(),
    );
    let mut tasks = vec![
        tokio::spawn(http::serve(
            http,
            broker.clone(),
            config.clone(),
            front.clone(),
            controller.subscribe(),
        )),
        tokio::spawn(coap::serve(
            coap,
            broker.clone(),
            config.clone(),
            controller.subscribe(),
        )),
        tokio::spawn(mqtt::serve(mqtt, front.clone())),
    ];
    if let Some(listener) = coap_tcp {
        tasks.push(tokio::spawn(coap::serve_tcp(
            listener,
            broker.clone(),
            config.clone(),
            controller.subscribe(),
        )));
    }
    if let Some(ws) = ws {
        tasks.push(tokio::spawn(mqtt::serve_ws(ws, front.clone())));
    }
    drop(front);
    tracing::info!(
        http = %http_addr,
        coap = %coap_addr,
        mqtt = %mqtt_addr,
        mqtt_ws = %mqtt_ws_addr.map(|a| a.to_string()).unwrap_or_else(|| format!("{http_addr}/mqtt")),
        store = %if config.store.memory { "memory".to_string() } else { config.store.db.display().to_string() },
        retained = broker.retained_count(),
        "ponte listening"
    );
    Ok(Gateway {
        http_addr,
        coap_addr,
        mqtt_addr,
        mqtt_ws_addr,
        broker,
        auth,
        controller,
        tasks,
    })
}

impl Gateway {
    /// Re-read what SIGHUP re-reads: the password, ACL and JWT key files. Connections stay
    /// up; their next check uses the new rules. A file that fails to load is logged and the
    /// old rules stay in force.
    pub fn reload(&self) {
        match self.auth.reload() {
            Ok(()) => tracing::info!("reloaded the auth files"),
            Err(e) => tracing::error!(error = %e, "reload failed; keeping the previous auth files"),
        }
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
    run_with_reload(config, shutdown, futures_util::stream::pending()).await
}

/// [`run`], also calling [`Gateway::reload`] on every item of `reload` (the binary feeds it
/// SIGHUP).
pub async fn run_with_reload(
    config: Config,
    shutdown: impl Future<Output = ()>,
    reload: impl futures_util::Stream<Item = ()>,
) -> Result<(), Error> {
    use futures_util::StreamExt as _;
    let gateway = start(config).await?;
    let mut reload = std::pin::pin!(reload);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(()) = reload.next() => gateway.reload(),
        }
    }
    gateway.shutdown().await;
    Ok(())
}
