//! HTTP authentication and access control over a real socket (issue 5): `ponte::start` with a
//! password file, an ACL and a JWT key, driven by reqwest and by the `curl` command line
//! (`curl -u user:pass`, `-H 'Authorization: Bearer …'`, `--path-as-is`). RS256 keys are made
//! with the `openssl` command line. A missing `curl`/`openssl` skips the test locally and fails
//! it in CI (env `CI` set).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ponte::auth::{password, AuthConfig};
use ponte::Gateway;

use common::{gateway_with, within};

/// A secret long enough for HS256 (ponte refuses shorter ones).
const SECRET: &str = "an-hs256-secret-of-32-bytes-or-more!";

/// The challenges every 401 carries.
const CHALLENGE: &str = r#"Basic realm="ponte", Bearer realm="ponte""#;

/// The ACL of these tests: anonymous clients read `public/#`; alice reads and writes
/// `alice/#` and `public/#` and writes `retained/#`; bob reads `retained/#`; carol has nothing.
const ACL: &str = "\
topic read public/#
user alice
topic readwrite alice/#
topic readwrite public/#
topic write retained/#
user bob
topic read retained/#
user carol
";

/// Whether `bin` is on PATH; when not: panic in CI, otherwise print SKIP and return false.
fn have(bin: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false);
    if !found {
        if std::env::var_os("CI").is_some() {
            panic!("{bin} is not installed, and CI must have it");
        }
        println!("SKIP: {bin} not installed");
    }
    found
}

/// A gateway with its auth files.
struct Fixture {
    /// The running gateway.
    gw: Gateway,
    /// Holds `passwd` and `acl` (and RSA keys when made).
    dir: tempfile::TempDir,
}

impl Fixture {
    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.gw.http_addr, path)
    }

    fn acl_path(&self) -> PathBuf {
        self.dir.path().join("acl")
    }
}

/// Write a password file (alice, bob, carol; password `pw-<name>`) and `acl`, then start a
/// gateway whose `[auth]` is `adjust`ed from them.
async fn fixture(
    acl: &str,
    anonymous: bool,
    adjust: impl FnOnce(&Path, &mut AuthConfig),
) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut passwd = String::new();
    for user in ["alice", "bob", "carol"] {
        let hash = password::hash_password(&format!("pw-{user}")).expect("hash");
        passwd.push_str(&format!("{user}:{hash}\n"));
    }
    std::fs::write(dir.path().join("passwd"), passwd).expect("passwd");
    std::fs::write(dir.path().join("acl"), acl).expect("acl");
    let mut auth = AuthConfig {
        password_file: Some(dir.path().join("passwd")),
        acl_file: Some(dir.path().join("acl")),
        allow_anonymous: Some(anonymous),
        ..AuthConfig::default()
    };
    adjust(dir.path(), &mut auth);
    let gw = gateway_with(|c| c.auth = auth).await;
    Fixture { gw, dir }
}

/// Seconds since the epoch, `delta` from now.
fn epoch(delta: i64) -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    now + delta
}

fn hs256(claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign HS256")
}

/// What a response said, from reqwest or curl alike.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// Lower-cased header names and their values.
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Assert a problem document with `status`; return its detail.
    fn problem(&self, status: u16) -> String {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{self:?}"
        );
        let v: serde_json::Value = serde_json::from_str(&self.body).expect("problem json");
        assert_eq!(v["status"], status);
        v["detail"].as_str().expect("detail").to_owned()
    }
}

async fn send(r: reqwest::RequestBuilder) -> Answer {
    let r = within(Duration::from_secs(10), "HTTP response", r.send())
        .await
        .expect("request");
    let status = r.status().as_u16();
    let headers = r
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = r.text().await.expect("body");
    Answer {
        status,
        headers,
        body,
    }
}

