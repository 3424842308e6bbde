//! The command line: the original Ponte's flags plus ponte's own, layered over the config file.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError};

/// ponte — one store of things over HTTP, CoAP and MQTT.
#[derive(Debug, Parser)]
#[command(name = "ponte", version, about)]
pub struct Cli {
    /// HTTP port (0 picks a free one).
    #[arg(short = 'p', long = "http-port")]
    pub http_port: Option<u16>,
    /// CoAP UDP port (0 picks a free one).
    #[arg(short = 'a', long = "coap-port")]
    pub coap_port: Option<u16>,
    /// MQTT TCP port (0 picks a free one).
    #[arg(short = 'm', long = "mqtt-port")]
    pub mqtt_port: Option<u16>,
    /// Address every listener binds to.
    #[arg(long)]
    pub host: Option<IpAddr>,
    /// Address the HTTP listener binds to.
    #[arg(long = "http-host")]
    pub http_host: Option<IpAddr>,
    /// Address the CoAP socket binds to.
    #[arg(long = "coap-host")]
    pub coap_host: Option<IpAddr>,
    /// Address the MQTT listener binds to.
    #[arg(long = "mqtt-host")]
    pub mqtt_host: Option<IpAddr>,
    /// The sled database directory.
    #[arg(short = 'd', long = "db")]
    pub db: Option<PathBuf>,
    /// Keep nothing on disk.
    #[arg(long)]
    pub memory: bool,
    /// TOML configuration file; flags win over it.
    #[arg(short = 'c', long = "config")]
    pub config: Option<PathBuf>,
    /// TLS server certificate chain (PEM); with --key, turns on MQTT over TLS (and HTTPS /
    /// WSS when their ports are set).
    #[arg(long = "cert")]
    pub cert: Option<PathBuf>,
    /// Private key of --cert (PEM).
    #[arg(long = "key")]
    pub key: Option<PathBuf>,
    /// CA certificates (PEM) that TLS client certificates are verified against.
    #[arg(long = "cafile")]
    pub cafile: Option<PathBuf>,
    /// MQTT over TLS port (default 8883; 0 picks a free one).
    #[arg(long = "mqtts-port")]
    pub mqtts_port: Option<u16>,
    /// HTTPS port (also WSS at /mqtt); off unless set.
    #[arg(long = "https-port")]
    pub https_port: Option<u16>,
    /// Log at debug level.
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Log at trace level.
    #[arg(long = "very-verbose")]
    pub very_verbose: bool,
    /// mosquitto-format password file (`user:hash`); turns anonymous access off unless
    /// `--allow-anonymous true`.
    #[arg(long = "password-file")]
    pub password_file: Option<PathBuf>,
    /// mosquitto-format ACL file; what it does not grant is denied.
    #[arg(long = "acl-file")]
    pub acl_file: Option<PathBuf>,
    /// PSK file (`identity:hexkey` lines) for CoAP over DTLS.
    #[arg(long = "psk-file")]
    pub psk_file: Option<PathBuf>,
    /// Serve clients without credentials (default: true without a password file, false with).
    #[arg(long = "allow-anonymous", value_name = "true|false")]
    pub allow_anonymous: Option<bool>,
    /// Join a cluster of ponte nodes over these NATS servers (comma-separated URLs).
    #[arg(long = "cluster", value_name = "URL[,URL...]", value_delimiter = ',')]
    pub cluster: Vec<String>,
    /// This node's name in the cluster (default: the host name); must be unique.
    #[arg(long = "node", value_name = "NAME")]
    pub node: Option<String>,
    /// A tool instead of the gateway.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Tools run instead of the gateway.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Add, change or delete a user in a password file (argon2id), like `mosquitto_passwd`.
    Passwd(PasswdArgs),
}

/// `ponte passwd FILE USER`.
#[derive(Debug, clap::Args)]
pub struct PasswdArgs {
    /// The password file (created if it does not exist).
    pub file: PathBuf,
    /// The username.
    pub user: String,
    /// The password, for scripts; without it ponte asks twice on the terminal.
    #[arg(long, conflicts_with = "delete")]
    pub password: Option<String>,
    /// Delete the user instead.
    #[arg(short = 'D', long = "delete")]
    pub delete: bool,
    /// Start a new file, replacing an existing one.
    #[arg(short = 'c', long = "create", conflicts_with = "delete")]
    pub create: bool,
}

