//! Fan-out: one message queued to every matching subscription (plain, tracked in a cluster, shared groups), made durable first where a persistent session needs it.

use super::*;

impl Broker {
    /// Queue `message` to every matching subscriber. Returns how many it was queued to and
    /// how many matched. `sequence` is the message's place in the cluster's log, if any. A
    /// QoS 1/2 delivery to a persistent session is made durable first; with `durable`, the
    /// receipts go there for the publisher to await (a message heard from another node
    /// has no publisher here to wait).
    pub(super) fn fan_out(
        &self,
        message: &Arc<Message>,
        sequence: Option<Seq>,
        mut durable: Option<&mut Vec<Receipt>>,
        route: Route,
    ) -> (usize, usize) {
        thread_local! {
            static MATCHED: std::cell::RefCell<Vec<Matched>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        // The node's marks move with what it hears from the log (a cluster keeping sessions
        // in the log): `matched` under the index's read lock, `fanned` once pushed.
        let marks = match (route.heard(), sequence, &self.durable) {
            (true, Some(seq), Some(d)) if d.logged() => Some((d.marks(), seq.get())),
            _ => None,
        };
        if message.expired(Instant::now()) {
            if route != Route::HeardOwn {
                self.metrics.expired.fetch_add(1, Ordering::Relaxed);
            }
            if let Some((marks, seq)) = marks {
                let _subs = self.subscriptions.read();
                marks.matched.store(seq, Ordering::Release);
                marks.fanned(seq);
            }
            return (0, 0);
        }
        MATCHED.with(|cell| {
            let mut matched = cell.borrow_mut();
            {
                let subs = self.subscriptions.read();
                subs.matches_from(&message.topic, message.publisher, &mut matched);
                if let Some((marks, seq)) = marks {
                    marks.matched.store(seq, Ordering::Release);
                }
            }
            let mut queued = 0;
            let found = matched.len();
            // One atomic load when no persistent session exists.
            let registered = self
                .durable
                .as_deref()
                .and_then(DurableSessions::registered);
            for m in matched.drain(..) {
                if self.push_matched(
                    message,
                    sequence,
                    m,
                    registered.as_ref(),
                    durable.as_deref_mut(),
                    route,
                ) {
                    queued += 1;
                }
            }
            drop(registered);
            if let Some((marks, seq)) = marks {
                marks.fanned(seq);
            }
            if route != Route::HeardOwn {
                // Counted once: an own message's sessions kept in the log were counted
                // when it was published here.
                self.metrics
                    .delivered
                    .fetch_add(queued as u64, Ordering::Relaxed);
            }
            (queued, found)
        })
    }

    /// Queue `message` to one matched subscriber (a persistent session's QoS 1/2 copy is
    /// made durable first; with `durable`, its receipt goes there). Returns whether it was
    /// queued; a delivery the mailbox refused is counted in `dropped`.
    pub(super) fn push_matched(
        &self,
        message: &Arc<Message>,
        sequence: Option<Seq>,
        m: Matched,
        registered: Option<&Registered<'_>>,
        durable: Option<&mut Vec<Receipt>>,
        route: Route,
    ) -> bool {
        match self.offer_matched(message, sequence, m, registered, durable, route) {
            Some(PushOutcome::Queued | PushOutcome::ReplacedOldest) => true,
            Some(PushOutcome::Dropped | PushOutcome::Overflowed) => {
                self.metrics.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
            Some(PushOutcome::SkippedOffline) | None => false,
        }
    }

    /// [`Broker::push_matched`] without counting: what the mailbox answered (`None`: not
    /// pushed at all, as for an own message heard back, or counted as queued, as for a
    /// tracked session's local message the log will bring).
    pub(super) fn offer_matched(
        &self,
        message: &Arc<Message>,
        sequence: Option<Seq>,
        m: Matched,
        registered: Option<&Registered<'_>>,
        durable: Option<&mut Vec<Receipt>>,
        route: Route,
    ) -> Option<PushOutcome> {
        // Only a cluster keeps sessions in the log: a single node pays one branch.
        let track = registered
            .filter(|_| self.logged)
            .and_then(|r| r.track(m.mailbox.id()));
        match (route, track) {
            // Hearing the log brings it, in log order: counted as queued.
            (Route::Local, Some(_)) if sequence.is_some() => return Some(PushOutcome::Queued),
            // Everyone else had it when it was published here.
            (Route::HeardOwn, None) => return None,
            _ => {}
        }
        let d = Delivery {
            message: message.clone(),
            qos: message.qos.min(m.qos),
            // MQTT-3.3.1-12/13: Retain As Published keeps the publisher's flag.
            retain: m.retain_as_published && message.retain,
            subscription_ids: m.ids,
            durable: None,
            log_seq: sequence,
        };
        let outcome = match track {
            Some(track) => self.push_tracked(track, &m.mailbox, d, route),
            None => {
                let wait = durable.is_some();
                let (outcome, receipt) = push(registered, &m.mailbox, d, wait);
                if let (Some(durable), Some(receipt)) = (durable, receipt) {
                    durable.push(receipt);
                }
                outcome
            }
        };
        Some(outcome)
    }

    /// Push a delivery into the mailbox of a persistent session kept in the cluster's log
    /// (see [`crate::durable::Track`]). A QoS 1/2 delivery of a logged message takes its
    /// log sequence as its durable identity; a live one passes the replay gate first (held
    /// while a resume replays the log, dropped when the replay covered it). Anything else
    /// (QoS 0, a retained value at SUBSCRIBE, a shared group's message) is pushed as it is:
    /// the log cannot give it back.
    pub(super) fn push_tracked(
        &self,
        track: &Track,
        mailbox: &Mailbox,
        d: Delivery,
        route: Route,
    ) -> PushOutcome {
        let seq = match (d.qos, d.log_seq, route) {
            (QoS::AtMostOnce, _, _) | (_, None, _) | (_, _, Route::Other | Route::Local) => {
                return mailbox.push(d);
            }
            (_, Some(seq), _) => seq.get(),
        };
        if route == Route::Replay {
            track.replayed(seq);
            return self.push_settled(track, mailbox, seq, d);
        }
        let mut slot = Some(d);
        let admit = track.admit(seq, || {
            let Some(d) = slot.take() else {
                return;
            };
            let mut held = self.held.lock();
            let list = held.entry(mailbox.id()).or_default();
            if list.len() < MAX_HELD {
                list.push((seq, d));
            } else {
                // Never pending: the position passes it once the replay is over.
                self.metrics.dropped.fetch_add(1, Ordering::Relaxed);
            }
        });
        match (admit, slot) {
            (Admit::Push, Some(d)) => self.push_settled(track, mailbox, seq, d),
            (Admit::Hold, _) => PushOutcome::Queued,
            _ => PushOutcome::SkippedOffline,
        }
    }

    /// Push pending delivery `seq` of a session kept in the log; what the mailbox drops
    /// (overflow, or displaced by `drop-oldest`) is finished for the session.
    pub(super) fn push_settled(
        &self,
        track: &Track,
        mailbox: &Mailbox,
        seq: u64,
        mut d: Delivery,
    ) -> PushOutcome {
        d.durable = Seq::new(seq);
        let (outcome, displaced) = mailbox.push_displacing(d);
        if let Some(old) = displaced.and_then(|old| old.durable) {
            track.finished(old.get());
        }
        if matches!(
            outcome,
            PushOutcome::Dropped | PushOutcome::Overflowed | PushOutcome::SkippedOffline
        ) {
            track.finished(seq);
        }
        outcome
    }
}

/// Push one delivery into `mailbox`. When the mailbox is a persistent session's (it is in
/// `registered`) and the delivery is QoS 1/2, the message is made durable first — so the
/// client's acknowledgement can only come after it — unless it already is (a restored
/// message has its sequence number); the receipt comes back when `wait`. A message that
/// leaves the mailbox unsent (displaced by `drop-oldest`, or refused by a full mailbox)
/// loses its durable copy too, or it would come back after a restart.
pub(super) fn push(
    registered: Option<&Registered<'_>>,
    mailbox: &Mailbox,
    mut d: Delivery,
    wait: bool,
) -> (PushOutcome, Option<Receipt>) {
    let Some(registered) = registered else {
        return (mailbox.push(d), None);
    };
    let mut receipt = None;
    if d.durable.is_none() {
        if let Some((seq, r)) = registered.append(mailbox.id(), &d.message, d.qos, d.retain, wait) {
            d.durable = Some(seq);
            receipt = r;
        }
    }
    let seq = d.durable;
    let (outcome, displaced) = mailbox.push_displacing(d);
    if let Some(old) = displaced.and_then(|old| old.durable) {
        registered.forget(mailbox.id(), old);
    }
    if let (
        Some(seq),
        PushOutcome::Dropped | PushOutcome::Overflowed | PushOutcome::SkippedOffline,
    ) = (seq, outcome)
    {
        registered.forget(mailbox.id(), seq);
    }
    (outcome, receipt)
}