/// Run `curl -sS -i` with `args` (a timeout is added) and parse what it printed.
async fn curl(args: &[&str]) -> Answer {
    let out = within(
        Duration::from_secs(15),
        "curl",
        tokio::process::Command::new("curl")
            .args(["-sS", "-i", "--max-time", "10"])
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("curl runs");
    assert!(
        out.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // With `--anyauth` (or a `100 Continue`) curl prints every response; the last one counts.
    let mut rest = text.as_str();
    let (head, body) = loop {
        let (head, body) = rest.split_once("\r\n\r\n").unwrap_or((rest, ""));
        if body.starts_with("HTTP/") {
            rest = body;
        } else {
            break (head, body);
        }
    };
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

#[tokio::test]
async fn rfc7617_basic_good_bad_and_missing_credentials_with_reqwest() {
    let f = fixture(ACL, false, |_, _| {}).await;
    let c = reqwest::Client::new();
    let u = f.url("/resources/alice/door");
    let r = send(c.put(&u).basic_auth("alice", Some("pw-alice")).body("open")).await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = send(c.get(&u).basic_auth("alice", Some("pw-alice"))).await;
    assert_eq!((r.status, r.body.as_str()), (200, "open"));

    let r = send(c.get(&u).basic_auth("alice", Some("wrong"))).await;
    assert_eq!(r.header("www-authenticate"), Some(CHALLENGE));
    assert_eq!(r.problem(401), "bad username or password");
    let r = send(c.get(&u).basic_auth("mallory", Some("pw-alice"))).await;
    assert_eq!(r.problem(401), "bad username or password");
    let r = send(c.get(&u)).await;
    assert_eq!(r.header("www-authenticate"), Some(CHALLENGE));
    assert!(r.problem(401).contains("anonymous access is disabled"));
    let r = send(c.put(&u).body("hacked")).await;
    r.problem(401);

    let r = send(c.get(&u).basic_auth("alice", Some("pw-alice"))).await;
    assert_eq!(r.body, "open", "refused writes changed nothing");
    let refused =
        f.gw.auth
            .metrics
            .logins_refused
            .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(refused, 4);
}

#[tokio::test]
async fn curl_basic_good_bad_and_missing_credentials() {
    if !have("curl") {
        return;
    }
    let f = fixture(ACL, false, |_, _| {}).await;
    let u = f.url("/resources/alice/lamp");
    let r = curl(&[
        "-u",
        "alice:pw-alice",
        "-X",
        "PUT",
        "--data-binary",
        "on",
        &u,
    ])
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = curl(&["-u", "alice:pw-alice", &u]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "on"));
    let r = curl(&["-u", "alice:nope", &u]).await;
    assert_eq!(r.header("www-authenticate"), Some(CHALLENGE));
    assert_eq!(r.problem(401), "bad username or password");
    let r = curl(&[&u]).await;
    assert_eq!(r.header("www-authenticate"), Some(CHALLENGE));
    r.problem(401);
    // curl's own retry-on-challenge (`--anyauth`) finds Basic in our challenge and succeeds.
    let r = curl(&["--anyauth", "-u", "alice:pw-alice", &u]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "on"), "{r:?}");
}

#[tokio::test]
async fn anonymous_allowed_reads_the_anonymous_rules_anonymous_refused_gets_401() {
    let open = fixture(ACL, true, |_, _| {}).await;
    let c = reqwest::Client::new();
    let r = send(
        c.put(open.url("/resources/public/news"))
            .basic_auth("alice", Some("pw-alice"))
            .body("hello"),
    )
    .await;
    assert_eq!(r.status, 201);
    let r = send(c.get(open.url("/resources/public/news"))).await;
    assert_eq!((r.status, r.body.as_str()), (200, "hello"));
    // Anonymous clients may read public/# but not write it, nor read elsewhere: 401, since
    // credentials could help.
    let r = send(c.put(open.url("/resources/public/news")).body("x")).await;
    assert!(r.problem(401).contains("anonymous clients may not write"));
    let r = send(c.get(open.url("/resources/alice/door"))).await;
    assert!(r.problem(401).contains("anonymous clients may not read"));

    let closed = fixture(ACL, false, |_, _| {}).await;
    let r = send(c.get(closed.url("/resources/public/news"))).await;
    assert!(r.problem(401).contains("anonymous access is disabled"));
    if have("curl") {
        let r = curl(&[&open.url("/resources/public/news")]).await;
        assert_eq!((r.status, r.body.as_str()), (200, "hello"));
        let r = curl(&[&closed.url("/resources/public/news")]).await;
        r.problem(401);
    }
}

#[tokio::test]
async fn acl_read_versus_write_and_a_retained_value_only_readers_see() {
    let f = fixture(ACL, false, |_, _| {}).await;
    let c = reqwest::Client::new();
    let u = f.url("/resources/retained/code");
    // alice may write retained/# but not read it; bob may read it but not write it.
    let r = send(c.put(&u).basic_auth("alice", Some("pw-alice")).body("4711")).await;
    assert_eq!(r.status, 201);
    let r = send(c.get(&u).basic_auth("alice", Some("pw-alice"))).await;
    assert!(r
        .problem(403)
        .contains("\"alice\" may not read \"retained/code\""));
    let r = send(c.head(&u).basic_auth("alice", Some("pw-alice"))).await;
    assert_eq!(r.status, 403);
    let r = send(c.get(&u).basic_auth("bob", Some("pw-bob"))).await;
    assert_eq!((r.status, r.body.as_str()), (200, "4711"));
    let r = send(c.put(&u).basic_auth("bob", Some("pw-bob")).body("0000")).await;
    assert!(r.problem(403).contains("may not write"));
    let r = send(c.delete(&u).basic_auth("bob", Some("pw-bob"))).await;
    r.problem(403);
    // carol has an empty block: neither, and the refusal does not tell whether it exists.
    for path in ["/resources/retained/code", "/resources/retained/none"] {
        let r = send(c.get(f.url(path)).basic_auth("carol", Some("pw-carol"))).await;
        r.problem(403);
    }
    // Event streams are reads too.
    let r = send(
        c.get(&u)
            .header("accept", "text/event-stream")
            .basic_auth("carol", Some("pw-carol")),
    )
    .await;
    r.problem(403);
    let r = send(c.get(&u).basic_auth("bob", Some("pw-bob"))).await;
    assert_eq!(r.body, "4711", "bob's refused writes changed nothing");
    if have("curl") {
        let r = curl(&["-u", "bob:pw-bob", &u]).await;
        assert_eq!((r.status, r.body.as_str()), (200, "4711"));
        let r = curl(&["-u", "carol:pw-carol", &u]).await;
        r.problem(403);
        let r = curl(&["-u", "bob:pw-bob", "-X", "DELETE", &u]).await;
        r.problem(403);
    }
}

#[tokio::test]
async fn rfc6750_jwt_hs256_expired_and_acl_claims_with_reqwest_and_curl() {
    let f = fixture(ACL, false, |_, a| {
        a.jwt_hs256_secret = Some(SECRET.into());
        a.jwt_issuer = Some("https://issuer.example".into());
    })
    .await;
    let c = reqwest::Client::new();
    let u = f.url("/resources/alice/door");
    // sub = alice, no acl claim: the ACL file's rules for alice.
    let good = hs256(serde_json::json!({
        "sub": "alice", "exp": epoch(60), "iss": "https://issuer.example"
    }));
    let r = send(c.put(&u).bearer_auth(&good).body("shut")).await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = send(c.get(&u).bearer_auth(&good)).await;
    assert_eq!(r.body, "shut");

    for (what, bad) in [
        (
            "expired",
            hs256(serde_json::json!({"sub": "alice", "exp": epoch(-120), "iss": "https://issuer.example"})),
        ),
        (
            "other issuer",
            hs256(serde_json::json!({"sub": "alice", "exp": epoch(60), "iss": "https://evil.example"})),
        ),
        (
            "other key",
            jsonwebtoken::encode(
                &Header::default(),
                &serde_json::json!({"sub": "alice", "exp": epoch(60), "iss": "https://issuer.example"}),
                &EncodingKey::from_secret(b"not the secret, not the secret!!"),
            )
            .expect("sign"),
        ),
    ] {
        let r = send(c.get(&u).bearer_auth(&bad)).await;
        assert_eq!(
            r.header("www-authenticate"),
            Some(r#"Basic realm="ponte", Bearer realm="ponte", error="invalid_token""#),
            "{what}"
        );
        r.problem(401);
    }

    // An acl claim replaces the file: read-only on public/#, even though alice's file rules
    // would let her write there and read alice/#.
    let scoped = hs256(serde_json::json!({
        "sub": "alice", "exp": epoch(60), "iss": "https://issuer.example",
        "acl": {"read": ["public/#"], "write": []}
    }));
    send(
        c.put(f.url("/resources/public/p"))
            .bearer_auth(&good)
            .body("pub"),
    )
    .await;
    let r = send(c.get(f.url("/resources/public/p")).bearer_auth(&scoped)).await;
    assert_eq!((r.status, r.body.as_str()), (200, "pub"));
    let r = send(
        c.put(f.url("/resources/public/p"))
            .bearer_auth(&scoped)
            .body("x"),
    )
    .await;
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Bearer realm="ponte", error="insufficient_scope""#)
    );
    assert!(r.problem(403).contains("the token's acl claim"));
    let r = send(c.get(&u).bearer_auth(&scoped)).await;
    r.problem(403);

    if have("curl") {
        let bearer = format!("Authorization: Bearer {good}");
        let r = curl(&["-H", &bearer, &u]).await;
        assert_eq!((r.status, r.body.as_str()), (200, "shut"));
        let scoped_h = format!("Authorization: Bearer {scoped}");
        let r = curl(&[
            "-H",
            &scoped_h,
            "-X",
            "PUT",
            "--data-binary",
            "x",
            &f.url("/resources/public/p"),
        ])
        .await;
        r.problem(403);
        let r = curl(&["-H", "Authorization: Bearer not-a-jwt", &u]).await;
        r.problem(401);
        // curl's --oauth2-bearer sends the same header.
        let r = curl(&["--oauth2-bearer", &good, &u]).await;
        assert_eq!(r.status, 200);
    }
}

/// Make an RSA key pair with the openssl command line: (private PEM, public PEM path).
async fn rsa_keys(dir: &Path) -> (Vec<u8>, PathBuf) {
    let private = dir.join("jwt-private.pem");
    let public = dir.join("jwt-public.pem");
    for args in [
        vec![
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ],
        vec!["pkey", "-pubout", "-in"],
    ] {
        let mut cmd = tokio::process::Command::new("openssl");
        cmd.args(&args);
        if args[0] == "genpkey" {
            cmd.arg(&private);
        } else {
            cmd.arg(&private).arg("-out").arg(&public);
        }
        let out = within(
            Duration::from_secs(30),
            "openssl",
            cmd.kill_on_drop(true).output(),
        )
        .await
        .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (std::fs::read(&private).expect("private key"), public)
}

#[tokio::test]
async fn rfc7518_jwt_rs256_with_an_openssl_key() {
    if !have("openssl") {
        return;
    }
    let keys = tempfile::tempdir().expect("tempdir");
    let (private, public) = rsa_keys(keys.path()).await;
    let public_for_config = public.clone();
    let f = fixture(ACL, false, move |_, a| {
        a.jwt_rs256_public_key = Some(public_for_config);
        a.jwt_audience = Some("ponte".into());
    })
    .await;
    let key = EncodingKey::from_rsa_pem(&private).expect("RSA private key");
    let sign = |claims: serde_json::Value, key: &EncodingKey| {
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, key).expect("sign RS256")
    };
    let good = sign(
        serde_json::json!({"sub": "bob", "exp": epoch(60), "aud": "ponte"}),
        &key,
    );
    let c = reqwest::Client::new();
    let writer = send(
        c.put(f.url("/resources/retained/rs"))
            .basic_auth("alice", Some("pw-alice"))
            .body("rsa"),
    )
    .await;
    assert_eq!(writer.status, 201);
    let r = send(c.get(f.url("/resources/retained/rs")).bearer_auth(&good)).await;
    assert_eq!((r.status, r.body.as_str()), (200, "rsa"), "{r:?}");
    // Wrong audience, expired, and an HS256 token made with the public key as the secret
    // (the classic algorithm-confusion attack) are all refused.
    let wrong_aud = sign(
        serde_json::json!({"sub": "bob", "exp": epoch(60), "aud": "other"}),
        &key,
    );
    let expired = sign(
        serde_json::json!({"sub": "bob", "exp": epoch(-120), "aud": "ponte"}),
        &key,
    );
    let confused = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &serde_json::json!({"sub": "bob", "exp": epoch(60), "aud": "ponte"}),
        &EncodingKey::from_secret(&std::fs::read(&public).expect("public key")),
    )
    .expect("sign");
    for t in [wrong_aud, expired, confused] {
        let r = send(c.get(f.url("/resources/retained/rs")).bearer_auth(&t)).await;
        r.problem(401);
    }
    if have("curl") {
        let r = curl(&[
            "-H",
            &format!("Authorization: Bearer {good}"),
            &f.url("/resources/retained/rs"),
        ])
        .await;
        assert_eq!((r.status, r.body.as_str()), (200, "rsa"));
    }
}

