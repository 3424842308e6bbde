//! The explorer (issue 13): a web page at `/` that shows the things live, and writes them.
//!
//! The page is plain HTML, CSS and JavaScript modules under `explorer/` in the repository,
//! embedded in the binary at build time (`include_bytes!`): no build step, no CDN, nothing
//! fetched from elsewhere, so it works offline and is exactly the version of the server it
//! talks to. In the browser it uses only the public HTTP API — `GET /resources` (listing and
//! its SSE filter stream), `/resources/{topic}` (GET, PUT, DELETE), `/metrics` — with the
//! credentials the user gave, so it sees exactly what that user may see.
//!
//! Routes (only with `[http] explorer = true`, the default; otherwise 404 like any unknown
//! path):
//! - `GET|HEAD /`: the page; `/explorer/*.js`, `*.css`, `icon.svg`: its files. Each carries a
//!   strong `ETag` (SHA-256 of its bytes) and `Cache-Control: no-cache`, so a browser
//!   revalidates with `If-None-Match` and gets a 304 until the binary changes. A client
//!   that accepts gzip gets the file compressed once (at its first request) and served from
//!   memory afterwards, under its own ETag (`Vary: Accept-Encoding`).
//! - `GET /explorer/server.json`: what the page cannot know by itself — the ports really
//!   bound (for the copyable commands), whether anonymous access is allowed, which
//!   credentials are accepted, whether `/metrics` needs them. Public, like `/openapi.yaml`.
//!
//! Every explorer response carries a `Content-Security-Policy` that allows scripts, styles
//! and connections from this origin only, and no inline script ([`CSP`]). Values served at
//! `/resources/{topic}` get `Content-Security-Policy: sandbox` (`edge.rs`): a value
//! stored as `text/html` opened in a browser tab then runs in an opaque origin and cannot
//! read the explorer's stored credentials.

use std::io::Write;
use std::sync::OnceLock;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_SECURITY_POLICY,
    CONTENT_TYPE, ETAG, IF_NONE_MATCH, REFERRER_POLICY, VARY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::problem::Problem;
use super::resources::{method_not_allowed, options};
use super::AppState;
use crate::config::Config;

/// The methods the explorer's files answer.
const ALLOWED: &str = "GET, HEAD, OPTIONS";

/// The page's Content-Security-Policy: everything from this origin only, no inline script
/// or style, no plugins, no framing. `img-src blob:` shows `image/*` values (fetched with
/// the user's credentials, then handed to `<img>` as a blob URL); `connect-src 'self'`
/// covers `fetch` of the API (and, in CSP Level 3, WebSocket to the same host and port).
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self' blob: data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
frame-ancestors 'none'";

/// One file of the page, embedded in the binary.
struct Asset {
    /// The request path that serves it.
    path: &'static str,
    /// Its media type.
    content_type: &'static str,
    /// Its bytes, as committed under `explorer/`.
    body: &'static [u8],
}

/// An [`Asset`] from `explorer/<file>`.
macro_rules! asset {
    ($path:expr, $file:literal, $type:literal) => {
        Asset {
            path: $path,
            content_type: $type,
            body: include_bytes!(concat!("../../explorer/", $file)),
        }
    };
}

/// Media type of the JavaScript modules (RFC 9239).
macro_rules! js {
    ($name:literal) => {
        asset!(
            concat!("/explorer/", $name),
            $name,
            "text/javascript; charset=utf-8"
        )
    };
}

/// Every file of the page.
const ASSETS: &[Asset] = &[
    asset!("/", "index.html", "text/html; charset=utf-8"),
    asset!(
        "/explorer/style.css",
        "style.css",
        "text/css; charset=utf-8"
    ),
    asset!("/explorer/icon.svg", "icon.svg", "image/svg+xml"),
    js!("app.js"),
    js!("api.js"),
    js!("tree.js"),
    js!("value.js"),
    js!("write.js"),
    js!("commands.js"),
    js!("status.js"),
    js!("util.js"),
];

/// An asset ready to serve: its ETag and, when that is smaller, its gzip form.
struct Ready {
    /// `"<first 16 bytes of SHA-256, hex>"`.
    etag: HeaderValue,
    /// The gzip bytes and their own ETag (a different representation needs a different
    /// strong tag, RFC 9110 §8.8.3.3); `None` when compression would not help.
    gzip: Option<(Bytes, HeaderValue)>,
}

