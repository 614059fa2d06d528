//! Given/when/then tests of the agent's transition table and its heartbeat rules.

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
        labels: Default::default(),
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
        labels: Default::default(),
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
        labels: Default::default(),
    };
    assert!(Agent::apply(ready, &registered, at()).is_err());
}

fn apply_all(agent: Option<Agent>, commands: &[AgentCommand]) -> Agent {
    let mut agent = agent;
    for command in commands {
        let event = Agent::decide(agent.as_ref(), command.clone()).unwrap();
        agent = Some(Agent::apply(agent, &event, at()).unwrap());
    }
    agent.unwrap()
}

#[test]
fn a_draining_agent_lost_and_recovered_comes_back_draining() {
    let lost = || AgentCommand::MarkLost {
        reason: "timeout".into(),
    };
    let draining = given(Some(S::Draining));
    let back = apply_all(draining, &[lost(), AgentCommand::Recover]);
    assert_eq!((back.status, back.draining), (S::Draining, true));
    assert!(!back.takes_work());
    let ready = given(Some(S::Ready));
    let back = apply_all(ready, &[lost(), AgentCommand::Recover]);
    assert_eq!((back.status, back.draining), (S::Ready, false));
    assert!(back.takes_work());
    let drained_while_lost = apply_all(given(Some(S::Ready)), &[lost(), AgentCommand::Drain]);
    assert_eq!(drained_while_lost.status, S::Draining);
}

#[test]
fn heartbeats_make_an_agent_ready_lost_or_recovered() {
    let policy = Policy::default();
    let timeout = policy.heartbeat_timeout();
    let second = chrono::Duration::seconds(1);
    let registered = given(Some(S::Registered)).unwrap();
    assert_eq!(registered.due(None, at(), &policy), None);
    assert_eq!(
        registered.due(Some(at()), at(), &policy),
        Some(AgentCommand::MarkReady)
    );
    let ready = given(Some(S::Ready)).unwrap();
    let beat = at() + second;
    assert_eq!(ready.deadline(Some(beat), &policy), Some(beat + timeout));
    assert_eq!(
        ready.due(Some(beat), beat + timeout - second, &policy),
        None
    );
    assert!(matches!(
        ready.due(Some(beat), beat + timeout, &policy),
        Some(AgentCommand::MarkLost { .. })
    ));
    // No heartbeat seen yet: its last event starts the clock.
    assert_eq!(ready.deadline(None, &policy), Some(at() + timeout));
    let lost = given(Some(S::Lost)).unwrap();
    assert_eq!(lost.deadline(Some(beat), &policy), None);
    assert_eq!(
        lost.due(Some(at()), beat, &policy),
        None,
        "a beat from before"
    );
    assert_eq!(
        lost.due(Some(beat), beat, &policy),
        Some(AgentCommand::Recover)
    );
    let gone = given(Some(S::Deregistered)).unwrap();
    assert_eq!(gone.due(Some(beat), beat + timeout, &policy), None);
}
