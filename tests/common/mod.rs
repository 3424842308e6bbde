//! The one toolkit of the black-box tests (`mod common; use common::*;` in each file), one
//! concern per file:
//!
//! - [`wait`]: `WAIT`, `QUIET`, [`within`] and polling with a deadline: every wait is bounded.
//! - [`gateway`]: a gateway in-process on 127.0.0.1 (memory or sled store, config tweaks),
//!   the files it reads, values seeded through the broker core.
//! - [`rumqtt`]: rumqttc's 3.1.1 client ([`Client`]) and 5.0 client ([`R5`]).
//! - [`wire`]: raw MQTT 3.1.1 and 5.0 clients ([`V3`], [`V5`]) and packets as bytes.
//! - [`coap`]: raw CoAP over UDP ([`Coap`]) and TCP ([`CoapTcp`]).
//! - [`http`]: reqwest against `/resources/...` and Server-Sent Events.
//! - [`pki`]: a private CA and a server certificate for TLS tests.
//! - [`process`]: third-party clients as child processes, tool checks ([`have`]) and the real
//!   `ponte` binary ([`Ponte`]).

#![allow(dead_code, unused_imports, unreachable_pub, clippy::unwrap_used)]

pub mod coap;
pub mod gateway;
pub mod http;
pub mod pki;
pub mod process;
pub mod rumqtt;
pub mod wait;
pub mod wire;

pub use coap::*;
pub use gateway::*;
pub use http::*;
pub use pki::*;
pub use process::*;
pub use rumqtt::*;
pub use wait::*;
pub use wire::*;
