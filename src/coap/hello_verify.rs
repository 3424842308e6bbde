//! Stateless cookies for `coaps` (RFC 6347 §4.2.1; issue 16): no DTLS session for a
//! ClientHello until its sender proved it receives at its address.
//!
//! A ClientHello from a peer without a session is answered with a HelloVerifyRequest
//! carrying `Cookie = HMAC-SHA256(Secret, Client-IP, Client-Port, Client-Parameters)`,
//! where the parameters are those RFC 6347 requires the second ClientHello to repeat
//! (version, random, session id, cipher suites, compression methods). Nothing is kept. Only
//! a ClientHello that returns a valid cookie gets a session (and a `dtls_max_sessions`
//! place), so a flood of ClientHellos from spoofed addresses costs one HMAC and one small
//! datagram each — smaller than what it answers, so no amplification either. The secret is
//! random, replaced every [`SECRET_LIFETIME`]; cookies of the previous secret stay valid,
//! so a handshake in progress during a change completes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::{OsRng, RngCore};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// How long one secret makes cookies; a cookie is accepted for up to twice that.
pub const SECRET_LIFETIME: Duration = Duration::from_secs(120);

/// Cookie length: a whole SHA-256 tag (RFC 6347 allows up to 255 bytes).
const COOKIE_LEN: usize = 32;

/// DTLS record header length (RFC 6347 §4.1).
const RECORD_HEADER: usize = 13;

/// DTLS handshake header length (RFC 6347 §4.2.2).
const HANDSHAKE_HEADER: usize = 12;

/// The parts of a DTLS ClientHello datagram the cookie exchange needs, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientHello<'a> {
    /// The record's version field, echoed in our answer's record.
    pub record_version: [u8; 2],
    /// The record sequence number (epoch 0): RFC 6347 §4.2.1 has the HelloVerifyRequest
    /// reuse it, and the session's own records continue from it.
    pub record_seq: u64,
    /// The handshake `message_seq`: 0 for a first ClientHello, 1 for the one returning
    /// our cookie.
    pub message_seq: u16,
    /// The parameters the cookie binds: `client_version` through the compression
    /// methods, with the cookie field left out.
    pub version_random_session: &'a [u8],
    /// The cookie the client sent (empty in a first ClientHello).
    pub cookie: &'a [u8],
    /// Cipher suites and compression methods, as sent (with their length prefixes).
    pub suites_compression: &'a [u8],
}

impl<'a> ClientHello<'a> {
    /// Parse the first record of `datagram` as an unfragmented epoch-0 ClientHello.
    /// `None` for anything else (a fragmented ClientHello, garbage, other messages).
    pub fn parse(datagram: &'a [u8]) -> Option<Self> {
        let record = datagram.get(..RECORD_HEADER)?;
        if record[0] != 22 || record[1] != 0xfe || record[3..5] != [0, 0] {
            return None;
        }
        let mut seq = [0u8; 8];
        seq[2..].copy_from_slice(&record[5..11]);
        let record_len = usize::from(u16::from_be_bytes([record[11], record[12]]));
        let hs = datagram.get(RECORD_HEADER..RECORD_HEADER + record_len)?;
        let header = hs.get(..HANDSHAKE_HEADER)?;
        if header[0] != 1 {
            return None;
        }
        let be24 =
            |b: &[u8]| (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]);
        let length = be24(&header[1..4]);
        let message_seq = u16::from_be_bytes([header[4], header[5]]);
        let (offset, fragment) = (be24(&header[6..9]), be24(&header[9..12]));
        // The cookie covers the whole hello: only unfragmented ones are answered (as
        // OpenSSL's DTLSv1_listen does); a ClientHello for PSK fits one datagram.
        if offset != 0 || fragment != length {
            return None;
        }
        let body = hs.get(HANDSHAKE_HEADER..HANDSHAKE_HEADER + length)?;
        // client_version (2), random (32), session_id <0..32>
        let mut at = 2 + 32;
        let sid_len = usize::from(*body.get(at)?);
        at += 1 + sid_len;
        let version_random_session = body.get(..at)?;
        let cookie_len = usize::from(*body.get(at)?);
        let cookie = body.get(at + 1..at + 1 + cookie_len)?;
        at += 1 + cookie_len;
        let suites_len = usize::from(u16::from_be_bytes([*body.get(at)?, *body.get(at + 1)?]));
        let compression_at = at + 2 + suites_len;
        let compression_len = usize::from(*body.get(compression_at)?);
        let suites_compression = body.get(at..compression_at + 1 + compression_len)?;
        Some(ClientHello {
            record_version: [record[1], record[2]],
            record_seq: u64::from_be_bytes(seq),
            message_seq,
            version_random_session,
            cookie,
            suites_compression,
        })
    }
}

