//! The stream's leader killed under load: on a 3-node JetStream cluster with the stream on 3 replicas,
//! clients keep creating tasks through the API (retrying a failed request with the same
//! `Idempotency-Key`, as a client should) while the node leading the stream is killed with SIGKILL.
//! Writes continue once a new leader is elected, every acknowledged task is in the log exactly once,
//! and the read models count exactly those.

use hive_client::Method;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hive_events::subject::Subjects;
use hive_tests::World;
use serde_json::Value;
use tokio::sync::Mutex;

use hive_tests::cluster::{
    assert_each_acknowledged_task_created_once, cluster, cluster_configured, cluster_env,
    syncs_every_write,
};
use hive_tests::process::{admin_token, migrate, part};
use hive_tests::until;

/// Acknowledged creations: idempotency key → (task id, when acknowledged).
type Acked = Arc<Mutex<BTreeMap<String, (String, Instant)>>>;

/// Creates tasks until `stop`, each request retried with its key until it is acknowledged.
async fn client(base: String, token: String, n: usize, acked: Acked, stop: Arc<AtomicBool>) {
    let http = hive_tests::authorized_client(&base, &token);
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("client-{n}-{i}");
        i += 1;
        // A loop of its own, not `hive_tests::eventually`: this runs in spawned tasks, and a generic
        // async closure's future is not known to be `Send` (rust-lang/rust#110338). The client
        // retries under the key itself; this loop outlasts a leader's election.
        let give_up = Instant::now() + Duration::from_secs(45);
        loop {
            let answer = http
                .command(Method::POST, "/api/v1/tasks")
                .idempotency_key(&key)
                .json(&serde_json::json!({ "title": key }))
                .send()
                .await;
            if let Ok(body) = answer {
                let id = body["task_id"].as_str().unwrap().to_owned();
                acked.lock().await.insert(key, (id, Instant::now()));
                break;
            }
            assert!(Instant::now() < give_up, "{key} never acknowledged");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn killing_the_stream_leader_under_load_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(dir.path()).await;
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    let nats_url = urls.join(",");
    let connect = async |urls: &[String]| {
        let addrs: Vec<&str> = urls.iter().map(String::as_str).collect();
        async_nats::connect(addrs.as_slice()).await.unwrap()
    };
    let world = World::new().await;
    let env = cluster_env(&world, &nats_url, dir.path());
    migrate(&env).await;
    let api_port = hive_devservers::free_port().unwrap();
    let mut api_env = env.clone();
    api_env.push(("HIVE_HTTP_ADDR", format!("127.0.0.1:{api_port}")));
    let logs = dir.path();
    let _api = part(&["serve", "api"], &api_env, &logs.join("api.log"));
    let _projector = part(&["serve", "projector"], &env, &logs.join("projector.log"));
    let show_logs = || {
        for name in ["api", "projector"] {
            let text =
                std::fs::read_to_string(logs.join(format!("{name}.log"))).unwrap_or_default();
            eprintln!("--- {name}\n{text}");
        }
    };
    let base = format!("http://127.0.0.1:{api_port}");
    let token = admin_token(&env).await;
    let http = hive_tests::authorized_client(&base, &token);
    until(
        Duration::from_secs(60),
        "a healthy API",
        show_logs,
        async || {
            let r = http
                .request(Method::GET, &format!("{base}/health"))
                .send()
                .await
                .ok()?;
            (r.status() == 200).then_some(())
        },
    )
    .await;

    // The load: 8 clients.
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|n| {
            tokio::spawn(client(
                base.clone(),
                token.clone(),
                n,
                acked.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let count = async || acked.lock().await.len();
    until(
        Duration::from_secs(30),
        "200 tasks acknowledged",
        show_logs,
        async || (count().await >= 200).then_some(()),
    )
    .await;

    // Kill the node that leads the stream.
    let stream_name = hive_eventlog::Namespace::new(&world.config.namespace).stream();
    let js = async_nats::jetstream::new(connect(&urls).await);
    let info = js
        .get_stream(&stream_name)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone();
    let leader = info
        .cluster
        .and_then(|c| c.leader)
        .expect("the stream has a leader");
    let index: usize = leader.trim_start_matches('n').parse().unwrap();
    let before = count().await;
    let killed_at = Instant::now();
    nodes[index].kill();

    // Writes continue after the election.
    until(
        Duration::from_secs(60),
        "writes after the leader died",
        show_logs,
        async || (count().await >= before + 500).then_some(()),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let acked = acked.lock().await.clone();
    // The longest pause in acknowledgements around the kill: the election as clients saw it.
    let mut times: Vec<Instant> = acked.values().map(|(_, at)| *at).collect();
    times.sort();
    let pause = times
        .windows(2)
        .filter(|w| w[1] >= killed_at)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    eprintln!(
        "leader {leader} killed after {before} acknowledged; {} in all; longest pause {pause:?}",
        acked.len()
    );

    // Every acknowledged task is in the log, created once; no other task is.
    let ids: HashSet<&str> = acked.values().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids.len(), acked.len(), "one task per key");
    let survivors: Vec<String> = (0..3)
        .filter(|n| *n != index)
        .map(|n| urls[n].clone())
        .collect();
    let client = connect(&survivors).await;
    let mut config = world.config.clone();
    config.stream_replicas = 3;
    let log = hive_eventlog::EventLog::open(client, &config.log())
        .await
        .unwrap();
    let subjects: &Subjects = log.subjects();
    // Read the whole log (a reader created while the cluster settles may time out: try again).
    let events = until(
        Duration::from_secs(30),
        "the log read",
        show_logs,
        async || log.read_to_head(1).await.ok(),
    )
    .await;
    let head = events.last().map_or(0, |e| e.seq);
    assert_each_acknowledged_task_created_once(&events, subjects, &ids);

    // The projector catches up through the new leader, and the read models count exactly those.
    let caught_up = Instant::now();
    let body: Value = until(
        Duration::from_secs(30),
        "the read models caught up",
        show_logs,
        async || {
            let r = http
                .request(Method::GET, &format!("{base}/status"))
                .header("Hive-Min-Seq", head.to_string())
                .send()
                .await
                .ok()?;
            (r.status() == 200).then_some(())?;
            r.json().await.ok()
        },
    )
    .await;
    eprintln!(
        "read models at the head {:?} after the load",
        caught_up.elapsed()
    );
    assert_eq!(body["tasks"]["total"], ids.len(), "{body}");
}

/// On three nodes fsyncing every write, as compose runs them (each node's Raft log stores many
/// publishes with one fsync), the log's promises hold as on one server: among commands in flight
/// together, a conflict is its own (one writer of a contended aggregate wins each round, the others
/// are told they lost, and every other command succeeds), and a key repeated by many at once appends
/// one event.
#[tokio::test]
async fn grouped_fsyncs_keep_each_commands_conflict_and_key_its_own() {
    use futures::future::join_all;
    use hive_eventlog::{AppendError, CommandContext};
    use hive_events::task::{NewTask, Task, TaskCommand};
    use hive_events::{Actor, AggregateKind};

    let dir = tempfile::tempdir().unwrap();
    let nodes = cluster_configured(dir.path(), "").await;
    for node in &nodes {
        assert!(syncs_every_write(&node.monitoring_url()).await);
    }
    let url: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    let world = World::new().await;
    let config = hive::Config {
        stream_replicas: 3,
        ..world.config.clone()
    };
    let log = hive::open_log(&config, &url.join(",")).await.unwrap();
    let contended = log.subjects().of(AggregateKind::Task, uuid::Uuid::now_v7());
    let create = || TaskCommand::Create(NewTask::titled("grouped"));
    let mut expected = 0;
    for round in 0..5 {
        let mut keyed = CommandContext::new(Actor::new("test"));
        keyed.idempotency_key = Some(format!("round-{round}"));
        let keyed_id = uuid::Uuid::now_v7();
        let racing = (0..8).map(|w| {
            let payload = bytes::Bytes::from(format!("round {round} writer {w}"));
            log.append(&contended, expected, None, payload)
        });
        let fresh = (0..48).map(|_| {
            let ctx = CommandContext::new(Actor::new("test"));
            let log = log.clone();
            async move {
                log.create::<Task>(uuid::Uuid::now_v7(), &ctx, create())
                    .await
            }
        });
        let repeated = (0..8).map(|_| log.create::<Task>(keyed_id, &keyed, create()));
        let (racing, fresh, repeated) =
            tokio::join!(join_all(racing), join_all(fresh), join_all(repeated));
        let won: Vec<u64> = racing
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(|a| a.seq)
            .collect();
        assert_eq!(won.len(), 1, "round {round}: one writer wins");
        assert!(
            racing
                .iter()
                .filter(|r| r.is_err())
                .all(|r| matches!(r, Err(AppendError::Conflict))),
            "round {round}: the others are told they lost, nothing else: {racing:?}"
        );
        expected = won[0];
        for done in &fresh {
            assert!(done.is_ok(), "round {round}: {done:?}");
        }
        let repeated: Vec<_> = repeated.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            repeated.iter().filter(|c| !c.duplicate).count(),
            1,
            "round {round}: one key, one event"
        );
        assert!(repeated.iter().all(|c| c.seq == repeated[0].seq));
        assert_eq!(
            log.history(AggregateKind::Task, keyed_id)
                .await
                .unwrap()
                .len(),
            1
        );
    }
}
