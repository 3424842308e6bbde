//! Who a client is and what it may do: one identity and one ACL for HTTP, CoAP and MQTT.
//!
//! The operator configures files in mosquitto's formats (`[auth]` in the config, or
//! `--password-file`, `--acl-file`, `--psk-file`, `--allow-anonymous`); every front-end asks
//! the same [`Auth`]:
//!
//! * **who** — [`Auth::login`] checks a username/password (MQTT CONNECT, HTTP Basic),
//!   [`Auth::verify_jwt`] a bearer token (HTTP), a DTLS PSK identity or a TLS client
//!   certificate's CN is a username the transport already proved; no credentials is anonymous,
//!   allowed or not by `allow_anonymous`;
//! * **what** — [`Auth::allows`] for a read or write of one topic, [`Auth::allows_subscribe`] for
//!   an MQTT filter (what the subscription then delivers is checked topic by topic).
//!
//! The files are parsed into one immutable [`Policy`] swapped atomically on [`Auth::reload`]
//! (SIGHUP): requests in flight finish with the policy they started with, connections stay up
//! and their next check sees the new rules. A file that fails to parse keeps the old policy.

pub mod acl;
pub mod password;
pub mod psk;
mod verified;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::Deserialize;

pub use acl::{Access, Acl, Subject};
pub use password::PasswordFile;
use verified::Verified;

/// `[auth]` in the config file.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, schemars::JsonSchema, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// mosquitto-format password file (`user:hash`); with one, anonymous access is off unless
    /// `allow_anonymous = true`.
    pub password_file: Option<PathBuf>,
    /// mosquitto-format ACL file; with one, what it does not grant is denied.
    pub acl_file: Option<PathBuf>,
    /// `identity:hexkey` lines for CoAP over DTLS (the identity is the username).
    pub psk_file: Option<PathBuf>,
    /// Whether clients without credentials are served. Default: true without a password file,
    /// false with one.
    pub allow_anonymous: Option<bool>,
    /// HS256 secret for HTTP bearer JWTs.
    pub jwt_hs256_secret: Option<String>,
    /// PEM file with the RSA public key for RS256 bearer JWTs.
    pub jwt_rs256_public_key: Option<PathBuf>,
    /// When set, a JWT's `iss` must equal it.
    pub jwt_issuer: Option<String>,
    /// When set, a JWT's `aud` must contain it.
    pub jwt_audience: Option<String>,
}

impl AuthConfig {
    /// The effective anonymous switch.
    pub fn anonymous_allowed(&self) -> bool {
        self.allow_anonymous.unwrap_or(self.password_file.is_none())
    }
}

