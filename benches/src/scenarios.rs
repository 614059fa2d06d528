//! The scenarios.

use std::time::{Duration, Instant};

use futures::StreamExt;
use hive::Backends;
use hive_devservers::{Durability, NatsServer, Postgres};
use hive_projector::{Projector, ProjectorConfig};
use rand::seq::IndexedRandom;

use crate::report::{Latencies, Row, Table, peak_rss_mib};

/// The servers a run uses: started here unless given.
pub struct Servers {
    /// NATS.
    pub nats_url: String,
    /// The database.
    pub database_url: String,
    _nats: Option<NatsServer>,
    _pg: Option<Postgres>,
    _dir: tempfile::TempDir,
}

impl Servers {
    /// Starts what is not given.
    pub async fn start(
        nats: Option<String>,
        db: Option<String>,
        nats_sync_always: bool,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let durability = if nats_sync_always {
            Durability::Safe
        } else {
            Durability::Throwaway
        };
        let (nats_url, nats) = match nats {
            Some(url) => (url, None),
            None => {
                let server =
                    NatsServer::start(&dir.path().join("nats"), None, durability, &[]).await?;
                (server.url(), Some(server))
            }
        };
        let (database_url, pg) = match db {
            Some(url) => (url, None),
            None => {
                // The durability `hive up` runs with.
                let pg = Postgres::start(&dir.path().join("pg"), None, Durability::Safe).await?;
                (pg.url("hive_bench"), Some(pg))
            }
        };
        Ok(Self {
            nats_url,
            database_url,
            _nats: nats,
            _pg: pg,
            _dir: dir,
        })
    }

    /// The URL of database `name` on the run's PostgreSQL: each scenario has its own.
    pub fn database(&self, name: &str) -> String {
        match self.database_url.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{name}"),
            None => self.database_url.clone(),
        }
    }

    /// A hive process and connected backends for scenario `name`, in a namespace and a database of its
    /// own.
    pub async fn hive(
        &self,
        name: &str,
    ) -> anyhow::Result<(crate::hive_process::HiveProcess, Backends)> {
        let namespace = unique(name);
        let hive = crate::hive_process::HiveProcess::start(
            &self.nats_url,
            &self.database(&namespace),
            &namespace,
        )
        .await?;
        Ok((hive, self.backends(&namespace).await?))
    }

    /// Connected, migrated backends in namespace `namespace`, with a database of the same name.
    pub async fn backends(&self, namespace: &str) -> anyhow::Result<Backends> {
        let config = hive::Config {
            namespace: namespace.into(),
            ..hive::Config::default()
        };
        hive::connect(&config, &self.nats_url, &self.database(namespace), true).await
    }
}

/// A name no other run of this process used: namespaces and databases are per run.
pub fn unique(prefix: &str) -> String {
    static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}{}r{run}", std::process::id())
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

/// Runs the projector from an empty database until it has applied event `head`: the time it took and
/// each batch's time (from the previous checkpoint to the next).
async fn project_backlog(backends: &Backends, head: u64) -> anyhow::Result<(Duration, Latencies)> {
    let projector = Projector::new(
        backends.db.clone(),
        backends.log.clone(),
        ProjectorConfig {
            rebuild_when_empty: false,
            ..ProjectorConfig::default()
        },
    );
    let mut checkpoint = projector.checkpoint();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let began = Instant::now();
    let running = tokio::spawn(projector.run(async move {
        let _ = stopped.await;
    }));
    let mut batches = Latencies::default();
    let mut last = Instant::now();
    while *checkpoint.borrow_and_update() < head {
        checkpoint.changed().await?;
        batches.push(last.elapsed());
        last = Instant::now();
    }
    let elapsed = began.elapsed();
    let _ = stop.send(());
    running.await??;
    Ok((elapsed, batches))
}

