//! `GET /api/v1/stream`: server-sent events of the live feed ([`crate::feed`]). `?topics=` picks among
//! `agent`, `task`, `project` (their events), `status` (a tick after each commit, and at least every
//! second) and `heartbeat` (agents' heartbeats); `?entity=` keeps one entity's events (and one agent's
//! heartbeats). Each log event is an SSE event named `event` whose data is its audit record; ticks are
//! `status` with `{checkpoint, head, lag}`; heartbeats are `heartbeat` with `{agent_id, at}`; `resync`
//! says items were lost and the client should reload.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::AppState;
#[allow(unused_imports)]
use crate::error::ErrorBody;
use crate::error::{ApiError, ApiResult, Code};
use crate::extract::Query;
use crate::feed::FeedItem;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(stream))
}

const TOPICS: [&str; 5] = ["agent", "task", "project", "status", "heartbeat"];

#[derive(Debug, Deserialize)]
struct Filter {
    /// Comma-separated topics; all when absent.
    topics: Option<String>,
    /// Only this entity's events.
    entity: Option<Uuid>,
}

#[utoipa::path(get, path = "/api/v1/stream", tag = "dashboard", summary = "Live events once projected, and status ticks (server-sent events)", params(("topics" = Option<String>, Query, description = "comma-separated: agent, task, project, status, heartbeat"), ("entity" = Option<Uuid>, Query, description = "only this entity's events (an agent's: its heartbeats too)")), responses((status = 200, description = "text/event-stream"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn stream(
    State(state): State<AppState>,
    Query(filter): Query<Filter>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let topics: BTreeSet<String> = match &filter.topics {
        None => TOPICS.iter().map(|t| t.to_string()).collect(),
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| {
                // `tasks` means `task`.
                let t = match t.strip_suffix('s') {
                    Some(single) if !TOPICS.contains(&t) => single,
                    _ => t,
                };
                if TOPICS.contains(&t) {
                    Ok(t.to_owned())
                } else {
                    Err(ApiError::new(
                        Code::BadRequest,
                        format!("unknown topic {t:?}: agent, task, project, status or heartbeat"),
                    ))
                }
            })
            .collect::<Result<_, _>>()?,
    };
    let entity = filter.entity;
    let items = BroadcastStream::new(state.feed.subscribe()).filter_map(move |item| {
        let event = match item {
            Err(BroadcastStreamRecvError::Lagged(_)) => {
                Some(Event::default().event("resync").data("{}"))
            }
            Ok(item) => match item.as_ref() {
                FeedItem::Event(change) => {
                    let record = &change.record;
                    let topic = record.aggregate.map(|k| k.as_str()).unwrap_or("");
                    let wanted = topics.contains(topic)
                        && entity.is_none_or(|id| record.aggregate_id == Some(id));
                    wanted.then(|| {
                        Event::default()
                            .event("event")
                            .id(record.seq.to_string())
                            .data(serde_json::to_string(change).unwrap_or_default())
                    })
                }
                FeedItem::Status { checkpoint, head } => {
                    (topics.contains("status") && entity.is_none()).then(|| {
                        let body = serde_json::json!({
                            "checkpoint": checkpoint, "head": head,
                            "lag": head.saturating_sub(*checkpoint),
                        });
                        Event::default().event("status").data(body.to_string())
                    })
                }
                FeedItem::Heartbeat { agent_id, at } => (topics.contains("heartbeat")
                    && entity.is_none_or(|id| id == *agent_id))
                .then(|| {
                    let body = serde_json::json!({"agent_id": agent_id, "at": at});
                    Event::default().event("heartbeat").data(body.to_string())
                }),
                FeedItem::Resync => Some(Event::default().event("resync").data("{}")),
            },
        };
        std::future::ready(event.map(Ok))
    });
    // Say hello at once, so a client knows the stream is open before any event.
    let hello = futures::stream::once(async { Ok(Event::default().event("hello").data("{}")) });
    let mut closing = state.closing.subscribe();
    let closed = async move {
        let _ = closing.wait_for(|c| *c).await;
    };
    Ok(Sse::new(hello.chain(items).take_until(closed))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
