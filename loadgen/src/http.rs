//! HTTP scenarios (reqwest over keep-alive connections): GET and PUT load from C concurrent
//! connections, and the cross-protocol path HTTP PUT → MQTT subscriber (+ CoAP observer)
//! at a fixed rate, which is where the "p99 under 2 ms at 10k PUT/s" target is measured.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use bytes::BytesMut;
use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{sleep_until, timeout, Instant};

use crate::mqtt::{self, Conn};
use crate::report::{new_hist, Latency, Report};
use crate::tally::{join_all, requests_report, Phases, RequestLoad, Tally};
use crate::Ctx;

/// Parameters of an HTTP GET or PUT run.
#[derive(Debug, Clone, Args, serde::Serialize)]
pub(crate) struct HttpArgs {
    /// Base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    pub http: String,
    /// Concurrent keep-alive connections, one request outstanding each.
    #[arg(long, default_value_t = 50)]
    pub connections: usize,
    /// Length, request count and body size.
    #[command(flatten)]
    #[serde(flatten)]
    pub load: RequestLoad,
    /// Topic prefix.
    #[arg(long, default_value = "loadgen")]
    pub prefix: String,
}

fn client(connections: usize) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(5))
        .build()?)
}

/// Run HTTP GET (`put == false`) or PUT load.
pub(crate) async fn run(put: bool, args: &HttpArgs, ctx: &Ctx) -> Result<Report> {
    let name = if put { "http-put" } else { "http-get" };
    let report = Report::new(name, &ctx.target, serde_json::to_value(args)?);
    let http = client(args.connections)?;
    let base = format!(
        "{}/resources/{}/{}",
        args.http.trim_end_matches('/'),
        args.prefix,
        crate::pubsub::run_id()
    );
    let body = vec![b'v'; args.load.size];
    for i in 0..args.connections {
        let r = http
            .put(format!("{base}/{i}"))
            .body(body.clone())
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("seeding PUT {base}/{i} answered {}", r.status());
        }
    }
    let before = ctx.begin();
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(args.load.seconds);
    let mut tasks = JoinSet::new();
    for i in 0..args.connections {
        let (http, url, body, limit) = (
            http.clone(),
            format!("{base}/{i}"),
            body.clone(),
            args.load.requests,
        );
        tasks.spawn(async move {
            let mut r = Tally::new();
            while Instant::now() < end && (limit == 0 || r.sent() < limit) {
                let t0 = r.issue();
                let req = if put {
                    http.put(&url).body(body.clone())
                } else {
                    http.get(&url)
                };
                let res = match req.send().await {
                    Ok(resp) => {
                        let status = resp.status();
                        match resp.bytes().await {
                            Ok(_) if status.is_success() => Ok(()),
                            Ok(_) => Err(format!("status {status}")),
                            Err(e) => Err(e.to_string()),
                        }
                    }
                    Err(e) => Err(e.to_string()),
                };
                match res {
                    Ok(()) => r.answered(t0),
                    Err(e) => r.failed(e),
                }
            }
            r
        });
    }
    let hard = end + Duration::from_secs(7);
    let report = requests_report(report, tasks, hard, "connection", started, ctx, before);
    Ok(report.await)
}

/// Parameters of the HTTP PUT → MQTT (+ CoAP observe) run.
#[derive(Debug, Clone, Args, serde::Serialize)]
pub(crate) struct CrossArgs {
    /// Base URL of the server.
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    pub http: String,
    /// MQTT address of the same server.
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub mqtt: SocketAddr,
    /// Also observe the first topic over CoAP at this address.
    #[arg(long)]
    pub coap_observe: Option<SocketAddr>,
    /// Subscription QoS of the MQTT subscriber.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,
    /// Total PUT rate (0 = as fast as the connections go).
    #[arg(long, default_value_t = 10_000.0)]
    pub rate: f64,
    /// Total PUTs.
    #[arg(long, default_value_t = 50_000)]
    pub messages: u64,
    /// Concurrent HTTP connections (each has its own topic).
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Body size (at least 8: the timestamp).
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// When PUTs stop and how long the subscriber may take for the rest.
    #[command(flatten)]
    #[serde(flatten)]
    pub phases: Phases,
    /// Topic prefix.
    #[arg(long, default_value = "loadgen")]
    pub prefix: String,
}

