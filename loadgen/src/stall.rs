//! `stall`: subscribers that stop reading, under a flood of publishes (issue 16, point 2).
//!
//! Opens N CoAP-over-TCP observers, N MQTT subscribers and N SSE streams of one topic, each
//! with a small receive buffer, reads their first answer and then never reads again. One
//! MQTT publisher then sends M messages of S bytes to the topic at QoS 0 and ends with a
//! PINGREQ (answered once everything before it was handled). The report has the server's
//! RSS before the subscribers connected, its peak during the flood and its RSS some seconds
//! after they all disconnected: what a server holds for readers that stopped, and whether
//! it gives it back.
//!
//! ```text
//! ponte-loadgen --server-pid $(pidof ponte) stall --observers 50 --subscribers 50 \
//!     --streams 50 --messages 200000 --payload 1024 --max-peak-mib 200 --max-residual-mib 20
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::BytesMut;
use coap_lite::{CoapOption, MessageClass, Packet, RequestType};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

use crate::mqtt::{self, Conn, Incoming};
use crate::pubsub::run_id;
use crate::report::Report;
use crate::Ctx;

/// Parameters of the `stall` scenario.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub(crate) struct StallArgs {
    /// MQTT address (publisher and stalled subscribers).
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub mqtt: SocketAddr,
    /// HTTP address (stalled SSE streams).
    #[arg(long, default_value = "127.0.0.1:3000")]
    pub http: SocketAddr,
    /// CoAP-over-TCP address (stalled observers).
    #[arg(long, default_value = "127.0.0.1:5683")]
    pub coap: SocketAddr,
    /// Stalled CoAP-over-TCP observers.
    #[arg(long, default_value_t = 50)]
    pub observers: usize,
    /// Stalled MQTT subscribers (QoS 0, clean session).
    #[arg(long, default_value_t = 50)]
    pub subscribers: usize,
    /// Stalled SSE streams.
    #[arg(long, default_value_t = 50)]
    pub streams: usize,
    /// Messages published.
    #[arg(long, default_value_t = 200_000)]
    pub messages: u64,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 1024)]
    pub payload: usize,
    /// Receive buffer asked for on each stalled socket (the kernel may round it up).
    #[arg(long, default_value_t = 4096)]
    pub rcvbuf: u32,
    /// Seconds to wait after the stalled clients disconnect before measuring.
    #[arg(long, default_value_t = 5)]
    pub settle_seconds: u64,
    /// Fail when the server's peak RSS exceeds this (MiB); 0: no check.
    #[arg(long, default_value_t = 0)]
    pub max_peak_mib: u64,
    /// Fail when the RSS after they disconnect exceeds the baseline by more (MiB); 0: no check.
    #[arg(long, default_value_t = 0)]
    pub max_residual_mib: u64,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub max_seconds: u64,
}

/// A TCP connection with a small receive buffer, so it stalls after a few KiB.
async fn small_socket(addr: SocketAddr, rcvbuf: u32, deadline: Instant) -> Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(rcvbuf)?;
    let s = tokio::time::timeout_at(deadline, socket.connect(addr))
        .await
        .map_err(|_| anyhow!("connect to {addr} timed out"))?
        .with_context(|| format!("connect to {addr}"))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// RFC 8323 framing of a datagram-layout CoAP message (length nibble and extension).
fn to_tcp(datagram: &[u8]) -> Vec<u8> {
    let tkl = usize::from(datagram[0] & 0x0F);
    let body = &datagram[4..];
    let len = body.len() - tkl;
    let mut out = Vec::with_capacity(body.len() + 6);
    let tkl = tkl as u8;
    match len {
        0..=12 => out.push(((len as u8) << 4) | tkl),
        13..=268 => {
            out.push((13 << 4) | tkl);
            out.push((len - 13) as u8);
        }
        269..=65_804 => {
            out.push((14 << 4) | tkl);
            out.extend_from_slice(&((len - 269) as u16).to_be_bytes());
        }
        _ => {
            out.push((15 << 4) | tkl);
            out.extend_from_slice(&((len - 65_805) as u32).to_be_bytes());
        }
    }
    out.push(datagram[1]);
    out.extend_from_slice(body);
    out
}

