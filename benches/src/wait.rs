//! Waiting for a condition the bench cannot be told about: [`eventually`] asks a check until it answers
//! or time runs out. No scenario sleeps to synchronise.

use std::time::Duration;

/// Asks `check` every `every` until it answers, for at most `within`: its answer, its first error, or
/// an error naming `what` when time ran out.
pub async fn eventually<T>(
    within: Duration,
    every: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    tokio::time::timeout(within, async {
        loop {
            if let Some(found) = check().await? {
                return Ok(found);
            }
            tokio::time::sleep(every).await;
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("{what} not within {within:?}"))?
}