#[tokio::test]
async fn reload_applies_a_rewritten_acl_to_the_next_request() {
    let f = fixture(ACL, false, |_, _| {}).await;
    let c = reqwest::Client::new();
    let u = f.url("/resources/retained/r");
    send(c.put(&u).basic_auth("alice", Some("pw-alice")).body("v1")).await;
    let r = send(c.get(&u).basic_auth("carol", Some("pw-carol"))).await;
    r.problem(403);
    let r = send(c.get(&u).basic_auth("bob", Some("pw-bob"))).await;
    assert_eq!(r.status, 200);

    std::fs::write(
        f.acl_path(),
        "user alice\ntopic write retained/#\nuser carol\ntopic read retained/#\n",
    )
    .expect("rewrite acl");
    f.gw.reload().expect("the new ACL loads");
    let r = send(c.get(&u).basic_auth("carol", Some("pw-carol"))).await;
    assert_eq!((r.status, r.body.as_str()), (200, "v1"));
    let r = send(c.get(&u).basic_auth("bob", Some("pw-bob"))).await;
    r.problem(403);

    // A broken file keeps the rules in force.
    std::fs::write(f.acl_path(), "this is not an acl\n").expect("rewrite acl");
    let e = f.gw.reload().expect_err("a broken ACL is refused");
    assert!(e.to_string().contains("line 1"), "{e}");
    let r = send(c.get(&u).basic_auth("carol", Some("pw-carol"))).await;
    assert_eq!(r.status, 200);
    if have("curl") {
        let r = curl(&["-u", "bob:pw-bob", &u]).await;
        r.problem(403);
    }
}

