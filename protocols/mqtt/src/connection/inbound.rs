//! One handler per packet type the client sends. The v5-only rules (Receive Maximum,
//! Topic Aliases, Subscription Identifiers from a client, Session Expiry on DISCONNECT,
//! PUBCOMP 0x92) are branches inside them.

use std::time::Instant;

use crate::packet::{Connect, Packet, PubResponse, Publish, QoS, ReasonPacket};
use crate::properties::Properties;
use crate::reason;

use super::{io, CloseReason, Connection, Event, Inbound, Inflight, State, Violation};

impl Connection {
    /// Handles one decoded packet.
    pub(super) fn on_packet(&mut self, now: Instant, packet: Packet) {
        if self.state == State::AwaitingConnect {
            match packet {
                Packet::Connect(c) => self.on_connect(now, c),
                other => {
                    self.close_with(Violation::FirstPacketNotConnect(other.name()).into());
                }
            }
            return;
        }
        self.deadline = self.keep_alive.map(|ka| now + ka);
        match packet {
            Packet::Connect(_) => self.close_with(Violation::SecondConnect.into()),
            Packet::Publish(p) => self.on_publish(p),
            Packet::PubAck(r) => {
                if let Some(i) = self.find_outgoing(r.pkid, Some(QoS::AtLeastOnce)) {
                    let io = io(&mut self.io);
                    io.outgoing.remove(i);
                    io.events.push_back(Event::InflightFreed);
                }
            }
            Packet::PubRec(r) => self.on_pubrec(r),
            Packet::PubComp(r) => {
                if let Some(i) = self.find_outgoing(r.pkid, None) {
                    let io = io(&mut self.io);
                    io.outgoing.remove(i);
                    io.events.push_back(Event::InflightFreed);
                }
            }
            Packet::PubRel(r) => self.on_pubrel(r.pkid),
            Packet::Subscribe(s) => io(&mut self.io).events.push_back(Event::Subscribe(s)),
            Packet::Unsubscribe(u) => io(&mut self.io).events.push_back(Event::Unsubscribe(u)),
            Packet::PingReq => io(&mut self.io).events.push_back(Event::PingRequest),
            Packet::Disconnect(d) => self.on_disconnect(d),
            // Only a v5 decoder yields AUTH; no extended authentication is supported.
            Packet::Auth(_) => self.close_with(Violation::AuthNotSupported.into()),
            other @ (Packet::ConnAck { .. }
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp) => {
                self.close_with(Violation::ServerOnlyPacket(other.name()).into())
            }
        }
    }

    /// The CONNECT: keep alive, the client's v5 limits, then the event for the driver.
    fn on_connect(&mut self, now: Instant, c: Box<Connect>) {
        self.protocol = Some(c.protocol);
        let v5 = c.protocol.is_v5();
        let requested = c.keep_alive;
        let max = self.config.max_keep_alive;
        // MQTT 5 lets the server impose its Keep Alive (3.2.2.3.14); 3.1.1 does not.
        let imposed = v5 && max > 0 && (requested == 0 || requested > max);
        let effective = if imposed { max } else { requested };
        self.keep_alive = self.keep_alive_for(effective);
        self.deadline = self.keep_alive.map(|ka| now + ka);
        if !v5 {
            // MQTT-3.1.3-8 (empty id with clean session 0); 3.1 requires 1-23 characters.
            let v31 = c.protocol == crate::packet::ProtocolVersion::V31;
            if c.client_id.is_empty() && (!c.clean_session || v31) {
                self.refuse_now(reason::CLIENT_IDENTIFIER_NOT_VALID, None);
                return;
            }
            self.state = State::AwaitingAccept;
            self.will = c.will.clone().map(Box::new);
            io(&mut self.io).events.push_back(Event::Connect(c));
            return;
        }
        let p = &c.properties;
        let v5 = self.v5.insert(Box::default());
        v5.server_keep_alive = imposed.then_some(max);
        v5.client_receive_maximum = p.receive_maximum.unwrap_or(u16::MAX);
        v5.asks.max_packet_size = p.maximum_packet_size;
        v5.client_topic_alias_max = p.topic_alias_maximum.unwrap_or(0);
        let asked = p.session_expiry_interval.unwrap_or(0);
        let expiry = self.config.session_expiry(asked);
        v5.session_expiry_interval = expiry;
        // 3.2.2.3.2: the server tells a client that it uses another value than it asked.
        v5.server_session_expiry = (expiry != asked).then_some(expiry);
        // Absent Request Problem Information means 1, absent Request Response Information 0
        // (3.1.2.11.7, 3.1.2.11.6).
        v5.asks.no_problem_information = p.request_problem_information == Some(0);
        v5.response_information_requested = p.request_response_information == Some(1);
        self.state = State::AwaitingAccept;
        if let Some(method) = &p.authentication_method {
            // MQTT 4.12: no extended authentication method is supported.
            let why = format!("authentication method {method:?} is not supported (none is)");
            self.refuse_now(reason::BAD_AUTHENTICATION_METHOD, Some(why));
            return;
        }
        self.will = c.will.clone().map(Box::new);
        io(&mut self.io).events.push_back(Event::Connect(c));
    }

