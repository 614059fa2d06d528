//! `GET /dashboard`: the live dashboard (one page, embedded in the binary, no outside assets), and
//! `GET /dashboard/coordination`: the JSON it starts from (also an Agent Hive 2.0 route). The page then
//! follows `GET /api/v1/stream` and pages through the lists with the ordinary API.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use futures::StreamExt;
use hive_eventlog::audit::Record;

use crate::feed::Change;
use chrono::{DateTime, Utc};
use hive_schema::{agents, dead_letters, tasks};
use sea_orm::{ColumnTrait, EntityTrait, FromQueryResult, QueryFilter, QueryOrder, QuerySelect};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::system::Status;
use crate::AppState;
use crate::error::{ApiError, ApiResult, Code};
use crate::extract::Query;
use crate::views::{AgentView, DeadLetterView, List, Order, TaskView, holding_states, paged};
use hive_events::agent::AgentStatus;
use hive_events::task::TaskStatus;

const PAGE: &str = include_str!("../../assets/dashboard.html");

/// Events of the recent past the page starts its feed with, by default and at most.
const RECENT_EVENTS: u64 = 50;
const MAX_EVENTS: u64 = 500;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(page))
        .routes(routes!(coordination))
}

#[utoipa::path(get, path = "/dashboard", tag = "dashboard", summary = "The live dashboard (HTML)", responses((status = 200, description = "The page", body = String, content_type = "text/html")))]
async fn page() -> Response {
    ([(header::CACHE_CONTROL, "no-cache")], Html(PAGE)).into_response()
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct Pages {
    /// The agents page to start from (the previous page's `next_cursor`).
    agents_cursor: Option<String>,
    /// Agents per page, 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    agents_limit: Option<u64>,
    /// Tasks per list, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    tasks_limit: Option<u64>,
    /// Recent events to start the feed with, 0 to 500 (default 50; 0: none, and no log reads).
    #[param(maximum = 500)]
    events: Option<u64>,
    /// Whether the agents page lists deregistered agents too (default false: they would crowd out
    /// the live ones).
    #[serde(default)]
    include_deregistered: bool,
    /// Which way the agents and task lists run: `asc` (oldest first, the default) or `desc`.
    #[serde(default)]
    #[param(value_type = Option<Order>)]
    order: Order,
}

/// The state the dashboard starts from.
#[derive(Debug, Serialize, ToSchema)]
struct Coordination {
    /// The hive's counts, the log's head and the projection's standing, as `/status`.
    status: Status,
    /// A page of agents (the deregistered ones only if asked).
    agents: List<AgentLoad>,
    /// The first queued tasks.
    queued: List<TaskView>,
    /// The first running tasks.
    running: List<TaskView>,
    /// The 20 latest dead letters, newest first.
    dead_letters: Vec<DeadLetterView>,
    /// The recent events the read models reflect, newest first.
    events: Vec<Change>,
    links: CoordinationLinks,
}

/// An agent with its load and its last heartbeat.
#[derive(Debug, Serialize, ToSchema)]
struct AgentLoad {
    #[serde(flatten)]
    agent: AgentView,
    /// Tasks it holds (assigned, accepted or running).
    load: i64,
    /// Its last heartbeat; none yet: null.
    last_heartbeat: Option<DateTime<Utc>>,
}

/// Where the dashboard goes on from.
#[derive(Debug, Serialize, ToSchema)]
struct CoordinationLinks {
    stream: &'static str,
    agents: &'static str,
    tasks: &'static str,
    dead_letters: &'static str,
    history: &'static str,
}

#[derive(FromQueryResult)]
struct Load {
    agent_id: Uuid,
    load: i64,
}

/// The state the dashboard starts from: the counts, a page of agents with their load and last
/// heartbeat, the first queued and running tasks, the latest dead letters and the recent events.
#[utoipa::path(get, path = "/dashboard/coordination", tag = "dashboard", summary = "The state the dashboard starts from", params(Pages), responses((status = 200, body = Coordination)))]
async fn coordination(
    State(state): State<AppState>,
    Query(pages): Query<Pages>,
) -> ApiResult<Json<Coordination>> {
    let events = match pages.events.unwrap_or(RECENT_EVENTS) {
        n @ 0..=MAX_EVENTS => n,
        n => {
            return Err(ApiError::new(
                Code::BadRequest,
                format!("events must be 0 to {MAX_EVENTS}, got {n}"),
            ));
        }
    };
    let status = super::system::status_body(&state).await?;
    let mut agents = agents::Entity::find();
    if !pages.include_deregistered {
        agents = agents.filter(agents::Column::Status.ne(AgentStatus::Deregistered.as_str()));
    }
    let (query, limit) = paged(
        agents,
        agents::Column::Id,
        Some(pages.agents_limit.unwrap_or(100)),
        pages.agents_cursor.as_deref(),
        pages.order,
    )?;
    let agents = List::from_rows(
        query.all(&state.db).await?,
        limit,
        |a| a.id,
        AgentView::try_from,
    )?;
    let ids: Vec<Uuid> = agents.items.iter().map(|a| a.agent_id).collect();
    let loads: HashMap<Uuid, i64> = tasks::Entity::find()
        .select_only()
        .column(tasks::Column::AgentId)
        .column_as(tasks::Column::Id.count(), "load")
        .filter(tasks::Column::AgentId.is_in(ids.iter().copied()))
        .filter(tasks::Column::Status.is_in(holding_states()))
        .group_by(tasks::Column::AgentId)
        .into_model::<Load>()
        .all(&state.db)
        .await?
        .into_iter()
        .map(|l| (l.agent_id, l.load))
        .collect();
    // The page's agents only, never the whole fleet's.
    let beats = state.heartbeats.of(ids).await?;
    let agents = List {
        items: agents
            .items
            .into_iter()
            .map(|agent| AgentLoad {
                load: loads.get(&agent.agent_id).copied().unwrap_or(0),
                last_heartbeat: beats.get(&agent.agent_id).copied(),
                agent,
            })
            .collect(),
        next_cursor: agents.next_cursor,
    };
    let tasks_limit = pages.tasks_limit.unwrap_or(50);
    let queued = tasks_in(&state, TaskStatus::Queued, tasks_limit, pages.order).await?;
    let running = tasks_in(&state, TaskStatus::Running, tasks_limit, pages.order).await?;
    let dead: Vec<DeadLetterView> = dead_letters::Entity::find()
        .order_by_desc(dead_letters::Column::Id)
        .limit(20)
        .all(&state.db)
        .await?
        .into_iter()
        .map(DeadLetterView::from)
        .collect();
    Ok(Json(Coordination {
        status,
        agents,
        queued,
        running,
        dead_letters: dead,
        events: recent_events(&state, events).await?,
        links: CoordinationLinks {
            stream: "/api/v1/stream",
            agents: "/api/v1/agents",
            tasks: "/api/v1/tasks",
            dead_letters: "/api/v1/dead-letters",
            history: "/api/v1/{agents|tasks|projects}/{id}/events",
        },
    }))
}

async fn tasks_in(
    state: &AppState,
    status: TaskStatus,
    limit: u64,
    order: Order,
) -> ApiResult<List<TaskView>> {
    let (query, limit) = paged(
        tasks::Entity::find(),
        tasks::Column::Id,
        Some(limit),
        None,
        order,
    )?;
    let rows = query
        .filter(tasks::Column::Status.eq(status.as_str()))
        .all(&state.db)
        .await?;
    let facts = crate::waiting::Facts::of(state, &rows).await?;
    List::from_rows(rows, limit, |t| t.id, |row| facts.view(row))
}

/// The last `count` events the read models reflect, newest first, read a few at a time.
async fn recent_events(state: &AppState, count: u64) -> ApiResult<Vec<Change>> {
    if count == 0 {
        return Ok(Vec::new());
    }
    let last = state.progress.checkpoint();
    let first = last.saturating_sub(count - 1).max(1);
    let subjects = state.log.subjects();
    let raws: Vec<_> = futures::stream::iter((first..=last).rev())
        .map(|seq| state.log.get(seq))
        .buffered(16)
        .collect()
        .await;
    let mut records = Vec::new();
    for raw in raws {
        if let Some(raw) = raw? {
            let (record, state) = Record::with_status(&raw, subjects);
            records.push(Change { record, state });
        }
    }
    Ok(records)
}
