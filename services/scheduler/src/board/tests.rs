//! The scheduling rules, given events and a clock.

use bytes::Bytes;
use hive_events::Aggregate;
use hive_events::agent::AgentEvent;
use hive_events::aggregate::EventSchema;
use hive_events::envelope::encode;
use hive_events::task::{NewTask, Task, TaskEvent};
use hive_events::{Actor, AggregateKind, EventMeta, Priority, TaskId};

use super::*;

struct Given {
    board: Board,
    subjects: Subjects,
    seq: u64,
    now: DateTime<Utc>,
    policy: Policy,
}

impl Given {
    fn new() -> Self {
        Self {
            board: Board::default(),
            subjects: Subjects::default(),
            seq: 0,
            now: "2026-01-01T00:00:00Z".parse().unwrap(),
            policy: Policy::default(),
        }
    }

    fn event<E: EventSchema>(&mut self, kind: AggregateKind, id: Uuid, event: &E) {
        self.seq += 1;
        let meta = EventMeta::new(self.now, Uuid::now_v7(), None, Actor::new("test"));
        let raw = RawEvent {
            pending: 0,
            seq: self.seq,
            subject: self.subjects.of(kind, id),
            payload: Bytes::from(encode(&meta, kind, id, event)),
            msg_id: None,
        };
        self.board
            .apply(&raw, &super::replay(self.subjects.clone()));
    }

    fn agent(&mut self, caps: &[&str], max: u32) -> Uuid {
        let id = Uuid::now_v7();
        let registered = Agent::decide(
            None,
            AgentCommand::Register {
                name: None,
                agent_type: "worker".into(),
                capabilities: caps.iter().map(|c| c.to_string()).collect(),
                max_concurrent_tasks: max,
            },
        )
        .unwrap();
        self.event(AggregateKind::Agent, id, &registered);
        self.event(AggregateKind::Agent, id, &AgentEvent::AgentReady {});
        self.board.beat(id, self.now);
        id
    }

    fn task_with(&mut self, priority: i64, caps: &[&str], edit: impl FnOnce(&mut NewTask)) -> Uuid {
        let id = Uuid::now_v7();
        let mut new = NewTask {
            priority: Priority::new(priority).unwrap(),
            required_capabilities: caps.iter().map(|c| c.to_string()).collect(),
            max_attempts: 2,
            ..NewTask::titled("t")
        };
        edit(&mut new);
        let created = Task::decide(None, TaskCommand::Create(new)).unwrap();
        self.event(AggregateKind::Task, id, &created);
        id
    }

    fn task(&mut self, priority: i64, caps: &[&str]) -> Uuid {
        self.task_with(priority, caps, |_| {})
    }

    /// Runs the assignments due and folds their events back in, as the log would.
    fn assign(&mut self) -> Vec<(Uuid, Uuid)> {
        let actions = self.board.assignments(self.now, &self.policy);
        let mut pairs = Vec::new();
        for action in actions {
            let Action::Task(
                task,
                TaskCommand::Assign {
                    agent_id,
                    lease_expires_at,
                },
                ..,
            ) = action
            else {
                panic!("only assignments");
            };
            self.event(
                AggregateKind::Task,
                task,
                &TaskEvent::TaskAssigned {
                    agent_id,
                    lease_expires_at,
                },
            );
            pairs.push((task, agent_id.as_uuid()));
        }
        pairs
    }

    fn follow_ups(&mut self) -> Vec<(Uuid, String)> {
        self.board
            .follow_ups(self.now, &self.policy, || 0.5)
            .into_iter()
            .map(|a| match a {
                Action::Task(id, c, ..) => (id, c.name().to_owned()),
                Action::Agent(id, c, ..) => (id, c.name().to_owned()),
            })
            .collect()
    }
}

#[test]
fn highest_priority_first_then_oldest() {
    let mut g = Given::new();
    let low = g.task(2, &[]);
    let old_high = g.task(8, &[]);
    let new_high = g.task(8, &[]);
    assert_eq!(
        g.board.queued().collect::<Vec<_>>(),
        vec![old_high, new_high, low]
    );
    let agent = g.agent(&[], 2);
    assert_eq!(g.assign(), vec![(old_high, agent), (new_high, agent)]);
    assert_eq!(g.board.queued().collect::<Vec<_>>(), vec![low]);
}

