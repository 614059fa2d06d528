//! Spawned agents under their supervisor: restarted after a crash (at most `max_restarts` times),
//! stopped when deregistered, spawn refusing what it cannot do, and a spawned agent killed mid-task
//! giving the task back to another agent.

use hive_client::Method;
use hive_events::AggregateKind;
use hive_tests::api::{create_task, events_of, spawn, types};
use hive_tests::wait::{PATIENCE, until};
use hive_tests::{World, processes_with};
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use uuid::Uuid;

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
        .request(Method::DELETE, &format!("/api/v1/agents/{agent}"))
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
        .request(Method::DELETE, &format!("/api/v1/agents/{agent}"))
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
