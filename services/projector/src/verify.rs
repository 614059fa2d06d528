//! `hive verify`: the read models against a clean fold of the log, row by row and field by field.
//!
//! It reads the tables and their checkpoint in one repeatable-read snapshot, then folds the log up to that
//! checkpoint, so a projector that keeps running meanwhile causes no false difference. The index of the
//! tasks each agent held is compared over the stretch of the log it says it covers (all of it, but on
//! a database upgraded in place and not rebuilt since).

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
    /// The index of the tasks each agent held differs on a pair: missing (`actual` none), extra
    /// (`expected` none), or held first at another event.
    AgentTask {
        /// The agent.
        agent: Uuid,
        /// The task.
        task: Uuid,
        /// The first event the log says named the agent as the task's holder.
        expected: Option<u64>,
        /// The one the index holds.
        actual: Option<u64>,
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
            Self::AgentTask {
                agent,
                task,
                expected,
                actual,
            } => match (expected, actual) {
                (Some(expected), None) => write!(
                    f,
                    "agent_tasks {agent} {task}: missing from the read model (first held at \
                     {expected})"
                ),
                (None, Some(actual)) => write!(
                    f,
                    "agent_tasks {agent} {task}: in the read model (first held at {actual}), not \
                     in the log"
                ),
                (expected, actual) => write!(
                    f,
                    "agent_tasks {agent} {task}: first held at {} in the read model, {} from the \
                     log",
                    seq_or_none(*actual),
                    seq_or_none(*expected),
                ),
            },
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

fn seq_or_none(seq: Option<u64>) -> String {
    seq.map_or_else(|| "none".to_owned(), |s| s.to_string())
}

/// What a verification found.
#[derive(Debug)]
pub struct Report {
    /// The checkpoint compared at.
    pub checkpoint: u64,
    /// Events folded.
    pub events: u64,
    /// Rows compared (agents, tasks, projects and agent_tasks).
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
    // The index as it should be over the stretch of the log it says it covers.
    let folder = crate::fold::Folder::new(log.subjects().clone())
        .indexing(actual.agent_tasks_after, actual.agent_tasks_through);
    let at = hive_eventlog::audit::At::Seq(actual.last_seq);
    let expected = crate::fold::fold_into(log, folder, at).await?;
    Ok(Report {
        checkpoint: actual.last_seq,
        events: expected.last_seq,
        rows: expected.agents.len()
            + expected.tasks.len()
            + expected.projects.len()
            + expected.agent_tasks.len(),
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
    let pairs: std::collections::BTreeSet<_> = expected
        .agent_tasks
        .keys()
        .chain(actual.agent_tasks.keys())
        .collect();
    for pair @ &(agent, task) in pairs {
        let (e, a) = (
            expected.agent_tasks.get(pair).copied(),
            actual.agent_tasks.get(pair).copied(),
        );
        if e != a {
            found.push(Difference::AgentTask {
                agent,
                task,
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
