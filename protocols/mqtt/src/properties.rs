//! MQTT 5 properties (section 2.2.2): the values, the list a packet carries, and the view
//! of an outgoing PUBLISH's application properties that the encoder reads.
//!
//! A 3.1/3.1.1 packet has no properties; in the one packet model ([`crate::Packet`]) it
//! simply carries an empty [`PropertyList`], which costs no allocation. The wire format of a
//! property list (identifiers, which packet allows which, duplicates) is the codec's.

use std::fmt;
use std::ops::{Deref, DerefMut};

use bytes::Bytes;

/// Every MQTT 5 property (section 2.2.2.2, table 2-4), each present at most once except
/// User Property and Subscription Identifier. One struct serves every packet type; the
/// decoder refuses a property the packet does not allow, so only the allowed ones are set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    /// 0x01 (PUBLISH, Will): 1 = the payload is UTF-8; passed through to subscribers.
    pub payload_format_indicator: Option<u8>,
    /// 0x02 (PUBLISH, Will): seconds the message lives; the server forwards what remains.
    pub message_expiry_interval: Option<u32>,
    /// 0x03 (PUBLISH, Will): the payload's media type; becomes the retained value's type.
    pub content_type: Option<String>,
    /// 0x08 (PUBLISH, Will): where the receiver should reply (request/response).
    pub response_topic: Option<String>,
    /// 0x09 (PUBLISH, Will): opaque data tying a response to its request.
    pub correlation_data: Option<Bytes>,
    /// 0x0B (PUBLISH out: any number; SUBSCRIBE: at most one): which subscriptions
    /// matched, so the client can dispatch without re-matching topics.
    pub subscription_identifiers: Vec<u32>,
    /// 0x11 (CONNECT, CONNACK, DISCONNECT): seconds the session outlives the connection.
    pub session_expiry_interval: Option<u32>,
    /// 0x12 (CONNACK): the client id the server assigned to an empty one (MQTT-3.2.2-16).
    pub assigned_client_identifier: Option<String>,
    /// 0x13 (CONNACK): the keep alive the server imposes instead of the client's.
    pub server_keep_alive: Option<u16>,
    /// 0x15 (CONNECT, CONNACK, AUTH): extended authentication method.
    pub authentication_method: Option<String>,
    /// 0x16 (CONNECT, CONNACK, AUTH): extended authentication data.
    pub authentication_data: Option<Bytes>,
    /// 0x17 (CONNECT): whether reason strings/user properties may be sent on failures.
    pub request_problem_information: Option<u8>,
    /// 0x18 (Will): seconds to wait after the connection ends before publishing the will.
    pub will_delay_interval: Option<u32>,
    /// 0x19 (CONNECT): whether the client wants Response Information in CONNACK.
    pub request_response_information: Option<u8>,
    /// 0x1A (CONNACK): basis for response topics.
    pub response_information: Option<String>,
    /// 0x1C (CONNACK, DISCONNECT): another server to use.
    pub server_reference: Option<String>,
    /// 0x1F (acknowledgements, DISCONNECT, AUTH): human-readable diagnostics.
    pub reason_string: Option<String>,
    /// 0x21 (CONNECT, CONNACK): most unacknowledged QoS 1/2 PUBLISHes the sender accepts.
    pub receive_maximum: Option<u16>,
    /// 0x22 (CONNECT, CONNACK): highest topic alias the sender accepts.
    pub topic_alias_maximum: Option<u16>,
    /// 0x23 (PUBLISH): a number standing for the topic on this connection.
    pub topic_alias: Option<u16>,
    /// 0x24 (CONNACK): highest QoS the server supports (absent: 2).
    pub maximum_qos: Option<u8>,
    /// 0x25 (CONNACK): whether retained messages are supported (absent: yes).
    pub retain_available: Option<u8>,
    /// 0x26 (every packet): application key/value pairs, kept in order.
    pub user_properties: Vec<(String, String)>,
    /// 0x27 (CONNECT, CONNACK): largest packet the sender accepts.
    pub maximum_packet_size: Option<u32>,
    /// 0x28 (CONNACK): whether wildcard filters are supported (absent: yes).
    pub wildcard_subscription_available: Option<u8>,
    /// 0x29 (CONNACK): whether subscription identifiers are supported (absent: yes).
    pub subscription_identifiers_available: Option<u8>,
    /// 0x2A (CONNACK): whether shared subscriptions are supported (absent: yes).
    pub shared_subscription_available: Option<u8>,
}