impl PasswdArgs {
    /// Do it; the error is the message to print.
    pub fn run(&self) -> Result<String, String> {
        use crate::auth::password::{hash_password, PasswordFile};
        let mut file = if self.create || (!self.delete && !self.file.exists()) {
            PasswordFile::default()
        } else {
            PasswordFile::load(&self.file).map_err(|e| e.to_string())?
        };
        if self.delete {
            if !file.remove(&self.user) {
                return Err(format!(
                    "user {:?} is not in {}",
                    self.user,
                    self.file.display()
                ));
            }
            file.save(&self.file).map_err(|e| e.to_string())?;
            return Ok(format!("deleted {}", self.user));
        }
        let password = match &self.password {
            Some(p) => p.clone(),
            None => {
                let first = rpassword::prompt_password("Password: ")
                    .map_err(|e| format!("cannot read the password: {e}"))?;
                let again = rpassword::prompt_password("Reenter password: ")
                    .map_err(|e| format!("cannot read the password: {e}"))?;
                if first != again {
                    return Err("passwords do not match".into());
                }
                first
            }
        };
        if password.is_empty() {
            return Err("empty password".into());
        }
        let hash = hash_password(&password)?;
        file.set(&self.user, hash)?;
        file.save(&self.file).map_err(|e| e.to_string())?;
        Ok(format!("set password for {}", self.user))
    }
}

impl Cli {
    /// The configuration: defaults, then the file, then the flags.
    pub fn config(&self) -> Result<Config, ConfigError> {
        let mut c = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(h) = self.host {
            c.host = h;
        }
        if let Some(p) = self.http_port {
            c.http.port = p;
        }
        if let Some(p) = self.coap_port {
            c.coap.port = p;
        }
        if let Some(p) = self.mqtt_port {
            c.mqtt.port = p;
        }
        if self.http_host.is_some() {
            c.http.host = self.http_host;
        }
        if self.coap_host.is_some() {
            c.coap.host = self.coap_host;
        }
        if self.mqtt_host.is_some() {
            c.mqtt.host = self.mqtt_host;
        }
        if let Some(db) = &self.db {
            c.store.db = db.clone();
        }
        if self.memory {
            c.store.memory = true;
        }
        if self.password_file.is_some() {
            c.auth.password_file = self.password_file.clone();
        }
        if self.acl_file.is_some() {
            c.auth.acl_file = self.acl_file.clone();
        }
        if self.psk_file.is_some() {
            c.auth.psk_file = self.psk_file.clone();
        }
        if self.allow_anonymous.is_some() {
            c.auth.allow_anonymous = self.allow_anonymous;
        }
        if self.cert.is_some() {
            c.tls.cert_file = self.cert.clone();
        }
        if self.key.is_some() {
            c.tls.key_file = self.key.clone();
        }
        if self.cafile.is_some() {
            c.tls.client_ca_file = self.cafile.clone();
        }
        if let Some(p) = self.mqtts_port {
            c.mqtt.tls_port = p;
        }
        if self.https_port.is_some() {
            c.http.tls_port = self.https_port;
        }
        if !self.cluster.is_empty() {
            c.cluster.urls = self.cluster.clone();
        }
        if self.node.is_some() {
            c.cluster.node = self.node.clone();
        }
        Ok(c)
    }

    /// The tracing filter these flags ask for (overridden by `RUST_LOG`).
    pub fn log_filter(&self) -> &'static str {
        if self.very_verbose {
            "trace"
        } else if self.verbose {
            "debug"
        } else {
            "info"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml");
        std::fs::write(&file, "[http]\nport = 1\n[mqtt]\nport = 2\n").unwrap();
        let cli = Cli::parse_from([
            "ponte",
            "-c",
            file.to_str().unwrap(),
            "-p",
            "8080",
            "--memory",
        ]);
        let c = cli.config().unwrap();
        assert_eq!(c.http.port, 8080);
        assert_eq!(c.mqtt.port, 2);
        assert!(c.store.memory);
    }

    #[test]
    fn cluster_flags_set_the_cluster_section() {
        let cli = Cli::parse_from([
            "ponte",
            "--cluster",
            "nats://127.0.0.1:4222,nats://127.0.0.1:4223",
            "--node",
            "a",
        ]);
        let c = cli.config().unwrap();
        assert_eq!(
            c.cluster.urls,
            ["nats://127.0.0.1:4222", "nats://127.0.0.1:4223"]
        );
        assert_eq!(c.cluster.node.as_deref(), Some("a"));
        assert!(!Cli::parse_from(["ponte"])
            .config()
            .unwrap()
            .cluster
            .enabled());
    }

    #[test]
    fn tls_flags_set_the_tls_section_and_ports() {
        let cli = Cli::parse_from([
            "ponte",
            "--cert",
            "s.pem",
            "--key",
            "k.pem",
            "--cafile",
            "ca.pem",
            "--mqtts-port",
            "9883",
            "--https-port",
            "9443",
        ]);
        let c = cli.config().unwrap();
        assert_eq!(c.tls.cert_file, Some(PathBuf::from("s.pem")));
        assert_eq!(c.tls.key_file, Some(PathBuf::from("k.pem")));
        assert_eq!(c.tls.client_ca_file, Some(PathBuf::from("ca.pem")));
        assert_eq!(c.mqtt.tls_port, 9883);
        assert_eq!(c.http.tls_port, Some(9443));
    }
}
