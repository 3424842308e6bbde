//! `$SYS/broker/...` statistics (mosquitto's names), published through the ordinary path.

use std::collections::HashMap;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::time::timeout;

#[tokio::test]
async fn sys_topics_report_the_broker_and_are_readable_everywhere() {
    let mut config = ponte::config::Config::ephemeral();
    config.mqtt.sys_interval_secs = 1;
    let gw = ponte::start(config).await.unwrap();

    let mut opts = MqttOptions::new("sys-watcher", "127.0.0.1", gw.mqtt_addr.port());
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(opts, 64);
    client.subscribe("$SYS/#", QoS::AtMostOnce).await.unwrap();
    // A plain `#` subscriber must not see them (MQTT-4.7.2-1).
    client.subscribe("#", QoS::AtMostOnce).await.unwrap();
    client
        .publish("sys/probe", QoS::AtMostOnce, false, "x")
        .await
        .unwrap();

    let mut seen: HashMap<String, String> = HashMap::new();
    let wanted = [
        "$SYS/broker/version",
        "$SYS/broker/uptime",
        "$SYS/broker/clients/connected",
        "$SYS/broker/messages/received",
        "$SYS/broker/bytes/received",
        "$SYS/broker/subscriptions/count",
    ];
    timeout(Duration::from_secs(8), async {
        loop {
            match events.poll().await.expect("connection") {
                Event::Incoming(Packet::Publish(p)) if p.topic.starts_with("$SYS/") => {
                    seen.insert(p.topic.clone(), String::from_utf8_lossy(&p.payload).into());
                    // connected counts this client, bytes/received what it sent.
                    if wanted.iter().all(|w| seen.contains_key(*w))
                        && seen["$SYS/broker/clients/connected"] == "1"
                        && seen["$SYS/broker/bytes/received"] != "0"
                        && seen["$SYS/broker/subscriptions/count"] == "2"
                    {
                        return;
                    }
                }
                _ => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("all $SYS values within 8 s, saw {seen:?}"));
    assert!(seen["$SYS/broker/version"].starts_with("ponte version "));
    assert!(seen["$SYS/broker/uptime"].ends_with(" seconds"));

    // They are retained things like any other: HTTP reads them.
    let r = reqwest::get(format!(
        "http://{}/resources/$SYS/broker/version",
        gw.http_addr
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().starts_with("ponte version"));
    drop(client);
    gw.shutdown().await;
}

#[tokio::test]
async fn sys_interval_zero_turns_them_off() {
    let mut config = ponte::config::Config::ephemeral();
    config.mqtt.sys_interval_secs = 0;
    let gw = ponte::start(config).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = reqwest::get(format!(
        "http://{}/resources/$SYS/broker/version",
        gw.http_addr
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), 404);
    gw.shutdown().await;
}
