//! Rebuilding the read models from the log while the live ones keep serving.
//!
//! 1. A shadow schema ([`SHADOW`]) gets the read-model tables, created by the same migrations as the live
//!    ones (so names, indexes and sequences are identical), with its own checkpoint.
//! 2. The log is folded in memory up to the head as it was at the start ([`crate::fold::Folder`]) and
//!    written to the shadow tables in bulk: multi-row inserts, several at once.
//! 3. The shadow catches up with the events appended meanwhile, through the projector's own batch path,
//!    until it is at most [`RebuildOptions::swap_lag`] events behind the head.
//! 4. The swap, in one transaction: lock the live checkpoint table first (the live projector takes it first
//!    in each of its transactions, so neither can wait on the other), then the other live tables; bring the
//!    shadow to the live checkpoint; drop the live tables and move the shadow ones into their place; drop
//!    the shadow schema. Readers wait for the few milliseconds the swap holds its locks and never fail;
//!    Postgres re-plans their prepared statements against the new tables. A live projector that waited on
//!    the lock finds the new checkpoint (at least its own) and skips what the rebuild already applied.
//!
//! One rebuild runs at a time (a Postgres advisory lock held by the shadow's connection).
//!
//! Long because the rebuild is one procedure in stages that hold each other's invariants (the
//! locks, the checkpoints); each stage is a function of its own.
//!
//! Long because the shadow schema's life (create, fill in bulk, catch up, swap) is one procedure
//! with one failure story.

use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use hive_eventlog::{EventLog, RawEvent};
use hive_migrations::MigratorTrait;
use hive_schema::{dead_letters, projection_checkpoints, status_counts};
use sea_orm::sqlx::postgres::PgPoolOptions;
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, DatabaseConnection, EntityTrait, IntoActiveModel, Set,
    SqlxPostgresConnector, TransactionTrait,
};

use crate::ProjectorError;
use crate::batch::{apply_batch, lock_checkpoint, write_checkpoint};
use crate::fold::{DeadLetter, Folded, Folder};

/// The schema a rebuild builds in.
pub const SHADOW: &str = "hive_rebuild";

/// The read-model tables, in the order the swap locks them: the checkpoints first.
pub const TABLES: [&str; 7] = [
    "projection_checkpoints",
    "agents",
    "tasks",
    "projects",
    "status_counts",
    "agent_tasks",
    "dead_letters",
];

/// Rows per INSERT (the widest table has 24 columns; a statement takes at most 65,535 parameters).
const ROWS_PER_INSERT: usize = 1_000;
/// Events per transaction while the shadow catches up.
const CATCH_UP_BATCH: usize = 5_000;
/// The default of [`RebuildOptions::swap_lag`].
pub const SWAP_LAG: u64 = 2_000;
/// Advisory-lock key of a running rebuild.
const REBUILD_LOCK: i64 = 0x4849_5645_5245_4255; // "HIVEREBU"

/// Where a rebuild is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Folding the log in memory: `seq` of `head`.
    Replaying,
    /// Writing the folded rows: `seq` rows of `head`.
    Writing,
    /// Applying what was appended meanwhile: `seq` of `head`.
    CatchingUp,
    /// Swapping the shadow tables in.
    Swapping,
}

/// A progress report.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// The stage.
    pub stage: Stage,
    /// How far it is.
    pub done: u64,
    /// Out of how much.
    pub total: u64,
}

/// What a rebuild did.
#[derive(Clone, Debug, Default)]
pub struct Rebuilt {
    /// The checkpoint the new read models started at.
    pub checkpoint: u64,
    /// Events folded in memory.
    pub replayed: u64,
    /// Events applied while catching up (including during the swap).
    pub caught_up: u64,
    /// Rows written in bulk.
    pub rows: u64,
    /// Dead letters found.
    pub dead_letters: u64,
    /// Time in all.
    pub elapsed: Duration,
    /// Time the swap held the live tables.
    pub swap: Duration,
}

/// How a rebuild runs.
#[derive(Clone, Copy, Debug)]
pub struct RebuildOptions {
    /// Do nothing (answer `None`) unless the projection has no checkpoint yet and the log is not empty:
    /// the recovery of a lost read-model database.
    pub only_if_empty: bool,
    /// The swap happens once the shadow is at most this many events behind the head; the rest is applied
    /// inside the swap's transaction, while readers wait. Smaller holds the tables for less time, at the
    /// cost of more rounds of catching up under heavy writes.
    pub swap_lag: u64,
}

