//! The mapping between an aggregate's folded state and its read-model row. A row holds the whole state
//! (plus the sequence of its last event), so the projector folds the next event onto the row it reads,
//! and `verify` can compare a clean fold of the log with the table, row by row.

use chrono::{DateTime, Utc};
use hive_events::agent::{Agent, AgentStatus};
use hive_events::project::Project;
use hive_events::task::{Details, Lifecycle, Limits, Task, TaskStatus};
use hive_events::{AgentId, Aggregate, Capability, Priority, ProjectId, TaskId};
use hive_schema::{agents, projects, tasks};
use sea_orm::EntityTrait;
use uuid::Uuid;

/// An aggregate with a read-model table.
pub trait ReadModel: Aggregate {
    /// Its table.
    type Entity: EntityTrait;
    /// Its name in `status_counts`, if its statuses are counted.
    const COUNTED_AS: Option<&'static str>;
    /// Its id column.
    fn id_column() -> <Self::Entity as EntityTrait>::Column;
    /// Its current status, as counted.
    fn status(&self) -> &'static str;
    /// The row for this state.
    fn to_row(id: Uuid, state: &Self, seq: u64) -> <Self::Entity as EntityTrait>::Model;
    /// The id a row holds, and its state or why the row is unreadable.
    fn from_row(row: <Self::Entity as EntityTrait>::Model) -> (Uuid, Result<Self, String>);
}

/// Seconds as stored (every limit is far below `i32::MAX`).
fn secs(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

fn seq_of(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

fn caps(values: Vec<String>) -> Result<Vec<Capability>, String> {
    values
        .into_iter()
        .map(|c| Capability::new(c).map_err(|e| e.to_string()))
        .collect()
}

fn cap_names(values: &[Capability]) -> Vec<String> {
    values.iter().map(|c| c.as_str().to_owned()).collect()
}

impl ReadModel for Agent {
    type Entity = agents::Entity;
    const COUNTED_AS: Option<&'static str> = Some("agent");

    fn id_column() -> agents::Column {
        agents::Column::Id
    }

    fn status(&self) -> &'static str {
        self.status.as_str()
    }

    fn to_row(id: Uuid, a: &Self, seq: u64) -> agents::Model {
        agents::Model {
            id,
            name: a.name.clone(),
            agent_type: a.agent_type.clone(),
            capabilities: cap_names(&a.capabilities),
            max_concurrent_tasks: i32::try_from(a.max_concurrent_tasks).unwrap_or(i32::MAX),
            status: a.status.as_str().to_owned(),
            draining: a.draining,
            registered_at: to_micros(a.registered_at),
            updated_at: to_micros(a.updated_at),
            last_seq: seq_of(seq),
            labels: serde_json::to_value(&a.labels).unwrap_or_default(),
        }
    }

    fn from_row(row: agents::Model) -> (Uuid, Result<Self, String>) {
        (row.id, agent_from_row(row))
    }
}

fn agent_from_row(row: agents::Model) -> Result<Agent, String> {
    let status = AgentStatus::parse(&row.status)
        .ok_or_else(|| format!("unknown status {:?}", row.status))?;
    Ok(Agent {
        name: row.name,
        agent_type: row.agent_type,
        capabilities: caps(row.capabilities)?,
        max_concurrent_tasks: u32::try_from(row.max_concurrent_tasks).map_err(|e| e.to_string())?,
        status,
        draining: row.draining,
        registered_at: row.registered_at,
        updated_at: row.updated_at,
        labels: serde_json::from_value(row.labels).map_err(|e| format!("labels: {e}"))?,
    })
}

impl ReadModel for Task {
    type Entity = tasks::Entity;
    const COUNTED_AS: Option<&'static str> = Some("task");

    fn id_column() -> tasks::Column {
        tasks::Column::Id
    }

    fn status(&self) -> &'static str {
        self.lifecycle.status.as_str()
    }

    fn to_row(id: Uuid, task: &Self, seq: u64) -> tasks::Model {
        let (t, d) = (&task.lifecycle, &task.details);
        tasks::Model {
            id,
            title: d.title.clone(),
            description: d.description.clone(),
            task_type: d.task_type.clone(),
            priority: i16::from(t.priority.get()),
            required_capabilities: cap_names(&t.required_capabilities),
            depends_on: t.depends_on.iter().map(TaskId::as_uuid).collect(),
            project_id: d.project_id.map(|p| p.as_uuid()),
            pinned_agent: t.pinned_agent.map(|a| a.as_uuid()),
            max_attempts: i32::try_from(t.max_attempts).unwrap_or(i32::MAX),
            attempts: i32::try_from(t.attempts).unwrap_or(i32::MAX),
            status: t.status.as_str().to_owned(),
            agent_id: t.agent_id.map(|a| a.as_uuid()),
            lease_expires_at: t.lease_expires_at.map(to_micros),
            progress: d.progress.map(i16::from),
            progress_message: d.progress_message.clone(),
            result: d.result.clone(),
            last_error: d.last_error.clone(),
            last_error_retryable: t.last_error_retryable,
            retry_at: t.retry_at.map(to_micros),
            reason: d.reason.clone(),
            created_at: to_micros(t.created_at),
            updated_at: to_micros(t.updated_at),
            last_seq: seq_of(seq),
            labels: serde_json::to_value(&d.labels).unwrap_or_default(),
            not_before: t.not_before.map(to_micros),
            timeout_secs: t.limits.timeout_secs.map(secs),
            heartbeat_timeout_secs: t.limits.heartbeat_timeout_secs.map(secs),
            cancel_grace_secs: secs(t.limits.cancel_grace_secs),
            cancelled_by: d.cancelled_by.clone(),
        }
    }

    fn from_row(row: tasks::Model) -> (Uuid, Result<Self, String>) {
        (row.id, task_from_row(row))
    }
}

