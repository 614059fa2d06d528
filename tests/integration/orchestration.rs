//! Orchestration end to end: the scheduler assigns on events, agents report over HTTP, failures retry
//! and dead-letter, lost agents give their tasks back, dependencies release their dependents, a standby
//! scheduler takes over (see `leadership`), and Agent Hive 2.0's routes answer.

use hive_events::AggregateKind;
use hive_tests::World;
use serde_json::json;
use uuid::Uuid;

use hive_tests::api::{id, keep_alive, ready_agent, report};

#[tokio::test]
async fn a_task_reaches_a_capable_agent_by_push_and_completes() {
    let world = World::new().await;
    let hive = world.full_hive().await;
    let _other = ready_agent(&hive, &world, &["python"], 4).await;
    let agent = ready_agent(&hive, &world, &["rust", "git"], 1).await;
    let mut assignments = hive.assignments(&agent).await;

    let (_, created) = hive
        .post(
            "/api/v1/tasks",
            json!({"title": "build", "required_capabilities": ["rust"]}),
        )
        .await;
    let task = id(&created, "task_id");
    let pushed = assignments.next().await;
    assert_eq!(pushed["task_id"], task.as_str());
    assert_eq!(pushed["title"], "build");

    let who = json!({"agent_id": agent});
    report(&hive, &task, "accept", who.clone()).await;
    report(&hive, &task, "start", who.clone()).await;
    report(
        &hive,
        &task,
        "progress",
        json!({"agent_id": agent, "percent": 50, "message": "halfway"}),
    )
    .await;
    let done = report(
        &hive,
        &task,
        "complete",
        json!({"agent_id": agent, "result": {"ok": true}}),
    )
    .await;
    let (_, view) = hive
        .get_at(
            &format!("/api/v1/tasks/{task}"),
            done["seq"].as_u64().unwrap(),
        )
        .await;
    assert_eq!(
        (view["state"].as_str(), view["status"].as_str()),
        (Some("completed"), Some("completed"))
    );
    assert_eq!(view["result"], json!({"ok": true}));
    assert_eq!(view["agent_id"], agent.as_str());

    // Only the assigned agent may report, and only what its state allows.
    let (status, body) = hive
        .post(
            &format!("/api/v1/tasks/{task}/fail"),
            json!({"agent_id": agent, "error": "late"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("invalid_transition"))
    );
    let (_, other_task) = hive
        .post(
            "/api/v1/tasks",
            json!({"title": "second", "required_capabilities": ["rust"]}),
        )
        .await;
    let second = id(&other_task, "task_id");
    assert_eq!(assignments.next().await["task_id"], second.as_str());
    let (status, body) = hive
        .post(
            &format!("/api/v1/tasks/{second}/accept"),
            json!({"agent_id": Uuid::now_v7()}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("not_assignee"))
    );
    let (status, body) = hive
        .post(&format!("/api/v1/tasks/{second}/accept"), json!({}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("validation_failed"))
    );
    hive.stop().await;
}

#[tokio::test]
async fn a_failing_task_is_retried_with_backoff_then_dead_lettered() {
    let mut world = World::new().await;
    world.config.retry_base_secs = 0.05;
    let hive = world.full_hive().await;
    let agent = ready_agent(&hive, &world, &[], 1).await;
    let mut assignments = hive.assignments(&agent).await;
    let (_, created) = hive
        .post(
            "/api/v1/tasks",
            json!({"title": "flaky", "max_attempts": 2}),
        )
        .await;
    let task = id(&created, "task_id");
    let task_uuid: Uuid = task.parse().unwrap();

    for attempt in 1..=2 {
        let pushed = assignments.next().await;
        assert_eq!(
            (pushed["task_id"].as_str(), pushed["attempt"].as_u64()),
            (Some(task.as_str()), Some(attempt))
        );
        report(&hive, &task, "start", json!({"agent_id": agent})).await;
        report(
            &hive,
            &task,
            "fail",
            json!({"agent_id": agent, "error": format!("boom {attempt}")}),
        )
        .await;
    }
    world
        .wait_for_event(AggregateKind::Task, task_uuid, "TaskRetryScheduled")
        .await;
    let dead = world
        .wait_for_event(AggregateKind::Task, task_uuid, "TaskDeadLettered")
        .await;
    let (_, view) = hive.get_at(&format!("/api/v1/tasks/{task}"), dead).await;
    assert_eq!(
        (view["state"].as_str(), view["attempts"].as_u64()),
        (Some("dead_lettered"), Some(2))
    );
    assert_eq!(view["last_error"], "boom 2");

    // An operator gives it another round.
    report(&hive, &task, "retry", json!({})).await;
    let pushed = assignments.next().await;
    assert_eq!(
        (pushed["task_id"].as_str(), pushed["attempt"].as_u64()),
        (Some(task.as_str()), Some(1))
    );
    hive.stop().await;
}

#[tokio::test]
async fn a_lost_agent_gives_its_tasks_back_and_recovers_on_its_next_heartbeat() {
    let mut world = World::new().await;
    world.config.heartbeat_timeout_secs = 0.5;
    let hive = world.full_hive().await;
    let first = ready_agent(&hive, &world, &[], 1).await;
    let first_alive = keep_alive(&world, &first).await;
    let mut first_assignments = hive.assignments(&first).await;
    let (_, created) = hive
        .post("/api/v1/tasks", json!({"title": "survives"}))
        .await;
    let task = id(&created, "task_id");
    assert_eq!(first_assignments.next().await["task_id"], task.as_str());
    report(&hive, &task, "accept", json!({"agent_id": first})).await;

    // The first agent stops heartbeating: it is lost and its task goes back to the queue.
    drop(first_alive);
    let first_uuid: Uuid = first.parse().unwrap();
    world
        .wait_for_event(AggregateKind::Agent, first_uuid, "AgentLost")
        .await;
    world
        .wait_for_event(AggregateKind::Task, task.parse().unwrap(), "TaskRequeued")
        .await;
    let second = ready_agent(&hive, &world, &[], 1).await;
    let _second_alive = keep_alive(&world, &second).await;
    let mut second_assignments = hive.assignments(&second).await;
    assert_eq!(second_assignments.next().await["task_id"], task.as_str());
    let (_, history) = hive
        .get_at(&format!("/api/v1/tasks/{task}/events"), 0)
        .await;
    let requeued = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "TaskRequeued")
        .unwrap()
        .clone();
    assert_eq!(requeued["data"]["reason"], "agent_lost");

    let (status, _) = hive
        .post(&format!("/api/v1/agents/{first}/heartbeat"), json!({}))
        .await;
    assert_eq!(status, 200);
    world
        .wait_for_event(AggregateKind::Agent, first_uuid, "AgentRecovered")
        .await;
    hive.stop().await;
}

