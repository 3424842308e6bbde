//! Helpers for the CoAP, cross-protocol and interop black-box tests: a gateway on loopback,
//! a raw CoAP client over UDP (coap-lite packets), HTTP through reqwest, MQTT through
//! rumqttc and raw bytes. Every wait is bounded.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use futures_util::StreamExt;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet as MqttPacket, Publish, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use ponte::Gateway;

/// The longest any single expected event may take.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long to listen for something that must NOT arrive.
pub const QUIET: Duration = Duration::from_millis(400);

/// Await `fut` or panic after `d`, naming what was awaited.
pub async fn within<T>(d: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(d, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {d:?} waiting for {what}"),
    }
}

/// A gateway on 127.0.0.1, every port 0, memory store.
pub async fn gateway() -> Gateway {
    within(
        WAIT,
        "gateway start",
        ponte::start(ponte::config::Config::ephemeral()),
    )
    .await
    .expect("gateway starts")
}

/// Like [`gateway`], with the configuration adjusted by `f`.
pub async fn gateway_with(f: impl FnOnce(&mut ponte::config::Config)) -> Gateway {
    let mut config = ponte::config::Config::ephemeral();
    f(&mut config);
    within(WAIT, "gateway start", ponte::start(config))
        .await
        .expect("gateway starts")
}

// ---------------------------------------------------------------------------------------
// CoAP
// ---------------------------------------------------------------------------------------

/// A raw CoAP client: one UDP socket connected to the gateway.
pub struct Coap {
    pub sock: UdpSocket,
    pub server: SocketAddr,
    next_mid: u16,
    next_token: u32,
}

impl Coap {
    pub async fn new(server: SocketAddr) -> Coap {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        sock.connect(server).await.unwrap();
        // Start the MIDs somewhere that depends on the port, so two clients differ.
        let port = sock.local_addr().unwrap().port();
        Coap {
            sock,
            server,
            next_mid: port.wrapping_mul(7),
            next_token: u32::from(port) << 8,
        }
    }

    pub fn mid(&mut self) -> u16 {
        self.next_mid = self.next_mid.wrapping_add(1);
        self.next_mid
    }

    pub fn token(&mut self) -> Vec<u8> {
        self.next_token = self.next_token.wrapping_add(1);
        self.next_token.to_be_bytes().to_vec()
    }

    /// A request packet (CON) with fresh MID and token, the path split on `/`.
    pub fn request(&mut self, method: RequestType, path: &str) -> Packet {
        let mut p = Packet::new();
        p.header.set_type(MessageType::Confirmable);
        p.header.code = MessageClass::Request(method);
        p.header.message_id = self.mid();
        p.set_token(self.token());
        for seg in path.trim_start_matches('/').split('/') {
            p.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
        }
        p
    }

    pub async fn send(&self, p: &Packet) {
        let bytes = p.to_bytes_unlimited().expect("encodable packet");
        self.sock.send(&bytes).await.unwrap();
    }

    pub async fn send_raw(&self, bytes: &[u8]) {
        self.sock.send(bytes).await.unwrap();
    }

    pub async fn recv_raw(&self, what: &str) -> Vec<u8> {
        let mut buf = vec![0u8; 65_535];
        let n = within(WAIT, what, self.sock.recv(&mut buf))
            .await
            .expect("recv");
        buf.truncate(n);
        buf
    }

    /// The next datagram from the server, parsed.
    pub async fn recv(&self, what: &str) -> Packet {
        let bytes = self.recv_raw(what).await;
        Packet::from_bytes(&bytes)
            .unwrap_or_else(|e| panic!("{what}: bad packet {e:?}: {bytes:02x?}"))
    }

    /// Whatever arrives within `d` (None when silent).
    pub async fn recv_within(&self, d: Duration) -> Option<Packet> {
        let mut buf = vec![0u8; 65_535];
        match tokio::time::timeout(d, self.sock.recv(&mut buf)).await {
            Ok(Ok(n)) => Some(Packet::from_bytes(&buf[..n]).expect("parsable packet")),
            _ => None,
        }
    }

