//! MQTT authentication and authorisation (issue 5), black-box over real sockets: rumqttc's
//! 3.1.1 and 5.0 clients, a raw MQTT 5 socket (ponte-mqtt's codec, to read Reason Strings),
//! rumqttc over WebSocket, `mosquitto_pub`/`mosquitto_sub` (skipped when missing, except in CI)
//! and the `ponte passwd` binary. Each test starts a gateway with a password file and an ACL
//! in a temporary directory; ACL reloads rewrite the file and call `Gateway::reload`.
//!
//! Test names carry the MQTT clause or the issue's wording they check.

mod common;
mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ponte::model::TopicName;
use ponte::Gateway;
use ponte_mqtt::{
    encode, encode_v5, Connect, Connect5, LastWill, Packet, Packet5, Properties, ProtocolVersion,
    Publish, Publish5, SubscriptionOptions,
};
use rumqttc::{ConnectReturnCode, ConnectionError, Event, MqttOptions, QoS, SubscribeReasonCode};
use support::{have, within, QUIET, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// The ACL every test starts from (users: alice, bob, admin; anonymous reads `public/#`).
const ACL: &str = "\
topic read public/#
user alice
topic readwrite alice/#
topic deny alice/secret
topic read $SYS/#
user bob
topic readwrite bob/#
topic read alice/shared/#
topic read $SYS/broker/clients/#
user admin
topic readwrite #
pattern readwrite devices/%u/%c/#
";

/// A gateway with a password file and an ACL in a temporary directory.
struct Secured {
    gw: Gateway,
    dir: tempfile::TempDir,
}

impl Secured {
    /// alice/alice-pw, bob/bob-pw, admin/admin-pw (argon2id), [`ACL`], anonymous off.
    async fn start() -> Secured {
        Secured::with(|_| {}).await
    }

    /// [`Secured::start`] with the configuration adjusted by `f`.
    async fn with(f: impl FnOnce(&mut ponte::config::Config)) -> Secured {
        let dir = tempfile::tempdir().unwrap();
        let mut passwd = String::new();
        for user in ["alice", "bob", "admin"] {
            let hash = ponte::auth::password::hash_password(&format!("{user}-pw")).unwrap();
            passwd.push_str(&format!("{user}:{hash}\n"));
        }
        Secured::from_files(dir, &passwd, ACL, f).await
    }

    /// A gateway over a password file and an ACL with this text.
    async fn from_files(
        dir: tempfile::TempDir,
        passwd: &str,
        acl: &str,
        f: impl FnOnce(&mut ponte::config::Config),
    ) -> Secured {
        let p = dir.path().join("passwd");
        if !p.exists() {
            std::fs::write(&p, passwd).unwrap();
        }
        std::fs::write(dir.path().join("acl"), acl).unwrap();
        let gw = support::gateway_with(|c| {
            c.auth.password_file = Some(p);
            c.auth.acl_file = Some(dir.path().join("acl"));
            f(c);
        })
        .await;
        Secured { gw, dir }
    }

    fn addr(&self) -> SocketAddr {
        self.gw.mqtt_addr
    }

    /// Rewrite the ACL and reload it, as SIGHUP does.
    fn reload_acl(&self, text: &str) {
        std::fs::write(self.dir.path().join("acl"), text).unwrap();
        self.gw.reload().expect("the ACL reloads");
    }

    /// The retained value of `topic`, if any.
    fn retained(&self, topic: &str) -> Option<Bytes> {
        self.gw
            .broker
            .get(&TopicName::parse(topic).unwrap())
            .map(|v| v.payload.clone())
    }

    /// ACL refusals counted so far.
    fn acl_denied(&self) -> u64 {
        self.gw
            .auth
            .metrics
            .acl_denied
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

fn pw(user: &str) -> String {
    format!("{user}-pw")
}

// ---------------------------------------------------------------------------------------
// rumqttc 3.1.1
// ---------------------------------------------------------------------------------------

/// A connected rumqttc 3.1.1 client; every incoming packet lands in `rx`.
struct V3 {
    client: rumqttc::AsyncClient,
    rx: mpsc::UnboundedReceiver<rumqttc::Packet>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for V3 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn v3_options(addr: SocketAddr, id: &str, creds: Option<(&str, &str)>) -> MqttOptions {
    let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(5));
    if let Some((u, p)) = creds {
        o.set_credentials(u, p);
    }
    o
}

/// Connect; `Err` is the CONNACK refusal code.
async fn v3_with(o: MqttOptions) -> Result<V3, ConnectReturnCode> {
    let (client, mut el) = rumqttc::AsyncClient::new(o, 64);
    within(WAIT, "3.1.1 CONNACK", async {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(rumqttc::Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(ConnectionError::ConnectionRefused(code)) => return Err(code),
                Err(e) => panic!("3.1.1 connection failed: {e}"),
            }
        }
    })
    .await?;
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Ok(ev) = el.poll().await {
            if let Event::Incoming(p) = ev {
                let _ = tx.send(p);
            }
        }
    });
    Ok(V3 { client, rx, task })
}

