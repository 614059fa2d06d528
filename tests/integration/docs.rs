//! The Rust examples of the docs run: each ```rust block of `README.md` and `docs/api.md` is one of
//! the modules below, word for word (a test finds every block here), and the tests call them against
//! a real hive. The Python and shell examples are run by the Python client's suite
//! (`clients/python/tests/test_docs.py`).

use std::path::Path;

use hive_tests::World;

// ---- README.md, "Try it": the Rust client.
mod readme {
    use futures::StreamExt;
    use hive_client::{AggregateKind, Client, EventFilter};
    use serde_json::json;

    /// Creates a task, reads it back, and follows its events until an agent completes it.
    pub async fn build(url: &str, token: String) -> Result<(), hive_client::ClientError> {
        let hive = Client::new(url).with_token(Some(token));
        let created = hive
            .create_task(&json!({"title": "build", "required_capabilities": ["rust"]}))
            .await?; // sent with an Idempotency-Key, retried under it: applied once
        let id = created["task_id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .expect("an id");
        let task = hive.task(id).await?; // sees its own write: no Hive-Min-Seq to manage
        println!("{} is {}", task["title"], task["status"]);
        // What the log holds of it, then each new event live, resumed if the connection drops.
        let mut events = hive
            .events(0, EventFilter::entity(AggregateKind::Task, id))
            .boxed();
        while let Some(event) = events.next().await {
            let event = event?;
            println!("#{} {} -> {}", event["seq"], event["type"], event["state"]);
            if event["type"] == "TaskCompleted" {
                break;
            }
        }
        Ok(())
    }
}

// ---- docs/api.md, "Clients": the Rust client.
mod api {
    use hive_client::{Client, ClientError, ErrorCode, Method};
    use serde_json::json;
    use uuid::Uuid;

    /// One command sent twice under one key, applied once; a refusal read by its code.
    pub async fn once(url: &str, token: String) -> Result<(), ClientError> {
        let hive = Client::new(url).with_token(Some(token));
        let key = format!("lint-{}", Uuid::now_v7());
        let create = || {
            hive.command(Method::POST, "/api/v1/tasks")
                .json(&json!({"title": "lint", "priority": "low"}))
                .idempotency_key(key.clone())
        };
        let (first, again) = (create().send().await?, create().send().await?);
        assert_eq!(first["task_id"], again["task_id"]);
        match hive.task(Uuid::now_v7()).await {
            Err(refused) if refused.is(ErrorCode::NotFound) => println!("{refused}"),
            other => panic!("a task nobody created: {other:?}"),
        }
        Ok(())
    }
}

#[tokio::test]
async fn the_api_docs_rust_example_applies_a_repeated_command_once_and_reads_a_refusal() {
    let world = World::new().await;
    let hive = world.hive().await;
    api::once(&hive.base, hive.token.clone())
        .await
        .expect("the example succeeds");
    let page = hive
        .http
        .get("/api/v1/events?aggregate=task")
        .await
        .expect("the log");
    assert_eq!(
        page["items"].as_array().map(Vec::len),
        Some(1),
        "one task created: {page}"
    );
    hive.stop().await;
}

#[tokio::test]
async fn the_readme_rust_example_creates_a_task_and_follows_it_to_completion() {
    let world = World::new().await;
    let hive = world.full_hive().await;
    let _agent = hive.agent_process(&["--exec", "cat", "--capabilities", "rust"]);
    tokio::time::timeout(
        std::time::Duration::from_secs(60),
        readme::build(&hive.base, hive.token.clone()),
    )
    .await
    .expect("the task completes within a minute")
    .expect("the example succeeds");
    hive.stop().await;
}

/// The ```rust blocks of a Markdown file.
fn rust_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_start()) {
            (None, "```rust") => current = Some(Vec::new()),
            (Some(block), "```") => {
                blocks.push(block.join("\n"));
                current = None;
            }
            (Some(block), _) => block.push(line),
            (None, _) => {}
        }
    }
    blocks
}

/// Its lines, trimmed, without blank ones: indentation is the only liberty a module takes.
fn lines(code: &str) -> Vec<&str> {
    code.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn every_rust_block_of_the_docs_is_run_here() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let here = std::fs::read_to_string(repo.join("tests/integration/docs.rs")).unwrap();
    let here = lines(&here);
    let mut seen = 0;
    for doc in ["README.md", "docs/api.md"] {
        let text = std::fs::read_to_string(repo.join(doc)).unwrap();
        for block in rust_blocks(&text) {
            let block = lines(&block);
            assert!(
                here.windows(block.len()).any(|w| w == block.as_slice()),
                "a Rust example of {doc} is not run by tests/integration/docs.rs; copy it into a \
                 module there and call it from a test:\n{}",
                block.join("\n")
            );
            seen += 1;
        }
    }
    assert!(seen >= 1, "the docs have no Rust example");
}
