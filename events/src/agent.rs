//! The agent aggregate: a worker that advertises capabilities and runs tasks.
//!
//! ```text
//! registered ──ready──▶ ready ──lost──▶ lost ──recovered──▶ ready
//!     │                   │                │
//!     └────────────── draining ◀───────────┘ ──▶ deregistered (from any state but deregistered)
//! ```
//! Whether a ready agent is busy is derived from its load, not stored as a state.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::aggregate::{
    Aggregate, AggregateKind, EventSchema, check_text, refuse_command, refuse_event,
};
use crate::error::{DomainError, FoldError};
use crate::values::{Capability, capability_set};

/// Where an agent is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

/// An agent's state, folded from its events.
#[derive(Clone, Debug, PartialEq, Eq)]
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
    /// When it registered.
    pub registered_at: DateTime<Utc>,
    /// When its last event happened.
    pub updated_at: DateTime<Utc>,
}

/// The facts of an agent's life.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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

impl EventSchema for AgentEvent {
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
                } => Ok(Agent {
                    name: name.clone(),
                    agent_type: agent_type.clone(),
                    capabilities: capabilities.clone(),
                    max_concurrent_tasks: *max_concurrent_tasks,
                    status: S::Registered,
                    registered_at: at,
                    updated_at: at,
                }),
                _ => Err(refuse_event::<Agent>(None, event)),
            };
        };
        let next = match (agent.status, event) {
            (S::Registered, E::AgentReady {}) => S::Ready,
            (S::Registered | S::Ready | S::Draining, E::AgentLost { .. }) => S::Lost,
            (S::Lost, E::AgentRecovered {}) => S::Ready,
            (S::Registered | S::Ready | S::Lost, E::AgentDraining {}) => S::Draining,
            (S::Registered | S::Ready | S::Lost | S::Draining, E::AgentDeregistered { .. }) => {
                S::Deregistered
            }
            _ => return Err(refuse_event(Some(&agent), event)),
        };
        agent.status = next;
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

#[cfg(test)]
mod tests {
    use super::*;
    use AgentStatus as S;

    fn at() -> DateTime<Utc> {
        "2026-01-02T03:04:05Z".parse().unwrap()
    }

    fn register() -> AgentCommand {
        AgentCommand::Register {
            name: Some("builder-1".into()),
            agent_type: "worker".into(),
            capabilities: vec!["rust".into(), "git".into()],
            max_concurrent_tasks: 2,
        }
    }

    /// An agent brought to `status` through its real events.
    fn given(status: Option<AgentStatus>) -> Option<Agent> {
        let path: &[AgentCommand] = match status {
            None => return None,
            Some(S::Registered) => &[],
            Some(S::Ready) => &[AgentCommand::MarkReady],
            Some(S::Lost) => &[AgentCommand::MarkLost {
                reason: "timeout".into(),
            }],
            Some(S::Draining) => &[AgentCommand::Drain],
            Some(S::Deregistered) => &[AgentCommand::Deregister { reason: None }],
        };
        let mut agent = None;
        for command in std::iter::once(register()).chain(path.iter().cloned()) {
            let event = Agent::decide(agent.as_ref(), command).unwrap();
            agent = Some(Agent::apply(agent, &event, at()).unwrap());
        }
        assert_eq!(agent.as_ref().map(|a| a.status), status);
        agent
    }

    fn commands() -> Vec<AgentCommand> {
        vec![
            register(),
            AgentCommand::MarkReady,
            AgentCommand::MarkLost {
                reason: "timeout".into(),
            },
            AgentCommand::Recover,
            AgentCommand::Drain,
            AgentCommand::Deregister {
                reason: Some("done".into()),
            },
        ]
    }

    /// The transition table: for each state and command, the state it leads to (None: refused).
    fn expected(from: Option<AgentStatus>, command: &AgentCommand) -> Option<AgentStatus> {
        use AgentCommand as C;
        match (from, command) {
            (None, C::Register { .. }) => Some(S::Registered),
            (Some(S::Registered), C::MarkReady) => Some(S::Ready),
            (Some(S::Registered | S::Ready | S::Draining), C::MarkLost { .. }) => Some(S::Lost),
            (Some(S::Lost), C::Recover) => Some(S::Ready),
            (Some(S::Registered | S::Ready | S::Lost), C::Drain) => Some(S::Draining),
            (Some(S::Deregistered), C::Deregister { .. }) => None,
            (Some(_), C::Deregister { .. }) => Some(S::Deregistered),
            _ => None,
        }
    }

    /// The fold refuses exactly the events the rules never decide.
    #[test]
    fn the_fold_accepts_exactly_the_events_the_rules_decide() {
        let states: Vec<Option<Agent>> = std::iter::once(None)
            .chain(S::ALL.map(Some))
            .map(given)
            .collect();
        crate::aggregate::assert_fold_accepts_exactly_what_is_decided(&states, commands, 6, at());
    }

    #[test]
    fn every_allowed_and_every_refused_transition() {
        let states = std::iter::once(None).chain(S::ALL.into_iter().map(Some));
        for from in states {
            for command in commands() {
                let state = given(from);
                let name = command.name();
                let expect = expected(from, &command);
                let result = Agent::decide(state.as_ref(), command);
                match expect {
                    Some(to) => {
                        let event = result.unwrap_or_else(|e| panic!("{from:?} + {name}: {e}"));
                        let folded = Agent::apply(state, &event, at()).unwrap();
                        assert_eq!(folded.status, to, "{from:?} + {name}");
                    }
                    None => {
                        let err = result.expect_err(&format!("{from:?} + {name} must be refused"));
                        match from {
                            None => assert_eq!(err, DomainError::NotFound { aggregate: "agent" }),
                            Some(_) if name == "register" => {
                                assert_eq!(err, DomainError::AlreadyExists { aggregate: "agent" })
                            }
                            Some(s) => assert_eq!(
                                err,
                                DomainError::InvalidTransition {
                                    aggregate: "agent",
                                    command: name,
                                    state: s.as_str()
                                }
                            ),
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn registration_checks_its_fields() {
        let bad = |max, agent_type: &str, caps: Vec<String>| AgentCommand::Register {
            name: None,
            agent_type: agent_type.into(),
            capabilities: caps,
            max_concurrent_tasks: max,
        };
        assert!(matches!(
            Agent::decide(None, bad(0, "w", vec![])),
            Err(DomainError::Invalid {
                field: "max_concurrent_tasks",
                ..
            })
        ));
        assert!(matches!(
            Agent::decide(None, bad(1, "", vec![])),
            Err(DomainError::Invalid {
                field: "agent_type",
                ..
            })
        ));
        assert!(matches!(
            Agent::decide(None, bad(1, "w", vec!["No Caps".into()])),
            Err(DomainError::Invalid {
                field: "capability",
                ..
            })
        ));
    }

    #[test]
    fn an_event_that_cannot_follow_is_a_fold_error_not_a_panic() {
        let err = Agent::apply(None, &AgentEvent::AgentReady {}, at()).unwrap_err();
        assert_eq!(err.state, "absent");
        let ready = given(Some(S::Ready));
        let registered = AgentEvent::AgentRegistered {
            name: None,
            agent_type: "w".into(),
            capabilities: vec![],
            max_concurrent_tasks: 1,
        };
        assert!(Agent::apply(ready, &registered, at()).is_err());
    }
}
