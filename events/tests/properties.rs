//! Properties of the domain, over random sequences of commands: every event a command yields folds onto
//! the state it was decided on; the state stays valid; what never changes again does not; and the fold
//! of the emitted events, written and read back through the envelope, equals the state held.

use chrono::{DateTime, Duration, TimeZone, Utc};
use hive_events::agent::{Agent, AgentCommand, AgentStatus};
use hive_events::aggregate::{Aggregate, EventSchema};
use hive_events::envelope::{decode, encode};
use hive_events::task::{Limits, NewTask, Task, TaskCommand, TaskStatus, TimeLimit};
use hive_events::{Actor, AgentId, AggregateKind, DomainEvent, EventMeta, Priority, TaskId};
use proptest::prelude::*;
use uuid::Uuid;

fn agent(n: u8) -> AgentId {
    AgentId::from(Uuid::from_u128(u128::from(n) + 1))
}

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

/// The task commands, over a few agents (so that the wrong one reports, too).
fn task_command() -> impl Strategy<Value = TaskCommand> {
    let who = (0u8..3).prop_map(agent);
    prop_oneof![
        Just(TaskCommand::Queue),
        (who.clone(), 1i64..600).prop_map(|(agent_id, secs)| TaskCommand::Assign {
            agent_id,
            lease_expires_at: start() + Duration::seconds(secs),
        }),
        who.clone()
            .prop_map(|agent_id| TaskCommand::Accept { agent_id }),
        who.clone()
            .prop_map(|agent_id| TaskCommand::Start { agent_id }),
        (
            who.clone(),
            proptest::option::of(0u8..=120),
            proptest::option::of("[a-z ]{0,12}")
        )
            .prop_map(|(agent_id, percent, message)| TaskCommand::Progress {
                agent_id,
                percent,
                message,
            }),
        who.clone().prop_map(|agent_id| TaskCommand::Complete {
            agent_id,
            result: serde_json::json!({"ok": true}),
        }),
        (who, any::<bool>()).prop_map(|(agent_id, retryable)| TaskCommand::Fail {
            agent_id,
            error: "it broke".into(),
            retryable,
        }),
        (1i64..600).prop_map(|secs| TaskCommand::ScheduleRetry {
            retry_at: start() + Duration::seconds(secs),
        }),
        Just(TaskCommand::Requeue {
            reason: "agent_lost".into()
        }),
        Just(TaskCommand::Retry),
        Just(TaskCommand::DeadLetter {
            reason: "attempts exhausted".into()
        }),
        proptest::option::of("[a-z]{0,8}")
            .prop_map(|reason| TaskCommand::Cancel { reason, by: None }),
        Just(TaskCommand::TimeOut {
            limit: TimeLimit::Timeout
        }),
        Just(TaskCommand::Block {
            reason: "a dependency was cancelled".into()
        }),
    ]
}

fn agent_command() -> impl Strategy<Value = AgentCommand> {
    prop_oneof![
        (proptest::collection::vec("[a-z]{1,6}", 0..3), 0u32..20).prop_map(
            |(capabilities, max_concurrent_tasks)| AgentCommand::Register {
                name: None,
                agent_type: "worker".into(),
                capabilities,
                max_concurrent_tasks,
                labels: Default::default(),
            }
        ),
        Just(AgentCommand::MarkReady),
        Just(AgentCommand::MarkLost {
            reason: "heartbeat_timeout".into()
        }),
        Just(AgentCommand::Recover),
        Just(AgentCommand::Drain),
        Just(AgentCommand::Deregister { reason: None }),
    ]
}

/// Events with the times they occurred at.
type Timed<E> = Vec<(E, DateTime<Utc>)>;

/// Runs `commands` through decide and apply; returns the state and the events with their times.
/// Fails when a decided event does not fold, or `valid` does not hold after a step.
fn run<A: Aggregate>(
    commands: impl IntoIterator<Item = A::Command>,
    valid: impl Fn(Option<&A>, &A) -> Result<(), TestCaseError>,
) -> Result<(Option<A>, Timed<A::Event>), TestCaseError>
where
    A::Event: std::fmt::Debug,
{
    let mut state: Option<A> = None;
    let mut events = Vec::new();
    let mut at = start();
    for command in commands {
        at += Duration::milliseconds(250);
        let Ok(event) = A::decide(state.as_ref(), command) else {
            continue;
        };
        let next = A::apply(state.clone(), &event, at);
        prop_assert!(
            next.is_ok(),
            "a decided event must fold: {event:?} on {state:?}"
        );
        let next = next.unwrap();
        valid(state.as_ref(), &next)?;
        state = Some(next);
        events.push((event, at));
    }
    Ok((state, events))
}

