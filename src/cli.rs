//! The command line: the original Ponte's flags plus ponte's own, layered over the config file.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use serde::Deserialize;

use crate::config::{Config, ConfigError};

/// ponte — one store of things over HTTP, CoAP and MQTT.
#[derive(Debug, Parser)]
#[command(name = "ponte", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// HTTP port (default 3000; 0 picks a free one).
    #[arg(short = 'p', long = "http-port", value_name = "PORT")]
    pub http_port: Option<u16>,
    /// CoAP port, UDP and TCP (default 5683; 0 picks a free one).
    #[arg(short = 'a', long = "coap-port", value_name = "PORT")]
    pub coap_port: Option<u16>,
    /// MQTT port (default 1883; 0 picks a free one).
    #[arg(short = 'm', long = "mqtt-port", value_name = "PORT")]
    pub mqtt_port: Option<u16>,
    /// Address(es) or host name(s) every listener binds to (default 0.0.0.0); repeat the
    /// flag or separate with commas to listen on several (`--host 0.0.0.0 --host ::`).
    #[arg(long, value_name = "ADDR", value_delimiter = ',')]
    pub host: Vec<String>,
    /// Address(es) or host name(s) the HTTP listener binds to (default: --host).
    #[arg(long = "http-host", value_name = "ADDR", value_delimiter = ',')]
    pub http_host: Vec<String>,
    /// Address(es) or host name(s) the CoAP sockets bind to (default: --host).
    #[arg(long = "coap-host", value_name = "ADDR", value_delimiter = ',')]
    pub coap_host: Vec<String>,
    /// Address(es) or host name(s) the MQTT listeners bind to (default: --host).
    #[arg(long = "mqtt-host", value_name = "ADDR", value_delimiter = ',')]
    pub mqtt_host: Vec<String>,
    /// The sled database directory (default ./ponte-data).
    #[arg(short = 'd', long = "db", value_name = "DIR")]
    pub db: Option<PathBuf>,
    /// Keep nothing on disk (cannot go with --db).
    #[arg(long, conflicts_with = "db")]
    pub memory: bool,
    /// TOML configuration file (`ponte config` prints a complete one); the environment and
    /// the flags win over it.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// TLS server certificate chain (PEM); with --key, turns on MQTT over TLS (and HTTPS /
    /// WSS when their ports are set).
    #[arg(long = "cert", value_name = "PEM")]
    pub cert: Option<PathBuf>,
    /// Private key of --cert (PEM).
    #[arg(long = "key", value_name = "PEM")]
    pub key: Option<PathBuf>,
    /// CA certificates (PEM) that TLS client certificates are verified against.
    #[arg(long = "cafile", value_name = "PEM")]
    pub cafile: Option<PathBuf>,
    /// MQTT over TLS port (default 8883; needs --cert and --key; 0 picks a free one).
    #[arg(long = "mqtts-port", value_name = "PORT")]
    pub mqtts_port: Option<u16>,
    /// HTTPS port, also WSS at /mqtt (off unless set; needs --cert and --key).
    #[arg(long = "https-port", value_name = "PORT")]
    pub https_port: Option<u16>,
    /// Log ponte's own modules at debug level (dependencies stay at info).
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Log ponte's own modules at trace level.
    #[arg(long = "very-verbose")]
    pub very_verbose: bool,
    /// How log lines look: `human` (colours only on a terminal, and not with NO_COLOR) or
    /// `json` (one object per line). Logs go to standard error.
    #[arg(long = "log-format", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// mosquitto-format password file (`user:hash`); turns anonymous access off unless
    /// `--allow-anonymous true`.
    #[arg(long = "password-file", value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// mosquitto-format ACL file; what it does not grant is denied.
    #[arg(long = "acl-file", value_name = "FILE")]
    pub acl_file: Option<PathBuf>,
    /// PSK file (`identity:hexkey` lines) for CoAP over DTLS.
    #[arg(long = "psk-file", value_name = "FILE")]
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

/// What `--help` says after the flags.
const AFTER_HELP: &str = "\
Every config key can also be set by an environment variable PONTE_<SECTION>_<KEY>
(PONTE_HTTP_PORT=8080, PONTE_MQTT_MAX_INFLIGHT=64, PONTE_HOST=127.0.0.1); flags win over
the environment, which wins over the config file, which wins over the defaults.
`ponte config` prints every key with its meaning and current value.

Logs go to standard error; RUST_LOG overrides -v (RUST_LOG=ponte=debug,sled=info).
SIGHUP reloads the TLS, password, ACL, PSK and JWT key files; SIGINT/SIGTERM stop gracefully.

Examples:
  ponte --memory -p 8080                      # HTTP on 8080, CoAP 5683, MQTT 1883, nothing on disk
  ponte -d /var/lib/ponte --password-file passwd --acl-file acl --cert tls.pem --key tls.key
  PONTE_HTTP_PORT=8080 ponte -c ponte.toml    # a config file, one key from the environment";

