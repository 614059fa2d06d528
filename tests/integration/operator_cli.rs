//! The operator's command line over the API, as the real `hive` program runs it: `hive task`, `hive
//! agent list|show|drain|deregister` and `hive dead-letters`, in tables and in JSON lines; `--watch`
//! following an entity's changes; refusals with the API's code and a non-zero exit; and a dead letter's
//! retry, both when its event still cannot be folded and when it can.
//!
//! Long because it drives every operator command end to end through the real program, and the tests
//! share their helpers (running it, reading its JSON lines, checking a refusal).

use std::process::Output;
use std::time::Duration;

use hive_eventlog::Role;
use hive_events::AggregateKind;
use hive_tests::api::{id, keep_alive, ready_agent, report};
use hive_tests::process::{hive_over_api, hive_over_api_output, over_api};
use hive_tests::{TestHive, World};
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

/// Each line of `text` as JSON.
fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// `hive ARGS --json` through `hive`'s API with `token`: its one JSON line.
async fn one(hive: &TestHive, token: &str, args: &[&str]) -> Value {
    let args = [args, &["--json"]].concat();
    let lines = json_lines(&hive_over_api(&hive.url(""), token, &args).await);
    assert_eq!(lines.len(), 1, "{lines:?}");
    lines.into_iter().next().unwrap()
}

/// Asserts that `output` failed, naming `expected` (the API's code, say) on stderr, without a panic.
fn refused(output: &Output, expected: &[&str]) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{output:?}");
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for text in expected {
        assert!(stderr.contains(text), "no {text:?} in {stderr}");
    }
    assert!(output.stdout.is_empty(), "{output:?}");
}

#[tokio::test]
async fn tasks_are_created_listed_shown_and_cancelled_and_refusals_say_why() {
    let world = World::new().await;
    let hive = world.hive().await;
    let api = hive.url("");
    let operator = world.token(Role::Operator).await;
    let viewer = world.token(Role::Viewer).await;

    let created = one(
        &hive,
        &operator,
        &[
            "task",
            "create",
            "--title",
            "build it",
            "--priority",
            "high",
            "--capabilities",
            "linux,gpu",
            "--field",
            "max_attempts=2",
        ],
    )
    .await;
    let task = id(&created, "task_id");
    let table = hive_over_api(&api, &operator, &["task", "create", "--title", "other"]).await;
    assert!(table.starts_with("created task "), "{table}");

    // Listed in JSON lines (oldest first) and as a table; read by a viewer.
    let listed = json_lines(&hive_over_api(&api, &viewer, &["task", "list", "--json"]).await);
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0]["task_id"], task.as_str());
    assert_eq!(listed[0]["state"], "queued");
    assert_eq!(listed[0]["priority"], 8);
    assert_eq!(listed[0]["max_attempts"], 2);
    let newest = json_lines(
        &hive_over_api(
            &api,
            &viewer,
            &["task", "list", "--json", "--desc", "--limit", "1"],
        )
        .await,
    );
    assert_eq!(newest.len(), 1);
    assert_ne!(newest[0]["task_id"], task.as_str());
    let all = hive_over_api(&api, &viewer, &["task", "list", "--all", "--limit", "1"]).await;
    let rows: Vec<&str> = all.lines().collect();
    assert_eq!(
        rows.len(),
        3,
        "a header and both tasks, a page each:\n{all}"
    );
    assert!(
        rows[0].starts_with("ID ") && rows[0].contains("STATE"),
        "{all}"
    );
    assert!(
        rows[1].starts_with(&task) && rows[1].contains("build it"),
        "{all}"
    );
    let shown = hive_over_api(&api, &viewer, &["task", "show", &task]).await;
    assert!(shown.starts_with("task_id "), "{shown}");
    assert!(
        shown
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["required_capabilities", "gpu,linux"]),
        "{shown}"
    );

    let cancelled = hive_over_api(
        &api,
        &operator,
        &["task", "cancel", &task, "--reason", "not needed"],
    )
    .await;
    assert!(
        cancelled.starts_with(&format!("cancelled task {task} (seq ")),
        "{cancelled}"
    );
    let view = one(&hive, &viewer, &["task", "show", &task]).await;
    assert_eq!(
        (view["state"].as_str(), view["reason"].as_str()),
        (Some("cancelled"), Some("not needed"))
    );

    // Refusals: the API's status, code and message, a non-zero exit, nothing on stdout.
    let again = hive_over_api_output(&api, &operator, &["task", "cancel", &task]).await;
    refused(&again, &["409 invalid_transition"]);
    let unknown = uuid::Uuid::now_v7().to_string();
    let missing = hive_over_api_output(&api, &viewer, &["task", "show", &unknown]).await;
    refused(&missing, &["404 not_found", &unknown]);
    let forbidden = hive_over_api_output(&api, &viewer, &["task", "create", "--title", "no"]).await;
    refused(&forbidden, &["403 forbidden"]);
    let bad_token = hive_over_api_output(&api, "hive_not_a_token", &["task", "list"]).await;
    refused(&bad_token, &["401 unauthenticated"]);
    let invalid = hive_over_api_output(
        &api,
        &operator,
        &["task", "create", "--title", "t", "--priority", "urgent"],
    )
    .await;
    refused(&invalid, &["422 validation_failed", "priority"]);
    hive.stop().await;
}

