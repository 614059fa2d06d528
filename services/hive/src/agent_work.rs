//! `hive audit agent ID` on the log itself: which tasks the agent ever held, at a cost that follows
//! the agent's work rather than the log's length.
//!
//! The tasks come from the projector's index (`agent_tasks`, read with the stretch of the log it
//! covers in one snapshot, [`hive_projector::agent_tasks::held`]); the log is read only outside that
//! stretch — its tail after the projection's checkpoint, and on a database upgraded in place and not
//! rebuilt since, its events before the index began — and only its task events, by the same rule the
//! projector indexes by ([`hive_eventlog::audit::holding`]). Without a read-model database (none
//! configured, unreachable, or older than the index), the whole log's task events are read instead,
//! with a warning: slower, never different.

use std::collections::BTreeSet;

use hive_eventlog::audit::holding;
use hive_eventlog::{EventLog, RawEvent};
use hive_events::AggregateKind;
use hive_projector::agent_tasks::{Held, Page, held};
use sea_orm::DatabaseConnection;
use uuid::Uuid;

/// Events a reader takes from the log at a time.
const PAGE: usize = 10_000;

/// The read-model database at `url` (if any) for the index of an agent's tasks; `None`, with a
/// warning on stderr, when there is none or it cannot be reached: the audit then reads the log.
pub async fn index(url: Option<&str>) -> Option<DatabaseConnection> {
    let Some(url) = url else {
        eprintln!(
            "warning: no read-model database (HIVE_DATABASE_URL) to find the agent's tasks in: \
             reading every task event of the log instead (slower, same answer)"
        );
        return None;
    };
    match crate::open_reader(url).await {
        Ok(db) => Some(db),
        Err(e) => {
            eprintln!(
                "warning: {e:#}: reading every task event of the log for the agent's tasks instead \
                 (slower, same answer)"
            );
            None
        }
    }
}

/// Every task `agent` ever held, as the log says: from the index of `db` where it covers the log,
/// from the log's task events elsewhere (all of them without an index).
pub async fn tasks_held(
    log: &EventLog,
    db: Option<&DatabaseConnection>,
    agent: Uuid,
) -> anyhow::Result<BTreeSet<Uuid>> {
    let indexed = match db {
        Some(db) => match held(db, hive_projector::READ_MODELS, agent, Page::default()).await {
            Ok(indexed) => Some(indexed),
            Err(e) => {
                eprintln!(
                    "warning: the read models' index of the agents' tasks cannot be read ({e}; \
                     is the database migrated?): reading every task event of the log instead \
                     (slower, same answer)"
                );
                None
            }
        },
        None => None,
    };
    // The head after the index: the log holds every event the index reflects.
    let head = log.last_seq().await?;
    let indexed = indexed.unwrap_or_else(Held::default);
    let mut tasks: BTreeSet<Uuid> = indexed.tasks.iter().map(|(task, _)| *task).collect();
    for (first, last) in indexed.unindexed(head) {
        each_task_event(log, first, last, |raw| {
            if let Some((task, holder)) = holding(raw, log.subjects())
                && holder == agent
            {
                tasks.insert(task);
            }
        })
        .await?;
    }
    Ok(tasks)
}

/// Calls `each` for every task event from `first` to `last` (both included), in order, read a page at
/// a time by a reader of the tasks' subjects only.
async fn each_task_event(
    log: &EventLog,
    first: u64,
    last: u64,
    mut each: impl FnMut(&RawEvent),
) -> anyhow::Result<()> {
    let tasks = log.subjects().matching(Some(AggregateKind::Task), None);
    let mut from = first;
    while from <= last {
        let (page, more) = log.page(from, tasks.clone(), PAGE).await?;
        for raw in page.iter().take_while(|raw| raw.seq <= last) {
            each(raw);
        }
        match page.last() {
            Some(raw) if more > 0 => from = raw.seq + 1,
            _ => break,
        }
    }
    Ok(())
}
