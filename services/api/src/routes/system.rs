//! `/`, `/api/v1/`, `/health` and `/status`.

use std::any::Any;
use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hive_schema::status_counts;
use sea_orm::{ConnectionTrait, EntityTrait, Statement};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::travel::{AtQuery, hive_at};
use crate::AppState;
#[allow(unused_imports)]
use crate::error::ErrorBody;
use crate::error::{ApiError, ApiResult, Code};
use crate::extract::Query;

const VERSION: &str = env!("CARGO_PKG_VERSION");

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(index_root))
        .routes(routes!(index_v1))
        .routes(routes!(index_v1_slash))
        .routes(routes!(health))
        .routes(routes!(livez))
        .routes(routes!(status))
        .routes(routes!(system_status))
}

/// The trivial handler: no state, no I/O. Liveness probes use it, and the benchmarks measure the HTTP
/// stack's own limit with it.
#[utoipa::path(get, path = "/livez", tag = "system", summary = "Liveness: the process answers", responses((status = 200, description = "ok")))]
async fn livez() -> &'static str {
    "ok"
}

#[utoipa::path(get, path = "/", tag = "system", summary = "Name, version and links", responses((status = 200, description = "OK")))]
async fn index_root() -> Json<Value> {
    index().await
}

#[utoipa::path(get, path = "/api/v1", tag = "system", summary = "Name, version and links", responses((status = 200, description = "OK")))]
async fn index_v1() -> Json<Value> {
    index().await
}

#[utoipa::path(get, path = "/api/v1/", tag = "system", summary = "Name, version and links", responses((status = 200, description = "OK")))]
async fn index_v1_slash() -> Json<Value> {
    index().await
}

#[utoipa::path(get, path = "/api/v1/system/status", tag = "system", summary = "Agents and tasks by status (now, or as it was)", params(("at_seq" = Option<u64>, Query, description = "as it was at this event"), ("at_time" = Option<String>, Query, description = "as it was at this RFC 3339 time")), responses((status = 200, description = "OK"), (status = 400, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn system_status(state: State<AppState>, at: Query<AtQuery>) -> ApiResult<Response> {
    status(state, at).await
}

async fn index() -> Json<Value> {
    Json(json!({
        "name": "hive",
        "description": "Control plane for fleets of autonomous agents",
        "version": VERSION,
        "links": {
            "docs": "/api/v1/docs",
            "openapi": "/api/v1/openapi.json",
            "asyncapi": "/api/v1/asyncapi.json",
            "dashboard": "/dashboard",
            "stream": "/api/v1/stream",
            "metrics": "/metrics",
            "health": "/health",
            "status": "/api/v1/system/status",
            "agents": "/api/v1/agents",
            "tasks": "/api/v1/tasks",
            "projects": "/api/v1/projects",
            "dead_letters": "/api/v1/dead-letters",
        }
    }))
}

fn component(ok: bool, details: Value) -> Value {
    json!({"status": if ok { "healthy" } else { "unhealthy" }, "details": details})
}

/// `/health?detail=1`.
#[derive(Debug, Default, Deserialize)]
struct HealthQuery {
    /// With an admin token: the failing components' own error text.
    detail: Option<u8>,
}

/// A component that failed its probe: a stable reason for everyone (`unreachable` or `timeout`);
/// the backend's own words go to the log, and to an admin who asks with `?detail=1`.
fn failed(name: &str, outcome: Result<String, ()>, detail: bool) -> Value {
    let (reason, error) = match outcome {
        Ok(error) => ("unreachable", error),
        Err(()) => ("timeout", "no answer within 1s".to_owned()),
    };
    tracing::warn!(component = name, %error, "health probe failed");
    let mut details = json!({"reason": reason});
    if detail {
        details["error"] = json!(error);
    }
    component(false, details)
}

#[utoipa::path(get, path = "/health", tag = "system", summary = "Health of the hive and its components", params(("detail" = Option<u8>, Query, description = "1: with an admin token, a failing component's own error text")), responses((status = 200, description = "healthy or degraded"), (status = 503, description = "unhealthy")))]
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
        Ok(Ok(_)) => component(true, json!({"backend": "postgres"})),
        Ok(Err(e)) => failed("database", Ok(e.to_string()), detail),
        Err(_) => failed("database", Err(()), detail),
    };
    let head = tokio::time::timeout(probe, state.progress.head_now()).await;
    let event_store = match &head {
        Ok(Ok(seq)) => component(
            true,
            json!({"stream": state.log.namespace().stream(), "last_seq": seq}),
        ),
        Ok(Err(e)) => failed("event_store", Ok(e.to_string()), detail),
        Err(_) => failed("event_store", Err(()), detail),
    };
    let checkpoint = state.progress.checkpoint();
    let lag = state.progress.head().saturating_sub(checkpoint);
    // Behind the head and not moving: the projector is down or stuck, however small the lag.
    let still = state.progress.still_for();
    let stalled = lag > 0 && still >= state.config.stall;
    let projector_status = if lag <= state.config.degraded_lag && !stalled {
        "healthy"
    } else {
        "degraded"
    };
    let mut details =
        json!({"projection": state.config.projection, "checkpoint": checkpoint, "lag_events": lag});
    if stalled {
        details["stalled_secs"] = json!(still.as_secs());
    }
    let projector = json!({"status": projector_status, "details": details});
    let statuses = [
        &database["status"],
        &event_store["status"],
        &projector["status"],
    ];
    let healthy = statuses.iter().filter(|s| **s == "healthy").count();
    let overall = if database["status"] != "healthy" || event_store["status"] != "healthy" {
        "unhealthy"
    } else if projector_status != "healthy" {
        "degraded"
    } else {
        "healthy"
    };
    let body = json!({
        "status": overall,
        "version": VERSION,
        "timestamp": chrono::Utc::now(),
        "components": {"database": database, "event_store": event_store, "projector": projector},
        "summary": {"healthy": healthy, "unhealthy": statuses.len() - healthy, "total": statuses.len()},
    });
    let code = if overall == "unhealthy" {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, Json(body)).into_response()
}

