//! Deadlines: every wait of a test is bounded, and names what it waited for when it runs out.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

/// The longest any single expected event may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long to listen for something that must NOT arrive.
pub const QUIET: Duration = Duration::from_millis(400);

/// Await `fut` or panic after `d`, naming what was awaited.
pub async fn within<T>(d: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(d, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {d:?} waiting for {what}"),
    }
}

/// Poll `check` every 20 ms until it says yes; panics after `d`, naming `what`.
pub async fn eventually<F: Future<Output = bool>>(
    d: Duration,
    what: &str,
    check: impl FnMut() -> F,
) {
    poll_until(d, what, Duration::from_millis(20), check).await
}

/// [`eventually`] with the pause between two checks given.
pub async fn poll_until<F: Future<Output = bool>>(
    d: Duration,
    what: &str,
    pause: Duration,
    mut check: impl FnMut() -> F,
) {
    within(d, what, async {
        while !check().await {
            tokio::time::sleep(pause).await;
        }
    })
    .await
}

/// Poll `f` every 10 ms until it returns `Some`, and return what it found; panics after
/// `d`, naming `what`.
pub async fn until_some<T, F: Future<Output = Option<T>>>(
    d: Duration,
    what: &str,
    mut f: impl FnMut() -> F,
) -> T {
    within(d, what, async {
        loop {
            if let Some(v) = f().await {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

/// Assert that `fut` does not complete within `d` (nothing more arrives, no second copy).
pub async fn never<T: Debug>(d: Duration, why: &str, fut: impl Future<Output = T>) {
    if let Ok(got) = tokio::time::timeout(d, fut).await {
        panic!("{why}: got {got:?}");
    }
}
