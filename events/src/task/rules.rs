//! The questions every consumer asks about a task, answered once: what follows a failure, what a new
//! task waits on, whether an agent may take it, and what is due for it now.
//!
//! The scheduler calls [`Lifecycle::due`] for each open task and appends what it answers; it keeps only
//! the indexes (the queue, each agent's load) and the matching of tasks to agents.

use chrono::{DateTime, Utc};

use super::{Lifecycle, TaskCommand, TaskEvent, TaskStatus};
use crate::agent::AgentStatus;
use crate::error::DomainError;
use crate::ids::{AgentId, TaskId};
use crate::policy::Policy;
use crate::values::Capability;

/// What follows a failed attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AfterFailure {
    /// Another attempt, after a back-off.
    Retry,
    /// No more attempts: the task is dead-lettered, for this reason.
    DeadLetter {
        /// Why no attempt follows.
        reason: String,
    },
}

/// What a dependency means to a task that depends on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dependency {
    /// It completed.
    Done,
    /// It may still complete.
    Pending,
    /// It cannot complete as things stand (cancelled, dead-lettered, blocked).
    Stuck(TaskStatus),
}

impl Dependency {
    /// What a dependency in `status` means.
    pub const fn of(status: TaskStatus) -> Self {
        match status {
            TaskStatus::Completed => Self::Done,
            s if s.can_never_complete() => Self::Stuck(s),
            _ => Self::Pending,
        }
    }
}

/// Which of a new task's dependencies it waits on, given each one's status (`None`: no such task).
/// A missing dependency, or one that cannot complete, is refused: a task created on it could never
/// run.
pub fn waiting_on(
    dependencies: impl IntoIterator<Item = (TaskId, Option<TaskStatus>)>,
) -> Result<Vec<TaskId>, DomainError> {
    let mut waiting = Vec::new();
    for (id, status) in dependencies {
        match status.map(Dependency::of) {
            None => {
                return Err(DomainError::invalid(
                    "depends_on",
                    format!("task {id} does not exist"),
                ));
            }
            Some(Dependency::Stuck(s)) => {
                return Err(DomainError::invalid(
                    "depends_on",
                    format!("task {id} is {} and cannot complete", s.as_str()),
                ));
            }
            Some(Dependency::Done) => {}
            Some(Dependency::Pending) => waiting.push(id),
        }
    }
    Ok(waiting)
}

impl Lifecycle {
    /// What follows the failure of a failed task (`None` for a task that is not failed): a retry while
    /// the failure is retryable and attempts remain, the dead-letter queue otherwise.
    pub fn after_failure(&self) -> Option<AfterFailure> {
        if self.status != TaskStatus::Failed {
            return None;
        }
        Some(if !self.last_error_retryable {
            AfterFailure::DeadLetter {
                reason: "the failure is not retryable".into(),
            }
        } else if self.attempts >= self.max_attempts {
            AfterFailure::DeadLetter {
                reason: format!(
                    "attempts exhausted ({} of {})",
                    self.attempts, self.max_attempts
                ),
            }
        } else {
            AfterFailure::Retry
        })
    }

    /// The agent the task holds, if it holds one (see [`TaskStatus::holds_agent`]).
    pub fn holder(&self) -> Option<AgentId> {
        self.agent_id.filter(|_| self.status.holds_agent())
    }

    /// What [`Lifecycle::can_be_taken_by`] reads of the task: two tasks with the same can be taken
    /// by the same agents.
    pub fn takers(&self) -> (Option<AgentId>, &[Capability]) {
        (self.pinned_agent, &self.required_capabilities)
    }

    /// Whether an agent with `capabilities` may take the task: it has every required one, and the task
    /// is not pinned to another agent.
    pub fn can_be_taken_by(&self, agent: AgentId, capabilities: &[Capability]) -> bool {
        self.pinned_agent.is_none_or(|p| p == agent)
            && self
                .required_capabilities
                .iter()
                .all(|c| capabilities.contains(c))
    }

