//! What lives in JetStream key-value buckets rather than in the log: agents' heartbeats (they would bloat
//! the log; only the transitions they cause are events), the leader leases of the scheduler and the
//! projector ([`crate::leadership`]), and the API's tokens ([`crate::tokens`]). One way to open a bucket
//! and open it again after a restarted nats-server ([`Bucket`]) serves them all.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use uuid::Uuid;

use crate::{EventLog, LogError, Namespace};

impl Namespace {
    /// The heartbeat bucket's name.
    pub fn heartbeats(&self) -> String {
        format!("{}_heartbeats", self.as_str())
    }

    /// Where the scheduler announces one agent's new assignments (core NATS, a push to its runtime).
    pub fn assignments(&self, agent: Uuid) -> String {
        format!("{}.assignments.{agent}", self.as_str())
    }

    /// The API tokens bucket's name.
    pub fn tokens(&self) -> String {
        format!("{}_tokens", self.as_str())
    }

    /// The scheduler lease bucket's name.
    pub fn scheduler_lease(&self) -> String {
        format!("{}_scheduler", self.as_str())
    }

    /// The projector lease bucket's name.
    pub fn projector_lease(&self) -> String {
        format!("{}_projector", self.as_str())
    }

    /// The bucket of aggregates' snapshots (a long history's state at a sequence; derived, never
    /// trusted over the log).
    pub fn aggregate_snapshots(&self) -> String {
        format!("{}_snapshots", self.as_str())
    }

    /// The object store of the scheduler's board snapshots (derived, never trusted over the log).
    pub fn board_snapshots(&self) -> String {
        format!("{}_board", self.as_str())
    }
}

fn context(log: &EventLog) -> jetstream::Context {
    jetstream::new(log.client())
}

/// Opens bucket `name` (one value per key, each kept for `max_age`; zero: forever), creating it or
/// updating its settings only when they differ: on a cluster, services that all create the same bucket at once
/// wait for each other's answers. An error until the bucket has a leader (before that, writes find no
/// stream).
pub(crate) async fn bucket(
    log: &EventLog,
    name: String,
    description: &str,
    max_age: Duration,
    storage: jetstream::stream::StorageType,
) -> Result<kv::Store, LogError> {
    let js = context(log);
    let wanted = kv::Config {
        bucket: name.clone(),
        description: description.into(),
        history: 1,
        max_age,
        storage,
        // As available as the log: a bucket on one node would die with that node.
        num_replicas: log.replicas(),
        ..Default::default()
    };
    // Found with other settings: updated (the admin's right, and the scheduler's and the projector's for their leases);
    // not found: created (a service's right for a bucket in memory, gone after a restart).
    let mut missing = false;
    let current = match js.get_key_value(&name).await {
        Ok(store) => store
            .status()
            .await
            .ok()
            .filter(|status| {
                let config = &status.info.config;
                config.max_age == max_age
                    && config.num_replicas == log.replicas()
                    && config.storage == storage
            })
            .map(|_| store),
        Err(_) => {
            missing = true;
            None
        }
    };
    let (store, info) = match current {
        // Found with the settings wanted: its info was read just now.
        Some(store) => {
            let info = store
                .status()
                .await
                .map_err(|e| LogError::new("read a bucket's state", e))?
                .info;
            (store, info)
        }
        // Created or updated: the answer may predate the election of its leader, so ask again.
        None => {
            let store = if missing {
                js.create_key_value(wanted)
                    .await
                    .map_err(|e| LogError::new("create a bucket", e))?
            } else {
                js.create_or_update_key_value(wanted)
                    .await
                    .map_err(|e| LogError::new("update a bucket's settings", e))?
            };
            let info = js
                .get_stream(format!("KV_{name}"))
                .await
                .map_err(|e| LogError::new("open a bucket's stream", e))?
                .get_info()
                .await
                .map_err(|e| LogError::new("read a bucket's state", e))?;
            (store, info)
        }
    };
    crate::log::led(&info)?;
    Ok(store)
}

/// A bucket that opens itself again when an operation on it fails: a bucket in memory is gone when its
/// nats-server restarts (found by the chaos test: every heartbeat failed from then on, so every agent
/// was lost), and opening it again creates it anew.
#[derive(Clone)]
pub(crate) struct Bucket {
    log: EventLog,
    pub(crate) name: String,
    description: &'static str,
    pub(crate) max_age: Duration,
    storage: jetstream::stream::StorageType,
    store: std::sync::Arc<std::sync::RwLock<std::sync::Arc<kv::Store>>>,
}

impl Bucket {
    /// Opens (or creates) bucket `name` ([`bucket`]).
    pub(crate) async fn open(
        log: &EventLog,
        name: String,
        description: &'static str,
        max_age: Duration,
        storage: jetstream::stream::StorageType,
    ) -> Result<Self, LogError> {
        let store = bucket(log, name.clone(), description, max_age, storage).await?;
        Ok(Self {
            log: log.clone(),
            name,
            description,
            max_age,
            storage,
            store: std::sync::Arc::new(std::sync::RwLock::new(std::sync::Arc::new(store))),
        })
    }

