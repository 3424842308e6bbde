//! The remote end of a bridge, on rumqttc: one client and event loop, MQTT 3.1.1 or 5,
//! behind one small interface so the rest of the bridge does not care which.
//!
//! rumqttc runs with manual acknowledgements (an `in` message is acknowledged only once it
//! is stored locally) and keeps its own retransmission of unacknowledged outgoing
//! exchanges across reconnects (PUBLISH again, or only PUBREL once PUBREC came), which
//! [`EventLoop::after_error`] puts back in send order.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttc::tokio_rustls::rustls;
use rumqttc::v5::mqttbytes::v5 as m5;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::model::QoS;

use super::config::{BridgeConfig, Protocol, Scheme};

/// Requests rumqttc's channel holds beyond the out window (subscriptions, acknowledgements
/// of `in` messages).
const CHANNEL_SLACK: usize = 1024;

/// A client handle: sends requests to the event loop. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) enum Client {
    /// MQTT 3.1.1.
    V4(rumqttc::AsyncClient),
    /// MQTT 5.
    V5(rumqttc::v5::AsyncClient),
}

/// The event loop: owns the connection; polled by one task only, never cancelled
/// mid-poll (rumqttc's poll is not cancel-safe while it writes).
pub(crate) enum EventLoop {
    /// MQTT 3.1.1.
    V4(Box<rumqttc::EventLoop>),
    /// MQTT 5.
    V5(Box<rumqttc::v5::EventLoop>),
}

/// What the event loop reported, reduced to what the bridge needs.
#[derive(Debug)]
pub(crate) enum Event {
    /// CONNACK accepted.
    Connected {
        /// The remote kept the bridge's session (subscriptions, queued messages).
        session_present: bool,
        /// v5: the largest packet the remote accepts.
        max_packet_size: Option<u32>,
    },
    /// A PUBLISH went out under this packet id (0 for QoS 0); also for re-sends.
    Sent(u16),
    /// A PUBLISH was held back: its packet id is still in use by an unacknowledged one;
    /// it goes out (`Sent`) once that one is acknowledged.
    Collided(u16),
    /// The exchange of this packet id is complete (PUBACK, or PUBCOMP for QoS 2).
    Done(u16),
    /// A PUBLISH from the remote.
    Message(Inbound),
    /// A SUBACK (`granted`: one entry per filter, `None` for a refusal).
    SubAck(Vec<Option<QoS>>),
    /// An UNSUBACK.
    UnsubAck,
    /// Our DISCONNECT went out (a stopping bridge): nothing more will happen.
    Gone,
    /// Anything else (pings, acknowledgements we sent).
    Other,
}

/// A PUBLISH from the remote, with what is needed to acknowledge it later.
#[derive(Debug)]
pub(crate) struct Inbound {
    /// The remote topic.
    pub topic: String,
    /// The payload.
    pub payload: Bytes,
    /// Its QoS.
    pub qos: QoS,
    /// Its RETAIN flag (set on the remote's retained values sent at subscription, and
    /// on live ones too with v5 Retain As Published).
    pub retain: bool,
    /// v5 Content Type.
    pub content_type: Option<Arc<str>>,
    /// v5 application properties (User Properties, Response Topic, Correlation Data,
    /// Payload Format Indicator).
    pub properties: Option<Arc<crate::model::Properties>>,
    /// v5 Message Expiry, from now.
    pub expires_at: Option<Instant>,
    /// The acknowledgement to send once stored; `None` for QoS 0.
    pub ack: Option<AckToken>,
}

/// Enough of a PUBLISH to acknowledge it (PUBACK, or PUBREC for QoS 2).
#[derive(Debug, Clone, Copy)]
pub(crate) struct AckToken {
    /// Its QoS (1 or 2).
    qos: QoS,
    /// Its packet id.
    pkid: u16,
}

/// v5 properties of an outgoing PUBLISH, from the local message.
#[derive(Debug, Default, Clone)]
pub(crate) struct OutProperties {
    /// Content Type.
    pub content_type: Option<String>,
    /// Payload Format Indicator.
    pub payload_format_indicator: Option<u8>,
    /// Response Topic.
    pub response_topic: Option<String>,
    /// Correlation Data.
    pub correlation_data: Option<Bytes>,
    /// User Properties, in order.
    pub user_properties: Vec<(String, String)>,
    /// What remains of the Message Expiry Interval, seconds.
    pub message_expiry_interval: Option<u32>,
}