    /// Assert that nothing arrives for [`QUIET`].
    pub async fn expect_silence(&self, what: &str) {
        if let Some(p) = self.recv_within(QUIET).await {
            panic!(
                "{what}: expected nothing, got {} {:?}",
                p.header.get_code(),
                p
            );
        }
    }

    /// Send `p` and wait for the response with its token (piggybacked or separate, ACKing
    /// a separate CON response). Skips unrelated datagrams (e.g. notifications of others,
    /// which are ACKed so they stop).
    pub async fn exchange(&mut self, p: &Packet) -> Packet {
        self.send(p).await;
        let token = p.get_token().to_vec();
        loop {
            let r = self.recv("CoAP response").await;
            if r.get_token() == token.as_slice()
                && matches!(r.header.code, MessageClass::Response(_))
            {
                if r.header.get_type() == MessageType::Confirmable {
                    self.ack(&r).await;
                }
                return r;
            }
            if r.header.get_type() == MessageType::Confirmable {
                self.ack(&r).await;
            }
        }
    }

    /// An Empty ACK for a CON from the server.
    pub async fn ack(&self, p: &Packet) {
        self.send(&empty(MessageType::Acknowledgement, p.header.message_id))
            .await;
    }

    /// An Empty RST for a message from the server.
    pub async fn rst(&self, p: &Packet) {
        self.send(&empty(MessageType::Reset, p.header.message_id))
            .await;
    }

    pub async fn get(&mut self, path: &str) -> Packet {
        let p = self.request(RequestType::Get, path);
        self.exchange(&p).await
    }

    pub async fn put(&mut self, path: &str, payload: &[u8], cf: Option<u16>) -> Packet {
        let mut p = self.request(RequestType::Put, path);
        if let Some(cf) = cf {
            p.add_option(CoapOption::ContentFormat, uint(u32::from(cf)));
        }
        p.payload = payload.to_vec();
        self.exchange(&p).await
    }

    pub async fn delete(&mut self, path: &str) -> Packet {
        let p = self.request(RequestType::Delete, path);
        self.exchange(&p).await
    }

    /// GET with Observe=0 (register). Returns the token and the first response.
    pub async fn observe(&mut self, path: &str) -> (Vec<u8>, Packet) {
        let mut p = self.request(RequestType::Get, path);
        p.add_option(CoapOption::Observe, Vec::new()); // 0 is the empty uint
        let r = self.exchange(&p).await;
        (p.get_token().to_vec(), r)
    }

    /// The next notification for `token`, ACKed if CON. Panics after [`WAIT`].
    pub async fn notification(&self, token: &[u8]) -> Packet {
        loop {
            let r = self.recv("CoAP notification").await;
            if r.header.get_type() == MessageType::Confirmable {
                self.ack(&r).await;
            }
            if r.get_token() == token {
                return r;
            }
        }
    }
}

/// An Empty message of type `t`.
pub fn empty(t: MessageType, mid: u16) -> Packet {
    let mut p = Packet::new();
    p.header.set_type(t);
    p.header.code = MessageClass::Empty;
    p.header.message_id = mid;
    p
}

/// A CoAP uint option value (minimal big-endian, 0 is empty).
pub fn uint(v: u32) -> Vec<u8> {
    let b = v.to_be_bytes();
    let first = b.iter().position(|x| *x != 0).unwrap_or(4);
    b[first..].to_vec()
}

/// Decode a CoAP uint option value.
pub fn as_uint(v: &[u8]) -> u32 {
    v.iter().fold(0u32, |a, b| (a << 8) | u32::from(*b))
}

/// The response code as "c.dd".
pub fn code(p: &Packet) -> String {
    p.header.get_code()
}

/// The first value of option `o` as a uint.
pub fn opt_uint(p: &Packet, o: CoapOption) -> Option<u32> {
    p.get_first_option(o).map(|v| as_uint(v))
}

/// Every value of option `o`.
pub fn opt_all(p: &Packet, o: CoapOption) -> Vec<Vec<u8>> {
    p.get_option(o)
        .map(|l| l.iter().cloned().collect())
        .unwrap_or_default()
}

pub fn payload_str(p: &Packet) -> String {
    String::from_utf8_lossy(&p.payload).into_owned()
}

// ---------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

pub fn url(gw: &Gateway, topic: &str) -> String {
    format!("http://{}/resources/{}", gw.http_addr, topic)
}

