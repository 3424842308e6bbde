//! Plain CoAP under the one ACL (issue 5): plain CoAP has no credentials, so its clients are
//! anonymous — served by the ACL's anonymous rules, refused with 4.01 when anonymous access is
//! off, 4.03 with a diagnostic payload when a rule does not grant the request.

mod support;

use coap_lite::{MessageClass, ResponseType};
use support::*;

/// Anonymous clients read `public/#` and write `public/inbox`; nothing else.
const ACL: &str = "topic read public/#\ntopic write public/inbox\nuser admin\ntopic readwrite #\n";

fn files(c: &mut ponte::config::Config, acl: &str, passwd: Option<&str>) {
    let dir = Box::leak(Box::new(tempfile::tempdir().expect("temp dir")));
    let a = dir.path().join("acl");
    std::fs::write(&a, acl).expect("write the ACL");
    c.auth.acl_file = Some(a);
    if let Some(text) = passwd {
        let p = dir.path().join("passwd");
        std::fs::write(&p, text).expect("write the password file");
        c.auth.password_file = Some(p);
    }
}

fn is(p: &coap_lite::Packet, code: ResponseType) -> bool {
    p.header.code == MessageClass::Response(code)
}

#[tokio::test]
async fn issue_5_anonymous_coap_follows_the_anonymous_rules() {
    let gw = gateway_with(|c| files(c, ACL, None)).await;
    seed(&gw, "public/a", "A").await;
    seed(&gw, "secret/s", "S").await;
    let mut c = Coap::new(gw.coap_addr).await;

    let r = c.get("r/public/a").await;
    assert!(is(&r, ResponseType::Content), "{}", code(&r));
    assert_eq!(payload_str(&r), "A");

    let r = c.get("r/secret/s").await;
    assert!(is(&r, ResponseType::Forbidden), "{}", code(&r));
    assert!(payload_str(&r).contains("anonymous"), "{}", payload_str(&r));

    let r = c.put("r/public/a", b"overwrite", None).await;
    assert!(
        is(&r, ResponseType::Forbidden),
        "read-only grant: {}",
        code(&r)
    );
    let r = c.put("r/public/inbox", b"hello", None).await;
    assert!(is(&r, ResponseType::Created), "{}", code(&r));
    let r = c.delete("r/secret/s").await;
    assert!(is(&r, ResponseType::Forbidden), "{}", code(&r));

    // `..` is a literal level in a Uri-Path option, never a way out of `public/`.
    let r = c.put("r/public/../secret/s", b"x", None).await;
    assert!(is(&r, ResponseType::Forbidden), "{}", code(&r));
    let v = gw
        .broker
        .get(&ponte::model::TopicName::parse("secret/s").unwrap())
        .expect("the seeded value is still there");
    assert_eq!(&v.payload[..], b"S", "the denied writes changed nothing");
    gw.shutdown().await;
}

#[tokio::test]
async fn rfc7641_issue_5_a_denied_observe_is_4_03_and_never_notified() {
    let gw = gateway_with(|c| files(c, ACL, None)).await;
    let mut c = Coap::new(gw.coap_addr).await;
    let (token, first) = c.observe("r/secret/watch").await;
    assert!(is(&first, ResponseType::Forbidden), "{}", code(&first));
    seed(&gw, "secret/watch", "v").await;
    assert!(
        c.recv_within(QUIET).await.is_none(),
        "no notification for a refused observation (token {token:?})"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn issue_5_discovery_lists_only_readable_things() {
    let gw = gateway_with(|c| files(c, ACL, None)).await;
    for t in ["public/x", "secret/y"] {
        seed(&gw, t, "v").await;
    }
    let mut c = Coap::new(gw.coap_addr).await;
    let r = c.get(".well-known/core").await;
    let links = payload_str(&r);
    assert!(links.contains("</r/public/x>"), "{links}");
    assert!(!links.contains("secret"), "{links}");
    gw.shutdown().await;
}

#[tokio::test]
async fn issue_5_plain_coap_is_4_01_when_anonymous_access_is_off() {
    // A password file turns anonymous access off; plain CoAP can only be anonymous.
    let gw = gateway_with(|c| {
        files(
            c,
            ACL,
            Some("admin:$6$6aBdJb9oMc4ZDzPZ$WMlL6mKN1Uto1uoJcoSIcWtnmfqMB0y1Iroon0nimkaEuGsYiQ9JsMFhRMNgQwqWQ1e8T06F1p7LLkdzs/6RVQ==\n"),
        )
    })
    .await;
    let mut c = Coap::new(gw.coap_addr).await;
    for r in [
        c.get("r/public/a").await,
        c.put("r/public/inbox", b"x", None).await,
        c.get(".well-known/core").await,
    ] {
        assert!(is(&r, ResponseType::Unauthorized), "{}", code(&r));
        assert!(payload_str(&r).contains("coaps"), "{}", payload_str(&r));
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn issue_5_coap_client_notls_sees_4_03() {
    if !have("coap-client-notls") {
        return;
    }
    let gw = gateway_with(|c| files(c, ACL, None)).await;
    let out = within(
        WAIT,
        "coap-client-notls",
        tokio::process::Command::new("coap-client-notls")
            .args(["-B", "3", "-m", "put", "-e", "x"])
            .arg(format!("coap://{}/r/secret/cli", gw.coap_addr))
            .output(),
    )
    .await
    .expect("run coap-client-notls");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("4.03"), "{all}");
    gw.shutdown().await;
}
