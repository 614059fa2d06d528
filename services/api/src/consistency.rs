//! Read-your-writes. Every command answers with its event's `seq`; a read with `Hive-Min-Seq: N` waits
//! (bounded) until the read models have reached N, and every read answers `Hive-Projection-Seq`, the
//! checkpoint its data reflects at least.
//!
//! The checkpoint is followed without polling the database per request: the projector announces each
//! commit on NATS, and a slow refresh from `projection_checkpoints` covers a lost notice.
//!
//! The checkpoint is always the one the API's own connection reads: on a PostgreSQL replica
//! (`HIVE_API_DATABASE_URL` naming a standby), a notice says only that the primary has committed
//! that far, which the replica may not have replayed yet. So on a replica a notice is a hint: the
//! checkpoint is read again through the API's connection, and again every [`REPLICA_POLL`] while the
//! replica is behind what was announced; `Hive-Min-Seq` waits for the replica, never for the primary.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use hive_eventlog::EventLog;
use hive_schema::projection_checkpoints;
use sea_orm::{DatabaseConnection, EntityTrait};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::AppState;
use crate::error::{ApiError, Code};

/// The request header naming the sequence a read must reflect.
pub const MIN_SEQ: &str = "hive-min-seq";
/// The response header naming the sequence a read reflects.
pub const PROJECTION_SEQ: &str = "hive-projection-seq";

/// How often the checkpoint is read again from a replica that has not yet replayed an announced one.
pub const REPLICA_POLL: Duration = Duration::from_millis(5);

/// Background tasks that end with their owner.
pub(crate) struct Tasks(pub(crate) Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// The projection's checkpoint and the log's head, as this API process knows them.
#[derive(Clone)]
pub struct Progress {
    checkpoint: watch::Receiver<u64>,
    /// When the checkpoint last moved.
    moved_at: Arc<std::sync::Mutex<Instant>>,
    head: Arc<AtomicU64>,
    log: EventLog,
    /// Whether notices are hints to read the checkpoint again (a replica) rather than the checkpoint.
    on_replica: bool,
    _tasks: Arc<Tasks>,
}

/// Whether `db` is a physical replica: a standby replays the primary's WAL and is in recovery.
pub async fn is_replica(db: &DatabaseConnection) -> Result<bool, sea_orm::DbErr> {
    use sea_orm::{ConnectionTrait, Statement};
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT pg_is_in_recovery() AS replica",
        ))
        .await?;
    Ok(match row {
        Some(row) => row.try_get::<bool>("", "replica")?,
        None => false,
    })
}

async fn read_checkpoint(db: &DatabaseConnection, name: &str) -> Result<u64, sea_orm::DbErr> {
    Ok(projection_checkpoints::Entity::find_by_id(name.to_owned())
        .one(db)
        .await?
        .map_or(0, |r| u64::try_from(r.seq).unwrap_or(0)))
}

impl Progress {
    /// Follows projection `name`'s checkpoint in `db`, as announced on NATS by its projector. With
    /// `on_replica` (`None`: asked of `db`, [`is_replica`]), an announced checkpoint is believed only
    /// once `db` has it.
    pub async fn follow(
        db: DatabaseConnection,
        log: EventLog,
        name: &str,
        refresh: Duration,
        on_replica: Option<bool>,
    ) -> Result<Self, ApiError> {
        let on_replica = match on_replica {
            Some(told) => told,
            None => is_replica(&db).await?,
        };
        if on_replica {
            tracing::info!("the read models are read from a replica: checkpoints are read from it");
        }
        let start = read_checkpoint(&db, name).await?;
        let tx = Arc::new(watch::Sender::new(start));
        let head = Arc::new(AtomicU64::new(log.last_seq().await.unwrap_or(start)));
        let moved_at = Arc::new(std::sync::Mutex::new(Instant::now()));
        let advance = {
            let (tx, moved_at) = (tx.clone(), moved_at.clone());
            move |seq: u64| {
                let moved = tx.send_if_modified(|current| {
                    let newer = seq > *current;
                    if newer {
                        *current = seq;
                    }
                    newer
                });
                if moved && let Ok(mut at) = moved_at.lock() {
                    *at = Instant::now();
                }
            }
        };
        let mut notices = log
            .client()
            .subscribe(log.namespace().projection_notices(name))
            .await
            .map_err(|e| ApiError::unavailable("the event log", e))?;
        // On a replica, what was announced (the primary's checkpoint), for the confirmer to reach.
        let announced = Arc::new(watch::Sender::new(start));
        let on_notice = advance.clone();
        let hint = announced.clone();
        let listen = tokio::spawn(async move {
            while let Some(message) = notices.next().await {
                if let Some(seq) = std::str::from_utf8(&message.payload)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                {
                    if on_replica {
                        hint.send_if_modified(|known| {
                            let newer = seq > *known;
                            *known = (*known).max(seq);
                            newer
                        });
                    } else {
                        on_notice(seq);
                    }
                }
            }
        });
        let mut tasks = vec![listen];
        if on_replica {
            let (db, name, advance) = (db.clone(), name.to_owned(), advance.clone());
            let (mut announced, confirmed) = (announced.subscribe(), tx.subscribe());
            tasks.push(tokio::spawn(async move {
                loop {
                    let target = *announced.borrow_and_update();
                    if *confirmed.borrow() >= target {
                        if announced.changed().await.is_err() {
                            return;
                        }
                        continue;
                    }
                    match read_checkpoint(&db, &name).await {
                        Ok(seq) => advance(seq),
                        Err(e) => {
                            tracing::debug!(error = %e, "could not read the replica's checkpoint")
                        }
                    }
                    if *confirmed.borrow() < target {
                        // The replica has not replayed it yet: it will soon, and tells no one.
                        tokio::time::sleep(REPLICA_POLL).await;
                    }
                }
            }));
        }
        let (refresh_log, refresh_head, name) = (log.clone(), head.clone(), name.to_owned());
        let (refresh_moved, refresh_checkpoint) = (moved_at.clone(), tx.subscribe());
        let refresher = tokio::spawn(async move {
            let mut tick = tokio::time::interval(refresh);
            loop {
                tick.tick().await;
                if let Ok(seq) = read_checkpoint(&db, &name).await {
                    advance(seq);
                }
                if let Ok(seq) = refresh_log.last_seq().await {
                    bump_head(
                        &refresh_head,
                        &refresh_moved,
                        *refresh_checkpoint.borrow(),
                        seq,
                    );
                }
            }
        });
        Ok(Self {
            checkpoint: tx.subscribe(),
            moved_at,
            head,
            log,
            on_replica,
            _tasks: Arc::new(Tasks({
                tasks.push(refresher);
                tasks
            })),
        })
    }

