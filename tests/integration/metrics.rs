//! What operators scrape: `/metrics`, parsed as Prometheus text, covers every part of the hive.

use hive_events::AggregateKind;
use hive_tests::World;
use hive_tests::api::id;
use serde_json::json;

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_cover_every_part() {
    let world = World::new().await;
    let hive = world.full_hive().await;
    // Some of everything: commands, an assignment, a dead letter, requests.
    let (_, registered) = hive
        .post("/api/v1/agents", json!({"agent_type": "worker"}))
        .await;
    let agent = id(&registered, "agent_id");
    hive.post(&format!("/api/v1/agents/{agent}/heartbeat"), json!({}))
        .await;
    let (_, created) = hive
        .post("/api/v1/tasks", json!({"title": "metered"}))
        .await;
    world
        .wait_for_event(
            AggregateKind::Task,
            id(&created, "task_id").parse().unwrap(),
            "TaskAssigned",
        )
        .await;
    let prefix = world.log().subjects().all();
    let poison = world
        .publish_raw(
            &format!(
                "{}.task.{}",
                prefix.trim_end_matches(".>"),
                uuid::Uuid::now_v7()
            ),
            "not json",
        )
        .await;
    hive.get_at("/status", poison).await;

    // A real append conflict: the assigned agent reports progress from many clients at once, each
    // report deciding on the task as it loaded it; all but one lose the race and decide again.
    let task = id(&created, "task_id");
    for action in ["accept", "start"] {
        let (status, body) = hive
            .post(
                &format!("/api/v1/tasks/{task}/{action}"),
                json!({"agent_id": agent}),
            )
            .await;
        assert_eq!(status, 200, "{action}: {body}");
    }
    let conflicts = |scrape: &prometheus_parse::Scrape| {
        scrape
            .samples
            .iter()
            .filter(|s| {
                s.metric == "hive_append_conflicts_total"
                    && s.labels.get("aggregate") == Some("task")
            })
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(n) => n,
                _ => panic!("hive_append_conflicts_total is a counter"),
            })
            .sum::<f64>()
    };
    let before = conflicts(&hive.scrape().await);
    let mut percent = 0;
    let progress = format!("/api/v1/tasks/{task}/progress");
    hive_tests::until(
        hive_tests::wait::PATIENCE,
        "a race lost by concurrent reports on one task",
        || {},
        async || {
            if conflicts(&hive.scrape().await) > before {
                return Some(());
            }
            let reports = (0..8).map(|_| {
                percent = (percent + 1) % 100;
                hive.post(&progress, json!({"agent_id": agent, "percent": percent}))
            });
            for (status, body) in futures::future::join_all(reports).await {
                // 409: one lost every race it was allowed to retry.
                assert!(status == 200 || status == 409, "{status} {body}");
            }
            None
        },
    )
    .await;

    let response = hive.get("/metrics").await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    // Every line is checked: a sample that the parser could not read would fail here, not vanish.
    let scrape = hive_tests::exposition::parse(&text);
    let names: std::collections::BTreeSet<&str> =
        scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    for wanted in [
        "hive_http_requests_total",
        "hive_http_request_duration_seconds",
        "hive_commands_appended_total",
        "hive_append_conflicts_total",
        "hive_log_append_seconds",
        "hive_projector_batch_size",
        "hive_projector_events_total",
        "hive_dead_letters_total",
        "hive_projection_lag_events",
        "hive_scheduler_queue_depth",
        "hive_scheduler_assignment_latency_seconds",
        "hive_agents",
        "hive_tasks",
        "hive_scheduler_leading",
        "hive_projector_leading",
        "process_resident_memory_bytes",
    ] {
        assert!(names.contains(wanted), "{wanted} missing from /metrics");
    }
    let created_ok = scrape.samples.iter().any(|s| {
        s.metric == "hive_http_requests_total"
            && s.labels.get("route") == Some("/api/v1/tasks")
            && s.labels.get("method") == Some("POST")
            && s.labels.get("status") == Some("201")
    });
    assert!(created_ok, "POST /api/v1/tasks 201 is counted by route");
    let latency = scrape
        .samples
        .iter()
        .find(|s| s.metric == "hive_http_request_duration_seconds")
        .unwrap();
    assert!(
        matches!(latency.value, prometheus_parse::Value::Histogram(_)),
        "request latency is a histogram"
    );
    hive.stop().await;
}
