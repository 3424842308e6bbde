//! `ponte-coap`: a sans-IO CoAP server for ponte, over UDP and over TCP.
//!
//! The crate owns everything between bytes on the wire and application
//! requests: the RFC 7252 message layer (deduplication of CON and NON,
//! piggybacked and NON responses, message-ID allocation, NSTART, pings,
//! option checks), RFC 7641 observe (observer table, CON/NON notification
//! policy with a periodic CON, retransmission and replacement, final 4.06
//! when a value's format leaves the observer's Accept), RFC 7959 block-wise
//! transfer (Block2 slicing of whole responses, Block1 reassembly keyed by
//! peer, Request-Tag and path) and RFC 8323 CoAP over TCP (framing, CSM,
//! Ping/Pong, Release/Abort). It uses coap-lite only as a packet codec and
//! never performs I/O or reads the clock: the driver feeds bytes and
//! `Instant`s in and drains transmissions and events out.
//!
//! See [`Endpoint`] (UDP) and [`TcpConnection`] (TCP) for the driving loops.

mod block1;
pub mod config;
pub mod content_format;
mod encode;
mod endpoint;
mod etag;
#[doc(hidden)]
pub mod harness;
mod path;
mod request;
mod rng;
pub mod tcp;
mod wire;

pub use coap_lite::ResponseType;
pub use config::{Config, NotifyPolicy};
pub use endpoint::{Endpoint, Event, Stats};
pub use etag::ETag;
pub use path::{Segments, UriPath};
pub use request::{BlockOption, Method, Request, RequestError, RequestId, Response};
pub use tcp::{TcpConnection, TcpError};
pub use wire::FormatError;

/// The endpoints' maps are keyed by what peers send (addresses, message ids, tokens) and
/// touched several times per request: foldhash, seeded per process, costs a fraction of
/// SipHash there and still keeps a peer from choosing colliding keys without the seed.
pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// See [`HashMap`].
pub(crate) type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
