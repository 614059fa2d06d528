#![allow(missing_docs)] // the fields are the API's JSON, documented in docs/api.md
//! The JSON shapes of the read models, and the list pagination they share.

use chrono::{DateTime, Utc};
use hive_events::agent::AgentStatus;
use hive_events::task::{TaskStatus, WaitingReason};
use hive_schema::{agents, dead_letters, projects, tasks};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Select};
use serde::Serialize;
use uuid::Uuid;

use crate::error::{ApiError, Code};

/// Which way a list runs: oldest first (the default) or newest first. Ids are UUIDv7, so id order is
/// creation order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Oldest first.
    #[default]
    Asc,
    /// Newest first.
    Desc,
}

impl From<Order> for sea_orm::Order {
    fn from(order: Order) -> Self {
        match order {
            Order::Asc => Self::Asc,
            Order::Desc => Self::Desc,
        }
    }
}

/// A list query in id order (`order`), from after `cursor` (the previous page's `next_cursor`), `limit`
/// rows (1..=500, default 50) plus one that only says whether there is more. Returns the query and the
/// limit.
pub fn paged<E: EntityTrait>(
    query: Select<E>,
    id: E::Column,
    limit: Option<u64>,
    cursor: Option<&str>,
    order: Order,
) -> Result<(Select<E>, u64), ApiError> {
    let limit = match limit.unwrap_or(50) {
        n @ 1..=500 => n,
        n => {
            return Err(ApiError::new(
                Code::BadRequest,
                format!("limit must be 1 to 500, got {n}"),
            ));
        }
    };
    let mut query = match order {
        Order::Asc => query.order_by_asc(id),
        Order::Desc => query.order_by_desc(id),
    }
    .limit(limit + 1);
    if let Some(cursor) = cursor {
        let after = Uuid::parse_str(cursor)
            .map_err(|_| ApiError::new(Code::BadRequest, "cursor is not one we gave"))?;
        query = query.filter(match order {
            Order::Asc => id.gt(after),
            Order::Desc => id.lt(after),
        });
    }
    Ok((query, limit))
}

/// The answer to a command on a task: the sequence of the event it appended (send it as
/// `Hive-Min-Seq` to read the change).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TaskCommitted {
    pub task_id: Uuid,
    pub seq: u64,
}

/// The answer to a command on an agent: the sequence of the event it appended.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AgentCommitted {
    pub agent_id: Uuid,
    pub seq: u64,
}

/// The answer to a command on a project: the sequence of the event it appended.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProjectCommitted {
    pub project_id: Uuid,
    pub seq: u64,
}

/// An agent's status (a heartbeat's answer; Agent Hive 2.0's status route).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AgentStatusView {
    pub agent_id: Uuid,
    pub status: AgentStatus,
}

/// A page of a list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct List<T> {
    /// The items, in id (creation) order.
    pub items: Vec<T>,
    /// The cursor of the next page; absent on the last one.
    pub next_cursor: Option<String>,
}

impl<T> List<T> {
    /// A page from `limit + 1` fetched rows: the extra row only says that there is more.
    pub fn from_rows<R>(
        mut rows: Vec<R>,
        limit: u64,
        id: impl Fn(&R) -> Uuid,
        view: impl Fn(R) -> Result<T, ApiError>,
    ) -> Result<Self, ApiError> {
        let more = rows.len() as u64 > limit;
        rows.truncate(limit as usize);
        let next_cursor = if more {
            rows.last().map(|r| id(r).to_string())
        } else {
            None
        };
        Ok(Self {
            items: rows.into_iter().map(view).collect::<Result<_, _>>()?,
            next_cursor,
        })
    }
}

/// An agent.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AgentView {
    pub agent_id: Uuid,
    pub name: Option<String>,
    pub agent_type: String,
    pub capabilities: Vec<String>,
    pub max_concurrent_tasks: i32,
    pub status: AgentStatus,
    /// What it is about.
    #[schema(value_type = std::collections::BTreeMap<String, String>)]
    pub labels: serde_json::Value,
    pub registered_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub seq: i64,
}

/// The status stored in a read-model row, which the projector only ever writes from the domain's own
/// names: another is a broken row, answered as an internal error (and logged), never guessed.
fn stored<S>(
    kind: &str,
    id: Uuid,
    status: &str,
    parse: impl Fn(&str) -> Option<S>,
) -> Result<S, ApiError> {
    parse(status).ok_or_else(|| {
        tracing::error!(%id, status, "a read-model row holds an unknown {kind} status");
        ApiError::new(
            Code::Internal,
            format!("the read model of {kind} {id} is unreadable"),
        )
    })
}

