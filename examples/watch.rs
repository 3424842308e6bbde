//! An MQTT client (rumqttc) watching a thing while an HTTP PUT changes it.
//!
//! Starts its own in-memory gateway on free ports, subscribes to `kitchen/temperature` over
//! MQTT, PUTs three values over HTTP, and prints what the MQTT client sees.
//!
//! ```text
//! cargo run --example watch
//! ```

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let gateway = ponte::start(ponte::config::Config::ephemeral()).await?;
    let (mqtt, http) = (gateway.mqtt_addr, gateway.http_addr);

    let mut opts = MqttOptions::new("watcher", mqtt.ip().to_string(), mqtt.port());
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(opts, 16);
    client
        .subscribe("kitchen/temperature", QoS::AtLeastOnce)
        .await?;

    // Wait for SUBACK before writing, so no value is missed.
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = events.poll().await? {
            break;
        }
    }

    let writer = tokio::spawn(async move {
        let web = reqwest::Client::new();
        for v in ["20.5", "21.0", "21.5"] {
            let r = web
                .put(format!("http://{http}/resources/kitchen/temperature"))
                .header("content-type", "text/plain")
                .body(v)
                .send()
                .await?;
            println!("HTTP PUT {v} -> {}", r.status());
        }
        Ok::<_, reqwest::Error>(())
    });

    let mut seen = 0;
    while seen < 3 {
        match tokio::time::timeout(Duration::from_secs(5), events.poll()).await?? {
            Event::Incoming(Packet::Publish(p)) => {
                println!(
                    "MQTT {} = {} (qos {:?}, retain {})",
                    p.topic,
                    String::from_utf8_lossy(&p.payload),
                    p.qos,
                    p.retain
                );
                seen += 1;
            }
            _ => continue,
        }
    }
    writer.await??;
    client.disconnect().await?;
    gateway.shutdown().await;
    Ok(())
}
