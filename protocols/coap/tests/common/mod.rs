//! Shared helpers for the RFC conformance tests: a packet builder on top of
//! coap-lite, a fixed peer and clock, and drains for transmissions/events.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

mod tcp_frame;
#[allow(unused_imports)]
pub use tcp_frame::parse_tcp_frame;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use ponte_coap::{Config, Endpoint, Event, Request, Response};

/// The client used by most tests.
pub const PEER: &str = "192.0.2.1:5683";
/// A second client.
pub const PEER2: &str = "192.0.2.2:5683";

/// Parses a peer address constant.
pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

/// An endpoint with a fixed seed.
pub fn endpoint() -> Endpoint {
    Endpoint::new(config())
}

/// The default test configuration.
pub fn config() -> Config {
    Config {
        seed: 7,
        ..Config::default()
    }
}

/// Adds `secs` seconds to `t`.
pub fn at(t: Instant, secs: f64) -> Instant {
    t + Duration::from_secs_f64(secs)
}

/// Builds request datagrams.
#[derive(Clone)]
pub struct Msg(pub Packet);

impl Msg {
    /// A CON request.
    pub fn con(method: RequestType, mid: u16) -> Self {
        let mut p = Packet::new();
        p.header.set_type(MessageType::Confirmable);
        p.header.code = MessageClass::Request(method);
        p.header.message_id = mid;
        Msg(p)
    }
    /// A NON request.
    pub fn non(method: RequestType, mid: u16) -> Self {
        let mut m = Self::con(method, mid);
        m.0.header.set_type(MessageType::NonConfirmable);
        m
    }
    /// CON GET.
    pub fn get(mid: u16) -> Self {
        Self::con(RequestType::Get, mid)
    }
    /// Sets the token.
    pub fn token(mut self, token: &[u8]) -> Self {
        self.0.set_token(token.to_vec());
        self
    }
    /// Adds Uri-Path options from a `/`-separated path.
    pub fn path(mut self, path: &str) -> Self {
        for seg in path.split('/') {
            self.0
                .add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
        }
        self
    }
    /// Adds a raw option.
    pub fn opt(mut self, number: u16, value: &[u8]) -> Self {
        self.0.add_option(CoapOption::from(number), value.to_vec());
        self
    }
    /// Adds an unsigned option in minimal encoding.
    pub fn uint(self, number: u16, value: u32) -> Self {
        let bytes = value.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        self.opt(number, &bytes[skip..])
    }
    /// Adds Observe.
    pub fn observe(self, value: u32) -> Self {
        self.uint(6, value)
    }
    /// Adds a Block option (23 or 27).
    pub fn block(self, number: u16, num: u32, more: bool, szx: u8) -> Self {
        self.uint(number, num << 4 | u32::from(more) << 3 | u32::from(szx))
    }
    /// Sets the payload.
    pub fn payload(mut self, payload: &[u8]) -> Self {
        self.0.payload = payload.to_vec();
        self
    }
    /// Encodes.
    pub fn bytes(&self) -> Vec<u8> {
        self.0.to_bytes_unlimited().expect("encodable test packet")
    }
}

/// Feeds a message from `peer`.
pub fn send(ep: &mut Endpoint, now: Instant, peer: &str, msg: &Msg) {
    ep.handle_datagram(now, addr(peer), &msg.bytes());
}

/// Feeding an endpoint from the client most tests use.
pub trait Feed {
    /// A message from [`PEER`] at `now`.
    fn feed(&mut self, now: Instant, msg: &Msg);
}

impl Feed for Endpoint {
    fn feed(&mut self, now: Instant, msg: &Msg) {
        send(self, now, PEER, msg)
    }
}

/// An endpoint with a fixed seed ([`endpoint`]) and the instant its test starts at.
pub fn fresh() -> (Endpoint, Instant) {
    fresh_with(|_| {})
}

/// [`fresh`] with the test configuration adjusted by `f`.
pub fn fresh_with(f: impl FnOnce(&mut Config)) -> (Endpoint, Instant) {
    let mut c = config();
    f(&mut c);
    (Endpoint::new(c), Instant::now())
}

/// `msg` from [`PEER`] at `now`, handed over as one request and answered with `response`
/// (for `resource`, when the request observes it).
pub fn answered(
    ep: &mut Endpoint,
    now: Instant,
    msg: Msg,
    response: Response,
    resource: Option<&str>,
) {
    ep.feed(now, &msg);
    let req = one_request(ep);
    ep.respond(now, req.id, response, resource.map(Into::into));
}

/// Drains and decodes all transmissions.
pub fn transmits(ep: &mut Endpoint) -> Vec<(SocketAddr, Packet)> {
    std::iter::from_fn(|| ep.poll_transmit())
        .map(|(peer, bytes)| {
            (
                peer,
                Packet::from_bytes(&bytes).expect("we emit valid CoAP"),
            )
        })
        .collect()
}

/// Drains exactly one transmission.
pub fn one_transmit(ep: &mut Endpoint) -> Packet {
    let mut all = transmits(ep);
    assert_eq!(all.len(), 1, "expected one datagram, got {all:?}");
    all.remove(0).1
}

/// Drains all events.
pub fn events(ep: &mut Endpoint) -> Vec<Event> {
    std::iter::from_fn(|| ep.poll_event()).collect()
}

/// Drains exactly one event, which must be a request.
pub fn one_request(ep: &mut Endpoint) -> Request {
    let mut all = events(ep);
    assert_eq!(all.len(), 1, "expected one event, got {all:?}");
    match all.remove(0) {
        Event::Request(r) => r,
        other => panic!("expected a request, got {other:?}"),
    }
}

/// The only answer is `code` and nothing was handed over as a request.
pub fn refused(ep: &mut Endpoint, code: ResponseType) -> Packet {
    let ack = one_transmit(ep);
    assert!(is(&ack, code), "{ack:?}");
    assert!(events(ep).is_empty());
    ack
}

/// Response code of a packet.
pub fn code(p: &Packet) -> MessageClass {
    p.header.code
}

/// Response class helper.
pub fn is(p: &Packet, rt: ResponseType) -> bool {
    p.header.code == MessageClass::Response(rt)
}

/// First value of an unsigned option.
pub fn uint_opt(p: &Packet, number: u16) -> Option<u32> {
    p.get_first_option(CoapOption::from(number))
        .map(|v| v.iter().fold(0u32, |acc, b| acc << 8 | u32::from(*b)))
}

/// 2.05 with a text payload.
pub fn content(payload: &str) -> Response {
    Response {
        content_format: Some(0),
        ..Response::with_payload(ResponseType::Content, payload.as_bytes().to_vec())
    }
}

/// Registers an observer of "T" with `token` at `now` (GET /r/T Observe=0,
/// answered 2.05 "v0"); drains the registration response and events.
pub fn observe(ep: &mut Endpoint, now: Instant, peer: &str, mid: u16, token: &[u8]) -> Packet {
    send(
        ep,
        now,
        peer,
        &Msg::get(mid).token(token).observe(0).path("r/T"),
    );
    let req = one_request(ep);
    assert_eq!(req.observe, Some(0));
    ep.respond(now, req.id, content("v0"), Some("T".into()));
    one_transmit(ep)
}