fn task_from_row(row: tasks::Model) -> Result<Task, String> {
    let status =
        TaskStatus::parse(&row.status).ok_or_else(|| format!("unknown status {:?}", row.status))?;
    let small = |v: i32| u32::try_from(v).map_err(|e| e.to_string());
    let lifecycle = Lifecycle {
        status,
        priority: Priority::new(i64::from(row.priority)).map_err(|e| e.to_string())?,
        required_capabilities: caps(row.required_capabilities)?,
        depends_on: row.depends_on.into_iter().map(TaskId::from_uuid).collect(),
        pinned_agent: row.pinned_agent.map(AgentId::from_uuid),
        max_attempts: small(row.max_attempts)?,
        attempts: small(row.attempts)?,
        agent_id: row.agent_id.map(AgentId::from_uuid),
        lease_expires_at: row.lease_expires_at,
        last_error_retryable: row.last_error_retryable,
        retry_at: row.retry_at,
        created_at: row.created_at,
        updated_at: row.updated_at,
        not_before: row.not_before,
        limits: Limits {
            timeout_secs: row.timeout_secs.map(small).transpose()?,
            heartbeat_timeout_secs: row.heartbeat_timeout_secs.map(small).transpose()?,
            cancel_grace_secs: small(row.cancel_grace_secs)?,
        },
        // Not kept in the read models (m0006): only the scheduler reads them, from the log.
        started_at: None,
        heard_at: None,
    };
    let details = Details {
        title: row.title,
        description: row.description,
        task_type: row.task_type,
        project_id: row.project_id.map(ProjectId::from_uuid),
        progress: row.progress.map(|p| p.clamp(0, 100) as u8),
        progress_message: row.progress_message,
        result: row.result,
        last_error: row.last_error,
        reason: row.reason,
        labels: serde_json::from_value(row.labels).map_err(|e| format!("labels: {e}"))?,
        cancelled_by: row.cancelled_by,
    };
    Ok(Task { lifecycle, details })
}

impl ReadModel for Project {
    type Entity = projects::Entity;
    const COUNTED_AS: Option<&'static str> = None;

    fn id_column() -> projects::Column {
        projects::Column::Id
    }

    fn status(&self) -> &'static str {
        "active"
    }

    fn to_row(id: Uuid, p: &Self, seq: u64) -> projects::Model {
        projects::Model {
            id,
            name: p.name.clone(),
            description: p.description.clone(),
            project_type: p.project_type.clone(),
            created_at: to_micros(p.created_at),
            last_seq: seq_of(seq),
        }
    }

    fn from_row(row: projects::Model) -> (Uuid, Result<Self, String>) {
        let project = Project {
            name: row.name,
            description: row.description,
            project_type: row.project_type,
            created_at: row.created_at,
        };
        (row.id, Ok(project))
    }
}

/// Postgres keeps microseconds; an event may carry nanoseconds. Every row is written through this, so a row
/// built from a clean fold equals the row the projector stored.
pub fn to_micros(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at)
}
