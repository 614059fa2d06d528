//! Audit and time travel, against a scripted history with fixed ids and times: entities and the hive as
//! they were at a sequence or a time (over HTTP and with `hive audit state`), and `hive audit`'s output
//! compared with golden files.

mod agent_work;

use hive_tests::World;
use hive_tests::process::hive_command;
use hive_tests::scripted::{self, load_scripted};
use serde_json::{Value, json};

#[tokio::test]
async fn time_travel_answers_as_the_hive_was_then() {
    let world = World::new().await;
    let head = load_scripted(&world).await;
    let hive = world.hive().await;
    hive.get_at("/status", head).await;
    let task_at = async |id: &str, at: &str| {
        let (status, body) = hive.get_at(&format!("/api/v1/tasks/{id}?{at}"), 0).await;
        assert_eq!(status, 200, "{at}: {body}");
        body
    };
    let t1 = scripted::T1;
    // Worked out by hand from the scripted history.
    for (seq, state, progress) in [
        (4, "queued", None),
        (6, "assigned", None),
        (8, "running", None),
        (9, "running", Some(50)),
        (10, "completed", Some(100)),
        (18, "completed", Some(100)),
    ] {
        let view = task_at(t1, &format!("at_seq={seq}")).await;
        assert_eq!(view["state"], state, "T1 at {seq}");
        assert_eq!(
            view["progress"].as_u64(),
            progress,
            "T1's progress at {seq}"
        );
    }
    for (seq, state) in [
        (5, "waiting"),
        (10, "waiting"),
        (11, "queued"),
        (15, "failed"),
        (16, "dead_lettered"),
    ] {
        let view = task_at(scripted::T2, &format!("at_seq={seq}")).await;
        assert_eq!(view["state"], state, "T2 at {seq}");
    }
    let by_time = task_at(t1, &format!("at_time={}", scripted::time_of(6))).await;
    assert_eq!(by_time, task_at(t1, "at_seq=6").await);
    let (status, _) = hive
        .get_at(&format!("/api/v1/tasks/{t1}?at_seq=3"), 0)
        .await;
    assert_eq!(status, 404, "T1 did not exist at 3");

    let (_, agent) = hive
        .get_at(&format!("/api/v1/agents/{}?at_seq=2", scripted::AGENT), 0)
        .await;
    assert_eq!(agent["status"], "registered");
    let (_, project) = hive
        .get_at(
            &format!("/api/v1/projects/{}?at_seq=10", scripted::PROJECT),
            0,
        )
        .await;
    assert_eq!(
        project["tasks"]["by_status"],
        json!({"completed": 1, "waiting": 1})
    );

    let (_, then) = hive.get_at("/api/v1/system/status?at_seq=9", 0).await;
    assert_eq!(then["at"]["seq"], 9);
    assert_eq!(then["tasks"]["total"], 2);
    assert_eq!(then["tasks"]["by_status"]["running"], 1);
    assert_eq!(then["tasks"]["by_status"]["waiting"], 1);
    assert_eq!(then["agents"]["by_status"]["ready"], 1);
    let (_, end) = hive.get_at("/api/v1/system/status?at_seq=18", 0).await;
    assert_eq!(end["agents"]["by_status"]["deregistered"], 1);
    assert_eq!(end["tasks"]["by_status"]["dead_lettered"], 1);

    for bad in [
        "at_seq=0",
        "at_seq=19",
        "at_time=yesterday",
        "at_seq=3&at_time=2026-01-01T00:00:00Z",
    ] {
        let (status, body) = hive.get_at(&format!("/api/v1/tasks/{t1}?{bad}"), 0).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("bad_request")),
            "{bad}"
        );
    }
    hive.stop().await;
}

/// Runs `hive audit ARGS` against this world; answers its stdout.
fn hive_audit(world: &World, args: &[&str]) -> String {
    let output = hive_command(world, &[&["audit"], args].concat());
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Compares `actual` with `tests/golden/<name>`; `HIVE_BLESS=1` writes it instead.
fn golden(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("golden")
        .join(name);
    if std::env::var_os("HIVE_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{} is missing: run with HIVE_BLESS=1", path.display()));
    assert_eq!(actual, expected, "{name} differs from its golden file");
}