/// A CoAP-over-TCP observer of `/r/{topic}` that reads until its first answer and stops.
async fn stalled_observer(args: &StallArgs, topic: &str, deadline: Instant) -> Result<TcpStream> {
    let mut s = small_socket(args.coap, args.rcvbuf, deadline).await?;
    let mut csm = Packet::new();
    csm.header.code = MessageClass::from(0xE1);
    let mut get = Packet::new();
    get.header.code = MessageClass::Request(RequestType::Get);
    get.set_token(vec![1, 2, 3, 4]);
    get.add_option(CoapOption::Observe, Vec::new());
    get.add_option(CoapOption::UriPath, b"r".to_vec());
    for seg in topic.split('/') {
        get.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
    }
    for p in [&csm, &get] {
        let bytes = p.to_bytes_unlimited().map_err(|e| anyhow!("{e:?}"))?;
        s.write_all(&to_tcp(&bytes)).await?;
    }
    // The server's CSM and the answer to the GET (4.04 or 2.05: either registers nothing
    // or the observation); enough to know the request was handled.
    let mut got = 0;
    let mut buf = [0u8; 512];
    while got < 8 {
        let n = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .map_err(|_| anyhow!("no answer to the CoAP observe"))??;
        if n == 0 {
            bail!("CoAP/TCP connection closed");
        }
        got += n;
    }
    Ok(s)
}

/// An SSE stream of `/resources/{topic}` that reads its response header and stops.
async fn stalled_stream(args: &StallArgs, topic: &str, deadline: Instant) -> Result<TcpStream> {
    let mut s = small_socket(args.http, args.rcvbuf, deadline).await?;
    let req = format!(
        "GET /resources/{topic} HTTP/1.1\r\nhost: {}\r\naccept: text/event-stream\r\n\r\n",
        args.http
    );
    s.write_all(req.as_bytes()).await?;
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .map_err(|_| anyhow!("no SSE response header"))??;
        if n == 0 {
            bail!("HTTP connection closed before the SSE header");
        }
        head.extend_from_slice(&buf[..n]);
    }
    if !head.starts_with(b"HTTP/1.1 200") {
        bail!(
            "SSE refused: {}",
            String::from_utf8_lossy(&head[..head.len().min(64)])
        );
    }
    Ok(s)
}

/// An MQTT subscriber (QoS 0) that reads its SUBACK and stops.
async fn stalled_subscriber(
    args: &StallArgs,
    topic: &str,
    id: &str,
    deadline: Instant,
) -> Result<TcpStream> {
    let mut s = small_socket(args.mqtt, args.rcvbuf, deadline).await?;
    let mut out = BytesMut::new();
    mqtt::connect(&mut out, id, 0, true);
    mqtt::subscribe(&mut out, 1, topic, 0);
    s.write_all(&out).await?;
    let mut buf = BytesMut::new();
    let mut acked = false;
    while !acked {
        let n = tokio::time::timeout_at(deadline, s.read_buf(&mut buf))
            .await
            .map_err(|_| anyhow!("no SUBACK"))??;
        if n == 0 {
            bail!("MQTT connection closed before the SUBACK");
        }
        while let Some(p) = mqtt::parse(&mut buf)? {
            match p {
                Incoming::ConnAck(0) => {}
                Incoming::ConnAck(c) => bail!("CONNACK {c}"),
                Incoming::SubAck(..) => acked = true,
                _ => {}
            }
        }
    }
    Ok(s)
}

/// MiB of a KiB count, for the report.
fn mib(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 10.0).round() / 10.0
}

