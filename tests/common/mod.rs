//! Shared helpers for the black-box tests: start a gateway, drive rumqttc clients, speak raw
//! MQTT bytes over a TcpStream. Every wait is bounded.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnAck, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions,
    Packet, Publish, QoS, SubscribeReasonCode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use ponte::config::Config;
use ponte::Gateway;

/// The longest any single expected event may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(5);

/// Await `fut` or panic after `d`, naming what was awaited.
pub async fn within<T>(d: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(d, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {d:?} waiting for {what}"),
    }
}

/// A gateway on 127.0.0.1 with every port 0 and a memory store.
pub async fn gateway() -> Gateway {
    gateway_with(|_| {}).await
}

/// Like [`gateway`], with the configuration adjusted by `f`.
pub async fn gateway_with(f: impl FnOnce(&mut Config)) -> Gateway {
    let mut config = Config::ephemeral();
    f(&mut config);
    within(WAIT, "gateway start", ponte::start(config))
        .await
        .expect("gateway starts")
}

/// Options for a client of `addr` with a short keepalive and room for large packets.
pub fn options(addr: SocketAddr, id: &str) -> MqttOptions {
    let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(5));
    o.set_max_packet_size(1024 * 1024, 1024 * 1024);
    o
}

/// A rumqttc client whose event loop runs in a task, its events forwarded to a channel.
/// The loop stops at the first error (no automatic reconnection), so "the server closed
/// the connection" is observable as an `Err` event.
pub struct Client {
    pub client: AsyncClient,
    events: mpsc::UnboundedReceiver<Result<Event, ConnectionError>>,
    task: JoinHandle<()>,
    /// PUBLISHes that arrived while waiting for something else (a PUBACK, a SUBACK): kept,
    /// in order, for [`Client::publish_rx`], so no delivery is silently skipped.
    pending: VecDeque<Publish>,
}

impl Client {
    /// Connect with default options (clean session, keepalive 5 s).
    pub async fn connect(addr: SocketAddr, id: &str) -> (Client, ConnAck) {
        Self::connect_with(options(addr, id)).await
    }

    /// Connect with `opts`; returns once CONNACK arrived (and asserts it accepted).
    pub async fn connect_with(opts: MqttOptions) -> (Client, ConnAck) {
        let (client, eventloop) = AsyncClient::new(opts, 64);
        let mut c = Client::spawn(client, eventloop);
        let ack = within(WAIT, "CONNACK", async {
            loop {
                match c.events.recv().await {
                    Some(Ok(Event::Incoming(Packet::ConnAck(a)))) => break a,
                    Some(Ok(_)) => {}
                    Some(Err(e)) => panic!("connection failed before CONNACK: {e:?}"),
                    None => panic!("event loop ended before CONNACK"),
                }
            }
        })
        .await;
        assert_eq!(ack.code, ConnectReturnCode::Success, "CONNACK refused");
        (c, ack)
    }

