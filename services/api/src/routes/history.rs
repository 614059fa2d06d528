//! An entity's history from the log (`/api/v1/{agents|tasks|projects}/{id}/events`) and the dead letters.

use axum::Json;
use axum::extract::State;
use hive_eventlog::audit::Record;
use hive_events::AggregateKind;
use hive_schema::dead_letters;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::AppState;
#[allow(unused_imports)]
use crate::error::ErrorBody;
use crate::error::{ApiError, ApiResult, Code};
use crate::extract::{Path, Query};
use crate::views::{DeadLetterView, List, Order};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    // One route per kind: a static `events` segment outranks the `{action}` of the command routes.
    OpenApiRouter::new()
        .routes(routes!(agent_events))
        .routes(routes!(task_events))
        .routes(routes!(project_events))
        .routes(routes!(dead_letters))
}

#[utoipa::path(get, path = "/api/v1/agents/{id}/events", tag = "history", summary = "An agent's history from the log", params(("id" = Uuid, Path, description = "the agent"), HistoryPage), responses((status = 200, body = History), (status = 404, description = "no such agent", body = ErrorBody)))]
async fn agent_events(
    state: State<AppState>,
    id: Path<Uuid>,
    page: Query<HistoryPage>,
) -> ApiResult<Json<History>> {
    events(state, id, page, AggregateKind::Agent).await
}

#[utoipa::path(get, path = "/api/v1/tasks/{id}/events", tag = "history", summary = "A task's history from the log", params(("id" = Uuid, Path, description = "the task"), HistoryPage), responses((status = 200, body = History), (status = 404, description = "no such task", body = ErrorBody)))]
async fn task_events(
    state: State<AppState>,
    id: Path<Uuid>,
    page: Query<HistoryPage>,
) -> ApiResult<Json<History>> {
    events(state, id, page, AggregateKind::Task).await
}

#[utoipa::path(get, path = "/api/v1/projects/{id}/events", tag = "history", summary = "A project's history from the log", params(("id" = Uuid, Path, description = "the project"), HistoryPage), responses((status = 200, body = History), (status = 404, description = "no such project", body = ErrorBody)))]
async fn project_events(
    state: State<AppState>,
    id: Path<Uuid>,
    page: Query<HistoryPage>,
) -> ApiResult<Json<History>> {
    events(state, id, page, AggregateKind::Project).await
}

/// An entity's history a page at a time, as the log is (`GET /api/v1/events`); all of it without
/// `limit`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct HistoryPage {
    /// Its events after this sequence.
    after_seq: Option<u64>,
    /// 1 to 1,000 events; every one when absent.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// An entity's history (or a page of it), from the log.
#[derive(Debug, Serialize, ToSchema)]
struct History {
    aggregate: AggregateKind,
    aggregate_id: Uuid,
    /// Its events, in order, each with its `seq`.
    events: Vec<Record>,
    /// The last event's sequence (a page with none: the `after_seq` asked for).
    last_seq: u64,
    /// Whether more of its events follow (a page).
    more: bool,
}

async fn events(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    Query(page): Query<HistoryPage>,
    kind: AggregateKind,
) -> ApiResult<Json<History>> {
    let (history, beyond) = match (page.after_seq, page.limit) {
        (None, None) => (state.log.history(kind, id).await?, 0),
        (after, limit) => {
            let limit = match limit.unwrap_or(1_000) {
                n @ 1..=1_000 => n,
                n => {
                    return Err(ApiError::new(
                        Code::BadRequest,
                        format!("limit must be 1 to 1000, got {n}"),
                    ));
                }
            };
            let subject = state.log.subjects().of(kind, id);
            let after = after.unwrap_or(0);
            let page = match after.checked_add(1) {
                Some(from) => state.log.page(from, subject, limit).await?,
                None => (Vec::new(), 0),
            };
            // An entity with no events at all is not there; one with none after `after` is.
            if page.0.is_empty() && after > 0 && state.log.first(kind, id).await?.is_some() {
                return Ok(Json(History {
                    aggregate: kind,
                    aggregate_id: id,
                    events: Vec::new(),
                    last_seq: after,
                    more: false,
                }));
            }
            page
        }
    };
    if history.is_empty() {
        return Err(ApiError::not_found(kind.as_str(), id));
    }
    let subjects = state.log.subjects();
    let events: Vec<Record> = history
        .iter()
        .map(|raw| Record::of(raw, subjects))
        .collect();
    let last_seq = events.last().map_or(0, |e| e.seq);
    Ok(Json(History {
        aggregate: kind,
        aggregate_id: id,
        events,
        last_seq,
        more: beyond > 0,
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct DeadLetterPage {
    /// 1 to 500, default 50.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u64>,
    /// The `next_cursor` of the previous page.
    cursor: Option<i64>,
    /// `asc` (oldest first, the default) or `desc` (newest first).
    #[serde(default)]
    #[param(value_type = Option<Order>)]
    order: Order,
}

#[utoipa::path(get, path = "/api/v1/dead-letters", tag = "history", summary = "Events the projector could not apply, with the reason", params(DeadLetterPage), responses((status = 200, body = List<DeadLetterView>)))]
async fn dead_letters(
    State(state): State<AppState>,
    Query(page): Query<DeadLetterPage>,
) -> ApiResult<Json<List<DeadLetterView>>> {
    let limit = match page.limit.unwrap_or(50) {
        n @ 1..=500 => n,
        n => {
            return Err(ApiError::new(
                Code::BadRequest,
                format!("limit must be 1 to 500, got {n}"),
            ));
        }
    };
    let id = dead_letters::Column::Id;
    let mut query = match page.order {
        Order::Asc => dead_letters::Entity::find().order_by_asc(id),
        Order::Desc => dead_letters::Entity::find().order_by_desc(id),
    }
    .limit(limit + 1);
    if let Some(after) = page.cursor {
        query = query.filter(match page.order {
            Order::Asc => id.gt(after),
            Order::Desc => id.lt(after),
        });
    }
    let mut rows = query.all(&state.db).await?;
    let more = rows.len() as u64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = if more {
        rows.last().map(|r| r.id.to_string())
    } else {
        None
    };
    Ok(Json(List {
        items: rows.into_iter().map(DeadLetterView::from).collect(),
        next_cursor,
    }))
}
