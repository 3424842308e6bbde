//! `slow-body`: request bodies that never finish arriving (issue 16, point 3).
//!
//! Opens N HTTP/1.1 connections that each send a complete `PUT` header announcing a body of
//! `--length` bytes, then one body byte every `--trickle-ms` (or nothing at all), and waits
//! for the server to give up on them: a server with a body deadline (`[http]
//! body_timeout_secs`, `body_min_rate`) answers 408 and closes each. Meanwhile a normal
//! client keeps writing and reading a value (`PUT` then `GET`, alternately, keep-alive) at
//! a fixed interval, and its round trips are the report's latency: what the attack costs
//! everyone else. The server's open descriptors are counted before, at their peak and
//! after the slow clients were dealt with (and the normal client left), with its peak RSS.
//!
//! ```text
//! ponte-loadgen --server-pid $(pidof ponte) slow-body --http 127.0.0.1:3000 --clients 500
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{sleep, sleep_until, timeout_at, Instant};

use crate::report::{new_hist, Latency, Report};
use crate::Ctx;

/// Parameters of the `slow-body` scenario.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub(crate) struct SlowBodyArgs {
    /// HTTP address of the server.
    #[arg(long, default_value = "127.0.0.1:3000")]
    pub http: SocketAddr,
    /// Slow clients.
    #[arg(long, default_value_t = 500)]
    pub clients: usize,
    /// Body length each slow client announces (Content-Length).
    #[arg(long, default_value_t = 100_000)]
    pub length: usize,
    /// One body byte every this many milliseconds; 0: nothing after the header.
    #[arg(long, default_value_t = 1000)]
    pub trickle_ms: u64,
    /// Interval between the normal client's requests.
    #[arg(long, default_value_t = 20)]
    pub probe_interval_ms: u64,
    /// Fail when a normal request takes longer than this (ms); 0: no check.
    #[arg(long, default_value_t = 100)]
    pub max_probe_ms: u64,
    /// After the slow clients were dealt with, wait this long before counting descriptors.
    #[arg(long, default_value_t = 2)]
    pub settle_seconds: u64,
    /// Give up on slow clients the server has not closed after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub max_seconds: u64,
}

/// How one slow client ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The server answered with this status, then closed the connection.
    Answered(u16),
    /// The server answered with this status and kept the connection open.
    AnsweredLeftOpen(u16),
    /// The server closed the connection without answering.
    ClosedSilently,
    /// Still open at `--max-seconds`.
    StillOpen,
    /// Could not connect or send the header.
    Failed,
}

/// The status code of an HTTP/1.x status line at the start of `buf`, once it is complete.
fn status_of(buf: &[u8]) -> Option<u16> {
    let line_end = buf.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&buf[..line_end]).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// One slow client: header, then a byte per tick, until the server answers or closes.
async fn slow_client(
    addr: SocketAddr,
    i: usize,
    length: usize,
    trickle: Option<Duration>,
    opening: Arc<Semaphore>,
    deadline: Instant,
) -> (End, Option<Duration>) {
    // At most a few connects at a time, so the accept queue never overflows.
    let permit = opening.acquire_owned().await;
    let Ok(Ok(mut s)) = timeout_at(deadline, TcpStream::connect(addr)).await else {
        return (End::Failed, None);
    };
    let header = format!(
        "PUT /resources/loadgen/slow-body/{i} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/plain\r\nContent-Length: {length}\r\n\r\n"
    );
    if s.write_all(header.as_bytes()).await.is_err() {
        return (End::Failed, None);
    }
    drop(permit);
    let started = Instant::now();
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let mut status = None;
    let mut sent = 0usize;
    let mut next_byte = trickle.map(|t| Instant::now() + t);
    loop {
        let tick = async {
            match next_byte {
                Some(at) if sent + 1 < length => sleep_until(at).await,
                _ => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            r = timeout_at(deadline, s.read(&mut chunk)) => match r {
                Err(_) => return (End::StillOpen, None),
                Ok(Ok(0)) | Ok(Err(_)) => {
                    let end = match status {
                        Some(code) => End::Answered(code),
                        None => End::ClosedSilently,
                    };
                    return (end, Some(started.elapsed()));
                }
                Ok(Ok(n)) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if status.is_none() {
                        status = status_of(&buf);
                    }
                    // Seen the whole answer but the connection stays: wait a little for the
                    // close the server owes (RFC 9110 §15.5.9), then call it left open.
                    if let Some(code) = status {
                        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            let grace = Instant::now() + Duration::from_secs(2);
                            loop {
                                match timeout_at(grace.min(deadline), s.read(&mut chunk)).await {
                                    Ok(Ok(0)) | Ok(Err(_)) => {
                                        return (End::Answered(code), Some(started.elapsed()))
                                    }
                                    Ok(Ok(_)) => continue,
                                    Err(_) => return (End::AnsweredLeftOpen(code), Some(started.elapsed())),
                                }
                            }
                        }
                    }
                }
            },
            _ = tick => {
                sent += 1;
                if s.write_all(b"v").await.is_err() {
                    // The server closed its side; the answer (if any) is still readable.
                    next_byte = None;
                    continue;
                }
                next_byte = trickle.map(|t| Instant::now() + t);
            }
        }
    }
}

