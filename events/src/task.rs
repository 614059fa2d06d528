//! The task aggregate: a unit of work with a priority, required capabilities and dependencies.
//!
//! ```text
//! created ─┬─▶ waiting ──queued──▶ queued ──assigned──▶ assigned ──accepted──▶ accepted
//!          │      └──blocked──▶ blocked  ▲                 │  └──────started───────┐ │ started
//!          └─────────────────────────────┤                 │ lease lapsed /         ▼ ▼
//!                                        ├──requeued───────┴─ agent lost ◀── running (progressed)
//!                                        │                                        │      │
//!  retry_scheduled ◀──retry_scheduled── failed ◀───────failed── (assigned|accepted|running)
//!        └──queued──▶ queued        │      └──dead_lettered──▶ dead_lettered       completed
//!                                   └──────retried (operator)──────┘──▶ queued
//! ```
//! cancelled: from every state that is not final (completed, dead_lettered, cancelled).
//! ```

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::aggregate::{
    Aggregate, AggregateKind, EventSchema, check_text, refuse_command, refuse_event,
};
use crate::error::{DecodeError, DomainError, FoldError};
use crate::ids::{AgentId, ProjectId, TaskId};
use crate::values::{Capability, Priority, capability_set};

/// Where a task is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
    /// Failed for good.
    DeadLettered,
    /// Cancelled.
    Cancelled,
    /// A dependency was cancelled or dead-lettered, so it can never run.
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

    /// Whether nothing can happen to the task any more.
    pub const fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::DeadLettered | Self::Cancelled)
    }
}

/// A task's state, folded from its events.
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    /// A short title.
    pub title: String,
    /// What to do, in full.
    pub description: Option<String>,
    /// A free-form kind (e.g. `code_review`).
    pub task_type: Option<String>,
    /// 1..=10, higher first.
    pub priority: Priority,
    /// What an agent must be able to do to take it.
    pub required_capabilities: Vec<Capability>,
    /// Tasks that must complete first.
    pub depends_on: Vec<TaskId>,
    /// The project it belongs to.
    pub project_id: Option<ProjectId>,
    /// The only agent that may take it, if pinned.
    pub pinned_agent: Option<AgentId>,
    /// How many attempts before it is dead-lettered.
    pub max_attempts: u32,
    /// How many times it has been assigned.
    pub attempts: u32,
    /// Where it is in its life.
    pub status: TaskStatus,
    /// The agent holding it (assigned or running).
    pub agent_id: Option<AgentId>,
    /// When the current assignment's lease lapses.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Last reported progress, percent.
    pub progress: Option<u8>,
    /// Last reported progress message.
    pub progress_message: Option<String>,
    /// The result of a completed task.
    pub result: Option<serde_json::Value>,
    /// The last failure's error.
    pub last_error: Option<String>,
    /// Whether the last failure may be retried.
    pub last_error_retryable: bool,
    /// When a scheduled retry is due.
    pub retry_at: Option<DateTime<Utc>>,
    /// Why it was last requeued, blocked, cancelled or dead-lettered.
    pub reason: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When its last event happened.
    pub updated_at: DateTime<Utc>,
}

/// The facts of a task's life.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum TaskEvent {
    /// A task was created; it is queued at once unless `waiting_on` names dependencies not yet completed.
    TaskCreated {
        /// A short title.
        title: String,
        /// What to do.
        description: Option<String>,
        /// A free-form kind.
        task_type: Option<String>,
        /// 1..=10.
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
    },
    /// It can never run because a dependency will never complete.
    TaskBlocked {
        /// Why.
        reason: String,
    },
}

