//! Raw-socket clients for the conformance tests (`tests/conformance_v311.rs`,
//! `tests/conformance_v5.rs`): packets are built and parsed with ponte-mqtt's own codecs, so
//! a test states exactly which bytes the server got and checks exactly which packet came
//! back (flags, packet identifiers, reason codes, properties). Every wait is bounded.
//!
//! The clause-by-clause map of what is tested where is `tests/conformance/README.md`.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ponte_mqtt::{
    decode, encode, Connect, LastWill, Packet, Packet as Packet5, Properties, ProtocolVersion,
    Publish, QoS, Subscribe, SubscriptionOptions, Unsubscribe,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The longest any single expected packet may take.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long to listen for something that must NOT arrive.
pub const QUIET: Duration = Duration::from_millis(300);

/// Await `fut` or panic after `d`, naming what was awaited.
pub async fn within<T>(d: Duration, what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(d, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {d:?} waiting for {what}"),
    }
}

/// A gateway on 127.0.0.1, every port 0, memory store.
pub async fn gateway() -> ponte::Gateway {
    gateway_with(|_| {}).await
}

/// A gateway like [`gateway`] but with a sled store in a fresh temporary directory (kept
/// alive by the returned guard), so retained writes take real group commits.
pub async fn sled_gateway() -> (ponte::Gateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("db");
    let gw = gateway_with(|c| {
        c.store.memory = false;
        c.store.db = db;
    })
    .await;
    (gw, dir)
}

/// Like [`gateway`], with the configuration adjusted by `f`.
pub async fn gateway_with(f: impl FnOnce(&mut ponte::config::Config)) -> ponte::Gateway {
    let mut config = ponte::config::Config::ephemeral();
    f(&mut config);
    within(WAIT, "gateway start", ponte::start(config))
        .await
        .expect("gateway starts")
}

