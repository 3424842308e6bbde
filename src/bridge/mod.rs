//! MQTT bridges (issue 14): each `[[bridge]]` connects ponte to another MQTT broker with
//! rumqttc and carries messages out (local → remote), in (remote → local) or both, as
//! mosquitto's bridges do.
//!
//! - `out`: everything written locally, by any protocol, on a topic an out rule matches
//!   goes to the remote with its RETAIN flag, QoS min(message, rule), payload, content type
//!   and v5 properties. The bridge's out side is a persistent session of the MQTT
//!   front-end (`$bridge/<name>`, [`outbox`]), so QoS 1/2 messages are on disk before
//!   their local publisher is acknowledged, wait there while the remote is down, come back
//!   in order after `kill -9`, and leave only when the remote acknowledged them.
//! - `in`: what the remote sends under an in rule is published locally through the one
//!   publish path and acknowledged to the remote only once stored ([`inbound`]).
//! - No loops: a message that came in over a bridge is never queued to go back out over
//!   it (its publisher is the bridge's session, whose subscriptions are No Local); v5
//!   remotes get No Local on the bridge's subscriptions, and for 3.1.1 remotes an echo
//!   guard swallows the copy of each message the bridge sent that the remote sends back.
//! - On (re)connect the remote's retained values under in rules are reconciled
//!   ([`reconcile`]) and, when the remote lost the session, local retained values under
//!   out rules are republished.
//! - State: retained `$SYS/broker/connection/<name>/state` `1`/`0`, and
//!   [`crate::Gateway::bridge_stats`]. Errors are logged once per back-off step.
//! - SIGHUP: [`Bridges`] is a reload hook: added bridges start, removed ones stop (their
//!   queue is deleted), changed ones restart (their queue stays).

/// `[[bridge]]` (kept with the other sections in [`crate::config`], which every front-end
/// reads and which therefore cannot depend on the bridges).
pub use crate::config::bridge as config;
mod inbound;
mod ledger;
mod link;
pub mod outbox;
mod poller;
mod reconcile;
mod remote;
pub mod stats;
mod topics;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::broker::Broker;
use crate::mqtt::Clients;
use crate::reload::Reload;
use crate::shutdown::Shutdown;

pub use config::BridgeConfig;
pub use link::Stop;
pub use stats::BridgeStats;

use link::Env;
use outbox::Outbox;
use stats::Stats;

/// Check what the bridges' configuration names on disk (CA, certificate and key files):
/// a start or reload with an unusable file fails with a message naming it.
pub fn check(bridges: &[BridgeConfig]) -> Result<(), String> {
    for b in bridges {
        remote::check(b).map_err(|e| format!("bridge {:?}: {e}", b.name.as_str()))?;
    }
    Ok(())
}

/// What a bridge's TLS files hold, to notice on reload that a certificate or CA file
/// changed under an unchanged configuration (the bridge then restarts with it).
fn files_fingerprint(b: &BridgeConfig) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for f in [&b.ca_file, &b.cert_file, &b.key_file]
        .into_iter()
        .flatten()
    {
        std::fs::read(f).ok().hash(&mut h);
    }
    h.finish()
}

/// One bridge's tasks.
#[derive(Debug)]
struct Running {
    /// What it runs with; a reload that changes it restarts the bridge.
    config: BridgeConfig,
    /// [`files_fingerprint`] when it started.
    files: u64,
    /// Tells it to stop.
    stop: watch::Sender<bool>,
    /// Its task; ends once its queue is put away.
    task: JoinHandle<()>,
}

/// The running bridges, and the reload hook that changes them.
#[derive(Debug)]
pub struct Bridges {
    /// What a bridge needs from the gateway.
    env: Env,
    /// The gateway's shutdown, for new bridges; taken away once it fires, so the manager
    /// itself never holds the shutdown up.
    shutdown: Mutex<Option<Shutdown>>,
    /// By name; one reload applies at a time.
    running: tokio::sync::Mutex<HashMap<String, Running>>,
    /// Counters by name, for [`Bridges::stats`].
    stats: Mutex<BTreeMap<String, Arc<Stats>>>,
    /// The configuration file a reload re-reads (`None`: built in code; nothing to reload).
    source: Option<PathBuf>,
    /// Where reloads run their changes (a signal handler may call from any thread).
    runtime: tokio::runtime::Handle,
    /// This manager, for the changes a reload spawns (the hook only has `&self`).
    me: Weak<Bridges>,
}

