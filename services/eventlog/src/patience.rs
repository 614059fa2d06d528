//! Asking again while servers are not ready: a nats-server or PostgreSQL still starting, a cluster still
//! electing its leaders, a bucket made just now. One loop for every such wait, so they all back off and
//! report alike.

use std::time::{Duration, Instant};

/// Runs `attempt` until it succeeds, backing off from 200 ms to 5 s and logging each failure as `what`
/// not being ready, for up to `within`; then answers its last error.
pub async fn patiently<T, E: std::fmt::Display>(
    what: &str,
    within: Duration,
    mut attempt: impl AsyncFnMut() -> Result<T, E>,
) -> Result<T, E> {
    let started = Instant::now();
    let mut backoff = Duration::from_millis(200);
    loop {
        match attempt().await {
            Ok(done) => return Ok(done),
            Err(e) if started.elapsed() < within => {
                tracing::warn!(error = %e, "{what} is not ready; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
}