#[tokio::test]
async fn a_task_is_requeued_and_retried_from_the_command_line() {
    let world = World::new().await;
    let hive = world.full_hive().await;
    let api = hive.url("");
    let operator = world.token(Role::Operator).await;
    let agent = ready_agent(&hive, &world, &[], 1).await;
    let _alive = keep_alive(&world, &agent).await;
    let mut assignments = hive.assignments(&agent).await;
    let created = one(
        &hive,
        &operator,
        &["task", "create", "--title", "flaky", "--max-attempts", "1"],
    )
    .await;
    let task = id(&created, "task_id");
    let task_id: uuid::Uuid = task.parse().unwrap();
    assert_eq!(assignments.next().await["task_id"], task.as_str());

    let requeued = one(
        &hive,
        &operator,
        &["task", "requeue", &task, "--reason", "stuck"],
    )
    .await;
    assert_eq!(requeued["task_id"], task.as_str());
    world
        .wait_for_event(AggregateKind::Task, task_id, "TaskRequeued")
        .await;
    // Back in the queue, it is assigned again (to the only agent there is); it fails for good.
    assert_eq!(assignments.next().await["task_id"], task.as_str());
    let who = json!({"agent_id": agent});
    report(&hive, &task, "accept", who).await;
    let failure = json!({"agent_id": agent, "error": "no", "retryable": false});
    report(&hive, &task, "fail", failure).await;
    world
        .wait_for_event(AggregateKind::Task, task_id, "TaskDeadLettered")
        .await;

    let retried = hive_over_api(&api, &operator, &["task", "retry", &task]).await;
    assert!(
        retried.starts_with(&format!("task {task} queued again")),
        "{retried}"
    );
    world
        .wait_for_event(AggregateKind::Task, task_id, "TaskRetried")
        .await;
    assert_eq!(assignments.next().await["task_id"], task.as_str());
    hive.stop().await;
}

