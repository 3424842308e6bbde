//! What every scenario reports: counts, throughput, a latency summary, and the server's and
//! the generator's resource use, printable as one human line or as JSON.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latency percentiles in microseconds, from an HDR histogram of nanoseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Number of recorded samples (may be fewer than deliveries when sampling is partial).
    pub samples: u64,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile: the latency target is stated on it.
    pub p99_us: f64,
    /// 99.9th percentile: the tail a single slow fsync or GC pause shows up in.
    pub p999_us: f64,
    /// Worst sample.
    pub max_us: f64,
}

impl Latency {
    /// Summarise a histogram of nanoseconds; `None` when it is empty.
    pub fn from_hist(h: &Histogram<u64>) -> Option<Latency> {
        if h.is_empty() {
            return None;
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Some(Latency {
            samples: h.len(),
            p50_us: us(h.value_at_quantile(0.50)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        })
    }
}

/// A fresh latency histogram: 1 ns to 120 s at 3 significant digits.
pub(crate) fn new_hist() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts; this cannot fail.
    Histogram::new_with_bounds(1, 120_000_000_000, 3).expect("static histogram bounds")
}

/// The outcome of one scenario run against one server.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Scenario name, e.g. `mqtt-1to1-qos1`; the comparison script keys ratios on it.
    pub scenario: String,
    /// Free-form label of the server under test (`ponte`, `mosquitto`, …).
    pub target: String,
    /// The parameters that define the scenario, for reproducing it.
    pub params: serde_json::Value,
    /// Operations the generator issued (publishes, requests).
    pub sent: u64,
    /// Deliveries or successful answers the generator should have seen.
    pub expected: u64,
    /// Deliveries or successful answers it did see.
    pub delivered: u64,
    /// Failed operations (error status, timeout, refused connection).
    pub errors: u64,
    /// Wall time of the measured phase in seconds.
    pub seconds: f64,
    /// Issued operations per second (publish rate, request rate).
    pub sent_per_s: f64,
    /// Deliveries (or successful answers) per second: the headline throughput.
    pub delivered_per_s: f64,
    /// End-to-end latency of the deliveries (or request round trips).
    pub latency: Option<Latency>,
    /// Server peak RSS during the scenario (VmHWM after a reset, KiB), when its pid is known.
    pub server_peak_rss_kib: Option<u64>,
    /// Server RSS at the end of the scenario (KiB).
    pub server_rss_kib: Option<u64>,
    /// Server CPU time (user + system) spent during the scenario, seconds.
    pub server_cpu_s: Option<f64>,
    /// The generator's own CPU time during the scenario: near `seconds × cores` means the
    /// generator, not the server, was the bottleneck.
    pub loadgen_cpu_s: f64,
    /// Whether the run met its own definition of success (no drop, no error, not cut short).
    pub ok: bool,
    /// Why it failed, when it did.
    pub failure: Option<String>,
    /// Extra measurements specific to the scenario (observer counts, per-connection RSS…).
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Report {
    /// A report with counts filled in; resource fields are added by the caller.
    pub fn new(scenario: &str, target: &str, params: serde_json::Value) -> Report {
        Report {
            scenario: scenario.to_string(),
            target: target.to_string(),
            params,
            sent: 0,
            expected: 0,
            delivered: 0,
            errors: 0,
            seconds: 0.0,
            sent_per_s: 0.0,
            delivered_per_s: 0.0,
            latency: None,
            server_peak_rss_kib: None,
            server_rss_kib: None,
            server_cpu_s: None,
            loadgen_cpu_s: 0.0,
            ok: true,
            failure: None,
            extra: serde_json::Map::new(),
        }
    }

    /// Set the duration and derive the rates.
    pub fn set_duration(&mut self, d: Duration) {
        let s = d.as_secs_f64().max(1e-9);
        self.seconds = s;
        self.sent_per_s = self.sent as f64 / s;
        self.delivered_per_s = self.delivered as f64 / s;
    }

    /// Mark the run failed, keeping the first reason and appending later ones.
    pub fn fail(&mut self, why: impl Into<String>) {
        let why = why.into();
        self.ok = false;
        self.failure = Some(match self.failure.take() {
            Some(prev) => format!("{prev}; {why}"),
            None => why,
        });
    }

    /// Fail when fewer deliveries than expected arrived.
    pub fn check_delivery(&mut self) {
        if self.delivered < self.expected {
            let missing = self.expected - self.delivered;
            self.fail(format!(
                "DROPPED {missing} of {} ({:.3}%)",
                self.expected,
                100.0 * missing as f64 / self.expected.max(1) as f64
            ));
        }
        if self.errors > 0 {
            self.fail(format!("{} operations failed", self.errors));
        }
    }

    /// One human-readable line.
    pub fn human(&self) -> String {
        let lat = match &self.latency {
            Some(l) => format!(
                "p50 {:>8.0}µs p99 {:>8.0}µs p99.9 {:>8.0}µs",
                l.p50_us, l.p99_us, l.p999_us
            ),
            None => format!("{:>52}", "no latency samples"),
        };
        let rss = match (self.server_peak_rss_kib, self.server_rss_kib) {
            (Some(p), Some(r)) => format!(
                " rss peak {:.1}MiB now {:.1}MiB",
                p as f64 / 1024.0,
                r as f64 / 1024.0
            ),
            _ => String::new(),
        };
        let cpu = match self.server_cpu_s {
            Some(c) => format!(" cpu server {c:.2}s loadgen {:.2}s", self.loadgen_cpu_s),
            None => format!(" cpu loadgen {:.2}s", self.loadgen_cpu_s),
        };
        let status = if self.ok {
            "ok".to_string()
        } else {
            format!("FAIL: {}", self.failure.as_deref().unwrap_or("?"))
        };
        let extra = if self.extra.is_empty() {
            String::new()
        } else {
            format!(" {}", serde_json::Value::Object(self.extra.clone()))
        };
        format!(
            "{:<10} {:<28} {:>11.0}/s delivered {}/{} in {:.2}s {lat}{rss}{cpu} {status}{extra}",
            self.target,
            self.scenario,
            self.delivered_per_s,
            self.delivered,
            self.expected,
            self.seconds,
        )
    }
}
