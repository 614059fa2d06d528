//! A JetStream cluster of three nats-server processes for one test, what the hive's processes are
//! given to run on it, and checks of what the cluster did: what its nodes refused, what its log holds.

use std::path::Path;

use hive_devservers::{Durability, NatsServer};
use serde_json::Value;

use crate::World;

/// Three nats-server processes (`n0`..`n2`) in one JetStream cluster, their stores under `dir`.
pub async fn cluster(dir: &Path) -> Vec<NatsServer> {
    NatsServer::cluster(dir, Durability::Throwaway, "")
        .await
        .expect("a cluster of three nodes")
}

/// [`cluster`] as compose runs it: each node with `config` (users) in its configuration, fsyncing
/// every write before its ack (compose/nats-node.conf).
pub async fn cluster_configured(dir: &Path, config: &str) -> Vec<NatsServer> {
    NatsServer::cluster(dir, Durability::Safe, config)
        .await
        .expect("a cluster of three nodes")
}

/// What the hive's processes are given to run on `nats_url` (a cluster: the stream on 3 replicas) and
/// the world's database and namespace.
pub fn cluster_env(world: &World, nats_url: &str, home: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("HIVE_NATS_URL", nats_url.to_owned()),
        ("HIVE_DATABASE_URL", world.database_url.clone()),
        ("HIVE_NAMESPACE", world.config.namespace.clone()),
        ("HIVE_STREAM_REPLICAS", "3".to_owned()),
        ("HIVE_HOME", home.display().to_string()),
    ]
}

/// Whether the nats-server at `monitoring` fsyncs every JetStream write before acknowledging it.
pub async fn syncs_every_write(monitoring: &str) -> bool {
    let varz: Value = hive_client::Client::new(monitoring)
        .request(hive_client::Method::GET, "/varz")
        .send()
        .await
        .expect("nats-server's /varz")
        .json()
        .await
        .expect("JSON");
    varz["jetstream"]["config"]["sync_always"] == true
}

/// What the nats-server storing under `dir` refused its clients (permission violations), from its log.
pub fn refusals(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("nats-server.log"))
        .expect("the nats-server log")
        .lines()
        .filter(|l| l.contains("Violation"))
        .map(str::to_owned)
        .collect()
}

/// Asserts that the log's `events` create each of the acknowledged tasks `ids` exactly once and no
/// other task.
pub fn assert_each_acknowledged_task_created_once(
    events: &[hive_eventlog::RawEvent],
    subjects: &hive_events::subject::Subjects,
    ids: &std::collections::HashSet<&str>,
) {
    let mut created = std::collections::BTreeMap::<String, usize>::new();
    for event in events {
        if let Some((hive_events::AggregateKind::Task, id)) = subjects.parse(&event.subject)
            && serde_json::from_slice::<Value>(&event.payload).unwrap()["type"] == "TaskCreated"
        {
            *created.entry(id.to_string()).or_default() += 1;
        }
    }
    for id in ids {
        assert_eq!(created.get(*id), Some(&1), "task {id} in the log once");
    }
    assert_eq!(
        created.len(),
        ids.len(),
        "no task that was not acknowledged"
    );
}