impl Default for RebuildOptions {
    fn default() -> Self {
        Self {
            only_if_empty: false,
            swap_lag: SWAP_LAG,
        }
    }
}

/// Rebuilds the read models of `projection` from the whole log.
pub async fn rebuild(
    db: &DatabaseConnection,
    log: &EventLog,
    projection: &str,
    options: RebuildOptions,
    mut progress: impl FnMut(Progress),
) -> Result<Option<Rebuilt>, ProjectorError> {
    let began = Instant::now();
    let only_if_empty = options.only_if_empty;
    let nothing_to_recover = async {
        Ok::<_, ProjectorError>(
            log.last_seq().await? == 0 || live_checkpoint(db, projection).await? > 0,
        )
    };
    if only_if_empty && nothing_to_recover.await? {
        return Ok(None);
    }
    let shadow = shadow_connection(db).await?;
    // Held for the whole rebuild: the shadow pool has one connection, kept open.
    shadow
        .execute_unprepared(&format!("SELECT pg_advisory_lock({REBUILD_LOCK})"))
        .await?;
    // Another instance may have recovered it while we waited for the lock.
    let head = log.last_seq().await?;
    if only_if_empty && (head == 0 || live_checkpoint(db, projection).await? > 0) {
        close(shadow).await;
        return Ok(None);
    }
    tracing::info!(projection, head, "rebuilding the read models");
    let result = build(db, &shadow, log, projection, head, options, &mut progress).await;
    if result.is_err() {
        // Leave no half-built shadow behind.
        let _ = shadow
            .execute_unprepared(&format!("DROP SCHEMA IF EXISTS {SHADOW} CASCADE"))
            .await;
    }
    close(shadow).await;
    let mut rebuilt = result?;
    rebuilt.elapsed = began.elapsed();
    tracing::info!(
        projection,
        checkpoint = rebuilt.checkpoint,
        replayed = rebuilt.replayed,
        caught_up = rebuilt.caught_up,
        rows = rebuilt.rows,
        elapsed_ms = rebuilt.elapsed.as_millis() as u64,
        swap_ms = rebuilt.swap.as_millis() as u64,
        "read models rebuilt"
    );
    Ok(Some(rebuilt))
}

async fn close(shadow: DatabaseConnection) {
    let _ = shadow.close().await;
}

async fn live_checkpoint(db: &DatabaseConnection, projection: &str) -> Result<u64, ProjectorError> {
    Ok(
        projection_checkpoints::Entity::find_by_id(projection.to_owned())
            .one(db)
            .await?
            .map_or(0, |r| u64::try_from(r.seq).unwrap_or(0)),
    )
}

/// A connection pool whose `search_path` is the shadow schema only, so that the migrations and the
/// projector's own batch code, which name tables without a schema, work on the shadow tables.
async fn shadow_connection(db: &DatabaseConnection) -> Result<DatabaseConnection, ProjectorError> {
    let options = (*db.get_postgres_connection_pool().connect_options())
        .clone()
        .options([("search_path", SHADOW)]);
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_with(options)
        .await
        .map_err(|e| sea_orm::DbErr::Conn(sea_orm::RuntimeErr::SqlxError(e.into())))?;
    Ok(SqlxPostgresConnector::from_sqlx_postgres_pool(pool))
}