    /// An inbound PUBLISH: v5 alias and Receive Maximum rules, QoS bookkeeping, the event.
    fn on_publish(&mut self, mut p: Publish) {
        if self.is_v5() {
            if !p.properties.subscription_identifiers.is_empty() {
                self.close_with(Violation::SubscriptionIdentifierFromClient.into());
                return;
            }
            if let Some(alias) = p.properties.topic_alias {
                if !self.resolve_alias(&mut p, alias) {
                    return;
                }
            }
            let inbound = &io(&mut self.io).inbound;
            if p.qos != QoS::AtMostOnce
                && !inbound.contains_key(&p.pkid)
                && inbound.len() >= usize::from(self.config.receive_maximum.max(1))
            {
                let limit = self.config.receive_maximum.max(1);
                self.close_with(Violation::ReceiveMaximumExceeded { limit }.into());
                return;
            }
        }
        if self.track_inbound(&p) {
            io(&mut self.io).events.push_back(Event::Publish(p));
        }
    }

    /// Applies a client Topic Alias (3.3.2.3.4): an empty topic takes the alias's, a
    /// topic sets it. The alias is removed from the PUBLISH. False (and closed) when the
    /// alias is out of range or unknown.
    fn resolve_alias(&mut self, p: &mut Publish, alias: u16) -> bool {
        p.properties.topic_alias = None;
        let max = self.config.topic_alias_maximum;
        if alias == 0 || alias > max {
            self.close_with(Violation::TopicAliasInvalid { alias, max }.into());
            return false;
        }
        let Some(v5) = self.v5.as_mut() else {
            return true;
        };
        if p.topic.is_empty() {
            match v5.inbound_aliases.as_ref().and_then(|a| a.get(&alias)) {
                Some(t) => p.topic = t.clone(),
                None => {
                    self.close_with(Violation::UnknownTopicAlias(alias).into());
                    return false;
                }
            }
        } else {
            v5.inbound_aliases
                .get_or_insert_with(Box::default)
                .insert(alias, p.topic.clone());
        }
        if p.properties.is_empty() {
            // The alias was its only property: no empty list is kept around.
            p.properties = Default::default();
        }
        true
    }

