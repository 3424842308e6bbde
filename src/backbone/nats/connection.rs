//! Connecting to NATS, creating what ponte needs there (idempotently), and owning the
//! node name.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{kv, stream};
use tokio::sync::mpsc;

use super::Inner;
use crate::backbone::config::{ClusterConfig, ClusterConfigError};

/// How long a node name stays claimed without a heartbeat (the nodes bucket's max age).
pub const NODE_TTL: Duration = Duration::from_secs(10);
/// How often a node renews its name.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a starting node watches a name that is already claimed for a heartbeat
/// before it concludes the claimant is dead (a `kill -9`ed predecessor) and takes over.
pub const CLAIM_WATCH: Duration = Duration::from_millis(3 * HEARTBEAT.as_millis() as u64);

/// Why the cluster backbone cannot start.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClusterError {
    /// `[cluster]` is not usable.
    #[error("{0}")]
    Config(#[from] ClusterConfigError),
    /// A file named in `[cluster]` (credentials, CA, certificate) is not usable.
    #[error("[cluster] {what} {path}: {why}")]
    File {
        /// Which key.
        what: &'static str,
        /// The file.
        path: String,
        /// What went wrong.
        why: String,
    },
    /// The NATS client refused its options.
    #[error("cannot connect to NATS {urls}: {why}")]
    Connect {
        /// The servers.
        urls: String,
        /// What the client said.
        why: String,
    },
    /// Another live node has this name.
    #[error("node name {0:?} is in use by another live ponte node of this cluster (its heartbeat is fresh); give this node another --node / [cluster] node")]
    NameInUse(String),
}

/// Connect (in the background while the servers are unreachable: the node keeps
/// retrying and is not ready until it is connected). Connection events go to `events`.
pub async fn connect(
    config: &ClusterConfig,
    events: mpsc::UnboundedSender<async_nats::Event>,
) -> Result<async_nats::Client, ClusterError> {
    let mut o = async_nats::ConnectOptions::new()
        .name(format!("ponte {}", config.node_name()))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(config.timeout())
        .request_timeout(Some(config.timeout()))
        // Quick to come back after a blip; never slower than 2 s.
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((attempts as u64 * 100).clamp(100, 2000))
        })
        .event_callback(move |ev| {
            let events = events.clone();
            async move {
                let _ = events.send(ev);
            }
        });
    if let Some(path) = &config.credentials_file {
        o = o
            .credentials_file(path)
            .await
            .map_err(|e| ClusterError::File {
                what: "credentials_file",
                path: path.display().to_string(),
                why: e.to_string(),
            })?;
    }
    if let Some(token) = &config.token {
        o = o.token(token.clone());
    }
    if let (Some(u), Some(p)) = (&config.user, &config.password) {
        o = o.user_and_password(u.clone(), p.clone());
    }
    for (what, path) in [
        ("ca_file", &config.ca_file),
        ("cert_file", &config.cert_file),
        ("key_file", &config.key_file),
    ] {
        if let Some(p) = path {
            if let Err(e) = std::fs::metadata(p) {
                return Err(ClusterError::File {
                    what,
                    path: p.display().to_string(),
                    why: e.to_string(),
                });
            }
        }
    }
    if let Some(ca) = &config.ca_file {
        o = o.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&config.cert_file, &config.key_file) {
        o = o.add_client_certificate(cert.clone(), key.clone());
    }
    let urls = config.urls.join(",");
    o.connect(config.urls.as_slice())
        .await
        .map_err(|e| ClusterError::Connect {
            urls,
            why: e.to_string(),
        })
}

/// What provisioning found or made, for the start-up line.
#[derive(Debug)]
pub struct Provisioned {
    /// The log stream's name.
    pub log: String,
    /// The retained bucket's name.
    pub retained: String,
    /// The node names' bucket.
    pub nodes: String,
    /// The persistent sessions' bucket.
    pub sessions: String,
    /// Retained values in the bucket.
    pub values: u64,
    /// The log's last sequence.
    pub last_sequence: u64,
}

