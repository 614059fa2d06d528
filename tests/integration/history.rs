//! What the domain's rules and its one replay loop promise end to end: a command on a history that
//! holds an event the projector dead-lettered is refused, naming it; a retried dead-lettered
//! dependency unblocks its dependents; the scheduler's follow-ups join the flow that caused them.

use hive_events::AggregateKind;
use hive_tests::World;
use hive_tests::api::{id, keep_alive, ready_agent, report};
use serde_json::{Value, json};

fn seq(body: &Value) -> u64 {
    body["seq"].as_u64().expect("a seq")
}

#[tokio::test]
async fn a_command_on_a_history_with_a_dead_letter_is_refused_and_appends_nothing() {
    let world = World::new().await;
    let hive = world.hive().await;
    let (_, created) = hive.post("/api/v1/tasks", json!({"title": "t"})).await;
    let task = id(&created, "task_id");
    let subject = world
        .log()
        .subjects()
        .of(AggregateKind::Task, task.parse().unwrap());
    let poison = world.publish_raw(&subject, "{\"not\": \"an event\"}").await;
    let head = world.log().last_seq().await.unwrap();

    let (status, body) = hive
        .post(&format!("/api/v1/tasks/{task}/cancel"), json!({}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("corrupt_history")),
        "{body}"
    );
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(&format!("seq {poison}")), "{message}");
    assert!(
        !message.contains("malformed"),
        "no decoder detail: {message}"
    );
    assert_eq!(
        world.log().last_seq().await.unwrap(),
        head,
        "nothing appended"
    );

    // The projector dead-lettered the same event, and the task reads as it was before it.
    let (_, dead) = hive.get_at("/api/v1/dead-letters", poison).await;
    assert_eq!(dead["items"][0]["seq"], poison);
    let (_, view) = hive.get_at(&format!("/api/v1/tasks/{task}"), poison).await;
    assert_eq!(view["state"], "queued");
    hive.stop().await;
}

#[tokio::test]
async fn a_retried_dependency_unblocks_its_dependents_and_follow_ups_join_its_flow() {
    let world = World::new().await;
    let hive = world.full_hive().await;
    let agent = ready_agent(&hive, &world, &[], 1).await;
    let _alive = keep_alive(&world, &agent).await;
    let mut assignments = hive.assignments(&agent).await;
    let (_, created) = hive
        .post("/api/v1/tasks", json!({"title": "dep", "max_attempts": 1}))
        .await;
    let dep = id(&created, "task_id");
    let (_, child) = hive
        .post(
            "/api/v1/tasks",
            json!({"title": "child", "depends_on": [dep]}),
        )
        .await;
    let child = id(&child, "task_id");
    let pushed = assignments.next().await;
    assert_eq!(pushed["task_id"], dep.as_str());
    let who = json!({"agent_id": agent});
    report(&hive, &dep, "accept", who.clone()).await;
    let failed = report(
        &hive,
        &dep,
        "fail",
        json!({"agent_id": agent, "error": "no", "retryable": false}),
    )
    .await;
    let task_id = |s: &str| s.parse::<uuid::Uuid>().unwrap();
    let blocked = world
        .wait_for_event(AggregateKind::Task, task_id(&child), "TaskBlocked")
        .await;
    let (_, view) = hive
        .get_at(&format!("/api/v1/tasks/{child}"), blocked)
        .await;
    assert_eq!(view["state"], "blocked");
    assert!(seq(&failed) < blocked);

    // An operator retries the dead-lettered dependency: the child waits on it again.
    let retried = report(&hive, &dep, "retry", json!({})).await;
    let unblocked = world
        .wait_for_event(AggregateKind::Task, task_id(&child), "TaskUnblocked")
        .await;
    assert!(seq(&retried) < unblocked);
    let (_, view) = hive
        .get_at(&format!("/api/v1/tasks/{child}"), unblocked)
        .await;
    assert_eq!(view["state"], "waiting");

    // The scheduler's assignment of the retried task is in the retry's flow, caused by its event.
    let again = assignments.next().await;
    assert_eq!(again["task_id"], dep.as_str());
    let (_, history) = hive
        .get_at(&format!("/api/v1/tasks/{dep}/events"), seq(&again))
        .await;
    let events = history["events"].as_array().expect("the events");
    let by_seq = |s: u64| events.iter().find(|e| e["seq"] == s).expect("the event");
    let retry = by_seq(seq(&retried));
    let assigned = events
        .iter()
        .rfind(|e| e["type"] == "TaskAssigned")
        .expect("assigned again");
    assert_eq!(assigned["correlation_id"], retry["correlation_id"]);
    assert_eq!(assigned["causation_id"], retry["event_id"]);
    assert_eq!(again["correlation_id"], retry["correlation_id"]);

    report(&hive, &dep, "accept", who.clone()).await;
    report(&hive, &dep, "start", who.clone()).await;
    report(
        &hive,
        &dep,
        "complete",
        json!({"agent_id": agent, "result": 1}),
    )
    .await;
    let queued = world
        .wait_for_event(AggregateKind::Task, task_id(&child), "TaskQueued")
        .await;
    let (_, view) = hive.get_at(&format!("/api/v1/tasks/{child}"), queued).await;
    assert!(
        ["queued", "assigned"].contains(&view["state"].as_str().unwrap()),
        "{view}"
    );
    hive.stop().await;
}
