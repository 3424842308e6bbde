//! rumqttc as a well-behaved client: its 3.1.1 client ([`Client`]) and its 5.0 client
//! ([`R5`]), each with its event loop in a task and every wait bounded.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnAck, ConnectionError, Event, EventLoop, MqttOptions, Packet, Publish, QoS,
    SubscribeFilter, SubscribeReasonCode,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::wait::{within, QUIET, WAIT};

/// Options for a client of `addr` with a short keepalive and room for large packets.
pub fn options(addr: SocketAddr, id: &str) -> MqttOptions {
    let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(5));
    o.set_max_packet_size(4 * 1024 * 1024, 4 * 1024 * 1024);
    o
}

/// [`options`] with a user name and password.
pub fn login(addr: SocketAddr, id: &str, user: &str, password: &str) -> MqttOptions {
    let mut o = options(addr, id);
    o.set_credentials(user, password);
    o
}

/// [`options`] for a persistent session (Clean Session 0).
pub fn persistent(addr: SocketAddr, id: &str) -> MqttOptions {
    let mut o = options(addr, id);
    o.set_clean_session(false);
    o
}

/// A rumqttc 3.1.1 client whose event loop runs in a task, its events forwarded to a
/// channel. The loop stops at the first error (no automatic reconnection), so "the server
/// closed the connection" is observable as an `Err` event.
pub struct Client {
    pub client: AsyncClient,
    events: mpsc::UnboundedReceiver<Result<Event, ConnectionError>>,
    task: JoinHandle<()>,
    /// PUBLISHes that arrived while waiting for something else (a PUBACK, a SUBACK): kept,
    /// in order, for [`Client::publish_rx`], so no delivery is silently skipped.
    pending: VecDeque<Publish>,
}

impl Client {
    /// Connect with default options (clean session, keepalive 5 s).
    pub async fn connect(addr: SocketAddr, id: &str) -> (Client, ConnAck) {
        Self::connect_with(options(addr, id)).await
    }

    /// Connect with `opts`; returns once CONNACK arrived (and asserts it accepted).
    pub async fn connect_with(opts: MqttOptions) -> (Client, ConnAck) {
        Self::try_connect(opts)
            .await
            .unwrap_or_else(|e| panic!("connection failed before CONNACK: {e:?}"))
    }

    /// Connect with `opts`: the client once CONNACK accepted, or the error that came first
    /// (a refusing CONNACK is `ConnectionError::ConnectionRefused`).
    pub async fn try_connect(opts: MqttOptions) -> Result<(Client, ConnAck), ConnectionError> {
        match Self::connect_within(opts, WAIT).await {
            Some(outcome) => outcome,
            None => panic!("timed out after {WAIT:?} waiting for CONNACK"),
        }
    }

    /// [`Client::try_connect`], or `None` when neither CONNACK nor an error came within `d`
    /// (a server that silently holds the connection).
    pub async fn connect_within(
        opts: MqttOptions,
        d: Duration,
    ) -> Option<Result<(Client, ConnAck), ConnectionError>> {
        let (client, eventloop) = AsyncClient::new(opts, 64);
        let mut c = Client::spawn(client, eventloop);
        let first = tokio::time::timeout(d, async {
            loop {
                match c.events.recv().await {
                    Some(Ok(Event::Incoming(Packet::ConnAck(a)))) => break Ok(a),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break Err(e),
                    None => panic!("event loop ended before CONNACK"),
                }
            }
        });
        Some(first.await.ok()?.map(|ack| (c, ack)))
    }

    /// A client of `addr` subscribed to `filter` at QoS 1, returned after SUBACK.
    pub async fn subscriber(addr: SocketAddr, id: &str, filter: &str) -> Client {
        let (mut c, _) = Client::connect(addr, id).await;
        c.subscribe(filter, QoS::AtLeastOnce).await;
        c
    }

