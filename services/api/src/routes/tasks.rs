//! `/api/v1/tasks`: create (also in Agent Hive 2.0's shape), list, read, cancel.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use hive_eventlog::EventLog;
use hive_eventlog::audit::At;
use hive_events::agent::Agent;
use hive_events::project::Project;
use hive_events::replay::{Folded, OnRejected, Replay};
use hive_events::task::{Lifecycle, Limits, NewTask, Task, TaskCommand, rules};
use hive_events::{AgentId, Labels, Priority, ProjectId, TaskId};
use hive_projector::rows::ReadModel;
use hive_schema::tasks;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::committed;
use super::travel::{AtQuery, row_at, row_from};
use crate::AppState;
use crate::auth::CallerAgent;
#[allow(unused_imports)]
use crate::error::ErrorBody;
use crate::error::{ApiError, ApiResult, Code};
use crate::extract::{self, Command, Path, Query};
use crate::feed::Unfolded;
use crate::search::TaskSearch;
use crate::views::{List, Order, TaskCommitted, TaskView, paged, states_for};
use crate::waiting::Facts;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(read))
}

/// A priority as a number 1..=10 or a name.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
enum PriorityInput {
    Number(i64),
    Name(String),
}

/// `POST /api/v1/tasks`: Hive's shape, or Agent Hive 2.0's (`task_type`, `description`, named priority).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = CreateTask)]
pub(crate) struct Create {
    /// Required unless a description or a task type can name the task.
    #[schema(min_length = 1, max_length = 500)]
    title: Option<String>,
    #[schema(max_length = 20000)]
    description: Option<String>,
    #[schema(min_length = 1, max_length = 100)]
    task_type: Option<String>,
    /// 1 to 10, or `low`, `normal`, `medium`, `high`, `critical` (default normal, 5).
    priority: Option<PriorityInput>,
    #[serde(default)]
    #[schema(value_type = Vec<hive_events::Capability>)]
    required_capabilities: Vec<String>,
    /// Tasks that must complete first (at most 100; each must exist and be able to complete).
    #[serde(default)]
    #[schema(max_items = 100)]
    depends_on: Vec<Uuid>,
    pub(crate) project_id: Option<Uuid>,
    /// Pins the task to one agent (Agent Hive 2.0's `assigned_agent`).
    #[serde(alias = "assigned_agent")]
    pinned_agent: Option<Uuid>,
    /// 1 to 100 (default 3).
    #[schema(minimum = 1, maximum = 100)]
    max_attempts: Option<u32>,
    /// What the task is about, searchable with `GET /api/v1/tasks?label=key:value`: at most 32
    /// pairs; a key is 1 to 63 characters of `A-Z a-z 0-9 - _ . /`, a value up to 256 characters.
    #[schema(value_type = Option<std::collections::BTreeMap<String, String>>)]
    labels: Option<BTreeMap<String, String>>,
    /// Not queued before this time (RFC 3339): until then the task is `waiting`. Cancellable meanwhile.
    not_before: Option<DateTime<Utc>>,
    /// The longest a run may take, from its start to its completion, in seconds: past it the executor
    /// is stopped and the attempt fails with reason `timed_out` (its retries apply).
    #[schema(minimum = 1, maximum = 2592000)]
    timeout_secs: Option<u32>,
    /// The longest a running task may go without a progress report, in seconds: past it the
    /// executor is stopped and the attempt fails with reason `timed_out`.
    #[schema(minimum = 1, maximum = 86400)]
    heartbeat_timeout_secs: Option<u32>,
    /// Seconds a stopped executor (cancelled, timed out, requeued) gets between SIGTERM and SIGKILL
    /// (default 10).
    #[schema(minimum = 0, maximum = 3600)]
    cancel_grace_secs: Option<u32>,
}

impl Create {
    /// The title, or for Agent Hive 2.0 clients that send none, the description's first line or the type.
    fn title(&self) -> Result<String, ApiError> {
        if let Some(title) = &self.title {
            return Ok(title.clone());
        }
        let first_line = self
            .description
            .as_deref()
            .and_then(|d| d.lines().find(|l| !l.trim().is_empty()));
        first_line
            .map(|l| l.trim().chars().take(200).collect())
            .or_else(|| self.task_type.clone())
            .ok_or_else(|| {
                ApiError::invalid(
                    "title",
                    "required (or a description or task_type to name the task by)",
                )
            })
    }
}

