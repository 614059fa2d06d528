//! The agent aggregate: a worker that advertises capabilities and runs tasks.
//!
//! ```text
//! registered ──ready──▶ ready ──lost──▶ lost ──recovered──▶ ready (draining, if it had begun to drain)
//!     │  │                │  ▲            │ ▲
//!     │  └──────lost──────┼──┼────────────┘ │
//!     │                   ▼  │              │
//!     └──────────────▶ draining ──lost──────┘
//! deregistered: from every state but deregistered.
//! ```
//! Whether a ready agent is busy is derived from its load, not stored as a state. An agent that began
//! to drain stays draining through a loss: [`Agent::draining`] survives it, and recovery brings the
//! agent back draining, never ready.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::aggregate::{
    Aggregate, AggregateKind, EventSchema, check_text, refuse_command, refuse_event,
};
use crate::error::{DomainError, FoldError};
use crate::labels::Labels;
use crate::policy::Policy;
use crate::values::{Capability, capability_set};

/// Where an agent is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    /// Known, but its runtime has not reported in yet.
    Registered,
    /// Heartbeating and taking work.
    Ready,
    /// Its heartbeats lapsed.
    Lost,
    /// Finishing its work, taking no more.
    Draining,
    /// Gone for good.
    Deregistered,
}

impl AgentStatus {
    /// Every status.
    pub const ALL: [AgentStatus; 5] = [
        Self::Registered,
        Self::Ready,
        Self::Lost,
        Self::Draining,
        Self::Deregistered,
    ];

    /// The stored name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Registered => "registered",
            Self::Ready => "ready",
            Self::Lost => "lost",
            Self::Draining => "draining",
            Self::Deregistered => "deregistered",
        }
    }

    /// The status with this stored name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// An agent's state, folded from its events. Serialized only in snapshots ([`crate::aggregate::FOLD_VERSION`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    /// A human name, if given.
    pub name: Option<String>,
    /// What kind of agent (e.g. `claude-code`, `worker`).
    pub agent_type: String,
    /// What it can do, sorted.
    pub capabilities: Vec<Capability>,
    /// How many tasks it runs at once.
    pub max_concurrent_tasks: u32,
    /// Where it is in its life.
    pub status: AgentStatus,
    /// Whether it began to drain: it takes no more work, even after it was lost and came back.
    pub draining: bool,
    /// When it registered.
    pub registered_at: DateTime<Utc>,
    /// When its last event happened.
    pub updated_at: DateTime<Utc>,
    /// What it is about (the rules never read them).
    #[serde(default)]
    pub labels: Labels,
}

/// The facts of an agent's life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum AgentEvent {
    /// An agent was registered.
    AgentRegistered {
        /// A human name, if given.
        name: Option<String>,
        /// What kind of agent.
        agent_type: String,
        /// What it can do.
        capabilities: Vec<Capability>,
        /// How many tasks it runs at once.
        max_concurrent_tasks: u32,
        /// What it is about (schema version 2).
        #[serde(default)]
        labels: Labels,
    },
    /// Its runtime reported in for the first time.
    AgentReady {},
    /// Its heartbeats lapsed.
    AgentLost {
        /// Why it is considered lost.
        reason: String,
    },
    /// A lost agent heartbeated again.
    AgentRecovered {},
    /// It takes no more work and finishes what it has.
    AgentDraining {},
    /// It is gone for good.
    AgentDeregistered {
        /// Why, if said.
        reason: Option<String>,
    },
}

impl AgentEvent {
    /// The status an agent is in after this event, when the event alone says it: a recovery leads
    /// back to ready or draining, depending on whether the agent had begun to drain (`None`).
    pub fn status_after(&self) -> Option<AgentStatus> {
        Some(match self {
            Self::AgentRegistered { .. } => AgentStatus::Registered,
            Self::AgentReady {} => AgentStatus::Ready,
            Self::AgentLost { .. } => AgentStatus::Lost,
            Self::AgentRecovered {} => return None,
            Self::AgentDraining {} => AgentStatus::Draining,
            Self::AgentDeregistered { .. } => AgentStatus::Deregistered,
        })
    }
}