impl Bridges {
    /// Start `bridges` over `broker`. The out queues of bridges that exist on disk but are
    /// no longer configured are deleted first (they would otherwise fill for ever).
    pub async fn start(
        broker: Arc<Broker>,
        clients: Clients,
        max_incoming: usize,
        bridges: &[BridgeConfig],
        source: Option<PathBuf>,
        shutdown: Shutdown,
    ) -> Arc<Bridges> {
        for name in Outbox::existing(&clients) {
            if !bridges.iter().any(|b| b.name.as_str() == name) {
                tracing::info!(bridge = %name, "bridge no longer configured; its out queue is deleted");
                Outbox::discard(&clients, &broker, &name).await;
                link::publish_state_of(&broker, &name, false).await;
            }
        }
        let mut watcher = shutdown.clone();
        let this = Arc::new_cyclic(|me| Bridges {
            env: Env {
                broker,
                clients,
                max_incoming,
            },
            shutdown: Mutex::new(Some(shutdown)),
            running: tokio::sync::Mutex::new(HashMap::new()),
            stats: Mutex::new(BTreeMap::new()),
            source,
            runtime: tokio::runtime::Handle::current(),
            me: me.clone(),
        });
        {
            let mut running = this.running.lock().await;
            for b in bridges {
                this.launch(&mut running, b.clone());
            }
        }
        let weak = Arc::downgrade(&this);
        tokio::spawn(async move {
            watcher.recv().await;
            if let Some(b) = weak.upgrade() {
                b.shutdown.lock().take();
            }
        });
        this
    }

    /// Start one bridge (unless the gateway is shutting down).
    fn launch(&self, running: &mut HashMap<String, Running>, config: BridgeConfig) {
        let Some(shutdown) = self.shutdown.lock().clone() else {
            return;
        };
        let name = config.name.as_str().to_owned();
        let (stop, rx) = watch::channel(false);
        let stats = Arc::new(Stats::default());
        self.stats.lock().insert(name.clone(), stats.clone());
        let task = tokio::spawn(link::run(
            self.env.clone(),
            Arc::new(config.clone()),
            stats,
            Stop::new(rx, shutdown),
        ));
        let files = files_fingerprint(&config);
        running.insert(
            name,
            Running {
                config,
                files,
                stop,
                task,
            },
        );
    }

    /// Make the running bridges `bridges`: removed ones stop and lose their queue, changed
    /// ones (configuration, or the content of their TLS files) restart keeping it, new ones
    /// start.
    pub async fn apply(&self, bridges: Vec<BridgeConfig>) {
        let mut running = self.running.lock().await;
        let names: Vec<String> = running.keys().cloned().collect();
        for name in names {
            let wanted = bridges.iter().find(|b| b.name.as_str() == name);
            let same =
                |r: &Running, w: &BridgeConfig| &r.config == w && r.files == files_fingerprint(w);
            if wanted.is_some_and(|w| running.get(&name).is_some_and(|r| same(r, w))) {
                continue;
            }
            if let Some(r) = running.remove(&name) {
                let _ = r.stop.send(true);
                let _ = r.task.await;
            }
            self.stats.lock().remove(&name);
            if wanted.is_none() {
                tracing::info!(bridge = %name, "bridge removed by reload; its out queue is deleted");
                Outbox::discard(&self.env.clients, &self.env.broker, &name).await;
            } else {
                tracing::info!(bridge = %name, "bridge changed by reload; restarting");
            }
        }
        for b in bridges {
            if !running.contains_key(b.name.as_str()) {
                self.launch(&mut running, b);
            }
        }
    }

    /// Every bridge's counters, by name.
    pub fn stats(&self) -> Vec<BridgeStats> {
        self.stats
            .lock()
            .iter()
            .map(|(name, s)| s.snapshot(name))
            .collect()
    }
}

impl Reload for Bridges {
    fn name(&self) -> &'static str {
        "bridges"
    }

    /// Re-read `[[bridge]]` from the configuration file; on any error keep the bridges as
    /// they are. The changes themselves (stopping, starting) run in the background.
    fn reload(&self) -> Result<(), String> {
        let Some(path) = &self.source else {
            return Ok(());
        };
        let config = crate::config::Config::from_file(path).map_err(|e| e.to_string())?;
        check(&config.bridge)?;
        let this = self.me.upgrade();
        self.runtime.spawn(async move {
            if let Some(b) = this {
                b.apply(config.bridge).await;
            }
        });
        Ok(())
    }
}
