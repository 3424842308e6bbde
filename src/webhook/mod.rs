//! Webhooks (issue 14): each `[[webhook]]` POSTs every matching write, from any protocol,
//! as a JSON event ([`event`]) signed the Standard Webhooks way ([`sign`]) to its URL.
//!
//! A webhook is a subscriber like an SSE stream or a CoAP observer: a [`Mailbox`] on its
//! filter, so fan-out only pushes into it and never waits. Its task ([`worker`]) keeps
//! events in order per thing ([`order`]) and delivers them with retries ([`deliver`]).
//! Events are held in memory only, at most `queue` of them; a restart loses what was not
//! delivered (as EMQX's and VerneMQ's webhooks do).
//!
//! SIGHUP: [`Webhooks`] is a reload hook. A webhook that stays gets its new settings
//! (URL, secret and CA re-read, limits, filter) swapped in without losing its queue; new
//! ones start, removed ones stop.

/// `[[webhook]]` (kept with the other sections in [`crate::config`], which every front-end
/// reads and which therefore cannot depend on the webhooks).
pub use crate::config::webhook as config;
mod deliver;
pub mod event;
mod order;
pub mod sign;
pub mod stats;
mod worker;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Weak};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::bridge::Stop;
use crate::broker::mailbox::{Mailbox, OverflowPolicy};
use crate::broker::Broker;
use crate::model::SubOptions;
use crate::model::{QoS, RetainHandling};
use crate::reload::Reload;
use crate::shutdown::Shutdown;

pub use config::WebhookConfig;
pub use stats::WebhookStats;

use deliver::Settings;
use stats::Stats;

/// Build every webhook's settings (reading secret and CA files): a start or reload with an
/// unusable file fails with a message naming it.
pub fn check(hooks: &[WebhookConfig]) -> Result<(), String> {
    for h in hooks {
        Settings::build(h)?;
    }
    Ok(())
}

/// One running webhook.
#[derive(Debug)]
struct Running {
    /// What it runs with.
    config: WebhookConfig,
    /// Swapped whole on reload.
    settings: Arc<ArcSwap<Settings>>,
    /// Its subscription's queue.
    mailbox: Arc<Mailbox>,
    /// Tells its task to stop.
    stop: watch::Sender<bool>,
    /// Its task.
    task: JoinHandle<()>,
}

/// The running webhooks, and the reload hook that changes them.
#[derive(Debug)]
pub struct Webhooks {
    /// The broker core (subscriptions).
    broker: Arc<Broker>,
    /// The gateway's shutdown, for new webhooks; taken once it fires.
    shutdown: Mutex<Option<Shutdown>>,
    /// By name; one reload applies at a time.
    running: tokio::sync::Mutex<BTreeMap<String, Running>>,
    /// Counters by name.
    stats: Mutex<BTreeMap<String, Arc<Stats>>>,
    /// The configuration file a reload re-reads.
    source: Option<PathBuf>,
    /// Where reloads run their changes.
    runtime: tokio::runtime::Handle,
    /// This manager, for the changes a reload spawns.
    me: Weak<Webhooks>,
}

impl Webhooks {
    /// Start `hooks` (checked already by [`check`]; a file that became unusable since is
    /// logged and that webhook left out).
    pub async fn start(
        broker: Arc<Broker>,
        hooks: &[WebhookConfig],
        source: Option<PathBuf>,
        shutdown: Shutdown,
    ) -> Arc<Webhooks> {
        let mut watcher = shutdown.clone();
        let this = Arc::new_cyclic(|me| Webhooks {
            broker,
            shutdown: Mutex::new(Some(shutdown)),
            running: tokio::sync::Mutex::new(BTreeMap::new()),
            stats: Mutex::new(BTreeMap::new()),
            source,
            runtime: tokio::runtime::Handle::current(),
            me: me.clone(),
        });
        {
            let mut running = this.running.lock().await;
            for h in hooks {
                match Settings::build(h) {
                    Ok(s) => this.launch(&mut running, h.clone(), s),
                    Err(e) => tracing::error!(error = %e, "webhook not started"),
                }
            }
        }
        let weak = Arc::downgrade(&this);
        tokio::spawn(async move {
            watcher.recv().await;
            if let Some(w) = weak.upgrade() {
                w.shutdown.lock().take();
            }
        });
        this
    }