impl OutProperties {
    /// Bytes these take in a PUBLISH, generously (for the size check against the
    /// remote's Maximum Packet Size).
    pub(crate) fn size_bound(&self) -> usize {
        let s = |o: &Option<String>| o.as_ref().map_or(0, |v| v.len() + 3);
        s(&self.content_type)
            + s(&self.response_topic)
            + self.correlation_data.as_ref().map_or(0, |v| v.len() + 3)
            + self
                .user_properties
                .iter()
                .map(|(k, v)| k.len() + v.len() + 5)
                .sum::<usize>()
            + 16
    }
}

/// Build the client and event loop for `cfg`. `max_incoming` bounds the packets the
/// remote may send (`[mqtt] max_packet_size`). The TLS files are read here: an error
/// names the file.
pub(crate) fn connect(
    cfg: &BridgeConfig,
    max_incoming: usize,
) -> Result<(Client, EventLoop), String> {
    let transport = transport(cfg)?;
    let (host, port) = match cfg.url.scheme {
        Scheme::Ws | Scheme::Wss => (cfg.url.websocket_url(), cfg.url.port),
        _ => (cfg.url.host.clone(), cfg.url.port),
    };
    let cap = usize::from(cfg.max_inflight) + CHANNEL_SLACK;
    let keepalive = Duration::from_secs(u64::from(cfg.keepalive_secs.max(5)));
    match cfg.protocol {
        Protocol::V311 => {
            let mut o = rumqttc::MqttOptions::new(cfg.client_id(), host, port);
            o.set_transport(transport)
                .set_keep_alive(keepalive)
                .set_clean_session(cfg.clean_start)
                .set_manual_acks(true)
                .set_inflight(cfg.max_inflight)
                .set_request_channel_capacity(cap)
                .set_pending_throttle(Duration::ZERO)
                // Outgoing size is the remote's business; incoming is bounded like any client's.
                .set_max_packet_size(max_incoming, usize::MAX);
            if let Some(user) = &cfg.username {
                o.set_credentials(user.clone(), cfg.password.clone().unwrap_or_default());
            }
            let (c, l) = rumqttc::AsyncClient::new(o, cap);
            Ok((Client::V4(c), EventLoop::V4(Box::new(l))))
        }
        Protocol::V5 => {
            let mut o = rumqttc::v5::MqttOptions::new(cfg.client_id(), host, port);
            o.set_transport(transport)
                .set_keep_alive(keepalive)
                .set_clean_start(cfg.clean_start)
                .set_manual_acks(true)
                .set_outgoing_inflight_upper_limit(cfg.max_inflight)
                .set_request_channel_capacity(cap)
                .set_pending_throttle(Duration::ZERO)
                .set_max_packet_size(Some(u32::try_from(max_incoming).unwrap_or(u32::MAX)));
            if !cfg.clean_start {
                // v5 ends a session at disconnect unless told otherwise (3.1.2.11.2).
                o.set_connect_properties(m5::ConnectProperties {
                    session_expiry_interval: Some(u32::MAX),
                    ..m5::ConnectProperties::new()
                });
            }
            if let Some(user) = &cfg.username {
                o.set_credentials(user.clone(), cfg.password.clone().unwrap_or_default());
            }
            let (c, l) = rumqttc::v5::AsyncClient::new(o, cap);
            Ok((Client::V5(c), EventLoop::V5(Box::new(l))))
        }
    }
}

/// Check what `connect` would read from disk (the TLS files and roots), so a bad file is
/// reported when the configuration is loaded, not when the bridge first dials.
pub(crate) fn check(cfg: &BridgeConfig) -> Result<(), String> {
    transport(cfg).map(|_| ())
}

/// The rumqttc transport for the URL, with TLS configured from the bridge's files.
fn transport(cfg: &BridgeConfig) -> Result<rumqttc::Transport, String> {
    Ok(match cfg.url.scheme {
        Scheme::Mqtt => rumqttc::Transport::Tcp,
        Scheme::Ws => rumqttc::Transport::Ws,
        Scheme::Mqtts => rumqttc::Transport::Tls(tls(cfg)?),
        Scheme::Wss => rumqttc::Transport::Wss(tls(cfg)?),
    })
}

/// rumqttc's rustls client configuration: `ca_file` (or the system's roots) and the
/// optional client certificate. rumqttc links its own rustls, so this builds that
/// version's configuration from the shared DER types.
fn tls(cfg: &BridgeConfig) -> Result<rumqttc::TlsConfiguration, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in crate::roots::load(cfg.ca_file.as_deref())? {
        roots
            .add(cert)
            .map_err(|e| format!("a CA certificate cannot be used: {e}"))?;
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let config = match (&cfg.cert_file, &cfg.key_file) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("cert_file {}: {e}", cert.display()))?;
            if chain.is_empty() {
                return Err(format!(
                    "cert_file {}: no PEM certificate in it",
                    cert.display()
                ));
            }
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("key_file {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("cert_file/key_file: {e}"))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(rumqttc::TlsConfiguration::Rustls(Arc::new(config)))
}

