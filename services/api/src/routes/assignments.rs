//! `GET /api/v1/agents/{id}/assignments`: a server-sent event stream of the agent's assignments, pushed
//! as the scheduler makes them, and of stops (a task taken from the agent: its executor must stop). On
//! connect it first sends the tasks already assigned to the agent, so a reconnecting runtime misses
//! nothing that is still its own.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt, stream};
use hive_eventlog::log::PUSH_KIND;
use hive_events::TaskId;
use hive_events::task::TaskStatus;
use hive_events::wire::{Assignment, Push};
use hive_schema::tasks;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::AppState;
use crate::error::{ApiError, ApiResult, Code};
use crate::extract::Path;
use crate::views::task_of_row;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(assignments))
}

#[utoipa::path(get, path = "/api/v1/agents/{id}/assignments", tag = "agents", summary = "The agent's assignments, pushed (server-sent events)", params(("id" = Uuid, Path, description = "the agent")), responses((status = 200, description = "Server-sent events `assignment`, each an `Assignment`: the agent's current assignments first, then each new one; and `stop`, each a `Stop`: a task taken from the agent (cancelled, timed out, requeued) whose executor must stop", body = String, content_type = "text/event-stream")))]
async fn assignments(
    State(state): State<AppState>,
    Path(agent): Path<Uuid>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    // Subscribe before reading what is assigned, so nothing falls between the two.
    let live = state
        .log
        .client()
        .subscribe(state.log.namespace().assignments(agent))
        .await
        .map_err(|e| ApiError::unavailable("the event log", e))?;
    // An assignment announced before the subscription is in the log already: read the backlog only once
    // the read models hold everything up to the head as it is now.
    let head = state.progress.head_now().await?;
    if !state
        .progress
        .wait_for(head, state.config.min_seq_timeout)
        .await
    {
        return Err(ApiError::new(
            Code::ProjectionLagging,
            format!(
                "the read models reached {} but not {head}; retry",
                state.progress.checkpoint()
            ),
        ));
    }
    let current = tasks::Entity::find()
        .filter(tasks::Column::AgentId.eq(agent))
        .filter(tasks::Column::Status.eq(TaskStatus::Assigned.as_str()))
        .order_by_asc(tasks::Column::Id)
        .all(&state.db)
        .await?;
    let mut backlog = Vec::with_capacity(current.len());
    for row in current {
        let seq = u64::try_from(row.last_seq).unwrap_or_default();
        let mut assignment = assignment_of(row)?;
        // The flow it belongs to is the assignment's own (the task's last event).
        if let Some(event) = state.log.get(seq).await?
            && let Ok(envelope) = hive_events::envelope::decode(&event.payload, None)
        {
            // The row is assigned as of `seq`: that event is its `TaskAssigned`.
            let assigned = envelope.meta.event_id.as_uuid();
            assignment = assignment.in_flow(envelope.meta.correlation_id, Some(assigned));
        }
        let body = serde_json::to_string(&assignment).unwrap_or_default();
        backlog.push(Ok(Event::default().event("assignment").data(body)));
    }
    // A stop carries its kind in a header; an assignment is any other message.
    let pushed = live.map(|message| {
        let stop = message
            .headers
            .as_ref()
            .and_then(|h| h.get(PUSH_KIND))
            .is_some_and(|kind| kind.as_str() == Push::STOP);
        let name = if stop { Push::STOP } else { "assignment" };
        Ok(Event::default()
            .event(name)
            .data(String::from_utf8_lossy(&message.payload)))
    });
    let mut closing = state.closing.subscribe();
    let closed = async move {
        let _ = closing.wait_for(|c| *c).await;
    };
    let events = stream::iter(backlog).chain(pushed).take_until(closed);
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// The assignment of a task the read models hold as assigned: what the scheduler pushed when it
/// assigned it.
fn assignment_of(row: tasks::Model) -> ApiResult<Assignment> {
    let seq = u64::try_from(row.last_seq).unwrap_or_default();
    let (id, task) = task_of_row(row)?;
    Ok(Assignment::of_task(TaskId::from_uuid(id), &task, seq))
}
