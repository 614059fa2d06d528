//! The projector active/standby: two `hive serve projector` processes, one folding behind its lease;
//! the active one is killed with SIGKILL under a write load and the standby takes over from the
//! checkpoint, within the lease's time to live, with nothing projected twice or skipped. And the
//! checkpoint moves only from the value a batch read, so a deposed leader's late batch fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hive_client::Method;
use hive_projector::READ_MODELS;
use hive_projector::batch::{lock_checkpoint, write_checkpoint};
use hive_tests::process::part;
use hive_tests::{World, authorized_client, until};
use sea_orm::TransactionTrait;
use serde_json::json;

/// The value of gauge `name` that the process serving metrics on `port` exports, once it serves them.
async fn gauge(port: u16, name: &str) -> Option<f64> {
    let http = hive_client::Client::new(&format!("http://127.0.0.1:{port}"));
    let text = http
        .request(Method::GET, "/metrics")
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let scrape = hive_tests::exposition::parse(&text);
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name)
        .and_then(|s| match s.value {
            prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => Some(v),
            _ => None,
        })
}

/// The checkpoint of the read models, as the database has it.
async fn checkpoint(world: &World) -> u64 {
    let txn = world.db().begin().await.unwrap();
    let seq = lock_checkpoint(&txn, READ_MODELS).await.unwrap();
    txn.commit().await.unwrap();
    seq
}

#[tokio::test]
async fn a_standby_projector_process_takes_over_from_the_checkpoint_when_the_leader_is_killed() {
    const TTL: Duration = Duration::from_secs(1);
    // Beyond the TTL: the standby tries for the lease every TTL/10 and the server expires it on time
    // give or take a few milliseconds; the rest is for a busy machine.
    const MARGIN: Duration = Duration::from_millis(3_000);
    const WRITERS: usize = 4;
    let world = World::new().await;
    // The API here; the projectors are `hive serve projector` processes.
    let api = world
        .run(hive::Parts {
            api: true,
            projector: false,
            scheduler: false,
        })
        .await;
    // Every checkpoint either projector announces, in order.
    let mut notices = world
        .log()
        .client()
        .subscribe(world.namespace().projection_notices(READ_MODELS))
        .await
        .unwrap();
    let announced = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let listener = {
        let announced = announced.clone();
        tokio::spawn(async move {
            while let Some(message) = notices.next().await {
                let seq = std::str::from_utf8(&message.payload)
                    .unwrap()
                    .parse()
                    .unwrap();
                announced.lock().unwrap().push(seq);
            }
        })
    };

    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path();
    let ports = [
        hive_devservers::free_port().unwrap(),
        hive_devservers::free_port().unwrap(),
    ];
    let start = |n: usize| {
        let env = vec![
            ("HIVE_NATS_URL", world.nats_url.clone()),
            ("HIVE_DATABASE_URL", world.database_url.clone()),
            ("HIVE_NAMESPACE", world.config.namespace.clone()),
            ("HIVE_HOME", logs.display().to_string()),
            ("HIVE_LEADER_TTL_SECS", TTL.as_secs_f64().to_string()),
            ("HIVE_METRICS_ADDR", format!("127.0.0.1:{}", ports[n])),
        ];
        part(
            &["serve", "projector"],
            &env,
            &logs.join(format!("projector-{n}.log")),
        )
    };
    let show_logs = || {
        for n in 0..2 {
            let text = std::fs::read_to_string(logs.join(format!("projector-{n}.log")))
                .unwrap_or_default();
            eprintln!("--- projector-{n}\n{text}");
        }
    };
    let mut projectors = vec![start(0), start(1)];
    // Both serve their metrics (so both are connected and asking for the lease), one leads.
    let leader = until(
        Duration::from_secs(30),
        "one leading projector and one standby",
        show_logs,
        async || {
            let a = gauge(ports[0], "hive_projector_leading").await?;
            let b = gauge(ports[1], "hive_projector_leading").await?;
            match (a, b) {
                (1.0, 0.0) => Some(0),
                (0.0, 1.0) => Some(1),
                _ => None,
            }
        },
    )
    .await;
    let standby = 1 - leader;

    // A steady load of commands through the API, before, during and after the takeover.
    let stop = Arc::new(AtomicBool::new(false));
    let created = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let client = authorized_client(&api.base, &world.admin_token);
            let (stop, created) = (stop.clone(), created.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    client
                        .create_task(&json!({"title": format!("writer {w} task {n}")}))
                        .await
                        .expect("a task is created");
                    created.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                }
            })
        })
        .collect();
    // Some of the load is projected by the leader first.
    until(
        Duration::from_secs(30),
        "the leader projecting the load",
        show_logs,
        async || (checkpoint(&world).await >= 50).then_some(()),
    )
    .await;

    // SIGKILL: the leader cannot release its lease; the standby takes it once it lapses.
    let killed = Instant::now();
    let at_kill = checkpoint(&world).await;
    projectors[leader].kill().await;
    until(
        TTL + MARGIN + Duration::from_secs(5),
        "the standby leading",
        show_logs,
        async || (gauge(ports[standby], "hive_projector_leading").await? == 1.0).then_some(()),
    )
    .await;
    let took = killed.elapsed();
    assert!(took <= TTL + MARGIN, "the standby took over after {took:?}");
    eprintln!("the standby took over {took:?} after the kill");
    // It projects what came meanwhile and after, from the checkpoint on.
    let head_after_takeover = world.log().last_seq().await.unwrap();
    until(
        Duration::from_secs(30),
        "the standby projecting past the takeover",
        show_logs,
        async || (checkpoint(&world).await >= head_after_takeover).then_some(()),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    let head = world.log().last_seq().await.unwrap();
    until(
        Duration::from_secs(30),
        "the standby catching up with the log",
        show_logs,
        async || (checkpoint(&world).await == head).then_some(()),
    )
    .await;

    // The read models are the fold of the log, row by row, with its status counts and no dead letter.
    let report = hive_projector::verify::verify(world.db(), world.log(), READ_MODELS)
        .await
        .unwrap();
    assert_eq!(report.checkpoint, head);
    assert!(report.differences.is_empty(), "{:#?}", report.differences);
    let created = created.load(Ordering::Relaxed);
    assert_eq!(report.rows, created, "every created task has its row");
    assert!(head > at_kill, "events came after the kill");
    // Every checkpoint announced moved forward: no batch was projected again, none went back.
    let announced = announced.lock().unwrap().clone();
    assert!(
        announced.windows(2).all(|w| w[0] < w[1]),
        "checkpoints announced out of order: {announced:?}"
    );
    assert!(announced.iter().any(|seq| *seq > at_kill));
    listener.abort();
    drop(projectors);
    api.stop().await;
}

