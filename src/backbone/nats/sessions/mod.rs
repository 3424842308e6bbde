//! Persistent MQTT sessions in a cluster (issue 11, point 5): the [`Keeper`] over NATS.
//!
//! A session is one value in the KV bucket `<prefix>_sessions` ([`record::Kept`]): its
//! owner (the node whose connection has it, none while its client is away), its record,
//! its protocol state and its place in the message log — no queue entries and no JetStream
//! consumer per session: the log is the queue (see [`crate::durable::Track`]).
//!
//! - **Ownership** is the bucket's compare-and-set. A node *claims* a session for a CONNECT
//!   (`claim`): it reads the value, and if another node owns it asks that node (a request
//!   on `<prefix>.ctl.<node>`) to hand it over — the owner closes its connection (v5
//!   DISCONNECT 0x8E) and writes its final state — or, when the owner does not answer and
//!   its heartbeat in the nodes bucket has stopped, presumes it dead; then it writes the
//!   value with itself as owner, expecting the revision it read. Every later write of the
//!   owner expects the revision of its previous one, so a node that lost the session
//!   learns it at its next write and closes its connection: two nodes never both write it.
//! - **Writes** (`Book`): one in flight per session, always the latest state (what was
//!   handed over meanwhile coalesces into the next write). A write somebody awaits (the
//!   record before CONNACK, the state before a PUBREC, PUBCOMP, QoS 2 PUBLISH or PUBREL)
//!   goes at once; progress nobody awaits (QoS 1 acknowledgements, the position moving)
//!   waits up to [`LAZY`] for company.
//! - **Release**: when the client goes away the last write names no owner and says since
//!   when it is away; the node forgets the session (its mailbox and subscriptions go) and
//!   deletes it at its expiry, by compare-and-set on that revision ([`expiry`]). An elected
//!   node sweeps what nobody else will (sessions of dead nodes, expiries of nodes gone).
//! - **Resume** on any node: `replay` reads the log after the session's position through
//!   a short-lived ordered consumer filtered by its subscriptions; `fetch` gets the
//!   messages of its unfinished exchanges by sequence.

mod claim;
pub mod expiry;
pub mod record;
mod replay;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use super::Inner;
use crate::durable::{Claim, Claimed, Keeper, Kick, Logged, Receipt, Replayed, Seq};
use crate::model::{Message, QoS, TopicFilter};
use crate::store::session::{LoadedSessions, SessionRecord, StoredState};
use crate::store::StoreError;
use record::Kept;

/// How long progress nobody waits for (QoS 1 acknowledgements, the position moving) may
/// wait for company before it is written: bounds both the write rate per session and what
/// a crash can lose of it (at worst some QoS 1 messages are sent again).
pub const LAZY: Duration = Duration::from_millis(200);

/// The answer to an awaited write.
type Reply = oneshot::Sender<Result<(), StoreError>>;

/// The cluster's keeper of persistent sessions (see the module docs).
#[derive(Clone)]
pub struct NatsKeeper {
    /// The node's NATS side.
    inner: Arc<Inner>,
    /// The sessions this node owns.
    book: Arc<Book>,
}

impl std::fmt::Debug for NatsKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsKeeper")
            .field("node", &self.inner.node)
            .field("owned", &self.book.owned.lock().len())
            .finish()
    }
}

/// The sessions this node owns, and what their writes are waiting for.
pub(crate) struct Book {
    /// By client id.
    owned: Mutex<HashMap<Arc<str>, Owned>>,
    /// Sessions with progress to write lazily, with when.
    lazy: Mutex<VecDeque<(Instant, Arc<str>)>>,
    /// Connections here that must close (handed over, or lost).
    kicks: mpsc::UnboundedSender<Kick>,
    /// Its receiving end, until the MQTT front-end takes it.
    kicks_rx: Mutex<Option<mpsc::UnboundedReceiver<Kick>>>,
    /// Released sessions to delete at their expiry: (when, key, revision).
    expiries: mpsc::UnboundedSender<expiry::Due>,
}