/// Create (or bring to the configured settings) the message log, the retained bucket and
/// the node names' bucket. Idempotent: every node runs it at every (re)connection, so a
/// NATS that lost its state (a new server, a memory store) gets them back.
pub(crate) async fn provision(inner: &Inner) -> Result<Provisioned, String> {
    let c = &inner.config;
    let storage = stream::StorageType::File;
    let log_name = c.log_stream();
    let log = inner
        .js
        .create_or_update_stream(stream::Config {
            name: log_name.clone(),
            description: Some("ponte message log: every accepted write, in order".into()),
            // The three namespaces of topics (`mapping`): `<prefix>.ctl.<node>` stays
            // free for the nodes' session takeover requests (core NATS, not logged).
            subjects: ["m", "d", "h"]
                .iter()
                .map(|ns| format!("{}.{ns}.>", c.prefix))
                .collect(),
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::Old,
            max_age: Duration::from_secs(c.retention_secs),
            max_bytes: if c.retention_bytes == 0 {
                -1
            } else {
                c.retention_bytes.min(i64::MAX as u64) as i64
            },
            storage,
            num_replicas: c.replicas,
            allow_direct: true,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("stream {log_name}: {e}"))?;
    let bucket = c.retained_bucket();
    let kv = inner
        .js
        .create_or_update_key_value(kv::Config {
            bucket: bucket.clone(),
            description: "ponte retained values (the cluster's authority)".into(),
            history: 1,
            storage,
            num_replicas: c.replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("bucket {bucket}: {e}"))?;
    let sessions_name = c.sessions_bucket();
    let sessions = inner
        .js
        .create_or_update_key_value(kv::Config {
            bucket: sessions_name.clone(),
            description: "ponte persistent MQTT sessions (owner, subscriptions, place in the log)"
                .into(),
            history: 1,
            storage,
            num_replicas: c.replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("bucket {sessions_name}: {e}"))?;
    let nodes_name = c.nodes_bucket();
    let nodes = inner
        .js
        .create_or_update_key_value(kv::Config {
            bucket: nodes_name.clone(),
            description: "ponte node names (heartbeats)".into(),
            history: 1,
            max_age: NODE_TTL,
            storage: stream::StorageType::Memory,
            num_replicas: c.replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("bucket {nodes_name}: {e}"))?;
    drop(nodes);
    let values = kv
        .status()
        .await
        .map(|s| s.values())
        .map_err(|e| format!("bucket {bucket}: {e}"))?;
    let stream = inner
        .js
        .get_stream(&log_name)
        .await
        .map_err(|e| format!("stream {log_name}: {e}"))?;
    *inner.kv.write() = Some(kv);
    *inner.sessions.write() = Some(sessions);
    *inner.log.write() = Some(stream);
    inner.provisioned.store(true, Ordering::Release);
    Ok(Provisioned {
        log: log_name,
        retained: bucket,
        nodes: nodes_name,
        sessions: sessions_name,
        values,
        last_sequence: log.state.last_sequence,
    })
}

/// The nodes bucket.
async fn nodes(inner: &Inner) -> Result<kv::Store, String> {
    let name = inner.config.nodes_bucket();
    inner
        .js
        .get_key_value(&name)
        .await
        .map_err(|e| format!("bucket {name}: {e}"))
}

/// The value a node writes under its name: who it is, for operators reading the bucket,
/// and which run of it (`boot`, see [`Inner::boot`]) for the session sweep.
fn claim_value(inner: &Inner) -> bytes::Bytes {
    bytes::Bytes::from(format!(
        "{} pid {} boot {:016x} started {}",
        inner.node,
        std::process::id(),
        inner.boot,
        httpdate::fmt_http_date(std::time::SystemTime::now())
    ))
}

/// The boot a node's claim value names (`None`: not written by this version).
pub(crate) fn claimed_boot(value: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(value).ok()?;
    let mut words = text.split_whitespace();
    words.find(|w| *w == "boot")?;
    u64::from_str_radix(words.next()?, 16).ok()
}

/// Claim this node's name: create its key in the nodes bucket; if another node holds
/// it, watch for [`CLAIM_WATCH`]: a heartbeat means a live node has the name (fatal);
/// none means a dead one had it, and the name is taken over by compare-and-set. Returns
/// the revision to renew from.
pub(crate) async fn claim(inner: &Inner) -> Result<u64, Result<ClusterError, String>> {
    let kv = nodes(inner).await.map_err(Err)?;
    let key = inner.node.clone();
    match kv.create(&key, claim_value(inner)).await {
        Ok(rev) => return Ok(rev),
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
        Err(e) => return Err(Err(format!("claiming node name {key:?}: {e}"))),
    }
    let before = kv
        .entry(&key)
        .await
        .map_err(|e| Err(format!("reading node name {key:?}: {e}")))?;
    let Some(before) = before.filter(|e| e.operation == kv::Operation::Put) else {
        // Gone meanwhile: try again from the start next time round.
        return Err(Err(format!("node name {key:?} changed while claiming it")));
    };
    tracing::info!(node = %key, "node name already claimed; waiting to see whether its holder is alive");
    tokio::time::sleep(CLAIM_WATCH).await;
    let now = kv
        .entry(&key)
        .await
        .map_err(|e| Err(format!("reading node name {key:?}: {e}")))?;
    match now {
        Some(e) if e.revision != before.revision && e.operation == kv::Operation::Put => {
            Err(Ok(ClusterError::NameInUse(key)))
        }
        Some(e) => kv
            .update(&key, claim_value(inner), e.revision)
            .await
            .map_err(|err| match err.kind() {
                kv::UpdateErrorKind::WrongLastRevision => Ok(ClusterError::NameInUse(key.clone())),
                _ => Err(format!("taking over node name {key:?}: {err}")),
            }),
        None => kv
            .create(&key, claim_value(inner))
            .await
            .map_err(|e| Err(format!("claiming node name {key:?}: {e}"))),
    }
}

/// Renew the node name every [`HEARTBEAT`] while connected, by compare-and-set on the
/// last revision, until shutdown. If the name was taken meanwhile (this node was cut off
/// longer than [`NODE_TTL`] and another started with its name), say so loudly and stop
/// being ready: two nodes with one name would each skip the other's messages.
pub(crate) async fn heartbeat(inner: Arc<Inner>, mut rev: u64) {
    let mut closed = inner.closed.subscribe();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(HEARTBEAT) => {}
            _ = closed.wait_for(|c| *c) => break,
        }
        if !inner.connected() {
            continue;
        }
        let Ok(kv) = nodes(&inner).await else {
            continue;
        };
        match kv.update(&inner.node, claim_value(&inner), rev).await {
            Ok(r) => rev = r,
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                // Expired while we were away (NATS down longer than NODE_TTL)? Then
                // create it again; if someone else holds it, we lost the name.
                match kv.create(&inner.node, claim_value(&inner)).await {
                    Ok(r) => rev = r,
                    Err(_) => {
                        tracing::error!(node = %inner.node, "another ponte node now uses this node's name; this node stops taking writes");
                        inner.claimed.store(false, Ordering::Release);
                        inner.update_ready();
                        *inner.fatal.write() = Some(ClusterError::NameInUse(inner.node.clone()));
                        break;
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "node heartbeat failed; retrying"),
        }
    }
    // A graceful stop frees the name at once (a restart need not wait to see it is
    // dead), then lets what is in flight reach NATS and closes the connection.
    if inner.is_closed() && inner.connected() {
        if let Ok(kv) = nodes(&inner).await {
            let _ = kv.delete_expect_revision(&inner.node, Some(rev)).await;
        }
        let _ = inner.client.drain().await;
    }
}
