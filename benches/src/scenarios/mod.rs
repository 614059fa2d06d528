//! The scenarios, one file each: every one starts what it measures on [`Servers`] (a namespace and a
//! database of its own), measures it beside the raw limit of the same machine where there is one, and
//! answers its [`Table`](crate::report::Table)s. The rows they share are built here ([`row`], [`memory_row`], [`wrk_row`]);
//! latencies are taken with [`Latencies::measure`], waits with [`crate::wait::eventually`].

mod chains;
mod dashboard;
mod footprint;
mod history;
mod ingest;
mod overload;
mod project;
mod query;
mod rebuild;
mod search;
mod startup;

use hive_client::Method;
use std::time::Duration;

use hive::Backends;
use hive_devservers::{Durability, NatsServer, Postgres};

use crate::report::{Latencies, Row};

pub use chains::chains;
pub use dashboard::dashboard;
pub use footprint::footprint;
pub use history::history;
pub use ingest::ingest;
pub use overload::overload;
pub use project::project;
pub use query::query;
pub use rebuild::rebuild;
pub use search::search;
pub use startup::startup;

/// The servers a run uses: started here unless given.
pub struct Servers {
    /// NATS.
    pub nats_url: String,
    /// The database.
    pub database_url: String,
    /// The stream's replicas: 3 on a cluster started here, else 1.
    pub replicas: usize,
    /// The store of the nats-server started here, when the hive and the library sync it for every
    /// group of writes (`--nats-store-sync`).
    pub nats_store: Option<std::path::PathBuf>,
    _nats: Vec<NatsServer>,
    _pg: Option<Postgres>,
    _dir: tempfile::TempDir,
}

impl Servers {
    /// Starts what is not given: nats-server (three in a cluster with `nats_cluster`) and PostgreSQL.
    pub async fn start(
        nats: Option<String>,
        db: Option<String>,
        nats_sync_always: bool,
        nats_store_sync: bool,
        nats_cluster: bool,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let durability = match (nats_sync_always, nats_store_sync) {
            (true, _) => Durability::Safe,
            (false, true) => Durability::SyncedByClient,
            (false, false) => Durability::Throwaway,
        };
        let nats_store =
            (nats_store_sync && nats.is_none() && !nats_cluster).then(|| dir.path().join("nats"));
        let (nats_url, nats, replicas) = match nats {
            Some(url) => (url, Vec::new(), 1),
            None if nats_cluster => {
                let nodes = NatsServer::cluster(&dir.path().join("nats"), durability, "").await?;
                (NatsServer::urls(&nodes), nodes, 3)
            }
            None => {
                let server =
                    NatsServer::start(&dir.path().join("nats"), None, durability, &[]).await?;
                (server.url(), vec![server], 1)
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
            replicas,
            nats_store,
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
        let hive = crate::hive_process::HiveProcess::start(self, &namespace).await?;
        Ok((hive, self.backends(&namespace).await?))
    }

    /// Connected, migrated backends in namespace `namespace`, with a database of the same name.
    pub async fn backends(&self, namespace: &str) -> anyhow::Result<Backends> {
        let config = hive::Config {
            namespace: namespace.into(),
            stream_replicas: self.replicas,
            nats_store_dir: self.nats_store.clone(),
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

/// `n` operations in `d`, a second.
fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

/// A row of `what` at `rate` beside `raw`, its latencies (p50, p99, max) from `lat`.
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
        latency: lat.map(Latencies::summary),
        rss: None,
        note: note.into(),
    }
}

/// The latencies of `n` GETs of `url` one after the other, each answered 200 and read to its end.
async fn sequential_gets(
    http: &hive_client::Client,
    url: &str,
    n: usize,
) -> anyhow::Result<Latencies> {
    let mut latencies = Latencies::default();
    for _ in 0..n {
        latencies
            .measure(async {
                let r = http.request(Method::GET, url).send().await?;
                anyhow::ensure!(r.status() == 200, "{url}: {}", r.status());
                r.bytes().await?;
                anyhow::Ok(())
            })
            .await?;
    }
    Ok(latencies)
}

/// A row of memory alone.
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

/// A row of a wrk run.
/// `GET /livez` (the trivial handler), then each of `paths` (the path, and how its row names it) under
/// `wrk` at `clients` for `seconds`, each row beside the trivial handler's rate; `note` ends each
/// path's row.
fn beside_trivial(
    hive: &crate::hive_process::HiveProcess,
    clients: u32,
    seconds: u32,
    paths: &[(String, String)],
    note: &str,
) -> anyhow::Result<Vec<Row>> {
    let run = |path: &str| {
        crate::wrk::run(
            &hive.token,
            &format!("{}{path}", hive.base),
            clients,
            seconds,
            None,
        )
    };
    let trivial = run("/livez")?;
    let mut rows = vec![wrk_row(
        format!("GET /livez (trivial), {clients} clients"),
        &trivial,
        None,
        String::new(),
    )];
    for (path, shown) in paths {
        rows.push(wrk_row(
            format!("GET {shown}, {clients} clients"),
            &run(path)?,
            Some(trivial.rate),
            note.to_owned(),
        ));
    }
    Ok(rows)
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
