//! The projector: folds the event log into the Postgres read models.
//!
//! It reads the stream in order from its checkpoint ([`hive_eventlog::EventLog::read_from`]), gathers what
//! is ready into a batch (up to [`ProjectorConfig::batch_max`] events; one event when the log is quiet, so
//! latency stays low), and commits the batch's rows, status counts, dead letters and the new checkpoint
//! in one transaction ([`batch`]). After each commit it announces the checkpoint on a watch channel and on
//! NATS, which is what read-your-writes waits for. An event it cannot apply (bad bytes, unknown type,
//! impossible transition) becomes a dead letter and the projector moves on.
//!
//! With [`ProjectorConfig::leader_ttl`] set (as `hive` runs it), only the holder of the projector's lease
//! (a key in JetStream KV, [`hive_eventlog::Lease`]) folds; other instances stand by and take over from
//! the checkpoint once the lease lapses. Two instances folding at once (a deposed leader's last batch)
//! still project each event once: every batch locks the checkpoint row and writes the new checkpoint
//! only over the one it read ([`batch`]). The leader also answers an operator's request to fold a dead
//! letter's aggregate again ([`refold`]), so that the read models have one writer.

pub mod agent_tasks;
pub mod batch;
pub mod fold;
pub mod rebuild;
pub mod refold;
pub mod rows;
pub mod status;
pub mod verify;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use hive_eventlog::{EventLog, LeaseOf, LogError, RawEvent, leadership};
use sea_orm::{DatabaseConnection, DbErr, TransactionTrait};
use thiserror::Error;
use tokio::sync::watch;

pub use batch::BatchOutcome;

/// How long a projector with a backlog waits to fill a batch.
const FILL_WAIT: Duration = Duration::from_millis(20);

/// The read-model projection's name in `projection_checkpoints` and `dead_letters`.
pub const READ_MODELS: &str = "read_models";

/// The settings of each connection the projector writes through (its pool's, set as a connection
/// opens; without them it projects the same, slower):
/// - `synchronous_commit = off`: a commit does not wait for its WAL to reach the disk. The rows are
///   derived from the log, and the checkpoint commits with them, so a crash of PostgreSQL that loses
///   the last batches takes the checkpoint back with them, and they are applied again (as after a
///   failover to a replica that lagged). The wait (a WAL fsync a batch) was most of an event's way
///   into the read models when the projector keeps up.
/// - `enable_seqscan = off`: a batch looks its rows up by id; with the table's statistics behind (a
///   young table, or a burst of new rows before autovacuum analyzes them) the planner took a
///   sequential scan of the whole table for every batch: under 2,000 new tasks a second on a fresh
///   hive that was a third of the machine's CPU, growing with the table. Nothing the projector asks
///   for needs one.
///
/// Set once a connection rather than by `SET LOCAL` in each batch: a round trip fewer of a batch's
/// ~10. They hold for everything the projector writes through the pool (a re-folded dead letter's
/// rows, the rebuild of an empty database at start): all of it derived from the log. (A pooler in
/// transaction mode, such as PgBouncer, refuses startup options: connect the projector directly.)
pub const SESSION_SETTINGS: [(&str, &str); 2] =
    [("synchronous_commit", "off"), ("enable_seqscan", "off")];

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
    /// Fold only while holding the projector's lease, which lasts this long unrenewed (a standby takes
    /// over within about this); `None`: fold at once, with no lease (one instance, or a test).
    pub leader_ttl: Option<Duration>,
    /// This instance's name in the lease.
    pub instance: String,
}

impl Default for ProjectorConfig {
    fn default() -> Self {
        Self {
            name: READ_MODELS.into(),
            batch_max: 2_000,
            crash_at: None,
            rebuild_when_empty: true,
            leader_ttl: None,
            instance: format!(
                "projector-{}-{}",
                std::process::id(),
                uuid::Uuid::new_v4().simple()
            ),
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
    leading: watch::Sender<bool>,
    /// Batches committed so far (a crash point counts them).
    batches: AtomicU32,
}

impl Projector {
    /// A projector writing to `db` (a pool whose connections carry [`SESSION_SETTINGS`]) from `log`.
    pub fn new(db: DatabaseConnection, log: EventLog, config: ProjectorConfig) -> Self {
        Self {
            db,
            log,
            config,
            checkpoint: watch::Sender::new(0),
            leading: watch::Sender::new(false),
            batches: AtomicU32::new(0),
        }
    }

    /// True while this instance folds (it holds the lease, or runs without one).
    pub fn leading(&self) -> watch::Receiver<bool> {
        self.leading.subscribe()
    }

    /// The committed checkpoint, updated after every commit.
    pub fn checkpoint(&self) -> watch::Receiver<u64> {
        self.checkpoint.subscribe()
    }

    /// Runs until `shutdown` resolves (then returns `Ok`) or a failure stops it. Transient failures of
    /// the log or the database are retried with back-off; they never skip an event. With a lease
    /// ([`ProjectorConfig::leader_ttl`]), it folds only while it holds it, and waits for it otherwise.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ProjectorError> {
        let Some(ttl) = self.config.leader_ttl else {
            self.set_leading(true);
            let result = tokio::select! {
                () = shutdown => Ok(()),
                result = self.project() => result,
            };
            self.set_leading(false);
            return result;
        };
        // Projects while the lease holds: a batch in flight when it is lost is rolled back.
        let leading = |leading| self.set_leading(leading);
        let instance = &self.config.instance;
        leadership::lead(
            LeaseOf::Projector,
            &self.log,
            instance,
            ttl,
            shutdown,
            leading,
            || self.project(),
        )
        .await
    }

    fn set_leading(&self, leading: bool) {
        self.leading.send_replace(leading);
        metrics::gauge!("hive_projector_leading").set(if leading { 1.0 } else { 0.0 });
    }

    /// Projects from the checkpoint on, resuming from it after each transient failure, and answers
    /// re-fold requests meanwhile ([`refold::answer`]); returns only when a crash point is reached.
    async fn project(&self) -> Result<(), ProjectorError> {
        tokio::select! {
            never = refold::answer(&self.db, &self.log, &self.config.name) => match never {},
            result = self.project_log() => result,
        }
    }

    async fn project_log(&self) -> Result<(), ProjectorError> {
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.follow().await {
                Err(ProjectorError::Crashed(point)) => return Err(ProjectorError::Crashed(point)),
                Err(e) => {
                    tracing::warn!(error = %e, ?backoff, "projector interrupted; resuming from the checkpoint");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Ok(()) => backoff = Duration::from_millis(50),
            }
        }
    }

    /// Reads from the committed checkpoint on and projects until the log or the database fails.
    async fn follow(&self) -> Result<(), ProjectorError> {
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
            let batches = self.batches.fetch_add(1, Ordering::Relaxed) + 1;
            self.commit(&batch, batches).await?;
            batch.clear();
        }
    }

