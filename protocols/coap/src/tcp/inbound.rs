//! The input side of a CoAP-over-TCP connection: framing, CSM and requests (RFC 8323 §3, §5).

use super::*;

impl TcpConnection {
    /// Cuts the next whole frame out of `inbuf`: (code, token, options and
    /// payload). `None` when more bytes are needed.
    #[allow(clippy::type_complexity)]
    pub(super) fn next_frame(&mut self) -> Result<Option<(u8, Vec<u8>, Bytes)>, TcpError> {
        let Some(&b0) = self.inbuf.first() else {
            return Ok(None);
        };
        let (len_nibble, tkl) = (b0 >> 4, b0 & 0x0F);
        let ext = match len_nibble {
            13 => 1,
            14 => 2,
            15 => 4,
            _ => 0,
        };
        if tkl > 8 {
            return Err(TcpError::TokenLength { tkl });
        }
        let Some(ext_bytes) = self.inbuf.get(1..1 + ext) else {
            return Ok(None);
        };
        let len = match ext {
            0 => usize::from(len_nibble),
            1 => usize::from(ext_bytes[0]) + 13,
            2 => usize::from(u16::from_be_bytes([ext_bytes[0], ext_bytes[1]])) + 269,
            _ => {
                let v =
                    u32::from_be_bytes([ext_bytes[0], ext_bytes[1], ext_bytes[2], ext_bytes[3]]);
                usize::try_from(v)
                    .unwrap_or(usize::MAX)
                    .saturating_add(65_805)
            }
        };
        let total = (2 + ext + usize::from(tkl)).saturating_add(len);
        if total > self.config.tcp_max_message_size {
            return Err(TcpError::TooLarge {
                size: total,
                max: self.config.tcp_max_message_size,
            });
        }
        if self.inbuf.len() < total {
            return Ok(None);
        }
        let mut frame = self.inbuf.split_to(total);
        frame.advance(1 + ext);
        let code = frame[0];
        let token = frame[1..1 + usize::from(tkl)].to_vec();
        frame.advance(1 + usize::from(tkl));
        Ok(Some((code, token, frame.freeze())))
    }

    /// Handles one whole frame.
    pub(super) fn on_frame(&mut self, now: Instant, code: u8, token: Vec<u8>, rest: Bytes) {
        if code == 0 {
            // §3.4: an Empty message (0.00) is always ignored.
            return;
        }
        // Reuse the strict datagram decoder: same options, same rules.
        let mut datagram = Vec::with_capacity(4 + token.len() + rest.len());
        datagram.push(0x40 | token.len() as u8);
        datagram.extend_from_slice(&[code, 0, 0]);
        datagram.extend_from_slice(&token);
        datagram.extend_from_slice(&rest);
        let packet = match wire::decode(&datagram) {
            Ok(packet) => packet,
            Err((_, error)) => {
                self.stats.malformed_dropped += 1;
                self.abort(&TcpError::Malformed(error), None);
                return;
            }
        };
        if !self.csm_received && code != CSM {
            self.abort(
                &TcpError::MissingCsm {
                    class: code >> 5,
                    detail: code & 0x1F,
                },
                None,
            );
            return;
        }
        match code {
            CSM => self.on_csm(&packet),
            PING => {
                self.stats.pings += 1;
                // §5.4: Pong with the Ping's token (Custody is not offered).
                self.transmits.push_back(signal(PONG, &token, None, &[]));
            }
            PONG => {}
            RELEASE => self.close(),
            ABORT => self.close(),
            c if c >> 5 == 0 => self.on_request(now, code, token, &packet),
            _ => {
                // Responses (we send no requests) and unknown signals (§5.1:
                // ignored) are dropped.
                self.stats.rejected += 1;
            }
        }
    }

    /// Handles the peer's CSM (§5.3).
    pub(super) fn on_csm(&mut self, packet: &wire::Message<'_>) {
        for (number, mut values) in packet.option_groups() {
            match number {
                OPT_MAX_MESSAGE_SIZE => {
                    if let Some(v) = values.next() {
                        let size = usize::try_from(wire::uint(v)).unwrap_or(usize::MAX);
                        self.peer_max_message_size = size;
                    }
                }
                n if n & 1 == 1 => {
                    self.abort(&TcpError::BadCsmOption { number: n }, Some(n));
                    return;
                }
                _ => {} // Block-Wise-Transfer (4) and other electives: BERT is not used.
            }
        }
        self.csm_received = true;
    }

    /// Handles a request (class 0).
    pub(super) fn on_request(
        &mut self,
        now: Instant,
        code: u8,
        token: Vec<u8>,
        packet: &wire::Message<'_>,
    ) {
        let parsed = match request::parse(code, packet) {
            Ok(parsed) => parsed,
            Err(error) => {
                self.stats.answered_locally += 1;
                let response = Response::diagnostic(error.code(), &error.to_string());
                self.send_response(&token, &response, Extra::default());
                return;
            }
        };
        if parsed.method == Method::Get && parsed.observe == Some(1) {
            self.remove_observer(&token);
        }
        let mut payload = Bytes::copy_from_slice(packet.payload);
        let mut block1 = None;
        if let (Some(block), Method::Put | Method::Post) = (parsed.block1, parsed.method) {
            let limits = block1::Limits {
                max_body: self.config.max_body_size,
                max_transfers: self.config.max_transfers_per_peer,
                max_per_peer: self.config.max_transfers_per_peer,
                lifetime: self.config.exchange_lifetime,
            };
            match self
                .transfers
                .add(now, limits, self.peer, &parsed, block, packet.payload)
            {
                Ok(Some(body)) => {
                    payload = body;
                    block1 = Some(block);
                }
                Ok(None) => {
                    self.stats.answered_locally += 1;
                    let extra = Extra {
                        block1: Some(block),
                        ..Extra::default()
                    };
                    self.send_response(&token, &Response::new(ResponseType::Continue), extra);
                    return;
                }
                Err(error) => {
                    self.stats.answered_locally += 1;
                    let response = Response::diagnostic(error.code(), &error.to_string());
                    let extra = Extra {
                        size1: error.size1(),
                        ..Extra::default()
                    };
                    self.send_response(&token, &response, extra);
                    return;
                }
            }
        }
        if self.pending.len() >= self.config.max_pending_per_peer {
            self.stats.overloaded += 1;
            let response = Response::diagnostic(ResponseType::ServiceUnavailable, "server busy");
            self.send_response(&token, &response, Extra::default());
            return;
        }
        let id = self.next_request_id;
        self.next_request_id += 1;
        self.pending.insert(
            id,
            Pending {
                token,
                method: parsed.method,
                observe: parsed.observe,
                accept: parsed.accept,
                block2: parsed.block2,
                block1,
            },
        );
        self.stats.requests += 1;
        self.events.push_back(Event::Request(
            parsed.into_request(id, self.peer, payload, false),
        ));
    }
}
