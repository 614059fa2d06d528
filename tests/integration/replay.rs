//! Replay: a rebuild while the hive serves, verify against the log, time travel, audit, recovery of a
//! lost read-model database, and a log that holds two versions of one event.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use hive_projector::rebuild::{RebuildOptions, Stage, rebuild};
use hive_projector::verify::{Difference, verify};
use hive_tests::{World, scenario};
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};

/// The total number of tasks in a `/status` answer.
fn total_tasks(status: &Value) -> u64 {
    status["tasks"]["total"]
        .as_u64()
        .expect("tasks.total in /status")
}

/// The rebuild under load swaps once the shadow is this close to the head.
const SWAP_LAG: u64 = 10;

// Several threads: the progress callback blocks the rebuild while the others serve and write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_under_load_never_fails_a_read_and_ends_equal_to_the_log() {
    let world = World::new().await;
    scenario(world.log(), 12, 1_500).await;
    let hive = world.hive().await;

    // Readers of /status and writers of new tasks run throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let failed_reads = Arc::new(AtomicU64::new(0));
    let reads = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for _ in 0..2 {
        let (stop, failed, reads) = (stop.clone(), failed_reads.clone(), reads.clone());
        let (http, url) = (hive.http.clone(), hive.url("/status"));
        load.push(tokio::spawn(async move {
            let mut highest = 0;
            while !stop.load(Ordering::Relaxed) {
                match http.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {
                        let total = total_tasks(&r.json().await.unwrap());
                        assert!(
                            total >= highest,
                            "the task count went back: {total} < {highest}"
                        );
                        highest = total;
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    {
        let (stop, http, url) = (stop.clone(), hive.http.clone(), hive.url("/api/v1/tasks"));
        load.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let r = http
                    .post(&url)
                    .json(&json!({"title": format!("during the rebuild {n}")}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201);
                n += 1;
            }
        }));
    }

    let mut stages = Vec::new();
    let runtime = tokio::runtime::Handle::current();
    let (http, url) = (hive.http.clone(), hive.url("/api/v1/tasks"));
    let burst = 3 * SWAP_LAG;
    let options = RebuildOptions {
        swap_lag: SWAP_LAG,
        ..Default::default()
    };
    let rebuilt = rebuild(world.db(), world.log(), "read_models", options, |p| {
        if stages.last() != Some(&p.stage) {
            stages.push(p.stage);
            // Once the rows are being written, more events than the swap lag arrive for certain
            // (besides the writer's): the shadow has to catch up before it may swap.
            if p.stage == Stage::Writing {
                tokio::task::block_in_place(|| {
                    runtime.block_on(async {
                        for n in 0..burst {
                            let r = http
                                .post(&url)
                                .json(&json!({"title": format!("burst {n}")}))
                                .send()
                                .await
                                .unwrap();
                            assert_eq!(r.status(), 201);
                        }
                    })
                });
            }
        }
    })
    .await
    .expect("rebuild")
    .expect("a rebuild was asked for");
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    assert!(rebuilt.replayed > 5_000, "{rebuilt:?}");
    assert!(rebuilt.caught_up >= burst, "{rebuilt:?}");
    // Replaying is reported only when it lasts long enough.
    stages.retain(|s| *s != Stage::Replaying);
    assert_eq!(
        stages,
        [Stage::Writing, Stage::CatchingUp, Stage::Swapping],
        "the rebuild caught up before it swapped"
    );
    assert_eq!(failed_reads.load(Ordering::Relaxed), 0, "failed reads");
    assert!(reads.load(Ordering::Relaxed) > 0);

    // Once the live projector has caught up with the head, the tables equal the log's fold.
    let head = world.log().last_seq().await.unwrap();
    let (status, _) = hive.get_at("/status", head).await;
    assert_eq!(status, 200);
    let report = verify(world.db(), world.log(), "read_models")
        .await
        .unwrap();
    assert_eq!(report.checkpoint, head);
    assert_eq!(report.differences, vec![]);
    hive.stop().await;
}

#[tokio::test]
async fn verify_names_a_row_corrupted_by_hand() {
    let world = World::new().await;
    let head = scenario(world.log(), 3, 20).await;
    let hive = world.hive().await;
    hive.get_at("/status", head).await;
    let clean = verify(world.db(), world.log(), "read_models")
        .await
        .unwrap();
    assert_eq!((clean.checkpoint, clean.differences.len()), (head, 0));

    let row = world
        .db()
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DatabaseBackend::Postgres,
            "UPDATE tasks SET title = 'tampered' WHERE id = (SELECT id FROM tasks ORDER BY id LIMIT 1) RETURNING id",
        ))
        .await
        .unwrap()
        .unwrap();
    let id: uuid::Uuid = row.try_get("", "id").unwrap();
    let report = verify(world.db(), world.log(), "read_models")
        .await
        .unwrap();
    assert_eq!(report.differences.len(), 1, "{:?}", report.differences);
    let Difference::Field {
        table,
        id: which,
        field,
        actual,
        ..
    } = &report.differences[0]
    else {
        panic!("{:?}", report.differences);
    };
    assert_eq!(
        (*table, *which, field.as_str(), actual),
        ("tasks", id, "title", &json!("tampered"))
    );
    assert!(report.differences[0].to_string().contains(&id.to_string()));

    // The real command says the same and fails.
    let output = hive_command(&world, &["verify"]);
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "hive verify exits non-zero");
    assert!(
        printed.contains(&format!("tasks {id}: title is \"tampered\"")),
        "{printed}"
    );
    hive.stop().await;
}

