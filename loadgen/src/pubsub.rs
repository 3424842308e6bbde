//! MQTT scenarios: P publishers → S subscribers (1→1, fan-in, fan-out, many-to-many) at
//! QoS 0 or 1, and N idle connections.
//!
//! Every subscriber subscribes to `BASE/#` and publisher `i` publishes on `BASE/i`, so each
//! publish is expected once at every subscriber: expected = sent × S. Each payload starts
//! with the send time (ns since the generator started, big-endian), so the subscriber
//! measures end-to-end latency. Publishers stop at their count or at `--max-seconds`;
//! subscribers then get `--drain-seconds` for the rest, after which whatever is missing is
//! reported as dropped — the run never waits forever.
//!
//! Flow control: QoS 1 publishers keep at most `--inflight` unacknowledged publishes. On top
//! of that, `--window` bounds how far publishers may run ahead of delivery (outstanding
//! deliveries per subscriber), at every QoS: an open-loop QoS 0 publisher on loopback can
//! outrun any subscriber, and then the run measures queue overflow (mosquitto queues
//! without limit under `max_queued_messages 0`; ponte drops at its bounded mailbox) instead
//! of throughput. `--window 0` removes the bound to test exactly that.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use bytes::BytesMut;
use clap::Args;
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{sleep_until, timeout, Instant};

use crate::mqtt::{self, Conn, Incoming};
use crate::report::{new_hist, Latency, Report};
use crate::tally::{join_all, Phases};
use crate::{now_ns, Ctx};

/// Parameters of a publish/subscribe run.
#[derive(Debug, Clone, Args, serde::Serialize)]
pub(crate) struct PubSubArgs {
    /// Broker address.
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub mqtt: SocketAddr,
    /// Number of publishing connections.
    #[arg(long, default_value_t = 1)]
    pub pubs: usize,
    /// Number of subscribing connections (each receives every message).
    #[arg(long, default_value_t = 1)]
    pub subs: usize,
    /// Publish QoS (0 or 1).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,
    /// Subscription QoS (defaults to the publish QoS).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub sub_qos: Option<u8>,
    /// Payload size in bytes (at least 16: the timestamp and ids).
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Messages per publisher.
    #[arg(long, default_value_t = 10_000)]
    pub messages: u64,
    /// Total publish rate in messages/s over all publishers (0 = as fast as allowed).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Unacknowledged QoS 1 publishes per publisher.
    #[arg(long, default_value_t = 100)]
    pub inflight: usize,
    /// Outstanding deliveries per subscriber before publishers wait (0 = open loop).
    #[arg(long, default_value_t = 1000)]
    pub window: u64,
    /// Set the RETAIN flag (every publish is then a durable retained write in ponte).
    #[arg(long)]
    pub retain: bool,
    /// Subscribers use persistent sessions (Clean Session 0): in ponte with a store, every
    /// QoS 1 delivery to them is written to disk before its publisher is acknowledged.
    #[arg(long)]
    pub persistent_subs: bool,
    /// When publishing stops and how long deliveries may trail it.
    #[command(flatten)]
    #[serde(flatten)]
    pub phases: Phases,
    /// Topic prefix; a unique run id is appended.
    #[arg(long, default_value = "loadgen")]
    pub prefix: String,
}

/// Shared progress counters between publishers and subscribers.
#[derive(Debug, Default)]
struct Progress {
    /// Publishes written to the socket, all publishers.
    sent: AtomicU64,
    /// Deliveries received, all subscribers.
    received: AtomicU64,
    /// Woken when deliveries arrive, for window-blocked publishers.
    delivered: Notify,
}

/// What a subscriber saw.
struct SubResult {
    /// Messages received.
    received: u64,
    /// Latency of each (ns).
    hist: Histogram<u64>,
    /// When the last one arrived (ns since start of the generator).
    last_ns: u64,
    /// Protocol or socket error that ended it early.
    error: Option<String>,
}