#[tokio::test]
async fn agents_are_listed_shown_drained_and_deregistered_beside_running_one() {
    let world = World::new().await;
    let hive = world.hive().await;
    let api = hive.url("");
    let operator = world.token(Role::Operator).await;
    let (agent, _) = hive
        .http
        .register(Some("builder"), "worker", &["linux".into()], 2)
        .await
        .unwrap();
    let agent = agent.to_string();

    let listed = json_lines(&hive_over_api(&api, &operator, &["agent", "list", "--json"]).await);
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0]["agent_id"].as_str(), listed[0]["status"].as_str()),
        (Some(agent.as_str()), Some("registered"))
    );
    let by_capability = hive_over_api(
        &api,
        &operator,
        &["agent", "list", "--capability", "gpu", "--json"],
    )
    .await;
    assert_eq!(by_capability, "", "no agent has gpu");
    let table = hive_over_api(&api, &operator, &["agent", "list"]).await;
    assert!(table.lines().nth(1).unwrap().contains("builder"), "{table}");
    let shown = hive_over_api(&api, &operator, &["agent", "show", &agent]).await;
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("status ") && l.ends_with(" registered")),
        "{shown}"
    );

    let drained = hive_over_api(&api, &operator, &["agent", "drain", &agent]).await;
    assert!(
        drained.starts_with(&format!("agent {agent} draining")),
        "{drained}"
    );
    assert_eq!(
        one(&hive, &operator, &["agent", "show", &agent]).await["status"],
        "draining"
    );
    one(
        &hive,
        &operator,
        &["agent", "deregister", &agent, "--reason", "retired"],
    )
    .await;
    assert_eq!(
        one(&hive, &operator, &["agent", "show", &agent]).await["status"],
        "deregistered"
    );
    let again = hive_over_api_output(&api, &operator, &["agent", "drain", &agent]).await;
    refused(&again, &["409 invalid_transition"]);

    // `hive agent` with flags still runs an agent, and flags before a subcommand are refused.
    let mut running = hive.agent_process(&["--name", "still-runs", "--heartbeat-secs", "0.2"]);
    hive_tests::until(
        Duration::from_secs(20),
        "the agent registers",
        || {},
        async || {
            let page = hive.http.agents(&[("status", "registered")]).await.ok()?;
            let items = page["items"].as_array()?;
            items
                .iter()
                .any(|a| a["name"] == "still-runs")
                .then_some(())
        },
    )
    .await;
    // (Without a scheduler it is never made ready; the runtime's tests follow it further.)
    running.signal(nix::sys::signal::Signal::SIGTERM);
    running.exited().await;
    let mixed = hive_over_api_output(&api, &operator, &["agent", "--name", "x", "list"]).await;
    assert_eq!(mixed.status.code(), Some(2), "{mixed:?}");
    hive.stop().await;
}

#[tokio::test]
async fn task_show_watch_prints_the_task_again_as_it_changes() {
    let world = World::new().await;
    let hive = world.hive().await;
    let operator = world.token(Role::Operator).await;
    let created = hive
        .http
        .create_task(&json!({"title": "watched"}))
        .await
        .unwrap();
    let task = id(&created, "task_id");
    let mut watch = over_api(
        &hive.url(""),
        &operator,
        &["task", "show", &task, "--watch", "--json"],
    )
    .stdout(std::process::Stdio::piped())
    .spawn()
    .expect("start hive task show --watch");
    let mut lines = tokio::io::BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut next = async || -> Value {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("a line within 20 s")
            .expect("read")
            .expect("the watch goes on");
        serde_json::from_str(&line).expect("a JSON line")
    };
    assert_eq!(next().await["state"], "queued");

    let uuid = task.parse().unwrap();
    hive.http.cancel(uuid, Some("watched it")).await.unwrap();
    let now = next().await;
    assert_eq!(
        (now["state"].as_str(), now["reason"].as_str()),
        (Some("cancelled"), Some("watched it"))
    );
    watch.kill().await.unwrap();
    hive.stop().await;
}

