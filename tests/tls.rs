#![allow(clippy::unwrap_used)] // test helpers may unwrap: a failure is the test failing
//! TLS (issue 5 "Security"): MQTT over TLS, HTTPS and WSS with certificates made at test
//! time by rcgen (a CA, a server certificate for 127.0.0.1 and localhost, client
//! certificates), driven by rumqttc (TLS and secure WebSocket), reqwest over HTTPS, a raw
//! rustls client (to see which certificate the server presents), mosquitto_pub/sub with
//! `--cafile`/`--cert`/`--key` (skipped when missing, unless CI), and the real binary for
//! SIGHUP and start-up errors.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SerialNumber,
};
use rumqttc::{ConnectReturnCode, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

use common::*;

// ---------------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------------

/// A test PKI in a temporary directory: CA, server certificate and key, client certificate
/// and key, at fixed paths that a reload re-reads.
struct Pki {
    dir: tempfile::TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "ponte test CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let pki = Pki {
            dir: tempfile::tempdir().unwrap(),
            ca,
        };
        std::fs::write(pki.path("ca.pem"), pki.ca.pem()).unwrap();
        pki.server_cert("ponte server 1", 1);
        pki.client_cert("client", "alice");
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
    }

    /// (Re)write server.pem / server.key: a leaf for 127.0.0.1 and localhost.
    fn server_cert(&self, cn: &str, serial: u64) {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.serial_number = Some(SerialNumber::from(serial));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        std::fs::write(self.path("server.pem"), cert.pem()).unwrap();
        std::fs::write(self.path("server.key"), key.serialize_pem()).unwrap();
    }

    /// Write `<name>.pem` / `<name>.key`: a client certificate with subject CN `cn`.
    fn client_cert(&self, name: &str, cn: &str) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        std::fs::write(self.path(&format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(self.path(&format!("{name}.key")), key.serialize_pem()).unwrap();
    }

    /// `[tls]` for these files, client certificates verified against the CA when offered.
    fn configure(&self, c: &mut ponte::config::Config) {
        c.tls.cert_file = Some(self.path("server.pem"));
        c.tls.key_file = Some(self.path("server.key"));
        c.tls.client_ca_file = Some(self.path("ca.pem"));
        c.http.tls_port = Some(0);
        c.mqtt.wss_port = Some(0);
    }

    /// rumqttc's TLS settings: trust the CA, with the client certificate `name` if given.
    fn rumqttc_tls(&self, client: Option<&str>) -> TlsConfiguration {
        TlsConfiguration::Simple {
            ca: self.read("ca.pem"),
            alpn: None,
            client_auth: client.map(|n| {
                (
                    self.read(&format!("{n}.pem")),
                    self.read(&format!("{n}.key")),
                )
            }),
        }
    }

    /// A connected MQTT over TLS client `id` of `addr`, with the client certificate `client`
    /// if given.
    async fn mqtts(&self, addr: SocketAddr, id: &str, client: Option<&str>) -> Client {
        connect(tls_options(addr, id, self.rumqttc_tls(client))).await
    }

    /// Options for an MQTT over WebSocket client `id` of `wss://127.0.0.1:{port}/mqtt`.
    fn wss(&self, port: u16, id: &str, client: Option<&str>) -> MqttOptions {
        let url = format!("wss://127.0.0.1:{port}/mqtt");
        wss_options(url, id, self.rumqttc_tls(client))
    }

    /// An HTTPS client trusting the CA.
    fn https(&self) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(&self.read("ca.pem")).unwrap();
        reqwest::Client::builder()
            .add_root_certificate(ca)
            .build()
            .unwrap()
    }

    /// A rustls client configuration trusting the CA (ring, like the server).
    fn rustls_client(&self, client: Option<&str>) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(self.path("ca.pem")).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let b = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        Arc::new(match client {
            None => b.with_no_client_auth(),
            Some(n) => {
                let chain = CertificateDer::pem_file_iter(self.path(&format!("{n}.pem")))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect();
                let key = PrivateKeyDer::from_pem_file(self.path(&format!("{n}.key"))).unwrap();
                b.with_client_auth_cert(chain, key).unwrap()
            }
        })
    }
}

