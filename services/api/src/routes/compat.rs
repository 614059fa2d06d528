//! Agent Hive 2.0's routes, so its clients work unchanged: agent status, the agent dump, and tasks
//! created under a project. (`POST /api/v1/tasks` takes its task bodies too; see `tasks`.)

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use hive_schema::agents;
use sea_orm::{EntityTrait, QueryOrder, QuerySelect};
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::committed;
use super::tasks::{Create, create_task};
use crate::AppState;
use crate::error::ApiResult;
#[allow(unused_imports)]
use crate::error::ErrorBody;
use crate::extract::{self, Command, Path};
use crate::views::AgentView;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(agent_status))
        .routes(routes!(debug_agents))
        .routes(routes!(project_task))
}

/// `{"status": "ready"}` once the agent's runtime has reported in; its other states otherwise.
#[utoipa::path(get, path = "/api/agents/{id}/status", tag = "agent hive 2.0", summary = "An agent's status", params(("id" = Uuid, Path, description = "the entity's id")), responses((status = 200, description = "OK"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn agent_status(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Value>> {
    let status = super::agents::status_of(&state, id).await?;
    Ok(Json(json!({"agent_id": id, "status": status})))
}

/// Every agent (the first 10,000), as Agent Hive 2.0's debugging route listed them.
#[utoipa::path(get, path = "/debug-agents", tag = "agent hive 2.0", summary = "Every agent: {agent_count, agents}", responses((status = 200, description = "OK"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn debug_agents(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let rows = agents::Entity::find()
        .order_by_asc(agents::Column::Id)
        .limit(10_000)
        .all(&state.db)
        .await?;
    let agents: Vec<AgentView> = rows
        .into_iter()
        .map(AgentView::try_from)
        .collect::<Result<_, _>>()?;
    Ok(Json(json!({"agent_count": agents.len(), "agents": agents})))
}

#[utoipa::path(post, path = "/api/v1/projects/{id}/tasks", tag = "agent hive 2.0", summary = "A task in a project", params(("id" = Uuid, Path, description = "the entity's id")), request_body = Create, responses((status = 201, description = "created: {task_id, seq}"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn project_task(
    State(state): State<AppState>,
    Command(ctx): Command,
    Path(project): Path<Uuid>,
    extract::Json(mut body): extract::Json<Create>,
) -> ApiResult<Response> {
    body.project_id = Some(project);
    let done = create_task(&state, &ctx, body).await?;
    Ok(committed(
        StatusCode::CREATED,
        done,
        json!({"task_id": done.aggregate_id, "seq": done.seq}),
    ))
}
