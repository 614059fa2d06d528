//! Agent Hive 2.0's routes, so its clients work unchanged: agent status, the agent dump, tasks created
//! under a project, and a development team's activation. (`POST /api/v1/tasks` takes its task bodies
//! too; see `tasks`; `POST /api/agents/spawn` is in `spawn`.)

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use hive_schema::agents;
use sea_orm::{EntityTrait, QueryOrder, QuerySelect};
use std::collections::BTreeMap;

use hive_events::agent::AgentStatus;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::committed;
use super::spawn::{Registration, start};
use super::tasks::{Create, create_task};
use crate::AppState;
#[allow(unused_imports)]
use crate::error::ErrorBody;
use crate::error::{ApiError, ApiResult};
use crate::extract::{self, Command, Path};
use crate::views::{AgentStatusView, AgentView, TaskCommitted};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(agent_status))
        .routes(routes!(debug_agents))
        .routes(routes!(project_task))
        .routes(routes!(activate))
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

/// Agent Hive 2.0's development roles, in the order its default team was spawned, each with the
/// capabilities 2.0 gave it (`frontend_developer` was not in that team: 2.0 named the role only).
const ROLES: [(&str, &[&str]); 6] = [
    (
        "product_manager",
        &["requirements_analysis", "project_planning", "documentation"],
    ),
    (
        "architect",
        &[
            "system_design",
            "architecture_planning",
            "technology_selection",
        ],
    ),
    (
        "backend_developer",
        &["api_development", "database_design", "server_logic"],
    ),
    (
        "qa_engineer",
        &["test_creation", "quality_assurance", "validation"],
    ),
    (
        "devops_engineer",
        &["deployment", "infrastructure", "monitoring"],
    ),
    (
        "frontend_developer",
        &["ui_development", "frontend_testing", "accessibility"],
    ),
];

/// The team 2.0 spawned when no roles were named: its first five roles.
const DEFAULT_TEAM: usize = 5;

/// The largest team one activation spawns (each member is a process on this machine).
const MAX_TEAM: u32 = 20;

/// `POST /api/agents/activate`, as Agent Hive 2.0's clients send it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Activate {
    /// How many agents, 1 to 20 (default 5, 2.0's team).
    #[serde(default = "default_team_size")]
    #[schema(minimum = 1, maximum = 20)]
    team_size: u32,
    /// The roles the team cycles through (default: product_manager, architect, backend_developer,
    /// qa_engineer, devops_engineer); each one of those or frontend_developer.
    roles: Option<Vec<String>>,
    /// Accepted for 2.0's clients and not used: Hive's agents take queued work as it comes (2.0 made
    /// demonstration tasks).
    #[serde(default)]
    auto_start_tasks: Option<bool>,
    /// Each member's concurrent tasks, 1 to 1,000 (default 3, as 2.0's agents).
    #[serde(default = "three")]
    #[schema(minimum = 1, maximum = 1000)]
    max_concurrent_tasks: u32,
    /// The executor; the configured default when absent.
    exec: Option<String>,
}

fn default_team_size() -> u32 {
    DEFAULT_TEAM as u32
}

fn three() -> u32 {
    3
}

/// What 2.0 answered: the team's agents and which role each plays.
#[derive(Debug, Serialize, ToSchema)]
struct Activated {
    success: bool,
    message: String,
    /// Every member, by agent id.
    active_agents: BTreeMap<Uuid, Member>,
    /// Each role's agent (with more members than roles, the role's last one, as 2.0's map kept it;
    /// `active_agents` lists them all).
    team_composition: BTreeMap<String, Uuid>,
}

/// A member of an activated team.
#[derive(Debug, Serialize, ToSchema)]
struct Member {
    id: Uuid,
    role: String,
    /// `registered` until its runtime's first heartbeat, then `ready` (`GET /api/agents/{id}/status`).
    status: AgentStatus,
    /// The role itself and the role's 2.0 capabilities, sorted.
    capabilities: Vec<String>,
    /// Its registration's sequence (send it as `Hive-Min-Seq` to read the agent at once).
    seq: Option<u64>,
}