    fn spawn(client: AsyncClient, mut eventloop: EventLoop) -> Client {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let ev = eventloop.poll().await;
                let stop = ev.is_err();
                if tx.send(ev).is_err() || stop {
                    break;
                }
            }
        });
        Client {
            client,
            events: rx,
            task,
            pending: VecDeque::new(),
        }
    }

    /// The next event (or error), bounded by [`WAIT`].
    pub async fn next(&mut self) -> Result<Event, ConnectionError> {
        within(WAIT, "an MQTT event", self.events.recv())
            .await
            .expect("event loop task ended")
    }

    /// Wait for the first incoming packet for which `f` returns `Some`, skipping the rest
    /// (skipped PUBLISHes are kept for [`Client::publish_rx`]). Panics on connection error
    /// or timeout.
    pub async fn expect<T>(&mut self, what: &str, mut f: impl FnMut(&Packet) -> Option<T>) -> T {
        let pending = &mut self.pending;
        let events = &mut self.events;
        within(WAIT, what, async {
            loop {
                match events.recv().await {
                    Some(Ok(Event::Incoming(p))) => {
                        if let Some(v) = f(&p) {
                            return v;
                        }
                        if let Packet::Publish(p) = p {
                            pending.push_back(p);
                        }
                    }
                    Some(Ok(Event::Outgoing(_))) => {}
                    Some(Err(e)) => panic!("connection error while waiting for {what}: {e:?}"),
                    None => panic!("event loop ended while waiting for {what}"),
                }
            }
        })
        .await
    }

    /// The next incoming PUBLISH.
    pub async fn publish_rx(&mut self) -> Publish {
        if let Some(p) = self.pending.pop_front() {
            return p;
        }
        self.expect("an incoming PUBLISH", |p| match p {
            Packet::Publish(p) => Some(p.clone()),
            _ => None,
        })
        .await
    }

    /// Incoming PUBLISHes up to and including the first one whose payload is `sentinel`.
    pub async fn publishes_until(&mut self, sentinel: &[u8]) -> Vec<Publish> {
        let mut out = Vec::new();
        loop {
            let p = self.publish_rx().await;
            let done = p.payload.as_ref() == sentinel;
            out.push(p);
            if done {
                return out;
            }
        }
    }

    /// Subscribe to one filter and wait for its SUBACK; returns the granted code.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> SubscribeReasonCode {
        self.client.subscribe(filter, qos).await.unwrap();
        let codes = self.suback().await;
        assert_eq!(codes.len(), 1);
        codes[0]
    }

    /// Wait for the next SUBACK; its return codes.
    pub async fn suback(&mut self) -> Vec<SubscribeReasonCode> {
        self.expect("SUBACK", |p| match p {
            Packet::SubAck(s) => Some(s.return_codes.clone()),
            _ => None,
        })
        .await
    }

    /// Publish and, for QoS 1/2, wait for the exchange to complete (PUBACK / PUBCOMP).
    pub async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: &[u8]) {
        self.client
            .publish(topic, qos, retain, payload.to_vec())
            .await
            .unwrap();
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                self.expect("PUBACK", |p| matches!(p, Packet::PubAck(_)).then_some(()))
                    .await
            }
            QoS::ExactlyOnce => {
                self.expect("PUBCOMP", |p| matches!(p, Packet::PubComp(_)).then_some(()))
                    .await
            }
        }
    }

    /// Wait until the server closes the connection (the event loop reports an error).
    pub async fn closed_by_server(&mut self, what: &str) -> ConnectionError {
        within(WAIT, what, async {
            loop {
                match self.events.recv().await {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return e,
                    None => panic!("event loop ended without an error while waiting for {what}"),
                }
            }
        })
        .await
    }

    /// Send DISCONNECT and wait until the server has processed it and closed the socket.
    pub async fn disconnect(mut self) {
        self.client.disconnect().await.unwrap();
        let _ = self
            .closed_by_server("the server to close after DISCONNECT")
            .await;
    }

    /// Drop the TCP connection without DISCONNECT (an abnormal close for the server).
    pub async fn drop_socket(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------
// Raw MQTT bytes.

/// Append an MQTT Remaining Length.
pub fn put_len(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

/// Append a length-prefixed UTF-8 string / binary.
pub fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// A packet from a fixed-header first byte and a body.
pub fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    put_len(&mut out, body.len());
    out.extend_from_slice(body);
    out
}

/// A will for [`connect_packet`]: topic, payload, QoS, retain.
pub type RawWill<'a> = (&'a str, &'a [u8], u8, bool);

/// A CONNECT with protocol `name`/`level`.
pub fn connect_packet(
    name: &str,
    level: u8,
    clean: bool,
    keep_alive: u16,
    client_id: &str,
    will: Option<RawWill<'_>>,
) -> Vec<u8> {
    let mut body = Vec::new();
    put_str(&mut body, name.as_bytes());
    body.push(level);
    let mut flags = 0u8;
    if clean {
        flags |= 0x02;
    }
    if let Some((_, _, qos, retain)) = will {
        flags |= 0x04 | (qos << 3);
        if retain {
            flags |= 0x20;
        }
    }
    body.push(flags);
    body.extend_from_slice(&keep_alive.to_be_bytes());
    put_str(&mut body, client_id.as_bytes());
    if let Some((topic, payload, _, _)) = will {
        put_str(&mut body, topic.as_bytes());
        put_str(&mut body, payload);
    }
    packet(0x10, &body)
}

/// An MQTT 3.1.1 CONNECT.
pub fn connect_v311(clean: bool, keep_alive: u16, client_id: &str) -> Vec<u8> {
    connect_packet("MQTT", 4, clean, keep_alive, client_id, None)
}

/// A PUBLISH.
pub fn publish_packet(
    topic: &str,
    payload: &[u8],
    qos: u8,
    pkid: u16,
    retain: bool,
    dup: bool,
) -> Vec<u8> {
    let mut body = Vec::new();
    put_str(&mut body, topic.as_bytes());
    if qos > 0 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    body.extend_from_slice(payload);
    let first = 0x30 | (u8::from(dup) << 3) | (qos << 1) | u8::from(retain);
    packet(first, &body)
}

/// A SUBSCRIBE of `filters` (filter, requested QoS).
pub fn subscribe_packet(pkid: u16, filters: &[(&str, u8)]) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    for (f, q) in filters {
        put_str(&mut body, f.as_bytes());
        body.push(*q);
    }
    packet(0x82, &body)
}

