//! Black-box tests of CoAP over TCP (RFC 8323) on the CoAP port number: the CSM exchange,
//! Ping/Pong, the same `/r/T` resources and semantics as UDP, observe without CON/ACK, and
//! Abort on bad input.

mod common;

use coap_lite::{CoapOption, MessageClass, RequestType};
use common::*;

fn code_byte(p: &coap_lite::Packet) -> u8 {
    u8::from(p.header.code)
}

/// Connect and exchange CSMs (RFC 8323 §5.3).
async fn connected(gw: &ponte::Gateway) -> CoapTcp {
    let mut c = CoapTcp::connect(gw.coap_addr).await;
    c.signal(1, &[], &[(2, 65_536)]).await;
    let csm = c.recv("the server's CSM").await;
    assert_eq!(code_byte(&csm), 0xE1, "7.01 CSM first");
    c
}

#[tokio::test]
async fn rfc8323_5_3_csm_exchange_on_the_coap_port_and_5_4_ping_pong() {
    let gw = gateway().await;
    let mut c = connected(&gw).await;
    c.signal(2, b"pi", &[]).await;
    let pong = c.recv("Pong").await;
    assert_eq!(code_byte(&pong), 0xE3, "7.03 Pong");
    assert_eq!(pong.get_token(), b"pi");
    gw.shutdown().await;
}

#[tokio::test]
async fn rfc8323_same_resources_put_get_delete_as_udp_and_http() {
    let gw = gateway().await;
    let mut c = connected(&gw).await;
    let mut put = c.request(RequestType::Put, "r/tcp/a");
    put.add_option(CoapOption::ContentFormat, uint(0));
    put.payload = b"over tcp".to_vec();
    let r = c.exchange(&put).await;
    assert_eq!(code(&r), "2.01");
    assert_eq!(
        opt_all(&r, CoapOption::LocationPath),
        vec![b"r".to_vec(), b"tcp".to_vec(), b"a".to_vec()]
    );
    // The same thing over HTTP and UDP.
    assert_eq!(
        http_get(&gw, "tcp/a").await.text().await.unwrap(),
        "over tcp"
    );
    let mut u = Coap::new(gw.coap_addr).await;
    assert_eq!(u.get("r/tcp/a").await.payload, b"over tcp");

    let get = c.request(RequestType::Get, "r/tcp/a");
    let r = c.exchange(&get).await;
    assert_eq!(code(&r), "2.05");
    assert_eq!(r.payload, b"over tcp");
    assert_eq!(opt_uint(&r, CoapOption::ContentFormat), Some(0));
    assert!(r.get_first_option(CoapOption::ETag).is_some());

    let del = c.request(RequestType::Delete, "r/tcp/a");
    assert_eq!(code(&c.exchange(&del).await), "2.02");
    assert_eq!(http_get(&gw, "tcp/a").await.status(), 404);
    gw.shutdown().await;
}

#[tokio::test]
async fn rfc8323_7_2_observe_over_tcp_sends_every_change_without_con() {
    let gw = gateway().await;
    http_put(&gw, "tcp/obs", "0", "text/plain").await;
    let mut c = connected(&gw).await;
    let mut obs = c.request(RequestType::Get, "r/tcp/obs");
    obs.add_option(CoapOption::Observe, Vec::new());
    let token = obs.get_token().to_vec();
    let r = c.exchange(&obs).await;
    assert_eq!(code(&r), "2.05");
    let mut last = opt_uint(&r, CoapOption::Observe).expect("registered");
    for v in ["1", "2", "3"] {
        http_put(&gw, "tcp/obs", v, "text/plain").await;
        let n = c.recv("notification").await;
        assert_eq!(n.get_token(), token.as_slice());
        assert_eq!(n.payload, v.as_bytes());
        let seq = opt_uint(&n, CoapOption::Observe).expect("Observe");
        assert!(seq > last);
        last = seq;
    }
    // DELETE ends the observation with 4.04 and no Observe (RFC 7641 §3.2).
    http_delete(&gw, "tcp/obs").await;
    let n = c.recv("final 4.04").await;
    assert_eq!(code(&n), "4.04");
    assert!(n.get_first_option(CoapOption::Observe).is_none());
    gw.shutdown().await;
}

#[tokio::test]
async fn rfc8323_5_6_a_request_before_the_csm_is_aborted_and_the_connection_closed() {
    let gw = gateway().await;
    let mut c = CoapTcp::connect(gw.coap_addr).await;
    let get = c.request(RequestType::Get, "r/x");
    c.send(&get).await;
    let csm = c.recv("the server's CSM").await;
    assert_eq!(code_byte(&csm), 0xE1);
    let abort = c.recv("Abort").await;
    assert_eq!(code_byte(&abort), 0xE5, "7.05 Abort");
    assert!(c.recv_frame("EOF").await.is_none(), "the server closes");
    gw.shutdown().await;
}

#[tokio::test]
async fn rfc8323_3_2_tkl_above_8_aborts_and_the_server_keeps_serving() {
    let gw = gateway().await;
    let mut c = connected(&gw).await;
    use tokio::io::AsyncWriteExt;
    c.stream
        .write_all(&[0x09, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 9])
        .await
        .unwrap();
    assert_eq!(code_byte(&c.recv("Abort").await), 0xE5);
    let mut again = connected(&gw).await;
    let get = again.request(RequestType::Get, "r/none");
    assert_eq!(code(&again.exchange(&get).await), "4.04");
    let _ = MessageClass::Empty;
    gw.shutdown().await;
}

#[tokio::test]
async fn rfc8323_tcp_false_binds_no_tcp_listener() {
    let gw = gateway_with(|c| c.coap.tcp = false).await;
    let refused = tokio::net::TcpStream::connect(gw.coap_addr).await;
    assert!(refused.is_err(), "nothing listens on TCP");
    gw.shutdown().await;
}