/// What a publisher did.
struct PubResult {
    /// Publishes written.
    sent: u64,
    /// PUBACKs received (QoS 1).
    acked: u64,
    /// When its last publish was written.
    end_ns: u64,
    /// Error that ended it early.
    error: Option<String>,
}

/// Wait until `ready()` or `max` elapses, without missing a wake-up in between.
async fn wait_for(notify: &Notify, ready: impl Fn() -> bool, max: Duration) {
    let notified = notify.notified();
    tokio::pin!(notified);
    notified.as_mut().enable();
    if ready() {
        return;
    }
    let _ = timeout(max, notified).await;
}

async fn subscriber(
    mut c: Conn,
    progress: Arc<Progress>,
    mut stop: watch::Receiver<bool>,
) -> SubResult {
    let mut r = SubResult {
        received: 0,
        hist: new_hist(),
        last_ns: 0,
        error: None,
    };
    let mut acks = BytesMut::with_capacity(4096);
    loop {
        // Parse everything buffered first (the handshake may have left messages behind).
        let (got, error) = mqtt::take_publishes(&mut c.buf, &mut r.hist, &mut acks);
        if let Some(e) = error {
            r.error = Some(e.to_string());
            return r;
        }
        if got > 0 {
            r.received += got;
            r.last_ns = now_ns();
            progress.received.fetch_add(got, Ordering::Relaxed);
            progress.delivered.notify_waiters();
        }
        if !acks.is_empty() {
            if let Err(e) = c.wr.write_all(&acks).await {
                r.error = Some(format!("writing PUBACKs: {e}"));
                return r;
            }
            acks.clear();
        }
        tokio::select! {
            n = c.rd.read_buf(&mut c.buf) => match n {
                Ok(0) => { r.error = Some("broker closed the subscriber".into()); return r; }
                Ok(_) => {}
                Err(e) => { r.error = Some(e.to_string()); return r; }
            },
            _ = stop.changed() => return r,
        }
    }
}

/// Everything a publisher needs besides its connection.
struct PubPlan {
    /// Its index (topic suffix and id in the payload).
    index: usize,
    /// Topic it publishes on.
    topic: String,
    /// The run's arguments.
    args: PubSubArgs,
    /// Shared with subscribers for the window.
    progress: Arc<Progress>,
    /// When publishing must stop.
    deadline: Instant,
    /// When PUBACKs stop being awaited.
    drain_deadline: Instant,
}

