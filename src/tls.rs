//! TLS (issue 5) for the TCP front-ends: MQTT over TLS (`mqtts`), HTTPS (the HTTP router,
//! `/mqtt` included, so also WSS) and MQTT over secure WebSocket on a port of its own.
//!
//! One [`Tls`] holds the rustls server configurations built from `[tls]`'s PEM files; every
//! new connection takes the configuration in force when it is accepted, and
//! [`Tls::reload`] (SIGHUP, through [`crate::reload`]) swaps in new ones built from the
//! files as they are now — a bad file is reported and the old configuration stays.
//!
//! The handshake runs in the connection's own task, never in the accept loop, under
//! `tls.handshake_timeout_secs` and the shutdown signal. With `tls.client_ca_file`, client
//! certificates are verified against that CA (required or optional); the subject CN of a
//! verified certificate is the connection's identity ([`TlsPeer`]): the MQTT driver may use
//! it as the username, and HTTP handlers find it as a [`TlsIdentity`] request extension.
//!
//! The crypto provider is *ring*, named explicitly so no process-wide default is needed.

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use parking_lot::RwLock;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::rustls;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;
use crate::limits::{ConnPermit, ConnRefused, ConnectionGate, TransferDeadline};
use crate::metrics::io::Counted;
use crate::metrics::{Protocol, Transport};
use crate::reload::Reload;
use crate::shutdown::Shutdown;

/// Why the TLS files could not be used. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Only one of `cert_file` and `key_file` is set.
    #[error("tls.{set} is set but tls.{missing} is not; TLS needs both a certificate and its key")]
    Incomplete {
        /// The key that is set.
        set: &'static str,
        /// The key that is missing.
        missing: &'static str,
    },
    /// A listener that needs TLS is configured without certificates.
    #[error("{key} is set, but [tls] has no cert_file and key_file to serve it with")]
    NotConfigured {
        /// The port key that asks for TLS.
        key: &'static str,
    },
    /// An option that needs client certificates is on without a CA to verify them.
    #[error("tls.{key} needs tls.client_ca_file: client certificates are verified against it")]
    NeedsClientCa {
        /// The option.
        key: &'static str,
    },
    /// A file could not be read.
    #[error("cannot read the {what} {path}: {source}")]
    Read {
        /// Which file ("certificate file", "key file", "client CA file").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file is not the PEM it should be.
    #[error("the {what} {path} is not usable PEM: {problem}")]
    Pem {
        /// Which file.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong (no such block, bad base64, unterminated section).
        problem: String,
    },
    /// Certificate and key do not go together, or rustls refuses them.
    #[error("the certificate {cert} and the key {key} cannot be used together: {problem}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        problem: String,
    },
    /// The client CA file holds certificates that cannot be trust anchors.
    #[error("the client CA file {path} cannot verify client certificates: {problem}")]
    ClientCa {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

/// What a TLS connection established about its peer, for the MQTT driver and the HTTP
/// handlers (a request extension on every request of a TLS connection).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsPeer {
    /// Subject CN of the client certificate, present only when one was offered and verified
    /// against `tls.client_ca_file`.
    pub identity: Option<String>,
}

/// Request extension on HTTPS requests whose client presented a verified certificate: its
/// subject CN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsIdentity(pub String);

/// The rustls configurations in force; swapped whole on reload.
struct Acceptors {
    /// For MQTT over TLS (no ALPN).
    mqtt: TlsAcceptor,
    /// For HTTPS and WSS (ALPN h2 and http/1.1).
    http: TlsAcceptor,
}

/// Which listener a handshake is for (decides ALPN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// MQTT over TLS.
    Mqtt,
    /// HTTPS and MQTT over secure WebSocket.
    Http,
}

/// The TLS state shared by every TLS listener.
pub struct Tls {
    /// The file names and options, re-read from on every reload.
    config: TlsConfig,
    /// The configurations new connections use.
    current: RwLock<Arc<Acceptors>>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").field("config", &self.config).finish()
    }
}

