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
use hive_events::task::{Lifecycle, TaskCommand};
use hive_events::wire::{AgentAction, Report, TaskAction};
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
use crate::views::{AgentCommitted, AgentStatusView, TaskCommitted};

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

#[utoipa::path(post, path = "/api/v1/tasks/{id}/{action}", tag = "tasks", summary = "Report on a task, or cancel or retry it", params(("id" = Uuid, Path, description = "the task"), ("action" = TaskAction, Path, description = "accept, start, progress, complete, fail or release (the assigned agent); requeue, cancel or retry"), ("Hive-Agent-Id" = Option<Uuid>, Header, description = "the reporting agent, when the body names none (an operator's or admin's token reporting for it)"), Command), request_body = Option<Report>, responses((status = 200, body = TaskCommitted), (status = 403, description = "not_assignee: the agent is not the task's; or an agent token that may not", body = ErrorBody), (status = 404, description = "no such task, or no such action", body = ErrorBody), (status = 409, description = "invalid_transition, conflict or corrupt_history", body = ErrorBody), (status = 422, body = ErrorBody)))]
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
    let mut command = report.command(action, || reporting)?;
    if let TaskCommand::Cancel { by, .. } = &mut command {
        // Who cancelled it is part of the fact, not only of its envelope.
        *by = Some(ctx.actor.as_str().to_owned());
    }
    let done = state.log.execute::<Lifecycle>(id, &ctx, command).await?;
    state.progress.saw_append(done.seq);
    Ok(committed(
        StatusCode::OK,
        done,
        TaskCommitted {
            task_id: id,
            seq: done.seq,
        },
    ))
}

#[utoipa::path(post, path = "/api/v1/agents/{id}/{action}", tag = "agents", summary = "Heartbeat, drain or deregister an agent", description = "A heartbeat is kept in a bucket, not the log: it answers the agent's status and appends nothing (so an `Idempotency-Key` repeats nothing). A drain or deregistration answers the event it appended.", params(("id" = Uuid, Path, description = "the agent"), ("action" = AgentAction, Path, description = "heartbeat, drain or deregister"), Command), request_body = Option<Report>, responses((status = 200, body = AgentActionAnswer), (status = 404, description = "no such agent, or no such action", body = ErrorBody), (status = 409, description = "invalid_transition, conflict or corrupt_history", body = ErrorBody)))]
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
        AgentActionAnswer::Committed(AgentCommitted {
            agent_id: id,
            seq: done.seq,
        }),
    ))
}

/// What an agent's action answers: a heartbeat the agent's status; a drain or deregistration the
/// event it appended.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(untagged)]
enum AgentActionAnswer {
    Beat(AgentStatusView),
    Committed(AgentCommitted),
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

#[utoipa::path(delete, path = "/api/v1/agents/{id}", tag = "agents", summary = "Deregister an agent", params(("id" = Uuid, Path, description = "the agent"), Command), responses((status = 200, body = AgentCommitted), (status = 404, description = "no such agent", body = ErrorBody), (status = 409, description = "invalid_transition, conflict or corrupt_history", body = ErrorBody)))]
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
        AgentCommitted {
            agent_id: id,
            seq: done.seq,
        },
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
        AgentActionAnswer::Beat(AgentStatusView {
            agent_id: id,
            status,
        }),
    )))
}
