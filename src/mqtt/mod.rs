//! The MQTT front-end: a TCP listener and one task per connection, translating the sans-IO
//! [`ponte_mqtt::Connection`]'s events into broker calls and the client's mailbox into
//! outgoing PUBLISHes.

mod client;
pub mod session;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;

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
}

/// Accept MQTT connections until shutdown.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    config: Arc<Config>,
    mut shutdown: Shutdown,
) {
    let shared = Arc::new(Shared {
        sessions: Registry::new(config.mqtt.max_queued, config.mqtt.overflow),
        broker,
        config: config.clone(),
    });
    let slots = Arc::new(Semaphore::new(config.mqtt.max_connections));
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
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, limit = config.mqtt.max_connections, "MQTT connection refused: max_connections reached");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            client::run(stream, peer, shared, shutdown).await;
            drop(permit);
        });
    }
}
