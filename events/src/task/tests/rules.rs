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
    let before = at() - chrono::Duration::seconds(1);
    assert_eq!(lifecycle(S::Assigned).deadline(before), Some(at()));
    assert_eq!(
        lifecycle(S::Assigned).deadline(at()),
        None,
        "a moment past is no deadline"
    );
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
    assert_eq!(
        scheduled.deadline(at() - chrono::Duration::seconds(1)),
        Some(at())
    );
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

#[test]
fn a_delayed_task_waits_for_its_time_then_for_its_dependencies() {
    let created = |waiting_on: Vec<TaskId>| {
        let new = NewTask {
            not_before: Some(at() + chrono::Duration::seconds(30)),
            ..new_task(waiting_on)
        };
        run(None, [TaskCommand::Create(new)]).unwrap().lifecycle
    };
    let task = created(vec![]);
    assert_eq!(task.status, S::Waiting, "delayed: waiting, not queued");
    let later = at() + chrono::Duration::seconds(30);
    let due_at =
        |task: &Lifecycle, now, deps| task.due(now, &Policy::default(), None, |_| deps, || 0.5);
    assert_eq!(due_at(&task, at(), S::Completed), None);
    assert_eq!(task.deadline(at()), Some(later));
    assert_eq!(due_at(&task, later, S::Completed), Some(TaskCommand::Queue));
    assert_eq!(
        task.deadline(later),
        None,
        "its time came: no deadline left"
    );
    // Its time came, a dependency has not completed: it waits on it.
    let waiting = created(vec![dep()]);
    assert_eq!(due_at(&waiting, later, S::Running), None);
    assert_eq!(
        due_at(&waiting, later, S::Completed),
        Some(TaskCommand::Queue)
    );
    // A dependency that cannot complete blocks it before its time.
    assert!(matches!(
        due_at(&waiting, at(), S::Cancelled),
        Some(TaskCommand::Block { .. })
    ));
    // Cancellable while it waits.
    let cancel = TaskCommand::Cancel {
        reason: None,
        by: Some("operator".into()),
    };
    assert!(Lifecycle::decide(Some(&task), cancel).is_ok());
}

#[test]
fn a_running_task_times_out_at_its_first_limit_and_progress_defers_the_silent_one() {
    let limits = Limits {
        timeout_secs: Some(60),
        heartbeat_timeout_secs: Some(10),
        cancel_grace_secs: 3,
    };
    let new = NewTask {
        limits,
        ..new_task(vec![])
    };
    let secs = chrono::Duration::seconds;
    let fold = |task: Task, command, when| {
        let event = Task::decide(Some(&task), command).unwrap();
        Task::apply(Some(task), &event, when).unwrap()
    };
    let created = run(None, [TaskCommand::Create(new)]).unwrap();
    let started = fold(fold(created, assign(), at()), start(), at());
    let due_at = |task: &Task, now| {
        task.lifecycle.due(
            now,
            &Policy::default(),
            Some(AgentStatus::Ready),
            |_| S::Completed,
            || 0.5,
        )
    };
    let silent = TaskCommand::TimeOut {
        limit: TimeLimit::HeartbeatTimeout,
    };
    assert_eq!(started.lifecycle.deadline(at()), Some(at() + secs(10)));
    assert_eq!(due_at(&started, at() + secs(9)), None);
    assert_eq!(due_at(&started, at() + secs(10)), Some(silent.clone()));
    // Progress at +8 s moves the silent limit to +18 s.
    let progress = TaskCommand::Progress {
        agent_id: agent(),
        percent: Some(10),
        message: None,
    };
    let heard = fold(started, progress, at() + secs(8));
    assert_eq!(due_at(&heard, at() + secs(10)), None);
    assert_eq!(
        heard.lifecycle.deadline(at() + secs(10)),
        Some(at() + secs(18))
    );
    // Kept talking, it still passes its run limit at +60 s.
    let mut talking = heard;
    for s in (16..=56).step_by(8) {
        let progress = TaskCommand::Progress {
            agent_id: agent(),
            percent: None,
            message: Some("still going".into()),
        };
        talking = fold(talking, progress, at() + secs(s));
    }
    let run_limit = TaskCommand::TimeOut {
        limit: TimeLimit::Timeout,
    };
    assert_eq!(due_at(&talking, at() + secs(60)), Some(run_limit.clone()));
    // Timed out: failed, retryable, its retry policy applies; the agent is told to stop.
    let stop = talking.lifecycle.stop_for(&TaskEvent::TaskTimedOut {
        limit: TimeLimit::Timeout,
        after_secs: 60,
    });
    assert_eq!(stop, Some((agent(), 1)));
    let timed_out = fold(talking, run_limit, at() + secs(60));
    assert_eq!(timed_out.lifecycle.status, S::Failed);
    assert_eq!(timed_out.details.reason.as_deref(), Some("timed_out"));
    assert_eq!(
        timed_out.details.last_error.as_deref(),
        Some("timed_out: ran longer than its timeout_secs (60 s)")
    );
    assert_eq!(
        timed_out.lifecycle.after_failure(),
        Some(AfterFailure::Retry)
    );
}

