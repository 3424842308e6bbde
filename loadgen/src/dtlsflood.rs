//! `dtls-flood`: a flood of DTLS ClientHellos at a coaps port (issue 16, point 5).
//!
//! Sends `--hellos` DTLS 1.2 ClientHellos (PSK, `TLS_PSK_WITH_AES_128_CCM_8`, no cookie)
//! from `--ports` source ports, as strangers that never continue the handshake would, in
//! rounds of one per port (each round's answers awaited, so the loopback never drops one).
//! A server that answers with a stateless HelloVerifyRequest (RFC 6347 §4.2.1) holds no
//! session for any of them. Then it asks the server how many DTLS sessions it holds
//! (`ponte_connections{protocol="coaps"}` of `/metrics`, when `--metrics` is given) and
//! times one real client's handshake and request (`coap-client-openssl`, PSK): what a
//! legitimate client meets right after the flood. Peak RSS is the server's over all of it.
//!
//! ```text
//! ponte-loadgen --server-pid $(pidof ponte) dtls-flood --coaps 127.0.0.1:5684 \
//!     --metrics http://127.0.0.1:3000 --identity bench --key bench-secret
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::time::{timeout, Instant};

use crate::report::{new_hist, Latency, Report};
use crate::Ctx;

/// Parameters of the `dtls-flood` scenario.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub(crate) struct DtlsFloodArgs {
    /// The coaps (DTLS) address.
    #[arg(long, default_value = "127.0.0.1:5684")]
    pub coaps: SocketAddr,
    /// ClientHellos to send.
    #[arg(long, default_value_t = 5000)]
    pub hellos: u32,
    /// Source ports they come from.
    #[arg(long, default_value_t = 50)]
    pub ports: usize,
    /// How long to wait for each answer of a round.
    #[arg(long, default_value_t = 500)]
    pub answer_ms: u64,
    /// Base URL of the server's HTTP port, to read its DTLS session count from `/metrics`.
    #[arg(long)]
    pub metrics: Option<String>,
    /// The real client run after the flood (libcoap's, with PSK support).
    #[arg(long, default_value = "coap-client-openssl")]
    pub client: String,
    /// PSK identity of the real client.
    #[arg(long, default_value = "bench")]
    pub identity: String,
    /// PSK key of the real client (as coap-client's `-k` takes it: the ASCII key).
    #[arg(long, default_value = "bench-secret")]
    pub key: String,
    /// Fail when the real client's handshake and request take longer (ms); 0: no check.
    #[arg(long, default_value_t = 1000)]
    pub max_handshake_ms: u64,
}

/// A DTLS 1.2 ClientHello datagram (PSK, CCM_8, extended master secret) with client random
/// `random` and no cookie: the first flight of a handshake.
fn client_hello(random: [u8; 32]) -> Vec<u8> {
    let mut body = vec![0xfe, 0xfd];
    body.extend_from_slice(&random);
    body.push(0); // session id
    body.push(0); // cookie
    body.extend_from_slice(&[0, 2, 0xc0, 0xa8, 1, 0]); // one suite; null compression
    body.extend_from_slice(&[0, 6, 0, 0x17, 0, 0, 0xff, 0x01]);
    let len = body.len();
    let mut d = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0];
    d.extend_from_slice(&((len + 12) as u16).to_be_bytes());
    d.extend_from_slice(&[1, 0, (len >> 8) as u8, len as u8, 0, 0, 0, 0, 0, 0]);
    d.extend_from_slice(&[(len >> 8) as u8, len as u8]);
    d.extend_from_slice(&body);
    d
}

