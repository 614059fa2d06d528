//! One batch of events becomes read-model rows, status-count deltas, the agents' holdings of tasks
//! ([`crate::agent_tasks`]), dead letters and the new checkpoint, all in ONE transaction: a crash
//! before the commit leaves nothing, a crash after it leaves everything, and events at or below the
//! committed checkpoint are skipped, so redelivery is harmless. A batch that starts beyond the
//! checkpoint (the database lost commits) is refused: the projector resumes from it.
//! The checkpoint moves only from the value the batch locked and read ([`write_checkpoint`]), so two
//! projectors overlapping during a failover cannot both project one event.
//!
//! Long because one transaction's steps (lock the checkpoint, load the rows, fold, write, dead-
//! letter, move the checkpoint) read best in one place.

use std::collections::{BTreeMap, HashMap};

use hive_eventlog::RawEvent;
use hive_events::agent::Agent;
use hive_events::project::Project;
use hive_events::replay::{Fed, Fold, OnRejected, Replay};
use hive_events::subject::Subjects;
use hive_events::task::Task;
use hive_events::{AggregateKind, DomainEvent, Envelope};
use hive_schema::{dead_letters, projection_checkpoints, status_counts};
use sea_orm::sea_query::{Expr, LockType, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseTransaction, DbErr, EntityTrait, IdenStatic,
    IntoActiveModel, QueryFilter, QuerySelect, Set,
};
use uuid::Uuid;

use crate::agent_tasks::{self, Holdings};
use crate::rows::ReadModel;

/// Rows per INSERT at most: the widest table has 29 columns, and a statement takes at most 65,535
/// parameters.
const ROWS_PER_STATEMENT: usize = 512;

/// How many of `n` rows the next statement takes: the largest power of two up to
/// [`ROWS_PER_STATEMENT`] (itself one). Statements then come in ten shapes per table, which the
/// connection's statement cache keeps and reuses; one shape per row count filled the cache with
/// statements used once (about 20 MB of their metadata under a steady load of commands).
pub(crate) fn statement_rows(n: usize) -> usize {
    match n.min(ROWS_PER_STATEMENT) {
        0 => 0,
        n => 1 << n.ilog2(),
    }
}

/// `items` in consecutive pieces of [`statement_rows`] each.
pub(crate) fn statement_chunks<T>(items: &[T]) -> impl Iterator<Item = &[T]> {
    let mut rest = items;
    std::iter::from_fn(move || {
        let take = statement_rows(rest.len());
        (take > 0).then(|| {
            let (chunk, after) = rest.split_at(take);
            rest = after;
            chunk
        })
    })
}

/// What one committed batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchOutcome {
    /// The checkpoint after the batch.
    pub checkpoint: u64,
    /// Events applied.
    pub applied: usize,
    /// Events sent to dead letters.
    pub dead_lettered: usize,
    /// Events skipped because they were at or below the checkpoint.
    pub skipped: usize,
}

/// The states a batch touches, loaded once and folded in memory.
struct Slots<A: ReadModel> {
    /// id → (status before the batch, current state, seq of its last event).
    entries: HashMap<Uuid, Slot<A>>,
}

struct Slot<A> {
    before: Option<&'static str>,
    state: Option<A>,
    seq: u64,
    dirty: bool,
    unreadable: Option<String>,
}

impl<A: ReadModel> Slots<A> {
    async fn load(txn: &DatabaseTransaction, ids: Vec<Uuid>) -> Result<Self, DbErr> {
        let mut entries: HashMap<Uuid, Slot<A>> = ids
            .iter()
            .map(|id| {
                let empty = Slot {
                    before: None,
                    state: None,
                    seq: 0,
                    dirty: false,
                    unreadable: None,
                };
                (*id, empty)
            })
            .collect();
        for chunk in statement_chunks(&ids) {
            let rows = A::Entity::find()
                .filter(A::id_column().is_in(chunk.iter().copied()))
                .all(txn)
                .await?;
            for row in rows {
                let (id, state) = A::from_row(row);
                let Some(slot) = entries.get_mut(&id) else {
                    continue;
                };
                match state {
                    Ok(state) => {
                        slot.before = Some(state.status());
                        slot.state = Some(state);
                    }
                    Err(reason) => {
                        tracing::error!(%id, %reason, "unreadable read-model row");
                        slot.unreadable = Some(format!("{} {id}: {reason}", A::KIND));
                    }
                }
            }
        }
        Ok(Self { entries })
    }

