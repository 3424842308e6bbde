//! The wire format of MQTT 3.1, 3.1.1 and 5.0: bytes to the one packet model and back.
//!
//! [`decode`] and [`encode`] take the protocol version a connection speaks; 3.1/3.1.1 is
//! normalised into the v5 model here and nowhere else. The size limit is enforced from the
//! fixed header alone, before a body is buffered, and payloads are zero-copy slices of the
//! receive buffer.

mod decode;
mod encode;
mod error;
mod properties;
mod wire;

pub use decode::decode;
pub use encode::{encode, encode_publish};
pub use error::DecodeError;
pub use wire::MAX_REMAINING_LENGTH;

pub(crate) use encode::{encode_publish5, publish5_size, PublishHeader};
pub(crate) use properties::PublishExtras;