/// The log line format (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Readable lines; colours only when standard error is a terminal and NO_COLOR is unset.
    Human,
    /// One JSON object per line.
    Json,
}

/// Tools run instead of the gateway.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Add, change or delete a user in a password file (argon2id), like `mosquitto_passwd`.
    Passwd(PasswdArgs),
    /// Print the effective configuration (defaults, file, environment, flags) as TOML, every
    /// key with its meaning: `ponte config > ponte.toml` is a complete starting file.
    Config,
}

/// `ponte passwd FILE USER`.
#[derive(Debug, clap::Args)]
pub struct PasswdArgs {
    /// The password file (created if it does not exist).
    pub file: PathBuf,
    /// The username.
    pub user: String,
    /// The password, for scripts; without it ponte asks twice on the terminal, or reads
    /// one line from standard input when that is not a terminal.
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
            None => read_password()?,
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

/// The password of `ponte passwd` without `--password`: asked twice on a terminal, or one
/// line of standard input when it is not a terminal (`echo secret | ponte passwd F U`).
fn read_password() -> Result<String, String> {
    use std::io::{BufRead, IsTerminal};
    let help = "use --password PW, or pipe the password on standard input (echo PW | ponte passwd FILE USER)";
    if !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
        let line = line.trim_end_matches(['\n', '\r']).to_string();
        if line.is_empty() {
            return Err(format!("no password on standard input; {help}"));
        }
        return Ok(line);
    }
    let ask = |prompt| {
        rpassword::prompt_password(prompt)
            .map_err(|e| format!("cannot read the password from the terminal ({e}); {help}"))
    };
    let first = ask("Password: ")?;
    let again = ask("Reenter password: ")?;
    if first != again {
        return Err("passwords do not match".into());
    }
    Ok(first)
}

/// The effective configuration and where its explicit settings came from.
#[derive(Debug)]
pub struct Layered {
    /// Defaults, then file, environment and flags.
    pub config: Config,
    /// `(key path, where)` for every key set explicitly: `"--mqtts-port"`,
    /// `"PONTE_MQTT_TLS_PORT"`, `"[mqtt] tls_port in ponte.toml"`. A later layer's entry
    /// comes after an earlier one's.
    pub set_by: Vec<(String, String)>,
    /// `PONTE_` variables that name no key (ignored; worth a warning in the log).
    pub ignored_env: Vec<String>,
}

impl Layered {
    /// Where `key` was last set, if it was set at all.
    pub fn source(&self, key: &str) -> Option<&str> {
        self.set_by
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, s)| s.as_str())
    }
}

impl Cli {
    /// The configuration: defaults, then the file, then the environment, then the flags.
    pub fn config(&self) -> Result<Config, ConfigError> {
        Ok(self.layered(std::env::vars())?.config)
    }

