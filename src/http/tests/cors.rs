//! CORS on `/resources` (the Fetch standard).

use super::*;

fn cors_harness(origins: &[&str]) -> Harness {
    let mut config = Config::ephemeral();
    config.http.cors_origins = origins.iter().map(|s| s.to_string()).collect();
    harness_with(config)
}

async fn preflight(h: &Harness, origin: &str) -> Response {
    h.send(
        req(Method::OPTIONS, "/resources/a")
            .header("origin", origin)
            .header("access-control-request-method", "PUT")
            .header("access-control-request-headers", "if-match, content-type")
            .body(Body::empty())
            .expect("request"),
    )
    .await
}

#[tokio::test]
async fn fetch_cors_allow_list() {
    let h = cors_harness(&["https://a.example"]);
    let r = preflight(&h, "https://a.example").await;
    assert!(r.status().is_success());
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://a.example"
    );
    let r = preflight(&h, "https://evil.example").await;
    assert!(!r.headers().contains_key("access-control-allow-origin"));
    let r = h
        .send(
            req(Method::PUT, "/resources/a")
                .header("origin", "https://a.example")
                .body(Body::from("v"))
                .expect("request"),
        )
        .await;
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://a.example"
    );
    let exposed = r.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    for h in ["etag", "location", "last-modified"] {
        assert!(exposed.contains(h), "{exposed}");
    }
}

#[tokio::test]
async fn fetch_cors_any_origin_without_credentials() {
    let h = cors_harness(&["*"]);
    let r = preflight(&h, "https://b.example").await;
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    assert!(!r.headers().contains_key("access-control-allow-credentials"));
}

#[tokio::test]
async fn no_cors_configured_means_no_cors_headers() {
    let h = harness();
    let r = preflight(&h, "https://b.example").await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(!r.headers().contains_key("access-control-allow-origin"));
}
