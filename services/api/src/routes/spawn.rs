//! `POST /api/v1/agents/spawn` (201) and Agent Hive 2.0's `POST /api/agents/spawn` (200): registers an
//! agent (or takes the registered one named by `agent_id`) and starts a supervised `hive agent` process
//! attached to it. Answers `{agent_id}` as soon as the process has started; the agent turns ready on its
//! runtime's first heartbeat.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hive_eventlog::CommandContext;
use hive_events::agent::{Agent, AgentCommand, AgentStatus};
use hive_spawner::{SpawnError, Spawner, Spec};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::AppState;
#[allow(unused_imports)]
use crate::error::ErrorBody;
use crate::error::{ApiError, ApiResult, Code};
use crate::extract::{self, Command};
use hive_eventlog::tokens::Grant;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(spawn_v1))
        .routes(routes!(spawn_v2))
}

#[utoipa::path(post, path = "/api/v1/agents/spawn", tag = "agents", summary = "Register an agent and start a supervised `hive agent` for it", params(Command), request_body = SpawnBody, responses((status = 201, description = "Spawned", body = Spawned), (status = 409, description = "already_exists: its runtime runs here already; invalid_transition: a deregistered agent; corrupt_history", body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, description = "unavailable: this API does not spawn, or the process could not start", body = ErrorBody)))]
async fn spawn_v1(
    state: State<AppState>,
    ctx: Command,
    body: extract::Json<SpawnBody>,
) -> ApiResult<Response> {
    spawn(state, ctx, body, StatusCode::CREATED).await
}

/// Agent Hive 2.0 answered 200.
#[utoipa::path(post, path = "/api/agents/spawn", tag = "agent hive 2.0", summary = "Spawn an agent (answers 200)", params(Command), request_body = SpawnBody, responses((status = 200, description = "Spawned", body = Spawned), (status = 409, description = "already_exists: its runtime runs here already; invalid_transition: a deregistered agent; corrupt_history", body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, description = "unavailable: this API does not spawn, or the process could not start", body = ErrorBody)))]
async fn spawn_v2(
    state: State<AppState>,
    ctx: Command,
    body: extract::Json<SpawnBody>,
) -> ApiResult<Response> {
    spawn(state, ctx, body, StatusCode::OK).await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SpawnBody {
    #[schema(min_length = 1, max_length = 200)]
    name: Option<String>,
    #[serde(default = "worker")]
    #[schema(min_length = 1, max_length = 100)]
    agent_type: String,
    #[serde(default)]
    #[schema(value_type = Vec<hive_events::Capability>)]
    capabilities: Vec<String>,
    /// 1 to 1,000 (default 1).
    #[serde(default = "one")]
    #[schema(minimum = 1, maximum = 1000)]
    max_concurrent_tasks: u32,
    /// Attach to this registered agent, or register one with this id.
    agent_id: Option<Uuid>,
    /// The executor; the configured default when absent.
    exec: Option<String>,
}

/// A spawned agent.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Spawned {
    agent_id: Uuid,
    /// Its registration's sequence; null when it was registered before.
    seq: Option<u64>,
}

fn worker() -> String {
    "worker".into()
}

fn one() -> u32 {
    1
}

async fn spawn(
    State(state): State<AppState>,
    Command(ctx): Command,
    extract::Json(body): extract::Json<SpawnBody>,
    created: StatusCode,
) -> ApiResult<Response> {
    let spawner = spawner(&state)?;
    if body.exec.as_deref().is_some_and(|e| e.trim().is_empty()) {
        return Err(ApiError::invalid("exec", "must not be empty"));
    }
    let register = Registration {
        name: body.name,
        agent_type: body.agent_type,
        capabilities: body.capabilities,
        max_concurrent_tasks: body.max_concurrent_tasks,
    };
    let (agent_id, seq) = start(&state, &spawner, &ctx, body.agent_id, register, body.exec).await?;
    Ok((created, axum::Json(Spawned { agent_id, seq })).into_response())
}

/// The spawner of this API process: 503 when it does not spawn agents.
pub(crate) fn spawner(state: &AppState) -> ApiResult<Spawner> {
    state
        .spawner
        .clone()
        .ok_or_else(|| ApiError::new(Code::Unavailable, "this API process does not spawn agents"))
}

/// An agent to register before its runtime starts.
pub(crate) struct Registration {
    pub name: Option<String>,
    pub agent_type: String,
    pub capabilities: Vec<String>,
    pub max_concurrent_tasks: u32,
}

/// Registers an agent (or takes the registered one `agent_id` names) and starts a supervised runtime
/// for it with executor `exec` (the configured one when `None`): its id, and its registration's
/// sequence (`None` when it was registered before). A repeated command (the same idempotency key)
/// answers the first agent, whose runtime runs already.
pub(crate) async fn start(
    state: &AppState,
    spawner: &Spawner,
    ctx: &CommandContext,
    agent_id: Option<Uuid>,
    register: Registration,
    exec: Option<String>,
) -> ApiResult<(Uuid, Option<u64>)> {
    let mut agent = agent_id.unwrap_or_else(Uuid::now_v7);
    let existing = match agent_id {
        Some(id) => state.log.load::<Agent>(id).await?.state,
        None => None,
    };
    let (max_concurrent_tasks, seq, replayed) = match existing {
        Some(found) if found.status == AgentStatus::Deregistered => {
            return Err(ApiError::new(
                Code::InvalidTransition,
                format!("agent {agent} is deregistered"),
            ));
        }
        Some(found) => (found.max_concurrent_tasks, None, false),
        None => {
            let command = AgentCommand::Register {
                name: register.name,
                agent_type: register.agent_type,
                capabilities: register.capabilities,
                max_concurrent_tasks: register.max_concurrent_tasks,
                labels: Default::default(),
            };
            let done = state.log.create::<Agent>(agent, ctx, command).await?;
            state.progress.saw_append(done.seq);
            // A repeat answers the agent the first request registered.
            agent = done.aggregate_id;
            (
                register.max_concurrent_tasks,
                Some(done.seq),
                done.duplicate,
            )
        }
    };
    // The runtime's own token: it may act as this agent and nothing else.
    let (token, _) = state.grants.issue(Grant::agent(agent)).await?;
    let spec = Spec {
        agent_id: agent,
        exec,
        max_concurrent_tasks,
        token: Some(token),
    };
    match spawner.spawn(spec).await {
        Ok(()) => {}
        // A repeated request (same Idempotency-Key) finds its runtime already started.
        Err(SpawnError::AlreadyRunning(_)) if replayed => {}
        Err(e @ SpawnError::AlreadyRunning(_)) => {
            return Err(ApiError::new(Code::AlreadyExists, e.to_string()));
        }
        Err(e @ SpawnError::ShuttingDown) => {
            return Err(ApiError::new(Code::Unavailable, e.to_string()));
        }
        Err(e @ SpawnError::Start { .. }) => {
            return Err(ApiError::unavailable("spawning an agent", e));
        }
    }
    tracing::info!(%agent, "agent spawned");
    Ok((agent, seq))
}