/// Run the scenario.
pub(crate) async fn run(args: &StallArgs, ctx: &Ctx) -> Result<Report> {
    let mut report = Report::new("stall", &ctx.target, serde_json::to_value(args)?);
    let pid = ctx
        .pid
        .clone()
        .ok_or_else(|| anyhow!("stall measures the server: give --server-pid"))?;
    let deadline = Instant::now() + Duration::from_secs(args.max_seconds);
    let id = run_id();
    let topic = format!("stall/{id}");
    let baseline = crate::procfs::sample(&pid)
        .rss_kib
        .ok_or_else(|| anyhow!("cannot read /proc/{pid}/status"))?;

    let mut stalled = Vec::new();
    for _ in 0..args.observers {
        stalled.push(stalled_observer(args, &topic, deadline).await?);
    }
    for i in 0..args.subscribers {
        stalled
            .push(stalled_subscriber(args, &topic, &format!("lg-stall{i}-{id}"), deadline).await?);
    }
    for _ in 0..args.streams {
        stalled.push(stalled_stream(args, &topic, deadline).await?);
    }
    let connected = crate::procfs::sample(&pid).rss_kib.unwrap_or(0);

    let before = ctx.begin();
    let started = Instant::now();
    let mut publisher =
        Conn::open(args.mqtt, None, &format!("lg-stallpub-{id}"), 0, deadline).await?;
    let payload = vec![b'x'; args.payload];
    let mut out = BytesMut::with_capacity(64 * 1024);
    for _ in 0..args.messages {
        mqtt::publish(&mut out, &topic, 0, false, 0, &payload);
        if out.len() >= 60 * 1024 {
            publisher.wr.write_all(&out).await?;
            out.clear();
        }
    }
    mqtt::pingreq(&mut out);
    publisher.wr.write_all(&out).await?;
    loop {
        match publisher.next(deadline).await? {
            Incoming::PingResp => break,
            _ => continue,
        }
    }
    report.sent = args.messages;
    report.set_duration(started.elapsed());
    ctx.end(&mut report, before);
    let flooded = crate::procfs::sample(&pid);

    drop(stalled);
    drop(publisher);
    tokio::time::sleep(Duration::from_secs(args.settle_seconds)).await;
    let after = crate::procfs::sample(&pid).rss_kib.unwrap_or(0);

    let peak = report.server_peak_rss_kib.or(flooded.hwm_kib).unwrap_or(0);
    let residual = after.saturating_sub(baseline);
    for (k, v) in [
        ("rss_baseline_mib", mib(baseline)),
        ("rss_connected_mib", mib(connected)),
        ("rss_flooded_mib", mib(flooded.rss_kib.unwrap_or(0))),
        ("rss_peak_mib", mib(peak)),
        ("rss_after_disconnect_mib", mib(after)),
        ("residual_mib", mib(residual)),
    ] {
        report.extra.insert(k.into(), v.into());
    }
    if args.max_peak_mib > 0 && peak > args.max_peak_mib * 1024 {
        report.fail(format!(
            "peak RSS {} MiB above {} MiB",
            mib(peak),
            args.max_peak_mib
        ));
    }
    if args.max_residual_mib > 0 && residual > args.max_residual_mib * 1024 {
        report.fail(format!(
            "RSS {} MiB above the baseline after the readers left (limit {} MiB)",
            mib(residual),
            args.max_residual_mib
        ));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc8323_3_2_length_nibbles() {
        // A 4-byte header (ver/type/tkl, code, mid) with a 2-byte token and 3 more bytes.
        let d = [0x42u8, 0x01, 0, 0, 0xaa, 0xbb, 1, 2, 3];
        assert_eq!(to_tcp(&d), vec![0x32, 0x01, 0xaa, 0xbb, 1, 2, 3]);
        let mut big = vec![0x40u8, 0x45, 0, 0];
        big.extend(std::iter::repeat_n(0u8, 300));
        let f = to_tcp(&big);
        assert_eq!(f[0] >> 4, 14);
        assert_eq!(u16::from_be_bytes([f[1], f[2]]), 300 - 269);
    }
}
