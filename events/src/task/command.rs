//! Orders to a task, and the checks of a new one.

use chrono::{DateTime, Utc};

use super::TaskEvent;
use super::limits::{Limits, TimeLimit};
use crate::aggregate::check_text;
use crate::error::DomainError;
use crate::ids::{AgentId, ProjectId, TaskId};
use crate::labels::Labels;
use crate::values::{Priority, capability_set};

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
    /// Those of `depends_on` not completed now (an outside fact the caller looked up, with
    /// [`super::rules::waiting_on`]).
    pub waiting_on: Vec<TaskId>,
    /// The project it belongs to.
    pub project_id: Option<ProjectId>,
    /// The only agent that may take it.
    pub pinned_agent: Option<AgentId>,
    /// Attempts before it is dead-lettered, 1..=100.
    pub max_attempts: u32,
    /// What it is about, searchable.
    pub labels: Labels,
    /// Not queued before this time.
    pub not_before: Option<DateTime<Utc>>,
    /// How long a run may take, and how its executor is stopped.
    pub limits: Limits,
}

impl NewTask {
    /// How many attempts a task gets when its creator names no number.
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

    /// A task with only a title: normal priority, no capabilities, no dependencies, no project, the
    /// default attempts. Set the other fields on it as needed.
    pub fn titled(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            description: None,
            task_type: None,
            priority: Priority::NORMAL,
            required_capabilities: Vec::new(),
            depends_on: Vec::new(),
            waiting_on: Vec::new(),
            project_id: None,
            pinned_agent: None,
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
            labels: Labels::default(),
            not_before: None,
            limits: Limits::default(),
        }
    }
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
        /// Who cancels it (the command's actor).
        by: Option<String>,
    },
    /// Fail a running task that passed one of its time limits (the scheduler's call).
    TimeOut {
        /// Which limit it passed.
        limit: TimeLimit,
    },
    /// Mark it as unable to run while a dependency cannot complete.
    Block {
        /// Why.
        reason: String,
    },
    /// Let a blocked task wait on its dependencies again: none of them is stuck any more.
    Unblock,
    /// A report of the assigned agent (accept, start, progress, complete, fail, release) about one
    /// attempt: refused once that attempt is over (the task was taken back and assigned again), so
    /// that a late report of an earlier attempt (a runtime sending again a report whose answer it
    /// lost) never acts on a later one.
    InAttempt {
        /// The attempt, as its assignment numbered it (1 for the first).
        attempt: u32,
        /// The report.
        report: Box<TaskCommand>,
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
            Self::TimeOut { .. } => "time out",
            Self::Block { .. } => "block",
            Self::Unblock => "unblock",
            Self::InAttempt { report, .. } => report.name(),
        }
    }
}

/// The event that creates `new`, or why it cannot be created.
pub(super) fn created(new: NewTask) -> Result<TaskEvent, DomainError> {
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
    new.limits.check()?;
    if let Some(at) = &new.not_before
        && !crate::values::storable_time(at)
    {
        return Err(DomainError::invalid(
            "not_before",
            format!("{at} is before 4712 BC, which the read models cannot hold"),
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
        labels: new.labels,
        not_before: new.not_before,
        limits: new.limits,
    })
}
