#![allow(clippy::unwrap_used)] // test helpers may unwrap: a failure is the test failing
//! MQTT authentication and authorisation (issue 5), black-box over real sockets: rumqttc's
//! 3.1.1 and 5.0 clients, a raw MQTT 5 socket (ponte-mqtt's codec, to read Reason Strings),
//! rumqttc over WebSocket, `mosquitto_pub`/`mosquitto_sub` (skipped when missing, except in CI)
//! and the `ponte passwd` binary. Each test starts a gateway with a password file and an ACL
//! in a temporary directory; ACL reloads rewrite the file and call `Gateway::reload`.
//!
//! Test names carry the MQTT clause or the issue's wording they check.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use ponte::Gateway;
use ponte_mqtt::{Connect, LastWill, Packet, Properties, ProtocolVersion};
use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode as Code5, PubAckReason};
use rumqttc::v5::mqttbytes::QoS as QoS5;
use rumqttc::{ConnectReturnCode, ConnectionError, MqttOptions, QoS, SubscribeReasonCode};

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
        let users = passwd(&[
            ("alice", "alice-pw"),
            ("bob", "bob-pw"),
            ("admin", "admin-pw"),
        ]);
        Secured::from_files(tempfile::tempdir().unwrap(), &users, ACL, f).await
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
        let gw = gateway_with(|c| {
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
        retained(&self.gw, topic)
    }

    /// ACL refusals counted so far.
    fn acl_denied(&self) -> u64 {
        let denied = &self.gw.auth.metrics.acl_denied;
        denied.load(std::sync::atomic::Ordering::Relaxed)
    }
}

// ---------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------

/// A rumqttc 3.1.1 client with `o`; `Err` is the CONNACK refusal code.
async fn v3_with(o: MqttOptions) -> Result<Client, ConnectReturnCode> {
    match Client::try_connect(o).await {
        Ok((c, _)) => Ok(c),
        Err(ConnectionError::ConnectionRefused(code)) => Err(code),
        Err(e) => panic!("3.1.1 connection failed: {e}"),
    }
}

/// A rumqttc 3.1.1 client `id` of `addr`, logged in with `creds` when given.
async fn v3(
    addr: SocketAddr,
    id: &str,
    creds: Option<(&str, &str)>,
) -> Result<Client, ConnectReturnCode> {
    v3_with(match creds {
        Some((user, pw)) => login(addr, id, user, pw),
        None => options(addr, id),
    })
    .await
}

/// A 3.1.1 client logged in as `user` (password `user-pw`).
async fn login3(s: &Secured, user: &str, id: &str) -> Client {
    v3(s.addr(), id, Some((user, &format!("{user}-pw"))))
        .await
        .unwrap_or_else(|code| panic!("{user} refused: {code:?}"))
}

/// A rumqttc 5.0 client `id` of `addr`, logged in with `creds` when given.
async fn r5(addr: SocketAddr, id: &str, creds: Option<(&str, &str)>) -> Result<R5, Code5> {
    let mut o = options5(addr, id);
    if let Some((u, p)) = creds {
        o.set_credentials(u, p);
    }
    R5::connect(o).await
}

/// A CONNECT of `protocol` for `id` with `creds` and, when `will` names a topic, a retained
/// QoS 1 will "gone" there.
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
            properties: Default::default(),
        }),
        properties: Default::default(),
    }
}

/// A raw MQTT 5 CONNECT of `c`; the client and the CONNACK.
async fn raw5(addr: SocketAddr, c: Connect) -> (V5, ConnAck5) {
    V5::connack(addr, Packet::Connect(Box::new(c))).await
}

/// A raw MQTT 5 CONNECT; the client, the CONNACK's reason code and Reason String.
async fn connect5(
    addr: SocketAddr,
    id: &str,
    creds: Option<(&str, &str)>,
    will: Option<&str>,
) -> (V5, u8, Option<String>) {
    let c = connect_packet(ProtocolVersion::V5, id, creds, will);
    let (raw, ack) = raw5(addr, c).await;
    (raw, ack.reason, ack.properties.reason_string)
}

