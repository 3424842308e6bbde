//! The HTTP front-end: `/resources/{topic}` is the retained value of thing `topic`.
//!
//! Routes (the contract is `openapi/ponte.yaml`, served at `/openapi.yaml`):
//! - `GET|HEAD /resources/{topic}`: the value with its Content-Type, ETag, Last-Modified;
//!   conditional with `If-None-Match`/`If-Modified-Since` (304) and `If-Match` (412);
//!   `Accept: text/event-stream` turns a GET into a Server-Sent Events stream (`sse.rs`);
//! - `PUT|POST /resources/{topic}`: store the body (201 created / 204 replaced; an empty
//!   body clears), conditional with `If-Match`/`If-None-Match`;
//! - `DELETE /resources/{topic}`: clear (204, or 404 when there is nothing);
//! - `OPTIONS`: 204 with `Allow`; CORS preflights are answered by the CORS layer;
//! - `GET /openapi.yaml`: the API description;
//! - `GET /metrics`, `/livez`, `/readyz`: metrics and health (`ops.rs`);
//! - `GET /mqtt` (WebSocket upgrade, subprotocol `mqtt`): the MQTT broker for browsers;
//! - `GET /`, `/explorer/…`: the explorer, a web page of the things (`explorer.rs`,
//!   `[http] explorer`).
//!
//! The same router serves HTTPS (`http.tls_port`, see [`crate::tls::serve_http`]); there,
//! a verified client certificate's CN is the [`crate::tls::TlsIdentity`] request extension.
//!
//! Reads and writes of `/resources/{topic}` are authenticated (Basic, Bearer JWT, or
//! anonymous) and checked against the ACL on the parsed topic ([`guard`]). `/openapi.yaml` is
//! public; `/mqtt` is not HTTP-authenticated, the MQTT CONNECT inside carries the credentials.
//!
//! Every error is an RFC 9457 problem document (`problem.rs`).

mod conditional;
mod edge;
pub mod explorer;
mod front;
pub mod guard;
mod headers;
pub mod listing;
mod mqtt_ws;
mod ops;
mod problem;
mod resources;
mod sse;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use http::header::{CONTENT_TYPE, ETAG, LAST_MODIFIED, LOCATION};
use http::{HeaderName, HeaderValue, Method, StatusCode};
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use edge::{EdgeFuture, EdgeService};
pub use front::{Front, FrontFuture};
pub use mqtt_ws::{serve_mqtt_ws, serve_mqtt_wss};
pub use problem::{Problem, PROBLEM_JSON};
pub use sse::encode_event;

use crate::auth::Auth;
use crate::broker::Broker;
use crate::config::Config;
use crate::limits::{Limits, RateLimiters};
use crate::mqtt::Mqtt;
use crate::shutdown::Shutdown;

/// The OpenAPI description of this front-end, served at `/openapi.yaml`.
pub const OPENAPI_YAML: &str = include_str!("../../openapi/ponte.yaml");

/// The methods `/mqtt` answers, for `Allow`.
const MQTT_ALLOWED: &str = "GET, OPTIONS";

/// The methods `/openapi.yaml` answers, for `Allow`.
const OPENAPI_ALLOWED: &str = "GET, HEAD, OPTIONS";

/// What every request handler needs: [`Shared`] behind one reference count, because axum's
/// `State` extractor clones the state on every request (one atomic increment and decrement
/// instead of one per field — a dozen `Arc`s, two shutdown handles — on lines every worker
/// touches).
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The fields of [`AppState`].
#[derive(Debug, Clone)]
pub struct Shared {
    /// The broker core: reads come from its retained index, writes go through its one
    /// publish path, and SSE streams subscribe to it.
    pub broker: Arc<Broker>,
    /// The configuration, for `http.max_body`, `http.sse_queue` and `http.cors_origins`.
    pub config: Arc<Config>,
    /// Cloned into every SSE stream so long-lived streams end when the gateway stops
    /// instead of holding graceful shutdown up forever.
    pub shutdown: Shutdown,
    /// The MQTT front-end, for MQTT over WebSocket at `/mqtt`; `None` leaves `/mqtt`
    /// unrouted (unit tests of the resource API).
    pub mqtt: Option<Mqtt>,
    /// Who may read and write which topic ([`guard`]): the gateway's one authority, shared
    /// with CoAP and MQTT so a reload changes every protocol at once.
    pub auth: Arc<Auth>,
    /// Writes per client address (`[limits] publish_rate`): over it, 429 with Retry-After.
    /// Shared by HTTP and HTTPS through [`crate::limits::Limits::http`].
    pub writes: Arc<RateLimiters>,
    /// Every counter of the gateway, for `GET /metrics` (a router of its own, as in unit
    /// tests, counts only its broker's).
    pub sources: Option<crate::stats::Sources>,
    /// The checks behind `GET /readyz`.
    pub readiness: Arc<crate::health::Readiness>,
}

