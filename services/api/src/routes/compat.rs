//! Agent Hive 2.0's routes, so its clients work unchanged: agent status, the agent dump, and tasks
//! created under a project. (`POST /api/v1/tasks` takes its task bodies too; see `tasks`.)

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use hive_schema::agents;
use sea_orm::{EntityTrait, QueryOrder, QuerySelect};
use serde::Serialize;
use utoipa::ToSchema;
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
use crate::views::{AgentStatusView, AgentView, TaskCommitted};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(agent_status))
        .routes(routes!(debug_agents))
        .routes(routes!(project_task))
}

/// `{"status": "ready"}` once the agent's runtime has reported in; its other states otherwise.
#[utoipa::path(get, path = "/api/agents/{id}/status", tag = "agent hive 2.0", summary = "An agent's status", params(("id" = Uuid, Path, description = "the agent")), responses((status = 200, body = AgentStatusView), (status = 404, description = "no such agent", body = ErrorBody), (status = 409, description = "corrupt_history: an agent not projected yet whose history cannot be folded", body = ErrorBody)))]
async fn agent_status(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<AgentStatusView>> {
    let status = super::agents::status_of(&state, id).await?;
    Ok(Json(AgentStatusView {
        agent_id: id,
        status,
    }))
}

/// Every agent, as Agent Hive 2.0 listed them.
#[derive(Debug, Serialize, ToSchema)]
struct DebugAgents {
    agent_count: usize,
    agents: Vec<AgentView>,
}

/// Every agent (the first 10,000), as Agent Hive 2.0's debugging route listed them.
#[utoipa::path(get, path = "/debug-agents", tag = "agent hive 2.0", summary = "Every agent (the first 10,000)", responses((status = 200, body = DebugAgents)))]
async fn debug_agents(State(state): State<AppState>) -> ApiResult<Json<DebugAgents>> {
    let rows = agents::Entity::find()
        .order_by_asc(agents::Column::Id)
        .limit(10_000)
        .all(&state.db)
        .await?;
    let agents: Vec<AgentView> = rows
        .into_iter()
        .map(AgentView::try_from)
        .collect::<Result<_, _>>()?;
    Ok(Json(DebugAgents {
        agent_count: agents.len(),
        agents,
    }))
}

#[utoipa::path(post, path = "/api/v1/projects/{id}/tasks", tag = "agent hive 2.0", summary = "A task in a project", params(("id" = Uuid, Path, description = "the project"), Command), request_body = Create, responses((status = 201, description = "Created", body = TaskCommitted, links(("task" = (operation_id = "read_task", parameters(("id" = "$response.body#/task_id")))), ("history" = (operation_id = "task_events", parameters(("id" = "$response.body#/task_id")))))), (status = 409, description = "corrupt_history: the project's, the pinned agent's or a dependency's history cannot be folded", body = ErrorBody), (status = 422, description = "a field, or a project, pinned agent or dependency that does not exist or cannot complete", body = ErrorBody)))]
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
        TaskCommitted {
            task_id: done.aggregate_id,
            seq: done.seq,
        },
    ))
}
