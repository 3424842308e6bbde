//! MQTT over WebSocket (MQTT 3.1.1 §6, subprotocol `mqtt`): the same broker for browsers.
//!
//! A WebSocket is bridged into an in-memory byte pipe whose other end is served by the very
//! same connection driver as TCP, so both transports have identical semantics. Binary
//! frames carry MQTT bytes (packets may span or share frames, §6.0); a text frame is a
//! protocol error that closes the connection.

use std::net::SocketAddr;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{client, Mqtt};
use crate::tls::{ConnSlot, TlsPeer};

/// Bytes buffered in each direction of the bridge.
const PIPE: usize = 64 * 1024;

/// Answer a WebSocket upgrade request with the `mqtt` subprotocol and serve MQTT on it.
/// `tls` is `Some` when the request came over TLS (WSS).
pub fn upgrade(
    mqtt: Mqtt,
    ws: WebSocketUpgrade,
    peer: SocketAddr,
    tls: Option<TlsPeer>,
    slot: Option<ConnSlot>,
) -> Response {
    let max = mqtt.shared.config.mqtt.max_packet_size;
    ws.protocols(["mqtt", "mqttv3.1"])
        .max_message_size(max)
        .on_upgrade(move |socket| async move {
            bridge(socket, mqtt, peer, tls).await;
            // The connection's `[limits] max_connections_per_ip` place is freed only now.
            drop(slot);
        })
}

async fn bridge(mut socket: WebSocket, mqtt: Mqtt, peer: SocketAddr, tls: Option<TlsPeer>) {
    let transport = match tls {
        Some(_) => crate::metrics::Transport::MqttWss,
        None => crate::metrics::Transport::MqttWs,
    };
    let Some(permit) = mqtt.try_slot() else {
        tracing::warn!(%peer, "MQTT/WebSocket connection refused: max_connections reached");
        mqtt.shared.broker.ops.refused_full(transport);
        return;
    };
    let _counted = mqtt.shared.broker.ops.connection(transport);
    let (ours, theirs) = tokio::io::duplex(PIPE);
    let (reader, writer) = tokio::io::split(theirs);
    let shared = mqtt.shared.clone();
    let (reader, writer) = super::counted::wrap(reader, writer, &shared.stats);
    let shutdown = mqtt.shutdown.clone();
    let driver = tokio::spawn(async move {
        client::run(reader, writer, peer, tls, shared, shutdown).await;
        drop(permit);
    });
    let (mut from_driver, mut to_driver) = tokio::io::split(ours);
    let mut buf = vec![0u8; PIPE];
    loop {
        tokio::select! {
            msg = socket.recv() => match msg {
                Some(Ok(Message::Binary(bytes))) => {
                    if to_driver.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Text(_))) => {
                    tracing::debug!(%peer, "text frame on MQTT/WebSocket (MQTT-6.0.0-1); closing");
                    break;
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
            },
            n = from_driver.read(&mut buf) => match n {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let frame = bytes::Bytes::copy_from_slice(&buf[..n]);
                    if socket.send(Message::Binary(frame)).await.is_err() {
                        break;
                    }
                }
            },
        }
    }
    // End of stream for the driver: it publishes the will if this was not a DISCONNECT.
    let _ = to_driver.shutdown().await;
    drop(to_driver);
    // Let the driver flush its last packets (e.g. a refusal) before the socket closes.
    while let Ok(Ok(n)) = tokio::time::timeout(
        std::time::Duration::from_millis(200),
        from_driver.read(&mut buf),
    )
    .await
    {
        if n == 0
            || socket
                .send(Message::Binary(bytes::Bytes::copy_from_slice(&buf[..n])))
                .await
                .is_err()
        {
            break;
        }
    }
    let _ = socket.send(Message::Close(None)).await;
    let _ = driver.await;
}
