//! Starting a gateway in-process on 127.0.0.1 (every port 0), with a memory or a sled store,
//! and the files (passwords, ACL, PSKs) a configuration points at.

use std::path::PathBuf;

use ponte::config::Config;
use ponte::Gateway;

use super::wait::{within, WAIT};

/// A gateway on 127.0.0.1 with every port 0 and a memory store.
pub async fn gateway() -> Gateway {
    gateway_with(|_| {}).await
}

/// Like [`gateway`], with the configuration adjusted by `f`.
pub async fn gateway_with(f: impl FnOnce(&mut Config)) -> Gateway {
    let mut config = Config::ephemeral();
    f(&mut config);
    within(WAIT, "gateway start", ponte::start(config))
        .await
        .expect("gateway starts")
}

/// A gateway like [`gateway`] but with a sled store in a fresh temporary directory (kept
/// alive by the returned guard), so retained writes take real group commits.
pub async fn sled_gateway() -> (Gateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("db");
    let gw = gateway_with(|c| {
        c.store.memory = false;
        c.store.db = db;
    })
    .await;
    (gw, dir)
}

/// Write `text` to a file `name` in a fresh directory that lives as long as the test
/// process (a gateway reads its files at start and again on reload); returns its path.
pub fn test_file(name: &str, text: &str) -> PathBuf {
    let dir = Box::leak(Box::new(tempfile::tempdir().expect("temp dir")));
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write the test file");
    path
}

/// A password file's text: `user:argon2id-hash` for each `(user, password)`.
pub fn passwd(users: &[(&str, &str)]) -> String {
    users
        .iter()
        .map(|(user, pw)| {
            let hash = ponte::auth::password::hash_password(pw).expect("hash");
            format!("{user}:{hash}\n")
        })
        .collect()
}

/// Store a retained value directly through the broker core (no front-end, no ACL): for
/// tests that need a value where the client under test may not write.
pub async fn seed(gw: &Gateway, topic: &str, value: &str) {
    let topic = ponte::model::TopicName::parse(topic).expect("valid topic");
    let m = ponte::broker::retained_message(
        topic,
        bytes::Bytes::copy_from_slice(value.as_bytes()),
        None,
        ponte::model::Origin::Internal,
    );
    gw.broker
        .publish(m, ponte::broker::retained::Precondition::none())
        .await
        .expect("seed value stored");
}

/// The retained payload of `topic` in the broker core, if any.
pub fn retained(gw: &Gateway, topic: &str) -> Option<bytes::Bytes> {
    let t = ponte::model::TopicName::parse(topic).expect("valid topic");
    gw.broker.get(&t).map(|v| v.payload.clone())
}

/// Wait until the broker holds more than `before` subscriptions (a child client subscribed).
pub async fn subscribed(gw: &Gateway, before: usize) {
    super::wait::eventually(WAIT, "the client to subscribe", || async {
        gw.broker.subscription_count() > before
    })
    .await
}
