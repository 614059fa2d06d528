//! Rebuild: load a log, read it raw, project it, rebuild the read models from it, verify them, and read
//! single histories (directly and over HTTP).

use hive_client::Method;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hive::Backends;
use hive_eventlog::EventLog;
use rand::seq::IndexedRandom;

use super::project::project_backlog;
use super::{Servers, rate, row, unique};
use crate::report::{Latencies, Row, Table, peak_rss_mib};
use crate::wait::eventually;

/// Histories read, each way.
const PICKS: u64 = 1_000;

/// A row of a rate and a note alone.
fn rate_row(what: &str, rate: f64, raw: Option<f64>, note: String) -> Row {
    Row {
        what: what.into(),
        rate: Some(rate),
        raw,
        latency: None,
        rss: None,
        note,
    }
}

/// Load → raw read → project → rebuild → verify → histories.
pub async fn rebuild(servers: &Servers, events: u64) -> anyhow::Result<Vec<Table>> {
    let namespace = unique("bench");
    let backends = servers.backends(&namespace).await?;
    let log = &backends.log;
    let mut rows = Vec::new();

    let began = Instant::now();
    let loaded = crate::load::load(log, events).await?;
    let load_time = began.elapsed();
    let head = log.last_seq().await?;
    rows.push(rate_row(
        "load (raw JetStream publish, 2,048 acks in flight)",
        rate(loaded.events, load_time),
        None,
        format!(
            "{} events in {:.1} s",
            loaded.events,
            load_time.as_secs_f64()
        ),
    ));
    let (raw_read, read_row) = raw_read(log, head).await?;
    rows.push(read_row);
    rows.extend(project_rebuild_verify(&backends, head, raw_read).await?);
    rows.push(histories_direct(log, &loaded.tasks).await?);
    rows.extend(histories_over_http(servers, &namespace, &loaded.tasks, head, raw_read).await?);
    rows.push(Row {
        what: "peak RSS of this process (load, project, rebuild, verify)".into(),
        rate: None,
        raw: None,
        latency: None,
        rss: Some(peak_rss_mib(None)),
        note: "the bench process, not a Hive service: it held the generated log".into(),
    });
    Ok(vec![Table {
        title: format!("rebuild: {head} events"),
        rows,
    }])
}

/// The raw limit of reading: the ordered consumer, no decoding. Answers its rate too.
async fn raw_read(log: &EventLog, head: u64) -> anyhow::Result<(f64, Row)> {
    let began = Instant::now();
    let mut reader = Box::pin(log.read_from(1).await?);
    let mut bytes = 0usize;
    while let Some(event) = reader.next().await {
        let event = event?;
        bytes += event.payload.len();
        if event.seq >= head {
            break;
        }
    }
    drop(reader);
    let raw_read = rate(head, began.elapsed());
    let note = format!("{:.0} MB", bytes as f64 / 1e6);
    Ok((
        raw_read,
        rate_row(
            "raw read of the log (ordered consumer)",
            raw_read,
            None,
            note,
        ),
    ))
}

/// The projector batch by batch from an empty database, a rebuild (shadow + swap), and a verify, each
/// beside the raw read.
async fn project_rebuild_verify(
    backends: &Backends,
    head: u64,
    raw_read: f64,
) -> anyhow::Result<Vec<Row>> {
    let log = &backends.log;
    let (project_time, _) = project_backlog(backends, head).await?;
    let projected = rate_row(
        "project (incremental, from empty)",
        rate(head, project_time),
        Some(raw_read),
        format!("{:.1} s", project_time.as_secs_f64()),
    );

    let rebuilt = hive_projector::rebuild::rebuild(
        &backends.db,
        log,
        hive_projector::READ_MODELS,
        Default::default(),
        |_| {},
    )
    .await?
    .expect("a rebuild");
    let rebuilt = rate_row(
        "rebuild (shadow + swap)",
        rate(rebuilt.replayed, rebuilt.elapsed),
        Some(raw_read),
        format!(
            "{:.1} s, {} rows, swap held the tables {} ms",
            rebuilt.elapsed.as_secs_f64(),
            rebuilt.rows,
            rebuilt.swap.as_millis()
        ),
    );

    let began = Instant::now();
    let report =
        hive_projector::verify::verify(&backends.db, log, hive_projector::READ_MODELS).await?;
    let verify_time = began.elapsed();
    anyhow::ensure!(
        report.differences.is_empty(),
        "verify found {} differences",
        report.differences.len()
    );
    let verified = rate_row(
        "verify (fold + compare)",
        rate(report.events, verify_time),
        Some(raw_read),
        format!("{:.1} s, clean", verify_time.as_secs_f64()),
    );
    Ok(vec![projected, rebuilt, verified])
}

