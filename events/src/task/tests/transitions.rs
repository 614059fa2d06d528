//! Every state against every command and every event: what is allowed, what is refused, and why.

use super::*;

fn commands() -> Vec<TaskCommand> {
    use TaskCommand as C;
    vec![
        C::Create(new_task(vec![])),
        C::Queue,
        assign(),
        C::Accept { agent_id: agent() },
        C::Start { agent_id: agent() },
        C::Progress {
            agent_id: agent(),
            percent: Some(50),
            message: Some("halfway".into()),
        },
        C::Complete {
            agent_id: agent(),
            result: serde_json::json!(1),
        },
        fail(true),
        C::ScheduleRetry { retry_at: at() },
        C::Requeue {
            reason: "agent_lost".into(),
        },
        C::Release {
            agent_id: agent(),
            reason: "agent_restarted".into(),
        },
        C::Retry,
        C::DeadLetter {
            reason: "exhausted".into(),
        },
        C::Cancel {
            reason: Some("no longer needed".into()),
            by: Some("operator".into()),
        },
        C::TimeOut {
            limit: crate::task::TimeLimit::Timeout,
        },
        C::Block {
            reason: "dependency dead-lettered".into(),
        },
        C::Unblock,
    ]
}

/// The transition table: for each state and command, the state it leads to (None: refused).
fn expected(from: Option<TaskStatus>, command: &TaskCommand) -> Option<TaskStatus> {
    use TaskCommand as C;
    match (from, command) {
        (None, C::Create(_)) => Some(S::Queued),
        (Some(S::Waiting | S::RetryScheduled), C::Queue) => Some(S::Queued),
        (Some(S::Queued), C::Assign { .. }) => Some(S::Assigned),
        (Some(S::Assigned), C::Accept { .. }) => Some(S::Accepted),
        (Some(S::Assigned | S::Accepted), C::Start { .. }) => Some(S::Running),
        (Some(S::Running), C::Progress { .. }) => Some(S::Running),
        (Some(S::Running), C::Complete { .. }) => Some(S::Completed),
        (Some(S::Assigned | S::Accepted | S::Running), C::Fail { .. }) => Some(S::Failed),
        (Some(S::Failed), C::ScheduleRetry { .. }) => Some(S::RetryScheduled),
        (Some(S::Running), C::TimeOut { .. }) => Some(S::Failed),
        (Some(S::Assigned | S::Accepted | S::Running), C::Requeue { .. } | C::Release { .. }) => {
            Some(S::Queued)
        }
        (Some(S::Failed | S::DeadLettered), C::Retry) => Some(S::Queued),
        (Some(S::Failed), C::DeadLetter { .. }) => Some(S::DeadLettered),
        (Some(S::Completed | S::DeadLettered | S::Cancelled), C::Cancel { .. }) => None,
        (Some(_), C::Cancel { .. }) => Some(S::Cancelled),
        (Some(S::Waiting), C::Block { .. }) => Some(S::Blocked),
        (Some(S::Blocked), C::Unblock) => Some(S::Waiting),
        _ => None,
    }
}

#[test]
fn every_allowed_and_every_refused_transition() {
    let states = std::iter::once(None).chain(S::ALL.into_iter().map(Some));
    for from in states {
        for command in commands() {
            let state = given(from);
            let name = command.name();
            let expect = expected(from, &command);
            let result = Task::decide(state.as_ref(), command);
            match expect {
                Some(to) => {
                    let event = result.unwrap_or_else(|e| panic!("{from:?} + {name}: {e}"));
                    assert_eq!(event.status_after(), to, "{from:?} + {name}");
                    let folded = Task::apply(state, &event, at()).unwrap();
                    assert_eq!(folded.lifecycle.status, to, "{from:?} + {name}");
                }
                None => {
                    let err = result.expect_err(&format!("{from:?} + {name} must be refused"));
                    let want = match from {
                        None => DomainError::NotFound { aggregate: "task" },
                        Some(_) if name == "create" => {
                            DomainError::AlreadyExists { aggregate: "task" }
                        }
                        Some(s) => DomainError::InvalidTransition {
                            aggregate: "task",
                            command: name,
                            state: s.as_str(),
                        },
                    };
                    assert_eq!(err, want, "{from:?} + {name}");
                }
            }
        }
    }
}

