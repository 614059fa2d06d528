//! A generated history: a hive's life written straight to the log, as many agents and tasks as asked
//! for, every kind of step among them.

use futures::StreamExt;
use hive_eventlog::EventLog;
use hive_events::agent::{Agent, AgentCommand};
use hive_events::project::{Project, ProjectCommand};
use hive_events::task::{NewTask, Task, TaskCommand};
use hive_events::{AgentId, Priority, ProjectId, TaskId};
use serde_json::json;

fn ctx() -> hive_eventlog::CommandContext {
    hive_eventlog::CommandContext::new(hive_events::Actor::new("test"))
}

/// A hive's life, written straight to the log: agents registering, getting ready and lost, tasks queued, assigned, run,
/// completed, failed, retried and cancelled, in a project. Returns the log's last sequence.
pub async fn scenario(log: &EventLog, agents: usize, tasks: usize) -> u64 {
    let project = ProjectId::new().as_uuid();
    let create = ProjectCommand::Create {
        name: "scenario".into(),
        description: None,
        project_type: Some("test".into()),
    };
    log.create::<Project>(project, &ctx(), create)
        .await
        .unwrap();
    let mut agent_ids = Vec::new();
    for n in 0..agents {
        let id = AgentId::new();
        let register = AgentCommand::Register {
            name: Some(format!("agent-{n}")),
            agent_type: "worker".into(),
            capabilities: vec!["rust".into()],
            max_concurrent_tasks: 2,
            labels: Default::default(),
        };
        log.create::<Agent>(id.as_uuid(), &ctx(), register)
            .await
            .unwrap();
        log.execute::<Agent>(id.as_uuid(), &ctx(), AgentCommand::MarkReady)
            .await
            .unwrap();
        if n % 3 == 2 {
            let lost = AgentCommand::MarkLost {
                reason: "heartbeat_timeout".into(),
            };
            log.execute::<Agent>(id.as_uuid(), &ctx(), lost)
                .await
                .unwrap();
        }
        agent_ids.push(id);
    }
    let agent_ids = &agent_ids;
    let one_task = async |n: usize| {
        let id = TaskId::new().as_uuid();
        let new = NewTask {
            description: Some("do it".into()),
            task_type: Some("code".into()),
            priority: Priority::new((n % 10 + 1) as i64).unwrap(),
            required_capabilities: vec!["rust".into()],
            project_id: Some(ProjectId::from_uuid(project)),
            max_attempts: 2,
            labels: Default::default(),
            not_before: None,
            limits: Default::default(),
            ..NewTask::titled(format!("task {n}"))
        };
        log.create::<Task>(id, &ctx(), TaskCommand::Create(new))
            .await
            .unwrap();
        let agent = agent_ids[n % agent_ids.len()];
        let steps: Vec<TaskCommand> = match n % 5 {
            0 => vec![],
            1 => vec![TaskCommand::Cancel {
                reason: Some("not needed".into()),
                by: None,
            }],
            _ => {
                let mut steps = vec![
                    TaskCommand::Assign {
                        agent_id: agent,
                        lease_expires_at: chrono::Utc::now(),
                    },
                    TaskCommand::Start { agent_id: agent },
                    TaskCommand::Progress {
                        agent_id: agent,
                        percent: Some(50),
                        message: Some("half".into()),
                    },
                ];
                if n % 5 == 2 {
                    steps.push(TaskCommand::Complete {
                        agent_id: agent,
                        result: json!({"n": n}),
                    });
                } else if n % 5 == 3 {
                    steps.push(TaskCommand::Fail {
                        agent_id: agent,
                        error: "boom".into(),
                        retryable: true,
                    });
                    steps.push(TaskCommand::ScheduleRetry {
                        retry_at: chrono::Utc::now(),
                    });
                }
                steps
            }
        };
        for step in steps {
            log.execute::<Task>(id, &ctx(), step).await.unwrap();
        }
    };
    // Tasks advance side by side, as in a busy hive (and so that large scenarios load quickly).
    futures::stream::iter(0..tasks)
        .for_each_concurrent(32, one_task)
        .await;
    log.last_seq().await.unwrap()
}