impl EventSchema for TaskEvent {
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
            Self::TaskRetryScheduled { .. } => "TaskRetryScheduled",
            Self::TaskRequeued { .. } => "TaskRequeued",
            Self::TaskRetried {} => "TaskRetried",
            Self::TaskDeadLettered { .. } => "TaskDeadLettered",
            Self::TaskCancelled { .. } => "TaskCancelled",
            Self::TaskBlocked { .. } => "TaskBlocked",
        }
    }

    fn current_version(event_type: &str) -> u16 {
        match event_type {
            "TaskCreated" => 2,
            _ => 1,
        }
    }

    fn upcast(
        event_type: &str,
        version: u16,
        mut data: serde_json::Value,
    ) -> Result<serde_json::Value, DecodeError> {
        match (event_type, version) {
            // v2 added `pinned_agent`; a v1 task was never pinned.
            ("TaskCreated", 1) => {
                if let Some(fields) = data.as_object_mut() {
                    fields.insert("pinned_agent".into(), serde_json::Value::Null);
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

/// What a new task is made of.
#[derive(Clone, Debug, PartialEq)]
pub struct NewTask {
    /// A short title, 1..=500 characters.
    pub title: String,
    /// What to do, up to 20,000 characters.
    pub description: Option<String>,
    /// A free-form kind.
    pub task_type: Option<String>,
    /// 1..=10.
    pub priority: Priority,
    /// What an agent must be able to do (checked and sorted on the way in).
    pub required_capabilities: Vec<String>,
    /// Tasks that must complete first.
    pub depends_on: Vec<TaskId>,
    /// Those of `depends_on` not completed now (an outside fact the caller looked up).
    pub waiting_on: Vec<TaskId>,
    /// The project it belongs to.
    pub project_id: Option<ProjectId>,
    /// The only agent that may take it.
    pub pinned_agent: Option<AgentId>,
    /// Attempts before it is dead-lettered, 1..=100.
    pub max_attempts: u32,
}

/// Orders to a task.
#[derive(Clone, Debug, PartialEq)]
pub enum TaskCommand {
    /// Create it.
    Create(NewTask),
    /// Make it ready for assignment (dependencies done, or back-off over).
    Queue,
    /// Lease it to an agent.
    Assign {
        /// The agent.
        agent_id: AgentId,
        /// When the lease lapses.
        lease_expires_at: DateTime<Utc>,
    },
    /// The assigned agent accepts it.
    Accept {
        /// Who reports.
        agent_id: AgentId,
    },
    /// The assigned agent starts it.
    Start {
        /// Who reports.
        agent_id: AgentId,
    },
    /// The assigned agent reports progress.
    Progress {
        /// Who reports.
        agent_id: AgentId,
        /// Percent, 0..=100.
        percent: Option<u8>,
        /// A line of progress.
        message: Option<String>,
    },
    /// The assigned agent finished it.
    Complete {
        /// Who reports.
        agent_id: AgentId,
        /// What it produced.
        result: serde_json::Value,
    },
    /// The assigned agent failed it.
    Fail {
        /// Who reports.
        agent_id: AgentId,
        /// What went wrong.
        error: String,
        /// Whether another attempt may succeed.
        retryable: bool,
    },
    /// Schedule another attempt after a failure.
    ScheduleRetry {
        /// When it is due.
        retry_at: DateTime<Utc>,
    },
    /// Take it from its agent and queue it again: the scheduler (its agent lost or deregistered, its
    /// lease lapsed) or an operator.
    Requeue {
        /// Why.
        reason: String,
    },
    /// The assigned agent gives it back undone (its runtime restarted, say): queued again.
    Release {
        /// Who gives it back.
        agent_id: AgentId,
        /// Why.
        reason: String,
    },
    /// Another round of attempts for a task that failed for good (an operator's call).
    Retry,
    /// Give up on it.
    DeadLetter {
        /// Why.
        reason: String,
    },
    /// Cancel it.
    Cancel {
        /// Why, if said.
        reason: Option<String>,
    },
    /// Mark it as never able to run.
    Block {
        /// Why.
        reason: String,
    },
}

impl TaskCommand {
    /// The command's name, for messages.
    pub const fn name(&self) -> &'static str {
        match self {
            Self::Create(_) => "create",
            Self::Queue => "queue",
            Self::Assign { .. } => "assign",
            Self::Accept { .. } => "accept",
            Self::Start { .. } => "start",
            Self::Progress { .. } => "report progress on",
            Self::Complete { .. } => "complete",
            Self::Fail { .. } => "fail",
            Self::ScheduleRetry { .. } => "retry",
            Self::Requeue { .. } => "requeue",
            Self::Release { .. } => "release",
            Self::Retry => "retry",
            Self::DeadLetter { .. } => "dead-letter",
            Self::Cancel { .. } => "cancel",
            Self::Block { .. } => "block",
        }
    }
}

fn created(new: NewTask) -> Result<TaskEvent, DomainError> {
    check_text("title", &new.title, 1, 500)?;
    if let Some(d) = &new.description {
        check_text("description", d, 0, 20_000)?;
    }
    if let Some(t) = &new.task_type {
        check_text("task_type", t, 1, 100)?;
    }
    if !(1..=100).contains(&new.max_attempts) {
        return Err(DomainError::invalid(
            "max_attempts",
            format!("must be 1 to 100, got {}", new.max_attempts),
        ));
    }
    if new.depends_on.len() > 100 {
        return Err(DomainError::invalid(
            "depends_on",
            "at most 100 dependencies",
        ));
    }
    let mut depends_on = new.depends_on;
    depends_on.sort();
    depends_on.dedup();
    if let Some(stray) = new.waiting_on.iter().find(|w| !depends_on.contains(w)) {
        return Err(DomainError::invalid(
            "depends_on",
            format!("waiting on {stray}, which it does not depend on"),
        ));
    }
    let mut waiting_on = new.waiting_on;
    waiting_on.sort();
    waiting_on.dedup();
    Ok(TaskEvent::TaskCreated {
        title: new.title,
        description: new.description,
        task_type: new.task_type,
        priority: new.priority,
        required_capabilities: capability_set(new.required_capabilities)?,
        depends_on,
        waiting_on,
        project_id: new.project_id,
        pinned_agent: new.pinned_agent,
        max_attempts: new.max_attempts,
    })
}

impl Aggregate for Task {
    type Event = TaskEvent;
    type Command = TaskCommand;
    const KIND: AggregateKind = AggregateKind::Task;

    fn apply(state: Option<Self>, event: &TaskEvent, at: DateTime<Utc>) -> Result<Self, FoldError> {
        use TaskEvent as E;
        use TaskStatus as S;
        let Some(mut task) = state else {
            return match event {
                E::TaskCreated {
                    title,
                    description,
                    task_type,
                    priority,
                    required_capabilities,
                    depends_on,
                    waiting_on,
                    project_id,
                    pinned_agent,
                    max_attempts,
                } => Ok(Task {
                    title: title.clone(),
                    description: description.clone(),
                    task_type: task_type.clone(),
                    priority: *priority,
                    required_capabilities: required_capabilities.clone(),
                    depends_on: depends_on.clone(),
                    project_id: *project_id,
                    pinned_agent: *pinned_agent,
                    max_attempts: *max_attempts,
                    attempts: 0,
                    status: if waiting_on.is_empty() {
                        S::Queued
                    } else {
                        S::Waiting
                    },
                    agent_id: None,
                    lease_expires_at: None,
                    progress: None,
                    progress_message: None,
                    result: None,
                    last_error: None,
                    last_error_retryable: false,
                    retry_at: None,
                    reason: None,
                    created_at: at,
                    updated_at: at,
                }),
                _ => Err(refuse_event::<Task>(None, event)),
            };
        };
        match (task.status, event) {
            (S::Waiting | S::RetryScheduled, E::TaskQueued {}) => {
                task.status = S::Queued;
                task.retry_at = None;
            }
            (
                S::Queued,
                E::TaskAssigned {
                    agent_id,
                    lease_expires_at,
                },
            ) => {
                task.status = S::Assigned;
                task.agent_id = Some(*agent_id);
                task.lease_expires_at = Some(*lease_expires_at);
                task.attempts += 1;
                task.progress = None;
                task.progress_message = None;
            }
            (S::Assigned, E::TaskAccepted {}) => {
                task.status = S::Accepted;
                task.lease_expires_at = None;
            }
            (S::Assigned | S::Accepted, E::TaskStarted {}) => {
                task.status = S::Running;
                task.lease_expires_at = None;
            }
            (S::Running, E::TaskProgressed { percent, message }) => {
                task.progress = percent.or(task.progress);
                if message.is_some() {
                    task.progress_message = message.clone();
                }
            }
            (S::Running, E::TaskCompleted { result }) => {
                task.status = S::Completed;
                task.result = Some(result.clone());
                task.progress = Some(100);
            }
            (S::Assigned | S::Accepted | S::Running, E::TaskFailed { error, retryable }) => {
                task.status = S::Failed;
                task.last_error = Some(error.clone());
                task.last_error_retryable = *retryable;
                task.lease_expires_at = None;
            }
            (S::Failed, E::TaskRetryScheduled { retry_at }) => {
                task.status = S::RetryScheduled;
                task.retry_at = Some(*retry_at);
                task.agent_id = None;
            }
            (S::Assigned | S::Accepted | S::Running, E::TaskRequeued { reason }) => {
                task.status = S::Queued;
                task.agent_id = None;
                task.lease_expires_at = None;
                task.reason = Some(reason.clone());
            }
            (S::Failed | S::DeadLettered, E::TaskRetried {}) => {
                task.status = S::Queued;
                task.attempts = 0;
                task.agent_id = None;
                task.retry_at = None;
                task.reason = Some("retried".into());
            }
            (S::Failed, E::TaskDeadLettered { reason }) => {
                task.status = S::DeadLettered;
                task.reason = Some(reason.clone());
            }
            (s, E::TaskCancelled { reason }) if !s.is_final() => {
                task.status = S::Cancelled;
                task.lease_expires_at = None;
                task.reason = reason.clone();
            }
            (S::Waiting, E::TaskBlocked { reason }) => {
                task.status = S::Blocked;
                task.reason = Some(reason.clone());
            }
            _ => return Err(refuse_event(Some(&task), event)),
        }
        task.updated_at = at;
        Ok(task)
    }

    fn decide(state: Option<&Self>, command: TaskCommand) -> Result<TaskEvent, DomainError> {
        use TaskCommand as C;
        use TaskStatus as S;
        let Some(task) = state else {
            return match command {
                C::Create(new) => created(new),
                other => Err(refuse_command::<Task>(None, other.name())),
            };
        };
        let assignee = |agent_id: AgentId| {
            if task.agent_id == Some(agent_id) {
                Ok(())
            } else {
                Err(DomainError::NotAssignee)
            }
        };
        match (task.status, command) {
            (_, C::Create(_)) => Err(DomainError::AlreadyExists { aggregate: "task" }),
            (S::Waiting | S::RetryScheduled, C::Queue) => Ok(TaskEvent::TaskQueued {}),
            (
                S::Queued,
                C::Assign {
                    agent_id,
                    lease_expires_at,
                },
            ) => {
                if let Some(pinned) = task.pinned_agent
                    && pinned != agent_id
                {
                    return Err(DomainError::invalid(
                        "agent_id",
                        format!("the task is pinned to agent {pinned}"),
                    ));
                }
                Ok(TaskEvent::TaskAssigned {
                    agent_id,
                    lease_expires_at,
                })
            }
            (S::Assigned, C::Accept { agent_id }) => {
                assignee(agent_id)?;
                Ok(TaskEvent::TaskAccepted {})
            }
            (S::Assigned | S::Accepted, C::Start { agent_id }) => {
                assignee(agent_id)?;
                Ok(TaskEvent::TaskStarted {})
            }
            (
                S::Running,
                C::Progress {
                    agent_id,
                    percent,
                    message,
                },
            ) => {
                assignee(agent_id)?;
                if percent.is_some_and(|p| p > 100) {
                    return Err(DomainError::invalid("percent", "must be 0 to 100"));
                }
                if let Some(m) = &message {
                    check_text("message", m, 0, 2_000)?;
                }
                Ok(TaskEvent::TaskProgressed { percent, message })
            }
            (S::Running, C::Complete { agent_id, result }) => {
                assignee(agent_id)?;
                Ok(TaskEvent::TaskCompleted { result })
            }
            (
                S::Assigned | S::Accepted | S::Running,
                C::Fail {
                    agent_id,
                    error,
                    retryable,
                },
            ) => {
                assignee(agent_id)?;
                check_text("error", &error, 1, 10_000)?;
                Ok(TaskEvent::TaskFailed { error, retryable })
            }
            (S::Failed, C::ScheduleRetry { retry_at }) => {
                if !task.last_error_retryable {
                    return Err(DomainError::invalid(
                        "retry",
                        "the failure is not retryable",
                    ));
                }
                if task.attempts >= task.max_attempts {
                    return Err(DomainError::invalid(
                        "retry",
                        format!(
                            "attempts exhausted ({} of {})",
                            task.attempts, task.max_attempts
                        ),
                    ));
                }
                Ok(TaskEvent::TaskRetryScheduled { retry_at })
            }
            (S::Assigned | S::Accepted | S::Running, C::Requeue { reason }) => {
                check_text("reason", &reason, 1, 2_000)?;
                Ok(TaskEvent::TaskRequeued { reason })
            }
            (S::Assigned | S::Accepted | S::Running, C::Release { agent_id, reason }) => {
                assignee(agent_id)?;
                check_text("reason", &reason, 1, 2_000)?;
                Ok(TaskEvent::TaskRequeued { reason })
            }
            (S::Failed | S::DeadLettered, C::Retry) => Ok(TaskEvent::TaskRetried {}),
            (S::Failed, C::DeadLetter { reason }) => Ok(TaskEvent::TaskDeadLettered { reason }),
            (s, C::Cancel { reason }) if !s.is_final() => {
                if let Some(r) = &reason {
                    check_text("reason", r, 0, 2_000)?;
                }
                Ok(TaskEvent::TaskCancelled { reason })
            }
            (S::Waiting, C::Block { reason }) => Ok(TaskEvent::TaskBlocked { reason }),
            (_, command) => Err(refuse_command(state, command.name())),
        }
    }

    fn state_name(state: Option<&Self>) -> &'static str {
        state.map_or("absent", |t| t.status.as_str())
    }
}

#[cfg(test)]
mod tests;
