//! The HTTP API at its limits: every class of bad input (a table of requests and the errors they must
//! get), no database, no projector, and more requests than it has slots for.
//!
//! Long because the table of bad input is one test whose rows are the point.

use hive_client::Method;
use serde_json::{Value, json};

use hive_tests::{TestHive, World};

/// The sequence an answer names.
fn seq(body: &Value) -> u64 {
    body["seq"].as_u64().expect("a seq in the answer")
}

async fn expect_error(response: hive_client::Response, status: u16, code: &str) {
    assert_eq!(response.status().as_u16(), status);
    let body: Value = response.json().await.expect("an error body in JSON");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(!body["error"]["message"].as_str().unwrap().is_empty());
}

/// What a bad request sends as its body.
enum Body {
    /// Nothing.
    Empty,
    /// JSON (and its content type).
    Json(Value),
    /// These bytes, with this `content-type` if any.
    Raw(Option<&'static str>, &'static str),
}

/// One row of the bad-input table: a request and the error it must get.
struct Bad {
    /// What is wrong with it, named when the row fails.
    what: &'static str,
    method: Method,
    path: String,
    headers: Vec<(&'static str, &'static str)>,
    body: Body,
    status: u16,
    code: &'static str,
    /// A field the error's message must name.
    field: Option<&'static str>,
}

/// A row of `what`: `method path` with `body` must answer `status` with error `code`.
fn bad(
    what: &'static str,
    method: Method,
    path: impl Into<String>,
    body: Body,
    (status, code): (u16, &'static str),
) -> Bad {
    Bad {
        what,
        method,
        path: path.into(),
        headers: Vec::new(),
        body,
        status,
        code,
        field: None,
    }
}

impl Bad {
    /// The row, whose error's message must name `field`.
    fn names(mut self, field: &'static str) -> Self {
        self.field = Some(field);
        self
    }

    /// The row, sending header `name: value` too.
    fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.push((name, value));
        self
    }
}

