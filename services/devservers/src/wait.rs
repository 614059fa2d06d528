//! Waiting for a condition nobody can be told about (a server listening, a row projected): ask until
//! it answers or time runs out. The one such loop of the workspace: the servers here, the tests and
//! the benchmarks all wait with it, and none sleeps to synchronise.

use std::time::Duration;

/// Asks `check` every `every` until it answers, for at most `within`: its answer, or `None` when time
/// ran out.
pub async fn eventually<T>(
    within: Duration,
    every: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> Option<T> {
    tokio::time::timeout(within, async {
        loop {
            if let Some(found) = check().await {
                return found;
            }
            tokio::time::sleep(every).await;
        }
    })
    .await
    .ok()
}
