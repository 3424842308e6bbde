//! Observers: registration, notifications and their end (RFC 7641 §3, §4).

use super::*;

impl Endpoint {
    /// Registers `key` as an observer of `resource`; false when a cap is
    /// reached (the answer then goes out without Observe, RFC 7641 §4.1).
    pub(super) fn register(
        &mut self,
        now: Instant,
        key: ObserverKey,
        resource: String,
        accept: Option<u16>,
    ) -> bool {
        if let Some(existing) = self.observers.get_mut(&key) {
            if existing.resource == resource {
                // Same relation renewed: the registration response carries
                // the current value, so a pending newer one is obsolete.
                existing.newer = None;
                existing.accept = accept;
                existing.last_con = now;
                self.stats.observers_registered += 1;
                return true;
            }
            self.remove_observer(&key);
        }
        let mine = self.peers.get(&key.0).map_or(0, |p| p.observers);
        if self.observers.len() >= self.config.max_observers
            || mine >= self.config.max_observers_per_peer
        {
            self.stats.overloaded += 1;
            return false;
        }
        self.by_resource
            .entry(resource.clone())
            .or_default()
            .insert(key.clone());
        self.peers.entry(key.0).or_default().observers += 1;
        self.observers.insert(
            key,
            Observer {
                resource,
                accept,
                outstanding: None,
                newer: None,
                deferred: false,
                last_con: now,
            },
        );
        self.stats.observers_registered += 1;
        true
    }

    /// Removes an observer, cancels its outstanding notification and emits
    /// [`Event::ObservationEnded`]. No-op for unknown keys.
    pub(super) fn remove_observer(&mut self, key: &ObserverKey) {
        let Some(observer) = self.observers.remove(key) else {
            return;
        };
        if let Some(mid) = observer.outstanding {
            self.take_outgoing(&(key.0, mid));
        }
        self.notification_mids.retain(|_, (owner, _)| owner != key);
        self.peer_update(key.0, |peer| {
            peer.observers = peer.observers.saturating_sub(1);
            peer.queue
                .retain(|d| !matches!(d, Deferred::Notification(k) if k == key));
        });
        let remaining = match self.by_resource.get_mut(&observer.resource) {
            Some(set) => {
                set.remove(key);
                set.len()
            }
            None => 0,
        };
        if remaining == 0 {
            self.by_resource.remove(&observer.resource);
        }
        self.events.push_back(Event::ObservationEnded {
            resource: observer.resource,
            remaining,
        });
    }

    /// Ends one observation with a final CON `response` without Observe
    /// (RFC 7641 §3.2), queued behind NSTART like any CON.
    pub(super) fn end_one(&mut self, now: Instant, key: &ObserverKey, response: Response) {
        self.remove_observer(key);
        if self.peer_busy(key.0) {
            self.stats.nstart_deferred += 1;
            let peer = self.peers.entry(key.0).or_default();
            // Bounded: one final per former observer; beyond the per-peer
            // observer cap the oldest final is dropped.
            if peer.queue.len() >= self.config.max_observers_per_peer.max(1) {
                peer.queue.pop_front();
            }
            peer.queue
                .push_back(Deferred::Final(key.1.clone(), response));
            return;
        }
        self.send_final(now, key.0, &key.1, &response);
    }

    /// Transmits a final response as CON.
    pub(super) fn send_final(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        token: &[u8],
        response: &Response,
    ) {
        let Some(mid) = self.allocate_mid(now) else {
            return;
        };
        let bytes = self.encode(
            MessageType::Confirmable,
            mid,
            token,
            response,
            Extra::default(),
        );
        self.send_con(now, peer, mid, bytes, Purpose::Final);
    }

    /// Sends a fresh notification to one observer: CON or NON by policy;
    /// a CON to a client that already has NSTART CONs outstanding waits.
    pub(super) fn send_notification(
        &mut self,
        now: Instant,
        key: &ObserverKey,
        response: &Response,
    ) {
        let Some(observer) = self.observers.get(key) else {
            return;
        };
        let con = match self.config.notify {
            NotifyPolicy::Con => true,
            NotifyPolicy::Non => false,
            NotifyPolicy::NonWithPeriodicCon => {
                now >= observer.last_con + self.config.con_notify_interval
            }
        };
        if con && self.peer_busy(key.0) {
            self.stats.nstart_deferred += 1;
            if let Some(observer) = self.observers.get_mut(key) {
                observer.newer = Some(response.clone());
                observer.deferred = true;
            }
            self.peers
                .entry(key.0)
                .or_default()
                .queue
                .push_back(Deferred::Notification(key.clone()));
            return;
        }
        let Some(mid) = self.allocate_mid(now) else {
            return;
        };
        let seq = self.next_observe_seq();
        let mtype = if con {
            MessageType::Confirmable
        } else {
            MessageType::NonConfirmable
        };
        let bytes = self.encode(
            mtype,
            mid,
            &key.1,
            response,
            Extra {
                observe: Some(seq),
                ..Extra::default()
            },
        );
        self.stats.notifications += 1;
        if con {
            if let Some(observer) = self.observers.get_mut(key) {
                observer.outstanding = Some(mid);
                observer.last_con = now;
            }
            self.send_con(now, key.0, mid, bytes, Purpose::Notification(key.clone()));
        } else {
            self.stats.non_notifications += 1;
            self.remember_notification_mid(
                (key.0, mid),
                key.clone(),
                now + self.config.non_lifetime,
            );
            self.transmits.push_back((key.0, bytes));
        }
    }

    /// Remembers the MID of a notification no longer in `outgoing`, so an
    /// RST to it ends the observation; capped like the exchange cache.
    pub(super) fn remember_notification_mid(
        &mut self,
        mid: ExchangeKey,
        owner: ObserverKey,
        until: Instant,
    ) {
        while self.notification_mids.len() >= self.config.max_exchanges.max(1) {
            let Some(old) = self.notification_order.pop_front() else {
                break;
            };
            self.notification_mids.remove(&old);
        }
        self.notification_mids.insert(mid, (owner, until));
        self.notification_order.push_back(mid);
    }
}