/// Sends each row's request; asserts its status, its error code and a message, naming the row that
/// fails.
async fn check(hive: &TestHive, rows: Vec<Bad>) {
    for row in rows {
        let name = format!("row `{}` ({} {})", row.what, row.method, row.path);
        let mut request = hive.http.request(row.method.clone(), &row.path);
        for (header, value) in &row.headers {
            request = request.header(*header, *value);
        }
        request = match row.body {
            Body::Empty => request,
            Body::Json(body) => request.json(&body),
            Body::Raw(Some(content_type), text) => {
                request.header("content-type", content_type).body(text)
            }
            Body::Raw(None, text) => request.body(text),
        };
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(response.status().as_u16(), row.status, "{name}: status");
        let body: Value = response
            .json()
            .await
            .unwrap_or_else(|e| panic!("{name}: an error body in JSON: {e}"));
        assert_eq!(body["error"]["code"], row.code, "{name}: {body}");
        assert!(
            !body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .is_empty(),
            "{name}: a message in {body}"
        );
        if let Some(field) = row.field {
            let message = body["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains(field), "{name}: names {field} in {body}");
        }
    }
}

#[tokio::test]
async fn every_class_of_bad_input_gets_its_4xx() {
    let world = World::new().await;
    let hive = world.hive().await;
    let tasks = "/api/v1/tasks";
    let agents = "/api/v1/agents";
    let invalid = (422, "validation_failed");
    let bad_request = (400, "bad_request");
    let not_found = (404, "not_found");
    let unknown = uuid::Uuid::now_v7();
    let huge = json!({"title": "big", "description": "x".repeat(2 * 1024 * 1024)});
    use Body::{Empty, Json, Raw};
    use Method as M;
    #[rustfmt::skip]
    let rows = vec![
        bad("not JSON", M::POST, tasks, Raw(Some("application/json"), "{not json"), (400, "invalid_json")),
        bad("no content type", M::POST, tasks, Raw(None, r#"{"title":"x"}"#), (415, "unsupported_media_type")),
        bad("2 MiB", M::POST, tasks, Json(huge), (413, "payload_too_large")),
        bad("a priority that is a word", M::POST, tasks, Json(json!({"title": "x", "priority": "urgent"})), invalid),
        bad("a priority out of range", M::POST, tasks, Json(json!({"title": "x", "priority": 11})), invalid),
        bad("a title that is a number", M::POST, tasks, Json(json!({"title": 5})), invalid),
        bad("no title", M::POST, tasks, Json(json!({})), invalid),
        bad("an array for an object", M::POST, tasks, Json(json!(["x"])), invalid),
        // PostgreSQL stores no NUL character: a body holding one once stopped the projector for good.
        bad("a NUL in a title", M::POST, tasks, Json(json!({"title": "a\u{0}b"})), invalid),
        // A filter the database cannot hold (a NUL byte, found by the fuzzer) is the request's fault.
        bad("a NUL byte in a filter", M::GET, "/api/v1/agents?capability=%00", Empty, bad_request),
        bad("an unknown dependency", M::POST, tasks, Json(json!({"title": "x", "depends_on": [unknown]})), invalid),
        bad("an unknown project", M::POST, tasks, Json(json!({"title": "x", "project_id": unknown})), invalid),
        bad("a capability not in the grammar", M::POST, tasks, Json(json!({"title": "x", "required_capabilities": ["Not Valid"]})), invalid),
        bad("33 labels", M::POST, tasks, Json(json!({"title": "x", "labels": (0..33).map(|i| (format!("k{i}"), json!("v"))).collect::<serde_json::Map<_, _>>()})), invalid).names("labels"),
        bad("a label key with a colon", M::POST, tasks, Json(json!({"title": "x", "labels": {"team:a": "x"}})), invalid).names("labels"),
        bad("a label value that is a number", M::POST, tasks, Json(json!({"title": "x", "labels": {"team": 1}})), invalid).names("labels"),
        bad("a timeout of 0", M::POST, tasks, Json(json!({"title": "x", "timeout_secs": 0})), invalid).names("timeout_secs"),
        bad("a negative heartbeat timeout", M::POST, tasks, Json(json!({"title": "x", "heartbeat_timeout_secs": -1})), invalid).names("heartbeat_timeout_secs"),
        bad("a grace over an hour", M::POST, tasks, Json(json!({"title": "x", "cancel_grace_secs": 3601})), invalid).names("cancel_grace_secs"),
        bad("a not_before that is no time", M::POST, tasks, Json(json!({"title": "x", "not_before": "tomorrow"})), invalid).names("not_before"),
        bad("room for no task", M::POST, agents, Json(json!({"agent_type": "w", "max_concurrent_tasks": 0})), invalid),
        bad("an unknown field", M::POST, agents, Json(json!({"agent_type": "w", "capabilites": ["typo"]})), invalid),
        bad("an id that is no UUID", M::GET, "/api/v1/tasks/not-a-uuid", Empty, bad_request),
        bad("an unknown task", M::GET, format!("/api/v1/tasks/{unknown}"), Empty, not_found),
        bad("an unknown agent's events", M::GET, format!("/api/v1/agents/{unknown}/events"), Empty, not_found),
        bad("no such route", M::GET, "/api/v1/nothing-here", Empty, not_found),
        bad("no such method", M::DELETE, tasks, Empty, (405, "method_not_allowed")),
        bad("a limit of 0", M::GET, "/api/v1/tasks?limit=0", Empty, bad_request),
        bad("an unknown status", M::GET, "/api/v1/tasks?status=sleeping", Empty, invalid),
        bad("a cursor not ours", M::GET, "/api/v1/tasks?cursor=xyz", Empty, bad_request),
        bad("a Hive-Min-Seq that is a word", M::GET, "/status", Empty, bad_request).header("Hive-Min-Seq", "soon"),
        bad("a Hive-Min-Seq past the log's head", M::GET, "/status", Empty, bad_request).header("Hive-Min-Seq", "999999"),
        bad("an empty Idempotency-Key", M::POST, tasks, Json(json!({"title": "x"})), bad_request).header("Idempotency-Key", ""),
        bad("a tab in an Idempotency-Key", M::POST, tasks, Json(json!({"title": "x"})), bad_request).header("Idempotency-Key", "a\tb"),
    ];
    check(&hive, rows).await;

    let (_, created) = hive.post("/api/v1/tasks", json!({"title": "once"})).await;
    let cancel = format!(
        "/api/v1/tasks/{}/cancel",
        created["task_id"].as_str().unwrap()
    );
    assert_eq!(
        hive.http
            .request(Method::POST, &hive.url(&cancel))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    #[rustfmt::skip]
    let rows = vec![
        // An optional body is an object or null; `[]` once passed as a report with every field left out.
        bad("an array for a report", M::POST, cancel.clone(), Json(json!([])), invalid),
        bad("a cancel of a cancelled task", M::POST, cancel, Empty, (409, "invalid_transition")),
        bad("a cancel of an unknown task", M::POST, format!("/api/v1/tasks/{unknown}/cancel"), Empty, not_found),
    ];
    check(&hive, rows).await;

    // Nothing of the above was appended but the two accepted commands.
    let (_, status) = hive.get_at("/status", 2).await;
    assert_eq!(status["log"]["last_seq"], 2);
    hive.stop().await;
}

#[tokio::test]
async fn without_its_database_the_hive_reports_unhealthy_and_reads_answer_503() {
    use sea_orm::ConnectionTrait;
    let world = World::new().await;
    let hive = world.hive().await;
    let (status, _) = hive.get_at("/health", 0).await;
    assert_eq!(status, 200);
    let admin = sea_orm::Database::connect(world.admin_url()).await.unwrap();
    admin
        .execute_unprepared(&format!(
            "DROP DATABASE \"{}\" WITH (FORCE)",
            world.database
        ))
        .await
        .unwrap();

    // Public: a stable reason, and nothing of the database's own words.
    let public = hive
        .http
        .request(Method::GET, "/health?detail=1")
        .token(None)
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), 503);
    let health: Value = public.json().await.unwrap();
    assert_eq!(health["status"], "unhealthy");
    let database = &health["components"]["database"];
    assert_eq!(database["status"], "unhealthy");
    assert_eq!(
        database["details"],
        json!({"reason": "unreachable"}),
        "{health}"
    );
    assert_eq!(health["components"]["event_store"]["status"], "healthy");
    assert_eq!(health["summary"]["unhealthy"].as_u64(), Some(1));
    // An admin who asks sees the detail.
    let (status, health) = hive.get_at("/health?detail=1", 0).await;
    assert_eq!(status, 503, "{health}");
    let detail = &health["components"]["database"]["details"];
    assert_eq!(detail["reason"], "unreachable");
    assert!(
        detail["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{health}"
    );

    let response = hive.get("/api/v1/tasks").await;
    assert_eq!(response.headers()["retry-after"], "1");
    expect_error(response, 503, "unavailable").await;
    hive.stop().await;
}

#[tokio::test]
async fn without_nats_the_hive_reports_unhealthy_and_commands_answer_503() {
    use hive_devservers::{Durability, NatsServer};
    let dir = tempfile::tempdir().unwrap();
    let mut nats = NatsServer::start(&dir.path().join("nats"), None, Durability::Throwaway, &[])
        .await
        .unwrap();
    let world = World::on_nats(nats.url()).await;
    let hive = world.hive().await;
    let (status, _) = hive.get_at("/health", 0).await;
    assert_eq!(status, 200);
    nats.stop();

    // Public: a stable reason, and nothing of the client library's own words.
    let health = hive_tests::eventually(
        std::time::Duration::from_secs(10),
        std::time::Duration::from_millis(50),
        async || {
            let response = hive
                .http
                .request(Method::GET, "/health?detail=1")
                .token(None)
                .send()
                .await
                .unwrap();
            let code = response.status();
            let body: Value = response.json().await.unwrap();
            (code == 503).then_some(body)
        },
    )
    .await
    .expect("the hive reports that NATS is gone");
    assert_eq!(health["status"], "unhealthy");
    let store = &health["components"]["event_store"];
    assert_eq!(store["status"], "unhealthy", "{health}");
    let reason = store["details"]["reason"].as_str().unwrap_or_default();
    assert!(["unreachable", "timeout"].contains(&reason), "{health}");
    assert_eq!(
        store["details"].as_object().map(|d| d.len()),
        Some(1),
        "only the reason: {health}"
    );
    assert_eq!(health["components"]["database"]["status"], "healthy");
    // An admin who asks sees the detail.
    let (status, health) = hive.get_at("/health?detail=1", 0).await;
    assert_eq!(status, 503, "{health}");
    let detail = &health["components"]["event_store"]["details"];
    assert!(
        detail["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{health}"
    );

    // A command cannot be appended: 503 with Retry-After, in the API's error format.
    let response = hive_tests::authorized_client(&hive.base, &hive.token)
        .request(Method::POST, "/api/v1/tasks")
        .json(&json!({"title": "not now"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["retry-after"], "1");
    expect_error(response, 503, "unavailable").await;
    hive.stop().await;
}

#[tokio::test]
async fn without_a_projector_reads_wait_at_most_their_bound_and_health_says_it_stalled() {
    let mut world = World::new().await;
    world.config.min_seq_timeout_ms = 300;
    world.config.health_stall_secs = 0.5;
    let api = world
        .run(hive::Parts {
            api: true,
            projector: false,
            scheduler: false,
        })
        .await;
    let (status, health) = api.get_at("/health", 0).await;
    assert_eq!(
        (status, &health["status"]),
        (200, &json!("healthy")),
        "{health}"
    );
    let (status, created) = api.post("/api/v1/tasks", json!({"title": "unseen"})).await;
    assert_eq!(status, 201);

    // Nobody projects: a read that asks for the new event waits its bound, then says so.
    let started = std::time::Instant::now();
    let response = api
        .http
        .request(Method::GET, &api.url("/api/v1/tasks"))
        .header("Hive-Min-Seq", seq(&created).to_string())
        .send()
        .await
        .unwrap();
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
    assert!(response.headers().contains_key("retry-after"));
    expect_error(response, 503, "projection_lagging").await;

    // Behind the head and standing still: degraded, however small the lag.
    let health = hive_tests::eventually(
        std::time::Duration::from_secs(10),
        std::time::Duration::from_millis(50),
        async || {
            let (_, health) = api.get_at("/health", 0).await;
            (health["status"] == "degraded").then_some(health)
        },
    )
    .await
    .expect("/health says degraded");
    let projector = &health["components"]["projector"];
    assert_eq!(projector["status"], "degraded");
    assert_eq!(projector["details"]["lag_events"], 1);
    assert!(projector["details"]["stalled_secs"].is_u64(), "{projector}");

    // A projector comes: the read is answered and the hive is healthy again.
    let projector = world
        .run(hive::Parts {
            api: false,
            projector: true,
            scheduler: false,
        })
        .await;
    hive_tests::until(
        hive_tests::wait::PATIENCE,
        "the projector caught up",
        || {},
        async || (api.get_at("/api/v1/tasks", seq(&created)).await.0 == 200).then_some(()),
    )
    .await;
    let (_, health) = api.get_at("/health", 0).await;
    assert_eq!(health["status"], "healthy", "{health}");
    projector.stop().await;
    api.stop().await;
}

#[tokio::test]
async fn more_requests_than_slots_are_shed_at_once_and_the_api_recovers() {
    let mut world = World::new().await;
    world.config.http_max_in_flight = 1;
    // No projector: a read that waits for a sequence holds its slot until the wait times out.
    let hive = world
        .run(hive::Parts {
            api: true,
            projector: false,
            scheduler: false,
        })
        .await;
    let (status, created) = hive
        .post("/api/v1/tasks", json!({"title": "never projected"}))
        .await;
    assert_eq!(status, 201, "{created}");
    let seq = created["seq"].as_u64().unwrap();
    let waiting = {
        let (http, url) = (hive.http.clone(), hive.url("/api/v1/tasks"));
        tokio::spawn(async move {
            http.request(Method::GET, &url)
                .header("Hive-Min-Seq", seq.to_string())
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    // Until the waiting read holds the only slot (the metrics are not counted against it).
    let in_flight = async || {
        hive.scrape()
            .await
            .samples
            .into_iter()
            .find(|s| s.metric == "hive_http_requests_in_flight")
            .map(|s| match s.value {
                prometheus_parse::Value::Gauge(v) => v,
                _ => 0.0,
            })
            .unwrap_or(0.0)
    };
    hive_tests::until(
        std::time::Duration::from_secs(10),
        "the waiting read takes its slot",
        || {},
        async || (in_flight().await >= 1.0).then_some(()),
    )
    .await;

    let shed = hive.get("/status").await;
    assert_eq!(shed.status(), 503);
    assert_eq!(shed.headers()["retry-after"], "1");
    let body: Value = shed.json().await.unwrap();
    assert_eq!(body["error"]["code"], "overloaded", "{body}");
    // The probe answers whatever the load.
    assert_eq!(hive.get("/livez").await.status(), 200);

    // The waiting read ends (its sequence is never projected here), and the slot is free again.
    assert_eq!(waiting.await.unwrap(), 503);
    assert_eq!(hive.get("/status").await.status(), 200);
    let text = hive.get("/metrics").await.text().await.unwrap();
    assert!(text.contains("hive_http_shed_total 1"), "{text}");
    hive.stop().await;
}
