//! Configuration: defaults, the TOML file (`-c/--config`), then command-line flags on top.
//!
//! Every key has a default so `ponte` starts with no file at all. Unknown keys in the file
//! are an error naming the key, so a typo never silently falls back to a default.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::broker::mailbox::OverflowPolicy;

pub mod bridge;
pub mod env;
mod hosts;
pub mod print;
pub mod webhook;

pub use hosts::Hosts;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address every listener binds to unless its own `host` says otherwise
    /// (the original Ponte's `--host`).
    pub host: Hosts,
    /// The HTTP front-end.
    pub http: HttpConfig,
    /// The CoAP front-end.
    pub coap: CoapConfig,
    /// The MQTT broker front-end.
    pub mqtt: MqttConfig,
    /// Where retained values are kept.
    pub store: StoreConfig,
    /// Who may connect and what they may read and write (password, ACL and PSK files, JWT).
    pub auth: crate::auth::AuthConfig,
    /// Abuse limits: connections per address, connection rate, write rate per client.
    pub limits: crate::limits::LimitsConfig,
    /// Certificates for the TLS listeners (MQTT over TLS, HTTPS, WSS).
    pub tls: TlsConfig,
    /// MQTT bridges to other brokers (`[[bridge]]`, each with `[[bridge.topic]]`).
    pub bridge: Vec<bridge::BridgeConfig>,
    /// Webhooks called on writes (`[[webhook]]`).
    pub webhook: Vec<webhook::WebhookConfig>,
    /// The file this configuration was read from, if any: what SIGHUP re-reads for the
    /// bridges and webhooks. Not a key.
    #[serde(skip)]
    pub source: Option<PathBuf>,
    /// Several nodes sharing one set of things over NATS JetStream (`--cluster`); off
    /// unless `urls` is set.
    pub cluster: crate::backbone::ClusterConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host: Hosts::ip(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            http: HttpConfig::default(),
            coap: CoapConfig::default(),
            mqtt: MqttConfig::default(),
            store: StoreConfig::default(),
            auth: crate::auth::AuthConfig::default(),
            limits: crate::limits::LimitsConfig::default(),
            tls: TlsConfig::default(),
            bridge: Vec::new(),
            webhook: Vec::new(),
            source: None,
            cluster: crate::backbone::ClusterConfig::default(),
        }
    }
}

/// HTTP settings.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address(es) or host name(s) to listen on instead of the top-level `host`; not set:
    /// the top-level `host`.
    pub host: Option<Hosts>,
    /// Port; 0 picks a free one (logged at start).
    pub port: u16,
    /// Largest accepted request body in bytes; larger bodies get 413.
    pub max_body: usize,
    /// Origins allowed by CORS (`"*"` for any). Empty: no CORS headers at all.
    pub cors_origins: Vec<String>,
    /// Capacity of each Server-Sent Events subscriber's queue.
    pub sse_queue: usize,
    /// HTTPS port (the same routes, `/mqtt` included, so also WSS); not set: no HTTPS.
    /// Needs `[tls]` certificates. Off by default because there is no standard port for
    /// it next to 3000; 8443 is the usual choice.
    pub tls_port: Option<u16>,
    /// Seconds a client has to send a request's complete header (HTTP/1) before the
    /// connection is closed, so a slow trickle of header bytes (slowloris) cannot hold
    /// connections open. Applies to HTTP, HTTPS and the MQTT WebSocket ports.
    pub header_timeout_secs: u64,
    /// Seconds a request body has to arrive once its header is in, plus one second for
    /// every `body_min_rate` bytes received (Apache's `RequestReadTimeout body=30,MinRate=500`):
    /// a body that stalls or trickles gets 408 and the connection is closed. The same rule
    /// holds for each WebSocket frame on the MQTT WebSocket paths and ports.
    pub body_timeout_secs: u64,
    /// Bytes per second that earn a slow body (or WebSocket frame) one more second; 0: the
    /// whole body must arrive within `body_timeout_secs`.
    pub body_min_rate: u32,
    /// Most simultaneous connections to the HTTP and HTTPS listeners together; one more is
    /// answered 503 (with `Retry-After`) and closed. 0: no limit.
    pub max_connections: usize,
    /// Whether `GET /metrics` needs credentials (any authenticated user, Basic or Bearer).
    /// Off by default, like `/livez` and `/readyz`, which never need any (probes carry none).
    pub metrics_auth: bool,
    /// A port of its own for `/metrics`, `/livez` and `/readyz` only (besides the HTTP
    /// port), so monitoring can be reached without reaching the things. Not set: none.
    pub metrics_port: Option<u16>,
    /// Serve the explorer, a web page showing the things live, at `/` (its files under
    /// `/explorer/`). `false`: 404 there, as for any unknown path.
    pub explorer: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            host: None,
            port: 3000,
            max_body: 16 * 1024 * 1024,
            cors_origins: Vec::new(),
            sse_queue: 1024,
            tls_port: None,
            header_timeout_secs: 10,
            body_timeout_secs: 30,
            body_min_rate: 500,
            max_connections: 10_000,
            metrics_auth: false,
            metrics_port: None,
            explorer: true,
        }
    }
}

