//! The board, given events and a clock: matching here, the follow-ups it asks the domain for in
//! [`follow_ups`].

mod follow_ups;

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
                labels: Default::default(),
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
            labels: Default::default(),
            not_before: None,
            limits: Default::default(),
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
fn nothing_is_decided_for_a_task_whose_history_cannot_be_folded() {
    let mut g = Given::new();
    g.agent(&[], 2);
    let poisoned = g.task(9, &[]);
    let fine = g.task(1, &[]);
    // Queued twice: the fold refuses it, so the command path would refuse every command on it.
    g.event(AggregateKind::Task, poisoned, &TaskEvent::TaskQueued {});
    assert_eq!(
        g.assign(),
        vec![(fine, g.board.agents.keys().copied().next().unwrap())]
    );
    assert!(g.follow_ups().is_empty());
}

/// The board a snapshot of `board` gives back (its board in postcard, as a snapshot holds it).
fn through_a_snapshot(board: &Board) -> Board {
    let bytes = postcard::to_stdvec(&board.image()).unwrap();
    Board::restore(postcard::from_bytes(&bytes).unwrap())
}

#[test]
fn a_board_restored_from_its_snapshot_decides_as_the_one_it_was_taken_of() {
    let mut g = Given::new();
    let full = g.agent(&[], 1);
    let other = g.agent(&["rust"], 3);
    let held = g.task(5, &[]);
    let rust = g.task(7, &["rust"]);
    assert_eq!(g.assign(), vec![(rust, other), (held, full)]);
    let queued: Vec<Uuid> = (0..4).map(|p| g.task(p + 1, &[])).collect();
    let _dependent = g.task_with(9, &[], |t| t.depends_on = vec![TaskId::from_uuid(held)]);
    let cancelled = g.task(3, &[]);
    g.event(
        AggregateKind::Task,
        cancelled,
        &TaskEvent::TaskCancelled {
            reason: None,
            cancelled_by: None,
        },
    );
    let poisoned = g.task(9, &[]);
    g.event(AggregateKind::Task, poisoned, &TaskEvent::TaskQueued {});
    g.event(AggregateKind::Agent, other, &AgentEvent::AgentDraining {});
    g.board.beat(other, g.now);

    let mut restored = through_a_snapshot(&g.board);
    restored.beat(full, g.now);
    restored.beat(other, g.now);
    assert_eq!(restored.last_seq(), g.board.last_seq());
    assert_eq!(restored.size(), g.board.size());
    assert_eq!(
        restored.queued().collect::<Vec<_>>(),
        g.board.queued().collect::<Vec<_>>()
    );
    assert!(g.board.queued().any(|t| queued.contains(&t)));
    for agent in [full, other] {
        assert_eq!(restored.load_of(agent), g.board.load_of(agent));
    }
    assert_eq!(
        restored.next_deadline(&g.policy),
        g.board.next_deadline(&g.policy)
    );
    // Later on, both decide the same: a lease lapses, the agents' heartbeats lapse too.
    let later = g.now + chrono::Duration::hours(1);
    let decided = |board: &mut Board| {
        let mut actions: Vec<String> = board
            .follow_ups(later, &g.policy, || 0.5)
            .into_iter()
            .chain(board.assignments(later, &g.policy))
            .map(|a| format!("{a:?}"))
            .collect();
        actions.sort();
        actions
    };
    let expected = decided(&mut g.board);
    assert!(!expected.is_empty());
    assert_eq!(decided(&mut restored), expected);
    assert!(!expected.iter().any(|a| a.contains(&poisoned.to_string())));
}

#[test]
fn a_deregistered_agent_is_forgotten_once_it_holds_nothing() {
    let mut g = Given::new();
    let agent = g.agent(&[], 2);
    let task = g.task(5, &[]);
    assert_eq!(g.assign(), vec![(task, agent)]);
    let before = g.board.size();
    g.event(
        AggregateKind::Agent,
        agent,
        &AgentEvent::AgentDeregistered { reason: None },
    );
    assert_eq!(g.board.size(), before, "kept while it holds a task");
    assert_eq!(g.follow_ups(), vec![(task, "requeue".to_owned())]);
    g.event(
        AggregateKind::Task,
        task,
        &TaskEvent::TaskRequeued {
            reason: "agent_deregistered".into(),
        },
    );
    assert_eq!(g.board.size(), before - 1, "forgotten");
    assert_eq!(g.board.load_of(agent), 0);
    assert_eq!(g.board.queued().collect::<Vec<_>>(), vec![task]);
}

#[test]
fn the_board_keeps_the_last_creations_for_their_assignments_and_no_long_ones() {
    let mut g = Given::new();
    let short = g.task_with(5, &[], |t| t.description = Some("do it".into()));
    let long = g.task_with(5, &[], |t| {
        t.description = Some("x".repeat(CREATION_BYTES + 1));
    });
    match g.board.creation(short) {
        Some(TaskEvent::TaskCreated { description, .. }) => {
            assert_eq!(description.as_deref(), Some("do it"));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        g.board.creation(long).is_none(),
        "read from the log instead"
    );
    // Not in a snapshot: a board restored from one reads creations from the log.
    assert!(through_a_snapshot(&g.board).creation(short).is_none());
    // Only the last ones.
    let later: Vec<Uuid> = (0..CREATIONS).map(|_| g.task(1, &[])).collect();
    assert!(g.board.creation(short).is_none(), "the oldest went first");
    assert!(later.iter().all(|id| g.board.creation(*id).is_some()));
}

#[test]
fn tasks_no_free_agent_may_take_are_passed_over_by_kind_and_the_rest_still_assigned() {
    let mut g = Given::new();
    let plain = g.agent(&[], 2);
    let gpu_first: Vec<Uuid> = (0..50).map(|_| g.task(9, &["gpu"])).collect();
    let _pinned_elsewhere = g.task_with(8, &[], |t| {
        t.pinned_agent = Some(AgentId::new());
    });
    let takeable = g.task(5, &[]);
    let _more_gpu = g.task(4, &["gpu"]);
    let also_takeable = g.task(3, &[]);
    let assigned = g.assign();
    assert_eq!(assigned, vec![(takeable, plain), (also_takeable, plain)]);
    // Once an agent that may take them is free, they are assigned in order.
    let gpu = g.agent(&["gpu"], 3);
    assert_eq!(
        g.assign(),
        vec![
            (gpu_first[0], gpu),
            (gpu_first[1], gpu),
            (gpu_first[2], gpu)
        ]
    );
}
