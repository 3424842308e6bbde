//! The MQTT front-end: a TCP listener and one task per connection, translating the sans-IO
//! [`ponte_mqtt::Connection`]'s events into broker calls and the client's mailbox into
//! outgoing PUBLISHes.

mod access;
mod client;
mod counted;
pub mod session;
mod sys;
pub mod ws;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::auth::Auth;
use crate::broker::Broker;
use crate::config::Config;
use crate::shutdown::Shutdown;
use session::Registry;

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
    /// Who may connect, publish and subscribe (the gateway's one authority).
    pub auth: Arc<Auth>,
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
        shutdown: Shutdown,
    ) -> Self {
        let sessions = Registry::new(
            config.mqtt.max_queued,
            config.mqtt.overflow,
            config.mqtt.queue_qos0,
        );
        let (restored, messages) = sessions.restore(&broker);
        if restored > 0 {
            tracing::info!(
                sessions = restored,
                messages,
                "persistent MQTT sessions restored"
            );
        }
        Mqtt {
            shared: Arc::new(Shared {
                sessions,
                stats: counted::Stats::default(),
                auth,
                broker,
                config: config.clone(),
            }),
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

    /// A connection slot, or `None` when `max_connections` are open.
    fn try_slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }
}

/// Accept MQTT connections over TCP until shutdown.
pub async fn serve(listener: TcpListener, mqtt: Mqtt) {
    tokio::spawn(sys::run(mqtt.clone()));
    tokio::spawn(expire_sessions(mqtt.clone()));
    let mut shutdown = mqtt.shutdown.clone();
    let limit = mqtt.shared.config.mqtt.max_connections;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.recv() => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "MQTT accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(permit) = mqtt.try_slot() else {
            tracing::warn!(%peer, limit, "MQTT connection refused: max_connections reached");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = mqtt.shared.clone();
        let shutdown = mqtt.shutdown.clone();
        tokio::spawn(async move {
            let (reader, writer) = stream.into_split();
            let (reader, writer) = counted::wrap(reader, writer, &shared.stats);
            client::run(reader, writer, peer, shared, shutdown).await;
            drop(permit);
        });
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

/// Serve MQTT over WebSocket on its own port (`mqtt.ws_port`), at any path.
pub async fn serve_ws(listener: TcpListener, mqtt: Mqtt) {
    use axum::extract::{ConnectInfo, State, WebSocketUpgrade};
    async fn handler(
        State(mqtt): State<Mqtt>,
        ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
        ws: WebSocketUpgrade,
    ) -> axum::response::Response {
        ws::upgrade(mqtt, ws, peer)
    }
    let mut signal = mqtt.shutdown.clone();
    let router = axum::Router::new()
        .fallback(axum::routing::get(handler))
        .with_state(mqtt);
    let served = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move { signal.recv().await })
    .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "MQTT/WebSocket server failed");
    }
}