/// CoAP settings.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CoapConfig {
    /// Address(es) or host name(s) to listen on instead of the top-level `host`; not set:
    /// the top-level `host`.
    pub host: Option<Hosts>,
    /// UDP port; 0 picks a free one.
    pub port: u16,
    /// Max-Age sent with values, in seconds (RFC 7252 §5.10.5).
    pub max_age: u32,
    /// Largest value accepted over CoAP, in bytes (Block1 reassembly bound).
    pub max_body: usize,
    /// Capacity of the queue of notifications waiting for the CoAP endpoint.
    pub notify_queue: usize,
    /// Also serve CoAP over TCP (RFC 8323, `coap+tcp://`) on the same port number.
    pub tcp: bool,
    /// Most simultaneous CoAP-over-TCP connections; more are closed at once, so sockets
    /// cannot exhaust file descriptors.
    pub tcp_max_connections: usize,
    /// Seconds a CoAP-over-TCP message that has begun to arrive may take to complete, plus
    /// one second per `tcp_frame_min_rate` bytes of it: a peer that sends half a message
    /// and stalls gets an Abort (7.05) and is closed.
    pub tcp_frame_timeout_secs: u64,
    /// Bytes per second that earn a slow CoAP-over-TCP message one more second (0: none).
    pub tcp_frame_min_rate: u32,
    /// How UDP notifications are sent: `con` (every one confirmable: dead observers are
    /// noticed at once), `non` (cheapest) or `non-with-periodic-con` (NON, with a CON at
    /// least every `con_notify_interval_secs`, RFC 7641 §4.5).
    pub notify: CoapNotify,
    /// Longest an observer goes without a CON notification under `non-with-periodic-con`
    /// (RFC 7641 §4.5 asks for at most 24 hours).
    pub con_notify_interval_secs: u64,
    /// Block size for Block2 responses and the late-negotiation threshold (16..=1024,
    /// a power of two; RFC 7959 §2.2).
    pub block_size: usize,
    /// UDP port of CoAP over DTLS (`coaps://`, RFC 7252 §9; 5684 is its default port).
    /// The listener only starts when a PSK file is configured; 0 picks a free one.
    pub dtls_port: u16,
    /// Most simultaneous DTLS sessions (handshaking or established); a ClientHello from a
    /// new peer beyond it is dropped, so peers cannot exhaust memory with sessions.
    pub dtls_max_sessions: usize,
    /// A DTLS session that has received nothing for this many seconds is closed (with a
    /// close_notify), freeing its slot, its observations and its subscriptions.
    pub dtls_idle_timeout_secs: u64,
}

/// How UDP notifications are sent (RFC 7641 §4.5); over TCP there is no choice to make.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum CoapNotify {
    /// Every notification is CON.
    #[default]
    Con,
    /// Every notification is NON.
    Non,
    /// NON, with a CON at least every `con_notify_interval_secs`.
    NonWithPeriodicCon,
}

