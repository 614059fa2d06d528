//! Snapshots of aggregates with long histories: a command's cost follows the events since the last
//! snapshot, not the whole history.
//!
//! A snapshot is derived data, never trusted over the log. It lives in KV bucket `<ns>_snapshots`
//! (on disk, the stream's replicas), one per aggregate and state, under key `<kind>.<id>` (or
//! `<kind>.<id>.<state>` for a type that folds a part of its aggregate, [`Aggregate::STATE`]), as
//! JSON (`Record`): the build's [`FOLD_VERSION`], the aggregate, the sequence of the last event it
//! covers with that event's subject and the SHA-256 of its bytes, the folded state, and fingerprints
//! of the `Nats-Msg-Id`s of the events it covers (`Keys`).
//!
//! The command path ([`crate::command`]) reads it with one get (beside the history's first event),
//! and trusts it only if it decodes, was folded by this build's fold version, names the aggregate
//! asked for, and the log still holds, at its sequence, the very event it was folded up to (one direct
//! get, which also starts the tail): a log re-created, or restored from another history, cannot
//! mislead it. Anything else is ignored (logged, counted) and the aggregate folded from its first
//! event. A load that folded more than [`SNAPSHOT_AFTER`] events past its snapshot saves a new one in a
//! task of its own (write-behind): the command neither waits for it nor fails with it. A history that
//! holds an event the fold refuses never gets a snapshot past it: the load stops there with an error.
//!
//! Long because saving, reading and trusting a snapshot (the digest, the fold version, the keys'
//! fingerprints) are one format; the tests are in a file of their own.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use hive_events::aggregate::{Aggregate, AggregateKind, FOLD_VERSION};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use thiserror::Error;
use uuid::Uuid;

use crate::kv::Bucket;
use crate::log::{EventLog, LogError, RawEvent};

/// How many events a load may fold past its snapshot (or from the start, without one) before it
/// saves a new one. Each of those events costs every command a direct get (a round trip), while a
/// snapshot costs one put per this many commands, so it is kept small: a command reads 32 events
/// past its snapshot on average.
pub const SNAPSHOT_AFTER: usize = 64;

/// Room left beside a value for the headers and subject of the message that stores it.
const HEADROOM: usize = 4 * 1024;

/// The snapshot bucket, as the command path uses it. Cheap to clone.
#[derive(Clone)]
pub struct Snapshots {
    bucket: Bucket,
    after: usize,
    max_bytes: usize,
}

/// What the bucket holds under one key: the value, if any, and the revision to replace.
#[derive(Debug, Default)]
pub(crate) struct Stored {
    /// The key's last revision (`None`: never written).
    pub(crate) revision: Option<u64>,
    /// Its value (`None`: none, or deleted).
    pub(crate) value: Option<Bytes>,
}

impl Snapshots {
    /// Opens (or creates) the bucket beside `log`'s stream.
    pub async fn open(log: &EventLog) -> Result<Self, LogError> {
        let bucket = Bucket::open(
            log,
            log.namespace().aggregate_snapshots(),
            "Hive aggregates' states at a sequence (derived from the log, never trusted over it)",
            Duration::ZERO,
            jetstream::stream::StorageType::File,
        )
        .await?;
        let max_payload = log.client().server_info().max_payload;
        Ok(Self {
            bucket,
            after: SNAPSHOT_AFTER,
            max_bytes: max_payload.saturating_sub(HEADROOM),
        })
    }

    /// The same, saving a snapshot once a load folded more than `events` past the last one.
    pub fn after(mut self, events: usize) -> Self {
        self.after = events;
        self
    }

    /// The same, saving no snapshot larger than `bytes` (by default, the server's largest message
    /// less room for its headers).
    pub fn max_bytes(mut self, bytes: usize) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// How many events a load may fold past its snapshot before it saves a new one.
    pub fn events_between(&self) -> usize {
        self.after
    }

    /// What the bucket holds for `A`'s aggregate `id`. A bucket that does not answer is logged and
    /// counted, and read as empty: the aggregate is then folded from its first event.
    pub(crate) async fn read<A: Aggregate>(&self, id: Uuid) -> Stored {
        let key = key::<A>(id);
        let entry = self
            .bucket
            .run(|store| {
                let key = key.clone();
                async move {
                    store
                        .entry(key)
                        .await
                        .map_err(|e| LogError::new("read a snapshot", e))
                }
            })
            .await;
        match entry {
            Ok(Some(entry)) => Stored {
                revision: Some(entry.revision),
                value: (entry.operation == kv::Operation::Put).then_some(entry.value),
            },
            Ok(None) => Stored::default(),
            Err(e) => {
                ignored(A::KIND, "unreadable");
                tracing::warn!(error = %e, %key, "could not read a snapshot; folding the whole history");
                Stored::default()
            }
        }
    }