/// The empty property list, shared by every packet that carries none.
pub(crate) static EMPTY: Properties = Properties {
    payload_format_indicator: None,
    message_expiry_interval: None,
    content_type: None,
    response_topic: None,
    correlation_data: None,
    subscription_identifiers: Vec::new(),
    session_expiry_interval: None,
    assigned_client_identifier: None,
    server_keep_alive: None,
    authentication_method: None,
    authentication_data: None,
    request_problem_information: None,
    will_delay_interval: None,
    request_response_information: None,
    response_information: None,
    server_reference: None,
    reason_string: None,
    receive_maximum: None,
    topic_alias_maximum: None,
    topic_alias: None,
    maximum_qos: None,
    retain_available: None,
    user_properties: Vec::new(),
    maximum_packet_size: None,
    wildcard_subscription_available: None,
    subscription_identifiers_available: None,
    shared_subscription_available: None,
};

impl Properties {
    /// Whether no property is set (the list encodes as a single 0 byte).
    pub fn is_empty(&self) -> bool {
        *self == EMPTY
    }
}

/// The property list of one packet: nothing at all when empty (every 3.1/3.1.1 packet, and
/// most v5 acknowledgements), so a packet without properties stays small and costs no
/// allocation; boxed [`Properties`] otherwise. It reads as a [`Properties`] (`Deref`), and
/// writing to it (`DerefMut`) allocates the box on first use.
#[derive(Clone, Default)]
pub struct PropertyList(Option<Box<Properties>>);

impl PropertyList {
    /// Whether no property is set; without reading a list that was never allocated.
    pub fn is_empty(&self) -> bool {
        self.0.as_deref().is_none_or(Properties::is_empty)
    }

    /// The properties, moved out (the empty list when there are none).
    pub fn into_inner(self) -> Properties {
        self.0.map(|b| *b).unwrap_or_default()
    }
}

impl Deref for PropertyList {
    type Target = Properties;

    fn deref(&self) -> &Properties {
        self.0.as_deref().unwrap_or(&EMPTY)
    }
}

impl DerefMut for PropertyList {
    fn deref_mut(&mut self) -> &mut Properties {
        self.0.get_or_insert_with(Box::default)
    }
}

impl From<Properties> for PropertyList {
    fn from(p: Properties) -> Self {
        if p.is_empty() {
            PropertyList(None)
        } else {
            PropertyList(Some(Box::new(p)))
        }
    }
}

impl PartialEq for PropertyList {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for PropertyList {}

impl PartialEq<Properties> for PropertyList {
    fn eq(&self, other: &Properties) -> bool {
        **self == *other
    }
}

impl fmt::Debug for PropertyList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// The application properties of an outgoing PUBLISH (MQTT 3.3.2.3), read where the broker
/// keeps them: the encoder takes them through this view, so one shared value serves every
/// v5 recipient without being copied into [`Properties`] per delivery. Content Type, Message
/// Expiry, Topic Alias and Subscription Identifiers are per message or per send, and come
/// from [`crate::Outgoing`] instead.
pub trait PublishProperties: fmt::Debug + Send + Sync {
    /// Payload Format Indicator (0x01): 0 unspecified bytes, 1 UTF-8 (MQTT-3.3.2-4: sent
    /// unaltered).
    fn payload_format_indicator(&self) -> Option<u8>;
    /// Response Topic (0x08).
    fn response_topic(&self) -> Option<&str>;
    /// Correlation Data (0x09).
    fn correlation_data(&self) -> Option<&[u8]>;
    /// Calls `visit` with each User Property (0x26), in order (MQTT-3.3.2-17/18).
    fn user_properties(&self, visit: &mut dyn FnMut(&str, &str));
}

impl PublishProperties for Properties {
    fn payload_format_indicator(&self) -> Option<u8> {
        self.payload_format_indicator
    }

    fn response_topic(&self) -> Option<&str> {
        self.response_topic.as_deref()
    }

    fn correlation_data(&self) -> Option<&[u8]> {
        self.correlation_data.as_deref()
    }

    fn user_properties(&self, visit: &mut dyn FnMut(&str, &str)) {
        for (k, v) in &self.user_properties {
            visit(k, v);
        }
    }
}

/// Whether two views hold the same application properties (for comparing saved sessions in
/// tests and assertions; not on any hot path).
pub(crate) fn same_publish_properties(
    a: &dyn PublishProperties,
    b: &dyn PublishProperties,
) -> bool {
    fn pairs(p: &dyn PublishProperties) -> Vec<(String, String)> {
        let mut out = Vec::new();
        p.user_properties(&mut |k, v| out.push((k.to_owned(), v.to_owned())));
        out
    }
    a.payload_format_indicator() == b.payload_format_indicator()
        && a.response_topic() == b.response_topic()
        && a.correlation_data() == b.correlation_data()
        && pairs(a) == pairs(b)
}
