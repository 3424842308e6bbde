//! # ponte-mqtt
//!
//! A sans-IO MQTT 3.1 ("MQIsdp", level 3) and 3.1.1 ("MQTT", level 4) server engine: a
//! [`codec`] for the wire format and a per-connection state machine ([`Connection`]). It does
//! no I/O, spawns nothing and reads no clock: the driver passes bytes and the current
//! [`std::time::Instant`] in, and takes bytes, events and deadlines out. MQTT 5 CONNECTs are
//! recognised and answered with CONNACK 0x01 (unacceptable protocol version); the
//! [`ProtocolVersion`] kept on each connection is where v5 behaviour will hook in.
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
pub mod packet;

pub use codec::{decode, encode, encode_publish, DecodeError};
pub use connection::{
    CloseReason, Config, Connection, Event, Inflight, Outgoing, SessionState, Violation,
};
pub use packet::{
    Connect, ConnectReturnCode, LastWill, Packet, ProtocolVersion, Publish, QoS,
    SubscribeReturnCode,
};
