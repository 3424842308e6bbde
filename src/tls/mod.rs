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

mod serve;
pub use serve::{serve_http, ConnSlot, HttpGuard, HttpService};

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