impl Default for CoapConfig {
    fn default() -> Self {
        CoapConfig {
            host: None,
            port: 5683,
            max_age: 60,
            max_body: 1024 * 1024,
            notify_queue: 65_536,
            tcp: true,
            tcp_max_connections: 10_000,
            tcp_frame_timeout_secs: 30,
            tcp_frame_min_rate: 500,
            notify: CoapNotify::Con,
            con_notify_interval_secs: 24 * 60 * 60,
            block_size: 1024,
            dtls_port: 5684,
            dtls_max_sessions: 1000,
            dtls_idle_timeout_secs: 300,
        }
    }
}

/// MQTT settings.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// Address(es) or host name(s) to listen on instead of the top-level `host`; not set:
    /// the top-level `host`.
    pub host: Option<Hosts>,
    /// TCP port; 0 picks a free one.
    pub port: u16,
    /// Largest packet accepted from a client, in bytes; a larger one closes the connection.
    pub max_packet_size: usize,
    /// Most unacknowledged QoS 1/2 messages sent to one client at a time.
    pub max_inflight: u16,
    /// Most messages queued for one client (online or away) before the overflow policy applies.
    pub max_queued: usize,
    /// What a full client queue does: `drop-newest`, `drop-oldest` or `disconnect`.
    pub overflow: OverflowPolicy,
    /// Seconds a new connection may take to send CONNECT.
    pub connect_timeout_secs: u64,
    /// Most simultaneous client connections (TCP and WebSocket together); more are closed
    /// at once.
    pub max_connections: usize,
    /// A port of its own for MQTT over WebSocket (any path), besides `/mqtt` on the HTTP
    /// port; not set: only `/mqtt`.
    pub ws_port: Option<u16>,
    /// MQTT over TLS port (`mqtts`, IANA 8883); listened on only when `[tls]` has a
    /// certificate and key.
    pub tls_port: u16,
    /// A port of its own for MQTT over secure WebSocket (any path), besides `/mqtt` on the
    /// HTTPS port; not set: none. Needs `[tls]` certificates.
    pub wss_port: Option<u16>,
    /// MQTT 5 Receive Maximum announced in CONNACK: most unacknowledged QoS 1/2 PUBLISHes a
    /// v5 client may have open towards the broker; one more is DISCONNECT 0x93.
    pub receive_maximum: u16,
    /// MQTT 5 Topic Alias Maximum announced in CONNACK (aliases a client may use), and most
    /// aliases the broker assigns per v5 connection for repeated topics; 0 turns both off.
    pub topic_alias_maximum: u16,
    /// Largest Keep Alive (seconds) a v5 client may use: asking for more, or for 0, gets
    /// Server Keep Alive = this in CONNACK. 0: no limit.
    pub max_keepalive: u16,
    /// Seconds between `$SYS/broker/...` updates; 0 turns them off.
    pub sys_interval_secs: u64,
    /// Queue QoS 0 messages for away persistent sessions too (in memory, not on disk).
    /// Off by default, like mosquitto: MQTT 3.1.2.4 leaves it optional and QoS 0 promises
    /// nothing; skipped ones are counted.
    pub queue_qos0: bool,
    /// Seconds a 3.1.1 persistent session (Clean Session 0) lives on while its client is
    /// away; not set (the default): forever, as 3.1.1 has no expiry of its own.
    pub session_expiry_secs: Option<u32>,
    /// Longest any session outlives its connection, in seconds, whatever the client asks:
    /// an MQTT 5 Session Expiry Interval above it (in CONNECT or DISCONNECT) is lowered to
    /// it and the CONNACK says so (3.2.2.3.2); a 3.1.1 persistent session lives at most
    /// this long away. Not set (the default): as the client asks (3.1.1:
    /// `session_expiry_secs`). Bounds how long away sessions hold memory and disk, like
    /// mosquitto's `persistent_client_expiration`.
    pub max_session_expiry_secs: Option<u32>,
    /// Most persistent sessions (connected or away) clients may make this node keep: a
    /// CONNECT that would start one more is refused (v5 CONNACK 0x97 Quota exceeded,
    /// 3.1.1 0x03 Server unavailable). Resuming or replacing a client's own session is
    /// never refused, and sessions that end with their connection do not count
    /// (`max_connections` bounds them). Bounds the memory away sessions hold (~2 KB each,
    /// plus their queued messages under `[limits] max_queued_bytes`) whatever ids clients
    /// choose. 0: no limit.
    pub max_persistent_sessions: usize,
    /// Most levels in a topic name or filter: a PUBLISH beyond it is refused (v5 DISCONNECT
    /// 0x90), a SUBSCRIBE filter beyond it gets a failure code. Bounds trie depth per
    /// request.
    pub max_topic_levels: usize,
    /// Most subscriptions one client may hold; one more gets SUBACK 0x80 (v5 0x97 Quota
    /// exceeded). Bounds the memory and the stored record one client can claim.
    pub max_subscriptions: usize,
    /// Milliseconds a connection the broker closes (after a DISCONNECT with a reason code,
    /// or a refusing CONNACK) keeps reading and discarding what the client still sends,
    /// after its last packet and a half-close, so the client reads that packet instead of
    /// a connection reset; it ends as soon as the client closes too. 0: close at once.
    pub close_grace_ms: u64,
    /// Most bytes read and discarded during `close_grace_ms`; past it the connection is
    /// closed at once.
    pub close_grace_bytes: usize,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            host: None,
            port: 1883,
            max_packet_size: 16 * 1024 * 1024 + 65_536,
            max_inflight: 32,
            max_queued: 10_000,
            overflow: OverflowPolicy::DropNewest,
            connect_timeout_secs: 10,
            max_connections: 100_000,
            ws_port: None,
            tls_port: 8883,
            wss_port: None,
            receive_maximum: 1024,
            topic_alias_maximum: 64,
            max_keepalive: 0,
            sys_interval_secs: 10,
            queue_qos0: false,
            session_expiry_secs: None,
            max_session_expiry_secs: None,
            max_persistent_sessions: 100_000,
            max_topic_levels: 128,
            max_subscriptions: 1000,
            close_grace_ms: 2000,
            close_grace_bytes: 1024 * 1024,
        }
    }
}

