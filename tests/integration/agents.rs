//! Real agent processes: `hive agent` runs executors for its tasks (spawned agents' supervision: see
//! `supervision`), a killed agent's task finishes elsewhere, failures retry then dead-letter, a dependency chain runs in
//! order, and Agent Hive 2.0's clients work unchanged.

use hive_client::Method;
use std::time::Duration;

use hive_events::AggregateKind;
use hive_tests::api::{create_task, events_of, id, spawn, types};
use hive_tests::wait::{PATIENCE, until};
use hive_tests::{TestHive, World, processes_with};
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use uuid::Uuid;

/// Registers a worker; answers its id.
async fn register(hive: &TestHive) -> String {
    let (status, body) = hive
        .post("/api/v1/agents", json!({"agent_type": "worker"}))
        .await;
    assert_eq!(status, 201, "{body}");
    id(&body, "agent_id")
}
#[tokio::test]
async fn a_spawned_agent_runs_a_task_through_its_executor_and_stops_with_the_hive() {
    let world = World::new().await;
    let hive = world.full_hive().await;
    let exec =
        r#"read task; echo "50% halfway through $HIVE_TASK_ID"; sleep 0.3; echo '{"answer": 42}'"#;
    let agent = spawn(&hive, json!({"capabilities": ["sh"], "exec": exec})).await;
    let agent_uuid: Uuid = agent.parse().unwrap();
    world
        .wait_for_event(AggregateKind::Agent, agent_uuid, "AgentReady")
        .await;
    assert_eq!(processes_with(&agent).len(), 1, "one runtime process");

    let task = create_task(
        &hive,
        json!({"title": "answer", "required_capabilities": ["sh"]}),
    )
    .await;
    let done = world
        .wait_for_event(AggregateKind::Task, task.parse().unwrap(), "TaskCompleted")
        .await;
    let (_, view) = hive.get_at(&format!("/api/v1/tasks/{task}"), done).await;
    assert_eq!(view["state"], "completed");
    assert_eq!(view["result"], json!({"answer": 42}));
    assert_eq!(view["agent_id"], agent.as_str());
    let events = events_of(&hive, &task, done).await;
    let lifecycle: Vec<&str> = types(&events)
        .into_iter()
        .filter(|t| *t != "TaskCreated" && *t != "TaskQueued")
        .collect();
    assert_eq!(
        lifecycle,
        [
            "TaskAssigned",
            "TaskAccepted",
            "TaskStarted",
            "TaskProgressed",
            "TaskCompleted"
        ]
    );
    let progressed = events
        .iter()
        .find(|e| e["type"] == "TaskProgressed")
        .unwrap();
    assert_eq!(progressed["data"]["percent"], 50);
    assert_eq!(
        progressed["data"]["message"],
        format!("halfway through {task}")
    );

    // Stopping the hive stops its agents: they drain, deregister and exit.
    hive.stop().await;
    world
        .wait_for_event(AggregateKind::Agent, agent_uuid, "AgentDeregistered")
        .await;
    assert!(processes_with(&agent).is_empty(), "the runtime exited");
}