#[tokio::test]
async fn encoded_path_tricks_never_read_or_write_a_denied_topic() {
    // Anonymous clients and alice may use public/# only.
    let f = fixture(
        "topic readwrite public/#\nuser alice\ntopic readwrite public/#\n",
        true,
        |_, _| {},
    )
    .await;
    f.gw.broker
        .publish(
            ponte::broker::retained_message(
                ponte::model::TopicName::parse("secret").expect("topic"),
                bytes::Bytes::from_static(b"s3cr3t"),
                None,
                ponte::model::Origin::Http,
            ),
            Default::default(),
        )
        .await
        .expect("seed");
    let secret = ponte::model::TopicName::parse("secret").expect("topic");
    let version = f.gw.broker.get(&secret).expect("seeded").version;
    let paths = [
        "/resources/public/..%2Fsecret",
        "/resources/public%2F..%2Fsecret",
        "/resources/public/%2E%2E/secret",
        "/resources/public/../secret",
        "/resources/%23",
        "/resources/public/%23",
        "/resources/public/%2B",
        "/resources/public/%2B/../../secret",
        "/resources/%73ecret",
        "/resources/secret%00",
        "/resources//secret",
    ];
    let c = reqwest::Client::new();
    for path in paths {
        for method in ["GET", "PUT", "DELETE"] {
            let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
            let r = send(
                c.request(m, f.url(path))
                    .basic_auth("alice", Some("pw-alice"))
                    .body("pwned"),
            )
            .await;
            assert!(!r.body.contains("s3cr3t"), "{method} {path}: {r:?}");
            assert_eq!(
                f.gw.broker.get(&secret).expect("kept").version,
                version,
                "{method} {path}"
            );
        }
    }
    if have("curl") {
        // --path-as-is sends `..` and `.` segments unnormalized, as an attacker would.
        for path in paths {
            for method in ["GET", "PUT", "DELETE"] {
                for creds in [None, Some("alice:pw-alice")] {
                    let url = f.url(path);
                    let mut args = vec!["--path-as-is", "-X", method, "--data-binary", "pwned"];
                    if method == "GET" {
                        args.truncate(3);
                    }
                    if let Some(c) = creds {
                        args.extend(["-u", c]);
                    }
                    args.push(&url);
                    let r = curl(&args).await;
                    assert!(!r.body.contains("s3cr3t"), "curl {args:?}: {r:?}");
                    if r.status < 300 {
                        assert!(
                            path.starts_with("/resources/public/"),
                            "curl {args:?}: {r:?}"
                        );
                    }
                    assert_eq!(
                        f.gw.broker.get(&secret).expect("kept").version,
                        version,
                        "curl {args:?}"
                    );
                }
            }
        }
        // The decoded name is what the ACL is asked about.
        let r = curl(&["-u", "alice:pw-alice", &f.url("/resources/%73ecret")]).await;
        assert!(r.problem(403).contains("\"secret\""));
    }
    let r = send(c.get(f.url("/resources/public/%2B"))).await;
    assert!(r.problem(400).contains("wildcard"));
    let r = send(c.get(f.url("/resources/public%2F..%2Fsecret"))).await;
    r.problem(400);
}
