//! Abuse limits shared by every listener: connections per source address, the rate of new
//! connections, and the rate of writes per client.
//!
//! Each front-end asks before doing the work and answers a refusal in its own protocol (HTTP
//! 429/503, CoAP 5.03 with Max-Age, MQTT CONNACK 0x9F / v5 PUBACK 0x97 / DISCONNECT 0x96, a
//! closed socket where the protocol has nothing better). The bookkeeping here is
//! protocol-free, and time is passed in, so it is tested with a fake clock.
//!
//! `deadline.rs` enforces one of them, [`TransferDeadline`], on HTTP request bodies.

pub mod deadline;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Deserialize;

/// `[limits]` in the config file. 0 means "no limit" for every key.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, schemars::JsonSchema, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Most simultaneous connections from one source address, per listener (MQTT, MQTT over
    /// WebSocket, HTTP, CoAP over TCP each count their own).
    pub max_connections_per_ip: usize,
    /// Most new connections per second per listener (token bucket, burst = the rate).
    pub connection_rate: u32,
    /// Most writes per second per client (an MQTT connection, an HTTP or CoAP source address):
    /// PUBLISH, PUT, POST, DELETE. Burst = `publish_burst`.
    pub publish_rate: u32,
    /// How many writes above the steady rate a client may make at once.
    pub publish_burst: u32,
    /// Most bytes of messages queued for subscribers at once, all queues together (MQTT
    /// sessions online and away, CoAP observers, SSE streams): past it, a subscriber's
    /// overflow policy applies as if its own queue were full. A message shared by many
    /// queues counts once. Unset: a quarter of the memory the process may use (RAM or
    /// cgroup limit, see [`crate::broker::budget::default_limit`]); 0: no limit.
    pub max_queued_bytes: Option<u64>,
}

impl LimitsConfig {
    /// The queued-bytes budget in force: `None` for no limit.
    pub fn queued_bytes_limit(&self) -> Option<usize> {
        match self.max_queued_bytes {
            None => Some(crate::broker::budget::default_limit()),
            Some(0) => None,
            Some(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
        }
    }
}

/// How long a transfer that has begun (an HTTP request body, a WebSocket frame) may take:
/// `timeout`, plus one second for every `min_rate` bytes received so far — Apache's
/// `mod_reqtimeout` rule. A peer that stalls is cut off after `timeout`; one that trickles
/// below `min_rate` falls behind its deadline; a large transfer at a reasonable rate is
/// never cut, however long it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferDeadline {
    /// The time allowed for a transfer that receives nothing more.
    pub timeout: Duration,
    /// Bytes per second that earn one more second (0: none).
    pub min_rate: u32,
}

impl TransferDeadline {
    /// When a transfer that started at `started` and has received `received` bytes must
    /// have finished.
    pub fn deadline(&self, started: Instant, received: u64) -> Instant {
        let earned = match self.min_rate {
            0 => Duration::ZERO,
            rate => Duration::from_secs(received / u64::from(rate)),
        };
        started + self.timeout + earned
    }
}

/// A token bucket: `rate` tokens per second, at most `burst` saved up.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Tokens added per second.
    rate: f64,
    /// Capacity.
    burst: f64,
    /// Tokens now (fractional: refills are continuous).
    tokens: f64,
    /// When `tokens` was last brought up to date.
    last: Instant,
}

