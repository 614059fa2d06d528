//! The published contract, checked by tools that are not ours: the AsyncAPI document a hive serves is
//! the one its event types generate, for its own stream, public, and valid for the AsyncAPI initiative's
//! parser (npm's `@asyncapi/parser`, installed pinned by `scripts/install-deps --test-tools`).

use hive_client::Method;
use std::path::PathBuf;

use hive_tests::World;
use serde_json::Value;

/// Where `scripts/install-deps --test-tools` installs the AsyncAPI parser's `node_modules`.
fn asyncapi_modules() -> PathBuf {
    hive_tests::test_tools().join("asyncapi/node_modules")
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[tokio::test]
async fn the_asyncapi_document_is_public_and_valid_for_the_asyncapi_parser() {
    let world = World::new().await;
    let hive = world.hive().await;
    // No token: the contract is public, as the OpenAPI document is.
    let response = hive
        .http
        .request(Method::GET, "/api/v1/asyncapi.json")
        .token(None)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let document: Value = response.json().await.unwrap();
    let namespace = world.namespace();
    assert_eq!(
        document,
        hive_events::contract::asyncapi(&namespace.stream(), &namespace.subjects()),
    );
    assert_eq!(
        document["channels"]["task"]["address"],
        format!("{}.task.{{aggregate_id}}", namespace.subjects().prefix()),
        "this deployment's own subjects"
    );

    let modules = asyncapi_modules();
    assert!(
        modules.join("@asyncapi/parser").exists(),
        "{} is missing: run scripts/install-deps --test-tools",
        modules.display()
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec(&document).unwrap()).unwrap();
    let output = tokio::process::Command::new("node")
        .arg(repo().join("scripts/validate-asyncapi.cjs"))
        .arg(file.path())
        .env("NODE_PATH", &modules)
        .output()
        .await
        .expect("run node");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the AsyncAPI parser refuses the document:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let messages = hive_events::contract::event_types().len();
    assert!(
        report.contains(&format!("3 channels, {messages} messages")),
        "{report}"
    );
    hive.stop().await;
}

/// The Python that `scripts/install-deps --test-tools` installs beside schemathesis, which brings
/// `jsonschema`: all an outside client needs to check answers against the documents.
fn python() -> PathBuf {
    hive_tests::test_tools().join("schemathesis/bin/python")
}

/// `tests/contract/outsider.py` was written only from the OpenAPI and AsyncAPI documents, with
/// Python's standard library and `jsonschema`: it creates work (once under a repeated idempotency
/// key), follows the feed from sequence N across a cut connection, and audits one flow, checking every
/// answer and event against the documents as it goes.
#[tokio::test]
async fn a_python_client_written_from_the_documents_creates_follows_resumes_and_audits() {
    let world = World::new().await;
    let hive = world.full_hive().await;
    let _agent = hive.agent_process(&["--exec", "cat", "--max-concurrent-tasks", "2"]);
    let operator = world.token(hive_eventlog::Role::Operator).await;
    let run = tokio::process::Command::new(python())
        .arg(repo().join("tests/contract/outsider.py"))
        .env("HIVE_URL", &hive.base)
        .env("HIVE_TOKEN", &operator)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(120), run)
        .await
        .expect("the script ends within 2 minutes")
        .expect("run python");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(report.contains("ok: "), "{report}");
    eprintln!("{report}");
    hive.stop().await;
}
