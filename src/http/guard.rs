//! Who an HTTP request is, and whether it may read or write the topic it names (issue 5).
//!
//! **Authentication** reads the one `Authorization` header:
//! - none: an anonymous client, served or refused by `[auth] allow_anonymous`;
//! - `Basic` (RFC 7617): `user:password`, checked with [`Auth::login`] (the password file);
//! - `Bearer` (RFC 6750): a JWT, checked with [`Auth::verify_jwt`] (`sub` is the username, an
//!   `acl` claim replaces the ACL file for the token);
//! - any other scheme: 401, as if no credentials were sent, with the challenges we support.
//!
//! A refusal is 401 with `WWW-Authenticate: Basic realm="ponte", Bearer realm="ponte"`
//! (RFC 9110 §11.6.1 requires a challenge on every 401); a bearer token that was understood but
//! is not valid (bad signature, expired, wrong issuer/audience, or tokens not accepted) adds
//! `error="invalid_token"` to the Bearer challenge (RFC 6750 §3.1).
//!
//! A header that cannot be parsed at all — two `Authorization` fields, bytes that are not visible
//! ASCII, a scheme without credentials, Basic credentials that are not base64 of `user:password`,
//! a bearer token with characters outside RFC 6750's `b64token` — is **400**, not 401. RFC 9110
//! §15.5.1 gives 400 to malformed request syntax and RFC 6750 §3.1 says a malformed bearer request
//! is `invalid_request` with 400; answering 401 would tell the client "authenticate" when what it
//! must do is fix how it encodes the credentials it already has (a browser would prompt again
//! for a password it would encode the same broken way). RFC 7235's 401 is kept for credentials
//! that parse but do not prove an identity.
//!
//! **Authorization** is checked on the parsed [`TopicName`] — after each path segment was
//! percent-decoded on its own and `+`, `#`, NUL and encoded `/` were refused — so no encoding
//! trick reaches a topic other than the one the ACL was asked about. A client that sent
//! credentials and is denied gets 403 (RFC 9110 §15.5.4; for a bearer token with
//! `error="insufficient_scope"`, RFC 6750 §3.1). An anonymous client that is denied gets 401
//! with the challenges instead: it lacks credentials, and sending some may help (§15.5.2).
//! The check comes before the value is looked up, so a refusal never tells whether a value
//! exists. Refusals are counted by [`Auth`]'s metrics and logged at debug.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use base64::Engine as _;
use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderMap, StatusCode};

use super::problem::Problem;
use crate::auth::{Access, Auth, Denied, Identity};
use crate::model::TopicName;

/// The challenges every 401 carries: the two schemes we accept.
pub const CHALLENGE: &str = r#"Basic realm="ponte", Bearer realm="ponte""#;

/// How the caller proved who it is; decides how a refusal is worded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// No `Authorization` header.
    Anonymous,
    /// `Authorization: Basic`.
    Basic,
    /// `Authorization: Bearer` (a JWT).
    Bearer,
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who it is, as the ACL sees it (username, and token grants for a JWT).
    pub identity: Identity,
    /// Which credentials proved it: an anonymous refusal is 401, others 403.
    pub via: Via,
}

/// Who sent `headers`: an identity, or the 400/401 problem to answer with.
pub async fn authenticate(auth: &Arc<Auth>, headers: &HeaderMap) -> Result<Caller, Problem> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return match auth.login(None, None) {
            Ok(_) => Ok(Caller {
                identity: Identity::anonymous(),
                via: Via::Anonymous,
            }),
            Err(denied) => {
                tracing::debug!(reason = %denied, "HTTP request refused: no credentials");
                Err(unauthorized(
                    "this request has no Authorization header and anonymous access is disabled: send Basic credentials (curl -u user:password) or a bearer token".into(),
                    None,
                ))
            }
        };
    };
    if values.next().is_some() {
        return Err(malformed(
            auth,
            "the request has more than one Authorization header; send exactly one".into(),
            None,
        ));
    }
    let Ok(text) = value.to_str() else {
        return Err(malformed(
            auth,
            "the Authorization header is not visible ASCII (RFC 9110 §5.5); Basic credentials must be base64-encoded".into(),
            None,
        ));
    };
    let text = text.trim();
    let (scheme, credentials) = text.split_once(' ').unwrap_or((text, ""));
    let credentials = credentials.trim_start();
    // Auth schemes are case-insensitive (RFC 9110 §11.1).
    if scheme.eq_ignore_ascii_case("basic") {
        basic(auth, credentials).await
    } else if scheme.eq_ignore_ascii_case("bearer") {
        bearer(auth, credentials)
    } else {
        auth.metrics.logins_refused.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(scheme, "HTTP request refused: unsupported auth scheme");
        Err(unauthorized(
            format!(
                "the Authorization scheme {scheme:?} is not supported here; use Basic or Bearer"
            ),
            None,
        ))
    }
}

