//! Ingest: commands appended, as raw JetStream publishes, through the library, and over HTTP.

use std::time::{Duration, Instant};

use futures::StreamExt;
use hive_eventlog::EventLog;
use hive_events::envelope::{EventMeta, encode};
use hive_events::task::{NewTask, Task, TaskCommand};
use hive_events::{Actor, AggregateKind};

use super::{Servers, rate, row, unique, wrk_row};
use crate::report::{Latencies, Row, Table};

fn task_created(n: u64) -> hive_events::task::TaskEvent {
    hive_events::task::TaskEvent::TaskCreated {
        title: format!("bench {n}"),
        description: None,
        task_type: None,
        priority: hive_events::Priority::NORMAL,
        required_capabilities: vec![],
        depends_on: vec![],
        waiting_on: vec![],
        project_id: None,
        pinned_agent: None,
        max_attempts: 3,
        labels: Default::default(),
        not_before: None,
        limits: Default::default(),
    }
}

/// Commands appended: raw JetStream publish of the same payloads, the library's command path
/// (pipelined), and HTTP commands from 64 clients (wrk).
pub async fn ingest(servers: &Servers, commands: u64, seconds: u32) -> anyhow::Result<Vec<Table>> {
    let namespace = unique("ingest");
    let backends = servers.backends(&namespace).await?;
    let log = &backends.log;
    let (raw, raw_row) = raw_publish(log, commands).await?;
    let mut rows = vec![raw_row, library_commands(log, commands, raw).await?];
    rows.extend(http_commands(servers, seconds, raw).await?);
    Ok(vec![Table {
        title: "ingest".into(),
        rows,
    }])
}

/// Raw: the same envelopes, encoded here, published with 2,048 acks in flight. Answers the rate too
/// (the raw limit of the others).
async fn raw_publish(log: &EventLog, commands: u64) -> anyhow::Result<(f64, Row)> {
    let actor = Actor::new("bench");
    let payloads: Vec<_> = (0..commands)
        .map(|n| {
            let id = uuid::Uuid::now_v7();
            let meta = EventMeta::new(
                chrono::Utc::now(),
                uuid::Uuid::now_v7(),
                None,
                actor.clone(),
            );
            (
                log.subjects().of(AggregateKind::Task, id),
                encode(&meta, AggregateKind::Task, id, &task_created(n)).into(),
            )
        })
        .collect();
    let began = Instant::now();
    crate::load::publish(log, payloads).await?;
    let raw = rate(commands, began.elapsed());
    Ok((
        raw,
        row(
            "raw JetStream publish (2,048 acks in flight)",
            Some(raw),
            None,
            None,
            format!("{commands} events"),
        ),
    ))
}

/// The library: decide + append with optimistic concurrency, 256 commands in flight.
async fn library_commands(log: &EventLog, commands: u64, raw: f64) -> anyhow::Result<Row> {
    let ctx = hive_eventlog::CommandContext::new(Actor::new("bench"));
    let began = Instant::now();
    let results: Vec<anyhow::Result<Duration>> = futures::stream::iter(0..commands)
        .map(|n| {
            let ctx = &ctx;
            async move {
                let t = Instant::now();
                let new = NewTask::titled(format!("bench {n}"));
                log.create::<Task>(uuid::Uuid::now_v7(), ctx, TaskCommand::Create(new))
                    .await?;
                Ok(t.elapsed())
            }
        })
        .buffer_unordered(256)
        .collect()
        .await;
    let elapsed = began.elapsed();
    // Timed one by one inside the pipeline (a `&mut` cannot be shared by 256 in flight), then gathered.
    let mut latencies = Latencies::default();
    for r in results {
        latencies.push(r?);
    }
    Ok(row(
        "library commands (256 in flight)",
        Some(rate(commands, elapsed)),
        Some(raw),
        Some(&mut latencies),
        format!("{commands} commands in {:.1} s", elapsed.as_secs_f64()),
    ))
}

/// HTTP: POST /api/v1/tasks from 64 connections, against hive up as its own process, beside its
/// trivial handler; then from one.
async fn http_commands(servers: &Servers, seconds: u32, raw: f64) -> anyhow::Result<Vec<Row>> {
    let (hive, _) = servers.hive("ingesthttp").await?;
    let trivial = crate::wrk::run(
        &hive.token,
        &format!("{}/livez", hive.base),
        64,
        seconds,
        None,
    )?;
    let http = crate::wrk::run(
        &hive.token,
        &format!("{}/api/v1/tasks", hive.base),
        64,
        seconds,
        Some(crate::wrk::POST_TASK),
    )?;
    let mut posted = wrk_row(
        "HTTP POST /api/v1/tasks, 64 clients".into(),
        &http,
        Some(raw),
        String::new(),
    );
    posted.rss = Some(crate::hive_process::rss_mib(hive.pid()));
    // A lone client: what one command costs when it has no company to share anything with.
    let alone = crate::wrk::run(
        &hive.token,
        &format!("{}/api/v1/tasks", hive.base),
        1,
        seconds,
        Some(crate::wrk::POST_TASK),
    )?;
    Ok(vec![
        wrk_row(
            "trivial handler GET /livez, 64 clients".into(),
            &trivial,
            None,
            String::new(),
        ),
        posted,
        wrk_row(
            "HTTP POST /api/v1/tasks, 1 client".into(),
            &alone,
            None,
            String::new(),
        ),
    ])
}