    fn spawn(client: AsyncClient, mut eventloop: EventLoop) -> Client {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let ev = eventloop.poll().await;
                let stop = ev.is_err();
                if tx.send(ev).is_err() || stop {
                    break;
                }
            }
        });
        Client {
            client,
            events: rx,
            task,
            pending: VecDeque::new(),
        }
    }

    /// The next event (or error), bounded by [`WAIT`].
    pub async fn next(&mut self) -> Result<Event, ConnectionError> {
        within(WAIT, "an MQTT event", self.events.recv())
            .await
            .expect("event loop task ended")
    }

    /// Wait for the first incoming packet for which `f` returns `Some`, skipping the rest
    /// (skipped PUBLISHes are kept for [`Client::publish_rx`]). Panics on connection error
    /// or timeout.
    pub async fn expect<T>(&mut self, what: &str, mut f: impl FnMut(&Packet) -> Option<T>) -> T {
        let pending = &mut self.pending;
        let events = &mut self.events;
        within(WAIT, what, async {
            loop {
                match events.recv().await {
                    Some(Ok(Event::Incoming(p))) => {
                        if let Some(v) = f(&p) {
                            return v;
                        }
                        if let Packet::Publish(p) = p {
                            pending.push_back(p);
                        }
                    }
                    Some(Ok(Event::Outgoing(_))) => {}
                    Some(Err(e)) => panic!("connection error while waiting for {what}: {e:?}"),
                    None => panic!("event loop ended while waiting for {what}"),
                }
            }
        })
        .await
    }

    /// Wait for an incoming packet of the kind `is` accepts.
    pub async fn expect_kind(&mut self, what: &str, is: fn(&Packet) -> bool) {
        self.expect(what, |p| is(p).then_some(())).await
    }

    /// The next incoming PUBLISH.
    pub async fn publish_rx(&mut self) -> Publish {
        if let Some(p) = self.pending.pop_front() {
            return p;
        }
        self.expect("an incoming PUBLISH", |p| match p {
            Packet::Publish(p) => Some(p.clone()),
            _ => None,
        })
        .await
    }

    /// Incoming PUBLISHes up to and including the first one whose payload is `sentinel`.
    pub async fn publishes_until(&mut self, sentinel: &[u8]) -> Vec<Publish> {
        let mut out = Vec::new();
        loop {
            let p = self.publish_rx().await;
            let done = p.payload.as_ref() == sentinel;
            out.push(p);
            if done {
                return out;
            }
        }
    }

    /// Every PUBLISH received until nothing came for `quiet`: (topic, payload).
    pub async fn drain(&mut self, quiet: Duration) -> Vec<(String, bytes::Bytes)> {
        let mut out: Vec<_> = self
            .pending
            .drain(..)
            .map(|p| (p.topic, p.payload))
            .collect();
        while let Ok(Some(ev)) = tokio::time::timeout(quiet, self.events.recv()).await {
            if let Ok(Event::Incoming(Packet::Publish(p))) = ev {
                out.push((p.topic, p.payload));
            }
        }
        out
    }

    /// Assert that no PUBLISH arrives for [`QUIET`].
    pub async fn expect_silence(&mut self, what: &str) {
        let got = self.drain(QUIET).await;
        assert!(got.is_empty(), "{what}: expected no PUBLISH, got {got:?}");
    }

    /// Subscribe to one filter and wait for its SUBACK; returns the granted code.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> SubscribeReasonCode {
        self.client.subscribe(filter, qos).await.unwrap();
        let codes = self.suback().await;
        assert_eq!(codes.len(), 1);
        codes[0]
    }

    /// Subscribe to `filters` at QoS 1 in one SUBSCRIBE; the SUBACK's codes.
    pub async fn subscribe_all(&mut self, filters: &[&str]) -> Vec<SubscribeReasonCode> {
        let filters = filters
            .iter()
            .map(|f| SubscribeFilter::new(f.to_string(), QoS::AtLeastOnce));
        self.client.subscribe_many(filters).await.unwrap();
        self.suback().await
    }

    /// Wait for the next SUBACK; its return codes.
    pub async fn suback(&mut self) -> Vec<SubscribeReasonCode> {
        self.expect("SUBACK", |p| match p {
            Packet::SubAck(s) => Some(s.return_codes.clone()),
            _ => None,
        })
        .await
    }

    /// Publish and, for QoS 1/2, wait for the exchange to complete (PUBACK / PUBCOMP).
    pub async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: &[u8]) {
        self.client
            .publish(topic, qos, retain, payload.to_vec())
            .await
            .unwrap();
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                self.expect_kind("PUBACK", |p| matches!(p, Packet::PubAck(_)))
                    .await
            }
            QoS::ExactlyOnce => {
                self.expect_kind("PUBCOMP", |p| matches!(p, Packet::PubComp(_)))
                    .await
            }
        }
    }

    /// Publish each `(topic, qos, retain, payload)` in turn, completing each exchange.
    pub async fn publish_all(&mut self, messages: &[(&str, QoS, bool, &[u8])]) {
        for (topic, qos, retain, payload) in messages {
            self.publish(topic, *qos, *retain, payload).await;
        }
    }

    /// Publish each `(topic, payload)` at QoS 1, not retained.
    pub async fn publish_each(&mut self, messages: &[(&str, &[u8])]) {
        for (topic, payload) in messages {
            self.publish(topic, QoS::AtLeastOnce, false, payload).await;
        }
    }

    /// Wait until the server closes the connection (the event loop reports an error).
    pub async fn closed_by_server(&mut self, what: &str) -> ConnectionError {
        within(WAIT, what, async {
            loop {
                match self.events.recv().await {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return e,
                    None => panic!("event loop ended without an error while waiting for {what}"),
                }
            }
        })
        .await
    }

    /// Whether the server closed the connection within `d`.
    pub async fn closed_within(&mut self, d: Duration) -> bool {
        tokio::time::timeout(d, async {
            while let Some(Ok(_)) = self.events.recv().await {}
        })
        .await
        .is_ok()
    }

    /// Send DISCONNECT and wait until the server has processed it and closed the socket.
    pub async fn disconnect(mut self) {
        self.client.disconnect().await.unwrap();
        let _ = self
            .closed_by_server("the server to close after DISCONNECT")
            .await;
    }

    /// Drop the TCP connection without DISCONNECT (an abnormal close for the server).
    pub async fn drop_socket(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One-shot publish at QoS 1 from a fresh client, which then disconnects.
pub async fn mqtt_publish(addr: SocketAddr, topic: &str, payload: &[u8], retain: bool) {
    let (mut m, _) = Client::connect(addr, &format!("pub-{}", rand_id())).await;
    m.publish(topic, QoS::AtLeastOnce, retain, payload).await;
    m.disconnect().await;
}

/// A number no other call in this test process returns (for client ids).
pub fn rand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    N.fetch_add(1, Ordering::Relaxed) ^ (u64::from(std::process::id()) << 20)
}

