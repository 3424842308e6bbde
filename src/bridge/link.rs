//! One running bridge: its out queue, its rumqttc connection and three tasks.
//!
//! - the **poller** ([`super::poller`]) owns rumqttc's event loop (never cancelled while
//!   it writes), reconnects with back-off, and books every packet id in the [`Ledger`];
//! - the **conductor** (here) moves local messages from the out queue to rumqttc while
//!   connected, at most `max_inflight` outstanding, and publishes the link's state;
//! - the **inbound** side ([`super::inbound`]) stores remote messages locally, in order,
//!   acknowledging each to the remote only once stored, and reconciles retained values.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch, Notify};

use crate::backoff::Backoff;
use crate::broker::retained::Precondition;
use crate::broker::Broker;
use crate::broker::Delivery;
use crate::durable::Seq;
use crate::model::TopicName;
use crate::model::{Message, Origin, PayloadFormat, QoS, RetainedValue};
use crate::mqtt::Clients;
use crate::shutdown::Shutdown;

use super::config::{BridgeConfig, Protocol};
use super::ledger::Ledger;
use super::outbox::Outbox;
use super::remote::{self, OutProperties};
use super::stats::Stats;
use super::topics::{EchoGuard, Rules};

/// How long a stopping bridge waits for its DISCONNECT to go out.
const GOODBYE: Duration = Duration::from_secs(2);

/// How many 3.1.1 echoes the guard remembers.
const ECHO_MEMORY: usize = 65_536;

/// What a bridge needs from the gateway.
#[derive(Debug, Clone)]
pub(crate) struct Env {
    /// The broker core.
    pub broker: Arc<Broker>,
    /// The MQTT front-end's sessions (the out queue is one).
    pub clients: Clients,
    /// Largest packet accepted from the remote (`[mqtt] max_packet_size`).
    pub max_incoming: usize,
}

/// When a bridge's tasks stop: its own signal (removed or changed by a reload) or the
/// gateway's shutdown. Holding it keeps the gateway's shutdown waiting for the bridge to
/// put its queue away.
#[derive(Debug, Clone)]
pub struct Stop {
    /// Set to stop this bridge.
    own: watch::Receiver<bool>,
    /// The gateway's shutdown.
    gateway: Shutdown,
}

impl Stop {
    /// A stop signal from `own` and the gateway's `shutdown`.
    pub fn new(own: watch::Receiver<bool>, gateway: Shutdown) -> Self {
        Stop { own, gateway }
    }

    /// Wait until told to stop.
    pub async fn wait(&mut self) {
        tokio::select! {
            _ = self.own.wait_for(|s| *s) => {}
            _ = self.gateway.recv() => {}
        }
    }

    /// Whether told to stop.
    pub fn is_stopped(&self) -> bool {
        *self.own.borrow() || self.gateway.is_shutdown()
    }
}

/// What the ledger keeps about an outgoing message.
#[derive(Debug)]
pub(crate) struct Item {
    /// The delivery from the out queue (`None` for a retained value republished after the
    /// remote lost the session).
    pub delivery: Option<Delivery>,
    /// Its durable identity in the bridge's persistent session (`None`: not durable, such
    /// as a QoS 0 message or a republished retained value): acknowledged only once the
    /// remote acknowledged the message.
    pub seq: Option<Seq>,
}

/// The state a bridge's tasks share.
pub(crate) struct Link {
    /// The bridge's name.
    pub name: Arc<str>,
    /// Its configuration.
    pub config: Arc<BridgeConfig>,
    /// Its topic rules.
    pub rules: Rules,
    /// The broker core.
    pub broker: Arc<Broker>,
    /// The durable out queue.
    pub outbox: Outbox,
    /// Requests to rumqttc.
    pub client: remote::Client,
    /// Outgoing messages by packet id.
    pub ledger: Mutex<Ledger<Item>>,
    /// Counters.
    pub stats: Arc<Stats>,
    /// 3.1.1 remotes with `in` rules: the echoes to swallow.
    pub echo: Option<Mutex<EchoGuard>>,
    /// Rung by the poller when an outgoing message completed (the window has room).
    pub room: Notify,
    /// v5: the remote's Maximum Packet Size (0: no limit announced).
    pub remote_max: AtomicU32,
}

