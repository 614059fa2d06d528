//! `/api/v1/agents`: register, list, read; the tasks an agent ever held.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use hive_events::AgentId;
use hive_events::agent::{Agent, AgentCommand, AgentStatus};
use hive_schema::agents;
use sea_orm::sea_query::extension::postgres::PgBinOper;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::committed;
use super::travel::{AtQuery, row_at};
use crate::AppState;
#[allow(unused_imports)]
use crate::error::ErrorBody;
use crate::error::{ApiError, ApiResult, Code};
use crate::extract::{self, Command, Path, Query};
use crate::search::{TaskSearch, labelled};
use crate::views::{AgentView, HeldTask, HeldTasks, List, Order, paged};
use hive_eventlog::tokens::Grant;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, register))
        .routes(routes!(read))
        .routes(routes!(held_tasks))
}

/// `POST /api/v1/agents`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Register {
    #[schema(min_length = 1, max_length = 200)]
    name: Option<String>,
    #[schema(min_length = 1, max_length = 100)]
    agent_type: String,
    #[serde(default)]
    #[schema(value_type = Vec<hive_events::Capability>)]
    capabilities: Vec<String>,
    /// 1 to 1,000 (default 1).
    #[serde(default = "one")]
    #[schema(minimum = 1, maximum = 1000)]
    max_concurrent_tasks: u32,
    /// What the agent is about: at most 32 pairs; a key is 1 to 63 characters of
    /// `A-Z a-z 0-9 - _ . /`, a value up to 256 characters.
    #[schema(value_type = Option<std::collections::BTreeMap<String, String>>)]
    labels: Option<std::collections::BTreeMap<String, String>>,
}

fn one() -> u32 {
    1
}

/// A registered agent, and its own token (shown once; a repeated request gets a new one).
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Registered {
    agent_id: Uuid,
    seq: u64,
    /// The agent's own token: it may act as this agent and nothing else.
    token: String,
}

#[utoipa::path(post, path = "/api/v1/agents", tag = "agents", summary = "Register an agent", params(Command), request_body = Register, responses((status = 201, description = "Registered", body = Registered, links(("agent" = (operation_id = "read_agent", parameters(("id" = "$response.body#/agent_id")))), ("history" = (operation_id = "agent_events", parameters(("id" = "$response.body#/agent_id")))), ("status" = (operation_id = "agent_status", parameters(("id" = "$response.body#/agent_id")))), ("action" = (operation_id = "agent_action", parameters(("id" = "$response.body#/agent_id")))), ("deregister" = (operation_id = "deregister", parameters(("id" = "$response.body#/agent_id")))))), (status = 422, body = ErrorBody)))]
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
        labels: hive_events::Labels::new(body.labels.unwrap_or_default())?,
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
        Registered {
            agent_id: done.aggregate_id,
            seq: done.seq,
            token,
        },
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct Filter {
    /// Agents in this status.
    #[param(value_type = Option<AgentStatus>)]
    status: Option<String>,
    /// Agents that have it.
    capability: Option<String>,
    /// `key:value`: agents labelled so (repeatable: every one must match).
    // Documents the parameter; read from the raw query, since one name may come many times.
    #[allow(dead_code)]
    #[serde(skip)]
    #[param(value_type = Option<Vec<String>>, style = Form, explode)]
    label: (),
    // Not a flattened page struct: query strings carry only text, and flatten loses number parsing.
    /// 1 to 500, default 50.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u64>,
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
    /// `asc` (oldest first, the default) or `desc` (newest first).
    #[serde(default)]
    #[param(value_type = Option<Order>)]
    order: Order,
}

#[utoipa::path(get, path = "/api/v1/agents", operation_id = "list_agents", tag = "agents", summary = "List agents", params(Filter), responses((status = 200, body = List<AgentView>), (status = 422, description = "an unknown status", body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    Query(filter): Query<Filter>,
) -> ApiResult<Json<List<AgentView>>> {
    let labels = TaskSearch::labels_of(raw.as_deref())?;
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
    if !labels.is_empty() {
        // A scan of the agents (a fleet is thousands, not millions).
        query = query.filter(labelled(agents::Column::Labels, &labels));
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

#[utoipa::path(get, path = "/api/v1/agents/{id}", operation_id = "read_agent", tag = "agents", summary = "An agent (now, or as it was)", params(("id" = Uuid, Path, description = "the agent"), AtQuery), responses((status = 200, body = AgentView), (status = 404, description = "no such agent (then)", body = ErrorBody)))]
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

/// A page of the tasks an agent held.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct HeldPage {
    /// 1 to 500, default 50.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u64>,
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
    /// `asc` (first held first, the default) or `desc` (last first).
    #[serde(default)]
    #[param(value_type = Option<Order>)]
    order: Order,
}

#[utoipa::path(get, path = "/api/v1/agents/{id}/tasks", operation_id = "agent_tasks", tag = "agents", summary = "Every task the agent ever held", description = "The tasks the log assigned to the agent, from the index the projector keeps with the other read models: an agent's audit reads these instead of scanning the log. The index covers the events after `indexed_after` up to `indexed_through` (the checkpoint the items reflect); a reader that must miss nothing reads the log's task events outside that stretch (`GET /api/v1/events?aggregate=task&after_seq=<indexed_through>`).", params(("id" = Uuid, Path, description = "the agent"), HeldPage), responses((status = 200, body = HeldTasks), (status = 404, description = "no such agent", body = ErrorBody)))]
async fn held_tasks(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    Query(page): Query<HeldPage>,
) -> ApiResult<Json<HeldTasks>> {
    let limit = match page.limit.unwrap_or(50) {
        n @ 1..=500 => n,
        n => {
            return Err(ApiError::new(
                Code::BadRequest,
                format!("limit must be 1 to 500, got {n}"),
            ));
        }
    };
    let cursor = page
        .cursor
        .as_deref()
        .map(str::parse::<u64>)
        .transpose()
        .map_err(|_| ApiError::new(Code::BadRequest, "cursor is not one we gave"))?;
    if agents::Entity::find_by_id(id)
        .one(&state.db)
        .await?
        .is_none()
    {
        return Err(ApiError::not_found("agent", id));
    }
    let page = hive_projector::agent_tasks::Page {
        cursor,
        limit: Some(limit),
        descending: page.order == Order::Desc,
    };
    let held =
        hive_projector::agent_tasks::held(&state.db, &state.config.projection, id, page).await?;
    let next_cursor = held
        .more
        .then(|| held.tasks.last().map(|(_, seq)| seq.to_string()))
        .flatten();
    Ok(Json(HeldTasks {
        items: held
            .tasks
            .into_iter()
            .map(|(task_id, first_seq)| HeldTask { task_id, first_seq })
            .collect(),
        next_cursor,
        indexed_after: held.after,
        indexed_through: held.through,
    }))
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