    /// Saves `snapshot` in a task of its own, in place of the key's `revision` (`None`: never
    /// written). A snapshot another process saved meanwhile is kept, and one too large for the bucket
    /// is not saved. Never fails: a failure is logged and counted.
    pub(crate) fn save_behind(&self, kind: AggregateKind, revision: Option<u64>, snapshot: Record) {
        let this = self.clone();
        tokio::spawn(async move {
            let key = snapshot.key();
            let unsaved = |reason: &'static str| {
                metrics::counter!("hive_snapshots_unsaved_total", "aggregate" => kind.as_str(), "reason" => reason)
                    .increment(1);
            };
            let value = match snapshot.value(this.max_bytes) {
                Ok(value) => value,
                Err(Unsaved::TooLarge(bytes)) => {
                    tracing::debug!(%key, bytes, max = this.max_bytes, seq = snapshot.seq,
                        "a snapshot over the bucket's largest value is not saved: this aggregate's commands fold from the last one saved, or its first event");
                    return unsaved("too_large");
                }
                Err(Unsaved::Encode(e)) => {
                    tracing::warn!(error = %e, %key, "could not encode a snapshot");
                    return unsaved("failed");
                }
            };
            let store = this.bucket.store();
            let saved = match revision {
                Some(revision) => store.update(&key, value, revision).await.map_err(|e| {
                    (
                        e.kind() == kv::UpdateErrorKind::WrongLastRevision,
                        e.to_string(),
                    )
                }),
                None => store.create(&key, value).await.map_err(|e| {
                    (
                        e.kind() == kv::CreateErrorKind::AlreadyExists,
                        e.to_string(),
                    )
                }),
            };
            match saved {
                Ok(_) => {
                    let msg_ids = snapshot.msg_ids.len();
                    tracing::debug!(%key, seq = snapshot.seq, msg_ids, "saved a snapshot");
                    metrics::counter!("hive_snapshots_saved_total", "aggregate" => kind.as_str())
                        .increment(1);
                }
                Err((true, _)) => {
                    tracing::debug!(%key, "another command saved this snapshot first; it is kept");
                    unsaved("raced");
                }
                Err((false, error)) => {
                    tracing::warn!(%error, %key, "could not save a snapshot");
                    unsaved("failed");
                }
            }
        });
    }
}

impl EventLog {
    /// The snapshot `stored` holds of `A`'s aggregate `id` on `subject`, if it decodes and the log
    /// still holds the event it was folded up to; any other is logged, counted and passed over.
    pub(crate) async fn trusted<A: Aggregate>(
        &self,
        stored: &Stored,
        id: Uuid,
        subject: &str,
    ) -> Result<Option<Snapshot<A>>, LogError> {
        let Some(value) = &stored.value else {
            return Ok(None);
        };
        let checked = match Snapshot::<A>::decode(value, id, subject) {
            Ok(snapshot) => {
                let at = self.next_on(subject, snapshot.seq).await?;
                snapshot.check(at.as_ref()).map(|()| snapshot)
            }
            Err(why) => Err(why),
        };
        match checked {
            Ok(snapshot) => Ok(Some(snapshot)),
            Err(why) => {
                ignored(A::KIND, why.reason());
                tracing::debug!(%why, key = key::<A>(id), "a snapshot not used: folding the whole history");
                Ok(None)
            }
        }
    }
}

/// Counts a snapshot that was not used, and why.
pub(crate) fn ignored(kind: AggregateKind, reason: &'static str) {
    metrics::counter!("hive_snapshots_ignored_total", "aggregate" => kind.as_str(), "reason" => reason)
        .increment(1);
}

/// The key of `A`'s snapshot of aggregate `id`: `<kind>.<id>`, or `<kind>.<id>.<state>` for a type
/// that folds a part of its aggregate.
pub fn key<A: Aggregate>(id: Uuid) -> String {
    if A::STATE == A::KIND.as_str() {
        format!("{}.{id}", A::KIND)
    } else {
        format!("{}.{id}.{}", A::KIND, A::STATE)
    }
}

/// A snapshot as stored (JSON).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Record {
    /// The [`FOLD_VERSION`] of the build that folded it: another build's is never used.
    pub(crate) fold_version: u32,
    /// The aggregate's kind.
    pub(crate) kind: AggregateKind,
    /// Which of its kind's states ([`Aggregate::STATE`]).
    pub(crate) folds: String,
    /// The aggregate.
    pub(crate) id: Uuid,
    /// The sequence of the last event it covers.
    pub(crate) seq: u64,
    /// The subject of that event.
    pub(crate) subject: String,
    /// The SHA-256 of that event's bytes, in hex.
    pub(crate) digest: String,
    /// The `Nats-Msg-Id`s of the events it covers.
    pub(crate) msg_ids: Keys,
    /// The state after that event.
    pub(crate) state: Box<RawValue>,
}

