//! The input side of the endpoint: requests, oversized datagrams, ACKs and RSTs (RFC 7252 §4, §5.9.2.9).

use super::*;

impl Endpoint {
    /// A datagram above `max_datagram_size`: a CON request whose header and
    /// token are readable gets 4.13 with Size1 (RFC 7252 §5.9.2.9, RFC 7959
    /// §2.9.3) so the client can retry with Block1; the rest is dropped.
    pub(super) fn on_oversized(&mut self, now: Instant, peer: SocketAddr, data: &[u8]) {
        self.stats.oversized_dropped += 1;
        let [b0, code, hi, lo, ..] = *data else {
            return;
        };
        let tkl = usize::from(b0 & 0x0F);
        let is_con_request = b0 >> 6 == 1 && (b0 >> 4) & 0x3 == 0 && code >> 5 == 0 && code != 0;
        let Some(token) = data.get(4..4 + tkl).filter(|_| tkl <= 8 && is_con_request) else {
            return;
        };
        let mid = u16::from_be_bytes([hi, lo]);
        if let Some(exchange) = self.exchanges.get(&(peer, mid)) {
            if let ExchangeState::Answered(bytes) = &exchange.state {
                self.stats.duplicates += 1;
                self.transmits.push_back((peer, bytes.clone()));
                return;
            }
        }
        self.remember_exchange(now + self.config.exchange_lifetime, (peer, mid));
        let text = format!(
            "a {}-byte datagram exceeds the {}-byte limit; use Block1",
            data.len(),
            self.config.max_datagram_size
        );
        let response = Response::diagnostic(ResponseType::RequestEntityTooLarge, &text);
        let extra = Extra {
            size1: Some(u32::try_from(self.config.max_body_size).unwrap_or(u32::MAX)),
            ..Extra::default()
        };
        let token = token.to_vec();
        self.answer_locally(now, peer, mid, &token, true, &response, extra);
    }

