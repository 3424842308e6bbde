//! The limits and timers of one connection.

use std::time::Duration;

/// Limits and timers of one connection.
#[derive(Debug, Clone)]
pub struct Config {
    /// Largest inbound packet (fixed header included) accepted; bigger ones close the
    /// connection before their body is buffered, bounding memory per connection. Also caps
    /// the bytes buffered between CONNECT and `accept`.
    pub max_packet_size: usize,
    /// Outgoing QoS 1/2 window: how many unacknowledged PUBLISHes the server keeps in flight
    /// to this client, so a slow client cannot make the broker hold unbounded state here.
    pub max_inflight: u16,
    /// How long a fresh connection may take to send CONNECT before it is dropped, so idle
    /// sockets cannot hold server resources.
    pub connect_timeout: Duration,
    /// Multiple of the client's Keep Alive after which a silent connection is closed; the
    /// specification says 1.5 (MQTT-3.1.2-24).
    pub keep_alive_factor: f64,
    /// MQTT 5: most unacknowledged inbound QoS 1/2 PUBLISHes a client may have open, announced
    /// in CONNACK; one more closes the connection with 0x93 (MQTT-3.3.4-7/8), bounding the
    /// per-connection state a client can make the server hold.
    pub receive_maximum: u16,
    /// MQTT 5: highest topic alias accepted from a client (announced in CONNACK; 0 = none)
    /// and most aliases the server assigns to a client's repeated topics, bounding both
    /// alias tables per connection.
    pub topic_alias_maximum: u16,
    /// MQTT 5: largest Keep Alive the server allows; a client asking for more (or for 0, no
    /// keepalive) is told Server Keep Alive = this in CONNACK. 0 = no limit. Bounds how long
    /// a dead client's session can look alive.
    pub max_keep_alive: u16,
    /// MQTT 5: longest Session Expiry Interval the server keeps a session for; a client
    /// asking for more (in CONNECT, or later in DISCONNECT) gets this, told in CONNACK's
    /// Session Expiry Interval (3.2.2.3.2). `None` = as the client asks. Bounds how long
    /// an away session holds memory and disk.
    pub max_session_expiry: Option<u32>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_packet_size: 1024 * 1024,
            max_inflight: 32,
            connect_timeout: Duration::from_secs(10),
            keep_alive_factor: 1.5,
            receive_maximum: 1024,
            topic_alias_maximum: 64,
            max_keep_alive: 0,
            max_session_expiry: None,
        }
    }
}

impl Config {
    /// The Session Expiry Interval the server keeps a session for when `asked` was asked:
    /// at most [`Config::max_session_expiry`].
    pub fn session_expiry(&self, asked: u32) -> u32 {
        self.max_session_expiry.map_or(asked, |max| asked.min(max))
    }
}