#[tokio::test]
async fn audit_output_of_a_scripted_history_matches_its_golden_files() {
    let world = World::new().await;
    load_scripted(&world).await;
    golden(
        "audit-agent.txt",
        &hive_audit(&world, &["agent", scripted::AGENT]),
    );
    golden(
        "audit-task.jsonl",
        &hive_audit(&world, &["task", scripted::T2, "--json"]),
    );
    golden(
        "audit-log.txt",
        &hive_audit(
            &world,
            &["log", "--from", "2026-01-01T00:00:09Z", "--to", "12"],
        ),
    );
    golden(
        "audit-correlation.txt",
        &hive_audit(
            &world,
            &["correlation", "00000000-0000-0000-0000-0000000000f0"],
        ),
    );
    golden(
        "audit-state.json",
        &hive_audit(
            &world,
            &["state", "task", scripted::T1, "--at", &scripted::time_of(9)],
        ),
    );
}

#[tokio::test]
async fn time_travel_by_time_answers_agents_projects_and_the_hive_as_they_were() {
    let world = World::new().await;
    let head = load_scripted(&world).await;
    let hive = world.hive().await;
    hive.get_at("/status", head).await;
    let at = async |path: &str, query: &str| {
        let (status, body) = hive.get_at(&format!("{path}?{query}"), 0).await;
        (status, body)
    };
    let time = |seq: u64| format!("at_time={}", scripted::time_of(seq));
    // Between two events: the earlier one holds.
    let between = |seq: u64| format!("at_time=2026-01-01T00:00:{seq:02}.500Z");

    // The agent: registered at 2, ready at 3, deregistered at 18. Worked out by hand.
    let agent = format!("/api/v1/agents/{}", scripted::AGENT);
    for (query, status, seq) in [
        (time(2), "registered", 2),
        (between(2), "registered", 2),
        (time(3), "ready", 3),
        (between(17), "ready", 3),
        (time(18), "deregistered", 18),
    ] {
        let (code, view) = at(&agent, &query).await;
        assert_eq!(code, 200, "{query}: {view}");
        assert_eq!(
            (view["status"].as_str(), view["seq"].as_u64()),
            (Some(status), Some(seq)),
            "the agent at {query}"
        );
    }
    let (code, view) = at(&agent, "at_time=2026-01-01T00:00:01Z").await;
    assert_eq!(
        (code, view["error"]["code"].as_str()),
        (404, Some("not_found")),
        "not registered yet: {view}"
    );

    // The project and its tasks' states.
    let project = format!("/api/v1/projects/{}", scripted::PROJECT);
    for (query, by_status) in [
        (time(1), json!({})),
        (between(4), json!({"queued": 1})),
        (time(8), json!({"running": 1, "waiting": 1})),
        (time(11), json!({"completed": 1, "queued": 1})),
        (time(16), json!({"completed": 1, "dead_lettered": 1})),
    ] {
        let (code, view) = at(&project, &query).await;
        assert_eq!(code, 200, "{query}: {view}");
        assert_eq!(view["name"], "audit");
        assert_eq!(
            view["tasks"]["by_status"], by_status,
            "the project at {query}"
        );
        let total = by_status
            .as_object()
            .unwrap()
            .values()
            .map(|n| n.as_i64().unwrap())
            .sum::<i64>();
        assert_eq!(view["tasks"]["total"], total, "the project at {query}");
    }

    // The hive: a time answers as the sequence of the last event at or before it.
    let status = "/api/v1/system/status";
    for (query, seq) in [(between(9), 9), (time(12), 12), (time(18), 18)] {
        let (code, by_time) = at(status, &query).await;
        assert_eq!(code, 200, "{query}: {by_time}");
        assert_eq!(by_time["at"]["seq"], seq, "{query}");
        assert_eq!(
            by_time,
            at(status, &format!("at_seq={seq}")).await.1,
            "{query}"
        );
    }
    let (_, then) = at(status, &between(9)).await;
    assert_eq!(
        (
            then["tasks"]["total"].as_u64(),
            then["tasks"]["by_status"]["running"].as_u64(),
            then["tasks"]["by_status"]["waiting"].as_u64(),
            then["agents"]["by_status"]["ready"].as_u64(),
        ),
        (Some(2), Some(1), Some(1), Some(1))
    );
    // Another offset, the same instant ("+" escaped in a query).
    let (_, offset) = at(status, "at_time=2026-01-01T01:00:09.500%2B01:00").await;
    assert_eq!(offset, then);
    let (_, before) = at(status, "at_time=2025-12-31T23:59:59Z").await;
    assert_eq!(
        (
            before["at"]["seq"].as_u64(),
            before["tasks"]["total"].as_u64(),
            before["agents"]["total"].as_u64()
        ),
        (Some(0), Some(0), Some(0)),
        "nothing had happened yet: {before}"
    );
    hive.stop().await;
}