/// One session this node owns.
struct Owned {
    /// Its bucket key.
    key: Arc<str>,
    /// The revision of the last write (or of the claim): the next write expects it.
    rev: u64,
    /// Its incarnation.
    session_id: u64,
    /// Its owning connections so far.
    epoch: u64,
    /// The session object here that claimed it ([`Claim::holder`]): whose connection a
    /// takeover or a lost write closes.
    holder: u64,
    /// The latest record handed over.
    record: Arc<SessionRecord>,
    /// The latest protocol state handed over.
    state: Arc<StoredState>,
    /// Something handed over is not written yet.
    dirty: bool,
    /// It is in [`Book::lazy`].
    lazy: bool,
    /// A write is in flight.
    writing: bool,
    /// Waiting for a write that covers what was handed over (the next one).
    waiting: Vec<Reply>,
    /// Waiting for the write in flight.
    in_flight: Vec<Reply>,
    /// Told when the session is released (handed over) or ends.
    released: Vec<oneshot::Sender<()>>,
    /// The session ended while a write was in flight: delete it once that write is done
    /// (its revision is the one to expect).
    discard: bool,
}

impl NatsKeeper {
    /// The keeper of node `inner`; starts its background tasks (lazy writes, expiries,
    /// takeover requests).
    pub(crate) fn start(inner: Arc<Inner>) -> NatsKeeper {
        let (kicks, kicks_rx) = mpsc::unbounded_channel();
        let (expiries, expiries_rx) = mpsc::unbounded_channel();
        let book = Arc::new(Book {
            owned: Mutex::new(HashMap::new()),
            lazy: Mutex::new(VecDeque::new()),
            kicks,
            kicks_rx: Mutex::new(Some(kicks_rx)),
            expiries,
        });
        let keeper = NatsKeeper { inner, book };
        tokio::spawn(keeper.clone().lazy_writer());
        tokio::spawn(expiry::run(keeper.inner.clone(), expiries_rx));
        tokio::spawn(claim::serve_takeovers(keeper.clone()));
        keeper
    }

