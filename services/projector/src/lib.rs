//! The projector: folds the event log into the Postgres read models.
//!
//! It reads the stream in order from its checkpoint ([`hive_eventlog::EventLog::read_from`]), gathers what
//! is ready into a batch (up to [`ProjectorConfig::batch_max`] events; one event when the log is quiet, so
//! latency stays low), and commits the batch's rows, status counts, dead letters and the new checkpoint
//! in one transaction ([`batch`]). After each commit it announces the checkpoint on a watch channel and on
//! NATS, which is what read-your-writes waits for. An event it cannot apply (bad bytes, unknown type,
//! impossible transition) becomes a dead letter and the projector moves on.

pub mod batch;
pub mod fold;
pub mod rebuild;
pub mod rows;
pub mod status;
pub mod verify;

use std::time::Duration;

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use hive_eventlog::{EventLog, LogError, RawEvent};
use sea_orm::{DatabaseConnection, DbErr, TransactionTrait};
use thiserror::Error;
use tokio::sync::watch;

pub use batch::BatchOutcome;

/// How long a projector with a backlog waits to fill a batch.
const FILL_WAIT: Duration = Duration::from_millis(20);

/// The read-model projection's name in `projection_checkpoints` and `dead_letters`.
pub const READ_MODELS: &str = "read_models";

/// A place to stop as a crash would, for fault-injection tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashPoint {
    /// Inside the n-th batch's transaction, after its rows are written, before the commit.
    BeforeCommit(u32),
    /// Right after the n-th batch's commit, before it is announced.
    AfterCommit(u32),
}

/// How the projector runs.
#[derive(Clone, Debug)]
pub struct ProjectorConfig {
    /// The projection's name.
    pub name: String,
    /// Most events in one transaction.
    pub batch_max: usize,
    /// Stop as a crash would at this point (tests only).
    pub crash_at: Option<CrashPoint>,
    /// With no checkpoint yet and events in the log (a new or lost read-model database), rebuild in bulk
    /// ([`rebuild`]) before following the log, instead of applying the whole log batch by batch.
    pub rebuild_when_empty: bool,
}

impl Default for ProjectorConfig {
    fn default() -> Self {
        Self {
            name: READ_MODELS.into(),
            batch_max: 2_000,
            crash_at: None,
            rebuild_when_empty: true,
        }
    }
}

/// Why the projector stopped.
#[derive(Debug, Error)]
pub enum ProjectorError {
    /// The database failed.
    #[error("read-model database: {0}")]
    Database(#[from] DbErr),
    /// The log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A configured crash point was reached.
    #[error("crash point {0:?} reached")]
    Crashed(CrashPoint),
}

/// The projector of one projection.
pub struct Projector {
    db: DatabaseConnection,
    log: EventLog,
    config: ProjectorConfig,
    checkpoint: watch::Sender<u64>,
}

impl Projector {
    /// A projector writing to `db` from `log`.
    pub fn new(db: DatabaseConnection, log: EventLog, config: ProjectorConfig) -> Self {
        Self {
            db,
            log,
            config,
            checkpoint: watch::Sender::new(0),
        }
    }

    /// The committed checkpoint, updated after every commit.
    pub fn checkpoint(&self) -> watch::Receiver<u64> {
        self.checkpoint.subscribe()
    }

    /// Runs until `shutdown` resolves (then returns `Ok`) or a failure stops it. Transient failures of
    /// the log or the database are retried with back-off; they never skip an event.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ProjectorError> {
        let mut shutdown = std::pin::pin!(shutdown.fuse());
        // The one projector folds (the alert on no projector leading reads this).
        metrics::gauge!("hive_projector_leading").set(1.0);
        let mut batches = 0u32;
        let mut backoff = Duration::from_millis(50);
        loop {
            let result = tokio::select! {
                () = &mut shutdown => return Ok(()),
                result = self.follow(&mut batches) => result,
            };
            match result {
                Err(ProjectorError::Crashed(point)) => return Err(ProjectorError::Crashed(point)),
                Err(e) => {
                    tracing::warn!(error = %e, ?backoff, "projector interrupted; resuming from the checkpoint");
                    tokio::select! {
                        () = &mut shutdown => return Ok(()),
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Ok(()) => backoff = Duration::from_millis(50),
            }
        }
    }

    /// Reads from the committed checkpoint on and projects until the log or the database fails.
    async fn follow(&self, batches: &mut u32) -> Result<(), ProjectorError> {
        if self.config.rebuild_when_empty {
            let options = rebuild::RebuildOptions {
                only_if_empty: true,
                ..Default::default()
            };
            rebuild::rebuild(&self.db, &self.log, &self.config.name, options, |_| {}).await?;
        }
        let start = {
            let txn = self.db.begin().await?;
            let seq = batch::lock_checkpoint(&txn, &self.config.name).await?;
            txn.commit().await?;
            seq
        };
        self.checkpoint.send_replace(start);
        tracing::info!(projection = %self.config.name, from = start + 1, "projecting");
        let mut events = Box::pin(self.log.read_from(start + 1).await?);
        let mut batch: Vec<RawEvent> = Vec::with_capacity(self.config.batch_max);
        loop {
            let Some(first) = events.next().await else {
                return Err(LogError::new("read the log", "the reader ended").into());
            };
            batch.push(first?);
            // Take what is already here, without waiting: a quiet log gives one-event batches (low
            // latency), a busy one gives large batches (high throughput).
            while batch.len() < self.config.batch_max {
                match events.next().now_or_never() {
                    Some(Some(event)) => batch.push(event?),
                    _ => break,
                }
            }
            // A backlog (later events already stored, just not delivered yet): wait a moment for a
            // fuller batch, since each transaction has a fixed cost (its fsync'd commit). Caught up,
            // this never waits.
            let deadline = tokio::time::Instant::now() + FILL_WAIT;
            while batch.len() < self.config.batch_max && batch.last().is_some_and(|e| e.pending > 0)
            {
                match tokio::time::timeout_at(deadline, events.next()).await {
                    Ok(Some(event)) => batch.push(event?),
                    _ => break,
                }
            }
            *batches += 1;
            self.commit(&batch, *batches).await?;
            batch.clear();
        }
    }

    async fn commit(&self, events: &[RawEvent], n: u32) -> Result<(), ProjectorError> {
        let txn = self.db.begin().await?;
        let outcome =
            batch::apply_batch(&txn, &self.config.name, self.log.subjects(), events).await?;
        if self.config.crash_at == Some(CrashPoint::BeforeCommit(n)) {
            return Err(ProjectorError::Crashed(CrashPoint::BeforeCommit(n)));
        }
        txn.commit().await?;
        if self.config.crash_at == Some(CrashPoint::AfterCommit(n)) {
            return Err(ProjectorError::Crashed(CrashPoint::AfterCommit(n)));
        }
        tracing::debug!(?outcome, "batch committed");
        metrics::histogram!("hive_projector_batch_size").record(events.len() as f64);
        metrics::counter!("hive_projector_events_total").increment(outcome.applied as u64);
        metrics::counter!("hive_dead_letters_total").increment(outcome.dead_lettered as u64);
        metrics::gauge!("hive_projector_checkpoint").set(outcome.checkpoint as f64);
        self.checkpoint.send_replace(outcome.checkpoint);
        let notice = self.log.namespace().projection_notices(&self.config.name);
        if let Err(e) = self
            .log
            .notify(notice, Bytes::from(outcome.checkpoint.to_string()))
            .await
        {
            // Readers also refresh from the database; a lost notice only delays them.
            tracing::debug!(error = %e, "could not announce the checkpoint");
        }
        Ok(())
    }
}