/// HTTP PUTs at a fixed rate; one MQTT subscriber on all the topics, optionally one CoAP
/// observer on the first. Latency is from just before the PUT is issued to the delivery.
pub(crate) async fn cross(args: &CrossArgs, ctx: &Ctx) -> Result<Report> {
    let scenario = if args.rate > 0.0 {
        format!("http-mqtt-{}rps", args.rate as u64)
    } else {
        "http-mqtt-max".into()
    };
    let mut report = Report::new(&scenario, &ctx.target, serde_json::to_value(args)?);
    let id = crate::pubsub::run_id();
    let base = format!("{}/{id}", args.prefix);
    let http = client(args.connections)?;
    let url = format!("{}/resources/{base}", args.http.trim_end_matches('/'));
    let setup = Instant::now() + Duration::from_secs(10);
    // Seed topic 0 so a CoAP observation has something to register on.
    let seed = http
        .put(format!("{url}/0"))
        .body(vec![0u8; args.size.max(8)])
        .send()
        .await?;
    if !seed.status().is_success() {
        bail!("seeding PUT answered {}", seed.status());
    }
    let mut sub = Conn::open(args.mqtt, None, &format!("lg-x-{id}"), 0, setup).await?;
    sub.subscribe(&format!("{base}/#"), args.qos, setup).await?;
    // The seed is retained: drop it (and anything else already buffered) before measuring.
    tokio::time::sleep(Duration::from_millis(100)).await;
    sub.buf.clear();
    let (stop_tx, stop_rx) = watch::channel(false);
    let observer = match args.coap_observe {
        Some(addr) => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let h = tokio::spawn(crate::coap::observe(
                addr,
                format!("{base}/0"),
                tx,
                stop_rx.clone(),
            ));
            match timeout(Duration::from_secs(6), rx).await {
                Ok(Ok(Ok(()))) => Some(h),
                Ok(Ok(Err(e))) => bail!("CoAP observe: {e}"),
                _ => bail!("CoAP observe did not register"),
            }
        }
        None => None,
    };
    let before = ctx.begin();
    let received = Arc::new(AtomicU64::new(0));
    let sub_task = {
        let (received, mut stop) = (received.clone(), stop_rx.clone());
        tokio::spawn(async move {
            let mut hist = new_hist();
            let mut acks = BytesMut::new();
            let mut error: Option<String>;
            loop {
                let (got, e) = mqtt::take_publishes(&mut sub.buf, &mut hist, &mut acks);
                error = e.map(|e| e.to_string());
                received.fetch_add(got, Ordering::Relaxed);
                if !acks.is_empty() {
                    if sub.wr.write_all(&acks).await.is_err() {
                        error.get_or_insert("writing PUBACKs failed".into());
                    }
                    acks.clear();
                }
                if error.is_some() {
                    break;
                }
                tokio::select! {
                    n = sub.rd.read_buf(&mut sub.buf) => match n {
                        Ok(0) => { error = Some("broker closed the subscriber".into()); break; }
                        Ok(_) => {}
                        Err(e) => { error = Some(e.to_string()); break; }
                    },
                    _ = stop.changed() => break,
                }
            }
            (hist, error)
        })
    };
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.phases.max_seconds);
    let per_conn = args.messages / args.connections.max(1) as u64;
    let per_rate = args.rate / args.connections.max(1) as f64;
    let mut tasks = JoinSet::new();
    for c in 0..args.connections {
        let (http, url, size) = (http.clone(), format!("{url}/{c}"), args.size.max(8));
        let conns = args.connections.max(1) as f64;
        tasks.spawn(async move {
            let mut r = Tally::new();
            let mut body = vec![b'x'; size];
            while r.sent() < per_conn && Instant::now() < deadline {
                if per_rate > 0.0 {
                    // Stagger connections so they do not fire in lockstep.
                    let offset = c as f64 / (conns * per_rate);
                    let at = started + Duration::from_secs_f64(r.sent() as f64 / per_rate + offset);
                    sleep_until(at).await;
                }
                let t0 = r.issue();
                body[..8].copy_from_slice(&t0.to_be_bytes());
                match http.put(&url).body(body.clone()).send().await {
                    Ok(resp) if resp.status().is_success() => r.answered(t0),
                    Ok(resp) => r.failed(format!("status {}", resp.status())),
                    Err(e) => r.failed(e.to_string()),
                }
            }
            r
        });
    }
    let mut put_hist = new_hist();
    let hard = deadline + Duration::from_secs(7);
    join_all(&mut tasks, hard, "PUT", &mut report, |report, r| {
        report.expected += r.add_to(report, &mut put_hist);
    })
    .await;
    let puts_done = started.elapsed();
    let drain = Instant::now() + Duration::from_secs(args.phases.drain_seconds);
    while received.load(Ordering::Relaxed) < report.expected && Instant::now() < drain {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = stop_tx.send(true);
    match timeout(Duration::from_secs(3), sub_task).await {
        Ok(Ok((hist, error))) => {
            report.latency = Latency::from_hist(&hist);
            if let Some(e) = error {
                report.fail(format!("subscriber: {e}"));
            }
        }
        _ => report.fail("subscriber did not stop"),
    }
    report.delivered = received.load(Ordering::Relaxed);
    if let Some(h) = observer {
        match timeout(Duration::from_secs(3), h).await {
            Ok(Ok(o)) => {
                report
                    .extra
                    .insert("coap_notifications".into(), o.notifications.into());
                if let Some(l) = Latency::from_hist(&o.hist) {
                    report
                        .extra
                        .insert("coap_latency".into(), serde_json::to_value(l)?);
                }
                if let Some(e) = o.error {
                    report.fail(format!("CoAP observer: {e}"));
                }
                if o.notifications == 0 {
                    report.fail("CoAP observer got no notification");
                }
            }
            _ => report.fail("CoAP observer did not stop"),
        }
    }
    if let Some(l) = Latency::from_hist(&put_hist) {
        report
            .extra
            .insert("put_latency".into(), serde_json::to_value(l)?);
    }
    report.set_duration(puts_done);
    report.check_delivery();
    ctx.end(&mut report, before);
    Ok(report)
}