    /// Handles a CON/NON request message (code class 0, detail ≥ 1).
    pub(super) fn on_request(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        code: u8,
        confirmable: bool,
        packet: &wire::Message<'_>,
    ) {
        let mid = packet.mid;
        if let Some(exchange) = self.exchanges.get(&(peer, mid)) {
            if exchange.expires > now {
                // §4.5: CON duplicates within EXCHANGE_LIFETIME get the same
                // answer; NON duplicates within NON_LIFETIME are ignored.
                self.stats.duplicates += 1;
                if let (true, ExchangeState::Answered(bytes)) = (confirmable, &exchange.state) {
                    self.transmits.push_back((peer, bytes.clone()));
                }
                return;
            }
        }
        let lifetime = if confirmable {
            self.config.exchange_lifetime
        } else {
            self.config.non_lifetime
        };
        self.remember_exchange(now + lifetime, (peer, mid));
        let token = wire::Token::new(packet.token);

        let parsed = match request::parse(code, packet) {
            Ok(parsed) => parsed,
            Err(error) => {
                if !confirmable && error.rejects_non() {
                    // §5.4.1: a NON with a bad critical option is rejected.
                    self.stats.rejected += 1;
                    self.send_empty(peer, MessageType::Reset, mid);
                    self.finish_exchange(peer, mid, false, None);
                    return;
                }
                let response = Response::diagnostic(error.code(), &error.to_string());
                self.answer_locally(
                    now,
                    peer,
                    mid,
                    &token,
                    confirmable,
                    &response,
                    Extra::default(),
                );
                return;
            }
        };

        // RFC 7641 §3.6: GET with Observe=1 and the same token deregisters.
        if parsed.method == Method::Get && parsed.observe == Some(1) {
            self.remove_observer(&(peer, token.to_vec()));
        }

        let mut payload = Bytes::copy_from_slice(packet.payload);
        let mut block1 = None;
        if let (Some(block), Method::Put | Method::Post) = (parsed.block1, parsed.method) {
            let limits = block1::Limits {
                max_body: self.config.max_body_size,
                max_transfers: self.config.max_block1_transfers,
                max_per_peer: self.config.max_transfers_per_peer,
                lifetime: self.config.exchange_lifetime,
            };
            match self
                .transfers
                .add(now, limits, peer, &parsed, block, packet.payload)
            {
                Ok(Some(body)) => {
                    payload = body;
                    block1 = Some(block);
                }
                Ok(None) => {
                    let continue_ = Response::new(ResponseType::Continue);
                    let extra = Extra {
                        block1: Some(block),
                        ..Extra::default()
                    };
                    self.answer_locally(now, peer, mid, &token, confirmable, &continue_, extra);
                    return;
                }
                Err(error) => {
                    if error.code() == ResponseType::ServiceUnavailable {
                        self.stats.overloaded += 1;
                    }
                    let response = Response::diagnostic(error.code(), &error.to_string());
                    let extra = Extra {
                        size1: error.size1(),
                        ..Extra::default()
                    };
                    self.answer_locally(now, peer, mid, &token, confirmable, &response, extra);
                    return;
                }
            }
        }

        let peer_pending = self.peers.get(&peer).map_or(0, |p| p.pending);
        if self.pending.len() >= self.config.max_pending_requests
            || peer_pending >= self.config.max_pending_per_peer
        {
            self.stats.overloaded += 1;
            let response = Response::diagnostic(ResponseType::ServiceUnavailable, "server busy");
            self.answer_locally(
                now,
                peer,
                mid,
                &token,
                confirmable,
                &response,
                Extra::default(),
            );
            return;
        }

        let id = self.next_request_id;
        self.next_request_id += 1;
        let expires = now + lifetime;
        self.pending.insert(
            id,
            Pending {
                peer,
                mid,
                token,
                confirmable,
                method: parsed.method,
                observe: parsed.observe,
                accept: parsed.accept,
                block2: parsed.block2,
                block1,
                no_response: parsed.no_response,
                expires,
            },
        );
        self.peers.entry(peer).or_default().pending += 1;
        self.pending_order.push_back((expires, id));
        // An answered request's entry would stay 247 s: at 100k requests/s, 25M of them.
        // Compacted, the queue stays within twice `max_pending_requests`.
        compact(&mut self.pending_order, self.pending.len(), |(_, id)| {
            self.pending.contains_key(id)
        });
        self.stats.requests += 1;
        self.events.push_back(Event::Request(parsed.into_request(
            id,
            peer,
            payload,
            confirmable,
        )));
    }

    /// Handles an empty ACK: a notification or final response arrived.
    pub(super) fn on_ack(&mut self, now: Instant, peer: SocketAddr, mid: u16) {
        let Some(out) = self.take_outgoing(&(peer, mid)) else {
            return; // unknown or superseded MID: ignore (§4.2)
        };
        if let Purpose::Notification(key) = out.purpose {
            let newer = self.observers.get_mut(&key).and_then(|observer| {
                observer.outstanding = None;
                observer.last_con = now;
                observer.newer.take()
            });
            if let Some(response) = newer {
                self.send_notification(now, &key, &response);
            }
        }
    }

    /// Handles an empty RST: the client rejects a notification, CON or NON
    /// (RFC 7641 §3.6).
    pub(super) fn on_reset(&mut self, peer: SocketAddr, mid: u16) {
        let key = match self.take_outgoing(&(peer, mid)) {
            Some(OutCon {
                purpose: Purpose::Notification(key),
                ..
            }) => Some(key),
            Some(_) => None,
            None => self.notification_mids.remove(&(peer, mid)).map(|(k, _)| k),
        };
        if let Some(key) = key {
            if self.observers.contains_key(&key) {
                self.stats.observers_reset += 1;
                self.remove_observer(&key);
            }
        }
    }
}