/// What the poller tells the conductor.
#[derive(Debug)]
pub(crate) enum Up {
    /// Connected.
    Connected {
        /// The remote kept the session.
        session_present: bool,
        /// v5 Maximum Packet Size of the remote.
        max_packet_size: Option<u32>,
    },
    /// The connection was lost.
    Down,
}

/// Run bridge `config` until `stop`. The out queue is opened (or resumed) first; on the
/// way out, whatever was handed to rumqttc and not acknowledged goes back to the front
/// of the queue (it is on disk anyway), and the state becomes 0.
pub(crate) async fn run(env: Env, config: Arc<BridgeConfig>, stats: Arc<Stats>, mut stop: Stop) {
    let name: Arc<str> = Arc::from(config.name.as_str());
    let rules = Rules::new(&config.topics);
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let outbox = loop {
        match Outbox::open(
            &env.clients,
            &env.broker,
            &name,
            &rules.local_subscriptions(),
            config.max_queued,
        )
        .await
        {
            Ok(o) => break o,
            Err(e) => {
                tracing::error!(bridge = %name, error = %e, "bridge cannot open its out queue; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff.fail()) => {}
                    _ = stop.wait() => return,
                }
            }
        }
    };
    *stats.queue.lock() = Some(outbox.mailbox().clone());
    let (client, eventloop) = match remote::connect(&config, env.max_incoming) {
        Ok(x) => x,
        Err(e) => {
            // Checked at start and before a reload applies; a file changed since.
            tracing::error!(bridge = %name, error = %e, "bridge cannot be set up; it stays down");
            outbox.close().await;
            return;
        }
    };
    // A 3.1.1 remote echoes what the bridge sends on a topic its in subscriptions cover
    // (a `both` rule, or an out and an in rule that overlap remotely).
    let echo = (config.protocol == Protocol::V311
        && config.topics.iter().any(|t| t.comes_in())
        && config.topics.iter().any(|t| t.goes_out()))
    .then(|| Mutex::new(EchoGuard::new(ECHO_MEMORY)));
    let link = Arc::new(Link {
        name: name.clone(),
        config: config.clone(),
        rules,
        broker: env.broker.clone(),
        outbox,
        client,
        ledger: Mutex::new(Ledger::default()),
        stats: stats.clone(),
        echo,
        room: Notify::new(),
        remote_max: AtomicU32::new(0),
    });
    tracing::info!(bridge = %name, remote = %config.url.text, protocol = ?config.protocol, client_id = %config.client_id(), "bridge starting");
    publish_state(&link, false).await;
    let (up_tx, up_rx) = mpsc::unbounded_channel();
    let (in_tx, in_rx) = mpsc::unbounded_channel();
    let (re_tx, re_rx) = mpsc::unbounded_channel();
    let backlog = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut poller = tokio::spawn(super::poller::run(
        link.clone(),
        eventloop,
        up_tx,
        in_tx,
        backlog.clone(),
        stop.clone(),
    ));
    let inbound = tokio::spawn(super::inbound::run(
        link.clone(),
        in_rx,
        backlog,
        re_tx,
        stop.clone(),
    ));
    conduct(&link, up_rx, re_rx, stop).await;

    // Stopping: say goodbye, then put back what the remote has not acknowledged.
    link.client.try_disconnect();
    if tokio::time::timeout(GOODBYE, &mut poller).await.is_err() {
        poller.abort();
    }
    inbound.abort();
    let _ = inbound.await;
    let back: Vec<Delivery> = link
        .ledger
        .lock()
        .drain()
        .into_iter()
        .filter_map(|i| i.delivery)
        .collect();
    link.outbox.put_back(back);
    stats.up.store(false, Ordering::Relaxed);
    publish_state(&link, false).await;
    link.outbox.close().await;
    tracing::info!(bridge = %name, queued = link.outbox.mailbox().len(), "bridge stopped");
}

