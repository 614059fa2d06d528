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

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}
