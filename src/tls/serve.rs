//! Serving HTTP and HTTPS connections: admission (`[limits]`, `[http] max_connections`) with a 503 a client can read, the TLS handshake, header and body deadlines.

use super::*;

/// How the HTTP accept loop of [`serve_http`] guards its listener.
#[derive(Debug, Clone)]
pub struct HttpGuard {
    /// Admission per source address and connection rate ([`crate::limits`]).
    pub gate: Arc<ConnectionGate>,
    /// How long a client has to send a complete request header (`http.header_timeout_secs`).
    pub header_timeout: Duration,
    /// How long a request body (and a WebSocket frame) may take (`http.body_timeout_secs`,
    /// `http.body_min_rate`).
    pub body_deadline: TransferDeadline,
    /// `[http] max_connections`, shared by the HTTP and HTTPS listeners; `None`: no cap.
    pub slots: Option<Arc<Semaphore>>,
    /// Counts the listener's connections and bytes as HTTP (`/metrics`); `None` on the
    /// MQTT WebSocket ports, whose bytes MQTT counts itself.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
}

/// An admitted connection's place under `[limits]`, shared: the connection's task holds it,
/// and every request hyper can upgrade carries a clone in its extensions, so a request
/// upgraded to MQTT over WebSocket takes one into its MQTT session and the place stays taken
/// until that session ends — not only until hyper hands the upgraded socket over.
#[derive(Debug, Clone)]
pub struct ConnSlot {
    /// Held for its `Drop`: the place is freed when the last clone goes.
    _permit: Arc<ConnPermit>,
    /// The connection's place under `[http] max_connections`, freed with the last clone
    /// like `_permit`.
    _cap: Option<Arc<OwnedSemaphorePermit>>,
}

/// Serve `router` on `listener` until shutdown: over TLS when `tls` is `Some` (HTTPS, WSS
/// on its own port), else plain (HTTP, WebSocket on its own port). Each connection is
/// admitted by `guard.gate` first (a refused plain connection gets a bare 503 with
/// `Retry-After`, a refused TLS one is closed before the handshake), then its handshake
/// and HTTP run in its own task with a header read timeout against slowloris. Every
/// request carries `ConnectInfo<SocketAddr>`; over TLS also [`TlsPeer`] and, with a
/// verified client certificate, [`TlsIdentity`]. On shutdown, connections finish their
/// requests and close.
pub async fn serve_http<S>(
    listener: TcpListener,
    router: S,
    tls: Option<Arc<Tls>>,
    guard: HttpGuard,
    mut shutdown: Shutdown,
    what: &'static str,
) where
    S: HttpService,
{
    // Refused connections answered at once; beyond that many, they are closed unanswered
    // so a flood of refused connections cannot pile up tasks.
    let answering = Arc::new(Semaphore::new(MAX_REFUSALS_ANSWERING));
    while let Some((stream, peer)) = shutdown.accept(&listener, what).await {
        let cap = match &guard.slots {
            None => None,
            Some(slots) => match slots.clone().try_acquire_owned() {
                Ok(p) => Some(Arc::new(p)),
                Err(_) => {
                    guard.gate.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%peer, listener = what, "connection refused: [http] max_connections reached");
                    refuse(
                        &answering,
                        stream,
                        peer,
                        tls.as_ref(),
                        &shutdown,
                        Refusal::Full,
                    );
                    continue;
                }
            },
        };
        let permit = match guard.gate.admit(peer.ip(), std::time::Instant::now()) {
            Ok(p) => p,
            Err(refused) => {
                tracing::warn!(%peer, listener = what, reason = %refused, "connection refused by [limits]");
                if tls.is_none() {
                    refuse(
                        &answering,
                        stream,
                        peer,
                        None,
                        &shutdown,
                        Refusal::Gate(refused),
                    );
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let tls = tls.clone();
        let router = router.clone();
        let mut shutdown = shutdown.clone();
        let header_timeout = guard.header_timeout;
        let body_deadline = guard.body_deadline;
        let metrics = guard.metrics.clone();
        let slot = ConnSlot {
            _permit: Arc::new(permit),
            _cap: cap,
        };
        tokio::spawn(async move {
            match tls {
                Some(tls) => {
                    let Some((stream, tls_peer)) =
                        tls.accept(Kind::Http, stream, peer, &mut shutdown).await
                    else {
                        return;
                    };
                    let conn = Admitted {
                        peer,
                        tls_peer: Some(tls_peer),
                        slot,
                        header_timeout,
                        body_deadline,
                    };
                    let stream =
                        Counted::new(stream, metrics.as_ref(), Transport::Https, Protocol::Http);
                    serve_connection(stream, router, conn, shutdown, what).await;
                }
                None => {
                    let conn = Admitted {
                        peer,
                        tls_peer: None,
                        slot,
                        header_timeout,
                        body_deadline,
                    };
                    let stream =
                        Counted::new(stream, metrics.as_ref(), Transport::Http, Protocol::Http);
                    serve_connection(stream, router, conn, shutdown, what).await
                }
            }
        });
    }
}

/// Most refused plain-HTTP connections being answered 503 at once (per listener).
const MAX_REFUSALS_ANSWERING: usize = 64;

/// Why a connection is refused before any request is read.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    /// The listener's [`ConnectionGate`] said no (per-address cap, connection rate).
    Gate(ConnRefused),
    /// `[http] max_connections` connections are open.
    Full,
}

impl Refusal {
    /// The 503's `detail`.
    fn detail(self) -> &'static str {
        match self {
            Refusal::Gate(ConnRefused::PerIp(_)) => {
                "this address already holds the most connections allowed per address ([limits] max_connections_per_ip)"
            }
            Refusal::Gate(ConnRefused::Rate) => {
                "new connections arrive faster than allowed ([limits] connection_rate)"
            }
            Refusal::Full => {
                "the server holds the most connections it accepts ([http] max_connections); retry shortly"
            }
        }
    }
}

