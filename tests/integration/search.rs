//! Finding tasks (`GET /api/v1/tasks`): by labels (every one given must match), type, a required
//! capability, a creation window and text in the title, alone and together, on the read models'
//! indexes; a filter that cannot be read is refused, naming it.

use std::collections::BTreeSet;

use hive_tests::World;
use hive_tests::api::create_task;
use serde_json::{Value, json};

/// The titles of the tasks `query` finds (every page), once the read models reflect `seq`.
async fn titles(hive: &hive_tests::TestHive, query: &str, seq: u64) -> BTreeSet<String> {
    let (status, page) = hive.get_at(&format!("/api/v1/tasks?{query}"), seq).await;
    assert_eq!(status, 200, "{query}: {page}");
    assert!(page["next_cursor"].is_null(), "one page");
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["title"].as_str().unwrap().to_owned())
        .collect()
}

fn set(titles: &[&str]) -> BTreeSet<String> {
    titles.iter().map(|t| (*t).to_owned()).collect()
}

#[tokio::test]
async fn tasks_are_found_by_labels_type_capability_time_and_title() {
    let world = World::new().await;
    let hive = world.hive().await;
    let tasks: [(&str, Value); 5] = [
        (
            "Build the parser",
            json!({"labels": {"team": "infra", "env": "prod"}, "task_type": "code", "required_capabilities": ["rust"]}),
        ),
        (
            "Review the parser",
            json!({"labels": {"team": "infra", "env": "dev"}, "task_type": "review"}),
        ),
        (
            "Deploy 100% of it",
            json!({"labels": {"team": "web", "env": "prod"}, "task_type": "deploy", "required_capabilities": ["k8s", "rust"]}),
        ),
        ("build_docs", json!({"task_type": "code"})),
        ("Later work", json!({"labels": {"team": "infra"}})),
    ];
    let mut created_at = Vec::new();
    let mut seq = 0;
    for (title, fields) in tasks {
        let mut body = fields;
        body["title"] = title.into();
        let id = create_task(&hive, body).await;
        let (_, view) = hive.get_at(&format!("/api/v1/tasks/{id}"), 0).await;
        seq = seq.max(view["seq"].as_u64().unwrap());
        created_at.push(view["created_at"].as_str().unwrap().to_owned());
    }
    let (_, last) = hive.get_at("/status", 0).await;
    seq = seq.max(last["log"]["last_seq"].as_u64().unwrap_or(seq));

    let cases: [(&str, &[&str]); 11] = [
        (
            "label=team:infra",
            &["Build the parser", "Review the parser", "Later work"],
        ),
        ("label=team:infra&label=env:prod", &["Build the parser"]),
        ("label=env:prod", &["Build the parser", "Deploy 100% of it"]),
        ("label=team:nobody", &[]),
        ("task_type=code", &["Build the parser", "build_docs"]),
        (
            "capability=rust",
            &["Build the parser", "Deploy 100% of it"],
        ),
        ("capability=rust&label=team:web", &["Deploy 100% of it"]),
        ("q=PARSER", &["Build the parser", "Review the parser"]),
        // The wildcards of LIKE are plain characters in `q`.
        ("q=100%25", &["Deploy 100% of it"]),
        ("q=build_", &["build_docs"]),
        ("q=parser&task_type=review", &["Review the parser"]),
    ];
    for (query, expected) in cases {
        assert_eq!(titles(&hive, query, seq).await, set(expected), "{query}");
    }
    // A creation window, both ends included.
    let window = format!(
        "created_after={}&created_before={}",
        urlencode(&created_at[1]),
        urlencode(&created_at[3])
    );
    assert_eq!(
        titles(&hive, &window, seq).await,
        set(&["Review the parser", "Deploy 100% of it", "build_docs"])
    );

    for (query, status, field) in [
        ("label=team", 422, "label"),
        ("label=a:b:c&label=no%20key:x", 422, "label"),
        ("q=", 422, "q"),
        ("created_after=yesterday", 400, "created_after"),
    ] {
        let (got, body) = hive.get_at(&format!("/api/v1/tasks?{query}"), 0).await;
        assert_eq!(got, status, "{query}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(field), "{query}: names {field} in {body}");
    }
    let long = "x".repeat(201);
    let (got, _) = hive.get_at(&format!("/api/v1/tasks?q={long}"), 0).await;
    assert_eq!(got, 422, "a q over 200 characters");
    hive.stop().await;
}

#[tokio::test]
async fn agents_carry_labels_and_are_found_by_them() {
    let world = World::new().await;
    let hive = world.hive().await;
    let mut seq = 0;
    for (name, labels) in [
        ("gpu-1", json!({"pool": "gpu", "zone": "a"})),
        ("gpu-2", json!({"pool": "gpu", "zone": "b"})),
        ("cpu-1", json!({"pool": "cpu"})),
    ] {
        let (status, body) = hive
            .post(
                "/api/v1/agents",
                json!({"name": name, "agent_type": "worker", "labels": labels}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        seq = seq.max(body["seq"].as_u64().unwrap());
    }
    let names = async |query: &str| -> BTreeSet<String> {
        let (status, page) = hive.get_at(&format!("/api/v1/agents?{query}"), seq).await;
        assert_eq!(status, 200, "{page}");
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names("label=pool:gpu").await, set(&["gpu-1", "gpu-2"]));
    assert_eq!(names("label=pool:gpu&label=zone:b").await, set(&["gpu-2"]));
    let (_, page) = hive.get_at("/api/v1/agents?label=pool:cpu", seq).await;
    assert_eq!(page["items"][0]["labels"], json!({"pool": "cpu"}));
    let (status, body) = hive
        .post(
            "/api/v1/agents",
            json!({"agent_type": "worker", "labels": {"bad key": "x"}}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("labels")
    );
    hive.stop().await;
}

/// A page walks the first tasks of the list before it asks the search index (when a combination of
/// filters matches few): every way a page is put together finds what a plain filter finds, in order,
/// page after page. The tasks are written straight into the read model (60,000 of them, many more
/// than a walk reads), their ids in creation order.
#[tokio::test]
async fn a_search_past_the_walk_finds_what_a_plain_filter_finds() {
    use sea_orm::ConnectionTrait;

    let world = World::new().await;
    let hive = world.hive().await;
    // Labels: `d` on every 50th task (a first walk fills a page), `s` on every 500th (a second walk
    // does), `r` on every 5,000th (the index does), `late` only on tasks past 50,000 (the first walk
    // finds none), `early` dense at first, then nothing for 46,000 tasks, then a few (both walks,
    // then the index). A type and a capability that no task has together.
    world
        .db()
        .execute_unprepared(
            "INSERT INTO tasks (id, title, task_type, priority, required_capabilities, depends_on,
                                max_attempts, attempts, status, last_error_retryable, created_at,
                                updated_at, last_seq, labels)
             SELECT ('00000000-0000-7000-8000-' || lpad(to_hex(g), 12, '0'))::uuid,
                    'w' || g, (ARRAY['code', 'review', 'deploy', 'test'])[g % 4 + 1], 5,
                    ARRAY['cap' || (g % 20)], '{}', 3, 1, 'completed', false, now(), now(), g,
                    jsonb_strip_nulls(jsonb_build_object(
                      'd', CASE WHEN g % 50 = 0 THEN 'y' END,
                      's', CASE WHEN g % 500 = 0 THEN 'y' END,
                      'r', CASE WHEN g % 5000 = 0 THEN 'y' END,
                      'late', CASE WHEN g > 50000 AND g % 10 = 0 THEN 'y' END,
                      'early', CASE WHEN (g <= 4000 AND g % 100 = 0)
                                     OR (g > 50000 AND g % 1000 = 0) THEN 'y' END))
             FROM generate_series(1, 60000) AS g;
             ANALYZE tasks;",
        )
        .await
        .unwrap();
    let cases = [
        ("label=d:y", "labels @> '{\"d\": \"y\"}'"),
        ("label=s:y", "labels @> '{\"s\": \"y\"}'"),
        ("label=r:y", "labels @> '{\"r\": \"y\"}'"),
        ("label=late:y", "labels @> '{\"late\": \"y\"}'"),
        ("label=early:y", "labels @> '{\"early\": \"y\"}'"),
        (
            "task_type=review&capability=cap3",
            "task_type = 'review' AND required_capabilities @> '{cap3}'",
        ),
        ("q=w5999", "title LIKE '%w5999%'"),
        (
            "label=s:y&capability=cap0",
            "labels @> '{\"s\": \"y\"}' AND required_capabilities @> '{cap0}'",
        ),
    ];
    for (filter, sql) in cases {
        for order in ["asc", "desc"] {
            let direction = if order == "asc" { "ASC" } else { "DESC" };
            let expected: Vec<String> = world
                .db()
                .query_all_raw(sea_orm::Statement::from_string(
                    sea_orm::DbBackend::Postgres,
                    format!("SELECT id::text AS id FROM tasks WHERE {sql} ORDER BY id {direction}"),
                ))
                .await
                .unwrap()
                .iter()
                .map(|row| row.try_get::<String>("", "id").unwrap())
                .collect();
            let mut got = Vec::new();
            let mut cursor = String::new();
            loop {
                let (status, page) = hive
                    .get_at(
                        &format!("/api/v1/tasks?{filter}&order={order}&limit=50{cursor}"),
                        0,
                    )
                    .await;
                assert_eq!(status, 200, "{filter}: {page}");
                got.extend(
                    page["items"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|t| t["task_id"].as_str().unwrap().to_owned()),
                );
                match page["next_cursor"].as_str() {
                    Some(next) => cursor = format!("&cursor={next}"),
                    None => break,
                }
            }
            assert_eq!(got, expected, "{filter} {order}");
        }
    }
    hive.stop().await;
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}
