//! The index of the tasks each agent ever held (`agent_tasks`): a row per agent and task, with the
//! sequence of the first event that named the agent as the task's holder. The projector notes the
//! holdings each batch names ([`hive_events::Envelope::holding`], the rule `hive audit agent` reads
//! the log by) and writes them in the batch's transaction; a rebuild and `hive verify` fold them from
//! the log the same way ([`crate::fold`]).
//!
//! Every decoded task event counts, whether the fold applied it or dead-lettered it: the index answers
//! which tasks the log says an agent held, as an auditor reading the log would find them.
//!
//! The stretch of the log the index covers is kept in the projection's checkpoint row: the events
//! after `agent_tasks_after` (0 but on a database upgraded in place, migration m0005) up to
//! `agent_tasks_through` (the checkpoint). The index holds exactly what that stretch names, so
//! `hive verify` can compare it row by row; [`held`] reads both with the rows, in one snapshot, so a
//! reader knows exactly which events it must still read from the log.

use std::collections::BTreeMap;

use hive_events::Envelope;
use hive_schema::{agent_tasks, projection_checkpoints};
use sea_orm::{
    AccessMode, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait,
    IsolationLevel, QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait,
};
use uuid::Uuid;

use crate::batch::statement_chunks;

/// Holdings: (agent, task) → the sequence of the first event that named the agent as the task's
/// holder.
pub type Holdings = BTreeMap<(Uuid, Uuid), u64>;

/// Notes the holding the event at `seq` names, if it names one; the first event of a pair stays.
pub fn note(holdings: &mut Holdings, seq: u64, envelope: &Envelope) {
    if let Some((task, agent)) = envelope.holding() {
        holdings.entry((agent.as_uuid(), task)).or_insert(seq);
    }
}

/// Writes `holdings` inside `txn`: a row for each pair the index does not hold yet (one it holds keeps
/// its first sequence, which is earlier).
pub async fn write(txn: &impl ConnectionTrait, holdings: &Holdings) -> Result<(), DbErr> {
    let rows: Vec<_> = holdings
        .iter()
        .map(|(&(agent_id, task_id), &seq)| agent_tasks::ActiveModel {
            agent_id: Set(agent_id),
            task_id: Set(task_id),
            first_seq: Set(i64::try_from(seq).unwrap_or(i64::MAX)),
        })
        .collect();
    for chunk in statement_chunks(&rows) {
        agent_tasks::Entity::insert_many(chunk.to_vec())
            .on_conflict_do_nothing_on([agent_tasks::Column::AgentId, agent_tasks::Column::TaskId])
            .exec_without_returning(txn)
            .await?;
    }
    Ok(())
}

/// Empties the index inside `txn`, for a batch that finds it does not reach the checkpoint: a
/// projector of an earlier version, which keeps no index, moved the checkpoint since (a rolling
/// upgrade). The batch then indexes from its own first event on, and [`crate::batch::write_checkpoint`]
/// records that the index begins there, so it holds exactly what the stretch it claims names, and
/// readers read the rest from the log.
pub async fn begin_again(txn: &impl ConnectionTrait) -> Result<(), DbErr> {
    tracing::warn!(
        "the checkpoint moved without the agent_tasks index (a projector of an earlier version): \
         the index begins again here; `hive projections rebuild` indexes the whole log"
    );
    agent_tasks::Entity::delete_many().exec(txn).await?;
    Ok(())
}

/// Which part of one agent's index to read: the tasks first held after `cursor` (a sequence, the last
/// one of the previous page), at most `limit` of them (all without), newest first with `descending`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Page {
    /// Tasks first held after (before, `descending`) this sequence.
    pub cursor: Option<u64>,
    /// At most this many tasks; all without.
    pub limit: Option<u64>,
    /// Newest first.
    pub descending: bool,
}

/// A page of one agent's index, and the stretch of the log it covers, read in one snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Held {
    /// The tasks, each with the first event that named the agent as its holder, in that order.
    pub tasks: Vec<(Uuid, u64)>,
    /// Whether more tasks follow the page.
    pub more: bool,
    /// The index holds what the events after this sequence name (0: from the log's start).
    pub after: u64,
    /// ... up to and including this one: the projection's checkpoint (0 when it has none yet).
    pub through: u64,
}

impl Held {
    /// The stretches of the log (first and last sequence, each included) whose holdings the index does
    /// not hold, up to `head`: before its beginning, and after its end.
    pub fn unindexed(&self, head: u64) -> Vec<(u64, u64)> {
        let mut gaps = Vec::new();
        if self.after > 0 {
            gaps.push((1, self.after.min(head)));
        }
        if head > self.through {
            gaps.push((self.through + 1, head));
        }
        gaps
    }
}

/// `page` of the tasks `agent` held as the index of `projection` holds them, with the stretch of the log
/// the index covers, read together in one repeatable-read snapshot: the rows reflect exactly the
/// events after [`Held::after`] up to [`Held::through`].
pub async fn held(
    db: &DatabaseConnection,
    projection: &str,
    agent: Uuid,
    page: Page,
) -> Result<Held, DbErr> {
    let txn = db
        .begin_with_config(
            Some(IsolationLevel::RepeatableRead),
            Some(AccessMode::ReadOnly),
        )
        .await?;
    let covered = projection_checkpoints::Entity::find_by_id(projection.to_owned())
        .one(&txn)
        .await?;
    let (after, through) = covered.map_or((0, 0), |row| {
        let seq = |s: i64| u64::try_from(s).unwrap_or(0);
        (seq(row.agent_tasks_after), seq(row.agent_tasks_through))
    });
    let column = agent_tasks::Column::FirstSeq;
    let mut query = agent_tasks::Entity::find().filter(agent_tasks::Column::AgentId.eq(agent));
    query = if page.descending {
        query.order_by_desc(column)
    } else {
        query.order_by_asc(column)
    };
    if let Some(cursor) = page.cursor {
        let cursor = i64::try_from(cursor).unwrap_or(i64::MAX);
        query = query.filter(if page.descending {
            column.lt(cursor)
        } else {
            column.gt(cursor)
        });
    }
    if let Some(limit) = page.limit {
        query = query.limit(limit.saturating_add(1));
    }
    let rows = query.all(&txn).await?;
    txn.commit().await?;
    let more = page.limit.is_some_and(|limit| rows.len() as u64 > limit);
    let tasks = rows
        .into_iter()
        .take(page.limit.map_or(usize::MAX, |l| l as usize))
        .map(|row| (row.task_id, u64::try_from(row.first_seq).unwrap_or(0)))
        .collect();
    Ok(Held {
        tasks,
        more,
        after,
        through,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covering(after: u64, through: u64) -> Held {
        Held {
            after,
            through,
            ..Default::default()
        }
    }

    #[test]
    fn what_the_index_does_not_cover_is_read_from_the_log() {
        // A fresh index, caught up: nothing.
        assert_eq!(covering(0, 50).unindexed(50), []);
        // Behind the head: the tail.
        assert_eq!(covering(0, 40).unindexed(50), [(41, 50)]);
        // Never projected: the whole log.
        assert_eq!(covering(0, 0).unindexed(50), [(1, 50)]);
        // An empty log: nothing.
        assert_eq!(covering(0, 0).unindexed(0), []);
        // Upgraded in place at 30: the older work too.
        assert_eq!(covering(30, 40).unindexed(50), [(1, 30), (41, 50)]);
        assert_eq!(covering(30, 50).unindexed(50), [(1, 30)]);
    }
}
