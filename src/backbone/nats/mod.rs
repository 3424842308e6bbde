//! The NATS JetStream backbone (`--cluster`, issue 11); first its pure parts: how topics
//! map to subjects and KV keys, and what a message carries.

pub mod envelope;
pub mod mapping;
