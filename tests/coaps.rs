#![allow(clippy::unwrap_used)] // test helpers may unwrap: a failure is the test failing
//! CoAP over DTLS with pre-shared keys (`coaps://`, RFC 7252 §9.1.3.1, issue 5): libcoap's
//! `coap-client-openssl` (and `coap-client-gnutls`) as real clients, plus a Rust client built
//! on dimpl for what the CLI cannot show (idle timeout, session limit, garbage mid-session).
//! A missing CLI client skips its test locally and fails it in CI (env `CI` set).
//! coap-client exits 0 even when a request failed, so its output is what is checked.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use common::*;
use dimpl::{Dtls, PskResolver};
use ponte::Gateway;

/// The PSK file of every test: `alice` and `bob` with ASCII keys, so coap-client's `-k`
/// (which sends its argument's bytes as the key) can name them.
const PSK_FILE: &str = "# coaps test identities\n\
alice:616c6963652d736563726574\n\
\n\
bob:626f622d736563726574\n";
/// `alice`'s key as coap-client takes it.
const ALICE_KEY: &str = "alice-secret";

/// A gateway with the test PSK file, `coaps` on a free port.
async fn gateway_psk(f: impl FnOnce(&mut ponte::config::Config)) -> Gateway {
    let file = test_file("psk", PSK_FILE);
    gateway_with(|c| {
        f(c);
        c.auth.psk_file = Some(file);
    })
    .await
}

/// With `coap-client-openssl` installed: a [`gateway_psk`] for it.
async fn openssl() -> Option<Gateway> {
    if !have("coap-client-openssl") {
        return None;
    }
    Some(gateway_psk(|_| {}).await)
}

fn coaps_uri(gw: &Gateway, path: &str) -> String {
    format!("coaps://{}/{}", gw.coaps_addr.expect("coaps is on"), path)
}

fn stat(gw: &Gateway, f: impl Fn(&ponte::coap::DtlsStats) -> &std::sync::atomic::AtomicU64) -> u64 {
    f(gw.coaps_stats.as_ref().expect("coaps stats")).load(Ordering::Relaxed)
}

// ---------------------------------------------------------------------------------------
// coap-client as a child process
// ---------------------------------------------------------------------------------------

/// `coap-client-<flavour> -u user -k key -B 3` (giving up after 3 s without answer), then
/// the words of `args`; killed after 20 s.
fn coap_client(flavour: &str, user: &str, key: &str, args: &str) -> Cmd {
    let who = format!("-u {user} -k {key} -B 3");
    let cmd = Cmd::new(&format!("coap-client-{flavour}")).words(&who);
    cmd.words(args).limit(Duration::from_secs(20))
}

/// [`coap_client`] as alice with openssl, on `uri`, run to completion.
async fn as_alice(args: &str, uri: &str) -> Output {
    coap_client("openssl", "alice", ALICE_KEY, args)
        .arg(uri)
        .run()
        .await
}

/// coap-client got no CoAP response: it says it could not send (the DTLS session never
/// came up) and printed no payload or response code.
fn assert_no_response(r: &Output) {
    let all = r.all();
    assert!(all.contains("cannot send CoAP pdu"), "{all}");
    assert!(!r.stdout.contains("intruder"), "{all}");
    assert!(!all.contains(" 2.0"), "{all}");
}

/// The stored value of `topic`: over HTTP when the gateway is open, else (an ACL is in force
/// and anonymous HTTP may not read) straight from the broker core.
async fn http_value(gw: &Gateway, topic: &str) -> Option<String> {
    if gw.auth.acl_active() {
        let v = retained(gw, topic).filter(|v| !v.is_empty());
        return v.map(|v| String::from_utf8_lossy(&v).into_owned());
    }
    let r = http_get(gw, topic).await;
    match r.status().as_u16() {
        200 => Some(r.text().await.unwrap()),
        404 => None,
        s => panic!("unexpected HTTP status {s}"),
    }
}

// ---------------------------------------------------------------------------------------
// coap-client-openssl
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc7252_9_1_3_1_put_then_get_over_coaps_with_coap_client_openssl() {
    let Some(gw) = openssl().await else { return };
    let uri = coaps_uri(&gw, "r/dtls/put");
    let put = as_alice("-m put -e 21.5", &uri).await;
    let all = put.all();
    assert!(!all.contains("4."), "PUT answered with an error: {all}");
    let get = as_alice("", &uri).await;
    assert_eq!(get.stdout.trim(), "21.5", "GET over coaps: {}", get.all());
    assert_eq!(stat(&gw, |s| &s.sessions_established), 2);
    assert_eq!(stat(&gw, |s| &s.handshakes_failed), 0);
    gw.shutdown().await;
}

