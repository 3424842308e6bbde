//! Server-sent events on `/resources/T` (WHATWG HTML §9.2).

use super::*;

/// The next SSE frame that is not a keep-alive, within a deadline.
pub(super) async fn next_event(body: &mut Body) -> Option<String> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("an SSE frame within 5 s")?
            .expect("frame");
        if let Ok(data) = frame.into_data() {
            let text = String::from_utf8(data.to_vec()).expect("utf-8 frame");
            if !text.starts_with(':') {
                return Some(text);
            }
        }
    }
}

pub(super) fn sse_request(uri: &str) -> Request<Body> {
    req(Method::GET, uri)
        .header(ACCEPT, "text/event-stream")
        .body(Body::empty())
        .expect("request")
}

#[tokio::test]
async fn whatwg_sse_current_value_then_every_publish_then_unsubscribe_on_drop() {
    let h = harness();
    h.put("/resources/s", "first\nline").await;
    let r = h.send(sse_request("/resources/s")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[CONTENT_TYPE], "text/event-stream");
    assert_eq!(h.broker.subscription_count(), 1);
    let mut body = r.into_body();
    assert_eq!(
        next_event(&mut body).await.as_deref(),
        Some("event: message\nid: 1\ndata: first\ndata: line\n\n")
    );
    h.send(
        req(Method::PUT, "/resources/s")
            .body(Body::from(vec![0xffu8, 0]))
            .expect("request"),
    )
    .await;
    assert_eq!(
        next_event(&mut body).await.as_deref(),
        Some("event: binary\nid: 2\ndata: /wA=\n\n")
    );
    h.call(Method::DELETE, "/resources/s", "").await;
    assert_eq!(
        next_event(&mut body).await.as_deref(),
        Some("event: delete\nid: 3\ndata:\n\n")
    );
    drop(body);
    assert_eq!(h.broker.subscription_count(), 0);
}

#[tokio::test]
async fn whatwg_sse_on_missing_value_waits_for_the_first_publish() {
    let h = harness();
    let r = h.send(sse_request("/resources/later")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let mut body = r.into_body();
    h.put("/resources/later", "now").await;
    assert_eq!(
        next_event(&mut body).await.as_deref(),
        Some("event: message\nid: 1\ndata: now\n\n")
    );
}

#[tokio::test]
async fn sse_stream_ends_on_shutdown() {
    let Harness {
        app,
        broker,
        controller,
    } = harness();
    let r = app
        .clone()
        .oneshot(sse_request("/resources/x"))
        .await
        .expect("response");
    drop(app);
    let mut body = r.into_body();
    let stopping = tokio::spawn(controller.shutdown());
    assert_eq!(next_event(&mut body).await, None, "the stream ends");
    drop(body);
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .expect("shutdown is not held up by the stream")
        .expect("join");
    assert_eq!(broker.subscription_count(), 0);
}
