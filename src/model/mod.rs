//! The domain model shared by the broker core, the store and every front-end: topic names and
//! filters, QoS, messages and retained values. It sits below `broker` and `store` (both use
//! it, it uses neither), so the store does not reach up into the broker, and it carries no
//! protocol's wire types.

pub mod charge;
pub mod message;
pub mod qos;
pub mod topic;
pub mod value;

pub use charge::{Charge, Release};
pub use message::{Message, Origin};
pub use qos::QoS;
pub use topic::{TopicError, TopicFilter, TopicName};
pub use value::RetainedValue;
