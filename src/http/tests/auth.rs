//! Authentication and authorization of the HTTP front-end (RFC 7235, 7617, 6750).

use super::*;

use crate::auth::{password, Auth, AuthConfig};
use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use std::sync::atomic::Ordering;

/// The HS256 secret of the auth harness.
const SECRET: &str = "0123456789abcdef0123456789abcdef";

/// A router whose `/resources` are guarded by a password file (alice:pw, bob:pw), `acl` and
/// an HS256 JWT key; the temp dir holds the files (rewrite `acl` and reload to change rules).
struct Guarded {
    /// The router and broker.
    h: Harness,
    /// The authority the router asks.
    auth: Arc<Auth>,
    /// Where the password and ACL files live.
    dir: tempfile::TempDir,
}

fn guarded(acl: &str, anonymous: bool) -> Guarded {
    let dir = tempfile::tempdir().expect("tempdir");
    let hash = password::hash_password("pw").expect("hash");
    let passwd = dir.path().join("passwd");
    std::fs::write(&passwd, format!("alice:{hash}\nbob:{hash}\n")).expect("passwd");
    let acl_path = dir.path().join("acl");
    std::fs::write(&acl_path, acl).expect("acl");
    let auth = Arc::new(
        Auth::new(AuthConfig {
            password_file: Some(passwd),
            acl_file: Some(acl_path),
            allow_anonymous: Some(anonymous),
            jwt_hs256_secret: Some(SECRET.into()),
            ..AuthConfig::default()
        })
        .expect("auth config"),
    );
    let broker = Broker::new(MemoryStore, Arc::new(Local)).expect("memory broker");
    let controller = ShutdownController::new();
    let state = AppState::new(
        broker.clone(),
        Arc::new(Config::ephemeral()),
        controller.subscribe(),
    )
    .with_auth(auth.clone());
    Guarded {
        h: Harness {
            app: app(state),
            broker,
            controller,
        },
        auth,
        dir,
    }
}

/// anonymous: read public/#; alice: readwrite alice/# and public/#, read secret; bob: nothing.
const ACL: &str = "\
topic read public/#
user alice
topic readwrite alice/#
topic readwrite public/#
topic read secret
user bob
";

fn basic(user: &str, pass: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

fn jwt(claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign")
}

fn in_a_minute() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 60
}

impl Guarded {
    async fn with_auth(
        &self,
        method: Method,
        uri: &str,
        authz: &str,
        body: &'static str,
    ) -> Response {
        self.h
            .send(
                req(method, uri)
                    .header(AUTHORIZATION, authz)
                    .body(Body::from(body))
                    .expect("request"),
            )
            .await
    }

    /// Store `value` at `topic` directly through the broker (no HTTP, no ACL).
    async fn seed(&self, topic: &str, value: &'static str) {
        self.h
            .broker
            .publish(
                crate::broker::retained_message(
                    TopicName::parse(topic).expect("topic"),
                    Bytes::from_static(value.as_bytes()),
                    None,
                    crate::model::Origin::Http(None),
                ),
                Default::default(),
            )
            .await
            .expect("seed");
    }
}

