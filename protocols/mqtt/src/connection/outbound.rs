//! Messages to the client: the outgoing window, packet ids, and the PUBLISH fast path (v5:
//! expiry, Maximum Packet Size, server topic aliases).

use std::time::Instant;

use crate::codec::{encode_publish, encode_publish5, publish5_size, PublishExtras, PublishHeader};
use crate::packet::QoS;

use super::{io, Connection, Inbound, Inflight, Outgoing, State, NO_OUTGOING};

impl Connection {
    /// Sends a message to the client. QoS 0 is written immediately; QoS 1/2 gets a free
    /// packet id and is tracked until acknowledged. Returns the packet id it was sent under
    /// (`Some` exactly when the message is now in flight, to be acknowledged), `None` when
    /// nothing is tracked: a QoS 0 message, or one the machine discarded (v5: expired, or
    /// larger than the client's Maximum Packet Size; counted, see
    /// [`Connection::dropped`]). Returns the message back when the in-flight window is full
    /// or the connection is not (yet / any more) established, so the driver keeps it
    /// queued.
    ///
    /// On a v5 connection repeated topics get a server-assigned Topic Alias, and the window
    /// is also capped by the client's Receive Maximum (MQTT-3.3.4-9).
    // The message comes back whole only when it cannot be sent yet; boxing it to make the
    // `Err` smaller would cost an allocation on every send instead.
    #[allow(clippy::result_large_err)]
    pub fn send_publish(&mut self, now: Instant, msg: Outgoing) -> Result<Option<u16>, Outgoing> {
        if self.state != State::Connected {
            return Err(msg);
        }
        if msg.qos != QoS::AtMostOnce && self.inflight_available() == 0 {
            return Err(msg);
        }
        let pkid = if msg.qos == QoS::AtMostOnce {
            0
        } else {
            match self.allocate_pkid() {
                Some(id) => id,
                None => return Err(msg),
            }
        };
        let limit = self.alias_limit();
        let alias = match self.v5.as_mut() {
            Some(v5) if limit > 0 => v5
                .outbound_aliases
                .get_or_insert_with(Box::default)
                .pick(&msg.topic, limit),
            _ => None,
        };
        if !self.write_publish(now, false, pkid, &msg, alias) {
            return Ok(None);
        }
        if let (Some((a, set)), Some(v5)) = (alias, self.v5.as_mut()) {
            if let Some(table) = v5.outbound_aliases.as_mut() {
                table.used(&msg.topic, a, set);
            }
        }
        if msg.qos == QoS::AtMostOnce {
            return Ok(None);
        }
        io(&mut self.io)
            .outgoing
            .push_back(Inflight::Publish { pkid, message: msg });
        Ok(Some(pkid))
    }

    /// Writes one PUBLISH in the connection's version; on v5 it may get a topic alias
    /// (`alias` `Some((alias, first_use))`). Returns false when the message was dropped
    /// instead (v5: expired, or larger than the client's Maximum Packet Size).
    pub(super) fn write_publish(
        &mut self,
        now: Instant,
        dup: bool,
        pkid: u16,
        msg: &Outgoing,
        alias: Option<(u16, bool)>,
    ) -> bool {
        let Some(v5) = self.v5.as_mut() else {
            encode_publish(
                &mut io(&mut self.io).tx,
                dup,
                msg.qos,
                msg.retain,
                &msg.topic,
                pkid,
                &msg.payload,
            );
            return true;
        };
        let remaining = match msg.expires_at {
            Some(at) if at <= now && !dup => {
                v5.dropped_expired += 1;
                return false;
            }
            // Round up: a message with 0.4 s left still has "1 s" left, not 0.
            Some(at) => {
                let left = at.saturating_duration_since(now);
                let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
                Some(u32::try_from(secs.max(1)).unwrap_or(u32::MAX))
            }
            None => None,
        };
        let header = PublishHeader {
            dup,
            qos: msg.qos,
            retain: msg.retain,
            topic: match alias {
                Some((_, false)) => "",
                _ => &msg.topic,
            },
            pkid,
        };
        let extras = PublishExtras {
            content_type: msg.content_type.as_deref(),
            message_expiry_interval: remaining,
            topic_alias: alias.map(|(a, _)| a),
            subscription_identifiers: &msg.subscription_ids,
        };
        let shared = msg.properties.as_deref();
        let size = publish5_size(&mut v5.scratch, &header, msg.payload.len(), shared, &extras);
        let fits = v5
            .asks
            .max_packet_size
            .is_none_or(|max| size <= max as usize);
        if fits {
            encode_publish5(
                &mut io(&mut self.io).tx,
                &mut v5.scratch,
                &header,
                &msg.payload,
                shared,
                &extras,
            );
        } else {
            v5.dropped_too_large += 1;
        }
        fits
    }

    /// Most aliases this connection assigns: the client's Topic Alias Maximum (none when
    /// it announced none, MQTT-3.1.2-26/27), capped by ours.
    fn alias_limit(&self) -> u16 {
        self.v5.as_ref().map_or(0, |v5| {
            v5.client_topic_alias_max
                .min(self.config.topic_alias_maximum)
        })
    }

    /// Packet ids of the unacknowledged outgoing exchanges, in send order. Lets a driver
    /// that keeps per-message state (a durable queue entry) notice which exchanges
    /// finished.
    pub fn outgoing_pkids(&self) -> impl ExactSizeIterator<Item = u16> + DoubleEndedIterator + '_ {
        self.outgoing().map(Inflight::pkid)
    }

    /// The unacknowledged outgoing exchanges in send order, each at its stage (PUBLISH sent,
    /// or PUBREC received and PUBREL sent): what [`Connection::take_session`] would save,
    /// for a driver that keeps it durable while the connection lives.
    pub fn outgoing(
        &self,
    ) -> impl ExactSizeIterator<Item = &Inflight> + DoubleEndedIterator + Clone + '_ {
        self.io
            .as_ref()
            .map_or(&NO_OUTGOING, |io| &io.outgoing)
            .iter()
    }

    /// Inbound QoS 2 packet ids acknowledged with PUBREC and not yet released by PUBREL
    /// (what [`Connection::take_session`] would save).
    pub fn inbound_qos2(&self) -> impl Iterator<Item = u16> + '_ {
        self.io
            .iter()
            .flat_map(|io| io.inbound.iter())
            .filter(|(_, state)| **state == Inbound::Qos2 { done: true })
            .map(|(id, _)| *id)
    }

    /// The next packet id an outgoing exchange will try.
    pub fn next_pkid(&self) -> u16 {
        self.next_pkid
    }

    /// How many more QoS 1/2 messages `send_publish` accepts now.
    pub fn inflight_available(&self) -> usize {
        if self.state != State::Connected {
            return 0;
        }
        let mut window = self.config.max_inflight;
        if let Some(v5) = &self.v5 {
            window = window.min(v5.client_receive_maximum);
        }
        usize::from(window).saturating_sub(self.outgoing().len())
    }

    fn allocate_pkid(&mut self) -> Option<u16> {
        for _ in 0..u16::MAX {
            let candidate = self.next_pkid;
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            if !self.outgoing().any(|e| e.pkid() == candidate) {
                return Some(candidate);
            }
        }
        None
    }
}