impl Record {
    /// The snapshot of `state`, `A`'s aggregate `id` folded up to and including `last`, whose
    /// events (up to `last` included) were appended with the ids `msg_ids` holds.
    pub(crate) fn of<A: Aggregate>(
        id: Uuid,
        state: &A,
        last: &RawEvent,
        msg_ids: Keys,
    ) -> Result<Self, serde_json::Error> {
        Ok(Self {
            fold_version: FOLD_VERSION,
            kind: A::KIND,
            folds: A::STATE.to_owned(),
            id,
            seq: last.seq,
            subject: last.subject.clone(),
            digest: digest(&last.payload),
            msg_ids,
            state: serde_json::value::to_raw_value(state)?,
        })
    }

    /// The bytes it is stored as, unless they are more than `max_bytes`.
    fn value(&self, max_bytes: usize) -> Result<Bytes, Unsaved> {
        let value = serde_json::to_vec(self).map_err(Unsaved::Encode)?;
        if value.len() > max_bytes {
            return Err(Unsaved::TooLarge(value.len()));
        }
        Ok(value.into())
    }

    /// Its key in the bucket.
    fn key(&self) -> String {
        if self.folds == self.kind.as_str() {
            format!("{}.{}", self.kind, self.id)
        } else {
            format!("{}.{}.{}", self.kind, self.id, self.folds)
        }
    }
}

/// Why a snapshot is not stored.
#[derive(Debug)]
enum Unsaved {
    /// Its bytes (this many) are more than the bucket takes.
    TooLarge(usize),
    /// It could not be encoded.
    Encode(serde_json::Error),
}

/// The hex SHA-256 of an event's bytes.
fn digest(payload: &[u8]) -> String {
    hex::encode(Sha256::digest(payload))
}

/// Why a stored snapshot was not used.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub(crate) enum Ignored {
    /// It is no snapshot this build can read.
    #[error("it cannot be read: {0}")]
    Undecodable(String),
    /// Another build folded it, whose folds may differ from this one's.
    #[error("it was folded by fold version {0}, this build folds version {FOLD_VERSION}")]
    FoldVersion(u32),
    /// It is another aggregate's, or another state's.
    #[error("it is the snapshot of another aggregate or state")]
    OtherAggregate,
    /// The log holds no event of the aggregate at its sequence.
    #[error("the log holds no event of this aggregate at seq {0}")]
    NotInLog(u64),
    /// The log holds another event there than the one it was folded up to.
    #[error("the event at seq {0} is not the one it was folded up to")]
    Digest(u64),
}

impl Ignored {
    /// Its label in `hive_snapshots_ignored_total`.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Self::Undecodable(_) => "undecodable",
            Self::FoldVersion(_) => "fold_version",
            Self::OtherAggregate => "other_aggregate",
            Self::NotInLog(_) => "not_in_log",
            Self::Digest(_) => "digest",
        }
    }
}

/// A stored snapshot that decoded, not yet checked against the log.
#[derive(Debug)]
pub(crate) struct Snapshot<A> {
    /// The sequence of the last event it covers.
    pub(crate) seq: u64,
    digest: String,
    /// The state after that event.
    pub(crate) state: A,
    /// The ids of the events it covers.
    pub(crate) msg_ids: Keys,
}

impl<A: Aggregate> Snapshot<A> {
    /// The snapshot in `value`, if it is one of `A`'s aggregate `id`, on `subject`, folded by this
    /// build.
    pub(crate) fn decode(value: &[u8], id: Uuid, subject: &str) -> Result<Self, Ignored> {
        let record: Record =
            serde_json::from_slice(value).map_err(|e| Ignored::Undecodable(e.to_string()))?;
        if record.fold_version != FOLD_VERSION {
            return Err(Ignored::FoldVersion(record.fold_version));
        }
        if record.kind != A::KIND
            || record.folds != A::STATE
            || record.id != id
            || record.subject != subject
        {
            return Err(Ignored::OtherAggregate);
        }
        if record.seq == 0 {
            return Err(Ignored::NotInLog(0));
        }
        let state = serde_json::from_str(record.state.get())
            .map_err(|e| Ignored::Undecodable(format!("its state: {e}")))?;
        Ok(Self {
            seq: record.seq,
            digest: record.digest,
            state,
            msg_ids: record.msg_ids,
        })
    }

    /// Whether `at` — the first event the log holds on the snapshot's subject at or after its
    /// sequence — is the event it was folded up to.
    pub(crate) fn check(&self, at: Option<&RawEvent>) -> Result<(), Ignored> {
        match at {
            Some(event) if event.seq == self.seq => {
                if digest(&event.payload) == self.digest {
                    Ok(())
                } else {
                    Err(Ignored::Digest(self.seq))
                }
            }
            _ => Err(Ignored::NotInLog(self.seq)),
        }
    }
}

mod keys;

pub(crate) use keys::Keys;

#[cfg(test)]
mod tests;
