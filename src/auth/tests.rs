//! Unit tests of the authority: password files, the verified-password cache, reload and JWTs.

use super::*;

fn files(passwd: &str, acl: Option<&str>) -> (tempfile::TempDir, AuthConfig) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("passwd");
    std::fs::write(&p, passwd).unwrap();
    let acl = acl.map(|text| {
        let a = dir.path().join("acl");
        std::fs::write(&a, text).unwrap();
        a
    });
    let config = AuthConfig {
        password_file: Some(p),
        acl_file: acl,
        ..AuthConfig::default()
    };
    (dir, config)
}

#[test]
fn anonymous_is_off_by_default_with_a_password_file() {
    let h = password::hash_password("pw").unwrap();
    let (_d, c) = files(&format!("alice:{h}\n"), None);
    let auth = Auth::new(c.clone()).unwrap();
    assert_eq!(auth.login(None, None), Err(Denied::AnonymousNotAllowed));
    assert_eq!(
        auth.login(Some("alice"), Some(b"pw")).unwrap().as_deref(),
        Some("alice")
    );
    assert_eq!(
        auth.login(Some("alice"), Some(b"no")),
        Err(Denied::BadCredentials)
    );
    assert_eq!(auth.login(Some("alice"), None), Err(Denied::BadCredentials));
    assert_eq!(
        auth.login(Some("eve"), Some(b"pw")),
        Err(Denied::BadCredentials)
    );
    let open = Auth::new(AuthConfig {
        allow_anonymous: Some(true),
        ..c
    })
    .unwrap();
    assert_eq!(open.login(None, None), Ok(None));
    assert_eq!(auth.metrics.logins_refused.load(Ordering::Relaxed), 4);
}

#[test]
fn verified_passwords_are_remembered_until_the_file_changes() {
    let h = password::hash_password("pw").unwrap();
    let (dir, c) = files(&format!("alice:{h}\n"), None);
    let auth = Auth::new(c).unwrap();
    assert!(auth.login(Some("alice"), Some(b"pw")).is_ok());
    // Remembered: a wrong password is still checked, and still wrong.
    assert_eq!(
        auth.login(Some("alice"), Some(b"pw2")),
        Err(Denied::BadCredentials)
    );
    let t = std::time::Instant::now();
    for _ in 0..50 {
        assert!(auth.login(Some("alice"), Some(b"pw")).is_ok());
    }
    assert!(
        t.elapsed() < std::time::Duration::from_millis(500),
        "50 cached logins took {:?}: the cache is not used",
        t.elapsed()
    );
    // A new password file (reload) forgets what was verified against the old one.
    let h2 = password::hash_password("new").unwrap();
    std::fs::write(dir.path().join("passwd"), format!("alice:{h2}\n")).unwrap();
    auth.reload().unwrap();
    assert_eq!(
        auth.login(Some("alice"), Some(b"pw")),
        Err(Denied::BadCredentials)
    );
    assert!(auth.login(Some("alice"), Some(b"new")).is_ok());
}

#[test]
fn reload_swaps_the_policy_and_keeps_it_on_a_bad_file() {
    let h = password::hash_password("pw").unwrap();
    let (dir, c) = files(&format!("alice:{h}\n"), Some("user alice\ntopic read a\n"));
    let auth = Auth::new(c).unwrap();
    let alice = Identity::user("alice");
    assert!(auth.allows(&alice, Access::Read, "a"));
    assert!(!auth.allows(&alice, Access::Read, "b"));
    std::fs::write(dir.path().join("acl"), "user alice\ntopic read b\n").unwrap();
    auth.reload().unwrap();
    assert!(auth.allows(&alice, Access::Read, "b"));
    std::fs::write(dir.path().join("acl"), "nonsense here\n").unwrap();
    assert!(auth.reload().is_err());
    assert!(auth.allows(&alice, Access::Read, "b"), "old policy kept");
}

#[test]
fn jwt_hs256_subject_and_claims() {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let secret = "0123456789abcdef0123456789abcdef";
    let auth = Auth::new(AuthConfig {
        jwt_hs256_secret: Some(secret.into()),
        ..AuthConfig::default()
    })
    .unwrap();
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 60;
    let key = EncodingKey::from_secret(secret.as_bytes());
    let t = encode(
        &Header::default(),
        &serde_json::json!({"sub": "alice", "exp": exp, "acl": {"read": ["r/#"]}}),
        &key,
    )
    .unwrap();
    let id = auth.verify_jwt(&t).unwrap();
    assert_eq!(id.username.as_deref(), Some("alice"));
    assert!(auth.allows(&id, Access::Read, "r/x"));
    assert!(!auth.allows(&id, Access::Write, "r/x"));
    let expired = encode(
        &Header::default(),
        &serde_json::json!({"sub": "alice", "exp": 1000}),
        &key,
    )
    .unwrap();
    assert_eq!(auth.verify_jwt(&expired).unwrap_err(), Denied::BadToken);
    let other = encode(
        &Header::default(),
        &serde_json::json!({"sub": "alice", "exp": exp}),
        &EncodingKey::from_secret(b"another secret another secret 12"),
    )
    .unwrap();
    assert_eq!(auth.verify_jwt(&other).unwrap_err(), Denied::BadToken);
    assert_eq!(auth.verify_jwt("garbage").unwrap_err(), Denied::BadToken);
    assert_eq!(
        Auth::open().verify_jwt(&t).unwrap_err(),
        Denied::TokensNotAccepted
    );
}

#[test]
fn short_hs256_secrets_are_refused() {
    let e = Auth::new(AuthConfig {
        jwt_hs256_secret: Some("short".into()),
        ..AuthConfig::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("too short"), "{e}");
}