/// Read from `s` into `buf` until `dec` yields a packet; `None` when the server closed.
/// Cancel-safe: bytes read stay in `buf`.
async fn read_packet<P>(
    s: &mut TcpStream,
    buf: &mut BytesMut,
    dec: fn(&mut BytesMut, usize) -> Result<Option<P>, ponte_mqtt::DecodeError>,
) -> Option<P> {
    loop {
        match dec(buf, 1 << 24) {
            Ok(Some(p)) => return Some(p),
            Ok(None) => {}
            Err(e) => panic!("the server sent a malformed packet ({e}): {buf:02x?}"),
        }
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Decodes the 3.1.1 wire form.
fn decode_v3(buf: &mut BytesMut, max: usize) -> Result<Option<Packet>, ponte_mqtt::DecodeError> {
    decode(buf, max, ProtocolVersion::V311)
}

/// Decodes the v5 wire form.
fn decode_v5(buf: &mut BytesMut, max: usize) -> Result<Option<Packet>, ponte_mqtt::DecodeError> {
    decode(buf, max, ProtocolVersion::V5)
}

/// Open a TCP connection to the broker.
async fn tcp(addr: SocketAddr) -> TcpStream {
    let s = within(WAIT, "TCP connect", TcpStream::connect(addr))
        .await
        .expect("TCP connect");
    s.set_nodelay(true).expect("nodelay");
    s
}

// ---------------------------------------------------------------------------------------
// MQTT 3.1.1

/// A 3.1.1 CONNECT.
pub fn connect3(id: &str, clean: bool, keep_alive: u16, will: Option<LastWill>) -> Packet {
    Packet::Connect(Box::new(Connect {
        protocol: ProtocolVersion::V311,
        client_id: id.into(),
        clean_session: clean,
        keep_alive,
        username: None,
        password: None,
        will,
        properties: Default::default(),
    }))
}

/// A will message for [`connect3`] / [`connect5`].
pub fn will(topic: &str, payload: &'static [u8], qos: QoS, retain: bool) -> LastWill {
    LastWill {
        topic: topic.into(),
        payload: Bytes::from_static(payload),
        qos,
        retain,
        properties: Default::default(),
    }
}

/// A PUBLISH (3.1.1 model; also the body of a v5 one).
pub fn publish(topic: &str, qos: QoS, pkid: u16, retain: bool, payload: &[u8]) -> Publish {
    Publish {
        dup: false,
        qos,
        retain,
        topic: topic.into(),
        pkid,
        payload: Bytes::copy_from_slice(payload),
        properties: Default::default(),
    }
}

/// A raw MQTT 3.1.1 client.
pub struct V3 {
    /// The socket.
    pub s: TcpStream,
    /// Received bytes not yet decoded.
    buf: BytesMut,
}

impl V3 {
    /// A TCP connection with nothing sent yet.
    pub async fn open(addr: SocketAddr) -> V3 {
        V3 {
            s: tcp(addr).await,
            buf: BytesMut::new(),
        }
    }

    /// Open and CONNECT; asserts the CONNACK accepted and returns Session Present.
    pub async fn connect(addr: SocketAddr, id: &str, clean: bool) -> (V3, bool) {
        Self::connect_with(addr, connect3(id, clean, 30, None)).await
    }

    /// Open and send `connect`; asserts the CONNACK accepted and returns Session Present.
    pub async fn connect_with(addr: SocketAddr, connect: Packet) -> (V3, bool) {
        let mut c = V3::open(addr).await;
        c.send(&connect).await;
        match c.recv().await {
            Some(Packet::ConnAck {
                session_present,
                reason_code: ponte_mqtt::reason::SUCCESS,
                ..
            }) => (c, session_present),
            other => panic!("expected CONNACK 0x00, got {other:?}"),
        }
    }

    /// Encode and write one packet.
    pub async fn send(&mut self, p: &Packet) {
        let mut out = BytesMut::new();
        encode(p, ProtocolVersion::V311, &mut out);
        self.send_raw(&out).await;
    }

    /// Write bytes as they are.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        within(WAIT, "a socket write", self.s.write_all(bytes))
            .await
            .expect("write");
    }

    /// The next packet, `None` when the server closed the connection.
    pub async fn recv(&mut self) -> Option<Packet> {
        within(
            WAIT,
            "an MQTT 3.1.1 packet",
            read_packet(&mut self.s, &mut self.buf, decode_v3),
        )
        .await
    }

    /// The next PUBLISH, skipping anything else.
    pub async fn publish_rx(&mut self) -> Publish {
        loop {
            match self.recv().await {
                Some(Packet::Publish(p)) => return p,
                Some(_) => {}
                None => panic!("connection closed while waiting for a PUBLISH"),
            }
        }
    }

    /// Subscribe with packet id 1 and return the SUBACK's codes (asserting its id): the
    /// granted QoS, or 0x80.
    pub async fn subscribe(&mut self, filters: &[(&str, QoS)]) -> Vec<u8> {
        self.send(&Packet::Subscribe(Subscribe {
            pkid: 1,
            filters: filters
                .iter()
                .map(|(f, q)| (f.to_string(), SubscriptionOptions::qos(*q)))
                .collect(),
            properties: Default::default(),
        }))
        .await;
        loop {
            match self.recv().await {
                Some(Packet::SubAck(a)) if a.pkid == 1 => return a.reason_codes,
                Some(Packet::SubAck(a)) => panic!("SUBACK for id {}, sent 1", a.pkid),
                Some(_) => {}
                None => panic!("closed before SUBACK"),
            }
        }
    }

    /// Publish at `qos` with id 1 and complete the exchange as publisher.
    pub async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: &[u8]) {
        self.send(&Packet::Publish(publish(topic, qos, 1, retain, payload)))
            .await;
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                self.expect(Packet::PubAck(ponte_mqtt::PubResponse::success(1)))
                    .await
            }
            QoS::ExactlyOnce => {
                self.expect(Packet::PubRec(ponte_mqtt::PubResponse::success(1)))
                    .await;
                self.send(&Packet::PubRel(ponte_mqtt::PubResponse::success(1)))
                    .await;
                self.expect(Packet::PubComp(ponte_mqtt::PubResponse::success(1)))
                    .await;
            }
        }
    }

    /// The next packet must be `want`.
    pub async fn expect(&mut self, want: Packet) {
        let got = self.recv().await;
        assert_eq!(got.as_ref(), Some(&want), "expected {}", want.name());
    }

    /// Read until the server closes the connection; returns what it still sent.
    pub async fn expect_closed(&mut self, what: &str) -> Vec<Packet> {
        within(WAIT, what, async {
            let mut seen = Vec::new();
            while let Some(p) = read_packet(&mut self.s, &mut self.buf, decode_v3).await {
                seen.push(p);
            }
            seen
        })
        .await
    }

    /// Assert nothing arrives (and the connection stays open) for `d`.
    pub async fn assert_quiet(&mut self, d: Duration, why: &str) {
        if let Ok(p) =
            tokio::time::timeout(d, read_packet(&mut self.s, &mut self.buf, decode_v3)).await
        {
            panic!("{why}: got {p:?}");
        }
    }

    /// PINGREQ → PINGRESP: proves the connection is open and served.
    pub async fn ping(&mut self) {
        self.send(&Packet::PingReq).await;
        self.expect(Packet::PingResp).await;
    }

    /// DISCONNECT, then wait for the server to close.
    pub async fn disconnect(mut self) {
        self.send(&Packet::disconnect()).await;
        self.expect_closed("the close after DISCONNECT").await;
    }
}

