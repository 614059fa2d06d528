//! The task aggregate: a unit of work with a priority, required capabilities and dependencies.
//!
//! ```text
//! created ─┬─▶ waiting ──queued──▶ queued ──assigned──▶ assigned ──accepted──▶ accepted
//!          │   ▲  └──blocked──▶ blocked ▲                │  └──────started───────┐ │ started
//!          │   └──unblocked───────┘     │                │ lease lapsed /         ▼ ▼
//!          └────────────────────────────┼──requeued──────┴─ agent lost ◀── running (progressed)
//!                                       │                                   │      │
//!  retry_scheduled ◀──retry_scheduled── failed ◀──────failed── (assigned|accepted|running)
//!        └──queued──▶ queued        │      └──dead_lettered──▶ dead_lettered       completed
//!                                   └──────retried (operator)──────┘──▶ queued
//! ```
//! cancelled: from every state that is not final (completed, dead_lettered, cancelled).
//! timed_out: running ──▶ failed, when it passes its `timeout_secs` or `heartbeat_timeout_secs`.
//! A task created with `not_before` waits (as `waiting`) until that time, then is queued.
//!
//! A task is its [`Lifecycle`] — everything the rules read — and its [`Details`], which they never read
//! (title, description, result, messages). The rules ([`Lifecycle::decide`] and the questions in
//! [`rules`]) work on the lifecycle alone, so a service that only schedules folds and holds just that.
//!
//! A blocked task is not final: its dependency may be retried by an operator, and then the task is
//! unblocked (waiting again) — see [`Lifecycle::due`].

mod command;
mod event;
mod lifecycle;
pub mod limits;
pub mod rules;
mod waiting;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::aggregate::{Aggregate, AggregateKind};
use crate::error::{DomainError, FoldError};
use crate::ids::ProjectId;
use crate::labels::Labels;

pub use command::{NewTask, TaskCommand};
pub use event::TaskEvent;
pub use lifecycle::Lifecycle;
pub use limits::{Limits, TimeLimit};
pub use rules::{AfterFailure, Dependency};
pub use waiting::{Candidate, WaitingReason};

/// Where a task is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Created; some dependencies have not completed yet.
    Waiting,
    /// Ready to be assigned.
    Queued,
    /// Leased to one agent, not accepted yet: the lease lapses unless it accepts or starts in time.
    Assigned,
    /// Its agent accepted it and will start it.
    Accepted,
    /// Its agent is working on it.
    Running,
    /// Done, with a result.
    Completed,
    /// The last attempt failed; a retry or the dead-letter queue follows.
    Failed,
    /// Waiting for its back-off to pass before it is queued again.
    RetryScheduled,
    /// Failed for good (unless an operator retries it).
    DeadLettered,
    /// Cancelled.
    Cancelled,
    /// A dependency was cancelled or dead-lettered, so it cannot run unless that dependency is retried.
    Blocked,
}

impl TaskStatus {
    /// Every status.
    pub const ALL: [TaskStatus; 11] = [
        Self::Waiting,
        Self::Queued,
        Self::Assigned,
        Self::Accepted,
        Self::Running,
        Self::Completed,
        Self::Failed,
        Self::RetryScheduled,
        Self::DeadLettered,
        Self::Cancelled,
        Self::Blocked,
    ];

    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Queued => "queued",
            Self::Assigned => "assigned",
            Self::Accepted => "accepted",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::RetryScheduled => "retry_scheduled",
            Self::DeadLettered => "dead_lettered",
            Self::Cancelled => "cancelled",
            Self::Blocked => "blocked",
        }
    }

    /// The status with this stored name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether nothing can happen to the task any more but an operator's retry (dead-lettered).
    pub const fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::DeadLettered | Self::Cancelled)
    }

    /// Whether the task holds an agent: one agent has it leased, accepted or running, and it counts
    /// towards that agent's load.
    pub const fn holds_agent(self) -> bool {
        matches!(self, Self::Assigned | Self::Accepted | Self::Running)
    }

    /// Whether its agent has taken it up: accepted or started it. (An assigned task its agent may not
    /// have seen yet: the assignment is pushed again when the agent reconnects.)
    pub const fn taken_up(self) -> bool {
        matches!(self, Self::Accepted | Self::Running)
    }

    /// Whether a task in this status cannot complete as things stand, so a task depending on it cannot
    /// run: cancelled (for good), dead-lettered or blocked (until an operator retries it or what
    /// blocks it).
    pub const fn can_never_complete(self) -> bool {
        matches!(self, Self::Cancelled | Self::DeadLettered | Self::Blocked)
    }

    /// Agent Hive 2.0's coarse status for this one (`pending`, `assigned`, `in_progress`, `completed`,
    /// `failed`, `cancelled`).
    pub const fn agent_hive_2(self) -> &'static str {
        match self {
            Self::Waiting | Self::Queued | Self::RetryScheduled => "pending",
            Self::Assigned | Self::Accepted => "assigned",
            Self::Running => "in_progress",
            Self::Completed => "completed",
            Self::Failed | Self::DeadLettered | Self::Blocked => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// What the rules never read: what the task is about, and what it reported.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Details {
    /// A short title.
    pub title: String,
    /// What to do, in full.
    pub description: Option<String>,
    /// A free-form kind (e.g. `code_review`).
    pub task_type: Option<String>,
    /// The project it belongs to.
    pub project_id: Option<ProjectId>,
    /// What it is about, searchable.
    #[serde(default)]
    pub labels: Labels,
    /// Last reported progress, percent.
    pub progress: Option<u8>,
    /// Last reported progress message.
    pub progress_message: Option<String>,
    /// The result of a completed task.
    pub result: Option<serde_json::Value>,
    /// The last failure's error.
    pub last_error: Option<String>,
    /// Why it was last requeued, blocked, cancelled, timed out or dead-lettered.
    pub reason: Option<String>,
    /// Who cancelled it, if it was cancelled.
    #[serde(default)]
    pub cancelled_by: Option<String>,
}

