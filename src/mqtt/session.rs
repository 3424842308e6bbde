//! MQTT sessions: what outlives a connection (3.1.1 Clean Session 0, v5 Session Expiry > 0).
//!
//! A session owns the client's [`Mailbox`] (so messages keep arriving while the client is
//! away), its subscriptions, and the protocol state of unfinished QoS 1/2 exchanges that a
//! connection left behind. A connection *owns* a session ([`Session::own`], an [`Owner`])
//! for its whole life, which is how a takeover (MQTT-3.1.4-2) waits for the old connection
//! to hand the session over before the new one resumes it.
//!
//! Every CONNECT that resumes or replaces a session makes a *claim* on it, numbered; only
//! the latest claim may own it. A connection whose claim is overtaken — a third CONNECT
//! with the same client id while the second still waits for the first to let go — gives
//! up without a CONNACK, or is kicked as soon as it owns the session, so the newest
//! connection always wins and never waits on one that was itself taken over.
//!
//! What a persistent session keeps across a crash is not kept here: its
//! [`DurableSession`] (from [`crate::durable`], the one owner of durable state) is told
//! what changed — the record on open, (un)subscribe and close, the protocol state once per
//! turn of the connection — and answers with the receipts to await.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use parking_lot::Mutex;
use ponte_mqtt::{Connection, SessionState};

use super::wire;
use super::ClientInfo;
use crate::broker::doorbell::Doorbell;
use crate::broker::mailbox::Mailbox;
use crate::broker::Broker;
use crate::durable::{DurableSession, DurableSessions, Receipt, Record};
use crate::model::{RetainHandling, SubOptions, TopicFilter};

/// Session Expiry Interval meaning "never expires" (MQTT 5 §3.1.2.11.2: 0xFFFFFFFF).
pub const NEVER: u32 = u32::MAX;

/// One client's session.
#[derive(Debug)]
pub struct Session {
    /// The client identifier it belongs to.
    pub client_id: Arc<str>,
    /// Whether it was opened to outlive the connection (expiry > 0): decides whether it
    /// has a durable side and whether it stays when its connection ends.
    pub persistent: bool,
    /// Where the broker queues the client's messages, online or away.
    pub mailbox: Arc<Mailbox>,
    /// The durable side of a persistent session when the broker keeps sessions; boxed, as
    /// most sessions have none.
    pub durable: Option<Box<DurableSession>>,
    /// The rest, changed by the owning connection, the registry and the expiry sweep: one
    /// short lock, never held across I/O or an await.
    state: Mutex<State>,
}

/// The mutable part of a [`Session`]. One per client, connected or away, so what most
/// sessions never have is boxed (issue 16: an idle connection's session was 424 bytes).
#[derive(Debug, Default)]
struct State {
    /// Seconds the session lives on once the client is away: 0 ends it at disconnect,
    /// [`NEVER`] keeps it. A v5 DISCONNECT may change it.
    expiry: u32,
    /// Whether a connection has it, or since when its client is away: one or the other,
    /// never both (32 bytes a session fewer than both side by side).
    presence: Presence,
    /// The client's subscriptions with their options: to remove them from the index when
    /// the session ends, to count them against `max_subscriptions`, and to store them.
    subscriptions: Subscriptions,
    /// Unfinished QoS 1/2 exchanges saved by the last connection, resumed by the next.
    saved: Option<Box<SessionState>>,
    /// The owning connection's takeover bell: rung to make it close (MQTT-3.1.4-2). Each
    /// connection installs its own, so a ring meant for an old connection can never be
    /// left behind for the next one.
    kick: Option<Arc<Doorbell>>,
    /// A connection owns the session ([`Session::own`] until its [`Owner`] is dropped).
    /// A flag under this lock, not a lock of its own: an `Arc<tokio::sync::Mutex>` was
    /// a 64-byte block of every connection (issue 16).
    owned: bool,
    /// The number of the latest claim (see the module docs): bumped by every takeover,
    /// so a connection holding an older number knows it was taken over, even before it
    /// installed its bell (in a cluster, another node may take the session while the
    /// connection still claims it there).
    claims: u32,
    /// How many wait for the owner to let go (or for their claim to be overtaken): a
    /// release or takeover wakes them ([`released`]), and a session with waiters is being
    /// taken back, so it does not expire (between one owner's release and the next
    /// one's taking it, it may be away and past its expiry).
    waiters: u32,
    /// Ended for good ([`Session::discard`]): a CONNECT with Clean Start replaced it, or
    /// it expired. A delayed will still goes out for it (MQTT-3.1.3-9 counts only a
    /// connection to this session as the client coming back).
    ended: bool,
}

