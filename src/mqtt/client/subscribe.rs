//! SUBSCRIBE and UNSUBSCRIBE: each filter checked (levels, syntax, shared-subscription
//! rules, the ACL, `max_subscriptions`) and answered with its own reason code, the refusals
//! explained in one v5 Reason String, and a persistent session's record durable before the
//! SUBACK/UNSUBACK.

use ponte_mqtt::{reason, CloseReason, SubscriptionOptions, Unsubscribe};

use super::super::session::Session;
use super::super::{access, wire};
use super::{levels, Driver};
use crate::model::TopicFilter;

impl Driver {
    /// Answer one SUBSCRIBE (3.1.1 filters come with plain options): one reason code per
    /// filter, the session's record durable before the SUBACK.
    pub(super) async fn on_subscribe(
        &mut self,
        pkid: u16,
        filters: Vec<(String, SubscriptionOptions)>,
        id: Option<u32>,
    ) {
        let Some(session) = self.link.session().cloned() else {
            return;
        };
        let mut codes = Vec::with_capacity(filters.len());
        let mut refused = Refusals::default();
        for (filter, o) in filters {
            match self.subscribe_one(&session, &filter, &o, id) {
                Ok(code) => codes.push(code),
                Err(Refused::Filter(code, why)) => {
                    refused.add(&filter, &why);
                    codes.push(code);
                }
                Err(Refused::Connection) => return,
            }
        }
        if !self
            .link
            .persist(&mut self.conn, "SUBSCRIBE", self.peer)
            .await
        {
            return;
        }
        self.conn.suback(pkid, codes, refused.into_reason());
    }

    /// One SUBSCRIBE entry: checked (levels, syntax, shared-subscription rules, the ACL,
    /// `max_subscriptions`), then recorded in the session and the index. The granted QoS,
    /// or why not.
    fn subscribe_one(
        &mut self,
        session: &Session,
        filter: &str,
        o: &SubscriptionOptions,
        id: Option<u32>,
    ) -> Result<u8, Refused> {
        let limits = &self.shared.config.mqtt;
        if levels(filter) > limits.max_topic_levels {
            self.limit_hit("max_topic_levels", filter);
            let why = format!("more than {} levels", limits.max_topic_levels);
            return Err(Refused::Filter(reason::TOPIC_FILTER_INVALID, why));
        }
        let shared = filter.starts_with("$share/");
        let parsed = TopicFilter::parse(filter)
            .map_err(|e| e.to_string())
            .and_then(|f| {
                if shared && crate::broker::split_shared(filter).is_none() {
                    Err("invalid shared subscription filter".to_string())
                } else {
                    Ok(f)
                }
            });
        let f = parsed.map_err(|e| {
            tracing::debug!(peer = %self.peer, %filter, error = %e, "SUBSCRIBE filter refused");
            Refused::Filter(reason::TOPIC_FILTER_INVALID, e)
        })?;
        if shared && o.no_local && self.link.is_v5() {
            // MQTT-3.8.3-4: No Local on a shared subscription is a protocol error.
            self.conn.close(CloseReason::Server {
                reason_code: reason::PROTOCOL_ERROR,
                reason_string: Some(format!(
                    "MQTT-3.8.3-4: No Local set on shared subscription {filter:?}"
                )),
            });
            return Err(Refused::Connection);
        }
        if !self.access.may_subscribe(filter) {
            // A refused re-subscription ends the old one too.
            if session.remove_subscription(&f) {
                self.shared.broker.unsubscribe(&f, session.mailbox.id());
            }
            let why = access::SUBSCRIBE_DENIED.to_string();
            return Err(Refused::Filter(reason::NOT_AUTHORIZED, why));
        }
        let (opts, retain_handling) = wire::sub_options(o, id);
        // Recorded first, so a concurrent close removes it again.
        if !session.add_subscription(&f, opts, limits.max_subscriptions) {
            self.limit_hit("max_subscriptions", filter);
            let why = format!(
                "more than {} subscriptions (max_subscriptions)",
                limits.max_subscriptions
            );
            return Err(Refused::Filter(reason::QUOTA_EXCEEDED, why));
        }
        self.shared
            .broker
            .subscribe_with(&f, &session.mailbox, opts, retain_handling);
        Ok(o.qos.as_u8())
    }

    /// Answer one UNSUBSCRIBE: each filter removed from the session and the index (0x11
    /// when there was no such subscription), the record durable before the UNSUBACK.
    pub(super) async fn on_unsubscribe(&mut self, u: Unsubscribe) {
        let (pkid, filters) = (u.pkid, u.filters);
        let mut codes = Vec::with_capacity(filters.len());
        let mut refused = Refusals::default();
        if let Some(session) = self.link.session() {
            for filter in filters {
                codes.push(match TopicFilter::parse(&filter) {
                    Ok(f) => {
                        session.remove_subscription(&f);
                        if self.shared.broker.unsubscribe(&f, session.mailbox.id()) {
                            reason::SUCCESS
                        } else {
                            reason::NO_SUBSCRIPTION_EXISTED
                        }
                    }
                    Err(e) => {
                        refused.add(&filter, &e.to_string());
                        reason::TOPIC_FILTER_INVALID
                    }
                });
            }
            if !self
                .link
                .persist(&mut self.conn, "UNSUBSCRIBE", self.peer)
                .await
            {
                return;
            }
        }
        self.conn.unsuback(pkid, codes, refused.into_reason());
    }
}

/// Why one SUBSCRIBE entry was not granted.
enum Refused {
    /// This filter is refused with this reason code, for this reason.
    Filter(u8, String),
    /// The connection is being closed (a protocol error): no SUBACK at all.
    Connection,
}

/// The refused filters of one SUBSCRIBE or UNSUBSCRIBE, as one v5 Reason String.
#[derive(Debug, Default)]
struct Refusals {
    /// `filter "x": why` entries, `; `-separated (the machine caps the length).
    text: String,
}

impl Refusals {
    fn add(&mut self, filter: &str, why: &str) {
        if !self.text.is_empty() {
            self.text.push_str("; ");
        }
        self.text.push_str(&format!("filter {filter:?}: {why}"));
    }

    fn into_reason(self) -> Option<String> {
        (!self.text.is_empty()).then_some(self.text)
    }
}
