//! The message layer's output: NSTART queues, CON retransmission, message IDs and encoding (RFC 7252 §4.2–4.7).

use super::*;

impl Endpoint {
    /// Sends what waits in the NSTART queues of peers that became ready.
    pub(super) fn dispatch(&mut self, now: Instant) {
        while let Some(addr) = self.ready.pop() {
            while !self.peer_busy(addr) {
                let Some(next) = self.peers.get_mut(&addr).and_then(|p| p.queue.pop_front()) else {
                    break;
                };
                match next {
                    Deferred::Notification(key) => {
                        let newer = self.observers.get_mut(&key).and_then(|o| {
                            o.deferred = false;
                            o.newer.take()
                        });
                        if let Some(response) = newer {
                            self.send_notification(now, &key, &response);
                        }
                    }
                    Deferred::Final(token, response) => {
                        self.send_final(now, addr, &token, &response)
                    }
                }
            }
            self.peer_update(addr, |_| {});
        }
    }

    /// Whether `peer` has NSTART CONs outstanding.
    pub(super) fn peer_busy(&self, peer: SocketAddr) -> bool {
        self.peers
            .get(&peer)
            .is_some_and(|p| p.outstanding >= self.config.nstart.max(1))
    }

    /// Applies `f` to an existing peer entry and drops the entry when idle.
    pub(super) fn peer_update(&mut self, addr: SocketAddr, f: impl FnOnce(&mut Peer)) {
        // One lookup (the address is hashed once) for the update and the removal.
        if let std::collections::hash_map::Entry::Occupied(mut entry) = self.peers.entry(addr) {
            f(entry.get_mut());
            if entry.get().is_idle() {
                entry.remove();
            }
        }
    }

    /// Removes an outgoing CON, releasing its NSTART slot.
    pub(super) fn take_outgoing(&mut self, key: &ExchangeKey) -> Option<OutCon> {
        let out = self.outgoing.remove(key)?;
        self.peer_update(key.0, |peer| {
            peer.outstanding = peer.outstanding.saturating_sub(1)
        });
        self.ready.push(key.0);
        Some(out)
    }

    /// Transmits a CON and arms its retransmission timer.
    pub(super) fn send_con(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        mid: u16,
        bytes: Bytes,
        purpose: Purpose,
    ) {
        let factor = match self.config.ack_random_factor {
            f if f.is_finite() => f.clamp(1.0, 16.0),
            _ => 1.0,
        };
        let jitter = 1.0 + self.rng.next_f64() * (factor - 1.0);
        let timeout = self.config.ack_timeout.mul_f64(jitter);
        self.transmits.push_back((peer, bytes.clone()));
        self.peers.entry(peer).or_default().outstanding += 1;
        self.outgoing.insert(
            (peer, mid),
            OutCon {
                bytes,
                attempts: 0,
                timeout,
                deadline: now + timeout,
                purpose,
            },
        );
    }

    /// Handles an expired retransmission timer.
    pub(super) fn retransmit(&mut self, now: Instant, key: ExchangeKey) {
        let Some(mut out) = self.outgoing.remove(&key) else {
            return;
        };
        if out.attempts >= self.config.max_retransmit {
            // Give up: the NSTART slot is free again.
            self.peer_update(key.0, |peer| {
                peer.outstanding = peer.outstanding.saturating_sub(1)
            });
            self.ready.push(key.0);
            if let Purpose::Notification(owner) = out.purpose {
                if self.observers.contains_key(&owner) {
                    self.stats.observers_dropped += 1;
                    if let Some(observer) = self.observers.get_mut(&owner) {
                        observer.outstanding = None;
                    }
                    self.remove_observer(&owner);
                }
            }
            return;
        }
        out.attempts += 1;
        out.timeout *= 2;
        out.deadline = now + out.timeout;
        let mut mid = key.1;
        if let Purpose::Notification(owner) = &out.purpose {
            let newer = self
                .observers
                .get_mut(owner)
                .and_then(|observer| observer.newer.take());
            if let Some(response) = newer {
                // RFC 7641 §4.5.2: retransmit the newest state instead, with a
                // new sequence number, keeping the retransmission counter.
                if let Some(new_mid) = self.allocate_mid(now) {
                    let seq = self.next_observe_seq();
                    out.bytes = self.encode(
                        MessageType::Confirmable,
                        new_mid,
                        &owner.1,
                        &response,
                        Extra {
                            observe: Some(seq),
                            ..Extra::default()
                        },
                    );
                    self.remember_notification_mid(
                        key,
                        owner.clone(),
                        now + self.config.exchange_lifetime,
                    );
                    if let Some(observer) = self.observers.get_mut(owner) {
                        observer.outstanding = Some(new_mid);
                    }
                    mid = new_mid;
                }
            }
        }
        self.stats.retransmissions += 1;
        self.transmits.push_back((key.0, out.bytes.clone()));
        self.outgoing.insert((key.0, mid), out);
    }

