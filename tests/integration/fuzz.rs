//! Bad input from an outside fuzzer: schemathesis (PyPI; `scripts/install-deps --test-tools` installs
//! it) generates requests from the API's own OpenAPI document — valid ones, and ones that break every
//! constraint it documents — and the API answers none of them with a 5xx, nor falls over.

use std::path::PathBuf;

use hive_tests::World;

/// The schemathesis CLI: `HIVE_SCHEMATHESIS`, or where `scripts/install-deps --test-tools` puts it.
fn schemathesis() -> PathBuf {
    if let Some(path) = std::env::var_os("HIVE_SCHEMATHESIS") {
        return path.into();
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
        });
    cache.join("hive/schemathesis/bin/st")
}

#[tokio::test]
async fn thousands_of_generated_requests_get_no_server_error() {
    let world = World::new().await;
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
        .args(["--checks", "not_a_server_error"])
        .args(["--max-examples", "50", "--workers", "2"])
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
        "schemathesis found server errors ({summary}):\n{report}\n{}",
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
