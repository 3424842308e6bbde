//! Resources: reads, writes, conditional requests, paths, body limits and store failures (RFC 9110).

use super::*;

#[tokio::test]
async fn rfc9110_15_5_5_get_missing_is_404_problem() {
    let h = harness();
    let r = h.call(Method::GET, "/resources/kitchen", "").await;
    let detail = problem(r, StatusCode::NOT_FOUND).await;
    assert_eq!(detail, "no value is stored for \"kitchen\"");
}

#[tokio::test]
async fn rfc9110_15_3_2_put_new_is_201_with_location_and_etag() {
    let h = harness();
    let r = h
        .send(
            req(Method::PUT, "/resources/kitchen/temp?ignored=1")
                .header(CONTENT_TYPE, "text/plain")
                .body(Body::from("21.5"))
                .expect("request"),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()[LOCATION], "/resources/kitchen/temp");
    let v = h.value("kitchen/temp").expect("stored");
    assert_eq!(etag(&r), v.http_etag());
    assert_eq!(v.payload, "21.5");
    assert_eq!(v.content_type.as_deref(), Some("text/plain"));

    let r = h.call(Method::GET, "/resources/kitchen/temp", "").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[CONTENT_TYPE], "text/plain");
    assert_eq!(etag(&r), v.http_etag());
    assert!(r.headers().contains_key(LAST_MODIFIED));
    assert_eq!(body_of(r).await, "21.5");
}

#[tokio::test]
async fn rfc9110_15_3_5_put_existing_is_204_with_new_etag() {
    let h = harness();
    let first = etag(&h.put("/resources/a", "1").await);
    let r = h.call(Method::POST, "/resources/a", "2").await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(!r.headers().contains_key(LOCATION));
    assert_ne!(etag(&r), first);
    assert_eq!(h.value("a").expect("stored").payload, "2");
}

#[tokio::test]
async fn get_without_stored_type_is_octet_stream() {
    let h = harness();
    h.put("/resources/raw", "x").await;
    let r = h.call(Method::GET, "/resources/raw", "").await;
    assert_eq!(r.headers()[CONTENT_TYPE], "application/octet-stream");
}

#[tokio::test]
async fn rfc9110_9_3_2_head_is_get_without_body() {
    let h = harness();
    h.put("/resources/a", "hello").await;
    let r = h.call(Method::HEAD, "/resources/a", "").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[CONTENT_LENGTH], "5");
    assert!(r.headers().contains_key(ETAG));
    assert!(body_of(r).await.is_empty());
    let r = h.call(Method::HEAD, "/resources/none", "").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

/// The header set of a value's 200 (built once per version and cloned whole, `headers.rs`)
/// is the same for GET and HEAD and follows each new version.
#[tokio::test]
async fn rfc9110_9_3_2_get_and_head_carry_every_header_of_the_current_version() {
    let h = harness();
    for (body, ct) in [("hello", "text/plain"), ("{\"a\":12}", "application/json")] {
        let put = h
            .send(
                req(Method::PUT, "/resources/v")
                    .header(CONTENT_TYPE, ct)
                    .body(Body::from(body))
                    .expect("request"),
            )
            .await;
        let tag = etag(&put);
        let get = h.call(Method::GET, "/resources/v", "").await;
        let head = h.call(Method::HEAD, "/resources/v", "").await;
        for r in [&get, &head] {
            assert_eq!(r.status(), StatusCode::OK);
            let names: Vec<_> = r.headers().keys().map(|k| k.as_str()).collect();
            assert_eq!(
                names,
                [
                    "content-type",
                    "content-length",
                    "etag",
                    "last-modified",
                    "cache-control",
                    "content-security-policy",
                    "x-content-type-options"
                ],
                "one of each, nothing else"
            );
            assert_eq!(r.headers()[CONTENT_TYPE], ct);
            assert_eq!(r.headers()[CONTENT_LENGTH], body.len().to_string().as_str());
            assert_eq!(etag(r), tag);
            assert_eq!(r.headers()[http::header::CACHE_CONTROL], "no-cache");
            assert_eq!(r.headers()["content-security-policy"], "sandbox");
            assert_eq!(r.headers()["x-content-type-options"], "nosniff");
            assert!(r.headers().contains_key(LAST_MODIFIED));
        }
        assert_eq!(body_of(get).await, body);
        assert!(body_of(head).await.is_empty());
    }
}