/// The fold refuses exactly the events the rules never decide.
#[test]
fn the_fold_accepts_exactly_the_events_the_rules_decide() {
    let states: Vec<Option<Task>> = std::iter::once(None)
        .chain(S::ALL.map(Some))
        .map(given)
        .collect();
    crate::aggregate::assert_fold_accepts_exactly_what_is_decided(&states, commands, 16, at());
}

#[test]
fn a_task_with_open_dependencies_waits_then_queues() {
    let task = given(Some(S::Waiting)).unwrap();
    assert_eq!(task.lifecycle.depends_on, vec![dep()]);
    let task = run(Some(task), [TaskCommand::Queue]).unwrap();
    assert_eq!(task.lifecycle.status, S::Queued);
}

#[test]
fn only_the_assigned_agent_may_report() {
    let other = AgentId::from_uuid(uuid::Uuid::from_u128(0xB));
    let assigned = given(Some(S::Assigned));
    assert_eq!(
        Task::decide(assigned.as_ref(), TaskCommand::Start { agent_id: other }),
        Err(DomainError::NotAssignee)
    );
    let running = given(Some(S::Running));
    for command in [
        TaskCommand::Complete {
            agent_id: other,
            result: serde_json::Value::Null,
        },
        TaskCommand::Fail {
            agent_id: other,
            error: "x".into(),
            retryable: true,
        },
        TaskCommand::Progress {
            agent_id: other,
            percent: None,
            message: None,
        },
    ] {
        assert_eq!(
            Task::decide(running.as_ref(), command),
            Err(DomainError::NotAssignee)
        );
    }
}

#[test]
fn a_report_about_an_attempt_that_is_over_is_refused() {
    let in_attempt = |attempt, report| TaskCommand::InAttempt {
        attempt,
        report: Box::new(report),
    };
    let accept = || TaskCommand::Accept { agent_id: agent() };
    // Attempt 1 lapses; the task is assigned to the same agent again: attempt 2.
    let again = run(
        given(Some(S::Assigned)),
        [
            TaskCommand::Requeue {
                reason: "lease_expired".into(),
            },
            assign(),
        ],
    );
    assert_eq!(again.as_ref().unwrap().lifecycle.attempts, 2);
    // A late accept of attempt 1 (its runtime sending it again) does not accept attempt 2.
    assert_eq!(
        Task::decide(again.as_ref(), in_attempt(1, accept())),
        Err(DomainError::AttemptOver {
            attempt: 1,
            current: 2
        })
    );
    let accepted = run(again, [in_attempt(2, accept())]).unwrap();
    assert_eq!(accepted.lifecycle.status, S::Accepted);
    // The attempt is checked before the report: another agent is still not the assignee.
    let other = TaskCommand::Start {
        agent_id: AgentId::from_uuid(uuid::Uuid::from_u128(0xB)),
    };
    assert_eq!(
        Task::decide(Some(&accepted), in_attempt(2, other)),
        Err(DomainError::NotAssignee)
    );
}

#[test]
fn retries_stop_when_attempts_are_exhausted_or_the_failure_is_final() {
    use TaskCommand as C;
    let retry = || C::ScheduleRetry { retry_at: at() };
    let mut task = given(Some(S::Failed));
    for _ in 0..2 {
        task = run(task, [retry(), C::Queue, assign(), fail(true)]);
    }
    let task = task.unwrap();
    assert_eq!(task.lifecycle.attempts, 3);
    assert!(matches!(
        Task::decide(Some(&task), retry()),
        Err(DomainError::Invalid { field: "retry", .. })
    ));
    let final_failure = run(
        given(Some(S::Assigned)),
        [C::Requeue { reason: "x".into() }, assign(), fail(false)],
    );
    assert!(Task::decide(final_failure.as_ref(), retry()).is_err());
}

