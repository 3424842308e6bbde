//! The explorer (issue 13), over a real socket.
//!
//! - HTTP level, with reqwest: the page and its files, their content types, CSP and
//!   companion headers, ETag revalidation (304), gzip, `/explorer/server.json` naming the
//!   ports really bound, `[http] explorer = false` → 404, values served sandboxed.
//! - In a real browser: Debian's `chromium` driven by the npm package `playwright-core`
//!   (`tests/browser/explorer.mjs`, never a downloaded browser) against `ponte::start`,
//!   with real curl, mosquitto_pub/mosquitto_sub, coap-client-notls and MQTT.js. Each
//!   browser test names the steps it expects, and every one must report `ok`.
//!
//! Screenshots of the main views land in `target/tmp/explorer-screenshots/`. Without
//! chromium, node or the npm packages the browser tests print SKIP and pass, except in CI
//! (`CI` set), where `.ci/run` installs them.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use ponte::auth::password;
use ponte::Gateway;

/// What the page's files must carry.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn base(gw: &Gateway) -> String {
    format!("http://{}", gw.http_addr)
}

async fn get(url: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut r = http().get(url);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    within(Duration::from_secs(5), url, r.send())
        .await
        .expect("request sent")
}

#[tokio::test]
async fn the_page_and_its_files_are_served_from_the_binary_with_their_types_and_csp() {
    let gw = gateway().await;
    let b = base(&gw);
    for (path, ty) in [
        ("/", "text/html; charset=utf-8"),
        ("/explorer/app.js", "text/javascript; charset=utf-8"),
        ("/explorer/tree.js", "text/javascript; charset=utf-8"),
        ("/explorer/style.css", "text/css; charset=utf-8"),
        ("/explorer/icon.svg", "image/svg+xml"),
    ] {
        // reqwest here asks for no compression: the identity bytes.
        let r = get(&format!("{b}{path}"), &[]).await;
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers().clone();
        assert_eq!(h["content-type"], ty, "{path}");
        assert_eq!(h["content-security-policy"], CSP, "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["cache-control"], "no-cache", "{path}");
        assert!(h.get("content-encoding").is_none(), "{path}");
        let etag = h["etag"].to_str().unwrap().to_owned();
        assert!(etag.starts_with('"') && etag.len() == 34, "{path}: {etag}");
        let body = r.bytes().await.unwrap();
        assert!(!body.is_empty());
        // Revalidation: the same tag is 304 without a body, and still carries the CSP.
        let r = get(&format!("{b}{path}"), &[("if-none-match", &etag)]).await;
        assert_eq!(r.status(), 304, "{path}");
        assert_eq!(r.headers()["etag"], etag.as_str());
        assert_eq!(r.headers()["content-security-policy"], CSP);
        assert!(r.bytes().await.unwrap().is_empty());
        // Another tag: the file again.
        let r = get(&format!("{b}{path}"), &[("if-none-match", "\"other\"")]).await;
        assert_eq!(r.status(), 200, "{path}");
    }
    let page = get(&format!("{b}/"), &[]).await.text().await.unwrap();
    assert!(page.contains(r#"<script type="module" src="/explorer/app.js"></script>"#));
    assert!(!page.contains("<script>"), "no inline script");
    assert!(
        !page.contains("http://") || !page.contains("src=\"http"),
        "nothing loaded from elsewhere"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn files_are_gzipped_for_clients_that_accept_it_under_their_own_etag() {
    let gw = gateway().await;
    let url = format!("{}/explorer/app.js", base(&gw));
    let plain = get(&url, &[]).await;
    let plain_tag = plain.headers()["etag"].to_str().unwrap().to_owned();
    let plain = plain.bytes().await.unwrap();
    let r = get(&url, &[("accept-encoding", "br;q=1.0, gzip;q=0.8")]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-encoding"], "gzip");
    assert_eq!(r.headers()["vary"], "accept-encoding");
    let tag = r.headers()["etag"].to_str().unwrap().to_owned();
    assert_ne!(
        tag, plain_tag,
        "a different representation, a different strong tag"
    );
    let zipped = r.bytes().await.unwrap();
    assert!(
        zipped.len() * 2 < plain.len(),
        "{} vs {}",
        zipped.len(),
        plain.len()
    );
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&zipped[..])
        .read_to_end(&mut unzipped)
        .unwrap();
    assert_eq!(unzipped, plain);
    let r = get(
        &url,
        &[("accept-encoding", "gzip"), ("if-none-match", &tag)],
    )
    .await;
    assert_eq!(r.status(), 304);
    let r = get(&url, &[("accept-encoding", "gzip;q=0")]).await;
    assert!(r.headers().get("content-encoding").is_none());
    gw.shutdown().await;
}

/// The page's size as README.md states it: every file `/` loads, gzipped as served.
#[tokio::test]
async fn the_whole_page_stays_under_150_kb_compressed() {
    let gw = gateway().await;
    let b = base(&gw);
    let mut total = (0, 0);
    for file in [
        "/",
        "/explorer/style.css",
        "/explorer/icon.svg",
        "/explorer/app.js",
        "/explorer/api.js",
        "/explorer/tree.js",
        "/explorer/value.js",
        "/explorer/write.js",
        "/explorer/commands.js",
        "/explorer/status.js",
        "/explorer/util.js",
    ] {
        let plain = get(&format!("{b}{file}"), &[]).await.bytes().await.unwrap();
        let zipped = get(&format!("{b}{file}"), &[("accept-encoding", "gzip")])
            .await
            .bytes()
            .await
            .unwrap();
        total.0 += plain.len();
        total.1 += zipped.len();
    }
    println!(
        "explorer page: {} bytes, {} bytes gzipped",
        total.0, total.1
    );
    assert!(total.1 < 150_000, "{total:?}");
    gw.shutdown().await;
}

#[tokio::test]
async fn other_methods_and_unknown_files_are_refused_with_a_problem() {
    let gw = gateway().await;
    let b = base(&gw);
    let r = within(
        Duration::from_secs(5),
        "POST /",
        http().post(format!("{b}/")).body("x").send(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, HEAD, OPTIONS");
    let r = get(&format!("{b}/explorer/secret.txt"), &[]).await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let r = within(
        Duration::from_secs(5),
        "HEAD /",
        http().head(format!("{b}/")).send(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap().is_empty());
    gw.shutdown().await;
}

#[tokio::test]
async fn server_json_names_the_ports_really_bound_and_the_auth_in_force() {
    // Port 0 everywhere: the page must learn the ports the system chose.
    let gw = gateway().await;
    let r = get(&format!("{}/explorer/server.json", base(&gw)), &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(v["http"]["port"], gw.http_addr.port());
    assert_eq!(v["mqtt"]["port"], gw.mqtt_addr.port());
    assert_eq!(v["coap"]["port"], gw.coap_addr.port());
    assert_eq!(v["mqtt"]["ip"], "127.0.0.1");
    assert_eq!(v["auth"]["anonymous"], true);
    assert_eq!(v["auth"]["passwords"], false);
    assert_eq!(v["mqtts"], serde_json::Value::Null);
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    gw.shutdown().await;
}

#[tokio::test]
async fn explorer_false_serves_404_at_the_root_and_its_files() {
    let gw = gateway_with(|c| c.http.explorer = false).await;
    let b = base(&gw);
    for path in ["/", "/explorer/app.js", "/explorer/server.json"] {
        let r = get(&format!("{b}{path}"), &[]).await;
        assert_eq!(r.status(), 404, "{path}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }
    // The API is unaffected.
    let r = get(&format!("{b}/resources"), &[]).await;
    assert_eq!(r.status(), 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn values_are_served_sandboxed_so_stored_html_cannot_run_as_the_explorer() {
    let gw = gateway().await;
    let r = http_put(&gw, "evil/page", "<script>alert(1)</script>", "text/html").await;
    assert_eq!(r.status(), 201);
    let r = http_get(&gw, "evil/page").await;
    assert_eq!(r.headers()["content-type"], "text/html");
    assert_eq!(r.headers()["content-security-policy"], "sandbox");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// In a real browser
// ---------------------------------------------------------------------------------------

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Whether everything the browser tests drive is installed; panics in CI when not.
fn browser_tools() -> bool {
    let mut ok = true;
    for bin in [
        "node",
        "chromium",
        "curl",
        "mosquitto_pub",
        "mosquitto_sub",
        "coap-client-notls",
    ] {
        ok &= have(bin);
    }
    for (dir, package, install) in [
        (
            "tests/browser/node_modules/playwright-core",
            "playwright-core",
            "cd tests/browser && npm install",
        ),
        (
            "tests/mqttjs/node_modules/mqtt/dist/mqtt.min.js",
            "MQTT.js",
            "cd tests/mqttjs && npm install",
        ),
    ] {
        if !root().join(dir).exists() {
            if std::env::var_os("CI").is_some() {
                panic!("{package} is not installed, and CI must have it ({install})");
            }
            println!("SKIP: {package} not installed ({install})");
            ok = false;
        }
    }
    ok
}

/// The system's chromium (Debian installs a wrapper script at /usr/bin/chromium).
fn chromium() -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("chromium"))
                .find(|c| c.is_file())
        })
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("explorer-screenshots")
}

/// Run `tests/browser/explorer.mjs <scenario>` and check that each of `expected` steps
/// reported `ok` (and none failed).
async fn drive(scenario: &str, mut config: serde_json::Value, expected: &[&str]) {
    config["shots"] = screenshots().to_string_lossy().into();
    config["chromium"] = chromium().to_string_lossy().into();
    config["version"] = env!("CARGO_PKG_VERSION").into();
    let script = root().join("tests/browser/explorer.mjs");
    let child = tokio::process::Command::new("node")
        .arg(&script)
        .arg(scenario)
        .env("EXPLORER_TEST", config.to_string())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), child)
        .await
        .unwrap_or_else(|_| panic!("the {scenario} browser test did not finish in 120 s"))
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    let failed: Vec<&str> = stdout.lines().filter(|l| l.starts_with("not ok")).collect();
    assert!(
        failed.is_empty() && out.status.success(),
        "browser steps failed ({}):\n{}\nstderr:\n{stderr}",
        out.status,
        failed.join("\n")
    );
    for step in expected {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("ok {step} ("))),
            "step {step:?} did not report ok:\n{stdout}\nstderr:\n{stderr}"
        );
    }
    println!("screenshots in {}", screenshots().display());
}

fn ports(gw: &Gateway) -> serde_json::Value {
    serde_json::json!({
        "base": base(gw),
        "mqtt_port": gw.mqtt_addr.port(),
        "coap_port": gw.coap_addr.port(),
    })
}

/// The issue's browser tests on an open gateway: live updates from curl, MQTT and CoAP,
/// writing from the page (seen by mosquitto_sub), DELETE, JSON, hex, images, sparkline
/// and diff, filters, keyboard, commands, status strip, MQTT.js over WebSocket, a phone.
#[tokio::test]
async fn explorer_in_a_real_browser() {
    if !browser_tools() {
        return;
    }
    let gw = gateway().await;
    drive(
        "open",
        ports(&gw),
        &[
            "the page loads, with its CSP, and no console errors",
            "a value PUT with curl appears in the tree within 1 s, without a reload",
            "a retained MQTT publish appears in the tree within 1 s",
            "a CoAP PUT appears in the tree within 1 s",
            "JSON is pretty-printed and collapsible",
            "a changed JSON value is shown beside the previous one, with a diff",
            "a binary value shows as a hex dump",
            "an image/* value is shown as an image",
            "numbers are plotted as a sparkline, the previous value diffed",
            "a value edited in the page is seen by an MQTT subscriber",
            "server errors are shown with their detail (412, 400)",
            "DELETE asks for confirmation, then the thing disappears",
            "the filter box takes an MQTT filter or a substring",
            "the tree is usable by keyboard",
            "copyable commands name this server's ports, and work",
            "the status strip shows connections, rates, retained values and uptime",
            "MQTT.js over WebSocket at /mqtt from the page, received by mosquitto_sub",
            "no console errors while using the page",
            "a phone-sized screen shows the tree, then the value, without sideways scrolling",
        ],
    )
    .await;
    gw.shutdown().await;
}

/// Users' passwords in the auth test.
const USERS: [(&str, &str); 2] = [("alice", "alice-secret"), ("bob", "bob-secret")];

/// The HS256 secret of the auth test's tokens.
const SECRET: &str = "an-hs256-secret-of-32-bytes-or-more!";

/// With a password file, an ACL and JWTs: the page asks for credentials, sends them with
/// every request, and shows each user only what the ACL lets them read.
#[tokio::test]
async fn explorer_with_authentication_shows_each_user_only_their_things() {
    if !browser_tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut passwd = String::new();
    for (user, pw) in USERS {
        passwd.push_str(&format!(
            "{user}:{}\n",
            password::hash_password(pw).unwrap()
        ));
    }
    std::fs::write(dir.path().join("passwd"), passwd).unwrap();
    std::fs::write(
        dir.path().join("acl"),
        "user alice\ntopic readwrite alice/#\nuser bob\ntopic readwrite bob/#\nuser carol\ntopic read carol/#\n",
    )
    .unwrap();
    let d = dir.path().to_owned();
    let gw = gateway_with(move |c| {
        c.auth.password_file = Some(d.join("passwd"));
        c.auth.acl_file = Some(d.join("acl"));
        c.auth.jwt_hs256_secret = Some(SECRET.into());
    })
    .await;
    seed(&gw, "alice/door", "closed").await;
    seed(&gw, "bob/window", "open").await;
    seed(&gw, "carol/lamp", "on").await;
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({ "sub": "carol", "exp": exp }),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let mut config = ports(&gw);
    config["users"] = serde_json::json!({ "alice": USERS[0].1, "bob": USERS[1].1 });
    config["token"] = token.into();
    drive(
        "auth",
        config,
        &[
            "without credentials the page asks for them and shows nothing",
            "a wrong password is refused with the server's detail",
            "alice signs in and sees only her things",
            "a write outside the grant shows 403 with its detail",
            "credentials are kept for the session only, unless \"remember\" is ticked",
            "a bearer token works too, and shows only what it may read",
            "no console errors beyond the refusals asked for",
        ],
    )
    .await;
    gw.shutdown().await;
}
