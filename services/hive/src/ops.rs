//! The operators' and auditors' commands: `hive projections rebuild|status`, `hive verify`, `hive audit`.
//!
//! Long because the operators' commands share the audit's records, tables and scans; each is short.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use hive_eventlog::audit::{At, Record, state_at};
use hive_eventlog::{EventLog, RawEvent};
use hive_events::agent::Agent;
use hive_events::project::Project;
use hive_events::task::Task;
use hive_events::{Aggregate, AggregateKind};
use hive_projector::rebuild::{Progress, Stage, rebuild};
use hive_projector::rows::ReadModel;
use sea_orm::DatabaseConnection;
use uuid::Uuid;

use crate::Backends;

/// `hive projections rebuild`: rebuilds `names` one after another, with a progress bar on a terminal
/// and a log line every few seconds otherwise.
pub async fn rebuild_projections(backends: &Backends, names: &[String]) -> anyhow::Result<()> {
    for name in names {
        anyhow::ensure!(
            name == hive_projector::READ_MODELS,
            "no projection named {name:?} (there is one: {})",
            hive_projector::READ_MODELS
        );
        let mut report = reporter(name);
        let rebuilt = rebuild(
            &backends.db,
            &backends.log,
            name,
            Default::default(),
            &mut report,
        )
        .await
        .with_context(|| format!("rebuild {name}"))?
        .context("the rebuild did not run")?;
        let rate = rebuilt.replayed as f64 / rebuilt.elapsed.as_secs_f64().max(1e-9);
        println!(
            "{name}: rebuilt to seq {} ({} events replayed, {} caught up, {} rows, {} dead letters) in {:.2} s ({rate:.0} events/s); the swap held the tables {} ms",
            rebuilt.checkpoint,
            rebuilt.replayed,
            rebuilt.caught_up,
            rebuilt.rows,
            rebuilt.dead_letters,
            rebuilt.elapsed.as_secs_f64(),
            rebuilt.swap.as_millis(),
        );
    }
    Ok(())
}

