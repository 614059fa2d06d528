//! The projector: exactly-once effect across crashes, dead letters for poison, concurrent instances.

use std::time::Duration;

use hive_events::envelope::encode;
use hive_events::task::TaskEvent;
use hive_events::{Actor, AggregateKind, EventMeta, TaskId};
use hive_projector::fold::{fold_log, read_models};
use hive_projector::{CrashPoint, Projector, ProjectorConfig, ProjectorError};
use hive_tests::{World, scenario};
use serde_json::json;

fn config(crash_at: Option<CrashPoint>) -> ProjectorConfig {
    ProjectorConfig {
        batch_max: 7,
        crash_at,
        // These tests are about the batch path; the bulk rebuild has tests of its own.
        rebuild_when_empty: false,
        ..Default::default()
    }
}

/// Runs a projector until its checkpoint reaches `seq`, then stops it.
async fn project_to(world: &World, seq: u64) {
    let projector = Projector::new(world.db().clone(), world.log().clone(), config(None));
    let mut checkpoint = projector.checkpoint();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(projector.run(async move {
        let _ = stopped.await;
    }));
    tokio::time::timeout(Duration::from_secs(30), checkpoint.wait_for(|c| *c >= seq))
        .await
        .expect("the projector catches up")
        .unwrap();
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

async fn assert_read_models_equal_the_fold(world: &World) {
    let events = world.log().read_to_head(1).await.unwrap();
    let expected = fold_log(&events, world.log().subjects());
    let actual = read_models(world.db(), "read_models").await.unwrap();
    assert_eq!(actual.last_seq, expected.last_seq, "checkpoint");
    assert_eq!(actual.dead, expected.dead, "dead letters");
    assert_eq!(actual.counts, expected.counts, "status counts");
    assert_eq!(actual.agents, expected.agents, "agents");
    assert_eq!(actual.projects, expected.projects, "projects");
    assert_eq!(actual.agent_tasks, expected.agent_tasks, "agent_tasks");
    assert_eq!(
        (actual.agent_tasks_after, actual.agent_tasks_through),
        (expected.agent_tasks_after, expected.agent_tasks_through),
        "the stretch of the log agent_tasks covers"
    );
    assert_eq!(actual.tasks.len(), expected.tasks.len(), "task count");
    for (id, row) in &expected.tasks {
        assert_eq!(actual.tasks.get(id), Some(row), "task {id}");
    }
}

#[tokio::test]
async fn a_crash_before_or_after_a_commit_never_loses_or_doubles_an_effect() {
    let world = World::new().await;
    let head = scenario(world.log(), 6, 40).await;
    assert!(head > 100, "the scenario is big enough for many batches");

    let crashed = Projector::new(
        world.db().clone(),
        world.log().clone(),
        config(Some(CrashPoint::AfterCommit(3))),
    );
    let err = crashed.run(std::future::pending()).await.unwrap_err();
    assert!(matches!(
        err,
        ProjectorError::Crashed(CrashPoint::AfterCommit(3))
    ));
    let after_first_crash = read_models(world.db(), "read_models")
        .await
        .unwrap()
        .last_seq;
    assert!(after_first_crash > 0 && after_first_crash < head);

    let crashed = Projector::new(
        world.db().clone(),
        world.log().clone(),
        config(Some(CrashPoint::BeforeCommit(2))),
    );
    let err = crashed.run(std::future::pending()).await.unwrap_err();
    assert!(matches!(
        err,
        ProjectorError::Crashed(CrashPoint::BeforeCommit(2))
    ));
    let after_second_crash = read_models(world.db(), "read_models")
        .await
        .unwrap()
        .last_seq;
    assert!(
        after_second_crash > after_first_crash,
        "its first batch committed"
    );
    assert!(
        after_second_crash < head,
        "its second batch was rolled back"
    );

    project_to(&world, head).await;
    assert_read_models_equal_the_fold(&world).await;
}

#[tokio::test]
async fn a_projector_process_killed_while_it_projects_never_loses_or_doubles_an_effect() {
    let world = World::new().await;
    let head = scenario(world.log(), 10, 500).await;
    // A first batch in process, so the process below projects batch by batch (not a bulk rebuild).
    project_to(&world, 1).await;
    let checkpoint = || async {
        read_models(world.db(), "read_models")
            .await
            .unwrap()
            .last_seq
    };
    let env = [
        ("HIVE_NATS_URL", world.nats_url.clone()),
        ("HIVE_DATABASE_URL", world.database_url.clone()),
        ("HIVE_NAMESPACE", world.config.namespace.clone()),
        ("HIVE_PROJECTOR_BATCH_MAX", "100".into()),
    ];
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut kills = 0;
    let mut last = checkpoint().await;
    while kills < 3 {
        let mut projector = hive_tests::process::part(&["serve", "projector"], &env, log.path());
        // SIGKILL it as soon as it has committed a batch: it is then writing the next one (or
        // between a commit and announcing it).
        let now = hive_tests::eventually(
            Duration::from_secs(30),
            Duration::from_millis(2),
            async || Some(checkpoint().await).filter(|now| *now > last),
        )
        .await
        .expect("the projector moved");
        projector.kill().await;
        if now >= head {
            break;
        }
        kills += 1;
        last = checkpoint().await;
    }
    // Three kills on this machine; a machine fast enough to project the rest first still killed one.
    assert!(kills >= 1, "killed before the head ({head} events)");
    project_to(&world, head).await;
    assert_read_models_equal_the_fold(&world).await;
}

#[tokio::test]
async fn two_projectors_at_once_still_apply_each_event_once() {
    let world = World::new().await;
    let head = scenario(world.log(), 4, 30).await;
    tokio::join!(project_to(&world, head), project_to(&world, head));
    assert_read_models_equal_the_fold(&world).await;
}

#[tokio::test]
async fn poison_goes_to_dead_letters_and_later_events_still_project() {
    let world = World::new().await;
    let log = world.log();
    let subjects = log.subjects().clone();
    let task = TaskId::new().as_uuid();
    let meta = || {
        EventMeta::new(
            chrono::Utc::now(),
            uuid::Uuid::now_v7(),
            None,
            Actor::new("test"),
        )
    };
    let good = |id| encode(&meta(), AggregateKind::Task, id, &TaskEvent::TaskQueued {});
    let mut poison = Vec::new();
    let on_task = subjects.of(AggregateKind::Task, task);
    poison.push(world.publish_raw(&on_task, "not json at all").await);
    let mut unknown: serde_json::Value = serde_json::from_slice(&good(task)).unwrap();
    unknown["type"] = json!("TaskTeleported");
    poison.push(
        world
            .publish_raw(&on_task, serde_json::to_vec(&unknown).unwrap())
            .await,
    );
    let mut future: serde_json::Value = serde_json::from_slice(&good(task)).unwrap();
    future["schema_version"] = json!(99);
    poison.push(
        world
            .publish_raw(&on_task, serde_json::to_vec(&future).unwrap())
            .await,
    );
    // A valid envelope for another task, on this task's subject.
    poison.push(
        world
            .publish_raw(&on_task, good(TaskId::new().as_uuid()))
            .await,
    );
    // An impossible transition: a task that was never created cannot be queued.
    poison.push(world.publish_raw(&on_task, good(task)).await);
    // A subject that names no aggregate.
    poison.push(
        world
            .publish_raw(&format!("{}.robot.x", subjects.prefix()), good(task))
            .await,
    );
    // An oversized message never enters the log: the publish is refused, and nothing changes.
    let before = log.last_seq().await.unwrap();
    let oversized = vec![b'x'; 2 * 1024 * 1024];
    let js = async_nats::jetstream::new(log.client());
    let refused = match js.publish(on_task.clone(), oversized.into()).await {
        Err(_) => true,
        Ok(ack) => ack.await.is_err(),
    };
    assert!(refused, "a 2 MiB message was stored");
    assert_eq!(log.last_seq().await.unwrap(), before);

    let head = scenario(log, 2, 5).await;
    project_to(&world, head).await;
    assert_read_models_equal_the_fold(&world).await;

    let dead = read_models(world.db(), "read_models").await.unwrap().dead;
    assert_eq!(dead.into_iter().collect::<Vec<_>>(), poison);
    let rows = hive_schema::dead_letters::Entity::find()
        .all(world.db())
        .await
        .unwrap();
    let reasons: Vec<&str> = rows.iter().map(|r| r.reason.as_str()).collect();
    assert!(reasons[0].starts_with("malformed envelope"), "{reasons:?}");
    assert!(reasons[1].contains("unknown event type"), "{reasons:?}");
    assert!(
        reasons[2].contains("unsupported schema_version 99"),
        "{reasons:?}"
    );
    assert!(reasons[3].contains("envelope names"), "{reasons:?}");
    assert!(reasons[4].contains("cannot follow"), "{reasons:?}");
    assert!(reasons[5].contains("names no aggregate"), "{reasons:?}");
    assert_eq!(rows[0].payload, b"not json at all");
}

use sea_orm::EntityTrait;

#[tokio::test]
async fn a_read_model_database_that_lost_its_last_commits_is_caught_up_again() {
    use hive_projector::rebuild::TABLES;
    use sea_orm::ConnectionTrait;
    let world = World::new().await;
    let before_loss = scenario(world.log(), 3, 20).await;
    project_to(&world, before_loss).await;
    // What the database will fall back to.
    for table in TABLES {
        world
            .db()
            .execute_unprepared(&format!(
                "CREATE TABLE kept_{table} AS SELECT * FROM {table}"
            ))
            .await
            .unwrap();
    }
    let projector = Projector::new(world.db().clone(), world.log().clone(), config(None));
    let mut checkpoint = projector.checkpoint();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(projector.run(async move {
        let _ = stopped.await;
    }));
    let lost = scenario(world.log(), 2, 20).await;
    checkpoint.wait_for(|c| *c >= lost).await.unwrap();
    // The database loses every commit after `before_loss` (as an asynchronous commit lost in a
    // crash, or a failover to a replica that lagged, would), while the projector runs on.
    let restore: Vec<String> = TABLES
        .iter()
        .map(|t| format!("DELETE FROM {t}; INSERT INTO {t} SELECT * FROM kept_{t};"))
        .collect();
    world
        .db()
        .execute_unprepared(&format!("BEGIN; {} COMMIT;", restore.join(" ")))
        .await
        .unwrap();
    // The next event shows the projector that its checkpoint went back: it applies again what was lost.
    let head = scenario(world.log(), 1, 5).await;
    let settled =
        tokio::time::timeout(Duration::from_secs(30), checkpoint.wait_for(|c| *c >= head)).await;
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
    settled.expect("the projector reaches the head").unwrap();
    assert_read_models_equal_the_fold(&world).await;
}

#[tokio::test]
async fn the_projectors_connections_commit_without_waiting_for_the_wal_and_never_scan_whole_tables()
{
    use sea_orm::{ConnectionTrait, Statement};
    let world = World::new().await;
    let db = hive::open_projector_database(&world.database_url)
        .await
        .unwrap();
    for (name, value) in hive_projector::SESSION_SETTINGS {
        let row = db
            .query_one_raw(Statement::from_string(
                db.get_database_backend(),
                format!("SHOW {name}"),
            ))
            .await
            .unwrap()
            .unwrap();
        let shown: String = row.try_get_by_index(0).unwrap();
        assert_eq!(shown, value, "{name}");
    }
    // Other pools are left as the server's (a query that reads a whole table may scan it).
    let row = world
        .db()
        .query_one_raw(Statement::from_string(
            world.db().get_database_backend(),
            "SHOW enable_seqscan",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.try_get_by_index::<String>(0).unwrap(), "on");
}

#[tokio::test]
async fn a_database_reached_through_a_unix_socket_is_created_and_migrated() {
    use sea_orm::{ConnectionTrait, Statement};
    let world = World::new().await;
    // `?host=/a/directory`: the URL's path ends in the socket's directory, not in the database.
    let name = format!("{}_socket", world.database);
    let url = world.socket_url_named(&name);
    let backends = hive::connect(&world.config, &world.nats_url, &url, true)
        .await
        .unwrap();
    let db = hive::open_projector_database(&url).await.unwrap();
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT current_database(), count(*) FROM projection_checkpoints",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.try_get_by_index::<String>(0).unwrap(), name);
    assert_eq!(row.try_get_by_index::<i64>(1).unwrap(), 0);
    backends.db.close().await.unwrap();
}
