//! Waiting for a condition the bench cannot be told about: [`eventually`] asks a check until it answers
//! or time runs out, with the workspace's one waiting loop ([`hive_devservers::eventually`]). No
//! scenario sleeps to synchronise.

use std::time::Duration;

/// Asks `check` every `every` until it answers, for at most `within`: its answer, its first error, or
/// an error naming `what` when time ran out.
pub async fn eventually<T>(
    within: Duration,
    every: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let answer =
        hive_devservers::eventually(within, every, async || check().await.transpose()).await;
    answer.unwrap_or_else(|| Err(anyhow::anyhow!("{what} not within {within:?}")))
}