/// Events per second into the read models: the projector on a backlog, batch by batch (each batch one
/// transaction: read the rows it touches, upsert them, the status counts, the checkpoint), beside the
/// raw limit of writing as many rows of the same shape with plain multi-row inserts, in transactions of
/// the projector's largest batch.
pub async fn project(servers: &Servers, events: u64) -> anyhow::Result<Vec<Table>> {
    use hive_schema::tasks;
    use sea_orm::{
        ActiveModelTrait, ConnectionTrait, EntityTrait, IntoActiveModel, TransactionTrait,
    };
    let namespace = unique("project");
    let backends = servers.backends(&namespace).await?;
    crate::load::load(&backends.log, events).await?;
    let head = backends.log.last_seq().await?;
    let (elapsed, mut batches) = project_backlog(&backends, head).await?;
    let projected = rate(head, elapsed);

    // The raw limit: `head` task rows, as the projector wrote them, inserted into a copy of the table.
    let rows: Vec<tasks::Model> = tasks::Entity::find().all(&backends.db).await?;
    anyhow::ensure!(!rows.is_empty(), "the projection wrote no task");
    backends
        .db
        .execute_unprepared(
            "DROP SCHEMA IF EXISTS raw_limit CASCADE; CREATE SCHEMA raw_limit; \
             CREATE TABLE raw_limit.tasks (LIKE public.tasks INCLUDING ALL)",
        )
        .await?;
    let mut options = sea_orm::ConnectOptions::new(servers.database(&namespace));
    options
        .max_connections(1)
        .set_schema_search_path("raw_limit")
        .sqlx_logging(false);
    let raw_db = sea_orm::Database::connect(options).await?;
    let per_transaction = ProjectorConfig::default().batch_max;
    let per_statement = 1_000;
    let mut transactions = Latencies::default();
    let mut written = 0u64;
    let mut source = rows.iter().cycle();
    let began = Instant::now();
    while written < head {
        let n = per_transaction.min((head - written) as usize);
        let batch: Vec<tasks::Model> = source
            .by_ref()
            .take(n)
            .map(|row| tasks::Model {
                id: uuid::Uuid::now_v7(),
                ..row.clone()
            })
            .collect();
        let t = Instant::now();
        let txn = raw_db.begin().await?;
        for chunk in batch.chunks(per_statement) {
            tasks::Entity::insert_many(
                chunk
                    .iter()
                    .map(|row| row.clone().into_active_model().reset_all()),
            )
            .exec_without_returning(&txn)
            .await?;
        }
        txn.commit().await?;
        transactions.push(t.elapsed());
        written += n as u64;
    }
    let raw = rate(written, began.elapsed());
    raw_db.close().await?;
    backends
        .db
        .execute_unprepared("DROP SCHEMA raw_limit CASCADE")
        .await?;
    Ok(vec![Table {
        title: format!("project ({head} events)"),
        rows: vec![
            row(
                format!("raw multi-row inserts ({per_transaction} rows a transaction)"),
                Some(raw),
                None,
                Some(&mut transactions),
                format!("{written} task rows; latency per transaction"),
            ),
            row(
                "projector on a backlog (events into the read models)",
                Some(projected),
                Some(raw),
                Some(&mut batches),
                format!(
                    "{:.1} s; latency per batch (up to {per_transaction} events)",
                    elapsed.as_secs_f64()
                ),
            ),
        ],
    }])
}

/// What the hive's processes hold: the sum of their resident sets, and of their proportional sets
/// (shared pages, like the one binary's code, counted once).
struct Footprint {
    rss: f64,
    pss: f64,
    processes: usize,
    /// The hive's own (the first process).
    hive_rss: f64,
}

fn footprint_of(hive: &crate::hive_process::HiveProcess) -> Footprint {
    let pids = hive.pids();
    Footprint {
        rss: pids.iter().map(|p| crate::hive_process::rss_mib(*p)).sum(),
        pss: pids.iter().map(|p| crate::report::pss_mib(*p)).sum(),
        processes: pids.len(),
        hive_rss: crate::hive_process::rss_mib(pids[0]),
    }
}