    /// Write what is due lazily, until shutdown.
    async fn lazy_writer(self) {
        let mut closed = self.inner.closed.subscribe();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(LAZY / 4) => {}
                _ = closed.wait_for(|c| *c) => return,
            }
            let now = Instant::now();
            loop {
                let client = {
                    let mut lazy = self.book.lazy.lock();
                    match lazy.front() {
                        Some((due, _)) if *due <= now => lazy.pop_front().map(|(_, c)| c),
                        _ => None,
                    }
                };
                let Some(client) = client else {
                    break;
                };
                let mut owned = self.book.owned.lock();
                if let Some(o) = owned.get_mut(&client) {
                    o.lazy = false;
                    if o.dirty && !o.writing {
                        self.start_write(&client, o);
                    }
                }
            }
        }
    }

    /// Hand over a new record and/or state of `client`'s session; with `wait`, the
    /// receipt of the write that covers it.
    fn put(
        &self,
        client: &Arc<str>,
        record: Option<Arc<SessionRecord>>,
        state: Option<Arc<StoredState>>,
        wait: bool,
    ) -> Option<Receipt> {
        let (reply, receipt) = if wait {
            let (tx, rx) = Receipt::pending();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let mut owned = self.book.owned.lock();
        let Some(o) = owned.get_mut(client).filter(|o| !o.discard) else {
            if let Some(reply) = reply {
                let _ = reply.send(Err(StoreError::Engine(
                    "this node no longer owns the session (another node took it over)".into(),
                )));
            }
            return receipt;
        };
        // A record changes rarely (CONNECT, SUBSCRIBE, disconnect) and is always worth
        // writing at once.
        let now = record.is_some() || reply.is_some();
        if let Some(r) = record {
            o.record = r;
        }
        if let Some(s) = state {
            o.state = s;
        }
        o.dirty = true;
        if let Some(reply) = reply {
            o.waiting.push(reply);
        }
        if o.writing {
            // The write in flight finishes first; the next one takes all this.
            return receipt;
        }
        self.write_now_or_lazily(client, o, now);
        receipt
    }

    /// Write `o` now, or book it for the lazy writer (once: `o.lazy` says it is booked).
    fn write_now_or_lazily(&self, client: &Arc<str>, o: &mut Owned, now: bool) {
        if now {
            self.start_write(client, o);
        } else if !o.lazy {
            o.lazy = true;
            self.book
                .lazy
                .lock()
                .push_back((Instant::now() + LAZY, client.clone()));
        }
    }

    /// Write `o`'s latest state (expecting its last revision) in the background.
    fn start_write(&self, client: &Arc<str>, o: &mut Owned) {
        let away = o.record.away_since.is_some();
        let kept = Kept {
            client: client.to_string(),
            session_id: o.session_id,
            epoch: o.epoch,
            owner: (!away).then(|| self.inner.node.clone()),
            boot: self.inner.boot,
            record: (*o.record).clone(),
            state: (*o.state).clone(),
        };
        o.dirty = false;
        o.writing = true;
        o.in_flight = std::mem::take(&mut o.waiting);
        let key = o.key.clone();
        let rev = o.rev;
        let keeper = self.clone();
        let client = client.clone();
        let expires = kept.expires_at();
        tokio::spawn(async move {
            let result = keeper.update(&key, kept.encode(), rev).await;
            keeper.written(&client, result, expires);
        });
    }

    /// Compare-and-set `key` to `value`, expecting `rev` (0: the key must not exist).
    async fn update(&self, key: &str, value: Vec<u8>, rev: u64) -> Result<u64, WriteError> {
        if !self.inner.connected() {
            // Fail at once: a connection closing while NATS is away must not wait for it.
            return Err(WriteError::Other("NATS is unreachable".into()));
        }
        let kv =
            self.inner.sessions.read().clone().ok_or_else(|| {
                WriteError::Other("the sessions bucket is not provisioned".into())
            })?;
        let timeout = self.inner.config.timeout();
        let sent = if rev == 0 {
            tokio::time::timeout(timeout, kv.create(key, value.into()))
                .await
                .map(|r| {
                    r.map_err(|e| match e.kind() {
                        async_nats::jetstream::kv::CreateErrorKind::AlreadyExists => {
                            WriteError::Conflict
                        }
                        _ => WriteError::Other(e.to_string()),
                    })
                })
        } else {
            tokio::time::timeout(timeout, kv.update(key, value.into(), rev))
                .await
                .map(|r| {
                    r.map_err(|e| match e.kind() {
                        async_nats::jetstream::kv::UpdateErrorKind::WrongLastRevision => {
                            WriteError::Conflict
                        }
                        _ => WriteError::Other(e.to_string()),
                    })
                })
        };
        sent.unwrap_or_else(|_| {
            Err(WriteError::Other(
                "NATS did not acknowledge the session write in time ([cluster] timeout_secs)"
                    .into(),
            ))
        })
    }

    /// A write of `client`'s session finished.
    fn written(
        &self,
        client: &Arc<str>,
        result: Result<u64, WriteError>,
        expires: Option<std::time::SystemTime>,
    ) {
        let mut owned = self.book.owned.lock();
        let Some(o) = owned.get_mut(client) else {
            return;
        };
        o.writing = false;
        match result {
            Ok(rev) => {
                o.rev = rev;
                for r in o.in_flight.drain(..) {
                    let _ = r.send(Ok(()));
                }
                if o.discard {
                    if let Some(o) = owned.remove(client) {
                        drop(owned);
                        self.delete(o);
                    }
                    return;
                }
                if o.dirty {
                    let now = !o.waiting.is_empty() || o.record.away_since.is_some();
                    self.write_now_or_lazily(client, o, now);
                    return;
                }
                if o.record.away_since.is_some() {
                    // Released: the client is away, nobody owns it; it ends at its expiry.
                    let Some(o) = owned.remove(client) else {
                        return;
                    };
                    drop(owned);
                    for r in o.released {
                        let _ = r.send(());
                    }
                    if let Some(at) = expires {
                        let _ = self.book.expiries.send(expiry::Due {
                            at,
                            key: o.key.to_string(),
                            rev,
                        });
                    }
                }
            }
            Err(WriteError::Conflict) => {
                // Someone else wrote it: another node took it over — or our own last
                // write landed but its acknowledgement was lost. Look.
                o.dirty = true;
                o.writing = true;
                let key = o.key.clone();
                let (sid, epoch) = (o.session_id, o.epoch);
                let keeper = self.clone();
                let client = client.clone();
                tokio::spawn(async move {
                    let ours = keeper.still_ours(&key, sid, epoch).await;
                    keeper.recheck(&client, ours);
                });
            }
            Err(WriteError::Other(why)) => {
                tracing::warn!(client_id = %client, error = %why, "session state could not be written to NATS; retrying");
                o.dirty = true;
                let err = || {
                    StoreError::Engine(format!("the session could not be stored in NATS: {why}"))
                };
                for r in o.in_flight.drain(..).chain(o.waiting.drain(..)) {
                    let _ = r.send(Err(err()));
                }
                if !o.lazy {
                    o.lazy = true;
                    self.book
                        .lazy
                        .lock()
                        .push_back((Instant::now() + LAZY, client.clone()));
                }
            }
        }
    }

    /// The current revision of `key` when it is still this node's session `sid` at
    /// `epoch` (our own write landed), `None` when another node has it now.
    async fn still_ours(&self, key: &str, sid: u64, epoch: u64) -> Result<Option<u64>, String> {
        let kv = self
            .inner
            .sessions
            .read()
            .clone()
            .ok_or("the sessions bucket is not provisioned")?;
        let entry = tokio::time::timeout(self.inner.config.timeout(), kv.entry(key))
            .await
            .map_err(|_| "reading the session timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let Some(e) = entry.filter(|e| e.operation == async_nats::jetstream::kv::Operation::Put)
        else {
            return Ok(None);
        };
        let Ok(k) = Kept::decode(&e.value) else {
            return Ok(None);
        };
        let ours = k.session_id == sid
            && k.epoch == epoch
            && k.owner.as_deref().is_none_or(|o| o == self.inner.node)
            && k.boot == self.inner.boot;
        Ok(ours.then_some(e.revision))
    }

    /// After a conflict: carry on from the revision found, or give the session up.
    fn recheck(&self, client: &Arc<str>, ours: Result<Option<u64>, String>) {
        let mut owned = self.book.owned.lock();
        let Some(o) = owned.get_mut(client) else {
            return;
        };
        o.writing = false;
        match ours {
            Ok(Some(rev)) if o.discard => {
                o.rev = rev;
                if let Some(o) = owned.remove(client) {
                    drop(owned);
                    self.delete(o);
                }
            }
            Ok(Some(rev)) => {
                o.rev = rev;
                // Whatever was in flight may or may not be the value found: write again.
                o.waiting.append(&mut o.in_flight);
                self.start_write(client, o);
            }
            Ok(None) => {
                let Some(o) = owned.remove(client) else {
                    return;
                };
                drop(owned);
                tracing::warn!(client_id = %client, "another node took this MQTT session over; its connection here is closed");
                for r in o.in_flight.into_iter().chain(o.waiting) {
                    let _ = r.send(Err(StoreError::Engine(
                        "another node took the session over".into(),
                    )));
                }
                for r in o.released {
                    let _ = r.send(());
                }
                let _ = self.book.kicks.send(Kick {
                    client: client.clone(),
                    holder: o.holder,
                });
            }
            Err(why) => {
                // Cannot tell now: fail what waits, try again later.
                o.dirty = true;
                for r in o.in_flight.drain(..).chain(o.waiting.drain(..)) {
                    let _ = r.send(Err(StoreError::Engine(format!(
                        "the session could not be stored in NATS: {why}"
                    ))));
                }
                o.writing = true;
                let key = o.key.clone();
                let (sid, epoch) = (o.session_id, o.epoch);
                let keeper = self.clone();
                let client = client.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(LAZY).await;
                    let ours = keeper.still_ours(&key, sid, epoch).await;
                    keeper.recheck(&client, ours);
                });
            }
        }
    }

    /// Start owning a session just claimed at revision `rev` by `holder`.
    fn own(&self, client: &Arc<str>, key: String, rev: u64, kept: &Kept, holder: u64) {
        let previous = self.book.owned.lock().insert(
            client.clone(),
            Owned {
                key: Arc::from(key),
                rev,
                session_id: kept.session_id,
                epoch: kept.epoch,
                holder,
                record: Arc::new(kept.record.clone()),
                state: Arc::new(kept.state.clone()),
                dirty: false,
                lazy: false,
                writing: false,
                waiting: Vec::new(),
                in_flight: Vec::new(),
                released: Vec::new(),
                discard: false,
            },
        );
        if let Some(p) = previous {
            // A connection here that could not write its release: what it waited for is
            // superseded by the claim.
            for r in p.in_flight.into_iter().chain(p.waiting) {
                let _ = r.send(Err(StoreError::Engine(
                    "the session was claimed again".into(),
                )));
            }
        }
    }

    /// The session ended: delete its value (expecting the last revision written) and tell
    /// whoever waits for its release.
    fn delete(&self, o: Owned) {
        for r in o.released {
            let _ = r.send(());
        }
        let keeper = self.clone();
        tokio::spawn(async move {
            let kv = keeper.inner.sessions.read().clone();
            if let Some(kv) = kv {
                let _ = tokio::time::timeout(
                    keeper.inner.config.timeout(),
                    kv.delete_expect_revision(&*o.key, Some(o.rev)),
                )
                .await;
            }
        });
    }

    /// Wait until `client`'s session is released here (with the holder whose connection
    /// must close for that), or `None` if this node does not own it.
    fn on_release(&self, client: &str) -> Option<(u64, oneshot::Receiver<()>)> {
        let mut owned = self.book.owned.lock();
        let o = owned.get_mut(client)?;
        let (tx, rx) = oneshot::channel();
        o.released.push(tx);
        Some((o.holder, rx))
    }
}