/// A raw 3.1.1 CONNECT with a will; the client and the CONNACK return code.
async fn connect3(addr: SocketAddr, id: &str, creds: (&str, &str), will: &str) -> (V3, u8) {
    let mut r = V3::open(addr).await;
    let c = connect_packet(ProtocolVersion::V311, id, Some(creds), Some(will));
    r.send(&Packet::Connect(Box::new(c))).await;
    let ack = r.read().await.expect("3.1.1 CONNACK");
    assert_eq!((ack.first, ack.body.len()), (0x20, 2), "a CONNACK");
    (r, ack.body[1])
}

/// A retained PUBLISH of "x" to `topic` at `qos` with id `pkid`.
fn retained_x(topic: &str, qos: ponte_mqtt::QoS, pkid: u16) -> Packet {
    retained5(topic, qos, pkid, b"x", Properties::default())
}

/// Assert `r` refused a publish to `topic` with 0x87 and a Reason String naming it.
fn refused_0x87(r: ponte_mqtt::PubResponse, pkid: u16, topic: &str) {
    assert_eq!((r.pkid, r.reason_code), (pkid, 0x87));
    let why = r.properties.into_inner().reason_string.unwrap_or_default();
    assert!(why.contains(topic), "{why}");
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
        let bad = Some(ConnectReturnCode::BadUserNamePassword);
        assert_eq!(code, bad, "{creds:?}");
    }
    assert!(v3(s.addr(), "c", Some(("alice", "alice-pw"))).await.is_ok());
    let refused = &s.gw.auth.metrics.logins_refused;
    let refused = refused.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(refused, 3, "refusals are counted");
}

#[tokio::test]
async fn mqtt5_connack_0x87_not_authorized_with_a_reason_string_when_anonymous_is_refused() {
    let s = Secured::start().await;
    let code = r5(s.addr(), "anon5", None).await.err();
    assert_eq!(code, Some(Code5::NotAuthorized));
    let (mut raw, code, why) = connect5(s.addr(), "anon5", None, None).await;
    assert_eq!(code, 0x87);
    let why = why.unwrap_or_default();
    assert!(why.contains("anonymous"), "Reason String");
    raw.expect_closed("then closed").await;
}

#[tokio::test]
async fn mqtt5_connack_0x86_bad_user_name_or_password_with_a_reason_string() {
    let s = Secured::start().await;
    let code = r5(s.addr(), "c5", Some(("alice", "nope"))).await.err();
    assert_eq!(code, Some(Code5::BadUserNamePassword));
    let (mut raw, code, why) = connect5(s.addr(), "c5", Some(("bob", "nope")), None).await;
    assert_eq!(code, 0x86);
    assert_eq!(why.as_deref(), Some("bad username or password"));
    raw.expect_closed("then closed").await;
    let ok = r5(s.addr(), "c5", Some(("alice", "alice-pw"))).await;
    assert!(ok.is_ok());
}

#[tokio::test]
async fn mqtt5_3_1_2_9_password_without_user_name_is_anonymous_and_3_1_1_closes() {
    let s = Secured::start().await;
    // MQTT 5 allows it: no user name, so the client is anonymous — refused here with 0x87.
    let mut c = connect_packet(ProtocolVersion::V5, "p5", None, None);
    c.password = Some(Bytes::from_static(b"alice-pw"));
    let (_r, ack) = raw5(s.addr(), c.clone()).await;
    assert_eq!(ack.reason, 0x87, "CONNACK 0x87: {ack:?}");
    // MQTT-3.1.2-22: a 3.1.1 CONNECT with a password but no user name is malformed: closed
    // without CONNACK.
    let mut r = V3::open(s.addr()).await;
    c.protocol = ProtocolVersion::V311;
    r.send(&Packet::Connect(Box::new(c))).await;
    let got = r.bytes_until_close("the server to close").await;
    assert!(got.is_empty(), "closed without CONNACK, got {got:?}");
}