/// The assets' ETags and gzip forms, computed once at the first request (a few ms).
fn ready() -> &'static [Ready] {
    static READY: OnceLock<Vec<Ready>> = OnceLock::new();
    READY.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let digest = Sha256::digest(a.body);
                let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
                let gzip = gzip(a.body).filter(|z| z.len() < a.body.len()).map(|z| {
                    let tag = HeaderValue::from_str(&format!("\"{hex}-gz\""))
                        .unwrap_or(HeaderValue::from_static("\"gz\""));
                    (Bytes::from(z), tag)
                });
                Ready {
                    etag: HeaderValue::from_str(&format!("\"{hex}\""))
                        .unwrap_or(HeaderValue::from_static("\"0\"")),
                    gzip,
                }
            })
            .collect()
    })
}

/// `body` compressed with gzip at the best level (done once per file).
fn gzip(body: &[u8]) -> Option<Vec<u8>> {
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(body).ok()?;
    z.finish().ok()
}

/// Whether `Accept-Encoding` allows gzip (listed, or `*`, with a q-value above 0).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or("").trim();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .filter_map(|q| q.trim().parse::<f32>().ok())
                .next()
                .unwrap_or(1.0);
            (name.eq_ignore_ascii_case("gzip") || name == "*") && q > 0.0
        })
}

/// Whether `If-None-Match` names `etag` (weak comparison, RFC 9110 §13.1.2) or is `*`.
fn none_match(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let ours = etag.as_bytes();
    headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.trim_start_matches("W/").as_bytes() == ours)
}

