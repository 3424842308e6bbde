//! `$SYS/broker/...` statistics (mosquitto's names), published through the ordinary path.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use rumqttc::QoS;

#[tokio::test]
async fn sys_topics_report_the_broker_and_are_readable_everywhere() {
    let gw = gateway_with(|c| c.mqtt.sys_interval_secs = 1).await;
    let mut c = Client::subscriber(gw.mqtt_addr, "sys-watcher", "$SYS/#").await;
    // A plain `#` subscriber must not see them (MQTT-4.7.2-1).
    c.subscribe("#", QoS::AtMostOnce).await;
    c.publish("sys/probe", QoS::AtMostOnce, false, b"x").await;

    let mut seen: HashMap<String, String> = HashMap::new();
    let wanted = [
        "$SYS/broker/version",
        "$SYS/broker/uptime",
        "$SYS/broker/clients/connected",
        "$SYS/broker/messages/received",
        "$SYS/broker/bytes/received",
        "$SYS/broker/subscriptions/count",
    ];
    // connected counts this client, bytes/received what it sent.
    let complete = |seen: &HashMap<String, String>| {
        wanted.iter().all(|w| seen.contains_key(*w))
            && seen["$SYS/broker/clients/connected"] == "1"
            && seen["$SYS/broker/bytes/received"] != "0"
            && seen["$SYS/broker/subscriptions/count"] == "2"
    };
    let all = tokio::time::timeout(Duration::from_secs(8), async {
        while !complete(&seen) {
            let p = c.publish_rx().await;
            if p.topic.starts_with("$SYS/") {
                seen.insert(p.topic.clone(), String::from_utf8_lossy(&p.payload).into());
            }
        }
    });
    all.await
        .unwrap_or_else(|_| panic!("all $SYS values within 8 s, saw {seen:?}"));
    assert!(seen["$SYS/broker/version"].starts_with("ponte version "));
    assert!(seen["$SYS/broker/uptime"].ends_with(" seconds"));

    // They are retained things like any other: HTTP reads them.
    let r = http_get(&gw, "$SYS/broker/version").await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().starts_with("ponte version"));
    drop(c);
    gw.shutdown().await;
}

#[tokio::test]
async fn sys_interval_zero_turns_them_off() {
    let gw = gateway_with(|c| c.mqtt.sys_interval_secs = 0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = http_get(&gw, "$SYS/broker/version").await;
    assert_eq!(r.status(), 404);
    gw.shutdown().await;
}