pub async fn http_put(
    gw: &Gateway,
    topic: &str,
    body: impl Into<reqwest::Body>,
    ct: &str,
) -> reqwest::Response {
    within(
        WAIT,
        "HTTP PUT",
        http()
            .put(url(gw, topic))
            .header("content-type", ct)
            .body(body)
            .send(),
    )
    .await
    .expect("HTTP PUT sent")
}

pub async fn http_get(gw: &Gateway, topic: &str) -> reqwest::Response {
    within(WAIT, "HTTP GET", http().get(url(gw, topic)).send())
        .await
        .expect("HTTP GET sent")
}

pub async fn http_delete(gw: &Gateway, topic: &str) -> reqwest::Response {
    within(WAIT, "HTTP DELETE", http().delete(url(gw, topic)).send())
        .await
        .expect("HTTP DELETE sent")
}

/// An open Server-Sent Events stream, read as text.
pub struct Sse {
    stream:
        std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    pub buf: String,
}

impl Sse {
    pub async fn open(gw: &Gateway, topic: &str) -> Sse {
        let r = within(
            WAIT,
            "SSE response headers",
            http()
                .get(url(gw, topic))
                .header("accept", "text/event-stream")
                .timeout(Duration::from_secs(60))
                .send(),
        )
        .await
        .expect("SSE request");
        assert_eq!(r.status(), 200, "SSE status");
        let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ct.starts_with("text/event-stream"), "SSE content-type {ct}");
        Sse {
            stream: Box::pin(r.bytes_stream()),
            buf: String::new(),
        }
    }

    /// Read until the buffer holds a complete event (blank line) containing `needle`;
    /// returns that event's text and drops everything up to it.
    pub async fn event_with(&mut self, needle: &str) -> String {
        within(WAIT, &format!("SSE event with {needle:?}"), async {
            loop {
                while let Some(end) = self.buf.find("\n\n") {
                    let ev: String = self.buf[..end + 2].to_owned();
                    self.buf.drain(..end + 2);
                    if ev.contains(needle) {
                        return ev;
                    }
                }
                match self.stream.next().await {
                    Some(Ok(b)) => self.buf.push_str(&String::from_utf8_lossy(&b)),
                    other => panic!("SSE stream ended: {other:?}"),
                }
            }
        })
        .await
    }
}

// ---------------------------------------------------------------------------------------
// MQTT
// ---------------------------------------------------------------------------------------

pub fn mqtt_options(addr: SocketAddr, id: &str) -> MqttOptions {
    let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(5));
    o.set_max_packet_size(4 * 1024 * 1024, 4 * 1024 * 1024);
    o
}

/// An MQTT client whose incoming PUBLISHes land in a channel.
pub struct Mqtt {
    pub client: AsyncClient,
    rx: mpsc::UnboundedReceiver<Publish>,
    acks: mpsc::UnboundedReceiver<MqttPacket>,
    task: JoinHandle<()>,
}

impl Mqtt {
    pub async fn connect(addr: SocketAddr, id: &str) -> Mqtt {
        let (client, mut el) = AsyncClient::new(mqtt_options(addr, id), 64);
        let (tx, rx) = mpsc::unbounded_channel();
        let (atx, mut acks) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(MqttPacket::Publish(p))) => {
                        let _ = tx.send(p);
                    }
                    Ok(Event::Incoming(p)) => {
                        let _ = atx.send(p);
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        });
        within(WAIT, "MQTT CONNACK", async {
            loop {
                match acks.recv().await {
                    Some(MqttPacket::ConnAck(_)) => break,
                    Some(_) => {}
                    None => panic!("MQTT connection failed"),
                }
            }
        })
        .await;
        Mqtt {
            client,
            rx,
            acks,
            task,
        }
    }

    async fn wait_ack(&mut self, what: &str, f: impl Fn(&MqttPacket) -> bool) {
        within(WAIT, what, async {
            loop {
                match self.acks.recv().await {
                    Some(p) if f(&p) => break,
                    Some(_) => {}
                    None => panic!("MQTT connection lost waiting for {what}"),
                }
            }
        })
        .await
    }

    /// A subscriber of `filter` at QoS 1, returned after SUBACK.
    pub async fn subscriber(addr: SocketAddr, id: &str, filter: &str) -> Mqtt {
        let mut m = Mqtt::connect(addr, id).await;
        m.client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        m.wait_ack("SUBACK", |p| matches!(p, MqttPacket::SubAck(_)))
            .await;
        m
    }

    /// Publish at QoS 1 and wait for the PUBACK.
    pub async fn publish(&mut self, topic: &str, payload: impl Into<Vec<u8>>, retain: bool) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload.into())
            .await
            .unwrap();
        self.wait_ack("PUBACK", |p| matches!(p, MqttPacket::PubAck(_)))
            .await;
    }

    /// The next PUBLISH received.
    pub async fn next(&mut self) -> Publish {
        within(WAIT, "MQTT PUBLISH", self.rx.recv())
            .await
            .expect("MQTT connection alive")
    }

    /// Assert no PUBLISH arrives for [`QUIET`].
    pub async fn expect_silence(&mut self, what: &str) {
        if let Ok(Some(p)) = tokio::time::timeout(QUIET, self.rx.recv()).await {
            panic!("{what}: expected no PUBLISH, got {p:?}");
        }
    }
}

