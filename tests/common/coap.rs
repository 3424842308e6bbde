//! Raw CoAP clients: [`Coap`] over UDP (one connected socket, coap-lite packets) and
//! [`CoapTcp`] over TCP (RFC 8323 frames), and helpers to read options and codes.

use std::net::SocketAddr;
use std::time::Duration;

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::wait::{within, QUIET, WAIT};

#[path = "../../protocols/coap/tests/common/tcp_frame.rs"]
mod tcp_frame;
pub use tcp_frame::parse_tcp_frame;

/// A request packet (CON) with `token`, the path split on `/`.
pub fn request(method: RequestType, path: &str, token: Vec<u8>) -> Packet {
    let mut p = Packet::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(method);
    p.set_token(token);
    for seg in path.trim_start_matches('/').split('/') {
        p.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
    }
    p
}

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
        let mut p = request(method, path, self.token());
        p.header.message_id = self.mid();
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
            if r.header.get_type() == MessageType::Confirmable {
                self.ack(&r).await;
            }
            if r.get_token() == token.as_slice()
                && matches!(r.header.code, MessageClass::Response(_))
            {
                return r;
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

    /// GET `path` block by block (Block2 of size `16 << szx` asked from the first block on,
    /// RFC 7959 §2.4) up to the block with M=0: every response, in order. Fails at block
    /// `max` (a runaway transfer).
    pub async fn get_blocks(&mut self, path: &str, szx: u32, max: u32) -> Vec<Packet> {
        let mut blocks = Vec::new();
        for num in 0u32.. {
            assert!(num < max, "runaway block-wise transfer of {path}");
            let mut p = self.request(RequestType::Get, path);
            p.add_option(CoapOption::Block2, uint((num << 4) | szx));
            let r = self.exchange(&p).await;
            let more = opt_uint(&r, CoapOption::Block2).expect("Block2 in every block") & 0x8;
            blocks.push(r);
            if more == 0 {
                return blocks;
            }
        }
        unreachable!()
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
// CoAP over TCP (RFC 8323)

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
        request(method, path, self.token())
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
