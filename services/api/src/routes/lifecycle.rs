//! Reports on a task (`POST /api/v1/tasks/{id}/{accept|start|progress|complete|fail|release|requeue|cancel|retry}`) and on
//! an agent (`POST /api/v1/agents/{id}/{heartbeat|drain|deregister}`). Only the assigned agent may report
//! on its task: an agent's token names it; an operator's or admin's token reports for the agent named by
//! `agent_id` in the body or the `Hive-Agent-Id` header.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use hive_eventlog::command::now_micros;
use hive_events::AgentId;
use hive_events::DomainError;
use hive_events::agent::{Agent, AgentCommand, AgentStatus};
use hive_events::task::Lifecycle;
use hive_events::wire::{AgentAction, Report, TaskAction};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::committed;
use crate::AppState;
use crate::auth::CallerAgent;
#[allow(unused_imports)]
use crate::error::ErrorBody;
use crate::error::{ApiError, ApiResult, Code};
use crate::extract::{Command, OptionalJson, Path};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(task_action))
        .routes(routes!(agent_action))
        .routes(routes!(deregister))
}

fn reporter(report: &Report, headers: &HeaderMap) -> Result<AgentId, DomainError> {
    if let Some(id) = report.agent_id {
        return Ok(id);
    }
    headers
        .get("hive-agent-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Uuid::parse_str(v).ok())
        .map(AgentId::from_uuid)
        .ok_or_else(|| DomainError::invalid("agent_id", "required: the reporting agent's id"))
}

#[utoipa::path(post, path = "/api/v1/tasks/{id}/{action}", tag = "tasks", summary = "Report on a task, or cancel or retry it", params(("id" = Uuid, Path, description = "the entity's id"), ("action" = TaskAction, Path, description = "accept, start, progress, complete, fail or release (the assigned agent); requeue, cancel or retry")), request_body = Report, responses((status = 200, description = "OK"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn task_action(
    State(state): State<AppState>,
    Command(ctx): Command,
    CallerAgent(agent): CallerAgent,
    Path((id, action)): Path<(Uuid, String)>,
    headers: HeaderMap,
    OptionalJson(report): OptionalJson<Report>,
) -> ApiResult<Response> {
    let Some(action) = TaskAction::parse(&action) else {
        let names: Vec<_> = TaskAction::ALL.map(TaskAction::as_str).into();
        return Err(ApiError::new(
            Code::NotFound,
            format!("no task action {action:?}: {}", names.join(", ")),
        ));
    };
    let mut report = report.unwrap_or_default();
    // An agent reports for itself only, and only on what it does (the domain then checks the task is
    // assigned to it).
    if let Some(agent) = agent {
        if !action.by_assignee() {
            return Err(ApiError::new(
                Code::Forbidden,
                "an agent token may accept, start, progress, complete, fail or release its tasks, nothing else",
            ));
        }
        if report.agent_id.is_some_and(|a| a.as_uuid() != agent) {
            return Err(ApiError::new(
                Code::Forbidden,
                "an agent token reports only for its own agent",
            ));
        }
        report.agent_id = Some(AgentId::from_uuid(agent));
    }
    let reporting = reporter(&report, &headers);
    let command = report.command(action, || reporting)?;
    let done = state.log.execute::<Lifecycle>(id, &ctx, command).await?;
    state.progress.saw_append(done.seq);
    Ok(committed(
        StatusCode::OK,
        done,
        json!({"task_id": id, "seq": done.seq}),
    ))
}

#[utoipa::path(post, path = "/api/v1/agents/{id}/{action}", tag = "agents", summary = "Heartbeat, drain or deregister an agent", params(("id" = Uuid, Path, description = "the entity's id"), ("action" = AgentAction, Path, description = "heartbeat, drain or deregister")), request_body = Option<Report>, responses((status = 200, description = "OK"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn agent_action(
    State(state): State<AppState>,
    Command(ctx): Command,
    Path((id, action)): Path<(Uuid, String)>,
    OptionalJson(report): OptionalJson<Report>,
) -> ApiResult<Response> {
    let command = match AgentAction::parse(&action) {
        Some(AgentAction::Heartbeat) => return heartbeat(&state, id).await,
        Some(AgentAction::Drain) => AgentCommand::Drain,
        Some(AgentAction::Deregister) => AgentCommand::Deregister {
            reason: report.and_then(|r| r.reason),
        },
        None => {
            return Err(ApiError::new(
                Code::NotFound,
                format!("no agent action {action:?}: heartbeat, drain or deregister"),
            ));
        }
    };
    let deregistering = matches!(command, AgentCommand::Deregister { .. });
    let done = state.log.execute::<Agent>(id, &ctx, command).await?;
    state.progress.saw_append(done.seq);
    if deregistering {
        revoke_tokens(&state, id).await;
    }
    Ok(committed(
        StatusCode::OK,
        done,
        json!({"agent_id": id, "seq": done.seq}),
    ))
}

/// A deregistered agent's tokens are revoked: nothing may act as it any more. (Its deregistration
/// stands even if this fails; the failure is logged.)
async fn revoke_tokens(state: &AppState, agent: Uuid) {
    match state.grants.revoke_agent(agent).await {
        Ok(n) => tracing::debug!(%agent, tokens = n, "revoked the deregistered agent's tokens"),
        Err(e) => {
            tracing::warn!(%agent, error = ?e, "could not revoke the deregistered agent's tokens")
        }
    }
}

#[utoipa::path(delete, path = "/api/v1/agents/{id}", tag = "agents", summary = "Deregister an agent", params(("id" = Uuid, Path, description = "the entity's id")), responses((status = 200, description = "OK"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn deregister(
    State(state): State<AppState>,
    Command(ctx): Command,
    Path(id): Path<Uuid>,
) -> ApiResult<Response> {
    let done = state
        .log
        .execute::<Agent>(id, &ctx, AgentCommand::Deregister { reason: None })
        .await?;
    state.progress.saw_append(done.seq);
    revoke_tokens(&state, id).await;
    Ok(committed(
        StatusCode::OK,
        done,
        json!({"agent_id": id, "seq": done.seq}),
    ))
}

/// A heartbeat goes to the KV bucket, not the log; the scheduler turns the first one into
/// `AgentReady` and one after a lapse into `AgentRecovered`.
async fn heartbeat(state: &AppState, id: Uuid) -> ApiResult<Response> {
    let status = super::agents::status_of(state, id).await?;
    if status == AgentStatus::Deregistered {
        return Err(ApiError::new(
            Code::InvalidTransition,
            format!("agent {id} is deregistered"),
        ));
    }
    state.heartbeats.beat(id, now_micros()).await?;
    Ok(axum::response::IntoResponse::into_response(Json(
        json!({"agent_id": id, "status": status}),
    )))
}
