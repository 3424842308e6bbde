//! `ponte-loadgen`: drive ponte (or mosquitto, or the original Ponte) with MQTT, HTTP and
//! CoAP load and report throughput, latency percentiles, delivered vs expected and the
//! server's peak RSS. Every phase is bounded in time; a missing delivery is reported as a
//! failure (and a non-zero exit status), never waited for forever.
//!
//! ```text
//! ponte-loadgen --server-pid $(pidof ponte) mqtt --pubs 1 --subs 1 --qos 1 --messages 100000
//! ponte-loadgen --json http-get --connections 50 --seconds 5
//! ponte-loadgen smoke --ponte-bin target/debug/ponte        # CI: spawn, run tiny loads, check
//! ponte-loadgen --server-pid $(pidof ponte) stall --messages 200000   # stalled readers' memory
//! ponte-loadgen --server-pid $(pidof ponte) slow-body --clients 500   # bodies that never arrive
//! ponte-loadgen --server-pid $(pidof ponte) dtls-flood --hellos 5000  # ClientHellos of strangers
//! ponte-loadgen ceiling --listen 127.0.0.1:3100                      # the bare-axum HTTP ceiling
//! ```

mod ceiling;
mod coap;
mod dtlsflood;
mod http;
mod mqtt;
mod procfs;
mod pubsub;
mod report;
mod slowbody;
mod smoke;
mod stall;
mod tally;

use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::Instant;

use clap::{Parser, Subcommand};

use report::Report;

/// The instant all payload timestamps count from.
static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the generator started: the timestamp written into payloads.
pub fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Load generator for ponte and its peers.
#[derive(Debug, Parser)]
#[command(name = "ponte-loadgen", version, about)]
struct Cli {
    /// Print reports as JSON (one array) instead of text lines.
    #[arg(long, global = true)]
    json: bool,
    /// pid of the server, to report its peak RSS and CPU time.
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// Label of the server under test in the report.
    #[arg(long, global = true, default_value = "ponte")]
    target: String,
    /// Scenario name override in the report.
    #[arg(long, global = true)]
    name: Option<String>,
    /// Worker threads of the generator's runtime (default: the CPUs it may run on).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// What to run.
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// MQTT publishers → subscribers (1→1, fan-in, fan-out, many-to-many; QoS 0/1).
    Mqtt(pubsub::PubSubArgs),
    /// Hold N idle MQTT connections and report the server's RSS per connection.
    Idle(pubsub::IdleArgs),
    /// HTTP GET load.
    HttpGet(http::HttpArgs),
    /// HTTP PUT load.
    HttpPut(http::HttpArgs),
    /// HTTP PUT → MQTT subscriber (and CoAP observer) latency at a fixed rate.
    HttpMqtt(http::CrossArgs),
    /// CoAP GET load.
    CoapGet(coap::CoapArgs),
    /// CoAP PUT load.
    CoapPut(coap::CoapArgs),
    /// Stalled CoAP/TCP observers, MQTT subscribers and SSE streams under a flood of
    /// publishes: the server's peak RSS, and its RSS once they left (issue 16).
    Stall(stall::StallArgs),
    /// Request bodies that never finish arriving, against the server's body deadline:
    /// normal requests' latency during it, descriptors after (issue 16).
    SlowBody(slowbody::SlowBodyArgs),
    /// A flood of DTLS ClientHellos at the coaps port: sessions held, and a real client's
    /// handshake right after (issue 16).
    DtlsFlood(dtlsflood::DtlsFloodArgs),
    /// Serve the HTTP ceiling: a bare axum "hello" (GET) / "echo length" (PUT) server on
    /// the same runtime and build profile as ponte, until killed.
    Ceiling(ceiling::CeilingArgs),
    /// Spawn `ponte --memory` on random ports and run every scenario at a tiny size (CI).
    Smoke(smoke::SmokeArgs),
}