impl Tls {
    /// Check `[tls]` and load its files: `Ok(None)` when TLS is not configured.
    pub fn load(config: &TlsConfig) -> Result<Option<Arc<Tls>>, TlsError> {
        match (&config.cert_file, &config.key_file) {
            (None, None) => {
                // Options that only mean something with TLS: set without it, they are a
                // mistake the operator should hear about, not a silent no-op.
                for (set, key) in [
                    (
                        config.use_identity_as_username,
                        "tls.use_identity_as_username",
                    ),
                    (config.require_client_cert, "tls.require_client_cert"),
                    (config.client_ca_file.is_some(), "tls.client_ca_file"),
                ] {
                    if set {
                        return Err(TlsError::NotConfigured { key });
                    }
                }
                return Ok(None);
            }
            (Some(_), None) => {
                return Err(TlsError::Incomplete {
                    set: "cert_file",
                    missing: "key_file",
                })
            }
            (None, Some(_)) => {
                return Err(TlsError::Incomplete {
                    set: "key_file",
                    missing: "cert_file",
                })
            }
            (Some(_), Some(_)) => {}
        }
        if config.client_ca_file.is_none() {
            if config.use_identity_as_username {
                return Err(TlsError::NeedsClientCa {
                    key: "use_identity_as_username",
                });
            }
            if config.require_client_cert {
                return Err(TlsError::NeedsClientCa {
                    key: "require_client_cert",
                });
            }
        }
        let acceptors = build(config)?;
        Ok(Some(Arc::new(Tls {
            config: config.clone(),
            current: RwLock::new(Arc::new(acceptors)),
        })))
    }

    /// Re-read the files; on success new connections use them, on error nothing changes.
    pub fn reload(&self) -> Result<(), TlsError> {
        let acceptors = build(&self.config)?;
        *self.current.write() = Arc::new(acceptors);
        Ok(())
    }

    /// Whether the client certificate's CN replaces the MQTT username.
    pub fn use_identity_as_username(&self) -> bool {
        self.config.use_identity_as_username
    }

    /// Run the server side of a handshake on `stream` under the handshake timeout, giving
    /// up on shutdown. `None` (logged at debug level) when it failed, timed out or was
    /// interrupted; the socket is then dropped, i.e. closed.
    pub async fn accept(
        &self,
        kind: Kind,
        stream: TcpStream,
        peer: SocketAddr,
        shutdown: &mut Shutdown,
    ) -> Option<(TlsStream<TcpStream>, TlsPeer)> {
        let acceptor = {
            let current = self.current.read();
            match kind {
                Kind::Mqtt => current.mqtt.clone(),
                Kind::Http => current.http.clone(),
            }
        };
        let limit = self.config.handshake_timeout();
        let handshake = tokio::select! {
            r = tokio::time::timeout(limit, acceptor.accept(stream)) => r,
            _ = shutdown.recv() => return None,
        };
        let stream = match handshake {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed; connection closed");
                return None;
            }
            Err(_) => {
                tracing::debug!(%peer, timeout = ?limit, "TLS handshake timed out; connection closed");
                return None;
            }
        };
        let verified = self.config.client_ca_file.is_some();
        let identity = if verified {
            stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|leaf| common_name(leaf, peer))
        } else {
            None
        };
        Some((stream, TlsPeer { identity }))
    }
}

impl Reload for Tls {
    fn name(&self) -> &'static str {
        "TLS certificates"
    }

    fn reload(&self) -> Result<(), String> {
        Tls::reload(self).map_err(|e| e.to_string())
    }
}

/// The subject CN of a (verified) certificate; `None` when it has none or it is not text.
fn common_name(der: &CertificateDer<'_>, peer: SocketAddr) -> Option<String> {
    let (_, cert) = match x509_parser::parse_x509_certificate(der.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "client certificate verified but not parsed; no identity");
            return None;
        }
    };
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);
    if cn.is_none() {
        tracing::debug!(%peer, "client certificate has no UTF-8 subject CN; no identity");
    }
    cn
}

/// Read a file for `what`, naming it on error.
fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