fn challenge(r: &Response) -> String {
    r.headers()
        .get(WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn rfc7235_missing_credentials_is_401_with_both_challenges_when_anonymous_is_off() {
    let g = guarded(ACL, false);
    g.seed("public/a", "1").await;
    let r = g.h.call(Method::GET, "/resources/public/a", "").await;
    assert_eq!(
        challenge(&r),
        r#"Basic realm="ponte", Bearer realm="ponte""#
    );
    let detail = problem(r, StatusCode::UNAUTHORIZED).await;
    assert!(detail.contains("anonymous access is disabled"), "{detail}");
    let r = g.h.put("/resources/public/a", "2").await;
    problem(r, StatusCode::UNAUTHORIZED).await;
    assert_eq!(g.h.value("public/a").expect("kept").payload, "1");
    assert_eq!(g.auth.metrics.logins_refused.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn rfc7617_basic_good_credentials_read_and_write_what_the_acl_grants() {
    let g = guarded(ACL, false);
    let alice = basic("alice", "pw");
    let r = g
        .with_auth(Method::PUT, "/resources/alice/x", &alice, "v")
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = g
        .with_auth(Method::GET, "/resources/alice/x", &alice, "")
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(body_of(r).await, "v");
    // The scheme name is case-insensitive (RFC 9110 §11.1).
    let lower = alice.replacen("Basic", "bAsIc", 1);
    let r = g
        .with_auth(Method::HEAD, "/resources/alice/x", &lower, "")
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = g
        .with_auth(Method::DELETE, "/resources/alice/x", &alice, "")
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn rfc7617_bad_password_unknown_user_and_empty_user_are_401() {
    let g = guarded(ACL, true);
    g.seed("public/a", "1").await;
    for authz in [basic("alice", "wrong"), basic("eve", "pw"), basic("", "pw")] {
        let r = g
            .with_auth(Method::GET, "/resources/public/a", &authz, "")
            .await;
        assert_eq!(
            challenge(&r),
            r#"Basic realm="ponte", Bearer realm="ponte""#
        );
        let detail = problem(r, StatusCode::UNAUTHORIZED).await;
        assert_eq!(detail, "bad username or password", "{authz}");
    }
    assert_eq!(g.auth.metrics.logins_refused.load(Ordering::Relaxed), 3);
}

#[tokio::test]
async fn rfc9110_15_5_1_malformed_authorization_is_400_not_401() {
    let g = guarded(ACL, true);
    g.seed("public/a", "1").await;
    for (authz, needle) in [
        ("Basic", "carries no credentials"),
        ("Basic !!!not-base64", "not standard base64"),
        ("Basic YWxpY2U=", "no colon"), // base64("alice")
        ("Basic /w==", "no colon"),
        ("Basic /zpwdw==", "not UTF-8"), // 0xff ':' "pw"
    ] {
        let r = g
            .with_auth(Method::GET, "/resources/public/a", authz, "")
            .await;
        let detail = problem(r, StatusCode::BAD_REQUEST).await;
        assert!(detail.contains(needle), "{authz}: {detail}");
    }
    // RFC 6750 §3.1: a malformed bearer request is invalid_request, 400.
    for authz in ["Bearer", "Bearer a b", "Bearer ä.b.c", "Bearer =abc"] {
        let r =
            g.h.send(
                req(Method::GET, "/resources/public/a")
                    .header(
                        AUTHORIZATION,
                        http::HeaderValue::from_bytes(authz.as_bytes()).expect("value"),
                    )
                    .body(Body::empty())
                    .expect("request"),
            )
            .await;
        if authz.is_ascii() {
            assert_eq!(
                challenge(&r),
                r#"Bearer realm="ponte", error="invalid_request""#
            );
        }
        problem(r, StatusCode::BAD_REQUEST).await;
    }
    // Two Authorization fields: which one counts would be a guess.
    let r =
        g.h.send(
            req(Method::GET, "/resources/public/a")
                .header(AUTHORIZATION, basic("alice", "pw"))
                .header(AUTHORIZATION, basic("bob", "pw"))
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    let detail = problem(r, StatusCode::BAD_REQUEST).await;
    assert!(detail.contains("more than one"), "{detail}");
}

#[tokio::test]
async fn rfc9110_11_6_1_unsupported_scheme_is_401_with_the_supported_challenges() {
    let g = guarded(ACL, true);
    let r = g
        .with_auth(
            Method::GET,
            "/resources/public/a",
            "Digest username=\"alice\"",
            "",
        )
        .await;
    assert_eq!(
        challenge(&r),
        r#"Basic realm="ponte", Bearer realm="ponte""#
    );
    let detail = problem(r, StatusCode::UNAUTHORIZED).await;
    assert!(detail.contains("\"Digest\""), "{detail}");
}

#[tokio::test]
async fn anonymous_allowed_reads_what_the_anonymous_block_grants_and_nothing_else() {
    let g = guarded(ACL, true);
    g.seed("public/a", "open").await;
    g.seed("secret", "s3cr3t").await;
    let r = g.h.call(Method::GET, "/resources/public/a", "").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(body_of(r).await, "open");
    // Denied to an anonymous client: 401 (credentials may help), not 403.
    let r = g.h.call(Method::GET, "/resources/secret", "").await;
    assert_eq!(
        challenge(&r),
        r#"Basic realm="ponte", Bearer realm="ponte""#
    );
    let detail = problem(r, StatusCode::UNAUTHORIZED).await;
    assert!(
        detail.contains("anonymous clients may not read \"secret\""),
        "{detail}"
    );
    let r = g.h.put("/resources/public/a", "changed").await;
    problem(r, StatusCode::UNAUTHORIZED).await;
    assert_eq!(g.h.value("public/a").expect("kept").payload, "open");
    assert_eq!(g.auth.metrics.acl_denied.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn rfc9110_15_5_4_authenticated_but_not_granted_is_403() {
    let g = guarded(ACL, false);
    g.seed("secret", "s3cr3t").await;
    g.seed("alice/x", "mine").await;
    let alice = basic("alice", "pw");
    let bob = basic("bob", "pw");
    // alice may read secret but not write it.
    let r = g
        .with_auth(Method::GET, "/resources/secret", &alice, "")
        .await;
    assert_eq!(body_of(r).await, "s3cr3t");
    for m in [Method::PUT, Method::POST, Method::DELETE] {
        let r = g
            .with_auth(m.clone(), "/resources/secret", &alice, "x")
            .await;
        assert!(!r.headers().contains_key(WWW_AUTHENTICATE), "{m}");
        let detail = problem(r, StatusCode::FORBIDDEN).await;
        assert!(
            detail.contains("\"alice\" may not write \"secret\""),
            "{detail}"
        );
    }
    assert_eq!(g.h.value("secret").expect("kept").payload, "s3cr3t");
    // bob has an empty block: nothing. Denied before the lookup: a missing topic is 403 too,
    // so a refusal does not tell whether a value exists.
    for uri in ["/resources/alice/x", "/resources/alice/none"] {
        let r = g.with_auth(Method::GET, uri, &bob, "").await;
        problem(r, StatusCode::FORBIDDEN).await;
    }
}

#[tokio::test]
async fn rfc6750_bearer_jwt_identifies_the_user_and_acl_claims_replace_the_file() {
    let g = guarded(ACL, false);
    g.seed("secret", "s3cr3t").await;
    // No acl claim: the file's rules for `sub`.
    let t = jwt(serde_json::json!({"sub": "alice", "exp": in_a_minute()}));
    let r = g
        .with_auth(Method::GET, "/resources/secret", &format!("Bearer {t}"), "")
        .await;
    assert_eq!(body_of(r).await, "s3cr3t");
    // acl claim: only what it grants, even where the file would grant more.
    let t = jwt(serde_json::json!({
        "sub": "alice", "exp": in_a_minute(),
        "acl": {"read": ["tok/#"], "write": ["tok/w"]}
    }));
    let bearer = format!("Bearer {t}");
    let r = g
        .with_auth(Method::PUT, "/resources/tok/w", &bearer, "v")
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = g
        .with_auth(Method::GET, "/resources/tok/w", &bearer, "")
        .await;
    assert_eq!(body_of(r).await, "v");
    let r = g
        .with_auth(Method::PUT, "/resources/tok/r", &bearer, "v")
        .await;
    assert_eq!(
        challenge(&r),
        r#"Bearer realm="ponte", error="insufficient_scope""#
    );
    let detail = problem(r, StatusCode::FORBIDDEN).await;
    assert!(detail.contains("the token's acl claim"), "{detail}");
    let r = g
        .with_auth(Method::GET, "/resources/secret", &bearer, "")
        .await;
    problem(r, StatusCode::FORBIDDEN).await;
    let r = g
        .with_auth(Method::PUT, "/resources/alice/x", &bearer, "v")
        .await;
    problem(r, StatusCode::FORBIDDEN).await;
}

#[tokio::test]
async fn rfc6750_3_1_invalid_token_is_401_with_error_invalid_token() {
    let g = guarded(ACL, true);
    g.seed("public/a", "1").await;
    let expired = jwt(serde_json::json!({"sub": "alice", "exp": 1000}));
    let other_key = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"sub": "alice", "exp": in_a_minute()}),
        &jsonwebtoken::EncodingKey::from_secret(b"another secret another secret 12"),
    )
    .expect("sign");
    let no_sub = jwt(serde_json::json!({"exp": in_a_minute()}));
    for t in [expired, other_key, no_sub, "abc.def.ghi".to_owned()] {
        let r = g
            .with_auth(
                Method::GET,
                "/resources/public/a",
                &format!("Bearer {t}"),
                "",
            )
            .await;
        assert_eq!(
            challenge(&r),
            r#"Basic realm="ponte", Bearer realm="ponte", error="invalid_token""#
        );
        problem(r, StatusCode::UNAUTHORIZED).await;
    }
    assert_eq!(g.auth.metrics.logins_refused.load(Ordering::Relaxed), 4);
}

#[tokio::test]
async fn bearer_without_a_configured_key_is_401() {
    let h = harness();
    let t = jwt(serde_json::json!({"sub": "alice", "exp": in_a_minute()}));
    let r = h
        .send(
            req(Method::GET, "/resources/a")
                .header(AUTHORIZATION, format!("Bearer {t}"))
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    let detail = problem(r, StatusCode::UNAUTHORIZED).await;
    assert!(detail.contains("no JWT key is configured"), "{detail}");
}

#[tokio::test]
async fn acl_is_checked_on_the_decoded_topic_so_encoding_tricks_never_reach_secret() {
    // The ACL grants `public/#` only (anonymous and alice alike for this test).
    let g = guarded(
        "topic readwrite public/#\nuser alice\ntopic readwrite public/#\n",
        true,
    );
    g.seed("secret", "s3cr3t").await;
    g.seed("public/x", "p").await;
    let before = g.h.value("secret").expect("seeded");
    let alice = basic("alice", "pw");
    let attempts = [
        "/resources/public/..%2Fsecret",
        "/resources/public%2F..%2Fsecret",
        "/resources/public%2Fsecret",
        "/resources/public/%2E%2E/secret",
        "/resources/public/../secret",
        "/resources/public/./../secret",
        "/resources/%23",
        "/resources/public/%23",
        "/resources/public/%2B",
        "/resources/%2B/..",
        "/resources/public/%2B/../../secret",
        "/resources/secret%00",
        "/resources/%73ecret",
        "/resources//secret",
        "/resources/secret/",
        "/resources/./secret",
        "/resources/public/..%5Csecret",
    ];
    for uri in attempts {
        for who in [None, Some(alice.as_str())] {
            for m in [
                Method::GET,
                Method::HEAD,
                Method::PUT,
                Method::POST,
                Method::DELETE,
            ] {
                let mut b = req(m.clone(), uri);
                if let Some(a) = who {
                    b = b.header(AUTHORIZATION, a);
                }
                let r =
                    g.h.send(b.body(Body::from("pwned")).expect("request"))
                        .await;
                let status = r.status();
                let body = body_of(r).await;
                assert!(
                    !String::from_utf8_lossy(&body).contains("s3cr3t"),
                    "{m} {uri} ({who:?}) revealed the secret: {status}"
                );
                let still = g.h.value("secret").expect("secret still stored");
                assert_eq!(
                    still.version, before.version,
                    "{m} {uri} ({who:?}) changed secret"
                );
                // Only topics inside public/ can ever succeed.
                if status.is_success() {
                    assert!(
                        uri.starts_with("/resources/public/"),
                        "{m} {uri} ({who:?}) succeeded: {status}"
                    );
                }
            }
        }
    }
    // The decoded name is what is checked: `%73ecret` is `secret`, refused like it.
    let r = g
        .with_auth(Method::GET, "/resources/%73ecret", &alice, "")
        .await;
    problem(r, StatusCode::FORBIDDEN).await;
    // And what a literal `..` level names is its own topic inside public/, not secret.
    let r = g.h.put("/resources/public/../secret", "mine").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        g.h.value("public/../secret").expect("own topic").payload,
        "mine"
    );
    assert_eq!(g.h.value("secret").expect("kept").payload, "s3cr3t");
}

#[tokio::test]
async fn sse_read_needs_read_access_and_a_revoked_grant_ends_the_stream() {
    let g = guarded("user alice\ntopic read feed\ntopic readwrite w/#\n", false);
    g.seed("feed", "one").await;
    let alice = basic("alice", "pw");
    // Anonymous (off) and bob (no grant): no stream, no subscription.
    let r = g.h.send(sse_request("/resources/feed")).await;
    problem(r, StatusCode::UNAUTHORIZED).await;
    let r =
        g.h.send(
            req(Method::GET, "/resources/feed")
                .header(ACCEPT, "text/event-stream")
                .header(AUTHORIZATION, basic("bob", "pw"))
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    problem(r, StatusCode::FORBIDDEN).await;
    assert_eq!(g.h.broker.subscription_count(), 0);
    let r =
        g.h.send(
            req(Method::GET, "/resources/feed")
                .header(ACCEPT, "text/event-stream")
                .header(AUTHORIZATION, &alice)
                .body(Body::empty())
                .expect("request"),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let mut body = r.into_body();
    assert_eq!(
        next_event(&mut body).await.as_deref(),
        Some("event: message\nid: 1\ndata: one\n\n")
    );
    g.seed("feed", "two").await;
    assert_eq!(
        next_event(&mut body).await.as_deref(),
        Some("event: message\nid: 2\ndata: two\n\n")
    );
    // Reload without the grant: the next event is not sent, the stream ends.
    std::fs::write(
        g.dir.path().join("acl"),
        "user alice\ntopic readwrite w/#\n",
    )
    .expect("acl");
    g.auth.reload().expect("reload");
    g.seed("feed", "three").await;
    assert_eq!(next_event(&mut body).await, None, "the stream ends");
    drop(body);
    assert_eq!(g.h.broker.subscription_count(), 0);
}

#[tokio::test]
async fn options_and_openapi_need_no_credentials() {
    let g = guarded(ACL, false);
    let r = g.h.call(Method::OPTIONS, "/resources/secret", "").await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = g.h.call(Method::GET, "/openapi.yaml", "").await;
    assert_eq!(r.status(), StatusCode::OK);
    // Unknown methods stay 405 (nothing is revealed, nothing to authenticate).
    let r = g.h.call(Method::PATCH, "/resources/secret", "").await;
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn openapi_declares_401_and_403_where_the_guard_answers_them() {
    let spec: serde_yaml::Value =
        serde_yaml::from_str(crate::http::OPENAPI_YAML).expect("openapi/ponte.yaml parses");
    let g = guarded(ACL, false);
    let t = "/resources/{topic}";
    let bob = basic("bob", "pw");
    for (m, name) in [
        (Method::GET, "get"),
        (Method::HEAD, "head"),
        (Method::PUT, "put"),
        (Method::POST, "post"),
        (Method::DELETE, "delete"),
    ] {
        let codes = declared(&spec, t, name).expect("declared");
        let r = g.h.call(m.clone(), "/resources/x", "").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(codes.contains(&401), "{name} does not declare 401");
        let r = g.with_auth(m.clone(), "/resources/x", &bob, "").await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert!(codes.contains(&403), "{name} does not declare 403");
    }
    let schemes = &spec["components"]["securitySchemes"];
    assert_eq!(schemes["basic"]["scheme"].as_str(), Some("basic"));
    assert_eq!(schemes["bearer"]["scheme"].as_str(), Some("bearer"));
    assert_eq!(schemes["bearer"]["bearerFormat"].as_str(), Some("JWT"));
}
