//! An entity's history from the log (`/api/v1/{agents|tasks|projects}/{id}/events`) and the dead letters.

use axum::Json;
use axum::extract::State;
use hive_eventlog::audit::Record;
use hive_events::AggregateKind;
use hive_schema::dead_letters;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::Deserialize;
use serde_json::{Value, json};
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

#[utoipa::path(get, path = "/api/v1/agents/{id}/events", tag = "history", summary = "An agent's history from the log", params(("id" = Uuid, Path, description = "the agent")), responses((status = 200, description = "{aggregate, aggregate_id, events}"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn agent_events(state: State<AppState>, id: Path<Uuid>) -> ApiResult<Json<Value>> {
    events(state, id, AggregateKind::Agent).await
}

#[utoipa::path(get, path = "/api/v1/tasks/{id}/events", tag = "history", summary = "A task's history from the log", params(("id" = Uuid, Path, description = "the task")), responses((status = 200, description = "{aggregate, aggregate_id, events}"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn task_events(state: State<AppState>, id: Path<Uuid>) -> ApiResult<Json<Value>> {
    events(state, id, AggregateKind::Task).await
}

#[utoipa::path(get, path = "/api/v1/projects/{id}/events", tag = "history", summary = "A project's history from the log", params(("id" = Uuid, Path, description = "the project")), responses((status = 200, description = "{aggregate, aggregate_id, events}"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn project_events(state: State<AppState>, id: Path<Uuid>) -> ApiResult<Json<Value>> {
    events(state, id, AggregateKind::Project).await
}

async fn events(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    kind: AggregateKind,
) -> ApiResult<Json<Value>> {
    let history = state.log.history(kind, id).await?;
    if history.is_empty() {
        return Err(ApiError::not_found(kind.as_str(), id));
    }
    let subjects = state.log.subjects();
    let events: Vec<Record> = history
        .iter()
        .map(|raw| Record::of(raw, subjects))
        .collect();
    Ok(Json(
        json!({"aggregate": kind, "aggregate_id": id, "events": events}),
    ))
}

#[derive(Debug, Deserialize)]
struct DeadLetterPage {
    limit: Option<u64>,
    /// The `next_cursor` of the previous page.
    cursor: Option<i64>,
    #[serde(default)]
    order: Order,
}

#[utoipa::path(get, path = "/api/v1/dead-letters", tag = "history", summary = "Events the projector could not apply", params(("limit" = Option<u64>, Query, description = "1 to 500"), ("cursor" = Option<i64>, Query, description = "the previous page's next_cursor"), ("order" = Option<String>, Query, description = "asc (oldest first, the default) or desc (newest first)")), responses((status = 200, body = List<DeadLetterView>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
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
