//! CoAP over UDP with coap-lite: request/response load (GET, PUT) from several clients, each
//! with its own socket and one confirmable request outstanding, and an observer that ACKs
//! notifications and measures their latency. A request unanswered within `--timeout-ms` is
//! counted as lost (no retransmission: on loopback a loss is a server drop).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use clap::Args;
use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType};
use hdrhistogram::Histogram;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{timeout, timeout_at, Instant};

use crate::report::{new_hist, Report};
use crate::tally::{requests_report, RequestLoad, Tally};
use crate::{now_ns, Ctx};

/// Parameters of a CoAP GET or PUT run.
#[derive(Debug, Clone, Args, serde::Serialize)]
pub(crate) struct CoapArgs {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:5683")]
    pub coap: SocketAddr,
    /// Concurrent clients (sockets), one request outstanding each.
    #[arg(long, default_value_t = 50)]
    pub clients: usize,
    /// Length, request count and payload size.
    #[command(flatten)]
    #[serde(flatten)]
    pub load: RequestLoad,
    /// A request without answer after this long is lost.
    #[arg(long, default_value_t = 2000)]
    pub timeout_ms: u64,
    /// Topic prefix (each client uses `PREFIX/<run>/<client>`).
    #[arg(long, default_value = "loadgen")]
    pub prefix: String,
}

/// Build a confirmable request for `/r/<topic>`.
pub(crate) fn request(
    method: RequestType,
    topic: &str,
    mid: u16,
    token: &[u8],
    payload: &[u8],
) -> Result<Vec<u8>> {
    let mut p = Packet::new();
    p.header.set_version(1);
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(method);
    p.header.message_id = mid;
    p.set_token(token.to_vec());
    p.add_option(CoapOption::UriPath, b"r".to_vec());
    for level in topic.split('/') {
        p.add_option(CoapOption::UriPath, level.as_bytes().to_vec());
    }
    p.payload = payload.to_vec();
    p.to_bytes()
        .map_err(|e| anyhow!("encoding CoAP request: {e:?}"))
}

/// One request/response exchange; returns the response code class (2 = success).
pub(crate) async fn exchange(
    sock: &UdpSocket,
    bytes: &[u8],
    mid: u16,
    token: &[u8],
    deadline: Instant,
) -> Result<Packet> {
    sock.send(bytes).await?;
    let mut buf = vec![0u8; 2048];
    loop {
        let n = timeout_at(deadline, sock.recv(&mut buf))
            .await
            .map_err(|_| anyhow!("no answer"))??;
        let Ok(p) = Packet::from_bytes(&buf[..n]) else {
            continue;
        };
        if p.get_token() == token
            && (p.header.message_id == mid || p.header.get_type() == MessageType::Confirmable)
        {
            if p.header.get_type() == MessageType::Confirmable {
                // A separate response: acknowledge it.
                if let Some(b) = empty_ack(&p) {
                    sock.send(&b).await?;
                }
            }
            if p.header.code == MessageClass::Empty {
                continue; // empty ACK of a separate response: keep waiting
            }
            return Ok(p);
        }
    }
}

/// [`exchange`] without decoding: the answer expected is a piggybacked ACK (type 2) with
/// the request's message id and token; its code class (2 = success) is returned, or the
/// whole code when it is not a success. Anything else (a separate response, a stray
/// datagram) goes through [`exchange`]'s full decoding.
async fn quick_exchange(
    sock: &UdpSocket,
    bytes: &[u8],
    mid: u16,
    token: &[u8],
    buf: &mut [u8],
    deadline: Instant,
) -> Result<u8> {
    sock.send(bytes).await?;
    loop {
        let n = timeout_at(deadline, sock.recv(buf))
            .await
            .map_err(|_| anyhow!("no answer"))??;
        let d = &buf[..n];
        let tkl = usize::from(d.first().map_or(0, |b| b & 0x0f));
        let piggybacked = n >= 4 + tkl
            && d[0] >> 6 == 1
            && (d[0] >> 4) & 0x3 == 2
            && d[2..4] == mid.to_be_bytes()
            && &d[4..4 + tkl] == token;
        if piggybacked && d[1] != 0 {
            return Ok(if d[1] >> 5 == 2 { 2 } else { d[1] });
        }
        let Ok(p) = Packet::from_bytes(d) else {
            continue;
        };
        if p.get_token() != token {
            continue;
        }
        if p.header.get_type() == MessageType::Confirmable {
            // A separate response: acknowledge it.
            if let Some(b) = empty_ack(&p) {
                sock.send(&b).await?;
            }
        }
        if p.header.code == MessageClass::Empty {
            continue; // empty ACK of a separate response: keep waiting
        }
        let code = u8::from(p.header.code);
        return Ok(if code >> 5 == 2 { 2 } else { code });
    }
}

/// The empty ACK of the confirmable message `p`, encoded.
fn empty_ack(p: &Packet) -> Option<Vec<u8>> {
    let mut ack = Packet::new();
    ack.header.set_version(1);
    ack.header.set_type(MessageType::Acknowledgement);
    // Packet::new() defaults to code 0.01 (GET): an ACK must be the empty message.
    ack.header.code = MessageClass::Empty;
    ack.header.message_id = p.header.message_id;
    ack.to_bytes().ok()
}

fn class(p: &Packet) -> u8 {
    u8::from(p.header.code) >> 5
}

