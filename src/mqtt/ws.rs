//! MQTT over WebSocket (MQTT 3.1.1 §6, subprotocol `mqtt`): the same broker for browsers.
//!
//! A WebSocket is bridged into an in-memory byte pipe whose other end is served by the very
//! same connection driver as TCP, so both transports have identical semantics. Binary
//! frames carry MQTT bytes (packets may span or share frames, §6.0); a text frame is a
//! protocol error that closes the connection.
//!
//! The upgrade (RFC 6455 §4.2) is answered here rather than by axum's `WebSocketUpgrade`,
//! so that the upgraded socket can be read through a [`FrameWatch`] before tungstenite
//! sees it (issue 16): a client frame that has begun must complete by the
//! `[http] body_timeout_secs` / `body_min_rate` rule, or the connection is closed — half a
//! frame and silence cannot hold a connection (and its buffers) forever, whatever the MQTT
//! keep-alive says.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use http::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Version};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::{client, Mqtt};
use crate::limits::TransferDeadline;
use crate::tls::{ConnSlot, TlsPeer};

/// Bytes buffered in each direction of the bridge.
const PIPE: usize = 64 * 1024;

/// What tungstenite reserves for reading a connection's frames (its default, 128 KiB, was
/// allocated up front and held by every connection, idle or not: issue 16 measured 150 KB
/// per idle MQTT/WebSocket connection). A larger frame still grows the buffer to its size
/// (up to `max_packet_size`) while it is read.
const READ_BUFFER: usize = 4 * 1024;

/// The subprotocols answered, in order of preference (MQTT-6.0.0-3 and 3.1's name).
const PROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// Why an upgrade request was refused: status and explanation.
pub type Refused = (StatusCode, String);

/// Whether `name`'s comma-separated values include `token` (case-insensitive).
fn header_has(headers: &HeaderMap, name: http::header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// Check a WebSocket upgrade request (RFC 6455 §4.2.1) and, when it is one, answer it
/// `101 Switching Protocols` with the `mqtt` subprotocol and serve MQTT on the upgraded
/// connection. `tls` is `Some` when the request came over TLS (WSS); `slot` is the
/// connection's `[limits]` place, held until the MQTT session ends.
pub fn upgrade(
    mqtt: Mqtt,
    parts: &mut Parts,
    peer: SocketAddr,
    tls: Option<TlsPeer>,
    slot: Option<ConnSlot>,
) -> Result<Response, Refused> {
    if parts.version > Version::HTTP_11 {
        return Err((
            StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            "MQTT over WebSocket is served over HTTP/1.1 upgrades".into(),
        ));
    }
    if parts.method != Method::GET {
        return Err((
            StatusCode::METHOD_NOT_ALLOWED,
            "a WebSocket upgrade is a GET (RFC 6455 §4.1)".into(),
        ));
    }
    if !header_has(&parts.headers, CONNECTION, "upgrade") {
        return Err((
            StatusCode::BAD_REQUEST,
            "Connection header did not include 'upgrade'".into(),
        ));
    }
    if !header_has(&parts.headers, UPGRADE, "websocket") {
        return Err((
            StatusCode::BAD_REQUEST,
            "`Upgrade` header did not include 'websocket'".into(),
        ));
    }
    let Some(key) = parts.headers.get(SEC_WEBSOCKET_KEY) else {
        return Err((
            StatusCode::BAD_REQUEST,
            "`Sec-WebSocket-Key` header missing".into(),
        ));
    };
    if !header_has(&parts.headers, SEC_WEBSOCKET_VERSION, "13") {
        return Err((
            StatusCode::BAD_REQUEST,
            "`Sec-WebSocket-Version` header did not include '13'".into(),
        ));
    }
    let accept = derive_accept_key(key.as_bytes());
    let protocol = PROTOCOLS
        .iter()
        .find(|p| header_has(&parts.headers, SEC_WEBSOCKET_PROTOCOL, p));
    let Some(on_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
        return Err((
            StatusCode::UPGRADE_REQUIRED,
            "WebSocket request couldn't be upgraded since no upgrade state was present".into(),
        ));
    };
    let max = mqtt.shared.config.mqtt.max_packet_size;
    let rule = mqtt.shared.config.http.body_deadline();
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let io = FrameWatch::new(TokioIo::new(upgraded), rule);
                let config = WebSocketConfig::default()
                    .read_buffer_size(READ_BUFFER)
                    .max_message_size(Some(max))
                    .max_frame_size(Some(max));
                let socket = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
                bridge(socket, mqtt, peer, tls).await;
            }
            Err(e) => tracing::debug!(%peer, error = %e, "WebSocket upgrade failed"),
        }
        // The connection's `[limits] max_connections_per_ip` place is freed only now.
        drop(slot);
    });
    let mut response = (
        StatusCode::SWITCHING_PROTOCOLS,
        [
            (CONNECTION, HeaderValue::from_static("upgrade")),
            (UPGRADE, HeaderValue::from_static("websocket")),
        ],
    )
        .into_response();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&accept) {
        headers.insert(SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(p) = protocol {
        headers.insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(p));
    }
    Ok(response)
}

