//! The replay loop's policy and bound, on stored bytes.

use super::*;
use crate::envelope::{Actor, EventMeta, encode};
use crate::project::Project;
use crate::task::{Task, TaskEvent};
use crate::{AggregateKind, TaskId};

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
}

fn subjects() -> Subjects {
    Subjects::new("hive")
}

/// A task's history as stored: created, queued (refused: it is queued already), assigned-less cancel.
fn history(id: Uuid) -> Vec<(u64, String, Vec<u8>)> {
    let created = TaskEvent::TaskCreated {
        title: "t".into(),
        description: None,
        task_type: None,
        priority: crate::Priority::NORMAL,
        required_capabilities: vec![],
        depends_on: vec![],
        waiting_on: vec![],
        project_id: None,
        pinned_agent: None,
        max_attempts: 1,
        labels: Default::default(),
        not_before: None,
        limits: Default::default(),
    };
    let events = [
        created,
        TaskEvent::TaskQueued {},
        TaskEvent::TaskCancelled {
            reason: None,
            cancelled_by: None,
        },
    ];
    let subject = subjects().of(AggregateKind::Task, id);
    let mut stored: Vec<_> = events
        .iter()
        .enumerate()
        .map(|(n, e)| {
            let meta = EventMeta::new(at(n as i64), Uuid::nil(), None, Actor::new("test"));
            let seq = n as u64 * 2 + 1;
            (
                seq,
                subject.clone(),
                encode(&meta, AggregateKind::Task, id, e),
            )
        })
        .collect();
    stored.insert(1, (2, subject, b"not json".to_vec()));
    stored
}

fn replay_all(replay: &Replay, fold: &mut Folded<Task>) -> Result<Vec<Fed>, Rejected> {
    history(fold.id)
        .iter()
        .map(|(seq, subject, bytes)| replay.feed_stored(fold, *seq, subject, bytes))
        .collect()
}

#[test]
fn stop_ends_at_the_first_event_it_cannot_fold() {
    let id = TaskId::new().as_uuid();
    let mut fold = Folded::<Task>::new(id);
    let replay = Replay::new(subjects(), OnRejected::Stop);
    let rejected = replay_all(&replay, &mut fold).unwrap_err();
    assert_eq!(rejected.seq, 2);
    assert!(rejected.reason.contains("malformed"), "{}", rejected.reason);
    assert_eq!(fold.last_seq, 1);
}

#[test]
fn skip_passes_over_what_it_cannot_fold_and_keeps_the_state() {
    let id = TaskId::new().as_uuid();
    let mut fold = Folded::<Task>::new(id);
    let replay = Replay::new(subjects(), OnRejected::Skip);
    let fed = replay_all(&replay, &mut fold).unwrap();
    let skipped: Vec<u64> = fed
        .iter()
        .filter_map(|f| match f {
            Fed::Skipped(r) => Some(r.seq),
            _ => None,
        })
        .collect();
    assert_eq!(skipped, [2, 3], "bad bytes, then an event the fold refuses");
    assert_eq!(fold.last_seq, 5);
    let task = fold.state.unwrap();
    assert_eq!(task.lifecycle.status, crate::task::TaskStatus::Cancelled);
}

#[test]
fn a_bound_by_sequence_or_by_time_stops_the_fold() {
    let id = TaskId::new().as_uuid();
    for until in [Until::Seq(4), Until::Time(at(1))] {
        let mut fold = Folded::<Task>::new(id);
        let replay = Replay::new(subjects(), OnRejected::Skip).until(until);
        let fed = replay_all(&replay, &mut fold).unwrap();
        assert_eq!(fed.last(), Some(&Fed::Past), "{until:?}");
        assert_eq!(fold.last_seq, 1, "{until:?}");
    }
}

#[test]
fn an_event_of_another_aggregate_or_subject_is_rejected() {
    let id = TaskId::new().as_uuid();
    let replay = Replay::new(subjects(), OnRejected::Stop);
    let (seq, subject, bytes) = history(id).remove(0);
    let mut elsewhere = Folded::<Task>::new(Uuid::nil());
    assert!(
        replay
            .feed_stored(&mut elsewhere, seq, &subject, &bytes)
            .is_err()
    );
    let mut project = Folded::<Project>::new(id);
    assert!(
        replay
            .feed_stored(&mut project, seq, &subject, &bytes)
            .is_err()
    );
    let wrong_subject = subjects().of(AggregateKind::Project, id);
    let mut task = Folded::<Task>::new(id);
    assert!(
        replay
            .feed_stored(&mut task, seq, &wrong_subject, &bytes)
            .is_err()
    );
    assert!(
        replay
            .feed_stored(&mut task, seq, "elsewhere", &bytes)
            .is_err()
    );
}
