//! A webhook receiver that verifies ponte's Standard Webhooks signatures.
//!
//! ```text
//! printf 'whsec_%s\n' "$(head -c 32 /dev/urandom | base64)" > hook.secret
//! cargo run --example webhook_receiver -- hook.secret 127.0.0.1:8080
//! # ponte.toml:
//! #   [[webhook]]
//! #   name = "demo"
//! #   url = "http://127.0.0.1:8080/ponte"
//! #   secret_file = "hook.secret"
//! curl -X PUT --data 21.5 http://localhost:3000/resources/kitchen/temperature
//! ```
//!
//! How a receiver checks a request (any language; this file is the Rust version):
//! 1. Take the raw body bytes as received (do not re-serialize the JSON).
//! 2. Refuse a `webhook-timestamp` more than 5 minutes from your clock (replays).
//! 3. Compute base64(HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}")); the
//!    key is the base64 text after `whsec_` decoded (or the file's raw bytes if it has no
//!    `whsec_` prefix).
//! 4. Accept when one space-separated entry of `webhook-signature` is `v1,` + that value,
//!    compared in constant time.
//! 5. Answer 2xx quickly; use `webhook-id` to drop a re-sent duplicate. A 4xx other than
//!    408/429 tells ponte not to retry; anything else (5xx, timeout) is retried.
//!
//! The official Standard Webhooks libraries (Python, JavaScript, Go, ...) do the same.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// What the receiver keeps between requests.
struct Receiver {
    /// The signing key.
    key: Vec<u8>,
    /// Event ids already handled (a real receiver bounds or persists this).
    seen: Mutex<HashSet<String>>,
}

/// How far a timestamp may be from the receiver's clock.
const TOLERANCE_SECS: u64 = 5 * 60;

fn header<'a>(h: &'a HeaderMap, name: &str) -> Result<&'a str, (StatusCode, String)> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .ok_or((StatusCode::BAD_REQUEST, format!("missing {name}")))
}

/// Steps 2 to 4 above.
fn verify(key: &[u8], headers: &HeaderMap, body: &[u8]) -> Result<String, (StatusCode, String)> {
    let id = header(headers, "webhook-id")?;
    let ts = header(headers, "webhook-timestamp")?;
    let sigs = header(headers, "webhook-signature")?;
    let when: u64 = ts
        .parse()
        .map_err(|_| (StatusCode::BAD_REQUEST, "bad webhook-timestamp".to_string()))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if now.abs_diff(when) > TOLERANCE_SECS {
        return Err((
            StatusCode::BAD_REQUEST,
            "timestamp too old or too new".into(),
        ));
    }
    let valid = sigs.split(' ').any(|entry| {
        let Some(sig) = entry
            .strip_prefix("v1,")
            .and_then(|s| STANDARD.decode(s).ok())
        else {
            return false;
        };
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
            return false;
        };
        mac.update(format!("{id}.{ts}.").as_bytes());
        mac.update(body);
        // `verify_slice` compares in constant time.
        mac.verify_slice(&sig).is_ok()
    });
    if valid {
        Ok(id.to_owned())
    } else {
        Err((StatusCode::UNAUTHORIZED, "no valid signature".into()))
    }
}

async fn receive(
    State(r): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, (StatusCode, String)> {
    let id = verify(&r.key, &headers, &body)?;
    if !r
        .seen
        .lock()
        .map_err(|_| (StatusCode::INTERNAL_SERVER_ERROR, String::new()))?
        .insert(id.clone())
    {
        println!("{id}: duplicate (a retry of an event already handled)");
        return Ok(StatusCode::NO_CONTENT);
    }
    let event: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("not JSON: {e}")))?;
    println!(
        "{id}: {} {} = {} (from {} {})",
        event["event"],
        event["thing"],
        event.get("payload").unwrap_or(&event["payload_base64"]),
        event["origin"],
        event["client"]
    );
    Ok(StatusCode::NO_CONTENT)
}

/// The key in a secret file: `whsec_` + base64, or the raw bytes.
fn read_key(path: &str) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let text = std::fs::read(path)?;
    let text = text.strip_suffix(b"\n").unwrap_or(&text);
    Ok(match text.strip_prefix(b"whsec_") {
        Some(b64) => STANDARD.decode(b64)?,
        None => text.to_vec(),
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let secret = args.next().unwrap_or_else(|| "hook.secret".into());
    let addr: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:8080".into())
        .parse()?;
    let receiver = Arc::new(Receiver {
        key: read_key(&secret)?,
        seen: Mutex::new(HashSet::new()),
    });
    let app = axum::Router::new()
        .route("/ponte", post(receive))
        .with_state(receiver);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!(
        "webhook receiver on http://{}/ponte",
        listener.local_addr()?
    );
    // Stops after PONTE_EXAMPLE_SECS seconds when set (scripted runs), like `embed`.
    let stop = async {
        match std::env::var("PONTE_EXAMPLE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
        {
            Some(secs) => tokio::time::sleep(std::time::Duration::from_secs(secs)).await,
            None => std::future::pending().await,
        }
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await?;
    Ok(())
}