/// Spawns a team of `team_size` supervised agents, their roles cycling through 2.0's (or the ones
/// named): each is registered with its role as its type and first capability, and its runtime started,
/// as `POST /api/agents/spawn` does for one.
#[utoipa::path(post, path = "/api/agents/activate", tag = "agent hive 2.0", summary = "Activate a development team of supervised agents (answers 200)", params(Command), request_body = Activate, responses((status = 200, description = "Activated: every member's runtime has started", body = Activated), (status = 422, description = "team_size out of 1 to 20, an unknown role, or another field", body = ErrorBody), (status = 503, description = "unavailable: this API does not spawn, or a process could not start (a repeat with the same Idempotency-Key completes the team)", body = ErrorBody)))]
async fn activate(
    State(state): State<AppState>,
    Command(ctx): Command,
    extract::Json(body): extract::Json<Activate>,
) -> ApiResult<Json<Activated>> {
    if !(1..=MAX_TEAM).contains(&body.team_size) {
        return Err(ApiError::invalid(
            "team_size",
            format!("must be 1 to {MAX_TEAM}, got {}", body.team_size),
        ));
    }
    if !(1..=1000).contains(&body.max_concurrent_tasks) {
        return Err(ApiError::invalid(
            "max_concurrent_tasks",
            "must be 1 to 1000",
        ));
    }
    if body.exec.as_deref().is_some_and(|e| e.trim().is_empty()) {
        return Err(ApiError::invalid("exec", "must not be empty"));
    }
    let roles = team_roles(body.roles.as_deref())?;
    let spawner = super::spawn::spawner(&state)?;
    // 2.0 made demonstration tasks when asked; Hive's agents take the queue's work as it comes.
    let _ = body.auto_start_tasks;
    let mut active_agents = BTreeMap::new();
    let mut team_composition = BTreeMap::new();
    for n in 0..body.team_size as usize {
        let (role, abilities) = roles[n % roles.len()];
        // Sorted, as the agent keeps them.
        let mut capabilities: Vec<String> = std::iter::once(role)
            .chain(abilities.iter().copied())
            .map(str::to_owned)
            .collect();
        capabilities.sort();
        // Each member is a command of its own: under the request's key, one key per member.
        let mut member = ctx.clone();
        if let Some(key) = &ctx.idempotency_key {
            member.idempotency_key = Some(format!("{key}.{n}"));
        }
        let register = Registration {
            name: Some(format!("{role}_agent")),
            agent_type: role.to_owned(),
            capabilities: capabilities.clone(),
            max_concurrent_tasks: body.max_concurrent_tasks,
        };
        let (id, seq) = start(&state, &spawner, &member, None, register, body.exec.clone()).await?;
        team_composition.insert(role.to_owned(), id);
        active_agents.insert(
            id,
            Member {
                id,
                role: role.to_owned(),
                status: AgentStatus::Registered,
                capabilities,
                seq,
            },
        );
    }
    Ok(Json(Activated {
        success: true,
        message: format!("Successfully activated {} agents", active_agents.len()),
        active_agents,
        team_composition,
    }))
}

/// The roles a team cycles through: the ones named (each known), or 2.0's default team.
fn team_roles(named: Option<&[String]>) -> ApiResult<Vec<(&'static str, &'static [&'static str])>> {
    let Some(named) = named else {
        return Ok(ROLES[..DEFAULT_TEAM].to_vec());
    };
    if named.is_empty() || named.len() > MAX_TEAM as usize {
        return Err(ApiError::invalid(
            "roles",
            format!("name 1 to {MAX_TEAM} roles, or none for 2.0's team"),
        ));
    }
    named
        .iter()
        .map(|wanted| {
            ROLES
                .iter()
                .find(|(role, _)| role.eq_ignore_ascii_case(wanted))
                .copied()
                .ok_or_else(|| {
                    let known: Vec<&str> = ROLES.iter().map(|(role, _)| *role).collect();
                    ApiError::invalid(
                        "roles",
                        format!("unknown role {wanted:?}: {}", known.join(", ")),
                    )
                })
        })
        .collect()
}