/// One entity's history, by direct gets, of tasks picked at random.
async fn histories_direct(log: &EventLog, tasks: &[uuid::Uuid]) -> anyhow::Result<Row> {
    let mut latencies = Latencies::default();
    let mut rng = rand::rng();
    let began = Instant::now();
    for _ in 0..PICKS {
        let task = *tasks.choose(&mut rng).expect("tasks");
        let history = latencies
            .measure(log.history(hive_events::AggregateKind::Task, task))
            .await?;
        anyhow::ensure!(history.len() >= 6, "a task's history");
    }
    Ok(row(
        "one task's history (direct gets)",
        Some(rate(PICKS, began.elapsed())),
        None,
        Some(&mut latencies),
        String::new(),
    ))
}

/// The same over HTTP, as an auditor asks for it: `GET /api/v1/tasks/{id}/events` of a hive on this
/// log, once its scheduler has folded the log (it reports its queue only when caught up).
async fn histories_over_http(
    servers: &Servers,
    namespace: &str,
    tasks: &[uuid::Uuid],
    head: u64,
    raw_read: f64,
) -> anyhow::Result<Vec<Row>> {
    let hive = crate::hive_process::HiveProcess::start(servers, namespace).await?;
    let http = hive.http();
    eventually(
        Duration::from_secs(300),
        Duration::from_millis(200),
        "the hive's scheduler caught up",
        async || {
            let metrics = http
                .request(Method::GET, "/metrics")
                .send()
                .await?
                .text()
                .await?;
            Ok(metrics.contains("hive_scheduler_queue_depth").then_some(()))
        },
    )
    .await?;
    let mut latencies = Latencies::default();
    let mut rng = rand::rng();
    let began = Instant::now();
    for _ in 0..PICKS {
        let task = *tasks.choose(&mut rng).expect("tasks");
        let body: serde_json::Value = latencies
            .measure(async {
                let response = http
                    .request(Method::GET, &format!("/api/v1/tasks/{task}/events"))
                    .send()
                    .await?;
                anyhow::ensure!(response.status() == 200, "history: {}", response.status());
                anyhow::Ok(response.json().await?)
            })
            .await?;
        anyhow::ensure!(
            body["events"].as_array().is_some_and(|e| e.len() >= 6),
            "a task's history"
        );
    }
    let histories = row(
        "one task's history over HTTP (GET /api/v1/tasks/{id}/events)",
        Some(rate(PICKS, began.elapsed())),
        None,
        Some(&mut latencies),
        "sequential; the API's whole path, auth included",
    );
    let catch_up = catch_up_over_http(&http, &hive.base, head, raw_read).await?;
    Ok(vec![histories, catch_up])
}

/// A reader catching up with the whole log over HTTP, as an integrator would: `GET /api/v1/events`
/// pages of 1,000, each asked after the last one's `last_seq`, beside the raw ordered read.
async fn catch_up_over_http(
    http: &hive_client::Client,
    base: &str,
    head: u64,
    raw_read: f64,
) -> anyhow::Result<Row> {
    let mut latencies = Latencies::default();
    let (mut after, mut events) = (0u64, 0u64);
    let began = Instant::now();
    loop {
        let url = format!("{base}/api/v1/events?after_seq={after}&limit=1000");
        let page: serde_json::Value = latencies
            .measure(async {
                let response = http.request(Method::GET, &url).send().await?;
                anyhow::ensure!(response.status() == 200, "events: {}", response.status());
                anyhow::Ok(response.json().await?)
            })
            .await?;
        events += page["items"].as_array().map_or(0, |i| i.len() as u64);
        after = page["last_seq"].as_u64().unwrap_or(after);
        if page["more"] != true || after >= head {
            break;
        }
    }
    anyhow::ensure!(events >= head, "read {events} of {head} events");
    Ok(row(
        "the log over HTTP (GET /api/v1/events, pages of 1,000, by after_seq)",
        Some(rate(events, began.elapsed())),
        Some(raw_read),
        Some(&mut latencies),
        format!("{events} events; latencies per page"),
    ))
}
