//! The API scaled out: several stateless API processes on one log and one database, each reading
//! another's writes at once with `Hive-Min-Seq`; and an API reading a PostgreSQL streaming replica,
//! where `Hive-Min-Seq` waits for what the replica has replayed, not for what the projector announced.

use hive::Parts;
use hive_devservers::{Durability, Postgres};
use hive_tests::{World, until};
use sea_orm::{ConnectionTrait, Database};
use serde_json::json;
use std::time::Duration;

const API_ONLY: Parts = Parts {
    api: true,
    projector: false,
    scheduler: false,
};

const PROJECTOR_ONLY: Parts = Parts {
    api: false,
    projector: true,
    scheduler: false,
};

#[tokio::test]
async fn two_api_replicas_read_each_others_writes_at_once() {
    const ROUNDS: usize = 200;
    let world = World::new().await;
    let projector = world.run(PROJECTOR_ONLY).await;
    let apis = [world.run(API_ONLY).await, world.run(API_ONLY).await];
    for round in 0..ROUNDS {
        // In turn: written through one, read through the other at once.
        let (writer, reader) = (&apis[round % 2], &apis[1 - round % 2]);
        let title = format!("round {round}");
        let (status, created) = writer.post("/api/v1/tasks", json!({"title": title})).await;
        assert_eq!(status, 201, "{created}");
        let (task, seq) = (
            created["task_id"].as_str().unwrap(),
            created["seq"].as_u64().unwrap(),
        );
        let (status, read) = reader.get_at(&format!("/api/v1/tasks/{task}"), seq).await;
        assert_eq!(status, 200, "round {round}: {read}");
        assert_eq!(read["title"], title.as_str(), "round {round}");
        // An agent too, the other way round.
        let (status, agent) = reader
            .post("/api/v1/agents", json!({"agent_type": "worker"}))
            .await;
        assert_eq!(status, 201, "{agent}");
        let (id, seq) = (
            agent["agent_id"].as_str().unwrap(),
            agent["seq"].as_u64().unwrap(),
        );
        let (status, read) = writer.get_at(&format!("/api/v1/agents/{id}"), seq).await;
        assert_eq!(status, 200, "round {round}: {read}");
    }
    for api in apis {
        api.stop().await;
    }
    projector.stop().await;
}

#[tokio::test]
async fn an_api_on_a_replica_waits_for_the_replica_not_the_primary() {
    let mut world = World::new().await;
    // A read that the replica cannot answer gives up soon.
    world.config.min_seq_timeout_ms = 500;
    let dir = tempfile::tempdir().unwrap();
    let primary = Postgres::start(&dir.path().join("primary"), None, Durability::Throwaway)
        .await
        .unwrap();
    let replica =
        Postgres::start_replica(&primary, &dir.path().join("replica"), Durability::Throwaway)
            .await
            .unwrap();
    // The projector writes to the primary; the API reads the replica (as its superuser: this test is
    // about where the checkpoint is read, not about roles).
    let backends = hive::connect(&world.config, &world.nats_url, &primary.url("hive"), true)
        .await
        .unwrap();
    let projector = world
        .run_with(hive::PartBackends::from(backends.clone()), PROJECTOR_ONLY)
        .await;
    let replica_url = replica.url("hive");
    let replica_db = until(
        Duration::from_secs(30),
        "the replica replaying the migrated database",
        || {},
        async || {
            let db = Database::connect(replica_url.as_str()).await.ok()?;
            db.execute_unprepared("SELECT seq FROM projection_checkpoints LIMIT 1")
                .await
                .ok()?;
            Some(db)
        },
    )
    .await;
    assert!(
        hive_api::consistency::is_replica(&replica_db)
            .await
            .unwrap()
    );
    assert!(
        !hive_api::consistency::is_replica(&backends.db)
            .await
            .unwrap()
    );
    let mut parts = hive::PartBackends::from(backends.clone());
    parts.api.db = replica_db.clone();
    parts.api.database_url = replica_url.clone();
    let api = world.run_with(parts, API_ONLY).await;

    // The replica keeps up: a write is read at once.
    let (status, first) = api.post("/api/v1/tasks", json!({"title": "first"})).await;
    assert_eq!(status, 201, "{first}");
    let first_id = first["task_id"].as_str().unwrap().to_owned();
    let (status, read) = api
        .get_at(
            &format!("/api/v1/tasks/{first_id}"),
            first["seq"].as_u64().unwrap(),
        )
        .await;
    assert_eq!(status, 200, "{read}");

    // The replica stops replaying: the projector commits on the primary and announces it, but the
    // replica does not have it, so a read at that sequence waits (and gives up), never a stale 404.
    replica_db
        .execute_unprepared("SELECT pg_wal_replay_pause()")
        .await
        .unwrap();
    let (status, second) = api.post("/api/v1/tasks", json!({"title": "second"})).await;
    assert_eq!(status, 201, "{second}");
    let (second_id, seq) = (
        second["task_id"].as_str().unwrap().to_owned(),
        second["seq"].as_u64().unwrap(),
    );
    let primary_checkpoint = async || -> Option<()> {
        let row = backends
            .db
            .query_one_raw(sea_orm::Statement::from_string(
                backends.db.get_database_backend(),
                "SELECT seq FROM projection_checkpoints WHERE name = 'read_models'",
            ))
            .await
            .ok()??;
        let at: i64 = row.try_get("", "seq").ok()?;
        (at as u64 >= seq).then_some(())
    };
    until(
        Duration::from_secs(20),
        "the primary projecting the second task",
        || {},
        primary_checkpoint,
    )
    .await;
    let (status, read) = api.get_at(&format!("/api/v1/tasks/{second_id}"), seq).await;
    assert_eq!(status, 503, "{read}");
    assert_eq!(read["error"]["code"], "projection_lagging", "{read}");
    let plain = api.get(&format!("/api/v1/tasks/{first_id}")).await;
    let reflected: u64 = plain
        .header("hive-projection-seq")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        reflected < seq,
        "the API claims {reflected}, beyond what the replica has"
    );

    // Replaying again, the replica catches up and the read sees the write.
    replica_db
        .execute_unprepared("SELECT pg_wal_replay_resume()")
        .await
        .unwrap();
    let (status, read) = api.get_at(&format!("/api/v1/tasks/{second_id}"), seq).await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["title"], "second");
    api.stop().await;
    projector.stop().await;
    drop((replica, primary));
}