impl HttpConfig {
    /// The header read timeout as a duration (at least one second: 0 would close every
    /// connection before its first request).
    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.header_timeout_secs.max(1))
    }

    /// The rule bodies and WebSocket frames must keep to (`body_timeout_secs`, at least one
    /// second, and `body_min_rate`).
    pub fn body_deadline(&self) -> crate::limits::TransferDeadline {
        crate::limits::TransferDeadline {
            timeout: Duration::from_secs(self.body_timeout_secs.max(1)),
            min_rate: self.body_min_rate,
        }
    }
}

impl MqttConfig {
    /// The CONNECT timeout as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }

    /// `close_grace_ms` as a duration.
    pub fn close_grace(&self) -> Duration {
        Duration::from_millis(self.close_grace_ms)
    }
}

/// Storage settings.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// The sled directory (`-d/--db`).
    pub db: PathBuf,
    /// Keep nothing on disk (`--memory`).
    pub memory: bool,
    /// When an acknowledged retained write (HTTP/CoAP PUT and DELETE, MQTT retained
    /// PUBLISH) is on the disk: before it is acknowledged, or within `sync_interval_ms`.
    /// Persistent MQTT sessions sync every batch either way.
    pub sync: StoreSync,
    /// With `sync = "periodic"`: the longest an acknowledged write waits to be synced to the
    /// disk (at least 1).
    pub sync_interval_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            db: PathBuf::from("./ponte-data"),
            memory: false,
            sync: StoreSync::Always,
            sync_interval_ms: 1000,
        }
    }
}

/// When a retained write reaches the disk (`[store] sync`).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum StoreSync {
    /// Each group commit is on the disk before its writes are acknowledged: they survive a
    /// crash of the process and of the operating system.
    #[default]
    Always,
    /// A group commit is acknowledged once the operating system has it (it survives
    /// `kill -9` and any crash of ponte), and synced to the disk within `sync_interval_ms`:
    /// a crash of the operating system or a power cut can take the writes of that last
    /// interval. Like NATS JetStream's `sync_interval` or Redis's `appendfsync everysec`;
    /// for disks where a write per commit is slow or wears them (SD cards).
    Periodic,
}

