//! `GET /api/v1/stream`: server-sent events of the live feed ([`crate::feed`]). `?topics=` picks among
//! `agent`, `task`, `project` (their events), `status` (a tick after each commit, and at least every
//! second) and `heartbeat` (agents' heartbeats); `?entity=` keeps one entity's events (and one agent's
//! heartbeats). Each log event is an SSE event named `event` whose data is its audit record; ticks are
//! `status` with `{checkpoint, head, lag}`; heartbeats are `heartbeat` with `{agent_id, at}`; `resync`
//! says items were lost and the client should reload.
//!
//! Each `event` carries its sequence as its SSE id. A client that reconnects with `Last-Event-ID` (or
//! `?after_seq=`, for clients that cannot set headers) first gets every event after that one from the
//! log, then the live feed from where the log left off: none missed, none twice, no `resync`.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use hive_eventlog::audit::Record;
use serde::Deserialize;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::AppState;
use crate::error::{ApiError, ApiResult, Code};
use crate::extract::Query;
use crate::feed::{Change, FeedItem};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(stream))
}

const TOPICS: [&str; 5] = ["agent", "task", "project", "status", "heartbeat"];

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct Filter {
    /// Comma-separated: agent, task, project, status, heartbeat; all when absent.
    topics: Option<String>,
    /// Only this entity's events (an agent's: its heartbeats too).
    entity: Option<Uuid>,
    /// Resume after this event: every later one, from the log, then live (as `Last-Event-ID`).
    after_seq: Option<u64>,
}

/// Where a client resumes: the `Last-Event-ID` its reconnect sends, or else `?after_seq=` (an
/// `EventSource` keeps its URL, so on a reconnect the header is the newer of the two).
fn resume_after(filter: &Filter, headers: &HeaderMap) -> ApiResult<Option<u64>> {
    if !headers.contains_key("last-event-id") {
        return Ok(filter.after_seq);
    }
    headers
        .get("last-event-id")
        .map(|id| {
            id.to_str()
                .ok()
                .and_then(|id| id.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::new(
                        Code::BadRequest,
                        "Last-Event-ID must be the sequence of an event this stream sent",
                    )
                })
        })
        .transpose()
}

#[utoipa::path(get, path = "/api/v1/stream", tag = "dashboard", summary = "Live events once projected, and status ticks (server-sent events)", params(Filter, ("Last-Event-ID" = Option<u64>, Header, description = "as after_seq: what an EventSource sends when it reconnects")), responses((status = 200, description = "Server-sent events: `hello`, then `event` (an audit record with `state`; its `seq` as the SSE id), `status` (`{checkpoint, head, lag}`), `heartbeat` (`{agent_id, at}`) and `resync`", body = String, content_type = "text/event-stream")))]
async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(filter): Query<Filter>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let after = resume_after(&filter, &headers)?;
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
    let wants = {
        let topics = topics.clone();
        move |record: &Record| {
            let topic = record.aggregate.map(|k| k.as_str()).unwrap_or("");
            topics.contains(topic) && entity.is_none_or(|id| record.aggregate_id == Some(id))
        }
    };
    // Subscribed before the backlog is read: whatever the feed releases from now on is here, and what
    // it released before is at or below the checkpoint read next, so the log has it.
    let live = BroadcastStream::new(state.feed.subscribe());
    let (backlog, resumed_at) = match after {
        None => (futures::stream::empty::<Option<Event>>().boxed(), None),
        Some(after) => {
            let released = state.progress.checkpoint();
            let mut backlog = backlog(&state, after, released, wants.clone()).await?;
            // Events past the checkpoint that the feed had to drop (the projection fell far behind)
            // reach this client neither way: say so.
            if state.feed.dropped_through() > released {
                let resync = futures::stream::once(async {
                    Some(Event::default().event("resync").data("{}"))
                });
                backlog = backlog.chain(resync).boxed();
            }
            (backlog, Some(released.max(after)))
        }
    };
    let live_wants = wants.clone();
    let items = live.filter_map(move |item| {
        let event = match item {
            Err(BroadcastStreamRecvError::Lagged(_)) => {
                Some(Event::default().event("resync").data("{}"))
            }
            Ok(item) => match item.as_ref() {
                FeedItem::Event(change) => {
                    // A resumed stream sent what the backlog covered already.
                    let fresh = resumed_at.is_none_or(|at| change.record.seq > at);
                    (fresh && live_wants(&change.record)).then(|| sse_event(change))
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
        std::future::ready(event.map(Some))
    });
    // Say hello at once, so a client knows the stream is open before any event.
    let hello = futures::stream::once(async { Some(Event::default().event("hello").data("{}")) });
    let mut closing = state.closing.subscribe();
    let closed = async move {
        let _ = closing.wait_for(|c| *c).await;
    };
    let events = hello
        .chain(backlog)
        .chain(items)
        .take_while(|event| std::future::ready(event.is_some()))
        .filter_map(|event| std::future::ready(event.map(Ok)));
    Ok(Sse::new(events.take_until(closed))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// The SSE event of one log event: named `event`, its sequence as its id.
fn sse_event(change: &Change) -> Event {
    Event::default()
        .event("event")
        .id(change.record.seq.to_string())
        .data(serde_json::to_string(change).unwrap_or_default())
}

/// The events after `after` up to `released` (what the live feed had released when the client
/// subscribed) that `wants` keeps, read from the log as the client consumes them. `None` ends the
/// stream: the log failed mid-way, and the client resumes from the last event it got.
async fn backlog(
    state: &AppState,
    after: u64,
    released: u64,
    wants: impl Fn(&Record) -> bool + Send + 'static,
) -> ApiResult<BoxStream<'static, Option<Event>>> {
    if after >= released {
        return Ok(futures::stream::empty().boxed());
    }
    let subjects = state.log.subjects().clone();
    let events = Box::pin(state.log.read_from(after + 1).await?);
    // The reader follows the log live: end right after the event at `released`, without waiting for
    // the one after it (on a quiet log, none may come for long).
    let within = futures::stream::unfold((events, false), move |(mut events, done)| async move {
        if done {
            return None;
        }
        let raw = events.next().await?;
        let last = match &raw {
            Ok(raw) => raw.seq >= released,
            Err(_) => true,
        };
        Some((raw, (events, last)))
    });
    let backlog = within.filter_map(move |raw| {
        let event = match raw {
            Ok(raw) => {
                let (record, state) = Record::with_status(&raw, &subjects);
                wants(&record).then(|| Some(sse_event(&Change { record, state })))
            }
            Err(e) => {
                tracing::warn!(error = %e, "a resumed stream lost the log: ending it");
                Some(None)
            }
        };
        std::future::ready(event)
    });
    Ok(backlog.boxed())
}
