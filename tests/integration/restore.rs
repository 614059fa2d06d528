//! The restore's harder cases: sequences deleted before the backup and two events with one
//! `Nats-Msg-Id` keep their places, a cluster gets the configured replicas, and the runbook of
//! `hive up` (restore into its home, then `hive up`) serves the restored hive.

use std::time::Duration;

use hive_client::Method;
use hive_eventlog::RawEvent;
use hive_projector::fold::fold_log;
use hive_tests::{World, authorized_client, scenario, until};

use crate::backup::{back_up, config_of};

#[tokio::test]
async fn sequences_deleted_before_the_backup_stay_empty_after_the_restore() {
    // A stream of a namespace made without Hive's denials, so messages can be purged and deleted.
    let target = World::new().await;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let namespace = hive_eventlog::Namespace::new(format!("g{}", &id[..12]));
    // JetStream's shortest duplicate window: two events with one Nats-Msg-Id, as a log has when a key
    // comes back after the window.
    let log_config = hive_eventlog::LogConfig {
        namespace: namespace.clone(),
        duplicate_window: Duration::from_millis(100),
        ..Default::default()
    };
    let client = hive::nats_client(&target.nats_url).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let stream = js
        .create_stream(async_nats::jetstream::stream::Config {
            name: namespace.stream(),
            subjects: vec![namespace.subjects().all()],
            duplicate_window: log_config.duplicate_window,
            max_message_size: log_config.max_event_bytes,
            allow_direct: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let log = hive_eventlog::EventLog::open(client, &log_config)
        .await
        .unwrap();
    let scenario_head = scenario(&log, 1, 4).await;
    assert!(scenario_head > 8);
    let subject = log
        .subjects()
        .of(hive_events::AggregateKind::Task, uuid::Uuid::new_v4());
    let publish_once = async || {
        let publish = async_nats::jetstream::message::PublishMessage::build()
            .payload("not an event".into())
            .message_id("the same key");
        let ack = js.send_publish(subject.clone(), publish).await.unwrap();
        ack.await.unwrap()
    };
    assert!(!publish_once().await.duplicate);
    let head = until(
        Duration::from_secs(10),
        "the window to pass",
        || {},
        async || {
            let ack = publish_once().await;
            (!ack.duplicate).then_some(ack.sequence)
        },
    )
    .await;
    assert_eq!(head, scenario_head + 2);
    stream.purge().sequence(3).await.unwrap();
    // Not the last one: Hive's readers take a stream whose last sequence holds nothing for a lost
    // reader (a Hive log denies deletes, so it never has one).
    for seq in [5, 6] {
        assert!(stream.delete_message(seq).await.unwrap());
    }

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("backup");
    let source = hive::Config {
        namespace: namespace.as_str().to_owned(),
        ..target.config.clone()
    };
    let manifest = hive::backup::backup(&source, &target.nats_url, &dir)
        .await
        .unwrap();
    assert_eq!(
        (manifest.first_seq, manifest.last_seq, manifest.messages),
        (3, head, head - 4)
    );

    let restored = hive::backup::restore(&config_of(&target), &dir, false)
        .await
        .unwrap();
    assert_eq!((restored.events, restored.gaps), (head - 4, 2));
    let state = js
        .get_stream(target.namespace().stream())
        .await
        .unwrap()
        .get_info()
        .await
        .unwrap()
        .state;
    assert_eq!(
        (state.first_sequence, state.last_sequence, state.messages),
        (3, head, head - 4)
    );
    let before = log.read_to_head(1).await.unwrap();
    let after = target.log().read_to_head(1).await.unwrap();
    let seqs = |events: &[RawEvent]| events.iter().map(|e| e.seq).collect::<Vec<_>>();
    assert_eq!(seqs(&after), seqs(&before));
    assert!(!seqs(&after).contains(&5) && seqs(&after)[0] == 3);
    for (a, b) in before.iter().zip(&after) {
        assert_eq!(
            (&b.payload, &b.msg_id),
            (&a.payload, &a.msg_id),
            "event {}",
            a.seq
        );
    }
    let repeated = |events: &[RawEvent]| {
        events
            .iter()
            .filter(|e| e.msg_id.as_deref() == Some("the same key"))
            .map(|e| e.seq)
            .collect::<Vec<_>>()
    };
    assert_eq!(repeated(&after), [head - 1, head]);
    js.delete_stream(namespace.stream()).await.unwrap();
}

#[tokio::test]
async fn a_backup_restores_into_a_cluster_on_the_configured_replicas() {
    let original = World::new().await;
    let head = scenario(original.log(), 2, 20).await;
    let tmp = tempfile::tempdir().unwrap();
    let (dir, manifest) = back_up(&original, &tmp).await;
    assert_eq!(manifest.last_seq, head);

    let nodes = hive_tests::cluster::cluster(&tmp.path().join("cluster")).await;
    let cluster_url = nodes.iter().map(|n| n.url()).collect::<Vec<_>>().join(",");
    // The target's database and namespace, its stream on the cluster.
    let target = World::new().await;
    let config = hive::Config {
        nats_url: Some(cluster_url.clone()),
        stream_replicas: 3,
        ..config_of(&target)
    };
    let restored = hive::backup::restore(&config, &dir, false).await.unwrap();
    assert_eq!(restored.events, manifest.messages);

    let client = hive::nats_client(&cluster_url).await.unwrap();
    let log = hive_eventlog::EventLog::open_existing(client, &config.log())
        .await
        .unwrap();
    assert_eq!(log.replicas(), 3);
    let info = async_nats::jetstream::new(log.client())
        .get_stream(config.log().namespace.stream())
        .await
        .unwrap()
        .get_info()
        .await
        .unwrap();
    let cluster = info.cluster.expect("a clustered stream");
    assert!(cluster.leader.is_some() && cluster.replicas.len() == 2);
    let before = original.log().read_to_head(1).await.unwrap();
    let after = log.read_to_head(1).await.unwrap();
    assert_eq!(after.len(), before.len());
    for (a, b) in before.iter().zip(&after) {
        assert_eq!(
            (b.seq, &b.payload, &b.msg_id),
            (a.seq, &a.payload, &a.msg_id)
        );
    }
    let tokens = hive_eventlog::Tokens::open(&log).await.unwrap();
    let id = hive_eventlog::tokens::id_of(&original.admin_token);
    assert!(tokens.grant(&id).await.unwrap().is_some());
    let report = hive_projector::verify::verify(target.db(), &log, hive_projector::READ_MODELS)
        .await
        .unwrap();
    assert!(report.differences.is_empty(), "{:?}", report.differences);
    assert_eq!(report.checkpoint, head);
}

/// Runs the real `hive` with `env` (and nothing of the test's own HIVE_* but the servers' binaries).
fn hive_with(args: &[&str], env: &[(&str, String)]) -> std::process::Output {
    std::process::Command::new(hive_tests::agent_program())
        .args(args)
        .env_remove("HIVE_NATS_URL")
        .env_remove("HIVE_DATABASE_URL")
        .env("HIVE_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("run hive")
}

#[tokio::test]
async fn the_runbook_with_hive_up_restores_into_its_home_and_hive_up_serves_the_restored_hive() {
    let original = World::new().await;
    scenario(original.log(), 2, 12).await;
    let tmp = tempfile::tempdir().unwrap();
    let (dir, manifest) = back_up(&original, &tmp).await;

    // A new HIVE_HOME: `hive restore` starts its nats-server for the restore, as `hive up` would.
    let home = tmp.path().join("home");
    let env = [
        ("HIVE_HOME", home.display().to_string()),
        (
            "HIVE_DATABASE_URL",
            original.database_url_named(&format!("{}_restored", original.database)),
        ),
        ("HIVE_NAMESPACE", original.config.namespace.clone()),
        (
            "HIVE_NATS_PORT",
            hive_devservers::free_port().unwrap().to_string(),
        ),
    ];
    let restored = hive_with(&["restore", dir.to_str().unwrap()], &env);
    let stdout = String::from_utf8_lossy(&restored.stdout);
    assert!(
        restored.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&restored.stderr)
    );
    assert!(
        stdout.contains(&format!("restored {} events", manifest.messages)),
        "{stdout}"
    );
    assert!(stdout.contains("read_models: rebuilt"), "{stdout}");

    // `hive up` in that home serves the restored hive, to the original's tokens.
    let (mut up, base, _) = hive_tests::process::hive_up(&original, &home, &env).await;
    let client = authorized_client(&base, &original.admin_token);
    let status = hive_tests::json(client.request(Method::GET, &format!("{base}/status"))).await;
    let events = original.log().read_to_head(1).await.unwrap();
    let fold = fold_log(&events, original.log().subjects());
    assert_eq!(
        status["tasks"]["total"].as_u64(),
        Some(fold.tasks.len() as u64),
        "{status}"
    );
    // Beside a running `hive up`, a restore is refused.
    let refused = hive_with(&["restore", "--force", dir.to_str().unwrap()], &env);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("is running"),
        "{stderr}"
    );
    up.kill().await.unwrap();
}