#[test]
fn capabilities_must_be_a_subset_and_an_unservable_task_blocks_nothing() {
    let mut g = Given::new();
    let gpu_task = g.task(10, &["gpu"]);
    let rust_task = g.task(5, &["rust"]);
    let agent = g.agent(&["git", "rust"], 4);
    assert_eq!(g.assign(), vec![(rust_task, agent)]);
    assert_eq!(g.board.queued().collect::<Vec<_>>(), vec![gpu_task]);
}

#[test]
fn the_least_loaded_agent_wins_and_nobody_goes_over_their_maximum() {
    let mut g = Given::new();
    let a = g.agent(&[], 1);
    let tasks: Vec<Uuid> = (0..5).map(|_| g.task(5, &[])).collect();
    assert_eq!(g.assign(), vec![(tasks[0], a)]);
    let b = g.agent(&[], 3);
    let assigned = g.assign();
    assert_eq!(
        assigned.iter().map(|(_, agent)| *agent).collect::<Vec<_>>(),
        vec![b, b, b]
    );
    assert_eq!((g.board.load_of(a), g.board.load_of(b)), (1, 3));
    assert!(g.assign().is_empty(), "everyone is full");
    // A task in flight is not assigned twice while its event has not come back.
    let c = g.agent(&[], 5);
    let first = g.board.assignments(g.now, &g.policy);
    assert_eq!(first.len(), 1);
    assert!(g.board.assignments(g.now, &g.policy).is_empty());
    let _ = c;
}

#[test]
fn a_task_back_in_the_queue_goes_to_another_agent_when_one_has_room() {
    let mut g = Given::new();
    let first = g.agent(&[], 1);
    let task = g.task(5, &[]);
    assert_eq!(g.assign(), vec![(task, first)]);
    let other = g.agent(&[], 4);
    let busy = g.task(5, &[]);
    assert_eq!(g.assign(), vec![(busy, other)]);
    // Released by its agent: `first` is free and the least loaded, yet the task goes elsewhere.
    g.event(
        AggregateKind::Task,
        task,
        &TaskEvent::TaskRequeued {
            reason: "agent_restarted".into(),
        },
    );
    assert_eq!((g.board.load_of(first), g.board.load_of(other)), (0, 1));
    assert_eq!(g.assign(), vec![(task, other)]);
    // With nobody else free, the same agent takes it again rather than nobody.
    let filler = g.task(9, &[]);
    assert_eq!(g.assign(), vec![(filler, first)]);
    g.event(
        AggregateKind::Task,
        task,
        &TaskEvent::TaskRequeued {
            reason: "agent_lost".into(),
        },
    );
    assert_eq!(g.assign(), vec![(task, other)]);
}

#[test]
fn a_draining_agent_that_was_lost_is_given_nothing_when_it_comes_back() {
    let mut g = Given::new();
    let agent = g.agent(&[], 2);
    g.event(AggregateKind::Agent, agent, &AgentEvent::AgentDraining {});
    g.event(
        AggregateKind::Agent,
        agent,
        &AgentEvent::AgentLost {
            reason: "heartbeat_timeout".into(),
        },
    );
    g.now += chrono::Duration::seconds(1);
    g.board.beat(agent, g.now);
    assert_eq!(g.follow_ups(), vec![(agent, "recover".to_owned())]);
    g.event(AggregateKind::Agent, agent, &AgentEvent::AgentRecovered {});
    let _task = g.task(5, &[]);
    // Back draining (the domain keeps the flag through the loss): nothing to decide, nothing given.
    assert!(g.follow_ups().is_empty());
    assert!(g.assign().is_empty());
}

#[test]
fn a_pinned_task_waits_for_its_agent() {
    let mut g = Given::new();
    let _other = g.agent(&[], 5);
    let absent = g.task_with(5, &[], |t| {
        t.pinned_agent = Some(AgentId::from_uuid(Uuid::now_v7()))
    });
    assert!(g.assign().is_empty(), "nobody else takes a pinned task");
    let mine = g.agent(&[], 1);
    let pinned = g.task_with(5, &[], |t| t.pinned_agent = Some(AgentId::from_uuid(mine)));
    assert_eq!(g.assign(), vec![(pinned, mine)]);
    assert_eq!(g.board.queued().collect::<Vec<_>>(), vec![absent]);
}

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
fn an_assignment_not_accepted_in_time_is_requeued() {
    let mut g = Given::new();
    g.agent(&[], 1);
    let task = g.task(5, &[]);
    g.assign();
    g.now += chrono::Duration::seconds(31);
    g.board.beats.values_mut().for_each(|b| *b = g.now);
    assert_eq!(g.follow_ups(), vec![(task, "requeue".to_owned())]);
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
        &TaskEvent::TaskCancelled { reason: None },
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
