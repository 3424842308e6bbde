//! `[cluster]`: how this node joins other ponte nodes over NATS JetStream (issue 11).
//! Without `urls` (the default) ponte is a single node and none of this is used.

use std::path::PathBuf;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The `[cluster]` section (`--cluster URL[,URL…]`, `--node NAME`).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// NATS servers to connect to (`nats://host:4222`, `tls://…`); empty: single node.
    pub urls: Vec<String>,
    /// This node's name, unique in the cluster; `None`: the host name. Letters, digits,
    /// `-` and `_` (it names a KV key and marks the node's messages in the log).
    pub node: Option<String>,
    /// Prefix of every subject, stream and bucket ponte creates, so two independent ponte
    /// clusters can share one NATS. Letters, digits, `-` and `_`.
    pub prefix: String,
    /// Replicas of the streams and buckets ponte creates (1; 3 on a 3-server NATS
    /// cluster): an acknowledged write is stored on this many servers.
    pub replicas: usize,
    /// How long the message log keeps messages, in seconds (0: until `retention_bytes`).
    pub retention_secs: u64,
    /// Most bytes the message log keeps; the oldest go first (0: no byte limit).
    pub retention_bytes: u64,
    /// A NATS credentials file (JWT + NKey seed, `.creds`).
    pub credentials_file: Option<PathBuf>,
    /// A NATS authentication token.
    pub token: Option<String>,
    /// A NATS user name (with `password`).
    pub user: Option<String>,
    /// The NATS user's password.
    pub password: Option<String>,
    /// CA certificates (PEM) the NATS servers' certificates are verified against; setting
    /// it requires TLS.
    pub ca_file: Option<PathBuf>,
    /// A client certificate (PEM) for NATS servers that verify clients (with `key_file`).
    pub cert_file: Option<PathBuf>,
    /// The private key of `cert_file` (PEM).
    pub key_file: Option<PathBuf>,
    /// Seconds a backbone request (a publish acknowledgement, a KV write) may take before
    /// the write is refused as unavailable.
    pub timeout_secs: u64,
    /// Seconds the start waits for the node to be ready before it serves anyway, not
    /// ready (reads from an empty mirror, writes refused), retrying in the background.
    pub start_wait_secs: u64,
    /// Seconds between sweeps of the persistent-sessions bucket by one elected node: it
    /// releases the sessions of nodes that died with their clients connected (so they
    /// expire) and deletes expired sessions whose releasing node died before their expiry.
    /// Each sweep reads the whole bucket (minimum 1).
    pub session_sweep_secs: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            urls: Vec::new(),
            node: None,
            prefix: "ponte".into(),
            replicas: 1,
            retention_secs: 24 * 60 * 60,
            retention_bytes: 1 << 30,
            credentials_file: None,
            token: None,
            user: None,
            password: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            timeout_secs: 5,
            start_wait_secs: 15,
            session_sweep_secs: 30,
        }
    }
}

/// Why `[cluster]` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterConfigError {
    /// The prefix names streams and buckets, which allow only `[A-Za-z0-9_-]`.
    #[error("[cluster] prefix {0:?} must be 1 to 32 letters, digits, '-' or '_' (it names NATS streams and buckets)")]
    Prefix(String),
    /// The node name is a KV key and a header value.
    #[error("[cluster] node {0:?} must be 1 to 64 letters, digits, '-' or '_'")]
    Node(String),
    /// JetStream stores at most 5 replicas.
    #[error("[cluster] replicas = {0}: JetStream allows 1 to 5")]
    Replicas(usize),
    /// A half-given pair.
    #[error("[cluster] {0}")]
    Incomplete(&'static str),
}

/// Whether `s` is 1..=`max` characters of `[A-Za-z0-9_-]`.
fn is_name(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl ClusterConfig {
    /// Whether cluster mode is on.
    pub fn enabled(&self) -> bool {
        !self.urls.is_empty()
    }

    /// This node's name: `node`, or the host name with characters outside
    /// `[A-Za-z0-9_-]` turned into `-`.
    pub fn node_name(&self) -> String {
        if let Some(n) = &self.node {
            return n.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "ponte".into());
        let name: String = host
            .chars()
            .take(64)
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        name
    }

    /// Check what can be checked without a server.
    pub fn validate(&self) -> Result<(), ClusterConfigError> {
        if !is_name(&self.prefix, 32) {
            return Err(ClusterConfigError::Prefix(self.prefix.clone()));
        }
        let node = self.node_name();
        if !is_name(&node, 64) {
            return Err(ClusterConfigError::Node(node));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(ClusterConfigError::Replicas(self.replicas));
        }
        if self.user.is_some() != self.password.is_some() {
            return Err(ClusterConfigError::Incomplete(
                "user and password go together",
            ));
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(ClusterConfigError::Incomplete(
                "cert_file and key_file go together",
            ));
        }
        Ok(())
    }

    /// The request timeout as a duration (at least one second).
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs.max(1))
    }

    /// [`ClusterConfig::session_sweep_secs`] as a duration (at least 1 s).
    pub fn session_sweep(&self) -> Duration {
        Duration::from_secs(self.session_sweep_secs.max(1))
    }

    /// The message log stream's name.
    pub fn log_stream(&self) -> String {
        format!("{}_LOG", self.prefix.to_ascii_uppercase())
    }

    /// The retained values' KV bucket.
    pub fn retained_bucket(&self) -> String {
        format!("{}_retained", self.prefix)
    }

    /// The node names' KV bucket.
    pub fn nodes_bucket(&self) -> String {
        format!("{}_nodes", self.prefix)
    }

    /// The persistent MQTT sessions' KV bucket.
    pub fn sessions_bucket(&self) -> String {
        format!("{}_sessions", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        let mut c = ClusterConfig {
            urls: vec!["nats://127.0.0.1:4222".into()],
            node: Some("a".into()),
            ..Default::default()
        };
        assert!(c.validate().is_ok());
        assert_eq!(c.log_stream(), "PONTE_LOG");
        c.prefix = "a.b".into();
        assert!(matches!(c.validate(), Err(ClusterConfigError::Prefix(_))));
        c.prefix = "ok".into();
        c.node = Some("x y".into());
        assert!(matches!(c.validate(), Err(ClusterConfigError::Node(_))));
        c.node = Some("n".into());
        c.replicas = 7;
        assert!(matches!(c.validate(), Err(ClusterConfigError::Replicas(7))));
        c.replicas = 3;
        c.user = Some("u".into());
        assert!(c.validate().is_err());
        c.node = None;
        c.user = None;
        assert!(is_name(&c.node_name(), 64), "{}", c.node_name());
    }
}
