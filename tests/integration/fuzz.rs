//! The API's OpenAPI document, checked by outside tools (PyPI; `scripts/install-deps --test-tools`
//! installs both in one venv): openapi-spec-validator finds it a valid OpenAPI document, and
//! schemathesis generates requests from it — valid ones, and ones that break every constraint it
//! documents — and finds every answer as the document says (status, content type, body, headers),
//! none a 5xx, and the API still standing.

use std::path::PathBuf;

use hive_tests::World;

/// The schemathesis CLI: `HIVE_SCHEMATHESIS`, or where `scripts/install-deps --test-tools` puts it.
fn schemathesis() -> PathBuf {
    if let Some(path) = std::env::var_os("HIVE_SCHEMATHESIS") {
        return path.into();
    }
    hive_tests::test_tools().join("schemathesis/bin/st")
}

/// openapi-spec-validator, installed beside schemathesis.
fn validator() -> PathBuf {
    schemathesis().with_file_name("openapi-spec-validator")
}

#[tokio::test]
async fn the_openapi_document_is_valid_openapi() {
    let world = World::new().await;
    let hive = world.hive().await;
    let tool = validator();
    assert!(
        tool.exists(),
        "{} is missing: run scripts/install-deps --test-tools",
        tool.display()
    );
    let document = hive.get("/api/v1/openapi.json").await;
    assert_eq!(document.status(), 200);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("openapi.json");
    std::fs::write(&path, document.bytes().await.expect("the document")).expect("write it");
    let output = tokio::process::Command::new(&tool)
        .arg(&path)
        .output()
        .await
        .expect("run openapi-spec-validator");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && report.trim_end().ends_with(": OK"),
        "the OpenAPI document is not valid:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    hive.stop().await;
}

#[tokio::test]
async fn thousands_of_generated_requests_are_answered_as_documented() {
    let mut world = World::new().await;
    // Reads ask for the log's head (`Hive-Min-Seq: head`); on a machine busy with the other tests the
    // projection may trail it for seconds (seen at 5 s: a 503 the fuzzer counts as a server error).
    // Wait up to schemathesis's own request timeout (10 s, below) but for a margin.
    world.config.min_seq_timeout_ms = 8_000;
    let hive = world.full_hive().await;
    let st = schemathesis();
    assert!(
        st.exists(),
        "{} is missing: run scripts/install-deps --test-tools",
        st.display()
    );
    let output = tokio::process::Command::new(&st)
        .arg("run")
        .arg(hive.url("/api/v1/openapi.json"))
        .args(["--url", &hive.base])
        .args(["--header", &format!("Authorization: Bearer {}", hive.token)])
        // Every check: no server error; every answer's status, content type, body and headers as
        // documented; a route that needs a token refuses a request without one; a request that breaks
        // a documented constraint is refused; an undocumented method is 405 with `Allow`; a deleted
        // resource is gone. But one: a request the document finds valid may still be refused for what
        // the document cannot know, the log's state (a `Hive-Min-Seq` beyond the log's end is 400; a
        // task that names a project that does not exist is 422).
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
        ])
        // One worker: as fast as two on 2 cores (the server works for both), and schemathesis's
        // threads trip a CPython 3.11 bug (gh-106905: "AST constructor recursion depth mismatch").
        .args(["--max-examples", "50", "--workers", "1"])
        .args(["--request-timeout", "10", "--no-color"])
        // The streams (server-sent events) never end by design; spawning starts real processes
        // running the command it is given (its bad input has tests of its own).
        .args(["--exclude-path-regex", "/stream$|/assignments$|/spawn$"])
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .kill_on_drop(true)
        .output()
        .await
        .expect("run schemathesis");
    let report = String::from_utf8_lossy(&output.stdout);
    let summary = report
        .lines()
        .skip_while(|l| !l.contains("Test cases:"))
        .nth(1)
        .unwrap_or_default()
        .trim()
        .to_owned();
    assert!(
        output.status.success(),
        "schemathesis found answers the document does not describe ({summary}):\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let generated: u64 = summary
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of test cases in:\n{report}"));
    assert!(generated >= 2_000, "only {generated} cases: {summary}");
    eprintln!("schemathesis: {summary}");

    // Still standing, and still answering.
    assert_eq!(hive.get("/health").await.status(), 200);
    hive.stop().await;
}
