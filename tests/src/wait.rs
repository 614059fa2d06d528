//! Waiting for a condition the test cannot be told about: [`eventually`] asks a check until it answers
//! or time runs out; [`until`] is the same for a condition that must hold, panicking (after showing what
//! the caller wants shown, logs say) when it never does. No test sleeps to synchronise.

use std::time::Duration;

/// How long a test waits for what should come quickly (a process starting or stopping, a file
/// written): the `within` of most [`until`]s.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// How often [`until`] asks.
const EVERY: Duration = Duration::from_millis(20);

/// Asks `check` every `every` until it answers, for at most `within`: its answer, or `None` when time
/// ran out. The one way the tests wait for a condition they cannot be told about.
pub use hive_devservers::eventually;

/// Asks `check` (every 20 ms) until it answers, for at most `within`; when time runs out, calls
/// `on_timeout` (to show logs, say: `|| {}` for nothing) and panics naming `what`.
pub async fn until<T>(
    within: Duration,
    what: &str,
    on_timeout: impl FnOnce(),
    check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let found = eventually(within, EVERY, check).await;
    found.unwrap_or_else(|| {
        on_timeout();
        panic!("{what} within {within:?}")
    })
}