/// Feed the remote while connected; follow the poller's news.
async fn conduct(
    link: &Arc<Link>,
    mut up: mpsc::UnboundedReceiver<Up>,
    mut republish: mpsc::UnboundedReceiver<Vec<TopicName>>,
    mut stop: Stop,
) {
    let mut connected = false;
    // Retained values to send before the queue (the remote lost the session).
    let mut snapshot: VecDeque<(TopicName, Arc<RetainedValue>)> = VecDeque::new();
    let window = usize::from(link.config.max_inflight);
    loop {
        if connected && !feed(link, &mut snapshot, window).await {
            return;
        }
        let mailbox = link.outbox.mailbox().clone();
        tokio::select! {
            biased;
            _ = stop.wait() => return,
            ev = up.recv() => match ev {
                None => return,
                Some(Up::Connected { session_present, max_packet_size }) => {
                    connected = true;
                    link.remote_max.store(max_packet_size.unwrap_or(0), Ordering::Relaxed);
                    link.stats.up.store(true, Ordering::Relaxed);
                    link.stats.connects.fetch_add(1, Ordering::Relaxed);
                    link.outbox.set_online(true);
                    if !session_present {
                        // The remote lost (or never had) the session: its copies of the
                        // values going out only are republished; values that also come in
                        // are settled by the reconciliation.
                        snapshot = link
                            .broker
                            .retained_topics()
                            .into_iter()
                            .filter(|(t, _)| link.rules.is_out(t) && !link.rules.is_in(t))
                            .collect();
                        if !snapshot.is_empty() {
                            tracing::info!(bridge = %link.name, values = snapshot.len(), "remote session was lost; republishing the retained values that go out");
                        }
                    }
                    publish_state(link, true).await;
                }
                Some(Up::Down) => {
                    connected = false;
                    link.stats.up.store(false, Ordering::Relaxed);
                    link.outbox.set_online(false);
                    publish_state(link, false).await;
                }
            },
            Some(topics) = republish.recv() => {
                for t in topics {
                    if let Some(v) = link.broker.get(&t) {
                        snapshot.push_back((t, v));
                    }
                }
            }
            _ = mailbox.notified(), if connected => {}
            _ = link.room.notified(), if connected => {}
        }
    }
}

/// Hand messages to rumqttc while the window has room: the snapshot first, then the out
/// queue. Returns false when rumqttc is gone.
async fn feed(
    link: &Arc<Link>,
    snapshot: &mut VecDeque<(TopicName, Arc<RetainedValue>)>,
    window: usize,
) -> bool {
    while link.ledger.lock().outstanding() < window {
        let sent = if let Some((t, v)) = snapshot.pop_front() {
            send_retained(link, &t, &v).await
        } else if let Some(d) = link.outbox.mailbox().pop() {
            send_delivery(link, d).await
        } else {
            return true;
        };
        if let Err(e) = sent {
            tracing::debug!(bridge = %link.name, error = %e, "rumqttc is gone");
            return false;
        }
    }
    true
}

/// Send one queued local message out, or drop it (counted) when it cannot go.
async fn send_delivery(link: &Arc<Link>, d: Delivery) -> Result<(), String> {
    let now = Instant::now();
    let seq = d.durable;
    let m = d.message.clone();
    if m.expired(now) {
        link.stats.expired.fetch_add(1, Ordering::Relaxed);
        link.outbox.done(seq);
        return Ok(());
    }
    let Some(out) = link.rules.outward(&m.topic) else {
        // Queued under an earlier configuration's rules.
        tracing::debug!(bridge = %link.name, topic = %m.topic, "queued message no rule sends out now; dropped");
        link.outbox.done(seq);
        return Ok(());
    };
    let qos = d.qos.min(out.qos);
    let props = properties(link, &m, now);
    if too_large(link, &out.topic, &m.payload, props.as_ref()) {
        link.outbox.done(seq);
        return Ok(());
    }
    if let Some(echo) = &link.echo {
        if link.rules.comes_back(&out.topic) {
            echo.lock().sent(&out.topic, &m.payload);
        }
    }
    let retain = d.retain;
    link.ledger.lock().hand(Item {
        delivery: Some(d),
        seq,
    });
    link.client
        .publish(out.topic, qos, retain, m.payload.clone(), props)
        .await
}