    /// [`Cli::config`] with the environment given as `vars`, and where each explicit
    /// setting came from; checks settings that need each other.
    pub fn layered(
        &self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Layered, ConfigError> {
        let mut set_by = Vec::new();
        let mut table = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                // The file alone must be valid, so its errors name the file.
                Config::from_toml(&text).map_err(|message| ConfigError::Parse {
                    path: path.clone(),
                    message,
                })?;
                let table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
                let file = path.display();
                for (k, v) in &table {
                    match v {
                        toml::Value::Table(keys) => {
                            for key in keys.keys() {
                                set_by
                                    .push((format!("{k}.{key}"), format!("[{k}] {key} in {file}")));
                            }
                        }
                        _ => set_by.push((k.clone(), format!("{k} in {file}"))),
                    }
                }
                table
            }
            None => toml::Table::new(),
        };
        let applied = crate::config::env::apply(&mut table, vars)?;
        set_by.extend(applied.set);
        let mut c = Config::deserialize(toml::Value::Table(table))
            .map_err(|e| ConfigError::Conflict(e.to_string()))?;
        // What SIGHUP re-reads for `[[bridge]]` and `[[webhook]]`.
        c.source = self.config.clone();
        let hosts = |flag: &str, names: &[String]| {
            crate::config::Hosts::from_names(names.to_vec())
                .map_err(|e| ConfigError::Conflict(format!("--{flag}: {e}")))
        };
        let mut flag = |key: &str, name: &str| set_by.push((key.into(), format!("--{name}")));
        if !self.host.is_empty() {
            c.host = hosts("host", &self.host)?;
            flag("host", "host");
        }
        if let Some(p) = self.http_port {
            c.http.port = p;
            flag("http.port", "http-port");
        }
        if let Some(p) = self.coap_port {
            c.coap.port = p;
            flag("coap.port", "coap-port");
        }
        if let Some(p) = self.mqtt_port {
            c.mqtt.port = p;
            flag("mqtt.port", "mqtt-port");
        }
        if !self.http_host.is_empty() {
            c.http.host = Some(hosts("http-host", &self.http_host)?);
            flag("http.host", "http-host");
        }
        if !self.coap_host.is_empty() {
            c.coap.host = Some(hosts("coap-host", &self.coap_host)?);
            flag("coap.host", "coap-host");
        }
        if !self.mqtt_host.is_empty() {
            c.mqtt.host = Some(hosts("mqtt-host", &self.mqtt_host)?);
            flag("mqtt.host", "mqtt-host");
        }
        if let Some(db) = &self.db {
            c.store.db = db.clone();
            flag("store.db", "db");
        }
        if self.memory {
            c.store.memory = true;
            flag("store.memory", "memory");
        }
        if self.password_file.is_some() {
            c.auth.password_file = self.password_file.clone();
            flag("auth.password_file", "password-file");
        }
        if self.acl_file.is_some() {
            c.auth.acl_file = self.acl_file.clone();
            flag("auth.acl_file", "acl-file");
        }
        if self.psk_file.is_some() {
            c.auth.psk_file = self.psk_file.clone();
            flag("auth.psk_file", "psk-file");
        }
        if self.allow_anonymous.is_some() {
            c.auth.allow_anonymous = self.allow_anonymous;
            flag("auth.allow_anonymous", "allow-anonymous");
        }
        if self.cert.is_some() {
            c.tls.cert_file = self.cert.clone();
            flag("tls.cert_file", "cert");
        }
        if self.key.is_some() {
            c.tls.key_file = self.key.clone();
            flag("tls.key_file", "key");
        }
        if self.cafile.is_some() {
            c.tls.client_ca_file = self.cafile.clone();
            flag("tls.client_ca_file", "cafile");
        }
        if let Some(p) = self.mqtts_port {
            c.mqtt.tls_port = p;
            flag("mqtt.tls_port", "mqtts-port");
        }
        if self.https_port.is_some() {
            c.http.tls_port = self.https_port;
            flag("http.tls_port", "https-port");
        }
        if !self.cluster.is_empty() {
            c.cluster.urls = self.cluster.clone();
        }
        if self.node.is_some() {
            c.cluster.node = self.node.clone();
        }
        let layered = Layered {
            config: c,
            set_by,
            ignored_env: applied.ignored,
        };
        layered.check()?;
        Ok(layered)
    }

    /// The tracing filter these flags ask for (`RUST_LOG` overrides it): ponte's own crates
    /// at debug (`-v`) or trace (`--very-verbose`), everything else at info, so a
    /// dependency's internals (sled's) do not flood the log.
    pub fn log_filter(&self) -> String {
        let level = if self.very_verbose {
            "trace"
        } else if self.verbose {
            "debug"
        } else {
            return "info".into();
        };
        format!("info,ponte={level},ponte_mqtt={level},ponte_coap={level}")
    }
}

impl Layered {
    /// Settings that need each other, named the way the user gave them.
    fn check(&self) -> Result<(), ConfigError> {
        let c = &self.config;
        let d = Config::default();
        let tls = c.tls.enabled();
        // Set on purpose: by a flag or a variable, or by the file to something other than the
        // default (`ponte config` output lists every key, defaults included).
        let explicit = |key: &str, differs: bool| {
            self.source(key)
                .is_some_and(|s| s.starts_with("--") || s.starts_with("PONTE_") || differs)
        };
        let name = |key: &str, default: &str| self.source(key).unwrap_or(default).to_string();
        if c.tls.cert_file.is_some() != c.tls.key_file.is_some() {
            return Err(ConfigError::Conflict(if c.tls.cert_file.is_some() {
                format!(
                    "{} needs its private key: give --key FILE (or [tls] key_file)",
                    name("tls.cert_file", "[tls] cert_file")
                )
            } else {
                format!(
                    "{} needs its certificate: give --cert FILE (or [tls] cert_file)",
                    name("tls.key_file", "[tls] key_file")
                )
            }));
        }
        if !tls {
            for (key, what) in [
                ("mqtt.tls_port", "MQTT over TLS"),
                ("http.tls_port", "HTTPS"),
                ("mqtt.wss_port", "MQTT over secure WebSocket"),
            ] {
                let set = match key {
                    "http.tls_port" => c.http.tls_port.is_some(),
                    "mqtt.wss_port" => c.mqtt.wss_port.is_some(),
                    _ => explicit(key, c.mqtt.tls_port != d.mqtt.tls_port),
                };
                if set {
                    return Err(ConfigError::Conflict(format!(
                        "{} asks for {what}, which needs a certificate: give --cert FILE and --key FILE (or [tls] cert_file and key_file)",
                        name(key, key)
                    )));
                }
            }
        }
        if c.store.memory && explicit("store.db", c.store.db != d.store.db) {
            return Err(ConfigError::Conflict(format!(
                "{} keeps nothing on disk, so {} cannot be used with it",
                name("store.memory", "[store] memory"),
                name("store.db", "[store] db")
            )));
        }
        Ok(())
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
