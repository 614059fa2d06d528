//! `hive verify`: the read models against a clean fold of the log, row by row and field by field.
//!
//! It reads the tables and their checkpoint in one repeatable-read snapshot, then folds the log up to that
//! checkpoint, so a projector that keeps running meanwhile causes no false difference.

use std::collections::BTreeMap;
use std::fmt;

use hive_eventlog::EventLog;
use sea_orm::{AccessMode, DatabaseConnection, IsolationLevel, TransactionTrait};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::ProjectorError;
use crate::fold::{Folded, read_models};

/// One way the read models differ from the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Difference {
    /// A row the log implies is missing.
    Missing {
        /// The table.
        table: &'static str,
        /// The row's id.
        id: Uuid,
    },
    /// A row that the log does not imply.
    Extra {
        /// The table.
        table: &'static str,
        /// The row's id.
        id: Uuid,
    },
    /// A field holds something else than the log implies.
    Field {
        /// The table.
        table: &'static str,
        /// The row's id.
        id: Uuid,
        /// The column.
        field: String,
        /// What the log implies.
        expected: Value,
        /// What the table holds.
        actual: Value,
    },
    /// A status count differs.
    Count {
        /// `agent` or `task`.
        kind: String,
        /// The status.
        status: String,
        /// From the log.
        expected: i64,
        /// In the table.
        actual: i64,
    },
    /// An event is a dead letter on one side only.
    DeadLetter {
        /// Its sequence.
        seq: u64,
        /// Whether the log says it must be one.
        expected: bool,
    },
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing { table, id } => write!(f, "{table} {id}: missing from the read model"),
            Self::Extra { table, id } => {
                write!(f, "{table} {id}: in the read model, not in the log")
            }
            Self::Field {
                table,
                id,
                field,
                expected,
                actual,
            } => write!(
                f,
                "{table} {id}: {field} is {actual} in the read model, {expected} from the log"
            ),
            Self::Count {
                kind,
                status,
                expected,
                actual,
            } => write!(
                f,
                "status_counts {kind}/{status}: {actual} in the read model, {expected} from the log"
            ),
            Self::DeadLetter {
                seq,
                expected: true,
            } => {
                write!(f, "dead_letters: event {seq} should be one and is not")
            }
            Self::DeadLetter {
                seq,
                expected: false,
            } => write!(f, "dead_letters: event {seq} is one and should not be"),
        }
    }
}

/// What a verification found.
#[derive(Debug)]
pub struct Report {
    /// The checkpoint compared at.
    pub checkpoint: u64,
    /// Events folded.
    pub events: u64,
    /// Rows compared (agents, tasks and projects).
    pub rows: usize,
    /// Every difference, in table and id order.
    pub differences: Vec<Difference>,
}

/// Compares the read models of `projection` in `db` with the log.
pub async fn verify(
    db: &DatabaseConnection,
    log: &EventLog,
    projection: &str,
) -> Result<Report, ProjectorError> {
    let txn = db
        .begin_with_config(
            Some(IsolationLevel::RepeatableRead),
            Some(AccessMode::ReadOnly),
        )
        .await?;
    let actual = read_models(&txn, projection).await?;
    txn.commit().await?;
    let expected =
        crate::fold::fold_until(log, hive_eventlog::audit::At::Seq(actual.last_seq)).await?;
    Ok(Report {
        checkpoint: actual.last_seq,
        events: expected.last_seq,
        rows: expected.agents.len() + expected.tasks.len() + expected.projects.len(),
        differences: differences(&expected, &actual),
    })
}

/// Every difference between `expected` (the log's fold) and `actual` (the tables).
pub fn differences(expected: &Folded, actual: &Folded) -> Vec<Difference> {
    let mut found = Vec::new();
    table("agents", &expected.agents, &actual.agents, &mut found);
    table("tasks", &expected.tasks, &actual.tasks, &mut found);
    table("projects", &expected.projects, &actual.projects, &mut found);
    let kinds: std::collections::BTreeSet<_> =
        expected.counts.keys().chain(actual.counts.keys()).collect();
    for key in kinds {
        let (e, a) = (
            expected.counts.get(key).copied().unwrap_or(0),
            actual.counts.get(key).copied().unwrap_or(0),
        );
        if e != a {
            found.push(Difference::Count {
                kind: key.0.clone(),
                status: key.1.clone(),
                expected: e,
                actual: a,
            });
        }
    }
    for seq in expected.dead.symmetric_difference(&actual.dead) {
        found.push(Difference::DeadLetter {
            seq: *seq,
            expected: expected.dead.contains(seq),
        });
    }
    found
}

fn table<M: Serialize + PartialEq>(
    name: &'static str,
    expected: &BTreeMap<Uuid, M>,
    actual: &BTreeMap<Uuid, M>,
    found: &mut Vec<Difference>,
) {
    for (id, want) in expected {
        match actual.get(id) {
            None => found.push(Difference::Missing {
                table: name,
                id: *id,
            }),
            Some(have) if have != want => {
                let (Ok(Value::Object(want)), Ok(Value::Object(have))) =
                    (serde_json::to_value(want), serde_json::to_value(have))
                else {
                    continue;
                };
                for (field, expected) in want {
                    let actual = have.get(&field).cloned().unwrap_or(Value::Null);
                    if actual != expected {
                        found.push(Difference::Field {
                            table: name,
                            id: *id,
                            field,
                            expected,
                            actual,
                        });
                    }
                }
            }
            Some(_) => {}
        }
    }
    for id in actual.keys().filter(|id| !expected.contains_key(id)) {
        found.push(Difference::Extra {
            table: name,
            id: *id,
        });
    }
}