impl AppState {
    /// The state of one HTTP front-end.
    pub fn new(broker: Arc<Broker>, config: Arc<Config>, shutdown: Shutdown) -> Self {
        let sources = crate::stats::Sources {
            metrics: broker.ops.clone(),
            limits: crate::limits::Limits::new(config.limits.clone()),
            broker: broker.clone(),
            mqtt: None,
            coaps: None,
            bridges: None,
            webhooks: None,
        };
        AppState(Arc::new(Shared {
            broker,
            shutdown,
            mqtt: None,
            auth: Arc::new(Auth::open()),
            writes: Arc::new(RateLimiters::new(
                config.limits.clone(),
                crate::limits::TRACKED_ADDRESSES,
            )),
            sources: Some(sources),
            config,
            readiness: crate::health::Readiness::new(),
        }))
    }

    /// The fields, to change while the state is being built (copied if already shared).
    fn fields(&mut self) -> &mut Shared {
        Arc::make_mut(&mut self.0)
    }

    /// Serve `/metrics` from `sources` and `/readyz` from `readiness`.
    pub fn with_ops(
        mut self,
        sources: crate::stats::Sources,
        readiness: Arc<crate::health::Readiness>,
    ) -> Self {
        self.fields().sources = Some(sources);
        self.fields().readiness = readiness;
        self
    }

    /// Authenticate and authorize `/resources` requests with `auth` (without it everyone is
    /// anonymous and allowed everything).
    pub fn with_auth(mut self, auth: Arc<Auth>) -> Self {
        self.fields().auth = auth;
        self
    }

    /// Count and limit writes with `writes` (the gateway's one per-address HTTP limiter)
    /// instead of a limiter of this router's own.
    pub fn with_write_limits(mut self, writes: Arc<RateLimiters>) -> Self {
        self.fields().writes = writes;
        self
    }

    /// Also serve MQTT over WebSocket at `/mqtt`.
    pub fn with_mqtt(mut self, mqtt: Mqtt) -> Self {
        self.fields().mqtt = Some(mqtt);
        self
    }
}

/// The HTTP front-end as served: the router behind the [`Front`] door (`/resources…` straight
/// to its handler) inside the edge ([`EdgeService`]: request counts, the sandbox headers of
/// values).
pub type App = EdgeService<Front>;

/// The router, with the CORS layer when `http.cors_origins` is not empty, inside the edge.
pub fn app(state: AppState) -> App {
    let cors = cors_layer(&state.config.http.cors_origins);
    let mut router = Router::new();
    if state.mqtt.is_some() {
        router = router.route("/mqtt", any(mqtt_ws));
    }
    if state.config.http.explorer {
        router = router
            .route("/", any(explorer::asset))
            .route("/explorer/server.json", any(explorer::server))
            .route("/explorer/{*file}", any(explorer::asset));
    }
    let edge = edge::Edge::new(state.broker.ops.clone(), true);
    // With the CORS layer in the router, `/resources…` must go through it too.
    let direct = cors.is_none().then(|| state.clone());
    let router = router
        .route("/openapi.yaml", any(openapi))
        .route("/metrics", any(ops::metrics))
        .route("/livez", any(ops::livez))
        .route("/readyz", any(ops::readyz))
        // `/resources`, `/resources/` and everything under it, when they come this way (with
        // the CORS layer; otherwise `Front` serves them directly): from the fallback rather
        // than a `/resources/{*topic}` route, because `handle` parses the raw path itself
        // (see `resources::topic_of`) and never reads URL parameters.
        .fallback(resources_or_not_found)
        .with_state(state);
    let router = match cors {
        Some(cors) => router.layer(cors),
        None => router,
    };
    tower::Layer::layer(&edge, Front::new(router, direct))
}

/// The router of `[http] metrics_port`: only `/metrics`, `/livez` and `/readyz`, so the
/// port can be exposed to a monitoring network without exposing the things.
pub fn ops_app(state: AppState) -> App {
    let edge = edge::Edge::new(state.broker.ops.clone(), false);
    let router = Router::new()
        .route("/metrics", any(ops::metrics))
        .route("/livez", any(ops::livez))
        .route("/readyz", any(ops::readyz))
        .fallback(not_found)
        .with_state(state);
    tower::Layer::layer(&edge, Front::new(router, None))
}