/// Which dependencies are not completed yet, as the domain decides from their states in the log.
async fn open_dependencies(log: &EventLog, depends_on: &[Uuid]) -> Result<Vec<TaskId>, ApiError> {
    let mut statuses = Vec::with_capacity(depends_on.len());
    for &dep in depends_on {
        let loaded = log.load::<Lifecycle>(dep).await?;
        statuses.push((TaskId::from_uuid(dep), loaded.state.map(|t| t.status)));
    }
    Ok(rules::waiting_on(statuses)?)
}

#[utoipa::path(post, path = "/api/v1/tasks", operation_id = "create_task", tag = "tasks", summary = "Create a task", params(Command), request_body = Create, responses((status = 201, description = "Created", body = TaskCommitted, links(("task" = (operation_id = "read_task", parameters(("id" = "$response.body#/task_id")))), ("history" = (operation_id = "task_events", parameters(("id" = "$response.body#/task_id")))), ("report" = (operation_id = "task_action", parameters(("id" = "$response.body#/task_id")))))), (status = 409, description = "corrupt_history: the project's, the pinned agent's or a dependency's history cannot be folded", body = ErrorBody), (status = 422, description = "a field, or a project, pinned agent or dependency that does not exist or cannot complete", body = ErrorBody)))]
async fn create(
    State(state): State<AppState>,
    Command(ctx): Command,
    extract::Json(body): extract::Json<Create>,
) -> ApiResult<Response> {
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

/// Checks a task's references (project, pinned agent, dependencies) against the log and creates it.
pub(crate) async fn create_task(
    state: &AppState,
    ctx: &hive_eventlog::CommandContext,
    body: Create,
) -> ApiResult<hive_eventlog::Committed> {
    let title = body.title()?;
    let priority = match &body.priority {
        None => Priority::NORMAL,
        Some(PriorityInput::Number(n)) => Priority::new(*n)?,
        Some(PriorityInput::Name(name)) => Priority::from_name(name)?,
    };
    if let Some(project) = body.project_id
        && state.log.load::<Project>(project).await?.state.is_none()
    {
        return Err(ApiError::invalid(
            "project_id",
            format!("project {project} does not exist"),
        ));
    }
    if let Some(agent) = body.pinned_agent
        && state.log.load::<Agent>(agent).await?.state.is_none()
    {
        return Err(ApiError::invalid(
            "assigned_agent",
            format!("agent {agent} does not exist"),
        ));
    }
    let waiting_on = open_dependencies(&state.log, &body.depends_on).await?;
    let command = TaskCommand::Create(NewTask {
        title,
        description: body.description,
        task_type: body.task_type,
        priority,
        required_capabilities: body.required_capabilities,
        depends_on: body.depends_on.into_iter().map(TaskId::from_uuid).collect(),
        waiting_on,
        project_id: body.project_id.map(ProjectId::from_uuid),
        pinned_agent: body.pinned_agent.map(AgentId::from_uuid),
        max_attempts: body.max_attempts.unwrap_or(NewTask::DEFAULT_MAX_ATTEMPTS),
        labels: Labels::new(body.labels.unwrap_or_default())?,
        not_before: body.not_before,
        limits: Limits {
            timeout_secs: body.timeout_secs,
            heartbeat_timeout_secs: body.heartbeat_timeout_secs,
            cancel_grace_secs: body
                .cancel_grace_secs
                .unwrap_or(Limits::DEFAULT_CANCEL_GRACE_SECS),
        },
    });
    let done = state
        .log
        .create::<Lifecycle>(TaskId::new().as_uuid(), ctx, command)
        .await?;
    state.progress.saw_append(done.seq);
    Ok(done)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct Filter {
    /// A task state (`queued`, `running`, ...) or an Agent Hive 2.0 status (`pending`, `in_progress`, ...).
    status: Option<String>,
    /// The assigned agent (an agent token must name itself).
    agent_id: Option<Uuid>,
    /// The project.
    project_id: Option<Uuid>,
    /// `key:value`: tasks labelled so (repeatable: every one must match).
    // Documents the parameter; read from the raw query, since one name may come many times.
    #[allow(dead_code)]
    #[serde(skip)]
    #[param(value_type = Option<Vec<String>>, style = Form, explode)]
    label: (),
    /// Tasks of this type.
    task_type: Option<String>,
    /// Tasks that require this capability.
    capability: Option<String>,
    /// Tasks created at or after this time (RFC 3339).
    created_after: Option<DateTime<Utc>>,
    /// Tasks created at or before this time (RFC 3339).
    created_before: Option<DateTime<Utc>>,
    /// Text in the title (any case; 1 to 200 characters).
    #[param(min_length = 1, max_length = 200)]
    q: Option<String>,
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

#[utoipa::path(get, path = "/api/v1/tasks", operation_id = "list_tasks", tag = "tasks", summary = "List tasks", params(Filter), responses((status = 200, body = List<TaskView>), (status = 422, description = "an unknown status, or a filter out of bounds", body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    Query(filter): Query<Filter>,
) -> ApiResult<Json<List<TaskView>>> {
    let search = TaskSearch {
        labels: TaskSearch::labels_of(raw.as_deref())?,
        task_type: filter.task_type,
        capability: filter.capability,
        created_after: filter.created_after,
        created_before: filter.created_before,
        q: filter.q,
    };
    let (mut query, limit) = paged(
        tasks::Entity::find(),
        tasks::Column::Id,
        filter.limit,
        filter.cursor.as_deref(),
        filter.order,
    )?;
    if let Some(status) = &filter.status {
        let states = states_for(status).ok_or_else(|| {
            ApiError::invalid("status", format!("unknown task status {status:?}"))
        })?;
        query = query.filter(tasks::Column::Status.is_in(states));
    }
    if let Some(agent) = filter.agent_id {
        query = query.filter(tasks::Column::AgentId.eq(agent));
    }
    if let Some(project) = filter.project_id {
        query = query.filter(tasks::Column::ProjectId.eq(project));
    }
    let rows = search
        .page(&state.db, query, filter.order, limit + 1)
        .await?;
    let facts = Facts::of(&state, &rows).await?;
    Ok(Json(List::from_rows(
        rows,
        limit,
        |r| r.id,
        |row| facts.view(row),
    )?))
}

#[utoipa::path(get, path = "/api/v1/tasks/{id}", operation_id = "read_task", tag = "tasks", summary = "A task (now, or as it was)", params(("id" = Uuid, Path, description = "the task"), AtQuery), responses((status = 200, body = TaskView), (status = 404, description = "no such task (then)", body = ErrorBody)))]
async fn read(
    State(state): State<AppState>,
    CallerAgent(agent): CallerAgent,
    Path(id): Path<Uuid>,
    Query(at): Query<AtQuery>,
) -> ApiResult<Json<TaskView>> {
    if let Some(agent) = agent {
        let row = tasks::Entity::find_by_id(id).one(&state.db).await?;
        if row.is_none_or(|t| t.agent_id != Some(agent)) {
            return Err(ApiError::new(
                Code::Forbidden,
                "an agent token reads only the tasks assigned to its agent",
            ));
        }
    }
    if let Some(at) = at.at(&state).await? {
        let row = row_at::<Task>(&state, hive_events::AggregateKind::Task, id, at).await?;
        return Ok(Json(row.try_into()?));
    }
    // The checkpoint, and the task's events the feed saw beyond it, before the read: taken after,
    // either could have moved past the row between the two (a task projected meanwhile would be
    // answered not found; a row read before its batch committed would be taken as current).
    let reflected = state.progress.checkpoint();
    let unreflected = state.feed.unreflected.of(id);
    let subjects = state.log.subjects();
    // The feed holds the task's whole history (from its creation: none of it reflected yet) and has
    // seen an event of it past the checkpoint: the task as those events leave it, without its row,
    // which does not exist yet or is behind them. (At or below the checkpoint, the feed may lag the
    // projector: the row may be newer.) A client polling the task it has just created (as Agent
    // Hive 2.0's clients do, without `Hive-Min-Seq`) is answered without a read of its row.
    if let Some(row) = unreflected
        .as_ref()
        .filter(|u| u.latest() > reflected)
        .and_then(|u| folded_onto::<Task>(id, None, 0, u.after(0)?, subjects))
    {
        return viewed(&state, row).await;
    }
    if let Some(row) = tasks::Entity::find_by_id(id).one(&state.db).await? {
        // The log holds events of the task that its row does not reflect yet (the projector is a
        // moment behind): the task as they leave it, so that a client polling it sees its
        // assignment as soon as the log holds it. Only up to the latest event the feed saw: the
        // next read finds that one in the feed or in the row, so it never goes back in time.
        let behind = unreflected
            .as_ref()
            .filter(|u| i64::try_from(u.latest()).is_ok_and(|seq| seq > row.last_seq));
        let row = match behind {
            None => row,
            Some(unfolded) => match ahead_of(&state, id, &row, unfolded).await {
                Ok(ahead) => {
                    metrics::counter!("hive_api_reads_ahead_of_read_models_total").increment(1);
                    ahead
                }
                // The row, a moment behind, rather than no answer.
                Err(e) => {
                    tracing::debug!(task = %id, error = %e, "the log could not be read: the row");
                    row
                }
            },
        };
        return viewed(&state, row).await;
    }
    // Not projected yet, and the feed does not hold its whole history: the task folded from the
    // log's. A task created at or below the checkpoint and not in the read models was never
    // projected (its creation was dead-lettered): not found.
    let kind = hive_events::AggregateKind::Task;
    let history = state.log.history(kind, id).await?;
    match history.first() {
        Some(created) if created.seq > reflected => {
            let latest = unreflected.as_ref().map_or(0, Unfolded::latest);
            let at = latest.max(created.seq);
            let row = row_from::<Task>(&history, subjects, kind, id, At::Seq(at))?;
            viewed(&state, row).await
        }
        _ => Err(ApiError::not_found("task", id)),
    }
}

/// The answer for one task's row: its view, with why it is not running.
async fn viewed(state: &AppState, row: tasks::Model) -> ApiResult<Json<TaskView>> {
    let facts = Facts::of(state, std::slice::from_ref(&row)).await?;
    Ok(Json(facts.view(row)?))
}

/// Task `id`'s row with its events the read models do not reflect yet: folded onto the row from the
/// feed when it holds every one after the row, else from the log.
async fn ahead_of(
    state: &AppState,
    id: Uuid,
    row: &tasks::Model,
    unfolded: &Unfolded,
) -> ApiResult<tasks::Model> {
    let from = u64::try_from(row.last_seq).unwrap_or(0);
    let held = unfolded.after(from).and_then(|events| {
        let (_, task) = <Task as ReadModel>::from_row(row.clone());
        folded_onto::<Task>(id, Some(task.ok()?), from, events, state.log.subjects())
    });
    match held {
        Some(ahead) => Ok(ahead),
        None => row_from_log(state, id, unfolded.latest()).await,
    }
}

/// The row of `A` that `events` (of aggregate `id`, in order, after `seq`) leave `state` in, as the
/// projector folds them (an event the domain refuses passed over); `None` when they leave no state
/// (the first of a new aggregate is not its creation).
fn folded_onto<'a, A: ReadModel>(
    id: Uuid,
    state: Option<A>,
    seq: u64,
    events: impl Iterator<Item = &'a hive_eventlog::RawEvent>,
    subjects: &hive_events::subject::Subjects,
) -> Option<<A::Entity as sea_orm::EntityTrait>::Model> {
    let replay = Replay::new(subjects.clone(), OnRejected::Skip);
    let mut folded = Folded {
        id,
        state,
        last_seq: seq,
    };
    for raw in events {
        let _ = replay.feed_stored(&mut folded, raw.seq, &raw.subject, &raw.payload);
    }
    let state = folded.state?;
    Some(A::to_row(id, &state, folded.last_seq))
}

/// Task `id`'s row as its events up to `seq` leave it, from the log: loaded as a command loads it
/// (its snapshot and the events after it) when `seq` is its latest event, else folded from its
/// history.
async fn row_from_log(state: &AppState, id: Uuid, seq: u64) -> ApiResult<tasks::Model> {
    let loaded = state.log.load::<Task>(id).await?;
    if loaded.last_seq == seq
        && let Some(task) = &loaded.state
    {
        return Ok(<Task as ReadModel>::to_row(id, task, seq));
    }
    row_at::<Task>(state, hive_events::AggregateKind::Task, id, At::Seq(seq)).await
}