    /// Folds `envelope` onto its aggregate; on failure the state stays as it was.
    fn apply(&mut self, seq: u64, envelope: Envelope) -> Result<(), String> {
        let (id, at) = (envelope.aggregate_id, envelope.meta.occurred_at);
        let slot = self
            .entries
            .get_mut(&id)
            .expect("every id of the batch was loaded");
        if let Some(reason) = &slot.unreadable {
            return Err(format!("read-model row unreadable: {reason}"));
        }
        let next = envelope.event.apply_to(slot.state.clone(), at)?;
        slot.state = Some(next);
        slot.seq = seq;
        slot.dirty = true;
        Ok(())
    }

    async fn write(
        self,
        txn: &DatabaseTransaction,
        counts: &mut BTreeMap<(&'static str, &'static str), i64>,
    ) -> Result<(), DbErr>
    where
        <A::Entity as EntityTrait>::Model: IntoActiveModel<<A::Entity as EntityTrait>::ActiveModel>,
        <A::Entity as EntityTrait>::ActiveModel: ActiveModelTrait<Entity = A::Entity> + Send,
    {
        let mut rows = Vec::new();
        for (id, slot) in self.entries {
            let (true, Some(state)) = (slot.dirty, slot.state) else {
                continue;
            };
            if let Some(kind) = A::COUNTED_AS {
                let after = state.status();
                if slot.before != Some(after) {
                    if let Some(before) = slot.before {
                        *counts.entry((kind, before)).or_default() -= 1;
                    }
                    *counts.entry((kind, after)).or_default() += 1;
                }
            }
            rows.push(
                A::to_row(id, &state, slot.seq)
                    .into_active_model()
                    .reset_all(),
            );
        }
        upsert::<A>(txn, rows).await
    }
}

/// Writes `rows` of `A`'s table, each replacing the row of its id if there is one.
pub(crate) async fn upsert<A: ReadModel>(
    txn: &DatabaseTransaction,
    mut rows: Vec<<A::Entity as EntityTrait>::ActiveModel>,
) -> Result<(), DbErr>
where
    <A::Entity as EntityTrait>::ActiveModel: ActiveModelTrait<Entity = A::Entity> + Send,
{
    let update: Vec<_> = <<A::Entity as EntityTrait>::Column as sea_orm::Iterable>::iter()
        .filter(|c| c.as_str() != A::id_column().as_str())
        .collect();
    while !rows.is_empty() {
        let rest = rows.split_off(statement_rows(rows.len()));
        A::Entity::insert_many(std::mem::replace(&mut rows, rest))
            .on_conflict(
                OnConflict::column(A::id_column())
                    .update_columns(update.clone())
                    .to_owned(),
            )
            .exec_without_returning(txn)
            .await?;
    }
    Ok(())
}

/// The rows a batch touches, by kind, and the holdings it names.
struct Touched {
    agents: Slots<Agent>,
    tasks: Slots<Task>,
    projects: Slots<Project>,
    holdings: Holdings,
}

impl Fold for Touched {
    fn fold(&mut self, seq: u64, envelope: Envelope) -> Result<(), String> {
        // Whether or not the fold applies it: the index holds what the log names.
        agent_tasks::note(&mut self.holdings, seq, &envelope);
        match envelope.event {
            DomainEvent::Agent(_) => self.agents.apply(seq, envelope),
            DomainEvent::Task(_) => self.tasks.apply(seq, envelope),
            DomainEvent::Project(_) => self.projects.apply(seq, envelope),
        }
    }
}

/// The sequence the projection `name` has committed (0: none), locking its row for this transaction so
/// that two projector instances never commit the same batch.
pub async fn lock_checkpoint(txn: &DatabaseTransaction, name: &str) -> Result<u64, DbErr> {
    Ok(lock_for_batch(txn, name).await?.committed)
}

/// The checkpoint a batch starts from, locked ([`lock_checkpoint`]).
struct Locked {
    /// The sequence committed (0: none).
    committed: u64,
    /// A projector of an earlier version, which keeps no index, moved the checkpoint last (during an
    /// upgrade): the index misses what it projected, so it begins again with this batch.
    index_behind: bool,
}