/// What every scenario needs to know about the run.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Label of the server.
    pub target: String,
    /// Its pid, as a `/proc` path component.
    pub pid: Option<String>,
}

/// Counters at the start of a measured phase.
#[derive(Debug, Clone, Copy)]
pub struct Before {
    /// Server CPU seconds so far.
    server_cpu: Option<f64>,
    /// Generator CPU seconds so far.
    self_cpu: Option<f64>,
    /// Whether the server's peak RSS could be reset.
    peak_reset: bool,
}

impl Ctx {
    /// Snapshot counters (and reset the server's peak RSS) before the measured phase.
    pub fn begin(&self) -> Before {
        let peak_reset = self.pid.as_deref().is_some_and(procfs::reset_peak);
        Before {
            server_cpu: self.pid.as_deref().and_then(|p| procfs::sample(p).cpu_s),
            self_cpu: procfs::sample("self").cpu_s,
            peak_reset,
        }
    }

    /// Fill in resource use after the measured phase.
    pub fn end(&self, r: &mut Report, b: Before) {
        if let Some(pid) = &self.pid {
            let s = procfs::sample(pid);
            r.server_peak_rss_kib = s.hwm_kib;
            r.server_rss_kib = s.rss_kib;
            r.server_cpu_s = s.cpu_s.zip(b.server_cpu).map(|(a, b)| a - b);
            if !b.peak_reset {
                r.extra
                    .insert("peak_rss_since".into(), "process start".into());
            }
        }
        r.loadgen_cpu_s = procfs::sample("self")
            .cpu_s
            .zip(b.self_cpu)
            .map_or(0.0, |(a, b)| a - b);
    }
}

fn print(reports: &[Report], json: bool) {
    if json {
        match serde_json::to_string_pretty(reports) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("ponte-loadgen: cannot serialise the report: {e}"),
        }
    } else {
        for r in reports {
            println!("{}", r.human());
        }
    }
}

async fn dispatch(cli: &Cli) -> anyhow::Result<Vec<Report>> {
    let ctx = Ctx {
        target: cli.target.clone(),
        pid: cli.server_pid.map(|p| p.to_string()),
    };
    let mut r = match &cli.cmd {
        Cmd::Mqtt(a) => {
            let default = format!(
                "mqtt-{}to{}-qos{}{}",
                a.pubs,
                a.subs,
                a.qos,
                if a.retain { "-retain" } else { "" }
            );
            pubsub::run(&default, a, &ctx).await?
        }
        Cmd::Idle(a) => pubsub::idle(a, &ctx).await?,
        Cmd::HttpGet(a) => http::run(false, a, &ctx).await?,
        Cmd::HttpPut(a) => http::run(true, a, &ctx).await?,
        Cmd::HttpMqtt(a) => http::cross(a, &ctx).await?,
        Cmd::CoapGet(a) => coap::run(false, a, &ctx).await?,
        Cmd::CoapPut(a) => coap::run(true, a, &ctx).await?,
        Cmd::Stall(a) => stall::run(a, &ctx).await?,
        Cmd::SlowBody(a) => slowbody::run(a, &ctx).await?,
        Cmd::DtlsFlood(a) => dtlsflood::run(a, &ctx).await?,
        Cmd::Ceiling(a) => {
            ceiling::serve(a).await?;
            return Ok(Vec::new());
        }
        Cmd::Smoke(a) => return smoke::run(a).await,
    };
    if let Some(n) = &cli.name {
        r.scenario = n.clone();
    }
    Ok(vec![r])
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    now_ns();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(t) = cli.threads {
        rt.worker_threads(t.max(1));
    }
    let rt = match rt.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ponte-loadgen: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(&cli)) {
        Ok(reports) => {
            print(&reports, cli.json);
            if reports.iter().all(|r| r.ok) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("ponte-loadgen: {e:#}");
            ExitCode::from(2)
        }
    }
}
