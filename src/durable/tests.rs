//! The owner of durable sessions over a recording engine: what restore rebuilds and
//! deletes, and which protocol-state changes are awaited before the packets that follow
//! from them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use parking_lot::Mutex;

use super::{DurableSessions, Exchange, RestoredExchange, Seq, Stage};
use crate::model::QoS;
use crate::store::session::{
    LoadedSessions, QueuedRecord, SessionOp, SessionRecord, SessionStore, StoredInflight,
    StoredState,
};
use crate::store::StoreError;

/// An engine that starts with `loaded` and records every op it is given.
struct Recording {
    loaded: Mutex<Option<LoadedSessions>>,
    ops: Arc<Mutex<Vec<SessionOp>>>,
}

impl SessionStore for Recording {
    fn load_sessions(&self) -> Result<LoadedSessions, StoreError> {
        Ok(self.loaded.lock().take().unwrap_or_default())
    }

    fn apply_sessions(&mut self, ops: &[SessionOp]) -> Result<(), StoreError> {
        self.ops.lock().extend(ops.iter().cloned());
        Ok(())
    }
}

fn owner(loaded: LoadedSessions) -> (Arc<DurableSessions>, Arc<Mutex<Vec<SessionOp>>>) {
    let ops = Arc::new(Mutex::new(Vec::new()));
    let store = Recording {
        loaded: Mutex::new(Some(loaded)),
        ops: ops.clone(),
    };
    (DurableSessions::local(store).expect("opens"), ops)
}

fn seq(n: u64) -> Seq {
    Seq::new(n).expect("not 0")
}

fn entry(topic: &str) -> QueuedRecord {
    QueuedRecord {
        topic: topic.into(),
        qos: QoS::AtLeastOnce,
        retain: false,
        content_type: None,
        properties: None,
        expires_at: None,
        payload: Bytes::from_static(b"m"),
    }
}

/// Removes and deletes made after the first alive mark, as (client, seq) / client.
fn removals(ops: &[SessionOp]) -> (Vec<(String, u64)>, Vec<String>) {
    let mut removed = Vec::new();
    let mut deleted = Vec::new();
    for op in ops {
        match op {
            SessionOp::Remove(c, s) => removed.push((c.to_string(), s.get())),
            SessionOp::DeleteSession(c) => deleted.push(c.to_string()),
            _ => {}
        }
    }
    removed.sort();
    (removed, deleted)
}

#[test]
fn mqtt_4_4_0_1_restore_keeps_exchange_order_and_deletes_what_is_no_longer_wanted() {
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    let mut states = HashMap::new();
    states.insert(
        "kept".to_string(),
        StoredState {
            next_pkid: 8,
            outgoing: vec![
                StoredInflight {
                    pkid: 3,
                    seq: Some(seq(5)),
                    released: true,
                },
                StoredInflight {
                    pkid: 4,
                    seq: Some(seq(6)),
                    released: false,
                },
                // Acknowledged in a batch the state was not rewritten in: nothing to re-send.
                StoredInflight {
                    pkid: 7,
                    seq: Some(seq(99)),
                    released: false,
                },
            ],
            inbound_qos2: vec![12],
            log: None,
        },
    );
    let mut expired = entry("kept/t");
    expired.expires_at = Some(hour_ago);
    let loaded = LoadedSessions {
        sessions: vec![
            (
                "gone".into(),
                SessionRecord {
                    expiry: 10,
                    away_since: Some(hour_ago),
                    subscriptions: Vec::new(),
                },
            ),
            (
                "kept".into(),
                SessionRecord {
                    expiry: u32::MAX,
                    away_since: None,
                    subscriptions: Vec::new(),
                },
            ),
        ],
        states,
        queued: vec![
            ("gone".into(), seq(1), entry("gone/t")),
            ("kept".into(), seq(5), entry("kept/t")),
            ("kept".into(), seq(6), entry("kept/t")),
            ("kept".into(), seq(8), entry("kept/t")),
            ("kept".into(), seq(9), expired),
            ("kept".into(), seq(10), entry("not/a/#/name")),
            ("nobody".into(), seq(11), entry("x")),
        ],
        alive_at: Some(hour_ago),
    };
    let (durable, ops) = owner(loaded);
    let restored = durable.restore();
    assert_eq!(restored.expired, 1, "seq 9's Message Expiry passed");
    assert_eq!(restored.sessions.len(), 1, "{:?}", restored.sessions);
    let kept = &restored.sessions[0];
    assert_eq!(kept.client, "kept");
    assert!(
        kept.was_connected,
        "stored as connected: away since the last mark"
    );
    assert_eq!(kept.away_since, hour_ago);
    assert_eq!((kept.inbound_qos2.clone(), kept.next_pkid), (vec![12], 8));
    match &kept.outgoing[..] {
        [RestoredExchange::Released { pkid: 3, seq: s5 }, RestoredExchange::Publish {
            pkid: 4, seq: s6, ..
        }] => {
            assert_eq!((*s5, *s6), (Some(seq(5)), seq(6)));
        }
        other => panic!("exchanges in their original order: {other:?}"),
    }
    let queued: Vec<u64> = kept.queued.iter().map(|(s, _)| s.get()).collect();
    assert_eq!(queued, vec![8], "the rest of the queue, in order");
    durable.close();
    let (removed, deleted) = removals(&ops.lock());
    assert_eq!(deleted, vec!["gone".to_string()], "expired while down");
    assert_eq!(
        removed,
        vec![
            ("kept".into(), 9),    // expired
            ("kept".into(), 10),   // topic no longer a name
            ("nobody".into(), 11)  // no session names it
        ]
    );
}

#[test]
fn a_qos2_step_or_an_inbound_qos2_id_is_durable_before_what_follows_it_qos1_is_not_awaited() {
    let (durable, _ops) = owner(LoadedSessions::default());
    let s = durable.open(Arc::from("c"), 1, false);
    let sent = |pkid, qos| Exchange {
        pkid,
        stage: Stage::Published(qos),
    };
    let none = std::iter::empty::<u16>;
    // A QoS 1 PUBLISH sent: written, not awaited.
    s.sent(1, seq(1));
    let qos1 = [sent(1, QoS::AtLeastOnce)];
    assert!(s.sync(qos1.iter().copied(), none(), 2).is_none());
    // Nothing changed: nothing written.
    assert!(s.sync(qos1.iter().copied(), none(), 2).is_none());
    // A QoS 2 PUBLISH sent: awaited before it goes out.
    let qos2 = [sent(1, QoS::AtLeastOnce), sent(2, QoS::ExactlyOnce)];
    assert!(s.sync(qos2.iter().copied(), none(), 3).is_some());
    // Its PUBREL stage: awaited before the PUBREL.
    let released = [
        sent(1, QoS::AtLeastOnce),
        Exchange {
            pkid: 2,
            stage: Stage::Released,
        },
    ];
    assert!(s.sync(released.iter().copied(), none(), 3).is_some());
    // The QoS 1 exchange ends: written, not awaited.
    let rest = [Exchange {
        pkid: 2,
        stage: Stage::Released,
    }];
    assert!(s.sync(rest.iter().copied(), none(), 3).is_none());
    // An inbound QoS 2 id recorded (before its PUBREC) and released (before PUBCOMP).
    assert!(s.sync(rest.iter().copied(), [7].into_iter(), 3).is_some());
    assert!(s.sync(rest.iter().copied(), none(), 3).is_some());
    durable.close();
}