/// Republish one local retained value (the remote lost the bridge's session).
async fn send_retained(link: &Arc<Link>, t: &TopicName, v: &RetainedValue) -> Result<(), String> {
    let Some(out) = link.rules.outward(t) else {
        return Ok(());
    };
    let props = (link.config.protocol == Protocol::V5).then(|| OutProperties {
        content_type: v.content_type.as_deref().map(str::to_owned),
        ..OutProperties::default()
    });
    if too_large(link, &out.topic, &v.payload, props.as_ref()) {
        return Ok(());
    }
    if let Some(echo) = &link.echo {
        if link.rules.comes_back(&out.topic) {
            echo.lock().sent(&out.topic, &v.payload);
        }
    }
    link.ledger.lock().hand(Item {
        delivery: None,
        seq: None,
    });
    link.client
        .publish(
            out.topic,
            v.qos.min(out.qos),
            true,
            v.payload.clone(),
            props,
        )
        .await
}

/// The v5 properties a local message carries out: its application properties, its
/// content type, what remains of its expiry.
fn properties(link: &Link, m: &Message, now: Instant) -> Option<OutProperties> {
    if link.config.protocol != Protocol::V5 {
        return None;
    }
    let mut p = OutProperties {
        content_type: m.content_type.as_deref().map(str::to_owned),
        ..OutProperties::default()
    };
    if let Some(props) = &m.properties {
        p.payload_format_indicator = props.payload_format.map(|f| match f {
            PayloadFormat::Bytes => 0,
            PayloadFormat::Utf8 => 1,
        });
        p.response_topic = props.response_topic.clone();
        p.correlation_data = props.correlation_data.clone();
        p.user_properties = props.user.clone();
    }
    p.message_expiry_interval = m.expires_at.map(|at| {
        let left = at.saturating_duration_since(now);
        // Round up: a message with 0.4 s left must not go out as "never expires" (0 is
        // not that, but a remote might read it so) nor as already expired.
        u32::try_from(left.as_secs() + u64::from(left.subsec_nanos() > 0)).unwrap_or(u32::MAX)
    });
    Some(p)
}

/// Whether a PUBLISH exceeds the v5 remote's Maximum Packet Size (MQTT-3.1.2-24: it
/// must not be sent); counted and logged as refused.
fn too_large(link: &Link, topic: &str, payload: &Bytes, props: Option<&OutProperties>) -> bool {
    let max = link.remote_max.load(Ordering::Relaxed);
    if max == 0 {
        return false;
    }
    let size =
        5 + 2 + topic.len() + 2 + 4 + props.map_or(0, OutProperties::size_bound) + payload.len();
    if size <= max as usize {
        return false;
    }
    let n = link.stats.refused.fetch_add(1, Ordering::Relaxed) + 1;
    tracing::warn!(bridge = %link.name, topic, size, max, refused = n, "message larger than the remote's Maximum Packet Size; not sent (MQTT-3.1.2-24)");
    true
}

/// Publish the retained `$SYS/broker/connection/<name>/state`: `1` connected, `0` not
/// (mosquitto's bridge notification, readable over HTTP and CoAP too).
pub(crate) async fn publish_state(link: &Link, up: bool) {
    publish_state_of(&link.broker, &link.name, up).await;
}

/// [`publish_state`] for a bridge by name (also used when a bridge is removed).
pub(crate) async fn publish_state_of(broker: &Broker, name: &str, up: bool) {
    let Ok(topic) = TopicName::parse(&format!("$SYS/broker/connection/{name}/state")) else {
        return;
    };
    let m = Message {
        topic,
        payload: Bytes::from_static(if up { b"1" } else { b"0" }),
        qos: QoS::AtMostOnce,
        retain: true,
        content_type: None,
        origin: Origin::Internal,
        properties: None,
        expires_at: None,
        publisher: None,
        charge: crate::model::Charge::default(),
    };
    if let Err(e) = broker.publish(m, Precondition::none()).await {
        tracing::warn!(bridge = name, error = %e, "bridge state not stored");
    }
}