#[tokio::test]
async fn audit_state_at_a_sequence_and_the_log_between_sequences_and_between_times() {
    let world = World::new().await;
    load_scripted(&world).await;
    let state = |kind: &str, id: &str, at: &str, json: bool| {
        let mut args = vec!["state", kind, id, "--at", at];
        if json {
            args.push("--json");
        }
        hive_audit(&world, &args)
    };

    // --json: one compact line; worked out by hand from the scripted history.
    let agent = state("agent", scripted::AGENT, "3", true);
    assert_eq!(agent.lines().count(), 1, "{agent}");
    assert_eq!(
        serde_json::from_str::<Value>(&agent).unwrap(),
        json!({
            "id": scripted::AGENT, "name": "a1", "agent_type": "worker", "capabilities": [],
            "max_concurrent_tasks": 1, "status": "ready", "draining": false,
            "registered_at": "2026-01-01T00:00:02Z", "updated_at": "2026-01-01T00:00:03Z",
            "last_seq": 3, "labels": {},
        })
    );
    let project = state("project", scripted::PROJECT, "17", true);
    assert_eq!(
        serde_json::from_str::<Value>(&project).unwrap(),
        json!({
            "id": scripted::PROJECT, "name": "audit", "description": null, "project_type": "test",
            "created_at": "2026-01-01T00:00:01Z", "last_seq": 1,
        })
    );
    let task: Value = serde_json::from_str(&state("task", scripted::T2, "12", true)).unwrap();
    assert_eq!(
        (
            task["status"].as_str(),
            task["agent_id"].as_str(),
            task["lease_expires_at"].as_str(),
            task["last_seq"].as_u64(),
        ),
        (
            Some("assigned"),
            Some(scripted::AGENT),
            Some("2026-01-01T00:00:42Z"),
            Some(12)
        )
    );
    // Without it, the same, pretty; and at a sequence as at the time of that event.
    let pretty = state("task", scripted::T2, "12", false);
    assert!(pretty.lines().count() > 1, "{pretty}");
    assert_eq!(serde_json::from_str::<Value>(&pretty).unwrap(), task);
    let at_time = state("task", scripted::T2, &scripted::time_of(12), true);
    assert_eq!(serde_json::from_str::<Value>(&at_time).unwrap(), task);
    let too_early = hive_command(
        &world,
        &["audit", "state", "task", scripted::T2, "--at", "4"],
    );
    assert!(!too_early.status.success());
    assert!(
        String::from_utf8_lossy(&too_early.stderr).contains("did not exist yet then"),
        "{too_early:?}"
    );

    // Between two sequences (the unreadable 17 included), and between two times (each end included,
    // the first between two events).
    let seqs = |records: &str| -> Vec<u64> {
        records
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["seq"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    };
    let by_seq = ["log", "--from", "14", "--to", "18"];
    golden("audit-log-seqs.txt", &hive_audit(&world, &by_seq));
    assert_eq!(
        seqs(&hive_audit(&world, &[&by_seq[..], &["--json"]].concat())),
        [14, 15, 16, 17, 18]
    );
    let by_time = [
        "log",
        "--from",
        "2026-01-01T00:00:02.500Z",
        "--to",
        "2026-01-01T00:00:06Z",
    ];
    golden("audit-log-times.txt", &hive_audit(&world, &by_time));
    assert_eq!(
        seqs(&hive_audit(&world, &[&by_time[..], &["--json"]].concat())),
        [3, 4, 5, 6]
    );
}
