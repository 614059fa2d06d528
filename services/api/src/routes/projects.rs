//! `/api/v1/projects`: create, read with task counts.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use hive_events::project::{Project, ProjectCommand};
use hive_events::{AggregateKind, ProjectId};
use hive_schema::{projects, tasks};
use sea_orm::{ColumnTrait, EntityTrait, FromQueryResult, QueryFilter, QuerySelect};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::committed;
use super::travel::{AtQuery, hive_at, row_at};
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{self, Command, Path, Query};
use crate::views::{ProjectView, TaskCounts};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/projects", post(create))
        .route("/api/v1/projects/{id}", get(read))
}

/// `POST /api/v1/projects` (Agent Hive 2.0's body: `name`, `description`, `type`).
#[derive(Debug, Deserialize)]
struct Create {
    name: String,
    description: Option<String>,
    #[serde(rename = "type", alias = "project_type")]
    project_type: Option<String>,
}

async fn create(
    State(state): State<AppState>,
    Command(ctx): Command,
    extract::Json(body): extract::Json<Create>,
) -> ApiResult<Response> {
    let command = ProjectCommand::Create {
        name: body.name,
        description: body.description,
        project_type: body.project_type,
    };
    let done = state
        .log
        .create::<Project>(ProjectId::new().as_uuid(), &ctx, command)
        .await?;
    state.progress.saw_append(done.seq);
    Ok(committed(
        StatusCode::CREATED,
        done,
        json!({"project_id": done.aggregate_id, "seq": done.seq}),
    ))
}

#[derive(Debug, FromQueryResult)]
struct StatusCount {
    status: String,
    count: i64,
}

async fn read(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    Query(at): Query<AtQuery>,
) -> ApiResult<Json<ProjectView>> {
    if let Some(at) = at.at(&state).await? {
        let project = row_at::<Project>(&state, AggregateKind::Project, id, at).await?;
        let hive = hive_at(&state, at).await?;
        let mut by_status: BTreeMap<String, i64> = BTreeMap::new();
        for task in hive.tasks.values().filter(|t| t.project_id == Some(id)) {
            *by_status.entry(task.status.clone()).or_default() += 1;
        }
        return Ok(Json(ProjectView::new(project, TaskCounts::from(by_status))));
    }
    let project = projects::Entity::find_by_id(id)
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found("project", id))?;
    let rows = tasks::Entity::find()
        .select_only()
        .column(tasks::Column::Status)
        .column_as(tasks::Column::Id.count(), "count")
        .filter(tasks::Column::ProjectId.eq(id))
        .group_by(tasks::Column::Status)
        .into_model::<StatusCount>()
        .all(&state.db)
        .await?;
    let by_status: BTreeMap<String, i64> = rows.into_iter().map(|r| (r.status, r.count)).collect();
    Ok(Json(ProjectView::new(project, TaskCounts::from(by_status))))
}
