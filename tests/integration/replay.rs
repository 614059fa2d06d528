//! Replay: a rebuild while the hive serves, verify against the log, recovery of a lost read-model
//! database through `hive up`, and a log that holds two versions of one event (time travel and audit are
//! in `audit.rs`).
//!
//! Long because each replay test needs a hive brought to a state by a scripted history first.

use hive_client::Method;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use hive_projector::rebuild::{RebuildOptions, Stage, rebuild};
use hive_projector::verify::{Difference, verify};
use hive_tests::{World, scenario};

use hive_tests::process::{hive_command, hive_up_with_stderr};
use hive_tests::scripted::{self, load_scripted};
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
                match http.request(Method::GET, &url).send().await {
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
                    .request(Method::POST, &url)
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
                                .request(Method::POST, &url)
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

/// POSTs `body` to `url`; asserts a 201; answers the log sequence it wrote and the new entity's id.
async fn created(http: &hive_client::Client, url: String, body: Value) -> (u64, String) {
    let answer = http
        .request(Method::POST, &url)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 201, "{url}");
    let answer: Value = answer.json().await.unwrap();
    let id = ["project_id", "agent_id", "task_id"]
        .iter()
        .find_map(|key| answer[key].as_str())
        .expect("the new entity's id")
        .to_owned();
    (answer["seq"].as_u64().expect("its seq"), id)
}

/// GET `url` once the read models reflect `seq`; asserts a 200.
async fn read_at(http: &hive_client::Client, url: String, seq: u64) -> Value {
    let answer = http
        .request(Method::GET, &url)
        .header("Hive-Min-Seq", seq.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "{url}");
    answer.json().await.unwrap()
}

/// Sends `hive up` SIGTERM; asserts that it exits 0.
async fn stop_gracefully(up: &mut tokio::process::Child) {
    let pid = nix::unistd::Pid::from_raw(up.id().expect("hive up runs") as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(std::time::Duration::from_secs(30), up.wait())
        .await
        .expect("hive up stops within 30 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "hive up exits 0 on SIGTERM: {status}");
}

#[tokio::test]
async fn a_lost_read_model_database_is_rebuilt_when_hive_up_starts() {
    let world = World::new().await;
    let home = tempfile::tempdir().unwrap();
    // Its own database (created by `hive up`), and its own nats-server, whose data stays in `home`.
    let database = format!("{}_up", world.database);
    let env = [
        ("HIVE_DATABASE_URL", world.database_url_named(&database)),
        ("HIVE_LOG", "warn,hive_projector::rebuild=info".to_owned()),
        ("NO_COLOR", "1".to_owned()),
        // No agent here heartbeats: none may be found lost meanwhile, which would change the counts.
        ("HIVE_HEARTBEAT_TIMEOUT_SECS", "3600".to_owned()),
    ];
    let start = async |run: &str| {
        let log = home.path().join(format!("{run}.log"));
        let stderr = std::fs::File::create(&log).unwrap();
        let (up, base, token) = hive_up_with_stderr(&world, home.path(), &env, stderr.into()).await;
        let http = hive_tests::authorized_client(&base, &token);
        (up, base, http, log)
    };

    let (mut up, base, http, first_log) = start("first").await;
    let (_, project) = created(
        &http,
        format!("{base}/api/v1/projects"),
        json!({"name": "kept"}),
    )
    .await;
    for n in 0..3 {
        created(
            &http,
            format!("{base}/api/v1/agents"),
            json!({"name": format!("a{n}"), "agent_type": "worker"}),
        )
        .await;
    }
    let task = async |body: Value| created(&http, format!("{base}/api/v1/tasks"), body).await;
    let (_, first) = task(json!({"title": "t0", "project_id": project})).await;
    for n in 1..4 {
        task(json!({"title": format!("t{n}"), "project_id": project})).await;
    }
    // Waits for the first (no agent is ready to run it).
    let (last, _) =
        task(json!({"title": "t4", "project_id": project, "depends_on": [first]})).await;
    let before = read_at(&http, format!("{base}/status"), last).await;
    assert_eq!(
        (
            before["agents"]["by_status"]["registered"].as_u64(),
            before["tasks"]["by_status"]["queued"].as_u64(),
            before["tasks"]["by_status"]["waiting"].as_u64(),
            before["log"]["last_seq"].as_u64(),
        ),
        (Some(3), Some(4), Some(1), Some(last)),
        "{before}"
    );
    stop_gracefully(&mut up).await;
    let first_log = std::fs::read_to_string(first_log).unwrap();
    assert!(
        !first_log.contains("read models rebuilt"),
        "nothing to rebuild from an empty log: {first_log}"
    );

    // The whole read-model database is lost; `hive up` creates, migrates and rebuilds it.
    let admin = sea_orm::Database::connect(world.admin_url()).await.unwrap();
    admin
        .execute_unprepared(&format!("DROP DATABASE \"{database}\" WITH (FORCE)"))
        .await
        .unwrap();
    admin.close().await.unwrap();
    let (mut up, base, http, second_log) = start("second").await;
    let after = read_at(&http, format!("{base}/status"), last).await;
    for section in ["agents", "tasks", "log"] {
        assert_eq!(after[section], before[section], "{section}: {after}");
    }
    let view = read_at(&http, format!("{base}/api/v1/projects/{project}"), last).await;
    assert_eq!(view["tasks"]["total"], 5, "{view}");

    let verify = tokio::process::Command::new(hive_tests::agent_program())
        .arg("verify")
        .env("HIVE_HOME", home.path())
        .env("HIVE_NAMESPACE", &world.config.namespace)
        .env("HIVE_LOG", "warn")
        .env_remove("HIVE_NATS_URL")
        .env_remove("HIVE_DATABASE_URL")
        .output()
        .await
        .unwrap();
    let printed = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "hive verify: {printed}");
    assert!(printed.contains(": 0 differences"), "{printed}");
    stop_gracefully(&mut up).await;

    // It was the bulk rebuild that brought it back, not the projector batch by batch.
    let second_log = std::fs::read_to_string(second_log).unwrap();
    let rebuilt = second_log
        .lines()
        .find(|line| line.contains("read models rebuilt"))
        .unwrap_or_else(|| panic!("no rebuild logged: {second_log}"));
    assert!(rebuilt.contains(&format!("checkpoint={last}")), "{rebuilt}");
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
    // An agent, a project, two tasks, and the agent's holding of each.
    assert_eq!(report.rows, 6);
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

    // The real command, by the projection's name, beside the running hive; its stderr is a pipe, so
    // it reports in plain lines, not a bar.
    let rebuilt = hive_command(&world, &["projections", "rebuild", "read_models"]);
    let (printed, progress) = (
        String::from_utf8_lossy(&rebuilt.stdout),
        String::from_utf8_lossy(&rebuilt.stderr),
    );
    assert!(rebuilt.status.success(), "{printed}{progress}");
    assert!(
        printed.starts_with("read_models: rebuilt to seq 18 (18 events replayed, 0 caught up, 4 rows, 1 dead letters)"),
        "{printed}"
    );
    let lines: Vec<&str> = progress.lines().collect();
    assert!(
        lines.contains(&"read_models: writing rows 1/4")
            && lines.last() == Some(&"read_models: swapping 18/18")
            && lines.iter().all(|l| l.starts_with("read_models: "))
            && !progress.contains(['\r', '\u{1b}']),
        "plain progress lines: {progress:?}"
    );
    let help = hive_command(&world, &["projections", "rebuild", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("Safe on a running system"), "{help}");
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
