//! The questions the task's rules answer for the scheduler, the API and the runtime.

use super::*;
use crate::agent::AgentStatus;
use crate::policy::Policy;
use crate::values::Capability;

fn lifecycle(status: TaskStatus) -> Lifecycle {
    given(Some(status)).unwrap().lifecycle
}

/// `due` for a task whose holder is `holder` and whose dependencies are all in `deps`.
fn due_with(
    task: &Lifecycle,
    holder: Option<AgentStatus>,
    deps: TaskStatus,
) -> Option<TaskCommand> {
    task.due(at(), &Policy::default(), holder, |_| deps, || 0.5)
}

#[test]
fn a_failure_is_retried_while_retryable_and_attempts_remain() {
    let failed = lifecycle(S::Failed);
    assert_eq!(failed.after_failure(), Some(AfterFailure::Retry));
    let due = due_with(&failed, None, S::Completed);
    let backoff = Policy::default().backoff(1, 0.5);
    assert_eq!(
        due,
        Some(TaskCommand::ScheduleRetry {
            retry_at: at() + backoff
        })
    );
    let exhausted = Lifecycle {
        attempts: 3,
        ..failed.clone()
    };
    let reason = "attempts exhausted (3 of 3)".to_owned();
    assert_eq!(
        exhausted.after_failure(),
        Some(AfterFailure::DeadLetter {
            reason: reason.clone()
        })
    );
    assert_eq!(
        due_with(&exhausted, None, S::Completed),
        Some(TaskCommand::DeadLetter {
            reason: reason.clone()
        })
    );
    // decide refuses the retry with the same words.
    let refused = Lifecycle::decide(
        Some(&exhausted),
        TaskCommand::ScheduleRetry { retry_at: at() },
    );
    assert_eq!(refused, Err(DomainError::invalid("retry", reason)));
    let final_failure = Lifecycle {
        last_error_retryable: false,
        ..failed
    };
    assert!(matches!(
        final_failure.after_failure(),
        Some(AfterFailure::DeadLetter { reason }) if reason == "the failure is not retryable"
    ));
    assert_eq!(lifecycle(S::Running).after_failure(), None);
}

#[test]
fn a_waiting_task_queues_when_its_dependencies_complete_and_blocks_when_one_cannot() {
    let waiting = lifecycle(S::Waiting);
    assert_eq!(due_with(&waiting, None, S::Running), None);
    assert_eq!(
        due_with(&waiting, None, S::Completed),
        Some(TaskCommand::Queue)
    );
    for stuck in [S::Cancelled, S::DeadLettered, S::Blocked] {
        let Some(TaskCommand::Block { reason }) = due_with(&waiting, None, stuck) else {
            panic!("a {stuck:?} dependency blocks");
        };
        assert!(reason.ends_with(stuck.as_str()), "{reason}");
    }
}

/// An operator may retry a dead-lettered task; its blocked dependents then wait on it again (and in
/// turn unblock theirs), rather than stay blocked for good.
#[test]
fn a_blocked_task_is_unblocked_once_no_dependency_is_stuck() {
    let blocked = lifecycle(S::Blocked);
    assert_eq!(due_with(&blocked, None, S::DeadLettered), None);
    assert_eq!(due_with(&blocked, None, S::Blocked), None);
    assert_eq!(due_with(&blocked, None, S::Cancelled), None);
    for fine in [S::Queued, S::Waiting, S::Completed] {
        assert_eq!(due_with(&blocked, None, fine), Some(TaskCommand::Unblock));
    }
    let unblocked = run(given(Some(S::Blocked)), [TaskCommand::Unblock]).unwrap();
    assert_eq!(unblocked.lifecycle.status, S::Waiting);
    assert_eq!(unblocked.details.reason, None);
    // Retrying the dead-lettered dependency is what makes it not stuck.
    let dependency = run(given(Some(S::DeadLettered)), [TaskCommand::Retry]).unwrap();
    assert!(!dependency.lifecycle.status.can_never_complete());
}