#[tokio::test]
async fn a_dead_letters_retry_refolds_its_aggregate_or_says_why_it_still_cannot() {
    let world = World::new().await;
    let hive = world.hive().await;
    let api = hive.url("");
    let operator = world.token(Role::Operator).await;
    let viewer = world.token(Role::Viewer).await;
    let dead_letters = async |at: u64| {
        let (_, page) = hive.get_at("/api/v1/dead-letters", at).await;
        page["items"].as_array().cloned().unwrap_or_default()
    };

    // An event no build can read: the retry says why, and changes nothing.
    let garbled = hive
        .http
        .create_task(&json!({"title": "garbled"}))
        .await
        .unwrap();
    let garbled = id(&garbled, "task_id");
    let subject = world
        .log()
        .subjects()
        .of(AggregateKind::Task, garbled.parse().unwrap());
    let poison = world.publish_raw(&subject, "{\"not\": \"an event\"}").await;
    let listed = dead_letters(poison).await;
    let letter = listed[0]["id"].to_string();
    let cli = json_lines(&hive_over_api(&api, &viewer, &["dead-letters", "list", "--json"]).await);
    assert_eq!(cli.len(), 1);
    assert_eq!(
        (cli[0]["id"].to_string(), &cli[0]["seq"]),
        (letter.clone(), &json!(poison))
    );
    let still = hive_over_api_output(&api, &operator, &["dead-letters", "retry", &letter]).await;
    refused(
        &still,
        &[
            &format!("dead letter {letter}"),
            "409 corrupt_history",
            &format!("seq {poison}"),
            "malformed",
        ],
    );
    let forbidden = hive_over_api_output(&api, &viewer, &["dead-letters", "retry", &letter]).await;
    refused(&forbidden, &["403 forbidden"]);

    // A task whose read-model row was damaged outside the projector (a priority out of range): its
    // cancel cannot be folded onto that row, and becomes a dead letter ...
    let damaged = hive
        .http
        .create_task(&json!({"title": "damaged", "priority": 3}))
        .await
        .unwrap();
    let damaged_id = id(&damaged, "task_id");
    hive.get_at(
        &format!("/api/v1/tasks/{damaged_id}"),
        damaged["seq"].as_u64().unwrap(),
    )
    .await;
    world
        .db()
        .execute_unprepared(&format!(
            "UPDATE tasks SET priority = 99 WHERE id = '{damaged_id}'"
        ))
        .await
        .unwrap();
    let cancel = hive
        .http
        .cancel(damaged_id.parse().unwrap(), None)
        .await
        .unwrap();
    let cancel_seq = cancel["seq"].as_u64().unwrap();
    let listed = dead_letters(cancel_seq).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(
        listed[1]["reason"].as_str().unwrap().contains("unreadable"),
        "{listed:?}"
    );
    let letter = listed[1]["id"].to_string();

    // ... which a retry folds from the log: the row is rebuilt, the dead letter gone, the counts right.
    let refolded = one(&hive, &operator, &["dead-letters", "retry", &letter]).await;
    assert_eq!(refolded["seq"], cancel_seq);
    assert_eq!(refolded["aggregate"], "task");
    assert_eq!(refolded["aggregate_id"], damaged_id.as_str());
    assert_eq!(refolded["resolved"], json!([cancel_seq]));
    assert_eq!(refolded["dead_letters"], json!([]));
    let view = one(&hive, &viewer, &["task", "show", &damaged_id]).await;
    assert_eq!(
        (view["state"].as_str(), view["priority"].as_i64()),
        (Some("cancelled"), Some(3))
    );
    let left = dead_letters(cancel_seq).await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["seq"], poison);
    let (_, status) = hive.get_at("/status", cancel_seq).await;
    let counts = &status["tasks"];
    assert_eq!(
        (
            &counts["total"],
            &counts["by_status"]["queued"],
            &counts["by_status"]["cancelled"]
        ),
        (&json!(2), &json!(1), &json!(1)),
        "{status}"
    );
    // Once resolved, it is gone.
    let twice = hive_over_api_output(&api, &operator, &["dead-letters", "retry", &letter]).await;
    refused(&twice, &["404 not_found"]);
    let table = hive_over_api(&api, &operator, &["dead-letters", "list"]).await;
    assert!(table.lines().nth(1).unwrap().contains(&subject), "{table}");
    hive.stop().await;
}
