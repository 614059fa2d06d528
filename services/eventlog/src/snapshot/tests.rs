//! Snapshots as stored and read back: a snapshot and the events after it fold to the state of the
//! whole history, whatever the history and wherever it was cut; anything that is not this build's
//! snapshot of the aggregate asked for, at an event the log holds, is refused with its reason.

use chrono::DateTime;
use hive_events::agent::{Agent, AgentCommand};
use hive_events::envelope::{EventMeta, encode};
use hive_events::replay::Folded;
use hive_events::subject::Subjects;
use hive_events::task::{Lifecycle, NewTask, Task, TaskCommand};
use hive_events::{Actor, AgentId};
use proptest::prelude::*;

use super::*;
use crate::command::fold_on;

fn subjects() -> Subjects {
    Subjects::new("hive.events")
}

/// The history `commands` decide one after the other on aggregate `A` `id` (those the rules refuse
/// are left out), as stored: each event at `seq` 1, 2, … on its subject, every other one with a
/// `Nats-Msg-Id`, at times to the nanosecond.
fn history<A: Aggregate>(id: Uuid, commands: Vec<(A::Command, u32)>) -> Vec<RawEvent> {
    let subject = subjects().of(A::KIND, id);
    let mut state: Option<A> = None;
    let mut events = Vec::new();
    for (n, (command, nanos)) in commands.into_iter().enumerate() {
        let Ok(event) = A::decide(state.as_ref(), command) else {
            continue;
        };
        let at = DateTime::from_timestamp(1_800_000_000 + n as i64, nanos).unwrap();
        state = Some(A::apply(state, &event, at).unwrap());
        let meta = EventMeta::new(at, Uuid::now_v7(), None, Actor::new("test"));
        let seq = events.len() as u64 + 1;
        events.push(RawEvent {
            seq,
            subject: subject.clone(),
            payload: encode(&meta, A::KIND, id, &event).into(),
            msg_id: seq.is_multiple_of(2).then(|| format!("idem-{seq}")),
            pending: 0,
        });
    }
    events
}

/// Folds `history` whole, then, for every place it can be cut, from a snapshot taken there (stored
/// and read back) and the events after it: the same state every time.
fn fold_from_every_snapshot<A: Aggregate + PartialEq>(id: Uuid, history: &[RawEvent]) {
    let mut whole = Folded::<A>::new(id);
    fold_on(&subjects(), &mut whole, history).unwrap();
    for cut in 1..=history.len() {
        let (covered, tail) = history.split_at(cut);
        let mut head = Folded::<A>::new(id);
        fold_on(&subjects(), &mut head, covered).unwrap();
        let last = &covered[cut - 1];
        let ids = Keys::default().and(covered);
        let record = Record::of(id, head.state.as_ref().unwrap(), last, ids).unwrap();
        let stored = serde_json::to_vec(&record).unwrap();

        let snapshot = Snapshot::<A>::decode(&stored, id, &last.subject).unwrap();
        snapshot.check(Some(last)).unwrap();
        for event in covered {
            if let Some(msg_id) = &event.msg_id {
                assert!(snapshot.msg_ids.may_hold(msg_id), "{msg_id}");
            }
        }
        let mut folded = Folded {
            id,
            state: Some(snapshot.state),
            last_seq: snapshot.seq,
        };
        fold_on(&subjects(), &mut folded, tail).unwrap();
        assert_eq!(folded.state, whole.state, "cut after seq {}", last.seq);
        assert_eq!(folded.last_seq, whole.last_seq);
    }
}

fn agent() -> AgentId {
    AgentId::from_uuid(Uuid::from_u128(7))
}

/// A task command of each kind, `pick` choosing which, with `x` in its values (floats among them,
/// which must come back from a snapshot to the last bit).
fn task_command(pick: u8, x: f64) -> TaskCommand {
    let agent_id = agent();
    let at = DateTime::from_timestamp(1_900_000_000, 123_456_789).unwrap();
    match pick % 14 {
        0 => TaskCommand::Queue,
        1 => TaskCommand::Assign {
            agent_id,
            lease_expires_at: at,
        },
        2 => TaskCommand::Accept { agent_id },
        3 => TaskCommand::Start { agent_id },
        4..=6 => TaskCommand::Progress {
            agent_id,
            percent: Some((x.abs() * 100.0) as u8 % 101),
            message: Some(format!("at {x}")),
        },
        7 => TaskCommand::Complete {
            agent_id,
            result: serde_json::json!({"x": x, "all": [x, x / 3.0, x * 1e300]}),
        },
        8 => TaskCommand::Fail {
            agent_id,
            error: format!("no {x}"),
            retryable: x > 0.5,
        },
        9 => TaskCommand::ScheduleRetry { retry_at: at },
        10 => TaskCommand::Requeue {
            reason: "lapsed".into(),
        },
        11 => TaskCommand::Release {
            agent_id,
            reason: "agent_restarted".into(),
        },
        12 => TaskCommand::Retry,
        _ => TaskCommand::DeadLetter {
            reason: "too many".into(),
        },
    }
}