impl Locked {
    /// Refuses a batch that starts beyond the checkpoint: the database lost commits this projector
    /// made (an asynchronous commit lost in a crash, a restore, a failover to a replica that lagged),
    /// and the events after its checkpoint must be applied again, not skipped.
    fn starts_at(&self, first: u64) -> Result<(), DbErr> {
        if first <= self.committed + 1 {
            return Ok(());
        }
        metrics::counter!("hive_projector_checkpoint_regressions_total").increment(1);
        Err(DbErr::Custom(format!(
            "the checkpoint is {}, but the batch starts at {first}: the read-model database lost \
             commits; resuming from its checkpoint",
            self.committed
        )))
    }
}

/// Locks the checkpoint row of projection `name` for this transaction and reads it.
async fn lock_for_batch(txn: &DatabaseTransaction, name: &str) -> Result<Locked, DbErr> {
    let locked = || {
        projection_checkpoints::Entity::find_by_id(name.to_owned())
            .lock(LockType::Update)
            .one(txn)
    };
    // The row exists from the first batch on: one round trip.
    let mut row = locked().await?;
    if row.is_none() {
        // `FOR UPDATE` locks nothing while the row does not exist, so make sure it does: a
        // concurrent instance's insert then waits for ours to commit and finds it.
        projection_checkpoints::Entity::insert(projection_checkpoints::ActiveModel {
            name: Set(name.to_owned()),
            seq: Set(0),
            updated_at: Set(chrono::Utc::now()),
            agent_tasks_after: Set(0),
            agent_tasks_through: Set(0),
        })
        .on_conflict_do_nothing_on([projection_checkpoints::Column::Name])
        .exec_without_returning(txn)
        .await?;
        row = locked().await?;
    }
    Ok(Locked {
        committed: row
            .as_ref()
            .map_or(0, |r| u64::try_from(r.seq).unwrap_or(0)),
        index_behind: row.is_some_and(|r| r.agent_tasks_through != r.seq),
    })
}

/// Applies `events` (in stream order) inside `txn`. The caller commits.
#[tracing::instrument(name = "projector_batch", skip_all, fields(projection = name, events = events.len(), first = events.first().map(|e| e.seq), last = events.last().map(|e| e.seq)), err)]
pub async fn apply_batch(
    txn: &DatabaseTransaction,
    name: &str,
    subjects: &Subjects,
    events: &[RawEvent],
) -> Result<BatchOutcome, DbErr> {
    let locked = lock_for_batch(txn, name).await?;
    let committed = locked.committed;
    let fresh: Vec<&RawEvent> = events.iter().filter(|e| e.seq > committed).collect();
    let mut outcome = BatchOutcome {
        checkpoint: committed,
        skipped: events.len() - fresh.len(),
        ..Default::default()
    };
    let (Some(first), Some(last)) = (fresh.first(), fresh.last()) else {
        return Ok(outcome);
    };
    locked.starts_at(first.seq)?;
    outcome.checkpoint = last.seq;

    // An event that cannot be folded is a dead letter, and the projection goes on.
    let replay = Replay::new(subjects.clone(), OnRejected::Skip);
    // Decode everything first, so each table's touched rows are loaded with one query.
    let decoded: Vec<_> = fresh
        .iter()
        .map(|raw| replay.decode(raw.seq, &raw.subject, &raw.payload))
        .collect();
    if tracing::enabled!(tracing::Level::TRACE) {
        // Each flow the batch carries, so a trace of one flow finds the batch that projected it.
        for envelope in decoded.iter().flatten() {
            let correlation_id = envelope.meta.correlation_id;
            tracing::trace!(%correlation_id, event = envelope.event.event_type(), "projecting");
        }
    }
    let ids_of = |kind: AggregateKind| {
        let mut ids: Vec<Uuid> = decoded
            .iter()
            .filter_map(|d| d.as_ref().ok())
            .filter(|e| e.aggregate == kind)
            .map(|e| e.aggregate_id)
            .collect();
        ids.sort();
        ids.dedup();
        ids
    };
    let mut touched = Touched {
        agents: Slots::load(txn, ids_of(AggregateKind::Agent)).await?,
        tasks: Slots::load(txn, ids_of(AggregateKind::Task)).await?,
        projects: Slots::load(txn, ids_of(AggregateKind::Project)).await?,
        holdings: Holdings::new(),
    };

    let mut dead = Vec::new();
    for (raw, decoded) in fresh.iter().zip(decoded) {
        match replay.feed(&mut touched, raw.seq, decoded) {
            Ok(Fed::Folded | Fed::Past) => outcome.applied += 1,
            Ok(Fed::Skipped(rejected)) | Err(rejected) => {
                let reason = rejected.reason;
                tracing::warn!(seq = raw.seq, subject = %raw.subject, %reason, "dead letter");
                dead.push(dead_letter(name, raw, reason));
            }
        }
    }
    outcome.dead_lettered = dead.len();

    let mut counts = BTreeMap::new();
    touched.agents.write(txn, &mut counts).await?;
    touched.tasks.write(txn, &mut counts).await?;
    touched.projects.write(txn, &mut counts).await?;
    write_counts(txn, counts).await?;
    if locked.index_behind {
        agent_tasks::begin_again(txn).await?;
    }
    agent_tasks::write(txn, &touched.holdings).await?;
    insert_dead_letters(txn, &dead).await?;
    write_checkpoint(txn, name, committed, outcome.checkpoint).await?;
    Ok(outcome)
}