#[tokio::test]
async fn projectors_whose_lease_is_taken_away_again_and_again_still_project_exactly() {
    let world = World::new().await;
    let config = hive_projector::ProjectorConfig {
        batch_max: 7,
        rebuild_when_empty: false,
        leader_ttl: Some(Duration::from_millis(600)),
        ..Default::default()
    };
    let projectors: Vec<_> = (0..2)
        .map(|n| {
            let config = hive_projector::ProjectorConfig {
                instance: format!("projector-{n}"),
                ..config.clone()
            };
            let projector =
                hive_projector::Projector::new(world.db().clone(), world.log().clone(), config);
            tokio::spawn(projector.run(std::future::pending()))
        })
        .collect();
    // Take the lease away from whoever holds it while the log grows: the other one takes it while
    // the deposed leader still folds until its next renewal, so two fold at once for a moment.
    let js = async_nats::jetstream::new(world.log().client());
    let bucket = world.namespace().projector_lease();
    let lease = until(
        Duration::from_secs(20),
        "the projector's lease bucket",
        || {},
        async || js.get_key_value(&bucket).await.ok(),
    )
    .await;
    let thief = tokio::spawn(async move {
        let mut handovers = 0;
        for _ in 0..8 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if lease.delete("leader").await.is_ok() {
                handovers += 1;
            }
        }
        handovers
    });
    let head = hive_tests::scenario(world.log(), 6, 60).await;
    let handovers = thief.await.unwrap();
    assert!(handovers >= 3, "the lease was taken {handovers} times");
    let head = head.max(world.log().last_seq().await.unwrap());
    until(
        Duration::from_secs(30),
        "the projection at the log's head",
        || {},
        async || (checkpoint(&world).await == head).then_some(()),
    )
    .await;
    let report = hive_projector::verify::verify(world.db(), world.log(), READ_MODELS)
        .await
        .unwrap();
    assert!(report.differences.is_empty(), "{:#?}", report.differences);
    for projector in projectors {
        projector.abort();
    }
}

#[tokio::test]
async fn a_checkpoint_moves_only_from_the_one_a_batch_read() {
    let world = World::new().await;
    let txn = world.db().begin().await.unwrap();
    let at = lock_checkpoint(&txn, READ_MODELS).await.unwrap();
    write_checkpoint(&txn, READ_MODELS, at, at + 5)
        .await
        .unwrap();
    txn.commit().await.unwrap();
    assert_eq!(checkpoint(&world).await, at + 5);

    // A deposed leader's batch, read at the old checkpoint: refused, and the checkpoint stays.
    let txn = world.db().begin().await.unwrap();
    let refused = write_checkpoint(&txn, READ_MODELS, at, at + 3).await;
    assert!(refused.is_err(), "{refused:?}");
    drop(txn);
    assert_eq!(checkpoint(&world).await, at + 5);
}
