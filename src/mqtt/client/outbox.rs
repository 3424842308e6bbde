//! The outbox of one connection: deliveries move from the session's mailbox into the
//! machine while its in-flight window and the write buffer have room, so a slow reader
//! backs up into its own bounded mailbox (with its overflow policy), not into memory here.
//!
//! A persistent session's delivery carries its durable identity: the outbox tells the
//! session's durable side which packet id it went out under, and settles it (the one
//! `forget_durable` place) when it is not sent at all: withheld by the ACL, expired, or
//! discarded by the machine.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;

use ponte_mqtt::Connection;

use super::super::access::Access;
use super::super::session::Session;
use super::super::wire;
use crate::broker::{Broker, Delivery};

/// Stop pulling from the mailbox while this many bytes wait to be written.
pub(super) const WRITE_HIGH_WATER: usize = 256 * 1024;

/// Moves a session's deliveries into its connection.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    /// Messages the machine has discarded as larger than the client's Maximum Packet Size,
    /// as already added to `Metrics::too_large` (the machine's own count only grows).
    too_large_counted: u64,
}

impl Outbox {
    /// Move deliveries from `session`'s mailbox into `conn` (encoded into its transmit
    /// buffer) while there is room. With an ACL that filters reads, each delivery is
    /// checked first (one atomic load per call without one).
    pub(super) fn pump(
        &mut self,
        conn: &mut Connection,
        session: &Session,
        access: &Access,
        broker: &Broker,
        peer: SocketAddr,
    ) {
        self.count_too_large(conn, broker, peer);
        let now = Instant::now();
        let filtered = access.reads_filtered();
        let mut sent_count = 0u64;
        while conn.transmit_len() < WRITE_HIGH_WATER {
            let Some(d) = session.mailbox.pop() else {
                break;
            };
            if filtered && !access.may_receive(d.message.topic.as_str()) {
                // A wider filter than what is readable (`#`): withheld, counted by `Auth`.
                forget_durable(session, &d);
                continue;
            }
            if d.message.expired(now) {
                broker.metrics.expired.fetch_add(1, Ordering::Relaxed);
                forget_durable(session, &d);
                continue;
            }
            let sent = match conn.send_publish(now, wire::delivery(&d)) {
                Ok(sent) => sent,
                Err(out) => {
                    drop(out);
                    session.mailbox.push_front(d);
                    break;
                }
            };
            sent_count += 1;
            // Tracked until PUBACK/PUBCOMP; dropped by the machine (v5 expiry or Maximum
            // Packet Size, counted there): nothing left to deliver.
            match (sent, &session.durable, d.durable) {
                (Some(pkid), Some(durable), Some(seq)) => durable.sent(pkid, seq),
                (None, _, _) => forget_durable(session, &d),
                _ => {}
            }
        }
        if sent_count > 0 {
            broker.ops.sent(crate::metrics::Protocol::Mqtt, sent_count);
        }
        self.count_too_large(conn, broker, peer);
    }

    /// Exchanges ended (`InflightFreed`): their messages' durable copies go.
    pub(super) fn finished(&self, conn: &Connection, session: &Session) {
        if let Some(durable) = &session.durable {
            durable.finished(conn.outgoing_pkids());
        }
    }

    /// Adds the messages the machine discarded since the last call as larger than the
    /// client's Maximum Packet Size (MQTT-3.1.2-25) to `Metrics::too_large`.
    fn count_too_large(&mut self, conn: &Connection, broker: &Broker, peer: SocketAddr) {
        let (too_large, _) = conn.dropped();
        if too_large > self.too_large_counted {
            let n = too_large - self.too_large_counted;
            self.too_large_counted = too_large;
            broker.metrics.too_large.fetch_add(n, Ordering::Relaxed);
            tracing::debug!(%peer, discarded = n, "message(s) larger than the client's Maximum Packet Size not sent (MQTT-3.1.2-25)");
        }
    }
}

/// A delivery taken from the mailbox is settled without an exchange: its durable copy, if
/// any, is acknowledged.
fn forget_durable(session: &Session, d: &Delivery) {
    if let (Some(durable), Some(seq)) = (&session.durable, d.durable) {
        durable.acknowledge(seq);
    }
}