/// Serve HTTP on `listener` until `shutdown` fires, then finish in-flight requests.
/// Connections are admitted by the listener's [`ConnectionGate`](crate::limits::ConnectionGate)
/// and have `http.header_timeout_secs` to send each request header.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    listener: tokio::net::TcpListener,
    broker: Arc<Broker>,
    config: Arc<Config>,
    mqtt: Mqtt,
    auth: Arc<Auth>,
    limits: Arc<Limits>,
    ops: (crate::stats::Sources, Arc<crate::health::Readiness>),
    shutdown: Shutdown,
) {
    let guard = crate::tls::HttpGuard {
        gate: limits.gate("http"),
        header_timeout: config.http.header_timeout(),
        body_deadline: config.http.body_deadline(),
        slots: limits.http_slots.clone(),
        metrics: Some(broker.ops.clone()),
    };
    let router = app(AppState::new(broker, config, shutdown.clone())
        .with_mqtt(mqtt)
        .with_auth(auth)
        .with_write_limits(limits.http.clone())
        .with_ops(ops.0, ops.1));
    crate::tls::serve_http(listener, router, None, guard, shutdown, "HTTP").await;
}

/// The CORS layer for `origins`: none when empty, any origin (without credentials) for
/// `"*"`, else exactly the listed origins.
fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let list = origins
            .iter()
            .filter_map(|o| match HeaderValue::from_str(o) {
                Ok(v) => Some(v),
                Err(_) => {
                    tracing::warn!(origin = %o, "http.cors_origins entry is not a valid header value; ignored");
                    None
                }
            })
            .collect::<Vec<_>>();
        AllowOrigin::list(list)
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([
                Method::GET,
                Method::HEAD,
                Method::PUT,
                Method::POST,
                Method::DELETE,
                Method::OPTIONS,
            ])
            .allow_headers([
                CONTENT_TYPE,
                http::header::IF_MATCH,
                http::header::IF_NONE_MATCH,
                http::header::IF_MODIFIED_SINCE,
                http::header::ACCEPT,
                http::header::AUTHORIZATION,
                HeaderName::from_static("last-event-id"),
            ])
            .expose_headers([
                ETAG,
                LOCATION,
                LAST_MODIFIED,
                http::header::WWW_AUTHENTICATE,
            ]),
    )
}

/// `/openapi.yaml`.
async fn openapi(request: Request) -> Response {
    match *request.method() {
        Method::GET | Method::HEAD => (
            [(CONTENT_TYPE, HeaderValue::from_static("application/yaml"))],
            OPENAPI_YAML,
        )
            .into_response(),
        Method::OPTIONS => resources::options(OPENAPI_ALLOWED),
        _ => resources::method_not_allowed(request.method(), request.uri().path(), OPENAPI_ALLOWED)
            .into_response(),
    }
}

/// `/mqtt`: MQTT over WebSocket (subprotocol `mqtt`) on the HTTP port.
async fn mqtt_ws(State(state): State<AppState>, request: Request) -> Response {
    let Some(mqtt) = state.mqtt.clone() else {
        return not_found(request).await;
    };
    match *request.method() {
        Method::GET => {}
        Method::OPTIONS => return resources::options(MQTT_ALLOWED),
        _ => {
            return resources::method_not_allowed(
                request.method(),
                request.uri().path(),
                MQTT_ALLOWED,
            )
            .into_response()
        }
    }
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let (mut parts, _body) = request.into_parts();
    let tls = parts.extensions.get::<crate::tls::TlsPeer>().cloned();
    // The connection's `[limits]` place goes with the MQTT session.
    let slot = parts.extensions.remove::<crate::tls::ConnSlot>();
    match crate::mqtt::ws::upgrade(mqtt, &mut parts, peer, tls, slot) {
        Ok(response) => response,
        Err((status, why)) => Problem::new(
            status,
            format!(
                "/mqtt is MQTT over WebSocket (subprotocol \"mqtt\"); this {} request is not a WebSocket upgrade: {why}",
                parts.method
            ),
        )
        .into_response(),
    }
}

/// The fallback of [`app`]: the resource tree (when [`Front`] does not serve it directly), or
/// 404.
async fn resources_or_not_found(state: State<AppState>, request: Request) -> Response {
    if front::is_resources(request.uri().path()) {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        resources::handle(state, peer, request).await
    } else {
        not_found(request).await
    }
}

/// Any other path: 404 as a problem document.
async fn not_found(request: Request) -> Response {
    Problem::new(
        StatusCode::NOT_FOUND,
        format!(
            "there is nothing at {:?} ({} received); values live at /resources/{{topic}} and the API is described at /openapi.yaml",
            request.uri().path(),
            request.method()
        ),
    )
    .into_response()
}