async fn build(
    db: &DatabaseConnection,
    shadow: &DatabaseConnection,
    log: &EventLog,
    projection: &str,
    head: u64,
    options: RebuildOptions,
    progress: &mut impl FnMut(Progress),
) -> Result<Rebuilt, ProjectorError> {
    shadow
        .execute_unprepared(&format!(
            "DROP SCHEMA IF EXISTS {SHADOW} CASCADE; CREATE SCHEMA {SHADOW}"
        ))
        .await?;
    hive_migrations::Migrator::up(shadow, None).await?;

    // Fold the log up to the head in memory.
    let mut events = Box::pin(log.read_from(1).await?);
    let mut folder = Folder::new(log.subjects().clone());
    let mut reported = Instant::now();
    while folder.last_seq() < head {
        let Some(event) = events.next().await else {
            return Err(hive_eventlog::LogError::new("read the log", "the reader ended").into());
        };
        folder.apply(&event?);
        if reported.elapsed() >= Duration::from_millis(100) {
            reported = Instant::now();
            progress(Progress {
                stage: Stage::Replaying,
                done: folder.last_seq(),
                total: head,
            });
        }
    }
    let (folded, dead) = folder.finish();
    let mut rebuilt = Rebuilt {
        checkpoint: head,
        replayed: head,
        dead_letters: dead.len() as u64,
        ..Default::default()
    };
    rebuilt.rows = write_fold(shadow, projection, &folded, dead, progress).await?;

    // Catch up with what was appended meanwhile.
    let mut at = head;
    loop {
        let target = log.last_seq().await?;
        if target.saturating_sub(at) <= options.swap_lag {
            break;
        }
        while at < target {
            let batch = next_batch(&mut events, at, target).await?;
            at = batch.last().map_or(at, |e| e.seq);
            rebuilt.caught_up += batch.len() as u64;
            let txn = shadow.begin().await?;
            apply_batch(&txn, projection, log.subjects(), &batch).await?;
            txn.commit().await?;
            progress(Progress {
                stage: Stage::CatchingUp,
                done: at,
                total: target,
            });
        }
    }

    progress(Progress {
        stage: Stage::Swapping,
        done: at,
        total: at,
    });
    let swap_began = Instant::now();
    let checkpoint = swap(db, log, projection, &mut events, at, &mut rebuilt).await?;
    rebuilt.swap = swap_began.elapsed();
    rebuilt.checkpoint = checkpoint;
    Ok(rebuilt)
}

/// The events after `after` up to `until`, at most [`CATCH_UP_BATCH`]: waits for the first, takes the
/// rest that are already there.
async fn next_batch(
    events: &mut (impl futures::Stream<Item = Result<RawEvent, hive_eventlog::LogError>> + Unpin),
    after: u64,
    until: u64,
) -> Result<Vec<RawEvent>, ProjectorError> {
    let mut batch = Vec::new();
    while batch.len() < CATCH_UP_BATCH {
        let next = if batch.is_empty() {
            events.next().await
        } else {
            match events.next().now_or_never() {
                Some(next) => next,
                None => break,
            }
        };
        let Some(event) = next else {
            return Err(hive_eventlog::LogError::new("read the log", "the reader ended").into());
        };
        let event = event?;
        if event.seq <= after {
            continue;
        }
        let seq = event.seq;
        batch.push(event);
        if seq >= until {
            break;
        }
    }
    Ok(batch)
}

/// Writes the fold into the shadow tables; answers the rows written.
async fn write_fold(
    shadow: &DatabaseConnection,
    projection: &str,
    folded: &Folded,
    dead: Vec<DeadLetter>,
    progress: &mut impl FnMut(Progress),
) -> Result<u64, ProjectorError> {
    let total = (folded.agents.len() + folded.tasks.len() + folded.projects.len()) as u64;
    let mut written = 0u64;
    let agents: Vec<_> = folded.agents.values().cloned().collect();
    let tasks: Vec<_> = folded.tasks.values().cloned().collect();
    let projects: Vec<_> = folded.projects.values().cloned().collect();
    written += insert_all::<hive_schema::agents::Entity>(shadow, agents).await?;
    progress(Progress {
        stage: Stage::Writing,
        done: written,
        total,
    });
    for chunk in tasks.chunks(ROWS_PER_INSERT * 10) {
        written += insert_all::<hive_schema::tasks::Entity>(shadow, chunk.to_vec()).await?;
        progress(Progress {
            stage: Stage::Writing,
            done: written,
            total,
        });
    }
    written += insert_all::<hive_schema::projects::Entity>(shadow, projects).await?;

    let counts: Vec<_> = folded
        .counts
        .iter()
        .map(|((kind, status), count)| status_counts::ActiveModel {
            kind: Set(kind.clone()),
            status: Set(status.clone()),
            count: Set(*count),
        })
        .collect();
    if !counts.is_empty() {
        status_counts::Entity::insert_many(counts)
            .exec_without_returning(shadow)
            .await?;
    }
    // The index of the whole log: its checkpoint row starts at 0 (written below), so it covers every
    // event from the first, whatever the live one covered.
    let holdings: Vec<_> = folded
        .agent_tasks
        .iter()
        .map(
            |(&(agent_id, task_id), &seq)| hive_schema::agent_tasks::Model {
                agent_id,
                task_id,
                first_seq: i64::try_from(seq).unwrap_or(i64::MAX),
            },
        )
        .collect();
    insert_all::<hive_schema::agent_tasks::Entity>(shadow, holdings).await?;
    let now = chrono::Utc::now();
    let dead: Vec<_> = dead
        .into_iter()
        .map(|d| dead_letters::ActiveModel {
            projection: Set(projection.to_owned()),
            seq: Set(i64::try_from(d.seq).unwrap_or(i64::MAX)),
            subject: Set(d.subject),
            payload: Set(d.payload),
            reason: Set(d.reason),
            created_at: Set(now),
            ..Default::default()
        })
        .collect();
    for chunk in dead.chunks(ROWS_PER_INSERT) {
        dead_letters::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(shadow)
            .await?;
    }
    let txn = shadow.begin().await?;
    let from = lock_checkpoint(&txn, projection).await?;
    write_checkpoint(&txn, projection, from, folded.last_seq).await?;
    txn.commit().await?;
    Ok(written)
}

