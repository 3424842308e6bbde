//! Readiness: a registry of named checks behind `GET /readyz` (and the liveness answer of
//! `GET /livez`).
//!
//! A check is a function answering `Ok(())` or `Err(why)`; it must be cheap and must not
//! block (it runs on every probe, on the HTTP task). The gateway registers `listeners`
//! (every listener bound), `store` (the retained writer is running and its last commit
//! succeeded) and `shutdown` (not stopping). Later parts add their own with
//! [`Readiness::add`], or with [`Readiness::flag`] when the state is pushed rather than
//! polled — e.g. a cluster backbone:
//!
//! ```
//! let readiness = ponte::health::Readiness::new();
//! let backbone = readiness.flag("backbone", Err("not connected yet".into()));
//! assert!(!readiness.ready());
//! backbone.set(Ok(()));
//! assert!(readiness.ready());
//! ```

use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

/// A check: `Ok(())` when ready, else why not.
pub type Probe = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The named checks `/readyz` runs.
#[derive(Default)]
pub struct Readiness {
    /// In registration order, which is the order `?verbose` lists them in.
    checks: RwLock<Vec<(String, Probe)>>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.checks.read().iter().map(|(n, _)| n.clone()).collect();
        f.debug_struct("Readiness").field("checks", &names).finish()
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The check's name.
    pub name: String,
    /// `Ok(())`, or why it is not ready.
    pub result: Result<(), String>,
}

/// A check whose state is set from outside ([`Readiness::flag`]).
#[derive(Debug, Clone)]
pub struct Flag(Arc<Mutex<Result<(), String>>>);

impl Flag {
    /// Ready (`Ok`) or not, and why.
    pub fn set(&self, state: Result<(), String>) {
        *self.0.lock() = state;
    }
}

impl Readiness {
    /// An empty registry (ready: no check fails).
    pub fn new() -> Arc<Self> {
        Arc::new(Readiness::default())
    }

    /// Add a check called `name`; a check of the same name is replaced.
    pub fn add(
        &self,
        name: impl Into<String>,
        probe: impl Fn() -> Result<(), String> + Send + Sync + 'static,
    ) {
        let name = name.into();
        let probe: Probe = Arc::new(probe);
        let mut checks = self.checks.write();
        match checks.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = probe,
            None => checks.push((name, probe)),
        }
    }

    /// Add a check called `name` whose state the returned [`Flag`] sets, starting at
    /// `initial`.
    pub fn flag(&self, name: impl Into<String>, initial: Result<(), String>) -> Flag {
        let flag = Flag(Arc::new(Mutex::new(initial)));
        let state = flag.0.clone();
        self.add(name, move || state.lock().clone());
        flag
    }

    /// Run every check, in registration order.
    pub fn check(&self) -> Vec<Outcome> {
        let checks: Vec<(String, Probe)> = self.checks.read().clone();
        checks
            .into_iter()
            .map(|(name, probe)| Outcome {
                name,
                result: probe(),
            })
            .collect()
    }

    /// Whether every check passes.
    pub fn ready(&self) -> bool {
        self.check().iter().all(|o| o.result.is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_run_in_order_and_a_name_is_replaced() {
        let r = Readiness::new();
        r.add("a", || Ok(()));
        r.add("b", || Err("down".into()));
        assert!(!r.ready());
        r.add("b", || Ok(()));
        let names: Vec<String> = r.check().into_iter().map(|o| o.name).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(r.ready());
    }
}