/// Whether the database refused a statement for the data it was given: SQLSTATE class 22 (a data
/// exception: a time or number out of range, a character it cannot hold) or 54 (a limit, such as an
/// index row too large). The same rows are refused on every retry, unlike a lost connection, a
/// conflict or a lack of resources. Not class 23 (a constraint): the read models' constraints are
/// the schema's, and a violation says more of the schema or the projector (a migration not applied)
/// than of one event.
pub fn refused_data(e: &DbErr) -> bool {
    use sea_orm::RuntimeErr;
    use sea_orm::sqlx::Error;
    let (DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e))) = e else {
        return false;
    };
    let Error::Database(e) = e.as_ref() else {
        return false;
    };
    e.code()
        .is_some_and(|code| ["22", "54"].iter().any(|class| code.starts_with(class)))
}

/// Records `raw`, which the database refused in a batch of its own (`reason`), as a dead letter
/// inside `txn`, as [`apply_batch`] records an event the fold refuses: its holding indexed (the index
/// holds what the log names) and the checkpoint moved past it. The caller commits.
pub async fn dead_letter_refused(
    txn: &DatabaseTransaction,
    name: &str,
    subjects: &Subjects,
    raw: &RawEvent,
    reason: String,
) -> Result<BatchOutcome, DbErr> {
    let locked = lock_for_batch(txn, name).await?;
    let committed = locked.committed;
    let mut outcome = BatchOutcome {
        checkpoint: committed,
        ..Default::default()
    };
    if raw.seq <= committed {
        outcome.skipped = 1;
        return Ok(outcome);
    }
    locked.starts_at(raw.seq)?;
    let mut holdings = Holdings::new();
    let replay = Replay::new(subjects.clone(), OnRejected::Skip);
    if let Ok(envelope) = replay.decode(raw.seq, &raw.subject, &raw.payload) {
        agent_tasks::note(&mut holdings, raw.seq, &envelope);
    }
    if locked.index_behind {
        agent_tasks::begin_again(txn).await?;
    }
    agent_tasks::write(txn, &holdings).await?;
    insert_dead_letters(txn, &[dead_letter(name, raw, reason)]).await?;
    write_checkpoint(txn, name, committed, raw.seq).await?;
    outcome.checkpoint = raw.seq;
    outcome.dead_lettered = 1;
    Ok(outcome)
}

/// The dead letter of projection `name` that `raw` becomes, for `reason`.
pub(crate) fn dead_letter(name: &str, raw: &RawEvent, reason: String) -> dead_letters::ActiveModel {
    dead_letters::ActiveModel {
        projection: Set(name.to_owned()),
        seq: Set(i64::try_from(raw.seq).unwrap_or(i64::MAX)),
        subject: Set(raw.subject.clone()),
        payload: Set(raw.payload.to_vec()),
        reason: Set(reason),
        created_at: Set(chrono::Utc::now()),
        ..Default::default()
    }
}