    /// Subscribe a new webhook and start its task.
    fn launch(
        &self,
        running: &mut BTreeMap<String, Running>,
        config: WebhookConfig,
        settings: Settings,
    ) {
        let Some(shutdown) = self.shutdown.lock().clone() else {
            return;
        };
        let name = config.name.as_str().to_owned();
        let mailbox = Mailbox::new(config.queue, OverflowPolicy::DropNewest);
        self.broker.subscribe_with(
            &config.filter.0,
            &mailbox,
            subscription(),
            RetainHandling::Never,
        );
        let stats = Arc::new(Stats::new(mailbox.clone()));
        self.stats.lock().insert(name.clone(), stats.clone());
        let settings = Arc::new(ArcSwap::from_pointee(settings));
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(worker::run(
            settings.clone(),
            mailbox.clone(),
            stats,
            Stop::new(rx, shutdown),
        ));
        tracing::info!(webhook = %name, url = %config.url.0, filter = %config.filter.0.as_str(), "webhook started");
        running.insert(
            name,
            Running {
                config,
                settings,
                mailbox,
                stop,
                task,
            },
        );
    }

    /// Make the webhooks `hooks`, with `built` their settings: removed ones stop, kept
    /// ones get the new settings (and filter, and queue bound) without losing what they
    /// hold, new ones start.
    async fn apply(&self, hooks: Vec<WebhookConfig>, mut built: Vec<Settings>) {
        let mut running = self.running.lock().await;
        let gone: Vec<String> = running
            .keys()
            .filter(|n| !hooks.iter().any(|h| h.name.as_str() == n.as_str()))
            .cloned()
            .collect();
        for name in gone {
            if let Some(r) = running.remove(&name) {
                self.broker.unsubscribe(&r.config.filter.0, r.mailbox.id());
                let _ = r.stop.send(true);
                let _ = r.task.await;
                tracing::info!(webhook = %name, "webhook removed by reload");
            }
            self.stats.lock().remove(&name);
        }
        for (h, s) in hooks.into_iter().zip(built.drain(..)) {
            match running.get_mut(h.name.as_str()) {
                Some(r) => {
                    if r.config.filter != h.filter {
                        self.broker.unsubscribe(&r.config.filter.0, r.mailbox.id());
                        self.broker.subscribe_with(
                            &h.filter.0,
                            &r.mailbox,
                            subscription(),
                            RetainHandling::Never,
                        );
                    }
                    r.mailbox.set_capacity(h.queue);
                    r.settings.store(Arc::new(s));
                    // The task reads the settings again at its next event or completion.
                    r.config = h;
                }
                None => self.launch(&mut running, h, s),
            }
        }
    }

    /// Every webhook's counters, by name.
    pub fn stats(&self) -> Vec<WebhookStats> {
        self.stats
            .lock()
            .iter()
            .map(|(name, s)| s.snapshot(name))
            .collect()
    }
}

/// A webhook hears every write at the publisher's QoS and RETAIN flag; it gets no
/// retained values when it starts (those were written before it existed).
fn subscription() -> SubOptions {
    SubOptions {
        qos: QoS::ExactlyOnce,
        no_local: false,
        retain_as_published: true,
        id: None,
    }
}

impl Reload for Webhooks {
    fn name(&self) -> &'static str {
        "webhooks"
    }

    /// Re-read `[[webhook]]` and the files it names; on any error keep everything as it
    /// is.
    fn reload(&self) -> Result<(), String> {
        let Some(path) = &self.source else {
            return Ok(());
        };
        let config = crate::config::Config::from_file(path).map_err(|e| e.to_string())?;
        let built = config
            .webhook
            .iter()
            .map(Settings::build)
            .collect::<Result<Vec<_>, _>>()?;
        let this = self.me.upgrade();
        self.runtime.spawn(async move {
            if let Some(w) = this {
                w.apply(config.webhook, built).await;
            }
        });
        Ok(())
    }
}