impl TokenBucket {
    /// A full bucket. `burst` below 1 is raised to 1 so one request can ever pass.
    pub fn new(rate: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate: f64::from(rate),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Take one token, or say how long until one is available.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else if self.rate <= 0.0 {
            Err(Duration::MAX)
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

/// A per-client write limiter (one per MQTT connection; keyed by address for HTTP and CoAP
/// through [`RateLimiters`]). `None` inside when there is no limit, so the hot path is one
/// branch; boxed otherwise, so an MQTT connection without a limit carries a pointer, not
/// a bucket (issue 16).
#[derive(Debug, Clone)]
pub struct WriteLimiter(Option<Box<TokenBucket>>);

impl WriteLimiter {
    /// From the config, starting full.
    pub fn new(config: &LimitsConfig, now: Instant) -> Self {
        WriteLimiter((config.publish_rate > 0).then(|| {
            Box::new(TokenBucket::new(
                config.publish_rate,
                config.publish_burst.max(config.publish_rate),
                now,
            ))
        }))
    }

    /// Whether there is a limit at all (without one, [`WriteLimiter::check`] always
    /// allows, and the caller need not read the clock).
    pub fn is_limited(&self) -> bool {
        self.0.is_some()
    }

    /// May the client write now? `Err(wait)`: not for `wait`.
    pub fn check(&mut self, now: Instant) -> Result<(), Duration> {
        match &mut self.0 {
            None => Ok(()),
            Some(b) => b.take(now),
        }
    }
}

/// Write limiters keyed by source address, for the connectionless (CoAP) and
/// connection-per-request (HTTP) front-ends. Bounded: when `capacity` addresses are tracked,
/// the ones idle longest are forgotten (a forgotten address starts with a full bucket again,
/// which errs towards serving).
#[derive(Debug)]
pub struct RateLimiters {
    /// The configuration (rate 0: nothing is tracked at all).
    config: LimitsConfig,
    /// Address → bucket.
    buckets: Mutex<HashMap<IpAddr, TokenBucket>>,
    /// Most addresses tracked.
    capacity: usize,
    /// Writes refused, for `$SYS` and logs.
    pub refused: AtomicU64,
}

impl RateLimiters {
    /// Track at most `capacity` addresses.
    pub fn new(config: LimitsConfig, capacity: usize) -> Self {
        RateLimiters {
            config,
            buckets: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            refused: AtomicU64::new(0),
        }
    }

    /// May `ip` write now? `Err(wait)`: not for `wait`.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.config.publish_rate == 0 {
            return Ok(());
        }
        let mut buckets = self.buckets.lock();
        if !buckets.contains_key(&ip) && buckets.len() >= self.capacity {
            // Forget buckets that have refilled completely: they carry no information.
            let full = Duration::from_secs_f64(
                f64::from(self.config.publish_burst.max(self.config.publish_rate))
                    / f64::from(self.config.publish_rate),
            );
            buckets.retain(|_, b| now.saturating_duration_since(b.last) < full);
            if buckets.len() >= self.capacity {
                if let Some(oldest) = buckets.iter().min_by_key(|(_, b)| b.last).map(|(k, _)| *k) {
                    buckets.remove(&oldest);
                }
            }
        }
        let bucket = buckets.entry(ip).or_insert_with(|| {
            TokenBucket::new(
                self.config.publish_rate,
                self.config.publish_burst.max(self.config.publish_rate),
                now,
            )
        });
        let r = bucket.take(now);
        if r.is_err() {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
}

/// Why a connection was refused before any protocol work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnRefused {
    /// This address already holds `max_connections_per_ip` connections to the listener.
    #[error("{0} already has the most connections allowed per address")]
    PerIp(IpAddr),
    /// The listener accepted `connection_rate` connections in the last second.
    #[error("new connections arrive faster than the configured rate")]
    Rate,
}

/// One listener's admission control: connections per address and the rate of new ones.
#[derive(Debug)]
pub struct ConnectionGate {
    /// Per-address cap (0: none).
    per_ip: usize,
    /// Open connections per address (only tracked when `per_ip` > 0).
    open: Mutex<HashMap<IpAddr, usize>>,
    /// New-connection bucket (`None`: no rate limit).
    rate: Option<Mutex<TokenBucket>>,
    /// Connections refused, for `$SYS` and logs.
    pub refused: AtomicU64,
    /// Of those, refused by the connection rate (the rest: the per-address cap).
    pub refused_rate: AtomicU64,
}

/// Holds one admitted connection's place; dropping it frees the place.
#[derive(Debug)]
pub struct ConnPermit {
    /// The gate to give the place back to (`None` when nothing is tracked).
    gate: Option<(Arc<ConnectionGate>, IpAddr)>,
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        if let Some((gate, ip)) = self.gate.take() {
            let mut open = gate.open.lock();
            if let Some(n) = open.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    open.remove(&ip);
                }
            }
        }
    }
}

impl ConnectionGate {
    /// From the config.
    pub fn new(config: &LimitsConfig, now: Instant) -> Arc<Self> {
        Arc::new(ConnectionGate {
            per_ip: config.max_connections_per_ip,
            open: Mutex::new(HashMap::new()),
            rate: (config.connection_rate > 0).then(|| {
                Mutex::new(TokenBucket::new(
                    config.connection_rate,
                    config.connection_rate,
                    now,
                ))
            }),
            refused: AtomicU64::new(0),
            refused_rate: AtomicU64::new(0),
        })
    }

    /// Admit a connection from `ip`, or say why not. Keep the permit as long as the
    /// connection lives.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<ConnPermit, ConnRefused> {
        let r = self.try_admit(ip, now);
        if let Err(why) = &r {
            self.refused.fetch_add(1, Ordering::Relaxed);
            if *why == ConnRefused::Rate {
                self.refused_rate.fetch_add(1, Ordering::Relaxed);
            }
        }
        r
    }

    /// [`ConnectionGate::admit`] without the counting.
    fn try_admit(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<ConnPermit, ConnRefused> {
        if self.per_ip > 0 {
            let open = self.open.lock();
            if open.get(&ip).copied().unwrap_or(0) >= self.per_ip {
                return Err(ConnRefused::PerIp(ip));
            }
        }
        if let Some(rate) = &self.rate {
            rate.lock().take(now).map_err(|_| ConnRefused::Rate)?;
        }
        if self.per_ip == 0 {
            return Ok(ConnPermit { gate: None });
        }
        *self.open.lock().entry(ip).or_insert(0) += 1;
        Ok(ConnPermit {
            gate: Some((self.clone(), ip)),
        })
    }
}