    /// The store as last opened.
    pub(crate) fn store(&self) -> std::sync::Arc<kv::Store> {
        self.store.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Runs `op`; when it fails, opens the bucket again and runs it once more.
    pub(crate) async fn run<T, F, Fut>(&self, op: F) -> Result<T, LogError>
    where
        F: Fn(std::sync::Arc<kv::Store>) -> Fut,
        Fut: Future<Output = Result<T, LogError>>,
    {
        match op(self.store()).await {
            Ok(value) => Ok(value),
            Err(first) => {
                let reopened = bucket(
                    &self.log,
                    self.name.clone(),
                    self.description,
                    self.max_age,
                    self.storage,
                )
                .await;
                let Ok(store) = reopened else {
                    return Err(first);
                };
                *self.store.write().unwrap_or_else(|e| e.into_inner()) = std::sync::Arc::new(store);
                op(self.store()).await
            }
        }
    }
}

/// The last heartbeat of every agent: key = agent id, value = the time in milliseconds since the epoch.
#[derive(Clone)]
pub struct Heartbeats {
    /// Shared: a store holds its stream's info, too costly to clone per request.
    bucket: Bucket,
}

/// One heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Beat {
    /// The agent.
    pub agent: Uuid,
    /// When it beat.
    pub at: DateTime<Utc>,
}

fn parse_beat(entry: &kv::Entry) -> Option<Beat> {
    if entry.operation != kv::Operation::Put {
        return None;
    }
    let agent = Uuid::parse_str(&entry.key).ok()?;
    let millis: i64 = std::str::from_utf8(&entry.value).ok()?.parse().ok()?;
    Some(Beat {
        agent,
        at: DateTime::from_timestamp_millis(millis)?,
    })
}

impl Heartbeats {
    /// Opens (or creates) the bucket. Entries older than `keep` vanish: long after any timeout.
    pub async fn open(log: &EventLog, keep: Duration) -> Result<Self, LogError> {
        let bucket = Bucket::open(
            log,
            log.namespace().heartbeats(),
            "Hive agents' last heartbeats",
            keep,
            jetstream::stream::StorageType::Memory,
        )
        .await?;
        Ok(Self { bucket })
    }

    /// Records that `agent` is alive at `at`.
    pub async fn beat(&self, agent: Uuid, at: DateTime<Utc>) -> Result<(), LogError> {
        let value = Bytes::from(at.timestamp_millis().to_string());
        self.bucket
            .run(|store| {
                let value = value.clone();
                async move {
                    store
                        .put(agent.to_string(), value)
                        .await
                        .map_err(|e| LogError::new("record a heartbeat", e))
                }
            })
            .await?;
        Ok(())
    }

    /// The last heartbeat of `agent`, if any.
    pub async fn last(&self, agent: Uuid) -> Result<Option<DateTime<Utc>>, LogError> {
        let entry = self
            .bucket
            .run(|store| async move {
                store
                    .entry(agent.to_string())
                    .await
                    .map_err(|e| LogError::new("read a heartbeat", e))
            })
            .await?;
        Ok(entry.as_ref().and_then(parse_beat).map(|b| b.at))
    }

    /// Every heartbeat: the current ones first, then each new one as it comes.
    pub async fn watch(&self) -> Result<impl Stream<Item = Beat> + Send + use<>, LogError> {
        let watch = self
            .bucket
            .run(|store| async move {
                store
                    // `watch_all` would deliver only what is written after it starts.
                    .watch_with_history(">")
                    .await
                    .map_err(|e| LogError::new("watch heartbeats", e))
            })
            .await?;
        Ok(watch.filter_map(|entry| async move { entry.ok().as_ref().and_then(parse_beat) }))
    }

    /// The last heartbeats of `agents` (those that have one), read a few at a time.
    pub async fn of(
        &self,
        agents: impl IntoIterator<Item = Uuid>,
    ) -> Result<HashMap<Uuid, DateTime<Utc>>, LogError> {
        /// Reads in flight at once: a page of agents costs a few round trips, not one per agent.
        const AT_ONCE: usize = 32;
        let mut beats = HashMap::new();
        let mut reads = futures::stream::iter(agents)
            .map(|agent| async move { (agent, self.last(agent).await) })
            .buffer_unordered(AT_ONCE);
        while let Some((agent, last)) = reads.next().await {
            if let Some(at) = last? {
                beats.insert(agent, at);
            }
        }
        Ok(beats)
    }

    /// Each heartbeat written from now on, as it comes (none of those before).
    pub async fn follow(&self) -> Result<impl Stream<Item = Beat> + Send + use<>, LogError> {
        let watch = self
            .bucket
            .run(|store| async move {
                store
                    .watch_all()
                    .await
                    .map_err(|e| LogError::new("follow heartbeats", e))
            })
            .await?;
        Ok(watch.filter_map(|entry| async move { entry.ok().as_ref().and_then(parse_beat) }))
    }

    /// The current heartbeats.
    pub async fn all(&self) -> Result<HashMap<Uuid, DateTime<Utc>>, LogError> {
        let mut keys = self
            .bucket
            .run(|store| async move {
                store
                    .keys()
                    .await
                    .map_err(|e| LogError::new("list heartbeats", e))
            })
            .await?;
        let mut beats = HashMap::new();
        while let Some(key) = keys.next().await {
            let Ok(key) = key else { continue };
            if let Ok(agent) = Uuid::parse_str(&key)
                && let Some(at) = self.last(agent).await?
            {
                beats.insert(agent, at);
            }
        }
        Ok(beats)
    }
}
