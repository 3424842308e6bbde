//! `[[bridge]]` and its `[[bridge.topic]]` rules: parsed at load time into types that
//! cannot hold a bad value (a URL of a scheme ponte cannot dial, a filter MQTT would
//! refuse, a QoS of 3), then checked across fields by [`validate`]. Every error names the
//! bridge and the key.

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::QoS;
use crate::model::TopicFilter;

/// One `[[bridge]]`: a connection to another MQTT broker and what flows over it.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    /// Names the bridge in logs, metrics, `$SYS/broker/connection/<name>/state` and its
    /// durable queue (`$bridge/<name>`): letters, digits, `-`, `_`, `.`.
    #[schemars(with = "String")]
    pub name: Name,
    /// The remote broker: `mqtt://`, `mqtts://`, `ws://` or `wss://`.
    #[schemars(with = "String")]
    pub url: RemoteUrl,
    /// MQTT protocol level spoken to the remote: 4 (3.1.1) or 5.
    #[serde(default)]
    #[schemars(with = "u8")]
    pub protocol: Protocol,
    /// Client identifier at the remote; default `ponte-<name>`. Two bridges (or two ponte
    /// nodes) using one id at one remote take each other's connection over.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Username sent in CONNECT.
    #[serde(default)]
    pub username: Option<String>,
    /// Password sent in CONNECT (with `username`).
    #[serde(default)]
    pub password: Option<String>,
    /// CA certificates (PEM) the remote's certificate must chain to; default: the
    /// system's roots. Only for `mqtts://` and `wss://`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM) presented to the remote, with `key_file`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// Private key (PEM) of `cert_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Clean Start (v5) / Clean Session (3.1.1) at the remote. Off: the remote keeps the
    /// bridge's subscriptions and queued messages while the link is down.
    #[serde(default)]
    pub clean_start: bool,
    /// MQTT Keep Alive towards the remote, seconds (5..=65535).
    #[serde(default = "default_keepalive")]
    pub keepalive_secs: u16,
    /// First reconnection delay, seconds; it doubles (with jitter) up to
    /// `reconnect_max_secs`.
    #[serde(default = "default_reconnect_min")]
    pub reconnect_min_secs: u64,
    /// Longest reconnection delay, seconds.
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max_secs: u64,
    /// Most local messages waiting to go out (QoS 1/2 ones on disk); beyond it new ones are
    /// dropped and counted.
    #[serde(default = "default_max_queued")]
    pub max_queued: usize,
    /// Most QoS 1/2 messages sent to the remote and not yet acknowledged (v5: lowered to
    /// the remote's Receive Maximum).
    #[serde(default = "default_max_inflight")]
    pub max_inflight: u16,
    /// What flows, and which way (`[[bridge.topic]]`); at least one.
    #[serde(default, rename = "topic")]
    pub topics: Vec<TopicRule>,
}

/// One `[[bridge.topic]]`, as mosquitto's `topic pattern direction qos local_prefix
/// remote_prefix`: local topic = `local_prefix` + T, remote topic = `remote_prefix` + T,
/// for every T matching `pattern`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TopicRule {
    /// An MQTT filter over T (the topic without either prefix).
    #[schemars(with = "String")]
    pub pattern: Filter,
    /// `out` (local → remote), `in` (remote → local) or `both`.
    pub direction: Direction,
    /// Highest QoS of the messages it carries (a message goes at min(its QoS, this)).
    #[serde(default = "default_qos")]
    #[schemars(with = "u8")]
    pub qos: Qos,
    /// Prepended to T locally; removed when a local message goes out.
    #[serde(default)]
    pub local_prefix: String,
    /// Prepended to T at the remote; removed when a remote message comes in.
    #[serde(default)]
    pub remote_prefix: String,
}

impl TopicRule {
    /// The local filter: `local_prefix` + `pattern` (checked by [`validate`]).
    pub fn local_filter(&self) -> TopicFilter {
        join(&self.local_prefix, &self.pattern.0)
    }

    /// The remote filter: `remote_prefix` + `pattern` (checked by [`validate`]).
    pub fn remote_filter(&self) -> TopicFilter {
        join(&self.remote_prefix, &self.pattern.0)
    }

    /// Whether local messages go out under this rule.
    pub fn goes_out(&self) -> bool {
        matches!(self.direction, Direction::Out | Direction::Both)
    }

    /// Whether remote messages come in under this rule.
    pub fn comes_in(&self) -> bool {
        matches!(self.direction, Direction::In | Direction::Both)
    }
}

