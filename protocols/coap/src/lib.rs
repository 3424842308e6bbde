//! `ponte-coap`: a sans-IO CoAP server endpoint for ponte.
//!
//! The crate owns everything between UDP datagrams and application requests:
//! the RFC 7252 message layer (deduplication, piggybacked and NON responses,
//! message-ID allocation, pings, option checks), RFC 7641 observe
//! (observer table, confirmable notifications with retransmission and
//! replacement) and RFC 7959 block-wise transfer (Block2 slicing of whole
//! responses, Block1 reassembly of request bodies). It uses coap-lite only as
//! a packet codec and never performs I/O or reads the clock: the driver feeds
//! datagrams and `Instant`s in and drains transmissions and events out.
//!
//! See [`Endpoint`] for the driving loop.

pub mod config;
pub mod content_format;
mod endpoint;
mod request;
mod rng;
mod wire;

pub use coap_lite::ResponseType;
pub use config::Config;
pub use endpoint::{Endpoint, Event, Stats};
pub use request::{BlockOption, Method, Request, RequestError, RequestId, Response};
pub use wire::FormatError;