#[tokio::test]
async fn an_assignment_not_accepted_in_time_is_requeued() {
    let mut world = World::new().await;
    world.config.assignment_lease_secs = 0.3;
    let hive = world.full_hive().await;
    let agent = ready_agent(&hive, &world, &[], 1).await;
    let (_, created) = hive
        .post("/api/v1/tasks", json!({"title": "ignored"}))
        .await;
    let task: Uuid = id(&created, "task_id").parse().unwrap();
    world
        .wait_for_event(AggregateKind::Task, task, "TaskAssigned")
        .await;
    // Keep the agent alive, but never accept: the lease lapses and the task is assigned again.
    let (status, _) = hive
        .post(&format!("/api/v1/agents/{agent}/heartbeat"), json!({}))
        .await;
    assert_eq!(status, 200);
    world
        .wait_for_event(AggregateKind::Task, task, "TaskRequeued")
        .await;
    world
        .wait_for_nth_event(AggregateKind::Task, task, "TaskAssigned", 2)
        .await;
    // A late accept of the first attempt (its answer lost, sent again) does not accept a later one.
    let (status, refused) = hive
        .post(
            &format!("/api/v1/tasks/{task}/accept"),
            json!({"agent_id": agent, "attempt": 1}),
        )
        .await;
    assert_eq!(status, 403, "{refused}");
    assert_eq!(refused["error"]["code"], "not_assignee", "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("attempt 1 of the task is over"),
        "{message}"
    );
    hive.stop().await;
}

