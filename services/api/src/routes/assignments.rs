//! `GET /api/v1/agents/{id}/assignments`: a server-sent event stream of the agent's assignments, pushed
//! as the scheduler makes them. On connect it first sends the tasks already assigned to the agent, so a
//! reconnecting runtime misses nothing that is still its own.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt, stream};
use hive_schema::tasks;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::AppState;
#[allow(unused_imports)]
use crate::error::ErrorBody;
use crate::error::{ApiError, ApiResult, Code};
use crate::extract::Path;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(assignments))
}

#[utoipa::path(get, path = "/api/v1/agents/{id}/assignments", tag = "agents", summary = "The agent's assignments, pushed (server-sent events)", params(("id" = Uuid, Path, description = "the entity's id")), responses((status = 200, description = "text/event-stream of `assignment` events"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
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
        .filter(tasks::Column::Status.eq("assigned"))
        .order_by_asc(tasks::Column::Id)
        .all(&state.db)
        .await?;
    let backlog = current.into_iter().map(|t| {
        let body = json!({
            "task_id": t.id, "seq": t.last_seq, "title": t.title, "description": t.description,
            "task_type": t.task_type, "priority": t.priority,
            "required_capabilities": t.required_capabilities, "project_id": t.project_id,
            "attempt": t.attempts,
        });
        Ok(Event::default().event("assignment").data(body.to_string()))
    });
    let pushed = live.map(|message| {
        Ok(Event::default()
            .event("assignment")
            .data(String::from_utf8_lossy(&message.payload)))
    });
    let mut closing = state.closing.subscribe();
    let closed = async move {
        let _ = closing.wait_for(|c| *c).await;
    };
    let events = stream::iter(backlog.collect::<Vec<_>>())
        .chain(pushed)
        .take_until(closed);
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