impl TryFrom<agents::Model> for AgentView {
    type Error = ApiError;

    fn try_from(a: agents::Model) -> Result<Self, ApiError> {
        Ok(Self {
            agent_id: a.id,
            name: a.name,
            agent_type: a.agent_type,
            capabilities: a.capabilities,
            max_concurrent_tasks: a.max_concurrent_tasks,
            status: stored("agent", a.id, &a.status, AgentStatus::parse)?,
            labels: a.labels,
            registered_at: a.registered_at,
            updated_at: a.updated_at,
            seq: a.last_seq,
        })
    }
}

/// The task a read-model row holds, folded state and all; a row the domain cannot read is a logged
/// 500, as an unknown status is.
pub fn task_of_row(row: tasks::Model) -> Result<(Uuid, hive_events::task::Task), ApiError> {
    use hive_projector::rows::ReadModel;
    match hive_events::task::Task::from_row(row) {
        (id, Ok(task)) => Ok((id, task)),
        (id, Err(e)) => {
            tracing::error!(task = %id, error = %e, "an unreadable read-model row");
            Err(ApiError::new(
                Code::Internal,
                format!("the read model of task {id} is unreadable"),
            ))
        }
    }
}

/// The stored names of the states in which a task holds an agent (counts towards its load).
pub fn holding_states() -> Vec<&'static str> {
    TaskStatus::ALL
        .into_iter()
        .filter(|s| s.holds_agent())
        .map(TaskStatus::as_str)
        .collect()
}

/// The fine states a status filter names: Hive's own state, or an Agent Hive 2.0 status.
pub fn states_for(filter: &str) -> Option<Vec<&'static str>> {
    if let Some(s) = TaskStatus::parse(filter) {
        return Some(vec![s.as_str()]);
    }
    let states: Vec<_> = TaskStatus::ALL
        .into_iter()
        .filter(|s| s.agent_hive_2() == filter)
        .map(TaskStatus::as_str)
        .collect();
    (!states.is_empty()).then_some(states)
}

/// A task.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TaskView {
    pub task_id: Uuid,
    pub title: String,
    pub description: Option<String>,
    pub task_type: Option<String>,
    pub priority: i16,
    pub required_capabilities: Vec<String>,
    pub depends_on: Vec<Uuid>,
    pub project_id: Option<Uuid>,
    /// The only agent that may take it.
    pub pinned_agent: Option<Uuid>,
    /// Agent Hive 2.0's status: pending|assigned|in_progress|completed|failed|cancelled.
    pub status: &'static str,
    /// Hive's own, finer state.
    pub state: TaskStatus,
    pub agent_id: Option<Uuid>,
    pub attempts: i32,
    pub max_attempts: i32,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub progress: Option<i16>,
    pub progress_message: Option<String>,
    pub result: Option<serde_json::Value>,
    pub last_error: Option<String>,
    pub retry_at: Option<DateTime<Utc>>,
    /// Why it was last requeued, blocked, cancelled, timed out (`timed_out`) or dead-lettered.
    pub reason: Option<String>,
    /// Who cancelled it, if it was cancelled.
    pub cancelled_by: Option<String>,
    /// What it is about.
    #[schema(value_type = std::collections::BTreeMap<String, String>)]
    pub labels: serde_json::Value,
    /// Not queued before this time (while it waits for it, its state is `waiting`).
    pub not_before: Option<DateTime<Utc>>,
    /// The longest a run may take, in seconds.
    pub timeout_secs: Option<i32>,
    /// The longest a run may go without a progress report, in seconds.
    pub heartbeat_timeout_secs: Option<i32>,
    /// Seconds a stopped executor gets between SIGTERM and SIGKILL.
    pub cancel_grace_secs: i32,
    /// Why it is not running (none when it runs or is over), with the facts: `code` is one of
    /// `waiting_on`, `not_before`, `blocked_by`, `retry_at`, `failed`, `dead_lettered`,
    /// `pinned_agent_unavailable`, `no_capable_agent`, `agents_full`, `assigning`,
    /// `awaiting_agent`.
    pub waiting_reason: Option<WaitingReason>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub seq: i64,
}