fn task_commands(picks: Vec<(u8, f64, u32)>) -> Vec<(TaskCommand, u32)> {
    let create = TaskCommand::Create(NewTask {
        max_attempts: 3,
        labels: Default::default(),
        not_before: None,
        limits: Default::default(),
        ..NewTask::titled("t")
    });
    std::iter::once((create, 0))
        .chain(
            picks
                .into_iter()
                .map(|(pick, x, nanos)| (task_command(pick, x), nanos)),
        )
        .collect()
}

fn agent_commands(picks: Vec<(u8, u32)>) -> Vec<(AgentCommand, u32)> {
    let register = AgentCommand::Register {
        name: Some("a".into()),
        agent_type: "worker".into(),
        capabilities: vec!["rust".into(), "go".into()],
        max_concurrent_tasks: 2,
        labels: Default::default(),
    };
    std::iter::once((register, 0))
        .chain(picks.into_iter().map(|(pick, nanos)| {
            let command = match pick % 8 {
                0 => AgentCommand::MarkReady,
                1..=3 => AgentCommand::MarkLost {
                    reason: "heartbeat_timeout".into(),
                },
                4..=6 => AgentCommand::Recover,
                _ => AgentCommand::Drain,
            };
            (command, nanos)
        }))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_snapshot_and_the_events_after_it_fold_to_the_whole_historys_state(
        picks in proptest::collection::vec((any::<u8>(), any::<f64>(), 0..1_000_000_000u32), 0..60),
        agent_picks in proptest::collection::vec((any::<u8>(), 0..1_000_000_000u32), 0..60),
    ) {
        let id = Uuid::now_v7();
        let tasks = history::<Task>(id, task_commands(picks.clone()));
        fold_from_every_snapshot::<Task>(id, &tasks);
        let lifecycles = history::<Lifecycle>(id, task_commands(picks));
        fold_from_every_snapshot::<Lifecycle>(id, &lifecycles);
        let agents = history::<Agent>(id, agent_commands(agent_picks));
        fold_from_every_snapshot::<Agent>(id, &agents);
    }
}

/// A task's history of a few events, and the snapshot stored after its last.
fn stored_task() -> (Uuid, Vec<RawEvent>, serde_json::Value) {
    let id = Uuid::now_v7();
    let picks = vec![(1, 0.5, 0), (2, 0.5, 0), (3, 0.5, 0), (4, 0.25, 0)];
    let events = history::<Task>(id, task_commands(picks));
    let mut folded = Folded::<Task>::new(id);
    fold_on(&subjects(), &mut folded, &events).unwrap();
    let last = events.last().unwrap();
    let record = Record::of(
        id,
        folded.state.as_ref().unwrap(),
        last,
        Keys::default().and(&events),
    )
    .unwrap();
    (id, events, serde_json::to_value(&record).unwrap())
}

fn decode<A: Aggregate>(value: &serde_json::Value, id: Uuid) -> Result<Snapshot<A>, Ignored> {
    let subject = subjects().of(A::KIND, id);
    Snapshot::<A>::decode(&serde_json::to_vec(value).unwrap(), id, &subject)
}