impl Drop for Mqtt {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One-shot publish at QoS 1 from a fresh client.
pub async fn mqtt_publish(
    addr: SocketAddr,
    topic: &str,
    payload: impl Into<Vec<u8>>,
    retain: bool,
) {
    let id = format!("pub-{}", rand_id());
    let mut m = Mqtt::connect(addr, &id).await;
    m.publish(topic, payload, retain).await;
    let _ = m.client.disconnect().await;
}

pub fn rand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    N.fetch_add(1, Ordering::Relaxed) ^ (u64::from(std::process::id()) << 20)
}

/// A raw MQTT 3.1.1 connection (for what rumqttc refuses to send, such as a wildcard topic
/// in PUBLISH). Returns the stream after a successful CONNACK.
pub async fn raw_mqtt_connect(addr: SocketAddr, id: &str) -> TcpStream {
    let mut s = within(WAIT, "MQTT TCP connect", TcpStream::connect(addr))
        .await
        .unwrap();
    let mut var = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 30];
    var.extend_from_slice(&(id.len() as u16).to_be_bytes());
    var.extend_from_slice(id.as_bytes());
    let mut pkt = vec![0x10, var.len() as u8];
    pkt.extend(var);
    s.write_all(&pkt).await.unwrap();
    let mut ack = [0u8; 4];
    within(WAIT, "raw CONNACK", s.read_exact(&mut ack))
        .await
        .unwrap();
    assert_eq!(ack, [0x20, 2, 0, 0], "CONNACK accepted");
    s
}

/// A QoS 0 PUBLISH packet (short payloads only).
pub fn raw_publish(topic: &str, payload: &[u8], retain: bool) -> Vec<u8> {
    let mut var = (topic.len() as u16).to_be_bytes().to_vec();
    var.extend_from_slice(topic.as_bytes());
    var.extend_from_slice(payload);
    assert!(var.len() < 128);
    let mut pkt = vec![0x30 | u8::from(retain), var.len() as u8];
    pkt.extend(var);
    pkt
}

/// Whether the server closes `s` within [`WAIT`] (EOF or reset; bytes before are skipped).
pub async fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    tokio::time::timeout(WAIT, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
    })
    .await
    .unwrap_or(false)
}

// ---------------------------------------------------------------------------------------
// CoAP over TCP (RFC 8323)
// ---------------------------------------------------------------------------------------

/// A raw CoAP-over-TCP client: frames built from coap-lite packets (datagram layout
/// converted by `ponte_coap::tcp::to_tcp`), frames read back into packets.
pub struct CoapTcp {
    pub stream: TcpStream,
    buf: Vec<u8>,
    next_token: u32,
}

impl CoapTcp {
    /// Connect to the CoAP port over TCP (no CSM sent yet).
    pub async fn connect(server: SocketAddr) -> CoapTcp {
        let stream = within(WAIT, "CoAP/TCP connect", TcpStream::connect(server))
            .await
            .expect("CoAP/TCP listens on the CoAP port");
        CoapTcp {
            stream,
            buf: Vec::new(),
            next_token: 0x7000,
        }
    }

