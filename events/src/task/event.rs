//! The facts of a task's life, as stored, with their versions and upcasters.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::TaskStatus;
use super::limits::{Limits, TimeLimit};
use crate::aggregate::EventSchema;
use crate::error::DecodeError;
use crate::ids::{AgentId, ProjectId, TaskId};
use crate::labels::Labels;
use crate::values::{Capability, Priority};

/// The facts of a task's life.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum TaskEvent {
    /// A task was created; it is queued at once unless `waiting_on` names dependencies not yet completed
    /// or `not_before` is set (then it waits until that time).
    TaskCreated {
        /// A short title.
        title: String,
        /// What to do.
        description: Option<String>,
        /// A free-form kind.
        task_type: Option<String>,
        /// 1 (lowest) to 10 (highest).
        priority: Priority,
        /// What an agent must be able to do.
        required_capabilities: Vec<Capability>,
        /// Tasks that must complete first.
        depends_on: Vec<TaskId>,
        /// Those of `depends_on` not completed when it was created.
        waiting_on: Vec<TaskId>,
        /// The project it belongs to.
        project_id: Option<ProjectId>,
        /// The only agent that may take it (schema version 2).
        pinned_agent: Option<AgentId>,
        /// Attempts before it is dead-lettered.
        max_attempts: u32,
        /// What it is about, searchable (schema version 3).
        #[serde(default)]
        labels: Labels,
        /// Not queued before this time (schema version 3).
        #[serde(default)]
        not_before: Option<DateTime<Utc>>,
        /// How long a run may take, and how its executor is stopped (schema version 3).
        #[serde(default)]
        limits: Limits,
    },
    /// It became ready to be assigned.
    TaskQueued {},
    /// It was leased to an agent.
    TaskAssigned {
        /// The agent.
        agent_id: AgentId,
        /// When the lease lapses unless the agent starts it.
        lease_expires_at: DateTime<Utc>,
    },
    /// Its agent accepted the assignment.
    TaskAccepted {},
    /// Its agent started it.
    TaskStarted {},
    /// Its agent reported progress.
    TaskProgressed {
        /// Percent done, if known.
        percent: Option<u8>,
        /// A line of progress.
        message: Option<String>,
    },
    /// Its agent finished it.
    TaskCompleted {
        /// What it produced.
        result: serde_json::Value,
    },
    /// The attempt failed.
    TaskFailed {
        /// What went wrong.
        error: String,
        /// Whether another attempt may succeed.
        retryable: bool,
    },
    /// Another attempt will be queued at `retry_at`.
    TaskRetryScheduled {
        /// When it is due.
        retry_at: DateTime<Utc>,
    },
    /// Taken from its agent and queued again: by the scheduler, by an operator, or given back by the
    /// agent itself (its `actor` says which).
    TaskRequeued {
        /// Why (`agent_lost`, `lease_expired`, `agent_restarted`, an operator's words, ...).
        reason: String,
    },
    /// An operator asked for another round of attempts after it failed for good.
    TaskRetried {},
    /// Failed for good.
    TaskDeadLettered {
        /// Why.
        reason: String,
    },
    /// Cancelled.
    TaskCancelled {
        /// Why, if said.
        reason: Option<String>,
        /// Who cancelled it: the actor of the command (schema version 2).
        #[serde(default)]
        cancelled_by: Option<String>,
    },
    /// A running task passed one of its time limits: its attempt failed (retryable), and its executor is
    /// stopped.
    TaskTimedOut {
        /// Which limit.
        limit: TimeLimit,
        /// The limit, in seconds.
        after_secs: u32,
    },
    /// It cannot run because a dependency cannot complete.
    TaskBlocked {
        /// Why.
        reason: String,
    },
    /// What blocked it can complete again (an operator retried it): it waits on its dependencies again.
    TaskUnblocked {},
}

impl TaskEvent {
    /// The times this event carries (beside its envelope's `occurred_at`).
    pub fn times(&self) -> impl Iterator<Item = &DateTime<Utc>> {
        // Every variant named: one that comes to carry a time is checked once it is listed here.
        let at = match self {
            Self::TaskCreated { not_before, .. } => not_before.as_ref(),
            Self::TaskAssigned {
                lease_expires_at, ..
            } => Some(lease_expires_at),
            Self::TaskRetryScheduled { retry_at } => Some(retry_at),
            Self::TaskQueued {}
            | Self::TaskAccepted {}
            | Self::TaskStarted {}
            | Self::TaskProgressed { .. }
            | Self::TaskCompleted { .. }
            | Self::TaskFailed { .. }
            | Self::TaskRequeued { .. }
            | Self::TaskRetried {}
            | Self::TaskDeadLettered { .. }
            | Self::TaskCancelled { .. }
            | Self::TaskTimedOut { .. }
            | Self::TaskBlocked { .. }
            | Self::TaskUnblocked {} => None,
        };
        at.into_iter()
    }