fn qos4(q: QoS) -> rumqttc::QoS {
    match q {
        QoS::AtMostOnce => rumqttc::QoS::AtMostOnce,
        QoS::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
        QoS::ExactlyOnce => rumqttc::QoS::ExactlyOnce,
    }
}

fn qos5(q: QoS) -> rumqttc::v5::mqttbytes::QoS {
    match q {
        QoS::AtMostOnce => rumqttc::v5::mqttbytes::QoS::AtMostOnce,
        QoS::AtLeastOnce => rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        QoS::ExactlyOnce => rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
    }
}

fn from4(q: rumqttc::QoS) -> QoS {
    match q {
        rumqttc::QoS::AtMostOnce => QoS::AtMostOnce,
        rumqttc::QoS::AtLeastOnce => QoS::AtLeastOnce,
        rumqttc::QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

fn from5(q: rumqttc::v5::mqttbytes::QoS) -> QoS {
    match q {
        rumqttc::v5::mqttbytes::QoS::AtMostOnce => QoS::AtMostOnce,
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce => QoS::AtLeastOnce,
        rumqttc::v5::mqttbytes::QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

impl Client {
    /// Queue a PUBLISH (it is `Sent` when the loop takes it).
    pub(crate) async fn publish(
        &self,
        topic: String,
        qos: QoS,
        retain: bool,
        payload: Bytes,
        properties: Option<OutProperties>,
    ) -> Result<(), String> {
        match self {
            Client::V4(c) => c
                .publish_bytes(topic, qos4(qos), retain, payload)
                .await
                .map_err(|e| e.to_string()),
            Client::V5(c) => {
                let p = properties.unwrap_or_default();
                let props = m5::PublishProperties {
                    payload_format_indicator: p.payload_format_indicator,
                    message_expiry_interval: p.message_expiry_interval,
                    topic_alias: None,
                    response_topic: p.response_topic,
                    correlation_data: p.correlation_data,
                    user_properties: p.user_properties,
                    subscription_identifiers: Vec::new(),
                    content_type: p.content_type,
                };
                c.publish_bytes_with_properties(topic, qos5(qos), retain, payload, props)
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// Subscribe to the `in` filters. v5: No Local (the remote never sends back what the
    /// bridge published) and Retain As Published (a retained message stays retained
    /// locally), retained values sent (Retain Handling 0).
    pub(crate) async fn subscribe(&self, filters: &[(String, QoS)]) -> Result<(), String> {
        match self {
            Client::V4(c) => c
                .subscribe_many(
                    filters
                        .iter()
                        .map(|(f, q)| rumqttc::SubscribeFilter::new(f.clone(), qos4(*q))),
                )
                .await
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .subscribe_many(filters.iter().map(|(f, q)| filter5(f, *q, false)))
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// A request whose answer comes after every retained value the previous SUBSCRIBE
    /// made the remote send right away: v5, the first filter again with Retain Handling
    /// 2 (same subscription, no retained values); 3.1.1, an UNSUBSCRIBE of a filter never
    /// subscribed (3.1.1's UNSUBACK carries no error).
    pub(crate) async fn marker(&self, first: &(String, QoS)) -> Result<(), String> {
        match self {
            Client::V4(c) => c
                .unsubscribe("ponte/bridge/reconciliation-marker")
                .await
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .subscribe_many([filter5(&first.0, first.1, true)])
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// Acknowledge an `in` message (PUBACK, or PUBREC for QoS 2).
    pub(crate) async fn ack(&self, token: AckToken) -> Result<(), String> {
        match self {
            Client::V4(c) => {
                let mut p = rumqttc::Publish::new("", qos4(token.qos), Vec::new());
                p.pkid = token.pkid;
                c.ack(&p).await.map_err(|e| e.to_string())
            }
            Client::V5(c) => {
                let mut p = m5::Publish::new("", qos5(token.qos), Vec::new(), None);
                p.pkid = token.pkid;
                c.ack(&p).await.map_err(|e| e.to_string())
            }
        }
    }

    /// Send DISCONNECT if the loop is still polled (a bridge that stops says goodbye).
    pub(crate) fn try_disconnect(&self) {
        let _ = match self {
            Client::V4(c) => c.try_disconnect().map_err(|e| e.to_string()),
            Client::V5(c) => c.try_disconnect().map_err(|e| e.to_string()),
        };
    }
}

fn filter5(f: &str, q: QoS, marker: bool) -> m5::Filter {
    m5::Filter {
        path: f.to_owned(),
        qos: qos5(q),
        nolocal: true,
        preserve_retain: true,
        retain_forward_rule: if marker {
            m5::RetainForwardRule::Never
        } else {
            m5::RetainForwardRule::OnEverySubscribe
        },
    }
}

impl EventLoop {
    /// The next event; `Err` (text) when the connection failed or could not be made. The
    /// next call after an error reconnects.
    pub(crate) async fn poll(&mut self) -> Result<Event, String> {
        match self {
            EventLoop::V4(l) => {
                let ev = l.poll().await.map_err(|e| describe4(&e))?;
                Ok(match ev {
                    rumqttc::Event::Incoming(p) => match p {
                        rumqttc::Packet::ConnAck(a) => Event::Connected {
                            session_present: a.session_present,
                            max_packet_size: None,
                        },
                        rumqttc::Packet::PubAck(a) => Event::Done(a.pkid),
                        rumqttc::Packet::PubComp(a) => Event::Done(a.pkid),
                        rumqttc::Packet::SubAck(a) => Event::SubAck(
                            a.return_codes
                                .iter()
                                .map(|c| match c {
                                    rumqttc::SubscribeReasonCode::Success(q) => Some(from4(*q)),
                                    rumqttc::SubscribeReasonCode::Failure => None,
                                })
                                .collect(),
                        ),
                        rumqttc::Packet::UnsubAck(_) => Event::UnsubAck,
                        rumqttc::Packet::Publish(p) => {
                            let qos = from4(p.qos);
                            Event::Message(Inbound {
                                topic: p.topic,
                                payload: p.payload,
                                qos,
                                retain: p.retain,
                                content_type: None,
                                properties: None,
                                expires_at: None,
                                ack: (qos != QoS::AtMostOnce)
                                    .then_some(AckToken { qos, pkid: p.pkid }),
                            })
                        }
                        _ => Event::Other,
                    },
                    rumqttc::Event::Outgoing(o) => match o {
                        rumqttc::Outgoing::Publish(pkid) => Event::Sent(pkid),
                        rumqttc::Outgoing::AwaitAck(pkid) => Event::Collided(pkid),
                        rumqttc::Outgoing::Disconnect => Event::Gone,
                        _ => Event::Other,
                    },
                })
            }
            EventLoop::V5(l) => {
                let ev = l.poll().await.map_err(|e| describe5(&e))?;
                Ok(match ev {
                    rumqttc::v5::Event::Incoming(p) => match p {
                        m5::Packet::ConnAck(a) => Event::Connected {
                            session_present: a.session_present,
                            max_packet_size: a.properties.as_ref().and_then(|p| p.max_packet_size),
                        },
                        m5::Packet::PubAck(a) => Event::Done(a.pkid),
                        m5::Packet::PubComp(a) => Event::Done(a.pkid),
                        m5::Packet::SubAck(a) => Event::SubAck(
                            a.return_codes
                                .iter()
                                .map(|c| match c {
                                    m5::SubscribeReasonCode::Success(q) => Some(from5(*q)),
                                    _ => None,
                                })
                                .collect(),
                        ),
                        m5::Packet::UnsubAck(_) => Event::UnsubAck,
                        m5::Packet::Publish(p) => inbound5(p),
                        _ => Event::Other,
                    },
                    rumqttc::v5::Event::Outgoing(o) => match o {
                        rumqttc::Outgoing::Publish(pkid) => Event::Sent(pkid),
                        rumqttc::Outgoing::AwaitAck(pkid) => Event::Collided(pkid),
                        rumqttc::Outgoing::Disconnect => Event::Gone,
                        _ => Event::Other,
                    },
                })
            }
        }
    }

    /// After an error (rumqttc moved its unfinished exchanges and unread requests into its
    /// `pending` list, to go out first on the next connection): order them as they were
    /// first sent (`order`: packet id → send rank; rumqttc lists them by packet id, which
    /// wraps), PUBRELs first (the remote already has those messages), then the requests
    /// never sent, in their order. Returns the packet ids rumqttc will resume (any other
    /// exchange the bridge thought in flight was dropped by rumqttc: a v5 PUBACK/PUBREC
    /// with an error reason code ends it so), and the id of a held-back PUBLISH released
    /// because its id's previous message was dropped.
    pub(crate) fn after_error(&mut self, order: &HashMap<u16, u64>) -> (HashSet<u16>, Option<u16>) {
        fn rank(order: &HashMap<u16, u64>, pkid: u16) -> u64 {
            order.get(&pkid).copied().unwrap_or(u64::MAX)
        }
        let mut kept = HashSet::new();
        let mut released = None;
        match self {
            EventLoop::V4(l) => {
                let (mut rels, mut pubs, mut rest) = (Vec::new(), Vec::new(), Vec::new());
                for r in l.pending.drain(..) {
                    match r {
                        rumqttc::Request::PubRel(ref p) => {
                            kept.insert(p.pkid);
                            rels.push(r);
                        }
                        rumqttc::Request::Publish(ref p) if p.pkid != 0 => {
                            kept.insert(p.pkid);
                            pubs.push((rank(order, p.pkid), r));
                        }
                        other => rest.push(other),
                    }
                }
                // A publish held back for an id whose message rumqttc dropped would wait
                // for an acknowledgement that never comes: it goes out with the others.
                if l.state
                    .collision
                    .as_ref()
                    .is_some_and(|c| !kept.contains(&c.pkid))
                {
                    if let Some(c) = l.state.collision.take() {
                        released = Some(c.pkid);
                        pubs.push((rank(order, c.pkid), rumqttc::Request::Publish(c)));
                    }
                }
                pubs.sort_by_key(|(k, _)| *k);
                l.pending.extend(rels);
                l.pending.extend(pubs.into_iter().map(|(_, r)| r));
                l.pending.extend(rest);
            }
            EventLoop::V5(l) => {
                let (mut rels, mut pubs, mut rest) = (Vec::new(), Vec::new(), Vec::new());
                for r in l.pending.drain(..) {
                    match r {
                        rumqttc::v5::Request::PubRel(ref p) => {
                            kept.insert(p.pkid);
                            rels.push(r);
                        }
                        rumqttc::v5::Request::Publish(ref p) if p.pkid != 0 => {
                            kept.insert(p.pkid);
                            pubs.push((rank(order, p.pkid), r));
                        }
                        other => rest.push(other),
                    }
                }
                if l.state
                    .collision
                    .as_ref()
                    .is_some_and(|c| !kept.contains(&c.pkid))
                {
                    if let Some(c) = l.state.collision.take() {
                        released = Some(c.pkid);
                        pubs.push((rank(order, c.pkid), rumqttc::v5::Request::Publish(c)));
                    }
                }
                pubs.sort_by_key(|(k, _)| *k);
                l.pending.extend(rels);
                l.pending.extend(pubs.into_iter().map(|(_, r)| r));
                l.pending.extend(rest);
            }
        }
        (kept, released)
    }
}

fn inbound5(p: m5::Publish) -> Event {
    let qos = from5(p.qos);
    let topic = String::from_utf8_lossy(&p.topic).into_owned();
    let mut content_type = None;
    let mut expires_at = None;
    let mut properties = None;
    if let Some(props) = p.properties {
        content_type = props.content_type.as_deref().map(Arc::from);
        expires_at = props
            .message_expiry_interval
            .map(|s| Instant::now() + Duration::from_secs(u64::from(s)));
        let app = crate::model::Properties {
            // Only 0 and 1 are defined (MQTT-3.3.2-4 forwards them unaltered); anything
            // else is not a format the local side could pass on.
            payload_format: match props.payload_format_indicator {
                Some(0) => Some(crate::model::PayloadFormat::Bytes),
                Some(1) => Some(crate::model::PayloadFormat::Utf8),
                _ => None,
            },
            response_topic: props.response_topic,
            correlation_data: props.correlation_data,
            user: props.user_properties,
        };
        if !app.is_empty() {
            properties = Some(Arc::new(app));
        }
    }
    Event::Message(Inbound {
        topic,
        payload: p.payload,
        qos,
        retain: p.retain,
        content_type,
        properties,
        expires_at,
        ack: (qos != QoS::AtMostOnce).then_some(AckToken { qos, pkid: p.pkid }),
    })
}

/// A connection error in a few words (rumqttc's Display of some is terse).
fn describe4(e: &rumqttc::ConnectionError) -> String {
    match e {
        rumqttc::ConnectionError::ConnectionRefused(code) => {
            format!("the remote refused the connection: {code:?}")
        }
        other => other.to_string(),
    }
}

fn describe5(e: &rumqttc::v5::ConnectionError) -> String {
    match e {
        rumqttc::v5::ConnectionError::ConnectionRefused(code) => {
            format!("the remote refused the connection: {code:?}")
        }
        other => other.to_string(),
    }
}