/// A PUT of "intruder" to `topic` as `user` with `key`, which must get no response and
/// write nothing.
async fn intruder(gw: &Gateway, user: &str, key: &str, topic: &str) {
    let uri = coaps_uri(gw, &format!("r/{topic}"));
    let cmd = coap_client("openssl", user, key, "-m put -e intruder");
    assert_no_response(&cmd.arg(uri).run().await);
    let value = http_value(gw, topic).await;
    assert_eq!(value, None, "nothing was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc7252_9_1_3_1_wrong_key_fails_the_handshake_and_writes_nothing() {
    let Some(gw) = openssl().await else { return };
    intruder(&gw, "alice", "not-alices-key", "dtls/wrongkey").await;
    assert!(stat(&gw, |s| &s.handshakes_failed) >= 1);
    assert_eq!(stat(&gw, |s| &s.unknown_identities), 0);
    assert_eq!(stat(&gw, |s| &s.sessions_established), 0);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc7252_9_1_3_1_unknown_identity_is_rejected() {
    let Some(gw) = openssl().await else { return };
    // mallory knows a key from the file, but not under an identity the file has.
    intruder(&gw, "mallory", ALICE_KEY, "dtls/unknown").await;
    assert!(stat(&gw, |s| &s.unknown_identities) >= 1);
    assert_eq!(stat(&gw, |s| &s.sessions_established), 0);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_5_values_cross_between_coaps_plain_coap_and_http() {
    let Some(gw) = openssl().await else { return };
    // coaps → plain CoAP and HTTP.
    let uri = coaps_uri(&gw, "r/dtls/cross");
    let bob = |args: &str| {
        coap_client("openssl", "bob", "bob-secret", args)
            .arg(&uri)
            .run()
    };
    bob("-m put -e from-coaps").await;
    let value = http_value(&gw, "dtls/cross").await;
    assert_eq!(value.as_deref(), Some("from-coaps"));
    let mut coap = Coap::new(gw.coap_addr).await;
    assert_eq!(payload_str(&coap.get("r/dtls/cross").await), "from-coaps");
    // HTTP → coaps, then a DELETE over coaps is seen over HTTP.
    http_put(&gw, "dtls/cross", "from-http", "text/plain").await;
    let get = bob("").await;
    assert_eq!(get.stdout.trim(), "from-http", "{}", get.all());
    bob("-m delete").await;
    assert_eq!(http_value(&gw, "dtls/cross").await, None);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc7641_observe_over_coaps_sees_an_http_write() {
    let Some(gw) = openssl().await else { return };
    http_put(&gw, "dtls/obs", "first", "text/plain").await;
    let uri = coaps_uri(&gw, "r/dtls/obs");
    let before = gw.broker.subscription_count();
    let observer = coap_client("openssl", "alice", ALICE_KEY, "-s 3")
        .arg(uri)
        .spawn();
    subscribed(&gw, before).await;
    http_put(&gw, "dtls/obs", "second", "text/plain").await;
    let out = observer.finish().await;
    let first = out.stdout.find("first").unwrap_or(usize::MAX);
    let second = out.stdout.find("second").unwrap_or(usize::MAX);
    assert!(first < second && second != usize::MAX, "{}", out.all());
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc7959_block1_upload_over_coaps() {
    let Some(gw) = openssl().await else { return };
    let body: String = (0..3000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let file = test_file("body", &body);
    let uri = coaps_uri(&gw, "r/dtls/big");
    let put = coap_client("openssl", "alice", ALICE_KEY, "-m put -b 256 -f");
    put.arg(file).arg(&uri).run().await;
    let value = http_value(&gw, "dtls/big").await;
    assert_eq!(value.as_deref(), Some(body.as_str()));
    // And Block2 back.
    let get = as_alice("-b 256", &uri).await;
    assert_eq!(get.stdout.trim(), body, "{}", get.all());
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_datagrams_to_the_dtls_port_do_not_break_a_following_session() {
    let Some(gw) = openssl().await else { return };
    let server = gw.coaps_addr.unwrap();
    let junk = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // A ClientHello header with a nonsense body.
    let mut hello_header = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 40, 1];
    // A ClientHello header with a nonsense body. None of these is a ClientHello that parses,
    // so none is answered or starts a session (issue 16: not even the last one).
    hello_header.resize(13 + 40, 0xff);
    let datagrams: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x40, 0x01, 0x12, 0x34], // plain CoAP to the DTLS port
        vec![23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 0, 0, 4, 1, 2, 3, 4], // app data, no session
        hello_header[..20].to_vec(),
        (0..1500u32).map(|i| (i * 7919 % 251) as u8).collect(),
        hello_header.clone(),
    ];
    for d in &datagrams {
        junk.send_to(d, server).await.unwrap();
    }
    as_alice("-m put -e fine", &coaps_uri(&gw, "r/dtls/afterjunk")).await;
    let value = http_value(&gw, "dtls/afterjunk").await;
    assert_eq!(value.as_deref(), Some("fine"));
    let stray = stat(&gw, |s| &s.stray_datagrams);
    assert_eq!(stray, 6, "non-ClientHello junk is counted");
    assert_eq!(stat(&gw, |s| &s.sessions_started), 1, "only coap-client's");
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// coap-client-gnutls
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc7252_9_1_3_1_put_then_get_over_coaps_with_coap_client_gnutls() {
    if !have("coap-client-gnutls") {
        return;
    }
    let gw = gateway_psk(|_| {}).await;
    let uri = coaps_uri(&gw, "r/dtls/gnutls");
    let gnutls = |args: &str| {
        coap_client("gnutls", "alice", ALICE_KEY, args)
            .arg(&uri)
            .run()
    };
    gnutls("-m put -e via-gnutls").await;
    let get = gnutls("").await;
    assert_eq!(get.stdout.trim(), "via-gnutls", "{}", get.all());
    let value = http_value(&gw, "dtls/gnutls").await;
    assert_eq!(value.as_deref(), Some("via-gnutls"));
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// A Rust client on dimpl
// ---------------------------------------------------------------------------------------

/// A client-side resolver with one key.
struct Key(Vec<u8>);

impl PskResolver for Key {
    fn resolve(&self, _identity: &[u8]) -> Option<Vec<u8>> {
        Some(self.0.clone())
    }
}

/// A DTLS client over one UDP socket.
struct DtlsClient {
    sock: tokio::net::UdpSocket,
    dtls: Dtls,
    buf: Vec<u8>,
    next_mid: u16,
    /// Decrypted datagrams received.
    inbox: Vec<Vec<u8>>,
    connected: bool,
    closed_by_server: bool,
    deadline: Option<Instant>,
}

impl DtlsClient {
    async fn new(server: SocketAddr, identity: &str, key: &[u8]) -> DtlsClient {
        let config = dimpl::Config::builder()
            .with_psk_client(identity.as_bytes().to_vec(), Arc::new(Key(key.to_vec())))
            .build()
            .unwrap();
        let mut dtls = Dtls::new_12_psk(Arc::new(config), Instant::now());
        dtls.set_active(true);
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        sock.connect(server).await.unwrap();
        DtlsClient {
            sock,
            dtls,
            buf: vec![0u8; 4096],
            next_mid: 1,
            inbox: Vec::new(),
            connected: false,
            closed_by_server: false,
            deadline: None,
        }
    }

    async fn pump(&mut self) -> Result<(), dimpl::Error> {
        let mut out = vec![0u8; 4096];
        loop {
            match self.dtls.poll_output(&mut out) {
                dimpl::Output::Packet(p) => {
                    let _ = self.sock.send(p).await;
                }
                dimpl::Output::Timeout(t) => {
                    self.deadline = Some(t);
                    return Ok(());
                }
                dimpl::Output::Connected => self.connected = true,
                dimpl::Output::ApplicationData(d) => self.inbox.push(d.to_vec()),
                dimpl::Output::CloseNotify => self.closed_by_server = true,
                _ => {}
            }
        }
    }

    /// Run the engine for up to `d` or until `done` holds.
    async fn run_until(
        &mut self,
        d: Duration,
        done: impl Fn(&DtlsClient) -> bool,
    ) -> Result<(), dimpl::Error> {
        let end = Instant::now() + d;
        loop {
            self.pump().await?;
            if done(self) || Instant::now() >= end {
                return Ok(());
            }
            let wake = self.deadline.map_or(end, |t| t.min(end));
            let mut buf = std::mem::take(&mut self.buf);
            let r = tokio::time::timeout_at(wake.into(), self.sock.recv(&mut buf)).await;
            let now = Instant::now();
            self.dtls.handle_timeout(now)?;
            if let Ok(Ok(n)) = r {
                self.dtls.handle_packet(&buf[..n])?;
            }
            self.buf = buf;
        }
    }

    async fn handshake(&mut self) -> Result<(), dimpl::Error> {
        self.run_until(WAIT, |c| c.connected).await
    }

    /// Send a CON request and wait for the piggybacked response.
    async fn request(&mut self, method: RequestType, path: &str, payload: &[u8]) -> Packet {
        let mut p = Packet::new();
        p.header.set_type(MessageType::Confirmable);
        p.header.code = MessageClass::Request(method);
        p.header.message_id = self.next_mid;
        self.next_mid += 1;
        p.set_token(vec![0x42, self.next_mid as u8]);
        for seg in path.split('/') {
            p.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
        }
        p.payload = payload.to_vec();
        self.dtls
            .send_application_data(&p.to_bytes().unwrap())
            .unwrap();
        let mid = p.header.message_id;
        let found = |c: &DtlsClient| {
            c.inbox
                .iter()
                .any(|d| Packet::from_bytes(d).is_ok_and(|r| r.header.message_id == mid))
        };
        self.run_until(WAIT, found).await.expect("session stays up");
        let i = self
            .inbox
            .iter()
            .position(|d| Packet::from_bytes(d).is_ok_and(|r| r.header.message_id == mid))
            .unwrap_or_else(|| panic!("no response to {method:?} /{path}"));
        Packet::from_bytes(&self.inbox.remove(i)).unwrap()
    }
}

/// A response code.
fn resp(t: ResponseType) -> MessageClass {
    MessageClass::Response(t)
}

/// A dimpl client of `gw`'s coaps port as `identity` with `key`, its handshake done.
async fn connected(gw: &Gateway, identity: &str, key: &[u8]) -> DtlsClient {
    let mut c = DtlsClient::new(gw.coaps_addr.unwrap(), identity, key).await;
    c.handshake().await.unwrap();
    assert!(c.connected);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc7252_9_1_3_1_rust_client_on_dimpl_puts_and_gets() {
    let gw = gateway_psk(|_| {}).await;
    let mut c = connected(&gw, "alice", b"alice-secret").await;
    let put = c.request(RequestType::Put, "r/rust/t", b"42").await;
    assert_eq!(put.header.code, resp(ResponseType::Created));
    let get = c.request(RequestType::Get, "r/rust/t", b"").await;
    assert_eq!(get.header.code, resp(ResponseType::Content));
    assert_eq!(get.payload, b"42");
    // Same semantics as plain CoAP: a bad path is a 4.04 with a diagnostic payload.
    let bad = c.request(RequestType::Get, "nowhere", b"").await;
    assert_eq!(bad.header.code, resp(ResponseType::NotFound));
    assert!(!bad.payload.is_empty());
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_client_with_a_wrong_key_never_gets_a_session() {
    let gw = gateway_psk(|_| {}).await;
    let mut c = DtlsClient::new(gw.coaps_addr.unwrap(), "bob", b"guessed").await;
    let r = c.run_until(Duration::from_secs(2), |c| c.connected).await;
    let why = format!("handshake with a wrong key must not complete ({r:?})");
    assert!(!c.connected, "{why}");
    eventually(WAIT, "the failure to be counted", || async {
        stat(&gw, |s| &s.handshakes_failed) != 0
    })
    .await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_inside_an_established_session_is_ignored() {
    let gw = gateway_psk(|_| {}).await;
    let mut c = connected(&gw, "alice", b"alice-secret").await;
    // From the session's own address: junk, a forged application-data record, a new
    // ClientHello header with a nonsense body.
    let mut hello = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 40, 1];
    hello.resize(13 + 40, 0xff);
    let forged = vec![
        23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 9, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8,
    ];
    for d in [vec![1, 2, 3], forged, hello] {
        c.sock.send(&d).await.unwrap();
    }
    let put = c.request(RequestType::Put, "r/rust/junk", b"still").await;
    assert_eq!(put.header.code, resp(ResponseType::Created));
    assert_eq!(http_value(&gw, "rust/junk").await.as_deref(), Some("still"));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_are_closed_after_the_idle_timeout() {
    let gw = gateway_psk(|c| c.coap.dtls_idle_timeout_secs = 1).await;
    let mut c = connected(&gw, "alice", b"alice-secret").await;
    let closed = |c: &DtlsClient| c.closed_by_server;
    c.run_until(Duration::from_secs(4), closed).await.ok();
    assert!(c.closed_by_server, "the server sent close_notify");
    assert_eq!(stat(&gw, |s| &s.idle_closed), 1);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_beyond_dtls_max_sessions_are_refused_until_one_ends() {
    let gw = gateway_psk(|c| {
        c.coap.dtls_max_sessions = 1;
        c.coap.dtls_idle_timeout_secs = 2;
    })
    .await;
    let _first = connected(&gw, "alice", b"alice-secret").await;
    let mut second = DtlsClient::new(gw.coaps_addr.unwrap(), "bob", b"bob-secret").await;
    let up = |c: &DtlsClient| c.connected;
    second.run_until(Duration::from_millis(1500), up).await.ok();
    assert!(!second.connected, "no slot for a second session");
    assert!(stat(&gw, |s| &s.refused_full) >= 1);
    // The first goes idle and is closed; the second's retransmitted ClientHello gets in.
    second.run_until(Duration::from_secs(8), up).await.unwrap();
    assert!(second.connected, "the freed slot is reused");
    let put = second.request(RequestType::Put, "r/rust/slot", b"b").await;
    assert_eq!(put.header.code, resp(ResponseType::Created));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coaps_is_off_without_a_psk_file() {
    let gw = gateway().await;
    assert_eq!(gw.coaps_addr, None);
    assert!(gw.coaps_stats.is_none());
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// The PSK identity is the username of the ACL (issue 5)
// ---------------------------------------------------------------------------------------

/// An ACL where alice owns `alice/#`, bob only reads `alice/shared`, anonymous nothing.
const ACL: &str = "user alice\ntopic readwrite alice/#\nuser bob\ntopic read alice/shared\n";

fn with_acl(c: &mut ponte::config::Config) {
    c.auth.acl_file = Some(test_file("acl", ACL));
}

/// The links of `/.well-known/core` as `c` sees them.
async fn discovered(c: &mut DtlsClient) -> String {
    let core = c.request(RequestType::Get, ".well-known/core", b"").await;
    String::from_utf8_lossy(&core.payload).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_5_psk_identity_is_the_acl_username_4_03_with_a_diagnostic() {
    let gw = gateway_psk(with_acl).await;
    let mut alice = connected(&gw, "alice", b"alice-secret").await;
    let put = alice.request(RequestType::Put, "r/alice/shared", b"hi");
    assert_eq!(put.await.header.code, resp(ResponseType::Created));
    let denied = alice.request(RequestType::Put, "r/bob/x", b"no").await;
    assert_eq!(denied.header.code, resp(ResponseType::Forbidden));
    let why = String::from_utf8_lossy(&denied.payload);
    let says = why.contains("alice") && why.contains("write") && why.contains("bob/x");
    assert!(says, "{why}");
    assert_eq!(http_value(&gw, "bob/x").await, None, "nothing written");

    let mut bob = connected(&gw, "bob", b"bob-secret").await;
    let read = bob.request(RequestType::Get, "r/alice/shared", b"").await;
    assert_eq!(read.header.code, resp(ResponseType::Content));
    assert_eq!(read.payload, b"hi");
    let write = bob.request(RequestType::Put, "r/alice/shared", b"bob was here");
    assert_eq!(write.await.header.code, resp(ResponseType::Forbidden));
    // Discovery lists only what the caller may read.
    let links = discovered(&mut bob).await;
    assert!(links.contains("</r/alice/shared>"), "{links}");
    let put2 = alice.request(RequestType::Put, "r/alice/private", b"p");
    assert_eq!(put2.await.header.code, resp(ResponseType::Created));
    let links = discovered(&mut bob).await;
    assert!(!links.contains("private"), "{links}");
    assert_eq!(http_value(&gw, "alice/shared").await.as_deref(), Some("hi"));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_5_coap_client_openssl_sees_4_03_for_a_denied_write() {
    if !have("coap-client-openssl") {
        return;
    }
    let gw = gateway_psk(with_acl).await;
    let denied = as_alice("-m put -e nope", &coaps_uri(&gw, "r/elsewhere")).await;
    assert!(denied.all().contains("4.03"), "{}", denied.all());
    assert_eq!(http_value(&gw, "elsewhere").await, None);
    let ok = as_alice("-m put -e yes", &coaps_uri(&gw, "r/alice/cli")).await;
    assert!(!ok.all().contains("4."), "{}", ok.all());
    assert_eq!(http_value(&gw, "alice/cli").await.as_deref(), Some("yes"));
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Stateless cookies: no session for strangers (issue 16, RFC 6347 §4.2.1)
// ---------------------------------------------------------------------------------------

/// A DTLS 1.2 ClientHello datagram (PSK, CCM_8) with client random `random` and `cookie`.
fn client_hello(random: [u8; 32], cookie: &[u8]) -> Vec<u8> {
    let mut body = vec![0xfe, 0xfd];
    body.extend_from_slice(&random);
    body.push(0);
    body.push(cookie.len() as u8);
    body.extend_from_slice(cookie);
    body.extend_from_slice(&[0, 2, 0xc0, 0xa8, 1, 0]);
    body.extend_from_slice(&[0, 6, 0, 0x17, 0, 0, 0xff, 0x01]); // extended master secret
    let len = body.len();
    let mut d = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0];
    d.extend_from_slice(&((len + 12) as u16).to_be_bytes());
    d.extend_from_slice(&[1, 0, (len >> 8) as u8, len as u8, 0, 0, 0, 0, 0, 0]);
    d.extend_from_slice(&[(len >> 8) as u8, len as u8]);
    d.extend_from_slice(&body);
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_16_rfc6347_4_2_1_a_flood_of_client_hellos_holds_no_session() {
    if !have("coap-client-openssl") {
        return;
    }
    // One session place: a single stranger holding one would lock everyone out.
    let gw = gateway_psk(|c| c.coap.dtls_max_sessions = 1).await;
    let server = gw.coaps_addr.unwrap();
    let mut sockets = Vec::new();
    for _ in 0..50 {
        sockets.push(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    }
    // 100 rounds of one ClientHello from each of the 50 ports, each answered before the
    // next round: 50 in flight at a time, so the loopback never drops one and every one
    // is seen to be answered.
    let mut n: u32 = 0;
    let mut buf = [0u8; 512];
    for _round in 0..100u32 {
        for s in &sockets {
            n += 1;
            let mut random = [0u8; 32];
            random[..4].copy_from_slice(&n.to_be_bytes());
            // Every tenth carries a cookie we never got: forged.
            let cookie = if n.is_multiple_of(10) {
                vec![0xab; 32]
            } else {
                Vec::new()
            };
            s.send_to(&client_hello(random, &cookie), server)
                .await
                .unwrap();
        }
        for s in &sockets {
            let (len, _) = within(WAIT, "a HelloVerifyRequest", s.recv_from(&mut buf))
                .await
                .unwrap();
            assert_eq!(buf[0], 22, "a handshake record");
            assert_eq!(buf[13], 3, "HelloVerifyRequest");
            assert!(
                len < client_hello([0; 32], &[]).len() + 32,
                "no amplification"
            );
        }
    }
    assert_eq!(n, 5000);
    assert_eq!(stat(&gw, |s| &s.hello_verify_requests), 5000);
    assert_eq!(
        stat(&gw, |s| &s.bad_cookies),
        500,
        "forged cookies are counted"
    );
    assert_eq!(
        stat(&gw, |s| &s.sessions_started),
        0,
        "no state for strangers"
    );
    // A real client gets through at once.
    let started = Instant::now();
    let uri = coaps_uri(&gw, "r/dtls/afterflood");
    let put = as_alice("-m put -e through", &uri).await;
    assert!(!put.all().contains("4."), "{}", put.all());
    assert_eq!(
        stat(&gw, |s| &s.hello_verify_requests),
        5001,
        "one cookie round for the client, no retransmitted ClientHello"
    );
    assert!(
        started.elapsed() < WAIT,
        "coap-client took {:?}",
        started.elapsed()
    );
    assert_eq!(
        http_value(&gw, "dtls/afterflood").await.as_deref(),
        Some("through")
    );
    assert_eq!(stat(&gw, |s| &s.sessions_started), 1);
    assert_eq!(stat(&gw, |s| &s.sessions_established), 1);
    gw.shutdown().await;
}
