//! `/livez` (the process answers) and `/health` (the hive and its components).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use sea_orm::{ConnectionTrait, Statement};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::system::VERSION;
use crate::AppState;
use crate::extract::Query;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(livez))
}

/// The trivial handler: no state, no I/O. Liveness probes use it, and the benchmarks measure the HTTP
/// stack's own limit with it.
#[utoipa::path(get, path = "/livez", tag = "system", summary = "Liveness: the process answers", responses((status = 200, description = "`ok`", body = String, content_type = "text/plain")))]
async fn livez() -> &'static str {
    "ok"
}

/// `/health?detail=1`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct HealthQuery {
    /// 1: with an admin token, a failing component's own error text.
    detail: Option<u8>,
}

/// How a component, or the hive, is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum Condition {
    Healthy,
    /// Working, but the projector is far behind or stalled.
    Degraded,
    Unhealthy,
}

/// The hive's health: `unhealthy` (503) when the database or the event store fails its probe,
/// `degraded` when the projector lags or stalls.
#[derive(Debug, Serialize, ToSchema)]
struct Health {
    status: Condition,
    /// This server's version.
    version: &'static str,
    timestamp: chrono::DateTime<chrono::Utc>,
    components: Components,
    summary: Summary,
}

/// Each component's probe.
#[derive(Debug, Serialize, ToSchema)]
struct Components {
    database: Component,
    event_store: Component,
    projector: Component,
}

/// One component's probe.
#[derive(Debug, Serialize, ToSchema)]
struct Component {
    status: Condition,
    details: Details,
}

/// What a probe found.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
enum Details {
    /// The database answers.
    Database { backend: &'static str },
    /// The event store answers.
    EventStore { stream: String, last_seq: u64 },
    /// Where the projector stands.
    Projector {
        projection: String,
        checkpoint: u64,
        lag_events: u64,
        /// How long it has stood still behind the log's head, when it has stalled.
        #[serde(skip_serializing_if = "Option::is_none")]
        stalled_secs: Option<u64>,
    },
    /// The probe failed: a stable reason for everyone; the backend's own words go to the log, and to
    /// an admin who asks with `?detail=1`.
    Failed {
        reason: Failure,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

/// Why a probe failed.
#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum Failure {
    /// It answered with an error.
    Unreachable,
    /// It did not answer within 1 s.
    Timeout,
}

/// The components counted by health.
#[derive(Debug, Serialize, ToSchema)]
struct Summary {
    healthy: usize,
    unhealthy: usize,
    total: usize,
}

impl Component {
    fn healthy(details: Details) -> Self {
        Self {
            status: Condition::Healthy,
            details,
        }
    }

    /// A component that failed its probe (`Err`: it did not answer in time).
    fn failed(name: &str, outcome: Result<String, ()>, detail: bool) -> Self {
        let (reason, error) = match outcome {
            Ok(error) => (Failure::Unreachable, error),
            Err(()) => (Failure::Timeout, "no answer within 1s".to_owned()),
        };
        tracing::warn!(component = name, %error, "health probe failed");
        Self {
            status: Condition::Unhealthy,
            details: Details::Failed {
                reason,
                error: detail.then_some(error),
            },
        }
    }
}

#[utoipa::path(get, path = "/health", tag = "system", summary = "Health of the hive and its components", params(HealthQuery), responses((status = 200, description = "healthy or degraded", body = Health), (status = 503, description = "unhealthy", body = Health)))]
async fn health(
    State(state): State<AppState>,
    caller: Option<axum::Extension<crate::auth::Caller>>,
    Query(query): Query<HealthQuery>,
) -> Response {
    let admin = caller.is_some_and(|c| c.0.0.role == hive_eventlog::Role::Admin);
    let detail = admin && query.detail == Some(1);
    let probe = Duration::from_secs(1);
    let db = tokio::time::timeout(
        probe,
        state.db.query_one_raw(Statement::from_string(
            state.db.get_database_backend(),
            "SELECT 1",
        )),
    )
    .await;
    let database = match db {
        Ok(Ok(_)) => Component::healthy(Details::Database {
            backend: "postgres",
        }),
        Ok(Err(e)) => Component::failed("database", Ok(e.to_string()), detail),
        Err(_) => Component::failed("database", Err(()), detail),
    };
    let head = tokio::time::timeout(probe, state.progress.head_now()).await;
    let event_store = match head {
        Ok(Ok(seq)) => Component::healthy(Details::EventStore {
            stream: state.log.namespace().stream(),
            last_seq: seq,
        }),
        Ok(Err(e)) => Component::failed("event_store", Ok(e.to_string()), detail),
        Err(_) => Component::failed("event_store", Err(()), detail),
    };
    let checkpoint = state.progress.checkpoint();
    let lag = state.progress.head().saturating_sub(checkpoint);
    // Behind the head and not moving: the projector is down or stuck, however small the lag.
    let still = state.progress.still_for();
    let stalled = lag > 0 && still >= state.config.stall;
    let projector = Component {
        status: if lag <= state.config.degraded_lag && !stalled {
            Condition::Healthy
        } else {
            Condition::Degraded
        },
        details: Details::Projector {
            projection: state.config.projection.clone(),
            checkpoint,
            lag_events: lag,
            stalled_secs: stalled.then_some(still.as_secs()),
        },
    };
    let statuses = [database.status, event_store.status, projector.status];
    let healthy = statuses
        .iter()
        .filter(|s| **s == Condition::Healthy)
        .count();
    let overall =
        if database.status != Condition::Healthy || event_store.status != Condition::Healthy {
            Condition::Unhealthy
        } else {
            projector.status
        };
    let body = Health {
        status: overall,
        version: VERSION,
        timestamp: chrono::Utc::now(),
        components: Components {
            database,
            event_store,
            projector,
        },
        summary: Summary {
            healthy,
            unhealthy: statuses.len() - healthy,
            total: statuses.len(),
        },
    };
    let code = if overall == Condition::Unhealthy {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, Json(body)).into_response()
}
