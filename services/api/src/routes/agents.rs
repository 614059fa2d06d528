//! `/api/v1/agents`: register, list, read.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use hive_events::AgentId;
use hive_events::agent::{Agent, AgentCommand, AgentStatus};
use hive_schema::agents;
use sea_orm::sea_query::extension::postgres::PgBinOper;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde::Deserialize;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::committed;
use super::travel::{AtQuery, row_at};
use crate::AppState;
#[allow(unused_imports)]
use crate::error::ErrorBody;
use crate::error::{ApiError, ApiResult};
use crate::extract::{self, Command, Path, Query};
use crate::views::{AgentView, List, Order, paged};
use hive_eventlog::tokens::Grant;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, register))
        .routes(routes!(read))
}

/// `POST /api/v1/agents`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Register {
    name: Option<String>,
    agent_type: String,
    #[serde(default)]
    capabilities: Vec<String>,
    #[serde(default = "one")]
    max_concurrent_tasks: u32,
}

fn one() -> u32 {
    1
}

#[utoipa::path(post, path = "/api/v1/agents", tag = "agents", summary = "Register an agent", request_body = Register, responses((status = 201, description = "registered: {agent_id, seq}"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn register(
    State(state): State<AppState>,
    Command(ctx): Command,
    extract::Json(body): extract::Json<Register>,
) -> ApiResult<Response> {
    let command = AgentCommand::Register {
        name: body.name,
        agent_type: body.agent_type,
        capabilities: body.capabilities,
        max_concurrent_tasks: body.max_concurrent_tasks,
    };
    let done = state
        .log
        .create::<Agent>(AgentId::new().as_uuid(), &ctx, command)
        .await?;
    state.progress.saw_append(done.seq);
    // The agent's own token, shown once (a repeated request gets a new one; both are valid).
    let (token, _) = state.grants.issue(Grant::agent(done.aggregate_id)).await?;
    Ok(committed(
        StatusCode::CREATED,
        done,
        json!({"agent_id": done.aggregate_id, "seq": done.seq, "token": token}),
    ))
}

#[derive(Debug, Deserialize)]
struct Filter {
    status: Option<String>,
    capability: Option<String>,
    // Not a flattened page struct: query strings carry only text, and flatten loses number parsing.
    limit: Option<u64>,
    cursor: Option<String>,
    #[serde(default)]
    order: Order,
}

#[utoipa::path(get, path = "/api/v1/agents", tag = "agents", summary = "List agents", params(("status" = Option<String>, Query, description = "an agent status"), ("capability" = Option<String>, Query, description = "agents that have it"), ("limit" = Option<u64>, Query, description = "1 to 500, default 50"), ("cursor" = Option<String>, Query, description = "the previous page's next_cursor"), ("order" = Option<String>, Query, description = "asc (oldest first, the default) or desc (newest first)")), responses((status = 200, body = List<AgentView>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    Query(filter): Query<Filter>,
) -> ApiResult<Json<List<AgentView>>> {
    let (mut query, limit) = paged(
        agents::Entity::find(),
        agents::Column::Id,
        filter.limit,
        filter.cursor.as_deref(),
        filter.order,
    )?;
    if let Some(status) = &filter.status {
        let status = AgentStatus::parse(status).ok_or_else(|| {
            ApiError::invalid("status", format!("unknown agent status {status:?}"))
        })?;
        query = query.filter(agents::Column::Status.eq(status.as_str()));
    }
    if let Some(capability) = filter.capability {
        // `capabilities @> ARRAY[$cap]`, which the GIN index on capabilities serves.
        let wanted = Expr::val(vec![capability]);
        query = query
            .filter(Expr::col(agents::Column::Capabilities).binary(PgBinOper::Contains, wanted));
    }
    let rows = query.all(&state.db).await?;
    Ok(Json(List::from_rows(
        rows,
        limit,
        |r| r.id,
        AgentView::try_from,
    )?))
}

#[utoipa::path(get, path = "/api/v1/agents/{id}", tag = "agents", summary = "An agent (now, or as it was)", params(("id" = Uuid, Path, description = "the entity's id"), ("at_seq" = Option<u64>, Query, description = "as it was at this event"), ("at_time" = Option<String>, Query, description = "as it was at this RFC 3339 time")), responses((status = 200, body = AgentView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn read(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    Query(at): Query<AtQuery>,
) -> ApiResult<Json<AgentView>> {
    if let Some(at) = at.at(&state).await? {
        let row = row_at::<Agent>(&state, hive_events::AggregateKind::Agent, id, at).await?;
        return Ok(Json(row.try_into()?));
    }
    let row = agents::Entity::find_by_id(id).one(&state.db).await?;
    Ok(Json(
        row.ok_or_else(|| ApiError::not_found("agent", id))?
            .try_into()?,
    ))
}

/// An agent's status: from the read model, or from the log when it is not projected yet (a heartbeat
/// or status check right after registering).
pub(crate) async fn status_of(state: &AppState, id: Uuid) -> ApiResult<AgentStatus> {
    if let Some(row) = agents::Entity::find_by_id(id).one(&state.db).await? {
        return Ok(AgentView::try_from(row)?.status);
    }
    match state.log.load::<Agent>(id).await?.state {
        Some(agent) => Ok(agent.status),
        None => Err(ApiError::not_found("agent", id)),
    }
}