/// How many [`RELEASED`] notifiers the sessions share.
const SHARDS: usize = 64;

/// Where connections wait to own a session, or for one to be let go: shared by the
/// sessions, as one per session would be 8 bytes of every session for what only a
/// takeover needs, and in shards, so that in a reconnect storm a release wakes the
/// waiters of a 64th of the sessions, not all of them. A release wakes its shard only
/// when its session has waiters, and each woken waiter checks its own session again.
static RELEASED: [tokio::sync::Notify; SHARDS] =
    [const { tokio::sync::Notify::const_new() }; SHARDS];

/// The notifier `session`'s waiters wait on.
fn released(session: &Session) -> &'static tokio::sync::Notify {
    // Sessions are heap blocks of 160 bytes: the bits below 16 say nothing.
    &RELEASED[(std::ptr::from_ref(session) as usize >> 4) % SHARDS]
}

/// A waiter counted in its session's [`State::waiters`] while it waits: uncounted when
/// it checks again, or if its future is dropped while waiting (a connection closed).
struct Waiting<'a> {
    session: &'a Session,
    counted: bool,
}

impl Waiting<'_> {
    /// Under the session's lock: stop counting this waiter, if it was.
    fn uncount(&mut self, st: &mut State) {
        if std::mem::take(&mut self.counted) {
            st.waiters -= 1;
        }
    }

    /// Under the session's lock: count this waiter, and wait for the session's next
    /// release or takeover (the future is made under the lock, so none is missed).
    fn count(&mut self, st: &mut State) -> tokio::sync::futures::Notified<'static> {
        st.waiters += 1;
        self.counted = true;
        released(self.session).notified()
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.counted {
            self.session.state.lock().waiters -= 1;
        }
    }
}

/// A connection's ownership of its session (see [`Session::own`]): let go when dropped,
/// which wakes whoever waits to take the session over.
#[derive(Debug)]
pub struct Owner(Arc<Session>);

impl Owner {
    /// The session owned.
    pub fn session(&self) -> &Arc<Session> {
        &self.0
    }
}

impl std::ops::Deref for Owner {
    type Target = Arc<Session>;

    fn deref(&self) -> &Arc<Session> {
        &self.0
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        let waited = {
            let mut st = self.0.state.lock();
            st.owned = false;
            st.waiters > 0
        };
        if waited {
            released(&self.0).notify_waiters();
        }
    }
}

/// A session's client: connected, away, or neither (between a connection's end and the
/// session's going away, or a clean session's end).
#[derive(Debug, Default)]
enum Presence {
    /// No connection, and not counted as away.
    #[default]
    Neither,
    /// Who is connected to it right now, for [`super::Clients`].
    Connected(Connected),
    /// The client is away.
    Away {
        /// Since when (wall clock): stored, so the expiry keeps counting across a
        /// restart.
        since: SystemTime,
        /// When the session ends; `None` when it never expires.
        expires_at: Option<Instant>,
    },
}

/// Who is connected to a session: a [`ClientInfo`] without the client id, which is the
/// session's own.
#[derive(Debug)]
struct Connected {
    /// The username the connection acts as.
    username: Option<Box<str>>,
    /// The subject CN of its verified TLS client certificate.
    tls_identity: Option<Box<str>>,
    /// Its address.
    peer: std::net::SocketAddr,
}

/// A session's subscriptions: nothing allocated until the first (a `HashMap` is 48 bytes
/// even empty, and many clients only publish).
#[derive(Debug, Default)]
#[allow(clippy::box_collection)] // 8 bytes in every session instead of 48
struct Subscriptions(Option<Box<HashMap<TopicFilter, SubOptions>>>);