/// A normal client's keep-alive exchanges: alternately PUT a value and GET it back.
struct Normal {
    addr: SocketAddr,
    conn: Option<TcpStream>,
    n: u64,
}

impl Normal {
    /// One request and its complete answer; the connection is reopened when it was lost.
    async fn exchange(&mut self, deadline: Instant) -> Result<u16> {
        if self.conn.is_none() {
            let s = timeout_at(deadline, TcpStream::connect(self.addr)).await??;
            s.set_nodelay(true)?;
            self.conn = Some(s);
        }
        let Some(s) = self.conn.as_mut() else {
            anyhow::bail!("no connection");
        };
        self.n += 1;
        let request = if self.n % 2 == 1 {
            let body = format!("normal {}", self.n);
            format!(
                "PUT /resources/loadgen/slow-body/normal HTTP/1.1\r\nHost: {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                self.addr,
                body.len()
            )
        } else {
            format!(
                "GET /resources/loadgen/slow-body/normal HTTP/1.1\r\nHost: {}\r\n\r\n",
                self.addr
            )
        };
        let result = async {
            s.write_all(request.as_bytes()).await?;
            let mut buf = Vec::with_capacity(512);
            let mut chunk = [0u8; 2048];
            loop {
                let n = s.read(&mut chunk).await?;
                if n == 0 {
                    anyhow::bail!("the server closed the normal client's connection");
                }
                buf.extend_from_slice(&chunk[..n]);
                let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if buf.len() >= head_end + 4 + length {
                    return status_of(&buf).ok_or_else(|| anyhow::anyhow!("no status line"));
                }
            }
        };
        match timeout_at(deadline, result).await {
            Ok(Ok(code)) => Ok(code),
            Ok(Err(e)) => {
                self.conn = None;
                Err(e)
            }
            Err(_) => {
                self.conn = None;
                anyhow::bail!("no answer within the deadline")
            }
        }
    }
}