/// `prefix` + `filter` as a filter; [`validate`] refuses rules where this is not one, so
/// the fallback (the bare filter) is never used by a running bridge.
fn join(prefix: &str, filter: &TopicFilter) -> TopicFilter {
    if prefix.is_empty() {
        return filter.clone();
    }
    TopicFilter::parse(&format!("{prefix}{}", filter.as_str())).unwrap_or_else(|_| filter.clone())
}

impl BridgeConfig {
    /// The client identifier used at the remote.
    pub fn client_id(&self) -> String {
        self.client_id
            .clone()
            .unwrap_or_else(|| format!("ponte-{}", self.name))
    }
}

fn default_keepalive() -> u16 {
    60
}
fn default_reconnect_min() -> u64 {
    1
}
fn default_reconnect_max() -> u64 {
    60
}
fn default_max_queued() -> usize {
    10_000
}
fn default_max_inflight() -> u16 {
    32
}
fn default_qos() -> Qos {
    Qos(QoS::AtLeastOnce)
}

/// A bridge or webhook name: 1 to 64 of `A-Z a-z 0-9 - _ .`, so it is one topic level,
/// one metrics label value and one file-name-safe word.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(String);

impl From<Name> for String {
    fn from(n: Name) -> String {
        n.0
    }
}

impl TryFrom<String> for Name {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if ok {
            Ok(Name(s))
        } else {
            Err(format!(
                "name {s:?}: use 1 to 64 letters, digits, '-', '_' or '.' (it becomes a topic level and a metrics label)"
            ))
        }
    }
}

impl Name {
    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How the bridge reaches its remote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `mqtt://` (TCP, port 1883 by default).
    Mqtt,
    /// `mqtts://` (TLS, 8883).
    Mqtts,
    /// `ws://` (MQTT over WebSocket, 80).
    Ws,
    /// `wss://` (MQTT over secure WebSocket, 443).
    Wss,
}

impl Scheme {
    /// Whether the transport is TLS.
    pub fn is_tls(self) -> bool {
        matches!(self, Scheme::Mqtts | Scheme::Wss)
    }
}

/// A parsed remote broker URL.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct RemoteUrl {
    /// As written, for logs.
    pub text: String,
    /// The transport.
    pub scheme: Scheme,
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// Port (the scheme's default when not written).
    pub port: u16,
    /// The WebSocket path (`/` when not written); unused for `mqtt(s)://`.
    pub path: String,
}

impl From<RemoteUrl> for String {
    fn from(u: RemoteUrl) -> String {
        u.text
    }
}

impl TryFrom<String> for RemoteUrl {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let url = reqwest::Url::parse(&text).map_err(|e| format!("url {text:?}: {e}"))?;
        let (scheme, default_port) = match url.scheme() {
            "mqtt" | "tcp" => (Scheme::Mqtt, 1883),
            "mqtts" | "ssl" => (Scheme::Mqtts, 8883),
            "ws" => (Scheme::Ws, 80),
            "wss" => (Scheme::Wss, 443),
            other => {
                return Err(format!(
                    "url {text:?}: scheme {other:?} is not mqtt://, mqtts://, ws:// or wss://"
                ))
            }
        };
        let host = match url.host_str() {
            // IPv6 literals come bracketed; rumqttc wants the bare address.
            Some(h) if !h.is_empty() => h.trim_start_matches('[').trim_end_matches(']').to_string(),
            _ => return Err(format!("url {text:?}: no host")),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "url {text:?}: put credentials in `username` and `password`, not in the URL"
            ));
        }
        if matches!(scheme, Scheme::Mqtt | Scheme::Mqtts) && !matches!(url.path(), "" | "/") {
            return Err(format!(
                "url {text:?}: a path only makes sense for ws:// and wss://"
            ));
        }
        let mut path = url.path().to_string();
        if path.is_empty() {
            path.push('/');
        }
        if let Some(q) = url.query() {
            path.push('?');
            path.push_str(q);
        }
        Ok(RemoteUrl {
            scheme,
            host,
            port: url.port().unwrap_or(default_port),
            path,
            text,
        })
    }
}

impl RemoteUrl {
    /// The WebSocket URL rumqttc dials (`ws(s)://host:port/path`).
    pub fn websocket_url(&self) -> String {
        let scheme = if self.scheme == Scheme::Wss {
            "wss"
        } else {
            "ws"
        };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("{scheme}://{host}:{}{}", self.port, self.path)
    }
}

/// MQTT protocol level towards the remote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum Protocol {
    /// 3.1.1 (protocol level 4).
    #[default]
    V311,
    /// 5.0.
    V5,
}

impl From<Protocol> for u8 {
    fn from(p: Protocol) -> u8 {
        match p {
            Protocol::V311 => 4,
            Protocol::V5 => 5,
        }
    }
}