    /// Whether the read models are read from a replica, whose own checkpoint is followed rather than
    /// the projector's notices.
    pub fn on_replica(&self) -> bool {
        self.on_replica
    }

    /// A receiver that sees each new checkpoint.
    pub fn checkpoint_watch(&self) -> watch::Receiver<u64> {
        self.checkpoint.clone()
    }

    /// The checkpoint the read models have reached.
    pub fn checkpoint(&self) -> u64 {
        *self.checkpoint.borrow()
    }

    /// How long the checkpoint has stood still.
    pub fn still_for(&self) -> Duration {
        self.moved_at
            .lock()
            .map_or(Duration::ZERO, |at| at.elapsed())
    }

    /// The log's last sequence as last seen (never below the checkpoint).
    pub fn head(&self) -> u64 {
        self.head.load(Ordering::Relaxed).max(self.checkpoint())
    }

    /// Notes an appended event's sequence.
    pub fn saw_append(&self, seq: u64) {
        bump_head(&self.head, &self.moved_at, self.checkpoint(), seq);
    }

    /// The log's last sequence, asked of the server now.
    pub async fn head_now(&self) -> Result<u64, hive_eventlog::LogError> {
        let seq = self.log.last_seq().await?;
        bump_head(&self.head, &self.moved_at, self.checkpoint(), seq);
        Ok(seq)
    }

    /// Waits until the checkpoint reaches `seq`, at most `timeout`. True when it did.
    pub async fn wait_for(&self, seq: u64, timeout: Duration) -> bool {
        let mut rx = self.checkpoint.clone();
        matches!(
            tokio::time::timeout(timeout, rx.wait_for(|c| *c >= seq)).await,
            Ok(Ok(_))
        )
    }
}

/// Raises the known head to `seq`. When that puts the projection behind after it had caught up, the
/// stall clock starts now: standing still with nothing to do is not a stall.
fn bump_head(head: &AtomicU64, moved_at: &std::sync::Mutex<Instant>, checkpoint: u64, seq: u64) {
    let before = head.fetch_max(seq, Ordering::Relaxed);
    if seq > before
        && before <= checkpoint
        && let Ok(mut at) = moved_at.lock()
    {
        *at = Instant::now();
    }
}

/// Middleware on reads: honours `Hive-Min-Seq` and stamps `Hive-Projection-Seq`.
pub async fn read_your_writes(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return next.run(request).await;
    }
    if let Some(value) = request.headers().get(MIN_SEQ) {
        let value = value.to_str().unwrap_or_default().trim();
        // `head`: whatever the log holds now (a client that knows no sequence, such as a restarted
        // agent runtime asking what its previous process held).
        let min = if value == "head" {
            match state.progress.head_now().await {
                Ok(head) => Some(head),
                Err(e) => return ApiError::unavailable("the event log", e).into_response(),
            }
        } else {
            // Digits only, as documented (Rust's parse also takes a leading `+`).
            value
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| value.parse::<u64>().ok())
                .flatten()
        };
        let Some(min) = min else {
            return ApiError::new(
                Code::BadRequest,
                "Hive-Min-Seq must be a whole number or `head`",
            )
            .into_response();
        };
        if let Err(e) = wait(&state, min).await {
            return e.into_response();
        }
    }
    // Read before the handler runs: a batch committed meanwhile may or may not be in the answer, so
    // only the checkpoint seen before is one the data reflects at least.
    let reflected = state.progress.checkpoint();
    let mut response = next.run(request).await;
    response
        .headers_mut()
        .insert(PROJECTION_SEQ, HeaderValue::from(reflected));
    response
}

async fn wait(state: &AppState, min: u64) -> Result<(), ApiError> {
    let progress = &state.progress;
    if progress.checkpoint() >= min {
        return Ok(());
    }
    if min > progress.head() && min > progress.head_now().await? {
        return Err(ApiError::new(
            Code::BadRequest,
            format!(
                "Hive-Min-Seq {min} is beyond the log's last event {}",
                progress.head()
            ),
        ));
    }
    if progress.wait_for(min, state.config.min_seq_timeout).await {
        Ok(())
    } else {
        Err(ApiError::new(
            Code::ProjectionLagging,
            format!(
                "the read models reached {} but not {min} within {:?}; retry",
                progress.checkpoint(),
                state.config.min_seq_timeout
            ),
        ))
    }
}
