//! `/api/v1/projects`: create, read with task counts.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use hive_events::ProjectId;
use hive_events::project::{Project, ProjectCommand};
use hive_schema::{projects, tasks};
use sea_orm::{ColumnTrait, EntityTrait, FromQueryResult, QueryFilter, QuerySelect};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::committed;
use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::{self, Command, Path};
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

async fn read(State(state): State<AppState>, Path(id): Path<Uuid>) -> ApiResult<Json<ProjectView>> {
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
    let total = by_status.values().sum::<i64>();
    let completed = by_status.get("completed").copied().unwrap_or(0);
    let counts = TaskCounts {
        total,
        progress: if total == 0 {
            0.0
        } else {
            completed as f64 / total as f64
        },
        by_status,
    };
    Ok(Json(ProjectView::new(project, counts)))
}