impl Subscriptions {
    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |m| m.len())
    }

    fn contains_key(&self, filter: &TopicFilter) -> bool {
        self.0.as_ref().is_some_and(|m| m.contains_key(filter))
    }

    fn get(&self, filter: &TopicFilter) -> Option<&SubOptions> {
        self.0.as_ref().and_then(|m| m.get(filter))
    }

    fn insert(&mut self, filter: TopicFilter, options: SubOptions) {
        self.0
            .get_or_insert_with(Box::default)
            .insert(filter, options);
    }

    fn remove(&mut self, filter: &TopicFilter) -> Option<SubOptions> {
        let map = self.0.as_mut()?;
        let removed = map.remove(filter);
        if map.is_empty() {
            self.0 = None;
        }
        removed
    }

    fn retain(&mut self, keep: impl FnMut(&TopicFilter, &mut SubOptions) -> bool) {
        if let Some(map) = self.0.as_mut() {
            map.retain(keep);
            if map.is_empty() {
                self.0 = None;
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = (&TopicFilter, &SubOptions)> {
        self.0.iter().flat_map(|m| m.iter())
    }
}

impl Session {
    /// A new session of `client_id` living `expiry` seconds once its client is away, queueing
    /// into `mailbox` (made by the registry, drawing on the broker's budget), with a durable
    /// side when it is persistent and `durable` keeps sessions.
    pub(super) fn new(
        client_id: Arc<str>,
        expiry: u32,
        mailbox: Arc<Mailbox>,
        durable: Option<&Arc<DurableSessions>>,
    ) -> Arc<Self> {
        Self::kept(client_id, expiry, expiry > 0, mailbox, durable, true)
    }

    /// [`Session::new`], saying whether the session is `persistent` (in a cluster, a v5
    /// Clean Start 0 with expiry 0 may resume a kept session, which then ends at
    /// disconnect) and whether it is the node's own (`local`: an MQTT bridge's queue,
    /// never kept in the cluster; see [`DurableSessions::open`]).
    pub(super) fn kept(
        client_id: Arc<str>,
        expiry: u32,
        persistent: bool,
        mailbox: Arc<Mailbox>,
        durable: Option<&Arc<DurableSessions>>,
        local: bool,
    ) -> Arc<Self> {
        let durable = durable
            .filter(|_| persistent)
            .map(|d| Box::new(d.open(client_id.clone(), mailbox.id(), local)));
        Arc::new(Session {
            client_id,
            persistent,
            mailbox,
            durable,
            state: Mutex::new(State {
                expiry,
                ..State::default()
            }),
        })
    }

    /// Take the session over (MQTT-3.1.4-2): a new claim overtakes every earlier one. The
    /// connection that owns it is asked to close, one that waits to own it gives up, and
    /// one that owns it but has not installed its bell yet is kicked as soon as it does.
    pub fn kick_owner(&self) {
        let (bell, waited) = {
            let mut st = self.state.lock();
            st.claims = st.claims.wrapping_add(1);
            (st.kick.take(), st.waiters > 0)
        };
        if let Some(bell) = bell {
            bell.ring();
        }
        if waited {
            released(self).notify_waiters();
        }
    }

    /// Another node takes this session over (a cluster): its connection closes, now or as
    /// soon as it is connected. (A session in a cluster is never resumed in place, and the
    /// kick names the session object that claimed, so the claim overtaken can only be its
    /// own connection's.)
    pub(super) fn taken_over(&self) {
        self.kick_owner();
    }

    /// The number of the latest claim: a CONNECT opening the session takes it, under the
    /// registry's lock, after any takeover it made ([`super::registry::Opened::claim`]).
    pub(super) fn claim(&self) -> u32 {
        self.state.lock().claims
    }

    /// Whether `claim` was overtaken by a later one.
    pub(super) fn overtaken(&self, claim: u32) -> bool {
        self.state.lock().claims != claim
    }

    /// Whether a connection owns the session right now, or waits to take it back.
    #[cfg(test)]
    fn is_taken(&self) -> bool {
        let st = self.state.lock();
        st.owned || st.waiters > 0
    }

    /// Whether a connection took the session back since `claim` (the last connection's,
    /// read when it closed), even if it has left again: a delayed will is then not sent
    /// (MQTT-3.1.3-9). Every CONNECT to an existing session claims it, so the claim number
    /// says it; who owns the session now does not (the closing connection may still, while
    /// its last write is awaited). A session replaced by a Clean Start ended instead: its
    /// will goes.
    pub(super) fn reconnected_since(&self, claim: u32) -> bool {
        let st = self.state.lock();
        st.claims != claim && !st.ended
    }

    /// Own the session under `claim`, once its owner (kicked by the claim) lets go. `None`
    /// as soon as the claim is overtaken (see the module docs): the caller gives up.
    pub(super) async fn own(self: &Arc<Self>, claim: u32) -> Option<Owner> {
        self.own_as(Some(claim)).await
    }

    /// Own the session once nobody does, whatever the claims: for an MQTT bridge's queue,
    /// whose users (the bridge, and its removal) take turns rather than take it over.
    pub(crate) async fn own_in_turn(self: &Arc<Self>) -> Owner {
        loop {
            if let Some(owner) = self.own_as(None).await {
                return owner;
            }
        }
    }

    /// [`Session::own`], under `claim` or (`None`) in turn.
    async fn own_as(self: &Arc<Self>, claim: Option<u32>) -> Option<Owner> {
        let mut waiting = Waiting {
            session: self,
            counted: false,
        };
        loop {
            let next = {
                let mut st = self.state.lock();
                waiting.uncount(&mut st);
                if claim.is_some_and(|c| c != st.claims) {
                    return None;
                }
                if !st.owned {
                    st.owned = true;
                    return Some(Owner(self.clone()));
                }
                waiting.count(&mut st)
            };
            next.await;
        }
    }

    /// Wait until no connection owns the session (a replaced session's last connection
    /// has finished with it).
    pub(crate) async fn released(&self) {
        let mut waiting = Waiting {
            session: self,
            counted: false,
        };
        loop {
            let next = {
                let mut st = self.state.lock();
                waiting.uncount(&mut st);
                if !st.owned {
                    return;
                }
                waiting.count(&mut st)
            };
            next.await;
        }
    }

    /// A session made for a CONNECT, owned by it from the start (under the registry's
    /// lock, before anyone else can claim it): a later CONNECT that resumes it waits for
    /// this one, even if this one has not started waiting for its own predecessor yet.
    pub(super) fn owned_from_the_start(self: &Arc<Self>) -> Owner {
        self.state.lock().owned = true;
        Owner(self.clone())
    }

    /// The session's expiry interval in seconds ([`NEVER`]: never).
    pub fn expiry(&self) -> u32 {
        self.state.lock().expiry
    }

    /// A v5 DISCONNECT changed the expiry interval.
    pub fn set_expiry(&self, expiry: u32) {
        self.state.lock().expiry = expiry;
    }

    /// A connection took the session under `claim`: `kick` rings it for a takeover (at
    /// once if the claim was overtaken meanwhile), `info` lists it. Hands over the
    /// protocol state the last connection saved, to resume.
    pub fn connected(
        &self,
        claim: u32,
        kick: Arc<Doorbell>,
        info: ClientInfo,
    ) -> Option<SessionState> {
        let mut st = self.state.lock();
        if st.claims != claim {
            kick.ring();
        }
        st.kick = Some(kick);
        st.presence = Presence::Connected(Connected {
            username: info.username.map(String::into_boxed_str),
            tls_identity: info.tls_identity.map(String::into_boxed_str),
            peer: info.peer,
        });
        st.saved.take().map(|saved| *saved)
    }

    /// The owning connection ended: keep `saved` (its unfinished exchanges) for the next.
    pub fn disconnected(&self, saved: Option<SessionState>) {
        let mut st = self.state.lock();
        if matches!(st.presence, Presence::Connected(_)) {
            st.presence = Presence::Neither;
        }
        if saved.is_some() {
            st.saved = saved.map(Box::new);
        }
    }

    /// Who is connected to the session right now.
    pub fn connection(&self) -> Option<ClientInfo> {
        let st = self.state.lock();
        let Presence::Connected(c) = &st.presence else {
            return None;
        };
        Some(ClientInfo {
            client_id: self.client_id.to_string(),
            username: c.username.as_deref().map(str::to_string),
            tls_identity: c.tls_identity.as_deref().map(str::to_string),
            peer: c.peer,
        })
    }

    /// Record a subscription (before it goes into the index, so a concurrent close removes
    /// it again). False, recording nothing, when it is new and the session already has
    /// `max` subscriptions.
    pub fn add_subscription(&self, filter: &TopicFilter, options: SubOptions, max: usize) -> bool {
        let mut st = self.state.lock();
        if st.subscriptions.len() >= max && !st.subscriptions.contains_key(filter) {
            return false;
        }
        st.subscriptions.insert(filter.clone(), options);
        true
    }

    /// Forget a subscription; whether it was recorded.
    pub fn remove_subscription(&self, filter: &TopicFilter) -> bool {
        self.state.lock().subscriptions.remove(filter).is_some()
    }

    /// Make the session's subscriptions exactly `want`: the others leave the index, new or
    /// changed ones enter it without retained values (Retain Handling 2). For an MQTT
    /// bridge's out queue (`crate::bridge`), whose subscriptions come from its
    /// configuration rather than from SUBSCRIBE packets. The caller owns the session.
    pub(crate) fn set_subscriptions(&self, want: &[(TopicFilter, SubOptions)], broker: &Broker) {
        let mut st = self.state.lock();
        st.subscriptions.retain(|f, _| {
            let keep = want.iter().any(|(g, _)| g == f);
            if !keep {
                broker.unsubscribe(f, self.mailbox.id());
            }
            keep
        });
        for (filter, options) in want {
            if st.subscriptions.get(filter) != Some(options) {
                broker.subscribe_with(filter, &self.mailbox, *options, RetainHandling::Never);
                st.subscriptions.insert(filter.clone(), *options);
            }
        }
    }

    /// Drop the protocol state a connection saved (an MQTT bridge's out queue has no MQTT
    /// connection to resume it).
    pub(crate) fn drop_saved(&self) {
        self.state.lock().saved = None;
    }

    /// Remove every subscription of this session from the broker.
    pub fn unsubscribe_all(&self, broker: &Broker) {
        let subs = std::mem::take(&mut self.state.lock().subscriptions);
        for (filter, _) in subs.iter() {
            broker.unsubscribe(filter, self.mailbox.id());
        }
    }

    /// Store the session's record (expiry, when the client went away, subscriptions) and
    /// the protocol state saved by the last connection if there is one. With `wait`, the
    /// receipt to await before acknowledging what changed (CONNACK, SUBACK, UNSUBACK).
    /// `None` when the session has no durable side.
    pub fn persist(&self, wait: bool) -> Option<Receipt> {
        let durable = self.durable.as_ref()?;
        let st = self.state.lock();
        let record = Record {
            expiry: st.expiry,
            away_since: match st.presence {
                Presence::Away { since, .. } => Some(since),
                _ => None,
            },
            subscriptions: st.subscriptions.iter(),
        };
        match &st.saved {
            None => durable.write_record(record, wait),
            Some(saved) => durable.write_saved(
                record,
                saved.outgoing.iter().map(wire::exchange),
                saved.inbound_qos2.iter().copied(),
                saved.next_pkid,
                wait,
            ),
        }
    }

    /// Bring the durable protocol state up to date with the live connection (see
    /// [`DurableSession::sync`]); `unrecorded_qos2` are the inbound QoS 2 ids handled
    /// whose PUBREC waits for this write.
    pub fn sync(&self, conn: &Connection, unrecorded_qos2: &[u16]) -> Option<Receipt> {
        self.durable.as_ref()?.sync(
            conn.outgoing().map(wire::exchange),
            conn.inbound_qos2().chain(unrecorded_qos2.iter().copied()),
            conn.next_pkid(),
        )
    }

    /// The client is back: the session no longer expires, and takes the new `expiry`.
    pub(super) fn resume(&self, expiry: u32) {
        let mut st = self.state.lock();
        st.expiry = expiry;
        if matches!(st.presence, Presence::Away { .. }) {
            st.presence = Presence::Neither;
        }
    }

    /// The client went away `at`: the expiry starts counting. Returns the expiry interval.
    pub(super) fn away(&self, at: SystemTime, now: Instant) -> u32 {
        let mut st = self.state.lock();
        let expires_at = (st.expiry != NEVER)
            .then(|| now + std::time::Duration::from_secs(u64::from(st.expiry)));
        st.presence = Presence::Away {
            since: at,
            expires_at,
        };
        st.expiry
    }

    /// A restored session is away since `at` and ends after `left` (`None`: never).
    pub(super) fn restored_away(
        &self,
        at: SystemTime,
        left: Option<std::time::Duration>,
        now: Instant,
    ) {
        self.state.lock().presence = Presence::Away {
            since: at,
            expires_at: left.map(|left| now + left),
        };
    }

    /// A restored session's subscription and saved protocol state.
    pub(super) fn restored_subscription(&self, filter: TopicFilter, options: SubOptions) {
        self.state.lock().subscriptions.insert(filter, options);
    }

    /// Keep `saved` for the next connection to resume.
    pub(super) fn save(&self, saved: SessionState) {
        self.state.lock().saved = Some(Box::new(saved));
    }

    /// Whether the session has expired at `now` (away, past its expiry, and no
    /// connection owns it or waits to take it back).
    pub(super) fn expired(&self, now: Instant) -> bool {
        let st = self.state.lock();
        !st.owned
            && st.waiters == 0
            && matches!(
                st.presence,
                Presence::Away { expires_at: Some(at), .. } if at <= now
            )
    }

    /// End the session for good: subscriptions out of the index, durable state deleted.
    pub(super) fn discard(&self, broker: &Broker) {
        self.state.lock().ended = true;
        self.unsubscribe_all(broker);
        if let Some(durable) = &self.durable {
            durable.discard();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::mailbox::OverflowPolicy;
    use std::task::Context;
    use std::time::Duration;

    fn session() -> Arc<Session> {
        let mailbox = Mailbox::new(16, OverflowPolicy::DropOldest);
        Session::new(Arc::from("c"), NEVER, mailbox, None)
    }

    /// What `task` returned, within 5 s (`what` says what it waits for).
    async fn joined<T>(task: tokio::task::JoinHandle<T>, what: &str) -> T {
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect(what)
            .expect("task")
    }

    fn info() -> ClientInfo {
        ClientInfo {
            client_id: "c".into(),
            username: None,
            tls_identity: None,
            peer: ([127, 0, 0, 1], 1883).into(),
        }
    }

    /// MQTT-3.1.4-2: three CONNECTs of one client id, the second still waiting for the
    /// first to let go when the third comes. The second gives up, the third owns the
    /// session as soon as the first lets go, and never waits on the second.
    #[tokio::test]
    async fn mqtt_3_1_4_2_the_newest_claim_wins_and_an_overtaken_one_gives_up() {
        let s = session();
        let first = s.own(s.claim()).await.expect("nobody owns it yet");
        let bell = Arc::new(Doorbell::new());
        assert!(s.connected(s.claim(), bell.clone(), info()).is_none());
        assert!(s.is_taken());

        s.kick_owner();
        let second_claim = s.claim();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(
            bell.poll_rung(&mut cx).is_ready(),
            "the first is asked to close"
        );
        let second = tokio::spawn({
            let s = s.clone();
            async move { s.own(second_claim).await.map(drop).is_some() }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!second.is_finished(), "the second waits for the first");

        s.kick_owner();
        let third_claim = s.claim();
        let gave_up = joined(second, "the overtaken claim stops waiting at once").await;
        assert!(!gave_up, "the overtaken claim does not own the session");
        let third = tokio::spawn({
            let s = s.clone();
            async move { s.own(third_claim).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!third.is_finished(), "the third waits for the first");
        drop(first);
        let third = joined(third, "woken by the release")
            .await
            .expect("the latest claim owns it");
        assert!(s.is_taken());
        assert!(!s.overtaken(third_claim));
        drop(third);
        assert!(!s.is_taken(), "dropping the owner lets go");
    }

    /// A takeover (another node's, in a cluster) that comes after the connection owns
    /// the session but before it installed its bell rings the bell as it is installed.
    #[tokio::test]
    async fn a_claim_overtaken_before_the_bell_is_installed_is_kicked_at_once() {
        let s = session();
        let claim = s.claim();
        let _owner = s.own(claim).await.expect("free");
        s.taken_over();
        assert!(s.overtaken(claim));
        let bell = Arc::new(Doorbell::new());
        s.connected(claim, bell.clone(), info());
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(bell.poll_rung(&mut cx).is_ready());
    }

    /// Between one owner's release and the next one's taking the session (its task not
    /// run yet), an away session past its expiry is being taken back: the sweep leaves it.
    #[tokio::test]
    async fn mqtt5_3_1_2_11_a_session_being_handed_over_does_not_expire() {
        let mailbox = Mailbox::new(16, OverflowPolicy::DropOldest);
        let s = Session::new(Arc::from("c"), 1, mailbox, None);
        let first = s.own(s.claim()).await.expect("free");
        s.kick_owner();
        let claim = s.claim();
        let next = tokio::spawn({
            let s = s.clone();
            async move { s.own(claim).await }
        });
        tokio::task::yield_now().await;
        // The first connection's close: away now, and past the expiry when it lets go.
        let now = Instant::now();
        s.away(SystemTime::now(), now);
        drop(first);
        let later = now + Duration::from_secs(2);
        assert!(s.is_taken(), "the next owner is waiting");
        assert!(!s.expired(later), "not while it is being taken back");
        let next = joined(next, "woken").await.expect("the latest claim");
        s.resume(1);
        assert!(!s.expired(later));
        drop(next);
        s.away(SystemTime::now(), now);
        assert!(s.expired(later), "away, past its expiry, nobody taking it");
    }

    /// A waiter that a takeover wakes without ending its wait (a bridge's, waiting in
    /// turn) waits on, and still owns the session at the release.
    #[tokio::test]
    async fn a_waiter_woken_by_a_takeover_still_gets_the_release() {
        let s = session();
        let owner = s.own_in_turn().await;
        let waiter = tokio::spawn({
            let s = s.clone();
            async move { s.own_in_turn().await }
        });
        tokio::task::yield_now().await;
        s.kick_owner();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !waiter.is_finished(),
            "a takeover does not end a wait in turn"
        );
        drop(owner);
        let owner = joined(waiter, "woken by the release").await;
        assert!(s.is_taken());
        drop(owner);
        assert!(!s.is_taken(), "nobody waits or owns any more");
    }

    /// A session made for a CONNECT is owned from the start: a later CONNECT resuming it
    /// waits for that one, even before that one started waiting for anything.
    #[tokio::test]
    async fn a_session_made_for_a_connect_is_owned_from_the_start() {
        let s = session();
        let made = s.owned_from_the_start();
        s.kick_owner();
        let claim = s.claim();
        let resumer = tokio::spawn({
            let s = s.clone();
            async move { s.own(claim).await.is_some() }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!resumer.is_finished(), "the resumer waits for the maker");
        drop(made);
        assert!(joined(resumer, "woken").await);
    }

    /// A connection that stops waiting (its future dropped) is no longer counted.
    #[tokio::test]
    async fn a_dropped_wait_is_no_longer_counted() {
        let s = session();
        let owner = s.own_in_turn().await;
        let waiter = tokio::spawn({
            let s = s.clone();
            async move { s.released().await }
        });
        tokio::task::yield_now().await;
        waiter.abort();
        let _ = waiter.await;
        drop(owner);
        assert!(!s.is_taken(), "the aborted wait left nothing counted");
    }

    /// A replaced session's connection is waited for until it lets go; a bridge's queue
    /// is owned in turn, whatever the claims.
    #[tokio::test]
    async fn released_waits_for_the_owner_and_owning_in_turn_ignores_claims() {
        let s = session();
        let owner = s.own_in_turn().await;
        s.kick_owner();
        let waiter = tokio::spawn({
            let s = s.clone();
            async move {
                s.released().await;
                s.own_in_turn().await
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(owner);
        let again = joined(waiter, "woken").await;
        assert!(s.is_taken());
        drop(again);
        assert!(!s.is_taken());
    }
}
