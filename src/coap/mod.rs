//! The CoAP front-end: one UDP socket with one task owning the sans-IO
//! [`ponte_coap::Endpoint`], and (with `[coap] tcp = true`) a TCP listener on the same port
//! number with one task per connection owning a [`ponte_coap::TcpConnection`] (RFC 8323).
//!
//! Both transports share `Front`: requests are translated into broker calls (reads are
//! answered at once from the retained index; writes go through [`Broker::publish`] as
//! futures polled concurrently by the machine's own task — no task spawned per write — so a
//! durable write never stalls the socket, concurrent writes share a sync, and each is
//! answered once its publish returned; one that is done at once, as with `--memory`, is
//! answered in the pass that read it). Observations subscribe one mailbox per
//! endpoint/connection to each observed topic; what arrives in it becomes notifications.

pub mod dtls;
pub mod hello_verify;
mod resource;
mod tcp;

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use ponte_coap::{Endpoint, Event, NotifyPolicy, RequestId, Response, TcpConnection};
use tokio::net::{TcpListener, UdpSocket};

use crate::auth::Auth;
use crate::broker::mailbox::{Mailbox, OverflowPolicy};
use crate::broker::Broker;
use crate::config::{CoapNotify, Config};
use crate::limits::{Limits, RateLimiters};
use crate::model::{Message, QoS, TopicFilter, TopicName};
use crate::shutdown::Shutdown;

pub use dtls::{DtlsListener, DtlsStats};
pub(crate) use resource::Caller;
pub use tcp::serve_tcp;

/// Largest datagram read from the socket; bigger ones are truncated by the OS and then
/// fail to parse (counted as malformed), never processed as partial requests.
const MAX_DATAGRAM: usize = 65_535;

/// How often binding UDP and TCP to one free port is retried when port 0 was asked for
/// and the port the OS picked for UDP is taken for TCP.
const BIND_ATTEMPTS: usize = 16;

/// Datagrams read from the socket per wake-up before the endpoint's events and transmits
/// are handled: under load one pass of the loop then serves many requests (issue 6, fix 5),
/// while the bound keeps the other branches (answers, notifications, timers) served.
const RECV_BATCH: usize = 32;

/// A finished asynchronous write, to be answered by the endpoint task.
struct Done {
    /// The request it answers.
    id: RequestId,
    /// The answer.
    response: Response,
}

/// A write in flight, polled by the machine's task: it resolves to the answer of request
/// `id` once [`Broker::publish`] returned (so once the write is durable).
struct PendingWrite {
    /// The request it answers.
    id: RequestId,
    /// The publish and the building of its response.
    write: resource::WriteFuture,
}

impl Future for PendingWrite {
    type Output = Done;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Done> {
        let id = self.id;
        self.write
            .as_mut()
            .poll(cx)
            .map(|response| Done { id, response })
    }
}

/// The sans-IO endpoint configuration from ponte's `[coap]` section.
pub(crate) fn endpoint_config(config: &Config) -> ponte_coap::Config {
    ponte_coap::Config {
        max_body_size: config.coap.max_body,
        block_size: config.coap.block_size,
        notify: match config.coap.notify {
            CoapNotify::Con => NotifyPolicy::Con,
            CoapNotify::Non => NotifyPolicy::Non,
            CoapNotify::NonWithPeriodicCon => NotifyPolicy::NonWithPeriodicCon,
        },
        con_notify_interval: Duration::from_secs(config.coap.con_notify_interval_secs),
        tcp_frame_timeout: Duration::from_secs(config.coap.tcp_frame_timeout_secs.max(1)),
        tcp_frame_min_rate: config.coap.tcp_frame_min_rate,
        ..ponte_coap::Config::default()
    }
}