async fn publisher(c: Conn, plan: PubPlan) -> PubResult {
    let PubPlan {
        index,
        topic,
        args,
        progress,
        deadline,
        drain_deadline,
    } = plan;
    let Conn {
        mut rd,
        mut wr,
        mut buf,
    } = c;
    let qos = args.qos;
    let subs = args.subs.max(1) as u64;
    let permits = Arc::new(Semaphore::new(args.inflight.max(1)));
    let acked = Arc::new(AtomicU64::new(0));
    let ack_seen = Arc::new(Notify::new());
    // The read side only has PUBACKs to look at.
    let reader = {
        let (permits, acked, ack_seen) = (permits.clone(), acked.clone(), ack_seen.clone());
        tokio::spawn(async move {
            loop {
                let mut n = 0;
                loop {
                    match mqtt::parse(&mut buf) {
                        Ok(Some(Incoming::PubAck)) => n += 1,
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(e) => return Some(e.to_string()),
                    }
                }
                if n > 0 {
                    acked.fetch_add(n as u64, Ordering::Relaxed);
                    permits.add_permits(n);
                    ack_seen.notify_waiters();
                }
                match rd.read_buf(&mut buf).await {
                    Ok(0) => return None,
                    Ok(_) => {}
                    Err(e) => return Some(e.to_string()),
                }
            }
        })
    };
    let mut payload = vec![b'x'; args.size.max(16)];
    payload[8..12].copy_from_slice(&(index as u32).to_be_bytes());
    let mut out = BytesMut::with_capacity(64 * (payload.len() + topic.len() + 8));
    let per_pub_rate = args.rate / args.pubs.max(1) as f64;
    let start = Instant::now();
    let mut sent = 0u64;
    let mut pkid = 0u16;
    let mut error = None;
    while sent < args.messages && Instant::now() < deadline {
        let mut n = (args.messages - sent).min(64);
        if per_pub_rate > 0.0 {
            let due = (start.elapsed().as_secs_f64() * per_pub_rate) as u64 + 1;
            if due <= sent {
                let at = start + Duration::from_secs_f64(sent as f64 / per_pub_rate);
                sleep_until(at.min(deadline)).await;
                continue;
            }
            n = n.min(due - sent);
        }
        if args.window > 0 {
            let room = || {
                let allowed =
                    (progress.received.load(Ordering::Relaxed) + args.window * subs) / subs;
                allowed.saturating_sub(progress.sent.load(Ordering::Relaxed))
            };
            let r = room();
            if r == 0 {
                wait_for(
                    &progress.delivered,
                    || room() > 0,
                    Duration::from_millis(20),
                )
                .await;
                continue;
            }
            n = n.min(r);
        }
        if qos > 0 {
            let avail = permits.available_permits() as u64;
            if avail == 0 {
                wait_for(
                    &ack_seen,
                    || permits.available_permits() > 0,
                    Duration::from_millis(20),
                )
                .await;
                continue;
            }
            n = n.min(avail);
            match permits.try_acquire_many(n as u32) {
                Ok(p) => p.forget(),
                Err(_) => continue,
            }
        }
        let ts = now_ns().to_be_bytes();
        for _ in 0..n {
            payload[..8].copy_from_slice(&ts);
            payload[12..16].copy_from_slice(&(sent as u32).to_be_bytes());
            if qos > 0 {
                pkid = pkid.checked_add(1).unwrap_or(1);
            }
            mqtt::publish(&mut out, &topic, qos, args.retain, pkid, &payload);
            sent += 1;
        }
        progress.sent.fetch_add(n, Ordering::Relaxed);
        if let Err(e) = wr.write_all(&out).await {
            error = Some(format!("write: {e}"));
            break;
        }
        out.clear();
    }
    let end_ns = now_ns();
    if qos > 0 && error.is_none() {
        while acked.load(Ordering::Relaxed) < sent && Instant::now() < drain_deadline {
            wait_for(
                &ack_seen,
                || acked.load(Ordering::Relaxed) >= sent,
                Duration::from_millis(20),
            )
            .await;
        }
    }
    reader.abort();
    if let Ok(Some(e)) = reader.await {
        error.get_or_insert(format!("reading PUBACKs: {e}"));
    }
    let _ = timeout(Duration::from_millis(200), wr.write_all(&[0xe0, 0])).await;
    PubResult {
        sent,
        acked: acked.load(Ordering::Relaxed),
        end_ns,
        error,
    }
}

/// A process-unique id for topics and client ids, so concurrent or repeated runs never
/// see each other's retained values.
pub(crate) fn run_id() -> String {
    format!("{}-{}", std::process::id(), now_ns())
}