/// How many addresses each front-end's [`RateLimiters`] tracks at most.
pub const TRACKED_ADDRESSES: usize = 10_000;

/// The gateway's limits at run time: every listener's [`ConnectionGate`] and every
/// front-end's write limiters, kept together so their refusals can be read in one place
/// ([`crate::Gateway::refused`], `$SYS/broker/.../refused`).
#[derive(Debug)]
pub struct Limits {
    /// The `[limits]` section, for the per-connection [`WriteLimiter`]s.
    pub config: LimitsConfig,
    /// The gates handed out so far, by listener name, so their counts can be summed.
    gates: Mutex<Vec<(&'static str, Arc<ConnectionGate>)>>,
    /// HTTP writes per source address (HTTP and HTTPS count together).
    pub http: Arc<RateLimiters>,
    /// CoAP writes per source address (UDP, TCP and DTLS count together).
    pub coap: Arc<RateLimiters>,
    /// MQTT PUBLISHes refused (v5) or held back (3.1.1) because their connection wrote
    /// faster than `publish_rate`: each connection has its own [`WriteLimiter`].
    pub mqtt_writes_refused: AtomicU64,
    /// `[http] max_connections`: one place per connection to the HTTP and HTTPS listeners
    /// together (`None`: no limit). Refusals are counted by the listener's gate.
    pub http_slots: Option<Arc<tokio::sync::Semaphore>>,
}

/// A snapshot of what the limits refused since the start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Refused {
    /// Connections refused by each listener (`"mqtt"`, `"mqtts"`, `"mqtt-ws"`,
    /// `"mqtt-wss"`, `"http"`, `"https"`, `"coap-tcp"`), per-address cap, rate and the
    /// listener's connection cap together.
    pub connections: Vec<(&'static str, u64)>,
    /// HTTP writes answered 429.
    pub http_writes: u64,
    /// CoAP writes answered 5.03.
    pub coap_writes: u64,
    /// MQTT PUBLISHes refused or throttled.
    pub mqtt_writes: u64,
}

impl Refused {
    /// Connections refused by every listener together.
    pub fn connections_total(&self) -> u64 {
        self.connections.iter().map(|(_, n)| n).sum()
    }

    /// Connections refused by `listener` (0 for a listener that does not run).
    pub fn connections_of(&self, listener: &str) -> u64 {
        self.connections
            .iter()
            .filter(|(l, _)| *l == listener)
            .map(|(_, n)| n)
            .sum()
    }

    /// Writes refused or throttled in every protocol together.
    pub fn writes_total(&self) -> u64 {
        self.http_writes + self.coap_writes + self.mqtt_writes
    }
}

impl Limits {
    /// From the `[limits]` section.
    pub fn new(config: LimitsConfig) -> Arc<Self> {
        Arc::new(Self::build(config))
    }

    /// The limits of `config`, without a cap on HTTP connections.
    fn build(config: LimitsConfig) -> Self {
        Limits {
            http: Arc::new(RateLimiters::new(config.clone(), TRACKED_ADDRESSES)),
            coap: Arc::new(RateLimiters::new(config.clone(), TRACKED_ADDRESSES)),
            config,
            gates: Mutex::new(Vec::new()),
            mqtt_writes_refused: AtomicU64::new(0),
            http_slots: None,
        }
    }

    /// From the `[limits]` section, with `[http] max_connections` (0: no limit).
    pub fn with_http_cap(config: LimitsConfig, http_max_connections: usize) -> Arc<Self> {
        let mut l = Self::build(config);
        l.http_slots = (http_max_connections > 0)
            .then(|| Arc::new(tokio::sync::Semaphore::new(http_max_connections)));
        Arc::new(l)
    }

    /// A new gate for the listener called `listener` (each listener has its own).
    pub fn gate(&self, listener: &'static str) -> Arc<ConnectionGate> {
        let gate = ConnectionGate::new(&self.config, Instant::now());
        self.gates.lock().push((listener, gate.clone()));
        gate
    }

    /// Connections refused per listener and reason: `(listener, per-address cap, rate)`.
    pub fn refused_by_reason(&self) -> Vec<(&'static str, u64, u64)> {
        self.gates
            .lock()
            .iter()
            .map(|(l, g)| {
                let all = g.refused.load(Ordering::Relaxed);
                let rate = g.refused_rate.load(Ordering::Relaxed);
                (*l, all.saturating_sub(rate), rate)
            })
            .collect()
    }