#[test]
fn assignment_counts_attempts_and_requeue_releases_the_agent() {
    let task = given(Some(S::Assigned)).unwrap();
    assert_eq!(
        (task.lifecycle.attempts, task.lifecycle.agent_id),
        (1, Some(agent()))
    );
    let task = run(
        Some(task),
        [TaskCommand::Requeue {
            reason: "agent_lost".into(),
        }],
    )
    .unwrap();
    assert_eq!(
        (task.lifecycle.status, task.lifecycle.agent_id),
        (S::Queued, None)
    );
    assert_eq!(task.details.reason.as_deref(), Some("agent_lost"));
}

#[test]
fn only_the_assigned_agent_releases_its_task() {
    let task = given(Some(S::Running)).unwrap();
    let release = |agent_id| TaskCommand::Release {
        agent_id,
        reason: "agent_restarted".into(),
    };
    assert!(matches!(
        Task::decide(Some(&task), release(AgentId::new())),
        Err(DomainError::NotAssignee)
    ));
    let task = run(Some(task), [release(agent())]).unwrap();
    assert_eq!(
        (task.lifecycle.status, task.lifecycle.agent_id),
        (S::Queued, None)
    );
    assert_eq!(task.details.reason.as_deref(), Some("agent_restarted"));
}

#[test]
fn creation_checks_its_fields() {
    let mut bad = new_task(vec![]);
    bad.title = String::new();
    assert!(matches!(
        Task::decide(None, TaskCommand::Create(bad)),
        Err(DomainError::Invalid { field: "title", .. })
    ));
    let mut bad = new_task(vec![]);
    bad.max_attempts = 0;
    assert!(matches!(
        Task::decide(None, TaskCommand::Create(bad)),
        Err(DomainError::Invalid {
            field: "max_attempts",
            ..
        })
    ));
    let mut bad = new_task(vec![]);
    bad.waiting_on = vec![dep()];
    assert!(matches!(
        Task::decide(None, TaskCommand::Create(bad)),
        Err(DomainError::Invalid {
            field: "depends_on",
            ..
        })
    ));
    let mut bad = new_task(vec![]);
    bad.required_capabilities = vec!["Not Valid".into()];
    assert!(Task::decide(None, TaskCommand::Create(bad)).is_err());
}

#[test]
fn progress_is_bounded() {
    let running = given(Some(S::Running));
    let over = TaskCommand::Progress {
        agent_id: agent(),
        percent: Some(101),
        message: None,
    };
    assert!(matches!(
        Task::decide(running.as_ref(), over),
        Err(DomainError::Invalid {
            field: "percent",
            ..
        })
    ));
}

#[test]
fn an_impossible_event_is_a_fold_error() {
    let completed = given(Some(S::Completed));
    let err = Task::apply(completed, &TaskEvent::TaskStarted {}, at()).unwrap_err();
    assert_eq!((err.event, err.state), ("TaskStarted", "completed"));
}

#[test]
fn a_pinned_task_goes_only_to_its_agent() {
    let mut pinned = new_task(vec![]);
    pinned.pinned_agent = Some(agent());
    let task = run(None, [TaskCommand::Create(pinned)]);
    let other = TaskCommand::Assign {
        agent_id: AgentId::from_uuid(uuid::Uuid::from_u128(0xB)),
        lease_expires_at: at(),
    };
    assert!(matches!(
        Task::decide(task.as_ref(), other),
        Err(DomainError::Invalid {
            field: "agent_id",
            ..
        })
    ));
    assert_eq!(run(task, [assign()]).unwrap().lifecycle.status, S::Assigned);
}

#[test]
fn an_operator_retry_gives_a_dead_lettered_task_a_new_round() {
    let task = run(given(Some(S::DeadLettered)), [TaskCommand::Retry]).unwrap();
    assert_eq!(
        (task.lifecycle.status, task.lifecycle.attempts),
        (S::Queued, 0)
    );
}
