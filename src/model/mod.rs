//! The domain model shared by the broker core, the store and every front-end: topic names and
//! filters, QoS, messages with their application properties, subscription options and
//! retained values. It sits below `broker` and `store` (both use it, it uses neither), so
//! the store does not reach up into the broker, and it carries no protocol's wire types:
//! the front-ends convert at their boundary.

pub mod charge;
pub mod message;
pub mod properties;
pub mod qos;
pub mod subscription;
pub mod topic;
pub mod value;

pub use charge::{Charge, Release};
pub use message::{Message, Origin};
pub use properties::{PayloadFormat, Properties};
pub use qos::QoS;
pub use subscription::{RetainHandling, SubOptions};
pub use topic::{TopicError, TopicFilter, TopicName};
pub use value::{rfc3339, RetainedValue};