async fn bridge<S>(
    mut socket: WebSocketStream<S>,
    mqtt: Mqtt,
    peer: SocketAddr,
    tls: Option<TlsPeer>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
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
    let shutdown = mqtt.shutdown.clone();
    let driver = tokio::spawn(client::run(
        reader, writer, peer, tls, shared, shutdown, permit,
    ));
    let (mut from_driver, mut to_driver) = tokio::io::split(ours);
    loop {
        tokio::select! {
            msg = socket.next() => match msg {
                Some(Ok(Message::Binary(bytes))) => {
                    if to_driver.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Text(_))) => {
                    tracing::debug!(%peer, "text frame on MQTT/WebSocket (MQTT-6.0.0-1); closing");
                    break;
                }
                Some(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "MQTT/WebSocket read failed; closing");
                    break;
                }
                Some(Ok(Message::Close(_))) | None => break,
            },
            out = from_driver_now(&mut from_driver) => match out {
                Ok(frame) if frame.is_empty() => break,
                Err(_) => break,
                Ok(frame) => {
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
    while let Ok(Ok(frame)) = tokio::time::timeout(
        std::time::Duration::from_millis(200),
        from_driver_now(&mut from_driver),
    )
    .await
    {
        if frame.is_empty() || socket.send(Message::Binary(frame)).await.is_err() {
            break;
        }
    }
    let _ = socket.send(Message::Close(None)).await;
    let _ = driver.await;
}

/// The next bytes the driver wrote, as one frame's payload (empty at end of stream). Read
/// through the worker thread's scratch buffer ([`client::read_into`]), so a bridge waiting
/// for its driver holds no buffer of its own (it held 64 KiB).
fn from_driver_now<R: AsyncRead + Unpin>(
    from_driver: &mut R,
) -> impl Future<Output = io::Result<bytes::Bytes>> + '_ {
    std::future::poll_fn(move |cx| {
        let mut out = Ok(bytes::Bytes::new());
        client::read_into(from_driver, cx, |got| {
            out = got.map(bytes::Bytes::copy_from_slice);
        })
        .map(|()| std::mem::replace(&mut out, Ok(bytes::Bytes::new())))
    })
}

/// Where the client's current frame is (RFC 6455 §5.2), as far as the bytes read so far
/// tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    /// Between frames.
    Idle,
    /// In the header: bytes seen and the header's length once known (2 until the second
    /// byte says more).
    Header {
        /// Header bytes seen.
        seen: usize,
        /// Header length as known so far.
        len: usize,
        /// The payload length field collected so far.
        payload: u64,
    },
    /// In the payload: bytes still to come.
    Payload(u64),
}

/// The upgraded socket as tungstenite reads it, with a clock on each incoming frame: a
/// frame that has begun must be complete by its [`TransferDeadline`] (from its first byte),
/// or the read fails with `TimedOut` and the connection is closed. Reads between frames
/// are not timed: an idle WebSocket is the MQTT keep-alive's business.
pub struct FrameWatch<IO> {
    /// The connection.
    io: IO,
    /// The rule.
    rule: TransferDeadline,
    /// Where the current frame is.
    frame: Frame,
    /// When the current frame began and how many of its bytes came; `None` between frames.
    started: Option<(Instant, u64)>,
    /// The timer of the current frame, armed while a read waits.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<IO> FrameWatch<IO> {
    /// Watch `io` with `rule`.
    pub fn new(io: IO, rule: TransferDeadline) -> Self {
        FrameWatch {
            io,
            rule,
            frame: Frame::Idle,
            started: None,
            sleep: None,
        }
    }