/// The current and the previous cookie secret.
pub struct CookieJar {
    /// Makes the cookies sent now.
    current: [u8; 32],
    /// Still accepted, so an exchange that began before the change completes.
    previous: [u8; 32],
    /// When `current` is replaced.
    rotate_at: Instant,
}

impl std::fmt::Debug for CookieJar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CookieJar")
            .field("rotate_at", &self.rotate_at)
            .finish_non_exhaustive()
    }
}

fn random_secret() -> [u8; 32] {
    let mut s = [0u8; 32];
    OsRng.fill_bytes(&mut s);
    s
}

impl CookieJar {
    /// Two fresh random secrets.
    pub fn new(now: Instant) -> Self {
        CookieJar {
            current: random_secret(),
            previous: random_secret(),
            rotate_at: now + SECRET_LIFETIME,
        }
    }

    /// Replace the secret once its time is up.
    fn rotate(&mut self, now: Instant) {
        if now >= self.rotate_at {
            self.previous = self.current;
            self.current = random_secret();
            self.rotate_at = now + SECRET_LIFETIME;
        }
    }

    /// The cookie for `hello` from `peer` under `secret`.
    fn cookie(secret: &[u8; 32], peer: SocketAddr, hello: &ClientHello<'_>) -> [u8; COOKIE_LEN] {
        // HMAC takes a key of any length: this cannot fail.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
            return [0; COOKIE_LEN];
        };
        match peer.ip() {
            std::net::IpAddr::V4(ip) => mac.update(&ip.octets()),
            std::net::IpAddr::V6(ip) => mac.update(&ip.octets()),
        }
        mac.update(&peer.port().to_be_bytes());
        mac.update(hello.version_random_session);
        mac.update(hello.suites_compression);
        mac.finalize().into_bytes().into()
    }

    /// Whether `hello` returns a cookie we made for `peer` (under the current or the
    /// previous secret).
    pub fn verify(&mut self, now: Instant, peer: SocketAddr, hello: &ClientHello<'_>) -> bool {
        self.rotate(now);
        hello.cookie.len() == COOKIE_LEN
            && [&self.current, &self.previous]
                .iter()
                .any(|secret| bool::from(Self::cookie(secret, peer, hello).ct_eq(hello.cookie)))
    }

    /// The HelloVerifyRequest datagram answering `hello` from `peer`.
    pub fn hello_verify_request(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        hello: &ClientHello<'_>,
    ) -> Vec<u8> {
        self.rotate(now);
        let cookie = Self::cookie(&self.current, peer, hello);
        // HelloVerifyRequest body: server_version (DTLS 1.0, RFC 6347 §4.2.1), cookie.
        let body_len = 2 + 1 + COOKIE_LEN;
        let hs_len = HANDSHAKE_HEADER + body_len;
        let mut d = Vec::with_capacity(RECORD_HEADER + hs_len);
        d.push(22);
        d.extend_from_slice(&hello.record_version);
        // Epoch 0 and the ClientHello's record sequence number (RFC 6347 §4.2.1).
        d.extend_from_slice(&[0, 0]);
        d.extend_from_slice(&hello.record_seq.to_be_bytes()[2..]);
        d.extend_from_slice(&(hs_len as u16).to_be_bytes());
        d.push(3); // hello_verify_request
        let be24 = |n: usize| [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        d.extend_from_slice(&be24(body_len));
        // The ClientHello's message_seq: the client expects our next message to carry it.
        d.extend_from_slice(&hello.message_seq.to_be_bytes());
        d.extend_from_slice(&be24(0));
        d.extend_from_slice(&be24(body_len));
        d.extend_from_slice(&[0xfe, 0xff]);
        d.push(COOKIE_LEN as u8);
        d.extend_from_slice(&cookie);
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello datagram with `cookie`, `message_seq` and record sequence `rseq`.
    pub(crate) fn client_hello(cookie: &[u8], message_seq: u16, rseq: u64) -> Vec<u8> {
        let mut body = vec![0xfe, 0xfd];
        body.extend_from_slice(&[7u8; 32]); // random
        body.push(0); // session id
        body.push(cookie.len() as u8);
        body.extend_from_slice(cookie);
        body.extend_from_slice(&[0, 2, 0xc0, 0xa8]); // TLS_PSK_WITH_AES_128_CCM_8
        body.extend_from_slice(&[1, 0]); // null compression
        body.extend_from_slice(&[0, 0]); // no extensions
        let len = body.len();
        let mut hs = vec![1, 0, (len >> 8) as u8, len as u8];
        hs.extend_from_slice(&message_seq.to_be_bytes());
        hs.extend_from_slice(&[0, 0, 0, 0, (len >> 8) as u8, len as u8]);
        hs.extend_from_slice(&body);
        let mut d = vec![22, 0xfe, 0xfd, 0, 0];
        d.extend_from_slice(&rseq.to_be_bytes()[2..]);
        d.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        d.extend_from_slice(&hs);
        d
    }

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    #[test]
    fn rfc6347_4_2_1_a_returned_cookie_verifies_for_its_address_only() {
        let t0 = Instant::now();
        let mut jar = CookieJar::new(t0);
        let first = client_hello(&[], 0, 0);
        let hello = ClientHello::parse(&first).unwrap();
        assert!(hello.cookie.is_empty());
        assert!(!jar.verify(t0, peer(1), &hello));
        let hvr = jar.hello_verify_request(t0, peer(1), &hello);
        assert_eq!(hvr[13], 3, "hello_verify_request");
        assert_eq!(&hvr[25..27], &[0xfe, 0xff], "server_version DTLS 1.0");
        let cookie = &hvr[28..28 + COOKIE_LEN];
        let second = client_hello(cookie, 1, 1);
        let back = ClientHello::parse(&second).unwrap();
        assert_eq!((back.message_seq, back.record_seq), (1, 1));
        assert!(jar.verify(t0, peer(1), &back));
        assert!(!jar.verify(t0, peer(2), &back), "another port");
        let mut forged = cookie.to_vec();
        forged[0] ^= 1;
        let forged = client_hello(&forged, 1, 1);
        assert!(!jar.verify(t0, peer(1), &ClientHello::parse(&forged).unwrap()));
    }

    #[test]
    fn rfc6347_4_2_1_the_secret_changes_and_the_previous_one_still_counts() {
        let t0 = Instant::now();
        let mut jar = CookieJar::new(t0);
        let first = client_hello(&[], 0, 0);
        let hvr = jar.hello_verify_request(t0, peer(1), &ClientHello::parse(&first).unwrap());
        let second = client_hello(&hvr[28..], 1, 1);
        let back = ClientHello::parse(&second).unwrap();
        assert!(
            jar.verify(t0 + SECRET_LIFETIME, peer(1), &back),
            "previous secret"
        );
        assert!(
            !jar.verify(t0 + SECRET_LIFETIME * 2, peer(1), &back),
            "two changes later it is stale"
        );
    }

    #[test]
    fn only_unfragmented_epoch_0_client_hellos_parse() {
        let d = client_hello(&[], 0, 5);
        assert_eq!(ClientHello::parse(&d).unwrap().record_seq, 5);
        let mut e = d.clone();
        e[4] = 1; // epoch 1
        assert!(ClientHello::parse(&e).is_none());
        let mut f = d.clone();
        f[13 + 11] -= 1; // fragment shorter than the message
        assert!(ClientHello::parse(&f).is_none());
        for n in 0..d.len() {
            let _ = ClientHello::parse(&d[..n]);
        }
        assert!(ClientHello::parse(&d[..d.len() - 1]).is_none());
    }
}
