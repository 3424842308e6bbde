//! Raw MQTT over a TcpStream, for what a well-behaved client cannot express (violations,
//! exact flags and reason codes, properties as they are on the wire). One client, [`Raw`],
//! speaks either version: [`V3`] (MQTT 3.1/3.1.1) and [`V5`] (MQTT 5.0) build and parse
//! packets with ponte-mqtt's own codecs; both also write bytes as they are
//! ([`Raw::send_raw`]) and read whole packets as bytes ([`Raw::read`]), so a test can state
//! exactly which bytes the server got and check exactly which bytes came back.

use std::fmt::Debug;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ponte_mqtt::{
    Connect, LastWill, Packet, Properties, ProtocolVersion, PubResponse, Publish, QoS,
    ReasonPacket, SubResponse, Subscribe, SubscriptionOptions, Unsubscribe,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::wait::{within, QUIET, WAIT};

// ---------------------------------------------------------------------------------------
// Packets as bytes

/// Append an MQTT Remaining Length (7 bits a byte, low bits first, 0x80 = more follow).
pub fn put_len(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push(0x80 | (n & 0x7f) as u8);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Append a length-prefixed UTF-8 string / binary.
pub fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// A length-prefixed string on its own.
pub fn lp(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    put_str(&mut out, s);
    out
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

/// A CONNECT with protocol `name`/`level`, built byte by byte (for versions and flags the
/// codec refuses to build).
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

/// An acknowledgement (PUBACK 0x40, PUBREC 0x50, PUBREL 0x62, PUBCOMP 0x70) of `pkid`.
pub fn ack_packet(first: u8, pkid: u16) -> Vec<u8> {
    packet(first, &pkid.to_be_bytes())
}

/// One packet as bytes: the first byte of the fixed header and the body.
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

    /// The packet id of a 3.1.1 QoS 1/2 PUBLISH (after the topic).
    pub fn publish_pkid(&self) -> u16 {
        let n = usize::from(u16::from_be_bytes([self.body[0], self.body[1]]));
        u16::from_be_bytes([self.body[2 + n], self.body[3 + n]])
    }

    /// The payload of a 3.1.1 QoS 1/2 PUBLISH.
    pub fn publish_payload(&self) -> &[u8] {
        let n = usize::from(u16::from_be_bytes([self.body[0], self.body[1]]));
        &self.body[4 + n..]
    }
}

/// Split one whole packet off the front of `buf`, if it holds one.
fn split_frame(buf: &mut BytesMut) -> Option<RawPacket> {
    let mut len = 0usize;
    for i in 1..buf.len().min(5) {
        len |= usize::from(buf[i] & 0x7f) << (7 * (i - 1));
        if buf[i] & 0x80 == 0 {
            if buf.len() < 1 + i + len {
                return None;
            }
            let frame = buf.split_to(1 + i + len);
            return Some(RawPacket {
                first: frame[0],
                body: frame[1 + i..].to_vec(),
            });
        }
    }
    None
}

/// Everything `s` receives until the peer closes it (EOF or reset), however long it takes.
async fn drain_to_close<S: AsyncRead + Unpin>(s: &mut S) -> Vec<u8> {
    let mut all = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(n @ 1..) = s.read(&mut chunk).await {
        all.extend_from_slice(&chunk[..n]);
    }
    all
}

/// Everything `s` receives until the peer closes it (EOF or reset); fails after `d`.
pub async fn read_to_close<S: AsyncRead + Unpin>(s: &mut S, d: Duration, what: &str) -> Vec<u8> {
    within(d, what, drain_to_close(s)).await
}

/// Whether the peer closes `s` (EOF or reset) within `d`; what it sent before is skipped.
pub async fn closed_within<S: AsyncRead + Unpin>(s: &mut S, d: Duration) -> bool {
    tokio::time::timeout(d, drain_to_close(s)).await.is_ok()
}

// ---------------------------------------------------------------------------------------
// The client

/// What distinguishes the two versions for [`Raw`]: the wire form their packets are
/// encoded in and decoded from (the packet model is the same, MQTT 5's).
pub trait Version {
    /// For messages: "MQTT 3.1.1" or "MQTT 5".
    const NAME: &'static str;
    /// The wire form of every packet after CONNECT.
    const PROTOCOL: ProtocolVersion;
}

/// MQTT 3.1 / 3.1.1: packets in the 3.1.1 wire form.
pub struct Mqtt3;
/// MQTT 5.0: packets in the v5 wire form.
pub struct Mqtt5;

impl Version for Mqtt3 {
    const NAME: &'static str = "MQTT 3.1.1";
    const PROTOCOL: ProtocolVersion = ProtocolVersion::V311;
}

impl Version for Mqtt5 {
    const NAME: &'static str = "MQTT 5";
    const PROTOCOL: ProtocolVersion = ProtocolVersion::V5;
}

/// A raw MQTT 3.1/3.1.1 client.
pub type V3 = Raw<Mqtt3>;
/// A raw MQTT 5.0 client.
pub type V5 = Raw<Mqtt5>;

/// A raw MQTT connection speaking version `V`. Every read is bounded by [`WAIT`] and
/// cancel-safe: bytes read stay buffered for the next call.
pub struct Raw<V: Version> {
    /// The socket.
    pub s: TcpStream,
    /// Received bytes not yet returned.
    buf: BytesMut,
    version: PhantomData<V>,
}

impl<V: Version> Raw<V> {
    /// A TCP connection to `addr` with nothing sent yet.
    pub async fn open(addr: SocketAddr) -> Self {
        let s = within(WAIT, "TCP connect", TcpStream::connect(addr))
            .await
            .expect("TCP connect");
        s.set_nodelay(true).expect("nodelay");
        Raw {
            s,
            buf: BytesMut::new(),
            version: PhantomData,
        }
    }

    /// Encode and write one packet.
    pub async fn send(&mut self, p: &Packet) {
        let mut out = BytesMut::new();
        ponte_mqtt::encode(p, V::PROTOCOL, &mut out);
        self.send_raw(&out).await;
    }

    /// Encode and write `p`; false when the server already closed the connection (or its
    /// node died).
    pub async fn try_send(&mut self, p: &Packet) -> bool {
        let mut out = BytesMut::new();
        ponte_mqtt::encode(p, V::PROTOCOL, &mut out);
        self.try_send_raw(&out).await
    }

    /// Write bytes as they are.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        within(WAIT, "a socket write", self.s.write_all(bytes))
            .await
            .expect("write");
    }

    /// Write bytes as they are; false when the server already closed the connection.
    pub async fn try_send_raw(&mut self, bytes: &[u8]) -> bool {
        within(WAIT, "a socket write", self.s.write_all(bytes))
            .await
            .is_ok()
    }

    /// Read more bytes into the buffer; false once the server closed (EOF or reset).
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        match self.s.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// The next packet, without a deadline; `None` once the server closed.
    async fn next_packet(&mut self) -> Option<Packet> {
        loop {
            match ponte_mqtt::decode(&mut self.buf, 1 << 24, V::PROTOCOL) {
                Ok(Some(p)) => return Some(p),
                Ok(None) => {}
                Err(e) => panic!(
                    "the server sent a malformed packet ({e}): {:02x?}",
                    self.buf
                ),
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// The next packet within `d`: `None` when `d` passed, `Some(None)` once the server
    /// closed the connection (for waits longer than [`WAIT`]).
    pub async fn recv_for(&mut self, d: Duration) -> Option<Option<Packet>> {
        tokio::time::timeout(d, self.next_packet()).await.ok()
    }

    /// The next packet, `None` when the server closed the connection.
    pub async fn recv(&mut self) -> Option<Packet> {
        within(WAIT, &format!("an {} packet", V::NAME), self.next_packet()).await
    }

    /// The next packet as bytes, `None` when the server closed the connection.
    pub async fn read(&mut self) -> Option<RawPacket> {
        within(WAIT, "a packet from the server", async {
            loop {
                if let Some(p) = split_frame(&mut self.buf) {
                    return Some(p);
                }
                if !self.fill().await {
                    return None;
                }
            }
        })
        .await
    }

    /// The next packet must be `want`.
    pub async fn expect(&mut self, want: Packet) {
        let got = self.recv().await;
        assert_eq!(got.as_ref(), Some(&want), "expected {want:?}");
    }

    /// The next packet's bytes must be `first` and `body`.
    pub async fn expect_bytes(&mut self, first: u8, body: &[u8], what: &str) {
        let want = RawPacket {
            first,
            body: body.to_vec(),
        };
        assert_eq!(self.read().await, Some(want), "{what}");
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

    /// Read until the server closes the connection within `d`; returns what it still sent.
    pub async fn expect_closed_within(&mut self, d: Duration, what: &str) -> Vec<Packet> {
        within(d, what, async {
            let mut seen = Vec::new();
            while let Some(p) = self.next_packet().await {
                seen.push(p);
            }
            seen
        })
        .await
    }

    /// Read until the server closes the connection; returns what it still sent.
    pub async fn expect_closed(&mut self, what: &str) -> Vec<Packet> {
        self.expect_closed_within(WAIT, what).await
    }

    /// Everything the server sends until it closes, as bytes (for answers the decoder may
    /// not parse, such as a 3.1.1-format CONNACK to an MQTT 5 client).
    pub async fn bytes_until_close(&mut self, what: &str) -> Vec<u8> {
        within(WAIT, what, async { while self.fill().await {} }).await;
        self.buf.split().to_vec()
    }

    /// Assert nothing arrives (and the connection stays open) for `d`.
    pub async fn assert_quiet(&mut self, d: Duration, why: &str) {
        if let Ok(p) = tokio::time::timeout(d, self.next_packet()).await {
            panic!("{why}: got {p:?}");
        }
    }

    /// Assert nothing arrives (and the connection stays open) for [`QUIET`].
    pub async fn quiet(&mut self, why: &str) {
        self.assert_quiet(QUIET, why).await
    }

    /// PINGREQ → PINGRESP: proves the connection is open and served.
    pub async fn ping(&mut self) {
        self.send(&Packet::PingReq).await;
        self.expect(Packet::PingResp).await;
    }
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

/// A will message for [`connect3`] / [`connect5_will`].
pub fn will(topic: &str, payload: &'static [u8], qos: QoS, retain: bool) -> LastWill {
    LastWill {
        topic: topic.into(),
        payload: Bytes::from_static(payload),
        qos,
        retain,
        properties: Default::default(),
    }
}

/// A PUBLISH without properties (a 3.1.1 one, or a v5 one before [`publish5`] adds them).
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

/// A 3.1.1 PUBLISH packet (see [`publish`]).
pub fn publish3(topic: &str, qos: QoS, pkid: u16, retain: bool, payload: &[u8]) -> Packet {
    Packet::Publish(publish(topic, qos, pkid, retain, payload))
}

impl Raw<Mqtt3> {
    /// Open and CONNECT with a clean session (keep alive 30 s); asserts the CONNACK accepted.
    pub async fn connect(addr: SocketAddr, id: &str) -> V3 {
        Self::session(addr, id, true).await.0
    }

    /// [`Raw::connect`] with Keep Alive `keep_alive` seconds.
    pub async fn connect_ka(addr: SocketAddr, id: &str, keep_alive: u16) -> V3 {
        Self::connect_with(addr, connect3(id, true, keep_alive, None))
            .await
            .0
    }

    /// Open and CONNECT as bytes with Clean Session 0 and Keep Alive 0 (a persistent
    /// session that never times out); the CONNACK's body bytes.
    pub async fn persistent(addr: SocketAddr, id: &str) -> (V3, Vec<u8>) {
        let mut c = V3::open(addr).await;
        c.send_raw(&connect_v311(false, 0, id)).await;
        let ack = c.read().await.expect("CONNACK");
        assert_eq!(ack.first, 0x20, "CONNACK");
        (c, ack.body)
    }

    /// Open and CONNECT; asserts the CONNACK accepted and returns Session Present.
    pub async fn session(addr: SocketAddr, id: &str, clean: bool) -> (V3, bool) {
        Self::connect_with(addr, connect3(id, clean, 30, None)).await
    }

    /// Open and send `connect`; asserts the CONNACK accepted and returns Session Present.
    pub async fn connect_with(addr: SocketAddr, connect: Packet) -> (V3, bool) {
        let (c, ack) = Self::connack(addr, connect).await;
        match ack {
            Packet::ConnAck {
                session_present,
                reason_code: ponte_mqtt::reason::SUCCESS,
                ..
            } => (c, session_present),
            other => panic!("expected CONNACK 0x00, got {other:?}"),
        }
    }

    /// Open and send `connect`; the first packet back, whatever it is.
    pub async fn connack(addr: SocketAddr, connect: Packet) -> (V3, Packet) {
        let mut c = V3::open(addr).await;
        c.send(&connect).await;
        let ack = c.recv().await.expect("a CONNACK, not a close");
        (c, ack)
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
            QoS::AtLeastOnce => self.expect(Packet::PubAck(PubResponse::success(1))).await,
            QoS::ExactlyOnce => {
                self.expect(Packet::PubRec(PubResponse::success(1))).await;
                self.send(&Packet::PubRel(PubResponse::success(1))).await;
                self.expect(Packet::PubComp(PubResponse::success(1))).await;
            }
        }
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
pub fn connect5(id: &str, clean_start: bool, props: Properties) -> Packet {
    Packet::Connect(Box::new(Connect {
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
) -> Packet {
    let Packet::Connect(mut c) = connect5(id, true, props) else {
        unreachable!()
    };
    c.will = Some(LastWill {
        properties: will_properties.into(),
        ..will
    });
    Packet::Connect(c)
}

/// A v5 PUBLISH.
pub fn publish5(p: Publish, properties: Properties) -> Packet {
    Packet::Publish(Publish {
        properties: properties.into(),
        ..p
    })
}

/// A v5 PUBLISH of `payload` to `topic` at `qos` with id `pkid`, not retained.
pub fn pub5(topic: &str, qos: QoS, pkid: u16, payload: &[u8], props: Properties) -> Packet {
    publish5(publish(topic, qos, pkid, false, payload), props)
}

/// A v5 PUBLISH of `payload` to `topic` at `qos` with id `pkid`: no properties, not retained.
pub fn msg5(topic: &str, qos: QoS, pkid: u16, payload: &[u8]) -> Packet {
    pub5(topic, qos, pkid, payload, Properties::default())
}

/// A retained v5 PUBLISH.
pub fn retained5(topic: &str, qos: QoS, pkid: u16, payload: &[u8], props: Properties) -> Packet {
    publish5(publish(topic, qos, pkid, true, payload), props)
}

/// A PUBACK, PUBREC, PUBREL or PUBCOMP body for `pkid` with `code`.
pub fn response(pkid: u16, code: u8) -> PubResponse {
    PubResponse {
        pkid,
        reason_code: code,
        properties: Default::default(),
    }
}

/// Properties: the defaults with `f` applied.
pub fn props(f: impl FnOnce(&mut Properties)) -> Properties {
    let mut p = Properties::default();
    f(&mut p);
    p
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

/// Subscription options at `qos` with No Local.
pub fn no_local(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions {
        no_local: true,
        ..opts(qos)
    }
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

impl Raw<Mqtt5> {
    /// Open and send `connect`; returns the CONNACK (whatever its reason code).
    pub async fn connack(addr: SocketAddr, connect: Packet) -> (V5, ConnAck5) {
        let mut c = V5::open(addr).await;
        c.send(&connect).await;
        match c.recv().await {
            Some(Packet::ConnAck {
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

    /// Connect with Clean Start 1 and no properties; asserts success.
    pub async fn connect(addr: SocketAddr, id: &str) -> V5 {
        Self::session(addr, id, true, Properties::default()).await.0
    }

    /// Connect with Clean Start 1 and `props`; asserts success.
    pub async fn connect_props(addr: SocketAddr, id: &str, props: Properties) -> V5 {
        Self::session(addr, id, true, props).await.0
    }

    /// Connect with `clean_start` and `props` and assert success; returns Session Present.
    pub async fn session(
        addr: SocketAddr,
        id: &str,
        clean_start: bool,
        props: Properties,
    ) -> (V5, bool) {
        let (c, ack) = Self::connack(addr, connect5(id, clean_start, props)).await;
        assert_eq!(ack.reason, 0, "CONNACK accepted: {ack:?}");
        (c, ack.session_present)
    }

    /// The first packet for which `f` returns `Some`, skipping the rest; panics if the
    /// server closes first.
    pub async fn wait_for<T>(&mut self, what: &str, mut f: impl FnMut(Packet) -> Option<T>) -> T {
        while let Some(p) = self.recv().await {
            if let Some(v) = f(p) {
                return v;
            }
        }
        panic!("closed while waiting for {what}")
    }

    /// Subscribe with packet id 1; the whole SUBACK (asserting its id).
    pub async fn suback(
        &mut self,
        filters: &[(&str, SubscriptionOptions)],
        id: Option<u32>,
    ) -> SubResponse {
        self.send(&Packet::Subscribe(Subscribe {
            pkid: 1,
            filters: filters.iter().map(|(f, o)| (f.to_string(), *o)).collect(),
            properties: Properties {
                subscription_identifiers: id.into_iter().collect(),
                ..Properties::default()
            }
            .into(),
        }))
        .await;
        let a = self
            .wait_for("SUBACK", |p| match p {
                Packet::SubAck(a) => Some(a),
                _ => None,
            })
            .await;
        assert_eq!(a.pkid, 1, "SUBACK packet identifier");
        a
    }

    /// Subscribe with packet id 1 and return the SUBACK's reason codes.
    pub async fn subscribe(&mut self, filters: &[(&str, SubscriptionOptions)]) -> Vec<u8> {
        self.suback(filters, None).await.reason_codes
    }

    /// Unsubscribe with packet id 2; the UNSUBACK, which must be the next packet (asserting
    /// its id).
    pub async fn unsuback(&mut self, filters: &[&str]) -> SubResponse {
        self.send(&Packet::Unsubscribe(Unsubscribe {
            pkid: 2,
            filters: filters.iter().map(|f| f.to_string()).collect(),
            properties: Default::default(),
        }))
        .await;
        match self.recv().await {
            Some(Packet::UnsubAck(a)) => {
                assert_eq!(a.pkid, 2, "UNSUBACK packet identifier");
                a
            }
            other => panic!("expected UNSUBACK, got {other:?}"),
        }
    }

    /// Unsubscribe with packet id 2 and return the UNSUBACK's reason codes.
    pub async fn unsubscribe(&mut self, filters: &[&str]) -> Vec<u8> {
        self.unsuback(filters).await.reason_codes
    }

    /// Send `p` (a QoS 1/2 PUBLISH) and wait for its PUBACK or PUBREC.
    pub async fn publish_acked(&mut self, p: &Packet) -> PubResponse {
        self.send(p).await;
        self.wait_for("PUBACK/PUBREC", |p| match p {
            Packet::PubAck(r) | Packet::PubRec(r) => Some(r),
            _ => None,
        })
        .await
    }

    /// Publish at `qos` (id 1, no properties) and wait for PUBACK / PUBCOMP.
    pub async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: &[u8]) {
        self.send(&publish5(
            publish(topic, qos, 1, retain, payload),
            Properties::default(),
        ))
        .await;
        let ack = |p: &Option<Packet>| match p {
            Some(Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubComp(r)) => {
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
                assert!(matches!(p, Some(Packet::PubRec(_))), "PUBREC: {p:?}");
                self.send(&Packet::PubRel(response(1, 0))).await;
                let p = self.recv().await;
                assert!(matches!(p, Some(Packet::PubComp(_))), "PUBCOMP: {p:?}");
            }
        }
    }

    /// The next PUBLISH, whose payload must be `want` (`why` says what that shows).
    pub async fn expect_payload(&mut self, want: &str, why: &str) -> Publish {
        let p = self.publish_rx().await;
        assert_eq!(p.payload, want, "{why}: {p:?}");
        p
    }

    /// Two members `{id}-a` and `{id}-b` of the shared subscription `filter` at `qos`, each
    /// SUBSCRIBE granted `qos`.
    pub async fn members(addr: SocketAddr, id: &str, filter: &str, qos: QoS) -> (V5, V5) {
        let mut a = V5::connect(addr, &format!("{id}-a")).await;
        let mut b = V5::connect(addr, &format!("{id}-b")).await;
        for m in [&mut a, &mut b] {
            assert_eq!(m.subscribe(&[(filter, opts(qos))]).await, vec![qos as u8]);
        }
        (a, b)
    }

    /// Acknowledge an incoming QoS 1 PUBLISH with `code`.
    pub async fn puback(&mut self, p: &Publish, code: u8) {
        assert_eq!(p.qos, QoS::AtLeastOnce);
        self.send(&Packet::PubAck(response(p.pkid, code))).await;
    }

    /// Wait for the server's DISCONNECT (skipping other packets); its reason and properties.
    pub async fn disconnect_rx(&mut self) -> (u8, Properties) {
        let d = self
            .wait_for("DISCONNECT", |p| match p {
                Packet::Disconnect(d) => Some(d),
                _ => None,
            })
            .await;
        (d.reason_code, d.properties.into_inner())
    }

    /// Wait for the server's DISCONNECT; returns its reason code, after checking that it
    /// says why (every error the server sends carries a Reason String).
    pub async fn disconnect_reason(&mut self) -> u8 {
        let (code, props) = self.disconnect_rx().await;
        assert!(
            props.reason_string.is_some(),
            "DISCONNECT {code:#04x} without a Reason String",
        );
        code
    }

    /// Send DISCONNECT with `reason` and these properties.
    pub async fn send_disconnect(&mut self, reason: u8, properties: Properties) {
        self.send(&Packet::Disconnect(ReasonPacket {
            reason_code: reason,
            properties: properties.into(),
        }))
        .await;
    }

    /// DISCONNECT with `reason`, then wait for the server to close; what it still sent.
    pub async fn disconnect(mut self, reason: u8) -> Vec<Packet> {
        self.send_disconnect(reason, Properties::default()).await;
        self.expect_closed("the close after DISCONNECT").await
    }
}