    /// The command due for the task now, other than an assignment: the follow-up of a failure, a
    /// back-off that is over, its dependencies settled either way, its agent lost or gone, its lease
    /// lapsed. `holder` is the status of the agent holding it (if known); `dependency` gives each
    /// dependency's status (a completed one that the caller no longer tracks is `Completed`);
    /// `jitter` (0..1) is drawn only when a back-off is decided.
    pub fn due(
        &self,
        now: DateTime<Utc>,
        policy: &Policy,
        holder: Option<AgentStatus>,
        dependency: impl Fn(TaskId) -> TaskStatus,
        jitter: impl FnOnce() -> f64,
    ) -> Option<TaskCommand> {
        use TaskStatus as S;
        match self.status {
            S::Failed => Some(match self.after_failure()? {
                AfterFailure::Retry => TaskCommand::ScheduleRetry {
                    retry_at: now + policy.backoff(self.attempts, jitter()),
                },
                AfterFailure::DeadLetter { reason } => TaskCommand::DeadLetter { reason },
            }),
            S::RetryScheduled if self.retry_at.is_none_or(|at| at <= now) => {
                Some(TaskCommand::Queue)
            }
            S::Waiting => {
                let mut all_done = true;
                for &dep in &self.depends_on {
                    match Dependency::of(dependency(dep)) {
                        Dependency::Stuck(s) => {
                            return Some(TaskCommand::Block {
                                reason: format!("dependency {dep} is {}", s.as_str()),
                            });
                        }
                        Dependency::Pending => all_done = false,
                        Dependency::Done => {}
                    }
                }
                let time_come = self.not_before.is_none_or(|at| at <= now);
                (all_done && time_come).then_some(TaskCommand::Queue)
            }
            S::Blocked => {
                let stuck = self
                    .depends_on
                    .iter()
                    .any(|&dep| matches!(Dependency::of(dependency(dep)), Dependency::Stuck(_)));
                (!stuck).then_some(TaskCommand::Unblock)
            }
            s if s.holds_agent() && holder == Some(AgentStatus::Lost) => {
                Some(TaskCommand::Requeue {
                    reason: "agent_lost".into(),
                })
            }
            s if s.holds_agent() && holder == Some(AgentStatus::Deregistered) => {
                Some(TaskCommand::Requeue {
                    reason: "agent_deregistered".into(),
                })
            }
            S::Assigned if self.lease_expires_at.is_some_and(|at| at <= now) => {
                Some(TaskCommand::Requeue {
                    reason: "lease_expired".into(),
                })
            }
            S::Running => match self.limit_passed() {
                Some((at, limit)) if at <= now => Some(TaskCommand::TimeOut { limit }),
                _ => None,
            },
            _ => None,
        }
    }

    /// When the running task passes its first time limit, and which (`None` when it is not running or
    /// has no limit).
    fn limit_passed(&self) -> Option<(DateTime<Utc>, super::TimeLimit)> {
        let (started_at, heard_at) = self.started_at.zip(self.heard_at)?;
        (self.status == TaskStatus::Running)
            .then(|| self.limits.next_passed(started_at, heard_at))
            .flatten()
    }

    /// The agent to tell to stop working on the task when `event` follows (and which attempt): the
    /// task's holder, when the event takes the task from it without its word (cancelled, timed out,
    /// requeued). Its runtime stops the executor, SIGTERM then SIGKILL after
    /// [`super::Limits::cancel_grace_secs`].
    pub fn stop_for(&self, event: &TaskEvent) -> Option<(AgentId, u32)> {
        let takes = matches!(
            event,
            TaskEvent::TaskCancelled { .. }
                | TaskEvent::TaskTimedOut { .. }
                | TaskEvent::TaskRequeued { .. }
        );
        self.holder()
            .filter(|_| takes)
            .map(|agent| (agent, self.attempts))
    }

    /// Whether what is due for the task hangs on its dependencies' states (it waits for them, or one
    /// blocks it): a follower of the log decides it again when one of them changes.
    pub fn waits_on_dependencies(&self) -> bool {
        matches!(self.status, TaskStatus::Waiting | TaskStatus::Blocked)
            && !self.depends_on.is_empty()
    }

    /// The moment something may fall due for the task without another event, past or not: its
    /// back-off ends, its lease lapses, its `not_before` comes, it passes a time limit. Fixed until
    /// the task's next event, so a scheduler can keep it in a timer index.
    pub fn due_at(&self) -> Option<DateTime<Utc>> {
        match self.status {
            TaskStatus::RetryScheduled => self.retry_at,
            TaskStatus::Assigned => self.lease_expires_at,
            TaskStatus::Waiting => self.not_before,
            TaskStatus::Running => self.limit_passed().map(|(at, _)| at),
            _ => None,
        }
    }

    /// The next moment after `now` something may fall due for the task without another event (see
    /// [`Lifecycle::due_at`]; a moment already past is not one: what it made due was decided when it
    /// came).
    pub fn deadline(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.due_at().filter(|at| *at > now)
    }
}
