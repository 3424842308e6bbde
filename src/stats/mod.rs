//! Every number of the gateway at one moment: [`Sources`] reads the counters the modules
//! own (the broker core, `[limits]`, the MQTT sessions, the coaps listener, the bridges and
//! webhooks, [`crate::metrics`]) into one [`Snapshot`], written as Prometheus text for
//! `GET /metrics` ([`exposition::render`]) and published as `$SYS/broker/...` topics
//! (`sys.rs`).
//!
//! It sits above every module it reads (and is read only by the HTTP front-end and the
//! crate root), so counting never depends on reading: the counters live with their owners,
//! below the broker core where needed (architecture.md, "Operations" and "Layers").

pub mod exposition;
pub(crate) mod sys;

pub use exposition::{Snapshot, Sources};