#[tokio::test]
async fn dependents_wait_for_completion_and_are_blocked_by_a_cancel() {
    let world = World::new().await;
    let hive = world.full_hive().await;
    let agent = ready_agent(&hive, &world, &[], 2).await;
    let mut assignments = hive.assignments(&agent).await;
    let (_, first) = hive.post("/api/v1/tasks", json!({"title": "first"})).await;
    let first = id(&first, "task_id");
    assert_eq!(assignments.next().await["task_id"], first.as_str());
    let (_, doomed) = hive
        .post(
            "/api/v1/tasks",
            json!({"title": "doomed", "required_capabilities": ["nobody"]}),
        )
        .await;
    let doomed = id(&doomed, "task_id");
    let (_, after) = hive
        .post(
            "/api/v1/tasks",
            json!({"title": "after", "depends_on": [first]}),
        )
        .await;
    let after = id(&after, "task_id");
    let (_, never) = hive
        .post(
            "/api/v1/tasks",
            json!({"title": "never", "depends_on": [doomed]}),
        )
        .await;
    let never = id(&never, "task_id");

    report(&hive, &first, "start", json!({"agent_id": agent})).await;
    report(&hive, &first, "complete", json!({"agent_id": agent})).await;
    assert_eq!(
        assignments.next().await["task_id"],
        after.as_str(),
        "released by its dependency"
    );

    report(
        &hive,
        &doomed,
        "cancel",
        json!({"reason": "no agent can do it"}),
    )
    .await;
    let blocked = world
        .wait_for_event(AggregateKind::Task, never.parse().unwrap(), "TaskBlocked")
        .await;
    let (_, view) = hive
        .get_at(&format!("/api/v1/tasks/{never}"), blocked)
        .await;
    assert_eq!(
        (view["state"].as_str(), view["status"].as_str()),
        (Some("blocked"), Some("failed"))
    );
    assert!(view["reason"].as_str().unwrap().contains(&doomed));
    hive.stop().await;
}

#[tokio::test]
async fn agent_hive_2_routes_answer_as_before() {
    let world = World::new().await;
    let hive = world.full_hive().await;
    let (_, registered) = hive
        .post(
            "/api/v1/agents",
            json!({"agent_type": "claude-code", "capabilities": []}),
        )
        .await;
    let agent = id(&registered, "agent_id");
    let (_, status) = hive.get_at(&format!("/api/agents/{agent}/status"), 0).await;
    assert_eq!(status["status"], "registered");
    hive.post(&format!("/api/v1/agents/{agent}/heartbeat"), json!({}))
        .await;
    let ready = world
        .wait_for_event(AggregateKind::Agent, agent.parse().unwrap(), "AgentReady")
        .await;
    let (_, status) = hive
        .get_at(&format!("/api/agents/{agent}/status"), ready)
        .await;
    assert_eq!(status["status"], "ready");

    let (status, project) = hive
        .post(
            "/api/v1/projects",
            json!({"name": "legacy", "description": "d", "type": "web"}),
        )
        .await;
    assert_eq!(status, 201);
    let project = id(&project, "project_id");
    let mut assignments = hive.assignments(&agent).await;
    let (status, task) = hive
        .post(
            &format!("/api/v1/projects/{project}/tasks"),
            json!({"task_type": "feature", "description": "Add login", "priority": "high", "assigned_agent": agent}),
        )
        .await;
    assert_eq!(status, 201, "{task}");
    let task = id(&task, "task_id");
    let pushed = assignments.next().await;
    assert_eq!(pushed["task_id"], task.as_str(), "pinned to its agent");
    let assigned = pushed["seq"].as_u64().unwrap();
    let (_, view) = hive
        .get_at(&format!("/api/v1/tasks/{task}"), assigned)
        .await;
    assert_eq!(view["project_id"], project.as_str());
    assert_eq!(view["pinned_agent"], agent.as_str());

    let (status, dump) = hive.get_at("/debug-agents", ready).await;
    assert_eq!(status, 200);
    assert_eq!(dump["agent_count"], 1);
    assert_eq!(dump["agents"][0]["agent_id"], agent.as_str());
    hive.stop().await;
}

