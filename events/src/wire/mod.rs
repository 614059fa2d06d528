//! The messages the parts exchange that are not events: the assignment the scheduler pushes to an
//! agent's runtime, and the reports and orders sent to a task or an agent through the API. The
//! scheduler, the API (whose OpenAPI schemas derive from these types, with the `openapi` feature) and
//! the runtime all use these, so the three can never disagree on a field. The API's error codes
//! ([`ErrorCode`]) are here too, so that its clients read the table the API answers from.

mod code;

pub use code::ErrorCode;

use serde::{Deserialize, Serialize};

use crate::error::DomainError;
use crate::ids::{AgentId, ProjectId, TaskId};
use crate::task::{Lifecycle, Task, TaskCommand, TaskEvent};
use crate::values::{Capability, Priority};

/// What an agent is told of a task assigned to it: the task as it was created, and which attempt this
/// is. Pushed as an `assignment` server-sent event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Assignment {
    /// The task.
    pub task_id: TaskId,
    /// The sequence of the assignment (or of the task's last event, when replayed on connect).
    pub seq: u64,
    /// A short title.
    pub title: String,
    /// What to do.
    pub description: Option<String>,
    /// A free-form kind.
    pub task_type: Option<String>,
    /// 1..=10.
    pub priority: Priority,
    /// What the agent must be able to do.
    pub required_capabilities: Vec<Capability>,
    /// The project it belongs to.
    pub project_id: Option<ProjectId>,
    /// Which attempt this is, from 1.
    pub attempt: u32,
    /// The flow the assignment belongs to: the agent's reports on the task send it as
    /// `X-Correlation-Id`, so everything the task causes is one flow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<uuid::Uuid>,
    /// The assignment's own event (its `TaskAssigned`): the agent's reports on the task send it as
    /// `X-Causation-Id`, so an audit of the flow shows what each report answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<uuid::Uuid>,
}

/// Where a command stands in a flow: the flow's id (`X-Correlation-Id`) and the event it answers
/// (`X-Causation-Id`), if known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    /// The flow.
    pub correlation_id: uuid::Uuid,
    /// The event that caused the command, if known.
    pub causation_id: Option<uuid::Uuid>,
}

impl Assignment {
    /// The assignment of the task created by `created` (its first event), as attempt `attempt`,
    /// appended at `seq`; `None` if `created` is not a creation.
    pub fn of_created(task_id: TaskId, created: TaskEvent, attempt: u32, seq: u64) -> Option<Self> {
        let TaskEvent::TaskCreated {
            title,
            description,
            task_type,
            priority,
            required_capabilities,
            project_id,
            ..
        } = created
        else {
            return None;
        };
        Some(Self {
            task_id,
            seq,
            title,
            description,
            task_type,
            priority,
            required_capabilities,
            project_id,
            attempt,
            correlation_id: None,
            causation_id: None,
        })
    }

    /// The same assignment, in the flow `correlation_id`, made by event `causation_id` (its
    /// `TaskAssigned`), if known.
    pub fn in_flow(mut self, correlation_id: uuid::Uuid, causation_id: Option<uuid::Uuid>) -> Self {
        self.correlation_id = Some(correlation_id);
        self.causation_id = causation_id;
        self
    }

    /// The flow the agent's reports on it join, and the assignment's event they answer.
    pub fn flow(&self) -> Option<Flow> {
        self.correlation_id.map(|correlation_id| Flow {
            correlation_id,
            causation_id: self.causation_id,
        })
    }
}

impl Assignment {
    /// The assignment of `task` (assigned now), its last event at `seq`.
    pub fn of_task(task_id: TaskId, task: &Task, seq: u64) -> Self {
        let (life, details) = (&task.lifecycle, &task.details);
        Self {
            task_id,
            seq,
            title: details.title.clone(),
            description: details.description.clone(),
            task_type: details.task_type.clone(),
            priority: life.priority,
            required_capabilities: life.required_capabilities.clone(),
            project_id: details.project_id,
            attempt: life.attempts,
            correlation_id: None,
            causation_id: None,
        }
    }
}

/// An order to an agent's runtime to stop working on a task that was taken from it (cancelled, timed
/// out, requeued): its executor's process group gets SIGTERM, then SIGKILL after `grace_secs`. Pushed as
/// a `stop` server-sent event on the agent's assignment stream; a runtime not running that attempt of
/// the task ignores it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Stop {
    /// The task.
    pub task_id: TaskId,
    /// The attempt to stop (an earlier stop never stops a later attempt).
    pub attempt: u32,
    /// Why.
    pub reason: StopReason,
    /// Seconds between SIGTERM and SIGKILL (the task's `cancel_grace_secs`).
    pub grace_secs: u32,
}