/// Inserts `dead` letters (one already recorded for its event is kept as it is).
pub(crate) async fn insert_dead_letters(
    txn: &DatabaseTransaction,
    dead: &[dead_letters::ActiveModel],
) -> Result<(), DbErr> {
    for chunk in statement_chunks(dead) {
        dead_letters::Entity::insert_many(chunk.to_vec())
            .on_conflict_do_nothing_on([
                dead_letters::Column::Projection,
                dead_letters::Column::Seq,
            ])
            .exec_without_returning(txn)
            .await?;
    }
    Ok(())
}

/// Adds each delta to its `(kind, status)` count.
pub(crate) async fn write_counts(
    txn: &DatabaseTransaction,
    counts: BTreeMap<(&'static str, &'static str), i64>,
) -> Result<(), DbErr> {
    let rows: Vec<_> = counts
        .into_iter()
        .filter(|(_, delta)| *delta != 0)
        .map(|((kind, status), delta)| status_counts::ActiveModel {
            kind: Set(kind.to_owned()),
            status: Set(status.to_owned()),
            count: Set(delta),
        })
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    status_counts::Entity::insert_many(rows)
        .on_conflict(
            OnConflict::columns([status_counts::Column::Kind, status_counts::Column::Status])
                .value(
                    status_counts::Column::Count,
                    Expr::cust("status_counts.count + EXCLUDED.count"),
                )
                .to_owned(),
        )
        .exec_without_returning(txn)
        .await?;
    Ok(())
}

/// Moves the projection's checkpoint from `from` to `to` inside `txn`, and fails when it is not at
/// `from` any more: the row is locked by [`lock_checkpoint`] in the same transaction, so this cannot
/// happen while every writer takes the lock, and if one ever did not (two projectors overlapping
/// during a failover, a tool writing the row), its batch fails instead of projecting events twice.
///
/// The `agent_tasks` index, written in the same transaction, now reaches `to` as well. It covered the
/// log up to `from` unless a projector of an earlier version, which does not keep it, moved the
/// checkpoint last (during an upgrade): then the index begins again after `from`
/// ([`agent_tasks::begin_again`]).
pub async fn write_checkpoint(
    txn: &DatabaseTransaction,
    name: &str,
    from: u64,
    to: u64,
) -> Result<(), DbErr> {
    let as_i64 = |seq: u64| i64::try_from(seq).unwrap_or(i64::MAX);
    let moved = projection_checkpoints::Entity::update_many()
        .col_expr(projection_checkpoints::Column::Seq, Expr::value(as_i64(to)))
        .col_expr(
            projection_checkpoints::Column::UpdatedAt,
            Expr::value(chrono::Utc::now()),
        )
        .col_expr(
            projection_checkpoints::Column::AgentTasksAfter,
            Expr::case(
                projection_checkpoints::Column::AgentTasksThrough.eq(as_i64(from)),
                Expr::col(projection_checkpoints::Column::AgentTasksAfter),
            )
            .finally(Expr::value(as_i64(from)))
            .into(),
        )
        .col_expr(
            projection_checkpoints::Column::AgentTasksThrough,
            Expr::value(as_i64(to)),
        )
        .filter(projection_checkpoints::Column::Name.eq(name))
        .filter(projection_checkpoints::Column::Seq.eq(as_i64(from)))
        .exec(txn)
        .await?;
    if moved.rows_affected != 1 {
        metrics::counter!("hive_projector_checkpoint_conflicts_total").increment(1);
        return Err(DbErr::Custom(format!(
            "the checkpoint of {name} is no longer {from}: another projector moved it; resuming \
             from it"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_come_in_few_shapes_and_cover_every_row() {
        let mut shapes = std::collections::BTreeSet::new();
        for n in 0..3_000usize {
            let items: Vec<usize> = (0..n).collect();
            let chunks: Vec<&[usize]> = statement_chunks(&items).collect();
            assert_eq!(chunks.concat(), items, "{n} rows");
            shapes.extend(chunks.iter().map(|c| c.len()));
        }
        assert_eq!(shapes.len(), 10, "{shapes:?}");
        assert!(
            shapes
                .iter()
                .all(|s| s.is_power_of_two() && *s <= ROWS_PER_STATEMENT)
        );
    }
}