/// Every certificate in a PEM file; at least one.
fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(what, path)?;
    let pem = |problem: String| TlsError::Pem {
        what,
        path: path.to_owned(),
        problem,
    };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem(
            "no certificate in it (expected a -----BEGIN CERTIFICATE----- block)".into(),
        ));
    }
    Ok(certs)
}

/// Build both acceptors from the files as they are now.
fn build(config: &TlsConfig) -> Result<Acceptors, TlsError> {
    let (Some(cert_path), Some(key_path)) = (&config.cert_file, &config.key_file) else {
        return Err(TlsError::Incomplete {
            set: if config.cert_file.is_some() {
                "cert_file"
            } else {
                "key_file"
            },
            missing: if config.cert_file.is_some() {
                "key_file"
            } else {
                "cert_file"
            },
        });
    };
    let chain = certificates("certificate file", cert_path)?;
    let key_bytes = read("key file", key_path)?;
    let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| TlsError::Pem {
        what: "key file",
        path: key_path.clone(),
        problem: match e {
            rustls_pki_types::pem::Error::NoItemsFound => "no private key in it (expected a PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block)".into(),
            e => e.to_string(),
        },
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mismatch = |e: rustls::Error| TlsError::Mismatch {
        cert: cert_path.clone(),
        key: key_path.clone(),
        problem: match e {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                "the key does not belong to the certificate (their public keys differ)".into()
            }
            e => e.to_string(),
        },
    };
    let certified =
        Arc::new(rustls::sign::CertifiedKey::from_der(chain, key, &provider).map_err(mismatch)?);
    let verifier = match &config.client_ca_file {
        None => None,
        Some(ca_path) => {
            let ca_error = |problem: String| TlsError::ClientCa {
                path: ca_path.clone(),
                problem,
            };
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates("client CA file", ca_path)? {
                roots.add(cert).map_err(|e| ca_error(e.to_string()))?;
            }
            let builder = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            );
            let builder = if config.require_client_cert {
                builder
            } else {
                builder.allow_unauthenticated()
            };
            Some(builder.build().map_err(|e| ca_error(e.to_string()))?)
        }
    };
    let server = |alpn: &[&[u8]]| -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(mismatch)?;
        let builder = match &verifier {
            Some(v) => builder.with_client_cert_verifier(v.clone()),
            None => builder.with_no_client_auth(),
        };
        let mut server = builder.with_cert_resolver(Arc::new(Single(certified.clone())));
        server.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(server))
    };
    Ok(Acceptors {
        mqtt: TlsAcceptor::from(server(&[])?),
        http: TlsAcceptor::from(server(&[b"h2", b"http/1.1"])?),
    })
}

/// One certificate for every client, whatever its SNI.
#[derive(Debug)]
struct Single(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for Single {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

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
/// and every request carries a clone in its extensions, so a request upgraded to MQTT over
/// WebSocket takes one into its MQTT session and the place stays taken until that session
/// ends — not only until hyper hands the upgraded socket over.
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
pub async fn serve_http(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<Tls>>,
    guard: HttpGuard,
    mut shutdown: Shutdown,
    what: &'static str,
) {
    // Refused connections answered at once; beyond that many, they are closed unanswered
    // so a flood of refused connections cannot pile up tasks.
    let answering = Arc::new(Semaphore::new(MAX_REFUSALS_ANSWERING));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.recv() => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, listener = what, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
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
async fn serve_connection<IO>(
    stream: IO,
    router: Router,
    conn: Admitted,
    mut shutdown: Shutdown,
    what: &'static str,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
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
            let mut request =
                request.map(|body| crate::limits::deadline::Deadline::new(body, body_deadline));
            let extensions = request.extensions_mut();
            extensions.insert(ConnectInfo(peer));
            extensions.insert(slot.clone());
            if let Some(tls_peer) = &tls_peer {
                if let Some(id) = &tls_peer.identity {
                    extensions.insert(TlsIdentity(id.clone()));
                }
                extensions.insert(tls_peer.clone());
            }
            let router = router.clone();
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
