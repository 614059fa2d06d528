//! Load shedding. The API works on at most `max_in_flight` requests at once; one more is answered at
//! once with 503 `overloaded` and `Retry-After: 1`, instead of queueing behind the others until its
//! client times out, and the API recovers as soon as the load drops. The default (4,096) is a safety
//! valve, not a throttle: measured on 2 cores, 2,000 clients are all served without a timeout
//! (`/status` p99 67 ms), while a limit of 512 shed 90 % of them and cut what was served tenfold
//! (BENCHMARKS.md). Endless streams (the live feed, an agent's assignments), the liveness probe and
//! the metrics are not counted: they hold no worker for long, and the operators need them most when
//! the API is busiest.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::error::{ApiError, Code};

/// Whether `path` is exempt from the limit.
fn exempt(path: &str) -> bool {
    matches!(path, "/livez" | "/metrics" | "/api/v1/stream")
        || (path.starts_with("/api/v1/agents/") && path.ends_with("/assignments"))
}

/// Middleware: takes a slot for the request, or sheds it.
pub async fn shed(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if exempt(request.uri().path()) {
        return next.run(request).await;
    }
    let Ok(permit) = state.in_flight.try_acquire() else {
        metrics::counter!("hive_http_shed_total").increment(1);
        return ApiError::new(
            Code::Overloaded,
            "the API is working on as many requests as it takes; try again shortly",
        )
        .into_response();
    };
    // Held until the request ends or its client goes away; the in-flight gauge is read off the
    // semaphore when the metrics are scraped (no registry lookup per request).
    let _permit = permit;
    next.run(request).await
}

/// Requests the API is working on now.
pub fn in_flight(state: &AppState) -> usize {
    state
        .config
        .max_in_flight
        .max(1)
        .saturating_sub(state.in_flight.available_permits())
}

#[cfg(test)]
mod tests {
    use super::exempt;

    #[test]
    fn streams_probes_and_metrics_are_exempt_and_nothing_else() {
        for path in [
            "/livez",
            "/metrics",
            "/api/v1/stream",
            "/api/v1/agents/0192/assignments",
        ] {
            assert!(exempt(path), "{path}");
        }
        for path in ["/status", "/health", "/api/v1/tasks", "/api/v1/agents/0192"] {
            assert!(!exempt(path), "{path}");
        }
    }
}