/// Why the auth configuration could not be (re)loaded.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The password file.
    #[error(transparent)]
    Password(#[from] password::PasswordFileError),
    /// The ACL file.
    #[error(transparent)]
    Acl(#[from] acl::AclError),
    /// The PSK file.
    #[error(transparent)]
    Psk(#[from] psk::PskError),
    /// A bad line in the password or ACL file.
    #[error("{file} {}: line {line}: {reason}", path.display())]
    Line {
        /// Which file: `password file` or `ACL file`.
        file: &'static str,
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The JWT key.
    #[error("JWT key {what}: {reason}")]
    JwtKey {
        /// Which setting.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Why a client was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No credentials, and anonymous access is off (HTTP 401, CoAP 4.01, MQTT 0x05 / 0x87).
    #[error("credentials required: anonymous access is disabled")]
    AnonymousNotAllowed,
    /// A username the password file does not know, or a wrong password (HTTP 401, MQTT 0x04 /
    /// 0x86). One variant for both, so a client cannot tell which.
    #[error("bad username or password")]
    BadCredentials,
    /// A bearer token that is malformed, expired, or signed with another key.
    #[error("invalid bearer token")]
    BadToken,
    /// A bearer token, but no JWT key is configured.
    #[error("bearer tokens are not accepted: no JWT key is configured")]
    TokensNotAccepted,
}

/// Who a request or connection is.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// The username; `None` for anonymous clients.
    pub username: Option<Arc<str>>,
    /// The MQTT client id (for `%c` patterns); `None` for HTTP and CoAP.
    pub client_id: Option<Arc<str>>,
    /// Grants carried by a JWT; when present they replace the ACL file for this identity.
    pub grants: Option<Arc<Acl>>,
}

impl Identity {
    /// An anonymous client.
    pub fn anonymous() -> Self {
        Identity::default()
    }

    /// A client known by `username` (proved by the caller).
    pub fn user(username: impl Into<Arc<str>>) -> Self {
        Identity {
            username: Some(username.into()),
            ..Identity::default()
        }
    }

    /// The same identity with an MQTT client id.
    pub fn with_client_id(mut self, client_id: impl Into<Arc<str>>) -> Self {
        self.client_id = Some(client_id.into());
        self
    }

    /// As the ACL sees it.
    fn subject(&self) -> Subject<'_> {
        Subject {
            username: self.username.as_deref(),
            client_id: self.client_id.as_deref(),
        }
    }
}

/// Everything loaded from the files, swapped whole on reload.
#[derive(Default)]
pub struct Policy {
    /// The users; `None` without a password file.
    passwords: Option<PasswordFile>,
    /// The ACL; `None`: everything is allowed.
    acl: Option<Acl>,
    /// How JWTs are checked; `None`: bearer tokens are refused.
    jwt: Option<Jwt>,
    /// DTLS identities and keys; `None` without a PSK file (then `coaps` is off).
    psk: Option<psk::PskFile>,
    /// Serve clients without credentials.
    anonymous: bool,
    /// Recently verified passwords, so a client that sends Basic credentials with every HTTP
    /// request (or reconnects often) costs one argon2 verification per [`verified::VERIFIED_TTL`], not
    /// one per request: argon2id is built to be slow (~20 MiB and tens of ms), which would
    /// otherwise make every authenticated request a denial-of-service lever. Part of the
    /// policy, so a reload (a changed password file) starts it empty.
    verified: parking_lot::Mutex<Verified>,
}

/// A JWT verification key and its rules.
struct Jwt {
    /// The key.
    key: jsonwebtoken::DecodingKey,
    /// Algorithm, expiry, issuer and audience checks.
    validation: jsonwebtoken::Validation,
}

/// The claims ponte reads from a JWT.
#[derive(Debug, Deserialize)]
struct Claims {
    /// The username.
    sub: String,
    /// Optional explicit grants, replacing the ACL file for this token.
    #[serde(default)]
    acl: Option<ClaimsAcl>,
}

/// `"acl": {"read": [...], "write": [...]}` in a JWT.
#[derive(Debug, Deserialize)]
struct ClaimsAcl {
    /// Filters the bearer may read.
    #[serde(default)]
    read: Vec<String>,
    /// Filters the bearer may write.
    #[serde(default)]
    write: Vec<String>,
}

/// Counters for `$SYS` and logs.
#[derive(Debug, Default)]
pub struct AuthMetrics {
    /// Logins refused (bad credentials, anonymous not allowed, bad token).
    pub logins_refused: AtomicU64,
    /// Reads or writes refused by the ACL (including deliveries filtered out).
    pub acl_denied: AtomicU64,
}

/// Whether `topic` is written by the broker alone: `$SYS` and everything under it (the
/// broker's own statistics). No client may write there, whatever the ACL grants — as in
/// mosquitto — so a client cannot overwrite or fake the broker's numbers. Reading is
/// governed by the ACL as usual.
pub fn broker_only(topic: &str) -> bool {
    topic == "$SYS" || topic.starts_with("$SYS/")
}

/// Why a write to a [`broker_only`] topic is refused, for every protocol's error message.
pub const BROKER_ONLY: &str =
    "$SYS topics are written by the broker alone (its statistics); clients may read them but not write them";

/// The one authority every front-end asks.
pub struct Auth {
    /// Where the files are, for reload.
    config: AuthConfig,
    /// The current policy.
    policy: ArcSwap<Policy>,
    /// Refusals, counted.
    pub metrics: AuthMetrics,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("config", &self.config)
            .finish()
    }
}

impl Auth {
    /// Load the files named by `config`.
    pub fn new(config: AuthConfig) -> Result<Self, AuthError> {
        let policy = load(&config)?;
        Ok(Auth {
            config,
            policy: ArcSwap::from_pointee(policy),
            metrics: AuthMetrics::default(),
        })
    }

    /// No files: everyone is anonymous and allowed everything.
    pub fn open() -> Self {
        Auth {
            config: AuthConfig::default(),
            policy: ArcSwap::from_pointee(Policy {
                anonymous: true,
                ..Policy::default()
            }),
            metrics: AuthMetrics::default(),
        }
    }

    /// Re-read the files (SIGHUP). On error the old policy stays in force.
    pub fn reload(&self) -> Result<(), AuthError> {
        let policy = load(&self.config)?;
        self.policy.store(Arc::new(policy));
        Ok(())
    }

    /// The configuration this was loaded from.
    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// Whether any ACL is in force (front-ends skip per-message checks when not).
    pub fn acl_active(&self) -> bool {
        self.policy.load().acl.is_some()
    }

    /// Users of the password file and rules of the ACL file in force (`None` without the
    /// file), for the start-up line.
    pub fn loaded(&self) -> (Option<usize>, Option<usize>) {
        let p = self.policy.load();
        (
            p.passwords.as_ref().map(PasswordFile::len),
            p.acl.as_ref().map(acl::Acl::rule_count),
        )
    }

    /// Whether anonymous clients are served.
    pub fn anonymous_allowed(&self) -> bool {
        self.policy.load().anonymous
    }

    /// Check MQTT CONNECT / HTTP Basic credentials: `Ok(Some(user))` for a verified user,
    /// `Ok(None)` for an allowed anonymous client.
    ///
    /// Without a password file a username is taken as given (as mosquitto does); whether it
    /// may connect at all is `allow_anonymous`. SECURITY.md says what that means.
    pub fn login(
        &self,
        username: Option<&str>,
        password: Option<&[u8]>,
    ) -> Result<Option<Arc<str>>, Denied> {
        let policy = self.policy.load();
        let result = match (username, &policy.passwords) {
            (None, _) if policy.anonymous => Ok(None),
            (None, _) => Err(Denied::AnonymousNotAllowed),
            (Some(u), Some(file)) => match password {
                Some(p) => {
                    let now = std::time::Instant::now();
                    if policy.verified.lock().hit(u, p, now) || file.verify(u, p) {
                        policy.verified.lock().insert(u, p, now);
                        Ok(Some(Arc::from(u)))
                    } else {
                        Err(Denied::BadCredentials)
                    }
                }
                None => Err(Denied::BadCredentials),
            },
            (Some(u), None) if policy.anonymous => Ok(Some(Arc::from(u))),
            (Some(_), None) => Err(Denied::BadCredentials),
        };
        if result.is_err() {
            self.metrics.logins_refused.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// [`Auth::login`] for async callers: a password that was not verified recently is
    /// checked on tokio's blocking pool, so an argon2id verification (tens of ms) never stalls
    /// the runtime threads serving other connections.
    pub async fn login_async(
        self: &Arc<Self>,
        username: Option<&str>,
        password: Option<&[u8]>,
    ) -> Result<Option<Arc<str>>, Denied> {
        if let (Some(u), Some(p)) = (username, password) {
            let slow = {
                let policy = self.policy.load();
                policy.passwords.is_some()
                    && !policy.verified.lock().hit(u, p, std::time::Instant::now())
            };
            if slow {
                let (me, u, p) = (self.clone(), u.to_owned(), p.to_vec());
                return tokio::task::spawn_blocking(move || me.login(Some(&u), Some(&p)))
                    .await
                    .unwrap_or(Err(Denied::BadCredentials));
            }
        }
        self.login(username, password)
    }

    /// Check a bearer JWT: its `sub` is the username; an `acl` claim, when present, replaces
    /// the ACL file for this token.
    pub fn verify_jwt(&self, token: &str) -> Result<Identity, Denied> {
        let policy = self.policy.load();
        let result = match &policy.jwt {
            None => Err(Denied::TokensNotAccepted),
            Some(jwt) => jsonwebtoken::decode::<Claims>(token, &jwt.key, &jwt.validation)
                .map_err(|_| Denied::BadToken)
                .and_then(|data| {
                    let grants = match data.claims.acl {
                        Some(c) => Some(Arc::new(
                            Acl::from_grants(&c.read, &c.write).map_err(|_| Denied::BadToken)?,
                        )),
                        None => None,
                    };
                    if data.claims.sub.is_empty() {
                        return Err(Denied::BadToken);
                    }
                    Ok(Identity {
                        username: Some(Arc::from(data.claims.sub)),
                        client_id: None,
                        grants,
                    })
                }),
        };
        if result.is_err() {
            self.metrics.logins_refused.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// The DTLS pre-shared key of `identity`, from the PSK file as last (re)loaded.
    pub fn psk_key(&self, identity: &[u8]) -> Option<Vec<u8>> {
        self.policy
            .load()
            .psk
            .as_ref()
            .and_then(|f| f.key(identity))
            .map(<[u8]>::to_vec)
    }

    /// May `who` read or write `topic`?
    pub fn allows(&self, who: &Identity, access: Access, topic: &str) -> bool {
        if access == Access::Write && broker_only(topic) {
            self.metrics.acl_denied.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let ok = match &who.grants {
            Some(g) => g.allows(who.subject(), access, topic),
            None => match &self.policy.load().acl {
                Some(acl) => acl.allows(who.subject(), access, topic),
                None => true,
            },
        };
        if !ok {
            self.metrics.acl_denied.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// May `who` subscribe to `filter` (some topic in it is readable, and no deny rule covers
    /// all of it)? What the subscription delivers is still checked with [`Auth::allows`].
    pub fn allows_subscribe(&self, who: &Identity, filter: &str) -> bool {
        let ok = match &who.grants {
            Some(g) => g.allows_subscribe(who.subject(), filter),
            None => match &self.policy.load().acl {
                Some(acl) => acl.allows_subscribe(who.subject(), filter),
                None => true,
            },
        };
        if !ok {
            self.metrics.acl_denied.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// May `who` read every topic `filter` matches (see [`Acl::allows_read_all`])? MQTT asks
    /// this for shared subscriptions, whose deliveries cannot be filtered per member.
    pub fn allows_read_all(&self, who: &Identity, filter: &str) -> bool {
        let ok = match &who.grants {
            Some(g) => g.allows_read_all(who.subject(), filter),
            None => match &self.policy.load().acl {
                Some(acl) => acl.allows_read_all(who.subject(), filter),
                None => true,
            },
        };
        if !ok {
            self.metrics.acl_denied.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Do per-topic read checks matter for `who` (an ACL file or token grants are in force)?
    pub fn filters_reads(&self, who: &Identity) -> bool {
        who.grants.is_some() || self.acl_active()
    }
}

impl crate::reload::Reload for Auth {
    fn name(&self) -> &'static str {
        "auth files (password, ACL, PSK, JWT key)"
    }

    fn reload(&self) -> Result<(), String> {
        Auth::reload(self).map_err(|e| e.to_string())
    }
}

/// Parse every configured file into a policy.
fn load(config: &AuthConfig) -> Result<Policy, AuthError> {
    // A bad line is reported with its file, as the PSK file's errors are.
    let passwords = match config.password_file.as_deref() {
        None => None,
        Some(path) => Some(PasswordFile::load(path).map_err(|e| match e {
            password::PasswordFileError::Line { line, reason } => AuthError::Line {
                file: "password file",
                path: path.to_owned(),
                line,
                reason,
            },
            e => e.into(),
        })?),
    };
    let acl = match config.acl_file.as_deref() {
        None => None,
        Some(path) => Some(Acl::load(path).map_err(|e| match e {
            acl::AclError::Line { line, reason } => AuthError::Line {
                file: "ACL file",
                path: path.to_owned(),
                line,
                reason,
            },
            e => e.into(),
        })?),
    };
    let jwt = jwt_key(config)?;
    let psk = config
        .psk_file
        .as_deref()
        .map(psk::PskFile::load)
        .transpose()?;
    Ok(Policy {
        passwords,
        acl,
        jwt,
        psk,
        anonymous: config.anonymous_allowed(),
        verified: parking_lot::Mutex::new(Verified::new()),
    })
}

/// Build the JWT verifier from the config, if one is configured.
fn jwt_key(config: &AuthConfig) -> Result<Option<Jwt>, AuthError> {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    let (key, alg) = match (&config.jwt_hs256_secret, &config.jwt_rs256_public_key) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            return Err(AuthError::JwtKey {
                what: "jwt_hs256_secret / jwt_rs256_public_key".into(),
                reason: "configure one of them, not both".into(),
            })
        }
        (Some(secret), None) => {
            if secret.len() < 32 {
                return Err(AuthError::JwtKey {
                    what: "jwt_hs256_secret".into(),
                    reason: format!(
                        "{} bytes is too short for HS256; use at least 32",
                        secret.len()
                    ),
                });
            }
            (
                DecodingKey::from_secret(secret.as_bytes()),
                Algorithm::HS256,
            )
        }
        (None, Some(path)) => {
            let what = path.display().to_string();
            let pem = std::fs::read(path).map_err(|e| AuthError::JwtKey {
                what: what.clone(),
                reason: e.to_string(),
            })?;
            let key = DecodingKey::from_rsa_pem(&pem).map_err(|e| AuthError::JwtKey {
                what,
                reason: format!("not an RSA public key in PEM: {e}"),
            })?;
            (key, Algorithm::RS256)
        }
    };
    let mut validation = Validation::new(alg);
    validation.set_required_spec_claims(&["exp", "sub"]);
    if let Some(iss) = &config.jwt_issuer {
        validation.set_issuer(&[iss]);
    }
    match &config.jwt_audience {
        Some(aud) => validation.set_audience(&[aud]),
        None => validation.validate_aud = false,
    }
    Ok(Some(Jwt { key, validation }))
}

#[cfg(test)]
mod tests;