// ---------------------------------------------------------------------------------------
// MQTT 5.0

/// A v5 CONNECT (keep alive 30 s).
pub fn connect5(id: &str, clean_start: bool, props: Properties) -> Packet5 {
    Packet5::Connect(Box::new(Connect {
        protocol: ProtocolVersion::V5,
        client_id: id.into(),
        clean_session: clean_start,
        keep_alive: 30,
        username: None,
        password: None,
        will: None,
        properties: props.into(),
    }))
}

/// A v5 CONNECT with a will and its properties.
pub fn connect5_will(
    id: &str,
    props: Properties,
    will: LastWill,
    will_properties: Properties,
) -> Packet5 {
    let Packet5::Connect(mut c) = connect5(id, true, props) else {
        unreachable!()
    };
    c.will = Some(LastWill {
        properties: will_properties.into(),
        ..will
    });
    Packet5::Connect(c)
}

/// A v5 PUBLISH.
pub fn publish5(p: Publish, properties: Properties) -> Packet5 {
    Packet5::Publish(Publish {
        properties: properties.into(),
        ..p
    })
}

/// Session Expiry Interval as CONNECT properties.
pub fn expiry(secs: u32) -> Properties {
    Properties {
        session_expiry_interval: Some(secs),
        ..Properties::default()
    }
}

/// Plain subscription options at `qos`.
pub fn opts(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions::qos(qos)
}

/// What a v5 CONNECT got back.
#[derive(Debug)]
pub struct ConnAck5 {
    /// Session Present.
    pub session_present: bool,
    /// The CONNACK reason code.
    pub reason: u8,
    /// The CONNACK properties.
    pub properties: Properties,
}

/// A raw MQTT 5 client.
pub struct V5 {
    /// The socket.
    pub s: TcpStream,
    /// Received bytes not yet decoded.
    buf: BytesMut,
}

impl V5 {
    /// A TCP connection with nothing sent yet.
    pub async fn open(addr: SocketAddr) -> V5 {
        V5 {
            s: tcp(addr).await,
            buf: BytesMut::new(),
        }
    }