/// Bind the CoAP UDP socket and, with `[coap] tcp`, a TCP listener on the same port number
/// (RFC 8323 §8.1: `coap+tcp://` uses the CoAP port). With port 0 both land on one free port.
pub async fn bind(config: &Config) -> Result<(UdpSocket, Option<TcpListener>), crate::Error> {
    let asked = config.coap_addr();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let udp = UdpSocket::bind(asked)
            .await
            .map_err(|source| crate::Error::Bind {
                protocol: "CoAP",
                addr: asked,
                source,
            })?;
        if !config.coap.tcp {
            return Ok((udp, None));
        }
        let port = udp
            .local_addr()
            .map_err(|source| crate::Error::Bind {
                protocol: "CoAP",
                addr: asked,
                source,
            })?
            .port();
        let tcp_addr = SocketAddr::new(asked.ip(), port);
        match TcpListener::bind(tcp_addr).await {
            Ok(listener) => return Ok((udp, Some(listener))),
            Err(e) if asked.port() == 0 && attempt < BIND_ATTEMPTS => {
                tracing::debug!(%tcp_addr, error = %e, "CoAP/TCP port taken, picking another");
            }
            Err(source) => {
                return Err(crate::Error::Bind {
                    protocol: "CoAP/TCP",
                    addr: tcp_addr,
                    source,
                })
            }
        }
    }
}

/// What [`Front`] needs from a CoAP machine (the UDP endpoint or a TCP connection).
pub(crate) trait Machine {
    /// See [`Endpoint::respond`].
    fn respond(&mut self, now: Instant, id: RequestId, response: Response, observe: Option<String>);
    /// See [`Endpoint::notify`].
    fn notify(&mut self, now: Instant, resource: &str, response: Response);
    /// See [`Endpoint::end_observations`].
    fn end_observations(&mut self, now: Instant, resource: &str, response: Response);
    /// See [`Endpoint::observer_count`].
    fn observer_count(&self, resource: &str) -> usize;
}

/// Both machines have these as inherent methods; the trait only names them.
macro_rules! machine {
    ($($t:ty),*) => {$(
        impl Machine for $t {
            fn respond(
                &mut self,
                now: Instant,
                id: RequestId,
                response: Response,
                observe: Option<String>,
            ) {
                <$t>::respond(self, now, id, response, observe)
            }
            fn notify(&mut self, now: Instant, resource: &str, response: Response) {
                <$t>::notify(self, now, resource, response)
            }
            fn end_observations(&mut self, now: Instant, resource: &str, response: Response) {
                <$t>::end_observations(self, now, resource, response)
            }
            fn observer_count(&self, resource: &str) -> usize {
                <$t>::observer_count(self, resource)
            }
        }
    )*};
}
machine!(Endpoint, TcpConnection);

/// The broker side of one CoAP machine: routing requests, running writes, and the mailbox
/// subscriptions that feed its observers.
pub(crate) struct Front {
    /// Broker and response settings.
    ctx: resource::Context,
    /// Receives publishes on observed topics; DropOldest because observers want the latest.
    mailbox: Arc<Mailbox>,
    /// Topics the mailbox is subscribed to on behalf of observers.
    observed: HashSet<TopicName>,
    /// Observers per observed topic as last counted, so `ponte_coap_observers` moves by
    /// the exact difference (a re-registration replaces an observer: no change).
    observers: std::collections::HashMap<TopicName, usize>,
    /// The writes in flight, polled by the machine's task (instead of one spawned task and
    /// one channel message per write): [`Front::next_done`] yields them as they finish.
    writes: FuturesUnordered<PendingWrite>,
}

impl Front {
    /// A front for one machine.
    fn new(
        broker: Arc<Broker>,
        auth: Arc<Auth>,
        config: &Config,
        writes: Arc<RateLimiters>,
    ) -> Front {
        let mailbox = broker.mailbox(config.coap.notify_queue, OverflowPolicy::DropOldest);
        Front {
            ctx: resource::Context {
                broker,
                auth,
                max_age: config.coap.max_age,
                writes,
            },
            mailbox,
            observed: HashSet::new(),
            observers: std::collections::HashMap::new(),
            writes: FuturesUnordered::new(),
        }
    }

    /// The next finished write; pending forever while none is in flight (for `select!`).
    async fn next_done(&mut self) -> Done {
        if self.writes.is_empty() {
            return std::future::pending().await;
        }
        match self.writes.next().await {
            Some(done) => done,
            None => std::future::pending().await,
        }
    }

