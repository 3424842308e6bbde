//! The driver's answers to events: one command per answer, whatever the protocol version
//! (the reason codes are v5's; on 3.1/3.1.1 the codec writes the closest form, and a
//! Reason String is simply not sent). Commands given in the wrong state are ignored.

use std::collections::VecDeque;
use std::time::Instant;

use crate::packet::{Packet, PubResponse, SubResponse};
use crate::properties::{Properties, PropertyList};
use crate::reason;

use super::{io, Accept, CloseReason, Connection, Inbound, Inflight, SessionState, State};

/// The property list of an answer: a Reason String, or nothing (no allocation).
fn with_reason_string(why: Option<String>) -> PropertyList {
    match why {
        None => PropertyList::default(),
        Some(text) => Properties {
            reason_string: Some(text),
            ..Properties::default()
        }
        .into(),
    }
}

impl Connection {
    /// Accepts the CONNECT: sends CONNACK 0, arms the will and keepalive, restores
    /// `accept.resume` and resends its unacknowledged PUBLISHes (DUP=1) and PUBRELs in
    /// original order (MQTT-4.4.0-1), then handles any packets pipelined behind the
    /// CONNECT. The v5 CONNACK also announces the server's limits: Receive Maximum, Maximum
    /// Packet Size, Topic Alias Maximum, Retain / Wildcard / Subscription Identifier /
    /// Shared Subscription Available, Server Keep Alive when the client's Keep Alive was
    /// above `max_keep_alive`, Session Expiry Interval when the client's was above
    /// `max_session_expiry`, the Assigned Client Identifier and, when the client asked
    /// for it, the Response Information.
    pub fn accept(&mut self, now: Instant, accept: Accept) {
        if self.state != State::AwaitingAccept {
            return;
        }
        self.state = State::Connected;
        self.will_armed = true;
        let Accept {
            session_present,
            resume,
            assigned_client_id,
            response_information,
        } = accept;
        let properties = if let Some(v5) = &self.v5 {
            Properties {
                receive_maximum: Some(self.config.receive_maximum.max(1)),
                maximum_packet_size: Some(
                    u32::try_from(self.config.max_packet_size).unwrap_or(u32::MAX),
                ),
                topic_alias_maximum: Some(self.config.topic_alias_maximum),
                retain_available: Some(1),
                wildcard_subscription_available: Some(1),
                subscription_identifiers_available: Some(1),
                shared_subscription_available: Some(1),
                server_keep_alive: v5.server_keep_alive,
                session_expiry_interval: v5.server_session_expiry,
                assigned_client_identifier: assigned_client_id,
                // MQTT-3.1.2-28: only when the client asked for it.
                response_information: response_information.filter(|info| {
                    v5.response_information_requested && info.len() <= usize::from(u16::MAX)
                }),
                ..Properties::default()
            }
        } else {
            Properties::default()
        };
        self.send(Packet::ConnAck {
            session_present,
            reason_code: reason::SUCCESS,
            properties: properties.into(),
        });
        if let Some(session) = resume {
            self.resume(now, session);
        }
        self.deadline = self.keep_alive.map(|ka| now + ka);
        self.process(now);
    }

    /// Takes over a saved session's protocol state and re-sends its exchanges in order.
    fn resume(&mut self, now: Instant, session: SessionState) {
        self.next_pkid = session.next_pkid.max(1);
        for id in session.inbound_qos2 {
            io(&mut self.io)
                .inbound
                .insert(id, Inbound::Qos2 { done: true });
        }
        for entry in session.outgoing {
            match &entry {
                Inflight::Publish { pkid, message } => {
                    if !self.write_publish(now, true, *pkid, message, None) {
                        // Too large for this connection's client (its Maximum Packet
                        // Size may have shrunk): discarded as if delivered
                        // (MQTT-3.1.2-25), so it must not hold a window slot.
                        io(&mut self.io)
                            .events
                            .push_back(super::Event::InflightFreed);
                        continue;
                    }
                }
                Inflight::PubRel { pkid } => {
                    self.send(Packet::PubRel(PubResponse::success(*pkid)));
                }
            }
            io(&mut self.io).outgoing.push_back(entry);
        }
    }