/// The DTLS sessions the server reports holding, from its Prometheus exposition.
async fn sessions(base: &str) -> Result<u64> {
    let text = reqwest::get(format!("{}/metrics", base.trim_end_matches('/')))
        .await?
        .text()
        .await?;
    text.lines()
        .find_map(|l| l.strip_prefix("ponte_connections{protocol=\"coaps\"}"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .ok_or_else(|| anyhow!("/metrics has no ponte_connections{{protocol=\"coaps\"}}"))
}

/// Run the scenario.
pub(crate) async fn run(args: &DtlsFloodArgs, ctx: &Ctx) -> Result<Report> {
    let mut report = Report::new("dtls-hello-flood", &ctx.target, serde_json::to_value(args)?);
    let mut sockets = Vec::with_capacity(args.ports);
    for _ in 0..args.ports.max(1) {
        let s = UdpSocket::bind("127.0.0.1:0").await?;
        s.connect(args.coaps).await?;
        sockets.push(s);
    }
    let before = ctx.begin();
    let started = Instant::now();
    let (mut sent, mut verify, mut other, mut silent) = (0u32, 0u64, 0u64, 0u64);
    let mut buf = [0u8; 2048];
    let wait = Duration::from_millis(args.answer_ms);
    while sent < args.hellos {
        let mut in_round = 0;
        for s in &sockets {
            if sent == args.hellos {
                break;
            }
            sent += 1;
            let mut random = [0u8; 32];
            random[..4].copy_from_slice(&sent.to_be_bytes());
            random[4..8].copy_from_slice(&std::process::id().to_be_bytes());
            s.send(&client_hello(random)).await?;
            in_round += 1;
        }
        for s in sockets.iter().take(in_round) {
            match timeout(wait, s.recv(&mut buf)).await {
                // A handshake record carrying HelloVerifyRequest (handshake type 3).
                Ok(Ok(n)) if n > 13 && buf[0] == 22 && buf[13] == 3 => verify += 1,
                Ok(Ok(_)) => other += 1,
                Ok(Err(_)) | Err(_) => silent += 1,
            }
        }
    }
    let flood = started.elapsed();
    let held = match &args.metrics {
        Some(base) => Some(sessions(base).await.context("reading the session count")?),
        None => None,
    };

    // A real client right after: handshake (with its cookie round) and one PUT.
    let uri = format!("coaps://{}/r/loadgen/dtls-flood", args.coaps);
    let t0 = Instant::now();
    let out = timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(&args.client)
            .args(["-u", &args.identity, "-k", &args.key, "-B", "10"])
            .args(["-m", "put", "-e", "after the flood", &uri])
            .output(),
    )
    .await;
    let took = t0.elapsed();
    let mut hist = new_hist();
    let client_ok = match &out {
        Ok(Ok(o)) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            // coap-client exits 0 even when the request failed: its output says.
            let failed = text.contains("4.") || text.contains("5.0");
            if failed {
                report.fail(format!("{} after the flood: {}", args.client, text.trim()));
            }
            !failed && o.status.success()
        }
        Ok(Err(e)) => {
            report.fail(format!("cannot run {}: {e}", args.client));
            false
        }
        Err(_) => {
            report.fail(format!("{} did not finish within 20 s", args.client));
            false
        }
    };
    if client_ok {
        hist.saturating_record((took.as_nanos() as u64).max(1));
    }
    report.sent = u64::from(sent);
    report.expected = u64::from(sent);
    report.delivered = verify;
    report.set_duration(flood);
    report.latency = Latency::from_hist(&hist);
    let x = &mut report.extra;
    x.insert("hello_verify_requests".into(), verify.into());
    x.insert("other_answers".into(), other.into());
    x.insert("unanswered".into(), silent.into());
    if let Some(n) = held {
        x.insert("sessions_after_flood".into(), n.into());
        if n > 0 {
            report.fail(format!("{n} DTLS sessions held after the flood"));
        }
    }
    let ms = took.as_secs_f64() * 1e3;
    report
        .extra
        .insert("client_ms".into(), ((ms * 10.0).round() / 10.0).into());
    if client_ok && args.max_handshake_ms > 0 && ms > args.max_handshake_ms as f64 {
        report.fail(format!(
            "the real client needed {ms:.0} ms after the flood (limit {} ms)",
            args.max_handshake_ms
        ));
    }
    if verify < u64::from(sent) {
        report.fail(format!(
            "{} of {sent} ClientHellos got no HelloVerifyRequest ({other} other answers, {silent} unanswered)",
            u64::from(sent) - verify
        ));
    }
    ctx.end(&mut report, before);
    Ok(report)
}
