//! Small steps over the hive's REST API that many tests take: read an id out of an answer, create a
//! task, spawn or register a ready agent (and keep it alive), report on a task, read a task's events,
//! and the whole path of a spawned agent running a task.

use std::time::Duration;

use serde_json::{Value, json};

use hive_client::Method;
use hive_events::AggregateKind;
use uuid::Uuid;

use crate::wait::until;
use crate::{TestHive, World};

/// The string `field` of `body` (panics, showing `body`, if it has none).
pub fn id(body: &Value, field: &str) -> String {
    body[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} in {body}"))
        .to_owned()
}

/// Creates a task of `body`; answers its id (asserting a 201).
pub async fn create_task(hive: &TestHive, body: Value) -> String {
    let (status, created) = hive.post("/api/v1/tasks", body).await;
    assert_eq!(status, 201, "{created}");
    id(&created, "task_id")
}

/// The task's events once the read models reflect `seq`.
pub async fn events_of(hive: &TestHive, task: &str, seq: u64) -> Vec<Value> {
    let (status, history) = hive
        .get_at(&format!("/api/v1/tasks/{task}/events"), seq)
        .await;
    assert_eq!(status, 200, "{history}");
    history["events"].as_array().unwrap().clone()
}

/// The `type` of each of `events`.
pub fn types(events: &[Value]) -> Vec<&str> {
    events.iter().filter_map(|e| e["type"].as_str()).collect()
}

/// Spawns an agent through the API's route `spawn` (the body both routes take) and creates a task:
/// the task's view once it is completed (asserted: by that agent).
pub async fn a_spawned_agent_runs_a_task(
    http: &hive_client::Client,
    spawn: &str,
    on_timeout: impl Fn(),
) -> Value {
    let spawned = crate::json(
        http.request(Method::POST, spawn)
            .json(&json!({"agent_type": "worker", "capabilities": []})),
    )
    .await;
    assert!(spawned["agent_id"].is_string(), "{spawned}");
    let created = crate::json(
        http.request(Method::POST, "/api/v1/tasks")
            .json(&json!({"title": "run by a spawned agent"})),
    )
    .await;
    let task = created["task_id"].as_str().expect("a task").to_owned();
    let done: Value = until(
        Duration::from_secs(30),
        "the task completed",
        on_timeout,
        async || {
            let view: Value = http
                .request(Method::GET, &format!("/api/v1/tasks/{task}"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (view["state"] == "completed").then_some(view)
        },
    )
    .await;
    assert_eq!(done["agent_id"], spawned["agent_id"]);
    done
}

/// Spawns an agent of `body`; answers its id.
pub async fn spawn(hive: &TestHive, body: Value) -> String {
    let (status, answer) = hive.post("/api/v1/agents/spawn", body).await;
    assert_eq!(status, 201, "{answer}");
    id(&answer, "agent_id")
}

/// Registers an agent with `caps`, room for `max` tasks, and heartbeats once: its id, once it is
/// ready.
pub async fn ready_agent(hive: &TestHive, world: &World, caps: &[&str], max: u32) -> String {
    let (status, body) = hive
        .post(
            "/api/v1/agents",
            json!({"agent_type": "worker", "capabilities": caps, "max_concurrent_tasks": max}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let agent = id(&body, "agent_id");
    let (status, beat) = hive
        .post(&format!("/api/v1/agents/{agent}/heartbeat"), json!({}))
        .await;
    assert_eq!(status, 200, "{beat}");
    world
        .wait_for_event(AggregateKind::Agent, agent.parse().unwrap(), "AgentReady")
        .await;
    agent
}

/// Heartbeats for an agent every 100 ms until dropped, so a short heartbeat timeout loses only the
/// agents a test means to lose, however slow the machine.
pub struct KeepAlive(tokio::task::JoinHandle<()>);

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts heartbeating for `agent` (through the world's heartbeat bucket) until the answer is dropped.
pub async fn keep_alive(world: &World, agent: &str) -> KeepAlive {
    let heartbeats = world.heartbeats().await;
    let agent: Uuid = agent.parse().unwrap();
    KeepAlive(tokio::spawn(async move {
        loop {
            heartbeats
                .beat(agent, chrono::Utc::now())
                .await
                .expect("beat");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }))
}

/// Reports `action` (`accept`, `start`, `complete`...) with `body` on `task`: the answer (asserting a
/// 200).
pub async fn report(hive: &TestHive, task: &str, action: &str, body: Value) -> Value {
    let (status, answer) = hive
        .post(&format!("/api/v1/tasks/{task}/{action}"), body)
        .await;
    assert_eq!(status, 200, "{action}: {answer}");
    answer
}