    /// Refuses the CONNECT with CONNACK `reason_code` (>= 0x80) and closes without will.
    /// On v5 `reason_string` says why (the code's name when `None`); a 3.1/3.1.1 client
    /// gets the closest return code: 0x84 → 1, 0x85 → 2, 0x86 → 4, 0x87 → 5, others → 3.
    pub fn reject(&mut self, reason_code: u8, reason_string: Option<String>) {
        if self.state != State::AwaitingAccept {
            return;
        }
        self.refuse_now(reason_code, reason_string);
    }

    /// Answer an [`super::Event::PingRequest`] with PINGRESP (MQTT-3.12.4-1). Nothing is
    /// sent once the connection is closed.
    pub fn ping_response(&mut self) {
        if self.state == State::Closed {
            return;
        }
        self.send(Packet::PingResp);
    }

    /// The broker finished with inbound PUBLISH `pkid` (unknown ids are ignored):
    /// - `reason_code` < 0x80 (0x00, or v5's 0x10 No matching subscribers): PUBACK (QoS 1)
    ///   or PUBREC (QoS 2), the code sent on v5 only;
    /// - `reason_code` >= 0x80 (0x80 it could not be stored, 0x87 not authorized, 0x97
    ///   quota exceeded, ...): on v5 PUBACK/PUBREC with that code and `reason_string`, and
    ///   a refused QoS 2 exchange ends there (MQTT 4.3.3); 3.1/3.1.1 has no negative
    ///   acknowledgement, so the connection is closed instead and the client resends
    ///   after reconnecting (MQTT-4.8.0-2).
    pub fn publish_done(&mut self, pkid: u16, reason_code: u8, reason_string: Option<String>) {
        if self.state != State::Connected {
            return;
        }
        let v5 = self.is_v5();
        if reason_code >= 0x80 && !v5 {
            self.close_with(CloseReason::ServerClose);
            return;
        }
        let answer = |properties| PubResponse {
            pkid,
            reason_code,
            properties,
        };
        let inbound = &mut io(&mut self.io).inbound;
        match inbound.get_mut(&pkid) {
            Some(Inbound::Qos1(count)) => {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    inbound.remove(&pkid);
                }
                self.send(Packet::PubAck(answer(with_reason_string(reason_string))));
            }
            Some(Inbound::Qos2 { done }) if !*done => {
                *done = true;
                if reason_code >= 0x80 {
                    inbound.remove(&pkid);
                }
                self.send(Packet::PubRec(answer(with_reason_string(reason_string))));
            }
            _ => {}
        }
    }

    /// Answers SUBSCRIBE `pkid` with one reason code per filter, in filter order (0x00-0x02
    /// granted QoS, >= 0x80 refused; on 3.1.1 every refusal is 0x80), and on v5 a Reason
    /// String explaining the refusals (without one, a refusal gets its code's name).
    pub fn suback(&mut self, pkid: u16, reason_codes: Vec<u8>, reason_string: Option<String>) {
        if self.state != State::Connected {
            return;
        }
        self.send(Packet::SubAck(SubResponse {
            pkid,
            reason_codes,
            properties: with_reason_string(reason_string),
        }));
    }

    /// Answers UNSUBSCRIBE `pkid`; on v5 with one reason code per filter (0x00 removed,
    /// 0x11 no subscription existed, 0x8F invalid, ...) and a Reason String explaining the
    /// refusals; on 3.1/3.1.1 neither is sent.
    pub fn unsuback(&mut self, pkid: u16, reason_codes: Vec<u8>, reason_string: Option<String>) {
        if self.state != State::Connected {
            return;
        }
        self.send(Packet::UnsubAck(SubResponse {
            pkid,
            reason_codes,
            properties: with_reason_string(reason_string),
        }));
    }

    /// Driver-initiated close (takeover, shutdown, a refusal); the will is handed out since
    /// this is not a DISCONNECT.
    pub fn close(&mut self, reason: CloseReason) {
        self.close_with(reason);
    }

    /// Moves the protocol state that outlives the connection out of it (for a session that
    /// continues).
    pub fn take_session(&mut self) -> SessionState {
        let inbound_qos2 = self.inbound_qos2().collect();
        let outgoing = match &mut self.io {
            Some(io) => {
                io.inbound.clear();
                std::mem::take(&mut io.outgoing)
            }
            None => VecDeque::new(),
        };
        SessionState {
            outgoing: outgoing.into(),
            inbound_qos2,
            next_pkid: self.next_pkid,
        }
    }
}