#[test]
fn a_task_without_limits_never_times_out_and_refuses_a_time_out() {
    let new = NewTask {
        limits: Limits::default(),
        ..new_task(vec![])
    };
    let task = run(None, [TaskCommand::Create(new), assign(), start()]).unwrap();
    assert_eq!(task.lifecycle.deadline(at()), None);
    let far = at() + chrono::Duration::days(365);
    assert_eq!(
        due_with(&task.lifecycle, Some(AgentStatus::Ready), S::Completed),
        None
    );
    assert_eq!(
        task.lifecycle
            .due(far, &Policy::default(), None, |_| S::Completed, || 0.5),
        None
    );
    let refused = Lifecycle::decide(
        Some(&task.lifecycle),
        TaskCommand::TimeOut {
            limit: TimeLimit::Timeout,
        },
    );
    assert!(matches!(
        refused,
        Err(DomainError::Invalid { field: "limit", .. })
    ));
}

#[test]
fn only_taking_a_task_from_its_holder_calls_for_a_stop() {
    let running = lifecycle(S::Running);
    let cancelled = TaskEvent::TaskCancelled {
        reason: None,
        cancelled_by: Some("operator".into()),
    };
    let requeued = TaskEvent::TaskRequeued {
        reason: "operator".into(),
    };
    assert_eq!(running.stop_for(&cancelled), Some((agent(), 1)));
    assert_eq!(running.stop_for(&requeued), Some((agent(), 1)));
    let completed = TaskEvent::TaskCompleted {
        result: serde_json::Value::Null,
    };
    assert_eq!(running.stop_for(&completed), None, "its agent's own word");
    assert_eq!(lifecycle(S::Queued).stop_for(&cancelled), None, "no holder");
    assert_eq!(
        lifecycle(S::Assigned).stop_for(&cancelled),
        Some((agent(), 1))
    );
}

#[test]
fn limits_are_bounded() {
    let check = |limits: Limits| limits.check().map_err(|e| e.to_string());
    assert!(check(Limits::default()).is_ok());
    let zero = Limits {
        timeout_secs: Some(0),
        ..Limits::default()
    };
    assert!(check(zero).unwrap_err().contains("timeout_secs"));
    let long_grace = Limits {
        cancel_grace_secs: 3601,
        ..Limits::default()
    };
    assert!(check(long_grace).unwrap_err().contains("cancel_grace_secs"));
    let new = NewTask {
        limits: Limits {
            heartbeat_timeout_secs: Some(86_401),
            ..Limits::default()
        },
        ..new_task(vec![])
    };
    assert!(matches!(
        Lifecycle::decide(None, TaskCommand::Create(new)),
        Err(DomainError::Invalid {
            field: "heartbeat_timeout_secs",
            ..
        })
    ));
}