#[tokio::test]
async fn a_killed_agents_task_is_requeued_and_completed_by_another() {
    let mut world = World::new().await;
    world.config.heartbeat_timeout_secs = 1.0;
    let hive = world.full_hive().await;
    // The executor leaves its pid behind, to check that it dies with its agent.
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let first = register(&hive).await;
    let mut first_process = hive.agent_process(&[
        "--agent-id",
        &first,
        "--heartbeat-secs",
        "0.2",
        "--exec",
        &format!("echo $$ > {}; exec sleep 60", pid_file.display()),
    ]);
    world
        .wait_for_event(AggregateKind::Agent, first.parse().unwrap(), "AgentReady")
        .await;
    let task = create_task(&hive, json!({"title": "outlives its agent"})).await;
    let task_uuid: Uuid = task.parse().unwrap();
    world
        .wait_for_event(AggregateKind::Task, task_uuid, "TaskStarted")
        .await;
    let executor = until(
        PATIENCE,
        "the executor's pid",
        || {},
        async || {
            std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok())
        },
    )
    .await;
    assert!(alive(executor), "the executor runs");

    first_process.signal(Signal::SIGKILL);
    assert!(!first_process.exited().await);
    until(
        PATIENCE,
        "the executor gone",
        || {},
        async || (!alive(executor)).then_some(()),
    )
    .await;
    world
        .wait_for_event(AggregateKind::Agent, first.parse().unwrap(), "AgentLost")
        .await;
    let requeued = world
        .wait_for_event(AggregateKind::Task, task_uuid, "TaskRequeued")
        .await;
    let events = events_of(&hive, &task, requeued).await;
    let requeue = events.iter().find(|e| e["type"] == "TaskRequeued").unwrap();
    assert_eq!(requeue["data"]["reason"], "agent_lost");

    let second = register(&hive).await;
    let mut second_process = hive.agent_process(&["--agent-id", &second, "--exec", "cat"]);
    let done = world
        .wait_for_event(AggregateKind::Task, task_uuid, "TaskCompleted")
        .await;
    let (_, view) = hive.get_at(&format!("/api/v1/tasks/{task}"), done).await;
    assert_eq!(view["agent_id"], second.as_str());
    assert_eq!(
        view["result"]["task_id"],
        task.as_str(),
        "cat echoes the task"
    );
    // SIGTERM: it drains, deregisters and exits cleanly.
    second_process.signal(Signal::SIGTERM);
    assert!(second_process.exited().await, "a clean exit");
    world
        .wait_for_event(
            AggregateKind::Agent,
            second.parse().unwrap(),
            "AgentDeregistered",
        )
        .await;
    hive.stop().await;
}

/// Whether process `pid` runs (a zombie does not).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
            Some(state != 'Z')
        })
        .unwrap_or(false)
}

#[tokio::test]
async fn a_failing_executor_is_retried_with_backoff_then_dead_lettered() {
    let mut world = World::new().await;
    world.config.retry_base_secs = 0.05;
    let hive = world.full_hive().await;
    // Tasks titled "bad input" fail for good (status 65); the others fail as retryable.
    let exec = r#"read task; case "$task" in *'bad input'*) echo 'cannot parse' >&2; exit 65;; *) echo 'disk full' >&2; exit 3;; esac"#;
    spawn(&hive, json!({"exec": exec})).await;

    let flaky = create_task(&hive, json!({"title": "flaky", "max_attempts": 3})).await;
    let dead = world
        .wait_for_event(
            AggregateKind::Task,
            flaky.parse().unwrap(),
            "TaskDeadLettered",
        )
        .await;
    let (_, view) = hive.get_at(&format!("/api/v1/tasks/{flaky}"), dead).await;
    assert_eq!(
        (view["state"].as_str(), view["attempts"].as_u64()),
        (Some("dead_lettered"), Some(3))
    );
    assert_eq!(
        view["last_error"],
        "the executor exited with status 3: disk full"
    );
    let events = events_of(&hive, &flaky, dead).await;
    let retries: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "TaskRetryScheduled")
        .collect();
    assert_eq!(retries.len(), 2, "{:?}", types(&events));
    for retry in retries {
        let at: chrono::DateTime<chrono::Utc> =
            serde_json::from_value(retry["data"]["retry_at"].clone()).unwrap();
        let scheduled: chrono::DateTime<chrono::Utc> =
            serde_json::from_value(retry["occurred_at"].clone()).unwrap();
        assert!(at > scheduled, "a retry waits: {retry}");
    }

    let hopeless = create_task(&hive, json!({"title": "bad input", "max_attempts": 3})).await;
    let dead = world
        .wait_for_event(
            AggregateKind::Task,
            hopeless.parse().unwrap(),
            "TaskDeadLettered",
        )
        .await;
    let (_, view) = hive
        .get_at(&format!("/api/v1/tasks/{hopeless}"), dead)
        .await;
    assert_eq!(view["attempts"], 1, "a final failure is not retried");
    hive.stop().await;
}

