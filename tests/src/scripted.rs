//! A scripted history with fixed ids and times, stored as raw envelopes: one `TaskCreated` in schema
//! version 1 (before `pinned_agent`) beside one in version 2, and one poison message. The audit tests
//! compare `hive audit`'s output of it with golden files; the replay tests rebuild from it.

use serde_json::{Value, json};

use crate::World;

/// The project.
pub const PROJECT: &str = "00000000-0000-0000-0000-0000000000b1";
/// The agent.
pub const AGENT: &str = "00000000-0000-0000-0000-0000000000a1";
/// The first task (created in schema version 1).
pub const T1: &str = "00000000-0000-0000-0000-0000000000c1";
/// The second task (version 2), which depends on the first.
pub const T2: &str = "00000000-0000-0000-0000-0000000000c2";

/// The time of the event at `seq`: one second apart from 2026-01-01T00:00:00Z.
pub fn time_of(seq: u64) -> String {
    format!("2026-01-01T00:00:{seq:02}Z")
}

fn event(
    seq: u64,
    kind: &str,
    id: &str,
    event_type: &str,
    version: u64,
    data: Value,
) -> (String, Vec<u8>) {
    let envelope = json!({
        "event_id": format!("01900000-0000-7000-8000-{seq:012}"),
        "type": event_type,
        "schema_version": version,
        "aggregate": kind,
        "aggregate_id": id,
        "occurred_at": time_of(seq),
        "correlation_id": "00000000-0000-0000-0000-0000000000f0",
        // From the sixth event on, each answers the one before it.
        "causation_id": (seq > 5).then(|| format!("01900000-0000-7000-8000-{:012}", seq - 1)),
        "actor": if kind == "task" && seq > 5 { "system:scheduler" } else { "operator" },
        "data": data,
    });
    (
        format!("{kind}.{id}"),
        serde_json::to_vec(&envelope).unwrap(),
    )
}

/// (subject under the namespace's events prefix, payload), in log order: seq 1, 2, ...
pub fn history() -> Vec<(String, Vec<u8>)> {
    let task_v1 = json!({
        "title": "first", "description": "the v1 one", "task_type": "code", "priority": 8,
        "required_capabilities": [], "depends_on": [], "waiting_on": [], "project_id": PROJECT,
        "max_attempts": 1,
    });
    let task_v2 = json!({
        "title": "second", "description": null, "task_type": null, "priority": 5,
        "required_capabilities": [], "depends_on": [T1], "waiting_on": [T1], "project_id": PROJECT,
        "pinned_agent": null, "max_attempts": 1,
    });
    vec![
        event(
            1,
            "project",
            PROJECT,
            "ProjectCreated",
            1,
            json!({"name": "audit", "description": null, "project_type": "test"}),
        ),
        event(
            2,
            "agent",
            AGENT,
            "AgentRegistered",
            1,
            json!({"name": "a1", "agent_type": "worker", "capabilities": [], "max_concurrent_tasks": 1}),
        ),
        event(3, "agent", AGENT, "AgentReady", 1, json!({})),
        event(4, "task", T1, "TaskCreated", 1, task_v1),
        event(5, "task", T2, "TaskCreated", 2, task_v2),
        event(
            6,
            "task",
            T1,
            "TaskAssigned",
            1,
            json!({"agent_id": AGENT, "lease_expires_at": time_of(36)}),
        ),
        event(7, "task", T1, "TaskAccepted", 1, json!({})),
        event(8, "task", T1, "TaskStarted", 1, json!({})),
        event(
            9,
            "task",
            T1,
            "TaskProgressed",
            1,
            json!({"percent": 50, "message": "halfway"}),
        ),
        event(
            10,
            "task",
            T1,
            "TaskCompleted",
            1,
            json!({"result": {"ok": true}}),
        ),
        event(11, "task", T2, "TaskQueued", 1, json!({})),
        event(
            12,
            "task",
            T2,
            "TaskAssigned",
            1,
            json!({"agent_id": AGENT, "lease_expires_at": time_of(42)}),
        ),
        event(13, "task", T2, "TaskAccepted", 1, json!({})),
        event(14, "task", T2, "TaskStarted", 1, json!({})),
        event(
            15,
            "task",
            T2,
            "TaskFailed",
            1,
            json!({"error": "bad input", "retryable": false}),
        ),
        event(
            16,
            "task",
            T2,
            "TaskDeadLettered",
            1,
            json!({"reason": "not retryable"}),
        ),
        (format!("task.{T2}"), b"{not json".to_vec()),
        event(
            18,
            "agent",
            AGENT,
            "AgentDeregistered",
            1,
            json!({"reason": "done"}),
        ),
    ]
}

/// Publishes the scripted history; answers the last sequence.
pub async fn load_scripted(world: &World) -> u64 {
    let prefix = world.log().subjects().all();
    let prefix = prefix.trim_end_matches(".>");
    let mut last = 0;
    for (subject, payload) in history() {
        last = world
            .publish_raw(&format!("{prefix}.{subject}"), payload)
            .await;
    }
    last
}