#[tokio::test]
async fn rfc9110_13_1_2_if_none_match_matching_get_is_304() {
    let h = harness();
    let tag = etag(&h.put("/resources/a", "v").await);
    for given in [
        tag.clone(),
        format!("W/{tag}"),
        "\"0\", ".to_owned() + &tag,
        "*".into(),
    ] {
        let r = h
            .send(
                req(Method::GET, "/resources/a")
                    .header(IF_NONE_MATCH, &given)
                    .body(Body::empty())
                    .expect("request"),
            )
            .await;
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED, "{given}");
        assert_eq!(etag(&r), tag);
        assert!(body_of(r).await.is_empty());
    }
    let r = h
        .send(
            req(Method::GET, "/resources/a")
                .header(IF_NONE_MATCH, "\"ffff\"")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn rfc9110_13_1_3_if_modified_since_unchanged_is_304() {
    let h = harness();
    let r = h.put("/resources/a", "v").await;
    let date = r.headers()[LAST_MODIFIED].clone();
    let r = h
        .send(
            req(Method::GET, "/resources/a")
                .header(IF_MODIFIED_SINCE, date)
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    let r = h
        .send(
            req(Method::GET, "/resources/a")
                .header(IF_MODIFIED_SINCE, "Thu, 01 Jan 1970 00:00:00 GMT")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn rfc9110_13_1_1_if_match_stale_on_get_is_412() {
    let h = harness();
    h.put("/resources/a", "v").await;
    let r = h
        .send(
            req(Method::GET, "/resources/a")
                .header(IF_MATCH, "\"ffff\"")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    problem(r, StatusCode::PRECONDITION_FAILED).await;
}

#[tokio::test]
async fn rfc9110_13_1_2_if_none_match_star_on_existing_is_412() {
    let h = harness();
    let put_if_absent = |body: &'static str| {
        req(Method::PUT, "/resources/once")
            .header(IF_NONE_MATCH, "*")
            .body(Body::from(body))
            .expect("request")
    };
    assert_eq!(
        h.send(put_if_absent("1")).await.status(),
        StatusCode::CREATED
    );
    let r = h.send(put_if_absent("2")).await;
    let current = h.value("once").expect("stored");
    assert_eq!(etag(&r), current.http_etag());
    let detail = problem(r, StatusCode::PRECONDITION_FAILED).await;
    assert!(detail.contains("If-None-Match"), "{detail}");
    assert_eq!(current.payload, "1");
}

#[tokio::test]
async fn rfc9110_13_1_1_if_match_stale_on_put_is_412_and_current_replaces() {
    let h = harness();
    let tag = etag(&h.put("/resources/a", "1").await);
    let put = |m: &str| {
        req(Method::PUT, "/resources/a")
            .header(IF_MATCH, m)
            .body(Body::from("2"))
            .expect("request")
    };
    let detail = problem(
        h.send(put("\"ffff\"")).await,
        StatusCode::PRECONDITION_FAILED,
    )
    .await;
    assert!(detail.contains(&tag), "{detail}");
    // A weak tag never matches with the strong comparison.
    let weak = format!("W/{tag}");
    problem(h.send(put(&weak)).await, StatusCode::PRECONDITION_FAILED).await;
    assert_eq!(h.send(put(&tag)).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(h.value("a").expect("stored").payload, "2");
}

#[tokio::test]
async fn rfc9110_13_1_1_if_match_on_missing_put_is_412() {
    let h = harness();
    let r = h
        .send(
            req(Method::PUT, "/resources/a")
                .header(IF_MATCH, "*")
                .body(Body::from("x"))
                .expect("request"),
        )
        .await;
    problem(r, StatusCode::PRECONDITION_FAILED).await;
    assert!(h.value("a").is_none());
}

#[tokio::test]
async fn rfc9110_8_8_3_malformed_if_match_is_400() {
    let h = harness();
    let r = h
        .send(
            req(Method::PUT, "/resources/a")
                .header(IF_MATCH, "no-quotes")
                .body(Body::from("x"))
                .expect("request"),
        )
        .await;
    let detail = problem(r, StatusCode::BAD_REQUEST).await;
    assert!(detail.contains("no-quotes"), "{detail}");
}

#[tokio::test]
async fn mqtt_3_3_1_10_empty_put_clears_the_value() {
    let h = harness();
    h.put("/resources/a", "v").await;
    let r = h.put("/resources/a", "").await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(h.value("a").is_none());
    let r = h.call(Method::GET, "/resources/a", "").await;
    problem(r, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn rfc9110_9_3_5_delete_existing_204_missing_404_stale_412() {
    let h = harness();
    let tag = etag(&h.put("/resources/a", "v").await);
    let r = h
        .send(
            req(Method::DELETE, "/resources/a")
                .header(IF_MATCH, "\"ffff\"")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(etag(&r), tag);
    problem(r, StatusCode::PRECONDITION_FAILED).await;
    let r = h.call(Method::DELETE, "/resources/a", "").await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(h.value("a").is_none());
    let r = h.call(Method::DELETE, "/resources/a", "").await;
    let detail = problem(r, StatusCode::NOT_FOUND).await;
    assert!(detail.contains("\"a\""), "{detail}");
}

#[tokio::test]
async fn rfc9110_9_3_7_options_is_204_with_allow() {
    let h = harness();
    let r = h.call(Method::OPTIONS, "/resources/a", "").await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(r.headers()[ALLOW], "GET, HEAD, PUT, POST, DELETE, OPTIONS");
}

#[tokio::test]
async fn rfc9110_15_5_6_other_methods_are_405_with_allow() {
    let h = harness();
    for m in ["PATCH", "TRACE", "BREW"] {
        let method = Method::from_bytes(m.as_bytes()).expect("method");
        let r = h.call(method, "/resources/a", "").await;
        assert_eq!(r.headers()[ALLOW], "GET, HEAD, PUT, POST, DELETE, OPTIONS");
        let detail = problem(r, StatusCode::METHOD_NOT_ALLOWED).await;
        assert!(detail.contains(m), "{detail}");
    }
    let r = h.call(Method::DELETE, "/openapi.yaml", "").await;
    assert_eq!(r.headers()[ALLOW], "GET, HEAD, OPTIONS");
    problem(r, StatusCode::METHOD_NOT_ALLOWED).await;
}

#[tokio::test]
async fn mqtt_3_3_2_2_wildcards_and_bad_segments_are_400() {
    let h = harness();
    for path in [
        "/resources/a/+",
        "/resources/a/%2B",
        "/resources/%23",
        "/resources/a%2Fb",
        "/resources/a%00",
        "/resources/%FF",
        "/resources/",
        "/resources/?x=1",
    ] {
        let r = h.put(path, "v").await;
        let detail = problem(r, StatusCode::BAD_REQUEST).await;
        assert!(detail.contains("/resources"), "{path}: {detail}");
        let r = h.call(Method::GET, path, "").await;
        problem(r, StatusCode::BAD_REQUEST).await;
    }
    assert_eq!(h.broker.retained_count(), 0);
    // `/resources` itself is the listing: it is not written to.
    let r = h.put("/resources", "v").await;
    problem(r, StatusCode::METHOD_NOT_ALLOWED).await;
}

#[tokio::test]
async fn raw_path_keeps_empty_segments_and_decodes_each_segment() {
    let h = harness();
    assert_eq!(
        h.put("/resources//x", "1").await.status(),
        StatusCode::CREATED
    );
    assert_eq!(h.value("/x").expect("stored").payload, "1");
    assert_eq!(
        h.put("/resources/a%20b/c", "2").await.status(),
        StatusCode::CREATED
    );
    assert_eq!(h.value("a b/c").expect("stored").payload, "2");
    assert_eq!(
        h.put("/resources/a/", "3").await.status(),
        StatusCode::CREATED
    );
    assert_eq!(h.value("a/").expect("stored").payload, "3");
    let r = h.call(Method::GET, "/resources//x", "").await;
    assert_eq!(body_of(r).await, "1");
}

#[tokio::test]
async fn rfc9110_15_5_14_content_length_over_max_is_413() {
    let mut config = Config::ephemeral();
    config.http.max_body = 8;
    let h = harness_with(config);
    let r = h
        .send(
            req(Method::PUT, "/resources/a")
                .header(CONTENT_LENGTH, "9")
                .body(Body::from("123456789"))
                .expect("request"),
        )
        .await;
    // The body is left unread: the connection closes after the answer (RFC 9110 §15.5.14).
    assert_eq!(r.headers()[CONNECTION], "close");
    let detail = problem(r, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert!(detail.contains('9') && detail.contains('8'), "{detail}");
    // Exactly the limit is fine.
    assert_eq!(
        h.put("/resources/a", "12345678").await.status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn rfc9110_15_5_14_chunked_body_over_max_is_413() {
    let mut config = Config::ephemeral();
    config.http.max_body = 8;
    let h = harness_with(config);
    let chunks = futures_util::stream::iter(
        ["12345", "67890"].map(|c| Ok::<_, std::io::Error>(Bytes::from_static(c.as_bytes()))),
    );
    let r = h
        .send(
            req(Method::PUT, "/resources/a")
                .body(Body::from_stream(chunks))
                .expect("request"),
        )
        .await;
    problem(r, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert!(h.value("a").is_none());
}

#[tokio::test]
async fn chunked_body_is_stored_whole() {
    let h = harness();
    let chunks = futures_util::stream::iter(
        (0..64u8).map(|i| Ok::<_, std::io::Error>(Bytes::from(vec![i; 4096]))),
    );
    let r = h
        .send(
            req(Method::PUT, "/resources/big")
                .body(Body::from_stream(chunks))
                .expect("request"),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let v = h.value("big").expect("stored");
    assert_eq!(v.payload.len(), 64 * 4096);
    assert!(v
        .payload
        .chunks(4096)
        .enumerate()
        .all(|(i, c)| c.iter().all(|b| *b as usize == i)));
}

#[tokio::test]
async fn non_ascii_content_type_is_400() {
    let h = harness();
    let r = h
        .send(
            req(Method::PUT, "/resources/a")
                .header(
                    CONTENT_TYPE,
                    http::HeaderValue::from_bytes(b"text/\xff").expect("value"),
                )
                .body(Body::from("x"))
                .expect("request"),
        )
        .await;
    problem(r, StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn unknown_route_is_404_problem() {
    let h = harness();
    let r = h.call(Method::GET, "/nope", "").await;
    let detail = problem(r, StatusCode::NOT_FOUND).await;
    assert!(detail.contains("/nope"), "{detail}");
}

#[tokio::test]
async fn openapi_yaml_is_served() {
    let h = harness();
    let r = h.call(Method::GET, "/openapi.yaml", "").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[CONTENT_TYPE], "application/yaml");
    assert_eq!(body_of(r).await, crate::http::OPENAPI_YAML);
}

/// A store whose writes all fail, as a full disk would.
struct FailingStore;

impl Store for FailingStore {
    fn load_retained(&self) -> Result<Vec<(TopicName, RetainedValue)>, StoreError> {
        Ok(Vec::new())
    }
    fn apply(&mut self, _ops: &[RetainedOp]) -> Result<(), StoreError> {
        Err(StoreError::Engine("no space left on device".into()))
    }
    fn flush(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}

pub(super) fn failing_harness() -> Harness {
    let broker = Broker::new(FailingStore, Arc::new(Local)).expect("broker");
    harness_over(broker, Config::ephemeral())
}

#[tokio::test]
async fn rfc9110_15_6_4_store_failure_is_503_problem() {
    let h = failing_harness();
    let r = h.put("/resources/a", "v").await;
    let detail = problem(r, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(detail.contains("no space left"), "{detail}");
}