impl TryFrom<u8> for Protocol {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, String> {
        match v {
            4 => Ok(Protocol::V311),
            5 => Ok(Protocol::V5),
            other => Err(format!(
                "protocol {other}: use 4 (MQTT 3.1.1) or 5 (MQTT 5.0)"
            )),
        }
    }
}

/// Which way a topic rule carries messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Local → remote.
    Out,
    /// Remote → local.
    In,
    /// Both ways (never back the way a message came).
    Both,
}

/// A QoS level in the configuration (0, 1 or 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct Qos(pub QoS);

impl From<Qos> for u8 {
    fn from(q: Qos) -> u8 {
        q.0 as u8
    }
}

impl TryFrom<u8> for Qos {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, String> {
        QoS::from_u8(v)
            .map(Qos)
            .ok_or_else(|| format!("qos {v}: use 0, 1 or 2"))
    }
}

/// An MQTT topic filter in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct Filter(pub TopicFilter);

impl From<Filter> for String {
    fn from(f: Filter) -> String {
        f.0.as_str().to_owned()
    }
}

impl TryFrom<String> for Filter {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.starts_with("$share/") {
            return Err(format!(
                "filter {s:?}: a shared subscription ($share/...) would take messages away from its group's MQTT clients"
            ));
        }
        TopicFilter::parse(&s)
            .map(Filter)
            .map_err(|e| format!("filter {s:?}: {e}"))
    }
}

