//! Folding a dead letter's aggregate again, for an operator (`POST /api/v1/dead-letters/{id}/retry`,
//! `hive dead-letters retry`): after an upcaster was fixed in a newer build, say, or a read-model row
//! that was damaged outside the projector.
//!
//! The API reads the read models through a role that may only read, so it asks the leading projector,
//! which alone writes them: a NATS request on [`hive_eventlog::Namespace::refold_requests`], which
//! [`answer`] serves while the projector leads. [`refold`] works in one transaction that holds the
//! projection's checkpoint lock (as every batch does first, so no batch runs meanwhile), and folds the
//! aggregate's whole history up to the checkpoint through the one replay loop, as this build reads it
//! ([`fold_history`]; the read-model row is not read, so a damaged one is rebuilt too). If the
//! dead-lettered event now folds, the aggregate's row, its status count and its dead letters become
//! what projecting that history with this build gives: the events that fold are dead letters no more,
//! and an event the new fold refuses (one that followed a resolved event and no longer fits) is one
//! now. If it still cannot be folded, nothing is written and the answer says why.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use futures::StreamExt;
use hive_eventlog::{EventLog, LogError, RawEvent};
use hive_events::agent::Agent;
use hive_events::project::Project;
use hive_events::replay::{Fed, Folded, OnRejected, Replay, Until};
use hive_events::subject::Subjects;
use hive_events::task::Task;
use hive_events::{Aggregate, AggregateKind};
use hive_schema::dead_letters;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbErr,
    EntityName, EntityTrait, ExprTrait, IntoActiveModel, QueryFilter, Statement, TransactionTrait,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::batch;
use crate::rows::ReadModel;

/// How long [`answer`] waits before subscribing again after its subscription failed.
const RESUBSCRIBE: Duration = Duration::from_secs(1);

/// A request to fold a dead letter's aggregate again, as the API sends it (JSON).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefoldRequest {
    /// The dead letter (`dead_letters.id`).
    pub dead_letter: i64,
}

/// The projector's answer to a [`RefoldRequest`] (JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum RefoldAnswer {
    /// The event folds now; what changed.
    Refolded(Refolded),
    /// The event still cannot be folded (nothing was written): the domain's or the decoder's reason.
    StillDead {
        /// The event's sequence.
        seq: u64,
        /// Why it cannot be folded.
        reason: String,
    },
    /// The projection has no such dead letter (never had, or it was resolved already).
    NotFound,
    /// The database or the log failed (logged by the projector); the request may be sent again.
    Failed {
        /// What failed.
        message: String,
    },
}

/// A dead letter's aggregate folded again, the dead-lettered event among the events folded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Refolded {
    /// The dead letter asked about (removed: its event folds now).
    pub dead_letter_id: i64,
    /// Its event's sequence.
    pub seq: u64,
    /// The aggregate whose history holds it.
    pub aggregate: AggregateKind,
    /// Which one.
    pub aggregate_id: Uuid,
    /// The aggregate's read-model row now holds its history up to this sequence (the projection's
    /// checkpoint).
    pub checkpoint: u64,
    /// The aggregate's events that were dead letters and fold now (the one asked about among them).
    pub resolved: Vec<u64>,
    /// The aggregate's events this fold still refuses, each a dead letter (one that followed a
    /// resolved event and no longer fits the state becomes one now).
    pub dead_letters: Vec<u64>,
}