/// Why a runtime is told to stop a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// It was cancelled.
    Cancelled,
    /// It passed a time limit.
    TimedOut,
    /// It was taken from the agent and queued again.
    Requeued,
}

impl Stop {
    /// The stop `event` calls for, given the task's lifecycle before it, and the agent it is for
    /// ([`Lifecycle::stop_for`]).
    pub fn after(
        task_id: TaskId,
        before: &Lifecycle,
        event: &TaskEvent,
    ) -> Option<(AgentId, Self)> {
        let (agent, attempt) = before.stop_for(event)?;
        let reason = match event {
            TaskEvent::TaskCancelled { .. } => StopReason::Cancelled,
            TaskEvent::TaskTimedOut { .. } => StopReason::TimedOut,
            _ => StopReason::Requeued,
        };
        let stop = Self {
            task_id,
            attempt,
            reason,
            grace_secs: before.limits.cancel_grace_secs,
        };
        Some((agent, stop))
    }
}

/// What the assignment stream pushes to an agent's runtime.
#[derive(Clone, Debug, PartialEq)]
pub enum Push {
    /// A task to work on (a server-sent event `assignment`).
    Assignment(Assignment),
    /// A task to stop working on (a server-sent event `stop`).
    Stop(Stop),
}

impl Push {
    /// The server-sent event name of a stop (an assignment's is `assignment`), also the value of the
    /// `Hive-Push` header of a stop on the agent's NATS subject.
    pub const STOP: &'static str = "stop";
}

/// What can be done to a task through `POST /api/v1/tasks/{id}/{action}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TaskAction {
    /// The assigned agent accepts it.
    Accept,
    /// The assigned agent starts it.
    Start,
    /// The assigned agent reports progress (`percent`, `message`).
    Progress,
    /// The assigned agent finished it (`result`).
    Complete,
    /// The assigned agent failed it (`error`, `retryable`).
    Fail,
    /// The assigned agent gives it back undone (`reason`).
    Release,
    /// An operator takes it from its agent and queues it again (`reason`).
    Requeue,
    /// An operator cancels it (`reason`).
    Cancel,
    /// An operator gives a dead-lettered task another round of attempts.
    Retry,
}

impl TaskAction {
    /// Every action.
    pub const ALL: [TaskAction; 9] = [
        Self::Accept,
        Self::Start,
        Self::Progress,
        Self::Complete,
        Self::Fail,
        Self::Release,
        Self::Requeue,
        Self::Cancel,
        Self::Retry,
    ];

    /// Its name in the path.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Accept => "accept",
            Self::Start => "start",
            Self::Progress => "progress",
            Self::Complete => "complete",
            Self::Fail => "fail",
            Self::Release => "release",
            Self::Requeue => "requeue",
            Self::Cancel => "cancel",
            Self::Retry => "retry",
        }
    }

    /// The action with this name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }

    /// Whether it is the assigned agent's report on its own work (the only actions an agent's token
    /// may take), rather than an operator's order.
    pub const fn by_assignee(self) -> bool {
        matches!(
            self,
            Self::Accept
                | Self::Start
                | Self::Progress
                | Self::Complete
                | Self::Fail
                | Self::Release
        )
    }
}

/// The body of a task action: each action reads the fields it needs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Report {
    /// The reporting agent (an agent's own token names it; an operator's names it here or in the
    /// `Hive-Agent-Id` header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<AgentId>,
    /// `progress`: percent done, 0..=100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u8>,
    /// `progress`: a line of progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `complete`: what the task produced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub result: Option<serde_json::Value>,
    /// `fail`: what went wrong (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `fail`: whether another attempt may succeed (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
    /// `release`, `requeue`, `cancel`: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The agent's reports: the attempt the report is about (its assignment's `attempt`). Once that
    /// attempt is over (the task was taken back and assigned again), the report is refused
    /// (`not_assignee`), so that a late report never acts on a later attempt. Optional: without it,
    /// the report is about whichever attempt is current.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
}