    /// Answer `first` and every other write that has already finished.
    fn answer_writes<M: Machine>(&mut self, machine: &mut M, first: Done) {
        let now = Instant::now();
        machine.respond(now, first.id, first.response, None);
        // `now_or_never` polls with a no-op waker; that is enough here because the loop
        // polls `writes` again with the task's waker (in `next_done`) before it sleeps.
        while let Some(Some(done)) = self.writes.next().now_or_never() {
            machine.respond(now, done.id, done.response, None);
        }
    }

    /// Act on one event of the machine; a request came from `caller`.
    fn on_event<M: Machine>(&mut self, machine: &mut M, ev: Event, caller: &Caller) {
        match ev {
            Event::Request(req) => {
                let now = Instant::now();
                // An observation subscribes before the value is read, so no publish can
                // fall between the first notification and the later ones.
                let wants = resource::observed_topic(&req);
                if let Some(topic) = &wants {
                    if self.observed.insert(topic.clone()) {
                        let filter = TopicFilter::exact(topic);
                        self.ctx
                            .broker
                            .subscribe(&filter, &self.mailbox, QoS::AtMostOnce, false);
                    }
                }
                match resource::route(&self.ctx, &req, caller) {
                    resource::Action::Answer { response, observe } => {
                        let observe = observe.map(|t| t.as_str().to_owned());
                        machine.respond(now, req.id, response, observe);
                    }
                    resource::Action::Write(mut write) => {
                        // A write that is done at once (the memory store applies it inline)
                        // is answered in this pass; one that waits for a sync is polled
                        // with the others. `now_or_never` polls with a no-op waker, and
                        // `FuturesUnordered` polls what is pushed to it with the task's.
                        match write.as_mut().now_or_never() {
                            Some(response) => machine.respond(now, req.id, response, None),
                            None => self.writes.push(PendingWrite { id: req.id, write }),
                        }
                    }
                }
                // A refused observation (4.04, 4.06, ...) registered nobody.
                if let Some(topic) = wants {
                    let now_observing = machine.observer_count(topic.as_str());
                    self.recount(&topic, now_observing);
                    if now_observing == 0 {
                        self.forget(&topic);
                    }
                }
            }
            Event::ObservationEnded {
                resource,
                remaining,
            } => {
                if let Ok(topic) = TopicName::parse(&resource) {
                    self.recount(&topic, remaining);
                    if remaining == 0 {
                        self.forget(&topic);
                    }
                }
            }
        }
    }

    /// `topic` has `now` observers: move `ponte_coap_observers` by the difference.
    fn recount(&mut self, topic: &TopicName, now: usize) {
        let before = if now == 0 {
            self.observers.remove(topic).unwrap_or(0)
        } else {
            self.observers.insert(topic.clone(), now).unwrap_or(0)
        };
        self.ctx
            .broker
            .ops
            .coap_observers(now as i64 - before as i64);
    }

    /// Unsubscribe the mailbox from `topic` if it was subscribed.
    fn forget(&mut self, topic: &TopicName) {
        if self.observed.remove(topic) {
            self.ctx
                .broker
                .unsubscribe(&TopicFilter::exact(topic), self.mailbox.id());
        }
    }

    /// Turn what arrived in the mailbox into notifications (UDP and DTLS: the endpoint
    /// keeps at most one outstanding and one newer notification per observer itself).
    fn on_deliveries<M: Machine>(&mut self, machine: &mut M) {
        let now = Instant::now();
        while let Some(d) = self.mailbox.pop() {
            self.notify(machine, now, &d.message);
        }
    }

    /// Send `message` to the machine's observers of its topic (or end them, for a
    /// cleared value).
    fn notify<M: Machine>(&self, machine: &mut M, now: Instant, message: &Message) {
        let topic = message.topic.as_str();
        if message.clears_retained() {
            machine.end_observations(now, topic, resource::gone(topic));
        } else {
            let observers = machine.observer_count(topic) as u64;
            self.ctx
                .broker
                .ops
                .sent(crate::metrics::Protocol::Coap, observers);
            machine.notify(now, topic, self.ctx.notification(message));
        }
    }

