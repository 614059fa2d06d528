//! What the board finds due besides assignments: retries, dead letters, requeues, dependencies,
//! heartbeats.

use super::*;

#[test]
fn failures_retry_with_backoff_until_attempts_run_out() {
    let mut g = Given::new();
    let agent = g.agent(&[], 1);
    let task = g.task(5, &[]);
    g.assign();
    g.event(
        AggregateKind::Task,
        task,
        &TaskEvent::TaskFailed {
            error: "x".into(),
            retryable: true,
        },
    );
    let due = g.board.follow_ups(g.now, &g.policy, || 0.0);
    let [Action::Task(id, TaskCommand::ScheduleRetry { retry_at }, ..)] = due.as_slice() else {
        panic!("a retry is due: {due:?}");
    };
    assert_eq!(*id, task);
    assert_eq!(
        *retry_at - g.now,
        chrono::Duration::milliseconds(500),
        "half the base delay at jitter 0"
    );
    g.event(
        AggregateKind::Task,
        task,
        &TaskEvent::TaskRetryScheduled {
            retry_at: *retry_at,
        },
    );
    assert!(
        g.follow_ups().is_empty(),
        "nothing until the back-off is over"
    );
    assert_eq!(g.board.next_deadline(&g.policy), Some(*retry_at));
    g.now = *retry_at;
    assert_eq!(g.follow_ups(), vec![(task, "queue".to_owned())]);
    g.event(AggregateKind::Task, task, &TaskEvent::TaskQueued {});
    assert_eq!(g.assign(), vec![(task, agent)]);
    g.event(
        AggregateKind::Task,
        task,
        &TaskEvent::TaskFailed {
            error: "x".into(),
            retryable: true,
        },
    );
    assert_eq!(g.follow_ups(), vec![(task, "dead-letter".to_owned())]);
}

#[test]
fn a_lapsed_heartbeat_loses_the_agent_and_requeues_its_tasks() {
    let mut g = Given::new();
    let agent = g.agent(&[], 2);
    let task = g.task(5, &[]);
    g.assign();
    g.event(AggregateKind::Task, task, &TaskEvent::TaskAccepted {});
    assert!(g.follow_ups().is_empty());
    g.now += chrono::Duration::seconds(16);
    assert_eq!(g.follow_ups(), vec![(agent, "mark lost".to_owned())]);
    g.event(
        AggregateKind::Agent,
        agent,
        &AgentEvent::AgentLost {
            reason: "heartbeat_timeout".into(),
        },
    );
    assert_eq!(g.follow_ups(), vec![(task, "requeue".to_owned())]);
    g.event(
        AggregateKind::Task,
        task,
        &TaskEvent::TaskRequeued {
            reason: "agent_lost".into(),
        },
    );
    assert!(g.follow_ups().is_empty());
    g.board.beat(agent, g.now + chrono::Duration::seconds(1));
    assert_eq!(g.follow_ups(), vec![(agent, "recover".to_owned())]);
}

#[test]
fn an_assignment_not_accepted_in_time_is_requeued_once_and_again_if_that_failed() {
    let mut g = Given::new();
    g.agent(&[], 1);
    let task = g.task(5, &[]);
    g.assign();
    g.now += chrono::Duration::seconds(31);
    g.board.beats.values_mut().for_each(|b| *b = g.now);
    assert_eq!(g.follow_ups(), vec![(task, "requeue".to_owned())]);
    assert!(g.follow_ups().is_empty(), "in flight: not decided twice");
    g.board.settle(task);
    assert_eq!(
        g.follow_ups(),
        vec![(task, "requeue".to_owned())],
        "its command failed: decided again"
    );
    g.board.settle(task);
    g.event(
        AggregateKind::Task,
        task,
        &TaskEvent::TaskRequeued {
            reason: "lease_expired".into(),
        },
    );
    assert!(
        g.follow_ups().is_empty(),
        "back in the queue: nothing is due but its assignment"
    );
}

#[test]
fn dependencies_release_or_block_their_dependents() {
    let mut g = Given::new();
    let first = g.task(5, &[]);
    let second = g.task(5, &[]);
    let waits = |g: &mut Given, dep: Uuid| {
        g.task_with(5, &[], |t| {
            t.depends_on = vec![TaskId::from_uuid(dep)];
            t.waiting_on = vec![TaskId::from_uuid(dep)];
        })
    };
    let after_first = waits(&mut g, first);
    let after_second = waits(&mut g, second);
    assert!(g.follow_ups().is_empty());
    let agent = g.agent(&[], 1);
    g.assign();
    g.event(AggregateKind::Task, first, &TaskEvent::TaskStarted {});
    g.event(
        AggregateKind::Task,
        first,
        &TaskEvent::TaskCompleted {
            result: serde_json::json!(1),
        },
    );
    g.event(
        AggregateKind::Task,
        second,
        &TaskEvent::TaskCancelled {
            reason: None,
            cancelled_by: None,
        },
    );
    let mut due = g.follow_ups();
    due.sort();
    let mut want = vec![
        (after_first, "queue".to_owned()),
        (after_second, "block".to_owned()),
    ];
    want.sort();
    assert_eq!(due, want);
    let _ = agent;
}

