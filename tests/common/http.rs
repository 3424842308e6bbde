//! HTTP through reqwest: the resources of a gateway (in-process or the real binary) and its
//! Server-Sent Events.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use ponte::Gateway;

use super::wait::{within, WAIT};

/// Whatever serves HTTP: an in-process [`Gateway`] or an address (the real binary's).
pub trait HttpAt {
    /// The plain HTTP listener.
    fn http_at(&self) -> SocketAddr;
}

impl HttpAt for Gateway {
    fn http_at(&self) -> SocketAddr {
        self.http_addr
    }
}

impl HttpAt for SocketAddr {
    fn http_at(&self) -> SocketAddr {
        *self
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// The URL of the thing `topic`.
pub fn url(at: &impl HttpAt, topic: &str) -> String {
    format!("http://{}/resources/{}", at.http_at(), topic)
}

/// Send `req`, bounded by [`WAIT`].
pub async fn send(what: &str, req: reqwest::RequestBuilder) -> reqwest::Response {
    within(WAIT, what, req.send())
        .await
        .unwrap_or_else(|e| panic!("{what} sent: {e}"))
}

pub async fn http_put(
    at: &impl HttpAt,
    topic: &str,
    body: impl Into<reqwest::Body>,
    ct: &str,
) -> reqwest::Response {
    let req = http().put(url(at, topic)).header("content-type", ct);
    send("HTTP PUT", req.body(body)).await
}

/// `PUT` of `body` with no Content-Type.
pub async fn http_put_untyped(
    at: &impl HttpAt,
    topic: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    send("HTTP PUT", http().put(url(at, topic)).body(body)).await
}

pub async fn http_get(at: &impl HttpAt, topic: &str) -> reqwest::Response {
    send("HTTP GET", http().get(url(at, topic))).await
}

pub async fn http_delete(at: &impl HttpAt, topic: &str) -> reqwest::Response {
    send("HTTP DELETE", http().delete(url(at, topic))).await
}

/// The body of a `GET` of `topic`, whatever its status.
pub async fn http_text(at: &impl HttpAt, topic: &str) -> String {
    http_get(at, topic).await.text().await.unwrap()
}

/// An open Server-Sent Events stream, read as text.
pub struct Sse {
    stream:
        std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    pub buf: String,
}

impl Sse {
    pub async fn open(gw: &Gateway, topic: &str) -> Sse {
        let r = send(
            "SSE response headers",
            http()
                .get(url(gw, topic))
                .header("accept", "text/event-stream")
                .timeout(Duration::from_secs(60)),
        )
        .await;
        assert_eq!(r.status(), 200, "SSE status");
        let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ct.starts_with("text/event-stream"), "SSE content-type {ct}");
        Sse {
            stream: Box::pin(r.bytes_stream()),
            buf: String::new(),
        }
    }

    /// Read until the buffer holds a complete event (blank line) containing `needle`;
    /// returns that event's text and drops everything up to it.
    pub async fn event_with(&mut self, needle: &str) -> String {
        within(WAIT, &format!("SSE event with {needle:?}"), async {
            loop {
                while let Some(end) = self.buf.find("\n\n") {
                    let ev: String = self.buf[..end + 2].to_owned();
                    self.buf.drain(..end + 2);
                    if ev.contains(needle) {
                        return ev;
                    }
                }
                match self.stream.next().await {
                    Some(Ok(b)) => self.buf.push_str(&String::from_utf8_lossy(&b)),
                    other => panic!("SSE stream ended: {other:?}"),
                }
            }
        })
        .await
    }
}
