//! The HTTP API end to end: commands, read-your-writes, health, status, history, dead letters and
//! every class of bad input.
//!
//! Long because each test walks one route family end to end; the error paths are in `api_limits`.

use hive_client::Method;
use hive_eventlog::Role;
use hive_events::AggregateKind;
use hive_tests::{TestHive, World};
use serde_json::{Value, json};

fn seq(body: &Value) -> u64 {
    body["seq"].as_u64().expect("a seq in the answer")
}

async fn register(hive: &TestHive, caps: &[&str]) -> (String, u64) {
    let (status, body) = hive
        .post(
            "/api/v1/agents",
            json!({"agent_type": "worker", "capabilities": caps, "max_concurrent_tasks": 2}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    (body["agent_id"].as_str().unwrap().to_owned(), seq(&body))
}

#[tokio::test]
async fn register_create_and_read_back_with_min_seq() {
    let world = World::new().await;
    let hive = world.hive().await;
    let (agent, agent_seq) = register(&hive, &["rust", "git"]).await;
    let (status, agent_view) = hive
        .get_at(&format!("/api/v1/agents/{agent}"), agent_seq)
        .await;
    assert_eq!(status, 200);
    assert_eq!(agent_view["status"], "registered");
    assert_eq!(agent_view["capabilities"], json!(["git", "rust"]));

    let (status, created) = hive
        .post(
            "/api/v1/tasks",
            json!({"title": "build", "priority": "high", "required_capabilities": ["rust"]}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let task = created["task_id"].as_str().unwrap();
    let response = hive
        .http
        .request(Method::GET, &format!("/api/v1/tasks/{task}"))
        .header("Hive-Min-Seq", seq(&created).to_string())
        .send()
        .await
        .unwrap();
    let projected: u64 = response.headers()["hive-projection-seq"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(projected >= seq(&created));
    let view: Value = response.json().await.unwrap();
    assert_eq!(
        (view["state"].as_str(), view["status"].as_str()),
        (Some("queued"), Some("pending"))
    );
    assert_eq!(view["priority"], 8);

    let (status, health) = hive.get_at("/health", seq(&created)).await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "healthy", "{health}");
    assert_eq!(
        health["summary"],
        json!({"healthy": 3, "unhealthy": 0, "total": 3})
    );
    assert_eq!(
        health["components"]["projector"]["details"]["lag_events"],
        0
    );

    let (_, status_body) = hive.get_at("/status", seq(&created)).await;
    assert_eq!(status_body["agents"]["by_status"]["registered"], 1);
    assert_eq!(status_body["tasks"]["by_status"]["queued"], 1);
    assert_eq!(status_body["tasks"]["total"], 1);
    assert_eq!(status_body["log"]["last_seq"], 2);
    assert_eq!(status_body["projection"]["lag"], 0);
    let (_, same) = hive.get_at("/api/v1/system/status", 2).await;
    assert_eq!(same["tasks"], status_body["tasks"]);

    let (status, cancelled) = hive
        .post(
            &format!("/api/v1/tasks/{task}/cancel"),
            json!({"reason": "changed my mind"}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, view) = hive
        .get_at(&format!("/api/v1/tasks/{task}"), seq(&cancelled))
        .await;
    assert_eq!(
        (view["state"].as_str(), view["reason"].as_str()),
        (Some("cancelled"), Some("changed my mind"))
    );
    let (_, status_body) = hive.get_at("/status", seq(&cancelled)).await;
    assert_eq!(status_body["tasks"]["by_status"]["queued"], 0);
    assert_eq!(status_body["tasks"]["by_status"]["cancelled"], 1);

    let (status, history) = hive
        .get_at(&format!("/api/v1/tasks/{task}/events"), 0)
        .await;
    assert_eq!(status, 200);
    let types: Vec<&str> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["TaskCreated", "TaskCancelled"]);
    assert_eq!(history["events"][1]["seq"], seq(&cancelled));
    // `head`: whatever the log holds now, for a client that knows no sequence.
    let (status, _) = hive
        .post("/api/v1/tasks", json!({"title": "unseen yet"}))
        .await;
    assert_eq!(status, 201);
    let at_head = hive
        .http
        .request(Method::GET, "/api/v1/tasks?status=queued")
        .header("Hive-Min-Seq", "head")
        .send()
        .await
        .unwrap();
    assert_eq!(at_head.status(), 200);
    let queued: Value = at_head.json().await.unwrap();
    assert_eq!(queued["items"].as_array().unwrap().len(), 1, "{queued}");
    // Anything else than digits or `head` is refused, as the document says (a signed number too).
    for refused in ["+2", "-1", "2.0", "0x10", "two"] {
        let answer = hive
            .http
            .request(Method::GET, "/api/v1/tasks")
            .header("Hive-Min-Seq", refused)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 400, "{refused}");
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["error"]["code"], "bad_request", "{refused}: {body}");
    }
    hive.stop().await;
}

#[tokio::test]
async fn an_idempotent_retry_answers_the_first_result() {
    let world = World::new().await;
    let hive = world.hive().await;
    let send = || {
        hive.http
            .request(Method::POST, "/api/v1/tasks")
            .header("Idempotency-Key", "order-42")
            .json(&json!({"title": "once"}))
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let again = send().await.unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(first, again);
    let (_, list) = hive.get_at("/api/v1/tasks", seq(&first)).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);

    // The key names one request of one caller to one resource: the same key sent to cancel that
    // task, or by another caller, is another command (JetStream's duplicate window spans the stream).
    let task = first["task_id"].as_str().unwrap();
    let cancel = hive
        .http
        .request(Method::POST, &format!("/api/v1/tasks/{task}/cancel"))
        .header("Idempotency-Key", "order-42")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 200);
    assert!(cancel.headers().get("idempotent-replayed").is_none());
    let cancelled: Value = cancel.json().await.unwrap();
    assert!(seq(&cancelled) > seq(&first));
    let other = hive_tests::authorized_client(&hive.base, &world.token(Role::Operator).await);
    let theirs: Value = hive_tests::json(
        other
            .request(Method::POST, "/api/v1/tasks")
            .header("Idempotency-Key", "order-42")
            .json(&json!({"title": "theirs"})),
    )
    .await;
    assert_ne!(theirs["task_id"], first["task_id"]);
    let (_, task) = hive
        .get_at(&format!("/api/v1/tasks/{task}"), seq(&cancelled))
        .await;
    assert_eq!(task["state"], "cancelled");
    hive.stop().await;
}

#[tokio::test]
async fn agent_hive_2_task_bodies_projects_and_filters() {
    let world = World::new().await;
    let hive = world.hive().await;
    let (status, project) = hive
        .post(
            "/api/v1/projects",
            json!({"name": "alpha", "description": "first", "type": "software"}),
        )
        .await;
    assert_eq!(status, 201);
    let project_id = project["project_id"].as_str().unwrap().to_owned();
    let mut last = 0;
    for n in 0..5 {
        let (status, body) = hive
            .post(
                "/api/v1/tasks",
                json!({"task_type": "code_review", "description": format!("Review PR {n}\nthoroughly"),
                       "priority": "normal", "estimated_duration": 30, "project_id": project_id}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        last = seq(&body);
    }
    let (_, view) = hive
        .get_at(&format!("/api/v1/projects/{project_id}"), last)
        .await;
    assert_eq!(view["type"], "software");
    assert_eq!(view["tasks"]["total"], 5);
    assert_eq!(view["tasks"]["by_status"]["queued"], 5);

    let (_, page) = hive
        .get_at(
            &format!("/api/v1/tasks?project_id={project_id}&limit=2"),
            last,
        )
        .await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["title"], "Review PR 0");
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, rest) = hive
        .get_at(&format!("/api/v1/tasks?limit=10&cursor={cursor}"), last)
        .await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 3);
    assert!(rest["next_cursor"].is_null());
    let (_, pending) = hive.get_at("/api/v1/tasks?status=pending", last).await;
    assert_eq!(pending["items"].as_array().unwrap().len(), 5);
    let (_, running) = hive.get_at("/api/v1/tasks?status=in_progress", last).await;
    assert_eq!(running["items"].as_array().unwrap().len(), 0);

    let (_, a) = hive
        .post(
            "/api/v1/agents",
            json!({"agent_type": "w", "capabilities": ["gpu"]}),
        )
        .await;
    let (_, b) = hive
        .post(
            "/api/v1/agents",
            json!({"agent_type": "w", "capabilities": ["cpu"]}),
        )
        .await;
    let (_, gpu) = hive
        .get_at("/api/v1/agents?capability=gpu&status=registered", seq(&b))
        .await;
    let ids: Vec<&Value> = gpu["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["agent_id"])
        .collect();
    assert_eq!(ids, [&a["agent_id"]]);

    // A dependency that is not completed makes the new task wait.
    let first = items[0]["task_id"].as_str().unwrap();
    let (status, dependent) = hive
        .post(
            "/api/v1/tasks",
            json!({"title": "after", "depends_on": [first]}),
        )
        .await;
    assert_eq!(status, 201);
    let (_, view) = hive
        .get_at(
            &format!("/api/v1/tasks/{}", dependent["task_id"].as_str().unwrap()),
            seq(&dependent),
        )
        .await;
    assert_eq!(view["state"], "waiting");
    hive.stop().await;
}

#[tokio::test]
async fn a_malformed_message_in_the_stream_is_a_dead_letter_and_the_api_stays_healthy() {
    let world = World::new().await;
    let hive = world.hive().await;
    let subject = world
        .log()
        .subjects()
        .of(AggregateKind::Task, uuid::Uuid::now_v7());
    let poison = world
        .publish_raw(&subject, "{\"this is\": \"not an event\"}")
        .await;
    let (_, after) = hive
        .post("/api/v1/tasks", json!({"title": "still works"}))
        .await;
    assert!(seq(&after) > poison);
    let (status, dead) = hive.get_at("/api/v1/dead-letters", seq(&after)).await;
    assert_eq!(status, 200);
    let items = dead["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["seq"], poison);
    assert_eq!(items[0]["subject"], subject);
    assert!(
        items[0]["reason"]
            .as_str()
            .unwrap()
            .contains("malformed envelope")
    );
    let (_, task) = hive
        .get_at(
            &format!("/api/v1/tasks/{}", after["task_id"].as_str().unwrap()),
            seq(&after),
        )
        .await;
    assert_eq!(task["title"], "still works");
    let (status, health) = hive.get_at("/health", seq(&after)).await;
    assert_eq!((status, health["status"].as_str()), (200, Some("healthy")));
    hive.stop().await;
}

/// Publishes a `ProjectCreated` of a new project named `name`, occurred `at`, as a client of the log
/// would (past the API's checks); answers its sequence and the project's id.
async fn publish_project_created(
    world: &World,
    name: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> (u64, uuid::Uuid) {
    let id = uuid::Uuid::now_v7();
    let meta = hive_events::EventMeta::new(
        at,
        uuid::Uuid::now_v7(),
        None,
        hive_events::Actor::new("test"),
    );
    let event = hive_events::project::ProjectEvent::ProjectCreated {
        name: name.into(),
        description: None,
        project_type: None,
    };
    let payload = hive_events::envelope::encode(&meta, AggregateKind::Project, id, &event);
    let subject = world.log().subjects().of(AggregateKind::Project, id);
    (world.publish_raw(&subject, payload).await, id)
}

#[tokio::test]
async fn an_event_holding_a_nul_character_is_a_dead_letter_and_the_projection_goes_on() {
    let world = World::new().await;
    let hive = world.hive().await;
    // A well-formed event no read model can store (found by the fuzzer before the API refused such
    // bodies: the projector retried its batch forever).
    let (poison, _) = publish_project_created(&world, "a\u{0}b", chrono::Utc::now()).await;
    let (_, after) = hive
        .post("/api/v1/tasks", json!({"title": "still works"}))
        .await;
    assert!(seq(&after) > poison);
    let (status, dead) = hive.get_at("/api/v1/dead-letters", seq(&after)).await;
    assert_eq!(status, 200);
    let items = dead["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{dead}");
    assert_eq!(items[0]["seq"], poison);
    assert!(
        items[0]["reason"].as_str().unwrap().contains("NUL"),
        "{dead}"
    );
    hive.stop().await;
}

/// Well-formed events the read models' database cannot hold are dead letters, and the events after
/// them are projected: a time before 4712 BC is refused as the event is read; a task type too long
/// for its index is refused by PostgreSQL, and the batch that held it is committed again one event at
/// a time. Either way, before this, the projector retried the batch forever.
#[tokio::test]
async fn events_the_read_models_cannot_hold_are_dead_letters_and_the_projection_goes_on() {
    use chrono::TimeZone;
    let world = World::new().await;
    let hive = world.hive().await;
    // From long ago.
    let long_ago = chrono::Utc.with_ymd_and_hms(-5000, 1, 1, 0, 0, 0).unwrap();
    let (first, ancient) = publish_project_created(&world, "from long ago", long_ago).await;
    // A task type of 20,000 characters, past what its index holds (published by a client of the log:
    // the API refuses one over 100).
    let (_, model) = hive
        .post(
            "/api/v1/tasks",
            json!({"title": "a model", "task_type": "x"}),
        )
        .await;
    let model_id = model["task_id"].as_str().unwrap();
    let created = world
        .log()
        .history(AggregateKind::Task, model_id.parse().unwrap())
        .await
        .unwrap();
    let huge = uuid::Uuid::now_v7();
    let long_type: String = (0..625)
        .map(|_| uuid::Uuid::new_v4().simple().to_string())
        .collect();
    let payload = std::str::from_utf8(&created[0].payload)
        .unwrap()
        .replace(model_id, &huge.to_string())
        .replace(
            "\"task_type\":\"x\"",
            &format!("\"task_type\":\"{long_type}\""),
        );
    assert!(payload.contains(&long_type), "{payload}");
    let subject = world.log().subjects().of(AggregateKind::Task, huge);
    let second = world.publish_raw(&subject, payload).await;
    let (_, after) = hive
        .post("/api/v1/tasks", json!({"title": "still works"}))
        .await;
    assert!(seq(&after) > second);
    let (status, dead) = hive.get_at("/api/v1/dead-letters", seq(&after)).await;
    assert_eq!(status, 200);
    let items = dead["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{dead}");
    let reason = |seq: u64| {
        let item = items
            .iter()
            .find(|i| i["seq"] == seq)
            .expect("its dead letter");
        item["reason"].as_str().unwrap().to_owned()
    };
    assert!(reason(first).contains("before 4712 BC"), "{dead}");
    assert!(reason(second).contains("refused"), "{dead}");
    let (status, task) = hive
        .get_at(
            &format!("/api/v1/tasks/{}", after["task_id"].as_str().unwrap()),
            seq(&after),
        )
        .await;
    assert_eq!((status, task["title"].as_str()), (200, Some("still works")));
    for (kind, id) in [("projects", ancient), ("tasks", huge)] {
        let (status, _) = hive
            .get_at(&format!("/api/v1/{kind}/{id}"), seq(&after))
            .await;
        assert_eq!(status, 404, "{kind} {id}");
    }
    // The API refuses such a time in a command.
    let (status, refused) = hive
        .post(
            "/api/v1/tasks",
            json!({"title": "long ago", "not_before": "-5000-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, 422, "{refused}");
    hive.stop().await;
}

#[tokio::test]
async fn index_routes_name_the_api() {
    let world = World::new().await;
    let hive = world.hive().await;
    for path in ["/", "/api/v1/"] {
        let (status, body) = hive.get_at(path, 0).await;
        assert_eq!(status, 200);
        assert_eq!(body["name"], "hive");
        assert_eq!(body["links"]["health"], "/health");
    }
    hive.stop().await;
}

#[tokio::test]
async fn the_openapi_document_names_every_route_and_each_one_answers() {
    let world = World::new().await;
    let hive = world.hive().await;
    let (status, doc) = hive.get_at("/api/v1/openapi.json", 0).await;
    assert_eq!(status, 200);
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().unwrap();
    // The routes the README and docs/api.md promise are all there.
    for path in [
        "/health",
        "/status",
        "/api/v1/agents",
        "/api/v1/agents/{id}",
        "/api/v1/agents/spawn",
        "/api/v1/tasks/{id}/{action}",
        "/api/v1/stream",
        "/api/v1/projections",
        "/dashboard",
        "/dashboard/coordination",
        "/metrics",
        "/api/agents/spawn",
        "/debug-agents",
        "/api/v1/openapi.json",
        "/api/v1/docs",
    ] {
        assert!(paths.contains_key(path), "{path} is not documented");
    }
    // Every documented operation is served: none answers "no such route" or 405.
    let mut operations = 0;
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let url = hive.url(
                &path
                    .replace("{id}", &uuid::Uuid::now_v7().to_string())
                    .replace(
                        "{action}",
                        if path.starts_with("/api/v1/agents") {
                            "drain"
                        } else {
                            "accept"
                        },
                    ),
            );
            let request = match method.as_str() {
                "get" => hive.http.request(Method::GET, &url),
                "post" => hive.http.request(Method::POST, &url).json(&json!({})),
                "delete" => hive.http.request(Method::DELETE, &url),
                other => panic!("{other} {path}: an unexpected method"),
            };
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let streaming = path.ends_with("/stream") || path.ends_with("/assignments");
            let body: serde_json::Value = if streaming {
                serde_json::Value::Null
            } else {
                response.json().await.unwrap_or_default()
            };
            assert_ne!(status, 405, "{method} {path}");
            assert_ne!(
                body["error"]["message"], "no such route",
                "{method} {path} is documented but not served"
            );
            assert!(status < 500, "{method} {path}: {status}");
            operations += 1;
        }
    }
    assert!(operations >= 34, "{operations} operations");
    let docs = hive.get("/api/v1/docs").await;
    assert_eq!(docs.status(), 200);
    assert!(
        docs.text().await.unwrap().contains("swagger"),
        "an interactive page"
    );
    hive.stop().await;
}
