//! `/api/v1/projects`: create, read with task counts.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use hive_events::project::{Project, ProjectCommand};
use hive_events::{AggregateKind, ProjectId};
use hive_schema::{projects, tasks};
use sea_orm::{ColumnTrait, EntityTrait, FromQueryResult, QueryFilter, QuerySelect};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::committed;
use super::travel::{AtQuery, hive_at, row_at};
use crate::AppState;
#[allow(unused_imports)]
use crate::error::ErrorBody;
use crate::error::{ApiError, ApiResult};
use crate::extract::{self, Command, Path, Query};
use crate::views::{ProjectCommitted, ProjectView, TaskCounts};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(read))
}

/// `POST /api/v1/projects` (Agent Hive 2.0's body: `name`, `description`, `type`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = CreateProject)]
struct Create {
    #[schema(min_length = 1, max_length = 200)]
    name: String,
    #[schema(max_length = 20000)]
    description: Option<String>,
    #[serde(rename = "type", alias = "project_type")]
    #[schema(min_length = 1, max_length = 100)]
    project_type: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/projects", operation_id = "create_project", tag = "projects", summary = "Create a project", params(Command), request_body = Create, responses((status = 201, description = "Created", body = ProjectCommitted, links(("project" = (operation_id = "read_project", parameters(("id" = "$response.body#/project_id")))), ("history" = (operation_id = "project_events", parameters(("id" = "$response.body#/project_id")))), ("task" = (operation_id = "project_task", parameters(("id" = "$response.body#/project_id")))))), (status = 422, body = ErrorBody)))]
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
        ProjectCommitted {
            project_id: done.aggregate_id,
            seq: done.seq,
        },
    ))
}

#[derive(Debug, FromQueryResult)]
struct StatusCount {
    status: String,
    count: i64,
}

#[utoipa::path(get, path = "/api/v1/projects/{id}", operation_id = "read_project", tag = "projects", summary = "A project with its task counts (now, or as it was)", params(("id" = Uuid, Path, description = "the project"), AtQuery), responses((status = 200, body = ProjectView), (status = 404, description = "no such project (then)", body = ErrorBody)))]
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