/// Run one publish/subscribe scenario.
pub(crate) async fn run(name: &str, args: &PubSubArgs, ctx: &Ctx) -> Result<Report> {
    let mut report = Report::new(name, &ctx.target, serde_json::to_value(args)?);
    let id = run_id();
    let base = format!("{}/{id}", args.prefix);
    let sub_qos = args.sub_qos.unwrap_or(args.qos);
    let setup_deadline =
        Instant::now() + Duration::from_secs(10 + (args.pubs + args.subs) as u64 / 100);
    let mut subs = Vec::with_capacity(args.subs);
    for i in 0..args.subs {
        let mut c = Conn::open_session(
            args.mqtt,
            None,
            &format!("lg-s{i}-{id}"),
            0,
            !args.persistent_subs,
            setup_deadline,
        )
        .await?;
        c.subscribe(&format!("{base}/#"), sub_qos, setup_deadline)
            .await?;
        subs.push(c);
    }
    let mut pubs = Vec::with_capacity(args.pubs);
    for i in 0..args.pubs {
        pubs.push(Conn::open(args.mqtt, None, &format!("lg-p{i}-{id}"), 0, setup_deadline).await?);
    }
    let before = ctx.begin();
    let progress = Arc::new(Progress::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut sub_tasks = JoinSet::new();
    for c in subs {
        sub_tasks.spawn(subscriber(c, progress.clone(), stop_rx.clone()));
    }
    let start_ns = now_ns();
    let deadline = Instant::now() + Duration::from_secs(args.phases.max_seconds);
    let drain = Duration::from_secs(args.phases.drain_seconds);
    let mut pub_tasks = JoinSet::new();
    for (i, c) in pubs.into_iter().enumerate() {
        pub_tasks.spawn(publisher(
            c,
            PubPlan {
                index: i,
                topic: format!("{base}/{i}"),
                args: args.clone(),
                progress: progress.clone(),
                deadline,
                drain_deadline: deadline + drain,
            },
        ));
    }
    let (mut sent, mut acked, mut pub_end) = (0u64, 0u64, start_ns);
    let hard_stop = deadline + drain + Duration::from_secs(2);
    join_all(
        &mut pub_tasks,
        hard_stop,
        "publisher",
        &mut report,
        |report, r| {
            sent += r.sent;
            acked += r.acked;
            pub_end = pub_end.max(r.end_ns);
            if let Some(e) = r.error {
                report.errors += 1;
                report.fail(format!("publisher: {e}"));
            }
        },
    )
    .await;
    let expected = sent * args.subs as u64;
    let drain_deadline = Instant::now() + drain;
    while progress.received.load(Ordering::Relaxed) < expected && Instant::now() < drain_deadline {
        let p = &progress;
        wait_for(
            &p.delivered,
            || p.received.load(Ordering::Relaxed) >= expected,
            Duration::from_millis(20),
        )
        .await;
    }
    let _ = stop_tx.send(true);
    let mut hist = new_hist();
    let mut last_ns = pub_end;
    let mut delivered = 0;
    while let Ok(Some(r)) = timeout(Duration::from_secs(2), sub_tasks.join_next()).await {
        match r {
            Ok(s) => {
                delivered += s.received;
                last_ns = last_ns.max(s.last_ns);
                let _ = hist.add(&s.hist);
                if let Some(e) = s.error {
                    report.errors += 1;
                    report.fail(format!("subscriber: {e}"));
                }
            }
            Err(e) => report.fail(format!("subscriber task: {e}")),
        }
    }
    sub_tasks.abort_all();
    report.sent = sent;
    report.expected = expected;
    report.delivered = delivered;
    report.latency = Latency::from_hist(&hist);
    report.set_duration(Duration::from_nanos(last_ns.saturating_sub(start_ns)));
    report.sent_per_s = sent as f64 / (pub_end.saturating_sub(start_ns).max(1) as f64 / 1e9);
    let planned = args.messages * args.pubs as u64;
    if sent < planned {
        report.fail(format!(
            "time cap: published {sent} of {planned} in {}s",
            args.phases.max_seconds
        ));
    }
    if args.qos > 0 && acked < sent {
        report.fail(format!(
            "{} of {sent} publishes never acknowledged",
            sent - acked
        ));
    }
    report.check_delivery();
    report.extra.insert("pubacks".into(), acked.into());
    ctx.end(&mut report, before);
    Ok(report)
}

/// Parameters of the idle-connections run.
#[derive(Debug, Clone, Args, serde::Serialize)]
pub(crate) struct IdleArgs {
    /// Broker address.
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub mqtt: SocketAddr,
    /// Connections to open and hold.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Concurrent connection attempts.
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
    /// Keep-alive announced in CONNECT (0 = off, legal in 3.1.1).
    #[arg(long, default_value_t = 600)]
    pub keepalive: u16,
    /// How long to hold them all before checking they are alive.
    #[arg(long, default_value_t = 5)]
    pub hold_seconds: u64,
    /// Spread source addresses over 127.0.0.1..=N (more than ~28k ephemeral ports).
    #[arg(long, default_value_t = 4)]
    pub source_ips: u8,
    /// Give up connecting after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub max_seconds: u64,
}

/// Open and hold N idle connections; report the server's RSS per connection and check every
/// connection still answers a PINGREQ at the end.
pub(crate) async fn idle(args: &IdleArgs, ctx: &Ctx) -> Result<Report> {
    let mut report = Report::new("mqtt-idle", &ctx.target, serde_json::to_value(args)?);
    let baseline = ctx.pid.as_deref().map(crate::procfs::sample);
    let before = ctx.begin();
    let id = run_id();
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    let started = Instant::now();
    for i in 0..args.connections {
        let gate = gate.clone();
        let local = IpAddr::V4(Ipv4Addr::new(
            127,
            0,
            0,
            1 + (i % args.source_ips.max(1) as usize) as u8,
        ));
        let (addr, keepalive, cid) = (args.mqtt, args.keepalive, format!("lg-i{i}-{id}"));
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await;
            Conn::open(addr, Some(local), &cid, keepalive, deadline).await
        });
    }
    let mut conns = Vec::with_capacity(args.connections);
    let mut first_error = None;
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok(c)) => conns.push(c),
            Ok(Err(e)) => {
                report.errors += 1;
                first_error.get_or_insert(e.to_string());
            }
            Err(e) => {
                report.errors += 1;
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    let connect_time = started.elapsed();
    tokio::time::sleep(Duration::from_secs(args.hold_seconds)).await;
    let held = crate::procfs::sample(ctx.pid.as_deref().unwrap_or("self"));
    // Every held connection must still answer a PINGREQ.
    let check_deadline = Instant::now() + Duration::from_secs(30);
    let mut alive = 0u64;
    let mut ping = BytesMut::new();
    mqtt::pingreq(&mut ping);
    for chunk in conns.chunks_mut(1000) {
        for c in chunk.iter_mut() {
            let _ = c.wr.write_all(&ping).await;
        }
        for c in chunk.iter_mut() {
            if matches!(c.next(check_deadline).await, Ok(Incoming::PingResp)) {
                alive += 1;
            }
        }
    }
    report.sent = args.connections as u64;
    report.expected = args.connections as u64;
    report.delivered = alive;
    report.set_duration(connect_time);
    if let (Some(b), Some(rss)) = (baseline.and_then(|b| b.rss_kib), held.rss_kib) {
        let per = (rss.saturating_sub(b)) as f64 * 1024.0 / alive.max(1) as f64;
        report.extra.insert("rss_baseline_kib".into(), b.into());
        report.extra.insert("rss_held_kib".into(), rss.into());
        report
            .extra
            .insert("bytes_per_connection".into(), (per.round() as u64).into());
        // Linear in N (measured: BENCHMARKS.md), so the baseline plus N times the slope.
        for (key, n) in [
            ("projected_50k_mib", 50_000.0),
            ("projected_100k_mib", 100_000.0),
            ("projected_1m_mib", 1_000_000.0),
        ] {
            report.extra.insert(
                key.into(),
                ((b as f64 * 1024.0 + per * n) / 1048576.0).round().into(),
            );
        }
    }
    if let Some(e) = first_error {
        report.fail(format!("first connect error: {e}"));
    }
    report.check_delivery();
    ctx.end(&mut report, before);
    drop(conns);
    Ok(report)
}