impl StoreConfig {
    /// `sync` and `sync_interval_ms` as the log takes them.
    pub fn log_sync(&self) -> crate::store::sled::LogSync {
        use crate::store::sled::LogSync;
        match self.sync {
            StoreSync::Always => LogSync::Always,
            StoreSync::Periodic => LogSync::Every(Duration::from_millis(self.sync_interval_ms)),
        }
    }
}

/// TLS settings: one certificate for every TLS listener, re-read on SIGHUP.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// The server certificate chain (PEM, leaf first). With `key_file`, it turns the TLS
    /// listeners on.
    pub cert_file: Option<PathBuf>,
    /// The private key of `cert_file` (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// CA certificates (PEM) that client certificates are verified against; not set: client
    /// certificates are not asked for.
    pub client_ca_file: Option<PathBuf>,
    /// With `client_ca_file`: refuse the handshake of a client without a valid certificate.
    /// Off: a certificate is verified when offered, and a client may go without one.
    pub require_client_cert: bool,
    /// mosquitto's option: the subject CN of the client's verified certificate is the MQTT
    /// username (replacing CONNECT's); a TLS client without one is refused (CONNACK 0x05,
    /// v5 0x87). Needs `client_ca_file`.
    pub use_identity_as_username: bool,
    /// Seconds a new connection has to finish its TLS handshake before it is closed, so
    /// idle or slow sockets (slowloris) cannot pile up.
    pub handshake_timeout_secs: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert_file: None,
            key_file: None,
            client_ca_file: None,
            require_client_cert: false,
            use_identity_as_username: false,
            handshake_timeout_secs: 10,
        }
    }
}

impl TlsConfig {
    /// Whether the TLS listeners are to start (certificate and key both set).
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some() && self.key_file.is_some()
    }

    /// The handshake timeout as a duration.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout_secs)
    }
}

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An environment variable's value cannot be used.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: String,
        /// Why not.
        message: String,
    },
    /// Settings that cannot go together, or a setting that needs another.
    #[error("{0}")]
    Conflict(String),
    /// The file is not valid TOML for this configuration.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said (line, column, key).
        message: String,
    },
}

