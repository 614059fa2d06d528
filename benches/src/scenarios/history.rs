//! History: a command on an aggregate with a long history beside the same command on a fresh one, on
//! one `hive up`. The command path loads the long one from its snapshot and the events after it
//! (`hive_eventlog::snapshot`), so the two should cost about the same; the whole history's fold, which
//! every command paid before, is measured beside them.

use std::time::{Duration, Instant};

use hive_client::Method;
use hive_eventlog::{CommandContext, EventLog};
use hive_events::aggregate::Aggregate;
use hive_events::task::{Lifecycle, TaskCommand};
use hive_events::{Actor, AgentId};
use uuid::Uuid;

use super::{Servers, memory_row, rate, row};
use crate::report::{Latencies, Row, Table, peak_rss_mib};
use crate::wait::eventually;

/// Loads of the whole history measured (each reads every event).
const WHOLE_LOADS: usize = 5;

/// Commands on each fresh task before the next one is made: so few that it never has a snapshot.
const FRESH_FOR: u32 = 32;

fn ctx(key: &str) -> CommandContext {
    let mut ctx = CommandContext::new(Actor::new("bench"));
    ctx.idempotent("bench", key);
    ctx
}

/// `samples` progress reports over HTTP on a task with `events` progress reports in its history,
/// each beside one on a fresh task (a few events long, never snapshotted); loads of that history
/// with and without its snapshot.
pub async fn history(servers: &Servers, events: u64, samples: u32) -> anyhow::Result<Vec<Table>> {
    let (hive, backends) = servers.hive("history").await?;
    let http = hive.http();
    let log = &backends.log;
    let agent = register_agent(&http).await?;
    let long = running_task(&hive, &http, log, agent).await?;
    let mut fresh = running_task(&hive, &http, log, agent).await?;
    let began = Instant::now();
    let head = fill(log, long, agent, events).await?;
    let filled = began.elapsed();

    // The first command folds the whole history, and the hive saves its snapshot behind it.
    let mut first = Latencies::default();
    first.measure(report(&http, long, agent, "first")).await?;
    let bucket = async_nats::jetstream::new(log.client())
        .get_key_value(log.namespace().aggregate_snapshots())
        .await?;
    let key = hive_eventlog::snapshot::key::<Lifecycle>(long);
    eventually(
        Duration::from_secs(60),
        Duration::from_millis(10),
        "the long task's snapshot",
        async || {
            let value = bucket.get(&key).await?;
            let seq = value
                .and_then(|v| serde_json::from_slice::<serde_json::Value>(&v).ok())
                .and_then(|v| v["seq"].as_u64());
            Ok(seq.filter(|&seq| seq >= head).map(|_| ()))
        },
    )
    .await?;

    // Interleaved, so that the machine's moods weigh on both alike.
    let (mut on_long, mut on_fresh) = (Latencies::default(), Latencies::default());
    let (mut long_time, mut fresh_time) = (Duration::ZERO, Duration::ZERO);
    for n in 0..samples {
        if n > 0 && n % FRESH_FOR == 0 {
            fresh = running_task(&hive, &http, log, agent).await?;
        }
        let began = Instant::now();
        on_fresh
            .measure(report(&http, fresh, agent, &format!("fresh {n}")))
            .await?;
        fresh_time += began.elapsed();
        let began = Instant::now();
        on_long
            .measure(report(&http, long, agent, &format!("long {n}")))
            .await?;
        long_time += began.elapsed();
    }
    let (whole, from_snapshot) = loads(log, long).await?;
    let (fresh_p50, fresh_p99, _) = on_fresh.summary();
    let (long_p50, long_p99, _) = on_long.summary();
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
    let fresh_rate = rate(u64::from(samples), fresh_time);
    let snapshots = snapshot_counts(&http).await?;
    let rows: Vec<Row> = vec![
        row(
            "progress on a fresh task (the raw limit of this run)",
            Some(fresh_rate),
            None,
            Some(&mut on_fresh),
            format!("{samples} reports, one at a time; a new task every {FRESH_FOR}"),
        ),
        row(
            format!("progress on a task with {events} reports (snapshot + tail)"),
            Some(rate(u64::from(samples), long_time)),
            Some(fresh_rate),
            Some(&mut on_long),
            format!(
                "×{:.2} p50, ×{:.2} p99 of the fresh task's; {snapshots}",
                ratio(long_p50, fresh_p50),
                ratio(long_p99, fresh_p99)
            ),
        ),
        row(
            "the first command on it (folds it whole, saves the snapshot)",
            None,
            None,
            Some(&mut first),
            format!(
                "{events} reports appended in {:.1} s before",
                filled.as_secs_f64()
            ),
        ),
        whole,
        from_snapshot,
        memory_row("hive peak RSS", peak_rss_mib(Some(hive.pid()))),
    ];
    Ok(vec![Table {
        title: format!("history: a command on a task of {events} events"),
        rows,
    }])
}

