//! The CoAP front-end: one UDP socket, one task owning the sans-IO [`ponte_coap::Endpoint`].
//!
//! The task feeds datagrams and timeouts into the endpoint and sends what it emits. Requests
//! are translated into broker calls: reads are answered at once from the retained index;
//! writes go through [`Broker::publish`] in their own task (so a durable write never stalls
//! the socket) and come back over a channel to be answered. Observations subscribe one
//! mailbox per front-end to each observed topic; what arrives in it becomes notifications.

mod resource;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use ponte_coap::{Endpoint, Event, RequestId, Response};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::broker::mailbox::{Mailbox, OverflowPolicy};
use crate::broker::message::QoS;
use crate::broker::topic::{TopicFilter, TopicName};
use crate::broker::Broker;
use crate::config::Config;
use crate::shutdown::Shutdown;

/// Largest datagram read from the socket; bigger ones are truncated by the OS and then
/// fail to parse (counted as malformed), never processed as partial requests.
const MAX_DATAGRAM: usize = 65_535;

/// A finished asynchronous write, to be answered by the endpoint task.
struct Done {
    /// The request it answers.
    id: RequestId,
    /// The answer.
    response: Response,
}

/// Serve CoAP on `socket` until shutdown.
pub async fn serve(
    socket: UdpSocket,
    broker: Arc<Broker>,
    config: Arc<Config>,
    mut shutdown: Shutdown,
) {
    let mut endpoint = Endpoint::new(ponte_coap::Config {
        max_body_size: config.coap.max_body,
        ..ponte_coap::Config::default()
    });
    let mailbox = Mailbox::new(config.coap.notify_queue, OverflowPolicy::DropOldest);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
    let ctx = resource::Context {
        broker: broker.clone(),
        max_age: config.coap.max_age,
    };
    // Topics the mailbox is subscribed to on behalf of observers.
    let mut observed: HashSet<TopicName> = HashSet::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        // Drain the endpoint: events first (they may produce transmits), then transmits.
        while let Some(ev) = endpoint.poll_event() {
            match ev {
                Event::Request(req) => {
                    let now = Instant::now();
                    // An observation subscribes before the value is read, so no publish can
                    // fall between the first notification and the later ones.
                    let wants = resource::observed_topic(&req);
                    if let Some(topic) = &wants {
                        if observed.insert(topic.clone()) {
                            let filter = TopicFilter::exact(topic);
                            broker.subscribe(&filter, &mailbox, QoS::AtMostOnce, false);
                        }
                    }
                    match resource::route(&ctx, &req) {
                        resource::Action::Answer { response, observe } => {
                            let observe = observe.map(|t| t.as_str().to_owned());
                            endpoint.respond(now, req.id, response, observe);
                        }
                        resource::Action::Write(fut) => {
                            let tx = done_tx.clone();
                            let id = req.id;
                            tokio::spawn(async move {
                                let response = fut.await;
                                let _ = tx.send(Done { id, response });
                            });
                        }
                    }
                    // A refused observation (4.04, 4.06, ...) registered nobody.
                    if let Some(topic) = wants {
                        if endpoint.observer_count(topic.as_str()) == 0 && observed.remove(&topic) {
                            broker.unsubscribe(&TopicFilter::exact(&topic), mailbox.id());
                        }
                    }
                }
                Event::ObservationEnded {
                    resource,
                    remaining,
                } => {
                    if remaining == 0 {
                        if let Ok(topic) = TopicName::parse(&resource) {
                            if observed.remove(&topic) {
                                broker.unsubscribe(&TopicFilter::exact(&topic), mailbox.id());
                            }
                        }
                    }
                }
            }
        }
        while let Some((peer, bytes)) = endpoint.poll_transmit() {
            send(&socket, peer, &bytes).await;
        }
        let deadline = endpoint.poll_timeout();
        tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, peer)) => endpoint.handle_datagram(Instant::now(), peer, &buf[..n]),
                Err(e) => tracing::debug!(error = %e, "CoAP recv failed"),
            },
            Some(done) = done_rx.recv() => {
                endpoint.respond(Instant::now(), done.id, done.response, None);
                while let Ok(done) = done_rx.try_recv() {
                    endpoint.respond(Instant::now(), done.id, done.response, None);
                }
            }
            _ = mailbox.notified() => {
                let now = Instant::now();
                while let Some(d) = mailbox.pop() {
                    let topic = d.message.topic.as_str();
                    if d.message.clears_retained() {
                        endpoint.end_observations(now, topic, resource::gone(topic));
                    } else {
                        endpoint.notify(now, topic, ctx.notification(&d.message));
                    }
                }
            }
            _ = sleep_until(deadline) => endpoint.handle_timeout(Instant::now()),
            _ = shutdown.recv() => break,
        }
    }
    // Answer the writes still in flight so their clients are not left retransmitting.
    drop(done_tx);
    let grace = tokio::time::sleep(std::time::Duration::from_secs(2));
    tokio::pin!(grace);
    loop {
        tokio::select! {
            d = done_rx.recv() => match d {
                Some(done) => endpoint.respond(Instant::now(), done.id, done.response, None),
                None => break,
            },
            _ = &mut grace => break,
        }
    }
    while let Some((peer, bytes)) = endpoint.poll_transmit() {
        send(&socket, peer, &bytes).await;
    }
    for topic in observed {
        broker.unsubscribe(&TopicFilter::exact(&topic), mailbox.id());
    }
}

async fn send(socket: &UdpSocket, peer: SocketAddr, bytes: &[u8]) {
    if let Err(e) = socket.send_to(bytes, peer).await {
        tracing::debug!(%peer, error = %e, "CoAP send failed");
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}