async fn v3(
    addr: SocketAddr,
    id: &str,
    creds: Option<(&str, &str)>,
) -> Result<V3, ConnectReturnCode> {
    v3_with(v3_options(addr, id, creds)).await
}

/// A 3.1.1 client logged in as `user` (password `user-pw`).
async fn login3(s: &Secured, user: &str, id: &str) -> V3 {
    v3(s.addr(), id, Some((user, &pw(user))))
        .await
        .unwrap_or_else(|code| panic!("{user} refused: {code:?}"))
}

impl V3 {
    /// The next incoming packet matching `f`.
    async fn wait<T>(&mut self, what: &str, f: impl Fn(rumqttc::Packet) -> Option<T>) -> T {
        within(WAIT, what, async {
            loop {
                match self.rx.recv().await {
                    Some(p) => {
                        if let Some(t) = f(p) {
                            return t;
                        }
                    }
                    None => panic!("connection lost waiting for {what}"),
                }
            }
        })
        .await
    }

    async fn subscribe(&mut self, filters: &[&str]) -> Vec<SubscribeReasonCode> {
        self.client
            .subscribe_many(
                filters
                    .iter()
                    .map(|f| rumqttc::SubscribeFilter::new(f.to_string(), QoS::AtLeastOnce)),
            )
            .await
            .unwrap();
        self.wait("SUBACK", |p| match p {
            rumqttc::Packet::SubAck(a) => Some(a.return_codes),
            _ => None,
        })
        .await
    }

    /// Publish and wait for the end of the exchange (PUBACK / PUBCOMP; QoS 0: nothing).
    async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: &str) {
        self.client
            .publish(topic, qos, retain, payload.as_bytes().to_vec())
            .await
            .unwrap();
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                self.wait("PUBACK", |p| {
                    matches!(p, rumqttc::Packet::PubAck(_)).then_some(())
                })
                .await
            }
            QoS::ExactlyOnce => {
                self.wait("PUBCOMP", |p| {
                    matches!(p, rumqttc::Packet::PubComp(_)).then_some(())
                })
                .await
            }
        }
    }

    async fn next_publish(&mut self) -> rumqttc::Publish {
        self.wait("PUBLISH", |p| match p {
            rumqttc::Packet::Publish(p) => Some(p),
            _ => None,
        })
        .await
    }

    /// Every PUBLISH received until nothing came for `quiet`.
    async fn drain(&mut self, quiet: Duration) -> Vec<(String, Bytes)> {
        let mut out = Vec::new();
        while let Ok(Some(p)) = tokio::time::timeout(quiet, self.rx.recv()).await {
            if let rumqttc::Packet::Publish(p) = p {
                out.push((p.topic, p.payload));
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------
// rumqttc 5.0
// ---------------------------------------------------------------------------------------

use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode as Code5, PubAckReason};
use rumqttc::v5::mqttbytes::QoS as QoS5;
use rumqttc::v5::{ConnectionError as ConnErr5, Event as Event5, StateError};

/// A connected rumqttc 5.0 client; incoming packets and state errors land in `rx`.
struct R5 {
    client: rumqttc::v5::AsyncClient,
    rx: mpsc::UnboundedReceiver<Result<rumqttc::v5::Incoming, String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for R5 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn r5(addr: SocketAddr, id: &str, creds: Option<(&str, &str)>) -> Result<R5, Code5> {
    let mut o = rumqttc::v5::MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(5));
    if let Some((u, p)) = creds {
        o.set_credentials(u, p);
    }
    let (client, mut el) = rumqttc::v5::AsyncClient::new(o, 64);
    within(WAIT, "5.0 CONNACK", async {
        loop {
            match el.poll().await {
                Ok(Event5::Incoming(rumqttc::v5::Incoming::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(ConnErr5::ConnectionRefused(code)) => return Err(code),
                Err(e) => panic!("5.0 connection failed: {e}"),
            }
        }
    })
    .await?;
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(Event5::Incoming(p)) => {
                    let _ = tx.send(Ok(p));
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = tx.send(Err(match e {
                        ConnErr5::MqttState(StateError::PubAckFail { reason }) => {
                            format!("PubAckFail {reason:?}")
                        }
                        ConnErr5::MqttState(StateError::SubFail { reason }) => {
                            format!("SubFail {reason:?}")
                        }
                        other => other.to_string(),
                    }));
                    break;
                }
            }
        }
    });
    Ok(R5 { client, rx, task })
}

impl R5 {
    /// The next incoming packet or error.
    async fn next(&mut self) -> Result<rumqttc::v5::Incoming, String> {
        within(WAIT, "a 5.0 packet", self.rx.recv())
            .await
            .expect("event loop alive")
    }
}

// ---------------------------------------------------------------------------------------
// Raw MQTT 5 and 3.1.1 sockets (to read Reason Strings and to drop a connection abruptly)
// ---------------------------------------------------------------------------------------

struct Raw {
    s: TcpStream,
    buf: BytesMut,
}