/// Registers an agent (never ready: the scheduler leaves its tasks to the bench).
async fn register_agent(http: &hive_client::Client) -> anyhow::Result<AgentId> {
    let registered = http
        .post(
            "/api/v1/agents",
            &serde_json::json!({"agent_type": "bench", "max_concurrent_tasks": 2}),
        )
        .await?;
    let id = registered["agent_id"].as_str().unwrap_or_default();
    Ok(AgentId::from_uuid(id.parse()?))
}

/// A task created through the API, assigned to `agent` (by hand, with a lease of a day), accepted and
/// started.
async fn running_task(
    hive: &crate::hive_process::HiveProcess,
    http: &hive_client::Client,
    log: &EventLog,
    agent: AgentId,
) -> anyhow::Result<Uuid> {
    let created = hive.post_task(http, "history".into()).await?;
    let task: Uuid = created["task_id"].as_str().unwrap_or_default().parse()?;
    let assign = TaskCommand::Assign {
        agent_id: agent,
        lease_expires_at: chrono::Utc::now() + chrono::Duration::days(1),
    };
    log.execute::<Lifecycle>(task, &ctx(&format!("assign {task}")), assign)
        .await?;
    for action in ["accept", "start"] {
        http.post(
            &format!("/api/v1/tasks/{task}/{action}"),
            &serde_json::json!({"agent_id": agent}),
        )
        .await?;
    }
    Ok(task)
}

/// Appends `events` progress reports to `task`, each decided on the state folded here (no load): a
/// long history without paying its fold once per event. The last sequence.
async fn fill(log: &EventLog, task: Uuid, agent: AgentId, events: u64) -> anyhow::Result<u64> {
    let loaded = log.load::<Lifecycle>(task).await?;
    let mut state = loaded
        .state
        .ok_or_else(|| anyhow::anyhow!("no task {task}"))?;
    let mut seq = loaded.last_seq;
    for n in 0..events {
        let command = progress(agent, n);
        let ctx = ctx(&format!("fill {n}"));
        let event = Lifecycle::decide(Some(&state), command.clone())?;
        seq = log
            .execute_on::<Lifecycle>(task, &ctx, command, state.clone(), seq)
            .await?
            .seq;
        state = Lifecycle::apply(Some(state), &event, ctx.now)?;
    }
    Ok(seq)
}

fn progress(agent_id: AgentId, n: u64) -> TaskCommand {
    TaskCommand::Progress {
        agent_id,
        percent: Some((n % 100) as u8),
        message: Some(format!("step {n}")),
    }
}

/// One progress report over HTTP, a raw single request (the figure measures the server).
async fn report(
    http: &hive_client::Client,
    task: Uuid,
    agent: AgentId,
    key: &str,
) -> anyhow::Result<()> {
    let r = http
        .request(Method::POST, &format!("/api/v1/tasks/{task}/progress"))
        .header("Idempotency-Key", key)
        .json(&serde_json::json!({"agent_id": agent, "percent": 50}))
        .send()
        .await?;
    anyhow::ensure!(r.status() == 200, "progress: {}", r.status());
    r.bytes().await?;
    Ok(())
}

/// Loads of the long task in this process: the whole history (as every command did before), and
/// from the snapshot.
async fn loads(log: &EventLog, task: Uuid) -> anyhow::Result<(Row, Row)> {
    let config = hive_eventlog::LogConfig {
        namespace: log.namespace().clone(),
        ..Default::default()
    };
    let whole_log = EventLog::open_existing(log.client(), &config).await?;
    let mut whole = Latencies::default();
    let mut folded = 0;
    for _ in 0..WHOLE_LOADS {
        folded = whole
            .measure(whole_log.load::<Lifecycle>(task))
            .await?
            .events
            .len();
    }
    let mut from_snapshot = Latencies::default();
    let mut tail = 0;
    for _ in 0..WHOLE_LOADS * 20 {
        let loaded = from_snapshot.measure(log.load::<Lifecycle>(task)).await?;
        anyhow::ensure!(loaded.snapshot.is_some(), "a load from the snapshot");
        tail = loaded.events.len();
    }
    Ok((
        row(
            "load of its whole history (no snapshot; library)",
            None,
            None,
            Some(&mut whole),
            format!("{folded} events, one direct get each"),
        ),
        row(
            "load from its snapshot (library)",
            None,
            None,
            Some(&mut from_snapshot),
            format!("{tail} events past the snapshot"),
        ),
    ))
}

/// What the hive's command path did with snapshots, from its metrics.
async fn snapshot_counts(http: &hive_client::Client) -> anyhow::Result<String> {
    let text = http
        .request(Method::GET, "/metrics")
        .send()
        .await?
        .text()
        .await?;
    let sum = |name: &str| -> u64 {
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|n| n as u64)
            .sum()
    };
    Ok(format!(
        "{} loads from a snapshot, {} saved, {} ignored",
        sum("hive_snapshot_loads_total"),
        sum("hive_snapshots_saved_total"),
        sum("hive_snapshots_ignored_total")
    ))
}
