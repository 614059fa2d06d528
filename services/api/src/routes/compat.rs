//! Agent Hive 2.0's routes, so its clients work unchanged: agent status, the agent dump, and tasks
//! created under a project. (`POST /api/v1/tasks` takes its task bodies too; see `tasks`.)

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use hive_schema::agents;
use sea_orm::{EntityTrait, QueryOrder, QuerySelect};
use serde_json::{Value, json};
use uuid::Uuid;

use super::committed;
use super::tasks::{Create, create_task};
use crate::AppState;
use crate::error::ApiResult;
use crate::extract::{self, Command, Path};
use crate::views::AgentView;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/agents/{id}/status", get(agent_status))
        .route("/debug-agents", get(debug_agents))
        .route("/api/v1/projects/{id}/tasks", post(project_task))
}

/// `{"status": "ready"}` once the agent's runtime has reported in; its other states otherwise.
async fn agent_status(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Value>> {
    let status = super::agents::status_of(&state, id).await?;
    Ok(Json(json!({"agent_id": id, "status": status})))
}

/// Every agent (the first 10,000), as Agent Hive 2.0's debugging route listed them.
async fn debug_agents(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let rows = agents::Entity::find()
        .order_by_asc(agents::Column::Id)
        .limit(10_000)
        .all(&state.db)
        .await?;
    let agents: Vec<AgentView> = rows.into_iter().map(AgentView::from).collect();
    Ok(Json(json!({"agent_count": agents.len(), "agents": agents})))
}

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
