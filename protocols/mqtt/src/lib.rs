//! # ponte-mqtt
//!
//! A sans-IO MQTT 3.1 ("MQIsdp", level 3), 3.1.1 ("MQTT", level 4) and 5.0 ("MQTT", level 5)
//! server engine: a [`codec`] for the 3.1/3.1.1 wire format, a [`v5`] codec (properties,
//! reason codes, AUTH) and a per-connection state machine ([`Connection`]) that speaks
//! whichever version the CONNECT asked for. It does no I/O, spawns nothing and reads no
//! clock: the driver passes bytes and the current [`std::time::Instant`] in, and takes bytes,
//! events and deadlines out. On a v5 connection the machine itself enforces the v5 limits
//! (Receive Maximum both ways, Maximum Packet Size, Topic Alias Maximum both ways, Message
//! Expiry at send time) and answers with reason codes — each error code with a Reason String,
//! within the client's Maximum Packet Size and its Request Problem Information — and
//! reassigns the least recently used server topic alias when all are taken; v5-only data
//! reaches the broker in the `*5` events.
//!
//! What the broker core decides (authentication, client-id assignment, topic-filter
//! validity, routing, retained messages, session storage) stays outside: the machine emits
//! [`Event`]s and the broker answers with commands.
//!
//! ## Driving a connection
//!
//! ```
//! use std::time::{Duration, Instant};
//! use bytes::BytesMut;
//! use ponte_mqtt::{Config, Connection, Event, SubscribeReturnCode};
//!
//! let start = Instant::now();
//! let mut conn = Connection::new(start, Config::default());
//! // CONNECT, MQTT 3.1.1, clean session, keep alive 60 s, client id "c".
//! let connect = [0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 0b10, 0, 60, 0, 1, b'c'];
//! let mut out = BytesMut::new();
//!
//! let now = start + Duration::from_millis(5);
//! conn.handle_bytes(now, &connect);
//! while let Some(event) = conn.poll_event() {
//!     match event {
//!         Event::Connect(_c) => conn.accept(now, false, None),
//!         Event::Publish(p) => { /* route it */ conn.publish_done(p.pkid) }
//!         Event::Subscribe { pkid, filters } => conn.suback(
//!             pkid,
//!             filters.iter().map(|(_, q)| SubscribeReturnCode::Success(*q)).collect(),
//!         ),
//!         Event::Unsubscribe { pkid, .. } => conn.unsuback(pkid),
//!         Event::InflightFreed => { /* send queued messages */ }
//!         Event::PingRequest => conn.ping_response(),
//!         // MQTT 5 connections: the same, with properties (see `Event`).
//!         Event::Connect5(_) | Event::Publish5(_) | Event::Subscribe5(_) => {}
//!         Event::Closed { will, .. } => { /* publish `will` if Some, drop socket */ }
//!     }
//! }
//! if conn.poll_transmit(&mut out) {
//!     // write `out` to the socket
//! }
//! assert_eq!(&out[..], &[0x20, 2, 0, 0]); // CONNACK accepted
//! // sleep until conn.poll_timeout(), then call conn.handle_timeout(Instant::now())
//! assert_eq!(conn.poll_timeout(), Some(now + Duration::from_secs(90)));
//! ```

pub mod codec;
pub mod connection;
#[doc(hidden)]
pub mod harness;
pub mod packet;
pub mod v5;

pub use codec::{decode, encode, encode_publish, DecodeError};
pub use connection::{
    CloseReason, Config, Connection, Event, Inflight, Outgoing, SessionState, Violation,
};
pub use packet::{
    Connect, ConnectReturnCode, LastWill, Packet, ProtocolVersion, Publish, QoS,
    SubscribeReturnCode,
};
pub use v5::{
    decode_v5, encode_v5, reason, Connect5, Packet5, Properties, PubResponse, Publish5,
    ReasonPacket, SubResponse, Subscribe5, SubscriptionOptions, Unsubscribe5,
};
