//! Access control for one MQTT connection: the few places where [`client`](super::client) asks
//! the gateway's [`Auth`] whether this client may do something.
//!
//! * **CONNECT** — [`Access::login`]: the username/password, then the will's topic (a will
//!   the client could not publish itself is refused with the connection, so it cannot be used
//!   to write where the client may not). Runs before the session is opened, so a refused
//!   client never takes over anyone's session. A TLS client certificate's CN used as the
//!   username (`tls.use_identity_as_username`) is taken as proved: no password check.
//! * **PUBLISH** and the will when it fires — [`Access::may_publish`]: a write check on the
//!   topic (the will is checked again because the ACL may have been reloaded since CONNECT).
//! * **SUBSCRIBE** — [`Access::may_subscribe`]: the filter may be granted when some topic in
//!   it is readable; a shared subscription (`$share/g/f`) only when *every* topic in `f` is.
//! * **Delivery** — [`Access::may_receive`]: each message taken from the session's mailbox is
//!   checked before it is sent, so a filter wider than what is readable (`#`) only ever
//!   carries readable topics, retained values included. Callers skip it when
//!   [`Access::reads_filtered`] is false (no ACL): then every read is allowed and the hot path
//!   costs one atomic load per batch.
//!
//! Shared subscriptions are checked whole at SUBSCRIBE because the broker hands each of their
//! messages to one member: a member that filtered a message out would lose it for the whole
//! group. After a reload narrows a member's rights its shared deliveries are filtered like any
//! other (dropped and counted), until it resubscribes.
//!
//! Every refusal is counted in [`Auth::metrics`](crate::auth::AuthMetrics) (by `Auth`) and
//! logged at debug level here.

use std::net::SocketAddr;
use std::sync::Arc;

use ponte_mqtt::{reason, Connect};

use crate::auth::{Access as Op, Auth, Denied, Identity};

/// Who is on this connection, and the authority to ask about them.
#[derive(Debug, Clone)]
pub(crate) struct Access {
    /// The authority and where refusals are counted: one for the front-end, so that each
    /// connection holds one pointer for both (issue 16: bytes of every idle connection).
    authority: Arc<Authority>,
    /// Username and client id once CONNECT was accepted; anonymous before.
    identity: Identity,
}

/// What every connection's [`Access`] asks and tells, shared by the front-end.
#[derive(Debug)]
pub(crate) struct Authority {
    /// The gateway's one authority (shared by every protocol; reloaded on SIGHUP).
    auth: Arc<Auth>,
    /// Where refused logins and refused or withheld messages are counted
    /// (`ponte_auth_failures_total`, `ponte_messages_dropped_total{reason="acl_denied"}`).
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl Authority {
    /// Ask `auth`, counting refusals in `metrics` when there are some.
    pub(crate) fn new(auth: Arc<Auth>, metrics: Option<Arc<crate::metrics::Metrics>>) -> Self {
        Authority { auth, metrics }
    }
}

/// Why a CONNECT is refused: the v5 reason code (the machine sends its 3.1.1 equivalent to
/// 3.1.1 clients: 0x86 → 0x04, 0x87 → 0x05, others → 0x03) and a Reason String for v5
/// clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// 0x86 Bad User Name or Password, 0x87 Not authorized, or 0x80 when the check itself
    /// failed.
    pub code: u8,
    /// What was wrong, for the client's logs (v5 only).
    pub reason: String,
}

impl Access {
    /// A connection that has not sent CONNECT yet.
    pub(super) fn new(authority: Arc<Authority>) -> Self {
        Access {
            authority,
            identity: Identity::anonymous(),
        }
    }