/// A progress reporter: a bar (events/s, ETA) on a terminal, a plain line every 2 s otherwise.
fn reporter(name: &str) -> impl FnMut(Progress) {
    let on_terminal = std::io::stderr().is_terminal();
    let bar = indicatif::ProgressBar::new(0);
    if on_terminal {
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} {msg:12} [{bar:40}] {pos}/{len} ({per_sec}, ETA {eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(name.to_owned());
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let name = name.to_owned();
    let mut stage = None;
    let mut last_line = std::time::Instant::now();
    move |p: Progress| {
        let label = match p.stage {
            Stage::Replaying => "replaying",
            Stage::Writing => "writing rows",
            Stage::CatchingUp => "catching up",
            Stage::Swapping => "swapping",
        };
        let entered = stage != Some(p.stage);
        if entered {
            stage = Some(p.stage);
            bar.reset();
            bar.set_message(label);
        }
        bar.set_length(p.total);
        bar.set_position(p.done);
        if !on_terminal && (entered || last_line.elapsed() >= Duration::from_secs(2)) {
            last_line = std::time::Instant::now();
            eprintln!("{name}: {label} {}/{}", p.done, p.total);
        }
        if p.stage == Stage::Swapping {
            bar.finish_and_clear();
        }
    }
}

/// `hive projections status`.
pub fn projections_status(
    all: &[hive_projector::status::ProjectionStatus],
    json: bool,
) -> anyhow::Result<()> {
    if json {
        for p in all {
            println!("{}", serde_json::to_string(p)?);
        }
        return Ok(());
    }
    println!(
        "{:<16} {:>12} {:>12} {:>10} {:>12}  UPDATED",
        "PROJECTION", "CHECKPOINT", "HEAD", "LAG", "DEAD LETTERS"
    );
    for p in all {
        println!(
            "{:<16} {:>12} {:>12} {:>10} {:>12}  {}",
            p.name,
            p.checkpoint,
            p.head,
            p.lag,
            p.dead_letters,
            p.updated_at
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        );
    }
    Ok(())
}

/// `hive verify`: prints every difference; an error (a non-zero exit) if there is any.
pub async fn verify(backends: &Backends) -> anyhow::Result<()> {
    let began = std::time::Instant::now();
    let report =
        hive_projector::verify::verify(&backends.db, &backends.log, hive_projector::READ_MODELS)
            .await?;
    let mut out = std::io::stdout().lock();
    for difference in &report.differences {
        writeln!(out, "{difference}")?;
    }
    writeln!(
        out,
        "verified {} rows against {} events (checkpoint {}) in {:.2} s: {} difference{}",
        report.rows,
        report.events,
        report.checkpoint,
        began.elapsed().as_secs_f64(),
        report.differences.len(),
        if report.differences.len() == 1 {
            ""
        } else {
            "s"
        },
    )?;
    anyhow::ensure!(
        report.differences.is_empty(),
        "the read models differ from the log"
    );
    Ok(())
}

/// What `hive audit` prints.
#[derive(Clone, Debug)]
pub enum AuditQuery {
    /// One entity's history.
    Entity(AggregateKind, Uuid),
    /// An agent's own history and that of every task it touched.
    AgentWork(Uuid),
    /// Every event of one flow (correlation id).
    Correlation(Uuid),
    /// The log between two points (each end included; open when absent).
    Log {
        /// From this point.
        from: Option<At>,
        /// Up to this point.
        to: Option<At>,
    },
}

/// `hive audit ...`: the records, as a table or as JSON lines; an agent's tasks are found through the
/// index of `db`, if given ([`crate::agent_work`]).
pub async fn audit(
    log: &EventLog,
    db: Option<&DatabaseConnection>,
    query: AuditQuery,
    json: bool,
) -> anyhow::Result<()> {
    let causes = matches!(query, AuditQuery::Correlation(_));
    print_records(&audit_records(log, db, query).await?, json, causes)
}

/// Prints `records` as a table (with what caused each, for one flow), or as JSON lines.
pub fn print_records(records: &[Record], json: bool, causes: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        for record in records {
            writeln!(out, "{}", serde_json::to_string(record)?)?;
        }
    } else if causes {
        write!(out, "{}", flow_table(records))?;
    } else {
        write!(out, "{}", table(records))?;
    }
    Ok(())
}

/// One flow's records as a table, each with what caused it: `#<seq>` for an event of the flow, the
/// id of a request or of an event outside it, `-` when unknown.
pub fn flow_table(records: &[Record]) -> String {
    let seq_of: std::collections::HashMap<Uuid, u64> = records
        .iter()
        .filter_map(|r| Some((r.event_id?, r.seq)))
        .collect();
    let causes = records.iter().map(|r| match r.causation_id {
        Some(cause) => seq_of
            .get(&cause)
            .map_or_else(|| cause.to_string(), |seq| format!("#{seq}")),
        None => "-".to_owned(),
    });
    let mut rows = rows(records);
    for (row, cause) in rows
        .iter_mut()
        .zip(std::iter::once("CAUSED BY".to_owned()).chain(causes))
    {
        // Before DATA, the last column.
        row.insert(row.len() - 1, cause);
    }
    aligned(&rows)
}

/// Task histories read at once by `hive audit agent`.
const HISTORIES_AT_ONCE: usize = 8;

/// The records a query selects, in log order; an agent's tasks are found through the index of `db`,
/// if given, and in the log's task events otherwise ([`crate::agent_work::tasks_held`]).
pub async fn audit_records(
    log: &EventLog,
    db: Option<&DatabaseConnection>,
    query: AuditQuery,
) -> anyhow::Result<Vec<Record>> {
    let subjects = log.subjects().clone();
    match query {
        AuditQuery::Entity(kind, id) => {
            let history = log.history(kind, id).await?;
            anyhow::ensure!(!history.is_empty(), "no {} {id} in the log", kind.as_str());
            Ok(history.iter().map(|r| Record::of(r, &subjects)).collect())
        }
        AuditQuery::Correlation(flow) => {
            let mut records = Vec::new();
            scan(log, None, None, |raw| {
                let record = Record::of(raw, &subjects);
                if record.correlation_id == Some(flow) {
                    records.push(record);
                }
            })
            .await?;
            anyhow::ensure!(!records.is_empty(), "no event of flow {flow} in the log");
            Ok(records)
        }
        AuditQuery::AgentWork(agent) => {
            let own = log.history(AggregateKind::Agent, agent).await?;
            anyhow::ensure!(!own.is_empty(), "no agent {agent} in the log");
            let tasks = crate::agent_work::tasks_held(log, db, agent).await?;
            // Each task's history by its subject, a few at a time.
            let histories: Vec<Vec<RawEvent>> = futures::stream::iter(tasks)
                .map(|task| log.history(AggregateKind::Task, task))
                .buffer_unordered(HISTORIES_AT_ONCE)
                .try_collect()
                .await?;
            let mut all: Vec<RawEvent> = own;
            all.extend(histories.into_iter().flatten());
            all.sort_by_key(|r| r.seq);
            Ok(all.iter().map(|r| Record::of(r, &subjects)).collect())
        }
        AuditQuery::Log { from, to } => {
            let mut records = Vec::new();
            scan(log, from, to, |raw| {
                records.push(Record::of(raw, &subjects))
            })
            .await?;
            Ok(records)
        }
    }
}

/// Calls `each` for every event from `from` to `to` (both included; open ends when absent), up to the
/// log's last event at the time of the call.
async fn scan(
    log: &EventLog,
    from: Option<At>,
    to: Option<At>,
    mut each: impl FnMut(&RawEvent),
) -> anyhow::Result<()> {
    let head = log.last_seq().await?;
    if head == 0 {
        return Ok(());
    }
    let mut events = match from {
        None => Box::pin(log.read_from(1).await?.boxed()),
        Some(At::End) => return Ok(()),
        Some(At::Seq(seq)) => {
            if seq > head {
                return Ok(());
            }
            Box::pin(log.read_from(seq).await?.boxed())
        }
        // The stream seeks by the time an event was stored, which is just after it occurred: seek a
        // minute early (clocks differ) and skip what occurred before `time`.
        Some(At::Time(time)) => Box::pin(
            log.read_from_time(time - chrono::Duration::minutes(1))
                .await?
                .boxed(),
        ),
    };
    let mut started = !matches!(from, Some(At::Time(_)));
    loop {
        // A start time after the last event leaves the reader waiting for new ones: stop at the head.
        let next = tokio::time::timeout(Duration::from_secs(2), events.next()).await;
        let Ok(Some(event)) = next else {
            break;
        };
        let event = event?;
        match to {
            Some(At::Seq(seq)) if event.seq > seq => break,
            Some(At::Time(time))
                if Record::of(&event, log.subjects())
                    .occurred_at
                    .is_some_and(|t| t > time) =>
            {
                break;
            }
            _ => {}
        }
        if !started {
            let occurred = Record::of(&event, log.subjects()).occurred_at;
            started = match (occurred, from) {
                (Some(occurred), Some(At::Time(time))) => occurred >= time,
                _ => false,
            };
        }
        if started {
            each(&event);
        }
        if event.seq >= head {
            break;
        }
    }
    Ok(())
}

/// Records as an aligned table.
pub fn table(records: &[Record]) -> String {
    aligned(&rows(records))
}

/// A header and a row per record: SEQ, OCCURRED AT, AGGREGATE, ID, TYPE, ACTOR, DATA.
fn rows(records: &[Record]) -> Vec<Vec<String>> {
    let header = [
        "SEQ",
        "OCCURRED AT",
        "AGGREGATE",
        "ID",
        "TYPE",
        "ACTOR",
        "DATA",
    ];
    let mut rows = vec![header.map(str::to_owned).to_vec()];
    for r in records {
        let data = match (&r.error, r.data.is_null()) {
            (Some(error), _) => format!("unreadable: {error}"),
            (None, true) => String::new(),
            (None, false) => r.data.to_string(),
        };
        let data = if data.chars().count() > 120 {
            format!("{}…", data.chars().take(119).collect::<String>())
        } else {
            data
        };
        rows.push(vec![
            r.seq.to_string(),
            r.occurred_at
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_default(),
            r.aggregate
                .map(|k| k.as_str().to_owned())
                .unwrap_or_default(),
            r.aggregate_id.map(|id| id.to_string()).unwrap_or_default(),
            r.event_type.clone().unwrap_or_default(),
            r.actor.clone().unwrap_or_default(),
            data,
        ]);
    }
    rows
}

/// `rows` with every column but the last padded to its widest cell.
pub(crate) fn aligned(rows: &[Vec<String>]) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == columns {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `hive audit state KIND ID --at SEQ|TIME`: the entity as it was then, as its read-model row: pretty
/// JSON, or one compact JSON line with `json`.
pub fn state(
    history: &[RawEvent],
    subjects: &hive_events::subject::Subjects,
    kind: AggregateKind,
    id: Uuid,
    at: At,
    json: bool,
) -> anyhow::Result<()> {
    anyhow::ensure!(!history.is_empty(), "no {} {id} in the log", kind.as_str());
    let row = match kind {
        AggregateKind::Agent => row_json::<Agent>(history, subjects, id, at),
        AggregateKind::Task => row_json::<Task>(history, subjects, id, at),
        AggregateKind::Project => row_json::<Project>(history, subjects, id, at),
    }
    .with_context(|| format!("{} {id} did not exist yet then", kind.as_str()))?;
    let text = if json {
        serde_json::to_string(&row)?
    } else {
        serde_json::to_string_pretty(&row)?
    };
    println!("{text}");
    Ok(())
}

fn row_json<A>(
    history: &[RawEvent],
    subjects: &hive_events::subject::Subjects,
    id: Uuid,
    at: At,
) -> Option<serde_json::Value>
where
    A: ReadModel + Aggregate,
    <A::Entity as sea_orm::EntityTrait>::Model: serde::Serialize,
{
    let (folded, seq) = state_at::<A>(history, subjects, id, at)?;
    serde_json::to_value(A::to_row(id, &folded, seq)).ok()
}