/// Why a session write failed.
#[derive(Debug)]
enum WriteError {
    /// The revision was not the expected one.
    Conflict,
    /// Anything else (NATS unreachable, timeout).
    Other(String),
}

impl Keeper for NatsKeeper {
    fn take_loaded(&self) -> LoadedSessions {
        LoadedSessions::default()
    }

    fn put_record(&self, client: &Arc<str>, record: SessionRecord, wait: bool) -> Option<Receipt> {
        self.put(client, Some(Arc::new(record)), None, wait)
    }

    fn put_state(&self, client: &Arc<str>, state: Arc<StoredState>, wait: bool) -> Option<Receipt> {
        self.put(client, None, Some(state), wait)
    }

    fn append(
        &self,
        _client: &Arc<str>,
        _message: &Message,
        _qos: QoS,
        _retain: bool,
        _wait: bool,
    ) -> (Seq, Option<Receipt>) {
        // Never called for a logged keeper (the owner gives tracked sessions the log's
        // sequence); a sequence that names no message if it were.
        (Seq::FIRST, None)
    }

    fn acknowledge(&self, _client: &Arc<str>, _seq: Seq) {}

    fn forget(&self, _client: &Arc<str>, _seq: Seq) {}

    fn discard(&self, client: &Arc<str>) {
        let mut owned = self.book.owned.lock();
        let Some(o) = owned.get_mut(client) else {
            return;
        };
        if o.writing {
            // Deleted once the write in flight is done (expecting its revision).
            o.discard = true;
            return;
        }
        let Some(o) = owned.remove(client) else {
            return;
        };
        drop(owned);
        self.delete(o);
    }