/// `Authorization: Basic base64(user:password)` (RFC 7617 §2).
async fn basic(auth: &Arc<Auth>, credentials: &str) -> Result<Caller, Problem> {
    if credentials.is_empty() {
        return Err(malformed(
            auth,
            "the Authorization header says Basic but carries no credentials; expected `Basic base64(user:password)`".into(),
            None,
        ));
    }
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(credentials) else {
        return Err(malformed(
            auth,
            "the Basic credentials are not standard base64 (RFC 7617 §2); expected `Basic base64(user:password)`".into(),
            None,
        ));
    };
    let Some(colon) = decoded.iter().position(|b| *b == b':') else {
        return Err(malformed(
            auth,
            "the Basic credentials decode to no `user:password` pair (no colon, RFC 7617 §2)"
                .into(),
            None,
        ));
    };
    let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
    let Ok(user) = std::str::from_utf8(user) else {
        return Err(malformed(
            auth,
            "the username in the Basic credentials is not UTF-8 (RFC 7617 §2.1)".into(),
            None,
        ));
    };
    if user.is_empty() {
        // Without a password file `login` takes any username as given; an empty one would name
        // no ACL block and no `%u`, so it is refused like a wrong password.
        auth.metrics.logins_refused.fetch_add(1, Ordering::Relaxed);
        tracing::debug!("HTTP request refused: empty Basic username");
        return Err(unauthorized("bad username or password".into(), None));
    }
    match auth.login_async(Some(user), Some(password)).await {
        Ok(Some(name)) => Ok(Caller {
            identity: Identity::user(name),
            via: Via::Basic,
        }),
        // `login` never answers anonymous to a username; treat it as that user anyway.
        Ok(None) => Ok(Caller {
            identity: Identity::user(user),
            via: Via::Basic,
        }),
        Err(denied) => {
            tracing::debug!(user, reason = %denied, "HTTP request refused: Basic credentials");
            Err(unauthorized(denied.to_string(), None))
        }
    }
}

/// `Authorization: Bearer <JWT>` (RFC 6750 §2.1).
fn bearer(auth: &Auth, token: &str) -> Result<Caller, Problem> {
    if !is_b64token(token) {
        return Err(malformed(
            auth,
            "the bearer token is missing or has characters outside RFC 6750's b64token (letters, digits, - . _ ~ + / and trailing =)".into(),
            Some(r#"Bearer realm="ponte", error="invalid_request""#),
        ));
    }
    match auth.verify_jwt(token) {
        Ok(identity) => Ok(Caller {
            identity,
            via: Via::Bearer,
        }),
        Err(denied) => {
            tracing::debug!(reason = %denied, "HTTP request refused: bearer token");
            let detail = match denied {
                Denied::TokensNotAccepted => denied.to_string(),
                _ => "the bearer token is not valid: malformed, expired, not yet valid, signed with another key, or for another issuer or audience".into(),
            };
            Err(unauthorized(
                detail,
                Some(r#"Basic realm="ponte", Bearer realm="ponte", error="invalid_token""#),
            ))
        }
    }
}

/// The username a `Basic` `Authorization` header claims (never its password), for logging
/// a refused login.
pub fn claimed_user(headers: &HeaderMap) -> Option<String> {
    let text = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, credentials) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(credentials.trim())
        .ok()?;
    let colon = decoded.iter().position(|b| *b == b':')?;
    Some(String::from_utf8_lossy(&decoded[..colon]).into_owned())
}

/// RFC 6750 §2.1: `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

/// May `caller` have `access` to `topic`? `Err` is the 401/403 to answer with.
pub fn authorize(
    auth: &Auth,
    caller: &Caller,
    access: Access,
    topic: &TopicName,
) -> Result<(), Problem> {
    if access == Access::Write && crate::auth::broker_only(topic.as_str()) {
        // Nobody may write there, so credentials would not help: 403, not 401.
        auth.metrics.acl_denied.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(topic = %topic, "HTTP write to a $SYS topic refused");
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            format!("{topic:?}: {}", crate::auth::BROKER_ONLY),
        ));
    }
    if auth.allows(&caller.identity, access, topic.as_str()) {
        return Ok(());
    }
    let verb = match access {
        Access::Read => "read",
        Access::Write => "write",
    };
    tracing::debug!(
        user = caller.identity.username.as_deref().unwrap_or("<anonymous>"),
        access = verb,
        topic = %topic,
        "HTTP request refused by the ACL"
    );
    match (caller.via, &caller.identity.username) {
        (Via::Anonymous, _) | (_, None) => Err(unauthorized(
            format!("anonymous clients may not {verb} {topic:?}; authenticate (Basic or Bearer) as a user who may"),
            None,
        )),
        (via, Some(user)) => {
            let source = if caller.identity.grants.is_some() {
                "the token's acl claim"
            } else {
                "the ACL"
            };
            let problem = Problem::new(
                StatusCode::FORBIDDEN,
                format!("{user:?} may not {verb} {topic:?} ({source} does not grant it)"),
            );
            Err(if via == Via::Bearer {
                problem.with_header(
                    WWW_AUTHENTICATE,
                    r#"Bearer realm="ponte", error="insufficient_scope""#,
                )
            } else {
                problem
            })
        }
    }
}

/// 401 with the challenges (or `challenge` when a more specific one applies).
fn unauthorized(detail: String, challenge: Option<&str>) -> Problem {
    Problem::new(StatusCode::UNAUTHORIZED, detail)
        .with_header(WWW_AUTHENTICATE, challenge.unwrap_or(CHALLENGE))
}

/// 400 for an `Authorization` header that cannot be parsed (see the module documentation for
/// why 400 and not 401); counted as a refused login.
fn malformed(auth: &Auth, detail: String, challenge: Option<&str>) -> Problem {
    auth.metrics.logins_refused.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(%detail, "HTTP request refused: malformed Authorization header");
    let problem = Problem::bad_request(detail);
    match challenge {
        Some(c) => problem.with_header(WWW_AUTHENTICATE, c),
        None => problem,
    }
}