/// One decoded packet: the first byte of the fixed header and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawPacket {
    pub first: u8,
    pub body: Vec<u8>,
}

impl RawPacket {
    /// The packet type (upper nibble).
    pub fn kind(&self) -> u8 {
        self.first >> 4
    }
}

/// A raw MQTT connection.
pub struct Raw {
    pub stream: TcpStream,
}

impl Raw {
    /// Open a TCP connection to `addr`.
    pub async fn open(addr: SocketAddr) -> Raw {
        let stream = within(WAIT, "TCP connect", TcpStream::connect(addr))
            .await
            .expect("TCP connect");
        stream.set_nodelay(true).unwrap();
        Raw { stream }
    }

    /// Open, send a 3.1.1 clean-session CONNECT and check CONNACK 0.
    pub async fn connect(addr: SocketAddr, client_id: &str, keep_alive: u16) -> Raw {
        let mut r = Raw::open(addr).await;
        r.send(&connect_v311(true, keep_alive, client_id)).await;
        let ack = r.read().await.expect("CONNACK, not a close");
        assert_eq!(
            ack,
            RawPacket {
                first: 0x20,
                body: vec![0, 0]
            },
            "CONNACK accepted"
        );
        r
    }

    /// Write bytes.
    pub async fn send(&mut self, bytes: &[u8]) {
        within(WAIT, "a socket write", self.stream.write_all(bytes))
            .await
            .expect("write");
    }

    /// Read one packet within [`WAIT`]; `None` when the server closed the connection
    /// (EOF or reset).
    pub async fn read(&mut self) -> Option<RawPacket> {
        within(WAIT, "a packet from the server", self.read_unbounded()).await
    }

    async fn read_unbounded(&mut self) -> Option<RawPacket> {
        let mut first = [0u8; 1];
        match self.stream.read_exact(&mut first).await {
            Ok(_) => {}
            Err(_) => return None,
        }
        let mut len = 0usize;
        let mut shift = 0;
        loop {
            let mut b = [0u8; 1];
            self.stream.read_exact(&mut b).await.ok()?;
            len |= usize::from(b[0] & 0x7f) << shift;
            shift += 7;
            if b[0] & 0x80 == 0 {
                break;
            }
        }
        let mut body = vec![0u8; len];
        self.stream.read_exact(&mut body).await.ok()?;
        Some(RawPacket {
            first: first[0],
            body,
        })
    }

    /// Assert the server closes the connection within `d`, skipping any packets it still
    /// sends first; returns those packets.
    pub async fn expect_closed_within(&mut self, d: Duration, what: &str) -> Vec<RawPacket> {
        within(d, what, async {
            let mut seen = Vec::new();
            while let Some(p) = self.read_unbounded().await {
                seen.push(p);
            }
            seen
        })
        .await
    }

    /// Assert the server closes the connection within [`WAIT`].
    pub async fn expect_closed(&mut self, what: &str) -> Vec<RawPacket> {
        self.expect_closed_within(WAIT, what).await
    }

    /// PINGREQ → PINGRESP: proves the connection is open and served.
    pub async fn ping(&mut self) {
        self.send(&[0xC0, 0]).await;
        let p = self.read().await.expect("PINGRESP, not a close");
        assert_eq!(
            p,
            RawPacket {
                first: 0xD0,
                body: vec![]
            }
        );
    }
}

/// The next MQTT 5 packet from a raw connection: read from `s` into `buf` until `buf` holds
/// a whole packet; `None` once the server closed the connection. Bounded by [`WAIT`]; bytes
/// already read stay in `buf` for the next call. A malformed packet fails the test.
pub async fn read_v5(s: &mut TcpStream, buf: &mut bytes::BytesMut) -> Option<ponte_mqtt::Packet> {
    within(WAIT, "an MQTT 5 packet", async {
        loop {
            match ponte_mqtt::decode(buf, 1 << 24, ponte_mqtt::ProtocolVersion::V5) {
                Ok(Some(p)) => return Some(p),
                Ok(None) => {}
                Err(e) => panic!("server sent a malformed packet: {e}"),
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
}