#[tokio::test]
async fn a_dependency_chain_of_three_runs_in_order() {
    let world = World::new().await;
    let hive = world.full_hive().await;
    let dir = tempfile::tempdir().unwrap();
    let order = dir.path().join("order");
    // Room for all three at once: only the dependencies keep them in order.
    let exec = format!(
        "read task; sleep 0.05; echo $HIVE_TASK_ID >> {}",
        order.display()
    );
    spawn(&hive, json!({"exec": exec, "max_concurrent_tasks": 3})).await;
    let a = create_task(&hive, json!({"title": "a"})).await;
    let b = create_task(&hive, json!({"title": "b", "depends_on": [a]})).await;
    let c = create_task(&hive, json!({"title": "c", "depends_on": [b]})).await;
    world
        .wait_for_event(AggregateKind::Task, c.parse().unwrap(), "TaskCompleted")
        .await;
    let ran = std::fs::read_to_string(&order).unwrap();
    assert_eq!(ran.lines().collect::<Vec<_>>(), [&a, &b, &c]);
    hive.stop().await;
}

#[tokio::test]
async fn agent_hive_2_clients_spawn_wait_for_ready_and_see_their_task_done() {
    let world = World::new().await;
    let hive = world.full_hive().await;
    // A 2.0 client: plain JSON calls with a bearer token, no Hive header; it learns of progress by
    // polling.
    let client = hive_tests::authorized_client(&hive.base, &hive.token);
    let url = |path: &str| hive.url(path);
    let spawned = client
        .request(Method::POST, &url("/api/agents/spawn"))
        .json(&json!({"agent_type": "claude-code", "capabilities": ["python"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(spawned.status(), 200);
    let agent = id(&spawned.json().await.unwrap(), "agent_id");
    let answers = poll(&client, &url(&format!("/api/agents/{agent}/status")), |a| {
        a["status"] == "ready"
    })
    .await;
    let statuses: Vec<&str> = answers
        .iter()
        .filter_map(|a| a["status"].as_str())
        .collect();
    assert!(
        statuses.iter().all(|s| ["registered", "ready"].contains(s)),
        "{statuses:?}"
    );

    let created = client
        .request(Method::POST, &url("/api/v1/tasks"))
        .json(&json!({"task_type": "code", "description": "write a test", "priority": "normal"}))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "{}", created.status());
    let task = id(&created.json().await.unwrap(), "task_id");
    let task_url = url(&format!("/api/v1/tasks/{task}"));
    let mut answers = poll(&client, &task_url, |t| {
        ["assigned", "in_progress", "completed"].contains(&t["status"].as_str().unwrap_or(""))
    })
    .await;
    answers.extend(poll(&client, &task_url, |t| t["status"] == "completed").await);
    let last = answers.last().unwrap();
    assert_eq!(last["state"], "completed", "Hive's own state beside it");
    assert_eq!(last["agent_id"], agent.as_str());
    // What it saw moved forward through 2.0's lifecycle.
    let lifecycle = ["pending", "assigned", "in_progress", "completed"];
    let steps: Vec<usize> = answers
        .iter()
        .map(|t| {
            let status = t["status"].as_str().unwrap_or("");
            lifecycle
                .iter()
                .position(|s| *s == status)
                .unwrap_or_else(|| panic!("a 2.0 status: {t}"))
        })
        .collect();
    assert!(steps.is_sorted(), "{steps:?}");
    hive.stop().await;
}

/// GETs `url` every 20 ms, as a 2.0 client polls, until `done` holds for its answer (at most 10 s);
/// every answer must be a 200. Answers every answer it read.
async fn poll(
    client: &hive_client::Client,
    url: &str,
    done: impl Fn(&Value) -> bool,
) -> Vec<Value> {
    let mut answers = Vec::new();
    let polled = hive_tests::eventually(
        Duration::from_secs(10),
        Duration::from_millis(20),
        async || {
            let response = client.request(Method::GET, url).send().await.unwrap();
            let status = response.status();
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            assert_eq!(status, 200, "GET {url}: {answer}");
            let finished = done(&answer);
            answers.push(answer);
            finished.then_some(())
        },
    )
    .await;
    assert!(
        polled.is_some(),
        "GET {url} never answered what was awaited: {answers:?}"
    );
    answers
}
