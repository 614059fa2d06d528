//! Real agent processes: `hive agent` runs executors for its tasks, spawned agents are supervised, a
//! killed agent's task finishes elsewhere, failures retry then dead-letter, a dependency chain runs in
//! order, racing schedulers never assign a task twice, and Agent Hive 2.0's clients work unchanged.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use hive_events::AggregateKind;
use hive_tests::api::{create_task, events_of, id, types};
use hive_tests::wait::{PATIENCE, until};
use hive_tests::{TestHive, World, processes_with};
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use uuid::Uuid;

/// Spawns an agent of `body`; answers its id.
async fn spawn(hive: &TestHive, body: Value) -> String {
    let (status, answer) = hive.post("/api/v1/agents/spawn", body).await;
    assert_eq!(status, 201, "{answer}");
    id(&answer, "agent_id")
}

/// Registers a worker; answers its id.
async fn register(hive: &TestHive) -> String {
    let (status, body) = hive
        .post("/api/v1/agents", json!({"agent_type": "worker"}))
        .await;
    assert_eq!(status, 201, "{body}");
    id(&body, "agent_id")
}
/// Waits (at most 20 s) until no process mentions `needle`.
async fn until_no_process_with(needle: &str) {
    until(
        PATIENCE,
        "no process naming it",
        || {},
        async || processes_with(needle).is_empty().then_some(()),
    )
    .await;
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
async fn a_spawned_agent_is_restarted_after_a_crash_and_stopped_when_deregistered() {
    let world = World::new().await;
    let hive = world.full_hive().await;
    let agent = spawn(&hive, json!({})).await;
    world
        .wait_for_event(AggregateKind::Agent, agent.parse().unwrap(), "AgentReady")
        .await;
    let first = processes_with(&agent);
    assert_eq!(first.len(), 1);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(first[0]), Signal::SIGKILL).unwrap();

    // The supervisor starts it again, and the restarted runtime takes work.
    let restarted = until(
        PATIENCE,
        "a restarted runtime",
        || {},
        async || {
            let now = processes_with(&agent);
            now.iter().any(|pid| !first.contains(pid)).then_some(now)
        },
    )
    .await;
    assert_eq!(restarted.len(), 1);
    let task = create_task(&hive, json!({"title": "after the crash"})).await;
    let done = world
        .wait_for_event(AggregateKind::Task, task.parse().unwrap(), "TaskCompleted")
        .await;
    let (_, view) = hive.get_at(&format!("/api/v1/tasks/{task}"), done).await;
    assert_eq!(view["agent_id"], agent.as_str());

    // Deregistering the agent stops its runtime for good.
    let response = hive
        .http
        .delete(hive.url(&format!("/api/v1/agents/{agent}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    until_no_process_with(&agent).await;
    hive.stop().await;
}

#[tokio::test]
async fn a_spawned_agent_that_keeps_crashing_is_restarted_at_most_max_restarts_times() {
    const MAX_RESTARTS: usize = 2;
    let mut world = World::new().await;
    world.config.spawn_max_restarts = MAX_RESTARTS as u32;
    world.config.agent_heartbeat_secs = 0.2;
    // Longer than the back-off before the restart the supervisor would make next (0.2 s doubled per
    // crash: 0.8 s): if the agent is lost, no runtime of it came back in the meantime.
    world.config.heartbeat_timeout_secs = 3.0;
    let hive = world.full_hive().await;
    let agent = spawn(&hive, json!({})).await;
    let agent_uuid: Uuid = agent.parse().unwrap();
    world
        .wait_for_event(AggregateKind::Agent, agent_uuid, "AgentReady")
        .await;

    // Each crash (a SIGKILL) is followed by a restart, MAX_RESTARTS times.
    let mut seen: Vec<i32> = Vec::new();
    let mut current = until(
        PATIENCE,
        "one runtime",
        || {},
        async || single(&processes_with(&agent)),
    )
    .await;
    for _ in 0..MAX_RESTARTS {
        seen.push(current);
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(current), Signal::SIGKILL).unwrap();
        current = until(
            PATIENCE,
            "one new runtime",
            || {},
            async || single(&processes_with(&agent)).filter(|pid| !seen.contains(pid)),
        )
        .await;
    }
    // One crash more and it is given up on: no runtime comes back, so the scheduler finds the agent
    // lost once its heartbeats lapse. It stays registered, and lost, for an operator to deregister.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(current), Signal::SIGKILL).unwrap();
    let lost = world
        .wait_for_event(AggregateKind::Agent, agent_uuid, "AgentLost")
        .await;
    assert!(processes_with(&agent).is_empty(), "no runtime came back");
    let (_, view) = hive.get_at(&format!("/api/v1/agents/{agent}"), lost).await;
    assert_eq!(view["status"], "lost", "{view}");
    let response = hive
        .http
        .delete(hive.url(&format!("/api/v1/agents/{agent}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    hive.stop().await;
}

/// The only element of `pids`, if there is exactly one.
fn single(pids: &[i32]) -> Option<i32> {
    match pids {
        [pid] => Some(*pid),
        _ => None,
    }
}

#[tokio::test]
async fn spawn_refuses_what_it_cannot_do() {
    let world = World::new().await;
    let hive = world.full_hive().await;
    let (status, body) = hive
        .post("/api/v1/agents/spawn", json!({"exec": "  "}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("validation_failed"))
    );
    let (status, body) = hive
        .post(
            "/api/v1/agents/spawn",
            json!({"max_concurrent_tasks": "many"}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let agent = spawn(&hive, json!({})).await;
    let (status, body) = hive
        .post("/api/v1/agents/spawn", json!({"agent_id": agent}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("already_exists"))
    );
    hive.stop().await;
}

#[tokio::test]
async fn racing_schedulers_never_assign_a_task_twice() {
    const TASKS: usize = 1_000;
    const AGENTS: usize = 8;
    let mut world = World::new().await;
    world.config.leader_ttl_secs = 0.6;
    let api = world.hive().await;
    let mut leading = Vec::new();
    let mut schedulers = Vec::new();
    for _ in 0..2 {
        let scheduler = hive_scheduler::Scheduler::new(
            world.log().clone(),
            world.heartbeats().await,
            world.config.scheduler(),
        );
        leading.push(scheduler.leading());
        schedulers.push(tokio::spawn(scheduler.run(std::future::pending())));
    }
    for _ in 0..AGENTS {
        spawn(&api, json!({"exec": "true", "max_concurrent_tasks": 4})).await;
    }

    // Take the lease away from whoever holds it, again and again: the standby takes over while the old
    // leader still believes it leads until its next renewal, so two schedulers act at once.
    let lease_bucket = world.namespace().scheduler_lease();
    let js = async_nats::jetstream::new(world.log().client());
    let lease = js.get_key_value(lease_bucket).await.unwrap();
    let handovers = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let thief = {
        let handovers = handovers.clone();
        tokio::spawn(async move {
            // A bounded number of times, so that the run converges however slow the machine is (each
            // new leader folds the log from the start).
            for _ in 0..12 {
                tokio::time::sleep(Duration::from_millis(250)).await;
                if lease.delete("leader").await.is_ok() {
                    handovers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        })
    };

    let created: Vec<String> = futures::stream::iter(0..TASKS)
        .map(|n| {
            let api = &api;
            async move { create_task(api, json!({"title": format!("task {n}")})).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;

    // Follow the log until every task completed, checking each assignment as it comes.
    let subjects = world.log().subjects().clone();
    let tasks: HashSet<Uuid> = created.iter().map(|t| t.parse().unwrap()).collect();
    let mut held: HashMap<Uuid, bool> = HashMap::new();
    let mut completed: HashSet<Uuid> = HashSet::new();
    let mut assignments = 0;
    let mut log = Box::pin(world.log().read_from(1).await.unwrap());
    tokio::time::timeout(Duration::from_secs(120), async {
        while completed.len() < TASKS {
            let event = log.next().await.unwrap().unwrap();
            let Some((AggregateKind::Task, task)) = subjects.parse(&event.subject) else {
                continue;
            };
            if !tasks.contains(&task) {
                continue;
            }
            let envelope = hive_events::envelope::decode(&event.payload, None).unwrap();
            match envelope.event.event_type() {
                "TaskAssigned" => {
                    assignments += 1;
                    let was_held = held.insert(task, true).unwrap_or(false);
                    assert!(!was_held, "task {task} assigned while assigned");
                }
                "TaskRequeued" | "TaskFailed" | "TaskRetryScheduled" => {
                    held.insert(task, false);
                }
                "TaskCompleted" => {
                    assert!(completed.insert(task), "task {task} completed twice");
                    held.insert(task, false);
                }
                _ => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {} of {TASKS} completed", completed.len()));
    thief.abort();
    assert!(assignments >= TASKS);
    let handovers = handovers.load(std::sync::atomic::Ordering::Relaxed);
    assert!(handovers >= 3, "the lease changed hands {handovers} times");
    for scheduler in schedulers {
        scheduler.abort();
    }
    api.stop().await;
}

#[tokio::test]
async fn agent_hive_2_clients_spawn_wait_for_ready_and_see_their_task_done() {
    let world = World::new().await;
    let hive = world.full_hive().await;
    // A 2.0 client: plain JSON calls with a bearer token, no Hive header; it learns of progress by
    // polling.
    let client = hive_tests::authorized_client(&hive.token);
    let url = |path: &str| hive.url(path);
    let spawned = client
        .post(url("/api/agents/spawn"))
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
        .post(url("/api/v1/tasks"))
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

#[tokio::test]
async fn a_spawned_agent_killed_mid_task_gives_it_back_and_another_agent_completes_it() {
    let world = World::new().await;
    let hive = world.full_hive().await;
    // The first run of the executor hangs; any later one completes at once.
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let exec = format!(
        "if [ -e {m} ]; then cat; else touch {m}; exec sleep 60; fi",
        m = marker.display()
    );
    let agents: Vec<String> = futures::future::join_all((0..2).map(|_| {
        spawn(
            &hive,
            json!({"capabilities": ["slow"], "max_concurrent_tasks": 1, "exec": exec}),
        )
    }))
    .await;
    for agent in &agents {
        world
            .wait_for_event(AggregateKind::Agent, agent.parse().unwrap(), "AgentReady")
            .await;
    }
    let task = create_task(
        &hive,
        json!({"title": "outlives its runtime", "required_capabilities": ["slow"]}),
    )
    .await;
    let task_uuid: Uuid = task.parse().unwrap();
    let started = world
        .wait_for_event(AggregateKind::Task, task_uuid, "TaskStarted")
        .await;
    until(
        PATIENCE,
        "the executor's marker",
        || {},
        async || marker.exists().then_some(()),
    )
    .await;
    let (_, view) = hive.get_at(&format!("/api/v1/tasks/{task}"), started).await;
    let first = view["agent_id"].as_str().unwrap().to_owned();
    let other = agents.iter().find(|a| **a != first).unwrap();
    let runtime = processes_with(&first);
    assert_eq!(runtime.len(), 1, "one runtime of {first}");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(runtime[0]), Signal::SIGKILL).unwrap();

    // Its supervisor restarts it at once, long before any heartbeat lapses; the new runtime gives the
    // task back undone (no failure, no back-off) and the scheduler hands it to the other agent.
    let done = world
        .wait_for_event(AggregateKind::Task, task_uuid, "TaskCompleted")
        .await;
    let events: Vec<Value> = events_of(&hive, &task, done)
        .await
        .into_iter()
        .filter(|e| e["type"] != "TaskProgressed")
        .collect();
    assert_eq!(
        types(&events),
        [
            "TaskCreated",
            "TaskAssigned",
            "TaskAccepted",
            "TaskStarted",
            "TaskRequeued",
            "TaskAssigned",
            "TaskAccepted",
            "TaskStarted",
            "TaskCompleted"
        ]
    );
    assert_eq!(events[4]["data"]["reason"], "agent_restarted");
    assert_eq!(events[4]["actor"], format!("agent:{first}"));
    assert_eq!(events[5]["data"]["agent_id"], other.as_str());
    let (_, view) = hive.get_at(&format!("/api/v1/tasks/{task}"), done).await;
    assert_eq!(view["agent_id"], other.as_str());
    hive.stop().await;
}

/// GETs `url` every 20 ms, as a 2.0 client polls, until `done` holds for its answer (at most 10 s);
/// every answer must be a 200. Answers every answer it read.
async fn poll(client: &reqwest::Client, url: &str, done: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut answers = Vec::new();
    let polled = hive_tests::eventually(
        Duration::from_secs(10),
        Duration::from_millis(20),
        async || {
            let response = client.get(url).send().await.unwrap();
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