impl EventSchema for AgentEvent {
    fn from_domain(event: crate::DomainEvent) -> Option<Self> {
        match event {
            crate::DomainEvent::Agent(event) => Some(event),
            _ => None,
        }
    }

    fn event_type(&self) -> &'static str {
        match self {
            Self::AgentRegistered { .. } => "AgentRegistered",
            Self::AgentReady {} => "AgentReady",
            Self::AgentLost { .. } => "AgentLost",
            Self::AgentRecovered {} => "AgentRecovered",
            Self::AgentDraining {} => "AgentDraining",
            Self::AgentDeregistered { .. } => "AgentDeregistered",
        }
    }

    fn current_version(event_type: &str) -> u16 {
        match event_type {
            "AgentRegistered" => 2,
            _ => 1,
        }
    }

    fn upcast(
        event_type: &str,
        version: u16,
        mut data: serde_json::Value,
    ) -> Result<serde_json::Value, crate::error::DecodeError> {
        match (event_type, version) {
            // v2 added `labels`: a v1 agent had none.
            ("AgentRegistered", 1) => {
                if let Some(fields) = data.as_object_mut() {
                    fields.insert("labels".into(), serde_json::json!({}));
                }
                Ok(data)
            }
            (t, v) if v == Self::current_version(t) => Ok(data),
            (t, v) => Err(crate::error::DecodeError::UnsupportedVersion {
                event_type: t.to_owned(),
                version: v,
            }),
        }
    }
}

/// Orders to an agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentCommand {
    /// Register a new agent.
    Register {
        /// A human name, if any.
        name: Option<String>,
        /// What kind of agent.
        agent_type: String,
        /// What it can do (checked and sorted on the way in).
        capabilities: Vec<String>,
        /// How many tasks it runs at once, 1..=1000.
        max_concurrent_tasks: u32,
        /// What it is about.
        labels: Labels,
    },
    /// Its runtime reported in.
    MarkReady,
    /// Its heartbeats lapsed.
    MarkLost {
        /// Why.
        reason: String,
    },
    /// It heartbeated again after being lost.
    Recover,
    /// Take no more work.
    Drain,
    /// Remove it.
    Deregister {
        /// Why, if said.
        reason: Option<String>,
    },
}

impl AgentCommand {
    /// The command's name, for messages.
    pub const fn name(&self) -> &'static str {
        match self {
            Self::Register { .. } => "register",
            Self::MarkReady => "mark ready",
            Self::MarkLost { .. } => "mark lost",
            Self::Recover => "recover",
            Self::Drain => "drain",
            Self::Deregister { .. } => "deregister",
        }
    }
}

impl Aggregate for Agent {
    type Event = AgentEvent;
    type Command = AgentCommand;
    const KIND: AggregateKind = AggregateKind::Agent;

    fn apply(
        state: Option<Self>,
        event: &AgentEvent,
        at: DateTime<Utc>,
    ) -> Result<Self, FoldError> {
        use AgentEvent as E;
        use AgentStatus as S;
        let Some(mut agent) = state else {
            return match event {
                E::AgentRegistered {
                    name,
                    agent_type,
                    capabilities,
                    max_concurrent_tasks,
                    labels,
                } => Ok(Agent {
                    name: name.clone(),
                    agent_type: agent_type.clone(),
                    capabilities: capabilities.clone(),
                    max_concurrent_tasks: *max_concurrent_tasks,
                    status: S::Registered,
                    draining: false,
                    registered_at: at,
                    updated_at: at,
                    labels: labels.clone(),
                }),
                _ => Err(refuse_event::<Agent>(None, event)),
            };
        };
        // Which event may follow which status; where it leads is the event's own `status_after`.
        match (agent.status, event) {
            (S::Registered, E::AgentReady {})
            | (S::Registered | S::Ready | S::Draining, E::AgentLost { .. })
            | (S::Lost, E::AgentRecovered {})
            | (S::Registered | S::Ready | S::Lost | S::Draining, E::AgentDeregistered { .. }) => {}
            (S::Registered | S::Ready | S::Lost, E::AgentDraining {}) => agent.draining = true,
            _ => return Err(refuse_event(Some(&agent), event)),
        }
        agent.status = event.status_after().unwrap_or(if agent.draining {
            S::Draining
        } else {
            S::Ready
        });
        agent.updated_at = at;
        Ok(agent)
    }

