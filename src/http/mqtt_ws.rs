//! MQTT over WebSocket on ports of their own (`mqtt.ws_port`, `mqtt.wss_port`): MQTT at any
//! path, served by the same HTTP accept loop as the HTTP port ([`crate::tls::serve_http`]),
//! whose `/mqtt` route does the same on the HTTP port. Here rather than in `crate::mqtt`
//! because answering a request that is not an upgrade is HTTP's job (a problem document),
//! and HTTP already sits above MQTT.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;

use super::Problem;
use crate::mqtt::Mqtt;
use crate::tls::{ConnSlot, Tls, TlsPeer};

/// The router of a WebSocket port of its own: MQTT at any path. Over TLS, the connection's
/// [`TlsPeer`] (request extension) goes with it into the driver, and on every port its
/// `[limits]` place ([`ConnSlot`]) is held until the MQTT session ends.
fn router(mqtt: Mqtt) -> axum::Router {
    async fn handler(
        State(mqtt): State<Mqtt>,
        ConnectInfo(peer): ConnectInfo<SocketAddr>,
        request: Request,
    ) -> Response {
        let (mut parts, _body) = request.into_parts();
        let tls = parts.extensions.get::<TlsPeer>().cloned();
        let slot = parts.extensions.remove::<ConnSlot>();
        match crate::mqtt::ws::upgrade(mqtt, &mut parts, peer, tls, slot) {
            Ok(response) => response,
            Err((status, why)) => Problem::new(
                status,
                format!("this port serves MQTT over WebSocket (subprotocol \"mqtt\"): {why}"),
            )
            .into_response(),
        }
    }
    axum::Router::new()
        .fallback(axum::routing::any(handler))
        .with_state(mqtt)
}

/// Serve MQTT over secure WebSocket on its own port (`mqtt.wss_port`), at any path.
pub async fn serve_mqtt_wss(listener: TcpListener, mqtt: Mqtt, tls: Arc<Tls>) {
    let shutdown = mqtt.shutdown();
    let guard = mqtt.ws_guard("mqtt-wss");
    let router = router(mqtt);
    crate::tls::serve_http(listener, router, Some(tls), guard, shutdown, "MQTT/WSS").await;
}

/// Serve MQTT over WebSocket on its own port (`mqtt.ws_port`), at any path.
pub async fn serve_mqtt_ws(listener: TcpListener, mqtt: Mqtt) {
    let shutdown = mqtt.shutdown();
    let guard = mqtt.ws_guard("mqtt-ws");
    let router = router(mqtt);
    crate::tls::serve_http(listener, router, None, guard, shutdown, "MQTT/WebSocket").await;
}