    /// Inbound QoS bookkeeping; false when the PUBLISH must not be delivered (again).
    fn track_inbound(&mut self, publish: &Publish) -> bool {
        match publish.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                let inbound = &mut io(&mut self.io).inbound;
                match inbound.get_mut(&publish.pkid) {
                    Some(Inbound::Qos1(count)) => *count = count.saturating_add(1),
                    _ => {
                        inbound.insert(publish.pkid, Inbound::Qos1(1));
                    }
                }
            }
            QoS::ExactlyOnce => match io(&mut self.io).inbound.get(&publish.pkid).copied() {
                // Method B (MQTT 4.3.3): id stored, a re-send is not delivered again.
                Some(Inbound::Qos2 { done: true }) => {
                    self.send(Packet::PubRec(PubResponse::success(publish.pkid)));
                    return false;
                }
                Some(Inbound::Qos2 { done: false }) => return false,
                _ => {
                    io(&mut self.io)
                        .inbound
                        .insert(publish.pkid, Inbound::Qos2 { done: false });
                }
            },
        }
        true
    }

    /// PUBREC for one of our QoS 2 PUBLISHes: PUBREL (a v5 refusal ends the exchange
    /// without it, MQTT 4.3.3); a re-sent PUBREC after our PUBREL is answered again.
    fn on_pubrec(&mut self, r: PubResponse) {
        if let Some(i) = self.find_outgoing(r.pkid, Some(QoS::ExactlyOnce)) {
            let io = io(&mut self.io);
            if r.reason_code >= 0x80 {
                io.outgoing.remove(i);
                io.events.push_back(Event::InflightFreed);
            } else {
                io.outgoing[i] = Inflight::PubRel { pkid: r.pkid };
                self.send(Packet::PubRel(PubResponse::success(r.pkid)));
            }
        } else if self.find_outgoing(r.pkid, None).is_some() {
            self.send(Packet::PubRel(PubResponse::success(r.pkid)));
        }
    }

    /// PUBREL for an inbound QoS 2 exchange: released, answered with PUBCOMP (v5: 0x92
    /// Packet Identifier not found, saying so, for an id with no exchange open).
    fn on_pubrel(&mut self, pkid: u16) {
        let inbound = &mut io(&mut self.io).inbound;
        let known = matches!(inbound.get(&pkid), Some(Inbound::Qos2 { .. }));
        if known {
            inbound.remove(&pkid);
            self.send(Packet::PubComp(PubResponse::success(pkid)));
            return;
        }
        let mut answer = PubResponse::success(pkid);
        if self.is_v5() {
            answer.reason_code = reason::PACKET_IDENTIFIER_NOT_FOUND;
            answer.properties = Properties {
                reason_string: Some(format!(
                    "PUBREL for packet identifier {pkid}, which has no QoS 2 exchange open"
                )),
                ..Properties::default()
            }
            .into();
        }
        self.send(Packet::PubComp(answer));
    }

    /// DISCONNECT: the will is discarded (MQTT-3.14.4-3) unless a v5 client asks for it
    /// (0x04); a v5 client may change the Session Expiry, but not from 0 (MQTT-3.14.2-2).
    fn on_disconnect(&mut self, d: ReasonPacket) {
        if !self.is_v5() {
            self.close_with(CloseReason::Disconnect);
            return;
        }
        let expiry = d.properties.session_expiry_interval;
        // The client asked for 0 in CONNECT (not merely got 0 from the server's maximum).
        let asked_zero = self
            .v5
            .as_ref()
            .is_some_and(|v| v.session_expiry_interval == 0 && v.server_session_expiry.is_none());
        match expiry {
            Some(e) if e > 0 && asked_zero => {
                self.close_with(Violation::SessionExpiryAfterZero(e).into())
            }
            _ => self.close_with(CloseReason::ClientDisconnect {
                reason_code: d.reason_code,
                // Held to the server's maximum, as in CONNECT.
                session_expiry_interval: expiry.map(|e| self.config.session_expiry(e)),
            }),
        }
    }

    /// Index of the outgoing exchange `pkid`: a PUBLISH of `qos`, or a PUBREL when `qos` is
    /// `None`.
    pub(super) fn find_outgoing(&self, pkid: u16, qos: Option<QoS>) -> Option<usize> {
        self.outgoing().position(|entry| match (entry, qos) {
            (Inflight::Publish { pkid: id, message }, Some(q)) => *id == pkid && message.qos == q,
            (Inflight::PubRel { pkid: id }, None) => *id == pkid,
            _ => false,
        })
    }
}