/// Answer a refused connection with a 503 in its own task, at most
/// [`MAX_REFUSALS_ANSWERING`] at a time per listener (beyond that it is closed unanswered,
/// so a flood of refused connections cannot pile up tasks). Over TLS the handshake comes
/// first, bounded like the answer; a client that negotiated h2 is closed instead (a bare
/// HTTP/1.1 answer would not parse).
fn refuse(
    answering: &Arc<Semaphore>,
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<&Arc<Tls>>,
    shutdown: &Shutdown,
    why: Refusal,
) {
    let Ok(slot) = answering.clone().try_acquire_owned() else {
        return;
    };
    let tls = tls.cloned();
    let mut shutdown = shutdown.clone();
    tokio::spawn(async move {
        match tls {
            None => refuse_http(stream, why).await,
            Some(tls) => {
                let handshake = tokio::time::timeout(
                    REFUSAL_TIME,
                    tls.accept(Kind::Http, stream, peer, &mut shutdown),
                );
                if let Ok(Some((stream, _))) = handshake.await {
                    if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
                        refuse_http(stream, why).await;
                    }
                }
            }
        }
        drop(slot);
    });
}

/// How long answering one refused connection may take.
const REFUSAL_TIME: Duration = Duration::from_secs(1);

/// Write a bare `503 Service Unavailable` (problem+json, `Retry-After: 1`) and close.
/// Bounded in time: a peer that does not read gets the close anyway.
async fn refuse_http<IO>(mut stream: IO, why: Refusal)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let detail = why.detail();
    let body = format!(
        "{{\"type\":\"about:blank\",\"title\":\"Service Unavailable\",\"status\":503,\"detail\":\"{detail}\"}}"
    );
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\nretry-after: 1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(REFUSAL_TIME, async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await?;
        // Read what the client sent before closing: closing with unread bytes would make
        // the kernel reset the connection, and the client might lose the 503.
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// What [`serve_http`] serves: an [`axum::Router`], or the HTTP front-end
/// ([`crate::http::App`]), cloned and called once per request.
pub trait HttpService:
    tower::Service<
        axum::extract::Request,
        Response = axum::response::Response,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + Sync
    + 'static
{
    /// Give the handlers of `request` (served by this clone) the client's address: by
    /// default as the [`ConnectInfo`] request extension, which axum's extractor reads.
    fn connect_info(&mut self, request: &mut axum::extract::Request, peer: SocketAddr) {
        request.extensions_mut().insert(ConnectInfo(peer));
    }
}

impl HttpService for axum::Router {}

/// What the accept loop knows of an admitted connection, handed to every request in it.
struct Admitted {
    /// The client's address (`ConnectInfo`).
    peer: SocketAddr,
    /// On TLS listeners: what the handshake established.
    tls_peer: Option<TlsPeer>,
    /// Its place under `[limits]`.
    slot: ConnSlot,
    /// `http.header_timeout_secs`.
    header_timeout: Duration,
    /// The rule each request body must keep to.
    body_deadline: TransferDeadline,
}

/// Serve HTTP (1 or 2, with upgrades) on one admitted connection until it ends or
/// shutdown lets its requests finish.
async fn serve_connection<IO, S>(
    stream: IO,
    router: S,
    conn: Admitted,
    mut shutdown: Shutdown,
    what: &'static str,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: HttpService,
{
    let Admitted {
        peer,
        tls_peer,
        slot,
        header_timeout,
        body_deadline,
    } = conn;
    let service =
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            // Every body must keep arriving (`[http] body_timeout_secs`); see
            // `crate::limits::deadline`.
            let mut request = request.map(|body| {
                axum::body::Body::new(crate::limits::deadline::Deadline::new(body, body_deadline))
            });
            let extensions = request.extensions_mut();
            // Only a request hyper can upgrade can take the connection's place into an MQTT
            // session; any other leaves it with the connection, and costs no extension
            // (a boxed value, hashed in and dropped) on every request.
            if extensions.get::<hyper::upgrade::OnUpgrade>().is_some() {
                extensions.insert(slot.clone());
            }
            if let Some(tls_peer) = &tls_peer {
                if let Some(id) = &tls_peer.identity {
                    extensions.insert(TlsIdentity(id.clone()));
                }
                extensions.insert(tls_peer.clone());
            }
            let mut router = router.clone();
            router.connect_info(&mut request, peer);
            async move {
                Ok::<_, Infallible>(
                    tower::ServiceExt::oneshot(router, request)
                        .await
                        .unwrap_or_else(|never| match never {}),
                )
            }
        });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // With a timer, hyper enforces the HTTP/1 header read timeout: a client cannot hold
    // the connection by trickling header bytes (slowloris).
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    builder.http2().timer(TokioTimer::new());
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.recv() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, listener = what, "connection ended with an error");
    }
}