impl TryFrom<tasks::Model> for TaskView {
    type Error = ApiError;

    fn try_from(t: tasks::Model) -> Result<Self, ApiError> {
        let state = stored("task", t.id, &t.status, TaskStatus::parse)?;
        Ok(Self {
            task_id: t.id,
            title: t.title,
            description: t.description,
            task_type: t.task_type,
            priority: t.priority,
            required_capabilities: t.required_capabilities,
            depends_on: t.depends_on,
            project_id: t.project_id,
            pinned_agent: t.pinned_agent,
            status: state.agent_hive_2(),
            state,
            agent_id: t.agent_id,
            attempts: t.attempts,
            max_attempts: t.max_attempts,
            lease_expires_at: t.lease_expires_at,
            progress: t.progress,
            progress_message: t.progress_message,
            result: t.result,
            last_error: t.last_error,
            retry_at: t.retry_at,
            reason: t.reason,
            cancelled_by: t.cancelled_by,
            labels: t.labels,
            not_before: t.not_before,
            timeout_secs: t.timeout_secs,
            heartbeat_timeout_secs: t.heartbeat_timeout_secs,
            cancel_grace_secs: t.cancel_grace_secs,
            waiting_reason: None,
            created_at: t.created_at,
            updated_at: t.updated_at,
            seq: t.last_seq,
        })
    }
}

/// A project, with its tasks counted by state.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProjectView {
    pub project_id: Uuid,
    pub name: String,
    pub description: Option<String>,
    #[serde(rename = "type")]
    pub project_type: Option<String>,
    pub created_at: DateTime<Utc>,
    pub tasks: TaskCounts,
    pub seq: i64,
}

/// Tasks counted by state.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct TaskCounts {
    pub total: i64,
    pub by_status: std::collections::BTreeMap<String, i64>,
    /// Completed tasks / all tasks, 0..=1.
    pub progress: f64,
}

impl From<std::collections::BTreeMap<String, i64>> for TaskCounts {
    fn from(by_status: std::collections::BTreeMap<String, i64>) -> Self {
        let total = by_status.values().sum::<i64>();
        let completed = by_status.get("completed").copied().unwrap_or(0);
        Self {
            total,
            progress: if total == 0 {
                0.0
            } else {
                completed as f64 / total as f64
            },
            by_status,
        }
    }
}

impl ProjectView {
    /// The view of `p` with its task counts.
    pub fn new(p: projects::Model, tasks: TaskCounts) -> Self {
        Self {
            project_id: p.id,
            name: p.name,
            description: p.description,
            project_type: p.project_type,
            created_at: p.created_at,
            tasks,
            seq: p.last_seq,
        }
    }
}

/// A page of the tasks an agent ever held, from the projector's index of them (`agent_tasks`), and
/// the stretch of the log that index covers: a reader that must miss none reads the log's task events
/// outside it (up to `indexed_after`, after `indexed_through`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HeldTasks {
    /// The tasks, in the order the agent was first assigned each (oldest first, unless `order=desc`).
    pub items: Vec<HeldTask>,
    /// The cursor of the next page; absent on the last one.
    pub next_cursor: Option<String>,
    /// The index holds the tasks the events after this sequence assigned: 0 (the whole log), but on a
    /// database upgraded in place and not rebuilt since, whose older assignments are not in it.
    pub indexed_after: u64,
    /// ... up to and including this one: the read models' checkpoint, read with the items (later
    /// assignments are not in them yet).
    pub indexed_through: u64,
}

/// A task an agent held.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HeldTask {
    pub task_id: Uuid,
    /// The sequence of the first event that assigned it to the agent (the page's cursor).
    pub first_seq: u64,
}

/// An event a projection could not apply.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeadLetterView {
    pub id: i64,
    pub projection: String,
    pub seq: i64,
    pub subject: String,
    pub reason: String,
    /// The stored bytes, as text (invalid UTF-8 replaced).
    pub payload: String,
    pub created_at: DateTime<Utc>,
}

impl From<dead_letters::Model> for DeadLetterView {
    fn from(d: dead_letters::Model) -> Self {
        Self {
            id: d.id,
            projection: d.projection,
            seq: d.seq,
            subject: d.subject,
            reason: d.reason,
            payload: String::from_utf8_lossy(&d.payload).into_owned(),
            created_at: d.created_at,
        }
    }
}
