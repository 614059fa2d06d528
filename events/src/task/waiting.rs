//! Why a task is not running: the domain's answer, from what the task's lifecycle says and what the
//! caller knows of its dependencies and of the agents that could take it. The API answers it with
//! every task (`waiting_reason`), and the dashboard shows it.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::rules::Dependency;
use super::{Lifecycle, TaskStatus};
use crate::agent::AgentStatus;
use crate::ids::{AgentId, TaskId};
use crate::values::Capability;

/// Why a task is not running, with the facts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum WaitingReason {
    /// Its dependencies have not all completed: these are still open.
    WaitingOn {
        /// The open dependencies.
        tasks: Vec<TaskId>,
    },
    /// It is not to be queued before this time.
    NotBefore {
        /// When it is queued.
        at: DateTime<Utc>,
    },
    /// A dependency cannot complete (cancelled, dead-lettered, blocked): it cannot run until an
    /// operator retries that dependency.
    BlockedBy {
        /// The dependency.
        task: TaskId,
        /// Its status.
        status: TaskStatus,
    },
    /// Its last attempt failed; another is queued at this time.
    RetryAt {
        /// When.
        at: DateTime<Utc>,
    },
    /// Its last attempt failed; the scheduler is deciding its retry or its dead-lettering.
    Failed {},
    /// Failed for good: only an operator's retry runs it again.
    DeadLettered {},
    /// Pinned to an agent that takes no work now (or is unknown).
    PinnedAgentUnavailable {
        /// The agent.
        agent: AgentId,
        /// Its status, if known.
        status: Option<AgentStatus>,
    },
    /// No live agent has every capability it requires.
    NoCapableAgent {
        /// What it requires.
        capabilities: Vec<Capability>,
    },
    /// Every live agent that could take it is full.
    AgentsFull {
        /// How many could take it.
        matching: u32,
    },
    /// An agent has room for it: the scheduler is assigning it now.
    Assigning {},
    /// Leased to an agent that has not started it yet.
    AwaitingAgent {
        /// The agent.
        agent: AgentId,
        /// When the lease lapses unless it starts the task.
        lease_expires_at: Option<DateTime<Utc>>,
    },
}

/// A live agent as the question needs it.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// The agent.
    pub id: AgentId,
    /// Its status.
    pub status: AgentStatus,
    /// What it can do.
    pub capabilities: Vec<Capability>,
    /// Whether it has room for one more task.
    pub has_room: bool,
}

impl Lifecycle {
    /// Why the task is not running (`None` when it runs or is over: completed or cancelled).
    /// `dependency` gives each dependency's status; `agents` are the agents known now with their room.
    pub fn waiting_reason(
        &self,
        now: DateTime<Utc>,
        dependency: impl Fn(TaskId) -> TaskStatus,
        agents: &[Candidate],
    ) -> Option<WaitingReason> {
        use TaskStatus as S;
        Some(match self.status {
            S::Running | S::Completed | S::Cancelled => return None,
            S::Waiting | S::Blocked => {
                let mut open = Vec::new();
                for &task in &self.depends_on {
                    match Dependency::of(dependency(task)) {
                        Dependency::Stuck(status) => {
                            return Some(WaitingReason::BlockedBy { task, status });
                        }
                        Dependency::Pending => open.push(task),
                        Dependency::Done => {}
                    }
                }
                match self.not_before {
                    _ if !open.is_empty() => WaitingReason::WaitingOn { tasks: open },
                    Some(at) if at > now => WaitingReason::NotBefore { at },
                    // Settled: the scheduler queues (or unblocks) it now.
                    _ => WaitingReason::Assigning {},
                }
            }
            S::RetryScheduled => match self.retry_at {
                Some(at) => WaitingReason::RetryAt { at },
                None => WaitingReason::Failed {},
            },
            S::Failed => WaitingReason::Failed {},
            S::DeadLettered => WaitingReason::DeadLettered {},
            S::Assigned | S::Accepted => WaitingReason::AwaitingAgent {
                agent: self.agent_id?,
                lease_expires_at: self.lease_expires_at,
            },
            S::Queued => self.why_queued(agents),
        })
    }

    /// Why a queued task has no agent yet.
    fn why_queued(&self, agents: &[Candidate]) -> WaitingReason {
        if let Some(pinned) = self.pinned_agent {
            let agent = agents.iter().find(|a| a.id == pinned);
            return match agent {
                Some(a) if a.status == AgentStatus::Ready && !a.has_room => {
                    WaitingReason::AgentsFull { matching: 1 }
                }
                Some(a) if a.status == AgentStatus::Ready => WaitingReason::Assigning {},
                _ => WaitingReason::PinnedAgentUnavailable {
                    agent: pinned,
                    status: agent.map(|a| a.status),
                },
            };
        }
        let matching: Vec<&Candidate> = agents
            .iter()
            .filter(|a| {
                a.status == AgentStatus::Ready && self.can_be_taken_by(a.id, &a.capabilities)
            })
            .collect();
        if matching.is_empty() {
            WaitingReason::NoCapableAgent {
                capabilities: self.required_capabilities.clone(),
            }
        } else if matching.iter().all(|a| !a.has_room) {
            WaitingReason::AgentsFull {
                matching: u32::try_from(matching.len()).unwrap_or(u32::MAX),
            }
        } else {
            WaitingReason::Assigning {}
        }
    }
}