    pub fn token(&mut self) -> Vec<u8> {
        self.next_token += 1;
        self.next_token.to_be_bytes().to_vec()
    }

    /// Send a packet (its type and MID are dropped by the TCP framing).
    pub async fn send(&mut self, p: &Packet) {
        let bytes = ponte_coap::tcp::to_tcp(&p.to_bytes_unlimited().expect("encodable"));
        self.stream.write_all(&bytes).await.unwrap();
    }

    /// A signaling message 7.`detail` with optional uint options.
    pub async fn signal(&mut self, detail: u8, token: &[u8], opts: &[(u16, u32)]) {
        let mut p = Packet::new();
        p.header.code = MessageClass::from(0xE0 | detail);
        p.set_token(token.to_vec());
        for (n, v) in opts {
            p.add_option(CoapOption::Unknown(*n), uint(*v));
        }
        self.send(&p).await;
    }

    /// A request packet with a fresh token.
    pub fn request(&mut self, method: RequestType, path: &str) -> Packet {
        let mut p = Packet::new();
        p.header.code = MessageClass::Request(method);
        p.set_token(self.token());
        for seg in path.trim_start_matches('/').split('/') {
            p.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
        }
        p
    }

    /// The next frame, as a packet; None on EOF.
    pub async fn recv_frame(&mut self, what: &str) -> Option<Packet> {
        within(WAIT, what, async {
            loop {
                if let Some((p, used)) = parse_tcp_frame(&self.buf) {
                    self.buf.drain(..used);
                    return Some(p);
                }
                let mut chunk = [0u8; 4096];
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await
    }

    pub async fn recv(&mut self, what: &str) -> Packet {
        self.recv_frame(what)
            .await
            .unwrap_or_else(|| panic!("connection closed waiting for {what}"))
    }

    /// Send `p` and return the response with its token (skipping other frames).
    pub async fn exchange(&mut self, p: &Packet) -> Packet {
        self.send(p).await;
        loop {
            let r = self.recv("CoAP/TCP response").await;
            if r.get_token() == p.get_token() {
                return r;
            }
        }
    }
}

/// Parse one RFC 8323 frame at the start of `buf`: the packet and the bytes it used.
pub fn parse_tcp_frame(buf: &[u8]) -> Option<(Packet, usize)> {
    let b0 = *buf.first()?;
    let (nib, tkl) = (b0 >> 4, usize::from(b0 & 0x0F));
    let ext = match nib {
        13 => 1,
        14 => 2,
        15 => 4,
        _ => 0,
    };
    let e = buf.get(1..1 + ext)?;
    let len = match ext {
        0 => usize::from(nib),
        1 => usize::from(e[0]) + 13,
        2 => usize::from(u16::from_be_bytes([e[0], e[1]])) + 269,
        _ => u32::from_be_bytes([e[0], e[1], e[2], e[3]]) as usize + 65_805,
    };
    let total = 2 + ext + tkl + len;
    if buf.len() < total {
        return None;
    }
    let mut d = vec![0x40 | tkl as u8, buf[1 + ext], 0, 0];
    d.extend_from_slice(&buf[2 + ext..total]);
    Some((
        Packet::from_bytes(&d).expect("server frames are valid CoAP"),
        total,
    ))
}

/// Store a retained value directly through the broker core (no front-end, no ACL): for
/// tests that need a value where the client under test may not write.
pub async fn seed(gw: &Gateway, topic: &str, value: &str) {
    let topic = ponte::model::TopicName::parse(topic).expect("valid topic");
    let m = ponte::broker::retained_message(
        topic,
        bytes::Bytes::copy_from_slice(value.as_bytes()),
        None,
        ponte::model::Origin::Internal,
    );
    gw.broker
        .publish(m, ponte::broker::retained::Precondition::none())
        .await
        .expect("seed value stored");
}

/// Whether `bin` is on PATH; when not: panic in CI (it must be installed there), otherwise
/// print SKIP and return false.
pub fn have(bin: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false);
    if !found {
        if std::env::var_os("CI").is_some() {
            panic!("{bin} is not installed, and CI must have it");
        }
        println!("SKIP: {bin} not installed");
    }
    found
}
