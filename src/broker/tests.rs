//! Unit tests of the broker core.

use super::backbone::Local;
use super::*;
use crate::store::memory::MemoryStore;
use mailbox::OverflowPolicy;

#[tokio::test]
async fn publish_reaches_matching_subscribers_after_store() {
    let b = Broker::new(MemoryStore, Arc::new(Local)).unwrap();
    let m = Mailbox::new(16, OverflowPolicy::DropNewest);
    b.subscribe(
        &TopicFilter::parse("a/+").unwrap(),
        &m,
        QoS::AtMostOnce,
        true,
    );
    let t = TopicName::parse("a/b").unwrap();
    let out = b
        .publish(
            retained_message(
                t.clone(),
                Bytes::from_static(b"v"),
                None,
                Origin::Http(None),
            ),
            Precondition::none(),
        )
        .await
        .unwrap();
    assert_eq!(out.receivers, 1);
    assert!(matches!(out.retained, Some(WriteOutcome::Created(_))));
    let d = m.pop().unwrap();
    assert_eq!(d.qos, QoS::AtMostOnce);
    assert!(
        !d.retain,
        "MQTT-3.3.1-9: live messages are not flagged retained"
    );
    assert_eq!(b.get(&t).unwrap().payload, "v");
    // A new subscriber gets the retained copy with RETAIN=1 (MQTT-3.3.1-8).
    let m2 = Mailbox::new(16, OverflowPolicy::DropNewest);
    b.subscribe(
        &TopicFilter::parse("#").unwrap(),
        &m2,
        QoS::ExactlyOnce,
        true,
    );
    let d = m2.pop().unwrap();
    assert!(d.retain);
    assert_eq!(d.qos, QoS::AtLeastOnce, "min(stored QoS 1, granted 2)");
}

#[tokio::test]
async fn failed_precondition_delivers_nothing() {
    let b = Broker::new(MemoryStore, Arc::new(Local)).unwrap();
    let m = Mailbox::new(16, OverflowPolicy::DropNewest);
    b.subscribe(
        &TopicFilter::parse("x").unwrap(),
        &m,
        QoS::AtMostOnce,
        false,
    );
    let out = b
        .publish(
            retained_message(
                TopicName::parse("x").unwrap(),
                Bytes::new(),
                None,
                Origin::Http(None),
            ),
            Precondition::exists(),
        )
        .await
        .unwrap();
    assert!(out.precondition_failed());
    assert!(m.is_empty());
}
