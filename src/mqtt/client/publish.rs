//! Inbound PUBLISHes: the checks a PUBLISH passes before it reaches the broker, its way
//! through the connection's [`Pipeline`](super::pipeline::Pipeline), and its answer.

use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Instant;

use ponte_mqtt::{reason, CloseReason, Publish};

use super::super::{access, wire};
use super::pipeline::Ack;
use super::{levels, Driver, Later};
use crate::broker::retained::Precondition;
use crate::broker::PublishOutcome;
use crate::model::{Message, Origin, QoS};
use crate::store::StoreError;

impl Driver {
    /// Handle one inbound PUBLISH: the write rate, the topic's levels and the ACL first,
    /// then the message goes into the pipeline. `None` when that is done; a refusal is
    /// answered only after the PUBLISHes ahead of it, so it comes back as work to await
    /// (boxed: it is rare, and its state would otherwise enlarge every connection's
    /// future).
    pub(super) fn on_publish(&mut self, p: Publish) -> Option<Later<'_>> {
        // Without a limit the clock is not even read.
        let over = if self.writes.is_limited() {
            self.writes.check(Instant::now()).err()
        } else {
            None
        };
        if let Some(wait) = over {
            return Some(Box::pin(async move {
                if self.over_write_rate(wait, &p).await {
                    self.on_publish_checked(p);
                }
                false
            }));
        }
        let max_levels = self.shared.config.mqtt.max_topic_levels;
        if levels(&p.topic) > max_levels {
            return Some(Box::pin(async move {
                self.drain_pipeline().await;
                self.limit_hit("max_topic_levels", &p.topic);
                self.conn.close(CloseReason::Server {
                    reason_code: reason::TOPIC_NAME_INVALID,
                    reason_string: Some(format!(
                        "PUBLISH topic has {} levels, more than the {max_levels} allowed",
                        levels(&p.topic)
                    )),
                });
                false
            }));
        }
        if !self.access.may_publish(&p.topic) {
            return Some(Box::pin(async move {
                // Earlier PUBLISHes are answered first: acknowledgements keep the PUBLISH
                // order.
                self.drain_pipeline().await;
                // Nothing stored, retained or delivered. v5 QoS 1/2: PUBACK/PUBREC 0x87;
                // 3.1.1 has no negative acknowledgement, so (as mosquitto) it is
                // acknowledged and the client does not resend it forever; QoS 0: dropped.
                if p.qos != ponte_mqtt::QoS::AtMostOnce {
                    if self.link.is_v5() {
                        let why = access::publish_denied_reason(&p.topic);
                        self.conn
                            .publish_done(p.pkid, reason::NOT_AUTHORIZED, Some(why));
                    } else {
                        self.conn.publish_done(p.pkid, reason::SUCCESS, None);
                    }
                }
                false
            }));
        }
        self.on_publish_checked(p);
        None
    }

    /// A PUBLISH that passed its checks goes into the pipeline (and is answered at once
    /// when nothing is ahead of it and nothing must become durable).
    fn on_publish_checked(&mut self, mut p: Publish) {
        let properties = std::mem::take(&mut p.properties);
        let qos = p.qos.into();
        let mut message = Message {
            // Checked by the codec: validated once (MQTT-3.3.2-2, MQTT-4.7.3-1).
            topic: wire::topic(&p.topic),
            payload: p.payload,
            qos,
            retain: p.retain,
            content_type: None,
            origin: Origin::Mqtt(self.link.session().map(|s| s.client_id.clone())),
            properties: None,
            expires_at: None,
            publisher: self.link.session().map(|s| s.mailbox.id()),
            charge: crate::model::Charge::default(),
        };
        if self.link.is_v5() {
            wire::apply_properties(&mut message, properties.into_inner(), Instant::now());
        }
        let ack = Ack { pkid: p.pkid, qos };
        let staged = self.shared.broker.stage(message, Precondition::none());
        if let Some((ack, result)) = self.pipeline.push(&self.shared.broker, ack, staged) {
            // Not retained and nothing ahead of it: delivered and done at once.
            self.acknowledge(ack, result);
        }
    }

    /// Move the pipeline on and answer every PUBLISH that is done, in arrival order. Ready
    /// when anything was answered, so the loop writes the answers out.
    pub(super) fn poll_pipeline(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut moved = false;
        while let Poll::Ready((ack, result)) = self.pipeline.poll_done(cx, &self.shared.broker) {
            self.acknowledge(ack, result);
            moved = true;
        }
        if moved {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Wait until every pipelined PUBLISH is delivered and answered: what the client sent
    /// before a SUBSCRIBE, PINGREQ, DISCONNECT or refusal is done first, as if its packets
    /// were handled one by one.
    pub(super) async fn drain_pipeline(&mut self) {
        while !self.pipeline.is_empty() {
            std::future::poll_fn(|cx| self.poll_pipeline(cx)).await;
        }
    }

    /// Answer a PUBLISH that is done: stored, delivered and durable, or failed.
    pub(super) fn acknowledge(&mut self, ack: Ack, result: Result<PublishOutcome, StoreError>) {
        let Ack { pkid, qos } = ack;
        match result {
            Ok(outcome) => {
                // v5: 0x10 when nobody here matched; still a success, and a retained
                // message was stored all the same (3.4.2.1).
                let code = if outcome.matched == 0 {
                    reason::NO_MATCHING_SUBSCRIBERS
                } else {
                    reason::SUCCESS
                };
                if qos == QoS::ExactlyOnce && self.link.durable() {
                    // PUBREC once the id is durable, at the end of this turn.
                    self.link.record_qos2(pkid, code);
                } else if qos != QoS::AtMostOnce {
                    self.conn.publish_done(pkid, code, None);
                }
            }
            Err(e) => {
                // Not stored: do not acknowledge positively. v5 answers 0x80; 3.1.1 has no
                // negative PUBACK, so the machine closes and the client resends on reconnect.
                tracing::error!(peer = %self.peer, error = %e, "PUBLISH could not be stored");
                let why = format!("the message could not be stored: {e}");
                if qos == QoS::AtMostOnce {
                    self.conn.close(CloseReason::Server {
                        reason_code: reason::UNSPECIFIED_ERROR,
                        reason_string: Some(why),
                    });
                } else {
                    self.conn
                        .publish_done(pkid, reason::UNSPECIFIED_ERROR, Some(why));
                }
            }
        }
    }

    /// `[limits] publish_rate` was exceeded (the next token comes in `wait`): whether `p`
    /// may be published after all. A v5 QoS 1/2 PUBLISH is answered PUBACK/PUBREC 0x97
    /// Quota exceeded and a v5 QoS 0 one closes the connection with DISCONNECT 0x96 Message
    /// rate too high; 3.1.1 has no negative acknowledgement, so the connection is throttled
    /// instead — nothing is read from its socket until the wait is over — and nothing is
    /// lost.
    async fn over_write_rate(&mut self, wait: std::time::Duration, p: &Publish) -> bool {
        self.shared
            .limits
            .mqtt_writes_refused
            .fetch_add(1, Ordering::Relaxed);
        let rate = self.shared.limits.config.publish_rate;
        // Earlier PUBLISHes are answered first: acknowledgements keep the PUBLISH order.
        self.drain_pipeline().await;
        if !self.link.is_v5() {
            tracing::debug!(peer = %self.peer, ?wait, "MQTT 3.1.1 publisher throttled: over [limits] publish_rate");
            let mut wait = wait;
            loop {
                tokio::time::sleep(wait).await;
                match self.writes.check(Instant::now()) {
                    Ok(()) => return true,
                    Err(w) => wait = w,
                }
            }
        }
        let why = format!("more than {rate} PUBLISH per second ([limits] publish_rate)");
        tracing::debug!(peer = %self.peer, qos = ?p.qos, "MQTT PUBLISH refused: {why}");
        if p.qos == ponte_mqtt::QoS::AtMostOnce {
            self.conn.close(CloseReason::Server {
                reason_code: reason::MESSAGE_RATE_TOO_HIGH,
                reason_string: Some(why),
            });
        } else {
            self.conn
                .publish_done(p.pkid, reason::QUOTA_EXCEEDED, Some(why));
        }
        false
    }
}