    /// Commits `events` as one batch. When the database refuses the batch for the data it was given
    /// (a well-formed event the domain folds but a column cannot hold, such as a task type too long
    /// for its index), the same batch would be refused on every retry: the events are committed one
    /// at a time instead, and each one refused alone becomes a dead letter, so the projection goes
    /// on. Even when the fault is the database's (a refusal of every event): dead letters are
    /// recovered by retrying them or by a rebuild once it is mended, while a projector stalled on
    /// events nobody can change would never move again.
    async fn commit(&self, events: &[RawEvent], n: u32) -> Result<(), ProjectorError> {
        let refusal = match self.commit_batch(events, n).await {
            Err(ProjectorError::Database(e)) if batch::refused_data(&e) => e,
            other => return other,
        };
        tracing::warn!(error = %refusal, events = events.len(), "the read models' database refused a batch: committing its events one at a time");
        for event in events {
            match self.commit_batch(std::slice::from_ref(event), n).await {
                Err(ProjectorError::Database(e)) if batch::refused_data(&e) => {
                    self.dead_letter_refused(event, &e).await?;
                }
                other => other?,
            }
        }
        Ok(())
    }

    /// Records `event`, which the database refused (`why`), as a dead letter, and moves the
    /// checkpoint past it, in one transaction.
    async fn dead_letter_refused(
        &self,
        event: &RawEvent,
        why: &DbErr,
    ) -> Result<(), ProjectorError> {
        let reason = format!("the read models' database refused it: {why}");
        tracing::warn!(seq = event.seq, subject = %event.subject, %reason, "dead letter");
        let txn = self.db.begin().await?;
        let subjects = self.log.subjects();
        let outcome =
            batch::dead_letter_refused(&txn, &self.config.name, subjects, event, reason).await?;
        txn.commit().await?;
        metrics::counter!("hive_dead_letters_total").increment(outcome.dead_lettered as u64);
        self.announce(outcome).await;
        Ok(())
    }

    async fn commit_batch(&self, events: &[RawEvent], n: u32) -> Result<(), ProjectorError> {
        // Its connections carry [`SESSION_SETTINGS`] (set as they open, not a round trip a batch).
        let txn = self.db.begin().await?;
        // Under a store sync (a nats-server that fsyncs no write itself), the batch's events are on
        // disk before its rows commit, the sync running while the rows are written: a power cut
        // never leaves the read models ahead of the log.
        let (outcome, on_disk) = tokio::join!(
            batch::apply_batch(&txn, &self.config.name, self.log.subjects(), events),
            self.log.synced()
        );
        let outcome = outcome?;
        on_disk?;
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
        self.announce(outcome).await;
        Ok(())
    }

    /// Tells the readers of the checkpoint (this process's, and others' through the log's notices)
    /// that `outcome` committed.
    async fn announce(&self, outcome: batch::BatchOutcome) {
        metrics::gauge!("hive_projector_checkpoint").set(outcome.checkpoint as f64);
        let moved = self.checkpoint.send_if_modified(|seq| {
            let newer = outcome.checkpoint > *seq;
            *seq = (*seq).max(outcome.checkpoint);
            newer
        });
        if outcome.applied + outcome.dead_lettered == 0 || !moved {
            // Every event was at or below the checkpoint (another instance projected them): nothing
            // moved, so nothing to announce.
            return;
        }
        let notice = self.log.namespace().projection_notices(&self.config.name);
        if let Err(e) = self
            .log
            .notify(notice, Bytes::from(outcome.checkpoint.to_string()))
            .await
        {
            // Readers also refresh from the database; a lost notice only delays them.
            tracing::debug!(error = %e, "could not announce the checkpoint");
        }
    }
}
