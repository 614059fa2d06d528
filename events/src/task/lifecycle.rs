//! What the rules of a task read, its fold and its transition table.

use chrono::{DateTime, Utc};

use super::command::created;
use super::limits::Limits;
use super::rules::AfterFailure;
use super::{TaskCommand, TaskEvent, TaskStatus};
use crate::aggregate::{Aggregate, AggregateKind, check_text, refuse_command, refuse_event};
use crate::error::{DomainError, FoldError};
use crate::ids::{AgentId, TaskId};
use crate::values::{Capability, Priority};

/// A task as its rules see it: its status and everything a decision reads. A task's title,
/// description and reports are in [`super::Details`].
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Lifecycle {
    /// Where it is in its life.
    pub status: TaskStatus,
    /// 1..=10, higher first.
    pub priority: Priority,
    /// What an agent must be able to do to take it.
    pub required_capabilities: Vec<Capability>,
    /// Tasks that must complete first.
    pub depends_on: Vec<TaskId>,
    /// The only agent that may take it, if pinned.
    pub pinned_agent: Option<AgentId>,
    /// How many attempts before it is dead-lettered.
    pub max_attempts: u32,
    /// How many times it has been assigned.
    pub attempts: u32,
    /// The agent holding it (assigned or running), or that held it last.
    pub agent_id: Option<AgentId>,
    /// When the current assignment's lease lapses.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Whether the last failure may be retried.
    pub last_error_retryable: bool,
    /// When a scheduled retry is due.
    pub retry_at: Option<DateTime<Utc>>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When its last event happened.
    pub updated_at: DateTime<Utc>,
    /// Not queued before this time.
    pub not_before: Option<DateTime<Utc>>,
    /// How long a run may take, and how its executor is stopped.
    pub limits: Limits,
    /// When the current run started.
    pub started_at: Option<DateTime<Utc>>,
    /// When its agent last reported on the current run (its start, or progress).
    pub heard_at: Option<DateTime<Utc>>,
}

impl Aggregate for Lifecycle {
    type Event = TaskEvent;
    type Command = TaskCommand;
    const KIND: AggregateKind = AggregateKind::Task;
    const STATE: &'static str = "lifecycle";

    fn apply(state: Option<Self>, event: &TaskEvent, at: DateTime<Utc>) -> Result<Self, FoldError> {
        use TaskEvent as E;
        use TaskStatus as S;
        let Some(mut task) = state else {
            return match event {
                E::TaskCreated {
                    priority,
                    required_capabilities,
                    depends_on,
                    pinned_agent,
                    max_attempts,
                    not_before,
                    limits,
                    ..
                } => Ok(Lifecycle {
                    status: event.status_after(),
                    priority: *priority,
                    required_capabilities: required_capabilities.clone(),
                    depends_on: depends_on.clone(),
                    pinned_agent: *pinned_agent,
                    max_attempts: *max_attempts,
                    attempts: 0,
                    agent_id: None,
                    lease_expires_at: None,
                    last_error_retryable: false,
                    retry_at: None,
                    created_at: at,
                    updated_at: at,
                    not_before: *not_before,
                    limits: limits.clone(),
                    started_at: None,
                    heard_at: None,
                }),
                _ => Err(refuse_event::<Lifecycle>(None, event)),
            };
        };
        // Which event may follow which status; the status it leads to is the event's own
        // (`status_after`), so the two can never disagree.
        match (task.status, event) {
            (S::Waiting | S::RetryScheduled, E::TaskQueued {}) => task.retry_at = None,
            (
                S::Queued,
                E::TaskAssigned {
                    agent_id,
                    lease_expires_at,
                },
            ) => {
                task.agent_id = Some(*agent_id);
                task.lease_expires_at = Some(*lease_expires_at);
                task.attempts += 1;
                (task.started_at, task.heard_at) = (None, None);
            }
            (S::Assigned, E::TaskAccepted {}) => task.lease_expires_at = None,
            (S::Assigned | S::Accepted, E::TaskStarted {}) => {
                task.lease_expires_at = None;
                (task.started_at, task.heard_at) = (Some(at), Some(at));
            }
            (S::Running, E::TaskProgressed { .. }) => task.heard_at = Some(at),
            (S::Running, E::TaskCompleted { .. }) => {}
            (S::Running, E::TaskTimedOut { .. }) => task.last_error_retryable = true,
            (S::Assigned | S::Accepted | S::Running, E::TaskFailed { retryable, .. }) => {
                task.last_error_retryable = *retryable;
                task.lease_expires_at = None;
            }
            (S::Failed, E::TaskRetryScheduled { retry_at }) => {
                task.retry_at = Some(*retry_at);
                task.agent_id = None;
            }
            (S::Assigned | S::Accepted | S::Running, E::TaskRequeued { .. }) => {
                task.agent_id = None;
                task.lease_expires_at = None;
            }
            (S::Failed | S::DeadLettered, E::TaskRetried {}) => {
                task.attempts = 0;
                task.agent_id = None;
                task.retry_at = None;
            }
            (S::Failed, E::TaskDeadLettered { .. })
            | (S::Waiting, E::TaskBlocked { .. })
            | (S::Blocked, E::TaskUnblocked {}) => {}
            (s, E::TaskCancelled { .. }) if !s.is_final() => task.lease_expires_at = None,
            _ => return Err(refuse_event(Some(&task), event)),
        }
        task.status = event.status_after();
        task.updated_at = at;
        Ok(task)
    }

    fn decide(state: Option<&Self>, command: TaskCommand) -> Result<TaskEvent, DomainError> {
        use TaskCommand as C;
        use TaskStatus as S;
        let Some(task) = state else {
            return match command {
                C::Create(new) => created(new),
                other => Err(refuse_command::<Lifecycle>(None, other.name())),
            };
        };
        if let C::InAttempt { attempt, report } = command {
            if attempt != task.attempts {
                return Err(DomainError::AttemptOver {
                    attempt,
                    current: task.attempts,
                });
            }
            return Self::decide(state, *report);
        }
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
            (S::Failed, C::ScheduleRetry { retry_at }) => match task.after_failure() {
                Some(AfterFailure::DeadLetter { reason }) => {
                    Err(DomainError::invalid("retry", reason))
                }
                _ => Ok(TaskEvent::TaskRetryScheduled { retry_at }),
            },
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
            (s, C::Cancel { reason, by }) if !s.is_final() => {
                if let Some(r) = &reason {
                    check_text("reason", r, 0, 2_000)?;
                }
                Ok(TaskEvent::TaskCancelled {
                    reason,
                    cancelled_by: by,
                })
            }
            (S::Running, C::TimeOut { limit }) => match task.limits.of(limit) {
                Some(after_secs) => Ok(TaskEvent::TaskTimedOut { limit, after_secs }),
                None => Err(DomainError::invalid(
                    "limit",
                    "the task has no such time limit",
                )),
            },
            (S::Waiting, C::Block { reason }) => Ok(TaskEvent::TaskBlocked { reason }),
            (S::Blocked, C::Unblock) => Ok(TaskEvent::TaskUnblocked {}),
            (_, command) => Err(refuse_command(state, command.name())),
        }
    }

    fn state_name(state: Option<&Self>) -> &'static str {
        state.map_or("absent", |t| t.status.as_str())
    }
}