#[tokio::test]
async fn a_lost_read_model_database_is_rebuilt_on_start() {
    let mut world = World::new().await;
    let head = scenario(world.log(), 4, 200).await;
    let hive = world.hive().await;
    let (_, before) = hive.get_at("/status", head).await;
    hive.stop().await;

    // The whole read-model database is dropped; starting again creates, migrates and rebuilds it.
    world.drop_database().await;
    world.reconnect().await;
    let hive = world.hive().await;
    let (status, after) = hive.get_at("/status", head).await;
    assert_eq!(status, 200, "{after}");
    assert_eq!(total_tasks(&after), 200);
    assert_eq!(after["tasks"], before["tasks"]);
    assert_eq!(after["agents"], before["agents"]);
    let report = verify(world.db(), world.log(), "read_models")
        .await
        .unwrap();
    assert_eq!((report.checkpoint, report.differences), (head, vec![]));
    hive.stop().await;
}

/// A scripted history with fixed ids and times, stored as raw envelopes: one `TaskCreated` in schema
/// version 1 (before `pinned_agent`) beside one in version 2, and one poison message.
mod scripted {
    use serde_json::{Value, json};

    pub const PROJECT: &str = "00000000-0000-0000-0000-0000000000b1";
    pub const AGENT: &str = "00000000-0000-0000-0000-0000000000a1";
    pub const T1: &str = "00000000-0000-0000-0000-0000000000c1";
    pub const T2: &str = "00000000-0000-0000-0000-0000000000c2";

    /// The time of the event at `seq`: one second apart from 2026-01-01T00:00:00Z.
    pub fn time_of(seq: u64) -> String {
        format!("2026-01-01T00:00:{seq:02}Z")
    }

    fn event(
        seq: u64,
        kind: &str,
        id: &str,
        event_type: &str,
        version: u64,
        data: Value,
    ) -> (String, Vec<u8>) {
        let envelope = json!({
            "event_id": format!("01900000-0000-7000-8000-{seq:012}"),
            "type": event_type,
            "schema_version": version,
            "aggregate": kind,
            "aggregate_id": id,
            "occurred_at": time_of(seq),
            "correlation_id": "00000000-0000-0000-0000-0000000000f0",
            "causation_id": null,
            "actor": if kind == "task" && seq > 5 { "system:scheduler" } else { "operator" },
            "data": data,
        });
        (
            format!("{kind}.{id}"),
            serde_json::to_vec(&envelope).unwrap(),
        )
    }

