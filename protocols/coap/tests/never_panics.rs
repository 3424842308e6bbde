//! Robustness: arbitrary datagrams (raw, or with a valid CoAP header prefix)
//! never panic the endpoint, and everything it emits is well-formed CoAP
//! within the configured datagram size.

mod common;

use std::time::{Duration, Instant};

use coap_lite::{Packet, ResponseType};
use common::*;
use ponte_coap::{Event, Response};
use proptest::prelude::*;

proptest! {
    #[test]
    fn rfc7252_3_arbitrary_datagrams_never_panic(
        datagrams in proptest::collection::vec(
            (any::<u8>(), any::<u8>(), proptest::collection::vec(any::<u8>(), 0..64)),
            1..20,
        ),
        raw in proptest::collection::vec(any::<u8>(), 0..1400),
        payload_len in 0usize..4000,
    ) {
        let mut ep = endpoint();
        let start = Instant::now();
        ep.handle_datagram(start, addr(PEER), &raw);
        for (i, (first, code, rest)) in datagrams.into_iter().enumerate() {
            let now = start + Duration::from_millis(i as u64 * 700);
            // Version 1 header so the option/payload parser is exercised.
            let mut data = vec![0x40 | (first & 0x3F), code, 0, i as u8];
            data.extend(rest);
            ep.handle_datagram(now, addr(PEER), &data);
            while let Some(event) = ep.poll_event() {
                if let Event::Request(req) = event {
                    let resp = Response::with_payload(ResponseType::Content, vec![b'x'; payload_len]);
                    ep.respond(now, req.id, resp, Some(req.path.as_str().to_owned()));
                }
            }
            ep.notify(now, "r/T", Response::with_payload(ResponseType::Content, vec![b'y'; payload_len]));
            ep.handle_timeout(now);
            while let Some((_, bytes)) = ep.poll_transmit() {
                prop_assert!(bytes.len() <= 1152);
                prop_assert!(Packet::from_bytes(&bytes).is_ok());
            }
        }
    }
}

proptest! {
    /// The cargo-fuzz `datagram` target's harness, run on stable.
    #[test]
    fn rfc7252_3_fuzz_harness_datagrams(data in proptest::collection::vec(any::<u8>(), 0..4000)) {
        ponte_coap::harness::datagrams(&data);
    }

    /// The cargo-fuzz `tcp` target's harness, run on stable: arbitrary bytes
    /// in arbitrary chunks never panic the RFC 8323 connection.
    #[test]
    fn rfc8323_3_2_fuzz_harness_tcp_bytes(data in proptest::collection::vec(any::<u8>(), 0..4000)) {
        ponte_coap::harness::tcp_bytes(&data);
    }

    /// Well-formed TCP frames with random codes, tokens and option bytes.
    #[test]
    fn rfc8323_3_2_structured_frames_never_panic(
        frames in proptest::collection::vec(
            (0u8..=8, any::<u8>(), proptest::collection::vec(any::<u8>(), 0..40)),
            1..20,
        ),
    ) {
        let mut bytes = vec![2u8, 0x00, 0xE1]; // record of 2 bytes: an empty CSM
        for (tkl, code, body) in frames {
            let mut f = ponte_coap::tcp::to_tcp(&[0x40 | tkl, code, 0, 0]);
            f.extend(std::iter::repeat_n(7u8, usize::from(tkl)));
            // Fix up the length nibble for the body we append (< 13 bytes only).
            let body: Vec<u8> = body.into_iter().take(12).collect();
            f[0] = ((body.len() as u8) << 4) | tkl;
            f.extend(body);
            bytes.push(f.len() as u8);
            bytes.extend(f);
        }
        ponte_coap::harness::tcp_bytes(&bytes);
    }
}