    fn decide(state: Option<&Self>, command: AgentCommand) -> Result<AgentEvent, DomainError> {
        use AgentCommand as C;
        use AgentStatus as S;
        let status = state.map(|a| a.status);
        match (status, command) {
            (
                None,
                C::Register {
                    name,
                    agent_type,
                    capabilities,
                    max_concurrent_tasks,
                    labels,
                },
            ) => {
                if let Some(name) = &name {
                    check_text("name", name, 1, 200)?;
                }
                check_text("agent_type", &agent_type, 1, 100)?;
                if !(1..=1000).contains(&max_concurrent_tasks) {
                    return Err(DomainError::invalid(
                        "max_concurrent_tasks",
                        format!("must be 1 to 1000, got {max_concurrent_tasks}"),
                    ));
                }
                Ok(AgentEvent::AgentRegistered {
                    name,
                    agent_type,
                    capabilities: capability_set(capabilities)?,
                    max_concurrent_tasks,
                    labels,
                })
            }
            (Some(_), C::Register { .. }) => Err(DomainError::AlreadyExists { aggregate: "agent" }),
            (Some(S::Registered), C::MarkReady) => Ok(AgentEvent::AgentReady {}),
            (Some(S::Registered | S::Ready | S::Draining), C::MarkLost { reason }) => {
                Ok(AgentEvent::AgentLost { reason })
            }
            (Some(S::Lost), C::Recover) => Ok(AgentEvent::AgentRecovered {}),
            (Some(S::Registered | S::Ready | S::Lost), C::Drain) => {
                Ok(AgentEvent::AgentDraining {})
            }
            (Some(S::Registered | S::Ready | S::Lost | S::Draining), C::Deregister { reason }) => {
                Ok(AgentEvent::AgentDeregistered { reason })
            }
            (_, command) => Err(refuse_command(state, command.name())),
        }
    }

    fn state_name(state: Option<&Self>) -> &'static str {
        state.map_or("absent", |a| a.status.as_str())
    }
}

impl Agent {
    /// Whether it may be given work now (room permitting): it is ready, not draining, not lost.
    pub fn takes_work(&self) -> bool {
        self.status == AgentStatus::Ready
    }

    /// The command its heartbeats make due now: ready at its first heartbeat, recovered at one after
    /// it was lost, lost when none came for the policy's timeout. `last_beat` is its last heartbeat,
    /// if any was seen.
    pub fn due(
        &self,
        last_beat: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        policy: &Policy,
    ) -> Option<AgentCommand> {
        match self.status {
            AgentStatus::Registered if last_beat.is_some_and(|b| b >= self.registered_at) => {
                Some(AgentCommand::MarkReady)
            }
            AgentStatus::Lost if last_beat.is_some_and(|b| b > self.updated_at) => {
                Some(AgentCommand::Recover)
            }
            AgentStatus::Ready | AgentStatus::Draining => self
                .deadline(last_beat, policy)
                .is_some_and(|at| at <= now)
                .then(|| AgentCommand::MarkLost {
                    reason: "heartbeat_timeout".into(),
                }),
            _ => None,
        }
    }

    /// When it will be lost unless it heartbeats again (for an agent that can be lost).
    pub fn deadline(
        &self,
        last_beat: Option<DateTime<Utc>>,
        policy: &Policy,
    ) -> Option<DateTime<Utc>> {
        matches!(self.status, AgentStatus::Ready | AgentStatus::Draining).then(|| {
            let last = last_beat.map_or(self.updated_at, |b| b.max(self.updated_at));
            last + policy.heartbeat_timeout()
        })
    }
}

#[cfg(test)]
mod tests;
