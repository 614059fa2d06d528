//! The auditor's and the operator's reads through a hive's API (`--api URL`), with a viewer token: the
//! same records as reading the log itself, paged from `GET /api/v1/events` and the entities' histories
//! (an agent's tasks from `GET /api/v1/agents/{id}/tasks`, and the log only where that index does not
//! reach); an entity's past state folded here from its history, by the same fold; the projections'
//! standing.

use std::collections::BTreeSet;

use hive_client::{Client, ErrorCode, TasksHeld};
use hive_eventlog::RawEvent;
use hive_eventlog::audit::{At, Record};
use hive_events::AggregateKind;
use hive_events::subject::Subjects;
use hive_projector::status::ProjectionStatus;
use uuid::Uuid;

use crate::ops::AuditQuery;

/// Events asked for a page.
const PAGE: usize = 1_000;

/// The records `query` selects, read through the API.
pub async fn audit_records(client: &Client, query: AuditQuery) -> anyhow::Result<Vec<Record>> {
    match query {
        AuditQuery::Entity(kind, id) => history(client, kind, id).await,
        AuditQuery::Correlation(flow) => {
            let records = log(client, &format!("correlation_id={flow}"), 0, None).await?;
            anyhow::ensure!(!records.is_empty(), "no event of flow {flow} in the log");
            Ok(records)
        }
        AuditQuery::AgentWork(agent) => {
            let mut all = history(client, AggregateKind::Agent, agent).await?;
            for task in tasks_held(client, agent).await? {
                all.extend(history(client, AggregateKind::Task, task).await?);
            }
            all.sort_by_key(|r| r.seq);
            Ok(all)
        }
        AuditQuery::Log { from, to } => {
            let mut filter = Vec::new();
            let after = match from {
                Some(At::Seq(seq)) => seq.saturating_sub(1),
                Some(At::Time(time)) => {
                    filter.push(format!("since={}", query_time(time)));
                    0
                }
                Some(At::End) => return Ok(Vec::new()),
                None => 0,
            };
            let last = match to {
                Some(At::Seq(seq)) => Some(seq),
                Some(At::Time(time)) => {
                    filter.push(format!("until={}", query_time(time)));
                    None
                }
                Some(At::End) | None => None,
            };
            log(client, &filter.join("&"), after, last).await
        }
    }
}

/// Every task `agent` ever held: the tasks `GET /api/v1/agents/{id}/tasks` answers from the index,
/// and those the log's task events name outside the stretch of the log the index covers (its tail
/// after the checkpoint; on a database upgraded in place, its beginning), by the rule the index is
/// kept by ([`Record::holding`]). An agent the read models do not know yet (or an API without the
/// route) has no index to read: every task event of the log is read instead.
async fn tasks_held(client: &Client, agent: Uuid) -> anyhow::Result<BTreeSet<Uuid>> {
    let held = match client.tasks_held(agent).await {
        Err(e) if e.is(ErrorCode::NotFound) => TasksHeld::default(),
        held => held?,
    };
    let mut tasks: BTreeSet<Uuid> = held.tasks.into_iter().collect();
    let mut outside = vec![(held.indexed_through, None)];
    if held.indexed_after > 0 {
        outside.push((0, Some(held.indexed_after)));
    }
    for (after, last) in outside {
        for record in log(client, "aggregate=task", after, last).await? {
            if let Some((task, holder)) = record.holding()
                && holder == agent
            {
                tasks.insert(task);
            }
        }
    }
    Ok(tasks)
}

/// An entity's history as the log holds it, rebuilt from the records the API answers, on `subjects`:
/// folded by [`crate::ops::state`] exactly as the log's own events are.
pub async fn raw_history(
    client: &Client,
    subjects: &Subjects,
    kind: AggregateKind,
    id: Uuid,
) -> anyhow::Result<Vec<RawEvent>> {
    let records = history(client, kind, id).await?;
    Ok(records.iter().map(|r| r.raw(subjects)).collect())
}

/// Each projection's standing, as `GET /api/v1/projections` answers it.
pub async fn projections(client: &Client) -> anyhow::Result<Vec<ProjectionStatus>> {
    let answer = client.get("/api/v1/projections").await?;
    Ok(serde_json::from_value(answer["projections"].clone())?)
}

/// An RFC 3339 time as a query value (`+` would read as a space).
fn query_time(time: chrono::DateTime<chrono::Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// One entity's history.
async fn history(client: &Client, kind: AggregateKind, id: Uuid) -> anyhow::Result<Vec<Record>> {
    let answer = client.history(kind, id).await?;
    Ok(serde_json::from_value(answer["events"].clone())?)
}

/// The log after `after` (up to `last`, if given) through `filter`, page by page.
async fn log(
    client: &Client,
    filter: &str,
    mut after: u64,
    last: Option<u64>,
) -> anyhow::Result<Vec<Record>> {
    let mut records = Vec::new();
    let mut last = last;
    loop {
        let path = format!("/api/v1/events?after_seq={after}&limit={PAGE}&{filter}");
        let page = client.get(&path).await?;
        // The log as it is now, as reading it directly does: no further than its head at the start.
        if let Some(head) = page["head"].as_u64() {
            last = Some(last.map_or(head, |l| l.min(head)));
        }
        let items: Vec<Record> = serde_json::from_value(page["items"].clone())?;
        let beyond = items
            .iter()
            .position(|r| last.is_some_and(|last| r.seq > last));
        let done = beyond.is_some();
        records.extend(items.into_iter().take(beyond.unwrap_or(usize::MAX)));
        after = page["last_seq"].as_u64().unwrap_or(after);
        if done || page["more"] != true || last.is_some_and(|last| after >= last) {
            return Ok(records);
        }
    }
}
