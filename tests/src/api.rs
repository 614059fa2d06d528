//! Small steps over the hive's REST API that many tests take: read an id out of an answer, create a
//! task, read a task's events, and the whole path of a spawned agent running a task.

use std::time::Duration;

use serde_json::{Value, json};

use crate::TestHive;
use crate::wait::until;

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
    http: &reqwest::Client,
    base: &str,
    spawn: &str,
    on_timeout: impl Fn(),
) -> Value {
    let spawned = crate::json(
        http.post(format!("{base}{spawn}"))
            .json(&json!({"agent_type": "worker", "capabilities": []})),
    )
    .await;
    assert!(spawned["agent_id"].is_string(), "{spawned}");
    let created = crate::json(
        http.post(format!("{base}/api/v1/tasks"))
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
                .get(format!("{base}/api/v1/tasks/{task}"))
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
