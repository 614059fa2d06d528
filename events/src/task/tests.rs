//! Given/when/then tests of the task: its transition table ([`transitions`]) and the questions its
//! rules answer ([`rules`]), on tasks brought to each state through their real events.

mod rules;
mod transitions;
mod waiting;

use super::*;
use crate::ids::{AgentId, TaskId};
use crate::values::Priority;
use TaskStatus as S;

fn at() -> DateTime<Utc> {
    "2026-01-02T03:04:05Z".parse().unwrap()
}

fn agent() -> AgentId {
    AgentId::from_uuid(uuid::Uuid::from_u128(0xA))
}

fn dep() -> TaskId {
    TaskId::from_uuid(uuid::Uuid::from_u128(0xD))
}

fn new_task(waiting_on: Vec<TaskId>) -> NewTask {
    NewTask {
        title: "build".into(),
        description: None,
        task_type: Some("code".into()),
        priority: Priority::NORMAL,
        required_capabilities: vec!["rust".into()],
        depends_on: waiting_on.clone(),
        waiting_on,
        project_id: None,
        pinned_agent: None,
        max_attempts: 3,
        labels: Default::default(),
        not_before: None,
        limits: Limits {
            timeout_secs: Some(60),
            ..Limits::default()
        },
    }
}

fn run(state: Option<Task>, commands: impl IntoIterator<Item = TaskCommand>) -> Option<Task> {
    commands.into_iter().fold(state, |state, command| {
        let event = Task::decide(state.as_ref(), command).unwrap();
        Some(Task::apply(state, &event, at()).unwrap())
    })
}

fn start() -> TaskCommand {
    TaskCommand::Start { agent_id: agent() }
}

fn assign() -> TaskCommand {
    TaskCommand::Assign {
        agent_id: agent(),
        lease_expires_at: at(),
    }
}

fn fail(retryable: bool) -> TaskCommand {
    TaskCommand::Fail {
        agent_id: agent(),
        error: "exit 1".into(),
        retryable,
    }
}

/// A task brought to `status` through its real events.
fn given(status: Option<TaskStatus>) -> Option<Task> {
    use TaskCommand as C;
    let start = C::Start { agent_id: agent() };
    let (create, path): (_, Vec<TaskCommand>) = match status {
        None => return None,
        Some(S::Waiting) => (new_task(vec![dep()]), vec![]),
        Some(S::Blocked) => (
            new_task(vec![dep()]),
            vec![C::Block {
                reason: "dependency cancelled".into(),
            }],
        ),
        Some(S::Queued) => (new_task(vec![]), vec![]),
        Some(S::Assigned) => (new_task(vec![]), vec![assign()]),
        Some(S::Accepted) => (
            new_task(vec![]),
            vec![assign(), C::Accept { agent_id: agent() }],
        ),
        Some(S::Running) => (new_task(vec![]), vec![assign(), start]),
        Some(S::Completed) => (
            new_task(vec![]),
            vec![
                assign(),
                start,
                C::Complete {
                    agent_id: agent(),
                    result: serde_json::json!({"ok": true}),
                },
            ],
        ),
        Some(S::Failed) => (new_task(vec![]), vec![assign(), start, fail(true)]),
        Some(S::RetryScheduled) => (
            new_task(vec![]),
            vec![assign(), fail(true), C::ScheduleRetry { retry_at: at() }],
        ),
        Some(S::DeadLettered) => (
            new_task(vec![]),
            vec![
                assign(),
                fail(false),
                C::DeadLetter {
                    reason: "not retryable".into(),
                },
            ],
        ),
        Some(S::Cancelled) => (
            new_task(vec![]),
            vec![C::Cancel {
                reason: None,
                by: None,
            }],
        ),
    };
    let task = run(None, std::iter::once(C::Create(create)).chain(path));
    assert_eq!(task.as_ref().map(|t| t.lifecycle.status), status);
    task
}