/// A task read while the read models are behind the log (here: their projector stopped) answers as
/// the log leaves it: a client polling its task sees the assignment once the log holds it, not one
/// projection later.
#[tokio::test]
async fn a_task_read_while_the_read_models_are_behind_answers_as_the_log_leaves_it() {
    let world = World::new().await;
    let projector = world
        .run(hive::Parts {
            api: false,
            projector: true,
            scheduler: false,
        })
        .await;
    let hive = world
        .run(hive::Parts {
            api: true,
            projector: false,
            scheduler: true,
        })
        .await;
    let (_, created) = hive
        .post(
            "/api/v1/tasks",
            json!({"title": "needs a gpu", "required_capabilities": ["gpu"]}),
        )
        .await;
    let task = id(&created, "task_id");
    let seq = created["seq"].as_u64().unwrap();
    let queued = hive.read_at(&format!("/api/v1/tasks/{task}"), seq).await;
    assert_eq!(queued["state"], "queued");
    projector.stop().await;

    let agent = ready_agent(&hive, &world, &["gpu"], 2).await;
    // A second task, never projected: no row at all.
    let (_, unprojected) = hive
        .post(
            "/api/v1/tasks",
            json!({"title": "also needs a gpu", "required_capabilities": ["gpu"]}),
        )
        .await;
    let unprojected = id(&unprojected, "task_id");
    for task in [&task, &unprojected] {
        world
            .wait_for_event(AggregateKind::Task, task.parse().unwrap(), "TaskAssigned")
            .await;
        let seen = hive_tests::until(
            std::time::Duration::from_secs(10),
            "the task seen assigned",
            || {},
            async || {
                let view: serde_json::Value = hive
                    .get(&format!("/api/v1/tasks/{task}"))
                    .await
                    .json()
                    .await
                    .ok()?;
                (view["agent_id"] == agent.as_str()).then_some(view)
            },
        )
        .await;
        assert_eq!(seen["state"], "assigned", "{seen}");
    }
    // A task never projected that no agent can take says why it waits, as a projected one does.
    let (_, waiting) = hive
        .post(
            "/api/v1/tasks",
            json!({"title": "needs a tpu", "required_capabilities": ["tpu"]}),
        )
        .await;
    let waiting = id(&waiting, "task_id");
    let view: serde_json::Value = hive
        .get(&format!("/api/v1/tasks/{waiting}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(view["state"], "queued", "{view}");
    assert_eq!(
        view["waiting_reason"],
        json!({"code": "no_capable_agent", "capabilities": ["tpu"]}),
        "{view}"
    );
    // While its row in the read models still says queued.
    use sea_orm::ConnectionTrait;
    let row = world
        .db()
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            format!("SELECT status, agent_id IS NULL AS unassigned FROM tasks WHERE id = '{task}'"),
        ))
        .await
        .unwrap()
        .unwrap();
    let status: String = row.try_get("", "status").unwrap();
    let unassigned: bool = row.try_get("", "unassigned").unwrap();
    assert_eq!((status.as_str(), unassigned), ("queued", true));
    hive.stop().await;
}