impl Report {
    /// The command `action` with this report orders, for the agent `reporter` where the action is the
    /// assignee's.
    pub fn command(
        self,
        action: TaskAction,
        reporter: impl FnOnce() -> Result<AgentId, DomainError>,
    ) -> Result<TaskCommand, DomainError> {
        use TaskAction as A;
        let attempt = self.attempt.filter(|_| action.by_assignee());
        let command = match action {
            A::Accept => TaskCommand::Accept {
                agent_id: reporter()?,
            },
            A::Start => TaskCommand::Start {
                agent_id: reporter()?,
            },
            A::Progress => TaskCommand::Progress {
                agent_id: reporter()?,
                percent: self.percent,
                message: self.message,
            },
            A::Complete => TaskCommand::Complete {
                agent_id: reporter()?,
                result: self.result.unwrap_or(serde_json::Value::Null),
            },
            A::Fail => TaskCommand::Fail {
                agent_id: reporter()?,
                error: self
                    .error
                    .ok_or_else(|| DomainError::invalid("error", "required: what went wrong"))?,
                retryable: self.retryable.unwrap_or(true),
            },
            A::Release => TaskCommand::Release {
                agent_id: reporter()?,
                reason: self.reason.unwrap_or_else(|| "released".into()),
            },
            A::Requeue => TaskCommand::Requeue {
                reason: self.reason.unwrap_or_else(|| "requeued".into()),
            },
            A::Cancel => TaskCommand::Cancel {
                reason: self.reason,
                by: None,
            },
            A::Retry => TaskCommand::Retry,
        };
        Ok(match attempt {
            Some(attempt) => TaskCommand::InAttempt {
                attempt,
                report: Box::new(command),
            },
            None => command,
        })
    }
}

/// What can be done to an agent through `POST /api/v1/agents/{id}/{action}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AgentAction {
    /// Its runtime is alive (not an event: it goes to the heartbeats bucket).
    Heartbeat,
    /// It takes no more work.
    Drain,
    /// It is gone for good (`reason`).
    Deregister,
}

impl AgentAction {
    /// Every action.
    pub const ALL: [AgentAction; 3] = [Self::Heartbeat, Self::Drain, Self::Deregister];

    /// Its name in the path.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Heartbeat => "heartbeat",
            Self::Drain => "drain",
            Self::Deregister => "deregister",
        }
    }

    /// The action with this name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_round_trip_their_names_and_only_reports_are_the_assignees() {
        for action in TaskAction::ALL {
            assert_eq!(TaskAction::parse(action.as_str()), Some(action));
            let json = serde_json::to_value(action).unwrap();
            assert_eq!(json, action.as_str());
        }
        for action in AgentAction::ALL {
            assert_eq!(AgentAction::parse(action.as_str()), Some(action));
        }
        let by_agent: Vec<_> = TaskAction::ALL
            .into_iter()
            .filter(|a| a.by_assignee())
            .collect();
        assert_eq!(by_agent.len(), 6);
        assert!(!TaskAction::Cancel.by_assignee());
    }

    #[test]
    fn a_report_becomes_its_command() {
        let agent = AgentId::new();
        let fail = Report {
            error: Some("exit 1".into()),
            ..Report::default()
        };
        assert_eq!(
            fail.command(TaskAction::Fail, || Ok(agent)),
            Ok(TaskCommand::Fail {
                agent_id: agent,
                error: "exit 1".into(),
                retryable: true
            })
        );
        let missing = Report::default().command(TaskAction::Fail, || Ok(agent));
        assert!(matches!(
            missing,
            Err(DomainError::Invalid { field: "error", .. })
        ));
        let nobody = || Err(DomainError::invalid("agent_id", "required"));
        assert_eq!(
            Report::default().command(TaskAction::Cancel, nobody),
            Ok(TaskCommand::Cancel {
                reason: None,
                by: None
            })
        );
        assert!(
            Report::default()
                .command(TaskAction::Start, nobody)
                .is_err()
        );
    }

    #[test]
    fn an_assignment_reads_the_creation_and_round_trips() {
        let created = TaskEvent::TaskCreated {
            title: "build".into(),
            description: None,
            task_type: None,
            priority: Priority::NORMAL,
            required_capabilities: vec![Capability::new("rust").unwrap()],
            depends_on: vec![],
            waiting_on: vec![],
            project_id: None,
            pinned_agent: None,
            max_attempts: 1,
            labels: Default::default(),
            not_before: None,
            limits: Default::default(),
        };
        let task = TaskId::new();
        let assignment = Assignment::of_created(task, created, 2, 9).unwrap();
        assert_eq!((assignment.attempt, assignment.seq), (2, 9));
        let json = serde_json::to_string(&assignment).unwrap();
        assert_eq!(
            serde_json::from_str::<Assignment>(&json).unwrap(),
            assignment
        );
        assert!(Assignment::of_created(task, TaskEvent::TaskQueued {}, 1, 1).is_none());
    }
}
