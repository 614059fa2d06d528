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
    nats_url: String,
    database_url: String,
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

    /// Connected, migrated backends in namespace `namespace`.
    pub async fn backends(&self, namespace: &str) -> anyhow::Result<Backends> {
        let config = hive::Config {
            namespace: namespace.into(),
            ..hive::Config::default()
        };
        hive::connect(&config, &self.nats_url, &self.database_url, true).await
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