// ---------------------------------------------------------------------------------------
// rumqttc 5.0

use rumqttc::v5::mqttbytes::v5::ConnectReturnCode as Code5;
use rumqttc::v5::{ConnectionError as ConnErr5, Event as Event5, Incoming, StateError};

/// Options for a rumqttc 5.0 client of `addr`, keepalive 5 s.
pub fn options5(addr: SocketAddr, id: &str) -> rumqttc::v5::MqttOptions {
    let mut o = rumqttc::v5::MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(5));
    o
}

/// A connected rumqttc 5.0 client; incoming packets and the error that ends the event loop
/// land in a channel (state errors such as a refused PUBACK named by their reason).
pub struct R5 {
    pub client: rumqttc::v5::AsyncClient,
    rx: mpsc::UnboundedReceiver<Result<Incoming, String>>,
    task: JoinHandle<()>,
}

impl Drop for R5 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl R5 {
    /// Connect with `o`: the client once CONNACK accepted, or the refusal code.
    pub async fn connect(o: rumqttc::v5::MqttOptions) -> Result<R5, Code5> {
        let (client, mut el) = rumqttc::v5::AsyncClient::new(o, 64);
        within(WAIT, "5.0 CONNACK", async {
            loop {
                match el.poll().await {
                    Ok(Event5::Incoming(Incoming::ConnAck(_))) => return Ok(()),
                    Ok(_) => {}
                    Err(ConnErr5::ConnectionRefused(code)) => return Err(code),
                    Err(e) => panic!("5.0 connection failed: {e}"),
                }
            }
        })
        .await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event5::Incoming(p)) => {
                        let _ = tx.send(Ok(p));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = tx.send(Err(match e {
                            ConnErr5::MqttState(StateError::PubAckFail { reason }) => {
                                format!("PubAckFail {reason:?}")
                            }
                            ConnErr5::MqttState(StateError::SubFail { reason }) => {
                                format!("SubFail {reason:?}")
                            }
                            other => other.to_string(),
                        }));
                        break;
                    }
                }
            }
        });
        Ok(R5 { client, rx, task })
    }

    /// The next incoming packet or error.
    pub async fn next(&mut self) -> Result<Incoming, String> {
        within(WAIT, "a 5.0 packet", self.rx.recv())
            .await
            .expect("event loop alive")
    }

    /// The first incoming packet for which `f` returns `Some`; panics on an error.
    pub async fn expect<T>(&mut self, what: &str, mut f: impl FnMut(Incoming) -> Option<T>) -> T {
        loop {
            match self.next().await.map(&mut f) {
                Ok(Some(v)) => return v,
                Ok(None) => {}
                Err(e) => panic!("5.0 connection error while waiting for {what}: {e}"),
            }
        }
    }

    /// Skip incoming packets until the event loop ends; its error.
    pub async fn error(&mut self) -> String {
        loop {
            if let Err(e) = self.next().await {
                return e;
            }
        }
    }
}