    /// Check a CONNECT's credentials and will; on success this connection is `client_id`
    /// with the proved username (for `%u` and `%c` in ACL patterns). `proven`: the transport
    /// already proved CONNECT's username (a TLS client certificate's CN under
    /// `tls.use_identity_as_username`), so no password is checked, as in mosquitto.
    ///
    /// Verifying a password hash is deliberately slow (argon2id, PBKDF2): through
    /// [`crate::auth::Auth::login_async`] it runs on the blocking pool unless verified
    /// recently, so a burst of CONNECTs does not stall the connections served by the same
    /// runtime threads.
    pub(super) async fn login(
        &mut self,
        connect: &Connect,
        client_id: &str,
        proven: bool,
        peer: SocketAddr,
    ) -> Result<(), Refusal> {
        let checked = match &connect.username {
            Some(user) if proven => Ok(Some(Arc::from(user.as_str()))),
            None => self.authority.auth.login(None, connect.password.as_deref()),
            Some(user) => {
                self.authority
                    .auth
                    .login_async(Some(user), connect.password.as_deref())
                    .await
            }
        };
        let username = match checked {
            Ok(u) => u,
            Err(denied) => {
                // As mosquitto does: at info, who and from where, never the password.
                tracing::info!(protocol = %"mqtt", %peer, client_id = %client_id, username = %connect.username.as_deref().unwrap_or(""), reason = %denied, "login refused");
                if let Some(m) = &self.authority.metrics {
                    m.auth_failure(crate::metrics::Protocol::Mqtt);
                }
                let code = match denied {
                    Denied::AnonymousNotAllowed => reason::NOT_AUTHORIZED,
                    _ => reason::BAD_USER_NAME_OR_PASSWORD,
                };
                return Err(Refusal {
                    code,
                    reason: denied.to_string(),
                });
            }
        };
        self.identity = Identity {
            username,
            client_id: Some(Arc::from(client_id)),
            grants: None,
        };
        if let Some(will) = &connect.will {
            if !self.may_publish(&will.topic) {
                return Err(Refusal {
                    code: reason::NOT_AUTHORIZED,
                    reason: format!(
                        "not authorized to publish the will on topic {:?}",
                        will.topic
                    ),
                });
            }
        }
        Ok(())
    }

    /// The session's client id, once it is open: the identity shares its allocation.
    pub(super) fn share_client_id(&mut self, client_id: &Arc<str>) {
        if self.identity.client_id.as_deref() == Some(&**client_id) {
            self.identity.client_id = Some(client_id.clone());
        }
    }

    /// May this client publish to `topic` (a PUBLISH, or its will)?
    pub(super) fn may_publish(&self, topic: &str) -> bool {
        let ok = self.authority.auth.allows(&self.identity, Op::Write, topic);
        if !ok {
            if let Some(m) = &self.authority.metrics {
                m.acl_dropped();
            }
            tracing::debug!(user = ?self.identity.username, client_id = ?self.identity.client_id, topic, "MQTT publish denied by the ACL");
        }
        ok
    }

    /// May this client subscribe to `filter` as written in SUBSCRIBE (`$share/g/f` is
    /// checked on `f`, and must be readable whole)?
    pub(super) fn may_subscribe(&self, filter: &str) -> bool {
        let ok = match shared_inner(filter) {
            Some(inner) => self.authority.auth.allows_read_all(&self.identity, inner),
            None => self.authority.auth.allows_subscribe(&self.identity, filter),
        };
        if !ok {
            tracing::debug!(user = ?self.identity.username, client_id = ?self.identity.client_id, filter, "MQTT subscription denied by the ACL");
        }
        ok
    }

    /// Must each delivery be checked with [`Access::may_receive`]? False without an ACL.
    pub(super) fn reads_filtered(&self) -> bool {
        self.authority.auth.filters_reads(&self.identity)
    }

    /// May this client receive a message on `topic`?
    pub(super) fn may_receive(&self, topic: &str) -> bool {
        let ok = self.authority.auth.allows(&self.identity, Op::Read, topic);
        if !ok {
            if let Some(m) = &self.authority.metrics {
                m.acl_dropped();
            }
            tracing::debug!(user = ?self.identity.username, client_id = ?self.identity.client_id, topic, "MQTT delivery withheld by the ACL");
        }
        ok
    }
}

/// The filter inside `$share/name/filter`, `None` for other filters.
fn shared_inner(filter: &str) -> Option<&str> {
    filter
        .strip_prefix("$share/")
        .and_then(|rest| rest.split_once('/'))
        .map(|(_, inner)| inner)
}

/// The text of a v5 PUBACK/PUBREC Reason String for a publish the ACL refused.
pub(crate) fn publish_denied_reason(topic: &str) -> String {
    if crate::auth::broker_only(topic) {
        return format!("topic {topic:?}: {}", crate::auth::BROKER_ONLY);
    }
    format!("not authorized to publish to topic {topic:?}")
}

/// Why a filter was refused, for the v5 SUBACK Reason String (which names the filter).
pub(crate) const SUBSCRIBE_DENIED: &str = "not authorized by the ACL";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_subscription_filters_are_checked_on_their_inner_filter() {
        assert_eq!(shared_inner("$share/g/a/#"), Some("a/#"));
        assert_eq!(shared_inner("$share/g/#"), Some("#"));
        assert_eq!(shared_inner("a/#"), None);
        assert_eq!(shared_inner("$SYS/#"), None);
    }
}