/// Run the scenario.
pub(crate) async fn run(args: &SlowBodyArgs, ctx: &Ctx) -> Result<Report> {
    let mut report = Report::new("http-slow-body", &ctx.target, serde_json::to_value(args)?);
    let pid = ctx.pid.clone();
    let fds = move || pid.as_deref().and_then(crate::procfs::fds);
    let fds_before = fds();
    let before = ctx.begin();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.max_seconds);
    let trickle = (args.trickle_ms > 0).then(|| Duration::from_millis(args.trickle_ms));
    let mut slow = JoinSet::new();
    let opening = Arc::new(Semaphore::new(100));
    for i in 0..args.clients {
        let (addr, length, opening) = (args.http, args.length, opening.clone());
        slow.spawn(slow_client(addr, i, length, trickle, opening, deadline));
    }
    // The normal client and the descriptor sampler run until every slow client ended.
    let done = Arc::new(AtomicU64::new(0));
    let peak_fds = Arc::new(AtomicU64::new(fds_before.unwrap_or(0)));
    let sampler = {
        let (done, peak, pid, total) = (
            done.clone(),
            peak_fds.clone(),
            ctx.pid.clone(),
            args.clients as u64,
        );
        tokio::spawn(async move {
            while done.load(Ordering::Relaxed) < total {
                if let Some(n) = pid.as_deref().and_then(crate::procfs::fds) {
                    peak.fetch_max(n, Ordering::Relaxed);
                }
                sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let normal = {
        let (done, total, addr, interval) = (
            done.clone(),
            args.clients as u64,
            args.http,
            Duration::from_millis(args.probe_interval_ms.max(1)),
        );
        tokio::spawn(async move {
            let mut hist = new_hist();
            let mut failures = 0u64;
            let mut first_failure = None;
            let mut client = Normal {
                addr,
                conn: None,
                n: 0,
            };
            let mut next = Instant::now();
            while done.load(Ordering::Relaxed) < total {
                sleep_until(next).await;
                next += interval;
                let t0 = Instant::now();
                match client.exchange(t0 + Duration::from_secs(5)).await {
                    Ok(code) if (200..300).contains(&code) => {
                        hist.saturating_record((t0.elapsed().as_nanos() as u64).max(1));
                    }
                    Ok(code) => {
                        failures += 1;
                        first_failure.get_or_insert(format!("answered {code}"));
                    }
                    Err(e) => {
                        failures += 1;
                        first_failure.get_or_insert(e.to_string());
                    }
                }
            }
            (hist, failures, first_failure)
        })
    };
    let mut ends = Vec::with_capacity(args.clients);
    while let Some(r) = slow.join_next().await {
        ends.push(r.unwrap_or((End::Failed, None)));
        done.fetch_add(1, Ordering::Relaxed);
    }
    let attack = started.elapsed();
    let (hist, failures, first_failure) = normal.await.unwrap_or((new_hist(), 1, None));
    let _ = sampler.await;
    sleep(Duration::from_secs(args.settle_seconds)).await;
    let fds_after = fds();

    let count = |f: &dyn Fn(End) -> bool| ends.iter().filter(|(e, _)| f(*e)).count() as u64;
    let answered_408 = count(&|e| e == End::Answered(408));
    let left_open = count(&|e| matches!(e, End::AnsweredLeftOpen(_)));
    let other_answers = count(&|e| matches!(e, End::Answered(c) if c != 408));
    let silent = count(&|e| e == End::ClosedSilently);
    let still_open = count(&|e| e == End::StillOpen);
    let failed = count(&|e| e == End::Failed);
    let closed_after: Vec<f64> = ends
        .iter()
        .filter_map(|(_, d)| d.map(|d| d.as_secs_f64()))
        .collect();
    report.sent = args.clients as u64;
    report.expected = args.clients as u64;
    report.delivered = answered_408;
    report.set_duration(attack);
    // The report's rate is the normal client's, not the slow clients'.
    report.delivered_per_s = hist.len() as f64 / attack.as_secs_f64().max(1e-9);
    report.latency = Latency::from_hist(&hist);
    let x = &mut report.extra;
    x.insert("answered_408_and_closed".into(), answered_408.into());
    x.insert("answered_other".into(), other_answers.into());
    x.insert("answered_left_open".into(), left_open.into());
    x.insert("closed_without_answer".into(), silent.into());
    x.insert("still_open".into(), still_open.into());
    x.insert("could_not_start".into(), failed.into());
    if let (Some(lo), Some(hi)) = (
        closed_after.iter().copied().reduce(f64::min),
        closed_after.iter().copied().reduce(f64::max),
    ) {
        x.insert(
            "closed_after_s_min".into(),
            ((lo * 10.0).round() / 10.0).into(),
        );
        x.insert(
            "closed_after_s_max".into(),
            ((hi * 10.0).round() / 10.0).into(),
        );
    }
    x.insert("normal_requests".into(), hist.len().into());
    x.insert("normal_failures".into(), failures.into());
    let max_ms = hist.max() as f64 / 1e6;
    x.insert(
        "normal_max_ms".into(),
        ((max_ms * 10.0).round() / 10.0).into(),
    );
    if let Some(n) = fds_before {
        x.insert("fds_before".into(), n.into());
        x.insert("fds_peak".into(), peak_fds.load(Ordering::Relaxed).into());
    }
    if let Some(n) = fds_after {
        x.insert("fds_after".into(), n.into());
    }
    if answered_408 < args.clients as u64 {
        report.fail(format!(
            "{} of {} slow clients were not answered 408 and closed ({other_answers} other answers, {left_open} left open, {silent} closed silently, {still_open} still open after {} s, {failed} could not start)",
            args.clients as u64 - answered_408,
            args.clients,
            args.max_seconds
        ));
    }
    if failures > 0 {
        report.fail(format!(
            "{failures} normal requests failed during the attack (first: {})",
            first_failure.unwrap_or_default()
        ));
    }
    if args.max_probe_ms > 0 && max_ms > args.max_probe_ms as f64 {
        report.fail(format!(
            "a normal request took {max_ms:.1} ms during the attack (limit {} ms)",
            args.max_probe_ms
        ));
    }
    if let (Some(b), Some(a)) = (fds_before, fds_after) {
        if a > b {
            report.fail(format!(
                "the server holds {a} descriptors after the attack, {b} before"
            ));
        }
    }
    ctx.end(&mut report, before);
    Ok(report)
}