#[test]
fn a_snapshot_is_stored_as_json_under_its_aggregates_key() {
    let (id, events, stored) = stored_task();
    let last = events.last().unwrap();
    assert_eq!(stored["fold_version"], FOLD_VERSION);
    assert_eq!(stored["kind"], "task");
    assert_eq!(stored["folds"], "task");
    assert_eq!(stored["id"], id.to_string());
    assert_eq!(stored["seq"], last.seq);
    assert_eq!(stored["subject"], last.subject.as_str());
    assert_eq!(stored["digest"], hex::encode(Sha256::digest(&last.payload)));
    assert_eq!(stored["state"]["lifecycle"]["status"], "running");
    let record: Record = serde_json::from_value(stored).unwrap();
    assert_eq!(record.key(), format!("task.{id}"));
    assert_eq!(key::<Task>(id), format!("task.{id}"));
    assert_eq!(key::<Lifecycle>(id), format!("task.{id}.lifecycle"));
    assert_eq!(key::<Agent>(id), format!("agent.{id}"));
    let snapshot = decode::<Task>(&serde_json::to_value(&record).unwrap(), id).unwrap();
    assert_eq!(snapshot.seq, last.seq);
    assert_eq!(snapshot.check(Some(last)), Ok(()));
}

#[test]
fn a_snapshot_larger_than_the_bucket_takes_is_not_stored() {
    let (_, _, stored) = stored_task();
    let record: Record = serde_json::from_value(stored).unwrap();
    let value = record.value(usize::MAX).unwrap();
    assert_eq!(record.value(value.len()).unwrap(), value);
    assert!(matches!(
        record.value(value.len() - 1),
        Err(Unsaved::TooLarge(n)) if n == value.len()
    ));
}

#[test]
fn what_is_not_this_builds_snapshot_of_the_aggregate_is_refused_with_its_reason() {
    let (id, _, stored) = stored_task();
    let with = |field: &str, value: serde_json::Value| {
        let mut changed = stored.clone();
        changed[field] = value;
        changed
    };
    let garbage = Snapshot::<Task>::decode(b"garbage", id, "hive.events.task.x").unwrap_err();
    assert_eq!(garbage.reason(), "undecodable");
    assert_eq!(
        decode::<Task>(
            &with("fold_version", FOLD_VERSION.wrapping_add(1).into()),
            id
        )
        .unwrap_err(),
        Ignored::FoldVersion(FOLD_VERSION.wrapping_add(1))
    );
    // Another build's state, in a shape this one cannot read, is refused for its version first.
    let mut old = with("fold_version", 0.into());
    old["state"] = serde_json::json!({"another": "shape"});
    assert_eq!(
        decode::<Task>(&old, id).unwrap_err(),
        Ignored::FoldVersion(0)
    );
    assert_eq!(
        decode::<Task>(&with("id", Uuid::now_v7().to_string().into()), id).unwrap_err(),
        Ignored::OtherAggregate
    );
    assert_eq!(
        decode::<Task>(&with("subject", "hive.events.task.other".into()), id).unwrap_err(),
        Ignored::OtherAggregate
    );
    assert_eq!(
        decode::<Task>(&with("kind", "agent".into()), id).unwrap_err(),
        Ignored::OtherAggregate
    );
    // A task's whole state is not its lifecycle, though both are kept for the same task.
    assert_eq!(
        decode::<Lifecycle>(&stored, id).unwrap_err(),
        Ignored::OtherAggregate
    );
    assert_eq!(
        decode::<Task>(&with("seq", 0.into()), id).unwrap_err(),
        Ignored::NotInLog(0)
    );
    let bad_state = decode::<Task>(&with("state", serde_json::json!({"status": 1})), id);
    assert_eq!(bad_state.unwrap_err().reason(), "undecodable");
    let bad_ids = decode::<Task>(&with("msg_ids", "AAAA".into()), id);
    assert_eq!(bad_ids.unwrap_err().reason(), "undecodable");
}

#[test]
fn a_snapshot_is_used_only_at_the_very_event_it_was_folded_up_to() {
    let (id, events, stored) = stored_task();
    let snapshot = decode::<Task>(&stored, id).unwrap();
    let last = events.last().unwrap().clone();
    // The log holds nothing there, or the aggregate's next event comes later (another history).
    assert_eq!(snapshot.check(None), Err(Ignored::NotInLog(last.seq)));
    let later = RawEvent {
        seq: last.seq + 1,
        ..last.clone()
    };
    assert_eq!(
        snapshot.check(Some(&later)),
        Err(Ignored::NotInLog(last.seq))
    );
    // Another event at the same place: a log restored from another history.
    let other = RawEvent {
        payload: events[0].payload.clone(),
        ..last.clone()
    };
    assert_eq!(snapshot.check(Some(&other)), Err(Ignored::Digest(last.seq)));
    assert_eq!(snapshot.check(Some(&last)), Ok(()));
}