#[test]
fn a_new_task_waits_on_open_dependencies_and_refuses_missing_or_stuck_ones() {
    let [a, b, c] = [1, 2, 3].map(|n| TaskId::from_uuid(uuid::Uuid::from_u128(n)));
    let open = crate::task::rules::waiting_on([
        (a, Some(S::Completed)),
        (b, Some(S::Running)),
        (c, Some(S::Waiting)),
    ]);
    assert_eq!(open, Ok(vec![b, c]));
    assert!(matches!(
        crate::task::rules::waiting_on([(a, None)]),
        Err(DomainError::Invalid { field: "depends_on", message }) if message.contains("does not exist")
    ));
    for stuck in [S::Cancelled, S::DeadLettered, S::Blocked] {
        assert!(
            crate::task::rules::waiting_on([(a, Some(stuck))]).is_err(),
            "{stuck:?}"
        );
    }
}

#[test]
fn a_task_held_by_a_lost_or_gone_agent_or_past_its_lease_is_requeued() {
    let reason = |task: &Lifecycle, holder| match due_with(task, holder, S::Completed) {
        Some(TaskCommand::Requeue { reason }) => Some(reason),
        _ => None,
    };
    for status in [S::Assigned, S::Accepted, S::Running] {
        let task = lifecycle(status);
        assert_eq!(task.holder(), Some(agent()));
        assert_eq!(
            reason(&task, Some(AgentStatus::Lost)).as_deref(),
            Some("agent_lost")
        );
        assert_eq!(
            reason(&task, Some(AgentStatus::Deregistered)).as_deref(),
            Some("agent_deregistered")
        );
    }
    // The lease in `given` lapses at `at()`: due now for an assigned task only.
    assert_eq!(lifecycle(S::Assigned).deadline(), Some(at()));
    assert_eq!(
        reason(&lifecycle(S::Assigned), Some(AgentStatus::Ready)).as_deref(),
        Some("lease_expired")
    );
    assert_eq!(
        reason(&lifecycle(S::Running), Some(AgentStatus::Ready)),
        None
    );
    assert_eq!(lifecycle(S::Queued).holder(), None);
}

#[test]
fn a_back_off_ends_at_its_time() {
    let scheduled = lifecycle(S::RetryScheduled);
    assert_eq!(scheduled.deadline(), Some(at()));
    assert_eq!(
        due_with(&scheduled, None, S::Completed),
        Some(TaskCommand::Queue)
    );
    let later = Lifecycle {
        retry_at: Some(at() + chrono::Duration::seconds(1)),
        ..scheduled
    };
    assert_eq!(due_with(&later, None, S::Completed), None);
}

#[test]
fn only_a_capable_agent_takes_a_task_and_only_its_own_if_pinned() {
    let caps = |names: &[&str]| -> Vec<Capability> {
        names.iter().map(|n| Capability::new(*n).unwrap()).collect()
    };
    let task = lifecycle(S::Queued);
    let other = AgentId::from_uuid(uuid::Uuid::from_u128(0xB));
    assert!(task.can_be_taken_by(other, &caps(&["git", "rust"])));
    assert!(!task.can_be_taken_by(other, &caps(&["git"])));
    let pinned = Lifecycle {
        pinned_agent: Some(agent()),
        ..task
    };
    assert!(!pinned.can_be_taken_by(other, &caps(&["rust"])));
    assert!(pinned.can_be_taken_by(agent(), &caps(&["rust"])));
}

#[test]
fn statuses_answer_the_questions_consumers_ask() {
    let holding: Vec<_> = S::ALL.into_iter().filter(|s| s.holds_agent()).collect();
    assert_eq!(holding, [S::Assigned, S::Accepted, S::Running]);
    let stuck: Vec<_> = S::ALL
        .into_iter()
        .filter(|s| s.can_never_complete())
        .collect();
    assert_eq!(stuck, [S::DeadLettered, S::Cancelled, S::Blocked]);
    let legacy: Vec<_> = S::ALL.map(TaskStatus::agent_hive_2).into();
    assert_eq!(
        legacy,
        [
            "pending",
            "pending",
            "assigned",
            "assigned",
            "in_progress",
            "completed",
            "failed",
            "pending",
            "failed",
            "cancelled",
            "failed"
        ]
    );
}