async fn insert_all<E>(db: &DatabaseConnection, rows: Vec<E::Model>) -> Result<u64, ProjectorError>
where
    E: EntityTrait,
    E::Model: IntoActiveModel<E::ActiveModel>,
    E::ActiveModel: ActiveModelTrait<Entity = E> + Send,
{
    let count = rows.len() as u64;
    let mut rows = rows.into_iter().map(|r| r.into_active_model().reset_all());
    loop {
        let chunk: Vec<_> = rows.by_ref().take(ROWS_PER_INSERT).collect();
        if chunk.is_empty() {
            break;
        }
        E::insert_many(chunk).exec_without_returning(db).await?;
    }
    Ok(count)
}

/// The swap transaction; answers the checkpoint the new read models hold.
async fn swap(
    db: &DatabaseConnection,
    log: &EventLog,
    projection: &str,
    events: &mut (impl futures::Stream<Item = Result<RawEvent, hive_eventlog::LogError>> + Unpin),
    mut at: u64,
    rebuilt: &mut Rebuilt,
) -> Result<u64, ProjectorError> {
    let txn = db.begin().await?;
    // The checkpoints first: the live projector takes that lock first in each of its transactions.
    txn.execute_unprepared("LOCK TABLE public.projection_checkpoints IN ACCESS EXCLUSIVE MODE")
        .await?;
    let others: Vec<String> = TABLES[1..].iter().map(|t| format!("public.{t}")).collect();
    txn.execute_unprepared(&format!(
        "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
        others.join(", ")
    ))
    .await?;
    let live = projection_checkpoints::Entity::find_by_id(projection.to_owned())
        .one(&txn)
        .await?
        .map_or(0, |r| u64::try_from(r.seq).unwrap_or(0));
    // Bring the shadow at least to the live checkpoint, and to the head as it is now.
    let target = live.max(log.last_seq().await?);
    txn.execute_unprepared(&format!("SET LOCAL search_path TO {SHADOW}"))
        .await?;
    while at < target {
        let batch = next_batch(events, at, target).await?;
        at = batch.last().map_or(at, |e| e.seq);
        rebuilt.caught_up += batch.len() as u64;
        apply_batch(&txn, projection, log.subjects(), &batch).await?;
    }
    txn.execute_unprepared("SET LOCAL search_path TO public")
        .await?;
    // Other projections' checkpoints and dead letters carry over.
    txn.execute_unprepared(&format!(
        "INSERT INTO {SHADOW}.projection_checkpoints SELECT * FROM public.projection_checkpoints \
         WHERE name <> '{name}' ON CONFLICT DO NOTHING; \
         INSERT INTO {SHADOW}.dead_letters (projection, seq, subject, payload, reason, created_at) \
         SELECT projection, seq, subject, payload, reason, created_at FROM public.dead_letters \
         WHERE projection <> '{name}' ON CONFLICT DO NOTHING",
        name = projection.replace('\'', "''"),
    ))
    .await?;
    let mut ddl = format!(
        "DROP TABLE {};",
        TABLES.map(|t| format!("public.{t}")).join(", ")
    );
    for table in TABLES {
        ddl.push_str(&format!(" ALTER TABLE {SHADOW}.{table} SET SCHEMA public;"));
    }
    ddl.push_str(&format!(" DROP SCHEMA {SHADOW} CASCADE;"));
    txn.execute_unprepared(&ddl).await?;
    txn.commit().await?;
    Ok(at)
}