#[test]
fn a_first_heartbeat_makes_a_registered_agent_ready() {
    let mut g = Given::new();
    let id = Uuid::now_v7();
    let registered = Agent::decide(
        None,
        AgentCommand::Register {
            name: None,
            agent_type: "w".into(),
            capabilities: vec![],
            max_concurrent_tasks: 1,
            labels: Default::default(),
        },
    )
    .unwrap();
    g.event(AggregateKind::Agent, id, &registered);
    assert!(g.follow_ups().is_empty());
    g.board.beat(id, g.now);
    assert_eq!(g.follow_ups(), vec![(id, "mark ready".to_owned())]);
    assert!(
        g.follow_ups().is_empty(),
        "in flight until its event comes back"
    );
}

#[test]
fn a_finished_task_leaves_only_what_its_dependents_need() {
    let mut g = Given::new();
    let _agent = g.agent(&[], 1);
    let done = g.task(5, &[]);
    g.assign();
    g.event(AggregateKind::Task, done, &TaskEvent::TaskStarted {});
    g.event(
        AggregateKind::Task,
        done,
        &TaskEvent::TaskCompleted {
            result: serde_json::json!(1),
        },
    );
    assert!(g.board.tasks.is_empty() && g.board.cancelled.is_empty());

    let dead = g.task(5, &[]);
    g.assign();
    g.event(
        AggregateKind::Task,
        dead,
        &TaskEvent::TaskFailed {
            error: "no".into(),
            retryable: false,
        },
    );
    assert_eq!(g.follow_ups(), vec![(dead, "dead-letter".to_owned())]);
    g.event(
        AggregateKind::Task,
        dead,
        &TaskEvent::TaskDeadLettered {
            reason: "the failure is not retryable".into(),
        },
    );
    let waits = g.task_with(5, &[], |t| {
        t.depends_on = vec![TaskId::from_uuid(done), TaskId::from_uuid(dead)];
        t.waiting_on = vec![TaskId::from_uuid(dead)];
    });
    assert_eq!(g.follow_ups(), vec![(waits, "block".to_owned())]);
}

#[test]
fn retrying_a_dead_lettered_dependency_unblocks_its_dependents_in_turn() {
    let mut g = Given::new();
    let dep = g.task_with(5, &[], |t| t.max_attempts = 1);
    let waits = |g: &mut Given, on: Uuid| {
        g.task_with(5, &[], |t| {
            t.depends_on = vec![TaskId::from_uuid(on)];
            t.waiting_on = vec![TaskId::from_uuid(on)];
        })
    };
    let child = waits(&mut g, dep);
    let grandchild = waits(&mut g, child);
    g.agent(&[], 1);
    g.assign();
    let failed = TaskEvent::TaskFailed {
        error: "x".into(),
        retryable: true,
    };
    g.event(AggregateKind::Task, dep, &failed);
    assert_eq!(g.follow_ups(), vec![(dep, "dead-letter".to_owned())]);
    let dead = TaskEvent::TaskDeadLettered {
        reason: "attempts exhausted".into(),
    };
    g.event(AggregateKind::Task, dep, &dead);
    let blocked = |reason: &str| TaskEvent::TaskBlocked {
        reason: reason.into(),
    };
    assert_eq!(g.follow_ups(), vec![(child, "block".to_owned())]);
    g.event(
        AggregateKind::Task,
        child,
        &blocked("dependency is dead_lettered"),
    );
    assert_eq!(g.follow_ups(), vec![(grandchild, "block".to_owned())]);
    g.event(
        AggregateKind::Task,
        grandchild,
        &blocked("dependency is blocked"),
    );
    assert!(g.follow_ups().is_empty(), "blocked, and nothing to do");
    // An operator retries the dependency: each dependent waits again once what blocked it is not stuck.
    g.event(AggregateKind::Task, dep, &TaskEvent::TaskRetried {});
    assert_eq!(g.follow_ups(), vec![(child, "unblock".to_owned())]);
    g.event(AggregateKind::Task, child, &TaskEvent::TaskUnblocked {});
    assert_eq!(g.follow_ups(), vec![(grandchild, "unblock".to_owned())]);
    g.event(
        AggregateKind::Task,
        grandchild,
        &TaskEvent::TaskUnblocked {},
    );
    assert!(
        g.follow_ups().is_empty(),
        "both wait on their dependency again"
    );
}