/// Check what one field cannot: unique names, at least one topic rule, delays in order,
/// prefixes that keep filters valid, TLS files only for TLS transports and in pairs.
pub fn validate(bridges: &[BridgeConfig]) -> Result<(), String> {
    let mut names = HashSet::new();
    for b in bridges {
        let at = format!("bridge {:?}", b.name.as_str());
        if !names.insert(b.name.as_str()) {
            return Err(format!("{at}: two [[bridge]] sections have this name"));
        }
        if b.topics.is_empty() {
            return Err(format!(
                "{at}: no [[bridge.topic]]; say what flows (pattern, direction)"
            ));
        }
        if b.client_id.as_deref() == Some("") {
            return Err(format!(
                "{at}: client_id is empty; leave it out for the default ponte-{}",
                b.name
            ));
        }
        if b.keepalive_secs < 5 {
            return Err(format!(
                "{at}: keepalive_secs = {} is below 5 seconds",
                b.keepalive_secs
            ));
        }
        if b.reconnect_min_secs == 0 {
            return Err(format!(
                "{at}: reconnect_min_secs = 0 would reconnect in a tight loop; use 1 or more"
            ));
        }
        if b.reconnect_min_secs > b.reconnect_max_secs {
            return Err(format!(
                "{at}: reconnect_min_secs ({}) is more than reconnect_max_secs ({})",
                b.reconnect_min_secs, b.reconnect_max_secs
            ));
        }
        if b.max_queued == 0 || b.max_inflight == 0 {
            return Err(format!(
                "{at}: max_queued and max_inflight must be at least 1"
            ));
        }
        if b.password.is_some() && b.username.is_none() {
            return Err(format!(
                "{at}: password without username (MQTT sends a password only with a username)"
            ));
        }
        if b.cert_file.is_some() != b.key_file.is_some() {
            return Err(format!(
                "{at}: cert_file and key_file go together (a client certificate and its key)"
            ));
        }
        if !b.url.scheme.is_tls()
            && (b.ca_file.is_some() || b.cert_file.is_some() || b.key_file.is_some())
        {
            return Err(format!(
                "{at}: ca_file, cert_file and key_file need a TLS url (mqtts:// or wss://), not {:?}",
                b.url.text
            ));
        }
        for (i, t) in b.topics.iter().enumerate() {
            let at = format!("{at}, topic {} ({:?})", i + 1, t.pattern.0.as_str());
            for (key, prefix) in [
                ("local_prefix", &t.local_prefix),
                ("remote_prefix", &t.remote_prefix),
            ] {
                if prefix.contains(['+', '#', '\0']) {
                    return Err(format!(
                        "{at}: {key} {prefix:?} contains a wildcard or NUL; a prefix is plain topic text"
                    ));
                }
                let joined = format!("{prefix}{}", t.pattern.0.as_str());
                if let Err(e) = TopicFilter::parse(&joined) {
                    return Err(format!("{at}: {key} + pattern = {joined:?}: {e}"));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct File {
        bridge: Vec<BridgeConfig>,
    }

    fn parse(s: &str) -> Result<Vec<BridgeConfig>, String> {
        let f: File = toml::from_str(s).map_err(|e| e.to_string())?;
        validate(&f.bridge)?;
        Ok(f.bridge)
    }

    const GOOD: &str = r#"
[[bridge]]
name = "cloud"
url = "mqtts://broker.example:8884"
protocol = 5
ca_file = "ca.pem"
[[bridge.topic]]
pattern = "sensors/#"
direction = "out"
remote_prefix = "edge-1/"
[[bridge.topic]]
pattern = "cmd/+"
direction = "in"
qos = 2
local_prefix = "remote/"
"#;

    #[test]
    fn a_full_bridge_parses_with_defaults() {
        let b = &parse(GOOD).unwrap()[0];
        assert_eq!(b.name.as_str(), "cloud");
        assert_eq!(b.url.scheme, Scheme::Mqtts);
        assert_eq!((b.url.host.as_str(), b.url.port), ("broker.example", 8884));
        assert_eq!(b.protocol, Protocol::V5);
        assert_eq!(b.client_id(), "ponte-cloud");
        assert_eq!(b.keepalive_secs, 60);
        assert_eq!((b.reconnect_min_secs, b.reconnect_max_secs), (1, 60));
        assert!(!b.clean_start);
        assert_eq!(b.topics[0].qos.0, QoS::AtLeastOnce, "qos defaults to 1");
        assert_eq!(b.topics[0].remote_filter().as_str(), "edge-1/sensors/#");
        assert_eq!(b.topics[0].local_filter().as_str(), "sensors/#");
        assert_eq!(b.topics[1].local_filter().as_str(), "remote/cmd/+");
        assert!(b.topics[1].comes_in() && !b.topics[1].goes_out());
    }

    #[test]
    fn urls_of_every_scheme_and_their_default_ports() {
        for (text, scheme, port, path) in [
            ("mqtt://h", Scheme::Mqtt, 1883, "/"),
            ("mqtts://h", Scheme::Mqtts, 8883, "/"),
            ("ws://h/mqtt", Scheme::Ws, 80, "/mqtt"),
            ("wss://h:9001/m?x=1", Scheme::Wss, 9001, "/m?x=1"),
            ("mqtt://[::1]:1884", Scheme::Mqtt, 1884, "/"),
        ] {
            let u = RemoteUrl::try_from(text.to_string()).unwrap();
            assert_eq!(
                (u.scheme, u.port, u.path.as_str()),
                (scheme, port, path),
                "{text}"
            );
        }
        assert_eq!(
            RemoteUrl::try_from("mqtt://[::1]:1884".to_string())
                .unwrap()
                .host,
            "::1"
        );
        for bad in ["http://h", "mqtt://u:p@h", "mqtt://h/path", "nonsense"] {
            let e = RemoteUrl::try_from(bad.to_string()).unwrap_err();
            assert!(e.starts_with("url "), "{e}");
        }
    }

    #[test]
    fn bad_values_are_refused_naming_the_key() {
        let cases = [
            (GOOD.replace("protocol = 5", "protocol = 3"), "protocol 3"),
            (GOOD.replace("qos = 2", "qos = 3"), "qos 3"),
            (GOOD.replace("\"cmd/+\"", "\"cmd/#/x\""), "filter"),
            (
                GOOD.replace("\"cmd/+\"", "\"$share/g/cmd\""),
                "shared subscription",
            ),
            (GOOD.replace("\"in\"", "\"sideways\""), "sideways"),
            (GOOD.replace("\"cloud\"", "\"a/b\""), "name \"a/b\""),
            (
                GOOD.replace("remote_prefix = \"edge-1/\"", "remote_prefix = \"e/#/\""),
                "remote_prefix",
            ),
            (
                GOOD.replace(
                    "protocol = 5",
                    "protocol = 5\nreconnect_min_secs = 9\nreconnect_max_secs = 3",
                ),
                "reconnect_min_secs (9)",
            ),
            (
                GOOD.replace("protocol = 5", "protocol = 5\nkeepalive_secs = 2"),
                "keepalive_secs",
            ),
            (
                GOOD.replace("mqtts://broker.example:8884", "mqtt://broker.example"),
                "ca_file, cert_file and key_file need a TLS url",
            ),
            (
                GOOD.replace("protocol = 5", "protocol = 5\ncert_file = \"c.pem\""),
                "cert_file and key_file go together",
            ),
            (
                GOOD.replace("protocol = 5", "protocol = 5\nfrobnicate = true"),
                "frobnicate",
            ),
            (
                format!(
                    "{GOOD}{}",
                    GOOD[..GOOD.find("[[bridge.topic]]").unwrap()].replace("cloud", "other")
                ),
                "no [[bridge.topic]]",
            ),
            (format!("{GOOD}{GOOD}"), "two [[bridge]] sections"),
        ];
        for (text, needle) in cases {
            let e = parse(&text).unwrap_err();
            assert!(e.contains(needle), "expected {needle:?} in: {e}");
        }
    }
}