/// The memory of every hive process (`hive up` and the agents it spawned), idle and under a load of
/// commands (64 clients creating tasks, which the scheduler assigns and the agents run) and reads (100
/// clients on `/status`) at once.
pub async fn footprint(servers: &Servers, agents: u32, seconds: u32) -> anyhow::Result<Vec<Table>> {
    let (hive, _) = servers.hive("footprint").await?;
    let http = hive.http();
    for _ in 0..agents {
        let r = http
            .post(format!("{}/api/v1/agents/spawn", hive.base))
            .json(&serde_json::json!({"exec": "true", "max_concurrent_tasks": 4}))
            .send()
            .await?;
        anyhow::ensure!(r.status() == 201, "spawn: {}", r.status());
        let spawned: serde_json::Value = r.json().await?;
        let id = spawned["agent_id"].as_str().unwrap_or_default().to_owned();
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let view: serde_json::Value = http
                    .get(format!("{}/api/v1/agents/{id}", hive.base))
                    .send()
                    .await?
                    .json()
                    .await?;
                if view["status"] == "ready" {
                    return anyhow::Ok(());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .map_err(|_| anyhow::anyhow!("agent {id} not ready within 20 s"))??;
    }
    let idle = footprint_of(&hive);

    let (post_url, read_url) = (
        format!("{}/api/v1/tasks", hive.base),
        format!("{}/status", hive.base),
    );
    let (post_token, read_token) = (hive.token.clone(), hive.token.clone());
    let posting = tokio::task::spawn_blocking(move || {
        crate::wrk::run(
            &post_token,
            &post_url,
            64,
            seconds,
            Some(crate::wrk::POST_TASK),
        )
    });
    let reading = tokio::task::spawn_blocking(move || {
        crate::wrk::run(&read_token, &read_url, 100, seconds, None)
    });
    let mut peak = Footprint {
        rss: 0.0,
        pss: 0.0,
        processes: 0,
        hive_rss: 0.0,
    };
    while !(posting.is_finished() && reading.is_finished()) {
        let now = footprint_of(&hive);
        if now.rss > peak.rss {
            peak.rss = now.rss;
            peak.processes = now.processes;
            peak.hive_rss = now.hive_rss;
        }
        peak.pss = peak.pss.max(now.pss);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (posted, read) = (posting.await??, reading.await??);
    let after = footprint_of(&hive);
    let memory = |what: String, f: &Footprint| Row {
        what,
        rate: None,
        raw: None,
        latency: None,
        rss: Some(f.rss),
        note: format!(
            "{} processes (the hive {:.0} MiB); PSS {:.0} MiB (shared pages once)",
            f.processes, f.hive_rss, f.pss
        ),
    };
    Ok(vec![Table {
        title: format!("footprint (hive up + {agents} spawned agents, {seconds} s of load)"),
        rows: vec![
            memory("all hive processes, idle".into(), &idle),
            wrk_row(
                "under load: POST /api/v1/tasks, 64 clients".into(),
                &posted,
                None,
                String::new(),
            ),
            wrk_row(
                "under load: GET /status, 100 clients".into(),
                &read,
                None,
                String::new(),
            ),
            memory("all hive processes, peak under the load".into(), &peak),
            memory("all hive processes, after the load".into(), &after),
        ],
    }])
}

/// Many more clients than the machine has cores (2,000 by default): every request is answered, served
/// or shed at once with 503 `overloaded` when more than `HIVE_HTTP_MAX_IN_FLIGHT` are in the works,
/// none times out, and the API serves normally as soon as the load stops.
pub async fn overload(
    servers: &Servers,
    tasks: u64,
    clients: u32,
    seconds: u32,
) -> anyhow::Result<Vec<Table>> {
    let (hive, backends) = servers.hive("overload").await?;
    crate::load::load(&backends.log, tasks * 6).await?;
    let head = backends.log.last_seq().await?;
    let http = hive.http();
    hive.wait_projected(&http, head).await?;
    let mut rows = Vec::new();
    for path in ["/status", "/api/v1/tasks?status=queued"] {
        let r = crate::wrk::run(
            &hive.token,
            &format!("{}{path}", hive.base),
            clients,
            seconds,
            None,
        )?;
        rows.push(wrk_row(
            format!("GET {path}, {clients} clients"),
            &r,
            None,
            format!(", of which {} shed (503 overloaded)", r.non_2xx),
        ));
    }
    let mut after = sequential_gets(&http, &format!("{}/status", hive.base), 20).await?;
    rows.push(row(
        "GET /status once the load stops",
        None,
        None,
        Some(&mut after),
        "20 sequential requests, all 200",
    ));
    rows.push(memory_row("hive peak RSS", peak_rss_mib(Some(hive.pid()))));
    Ok(vec![Table {
        title: format!("overload ({clients} clients, {seconds} s per run)"),
        rows,
    }])
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
    rows.push(Row {
        what: "load (raw JetStream publish, 2,048 acks in flight)".into(),
        rate: Some(rate(loaded.events, load_time)),
        raw: None,
        latency: None,
        rss: None,
        note: format!(
            "{} events in {:.1} s",
            loaded.events,
            load_time.as_secs_f64()
        ),
    });

    // The raw limit of reading: the ordered consumer, no decoding.
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
    let read_time = began.elapsed();
    let raw_read = rate(head, read_time);
    rows.push(Row {
        what: "raw read of the log (ordered consumer)".into(),
        rate: Some(raw_read),
        raw: None,
        latency: None,
        rss: None,
        note: format!("{:.0} MB", bytes as f64 / 1e6),
    });

    // The projector, batch by batch, from an empty database.
    let (project_time, _) = project_backlog(&backends, head).await?;
    rows.push(Row {
        what: "project (incremental, from empty)".into(),
        rate: Some(rate(head, project_time)),
        raw: Some(raw_read),
        latency: None,
        rss: None,
        note: format!("{:.1} s", project_time.as_secs_f64()),
    });

    let rebuilt = hive_projector::rebuild::rebuild(
        &backends.db,
        log,
        hive_projector::READ_MODELS,
        Default::default(),
        |_| {},
    )
    .await?
    .expect("a rebuild");
    rows.push(Row {
        what: "rebuild (shadow + swap)".into(),
        rate: Some(rate(rebuilt.replayed, rebuilt.elapsed)),
        raw: Some(raw_read),
        latency: None,
        rss: None,
        note: format!(
            "{:.1} s, {} rows, swap held the tables {} ms",
            rebuilt.elapsed.as_secs_f64(),
            rebuilt.rows,
            rebuilt.swap.as_millis()
        ),
    });

    let began = Instant::now();
    let report =
        hive_projector::verify::verify(&backends.db, log, hive_projector::READ_MODELS).await?;
    let verify_time = began.elapsed();
    anyhow::ensure!(
        report.differences.is_empty(),
        "verify found {} differences",
        report.differences.len()
    );
    rows.push(Row {
        what: "verify (fold + compare)".into(),
        rate: Some(rate(report.events, verify_time)),
        raw: Some(raw_read),
        latency: None,
        rss: None,
        note: format!("{:.1} s, clean", verify_time.as_secs_f64()),
    });

    // One entity's history, by direct gets.
    let mut latencies = Latencies::default();
    let mut rng = rand::rng();
    let picks = 1_000;
    let began = Instant::now();
    for _ in 0..picks {
        let task = *loaded.tasks.choose(&mut rng).expect("tasks");
        let t = Instant::now();
        let history = log.history(hive_events::AggregateKind::Task, task).await?;
        latencies.push(t.elapsed());
        anyhow::ensure!(history.len() >= 6, "a task's history");
    }
    let history_time = began.elapsed();
    rows.push(Row {
        what: "one task's history (direct gets)".into(),
        rate: Some(rate(picks, history_time)),
        raw: None,
        latency: Some((
            latencies.quantile(0.5),
            latencies.quantile(0.99),
            latencies.quantile(1.0),
        )),
        rss: None,
        note: String::new(),
    });
    // The same over HTTP, as an auditor asks for it: `GET /api/v1/tasks/{id}/events` of a hive on this
    // log, once its scheduler has folded the log (it reports its queue only when caught up).
    let hive = crate::hive_process::HiveProcess::start(
        &servers.nats_url,
        &servers.database(&namespace),
        &namespace,
    )
    .await?;
    let http = hive.http();
    let settled = Instant::now() + Duration::from_secs(300);
    while !http
        .get(format!("{}/metrics", hive.base))
        .send()
        .await?
        .text()
        .await?
        .contains("hive_scheduler_queue_depth")
    {
        anyhow::ensure!(
            Instant::now() < settled,
            "the hive's scheduler never caught up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut latencies = Latencies::default();
    let began = Instant::now();
    for _ in 0..picks {
        let task = *loaded.tasks.choose(&mut rng).expect("tasks");
        let t = Instant::now();
        let response = http
            .get(format!("{}/api/v1/tasks/{task}/events", hive.base))
            .send()
            .await?;
        anyhow::ensure!(response.status() == 200, "history: {}", response.status());
        let body: serde_json::Value = response.json().await?;
        latencies.push(t.elapsed());
        anyhow::ensure!(
            body["events"].as_array().is_some_and(|e| e.len() >= 6),
            "a task's history"
        );
    }
    rows.push(row(
        "one task's history over HTTP (GET /api/v1/tasks/{id}/events)",
        Some(rate(picks, began.elapsed())),
        None,
        Some(&mut latencies),
        "sequential; the API's whole path, auth included",
    ));
    drop(hive);
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

pub(crate) fn row(
    what: impl Into<String>,
    rate: Option<f64>,
    raw: Option<f64>,
    lat: Option<&mut Latencies>,
    note: impl Into<String>,
) -> Row {
    Row {
        what: what.into(),
        rate,
        raw,
        latency: lat.map(|l| (l.quantile(0.5), l.quantile(0.99), l.quantile(1.0))),
        rss: None,
        note: note.into(),
    }
}

/// The latencies of `n` GETs of `url` one after the other, each answered 200 and read to its end.
async fn sequential_gets(http: &reqwest::Client, url: &str, n: usize) -> anyhow::Result<Latencies> {
    let mut latencies = Latencies::default();
    for _ in 0..n {
        let t = Instant::now();
        let r = http.get(url).send().await?;
        anyhow::ensure!(r.status() == 200, "{url}: {}", r.status());
        r.bytes().await?;
        latencies.push(t.elapsed());
    }
    Ok(latencies)
}

fn memory_row(what: &str, mib: f64) -> Row {
    Row {
        what: what.into(),
        rate: None,
        raw: None,
        latency: None,
        rss: Some(mib),
        note: String::new(),
    }
}

fn wrk_row(what: String, r: &crate::wrk::WrkResult, raw: Option<f64>, note: String) -> Row {
    Row {
        what,
        rate: Some(r.rate),
        raw,
        latency: Some((r.p50, r.p99, r.max)),
        rss: None,
        note: format!("{} requests, {} errors{note}", r.requests, r.errors),
    }
}

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
    }
}

/// Commands appended: raw JetStream publish of the same payloads, the library's command path
/// (pipelined), and HTTP commands from 64 clients (wrk).
pub async fn ingest(servers: &Servers, commands: u64, seconds: u32) -> anyhow::Result<Vec<Table>> {
    use hive_events::envelope::{EventMeta, encode};
    use hive_events::task::{NewTask, Task, TaskCommand};
    use hive_events::{Actor, AggregateKind, Priority};
    let namespace = unique("ingest");
    let backends = servers.backends(&namespace).await?;
    let log = &backends.log;
    let mut rows = Vec::new();

    // Raw: the same envelopes, encoded here, published with 2,048 acks in flight.
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
    rows.push(row(
        "raw JetStream publish (2,048 acks in flight)",
        Some(raw),
        None,
        None,
        format!("{commands} events"),
    ));

    // The library: decide + append with optimistic concurrency, 256 commands in flight.
    let ctx = hive_eventlog::CommandContext::new(Actor::new("bench"));
    let mut latencies = Latencies::default();
    let began = Instant::now();
    let results: Vec<anyhow::Result<Duration>> = futures::stream::iter(0..commands)
        .map(|n| {
            let ctx = &ctx;
            async move {
                let t = Instant::now();
                let new = NewTask {
                    title: format!("bench {n}"),
                    description: None,
                    task_type: None,
                    priority: Priority::NORMAL,
                    required_capabilities: vec![],
                    depends_on: vec![],
                    waiting_on: vec![],
                    project_id: None,
                    pinned_agent: None,
                    max_attempts: 3,
                };
                log.create::<Task>(uuid::Uuid::now_v7(), ctx, TaskCommand::Create(new))
                    .await?;
                Ok(t.elapsed())
            }
        })
        .buffer_unordered(256)
        .collect()
        .await;
    let elapsed = began.elapsed();
    for r in results {
        latencies.push(r?);
    }
    rows.push(row(
        "library commands (256 in flight)",
        Some(rate(commands, elapsed)),
        Some(raw),
        Some(&mut latencies),
        format!("{commands} commands in {:.1} s", elapsed.as_secs_f64()),
    ));

    // HTTP: POST /api/v1/tasks from 64 connections, against hive up as its own process.
    let (hive, _) = servers.hive("ingesthttp").await?;
    let trivial = crate::wrk::run(
        &hive.token,
        &format!("{}/livez", hive.base),
        64,
        seconds,
        None,
    )?;
    rows.push(wrk_row(
        "trivial handler GET /livez, 64 clients".into(),
        &trivial,
        None,
        String::new(),
    ));
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
    rows.push(posted);
    Ok(vec![Table {
        title: "ingest".into(),
        rows,
    }])
}

/// Reads under load at 10, 50, 100 and 500 clients (wrk), beside the trivial handler of the same
/// server; the hive's memory idle and under the load.
pub async fn query(
    servers: &Servers,
    tasks: u64,
    seconds: u32,
    levels: &[u32],
) -> anyhow::Result<Vec<Table>> {
    let (hive, backends) = servers.hive("query").await?;
    let idle = crate::hive_process::rss_mib(hive.pid());
    // Data: a log of about `tasks` tasks' lives, projected by the hive.
    crate::load::load(&backends.log, tasks * 6).await?;
    let head = backends.log.last_seq().await?;
    let http = hive.http();
    hive.wait_projected(&http, head).await?;
    let projected = crate::hive_process::rss_mib(hive.pid());
    let one: serde_json::Value = http
        .get(format!("{}/api/v1/tasks?limit=1", hive.base))
        .send()
        .await?
        .json()
        .await?;
    let task = one["items"][0]["task_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut rows = Vec::new();
    for &clients in levels {
        let trivial = crate::wrk::run(
            &hive.token,
            &format!("{}/livez", hive.base),
            clients,
            seconds,
            None,
        )?;
        rows.push(wrk_row(
            format!("GET /livez (trivial), {clients} clients"),
            &trivial,
            None,
            String::new(),
        ));
        for path in [
            "/status".to_owned(),
            format!("/api/v1/tasks/{task}"),
            "/api/v1/tasks?status=queued".to_owned(),
        ] {
            let r = crate::wrk::run(
                &hive.token,
                &format!("{}{path}", hive.base),
                clients,
                seconds,
                None,
            )?;
            let shown = if path.starts_with("/api/v1/tasks/") {
                "/api/v1/tasks/{id}".to_owned()
            } else {
                path.clone()
            };
            rows.push(wrk_row(
                format!("GET {shown}, {clients} clients"),
                &r,
                Some(trivial.rate),
                String::new(),
            ));
        }
    }
    let after = crate::hive_process::rss_mib(hive.pid());
    for (what, mib) in [
        ("hive RSS idle (all parts in one process)", idle),
        ("hive RSS after projecting the data", projected),
        ("hive RSS after the reads", after),
        ("hive peak RSS", peak_rss_mib(Some(hive.pid()))),
    ] {
        rows.push(memory_row(what, mib));
    }
    Ok(vec![Table {
        title: format!("query ({head} events, {seconds} s per run)"),
        rows,
    }])
}

/// End-to-end latencies: agent spawn → ready, task created → assigned, event → visible in the API,
/// event → SSE client.
pub async fn chains(servers: &Servers, samples: u32) -> anyhow::Result<Vec<Table>> {
    use hive_events::AggregateKind;
    let (hive, backends) = servers.hive("chains").await?;
    let log = &backends.log;
    let nats = log.client();
    let http = hive.http();
    let mut rows = Vec::new();
    let wait_for =
        async |sub: &mut async_nats::Subscriber, event_type: &str| -> anyhow::Result<()> {
            tokio::time::timeout(Duration::from_secs(20), async {
                while let Some(m) = sub.next().await {
                    if hive_events::envelope::decode(&m.payload, None)
                        .is_ok_and(|e| e.event.event_type() == event_type)
                    {
                        return Ok(());
                    }
                }
                anyhow::bail!("the subscription ended")
            })
            .await
            .map_err(|_| anyhow::anyhow!("no {event_type} within 20 s"))?
        };

    // Spawn → ready: a real `hive agent` process each time.
    let spawns = (samples / 10).max(3);
    let mut latencies = Latencies::default();
    for _ in 0..spawns {
        let id = uuid::Uuid::now_v7();
        let mut sub = nats
            .subscribe(log.subjects().of(AggregateKind::Agent, id))
            .await?;
        let t = Instant::now();
        let r = http
            .post(format!("{}/api/v1/agents/spawn", hive.base))
            .json(&serde_json::json!({"agent_id": id, "exec": "true", "max_concurrent_tasks": 16}))
            .send()
            .await?;
        anyhow::ensure!(r.status() == 201, "spawn: {}", r.status());
        wait_for(&mut sub, "AgentReady").await?;
        latencies.push(t.elapsed());
    }
    rows.push(row(
        format!("agent spawn → ready ({spawns} processes)"),
        None,
        None,
        Some(&mut latencies),
        "Python system's target: 5 s",
    ));

    // Task created → assigned (the agents above take them).
    let mut latencies = Latencies::default();
    let tasks = nats
        .subscribe(format!(
            "{}.task.*",
            log.subjects().all().trim_end_matches(".>")
        ))
        .await?;
    let mut tasks = Box::pin(tasks);
    for n in 0..samples {
        let t = Instant::now();
        let created = hive.post_task(&http, format!("chain {n}")).await?;
        let id = created["task_id"].as_str().unwrap_or_default().to_owned();
        tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(m) = tasks.next().await {
                if m.subject.ends_with(&id)
                    && hive_events::envelope::decode(&m.payload, None)
                        .is_ok_and(|e| e.event.event_type() == "TaskAssigned")
                {
                    return;
                }
            }
        })
        .await?;
        latencies.push(t.elapsed());
    }
    rows.push(row(
        format!("task created → assigned ({samples})"),
        None,
        None,
        Some(&mut latencies),
        "from the POST; Python system's target: 2 s",
    ));

    // Event → visible in the API: the POST's answer to the projector's checkpoint notice.
    let mut notices = nats
        .subscribe(log.namespace().projection_notices("read_models"))
        .await?;
    let mut latencies = Latencies::default();
    for n in 0..samples {
        let created = hive.post_task(&http, format!("visible {n}")).await?;
        let t = Instant::now();
        let seq = created["seq"].as_u64().unwrap_or(u64::MAX);
        tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(m) = notices.next().await {
                if std::str::from_utf8(&m.payload)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    >= Some(seq)
                {
                    return;
                }
            }
        })
        .await?;
        latencies.push(t.elapsed());
    }
    rows.push(row(
        format!("event → visible in the API ({samples})"),
        None,
        None,
        Some(&mut latencies),
        "from the append's ack to the committed checkpoint",
    ));

    // Event → SSE client.
    let response = http
        .get(format!("{}/api/v1/stream?topics=task", hive.base))
        .send()
        .await?;
    let mut sse = Box::pin(eventsource_stream::Eventsource::eventsource(
        response.bytes_stream(),
    ));
    let mut latencies = Latencies::default();
    for n in 0..samples {
        let t = Instant::now();
        let created = hive.post_task(&http, format!("streamed {n}")).await?;
        let id = created["task_id"].as_str().unwrap_or_default().to_owned();
        tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(Ok(e)) = sse.next().await {
                if e.event == "event" && e.data.contains(&id) && e.data.contains("TaskCreated") {
                    return;
                }
            }
        })
        .await?;
        latencies.push(t.elapsed());
    }
    rows.push(row(
        format!("event → SSE client ({samples})"),
        None,
        None,
        Some(&mut latencies),
        "from the POST; the dashboard's feed",
    ));
    // A dead agent → its task requeued: agents that heartbeat once, take a task each, and fall silent.
    // Measured from each one's last heartbeat (acknowledged) to its task's TaskRequeued.
    let timeout = Duration::from_secs(15);
    let silent = (samples / 10).max(3);
    let mut beats = Vec::new();
    let mut waits = Vec::new();
    for _ in 0..silent {
        let registered: serde_json::Value = http
            .post(format!("{}/api/v1/agents", hive.base))
            .json(&serde_json::json!({"agent_type": "silent", "capabilities": ["silent-bench"], "max_concurrent_tasks": 1}))
            .send()
            .await?
            .json()
            .await?;
        let agent = registered["agent_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let beat = format!("{}/api/v1/agents/{agent}/heartbeat", hive.base);
        anyhow::ensure!(
            http.post(&beat).send().await?.status().is_success(),
            "heartbeat"
        );
        let created = http
            .post(format!("{}/api/v1/tasks", hive.base))
            .json(&serde_json::json!({"title": "outlived", "required_capabilities": ["silent-bench"]}))
            .send()
            .await?;
        let created: serde_json::Value = created.json().await?;
        let task = created["task_id"].as_str().unwrap_or_default().to_owned();
        let sub = nats
            .subscribe(log.subjects().of(AggregateKind::Task, task.parse()?))
            .await?;
        waits.push((task, sub));
        beats.push(beat);
    }
    // Each agent's last heartbeat comes once its task is assigned to it (the first made it ready).
    let mut latencies = Latencies::default();
    let mut last_beats = Vec::new();
    for (beat, (task, _)) in beats.iter().zip(&waits) {
        let view = format!("{}/api/v1/tasks/{task}", hive.base);
        let given = Instant::now() + Duration::from_secs(20);
        while http
            .get(&view)
            .send()
            .await?
            .json::<serde_json::Value>()
            .await?["state"]
            != "assigned"
        {
            anyhow::ensure!(Instant::now() < given, "task {task} not assigned");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        anyhow::ensure!(
            http.post(beat).send().await?.status().is_success(),
            "heartbeat"
        );
        last_beats.push(Instant::now());
    }
    // Awaited together, so each is timed when its own event arrives.
    let requeues = waits
        .iter_mut()
        .zip(last_beats)
        .map(|((_, sub), last)| async move {
            tokio::time::timeout(
                timeout + Duration::from_secs(20),
                wait_for(sub, "TaskRequeued"),
            )
            .await
            .map_err(|_| anyhow::anyhow!("no TaskRequeued"))??;
            anyhow::Ok(last.elapsed())
        });
    for took in futures::future::join_all(requeues).await {
        latencies.push(took?);
    }
    rows.push(row(
        format!("dead agent → its task requeued ({silent} agents)"),
        None,
        None,
        Some(&mut latencies),
        format!(
            "from its last heartbeat; timeout {} s, target timeout + 1 s",
            timeout.as_secs()
        ),
    ));

    rows.push(memory_row(
        "hive RSS after the chains",
        crate::hive_process::rss_mib(hive.pid()),
    ));
    rows.push(memory_row("hive peak RSS", peak_rss_mib(Some(hive.pid()))));
    Ok(vec![Table {
        title: "chains".into(),
        rows,
    }])
}

/// The dashboard's reads at scale: a hive with `tasks` tasks (their whole lives) and `agents` agents;
/// the time of the page's starting JSON, of a page of agents, and of the queue's first page.
pub async fn dashboard(servers: &Servers, tasks: u64, agents: u64) -> anyhow::Result<Vec<Table>> {
    let (hive, backends) = servers.hive("dashboard").await?;
    crate::load::load_with_agents(&backends.log, tasks * 6, agents).await?;
    let http = hive.http();
    hive.wait_projected(&http, backends.log.last_seq().await?)
        .await?;
    // Every agent heartbeats once (the page shows each one's last heartbeat), and the scheduler marks
    // them ready.
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{}/api/v1/agents?limit=500", hive.base);
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: serde_json::Value = http.get(&url).send().await?.json().await?;
        for agent in page["items"].as_array().into_iter().flatten() {
            if let Some(id) = agent["agent_id"].as_str().and_then(|a| a.parse().ok()) {
                backends.heartbeats.beat(id, chrono::Utc::now()).await?;
            }
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let ready = Instant::now() + Duration::from_secs(60);
    while http
        .get(format!("{}/status", hive.base))
        .send()
        .await?
        .json::<serde_json::Value>()
        .await?["agents"]["by_status"]["ready"]
        .as_u64()
        < Some(agents)
    {
        anyhow::ensure!(Instant::now() < ready, "the agents never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let head = backends.log.last_seq().await?;
    hive.wait_projected(&http, head).await?;
    let mut rows = Vec::new();
    for (what, path) in [
        (
            "GET /dashboard/coordination (the page's start)",
            "/dashboard/coordination".to_owned(),
        ),
        (
            "GET /api/v1/agents?limit=100 (a page of agents)",
            "/api/v1/agents?limit=100".to_owned(),
        ),
        (
            "GET /api/v1/tasks?status=completed&limit=50",
            "/api/v1/tasks?status=completed&limit=50".to_owned(),
        ),
        ("GET /dashboard (the page)", "/dashboard".to_owned()),
    ] {
        let mut latencies = sequential_gets(&http, &format!("{}{path}", hive.base), 50).await?;
        rows.push(row(
            what,
            None,
            None,
            Some(&mut latencies),
            "50 sequential requests",
        ));
    }
    rows.extend(crate::screen::page_at_scale(&hive, tasks, agents).await?);
    rows.push(memory_row(
        "hive RSS",
        crate::hive_process::rss_mib(hive.pid()),
    ));
    Ok(vec![Table {
        title: format!("dashboard at scale ({tasks} tasks, {agents} agents, {head} events)"),
        rows,
    }])
}
