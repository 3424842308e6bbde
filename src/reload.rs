//! Re-reading files while running (SIGHUP): a list of [`Reload`] hooks, one per thing that
//! has files — today the TLS certificates; password and ACL files plug in the same way.
//!
//! A hook builds its new state completely before swapping it in, so a bad file leaves the
//! old state in force; new connections use whatever is in force when they start, and
//! existing connections keep what they started with.

use std::fmt;
use std::sync::Arc;

/// Something that re-reads its files on request.
pub trait Reload: Send + Sync + fmt::Debug {
    /// What is reloaded, for logs and errors ("TLS certificates").
    fn name(&self) -> &'static str;
    /// Re-read the files and swap the new state in; on error, keep the old state and say
    /// which file is wrong and why.
    fn reload(&self) -> Result<(), String>;
}

/// One hook that failed during [`Reloader::reload`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The hook's [`Reload::name`].
    pub what: &'static str,
    /// Its error message (naming the file).
    pub message: String,
}

/// Why a reload was (partly) refused: every hook that failed; the others did reload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("reload kept the old state of {}", describe(.0))]
pub struct ReloadError(pub Vec<Failure>);

fn describe(failures: &[Failure]) -> String {
    failures
        .iter()
        .map(|f| format!("{} ({})", f.what, f.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The hooks of a running gateway; cheap to clone, so a signal handler can own one.
#[derive(Debug, Clone, Default)]
pub struct Reloader {
    /// Run in order by [`Reloader::reload`].
    hooks: Vec<Arc<dyn Reload>>,
}

impl Reloader {
    /// No hooks yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Run `hook` on every reload from now on.
    pub fn add(&mut self, hook: Arc<dyn Reload>) {
        self.hooks.push(hook);
    }

    /// Run every hook (a failing one does not stop the others); each outcome is logged.
    pub fn reload(&self) -> Result<(), ReloadError> {
        let mut failures = Vec::new();
        for hook in &self.hooks {
            match hook.reload() {
                Ok(()) => tracing::info!(what = hook.name(), "reloaded"),
                Err(message) => {
                    tracing::error!(what = hook.name(), error = %message, "reload failed; the old state stays in force");
                    failures.push(Failure {
                        what: hook.name(),
                        message,
                    });
                }
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(ReloadError(failures))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Debug, Default)]
    struct Counter(AtomicUsize, bool);

    impl Reload for Counter {
        fn name(&self) -> &'static str {
            if self.1 {
                "bad"
            } else {
                "good"
            }
        }
        fn reload(&self) -> Result<(), String> {
            self.0.fetch_add(1, Ordering::Relaxed);
            if self.1 {
                Err("file x: broken".into())
            } else {
                Ok(())
            }
        }
    }

    #[test]
    fn a_failing_hook_does_not_stop_the_others_and_is_named() {
        let bad = Arc::new(Counter(AtomicUsize::new(0), true));
        let good = Arc::new(Counter::default());
        let mut r = Reloader::new();
        r.add(bad.clone());
        r.add(good.clone());
        let e = r.reload().unwrap_err();
        assert_eq!(good.0.load(Ordering::Relaxed), 1);
        assert_eq!(bad.0.load(Ordering::Relaxed), 1);
        assert!(e.to_string().contains("bad (file x: broken)"), "{e}");
        assert!(Reloader::new().reload().is_ok());
    }
}
