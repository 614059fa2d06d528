//! The scenarios.

use std::time::{Duration, Instant};

use futures::StreamExt;
use hive::Backends;
use hive_devservers::{Durability, NatsServer, Postgres};
use hive_projector::{Projector, ProjectorConfig};
use rand::seq::IndexedRandom;

use crate::report::{Latencies, Row, peak_rss_mib, print};

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
    pub async fn start(nats: Option<String>, db: Option<String>) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let (nats_url, nats) = match nats {
            Some(url) => (url, None),
            None => {
                let server = NatsServer::start(&dir.path().join("nats"), None, &[]).await?;
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
        let namespace = format!("{name}{}", std::process::id());
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

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

/// Load → raw read → project → rebuild → verify → histories.
pub async fn rebuild(servers: &Servers, events: u64) -> anyhow::Result<()> {
    let namespace = format!("bench{}", std::process::id());
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
        note: format!("{:.0} MB", bytes as f64 / 1e6),
    });

    // The projector, batch by batch, from an empty database.
    let projector = Projector::new(
        backends.db.clone(),
        log.clone(),
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
    checkpoint.wait_for(|c| *c >= head).await?;
    let project_time = began.elapsed();
    let _ = stop.send(());
    running.await??;
    rows.push(Row {
        what: "project (incremental, from empty)".into(),
        rate: Some(rate(head, project_time)),
        raw: Some(raw_read),
        latency: None,
        note: format!("{:.1} s", project_time.as_secs_f64()),
    });

    let rebuilt = hive_projector::rebuild::rebuild(
        &backends.db,
        log,
        hive_projector::READ_MODELS,
        false,
        |_| {},
    )
    .await?
    .expect("a rebuild");
    rows.push(Row {
        what: "rebuild (shadow + swap)".into(),
        rate: Some(rate(rebuilt.replayed, rebuilt.elapsed)),
        raw: Some(raw_read),
        latency: None,
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
        note: String::new(),
    });
    rows.push(Row {
        what: "peak RSS of this process (load, project, rebuild, verify)".into(),
        rate: None,
        raw: None,
        latency: None,
        note: format!("{:.0} MiB", peak_rss_mib(None)),
    });
    print(&format!("rebuild: {head} events"), &rows);
    Ok(())
}

fn row(
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
        note: note.into(),
    }
}

fn wrk_row(what: String, r: &crate::wrk::WrkResult, raw: Option<f64>, note: String) -> Row {
    Row {
        what,
        rate: Some(r.rate),
        raw,
        latency: Some((r.p50, r.p99, r.max)),
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
pub async fn ingest(servers: &Servers, commands: u64, seconds: u32) -> anyhow::Result<()> {
    use hive_events::envelope::{EventMeta, encode};
    use hive_events::task::{NewTask, Task, TaskCommand};
    use hive_events::{Actor, AggregateKind, Priority};
    let namespace = format!("ingest{}", std::process::id());
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
    let trivial = crate::wrk::run(&format!("{}/livez", hive.base), 64, seconds, None)?;
    rows.push(wrk_row(
        "trivial handler GET /livez, 64 clients".into(),
        &trivial,
        None,
        String::new(),
    ));
    let http = crate::wrk::run(
        &format!("{}/api/v1/tasks", hive.base),
        64,
        seconds,
        Some(crate::wrk::POST_TASK),
    )?;
    rows.push(wrk_row(
        "HTTP POST /api/v1/tasks, 64 clients".into(),
        &http,
        Some(raw),
        format!(
            ", hive RSS {:.0} MiB",
            crate::hive_process::rss_mib(hive.pid())
        ),
    ));
    print("ingest", &rows);
    Ok(())
}

/// Reads under load at 10, 50, 100 and 500 clients (wrk), beside the trivial handler of the same
/// server; the hive's memory idle and under the load.
pub async fn query(
    servers: &Servers,
    tasks: u64,
    seconds: u32,
    levels: &[u32],
) -> anyhow::Result<()> {
    let (hive, backends) = servers.hive("query").await?;
    let idle = crate::hive_process::rss_mib(hive.pid());
    // Data: a log of about `tasks` tasks' lives, projected by the hive.
    crate::load::load(&backends.log, tasks * 6).await?;
    let head = backends.log.last_seq().await?;
    let http = reqwest::Client::new();
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
        let trivial = crate::wrk::run(&format!("{}/livez", hive.base), clients, seconds, None)?;
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
            let r = crate::wrk::run(&format!("{}{path}", hive.base), clients, seconds, None)?;
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
    rows.push(row(
        "hive process RSS (all parts in one process)",
        None,
        None,
        None,
        format!(
            "idle {idle:.0} MiB, after projecting the data {projected:.0} MiB, after the reads {:.0} MiB, peak {:.0} MiB",
            crate::hive_process::rss_mib(hive.pid()),
            peak_rss_mib(Some(hive.pid()))
        ),
    ));
    print(
        &format!("query ({head} events, {seconds} s per run)"),
        &rows,
    );
    Ok(())
}

/// End-to-end latencies: agent spawn → ready, task created → assigned, event → visible in the API,
/// event → SSE client.
pub async fn chains(servers: &Servers, samples: u32) -> anyhow::Result<()> {
    use hive_events::AggregateKind;
    let (hive, backends) = servers.hive("chains").await?;
    let log = &backends.log;
    let nats = log.client();
    let http = reqwest::Client::new();
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
    rows.push(row(
        "hive process RSS",
        None,
        None,
        None,
        format!(
            "{:.0} MiB now, peak {:.0} MiB",
            crate::hive_process::rss_mib(hive.pid()),
            peak_rss_mib(Some(hive.pid()))
        ),
    ));
    print("chains", &rows);
    Ok(())
}

/// The dashboard's reads at scale: a hive with `tasks` tasks (their whole lives) and `agents` agents;
/// the time of the page's starting JSON, of a page of agents, and of the queue's first page.
pub async fn dashboard(servers: &Servers, tasks: u64, agents: u64) -> anyhow::Result<()> {
    let (hive, backends) = servers.hive("dashboard").await?;
    crate::load::load_with_agents(&backends.log, tasks * 6, agents).await?;
    let head = backends.log.last_seq().await?;
    let http = reqwest::Client::new();
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
        let mut latencies = Latencies::default();
        for _ in 0..50 {
            let t = Instant::now();
            let r = http.get(format!("{}{path}", hive.base)).send().await?;
            anyhow::ensure!(r.status() == 200, "{path}: {}", r.status());
            r.bytes().await?;
            latencies.push(t.elapsed());
        }
        rows.push(row(
            what,
            None,
            None,
            Some(&mut latencies),
            "50 sequential requests",
        ));
    }
    rows.push(row(
        "hive process RSS",
        None,
        None,
        None,
        format!("{:.0} MiB", crate::hive_process::rss_mib(hive.pid())),
    ));
    print(
        &format!("dashboard at scale ({tasks} tasks, {agents} agents, {head} events)"),
        &rows,
    );
    Ok(())
}