    /// Answers a request without involving the driver.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn answer_locally(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        mid: u16,
        token: &[u8],
        confirmable: bool,
        response: &Response,
        extra: Extra,
    ) {
        self.stats.answered_locally += 1;
        let (mtype, out_mid) = if confirmable {
            (MessageType::Acknowledgement, mid)
        } else {
            match self.allocate_mid(now) {
                Some(m) => (MessageType::NonConfirmable, m),
                None => {
                    self.finish_exchange(peer, mid, confirmable, None);
                    return;
                }
            }
        };
        let bytes = self.encode(mtype, out_mid, token, response, extra);
        self.finish_exchange(peer, mid, confirmable, Some(bytes));
    }

    /// Sends an answer and records it for duplicates of a CON.
    pub(super) fn finish_exchange(
        &mut self,
        peer: SocketAddr,
        mid: u16,
        confirmable: bool,
        bytes: Option<Bytes>,
    ) {
        if let Some(exchange) = self.exchanges.get_mut(&(peer, mid)) {
            exchange.state = match (&bytes, confirmable) {
                (Some(b), true) => ExchangeState::Answered(b.clone()),
                _ => ExchangeState::Seen,
            };
        }
        if let Some(bytes) = bytes {
            self.transmits.push_back((peer, bytes));
        }
    }

    /// Records an exchange being handled, for deduplication, evicting the oldest at
    /// the cap.
    pub(super) fn remember_exchange(&mut self, expires: Instant, key: ExchangeKey) {
        while self.exchanges.len() >= self.config.max_exchanges.max(1) {
            let Some((old_expiry, old)) = self.exchange_order.pop_front() else {
                break;
            };
            if self
                .exchanges
                .get(&old)
                .is_some_and(|e| e.expires == old_expiry)
            {
                self.exchanges.remove(&old);
            }
        }
        self.exchanges.insert(
            key,
            Exchange {
                expires,
                state: ExchangeState::Processing,
            },
        );
        self.exchange_order.push_back((expires, key));
        // The entry of an exchange evicted or replaced would stay until its expiry.
        compact(
            &mut self.exchange_order,
            self.exchanges.len(),
            |(expires, key)| {
                self.exchanges
                    .get(key)
                    .is_some_and(|e| e.expires == *expires)
            },
        );
    }

    /// Queues an Empty ACK or RST.
    pub(super) fn send_empty(&mut self, peer: SocketAddr, mtype: MessageType, mid: u16) {
        self.transmits
            .push_back((peer, Bytes::from(wire::empty(mtype, mid))));
    }

    /// Allocates a message ID not used within EXCHANGE_LIFETIME (RFC 7252 §4.4).
    pub(super) fn allocate_mid(&mut self, now: Instant) -> Option<u16> {
        let mid = self.next_mid;
        let block = usize::from(mid >> 12);
        if block != self.current_mid_block {
            if let Some(last) = self.mid_block_used[block] {
                if now < last + self.config.exchange_lifetime {
                    self.stats.message_ids_exhausted += 1;
                    return None;
                }
            }
            self.current_mid_block = block;
        }
        self.mid_block_used[block] = Some(now);
        self.next_mid = mid.wrapping_add(1);
        Some(mid)
    }

    /// Next Observe value, masked to 24 bits (RFC 7641 §3.4).
    pub(super) fn next_observe_seq(&mut self) -> u32 {
        let seq = self.next_observe & 0x00FF_FFFF;
        self.next_observe = self.next_observe.wrapping_add(1);
        seq
    }

    /// Encodes a response within the datagram limits, counting oversize.
    pub(super) fn encode(
        &mut self,
        mtype: MessageType,
        mid: u16,
        token: &[u8],
        response: &Response,
        extra: Extra,
    ) -> Bytes {
        let limits = Limits {
            szx: self.szx,
            max_message_size: self.config.max_message_size,
        };
        let (bytes, oversized) = encode::response(limits, mtype, mid, token, response, extra);
        if oversized {
            self.stats.oversized_responses += 1;
        }
        bytes
    }
}
