//! # ponte-mqtt
//!
//! A sans-IO MQTT 3.1 ("MQIsdp", level 3), 3.1.1 ("MQTT", level 4) and 5.0 ("MQTT", level 5)
//! server engine: a codec ([`decode`], [`encode`]) and a per-connection state machine
//! ([`Connection`]) that speaks whichever version the CONNECT asked for. It does no I/O,
//! spawns nothing and reads no clock: the driver passes bytes and the current
//! [`std::time::Instant`] in, and takes bytes, events and deadlines out.
//!
//! **One shape.** Every version shares one packet model, MQTT 5's ([`Packet`]): a
//! 3.1/3.1.1 packet is normalised into it at the codec boundary (no properties, return
//! codes as reason codes, and back when encoded), so the machine has one handler per packet
//! type and emits one [`Event`] per kind, and the driver answers with one command per kind.
//! On a v5 connection the machine itself enforces the v5 limits (Receive Maximum both
//! ways, Maximum Packet Size, Topic Alias Maximum both ways, Message Expiry at send time)
//! and answers with reason codes — each error code with a Reason String, within the
//! client's Maximum Packet Size and its Request Problem Information — and reassigns the
//! least recently used server topic alias when all are taken.
//!
//! What the broker core decides (authentication, client-id assignment, topic-filter
//! validity, routing, retained messages, session storage) stays outside: the machine emits
//! [`Event`]s and the broker answers with commands.
//!
//! ## Layout
//!
//! `packet.rs` and `properties.rs` are the model, `reason.rs` the v5 reason codes, `codec/`
//! the wire format (it depends on the model only), `connection/` the machine (it depends
//! on the codec and the model). Nothing points back up.
//!
//! ## Driving a connection
//!
//! ```
//! use std::time::{Duration, Instant};
//! use bytes::BytesMut;
//! use ponte_mqtt::{Accept, Config, Connection, Event};
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
//!         Event::Connect(_c) => conn.accept(now, Accept::default()),
//!         Event::Publish(p) => { /* route it */ conn.publish_done(p.pkid, 0, None) }
//!         Event::Subscribe(s) => {
//!             let granted = s.filters.iter().map(|(_, o)| o.qos.as_u8()).collect();
//!             conn.suback(s.pkid, granted, None)
//!         }
//!         Event::Unsubscribe(u) => conn.unsuback(u.pkid, vec![0; u.filters.len()], None),
//!         Event::InflightFreed => { /* send queued messages */ }
//!         Event::PingRequest => conn.ping_response(),
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

mod codec;
mod connection;
#[doc(hidden)]
pub mod harness;
mod packet;
mod properties;
pub mod reason;

pub use codec::{decode, encode, encode_publish, DecodeError, MAX_REMAINING_LENGTH};
pub use connection::{
    Accept, CloseReason, Config, Connection, Event, Inflight, Outgoing, SessionState, Violation,
    MAX_REASON_STRING,
};
pub use packet::{
    Connect, LastWill, Packet, ProtocolVersion, PubResponse, Publish, QoS, ReasonPacket,
    RetainHandling, SubResponse, Subscribe, SubscriptionOptions, Unsubscribe,
};
pub use properties::{Properties, PropertyList, PublishProperties};