async fn tls_gateway(pki: &Pki, f: impl FnOnce(&mut ponte::config::Config)) -> ponte::Gateway {
    gateway_with(|c| {
        pki.configure(c);
        f(c)
    })
    .await
}

/// A raw TLS connection to `addr` as 127.0.0.1 (handshake done).
async fn raw_tls(
    pki: &Pki,
    addr: SocketAddr,
    client: Option<&str>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(pki.rustls_client(client));
    let name = ServerName::try_from("127.0.0.1").unwrap();
    within(WAIT, "TLS handshake", connector.connect(name, tcp)).await
}

/// CN and serial number of the certificate the server at `addr` presents now.
async fn presented(pki: &Pki, addr: SocketAddr) -> (String, Vec<u8>) {
    let s = raw_tls(pki, addr, None).await.expect("TLS handshake");
    let der = s.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned();
    (cn, cert.raw_serial().to_vec())
}

// ---------------------------------------------------------------------------------------
// MQTT clients
// ---------------------------------------------------------------------------------------

/// 3.1.1 CONNECT with clean session, keepalive 60 and client id `id`.
fn connect_packet(id: &str) -> Vec<u8> {
    connect_v311(true, 60, id)
}

/// Options for an MQTT over TLS client of `addr` trusting the test CA.
fn tls_options(addr: SocketAddr, id: &str, tls: TlsConfiguration) -> MqttOptions {
    let mut o = options(addr, id);
    o.set_transport(Transport::tls_with_config(tls));
    o
}

/// Options for an MQTT over secure WebSocket client of `url`.
fn wss_options(url: String, id: &str, tls: TlsConfiguration) -> MqttOptions {
    let mut o = MqttOptions::new(id, url, 0);
    o.set_keep_alive(Duration::from_secs(5));
    o.set_transport(Transport::wss_with_config(tls));
    o
}

/// Connect with `opts` and return the connected client.
async fn connect(opts: MqttOptions) -> Client {
    let connected = Client::try_connect(opts).await;
    let (c, _) = connected.unwrap_or_else(|e| panic!("MQTT connection over TLS failed: {e:?}"));
    c
}

/// Connect with `opts`: the client, or the connection error (as text).
async fn try_connect(opts: MqttOptions) -> Result<Client, String> {
    let connected = Client::try_connect(opts).await;
    connected.map(|(c, _)| c).map_err(|e| format!("{e:?}"))
}

/// `publ` publishes `payload` to `topic` (QoS 1), and `sub` receives it.
async fn relay(publ: &mut Client, sub: &mut Client, topic: &str, payload: &[u8]) {
    publ.publish_each(&[(topic, payload)]).await;
    let p = sub.publish_rx().await;
    assert_eq!((p.topic.as_str(), &p.payload[..]), (topic, payload));
}

/// A PKI and a gateway with `[tls]` for it, configured further by `f`.
async fn pki_gateway(f: impl FnOnce(&mut ponte::config::Config)) -> (Pki, ponte::Gateway) {
    let pki = Pki::new();
    let gw = tls_gateway(&pki, f).await;
    (pki, gw)
}

// ---------------------------------------------------------------------------------------
// MQTT over TLS, HTTPS, WSS
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn mqtts_publish_subscribe_with_rumqttc_and_plain_tcp_sees_it_too() {
    let (pki, gw) = pki_gateway(|_| {}).await;
    let mqtts = gw.mqtts_addr.expect("mqtts listens once [tls] is set");
    assert_ne!(mqtts, gw.mqtt_addr);
    let mut sub = pki.mqtts(mqtts, "tls-sub", None).await;
    sub.subscribe("tls/#", QoS::AtLeastOnce).await;
    let mut plain = Client::subscriber(gw.mqtt_addr, "plain-sub", "tls/#").await;
    let mut publ = pki.mqtts(mqtts, "tls-pub", None).await;
    relay(&mut publ, &mut sub, "tls/a", b"over-tls").await;
    assert_eq!(&plain.publish_rx().await.payload[..], b"over-tls");
    gw.shutdown().await;
}