/// Writes each event as the log stores it and reads it back.
fn through_the_envelope<E: EventSchema>(
    kind: AggregateKind,
    id: Uuid,
    events: &[(E, DateTime<Utc>)],
) -> Vec<(DomainEvent, DateTime<Utc>)> {
    events
        .iter()
        .map(|(event, at)| {
            let meta = EventMeta::new(*at, Uuid::now_v7(), None, Actor::new("proptest"));
            let bytes = encode(&meta, kind, id, event);
            let read = decode(&bytes, Some((kind, id))).expect("an event we wrote decodes");
            (read.event, read.meta.occurred_at)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn any_task_commands_keep_the_task_valid_and_its_events_fold_to_it(
        waiting in any::<bool>(),
        max_attempts in 1u32..4,
        commands in proptest::collection::vec(task_command(), 0..40),
    ) {
        let dependency = TaskId::from(Uuid::from_u128(99));
        let create = TaskCommand::Create(NewTask {
            title: "a property".into(),
            description: None,
            task_type: None,
            priority: Priority::NORMAL,
            required_capabilities: vec![],
            depends_on: if waiting { vec![dependency] } else { vec![] },
            waiting_on: if waiting { vec![dependency] } else { vec![] },
            project_id: None,
            pinned_agent: None,
            max_attempts,
            labels: Default::default(),
            not_before: None,
            limits: Limits {
                timeout_secs: Some(60),
                ..Limits::default()
            },
        });
        let (state, events) = run::<Task>(
            std::iter::once(create).chain(commands),
            |before, after| {
                if let Some(before) = before {
                    let status = before.lifecycle.status;
                    prop_assert!(
                        !matches!(status, TaskStatus::Completed | TaskStatus::Cancelled),
                        "a {:?} task changed", status
                    );
                }
                let (after, details) = (&after.lifecycle, &after.details);
                if after.status.holds_agent() {
                    prop_assert!(after.holder().is_some(), "{:?} without an agent", after.status);
                }
                if after.status == TaskStatus::Assigned {
                    prop_assert!(after.lease_expires_at.is_some(), "assigned without a lease");
                }
                if after.status == TaskStatus::RetryScheduled {
                    prop_assert!(after.retry_at.is_some(), "a retry without its time");
                }
                prop_assert!(details.progress.is_none_or(|p| p <= 100), "progress {:?}", details.progress);
                Ok(())
            },
        )?;
        let id = Uuid::from_u128(7);
        let read = through_the_envelope(AggregateKind::Task, id, &events);
        let folded = Task::fold(read.iter().map(|(event, at)| match event {
            DomainEvent::Task(event) => (event, *at),
            other => panic!("a task's event read back as {other:?}"),
        }));
        prop_assert_eq!(folded.ok().flatten(), state);
    }

    #[test]
    fn any_agent_commands_keep_the_agent_valid_and_its_events_fold_to_it(
        commands in proptest::collection::vec(agent_command(), 0..30),
    ) {
        let (state, events) = run::<Agent>(commands, |before, after| {
            if let Some(before) = before {
                prop_assert!(
                    before.status != AgentStatus::Deregistered,
                    "a deregistered agent changed"
                );
                prop_assert_eq!(before.registered_at, after.registered_at);
            }
            prop_assert!(after.updated_at >= after.registered_at);
            Ok(())
        })?;
        let id = Uuid::from_u128(8);
        let read = through_the_envelope(AggregateKind::Agent, id, &events);
        let folded = Agent::fold(read.iter().map(|(event, at)| match event {
            DomainEvent::Agent(event) => (event, *at),
            other => panic!("an agent's event read back as {other:?}"),
        }));
        prop_assert_eq!(folded.ok().flatten(), state);
    }
}