    /// The status a task is in after this event: each event leads to one status, whatever the task
    /// was in before (the fold checks that it may follow). Readers that see an event without the
    /// task's state — the dashboard's feed — learn the task's new status from here.
    pub fn status_after(&self) -> TaskStatus {
        use TaskStatus as S;
        match self {
            Self::TaskCreated {
                waiting_on,
                not_before: None,
                ..
            } if waiting_on.is_empty() => S::Queued,
            Self::TaskCreated { .. } | Self::TaskUnblocked {} => S::Waiting,
            Self::TaskQueued {} | Self::TaskRequeued { .. } | Self::TaskRetried {} => S::Queued,
            Self::TaskAssigned { .. } => S::Assigned,
            Self::TaskAccepted {} => S::Accepted,
            Self::TaskStarted {} | Self::TaskProgressed { .. } => S::Running,
            Self::TaskCompleted { .. } => S::Completed,
            Self::TaskFailed { .. } | Self::TaskTimedOut { .. } => S::Failed,
            Self::TaskRetryScheduled { .. } => S::RetryScheduled,
            Self::TaskDeadLettered { .. } => S::DeadLettered,
            Self::TaskCancelled { .. } => S::Cancelled,
            Self::TaskBlocked { .. } => S::Blocked,
        }
    }

    /// The agent this event names as the task's holder, if it names one: an assignment names the
    /// agent it leases the task to. The rest of that holding (accepted, started, progress, completed,
    /// failed, requeued) names the agent only in its `actor`, or not at all, so the assignments are
    /// what tells which agents ever held a task: the audit of an agent and the index the projector
    /// keeps of it (`agent_tasks`) both ask here.
    pub fn agent_named(&self) -> Option<AgentId> {
        match self {
            Self::TaskAssigned { agent_id, .. } => Some(*agent_id),
            Self::TaskCreated { .. }
            | Self::TaskQueued {}
            | Self::TaskAccepted {}
            | Self::TaskStarted {}
            | Self::TaskProgressed { .. }
            | Self::TaskCompleted { .. }
            | Self::TaskFailed { .. }
            | Self::TaskTimedOut { .. }
            | Self::TaskRetryScheduled { .. }
            | Self::TaskRequeued { .. }
            | Self::TaskRetried {}
            | Self::TaskDeadLettered { .. }
            | Self::TaskCancelled { .. }
            | Self::TaskBlocked { .. }
            | Self::TaskUnblocked {} => None,
        }
    }
}

impl EventSchema for TaskEvent {
    fn from_domain(event: crate::DomainEvent) -> Option<Self> {
        match event {
            crate::DomainEvent::Task(event) => Some(event),
            _ => None,
        }
    }

    fn event_type(&self) -> &'static str {
        match self {
            Self::TaskCreated { .. } => "TaskCreated",
            Self::TaskQueued {} => "TaskQueued",
            Self::TaskAssigned { .. } => "TaskAssigned",
            Self::TaskAccepted {} => "TaskAccepted",
            Self::TaskStarted {} => "TaskStarted",
            Self::TaskProgressed { .. } => "TaskProgressed",
            Self::TaskCompleted { .. } => "TaskCompleted",
            Self::TaskFailed { .. } => "TaskFailed",
            Self::TaskTimedOut { .. } => "TaskTimedOut",
            Self::TaskRetryScheduled { .. } => "TaskRetryScheduled",
            Self::TaskRequeued { .. } => "TaskRequeued",
            Self::TaskRetried {} => "TaskRetried",
            Self::TaskDeadLettered { .. } => "TaskDeadLettered",
            Self::TaskCancelled { .. } => "TaskCancelled",
            Self::TaskBlocked { .. } => "TaskBlocked",
            Self::TaskUnblocked {} => "TaskUnblocked",
        }
    }

    fn current_version(event_type: &str) -> u16 {
        match event_type {
            "TaskCreated" => 3,
            "TaskCancelled" => 2,
            _ => 1,
        }
    }

    fn upcast(
        event_type: &str,
        version: u16,
        mut data: serde_json::Value,
    ) -> Result<serde_json::Value, DecodeError> {
        match (event_type, version) {
            // v2 added `pinned_agent` (a v1 task was never pinned); v3 `labels`, `not_before` and
            // `limits` (an older task had none, and the default grace).
            ("TaskCreated", 1 | 2) => {
                if let Some(fields) = data.as_object_mut() {
                    if version == 1 {
                        fields.insert("pinned_agent".into(), serde_json::Value::Null);
                    }
                    fields.insert("labels".into(), serde_json::json!({}));
                    fields.insert("not_before".into(), serde_json::Value::Null);
                    let limits = serde_json::json!({
                        "timeout_secs": null,
                        "heartbeat_timeout_secs": null,
                        "cancel_grace_secs": Limits::DEFAULT_CANCEL_GRACE_SECS,
                    });
                    fields.insert("limits".into(), limits);
                }
                Ok(data)
            }
            // v2 added `cancelled_by`: unknown before.
            ("TaskCancelled", 1) => {
                if let Some(fields) = data.as_object_mut() {
                    fields.insert("cancelled_by".into(), serde_json::Value::Null);
                }
                Ok(data)
            }
            (t, v) if v == Self::current_version(t) => Ok(data),
            (t, v) => Err(DecodeError::UnsupportedVersion {
                event_type: t.to_owned(),
                version: v,
            }),
        }
    }
}
