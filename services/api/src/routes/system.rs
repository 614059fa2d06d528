//! `/`, `/api/v1/` and `/status`.

use std::any::Any;
use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use hive_schema::status_counts;
use sea_orm::EntityTrait;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::travel::{AtQuery, hive_at};
use crate::AppState;
use crate::error::{ApiError, ApiResult, Code};
use crate::extract::Query;

pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(index_root))
        .routes(routes!(index_v1))
        .routes(routes!(index_v1_slash))
        .routes(routes!(status))
        .routes(routes!(system_status))
}

/// What this is, and where to go from here.
#[derive(Serialize, ToSchema)]
struct Index {
    /// `hive`.
    name: &'static str,
    description: &'static str,
    /// This server's version.
    version: &'static str,
    links: Links,
}

/// The main routes.
#[derive(Serialize, ToSchema)]
struct Links {
    docs: &'static str,
    openapi: &'static str,
    asyncapi: &'static str,
    dashboard: &'static str,
    stream: &'static str,
    metrics: &'static str,
    health: &'static str,
    status: &'static str,
    agents: &'static str,
    tasks: &'static str,
    projects: &'static str,
    dead_letters: &'static str,
}

#[utoipa::path(get, path = "/", tag = "system", summary = "Name, version and links", responses((status = 200, body = Index)))]
async fn index_root() -> Json<Index> {
    index()
}

#[utoipa::path(get, path = "/api/v1", tag = "system", summary = "Name, version and links", responses((status = 200, body = Index)))]
async fn index_v1() -> Json<Index> {
    index()
}

#[utoipa::path(get, path = "/api/v1/", tag = "system", summary = "Name, version and links", responses((status = 200, body = Index)))]
async fn index_v1_slash() -> Json<Index> {
    index()
}

fn index() -> Json<Index> {
    Json(Index {
        name: "hive",
        description: "Control plane for fleets of autonomous agents",
        version: VERSION,
        links: Links {
            docs: "/api/v1/docs",
            openapi: "/api/v1/openapi.json",
            asyncapi: "/api/v1/asyncapi.json",
            dashboard: "/dashboard",
            stream: "/api/v1/stream",
            metrics: "/metrics",
            health: "/health",
            status: "/api/v1/system/status",
            agents: "/api/v1/agents",
            tasks: "/api/v1/tasks",
            projects: "/api/v1/projects",
            dead_letters: "/api/v1/dead-letters",
        },
    })
}

/// The hive's agents and tasks by status: now, with the log's head and the projection's standing, or
/// as it was at an event or a time (`at`, without `log` and `projection`).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub(crate) struct Status {
    pub(crate) agents: Counts,
    pub(crate) tasks: Counts,
    /// Now: the log's head.
    #[serde(skip_serializing_if = "Option::is_none")]
    log: Option<LogHead>,
    /// Now: where the read models stand.
    #[serde(skip_serializing_if = "Option::is_none")]
    projection: Option<Standing>,
    /// As it was: the last event folded (for a time, the last that occurred at or before it; 0
    /// before the first).
    #[serde(skip_serializing_if = "Option::is_none")]
    at: Option<AtSeq>,
}

/// One kind's entities counted by status, every status present.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Counts {
    /// All of them.
    pub total: i64,
    /// By status name.
    pub by_status: BTreeMap<String, i64>,
}

/// The agents' and the tasks' counts.
pub type CountsByKind = (Counts, Counts);

/// The log's head.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub(crate) struct LogHead {
    /// The log's last sequence.
    pub(crate) last_seq: u64,
}

/// Where the read models stand.
#[derive(Clone, Debug, Serialize, ToSchema)]
struct Standing {
    /// The projection's name.
    name: String,
    /// Its checkpoint: the last event the read models reflect.
    seq: u64,
    /// Events it has yet to apply.
    lag: u64,
}

/// The point a past status was folded to.
#[derive(Clone, Debug, Serialize, ToSchema)]
struct AtSeq {
    seq: u64,
}

#[utoipa::path(get, path = "/api/v1/system/status", tag = "system", summary = "Agents and tasks by status (now, or as it was)", params(AtQuery), responses((status = 200, body = Status)))]
async fn system_status(state: State<AppState>, at: Query<AtQuery>) -> ApiResult<Response> {
    status(state, at).await
}

#[utoipa::path(get, path = "/status", tag = "system", summary = "Agents and tasks by status, log head, projection lag (now, or as it was)", params(AtQuery), responses((status = 200, body = Status)))]
async fn status(State(state): State<AppState>, Query(at): Query<AtQuery>) -> ApiResult<Response> {
    if let Some(at) = at.at(&state).await? {
        let hive = hive_at(&state, at).await?;
        let mut by_kind: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
        for ((kind, status), count) in hive.counts {
            by_kind.entry(kind).or_default().insert(status, count);
        }
        let (agents, tasks) = counts(by_kind);
        return Ok(Json(Status {
            agents,
            tasks,
            log: None,
            projection: None,
            at: Some(AtSeq { seq: hive.last_seq }),
        })
        .into_response());
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
            let answer = axum::body::Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
            let made = (
                body.projection.as_ref().map(|p| p.seq),
                body.log.as_ref().map(|l| l.last_seq),
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
pub(crate) async fn status_body(state: &AppState) -> ApiResult<Status> {
    let checkpoint = state.progress.checkpoint();
    let mut cache = state.status_cache.lock().await;
    let (agents, tasks) = match cache.as_ref() {
        Some((at, counts)) if *at == checkpoint => counts.clone(),
        _ => {
            let counts = count_statuses(state).await?;
            *cache = Some((checkpoint, counts.clone()));
            counts
        }
    };
    drop(cache);
    let head = state.progress.head();
    Ok(Status {
        agents,
        tasks,
        log: Some(LogHead { last_seq: head }),
        projection: Some(Standing {
            name: state.config.projection.clone(),
            seq: checkpoint,
            lag: head.saturating_sub(checkpoint),
        }),
        at: None,
    })
}

async fn count_statuses(state: &AppState) -> ApiResult<CountsByKind> {
    let rows = status_counts::Entity::find().all(&state.db).await?;
    let mut by_kind: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for row in rows {
        by_kind
            .entry(row.kind)
            .or_default()
            .insert(row.status, row.count);
    }
    Ok(counts(by_kind))
}

/// The agents' and the tasks' counts, with every status present.
fn counts(by_kind: BTreeMap<String, BTreeMap<String, i64>>) -> CountsByKind {
    let section = |kind: &str, all: &[&str]| {
        let counts = by_kind.get(kind).cloned().unwrap_or_default();
        let mut by_status: BTreeMap<String, i64> = all.iter().map(|s| (s.to_string(), 0)).collect();
        by_status.extend(counts);
        let total: i64 = by_status.values().sum();
        Counts { total, by_status }
    };
    let agents: Vec<_> = hive_events::agent::AgentStatus::ALL
        .iter()
        .map(|s| s.as_str())
        .collect();
    let tasks: Vec<_> = hive_events::task::TaskStatus::ALL
        .iter()
        .map(|s| s.as_str())
        .collect();
    (section("agent", &agents), section("task", &tasks))
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