/// Run CoAP GET (`put == false`) or PUT load.
pub(crate) async fn run(put: bool, args: &CoapArgs, ctx: &Ctx) -> Result<Report> {
    let name = if put { "coap-put" } else { "coap-get" };
    let report = Report::new(name, &ctx.target, serde_json::to_value(args)?);
    let base = format!("{}/{}", args.prefix, crate::pubsub::run_id());
    let payload = vec![b'v'; args.load.size];
    // Seed one value per client so GETs hit.
    let mut socks = Vec::new();
    for i in 0..args.clients {
        let s = UdpSocket::bind("127.0.0.1:0").await?;
        s.connect(args.coap).await?;
        let topic = format!("{base}/{i}");
        let token = [0xa0, i as u8, (i >> 8) as u8];
        let req = request(RequestType::Put, &topic, 1, &token, &payload)?;
        let resp = exchange(&s, &req, 1, &token, Instant::now() + Duration::from_secs(5)).await?;
        if class(&resp) != 2 {
            bail!("seeding PUT /r/{topic} answered {}", resp.header.get_code());
        }
        socks.push((s, topic));
    }
    let before = ctx.begin();
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(args.load.seconds);
    let mut tasks = JoinSet::new();
    for (i, (s, topic)) in socks.into_iter().enumerate() {
        let (payload, limit, tmo) = (
            payload.clone(),
            args.load.requests,
            Duration::from_millis(args.timeout_ms),
        );
        tasks.spawn(async move {
            let mut r = Tally::new();
            let mut mid: u16 = 1;
            let token = [0xb0, i as u8, (i >> 8) as u8, 0];
            let method = if put {
                RequestType::Put
            } else {
                RequestType::Get
            };
            let body: &[u8] = if put { &payload } else { &[] };
            // The request is encoded once; each exchange only rewrites its message id, so
            // the generator spends its CPU on the socket, not on building packets.
            let mut req = match request(method, &topic, mid, &token, body) {
                Ok(b) => b,
                Err(e) => {
                    r.gave_up(e.to_string());
                    return r;
                }
            };
            let mut buf = vec![0u8; 2048];
            while Instant::now() < end && (limit == 0 || r.sent() < limit) {
                mid = mid.wrapping_add(1);
                req[2..4].copy_from_slice(&mid.to_be_bytes());
                let t0 = r.issue();
                match quick_exchange(&s, &req, mid, &token, &mut buf, Instant::now() + tmo).await {
                    Ok(2) => r.answered(t0),
                    Ok(c) => r.failed(format!("answered {}.{:02}", c >> 5, c & 0x1f)),
                    Err(e) => r.failed(e.to_string()),
                }
            }
            r
        });
    }
    let hard = end + Duration::from_millis(args.timeout_ms) + Duration::from_secs(2);
    let report = requests_report(report, tasks, hard, "client", started, ctx, before);
    Ok(report.await)
}

/// What an observer saw.
pub(crate) struct ObserveResult {
    /// Notifications after the first response.
    pub notifications: u64,
    /// Latency of those carrying a generator timestamp (ns).
    pub hist: Histogram<u64>,
    /// The last payload seen (to check the final value arrived).
    pub last_payload: Vec<u8>,
    /// Error that ended the observation.
    pub error: Option<String>,
}

/// Observe `/r/<topic>` until `stop`; ACK every confirmable notification.
pub(crate) async fn observe(
    addr: SocketAddr,
    topic: String,
    ready: tokio::sync::oneshot::Sender<Result<()>>,
    mut stop: watch::Receiver<bool>,
) -> ObserveResult {
    let mut r = ObserveResult {
        notifications: 0,
        hist: new_hist(),
        last_payload: Vec::new(),
        error: None,
    };
    let sock = match UdpSocket::bind("127.0.0.1:0").await {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(e.into()));
            return r;
        }
    };
    let token = [0x0b, 0x5e];
    let setup = async {
        sock.connect(addr).await?;
        let mut p = Packet::new();
        p.header.set_version(1);
        p.header.set_type(MessageType::Confirmable);
        p.header.code = MessageClass::Request(RequestType::Get);
        p.header.message_id = 7;
        p.set_token(token.to_vec());
        p.set_observe_value(0);
        p.add_option(CoapOption::UriPath, b"r".to_vec());
        for level in topic.split('/') {
            p.add_option(CoapOption::UriPath, level.as_bytes().to_vec());
        }
        let bytes = p
            .to_bytes()
            .map_err(|e| anyhow!("encoding observe: {e:?}"))?;
        let first = exchange(
            &sock,
            &bytes,
            7,
            &token,
            Instant::now() + Duration::from_secs(5),
        )
        .await?;
        if class(&first) != 2 || first.get_observe_value().is_none() {
            bail!(
                "observe registration answered {} without Observe",
                first.header.get_code()
            );
        }
        Ok::<_, anyhow::Error>(())
    };
    match setup.await {
        Ok(()) => {
            let _ = ready.send(Ok(()));
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return r;
        }
    }
    let mut buf = vec![0u8; 2048];
    loop {
        let n = tokio::select! {
            n = sock.recv(&mut buf) => match n {
                Ok(n) => n,
                Err(e) => { r.error = Some(e.to_string()); return r; }
            },
            _ = stop.changed() => return r,
        };
        let Ok(p) = Packet::from_bytes(&buf[..n]) else {
            continue;
        };
        if p.header.get_type() == MessageType::Confirmable {
            if let Some(b) = empty_ack(&p) {
                let _ = timeout(Duration::from_secs(1), sock.send(&b)).await;
            }
        }
        if p.get_token() != token || class(&p) != 2 {
            continue;
        }
        r.notifications += 1;
        if let Some(ts) = p.payload.get(..8) {
            let mut b = [0u8; 8];
            b.copy_from_slice(ts);
            let sent = u64::from_be_bytes(b);
            if sent > 0 && sent <= now_ns() {
                r.hist
                    .saturating_record(now_ns().saturating_sub(sent).max(1));
            }
        }
        r.last_payload = p.payload;
    }
}
