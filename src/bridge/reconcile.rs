//! Retained reconciliation on (re)connect: the remote is the truth for the topics its
//! `in` rules bring in.
//!
//! When the bridge subscribes, the remote sends its retained values under the `in`
//! filters; they overwrite the local ones as they arrive. The local values under those
//! filters that the remote did *not* send are what is left to settle: cleared locally
//! (the remote no longer has them), except under a rule that also goes out when the
//! remote lost the bridge's session — then the remote lost its copies, and they are
//! republished instead ("local retained values under `out` patterns are republished if the
//! remote session was lost").
//!
//! MQTT has no "end of retained values" marker. The bridge sends one more request after
//! the SUBSCRIBE (see [`super::remote::Client::marker`]); the remote answers it after the
//! retained values it sent at once. QoS 1/2 values beyond the remote's in-flight window
//! may still trail it, so the decision waits until no retained value has arrived for
//! [`SETTLE`]. A local value written meanwhile is not cleared: the clear is conditional on
//! the version seen when the reconciliation began.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::model::TopicName;

/// Quiet time after the marker's answer before the values the remote did not send are
/// settled.
pub(crate) const SETTLE: Duration = Duration::from_secs(1);

/// Where a reconciliation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// None running.
    Idle,
    /// SUBSCRIBE sent; waiting for its acknowledgement.
    Subscribing,
    /// Waiting for the marker's answer.
    Marking,
    /// Marker answered: waiting for the remote to go quiet.
    Settling,
}

/// What to do with the local values the remote did not send.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Settled {
    /// Clear these locally, if they still have this version.
    pub clear: Vec<(TopicName, u64)>,
    /// Publish these to the remote (they go out too, and the remote lost its session).
    pub republish: Vec<TopicName>,
}

/// One reconciliation at a time (a reconnect starts over).
#[derive(Debug)]
pub(crate) struct Reconcile {
    /// Progress.
    phase: Phase,
    /// Local values under `in` rules not (yet) sent by the remote: topic → version.
    candidates: HashMap<TopicName, u64>,
    /// Whether the remote kept the bridge's session on this connection.
    session_present: bool,
    /// When settling ends, unless another retained value arrives first.
    deadline: Option<Instant>,
}

impl Default for Reconcile {
    fn default() -> Self {
        Reconcile {
            phase: Phase::Idle,
            candidates: HashMap::new(),
            session_present: false,
            deadline: None,
        }
    }
}

impl Reconcile {
    /// Start, just before subscribing: `local` are the local values under `in` rules.
    pub(crate) fn begin(
        &mut self,
        session_present: bool,
        local: impl IntoIterator<Item = (TopicName, u64)>,
    ) {
        self.phase = Phase::Subscribing;
        self.session_present = session_present;
        self.candidates = local.into_iter().collect();
        self.deadline = None;
    }

    /// The answer to the SUBSCRIBE or to the marker arrived.
    pub(crate) fn acknowledged(&mut self, now: Instant) {
        match self.phase {
            Phase::Subscribing => self.phase = Phase::Marking,
            Phase::Marking => {
                self.phase = Phase::Settling;
                self.deadline = Some(now + SETTLE);
            }
            Phase::Idle | Phase::Settling => {}
        }
    }

    /// A retained value for local `topic` arrived from the remote.
    pub(crate) fn retained(&mut self, topic: &TopicName, now: Instant) {
        if self.phase == Phase::Idle {
            return;
        }
        self.candidates.remove(topic);
        if self.phase == Phase::Settling {
            self.deadline = Some(now + SETTLE);
        }
    }

    /// When to call [`Reconcile::settle`], if settling.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Settle: `goes_out` says whether a topic is also carried out.
    pub(crate) fn settle(&mut self, goes_out: impl Fn(&TopicName) -> bool) -> Settled {
        let mut out = Settled::default();
        for (topic, version) in self.candidates.drain() {
            if goes_out(&topic) && !self.session_present {
                out.republish.push(topic);
            } else {
                out.clear.push((topic, version));
            }
        }
        out.clear.sort();
        out.republish.sort();
        self.phase = Phase::Idle;
        self.deadline = None;
        out
    }

    /// The connection ended: nothing half-known is acted on.
    pub(crate) fn reset(&mut self) {
        *self = Reconcile::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> TopicName {
        TopicName::parse(s).unwrap()
    }

    #[test]
    fn values_the_remote_did_not_send_are_cleared_or_republished() {
        let now = Instant::now();
        let mut r = Reconcile::default();
        r.begin(false, [(t("in/a"), 1), (t("in/b"), 2), (t("both/c"), 3)]);
        r.retained(&t("in/a"), now);
        assert_eq!(r.deadline(), None, "not settling before the marker");
        r.acknowledged(now); // SUBACK
        r.acknowledged(now); // marker
        let d = r.deadline().unwrap();
        r.retained(&t("nothing/local"), now + Duration::from_millis(500));
        assert!(
            r.deadline().unwrap() > d,
            "a late retained value postpones settling"
        );
        let s = r.settle(|x| x.as_str().starts_with("both/"));
        assert_eq!(s.clear, vec![(t("in/b"), 2)]);
        assert_eq!(s.republish, vec![t("both/c")]);
        assert_eq!(r.deadline(), None);
    }

    #[test]
    fn with_the_session_kept_the_remote_wins_for_both_and_reset_forgets() {
        let mut r = Reconcile::default();
        r.begin(true, [(t("both/c"), 3)]);
        r.acknowledged(Instant::now());
        r.acknowledged(Instant::now());
        assert_eq!(r.settle(|_| true).clear, vec![(t("both/c"), 3)]);
        r.begin(true, [(t("x"), 1)]);
        r.reset();
        assert_eq!(r.settle(|_| false), Settled::default());
    }
}
