//! What people watch: the live stream, and the dashboard's page and starting JSON (`/metrics`: see
//! `metrics`).

use std::time::Duration;

use hive_tests::World;
use hive_tests::api::id;
use hive_tests::sse::Feed;
use serde_json::json;

#[tokio::test]
async fn the_stream_sends_each_event_once_projected_by_topic_and_entity() {
    let world = World::new().await;
    let hive = world.hive().await;
    let mut agents = Feed::open(&hive, "?topics=agents").await;
    let mut tasks = Feed::open(&hive, "?topics=task").await;
    let mut ticks = Feed::open(&hive, "?topics=status").await;

    let (_, registered) = hive
        .post("/api/v1/agents", json!({"agent_type": "worker"}))
        .await;
    let agent = id(&registered, "agent_id");
    let event = agents.next_event().await;
    assert_eq!(
        (event["type"].as_str(), event["aggregate_id"].as_str()),
        (Some("AgentRegistered"), Some(agent.as_str()))
    );
    // Released only once projected: an ordinary read (no Hive-Min-Seq) finds it.
    let read = hive.get(&format!("/api/v1/agents/{agent}")).await;
    assert_eq!(read.status(), 200);

    let (_, created) = hive
        .post("/api/v1/tasks", json!({"title": "watched"}))
        .await;
    let task = id(&created, "task_id");
    let event = tasks.next_event().await;
    assert_eq!(
        (event["type"].as_str(), event["aggregate_id"].as_str()),
        (Some("TaskCreated"), Some(task.as_str()))
    );
    let (name, tick) = ticks.next().await;
    assert_eq!(name, "status");
    assert!(tick["checkpoint"].as_u64().unwrap() >= 1, "{tick}");

    // One entity only.
    let mut one = Feed::open(&hive, &format!("?entity={task}")).await;
    let (_, other) = hive.post("/api/v1/tasks", json!({"title": "other"})).await;
    let (status, _) = hive
        .post(&format!("/api/v1/tasks/{task}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200);
    let event = one.next_event().await;
    assert_eq!(
        (event["type"].as_str(), event["aggregate_id"].as_str()),
        (Some("TaskCancelled"), Some(task.as_str()))
    );
    // The agents' stream saw none of the task events: its next one is the next agent event.
    hive.post("/api/v1/agents", json!({"agent_type": "second"}))
        .await;
    assert_eq!(agents.next_event().await["aggregate"], "agent");
    assert_eq!(tasks.next_event().await["aggregate_id"], other["task_id"]);

    let bad = hive.get("/api/v1/stream?topics=weather").await;
    assert_eq!(bad.status(), 400);
    hive.stop().await;
}

#[tokio::test]
async fn heartbeats_are_on_the_stream_by_topic_and_agent() {
    let world = World::new().await;
    let hive = world.hive().await;
    let (_, first) = hive
        .post("/api/v1/agents", json!({"agent_type": "watched"}))
        .await;
    let (_, second) = hive
        .post("/api/v1/agents", json!({"agent_type": "other"}))
        .await;
    let (first, second) = (id(&first, "agent_id"), id(&second, "agent_id"));
    let mut all = Feed::open(&hive, "?topics=heartbeats").await;
    let mut one = Feed::open(&hive, &format!("?topics=heartbeat&entity={first}")).await;
    let mut events = Feed::open(&hive, "?topics=agent,task,project,status").await;

    for agent in [&second, &first] {
        let (status, body) = hive
            .post(&format!("/api/v1/agents/{agent}/heartbeat"), json!({}))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let beat = all.next_named("heartbeat").await;
    assert_eq!(beat["agent_id"], second.as_str());
    assert_eq!(
        all.next_named("heartbeat").await["agent_id"],
        first.as_str()
    );
    // The agent's own stream has its heartbeat only, with the time the bucket holds.
    let (name, beat) = one.next().await;
    assert_eq!(
        (name.as_str(), beat["agent_id"].as_str()),
        ("heartbeat", Some(first.as_str()))
    );
    let at: chrono::DateTime<chrono::Utc> = beat["at"].as_str().unwrap().parse().unwrap();
    let stored = world
        .heartbeats()
        .await
        .last(first.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(Some(at), stored);
    // Not asked for, not sent: the first agent's next heartbeat reaches `one` before anything of
    // `events` but the ticks, and `events` has none.
    hive.post(&format!("/api/v1/agents/{first}/heartbeat"), json!({}))
        .await;
    assert_eq!(one.next().await.0, "heartbeat");
    hive.post("/api/v1/tasks", json!({"title": "after the beats"}))
        .await;
    loop {
        let (name, _) = events.next().await;
        assert_ne!(name, "heartbeat");
        if name == "event" {
            break;
        }
    }
    hive.stop().await;
}

#[tokio::test]
async fn an_idle_stream_still_ticks_every_second() {
    let world = World::new().await;
    let hive = world.hive().await;
    let (_, created) = hive
        .post("/api/v1/tasks", json!({"title": "then quiet"}))
        .await;
    let seq = created["seq"].as_u64().unwrap();
    let mut ticks = Feed::open(&hive, "?topics=status").await;
    // The tick of that commit may come first; then nothing happens, and ticks still come.
    let mut at = None;
    while at.is_none_or(|c| c < seq) {
        at = ticks.next_named("status").await["checkpoint"].as_u64();
    }
    for _ in 0..2 {
        let (name, tick) = tokio::time::timeout(Duration::from_secs(5), ticks.next())
            .await
            .expect("status ticks keep coming on an idle hive");
        assert_eq!(name, "status");
        assert_eq!(tick["checkpoint"].as_u64(), at, "{tick}");
        assert_eq!(tick["lag"], 0, "{tick}");
    }
    hive.stop().await;
}

#[tokio::test]
async fn the_dashboard_page_and_the_json_it_starts_from() {
    let world = World::new().await;
    let hive = world.full_hive().await;
    let page = hive.get("/dashboard").await;
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"new EventSource("/api/v1/stream")"#));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no outside assets"
    );

    let (_, registered) = hive
        .post(
            "/api/v1/agents",
            json!({"agent_type": "worker", "capabilities": ["gpu"]}),
        )
        .await;
    let agent = id(&registered, "agent_id");
    hive.post(&format!("/api/v1/agents/{agent}/heartbeat"), json!({}))
        .await;
    let (_, created) = hive
        .post(
            "/api/v1/tasks",
            json!({"title": "waits", "required_capabilities": ["fpga"]}),
        )
        .await;
    let task = id(&created, "task_id");
    let seq = created["seq"].as_u64().unwrap();
    let (status, start) = hive.get_at("/dashboard/coordination", seq).await;
    assert_eq!(status, 200, "{start}");
    let row = &start["agents"]["items"][0];
    assert_eq!(row["agent_id"], agent.as_str());
    assert_eq!(row["load"], 0);
    assert!(row["last_heartbeat"].is_string(), "{row}");
    assert_eq!(start["queued"]["items"][0]["task_id"], task.as_str());
    assert_eq!(start["status"]["tasks"]["total"], 1);
    assert!(!start["events"].as_array().unwrap().is_empty());

    // Newest first, and without the recent events (no log reads) when the caller has its own feed.
    let (_, newer) = hive
        .post("/api/v1/agents", json!({"agent_type": "newer"}))
        .await;
    let (_, second) = hive
        .post(
            "/api/v1/tasks",
            json!({"title": "second", "required_capabilities": ["fpga"]}),
        )
        .await;
    let (status, page) = hive
        .get_at(
            "/dashboard/coordination?order=desc&events=0&agents_limit=1&tasks_limit=1",
            second["seq"].as_u64().unwrap(),
        )
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["events"], json!([]));
    assert_eq!(page["agents"]["items"][0]["agent_id"], newer["agent_id"]);
    assert_eq!(page["queued"]["items"][0]["task_id"], second["task_id"]);
    // The next page of agents is the older one, with its heartbeat.
    let cursor = page["agents"]["next_cursor"].as_str().unwrap().to_owned();
    let (_, older) = hive
        .get_at(
            &format!(
                "/dashboard/coordination?order=desc&events=0&agents_limit=1&agents_cursor={cursor}"
            ),
            seq,
        )
        .await;
    assert_eq!(older["agents"]["items"][0]["agent_id"], agent.as_str());
    assert!(older["agents"]["items"][0]["last_heartbeat"].is_string());
    assert!(older["agents"]["next_cursor"].is_null());
    // The task list pages newest first too, by the same cursors.
    let (_, newest) = hive.get_at("/api/v1/tasks?order=desc&limit=1", seq).await;
    assert_eq!(newest["items"][0]["task_id"], second["task_id"]);
    let cursor = newest["next_cursor"].as_str().unwrap();
    let (_, next) = hive
        .get_at(
            &format!("/api/v1/tasks?order=desc&limit=1&cursor={cursor}"),
            seq,
        )
        .await;
    assert_eq!(next["items"][0]["task_id"], task.as_str());
    assert!(next["next_cursor"].is_null(), "{next}");
    for bad in [
        "/api/v1/tasks?order=sideways",
        "/api/v1/agents?order=up",
        "/api/v1/dead-letters?order=1",
    ] {
        assert_eq!(hive.get(bad).await.status(), 400, "{bad}");
    }
    for bad in ["events=501", "order=sideways", "agents_limit=0"] {
        let answer = hive.get(&format!("/dashboard/coordination?{bad}")).await;
        assert_eq!(answer.status(), 400, "{bad}");
    }
    hive.stop().await;
}