/// The headers every explorer response carries: the policy and its companions.
fn protect(headers: &mut HeaderMap) {
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

/// `/` and `/explorer/{file}`: one embedded file.
pub async fn asset(request: Request) -> Response {
    let path = request.uri().path();
    let Some(i) = ASSETS.iter().position(|a| a.path == path) else {
        return Problem::not_found(format!(
            "the explorer has no file {path:?}; the page is at /"
        ))
        .into_response();
    };
    match *request.method() {
        Method::GET | Method::HEAD => {}
        Method::OPTIONS => return options(ALLOWED),
        _ => return method_not_allowed(request.method(), path, ALLOWED).into_response(),
    }
    let (asset, ready) = (&ASSETS[i], &ready()[i]);
    let (body, etag, gzipped) = match (&ready.gzip, accepts_gzip(request.headers())) {
        (Some((z, tag)), true) => (z.clone(), tag, true),
        _ => (Bytes::from_static(asset.body), &ready.etag, false),
    };
    let mut response = if none_match(request.headers(), etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = Response::new(Body::empty());
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
        r.headers_mut().insert(CONTENT_LENGTH, body.len().into());
        if gzipped {
            r.headers_mut()
                .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        if request.method() != Method::HEAD {
            *r.body_mut() = Body::from(body);
        }
        r
    };
    let headers = response.headers_mut();
    headers.insert(ETAG, etag.clone());
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(VARY, HeaderValue::from_static("accept-encoding"));
    protect(headers);
    response
}

/// `GET /explorer/server.json`: the facts the page needs and cannot see from its URL.
pub async fn server(State(state): State<AppState>, request: Request) -> Response {
    match *request.method() {
        Method::GET | Method::HEAD => {}
        Method::OPTIONS => return options(ALLOWED),
        _ => {
            return method_not_allowed(request.method(), request.uri().path(), ALLOWED)
                .into_response()
        }
    }
    let body = describe(&state.config, &state.auth).to_string();
    let mut response = (
        [
            (
                CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            ),
            (CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        if request.method() == Method::HEAD {
            String::new()
        } else {
            body
        },
    )
        .into_response();
    protect(response.headers_mut());
    response
}

/// What `/explorer/server.json` says. `config` holds the ports really bound (the gateway
/// hands the HTTP front-end its configuration with port 0 replaced by the chosen port).
/// An `ip` of `null` means "every address": the page then uses the host name it was
/// loaded from.
pub fn describe(config: &Config, auth: &crate::auth::Auth) -> serde_json::Value {
    let ip = |addr: std::net::SocketAddr| {
        let ip = addr.ip();
        (!ip.is_unspecified()).then(|| ip.to_string())
    };
    let tls = config.tls.enabled();
    let settings = auth.config();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "auth": {
            "anonymous": auth.anonymous_allowed(),
            "passwords": settings.password_file.is_some(),
            "bearer": settings.jwt_hs256_secret.is_some() || settings.jwt_rs256_public_key.is_some(),
        },
        "metrics_auth": config.http.metrics_auth,
        "http": { "ip": ip(config.http_addr()), "port": config.http.port },
        "https": config.https_addr().filter(|_| tls).map(|a| json!({ "ip": ip(a), "port": a.port() })),
        "mqtt": { "ip": ip(config.mqtt_addr()), "port": config.mqtt.port },
        "mqtts": tls.then(|| json!({ "ip": ip(config.mqtts_addr()), "port": config.mqtt.tls_port })),
        "coap": { "ip": ip(config.coap_addr()), "port": config.coap.port, "tcp": config.coap.tcp },
        "coaps": settings.psk_file.as_ref().map(|_| json!({ "ip": ip(config.coaps_addr()), "port": config.coap.dtls_port })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn gzip_is_taken_when_accepted_with_a_positive_q() {
        assert!(accepts_gzip(&headers(&[("accept-encoding", "gzip, br")])));
        assert!(accepts_gzip(&headers(&[(
            "accept-encoding",
            "br;q=1, GZIP;q=0.5"
        )])));
        assert!(accepts_gzip(&headers(&[("accept-encoding", "*")])));
        assert!(!accepts_gzip(&headers(&[("accept-encoding", "gzip;q=0")])));
        assert!(!accepts_gzip(&headers(&[(
            "accept-encoding",
            "br, identity"
        )])));
        assert!(!accepts_gzip(&headers(&[])));
    }

    #[test]
    fn if_none_match_compares_weakly_and_takes_lists_and_star() {
        let tag = HeaderValue::from_static("\"abc\"");
        assert!(none_match(&headers(&[("if-none-match", "\"abc\"")]), &tag));
        assert!(none_match(
            &headers(&[("if-none-match", "\"x\", W/\"abc\"")]),
            &tag
        ));
        assert!(none_match(&headers(&[("if-none-match", "*")]), &tag));
        assert!(!none_match(
            &headers(&[("if-none-match", "\"abcd\"")]),
            &tag
        ));
        assert!(!none_match(&headers(&[]), &tag));
    }

    #[test]
    fn every_asset_is_embedded_and_the_page_names_only_embedded_files() {
        let page = std::str::from_utf8(ASSETS[0].body).unwrap();
        for a in ASSETS {
            assert!(!a.body.is_empty(), "{} is empty", a.path);
        }
        // Every module the page or another module imports is served.
        for a in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
            let text = std::str::from_utf8(a.body).unwrap();
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let from = line.rsplit("from ").next().unwrap_or("");
                let name = from.trim_matches(|c| c == '\'' || c == '"' || c == ';' || c == ' ');
                let path = format!("/explorer/{}", name.trim_start_matches("./"));
                assert!(
                    ASSETS.iter().any(|a| a.path == path),
                    "{} imports {path}, which is not embedded",
                    a.path
                );
            }
        }
        for needle in [
            "/explorer/app.js",
            "/explorer/style.css",
            "/explorer/icon.svg",
        ] {
            assert!(page.contains(needle), "index.html does not load {needle}");
        }
        assert!(!page.contains("<script>"), "no inline script (CSP)");
        assert!(!page.contains("style=\""), "no inline style (CSP)");
    }

    #[test]
    fn compressed_forms_are_smaller_and_decompress_to_the_file() {
        use std::io::Read;
        for (a, r) in ASSETS.iter().zip(ready()) {
            if let Some((z, tag)) = &r.gzip {
                assert!(z.len() < a.body.len());
                assert_ne!(tag, r.etag);
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(&z[..])
                    .read_to_end(&mut out)
                    .unwrap();
                assert_eq!(out, a.body, "{}", a.path);
            }
        }
    }
}