#[tokio::test]
async fn allow_anonymous_true_with_a_password_file_serves_anonymous_clients_and_still_checks_passwords(
) {
    let s = Secured::with(|c| c.auth.allow_anonymous = Some(true)).await;
    let mut anon = v3(s.addr(), "anon", None).await.expect("anonymous allowed");
    // The ACL's anonymous block applies: `public/#` readable, the rest not.
    let codes = anon.subscribe_all(&["public/#", "alice/#"]).await;
    let granted = SubscribeReasonCode::Success(QoS::AtLeastOnce);
    assert_eq!(codes, [granted, SubscribeReasonCode::Failure]);
    let code = v3(s.addr(), "c", Some(("alice", "wrong"))).await.err();
    assert_eq!(code, Some(ConnectReturnCode::BadUserNamePassword));
    let code = r5(s.addr(), "c5", Some(("mallory", "x"))).await.err();
    assert_eq!(code, Some(Code5::BadUserNamePassword));
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
    let anonymous = v3_with(ws(None)).await.err();
    assert_eq!(anonymous, Some(ConnectReturnCode::NotAuthorized));
    let wrong = v3_with(ws(Some(("alice", "x")))).await.err();
    assert_eq!(wrong, Some(ConnectReturnCode::BadUserNamePassword));
    let mut ok = v3_with(ws(Some(("alice", "alice-pw"))))
        .await
        .expect("accepted");
    ok.publish("bob/ws", QoS::AtLeastOnce, true, b"x").await;
    let kept = s.retained("bob/ws");
    assert_eq!(kept, None, "the ACL applies over WebSocket too");
}

// ---------------------------------------------------------------------------------------
// The will
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn will_on_a_denied_topic_refuses_the_connection_0x05_and_v5_0x87_naming_the_topic() {
    let s = Secured::start().await;
    let alice = ("alice", "alice-pw");
    let (mut raw, code) = connect3(s.addr(), "w3", alice, "bob/will").await;
    assert_eq!(code, 0x05, "3.1.1 Not authorized");
    raw.expect_closed("closed after 0x05").await;
    let (mut raw, code, why) = connect5(s.addr(), "w5", Some(alice), Some("bob/will")).await;
    assert_eq!(code, 0x87);
    let why = why.unwrap_or_default();
    assert!(why.contains("bob/will"), "names the will topic");
    raw.expect_closed("closed after 0x87").await;
    // The same client with a will it may publish is accepted.
    let (_raw, code) = connect3(s.addr(), "w3", alice, "alice/will").await;
    assert_eq!(code, 0);
}

#[tokio::test]
async fn will_is_checked_again_when_published_after_an_acl_reload() {
    let s = Secured::start().await;
    let mut watcher = login3(&s, "admin", "watch").await;
    watcher.subscribe_all(&["alice/#"]).await;
    let alice = ("alice", "alice-pw");
    let (raw, code) = connect3(s.addr(), "w", alice, "alice/will").await;
    assert_eq!(code, 0);
    s.reload_acl(&ACL.replace("topic readwrite alice/#", "topic read alice/#"));
    drop(raw); // no DISCONNECT: the will would fire
    let got = watcher.drain(QUIET * 2).await;
    assert!(got.is_empty(), "a will alice may no longer write: {got:?}");
    assert_eq!(s.retained("alice/will"), None);
    // Control: with write access the will does fire.
    s.reload_acl(ACL);
    let (raw, _) = connect3(s.addr(), "w", alice, "alice/will").await;
    drop(raw);
    let p = watcher.publish_rx().await;
    assert_eq!(p.topic, "alice/will");
}

