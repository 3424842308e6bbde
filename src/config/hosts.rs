//! Where listeners bind: addresses or host names, resolved when the configuration is read.

use super::*;

/// Where a listener binds: one or more IP addresses or host names (`"0.0.0.0"`,
/// `["0.0.0.0", "::"]`, `"localhost"`, or `"0.0.0.0,::"` from a flag or variable). Names
/// are resolved when the configuration is read, and every address they resolve to is
/// bound (`localhost`: 127.0.0.1 and ::1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hosts {
    /// As written (serialized back this way).
    names: Vec<String>,
    /// What they resolve to, in order, without duplicates; never empty.
    ips: Vec<IpAddr>,
}

impl Hosts {
    /// One IP address.
    pub fn ip(ip: IpAddr) -> Self {
        Hosts {
            names: vec![ip.to_string()],
            ips: vec![ip],
        }
    }

    /// Parse a comma-separated list of IP addresses and host names, resolving the names.
    pub fn parse(text: &str) -> Result<Self, String> {
        Self::from_names(text.split(',').map(|s| s.trim().to_string()).collect())
    }

    /// Resolve `names` (IP addresses or host names).
    pub fn from_names(names: Vec<String>) -> Result<Self, String> {
        use std::net::ToSocketAddrs;
        if names.is_empty() {
            return Err("no address given".into());
        }
        let mut ips = Vec::new();
        for name in &names {
            if name.is_empty() {
                return Err("an empty address".into());
            }
            let found: Vec<IpAddr> = match name.trim_matches(['[', ']']).parse::<IpAddr>() {
                Ok(ip) => vec![ip],
                Err(_) => (name.as_str(), 0)
                    .to_socket_addrs()
                    .map_err(|e| {
                        format!(
                            "{name:?} is neither an IP address nor a host name that resolves: {e}"
                        )
                    })?
                    .map(|a| a.ip())
                    .collect(),
            };
            for ip in found {
                if !ips.contains(&ip) {
                    ips.push(ip);
                }
            }
        }
        if ips.is_empty() {
            return Err(format!("{} resolve(s) to no address", names.join(", ")));
        }
        Ok(Hosts { names, ips })
    }

    /// The first address: where a listener of these hosts is reported to be.
    pub fn first(&self) -> IpAddr {
        self.ips[0]
    }

    /// Every address.
    pub fn ips(&self) -> &[IpAddr] {
        &self.ips
    }

    /// Every address with `port`.
    pub fn addrs(&self, port: u16) -> Vec<SocketAddr> {
        self.ips
            .iter()
            .map(|ip| SocketAddr::new(*ip, port))
            .collect()
    }
}

impl std::fmt::Display for Hosts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.names.join(","))
    }
}

impl Serialize for Hosts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.names.as_slice() {
            [one] => s.serialize_str(one),
            many => many.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Hosts {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        let parsed = match OneOrMany::deserialize(d)? {
            OneOrMany::One(text) => Hosts::parse(&text),
            OneOrMany::Many(names) => Hosts::from_names(names),
        };
        parsed.map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Hosts {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Hosts".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "anyOf": [
                { "type": "string" },
                { "type": "array", "items": { "type": "string" } }
            ]
        })
    }
}