#[tokio::test]
async fn https_put_then_get_and_an_mqtts_subscriber_gets_the_put() {
    let (pki, gw) = pki_gateway(|_| {}).await;
    let https = gw
        .https_addr
        .expect("HTTPS listens when http.tls_port is set");
    let mut sub = pki.mqtts(gw.mqtts_addr.unwrap(), "x-sub", None).await;
    sub.subscribe("x/+", QoS::AtLeastOnce).await;
    let http = pki.https();
    let url = format!("https://127.0.0.1:{}/resources/x/t", https.port());
    let put = http.put(&url).header("content-type", "text/plain");
    let r = put.body("from-https").send().await.unwrap();
    assert_eq!(r.status(), 201);
    let p = sub.publish_rx().await;
    let got = (p.topic.as_str(), &p.payload[..]);
    assert_eq!(got, ("x/t", &b"from-https"[..]));
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "from-https");
    // The plain HTTP port is still plain HTTP, with the same value.
    assert_eq!(http_text(&gw, "x/t").await, "from-https");
    gw.shutdown().await;
}

#[tokio::test]
async fn wss_on_its_own_port_and_at_https_mqtt_share_the_broker() {
    let (pki, gw) = pki_gateway(|_| {}).await;
    let wss = gw.wss_addr.expect("WSS listens when mqtt.wss_port is set");
    let https = gw.https_addr.unwrap();
    let mut sub = connect(pki.wss(https.port(), "wss-sub", None)).await;
    sub.subscribe("w/#", QoS::AtLeastOnce).await;
    let mut publ = connect(pki.wss(wss.port(), "wss-pub", None)).await;
    relay(&mut publ, &mut sub, "w/1", b"over-wss").await;
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Client certificates
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn require_client_cert_refuses_a_handshake_without_one_and_accepts_one_with_it() {
    let (pki, gw) = pki_gateway(|c| c.tls.require_client_cert = true).await;
    let mqtts = gw.mqtts_addr.unwrap();
    // Under TLS 1.3 the client finishes its side first; the server's refusal (an alert)
    // comes with the first read. Either way no CONNACK ever comes back.
    match raw_tls(&pki, mqtts, None).await {
        Err(_) => {}
        Ok(mut s) => {
            let _ = s.write_all(&connect_packet("no-cert")).await;
            let mut buf = [0u8; 4];
            let r = within(WAIT, "the refusal", s.read(&mut buf)).await;
            assert!(
                !matches!(r, Ok(n) if n > 0),
                "a client without a certificate got MQTT bytes back: {:?}",
                &buf
            );
        }
    }
    let refused = try_connect(tls_options(mqtts, "no-cert", pki.rumqttc_tls(None))).await;
    assert!(refused.is_err(), "rumqttc without a certificate connected");
    let mut ok = pki.mqtts(mqtts, "with-cert", Some("client")).await;
    ok.subscribe("c/#", QoS::AtLeastOnce).await;
    // A certificate from another CA is refused too.
    let other = Pki::new();
    std::fs::copy(other.path("client.pem"), pki.path("stranger.pem")).unwrap();
    std::fs::copy(other.path("client.key"), pki.path("stranger.key")).unwrap();
    let stranger = tls_options(mqtts, "stranger", pki.rumqttc_tls(Some("stranger")));
    let stranger = try_connect(stranger).await;
    let why = "a certificate of another CA was accepted";
    assert!(stranger.is_err(), "{why}");
    gw.shutdown().await;
}

#[tokio::test]
async fn use_identity_as_username_makes_the_cert_cn_the_username_and_refuses_clients_without() {
    let (pki, gw) = pki_gateway(|c| c.tls.use_identity_as_username = true).await;
    let mqtts = gw.mqtts_addr.unwrap();
    // CONNECT claims "mallory"; the certificate says "alice".
    let mut o = tls_options(mqtts, "cn-client", pki.rumqttc_tls(Some("client")));
    o.set_credentials("mallory", "pw");
    let _alice = connect(o).await;
    // Over WSS the same: the identity travels from the TLS connection through the upgrade.
    pki.client_cert("bob", "bob");
    let mut o = pki.wss(gw.wss_addr.unwrap().port(), "cn-wss", Some("bob"));
    o.set_credentials("mallory", "pw");
    let _bob = connect(o).await;
    // A plain TCP client keeps its own username: the option is about TLS identities.
    let _carol = connect(login(gw.mqtt_addr, "plain", "carol", "pw")).await;
    let mut clients = gw.mqtt_clients();
    clients.sort_by(|a, b| a.client_id.cmp(&b.client_id));
    let seen: Vec<_> = clients
        .iter()
        .map(|c| {
            (
                c.client_id.as_str(),
                c.username.as_deref(),
                c.tls_identity.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("cn-client", Some("alice"), Some("alice")),
            ("cn-wss", Some("bob"), Some("bob")),
            ("plain", Some("carol"), None),
        ]
    );

    // Without a certificate (allowed by the handshake: require_client_cert is off), the
    // CONNECT is refused: 3.1.1 CONNACK 0x05 ...
    let refused = try_connect(tls_options(mqtts, "anon", pki.rumqttc_tls(None))).await;
    let e = refused.err();
    let e = e.expect("a client without certificate was accepted");
    let code = format!("{:?}", ConnectReturnCode::NotAuthorized);
    let why = format!("expected CONNACK 0x05 (not authorized), got {e}");
    assert!(e.contains(&code), "{why}");
    // ... and v5 CONNACK 0x87.
    let mut s = raw_tls(&pki, mqtts, None).await.unwrap();
    let v5 = [
        0x10, 0x0E, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3C, 0x00, 0x00, 0x01,
        b'x',
    ];
    s.write_all(&v5).await.unwrap();
    let mut buf = Vec::new();
    let _ = within(WAIT, "v5 CONNACK and close", s.read_to_end(&mut buf)).await;
    assert!(
        buf.len() >= 4 && buf[0] == 0x20 && buf[2..4] == [0x00, 0x87],
        "v5 CONNACK 0x87 (Not authorized), then close: {buf:?}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn use_identity_as_username_skips_the_password_and_the_acl_applies_to_the_cn() {
    let pki = Pki::new();
    let hash = ponte::auth::password::hash_password("carol-pw").unwrap();
    std::fs::write(pki.path("passwd"), format!("carol:{hash}\n")).unwrap();
    std::fs::write(pki.path("acl"), "user alice\ntopic readwrite alice/#\n").unwrap();
    let gw = tls_gateway(&pki, |c| {
        c.tls.use_identity_as_username = true;
        c.auth.password_file = Some(pki.path("passwd"));
        c.auth.acl_file = Some(pki.path("acl"));
    })
    .await;
    // The certificate says "alice", who is not in the password file: the CN is proof enough
    // (as in mosquitto), whatever CONNECT claims.
    let mut o = tls_options(
        gw.mqtts_addr.unwrap(),
        "cn-acl",
        pki.rumqttc_tls(Some("client")),
    );
    o.set_credentials("mallory", "not-checked");
    let mut alice = connect(o).await;
    alice
        .publish_each(&[("alice/t", b"mine"), ("carol/t", b"not mine")])
        .await;
    let get = |t: &str| retained(&gw, t).is_some();
    alice
        .client
        .publish("alice/r", QoS::AtLeastOnce, true, "kept")
        .await
        .unwrap();
    alice
        .client
        .publish("carol/r", QoS::AtLeastOnce, true, "dropped")
        .await
        .unwrap();
    let two_pubacks = |p: &Packet| matches!(p, Packet::PubAck(a) if a.pkid >= 4);
    alice.expect_kind("two PUBACKs", two_pubacks).await;
    assert!(get("alice/r"), "the ACL grants alice/# to the CN");
    assert!(!get("carol/r"), "and nothing else");
    // Over plain TCP the password is checked as usual.
    let plain = login(gw.mqtt_addr, "plain", "alice", "anything");
    let refused = try_connect(plain).await.err().expect("refused");
    let code = format!("{:?}", ConnectReturnCode::BadUserNamePassword);
    assert!(refused.contains(&code), "{refused}");
    gw.shutdown().await;
}

#[tokio::test]
async fn https_requests_carry_the_verified_client_cn_as_tls_identity() {
    use axum::Extension;
    use ponte::tls::{TlsIdentity, TlsPeer};
    let pki = Pki::new();
    let mut c = ponte::config::Config::ephemeral();
    pki.configure(&mut c);
    let tls = ponte::tls::Tls::load(&c.tls).unwrap().unwrap();
    // A handler the way the lead's HTTP auth will read it.
    async fn who(id: Option<Extension<TlsIdentity>>, peer: Extension<TlsPeer>) -> String {
        format!(
            "{} {}",
            id.map(|i| i.0 .0).unwrap_or_else(|| "-".into()),
            peer.0.identity.is_some()
        )
    }
    let router = axum::Router::new().route("/who", axum::routing::get(who));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let controller = ponte::shutdown::ShutdownController::new();
    let server = tokio::spawn(ponte::tls::serve_http(
        listener,
        router,
        Some(tls),
        ponte::tls::HttpGuard {
            gate: ponte::limits::ConnectionGate::new(
                &ponte::limits::LimitsConfig::default(),
                std::time::Instant::now(),
            ),
            header_timeout: std::time::Duration::from_secs(10),
            body_deadline: ponte::config::HttpConfig::default().body_deadline(),
            slots: None,
            metrics: None,
        },
        controller.subscribe(),
        "test",
    ));
    let ca = reqwest::Certificate::from_pem(&pki.read("ca.pem")).unwrap();
    let mut identity = pki.read("client.pem");
    identity.extend(pki.read("client.key"));
    let with_cert = reqwest::Client::builder()
        .add_root_certificate(ca)
        .identity(reqwest::Identity::from_pem(&identity).unwrap())
        .build()
        .unwrap();
    let without = pki.https();
    let url = format!("https://127.0.0.1:{}/who", addr.port());
    for (client, says) in [(with_cert, "alice true"), (without, "- false")] {
        let body = send("GET /who", client.get(&url)).await.text().await;
        assert_eq!(body.unwrap(), says);
    }
    within(WAIT, "shutdown", controller.shutdown()).await;
    server.await.unwrap();
}

#[tokio::test]
async fn issue_16_https_beyond_http_max_connections_is_answered_503_over_tls() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = Pki::new();
    // HTTP and HTTPS share the cap.
    let gw = tls_gateway(&pki, |c| c.http.max_connections = 1).await;
    let https = gw.https_addr.unwrap();
    let _held = TcpStream::connect(gw.http_addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut s = raw_tls(&pki, https, None)
        .await
        .expect("the handshake is done");
    s.write_all(b"GET /resources/x HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = within(WAIT, "503 over TLS", s.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("max_connections"), "{answer}");
    assert!(gw.refused().connections_of("https") >= 1);
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Reload
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn reload_new_connections_get_the_new_certificate_old_ones_keep_working() {
    let (pki, gw) = pki_gateway(|_| {}).await;
    let mqtts = gw.mqtts_addr.unwrap();
    let https = gw.https_addr.unwrap();
    let mut old = pki.mqtts(mqtts, "old", None).await;
    old.subscribe("r/#", QoS::AtLeastOnce).await;
    assert_eq!(
        presented(&pki, mqtts).await,
        ("ponte server 1".into(), vec![1])
    );

    pki.server_cert("ponte server 2", 2);
    gw.reload().expect("reload with good files");
    for addr in [mqtts, https, gw.wss_addr.unwrap()] {
        assert_eq!(
            presented(&pki, addr).await,
            ("ponte server 2".into(), vec![2]),
            "a new connection to {addr} sees the new certificate"
        );
    }
    // The connection made before the reload goes on.
    let mut publ = pki.mqtts(mqtts, "new", None).await;
    relay(&mut publ, &mut old, "r/1", b"after-reload").await;

    // A broken file is reported, naming it, and the certificate in force stays.
    std::fs::write(pki.path("server.pem"), "not a certificate").unwrap();
    let e = gw
        .reload()
        .expect_err("a broken certificate file is refused");
    let msg = e.to_string();
    assert!(
        msg.contains("server.pem") && msg.contains("no certificate"),
        "{msg}"
    );
    assert_eq!(presented(&pki, mqtts).await.1, vec![2]);
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Robustness: plaintext on the TLS port, handshake timeout, limits, shutdown
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_plaintext_client_on_the_tls_port_is_closed_without_hurting_others() {
    let (pki, gw) = pki_gateway(|_| {}).await;
    let mqtts = gw.mqtts_addr.unwrap();
    let mut sub = pki.mqtts(mqtts, "bystander", None).await;
    sub.subscribe("p/#", QoS::AtLeastOnce).await;
    let mut plain = TcpStream::connect(mqtts).await.unwrap();
    plain.write_all(&connect_packet("plain")).await.unwrap();
    let got = read_to_close(&mut plain, WAIT, "the plaintext client to be closed").await;
    // At most a TLS alert (content type 21), never an MQTT CONNACK (0x20).
    assert!(
        got.is_empty() || got[0] == 21,
        "plaintext client got {got:?}"
    );
    let mut publ = pki.mqtts(mqtts, "after", None).await;
    relay(&mut publ, &mut sub, "p/1", b"still-fine").await;
    gw.shutdown().await;
}

#[tokio::test]
async fn handshake_timeout_closes_an_idle_tcp_connection_and_frees_its_slot() {
    let (pki, gw) = pki_gateway(|c| {
        c.tls.handshake_timeout_secs = 1;
        c.mqtt.max_connections = 1;
    })
    .await;
    let mqtts = gw.mqtts_addr.unwrap();
    let start = Instant::now();
    let mut idle = TcpStream::connect(mqtts).await.unwrap();
    // While it idles it holds the only slot: a TLS client is turned away.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let turned_away = try_connect(tls_options(mqtts, "too-many", pki.rumqttc_tls(None))).await;
    assert!(
        turned_away.is_err(),
        "max_connections counts TLS handshakes"
    );
    assert!(
        closed_within(&mut idle, Duration::from_secs(4)).await,
        "an idle TCP connection was not closed by the handshake timeout"
    );
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "closed after {waited:?}"
    );
    // The slot is free again; the HTTPS port has the same timeout.
    let _ok = pki.mqtts(mqtts, "fits", None).await;
    let mut idle = TcpStream::connect(gw.https_addr.unwrap()).await.unwrap();
    assert!(closed_within(&mut idle, Duration::from_secs(4)).await);
    gw.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_tls_connections_like_plain_ones() {
    let (pki, gw) = pki_gateway(|_| {}).await;
    let mut mqtts = pki.mqtts(gw.mqtts_addr.unwrap(), "s1", None).await;
    let mut wss = connect(pki.wss(gw.https_addr.unwrap().port(), "s2", None)).await;
    // A handshake in progress does not hold shutdown up either.
    let _half = TcpStream::connect(gw.mqtts_addr.unwrap()).await.unwrap();
    let started = Instant::now();
    within(Duration::from_secs(5), "shutdown", gw.shutdown()).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(mqtts.closed_within(WAIT).await, "mqtts client not closed");
    assert!(wss.closed_within(WAIT).await, "wss client not closed");
}

// ---------------------------------------------------------------------------------------
// Start-up errors
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn bad_certificate_or_key_files_are_start_errors_naming_the_file() {
    let pki = Pki::new();
    let start = |f: &dyn Fn(&mut ponte::config::Config)| {
        let mut c = ponte::config::Config::ephemeral();
        pki.configure(&mut c);
        f(&mut c);
        ponte::start(c)
    };
    let err = |r: Result<ponte::Gateway, ponte::Error>| match r {
        Ok(_) => panic!("started with bad TLS files"),
        Err(e) => {
            assert!(matches!(e, ponte::Error::Tls(_)), "{e}");
            e.to_string()
        }
    };
    let missing = pki.path("nope.pem");
    let e = err(start(&|c| c.tls.cert_file = Some(missing.clone())).await);
    assert!(e.contains("nope.pem") && e.contains("cannot read"), "{e}");

    std::fs::write(pki.path("garbage.key"), "hello").unwrap();
    let e = err(start(&|c| c.tls.key_file = Some(pki.path("garbage.key"))).await);
    assert!(
        e.contains("garbage.key") && e.contains("no private key"),
        "{e}"
    );

    // The client's key with the server's certificate.
    let e = err(start(&|c| c.tls.key_file = Some(pki.path("client.key"))).await);
    assert!(
        e.contains("server.pem") && e.contains("client.key") && e.contains("together"),
        "{e}"
    );

    // Settings that do not fit together, and the setting each error names.
    type Tweak = fn(&mut ponte::config::Config);
    let cases: [(Tweak, &str); 4] = [
        (|c| c.tls.key_file = None, "key_file"),
        (
            |c| (c.tls.client_ca_file, c.tls.use_identity_as_username) = (None, true),
            "client_ca_file",
        ),
        (
            |c| {
                (c.tls.cert_file, c.tls.key_file) = (None, None);
                (c.tls.client_ca_file, c.mqtt.wss_port) = (None, None);
            },
            "http.tls_port",
        ),
        (
            |c| (c.tls.cert_file, c.tls.key_file) = (None, None),
            "tls.client_ca_file",
        ),
    ];
    for (tweak, names) in cases {
        let e = err(start(&tweak).await);
        assert!(e.contains(names), "{e}");
    }
}

// ---------------------------------------------------------------------------------------
// The binary: SIGHUP and exit code 2
// ---------------------------------------------------------------------------------------

/// `--mqtts-port` with the server certificate and `key` (a file of `pki`).
fn mqtts_args(pki: &Pki, port: &str, key: &str) -> Vec<std::ffi::OsString> {
    let mut a: Vec<std::ffi::OsString> =
        vec!["--memory".into(), "--mqtts-port".into(), port.into()];
    a.extend(["--cert".into(), pki.path("server.pem").into()]);
    a.extend(["--key".into(), pki.path(key).into()]);
    a
}

#[tokio::test]
async fn binary_unusable_key_file_exits_2_naming_it() {
    let pki = Pki::new();
    std::fs::write(pki.path("bad.key"), "-----BEGIN PRIVATE KEY-----\n!!\n").unwrap();
    let mut args: Vec<std::ffi::OsString> = ANY_PORT.map(Into::into).to_vec();
    args.extend(mqtts_args(&pki, "0", "bad.key"));
    let out = run_ponte(&args, WAIT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("bad.key"), "stderr: {stderr}");
}

#[cfg(unix)]
#[tokio::test]
async fn binary_sighup_reloads_the_certificate() {
    let pki = Pki::new();
    let args = mqtts_args(&pki, "0", "server.key");
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let mut ponte = Ponte::start(&args);
    let addr = ponte.mqtts.expect("ponte listens for MQTT over TLS");
    assert_eq!(presented(&pki, addr).await.1, vec![1]);
    pki.server_cert("ponte server 2", 2);
    ponte.signal("-HUP");
    let seen = within(WAIT, "the new certificate after SIGHUP", async {
        loop {
            let (cn, serial) = presented(&pki, addr).await;
            if serial == vec![2] {
                break cn;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(seen, "ponte server 2");
    let running = ponte.child.try_wait().unwrap().is_none();
    assert!(running, "SIGHUP must not stop ponte");
    ponte.signal("-TERM");
    let status = wait_exit(&mut ponte.child, Duration::from_secs(15));
    assert!(status.success(), "{status:?}");
}

// ---------------------------------------------------------------------------------------
// mosquitto clients
// ---------------------------------------------------------------------------------------

/// `program` to 127.0.0.1:`port` trusting the test CA, with the client certificate `client`
/// when given.
fn mosquitto(program: &str, pki: &Pki, port: u16, client: Option<&str>) -> Cmd {
    let cmd = Cmd::new(program).words(&format!("-h 127.0.0.1 -p {port}"));
    let cmd = cmd.arg("--cafile").arg(pki.path("ca.pem"));
    match client {
        None => cmd,
        Some(n) => cmd
            .arg("--cert")
            .arg(pki.path(&format!("{n}.pem")))
            .arg("--key")
            .arg(pki.path(&format!("{n}.key"))),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_sub_and_pub_over_tls_with_cafile_and_client_certificates() {
    if !have("mosquitto_sub") || !have("mosquitto_pub") {
        return;
    }
    let pki = Pki::new();
    let gw = tls_gateway(&pki, |c| c.tls.require_client_cert = true).await;
    let port = gw.mqtts_addr.unwrap().port();
    let before = gw.broker.subscription_count();
    let sub = mosquitto("mosquitto_sub", &pki, port, Some("client"));
    let sub = sub.words("-t m/# -C 1 -W 8 -F").arg("%t %p").spawn();
    subscribed(&gw, before).await;
    let publ = mosquitto("mosquitto_pub", &pki, port, Some("client"));
    let o = publ.words("-t m/1 -m from-mosquitto -q 1").run().await;
    assert_eq!(o.code, Some(0), "mosquitto_pub: {}", o.all());
    let o = sub.finish().await;
    assert_eq!(o.code, Some(0), "mosquitto_sub: {}", o.all());
    assert_eq!(o.all().trim(), "m/1 from-mosquitto");

    // Without a client certificate the required handshake fails: mosquitto_pub errors out.
    let publ = mosquitto("mosquitto_pub", &pki, port, None);
    let o = publ.words("-t m/1 -m x").run().await;
    assert_ne!(
        o.code,
        Some(0),
        "mosquitto_pub without a certificate: {}",
        o.all()
    );
    tokio::time::sleep(QUIET).await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_5_https_enforces_the_same_auth_as_http() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    // mosquitto_passwd -H sha512: bob / hunter2.
    std::fs::write(
        &passwd,
        "bob:$6$6aBdJb9oMc4ZDzPZ$WMlL6mKN1Uto1uoJcoSIcWtnmfqMB0y1Iroon0nimkaEuGsYiQ9JsMFhRMNgQwqWQ1e8T06F1p7LLkdzs/6RVQ==\n",
    )
    .unwrap();
    let gw = tls_gateway(&pki, |c| c.auth.password_file = Some(passwd.clone())).await;
    let https = gw.https_addr.expect("HTTPS listens");
    let http = pki.https();
    let url = format!("https://127.0.0.1:{}/resources/s/t", https.port());
    let r = http.put(&url).body("anon").send().await.unwrap();
    assert_eq!(r.status(), 401, "anonymous is off with a password file");
    assert!(r.headers().contains_key("www-authenticate"));
    for (password, body, status) in [("wrong", "x", 401), ("hunter2", "bob's", 201)] {
        let put = http.put(&url).basic_auth("bob", Some(password));
        let r = put.body(body).send().await.unwrap();
        assert_eq!(r.status(), status);
    }
    gw.shutdown().await;
}

/// `[limits] max_connections_per_ip` on the TLS listeners (the same gate as plain MQTT and
/// HTTP, one per listener): with 2 allowed, a third connection from 127.0.0.1 to the MQTT
/// over TLS port, the HTTPS port or the WSS port is closed before its handshake completes,
/// counted per listener, while the admitted ones keep working.
#[tokio::test]
async fn max_connections_per_ip_applies_to_mqtts_https_and_wss() {
    let pki = Pki::new();
    let gw = tls_gateway(&pki, |c| c.limits.max_connections_per_ip = 2).await;
    let listeners = [
        ("mqtts", gw.mqtts_addr.expect("mqtts")),
        ("https", gw.https_addr.expect("https")),
        ("mqtt-wss", gw.wss_addr.expect("wss")),
    ];
    for (name, addr) in listeners {
        let mut a = raw_tls(&pki, addr, None).await.expect("first admitted");
        let _b = raw_tls(&pki, addr, None).await.expect("second admitted");
        let third = raw_tls(&pki, addr, None).await;
        assert!(
            third.is_err(),
            "{name}: the third connection from 127.0.0.1 must not get a TLS session"
        );
        assert_eq!(
            gw.refused().connections_of(name),
            1,
            "{name}: one refusal counted"
        );
        if name == "mqtts" {
            // An admitted connection still speaks MQTT: CONNECT → CONNACK.
            a.write_all(&connect_packet("limit-a"))
                .await
                .expect("CONNECT");
            let mut connack = [0u8; 4];
            within(WAIT, "CONNACK", a.read_exact(&mut connack))
                .await
                .expect("CONNACK");
            assert_eq!(connack, [0x20, 2, 0, 0]);
        }
    }
    gw.shutdown().await;
}