// ---------------------------------------------------------------------------------------
// PUBLISH
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn mqtt_3_1_1_denied_publish_is_acknowledged_but_not_stored_retained_or_delivered() {
    let s = Secured::start().await;
    let mut bob = login3(&s, "bob", "bob").await;
    bob.subscribe_all(&["bob/#"]).await;
    let mut alice = login3(&s, "alice", "alice").await;
    let before = s.acl_denied();
    // Every QoS: QoS 1/2 complete their exchange (so the client does not resend forever).
    for (topic, qos) in [
        ("bob/q0", QoS::AtMostOnce),
        ("bob/q1", QoS::AtLeastOnce),
        ("bob/q2", QoS::ExactlyOnce),
    ] {
        alice.publish(topic, qos, true, b"x").await;
    }
    alice
        .publish("alice/ok", QoS::AtLeastOnce, true, b"fine")
        .await;
    assert!(bob.drain(QUIET).await.is_empty(), "nothing delivered");
    for t in ["bob/q0", "bob/q1", "bob/q2"] {
        assert_eq!(s.retained(t), None, "{t} must not be retained");
    }
    assert_eq!(s.retained("alice/ok").as_deref(), Some(&b"fine"[..]));
    assert_eq!(s.acl_denied() - before, 3, "each refusal counted");
    // Over HTTP too: admin, who may read everything, finds nothing there.
    let req = http().get(url(&s.gw, "bob/q1"));
    let r = send("HTTP GET", req.basic_auth("admin", Some("admin-pw"))).await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn mqtt5_puback_0x87_and_pubrec_0x87_with_reason_strings_for_denied_publishes() {
    let s = Secured::start().await;
    let alice = Some(("alice", "alice-pw"));
    // rumqttc surfaces the PUBACK's reason code as an error.
    let mut c = r5(s.addr(), "r5", alice).await.unwrap();
    c.client
        .publish("bob/x", QoS5::AtLeastOnce, true, "x")
        .await
        .unwrap();
    let got = c.error().await;
    assert_eq!(got, format!("PubAckFail {:?}", PubAckReason::NotAuthorized));
    // The raw client reads the Reason Strings.
    let (mut raw, code, _) = connect5(s.addr(), "raw5", alice, None).await;
    assert_eq!(code, 0);
    let q1 = ponte_mqtt::QoS::AtLeastOnce;
    raw.send(&retained_x("bob/y", q1, 7)).await;
    match raw.recv().await {
        Some(Packet::PubAck(r)) => refused_0x87(r, 7, "bob/y"),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    let q2 = ponte_mqtt::QoS::ExactlyOnce;
    raw.send(&retained_x("bob/z", q2, 8)).await;
    match raw.recv().await {
        Some(Packet::PubRec(r)) => refused_0x87(r, 8, "bob/z"),
        other => panic!("expected PUBREC, got {other:?}"),
    }
    // Allowed publishes on the same connection still succeed.
    raw.send(&retained_x("alice/a", q1, 9)).await;
    match raw.recv().await {
        // 0x10 No matching subscribers: accepted, nobody listens (3.4.2.1).
        Some(Packet::PubAck(r)) => assert_eq!((r.pkid, r.reason_code), (9, 0x10)),
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
    for (topic, payload) in [
        ("devices/alice/sensor-1/t", b"1"),
        ("devices/alice/sensor-2/t", b"2"),
        ("devices/bob/sensor-1/t", b"3"),
    ] {
        alice.publish(topic, QoS::AtLeastOnce, true, payload).await;
    }
    assert!(s.retained("devices/alice/sensor-1/t").is_some());
    let other = s.retained("devices/alice/sensor-2/t");
    assert_eq!(other, None, "another client id");
    let other = s.retained("devices/bob/sensor-1/t");
    assert_eq!(other, None, "another username");
    // Reads follow the same pattern.
    let filters = ["devices/alice/sensor-1/#", "devices/alice/sensor-2/#"];
    let codes = alice.subscribe_all(&filters).await;
    let granted = SubscribeReasonCode::Success(QoS::AtLeastOnce);
    assert_eq!(codes, [granted, SubscribeReasonCode::Failure]);
    assert_eq!(alice.publish_rx().await.topic, "devices/alice/sensor-1/t");
}

// ---------------------------------------------------------------------------------------
// SUBSCRIBE and delivery
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn mqtt_3_1_1_suback_0x80_for_a_denied_filter_while_the_others_are_granted() {
    let s = Secured::start().await;
    let mut alice = login3(&s, "alice", "alice").await;
    let filters = ["bob/#", "alice/#", "alice/secret", "$SYS/#"];
    let codes = alice.subscribe_all(&filters).await;
    let granted = SubscribeReasonCode::Success(QoS::AtLeastOnce);
    let refused = SubscribeReasonCode::Failure;
    assert_eq!(codes, [refused, granted, refused, granted]);
    // The refused filter really is not subscribed.
    let mut admin = login3(&s, "admin", "admin").await;
    admin
        .publish_each(&[("bob/x", b"x"), ("alice/x", b"y")])
        .await;
    let got = alice.drain(QUIET).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, "alice/x");
}

#[tokio::test]
async fn mqtt5_suback_0x87_with_a_reason_string_and_shared_subscriptions_must_be_readable_whole() {
    let s = Secured::start().await;
    let bob = Some(("bob", "bob-pw"));
    let (mut raw, code, _) = connect5(s.addr(), "b5", bob, None).await;
    assert_eq!(code, 0);
    let filters = [
        "alice/#",
        "$share/g/alice/shared/#",
        "$share/g/#",
        "#",
        "public/x",
    ];
    let q1 = opts(ponte_mqtt::QoS::AtLeastOnce);
    let filters: Vec<_> = filters.iter().map(|f| (*f, q1)).collect();
    let r = raw.suback(&filters, None).await;
    // `alice/#` and `#` hold something bob may read (filtered per message); a shared
    // `#` does not (a member cannot filter the group's messages); `public/x` nothing.
    assert_eq!(r.reason_codes, [1, 1, 0x87, 1, 0x87]);
    let why = r.properties.into_inner().reason_string.unwrap_or_default();
    let both = why.contains("$share/g/#") && why.contains("public/x");
    assert!(both, "{why}");
    // rumqttc 5 sees the refusal as a failed subscription.
    let mut c = r5(s.addr(), "r5b", bob).await.unwrap();
    c.client
        .subscribe("alice/secret", QoS5::AtLeastOnce)
        .await
        .unwrap();
    let got = c.error().await;
    assert!(got.contains("NotAuthorized"), "{got}");
}

/// The topics of what `c` receives until it has been quiet for [`QUIET`].
async fn topics(c: &mut Client) -> Vec<String> {
    c.drain(QUIET).await.into_iter().map(|(t, _)| t).collect()
}

#[tokio::test]
async fn hash_subscription_receives_only_readable_topics_including_retained() {
    let s = Secured::start().await;
    let mut admin = login3(&s, "admin", "admin").await;
    for t in ["alice/r", "bob/r", "alice/secret", "public/r"] {
        admin.publish(t, QoS::AtLeastOnce, true, t.as_bytes()).await;
    }
    let before = s.acl_denied();
    let mut alice = login3(&s, "alice", "alice").await;
    let granted = SubscribeReasonCode::Success(QoS::AtLeastOnce);
    assert_eq!(alice.subscribe_all(&["#"]).await, [granted]);
    let why = "retained values on subscribe are filtered too";
    assert_eq!(topics(&mut alice).await, ["alice/r"], "{why}");
    for t in ["bob/live", "alice/secret", "alice/live", "public/live"] {
        admin
            .publish(t, QoS::AtLeastOnce, false, t.as_bytes())
            .await;
    }
    assert_eq!(topics(&mut alice).await, ["alice/live"]);
    let withheld = s.acl_denied() - before;
    assert!(withheld >= 6, "withheld deliveries are counted");
}

#[tokio::test]
async fn sys_topics_are_readable_only_with_a_grant() {
    let s = Secured::with(|c| c.mqtt.sys_interval_secs = 1).await;
    let mut admin = login3(&s, "admin", "admin").await;
    // admin's `#` does not reach `$SYS` (MQTT-4.7.2-1), and `$SYS/#` needs a grant.
    let codes = admin.subscribe_all(&["$SYS/#"]).await;
    assert_eq!(codes, [SubscribeReasonCode::Failure]);
    let mut alice = login3(&s, "alice", "alice").await;
    alice.subscribe_all(&["$SYS/#"]).await;
    // bob may read `$SYS/broker/clients/#` only: `$SYS/#` is granted, filtered per topic.
    let mut bob = login3(&s, "bob", "bob").await;
    bob.subscribe_all(&["$SYS/#"]).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let a = topics(&mut alice).await;
    let b = topics(&mut bob).await;
    assert!(a.iter().any(|t| t == "$SYS/broker/uptime"), "{a:?}");
    assert!(!b.is_empty(), "bob gets his granted $SYS topics");
    let granted = b.iter().all(|t| t.starts_with("$SYS/broker/clients/"));
    assert!(granted, "bob got more than granted: {b:?}");
    assert!(admin.drain(QUIET).await.is_empty());
}

#[tokio::test]
async fn acl_reload_changes_the_rights_of_connected_clients() {
    let s = Secured::start().await;
    let mut admin = login3(&s, "admin", "admin").await;
    let mut bob = login3(&s, "bob", "bob").await;
    bob.subscribe_all(&["alice/#"]).await;
    admin.publish_each(&[("alice/shared/1", b"1")]).await;
    assert_eq!(bob.publish_rx().await.topic, "alice/shared/1");
    bob.publish("bob/out", QoS::AtLeastOnce, true, b"before")
        .await;
    assert!(s.retained("bob/out").is_some());

    s.reload_acl(&ACL.replace(
        "topic readwrite bob/#\ntopic read alice/shared/#",
        "topic read bob/#\ntopic read alice/other/#",
    ));
    admin
        .publish_each(&[("alice/shared/2", b"2"), ("alice/other/3", b"3")])
        .await;
    let why = "the same subscription, the new rules";
    assert_eq!(topics(&mut bob).await, ["alice/other/3"], "{why}");
    bob.publish("bob/out", QoS::AtLeastOnce, true, b"after")
        .await;
    let kept = s.retained("bob/out");
    assert_eq!(
        kept.as_deref(),
        Some(&b"before"[..]),
        "bob lost write access"
    );
}

// ---------------------------------------------------------------------------------------
// Password files from other tools, and real CLI clients
// ---------------------------------------------------------------------------------------

/// Made by mosquitto 2.0.11's `mosquitto_passwd -b` (alice / `s3cret!`, PBKDF2-SHA512 `$7$`)
/// and `mosquitto_passwd -H sha512 -b` (bob / `hunter2`, `$6$`).
const MOSQUITTO_PASSWD: &str = "\
alice:$7$101$SGEgJ2Sm1ZP3isec$QutH5lqlLjn/tqIV1wfmPD7IxrczAsw4KUqqGpxAyCMZgwna1uI8ZrNU7GJJGgJjbCuFdMq6Tg93KW+hjyvD5Q==
bob:$6$6aBdJb9oMc4ZDzPZ$WMlL6mKN1Uto1uoJcoSIcWtnmfqMB0y1Iroon0nimkaEuGsYiQ9JsMFhRMNgQwqWQ1e8T06F1p7LLkdzs/6RVQ==
";

/// With `client` installed: a gateway over [`MOSQUITTO_PASSWD`] and [`ACL`].
async fn mosquitto_secured(client: &str) -> Option<Secured> {
    if !have(client) {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    Some(Secured::from_files(dir, MOSQUITTO_PASSWD, ACL, |_| {}).await)
}

/// `program -h 127.0.0.1 -p <port of s>` and then `args`, run to completion: its exit code
/// and what it printed.
async fn mosquitto(program: &str, s: &Secured, args: &str) -> (Option<i32>, String) {
    let at = format!("-h 127.0.0.1 -p {}", s.addr().port());
    let o = Cmd::new(program).words(&at).words(args).run().await;
    (o.code, o.all())
}

#[tokio::test]
async fn mosquitto_pub_authenticates_against_a_mosquitto_passwd_7_file() {
    let Some(s) = mosquitto_secured("mosquitto_pub").await else {
        return;
    };
    let publ = |args: &'static str| {
        let args = format!("-q 1 -r -m hi {args}");
        let s = &s;
        async move { mosquitto("mosquitto_pub", s, &args).await }
    };
    let (code, out) = publ("-u alice -P s3cret! -t alice/m").await;
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(s.retained("alice/m").as_deref(), Some(&b"hi"[..]));
    let (code, out) = publ("-u bob -P hunter2 -t bob/m").await;
    assert_eq!(code, Some(0), "$6$ hash: {out}");
    for (args, want, says) in [
        (
            "-u alice -P s3cret -t alice/n",
            4,
            "bad user name or password",
        ),
        ("-t alice/n", 5, "not authorised"),
        // MQTT 5: the CONNACK reason code is the exit status and is printed.
        (
            "-V 5 -u alice -P no -t alice/n",
            0x86,
            "Bad User Name or Password",
        ),
        ("-V 5 -t alice/n", 0x87, "Not authorized"),
    ] {
        let (code, out) = publ(args).await;
        assert_eq!(code, Some(want), "{out}");
        assert!(out.contains(says), "{out}");
    }
    assert_eq!(s.retained("alice/n"), None);
}

#[tokio::test]
async fn mosquitto_pub_v5_shows_puback_0x87_and_the_reason_string_for_a_denied_publish() {
    let Some(s) = mosquitto_secured("mosquitto_pub").await else {
        return;
    };
    let args = "-V 5 -q 1 -r -d -u alice -P s3cret! -t bob/x -m hi";
    let (code, out) = mosquitto("mosquitto_pub", &s, args).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("RC:135"), "PUBACK 0x87: {out}");
    assert!(out.contains("Not authorized"), "{out}");
    let why = out.contains("not authorized to publish to topic \"bob/x\"");
    assert!(why, "{out}");
    assert_eq!(s.retained("bob/x"), None);
}

#[tokio::test]
async fn mosquitto_sub_hash_receives_only_granted_topics_and_suback_shows_refusals() {
    let Some(s) = mosquitto_secured("mosquitto_sub").await else {
        return;
    };
    // The mosquitto-made file has alice and bob; alice writes, bob reads `alice/shared/#`.
    let mut alice = login_mosquitto_alice(&s).await;
    alice
        .publish_all(&[
            ("alice/shared/r", QoS::AtLeastOnce, true, b"r"),
            ("alice/hidden", QoS::AtLeastOnce, true, b"hidden"),
        ])
        .await;
    let before = s.gw.broker.subscription_count();
    let port = s.addr().port();
    let sub = Cmd::new("mosquitto_sub")
        .words(&format!(
            "-h 127.0.0.1 -p {port} -V 5 -d -v -u bob -P hunter2"
        ))
        .words("-t # -t public/x -C 2 -W 8")
        .spawn();
    subscribed(&s.gw, before).await;
    let live = [
        ("alice/nope", &b"not for bob"[..]),
        ("alice/shared/a", b"for bob"),
    ];
    alice.publish_each(&live).await;
    let o = sub.finish().await;
    let out = o.all();
    assert_eq!(o.code, Some(0), "{out}");
    assert!(out.contains("Subscribed (mid: 1): 0, 135"), "SUBACK: {out}");
    assert!(out.contains("alice/shared/r r"), "{out}");
    assert!(out.contains("alice/shared/a for bob"), "{out}");
    let leaked = out.contains("hidden") || out.contains("not for bob");
    assert!(!leaked, "{out}");
}

/// alice from the mosquitto-made file, over rumqttc.
async fn login_mosquitto_alice(s: &Secured) -> Client {
    v3(s.addr(), "alice-rumqttc", Some(("alice", "s3cret!")))
        .await
        .expect("alice with her $7$ password")
}

#[tokio::test]
async fn a_ponte_passwd_made_file_authenticates_mqtt_clients() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    for (user, pass, extra) in [
        ("alice", "wonder land", Some("--create")),
        ("bob", "b", None),
    ] {
        let o = Cmd::new(BIN)
            .arg("passwd")
            .args(extra)
            .args(["--password", pass])
            .arg(&file)
            .arg(user)
            .run()
            .await;
        assert_eq!(o.code, Some(0), "ponte passwd: {}", o.all());
    }
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("alice:$argon2id$"), "{text}");
    let s = Secured::from_files(dir, "", ACL, |_| {}).await;
    let mut alice = v3(s.addr(), "a", Some(("alice", "wonder land")))
        .await
        .expect("alice accepted");
    alice.publish("alice/p", QoS::AtLeastOnce, true, b"x").await;
    assert!(s.retained("alice/p").is_some());
    let wrong = v3(s.addr(), "a", Some(("alice", "wonderland"))).await.err();
    assert_eq!(wrong, Some(ConnectReturnCode::BadUserNamePassword));
    let wrong = r5(s.addr(), "b", Some(("bob", "c"))).await.err();
    assert_eq!(wrong, Some(Code5::BadUserNamePassword));
    assert!(r5(s.addr(), "b", Some(("bob", "b"))).await.is_ok());
}