    /// Open and send `connect`; returns the CONNACK (whatever its reason code).
    pub async fn connect_with(addr: SocketAddr, connect: Packet5) -> (V5, ConnAck5) {
        let mut c = V5::open(addr).await;
        c.send(&connect).await;
        match c.recv().await {
            Some(Packet5::ConnAck {
                session_present,
                reason_code,
                properties,
            }) => (
                c,
                ConnAck5 {
                    session_present,
                    reason: reason_code,
                    properties: properties.into_inner(),
                },
            ),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Connect (Clean Start 1 unless `props` say otherwise) and assert success.
    pub async fn connect(addr: SocketAddr, id: &str, props: Properties) -> V5 {
        Self::connect_session(addr, id, true, props).await.0
    }

    /// Connect with `clean_start` and assert success; returns Session Present.
    pub async fn connect_session(
        addr: SocketAddr,
        id: &str,
        clean_start: bool,
        props: Properties,
    ) -> (V5, bool) {
        let (c, ack) = Self::connect_with(addr, connect5(id, clean_start, props)).await;
        assert_eq!(ack.reason, 0, "CONNACK accepted: {ack:?}");
        (c, ack.session_present)
    }

    /// Encode and write one packet.
    pub async fn send(&mut self, p: &Packet5) {
        let mut out = BytesMut::new();
        encode(p, ponte_mqtt::ProtocolVersion::V5, &mut out);
        self.send_raw(&out).await;
    }

    /// Write bytes as they are.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        within(WAIT, "a socket write", self.s.write_all(bytes))
            .await
            .expect("write");
    }

    /// The next packet, `None` when the server closed the connection.
    pub async fn recv(&mut self) -> Option<Packet5> {
        within(
            WAIT,
            "an MQTT 5 packet",
            read_packet(&mut self.s, &mut self.buf, decode_v5),
        )
        .await
    }

    /// The next PUBLISH, skipping anything else.
    pub async fn publish_rx(&mut self) -> Publish {
        loop {
            match self.recv().await {
                Some(Packet5::Publish(p)) => return p,
                Some(_) => {}
                None => panic!("connection closed while waiting for a PUBLISH"),
            }
        }
    }

    /// Subscribe with packet id 1 and return the SUBACK's reason codes.
    pub async fn subscribe(&mut self, filters: &[(&str, SubscriptionOptions)]) -> Vec<u8> {
        self.send(&Packet5::Subscribe(Subscribe {
            pkid: 1,
            filters: filters.iter().map(|(f, o)| (f.to_string(), *o)).collect(),
            properties: Default::default(),
        }))
        .await;
        loop {
            match self.recv().await {
                Some(Packet5::SubAck(a)) => {
                    assert_eq!(a.pkid, 1, "SUBACK packet identifier");
                    return a.reason_codes;
                }
                Some(_) => {}
                None => panic!("closed before SUBACK"),
            }
        }
    }

    /// Unsubscribe with packet id 2 and return the UNSUBACK's reason codes.
    pub async fn unsubscribe(&mut self, filters: &[&str]) -> Vec<u8> {
        self.send(&Packet5::Unsubscribe(Unsubscribe {
            pkid: 2,
            filters: filters.iter().map(|f| f.to_string()).collect(),
            properties: Default::default(),
        }))
        .await;
        loop {
            match self.recv().await {
                Some(Packet5::UnsubAck(a)) => {
                    assert_eq!(a.pkid, 2, "UNSUBACK packet identifier");
                    return a.reason_codes;
                }
                Some(_) => {}
                None => panic!("closed before UNSUBACK"),
            }
        }
    }

    /// Publish at `qos` (id 1, no properties) and wait for PUBACK / PUBCOMP.
    pub async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: &[u8]) {
        self.send(&publish5(
            publish(topic, qos, 1, retain, payload),
            Properties::default(),
        ))
        .await;
        let ack = |p: &Option<Packet5>| match p {
            Some(Packet5::PubAck(r) | Packet5::PubRec(r) | Packet5::PubComp(r)) => {
                Some((r.pkid, r.reason_code))
            }
            _ => None,
        };
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                let p = self.recv().await;
                // 0x00 Success, or 0x10 No matching subscribers (also a success, 3.4.2.1).
                assert!(
                    matches!(ack(&p), Some((1, 0x00 | 0x10))),
                    "PUBACK success: {p:?}"
                );
            }
            QoS::ExactlyOnce => {
                let p = self.recv().await;
                assert!(matches!(p, Some(Packet5::PubRec(_))), "PUBREC: {p:?}");
                self.send(&Packet5::PubRel(ponte_mqtt::PubResponse {
                    pkid: 1,
                    reason_code: 0,
                    properties: Default::default(),
                }))
                .await;
                let p = self.recv().await;
                assert!(matches!(p, Some(Packet5::PubComp(_))), "PUBCOMP: {p:?}");
            }
        }
    }

    /// Wait for the server's DISCONNECT (skipping other packets); its reason and properties.
    pub async fn disconnect_rx(&mut self) -> (u8, Properties) {
        loop {
            match self.recv().await {
                Some(Packet5::Disconnect(d)) => return (d.reason_code, d.properties.into_inner()),
                Some(_) => {}
                None => panic!("closed without DISCONNECT"),
            }
        }
    }

    /// Read until the server closes the connection; returns what it still sent.
    pub async fn expect_closed(&mut self, what: &str) -> Vec<Packet5> {
        within(WAIT, what, async {
            let mut seen = Vec::new();
            while let Some(p) = read_packet(&mut self.s, &mut self.buf, decode_v5).await {
                seen.push(p);
            }
            seen
        })
        .await
    }

    /// Assert nothing arrives (and the connection stays open) for `d`.
    pub async fn assert_quiet(&mut self, d: Duration, why: &str) {
        if let Ok(p) =
            tokio::time::timeout(d, read_packet(&mut self.s, &mut self.buf, decode_v5)).await
        {
            panic!("{why}: got {p:?}");
        }
    }

    /// PINGREQ → PINGRESP.
    pub async fn ping(&mut self) {
        self.send(&Packet5::PingReq).await;
        let p = self.recv().await;
        assert_eq!(p, Some(Packet5::PingResp), "PINGRESP");
    }

    /// DISCONNECT with `reason`, then wait for the server to close.
    pub async fn disconnect(mut self, reason: u8) {
        self.send(&Packet5::Disconnect(ponte_mqtt::ReasonPacket {
            reason_code: reason,
            properties: Default::default(),
        }))
        .await;
        self.expect_closed("the close after DISCONNECT").await;
    }
}