    /// Drop every subscription (the machine is going away). Writes still in flight are
    /// finished on a task of their own, unanswered: cancelling one between its durable
    /// store and its fan-out would leave subscribers without a value that was stored.
    fn close(mut self) {
        let mut writes = std::mem::take(&mut self.writes);
        if !writes.is_empty() {
            tokio::spawn(async move { while writes.next().await.is_some() {} });
        }
        let observing: usize = self.observers.drain().map(|(_, n)| n).sum();
        self.ctx.broker.ops.coap_observers(-(observing as i64));
        let topics: Vec<TopicName> = self.observed.drain().collect();
        for topic in topics {
            self.ctx
                .broker
                .unsubscribe(&TopicFilter::exact(&topic), self.mailbox.id());
        }
    }
}

/// Serve CoAP over UDP on `socket` until shutdown.
pub async fn serve(
    socket: UdpSocket,
    broker: Arc<Broker>,
    auth: Arc<Auth>,
    config: Arc<Config>,
    limits: Arc<Limits>,
    mut shutdown: Shutdown,
) {
    let mut endpoint = Endpoint::new(endpoint_config(&config));
    let mut front = Front::new(broker, auth, &config, limits.coap.clone());
    let mailbox = front.mailbox.clone();
    // Plain CoAP authenticates nobody.
    let anonymous = Caller::default();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        // Drain the endpoint: events first (they may produce transmits), then transmits.
        while let Some(ev) = endpoint.poll_event() {
            front.on_event(&mut endpoint, ev, &anonymous);
        }
        while let Some((peer, bytes)) = endpoint.poll_transmit() {
            front
                .ctx
                .broker
                .ops
                .bytes_sent(crate::metrics::Protocol::Coap, bytes.len() as u64);
            send(&socket, peer, &bytes).await;
        }
        let deadline = endpoint.poll_timeout();
        tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, peer)) => {
                    let now = Instant::now();
                    endpoint.handle_datagram(now, peer, &buf[..n]);
                    let mut bytes = n as u64;
                    // Whatever else already arrived joins this pass (no wake-up each).
                    for _ in 1..RECV_BATCH {
                        match socket.try_recv_from(&mut buf) {
                            Ok((n, peer)) => {
                                bytes += n as u64;
                                endpoint.handle_datagram(now, peer, &buf[..n]);
                            }
                            Err(_) => break,
                        }
                    }
                    front.ctx.broker.ops.bytes_received(crate::metrics::Protocol::Coap, bytes);
                }
                Err(e) => tracing::debug!(error = %e, "CoAP recv failed"),
            },
            done = front.next_done() => front.answer_writes(&mut endpoint, done),
            _ = mailbox.notified() => front.on_deliveries(&mut endpoint),
            _ = sleep_until(deadline) => endpoint.handle_timeout(Instant::now()),
            _ = shutdown.recv() => break,
        }
    }
    // Answer the writes still in flight so their clients are not left retransmitting.
    let grace = tokio::time::sleep(Duration::from_secs(2));
    tokio::pin!(grace);
    while !front.writes.is_empty() {
        tokio::select! {
            done = front.next_done() => front.answer_writes(&mut endpoint, done),
            _ = &mut grace => break,
        }
    }
    while let Some((peer, bytes)) = endpoint.poll_transmit() {
        send(&socket, peer, &bytes).await;
    }
    let stats = endpoint.stats();
    tracing::debug!(?stats, "CoAP/UDP endpoint stopped");
    front.close();
}

/// Send one datagram: at once when the socket has room (the common case, no readiness
/// round trip through the reactor), else waiting for it.
async fn send(socket: &UdpSocket, peer: SocketAddr, bytes: &[u8]) {
    match socket.try_send_to(bytes, peer) {
        Ok(_) => return,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Err(e) => {
            tracing::debug!(%peer, error = %e, "CoAP send failed");
            return;
        }
    }
    if let Err(e) = socket.send_to(bytes, peer).await {
        tracing::debug!(%peer, error = %e, "CoAP send failed");
    }
}

/// Sleep until `deadline`, or forever without one.
pub(crate) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}