    fn close(&self) {}

    fn logged(&self) -> bool {
        true
    }

    fn claim(
        &self,
        client: &Arc<str>,
        claim: Claim,
    ) -> BoxFuture<'static, Result<Claimed, StoreError>> {
        let keeper = self.clone();
        let client = client.clone();
        Box::pin(async move { claim::claim(&keeper, &client, claim).await })
    }

    fn replay(&self, after: u64, filters: Vec<TopicFilter>) -> mpsc::Receiver<Replayed> {
        replay::replay(self.inner.clone(), after, filters)
    }

    fn fetch(&self, seqs: Vec<Seq>) -> BoxFuture<'static, Result<Vec<Option<Logged>>, StoreError>> {
        let inner = self.inner.clone();
        Box::pin(async move { replay::fetch(&inner, seqs).await })
    }

    fn kicks(&self) -> Option<mpsc::UnboundedReceiver<Kick>> {
        self.book.kicks_rx.lock().take()
    }

    fn resumed(&self, client: &Arc<str>) -> Option<BoxFuture<'static, bool>> {
        let (key, sid, epoch) = {
            let owned = self.book.owned.lock();
            let o = owned.get(client)?;
            (o.key.clone(), o.session_id, o.epoch)
        };
        let inner = self.inner.clone();
        Some(Box::pin(async move {
            expiry::resumed(&inner, &key, sid, epoch).await
        }))
    }
}
