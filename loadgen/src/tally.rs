//! What the scenarios share besides the report: the arguments that bound a run, the tallies
//! of a request/response task, and collecting tasks before a hard deadline.

use clap::Args;
use hdrhistogram::Histogram;
use tokio::task::JoinSet;
use tokio::time::{timeout_at, Instant};

use crate::now_ns;
use crate::report::{new_hist, Latency, Report};
use crate::{Before, Ctx};

/// How long a request/response run (CoAP, HTTP) lasts and what its PUTs carry.
#[derive(Debug, Clone, Args, serde::Serialize)]
pub(crate) struct RequestLoad {
    /// Length of the run.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Stop after this many requests per client or connection (0 = only the time bounds
    /// the run).
    #[arg(long, default_value_t = 0)]
    pub requests: u64,
    /// PUT payload (body) size.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
}

/// When a stream of publishes (or PUTs) stops, and how long its deliveries may trail it.
#[derive(Debug, Clone, Args, serde::Serialize)]
pub(crate) struct Phases {
    /// Stop publishing (or issuing PUTs) after this many seconds even if the count is not
    /// reached.
    #[arg(long, default_value_t = 60)]
    pub max_seconds: u64,
    /// Afterwards, how long subscribers may take to receive the rest.
    #[arg(long, default_value_t = 10)]
    pub drain_seconds: u64,
}

/// Tallies of one client's (or connection's) requests: how many were sent, answered with
/// success (CoAP 2.xx, HTTP 2xx) or failed (timeouts, errors, other answers), the first
/// error seen, and the round-trip latency of the successful answers (ns).
pub(crate) struct Tally {
    sent: u64,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    hist: Histogram<u64>,
}

impl Tally {
    /// Nothing counted yet.
    pub(crate) fn new() -> Tally {
        Tally {
            sent: 0,
            ok: 0,
            errors: 0,
            first_error: None,
            hist: new_hist(),
        }
    }

    /// Requests sent so far.
    pub(crate) fn sent(&self) -> u64 {
        self.sent
    }

    /// Count a request issued now; the time it was issued at (see [`now_ns`]).
    pub(crate) fn issue(&mut self) -> u64 {
        let t0 = now_ns();
        self.sent += 1;
        t0
    }

    /// A successful answer to the request issued at `t0`.
    pub(crate) fn answered(&mut self, t0: u64) {
        self.ok += 1;
        self.hist
            .saturating_record(now_ns().saturating_sub(t0).max(1));
    }

    /// A failed request.
    pub(crate) fn failed(&mut self, why: String) {
        self.errors += 1;
        self.first_error.get_or_insert(why);
    }

    /// Stop before a request was sent because of `why`.
    pub(crate) fn gave_up(&mut self, why: String) {
        self.first_error.get_or_insert(why);
    }

    /// Add the requests sent, their failures, latencies and first error to `report` and
    /// `hist`; the number of successful answers.
    pub(crate) fn add_to(self, report: &mut Report, hist: &mut Histogram<u64>) -> u64 {
        report.sent += self.sent;
        report.errors += self.errors;
        let _ = hist.add(&self.hist);
        if let Some(e) = self.first_error {
            report.extra.entry("first_error").or_insert(e.into());
        }
        self.ok
    }
}

/// Join `tasks` until all have finished, handing each result to `each`; when `hard` passes
/// first, abort the rest. Either failure is the report's; `what` names one task in it.
pub(crate) async fn join_all<T: 'static>(
    tasks: &mut JoinSet<T>,
    hard: Instant,
    what: &str,
    report: &mut Report,
    mut each: impl FnMut(&mut Report, T),
) {
    loop {
        match timeout_at(hard, tasks.join_next()).await {
            Ok(Some(Ok(r))) => each(report, r),
            Ok(Some(Err(e))) => report.fail(format!("{what} task: {e}")),
            Ok(None) => break,
            Err(_) => {
                tasks.abort_all();
                report.fail(format!("{what}s did not finish in time"));
                break;
            }
        }
    }
}

/// Close a request/response run: sum the tallies of `tasks` (see [`join_all`]); every
/// request sent expects a successful answer.
pub(crate) async fn requests_report(
    mut report: Report,
    mut tasks: JoinSet<Tally>,
    hard: Instant,
    what: &str,
    started: Instant,
    ctx: &Ctx,
    before: Before,
) -> Report {
    let mut hist = new_hist();
    join_all(&mut tasks, hard, what, &mut report, |report, r| {
        report.delivered += r.add_to(report, &mut hist);
    })
    .await;
    report.expected = report.sent;
    report.latency = Latency::from_hist(&hist);
    report.set_duration(started.elapsed());
    report.check_delivery();
    ctx.end(&mut report, before);
    report
}
