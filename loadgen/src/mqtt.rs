//! A minimal MQTT 3.1.1 client: just the packets the scenarios need, written and parsed by
//! hand so the generator costs little CPU per message and shares no code with the server
//! under test (`ponte-mqtt`). Every length read from the network is checked: a malformed
//! packet is an error, never a panic.

use std::net::{IpAddr, SocketAddr};

use anyhow::{anyhow, bail, Context, Result};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpSocket;
use tokio::time::{timeout_at, Instant};

use crate::now_ns;

/// A packet received from the broker.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// CONNACK with its return code (0 = accepted).
    ConnAck(u8),
    /// SUBACK: packet id and one return code per filter (0x80 = refused).
    SubAck(u16, Vec<u8>),
    /// PUBLISH: QoS, packet id (0 at QoS 0) and the payload.
    Publish {
        /// Delivered QoS: 1 and 2 need an acknowledgement.
        qos: u8,
        /// Packet id to acknowledge.
        pkid: u16,
        /// The application payload (zero-copy slice of the read buffer).
        payload: Bytes,
    },
    /// PUBACK for one of our QoS 1 publishes (the generator only counts them).
    PubAck,
    /// PINGRESP.
    PingResp,
    /// Anything else, by packet type number.
    Other(u8),
}

fn put_len(out: &mut BytesMut, mut len: usize) {
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        out.put_u8(b);
        if len == 0 {
            break;
        }
    }
}

fn put_str(out: &mut BytesMut, s: &[u8]) {
    out.put_u16(s.len() as u16);
    out.put_slice(s);
}

/// CONNECT, MQTT 3.1.1, no will, no credentials.
pub(crate) fn connect(out: &mut BytesMut, client_id: &str, keepalive: u16, clean: bool) {
    out.put_u8(0x10);
    put_len(out, 10 + 2 + client_id.len());
    put_str(out, b"MQTT");
    out.put_u8(4);
    out.put_u8(if clean { 0x02 } else { 0 });
    out.put_u16(keepalive);
    put_str(out, client_id.as_bytes());
}

/// SUBSCRIBE to one filter.
pub(crate) fn subscribe(out: &mut BytesMut, pkid: u16, filter: &str, qos: u8) {
    out.put_u8(0x82);
    put_len(out, 2 + 2 + filter.len() + 1);
    out.put_u16(pkid);
    put_str(out, filter.as_bytes());
    out.put_u8(qos);
}

/// PUBLISH (`pkid` ignored at QoS 0).
pub(crate) fn publish(
    out: &mut BytesMut,
    topic: &str,
    qos: u8,
    retain: bool,
    pkid: u16,
    payload: &[u8],
) {
    let id = if qos > 0 { 2 } else { 0 };
    out.put_u8(0x30 | (qos << 1) | u8::from(retain));
    put_len(out, 2 + topic.len() + id + payload.len());
    put_str(out, topic.as_bytes());
    if qos > 0 {
        out.put_u16(pkid);
    }
    out.put_slice(payload);
}

/// PUBACK.
pub(crate) fn puback(out: &mut BytesMut, pkid: u16) {
    out.put_u8(0x40);
    out.put_u8(2);
    out.put_u16(pkid);
}

/// PINGREQ.
pub(crate) fn pingreq(out: &mut BytesMut) {
    out.put_slice(&[0xc0, 0]);
}

fn be16(b: &[u8], at: usize) -> Result<u16> {
    match b.get(at..at + 2) {
        Some(s) => Ok(u16::from_be_bytes([s[0], s[1]])),
        None => bail!("packet too short for a 16-bit field at {at}"),
    }
}

/// Take one complete packet off the front of `buf`, or `None` if it is not all there yet.
pub(crate) fn parse(buf: &mut BytesMut) -> Result<Option<Incoming>> {
    let mut len = 0usize;
    let mut i = 1;
    loop {
        if i > 4 {
            bail!("malformed remaining length");
        }
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        len += usize::from(b & 0x7f) << (7 * (i - 1));
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
    }
    if buf.len() < i + len {
        return Ok(None);
    }
    let first = buf[0];
    let mut pkt = buf.split_to(i + len);
    pkt.advance(i);
    let body = pkt.freeze();
    Ok(Some(match first >> 4 {
        2 => Incoming::ConnAck(*body.get(1).ok_or_else(|| anyhow!("short CONNACK"))?),
        3 => {
            let qos = (first >> 1) & 3;
            let mut off = 2 + usize::from(be16(&body, 0)?);
            let pkid = if qos > 0 {
                let p = be16(&body, off)?;
                off += 2;
                p
            } else {
                0
            };
            if off > body.len() {
                bail!("PUBLISH topic longer than the packet");
            }
            Incoming::Publish {
                qos,
                pkid,
                payload: body.slice(off..),
            }
        }
        4 => {
            be16(&body, 0)?;
            Incoming::PubAck
        }
        9 => Incoming::SubAck(be16(&body, 0)?, body.get(2..).unwrap_or_default().to_vec()),
        13 => Incoming::PingResp,
        t => Incoming::Other(t),
    }))
}