fn connect_packet(
    protocol: ProtocolVersion,
    id: &str,
    creds: Option<(&str, &str)>,
    will: Option<&str>,
) -> Connect {
    Connect {
        protocol,
        client_id: id.into(),
        clean_session: true,
        keep_alive: 30,
        username: creds.map(|(u, _)| u.to_string()),
        password: creds.map(|(_, p)| Bytes::from(p.to_string())),
        will: will.map(|t| LastWill {
            topic: t.into(),
            payload: Bytes::from_static(b"gone"),
            qos: ponte_mqtt::QoS::AtLeastOnce,
            retain: true,
        }),
    }
}

impl Raw {
    async fn open(addr: SocketAddr) -> Raw {
        let s = within(WAIT, "TCP connect", TcpStream::connect(addr))
            .await
            .unwrap();
        Raw {
            s,
            buf: BytesMut::new(),
        }
    }

    async fn send5(&mut self, p: &Packet5) {
        let mut out = BytesMut::new();
        encode_v5(p, &mut out);
        self.s.write_all(&out).await.unwrap();
    }

    /// The next v5 packet, `None` when the server closed.
    async fn recv5(&mut self) -> Option<Packet5> {
        common::read_v5(&mut self.s, &mut self.buf).await
    }

    /// CONNECT (5.0); the CONNACK's reason code and Reason String.
    async fn connect5(
        addr: SocketAddr,
        id: &str,
        creds: Option<(&str, &str)>,
        will: Option<&str>,
    ) -> (Raw, u8, Option<String>) {
        let mut r = Raw::open(addr).await;
        r.send5(&Packet5::Connect(Box::new(Connect5 {
            connect: connect_packet(ProtocolVersion::V5, id, creds, will),
            properties: Properties::default(),
            will_properties: Properties::default(),
        })))
        .await;
        match r.recv5().await {
            Some(Packet5::ConnAck {
                reason_code,
                properties,
                ..
            }) => (r, reason_code, properties.reason_string),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// CONNECT (3.1.1) with a will; the CONNACK return code.
    async fn connect3(addr: SocketAddr, id: &str, creds: (&str, &str), will: &str) -> (Raw, u8) {
        let mut r = Raw::open(addr).await;
        let mut out = BytesMut::new();
        encode(
            &Packet::Connect(connect_packet(
                ProtocolVersion::V311,
                id,
                Some(creds),
                Some(will),
            )),
            &mut out,
        );
        r.s.write_all(&out).await.unwrap();
        let mut ack = [0u8; 4];
        within(WAIT, "3.1.1 CONNACK", r.s.read_exact(&mut ack))
            .await
            .unwrap();
        assert_eq!(ack[..2], [0x20, 2], "a CONNACK");
        (r, ack[3])
    }

    /// Whether the server closes the connection within [`WAIT`].
    async fn closed(&mut self) -> bool {
        let mut chunk = [0u8; 256];
        tokio::time::timeout(WAIT, async {
            loop {
                match self.s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return true,
                    Ok(_) => {}
                }
            }
        })
        .await
        .unwrap_or(false)
    }
}

fn publish5(topic: &str, qos: ponte_mqtt::QoS, pkid: u16) -> Packet5 {
    Packet5::Publish(Box::new(Publish5 {
        publish: Publish {
            dup: false,
            qos,
            retain: true,
            topic: topic.into(),
            pkid,
            payload: Bytes::from_static(b"x"),
        },
        properties: Properties::default(),
    }))
}

// ---------------------------------------------------------------------------------------
// CONNECT
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn mqtt_3_1_1_connack_0x05_when_anonymous_is_refused() {
    let s = Secured::start().await;
    let code = v3(s.addr(), "anon", None).await.err();
    assert_eq!(code, Some(ConnectReturnCode::NotAuthorized));
}

#[tokio::test]
async fn mqtt_3_1_1_connack_0x04_for_a_wrong_password_or_an_unknown_user() {
    let s = Secured::start().await;
    for creds in [("alice", "bob-pw"), ("mallory", "alice-pw"), ("alice", "")] {
        let code = v3(s.addr(), "c", Some(creds)).await.err();
        assert_eq!(
            code,
            Some(ConnectReturnCode::BadUserNamePassword),
            "{creds:?}"
        );
    }
    assert!(v3(s.addr(), "c", Some(("alice", "alice-pw"))).await.is_ok());
    let refused =
        s.gw.auth
            .metrics
            .logins_refused
            .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(refused, 3, "refusals are counted");
}

#[tokio::test]
async fn mqtt5_connack_0x87_not_authorized_with_a_reason_string_when_anonymous_is_refused() {
    let s = Secured::start().await;
    let code = r5(s.addr(), "anon5", None).await.err();
    assert_eq!(code, Some(Code5::NotAuthorized));
    let (mut raw, code, why) = Raw::connect5(s.addr(), "anon5", None, None).await;
    assert_eq!(code, 0x87);
    assert!(
        why.unwrap_or_default().contains("anonymous"),
        "Reason String"
    );
    assert!(raw.closed().await, "then closed");
}

#[tokio::test]
async fn mqtt5_connack_0x86_bad_user_name_or_password_with_a_reason_string() {
    let s = Secured::start().await;
    let code = r5(s.addr(), "c5", Some(("alice", "nope"))).await.err();
    assert_eq!(code, Some(Code5::BadUserNamePassword));
    let (mut raw, code, why) = Raw::connect5(s.addr(), "c5", Some(("bob", "nope")), None).await;
    assert_eq!(code, 0x86);
    assert_eq!(why.as_deref(), Some("bad username or password"));
    assert!(raw.closed().await, "then closed");
    assert!(r5(s.addr(), "c5", Some(("alice", "alice-pw")))
        .await
        .is_ok());
}

#[tokio::test]
async fn mqtt5_3_1_2_9_password_without_user_name_is_anonymous_and_3_1_1_closes() {
    let s = Secured::start().await;
    // MQTT 5 allows it: no user name, so the client is anonymous — refused here with 0x87.
    let mut r = Raw::open(s.addr()).await;
    let mut c = connect_packet(ProtocolVersion::V5, "p5", None, None);
    c.password = Some(Bytes::from_static(b"alice-pw"));
    r.send5(&Packet5::Connect(Box::new(Connect5 {
        connect: c.clone(),
        properties: Properties::default(),
        will_properties: Properties::default(),
    })))
    .await;
    match r.recv5().await {
        Some(Packet5::ConnAck { reason_code, .. }) => assert_eq!(reason_code, 0x87),
        other => panic!("expected CONNACK 0x87, got {other:?}"),
    }
    // MQTT-3.1.2-22: a 3.1.1 CONNECT with a password but no user name is malformed: closed
    // without CONNACK.
    let mut r = Raw::open(s.addr()).await;
    let mut out = BytesMut::new();
    c.protocol = ProtocolVersion::V311;
    encode(&Packet::Connect(c), &mut out);
    r.s.write_all(&out).await.unwrap();
    let mut buf = [0u8; 8];
    let n = within(WAIT, "the server to close", r.s.read(&mut buf))
        .await
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without CONNACK, got {:?}", &buf[..n]);
}

#[tokio::test]
async fn allow_anonymous_true_with_a_password_file_serves_anonymous_clients_and_still_checks_passwords(
) {
    let s = Secured::with(|c| c.auth.allow_anonymous = Some(true)).await;
    let mut anon = v3(s.addr(), "anon", None).await.expect("anonymous allowed");
    // The ACL's anonymous block applies: `public/#` readable, the rest not.
    let codes = anon.subscribe(&["public/#", "alice/#"]).await;
    assert_eq!(
        codes,
        [
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            SubscribeReasonCode::Failure
        ]
    );
    let code = v3(s.addr(), "c", Some(("alice", "wrong"))).await.err();
    assert_eq!(code, Some(ConnectReturnCode::BadUserNamePassword));
    assert_eq!(
        r5(s.addr(), "c5", Some(("mallory", "x"))).await.err(),
        Some(Code5::BadUserNamePassword)
    );
}

#[tokio::test]
async fn mqtt_over_websocket_is_checked_like_tcp() {
    let s = Secured::start().await;
    let url = format!("ws://{}/mqtt", s.gw.http_addr);
    let ws = |creds: Option<(&str, &str)>| {
        let mut o = MqttOptions::new("ws-client", url.clone(), s.gw.http_addr.port());
        o.set_transport(rumqttc::Transport::Ws);
        if let Some((u, p)) = creds {
            o.set_credentials(u, p);
        }
        o
    };
    assert_eq!(
        v3_with(ws(None)).await.err(),
        Some(ConnectReturnCode::NotAuthorized)
    );
    assert_eq!(
        v3_with(ws(Some(("alice", "x")))).await.err(),
        Some(ConnectReturnCode::BadUserNamePassword)
    );
    let mut ok = v3_with(ws(Some(("alice", "alice-pw"))))
        .await
        .expect("accepted");
    ok.publish("bob/ws", QoS::AtLeastOnce, true, "x").await;
    assert_eq!(
        s.retained("bob/ws"),
        None,
        "the ACL applies over WebSocket too"
    );
}

// ---------------------------------------------------------------------------------------
// The will
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn will_on_a_denied_topic_refuses_the_connection_0x05_and_v5_0x87_naming_the_topic() {
    let s = Secured::start().await;
    let (mut raw, code) = Raw::connect3(s.addr(), "w3", ("alice", "alice-pw"), "bob/will").await;
    assert_eq!(code, 0x05, "3.1.1 Not authorized");
    assert!(raw.closed().await);
    let (mut raw, code, why) = Raw::connect5(
        s.addr(),
        "w5",
        Some(("alice", "alice-pw")),
        Some("bob/will"),
    )
    .await;
    assert_eq!(code, 0x87);
    assert!(
        why.unwrap_or_default().contains("bob/will"),
        "names the will topic"
    );
    assert!(raw.closed().await);
    // The same client with a will it may publish is accepted.
    let (_raw, code) = Raw::connect3(s.addr(), "w3", ("alice", "alice-pw"), "alice/will").await;
    assert_eq!(code, 0);
}

#[tokio::test]
async fn will_is_checked_again_when_published_after_an_acl_reload() {
    let s = Secured::start().await;
    let mut watcher = login3(&s, "admin", "watch").await;
    watcher.subscribe(&["alice/#"]).await;
    let (raw, code) = Raw::connect3(s.addr(), "w", ("alice", "alice-pw"), "alice/will").await;
    assert_eq!(code, 0);
    s.reload_acl(&ACL.replace("topic readwrite alice/#", "topic read alice/#"));
    drop(raw); // no DISCONNECT: the will would fire
    let got = watcher.drain(QUIET * 2).await;
    assert!(got.is_empty(), "a will alice may no longer write: {got:?}");
    assert_eq!(s.retained("alice/will"), None);
    // Control: with write access the will does fire.
    s.reload_acl(ACL);
    let (raw, _) = Raw::connect3(s.addr(), "w", ("alice", "alice-pw"), "alice/will").await;
    drop(raw);
    let p = watcher.next_publish().await;
    assert_eq!(p.topic, "alice/will");
}

// ---------------------------------------------------------------------------------------
// PUBLISH
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn mqtt_3_1_1_denied_publish_is_acknowledged_but_not_stored_retained_or_delivered() {
    let s = Secured::start().await;
    let mut bob = login3(&s, "bob", "bob").await;
    bob.subscribe(&["bob/#"]).await;
    let mut alice = login3(&s, "alice", "alice").await;
    let before = s.acl_denied();
    // Every QoS: QoS 1/2 complete their exchange (so the client does not resend forever).
    alice.publish("bob/q0", QoS::AtMostOnce, true, "x").await;
    alice.publish("bob/q1", QoS::AtLeastOnce, true, "x").await;
    alice.publish("bob/q2", QoS::ExactlyOnce, true, "x").await;
    alice
        .publish("alice/ok", QoS::AtLeastOnce, true, "fine")
        .await;
    assert!(bob.drain(QUIET).await.is_empty(), "nothing delivered");
    for t in ["bob/q0", "bob/q1", "bob/q2"] {
        assert_eq!(s.retained(t), None, "{t} must not be retained");
    }
    assert_eq!(s.retained("alice/ok").as_deref(), Some(&b"fine"[..]));
    assert_eq!(s.acl_denied() - before, 3, "each refusal counted");
    // Over HTTP too: admin, who may read everything, finds nothing there.
    let r = support::http()
        .get(support::url(&s.gw, "bob/q1"))
        .basic_auth("admin", Some("admin-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn mqtt5_puback_0x87_and_pubrec_0x87_with_reason_strings_for_denied_publishes() {
    let s = Secured::start().await;
    // rumqttc surfaces the PUBACK's reason code as an error.
    let mut c = r5(s.addr(), "r5", Some(("alice", "alice-pw")))
        .await
        .unwrap();
    c.client
        .publish("bob/x", QoS5::AtLeastOnce, true, "x")
        .await
        .unwrap();
    let got = loop {
        match c.next().await {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert_eq!(got, format!("PubAckFail {:?}", PubAckReason::NotAuthorized));
    // The raw client reads the Reason Strings.
    let (mut raw, code, _) =
        Raw::connect5(s.addr(), "raw5", Some(("alice", "alice-pw")), None).await;
    assert_eq!(code, 0);
    raw.send5(&publish5("bob/y", ponte_mqtt::QoS::AtLeastOnce, 7))
        .await;
    match raw.recv5().await {
        Some(Packet5::PubAck(r)) => {
            assert_eq!((r.pkid, r.reason_code), (7, 0x87));
            assert!(r
                .properties
                .reason_string
                .unwrap_or_default()
                .contains("bob/y"));
        }
        other => panic!("expected PUBACK, got {other:?}"),
    }
    raw.send5(&publish5("bob/z", ponte_mqtt::QoS::ExactlyOnce, 8))
        .await;
    match raw.recv5().await {
        Some(Packet5::PubRec(r)) => {
            assert_eq!((r.pkid, r.reason_code), (8, 0x87));
            assert!(r
                .properties
                .reason_string
                .unwrap_or_default()
                .contains("bob/z"));
        }
        other => panic!("expected PUBREC, got {other:?}"),
    }
    // Allowed publishes on the same connection still succeed.
    raw.send5(&publish5("alice/a", ponte_mqtt::QoS::AtLeastOnce, 9))
        .await;
    match raw.recv5().await {
        // 0x10 No matching subscribers: accepted, nobody listens (3.4.2.1).
        Some(Packet5::PubAck(r)) => assert_eq!((r.pkid, r.reason_code), (9, 0x10)),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    for t in ["bob/x", "bob/y", "bob/z"] {
        assert_eq!(s.retained(t), None, "{t}");
    }
    assert!(s.retained("alice/a").is_some());
}

#[tokio::test]
async fn acl_patterns_substitute_percent_u_username_and_percent_c_client_id() {
    let s = Secured::start().await;
    let mut alice = login3(&s, "alice", "sensor-1").await;
    alice
        .publish("devices/alice/sensor-1/t", QoS::AtLeastOnce, true, "1")
        .await;
    alice
        .publish("devices/alice/sensor-2/t", QoS::AtLeastOnce, true, "2")
        .await;
    alice
        .publish("devices/bob/sensor-1/t", QoS::AtLeastOnce, true, "3")
        .await;
    assert!(s.retained("devices/alice/sensor-1/t").is_some());
    assert_eq!(
        s.retained("devices/alice/sensor-2/t"),
        None,
        "another client id"
    );
    assert_eq!(
        s.retained("devices/bob/sensor-1/t"),
        None,
        "another username"
    );
    // Reads follow the same pattern.
    let codes = alice
        .subscribe(&["devices/alice/sensor-1/#", "devices/alice/sensor-2/#"])
        .await;
    assert_eq!(
        codes,
        [
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            SubscribeReasonCode::Failure
        ]
    );
    assert_eq!(alice.next_publish().await.topic, "devices/alice/sensor-1/t");
}

// ---------------------------------------------------------------------------------------
// SUBSCRIBE and delivery
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn mqtt_3_1_1_suback_0x80_for_a_denied_filter_while_the_others_are_granted() {
    let s = Secured::start().await;
    let mut alice = login3(&s, "alice", "alice").await;
    let codes = alice
        .subscribe(&["bob/#", "alice/#", "alice/secret", "$SYS/#"])
        .await;
    assert_eq!(
        codes,
        [
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
        ]
    );
    // The refused filter really is not subscribed.
    let mut admin = login3(&s, "admin", "admin").await;
    admin.publish("bob/x", QoS::AtLeastOnce, false, "x").await;
    admin.publish("alice/x", QoS::AtLeastOnce, false, "y").await;
    let got = alice.drain(QUIET).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, "alice/x");
}

#[tokio::test]
async fn mqtt5_suback_0x87_with_a_reason_string_and_shared_subscriptions_must_be_readable_whole() {
    let s = Secured::start().await;
    let (mut raw, code, _) = Raw::connect5(s.addr(), "b5", Some(("bob", "bob-pw")), None).await;
    assert_eq!(code, 0);
    let opts = SubscriptionOptions::qos(ponte_mqtt::QoS::AtLeastOnce);
    raw.send5(&Packet5::Subscribe(ponte_mqtt::Subscribe5 {
        pkid: 3,
        filters: [
            "alice/#",
            "$share/g/alice/shared/#",
            "$share/g/#",
            "#",
            "public/x",
        ]
        .iter()
        .map(|f| (f.to_string(), opts))
        .collect(),
        properties: Properties::default(),
    }))
    .await;
    match raw.recv5().await {
        Some(Packet5::SubAck(r)) => {
            // `alice/#` and `#` hold something bob may read (filtered per message); a shared
            // `#` does not (a member cannot filter the group's messages); `public/x` nothing.
            assert_eq!(r.reason_codes, [1, 1, 0x87, 1, 0x87]);
            let why = r.properties.reason_string.unwrap_or_default();
            assert!(
                why.contains("$share/g/#") && why.contains("public/x"),
                "{why}"
            );
        }
        other => panic!("expected SUBACK, got {other:?}"),
    }
    // rumqttc 5 sees the refusal as a failed subscription.
    let mut c = r5(s.addr(), "r5b", Some(("bob", "bob-pw"))).await.unwrap();
    c.client
        .subscribe("alice/secret", QoS5::AtLeastOnce)
        .await
        .unwrap();
    let got = loop {
        match c.next().await {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert!(got.contains("NotAuthorized"), "{got}");
}

#[tokio::test]
async fn hash_subscription_receives_only_readable_topics_including_retained() {
    let s = Secured::start().await;
    let mut admin = login3(&s, "admin", "admin").await;
    for t in ["alice/r", "bob/r", "alice/secret", "public/r"] {
        admin.publish(t, QoS::AtLeastOnce, true, t).await;
    }
    let before = s.acl_denied();
    let mut alice = login3(&s, "alice", "alice").await;
    assert_eq!(
        alice.subscribe(&["#"]).await,
        [SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
    let retained = alice.drain(QUIET).await;
    let topics: Vec<&str> = retained.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        topics,
        ["alice/r"],
        "retained values on subscribe are filtered too"
    );
    for t in ["bob/live", "alice/secret", "alice/live", "public/live"] {
        admin.publish(t, QoS::AtLeastOnce, false, t).await;
    }
    let live = alice.drain(QUIET).await;
    let topics: Vec<&str> = live.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(topics, ["alice/live"]);
    assert!(
        s.acl_denied() - before >= 6,
        "withheld deliveries are counted"
    );
}

#[tokio::test]
async fn sys_topics_are_readable_only_with_a_grant() {
    let s = Secured::with(|c| c.mqtt.sys_interval_secs = 1).await;
    let mut admin = login3(&s, "admin", "admin").await;
    // admin's `#` does not reach `$SYS` (MQTT-4.7.2-1), and `$SYS/#` needs a grant.
    assert_eq!(
        admin.subscribe(&["$SYS/#"]).await,
        [SubscribeReasonCode::Failure]
    );
    let mut alice = login3(&s, "alice", "alice").await;
    alice.subscribe(&["$SYS/#"]).await;
    // bob may read `$SYS/broker/clients/#` only: `$SYS/#` is granted, filtered per topic.
    let mut bob = login3(&s, "bob", "bob").await;
    bob.subscribe(&["$SYS/#"]).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let a = alice.drain(QUIET).await;
    let b = bob.drain(QUIET).await;
    assert!(a.iter().any(|(t, _)| t == "$SYS/broker/uptime"), "{a:?}");
    assert!(!b.is_empty(), "bob gets his granted $SYS topics");
    assert!(
        b.iter().all(|(t, _)| t.starts_with("$SYS/broker/clients/")),
        "bob got more than granted: {b:?}"
    );
    assert!(admin.drain(QUIET).await.is_empty());
}

#[tokio::test]
async fn acl_reload_changes_the_rights_of_connected_clients() {
    let s = Secured::start().await;
    let mut admin = login3(&s, "admin", "admin").await;
    let mut bob = login3(&s, "bob", "bob").await;
    bob.subscribe(&["alice/#"]).await;
    admin
        .publish("alice/shared/1", QoS::AtLeastOnce, false, "1")
        .await;
    assert_eq!(bob.next_publish().await.topic, "alice/shared/1");
    bob.publish("bob/out", QoS::AtLeastOnce, true, "before")
        .await;
    assert!(s.retained("bob/out").is_some());

    s.reload_acl(&ACL.replace(
        "topic readwrite bob/#\ntopic read alice/shared/#",
        "topic read bob/#\ntopic read alice/other/#",
    ));
    admin
        .publish("alice/shared/2", QoS::AtLeastOnce, false, "2")
        .await;
    admin
        .publish("alice/other/3", QoS::AtLeastOnce, false, "3")
        .await;
    let got = bob.drain(QUIET).await;
    let topics: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        topics,
        ["alice/other/3"],
        "the same subscription, the new rules"
    );
    bob.publish("bob/out", QoS::AtLeastOnce, true, "after")
        .await;
    assert_eq!(
        s.retained("bob/out").as_deref(),
        Some(&b"before"[..]),
        "bob lost write access"
    );
}

// ---------------------------------------------------------------------------------------
// Password files from other tools, and real CLI clients
// ---------------------------------------------------------------------------------------

/// Run a CLI client to completion (killed after 10 s); (exit code, stdout + stderr).
async fn run(program: &str, args: &[String]) -> (Option<i32>, String) {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).kill_on_drop(true);
    let out = within(Duration::from_secs(10), program, cmd.output())
        .await
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Made by mosquitto 2.0.11's `mosquitto_passwd -b` (alice / `s3cret!`, PBKDF2-SHA512 `$7$`)
/// and `mosquitto_passwd -H sha512 -b` (bob / `hunter2`, `$6$`).
const MOSQUITTO_PASSWD: &str = "\
alice:$7$101$SGEgJ2Sm1ZP3isec$QutH5lqlLjn/tqIV1wfmPD7IxrczAsw4KUqqGpxAyCMZgwna1uI8ZrNU7GJJGgJjbCuFdMq6Tg93KW+hjyvD5Q==
bob:$6$6aBdJb9oMc4ZDzPZ$WMlL6mKN1Uto1uoJcoSIcWtnmfqMB0y1Iroon0nimkaEuGsYiQ9JsMFhRMNgQwqWQ1e8T06F1p7LLkdzs/6RVQ==
";

async fn mosquitto_secured() -> Secured {
    Secured::from_files(tempfile::tempdir().unwrap(), MOSQUITTO_PASSWD, ACL, |_| {}).await
}

#[tokio::test]
async fn mosquitto_pub_authenticates_against_a_mosquitto_passwd_7_file() {
    if !have("mosquitto_pub") {
        return;
    }
    let s = mosquitto_secured().await;
    let port = s.addr().port().to_string();
    let base = ["-h", "127.0.0.1", "-p", &port, "-q", "1", "-r", "-m", "hi"];
    let with = |extra: &[&str]| {
        let mut a = args(&base);
        a.extend(args(extra));
        a
    };
    let (code, out) = run(
        "mosquitto_pub",
        &with(&["-u", "alice", "-P", "s3cret!", "-t", "alice/m"]),
    )
    .await;
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(s.retained("alice/m").as_deref(), Some(&b"hi"[..]));
    let (code, out) = run(
        "mosquitto_pub",
        &with(&["-u", "bob", "-P", "hunter2", "-t", "bob/m"]),
    )
    .await;
    assert_eq!(code, Some(0), "$6$ hash: {out}");
    let (code, out) = run(
        "mosquitto_pub",
        &with(&["-u", "alice", "-P", "s3cret", "-t", "alice/n"]),
    )
    .await;
    assert_eq!(code, Some(4), "{out}");
    assert!(out.contains("bad user name or password"), "{out}");
    let (code, out) = run("mosquitto_pub", &with(&["-t", "alice/n"])).await;
    assert_eq!(code, Some(5), "{out}");
    assert!(out.contains("not authorised"), "{out}");
    // MQTT 5: the CONNACK reason code is the exit status and is printed.
    let (code, out) = run(
        "mosquitto_pub",
        &with(&["-V", "5", "-u", "alice", "-P", "no", "-t", "alice/n"]),
    )
    .await;
    assert_eq!(code, Some(0x86), "{out}");
    assert!(out.contains("Bad User Name or Password"), "{out}");
    let (code, out) = run("mosquitto_pub", &with(&["-V", "5", "-t", "alice/n"])).await;
    assert_eq!(code, Some(0x87), "{out}");
    assert!(out.contains("Not authorized"), "{out}");
    assert_eq!(s.retained("alice/n"), None);
}

#[tokio::test]
async fn mosquitto_pub_v5_shows_puback_0x87_and_the_reason_string_for_a_denied_publish() {
    if !have("mosquitto_pub") {
        return;
    }
    let s = mosquitto_secured().await;
    let port = s.addr().port().to_string();
    let (code, out) = run(
        "mosquitto_pub",
        &args(&[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-V",
            "5",
            "-q",
            "1",
            "-r",
            "-d",
            "-u",
            "alice",
            "-P",
            "s3cret!",
            "-t",
            "bob/x",
            "-m",
            "hi",
        ]),
    )
    .await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("RC:135"), "PUBACK 0x87: {out}");
    assert!(out.contains("Not authorized"), "{out}");
    assert!(
        out.contains("not authorized to publish to topic \"bob/x\""),
        "{out}"
    );
    assert_eq!(s.retained("bob/x"), None);
}

#[tokio::test]
async fn mosquitto_sub_hash_receives_only_granted_topics_and_suback_shows_refusals() {
    if !have("mosquitto_sub") {
        return;
    }
    let s = mosquitto_secured().await;
    let port = s.addr().port().to_string();
    // The mosquitto-made file has alice and bob; alice writes, bob reads `alice/shared/#`.
    let mut alice = login_mosquitto_alice(&s).await;
    alice
        .publish("alice/shared/r", QoS::AtLeastOnce, true, "r")
        .await;
    alice
        .publish("alice/hidden", QoS::AtLeastOnce, true, "hidden")
        .await;
    let before = s.gw.broker.subscription_count();
    let sub = tokio::spawn({
        let port = port.clone();
        async move {
            run(
                "mosquitto_sub",
                &args(&[
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                    "-V",
                    "5",
                    "-d",
                    "-v",
                    "-u",
                    "bob",
                    "-P",
                    "hunter2",
                    "-t",
                    "#",
                    "-t",
                    "public/x",
                    "-C",
                    "2",
                    "-W",
                    "8",
                ]),
            )
            .await
        }
    });
    within(WAIT, "mosquitto_sub to subscribe", async {
        while s.gw.broker.subscription_count() <= before {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    alice
        .publish("alice/nope", QoS::AtLeastOnce, false, "not for bob")
        .await;
    alice
        .publish("alice/shared/a", QoS::AtLeastOnce, false, "for bob")
        .await;
    let (code, out) = sub.await.unwrap();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("Subscribed (mid: 1): 0, 135"), "SUBACK: {out}");
    assert!(out.contains("alice/shared/r r"), "{out}");
    assert!(out.contains("alice/shared/a for bob"), "{out}");
    assert!(
        !out.contains("hidden") && !out.contains("not for bob"),
        "{out}"
    );
}

/// alice from the mosquitto-made file, over rumqttc.
async fn login_mosquitto_alice(s: &Secured) -> V3 {
    v3(s.addr(), "alice-rumqttc", Some(("alice", "s3cret!")))
        .await
        .expect("alice with her $7$ password")
}

#[tokio::test]
async fn a_ponte_passwd_made_file_authenticates_mqtt_clients() {
    let dir = tempfile::tempdir().unwrap();
    let file: PathBuf = dir.path().join("passwd");
    let ponte = env!("CARGO_BIN_EXE_ponte");
    for (user, pass, extra) in [
        ("alice", "wonder land", Some("--create")),
        ("bob", "b", None),
    ] {
        let mut a: Vec<String> = vec!["passwd".into()];
        a.extend(extra.map(String::from));
        a.extend(["--password".into(), pass.into()]);
        a.extend([file.display().to_string(), user.into()]);
        let (code, out) = run(ponte, &a).await;
        assert_eq!(code, Some(0), "ponte passwd: {out}");
    }
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("alice:$argon2id$"), "{text}");
    let s = Secured::from_files(dir, "", ACL, |_| {}).await;
    let mut alice = v3(s.addr(), "a", Some(("alice", "wonder land")))
        .await
        .expect("alice accepted");
    alice.publish("alice/p", QoS::AtLeastOnce, true, "x").await;
    assert!(s.retained("alice/p").is_some());
    assert_eq!(
        v3(s.addr(), "a", Some(("alice", "wonderland"))).await.err(),
        Some(ConnectReturnCode::BadUserNamePassword)
    );
    assert_eq!(
        r5(s.addr(), "b", Some(("bob", "c"))).await.err(),
        Some(Code5::BadUserNamePassword)
    );
    assert!(r5(s.addr(), "b", Some(("bob", "b"))).await.is_ok());
}
