//! Subscriptions: adding one (with its retained values, per the subscription options), restoring and tracking a persistent session's, removing one.

use super::*;

impl Broker {
    /// Subscribe `mailbox` to `filter` at `qos`. When `send_retained`, the retained values
    /// matching the filter are queued to it with RETAIN=1 (MQTT-3.3.1-8), each at
    /// min(stored QoS, granted). Returns whether an existing subscription was replaced.
    pub fn subscribe(
        &self,
        filter: &TopicFilter,
        mailbox: &Arc<Mailbox>,
        qos: QoS,
        send_retained: bool,
    ) -> bool {
        let handling = if send_retained {
            RetainHandling::OnSubscribe
        } else {
            RetainHandling::Never
        };
        self.subscribe_with(filter, mailbox, SubOptions::qos(qos), handling)
    }

    /// Subscribe with MQTT 5 options. A filter `$share/group/f` makes `mailbox` a member of
    /// the shared group `group` on `f` (one member per message, round-robin, MQTT 4.8.2);
    /// the caller keeps and unsubscribes the whole `$share/...` filter. `retain_handling`
    /// says whether the matching retained values are sent; a shared subscription never gets
    /// them (MQTT 4.8.2). Expired retained values are not sent. Returns whether an existing
    /// subscription was replaced.
    pub fn subscribe_with(
        &self,
        filter: &TopicFilter,
        mailbox: &Arc<Mailbox>,
        opts: SubOptions,
        retain_handling: RetainHandling,
    ) -> bool {
        let shared = split_shared(filter.as_str());
        if let (true, Some((group, inner))) = (self.clustered, &shared) {
            // A group spanning nodes is the backbone's; `$SYS` stays node-local.
            if !inner.as_str().starts_with("$SYS") {
                if let Some(replaced) = self.backbone.join_shared(group, inner, mailbox, opts) {
                    return replaced;
                }
            }
        }
        let (share, inner) = match &shared {
            Some((group, inner)) => (Some(*group), inner),
            None => (None, filter),
        };
        let (replaced, matched) = {
            let mut subs = self.subscriptions.write();
            let replaced = subs.insert_with(inner, share, mailbox.clone(), opts);
            // Under the write lock no fan-out is matching: every logged message up to
            // `matched` was matched without this subscription, every later one with it.
            let matched = self
                .durable
                .as_ref()
                .filter(|d| d.logged())
                .map(|d| d.marks().matched.load(Ordering::Acquire));
            (replaced, matched)
        };
        if let Some(matched) = matched {
            if let Some(track) = self.track_of(mailbox.id()) {
                track.subscribed(filter.as_str(), matched);
            }
        }
        let send = share.is_none()
            && match retain_handling {
                RetainHandling::OnSubscribe => true,
                RetainHandling::OnNewSubscription => !replaced,
                RetainHandling::Never => false,
            };
        if send {
            let now = Instant::now();
            for (topic, v) in self.retained.matching(filter) {
                let (properties, expires_at) = {
                    let meta = self.retained_meta.read();
                    match meta.get(&topic) {
                        Some(m) if m.version == v.version => (m.properties.clone(), m.expires_at),
                        _ => (None, None),
                    }
                };
                if expires_at.is_some_and(|at| at <= now) {
                    self.metrics.expired.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let message = Arc::new(Message {
                    topic,
                    payload: v.payload.clone(),
                    qos: v.qos,
                    retain: true,
                    content_type: v.content_type.clone(),
                    origin: Origin::Internal,
                    properties,
                    expires_at,
                    publisher: None,
                    charge: crate::model::Charge::default(),
                });
                let d = Delivery {
                    qos: v.qos.min(opts.qos),
                    message,
                    retain: true,
                    subscription_ids: opts.id.into_iter().collect(),
                    durable: None,
                    log_seq: None,
                };
                // A persistent session's copy goes to disk like a fan-out delivery: an
                // unacknowledged retained message must come back after a crash too
                // (MQTT-4.4.0-1). Not awaited: no publisher waits, and the connection's
                // state record that refers to the entry is made after it (ops take
                // effect in order), so a crash that keeps the state keeps the entry.
                let registered = self
                    .durable
                    .as_deref()
                    .and_then(DurableSessions::registered);
                push(registered.as_ref(), mailbox, d, false);
            }
        }
        replaced
    }

    /// Put a restored session's queued message back into its mailbox (start-up). False
    /// when the mailbox did not take it; its durable copy is then forgotten, like one that
    /// `drop-oldest` displaces.
    pub fn push_restored(&self, mailbox: &Mailbox, d: Delivery) -> bool {
        let registered = self
            .durable
            .as_deref()
            .and_then(DurableSessions::registered);
        let (outcome, _) = push(registered.as_ref(), mailbox, d, false);
        matches!(outcome, PushOutcome::Queued | PushOutcome::ReplacedOldest)
    }

    /// The place in the log of `mailbox_id`'s session, when it is a persistent session kept
    /// in the cluster's log.
    pub fn track_of(&self, mailbox_id: u64) -> Option<Arc<Track>> {
        let durable = self.durable.as_ref().filter(|d| d.logged())?;
        durable.registered()?.track(mailbox_id).cloned()
    }

    /// Remove a subscription (a `$share/group/f` filter leaves that shared group).
    /// Returns whether it existed.
    pub fn unsubscribe(&self, filter: &TopicFilter, mailbox_id: u64) -> bool {
        if let Some(track) = self.track_of(mailbox_id) {
            track.unsubscribed(filter.as_str());
        }
        match split_shared(filter.as_str()) {
            Some((group, inner)) => {
                if self.clustered && !inner.as_str().starts_with("$SYS") {
                    if let Some(was) = self.backbone.leave_shared(group, &inner, mailbox_id) {
                        return was;
                    }
                }
                self.subscriptions
                    .write()
                    .remove_with(&inner, Some(group), mailbox_id)
            }
            None => self.subscriptions.write().remove(filter, mailbox_id),
        }
    }
}