    /// Follow the frame structure through `bytes` just read.
    fn track(&mut self, mut bytes: &[u8], now: Instant) {
        while !bytes.is_empty() {
            if self.started.is_none() {
                self.started = Some((now, 0));
            }
            match self.frame {
                Frame::Idle => {
                    self.frame = Frame::Header {
                        seen: 0,
                        len: 2,
                        payload: 0,
                    }
                }
                Frame::Header { seen, len, payload } => {
                    let b = bytes[0];
                    bytes = &bytes[1..];
                    self.count(1);
                    let (len, payload) = match seen {
                        // FIN, opcode: nothing to learn.
                        0 => (len, payload),
                        1 => {
                            let masked = if b & 0x80 != 0 { 4 } else { 0 };
                            match b & 0x7f {
                                126 => (2 + 2 + masked, 0),
                                127 => (2 + 8 + masked, 0),
                                n => (2 + masked, u64::from(n)),
                            }
                        }
                        // Extended payload length bytes, then the mask.
                        _ => {
                            let ext = match len - 2 {
                                2 | 6 => 2,
                                8 | 12 => 8,
                                _ => 0,
                            };
                            if seen < 2 + ext {
                                (len, (payload << 8) | u64::from(b))
                            } else {
                                (len, payload)
                            }
                        }
                    };
                    let seen = seen + 1;
                    self.frame = if seen < len {
                        Frame::Header { seen, len, payload }
                    } else if payload == 0 {
                        self.started = None;
                        Frame::Idle
                    } else {
                        Frame::Payload(payload)
                    };
                }
                Frame::Payload(left) => {
                    let n = (bytes.len() as u64).min(left);
                    bytes = &bytes[n as usize..];
                    self.count(n);
                    self.frame = if n == left {
                        self.started = None;
                        Frame::Idle
                    } else {
                        Frame::Payload(left - n)
                    };
                }
            }
        }
    }

    /// Count `n` bytes of the current frame.
    fn count(&mut self, n: u64) {
        if let Some((_, received)) = self.started.as_mut() {
            *received += n;
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for FrameWatch<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let now = Instant::now();
                let fresh = buf.filled()[before..].to_vec();
                this.track(&fresh, now);
                if this.started.is_none() {
                    this.sleep = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let Some((since, received)) = this.started else {
                    return Poll::Pending;
                };
                let at = this.rule.deadline(since, received);
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at.into())));
                if sleep.deadline() != at.into() {
                    sleep.as_mut().reset(at.into());
                }
                match sleep.as_mut().poll(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "a WebSocket frame stalled: {received} bytes of it in {} s ([http] body_timeout_secs, body_min_rate)",
                            since.elapsed().as_secs()
                        ),
                    ))),
                }
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for FrameWatch<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch() -> FrameWatch<()> {
        FrameWatch::new(
            (),
            TransferDeadline {
                timeout: std::time::Duration::from_secs(30),
                min_rate: 500,
            },
        )
    }

    /// A masked client frame with `len` payload bytes.
    fn frame(len: usize) -> Vec<u8> {
        let mut f = vec![0x82];
        match len {
            0..=125 => f.push(0x80 | len as u8),
            126..=65535 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&[1, 2, 3, 4]);
        f.extend(std::iter::repeat_n(0u8, len));
        f
    }

    #[test]
    fn rfc6455_5_2_whole_frames_leave_nothing_pending_whatever_the_chunking() {
        let t = Instant::now();
        for len in [0, 1, 125, 126, 300, 65535, 70000] {
            let f = frame(len);
            for chunk in [1, 3, 7, 4096, f.len()] {
                let mut w = watch();
                for c in f.chunks(chunk) {
                    w.track(c, t);
                }
                assert_eq!(w.frame, Frame::Idle, "len {len} chunk {chunk}");
                assert_eq!(w.started, None);
            }
        }
    }

    #[test]
    fn rfc6455_5_2_half_a_frame_is_pending_with_its_bytes_counted() {
        let t = Instant::now();
        let mut w = watch();
        let mut two = frame(10);
        two.extend(frame(300));
        // The first frame whole, the second cut in its payload.
        w.track(&two[..16 + 8 + 100], t);
        assert_eq!(w.started, Some((t, 8 + 100)));
        assert_eq!(w.frame, Frame::Payload(200));
        w.track(&two[16 + 8 + 100..], t);
        assert_eq!(w.started, None);
    }
}
