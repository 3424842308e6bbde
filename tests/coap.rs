//! Black-box tests of the CoAP front-end (`/r/T`) with a raw CoAP client over UDP: the
//! message layer (RFC 7252), Observe (RFC 7641) and Block2 (RFC 7959), with writes and
//! reads crossing into HTTP and MQTT where the behaviour depends on them.

mod common;

use coap_lite::{CoapOption, MessageType, RequestType};
use common::*;
use rumqttc::QoS;

// ---------------------------------------------------------------------------------------
// RFC 7252 §5.8: methods
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn rfc7252_5_8_1_get_is_2_05_with_content_format_etag_and_max_age() {
    let gw = gateway().await;
    let r = http_put(&gw, "kitchen/temp", r#"{"c":21.5}"#, "application/json").await;
    assert_eq!(r.status(), 201);
    let http_etag = r.headers()["etag"].to_str().unwrap().to_owned();

    let mut c = Coap::new(gw.coap_addr).await;
    let p = c.get("r/kitchen/temp").await;
    assert_eq!(code(&p), "2.05");
    assert_eq!(
        p.header.get_type(),
        MessageType::Acknowledgement,
        "piggybacked"
    );
    assert_eq!(p.payload, br#"{"c":21.5}"#);
    assert_eq!(
        opt_uint(&p, CoapOption::ContentFormat),
        Some(50),
        "application/json written over HTTP is Content-Format 50"
    );
    let etag = p
        .get_first_option(CoapOption::ETag)
        .expect("ETag option")
        .clone();
    assert!(
        (1..=8).contains(&etag.len()),
        "ETag is 1..8 bytes: {etag:?}"
    );
    // RFC 8075: one value, one tag in both protocols.
    let version = etag.iter().fold(0u64, |v, b| (v << 8) | u64::from(*b));
    assert_eq!(
        http_etag,
        format!("\"{version:x}\""),
        "CoAP ETag = HTTP ETag"
    );
    assert_eq!(opt_uint(&p, CoapOption::MaxAge), Some(60), "Max-Age sent");
    gw.shutdown().await;
}

#[tokio::test]
async fn rfc7252_5_9_2_4_get_missing_is_4_04_with_diagnostic_payload() {
    let gw = gateway().await;
    let mut c = Coap::new(gw.coap_addr).await;
    let p = c.get("r/nothing/here").await;
    assert_eq!(code(&p), "4.04");
    assert!(!p.payload.is_empty(), "diagnostic payload");
    assert!(
        std::str::from_utf8(&p.payload).is_ok(),
        "diagnostic is UTF-8"
    );
    assert!(p.get_first_option(CoapOption::Observe).is_none());
    gw.shutdown().await;
}

async fn creates_then_changes(method: RequestType) {
    let gw = gateway().await;
    let mut c = Coap::new(gw.coap_addr).await;

    let mut p = c.request(method, "r/a/b");
    p.add_option(CoapOption::ContentFormat, uint(0));
    p.payload = b"one".to_vec();
    let r = c.exchange(&p).await;
    assert_eq!(code(&r), "2.01", "{method:?} of a new thing is Created");
    assert_eq!(
        opt_all(&r, CoapOption::LocationPath),
        vec![b"r".to_vec(), b"a".to_vec(), b"b".to_vec()],
        "one Location-Path option per segment"
    );

    let mut p = c.request(method, "r/a/b");
    p.payload = b"two".to_vec();
    let r = c.exchange(&p).await;
    assert_eq!(
        code(&r),
        "2.04",
        "{method:?} of an existing thing is Changed"
    );
    assert!(opt_all(&r, CoapOption::LocationPath).is_empty());

    let g = c.get("r/a/b").await;
    assert_eq!(code(&g), "2.05");
    assert_eq!(g.payload, b"two");
    // The second write had no Content-Format: octet-stream.
    assert_eq!(opt_uint(&g, CoapOption::ContentFormat), Some(42));
    gw.shutdown().await;
}

#[tokio::test]
async fn rfc7252_5_8_2_put_is_2_01_with_location_path_then_2_04() {
    creates_then_changes(RequestType::Put).await;
}

#[tokio::test]
async fn rfc7252_5_8_2_post_is_2_01_with_location_path_then_2_04() {
    creates_then_changes(RequestType::Post).await;
}

#[tokio::test]
async fn rfc7252_5_8_4_delete_is_2_02_then_4_04() {
    let gw = gateway().await;
    let mut c = Coap::new(gw.coap_addr).await;
    assert_eq!(code(&c.put("r/gone", b"x", Some(0)).await), "2.01");
    assert_eq!(code(&c.delete("r/gone").await), "2.02");
    assert_eq!(
        code(&c.get("r/gone").await),
        "4.04",
        "deleted value is gone"
    );
    assert_eq!(
        code(&c.delete("r/gone").await),
        "4.04",
        "second DELETE finds nothing"
    );
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// RFC 7641: Observe
// ---------------------------------------------------------------------------------------

/// A gateway where `topic` holds `value` of type `ct` (written over HTTP), and a CoAP
/// client of it.
async fn stored(topic: &str, value: &str, ct: &str) -> (ponte::Gateway, Coap) {
    let gw = gateway().await;
    http_put(&gw, topic, value.to_owned(), ct).await;
    let c = Coap::new(gw.coap_addr).await;
    (gw, c)
}

/// Wait until the CoAP front-end holds no broker subscription (its last observer is gone).
async fn observers_gone(gw: &ponte::Gateway) {
    eventually(WAIT, "the observation to end", || async {
        gw.broker.subscription_count() == 0
    })
    .await
}

/// `topic` is written as `value` (text/plain, over HTTP) and a new CoAP client observes
/// `/r/{topic}`: the client, the token and the registration's response.
async fn observed(
    gw: &ponte::Gateway,
    topic: &str,
    value: &str,
) -> (Coap, Vec<u8>, coap_lite::Packet) {
    http_put(gw, topic, value.to_owned(), "text/plain").await;
    let mut c = Coap::new(gw.coap_addr).await;
    let (token, r) = c.observe(&format!("r/{topic}")).await;
    (c, token, r)
}

/// Once the gateway holds no observer, a new `value` of `topic` (over HTTP) reaches `c` no
/// more: the observation is over.
async fn no_more_notifications(
    gw: &ponte::Gateway,
    c: &Coap,
    topic: &str,
    value: &str,
    what: &str,
) {
    observers_gone(gw).await;
    http_put(gw, topic, value.to_owned(), "text/plain").await;
    c.expect_silence(what).await;
}

#[tokio::test]
async fn rfc7641_3_1_observe_0_registers_and_returns_current_value_with_observe() {
    let gw = gateway().await;
    let (c, token, r) = observed(&gw, "obs/first", "hello").await;
    assert_eq!(code(&r), "2.05");
    assert_eq!(r.payload, b"hello");
    assert!(
        r.get_first_option(CoapOption::Observe).is_some(),
        "Observe option in the first response"
    );
    assert_eq!(opt_uint(&r, CoapOption::ContentFormat), Some(0));

    // Registered: a later write is notified.
    http_put(&gw, "obs/first", "again", "text/plain").await;
    let n = c.notification(&token).await;
    assert_eq!(n.payload, b"again");
    gw.shutdown().await;
}

#[tokio::test]
async fn rfc7641_4_2_publishes_from_mqtt_and_http_arrive_as_con_notifications_with_increasing_observe(
) {
    let gw = gateway().await;
    let (c, token, r) = observed(&gw, "obs/many", "0").await;
    let mut last = opt_uint(&r, CoapOption::Observe).expect("Observe in registration response");

    let (mut m, _) = Client::connect(gw.mqtt_addr, "obs-many-pub").await;
    m.publish("obs/many", QoS::AtLeastOnce, true, b"mqtt-retained")
        .await;
    let n1 = c.notification(&token).await;
    m.publish("obs/many", QoS::AtLeastOnce, false, b"mqtt-live")
        .await;
    let n2 = c.notification(&token).await;
    http_put(&gw, "obs/many", "http", "text/plain").await;
    let n3 = c.notification(&token).await;

    for (n, want) in [(&n1, "mqtt-retained"), (&n2, "mqtt-live"), (&n3, "http")] {
        assert_eq!(payload_str(n), want);
        assert_eq!(code(n), "2.05");
        assert_eq!(
            n.header.get_type(),
            MessageType::Confirmable,
            "notifications are CON"
        );
        assert_eq!(n.get_token(), token.as_slice(), "token echoed");
        let seq = opt_uint(n, CoapOption::Observe).expect("Observe in notification");
        assert!(seq > last, "Observe numbers increase: {seq} after {last}");
        assert!(seq < 1 << 24, "24-bit Observe");
        last = seq;
    }
    let cf = opt_uint(&n3, CoapOption::ContentFormat);
    assert_eq!(cf, Some(0), "text/plain from HTTP");
    gw.shutdown().await;
}

#[tokio::test]
async fn rfc7641_3_2_delete_ends_observation_with_4_04() {
    let gw = gateway().await;
    let (c, token, r) = observed(&gw, "obs/del", "v").await;
    assert_eq!(code(&r), "2.05");

    assert_eq!(http_delete(&gw, "obs/del").await.status(), 204);
    let n = c.notification(&token).await;
    assert_eq!(code(&n), "4.04", "final notification after DELETE");
    assert!(
        n.get_first_option(CoapOption::Observe).is_none(),
        "the final 4.04 carries no Observe"
    );

    // The relation is over: a new value is not notified.
    no_more_notifications(&gw, &c, "obs/del", "back", "after the observation ended").await;
    gw.shutdown().await;
}

#[tokio::test]
async fn rfc7641_3_6_get_with_observe_1_deregisters() {
    let gw = gateway().await;
    let (mut c, token, _) = observed(&gw, "obs/dereg", "v").await;
    // Still observing at this point.
    http_put(&gw, "obs/dereg", "v2", "text/plain").await;
    assert_eq!(c.notification(&token).await.payload, b"v2");

    let mut p = c.request(RequestType::Get, "r/obs/dereg");
    p.set_token(token.clone());
    p.add_option(CoapOption::Observe, uint(1));
    let r = c.exchange(&p).await;
    assert_eq!(code(&r), "2.05");
    assert!(
        r.get_first_option(CoapOption::Observe).is_none(),
        "no Observe: not registered"
    );

    observers_gone(&gw).await;
    mqtt_publish(gw.mqtt_addr, "obs/dereg", b"v3", true).await;
    c.expect_silence("after Observe=1").await;
    gw.shutdown().await;
}

#[tokio::test]
async fn rfc7641_3_6_rst_in_reply_to_a_notification_deregisters() {
    let gw = gateway().await;
    let (c, token, _) = observed(&gw, "obs/rst", "v").await;
    http_put(&gw, "obs/rst", "v2", "text/plain").await;
    let n = c.recv("notification").await;
    assert_eq!(n.get_token(), token.as_slice());
    assert_eq!(n.header.get_type(), MessageType::Confirmable);
    assert_eq!(
        gw.broker.subscription_count(),
        1,
        "observing subscribes the CoAP front-end"
    );
    c.rst(&n).await;
    // The observation is gone (not merely waiting for the unacknowledged notification to be
    // retransmitted, which would also keep the socket quiet for a while).
    no_more_notifications(&gw, &c, "obs/rst", "v3", "after RST").await;
    gw.shutdown().await;
}

#[tokio::test]
async fn rfc7641_4_1_observing_a_missing_thing_is_4_04_and_registers_nothing() {
    let gw = gateway().await;
    let mut c = Coap::new(gw.coap_addr).await;
    let (_, r) = c.observe("r/obs/missing").await;
    assert_eq!(code(&r), "4.04");
    assert!(r.get_first_option(CoapOption::Observe).is_none());

    let mut writer = Coap::new(gw.coap_addr).await;
    assert_eq!(
        gw.broker.subscription_count(),
        0,
        "a 4.04 registers nothing"
    );
    assert_eq!(
        code(&writer.put("r/obs/missing", b"now", Some(0)).await),
        "2.01"
    );
    c.expect_silence("observer of a missing thing").await;
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// RFC 7252 message layer
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn rfc7252_5_2_3_non_request_gets_non_response_with_a_new_message_id() {
    let (gw, mut c) = stored("non/x", "n", "text/plain").await;
    let mut p = c.request(RequestType::Get, "r/non/x");
    p.header.set_type(MessageType::NonConfirmable);
    let r = c.exchange(&p).await;
    assert_eq!(r.header.get_type(), MessageType::NonConfirmable);
    assert_eq!(code(&r), "2.05");
    assert_eq!(r.payload, b"n");
    let why = "a NON response has its own MID";
    assert_ne!(r.header.message_id, p.header.message_id, "{why}");
    gw.shutdown().await;
}

#[tokio::test]
async fn rfc7252_4_5_retransmitted_put_publishes_once() {
    let gw = gateway().await;
    let mut c = Coap::new(gw.coap_addr).await;
    let mut sub = Client::subscriber(gw.mqtt_addr, "dedup-sub", "dup/put").await;
    let mut p = c.request(RequestType::Put, "r/dup/put");
    p.payload = b"once".to_vec();
    // Twice back to back (the second arrives while the write may still be in flight) ...
    c.send(&p).await;
    c.send(&p).await;
    let first = c.recv_raw("answer to the PUT").await;
    let first_p = coap_lite::Packet::from_bytes(&first).unwrap();
    assert_eq!(code(&first_p), "2.01");
    assert_eq!(first_p.header.message_id, p.header.message_id);
    // ... at most one answer per copy; drain a possible second one, which must be identical.
    if let Some(again) = c.recv_within(QUIET).await {
        assert_eq!(
            again.to_bytes().unwrap(),
            first,
            "duplicate answered identically"
        );
    }
    // And a late retransmission after the answer gets the very same answer (not 2.04).
    c.send(&p).await;
    let replay = c.recv_raw("answer to the retransmission").await;
    assert_eq!(replay, first, "same ACK for the duplicate");

    let got = sub.publish_rx().await;
    assert_eq!(&got.payload[..], b"once");
    sub.expect_silence("a duplicate CON must not publish again")
        .await;
    gw.shutdown().await;
}

#[tokio::test]
async fn rfc7252_4_3_empty_con_ping_gets_rst() {
    let gw = gateway().await;
    let c = Coap::new(gw.coap_addr).await;
    c.send_raw(&[0x40, 0x00, 0xbe, 0xef]).await;
    assert_eq!(
        c.recv_raw("RST to ping").await,
        vec![0x70, 0x00, 0xbe, 0xef]
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn rfc7252_5_4_1_unrecognised_critical_option_is_4_02() {
    let (gw, mut c) = stored("opt/x", "v", "text/plain").await;
    let mut p = c.request(RequestType::Get, "r/opt/x");
    p.add_option(CoapOption::Unknown(9), b"?".to_vec());
    let r = c.exchange(&p).await;
    assert_eq!(code(&r), "4.02", "option 9 is critical and unknown");
    assert!(r.payload != b"v", "the value is not served");

    // An unknown elective (even) option is ignored.
    let mut p = c.request(RequestType::Get, "r/opt/x");
    p.add_option(CoapOption::Unknown(2050), b"?".to_vec());
    let r = c.exchange(&p).await;
    assert_eq!(code(&r), "2.05");
    gw.shutdown().await;
}

#[tokio::test]
async fn rfc7252_4_2_malformed_datagram_gets_no_answer_and_the_server_keeps_working() {
    let gw = gateway().await;
    let mut c = Coap::new(gw.coap_addr).await;
    // Too short for a header; version 0; a NON with token length 9 (reserved).
    for junk in [
        &[0xffu8, 0xff][..],
        &[0x00, 0x01, 0x12, 0x34],
        &[0x59, 0x01, 0x12, 0x34, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    ] {
        c.send_raw(junk).await;
    }
    c.expect_silence("malformed datagrams").await;
    assert_eq!(code(&c.put("r/still/alive", b"yes", Some(0)).await), "2.01");
    let r = c.get("r/still/alive").await;
    assert_eq!(r.payload, b"yes");
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// RFC 7959: Block2
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn rfc7959_2_4_block2_reads_a_3000_byte_http_value_byte_for_byte() {
    let gw = gateway().await;
    let value: Vec<u8> = (0..3000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    assert_eq!(
        http_put(&gw, "big/blob", value.clone(), "application/octet-stream")
            .await
            .status(),
        201
    );
    let mut c = Coap::new(gw.coap_addr).await;

    // Late negotiation: a plain GET gets the first block and M=1.
    let first = c.get("r/big/blob").await;
    assert_eq!(code(&first), "2.05");
    let b = opt_uint(&first, CoapOption::Block2).expect("Block2 in the first response");
    assert_eq!(b >> 4, 0, "first block is NUM 0");
    assert_ne!(b & 0x8, 0, "M=1: more blocks follow");
    assert!(first.payload.len() < value.len());

    // Then every block, early-negotiated at 256 bytes (SZX 4), with the same ETag throughout.
    for szx in [(b & 0x7), 4] {
        let size = 16usize << szx;
        let blocks = c.get_blocks("r/big/blob", szx, 300).await;
        let etag = blocks[0].get_first_option(CoapOption::ETag).cloned();
        let mut got = Vec::new();
        for (num, r) in blocks.iter().enumerate() {
            assert_eq!(code(r), "2.05", "block {num}");
            let rb = opt_uint(r, CoapOption::Block2).expect("Block2 echoed");
            assert_eq!(rb >> 4, num as u32);
            assert_eq!(rb & 0x7, szx, "the server keeps the asked size");
            let tag = r.get_first_option(CoapOption::ETag).cloned();
            assert!(tag.is_some(), "ETag in every block");
            assert_eq!(tag, etag, "same ETag in every block");
            if rb & 0x8 != 0 {
                assert_eq!(r.payload.len(), size, "full blocks before the last");
            }
            got.extend_from_slice(&r.payload);
        }
        assert_eq!(got.len(), value.len());
        assert!(got == value, "byte-for-byte at block size {size}");
    }
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// RFC 6690: resource discovery (ETSI TD_COAP_LINK_*)
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn td_coap_link_01_well_known_core_lists_every_thing_as_link_format() {
    let (gw, mut c) = stored("kitchen/temp", "{}", "application/json").await;
    http_put(&gw, "kitchen/light", "on", "text/plain").await;
    http_put(&gw, "garage", vec![1u8, 2], "application/octet-stream").await;
    let r = c.get(".well-known/core").await;
    assert_eq!(code(&r), "2.05");
    assert_eq!(
        opt_uint(&r, CoapOption::ContentFormat),
        Some(40),
        "link-format"
    );
    assert_eq!(
        payload_str(&r),
        "</r/garage>;ct=42;obs,</r/kitchen/light>;ct=0;obs,</r/kitchen/temp>;ct=50;obs"
    );
    // Accept other than 40 → 4.06.
    let mut p = c.request(RequestType::Get, ".well-known/core");
    p.add_option(CoapOption::Accept, uint(50));
    assert_eq!(code(&c.exchange(&p).await), "4.06");
    gw.shutdown().await;
}

#[tokio::test]
async fn td_coap_link_02_query_filters_href_ct_rt_with_trailing_star() {
    let (gw, mut c) = stored("garage", "x", "text/plain").await;
    http_put(&gw, "kitchen/temp", "{}", "application/json").await;
    http_put(&gw, "kitchen/light", "on", "text/plain").await;
    for (query, want) in [
        (
            "href=/r/kitchen*",
            "</r/kitchen/light>;ct=0;obs,</r/kitchen/temp>;ct=50;obs",
        ),
        ("href=/r/garage", "</r/garage>;ct=0;obs"),
        ("ct=50", "</r/kitchen/temp>;ct=50;obs"),
        ("ct=0", "</r/garage>;ct=0;obs,</r/kitchen/light>;ct=0;obs"),
        ("rt=temperature*", ""),
    ] {
        let mut p = c.request(RequestType::Get, ".well-known/core");
        p.add_option(CoapOption::UriQuery, query.as_bytes().to_vec());
        let r = c.exchange(&p).await;
        assert_eq!(code(&r), "2.05", "{query}");
        assert_eq!(payload_str(&r), want, "{query}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn rfc6690_rfc7959_large_well_known_core_is_block_wise() {
    let gw = gateway().await;
    for i in 0..80 {
        let topic = format!("sensors/device-{i:03}/value");
        mqtt_publish(gw.mqtt_addr, &topic, b"1", true).await;
    }
    let mut c = Coap::new(gw.coap_addr).await;
    let mut body = Vec::new();
    // SZX 2: 64 bytes.
    for r in c.get_blocks(".well-known/core", 2, 200).await {
        assert_eq!(code(&r), "2.05");
        body.extend_from_slice(&r.payload);
    }
    let text = String::from_utf8(body).unwrap();
    assert_eq!(text.split(',').count(), 80);
    assert!(text.starts_with("</r/sensors/device-000/value>;ct=42;obs,"));
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Reliable observe (RFC 7641 §3.2, §4.5) through the gateway
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn rfc7641_3_2_td_coap_obs_a_value_in_another_format_ends_observation_with_4_06() {
    let (gw, mut c) = stored("obs/fmt", "{}", "application/json").await;
    let mut p = c.request(RequestType::Get, "r/obs/fmt");
    p.add_option(CoapOption::Observe, Vec::new());
    p.add_option(CoapOption::Accept, uint(50));
    let token = p.get_token().to_vec();
    let r = c.exchange(&p).await;
    assert_eq!(code(&r), "2.05");
    http_put(&gw, "obs/fmt", "{\"a\":1}", "application/json").await;
    assert_eq!(c.notification(&token).await.payload, b"{\"a\":1}");
    http_put(&gw, "obs/fmt", "plain now", "text/plain").await;
    let n = c.notification(&token).await;
    assert_eq!(code(&n), "4.06", "the observer accepts only JSON");
    assert!(n.get_first_option(CoapOption::Observe).is_none());
    observers_gone(&gw).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn rfc7641_4_5_notify_non_policy_sends_non_notifications() {
    let gw = gateway_with(|c| c.coap.notify = ponte::config::CoapNotify::Non).await;
    let (c, token, _) = observed(&gw, "obs/non", "0").await;
    http_put(&gw, "obs/non", "1", "text/plain").await;
    let n = c.recv("NON notification").await;
    assert_eq!(n.get_token(), token.as_slice());
    assert_eq!(n.header.get_type(), MessageType::NonConfirmable);
    // RST to a NON notification deregisters (RFC 7641 §3.6).
    c.rst(&n).await;
    let what = "after RST to a NON notification";
    no_more_notifications(&gw, &c, "obs/non", "2", what).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn rfc7252_4_6_oversized_con_request_is_answered_4_13() {
    let gw = gateway().await;
    let mut c = Coap::new(gw.coap_addr).await;
    let mut p = c.request(RequestType::Put, "r/too/big");
    p.payload = vec![b'a'; 20_000];
    let r = c.exchange(&p).await;
    assert_eq!(code(&r), "4.13");
    assert!(r.get_first_option(CoapOption::Size1).is_some());
    assert_eq!(
        http_get(&gw, "too/big").await.status(),
        404,
        "nothing stored"
    );
    gw.shutdown().await;
}