/// Why a re-fold could not be done (not why an event cannot be folded: that is an answer).
#[derive(Debug, thiserror::Error)]
pub enum RefoldError {
    /// The read-model database failed.
    #[error("read-model database: {0}")]
    Database(#[from] DbErr),
    /// The log failed.
    #[error(transparent)]
    Log(#[from] LogError),
}

/// Answers the re-fold requests of projection `name` (one at a time) for as long as it is polled: the
/// projector polls it while it leads, so the leader alone answers. Several leaders for a moment (a
/// failover) share the requests (a queue group), and the checkpoint lock orders their writes.
pub async fn answer(db: &DatabaseConnection, log: &EventLog, name: &str) -> Infallible {
    let client = log.client();
    let subject = log.namespace().refold_requests(name);
    loop {
        match client
            .queue_subscribe(subject.clone(), "refold".into())
            .await
        {
            Ok(mut requests) => {
                while let Some(request) = requests.next().await {
                    let Some(reply) = request.reply else {
                        continue;
                    };
                    let answer = match serde_json::from_slice::<RefoldRequest>(&request.payload) {
                        Ok(asked) => refold(db, log, name, asked.dead_letter)
                            .await
                            .unwrap_or_else(|e| RefoldAnswer::Failed {
                                message: e.to_string(),
                            }),
                        Err(e) => RefoldAnswer::Failed {
                            message: format!("not a re-fold request: {e}"),
                        },
                    };
                    let bytes = serde_json::to_vec(&answer).unwrap_or_default();
                    if let Err(e) = client.publish(reply, bytes.into()).await {
                        tracing::warn!(error = %e, "could not answer a re-fold request");
                    }
                }
                tracing::warn!(%subject, "the re-fold requests' subscription ended");
            }
            Err(e) => tracing::warn!(%subject, error = %e, "cannot take re-fold requests"),
        }
        tokio::time::sleep(RESUBSCRIBE).await;
    }
}

/// Folds dead letter `dead_letter`'s aggregate again up to projection `name`'s checkpoint, and writes
/// the result if its event folds now (see the module's documentation).
#[tracing::instrument(skip(db, log), fields(projection = name), err)]
pub async fn refold(
    db: &DatabaseConnection,
    log: &EventLog,
    name: &str,
    dead_letter: i64,
) -> Result<RefoldAnswer, RefoldError> {
    let txn = db.begin().await?;
    let checkpoint = batch::lock_checkpoint(&txn, name).await?;
    let Some(letter) = dead_letters::Entity::find_by_id(dead_letter)
        .filter(dead_letters::Column::Projection.eq(name))
        .one(&txn)
        .await?
    else {
        return Ok(RefoldAnswer::NotFound);
    };
    let seq = u64::try_from(letter.seq).unwrap_or(0);
    let Some((kind, id)) = log.subjects().parse(&letter.subject) else {
        return Ok(RefoldAnswer::StillDead {
            seq,
            reason: format!("its subject {} names no aggregate", letter.subject),
        });
    };
    let history = log.history(kind, id).await?;
    let letters = Letters {
        name,
        subject: &letter.subject,
        seq,
    };
    let subjects = log.subjects();
    let answer = match kind {
        AggregateKind::Agent => {
            write::<Agent>(&txn, &letters, subjects, &history, checkpoint).await
        }
        AggregateKind::Task => write::<Task>(&txn, &letters, subjects, &history, checkpoint).await,
        AggregateKind::Project => {
            write::<Project>(&txn, &letters, subjects, &history, checkpoint).await
        }
    }?;
    let answer = match answer {
        Ok(mut refolded) => {
            txn.commit().await?;
            refolded.dead_letter_id = dead_letter;
            tracing::info!(%kind, %id, seq, resolved = ?refolded.resolved, "dead letter re-folded");
            RefoldAnswer::Refolded(refolded)
        }
        Err(reason) => RefoldAnswer::StillDead { seq, reason },
    };
    Ok(answer)
}

/// The dead letter asked about: its projection, its aggregate's subject and its event.
struct Letters<'a> {
    name: &'a str,
    subject: &'a str,
    seq: u64,
}

/// Aggregate `id`'s `history` folded up to `checkpoint` as the projector folds it (passing over what
/// it cannot fold), and the events it could not fold, with why.
pub fn fold_history<A: Aggregate>(
    subjects: &Subjects,
    id: Uuid,
    history: &[RawEvent],
    checkpoint: u64,
) -> (Folded<A>, BTreeMap<u64, String>) {
    let replay = Replay::new(subjects.clone(), OnRejected::Skip).until(Until::Seq(checkpoint));
    let mut folded = Folded::new(id);
    let mut refused = BTreeMap::new();
    for raw in history {
        match replay.feed_stored(&mut folded, raw.seq, &raw.subject, &raw.payload) {
            Ok(Fed::Folded) => {}
            Ok(Fed::Past) => break,
            Ok(Fed::Skipped(rejected)) | Err(rejected) => {
                refused.insert(rejected.seq, rejected.reason);
            }
        }
    }
    (folded, refused)
}

/// Folds the history; if the dead letter's event folds now, writes the aggregate's row, its status
/// count and its dead letters in `txn` (the caller commits) and answers what changed (its dead
/// letter's id left to the caller), else why it does not fold.
async fn write<A: ReadModel>(
    txn: &DatabaseTransaction,
    letters: &Letters<'_>,
    subjects: &Subjects,
    history: &[RawEvent],
    checkpoint: u64,
) -> Result<Result<Refolded, String>, DbErr>
where
    <A::Entity as EntityTrait>::Model: IntoActiveModel<<A::Entity as EntityTrait>::ActiveModel>,
    <A::Entity as EntityTrait>::ActiveModel: ActiveModelTrait<Entity = A::Entity> + Send,
{
    let Some((kind, id)) = subjects.parse(letters.subject) else {
        return Ok(Err("its subject names no aggregate".into()));
    };
    let (folded, refused) = fold_history::<A>(subjects, id, history, checkpoint);
    if let Some(reason) = refused.get(&letters.seq) {
        return Ok(Err(reason.clone()));
    }
    let Some(state) = folded.state else {
        return Ok(Err(format!(
            "{kind} {id} has no event up to the checkpoint"
        )));
    };
    if let Some(counted) = A::COUNTED_AS {
        recount(
            txn,
            counted,
            <A::Entity as Default>::default().table_name(),
            id,
            state.status(),
        )
        .await?;
    }
    let row = A::to_row(id, &state, folded.last_seq);
    batch::upsert::<A>(txn, vec![row.into_active_model().reset_all()]).await?;

    // Its dead letters become exactly the events this fold refuses.
    let recorded = dead_letters::Entity::find()
        .filter(dead_letters::Column::Projection.eq(letters.name))
        .filter(dead_letters::Column::Subject.eq(letters.subject))
        .all(txn)
        .await?;
    let resolved: Vec<(i64, u64)> = recorded
        .iter()
        .map(|d| (d.id, u64::try_from(d.seq).unwrap_or(0)))
        .filter(|(_, seq)| !refused.contains_key(seq))
        .collect();
    dead_letters::Entity::delete_many()
        .filter(dead_letters::Column::Id.is_in(resolved.iter().map(|(id, _)| *id)))
        .exec(txn)
        .await?;
    let new: Vec<_> = history
        .iter()
        .filter_map(|raw| {
            let reason = refused.get(&raw.seq)?;
            Some(batch::dead_letter(letters.name, raw, reason.clone()))
        })
        .collect();
    batch::insert_dead_letters(txn, &new).await?;
    Ok(Ok(Refolded {
        dead_letter_id: 0,
        seq: letters.seq,
        aggregate: kind,
        aggregate_id: id,
        checkpoint,
        resolved: resolved.into_iter().map(|(_, seq)| seq).collect(),
        dead_letters: refused.into_keys().collect(),
    }))
}

/// Moves aggregate `id` of `table` (counted as `kind`) from the status its row is counted under to
/// `after` in `status_counts`. The row's own status column says where it is counted, read as it is:
/// the row may be unreadable for the domain (the reason its events were dead letters). A status
/// nothing is counted under takes nothing away.
async fn recount(
    txn: &DatabaseTransaction,
    kind: &'static str,
    table: &str,
    id: Uuid,
    after: &'static str,
) -> Result<(), DbErr> {
    let backend = txn.get_database_backend();
    let before = txn
        .query_one_raw(Statement::from_sql_and_values(
            backend,
            format!("SELECT status FROM \"{table}\" WHERE id = $1"),
            [id.into()],
        ))
        .await?
        .map(|row| row.try_get::<String>("", "status"))
        .transpose()?;
    if before.as_deref() == Some(after) {
        return Ok(());
    }
    if let Some(before) = before {
        use hive_schema::status_counts::{Column, Entity};
        Entity::update_many()
            .col_expr(Column::Count, Expr::col(Column::Count).sub(1))
            .filter(Column::Kind.eq(kind))
            .filter(Column::Status.eq(before))
            .filter(Column::Count.gt(0))
            .exec(txn)
            .await?;
    }
    batch::write_counts(txn, BTreeMap::from([((kind, after), 1)])).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use hive_events::project::ProjectEvent;
    use hive_events::{Actor, EventMeta};

    fn subjects() -> Subjects {
        Subjects::new("hive.events")
    }

    fn raw(seq: u64, id: Uuid, payload: Vec<u8>) -> RawEvent {
        RawEvent {
            seq,
            subject: subjects().of(AggregateKind::Project, id),
            payload: Bytes::from(payload),
            msg_id: None,
            pending: 0,
        }
    }

    fn created(id: Uuid, name: &str) -> Vec<u8> {
        let meta = EventMeta::new(chrono::Utc::now(), Uuid::now_v7(), None, Actor::new("test"));
        let event = ProjectEvent::ProjectCreated {
            name: name.into(),
            description: None,
            project_type: None,
        };
        hive_events::envelope::encode(&meta, AggregateKind::Project, id, &event)
    }

    /// A dead letter of an earlier build (its event at 3) that this build folds: nothing is refused,
    /// and nothing past the checkpoint is folded.
    #[test]
    fn a_history_that_folds_now_is_folded_up_to_the_checkpoint() {
        let id = Uuid::now_v7();
        let history = [
            raw(3, id, created(id, "p")),
            raw(9, id, b"beyond the checkpoint".to_vec()),
        ];
        let (folded, refused) = fold_history::<Project>(&subjects(), id, &history, 5);
        assert!(refused.is_empty(), "{refused:?}");
        assert_eq!(folded.last_seq, 3);
        assert_eq!(folded.state.expect("folded").name, "p");
    }

    #[test]
    fn what_still_cannot_be_folded_says_why_and_the_rest_folds() {
        let id = Uuid::now_v7();
        let history = [
            raw(3, id, created(id, "p")),
            raw(4, id, b"{\"not\": \"an event\"}".to_vec()),
            raw(6, id, created(id, "again")),
            raw(7, id, created(id, "a\u{0}b")),
        ];
        let (folded, refused) = fold_history::<Project>(&subjects(), id, &history, 10);
        assert_eq!(refused.keys().copied().collect::<Vec<_>>(), [4, 6, 7]);
        assert!(refused[&4].contains("malformed"), "{refused:?}");
        assert!(refused[&7].contains("NUL"), "{refused:?}");
        assert_eq!(folded.last_seq, 3, "the state before what it refused");
        assert_eq!(folded.state.expect("folded").name, "p");
    }
}