impl Details {
    /// Records what `event` says (one the lifecycle accepted).
    fn apply(mut self, event: &TaskEvent) -> Self {
        use TaskEvent as E;
        match event {
            E::TaskCreated {
                title,
                description,
                task_type,
                project_id,
                labels,
                ..
            } => {
                self = Self {
                    title: title.clone(),
                    description: description.clone(),
                    task_type: task_type.clone(),
                    project_id: *project_id,
                    labels: labels.clone(),
                    ..Self::default()
                }
            }
            E::TaskAssigned { .. } => {
                self.progress = None;
                self.progress_message = None;
            }
            E::TaskProgressed { percent, message } => {
                self.progress = percent.or(self.progress);
                if message.is_some() {
                    self.progress_message = message.clone();
                }
            }
            E::TaskCompleted { result } => {
                self.result = Some(result.clone());
                self.progress = Some(100);
            }
            E::TaskFailed { error, .. } => self.last_error = Some(error.clone()),
            E::TaskTimedOut { limit, after_secs } => {
                self.last_error = Some(limit.explain(*after_secs));
                self.reason = Some("timed_out".into());
            }
            E::TaskRequeued { reason }
            | E::TaskDeadLettered { reason }
            | E::TaskBlocked { reason } => self.reason = Some(reason.clone()),
            E::TaskCancelled {
                reason,
                cancelled_by,
            } => {
                self.reason = reason.clone();
                self.cancelled_by = cancelled_by.clone();
            }
            E::TaskRetried {} => self.reason = Some("retried".into()),
            E::TaskUnblocked {} => self.reason = None,
            E::TaskQueued {}
            | E::TaskAccepted {}
            | E::TaskStarted {}
            | E::TaskRetryScheduled { .. } => {}
        }
        self
    }
}

/// A task's whole state, folded from its events: its lifecycle and its details.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// What the rules read.
    pub lifecycle: Lifecycle,
    /// What they never read.
    pub details: Details,
}

impl Aggregate for Task {
    type Event = TaskEvent;
    type Command = TaskCommand;
    const KIND: AggregateKind = AggregateKind::Task;

    fn apply(state: Option<Self>, event: &TaskEvent, at: DateTime<Utc>) -> Result<Self, FoldError> {
        let (lifecycle, details) = match state {
            Some(task) => (Some(task.lifecycle), task.details),
            None => (None, Details::default()),
        };
        Ok(Task {
            lifecycle: Lifecycle::apply(lifecycle, event, at)?,
            details: details.apply(event),
        })
    }

    fn decide(state: Option<&Self>, command: TaskCommand) -> Result<TaskEvent, DomainError> {
        Lifecycle::decide(state.map(|t| &t.lifecycle), command)
    }

    fn state_name(state: Option<&Self>) -> &'static str {
        Lifecycle::state_name(state.map(|t| &t.lifecycle))
    }
}

#[cfg(test)]
mod tests;