impl Config {
    /// Read a TOML configuration file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut c = Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })?;
        c.source = Some(path.to_owned());
        Ok(c)
    }

    /// Parse a TOML configuration (and [`Config::validate`] it).
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let c: Config =
            toml::from_str(text).map_err(|e| e.to_string().trim().replace('\n', " "))?;
        c.validate()?;
        Ok(c)
    }

    /// Check what the types alone cannot (across fields and sections): the bridges' and
    /// webhooks' names, limits and prefixes. The message names the section and key.
    pub fn validate(&self) -> Result<(), String> {
        if self.store.sync_interval_ms == 0 {
            return Err(
                "[store] sync_interval_ms must be at least 1 (to sync every commit, sync = \"always\")"
                    .into(),
            );
        }
        bridge::validate(&self.bridge)?;
        webhook::validate(&self.webhook)
    }

    /// A configuration for tests and embedding: every port 0 on 127.0.0.1, no disk, no
    /// `$SYS` updates.
    pub fn ephemeral() -> Self {
        let mut c = Config {
            host: Hosts::ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            ..Config::default()
        };
        c.http.port = 0;
        c.coap.port = 0;
        c.coap.dtls_port = 0;
        c.mqtt.port = 0;
        // Used only once `[tls]` has a certificate; then on a free port too.
        c.mqtt.tls_port = 0;
        c.store.memory = true;
        // No `$SYS` values appearing in the store on their own: tests count what they wrote.
        c.mqtt.sys_interval_secs = 0;
        c
    }

    /// This configuration with the ports that were really bound (a port 0 replaced by the
    /// one the system chose), for what tells clients where to connect (the explorer).
    pub fn with_bound_ports(
        &self,
        http: SocketAddr,
        mqtt: SocketAddr,
        coap: SocketAddr,
        mqtts: Option<SocketAddr>,
        https: Option<SocketAddr>,
        coaps: Option<SocketAddr>,
    ) -> Config {
        let mut c = self.clone();
        c.http.port = http.port();
        c.mqtt.port = mqtt.port();
        c.coap.port = coap.port();
        if let Some(a) = mqtts {
            c.mqtt.tls_port = a.port();
        }
        if let Some(a) = https {
            c.http.tls_port = Some(a.port());
        }
        if let Some(a) = coaps {
            c.coap.dtls_port = a.port();
        }
        c
    }

    /// The addresses of a listener whose own host setting is `own`.
    fn hosts_of<'a>(&'a self, own: &'a Option<Hosts>) -> &'a Hosts {
        own.as_ref().unwrap_or(&self.host)
    }

    /// Every address the HTTP listener binds (the first is [`Config::http_addr`]).
    pub fn http_addrs(&self) -> Vec<SocketAddr> {
        self.hosts_of(&self.http.host).addrs(self.http.port)
    }

    /// Every address the MQTT listener binds (the first is [`Config::mqtt_addr`]).
    pub fn mqtt_addrs(&self) -> Vec<SocketAddr> {
        self.hosts_of(&self.mqtt.host).addrs(self.mqtt.port)
    }

    /// Every address the MQTT-over-TLS listener binds.
    pub fn mqtts_addrs(&self) -> Vec<SocketAddr> {
        self.hosts_of(&self.mqtt.host).addrs(self.mqtt.tls_port)
    }

    /// Every address the CoAP sockets bind (the first is [`Config::coap_addr`]).
    pub fn coap_addrs(&self) -> Vec<SocketAddr> {
        self.hosts_of(&self.coap.host).addrs(self.coap.port)
    }

    /// Where the HTTP listener binds.
    pub fn http_addr(&self) -> SocketAddr {
        SocketAddr::new(self.hosts_of(&self.http.host).first(), self.http.port)
    }

    /// Where the CoAP socket binds.
    pub fn coap_addr(&self) -> SocketAddr {
        SocketAddr::new(self.hosts_of(&self.coap.host).first(), self.coap.port)
    }

    /// Where the CoAP-over-DTLS (`coaps`) socket binds, when it is started.
    pub fn coaps_addr(&self) -> SocketAddr {
        SocketAddr::new(self.hosts_of(&self.coap.host).first(), self.coap.dtls_port)
    }

    /// Where the MQTT listener binds.
    pub fn mqtt_addr(&self) -> SocketAddr {
        SocketAddr::new(self.hosts_of(&self.mqtt.host).first(), self.mqtt.port)
    }

    /// Where MQTT over TLS binds (used only when `[tls]` is enabled).
    pub fn mqtts_addr(&self) -> SocketAddr {
        SocketAddr::new(self.hosts_of(&self.mqtt.host).first(), self.mqtt.tls_port)
    }

    /// Where HTTPS binds, when `http.tls_port` is set.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.http
            .tls_port
            .map(|p| SocketAddr::new(self.hosts_of(&self.http.host).first(), p))
    }

    /// Where the metrics-and-health listener binds, when `http.metrics_port` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.http
            .metrics_port
            .map(|p| SocketAddr::new(self.hosts_of(&self.http.host).first(), p))
    }

    /// Where MQTT over secure WebSocket binds, when `mqtt.wss_port` is set.
    pub fn wss_addr(&self) -> Option<SocketAddr> {
        self.mqtt
            .wss_port
            .map(|p| SocketAddr::new(self.hosts_of(&self.mqtt.host).first(), p))
    }

    /// Where the MQTT-over-WebSocket listener binds, when it has a port of its own.
    pub fn mqtt_ws_addr(&self) -> Option<SocketAddr> {
        self.mqtt
            .ws_port
            .map(|p| SocketAddr::new(self.hosts_of(&self.mqtt.host).first(), p))
    }
}

#[cfg(test)]
mod tests;