/// Take every complete packet off the front of `buf`: count the PUBLISHes, record into
/// `hist` the latency of each from the send time at the front of its payload (see
/// [`now_ns`]), and queue into `acks` a PUBACK for each at QoS 1. A malformed packet stops
/// it: the count so far and the error.
pub(crate) fn take_publishes(
    buf: &mut BytesMut,
    hist: &mut Histogram<u64>,
    acks: &mut BytesMut,
) -> (u64, Option<anyhow::Error>) {
    let mut got = 0;
    loop {
        match parse(buf) {
            Ok(Some(Incoming::Publish { qos, pkid, payload })) => {
                got += 1;
                if let Some(ts) = payload.get(..8) {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(ts);
                    let sent = u64::from_be_bytes(b);
                    hist.saturating_record(now_ns().saturating_sub(sent).max(1));
                }
                if qos > 0 {
                    puback(acks, pkid);
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => return (got, None),
            Err(e) => return (got, Some(e)),
        }
    }
}

/// A connected, accepted MQTT client, split for concurrent reading and writing.
#[derive(Debug)]
pub(crate) struct Conn {
    /// Read side; the bytes already read but not parsed are in `buf`.
    pub rd: OwnedReadHalf,
    /// Write side.
    pub wr: OwnedWriteHalf,
    /// Read buffer (may hold the start of the next packet after the handshake).
    pub buf: BytesMut,
}

impl Conn {
    /// Connect to `addr` (optionally from a chosen local address, to spread ephemeral ports
    /// over several loopback addresses), send CONNECT and wait for an accepting CONNACK.
    pub(crate) async fn open(
        addr: SocketAddr,
        local: Option<IpAddr>,
        client_id: &str,
        keepalive: u16,
        deadline: Instant,
    ) -> Result<Conn> {
        Self::open_session(addr, local, client_id, keepalive, true, deadline).await
    }

    /// [`Conn::open`] with a chosen Clean Session flag (0: a persistent session, which
    /// ponte makes durable).
    pub(crate) async fn open_session(
        addr: SocketAddr,
        local: Option<IpAddr>,
        client_id: &str,
        keepalive: u16,
        clean: bool,
        deadline: Instant,
    ) -> Result<Conn> {
        let socket = TcpSocket::new_v4()?;
        if let Some(ip) = local {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let stream = timeout_at(deadline, socket.connect(addr))
            .await
            .map_err(|_| anyhow!("connect to {addr} timed out"))?
            .with_context(|| format!("connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let (rd, mut wr) = stream.into_split();
        let mut out = BytesMut::new();
        connect(&mut out, client_id, keepalive, clean);
        wr.write_all(&out).await?;
        let mut c = Conn {
            rd,
            wr,
            buf: BytesMut::with_capacity(64 * 1024),
        };
        match c.next(deadline).await? {
            Incoming::ConnAck(0) => Ok(c),
            Incoming::ConnAck(code) => bail!("CONNACK refused with code {code}"),
            Incoming::Other(t) => bail!("expected CONNACK, got packet type {t}"),
            other => bail!("expected CONNACK, got {other:?}"),
        }
    }

    /// Read until one packet is complete.
    pub(crate) async fn next(&mut self, deadline: Instant) -> Result<Incoming> {
        loop {
            if let Some(p) = parse(&mut self.buf)? {
                return Ok(p);
            }
            let n = timeout_at(deadline, self.rd.read_buf(&mut self.buf))
                .await
                .map_err(|_| anyhow!("timed out waiting for the broker"))??;
            if n == 0 {
                bail!("broker closed the connection");
            }
        }
    }

    /// Subscribe to `filter` and wait for a granting SUBACK.
    pub(crate) async fn subscribe(
        &mut self,
        filter: &str,
        qos: u8,
        deadline: Instant,
    ) -> Result<()> {
        let mut out = BytesMut::new();
        subscribe(&mut out, 1, filter, qos);
        self.wr.write_all(&out).await?;
        loop {
            match self.next(deadline).await? {
                Incoming::SubAck(1, codes) => {
                    if !matches!(codes.first(), Some(c) if *c != 0x80) {
                        bail!("SUBSCRIBE {filter} refused");
                    }
                    return Ok(());
                }
                // A retained message may arrive before or after the SUBACK; ignore it.
                Incoming::Publish { .. } => {}
                Incoming::Other(t) => bail!("expected SUBACK, got packet type {t}"),
                other => bail!("expected SUBACK, got {other:?}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_round_trip_and_partial_input() {
        let mut out = BytesMut::new();
        publish(&mut out, "a/b", 1, false, 9, &[1, 2, 3]);
        let mut partial = BytesMut::from(&out[..out.len() - 1]);
        assert!(parse(&mut partial).unwrap().is_none());
        match parse(&mut out).unwrap() {
            Some(Incoming::Publish { qos, pkid, payload }) => {
                assert_eq!((qos, pkid, &payload[..]), (1, 9, &[1u8, 2, 3][..]));
            }
            other => panic!("{other:?}"),
        }
        assert!(out.is_empty());
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let mut b = BytesMut::from(&[0x30u8, 0xff, 0xff, 0xff, 0xff, 0x01][..]);
        assert!(parse(&mut b).is_err());
        let mut b = BytesMut::from(&[0x30u8, 2, 0, 9][..]);
        assert!(parse(&mut b).is_err());
        let mut b = BytesMut::from(&[0x40u8, 1, 0][..]);
        assert!(parse(&mut b).is_err());
    }
}