#[utoipa::path(get, path = "/status", tag = "system", summary = "Agents and tasks by status, log head, projection lag", params(("at_seq" = Option<u64>, Query, description = "as it was at this event"), ("at_time" = Option<String>, Query, description = "as it was at this RFC 3339 time")), responses((status = 200, description = "OK"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn status(State(state): State<AppState>, Query(at): Query<AtQuery>) -> ApiResult<Response> {
    if let Some(at) = at.at(&state).await? {
        let hive = hive_at(&state, at).await?;
        let mut by_kind: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
        for ((kind, status), count) in hive.counts {
            by_kind.entry(kind).or_default().insert(status, count);
        }
        let mut body = counts_json(by_kind);
        body["at"] = json!({"seq": hive.last_seq});
        return Ok(Json(body).into_response());
    }
    // The same answer, already serialized, while neither the checkpoint nor the head moves.
    let key = (state.progress.checkpoint(), state.progress.head());
    let kept = state
        .status_answer
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .filter(|(checkpoint, head, _)| (*checkpoint, *head) == key)
        .map(|(_, _, answer)| answer.clone());
    let answer = match kept {
        Some(answer) => answer,
        None => {
            let body = status_body(&state).await?;
            let answer = axum::body::Bytes::from(body.to_string());
            let made = (
                body["projection"]["seq"].as_u64(),
                body["log"]["last_seq"].as_u64(),
            );
            if made == (Some(key.0), Some(key.1)) {
                *state
                    .status_answer
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some((key.0, key.1, answer.clone()));
            }
            answer
        }
    };
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        answer,
    )
        .into_response())
}

/// The hive's counts now, with the log's head and the projection's standing.
pub(crate) async fn status_body(state: &AppState) -> ApiResult<Value> {
    let checkpoint = state.progress.checkpoint();
    let mut cache = state.status_cache.lock().await;
    let counts = match cache.as_ref() {
        Some((at, counts)) if *at == checkpoint => counts.clone(),
        _ => {
            let counts = count_statuses(state).await?;
            *cache = Some((checkpoint, counts.clone()));
            counts
        }
    };
    drop(cache);
    let head = state.progress.head();
    let mut body = counts;
    body["log"] = json!({"last_seq": head});
    body["projection"] = json!({"name": state.config.projection, "seq": checkpoint, "lag": head.saturating_sub(checkpoint)});
    Ok(body)
}

async fn count_statuses(state: &AppState) -> ApiResult<Value> {
    let rows = status_counts::Entity::find().all(&state.db).await?;
    let mut by_kind: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for row in rows {
        by_kind
            .entry(row.kind)
            .or_default()
            .insert(row.status, row.count);
    }
    Ok(counts_json(by_kind))
}

/// `{agents: {total, by_status}, tasks: {total, by_status}}` with every status present.
fn counts_json(by_kind: BTreeMap<String, BTreeMap<String, i64>>) -> Value {
    let section = |kind: &str, all: &[&str]| {
        let counts = by_kind.get(kind).cloned().unwrap_or_default();
        let mut by_status: BTreeMap<String, i64> = all.iter().map(|s| (s.to_string(), 0)).collect();
        by_status.extend(counts);
        let total: i64 = by_status.values().sum();
        json!({"total": total, "by_status": by_status})
    };
    let agents: Vec<_> = hive_events::agent::AgentStatus::ALL
        .iter()
        .map(|s| s.as_str())
        .collect();
    let tasks: Vec<_> = hive_events::task::TaskStatus::ALL
        .iter()
        .map(|s| s.as_str())
        .collect();
    json!({"agents": section("agent", &agents), "tasks": section("task", &tasks)})
}

/// The answer when a handler panics: a 500 in the API's format, with nothing of the panic in it.
pub fn panic_answer(panic: Box<dyn Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(%detail, "handler panicked");
    ApiError::new(Code::Internal, "internal error; it has been logged").into_response()
}