    /// A write limiter for one new MQTT connection.
    pub fn write_limiter(&self) -> WriteLimiter {
        WriteLimiter::new(&self.config, Instant::now())
    }

    /// What was refused so far.
    pub fn refused(&self) -> Refused {
        Refused {
            connections: self
                .gates
                .lock()
                .iter()
                .map(|(l, g)| (*l, g.refused.load(Ordering::Relaxed)))
                .collect(),
            http_writes: self.http.refused.load(Ordering::Relaxed),
            coap_writes: self.coap.refused.load(Ordering::Relaxed),
            mqtt_writes: self.mqtt_writes_refused.load(Ordering::Relaxed),
        }
    }
}

/// `wait` in whole seconds, rounded up and at least 1: what `Retry-After` and CoAP's
/// Max-Age carry.
pub fn whole_seconds(wait: Duration) -> u64 {
    if wait == Duration::MAX {
        return u64::from(u32::MAX);
    }
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn bucket_refills_continuously_up_to_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 3, t0);
        for _ in 0..3 {
            b.take(t0).unwrap();
        }
        let wait = b.take(t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        b.take(t0 + Duration::from_millis(100)).unwrap();
        assert!(b.take(t0 + Duration::from_millis(100)).is_err());
        // A long idle period saves up only `burst`.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            b.take(later).unwrap();
        }
        assert!(b.take(later).is_err());
    }

    #[test]
    fn per_ip_cap_is_per_address_and_freed_on_drop() {
        let t0 = Instant::now();
        let cfg = LimitsConfig {
            max_connections_per_ip: 2,
            ..LimitsConfig::default()
        };
        let gate = ConnectionGate::new(&cfg, t0);
        let a = gate.admit(ip(1), t0).unwrap();
        let _b = gate.admit(ip(1), t0).unwrap();
        assert_eq!(
            gate.admit(ip(1), t0).unwrap_err(),
            ConnRefused::PerIp(ip(1))
        );
        let _c = gate.admit(ip(2), t0).unwrap();
        drop(a);
        let _d = gate.admit(ip(1), t0).unwrap();
        assert_eq!(gate.refused.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn connection_rate_refuses_beyond_the_burst() {
        let t0 = Instant::now();
        let cfg = LimitsConfig {
            connection_rate: 2,
            ..LimitsConfig::default()
        };
        let gate = ConnectionGate::new(&cfg, t0);
        let _a = gate.admit(ip(1), t0).unwrap();
        let _b = gate.admit(ip(2), t0).unwrap();
        assert_eq!(gate.admit(ip(3), t0).unwrap_err(), ConnRefused::Rate);
        gate.admit(ip(3), t0 + Duration::from_millis(500)).unwrap();
    }

    #[test]
    fn a_transfer_earns_a_second_per_min_rate_bytes() {
        let t0 = Instant::now();
        let d = TransferDeadline {
            timeout: Duration::from_secs(30),
            min_rate: 500,
        };
        assert_eq!(d.deadline(t0, 0), t0 + Duration::from_secs(30));
        assert_eq!(d.deadline(t0, 1499), t0 + Duration::from_secs(32));
        let strict = TransferDeadline { min_rate: 0, ..d };
        assert_eq!(strict.deadline(t0, 1 << 30), t0 + Duration::from_secs(30));
    }

    #[test]
    fn waits_round_up_to_whole_seconds() {
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1001)), 2);
        assert_eq!(whole_seconds(Duration::from_secs(3)), 3);
        assert_eq!(whole_seconds(Duration::ZERO), 1);
    }

    #[test]
    fn no_limits_track_nothing() {
        let t0 = Instant::now();
        let gate = ConnectionGate::new(&LimitsConfig::default(), t0);
        let permits: Vec<_> = (0..1000).map(|_| gate.admit(ip(1), t0).unwrap()).collect();
        assert!(gate.open.lock().is_empty());
        drop(permits);
        let mut w = WriteLimiter::new(&LimitsConfig::default(), t0);
        for _ in 0..1000 {
            w.check(t0).unwrap();
        }
    }

    #[test]
    fn per_address_write_limits_are_bounded_in_memory() {
        let t0 = Instant::now();
        let cfg = LimitsConfig {
            publish_rate: 1,
            publish_burst: 1,
            ..LimitsConfig::default()
        };
        let l = RateLimiters::new(cfg, 4);
        l.check(ip(1), t0).unwrap();
        assert!(l.check(ip(1), t0).is_err());
        for n in 2..=10 {
            l.check(ip(n), t0).unwrap();
        }
        assert!(l.buckets.lock().len() <= 4);
        assert_eq!(l.refused.load(Ordering::Relaxed), 1);
    }
}
