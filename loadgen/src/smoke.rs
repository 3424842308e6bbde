//! The CI smoke run: spawn `ponte --memory` on random ports, run each scenario at a tiny
//! size, and fail (non-zero exit) on any drop or error. Bounded: the spawn waits at most
//! 15 s for the listening line and every scenario has its own time cap.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::timeout;

use crate::report::Report;
use crate::tally::{Phases, RequestLoad};
use crate::{coap, http, pubsub, Ctx};

/// Parameters of the smoke run.
#[derive(Debug, Clone, Args)]
pub(crate) struct SmokeArgs {
    /// The ponte binary to spawn.
    #[arg(long, default_value = "target/debug/ponte")]
    pub ponte_bin: PathBuf,
    /// Messages per publisher in the MQTT scenarios.
    #[arg(long, default_value_t = 100)]
    pub messages: u64,
}

/// Remove ANSI colour sequences (tracing colours its fields when it thinks it may).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn field(line: &str, key: &str) -> Result<std::net::SocketAddr> {
    let v = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .ok_or_else(|| anyhow!("no {key} in {line:?}"))?;
    v.parse().with_context(|| format!("{key}{v}"))
}

/// The spawned server; killed when dropped.
struct Server {
    /// The child process (kill_on_drop).
    child: Child,
    /// Listening addresses read from its log.
    http: std::net::SocketAddr,
    /// CoAP socket.
    coap: std::net::SocketAddr,
    /// MQTT listener.
    mqtt: std::net::SocketAddr,
}

async fn spawn(bin: &PathBuf) -> Result<Server> {
    let mut child = Command::new(bin)
        .args([
            "--memory",
            "--host",
            "127.0.0.1",
            "-p",
            "0",
            "-a",
            "0",
            "-m",
            "0",
        ])
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        // A slow body is given up on after 1 s, so the slow-body scenario is quick.
        .env("PONTE_HTTP_BODY_TIMEOUT_SECS", "1")
        .stdout(Stdio::null())
        // ponte logs to stderr (issue 12): the listening line is read there.
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("spawning {}", bin.display()))?;
    let log = child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?;
    let mut lines = BufReader::new(log).lines();
    let line = timeout(Duration::from_secs(15), async {
        while let Some(l) = lines.next_line().await? {
            let l = strip_ansi(&l);
            if l.contains("ponte listening") {
                return Ok(l);
            }
        }
        bail!("ponte exited before listening")
    })
    .await
    .map_err(|_| anyhow!("ponte did not report its ports within 15 s"))??;
    // Keep draining its log so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Server {
        http: field(&line, "http=")?,
        coap: field(&line, "coap=")?,
        mqtt: field(&line, "mqtt=")?,
        child,
    })
}

/// Spawn ponte and run every scenario small; all reports must be ok.
pub(crate) async fn run(a: &SmokeArgs) -> Result<Vec<Report>> {
    let mut server = spawn(&a.ponte_bin).await?;
    let ctx = Ctx {
        target: "ponte".into(),
        pid: server.child.id().map(|p| p.to_string()),
    };
    let mq = |pubs, subs, qos| pubsub::PubSubArgs {
        mqtt: server.mqtt,
        pubs,
        subs,
        qos,
        sub_qos: None,
        size: 100,
        messages: a.messages,
        rate: 0.0,
        inflight: 20,
        window: 100,
        retain: false,
        persistent_subs: false,
        phases: Phases {
            max_seconds: 5,
            drain_seconds: 3,
        },
        prefix: "smoke".into(),
    };
    let mut reports = vec![
        pubsub::run("mqtt-1to1-qos0", &mq(1, 1, 0), &ctx).await?,
        pubsub::run("mqtt-2to2-qos1", &mq(2, 2, 1), &ctx).await?,
    ];
    let mut retained = mq(1, 1, 1);
    retained.retain = true;
    reports.push(pubsub::run("mqtt-1to1-qos1-retain", &retained, &ctx).await?);
    let load = RequestLoad {
        seconds: 2.0,
        requests: 25,
        size: 100,
    };
    let h = |connections| http::HttpArgs {
        http: format!("http://{}", server.http),
        connections,
        load: load.clone(),
        prefix: "smoke".into(),
    };
    reports.push(http::run(false, &h(4), &ctx).await?);
    reports.push(http::run(true, &h(4), &ctx).await?);
    let c = coap::CoapArgs {
        coap: server.coap,
        clients: 4,
        load,
        timeout_ms: 2000,
        prefix: "smoke".into(),
    };
    reports.push(coap::run(false, &c, &ctx).await?);
    reports.push(coap::run(true, &c, &ctx).await?);
    let x = http::CrossArgs {
        http: format!("http://{}", server.http),
        mqtt: server.mqtt,
        coap_observe: Some(server.coap),
        qos: 1,
        rate: 200.0,
        messages: 100,
        connections: 4,
        size: 100,
        phases: Phases {
            max_seconds: 5,
            drain_seconds: 3,
        },
        prefix: "smoke".into(),
    };
    reports.push(http::cross(&x, &ctx).await?);
    let slow = crate::slowbody::SlowBodyArgs {
        http: server.http,
        clients: 5,
        length: 1000,
        trickle_ms: 200,
        probe_interval_ms: 20,
        // A debug build on a busy CI machine: the 100 ms of the benchmark is not the point.
        max_probe_ms: 0,
        settle_seconds: 1,
        max_seconds: 10,
    };
    reports.push(crate::slowbody::run(&slow, &ctx).await?);
    let _ = server.child.start_kill();
    let _ = timeout(Duration::from_secs(3), server.child.wait()).await;
    Ok(reports)
}
