//! Embedding ponte in another program through the library.
//!
//! Starts a gateway with a configuration built in code, publishes a value through the broker
//! core directly, and stops on Ctrl-C (or after `PONTE_EXAMPLE_SECS` seconds, which CI uses).
//!
//! ```text
//! cargo run --example embed
//! curl http://127.0.0.1:3000/resources/hello
//! ```

use std::time::Duration;

use bytes::Bytes;
use ponte::broker::retained::Precondition;
use ponte::broker::retained_message;
use ponte::config::Config;
use ponte::model::Origin;
use ponte::model::TopicName;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter("info").init();

    let mut config = Config::ephemeral(); // 127.0.0.1, no disk
    config.http.port = std::env::var("PONTE_HTTP_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let gateway = ponte::start(config).await?;
    println!(
        "HTTP {}  CoAP {}  MQTT {}",
        gateway.http_addr, gateway.coap_addr, gateway.mqtt_addr
    );

    // The embedding program can publish through the same path as every front-end.
    let topic = TopicName::parse("hello")?;
    gateway
        .broker
        .publish(
            retained_message(
                topic,
                Bytes::from_static(b"world"),
                Some("text/plain".into()),
                Origin::Internal,
            ),
            Precondition::none(),
        )
        .await?;
    println!("try: curl http://{}/resources/hello", gateway.http_addr);

    let secs = std::env::var("PONTE_EXAMPLE_SECS")
        .ok()
        .and_then(|s| s.parse().ok());
    match secs {
        Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
        None => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    gateway.shutdown().await;
    Ok(())
}