    /// (subject under the namespace's events prefix, payload), in log order: seq 1, 2, ...
    pub fn history() -> Vec<(String, Vec<u8>)> {
        let task_v1 = json!({
            "title": "first", "description": "the v1 one", "task_type": "code", "priority": 8,
            "required_capabilities": [], "depends_on": [], "waiting_on": [], "project_id": PROJECT,
            "max_attempts": 1,
        });
        let task_v2 = json!({
            "title": "second", "description": null, "task_type": null, "priority": 5,
            "required_capabilities": [], "depends_on": [T1], "waiting_on": [T1], "project_id": PROJECT,
            "pinned_agent": null, "max_attempts": 1,
        });
        vec![
            event(
                1,
                "project",
                PROJECT,
                "ProjectCreated",
                1,
                json!({"name": "audit", "description": null, "project_type": "test"}),
            ),
            event(
                2,
                "agent",
                AGENT,
                "AgentRegistered",
                1,
                json!({"name": "a1", "agent_type": "worker", "capabilities": [], "max_concurrent_tasks": 1}),
            ),
            event(3, "agent", AGENT, "AgentReady", 1, json!({})),
            event(4, "task", T1, "TaskCreated", 1, task_v1),
            event(5, "task", T2, "TaskCreated", 2, task_v2),
            event(
                6,
                "task",
                T1,
                "TaskAssigned",
                1,
                json!({"agent_id": AGENT, "lease_expires_at": time_of(36)}),
            ),
            event(7, "task", T1, "TaskAccepted", 1, json!({})),
            event(8, "task", T1, "TaskStarted", 1, json!({})),
            event(
                9,
                "task",
                T1,
                "TaskProgressed",
                1,
                json!({"percent": 50, "message": "halfway"}),
            ),
            event(
                10,
                "task",
                T1,
                "TaskCompleted",
                1,
                json!({"result": {"ok": true}}),
            ),
            event(11, "task", T2, "TaskQueued", 1, json!({})),
            event(
                12,
                "task",
                T2,
                "TaskAssigned",
                1,
                json!({"agent_id": AGENT, "lease_expires_at": time_of(42)}),
            ),
            event(13, "task", T2, "TaskAccepted", 1, json!({})),
            event(14, "task", T2, "TaskStarted", 1, json!({})),
            event(
                15,
                "task",
                T2,
                "TaskFailed",
                1,
                json!({"error": "bad input", "retryable": false}),
            ),
            event(
                16,
                "task",
                T2,
                "TaskDeadLettered",
                1,
                json!({"reason": "not retryable"}),
            ),
            (format!("task.{T2}"), b"{not json".to_vec()),
            event(
                18,
                "agent",
                AGENT,
                "AgentDeregistered",
                1,
                json!({"reason": "done"}),
            ),
        ]
    }
}

/// Publishes the scripted history; answers the last sequence.
async fn load_scripted(world: &World) -> u64 {
    let prefix = world.log().subjects().all();
    let prefix = prefix.trim_end_matches(".>");
    let mut last = 0;
    for (subject, payload) in scripted::history() {
        last = world
            .publish_raw(&format!("{prefix}.{subject}"), payload)
            .await;
    }
    last
}

#[tokio::test]
async fn a_log_of_two_event_versions_projects_rebuilds_and_verifies_the_same() {
    let world = World::new().await;
    let head = load_scripted(&world).await;
    assert_eq!(head, 18);
    let hive = world.hive().await;
    let (_, first) = hive
        .get_at(&format!("/api/v1/tasks/{}", scripted::T1), head)
        .await;
    assert_eq!(
        (first["title"].as_str(), first["pinned_agent"].clone()),
        (Some("first"), Value::Null),
        "the v1 TaskCreated is upcast"
    );
    let report = verify(world.db(), world.log(), "read_models")
        .await
        .unwrap();
    assert_eq!(
        (report.checkpoint, report.differences.clone()),
        (head, vec![])
    );
    assert_eq!(report.rows, 4);
    let (_, dead) = hive.get_at("/api/v1/dead-letters", head).await;
    assert_eq!(dead["items"][0]["seq"], 17);
    let (_, projections) = hive.get_at("/api/v1/projections", head).await;
    let standing = &projections["projections"][0];
    assert_eq!(
        (
            standing["name"].as_str(),
            standing["checkpoint"].as_u64(),
            standing["lag"].as_u64(),
            standing["dead_letters"].as_u64()
        ),
        (Some("read_models"), Some(head), Some(0), Some(1))
    );
    let status = hive_command(&world, &["projections", "status", "--json"]);
    let line: Value = serde_json::from_slice(&status.stdout).expect("one JSON line");
    assert_eq!(
        (line["checkpoint"].as_u64(), line["dead_letters"].as_u64()),
        (Some(head), Some(1))
    );

    rebuild(
        world.db(),
        world.log(),
        "read_models",
        Default::default(),
        |_| {},
    )
    .await
    .unwrap()
    .unwrap();
    let again = verify(world.db(), world.log(), "read_models")
        .await
        .unwrap();
    assert_eq!((again.checkpoint, again.differences), (head, vec![]));
    let (_, rebuilt) = hive
        .get_at(&format!("/api/v1/tasks/{}", scripted::T1), head)
        .await;
    assert_eq!(rebuilt, first);
    hive.stop().await;
}

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

/// Runs the real `hive` program against this world.
fn hive_command(world: &World, args: &[&str]) -> std::process::Output {
    std::process::Command::new(hive_tests::agent_program())
        .args(args)
        .env("HIVE_NATS_URL", &world.nats_url)
        .env("HIVE_DATABASE_URL", &world.database_url)
        .env("HIVE_NAMESPACE", &world.config.namespace)
        .env("HIVE_HOME", std::env::temp_dir())
        .env("HIVE_LOG", "warn")
        .output()
        .expect("run hive")
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
        "audit-state.json",
        &hive_audit(
            &world,
            &["state", "task", scripted::T1, "--at", &scripted::time_of(9)],
        ),
    );
}
