//! The `hive` program as a library, so that tests start the real thing: [`connect`] reaches NATS and
//! PostgreSQL (creating the database and migrating it when asked), [`run`] starts the API and/or the
//! projector on those backends, and [`up`] does all of it, starting nats-server and PostgreSQL itself for
//! whichever URL is not configured. `main.rs` is only the command-line front.
//!
//! Long because connecting, running the parts and wiring their shutdown belong to one start-up path
//! that tests and the CLI share.

pub mod agent_work;
pub mod backup;
pub mod cli;
pub mod config;
mod credentials;
mod operator;
pub mod ops;
pub mod remote;
pub mod up;

use std::net::SocketAddr;

use anyhow::Context;
use hive_eventlog::EventLog;
use hive_migrations::MigratorTrait;
use hive_projector::Projector;
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, Statement};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::Config;
use credentials::without_credentials;
pub use credentials::{credentials, provision_reader, with_credentials};

/// The two backends every part of Hive talks to.
#[derive(Clone)]
pub struct Backends {
    /// The read-model database.
    pub db: DatabaseConnection,
    /// Where it is.
    pub database_url: String,
    /// The event log.
    pub log: EventLog,
    /// The agents' last heartbeats.
    pub heartbeats: hive_eventlog::Heartbeats,
    /// The API's tokens.
    pub tokens: hive_eventlog::Tokens,
}

/// How long a heartbeat stays in its bucket: long after any timeout.
const HEARTBEATS_KEPT: std::time::Duration = std::time::Duration::from_secs(600);

/// A pool of up to `connections` to the read-model database.
async fn open_database(url: &str, connections: u32) -> anyhow::Result<DatabaseConnection> {
    open_database_with(url, connections, &[]).await
}

/// The projector's own pool to the read-model database at `url`, its connections carrying
/// [`hive_projector::SESSION_SETTINGS`].
pub async fn open_projector_database(url: &str) -> anyhow::Result<DatabaseConnection> {
    open_database_with(
        url,
        PROJECTOR_CONNECTIONS,
        &hive_projector::SESSION_SETTINGS,
    )
    .await
}

/// [`open_database`] whose connections carry `settings` (name, value) from the start.
async fn open_database_with(
    url: &str,
    connections: u32,
    settings: &'static [(&'static str, &'static str)],
) -> anyhow::Result<DatabaseConnection> {
    let mut options = ConnectOptions::new(url.to_owned());
    if !settings.is_empty() {
        options.map_sqlx_postgres_opts(|pg| pg.options(settings.iter().copied()));
    }
    // A short acquire timeout: when the database is gone, answer 503 in seconds, not after sqlx's 30 s.
    // A connection is pinged before use only after a second idle (one the server or a proxy may have
    // dropped): sqlx's default pings on every checkout, a round trip more for every query.
    options
        .max_connections(connections)
        .test_before_acquire_if_idle_for(std::time::Duration::from_secs(1))
        .acquire_timeout(std::time::Duration::from_secs(3))
        .connect_timeout(std::time::Duration::from_secs(3))
        .sqlx_logging(false);
    Database::connect(options)
        .await
        .with_context(|| format!("connect to {}", Config::redacted(url)))
}

/// Connections of the projector's own pool: it commits one batch at a time. Its own, so that the
/// statements of its batches stay in its connections' statement caches instead of crowding out the API's
/// queries in every connection of the shared pool.
const PROJECTOR_CONNECTIONS: u32 = 2;

/// [`hive_eventlog::patiently`] for up to [`START_PATIENCE`].
async fn patiently<T, E: std::fmt::Display>(
    what: &str,
    attempt: impl AsyncFnMut() -> Result<T, E>,
) -> Result<T, E> {
    hive_eventlog::patiently(what, START_PATIENCE, attempt).await
}

/// Creates database `url` names if it does not exist yet (connecting to the `postgres` database of the
/// same server to do it).
pub async fn ensure_database(url: &str) -> anyhow::Result<()> {
    let (admin, name) = admin_url(url)?;
    let admin = Database::connect(admin)
        .await
        .context("connect to the server's `postgres` database")?;
    let exists = admin
        .query_one_raw(Statement::from_sql_and_values(
            admin.get_database_backend(),
            "SELECT 1 FROM pg_database WHERE datname = $1",
            [name.as_str().into()],
        ))
        .await?
        .is_some();
    if !exists {
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
            .with_context(|| format!("create database {name}"))?;
        tracing::info!(database = name, "created the read-model database");
    }
    admin.close().await?;
    Ok(())
}

/// The URL of the `postgres` database on the server of database URL `url` (its parameters kept: a
/// Unix socket's `host=/run/postgresql` among them), and the name of the database `url` names.
fn admin_url(url: &str) -> anyhow::Result<(String, String)> {
    let (path, query) = match url.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (url, None),
    };
    let (server, name) = path
        .rsplit_once('/')
        .filter(|(server, _)| server.contains("//"))
        .context("the database URL names no database")?;
    anyhow::ensure!(
        !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
        "database name {name:?} must be letters, digits and '_'"
    );
    let admin = match query {
        Some(query) => format!("{server}/postgres?{query}"),
        None => format!("{server}/postgres"),
    };
    Ok((admin, name.to_owned()))
}

/// How long a starting service waits for JetStream to accept its stream and buckets.
const START_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// A NATS client of `nats_url` (servers comma-separated; a user and password, or a token, in the URL).
pub async fn nats_client(nats_url: &str) -> anyhow::Result<async_nats::Client> {
    let given: Vec<&str> = nats_url.split(',').map(str::trim).collect();
    let mut options = async_nats::ConnectOptions::new()
        .name("hive")
        .retry_on_initial_connect();
    // A user in the URL (`nats://hive-api:secret@host:4222`): connect as that user, with the inbox
    // its permissions allow when it is one of the services' users; a user without a password is a
    // token (`nats://s3cret@host`).
    match given.iter().find_map(|s| credentials(s)) {
        Some((user, Some(password))) => {
            let service = hive_eventlog::users::Service::ALL
                .into_iter()
                .find(|s| s.user() == user);
            if let Some(service) = service {
                options = options.custom_inbox_prefix(service.inbox_prefix());
            }
            options = options.user_and_password(user, password);
        }
        Some((token, None)) => options = options.token(token),
        None => {}
    }
    // The servers without their credentials, which the client logs at debug level.
    let servers: Vec<String> = given.iter().map(|s| without_credentials(s)).collect();
    options
        .connect(servers.as_slice())
        .await
        .with_context(|| format!("connect to NATS at {}", Config::redacted(nats_url)))
}

/// Connects to NATS and PostgreSQL and opens the event log (whose command path keeps aggregates'
/// snapshots in their bucket). With `migrate`, the database is created if missing and brought to the
/// latest schema first.
pub async fn connect(
    config: &Config,
    nats_url: &str,
    database_url: &str,
    migrate: bool,
) -> anyhow::Result<Backends> {
    if migrate {
        ensure_database(database_url).await?;
    }
    let db = open_database(database_url, config.db_pool).await?;
    if migrate {
        hive_migrations::Migrator::up(&db, None)
            .await
            .context("migrate the read models")?;
    }
    let log = open_log(config, nats_url).await?;
    let snapshots = patiently("the snapshot bucket", async || {
        hive_eventlog::Snapshots::open(&log).await
    })
    .await
    .context("open the snapshot bucket")?;
    let log = log.with_snapshots(snapshots);
    let heartbeats = patiently("the heartbeat bucket", async || {
        hive_eventlog::Heartbeats::open(&log, HEARTBEATS_KEPT).await
    })
    .await
    .context("open the heartbeat bucket")?;
    let tokens = patiently("the tokens bucket", async || {
        hive_eventlog::Tokens::open(&log).await
    })
    .await
    .context("open the tokens bucket")?;
    Ok(Backends {
        db,
        database_url: database_url.to_owned(),
        log,
        heartbeats,
        tokens,
    })
}

/// The event log alone, for the commands that only read it (`hive audit`).
pub async fn open_log(config: &Config, nats_url: &str) -> anyhow::Result<EventLog> {
    let client = nats_client(nats_url).await?;
    // A JetStream cluster that is still electing its leaders answers "timed out": keep trying a while,
    // as a service started beside its servers must. The stream is ready once its state can be read.
    let log = patiently("the event log", async || {
        let log = EventLog::open(client.clone(), &config.log()).await?;
        log.ready().await?;
        Ok::<_, hive_eventlog::LogError>(log)
    })
    .await
    .context("open the event log")?;
    let sync = match (&config.store_sync, &config.nats_store_dir) {
        (Some(sync), _) => Some(sync.clone()),
        (None, Some(dir)) => Some(hive_eventlog::StoreSync::open(dir)?),
        (None, None) => None,
    };
    let log = log.with_recent(config.recent.clone());
    Ok(match sync {
        Some(sync) => log.with_store_sync(sync),
        None => log,
    })
}

/// A small pool to the read-model database at `url`, for a command that only reads it, without
/// creating or migrating it.
pub async fn open_reader(url: &str) -> anyhow::Result<DatabaseConnection> {
    open_database(url, 2).await
}

/// The backends of each part: the same for all, or, as `hive up` connects them, each part as its own
/// NATS user and the API as a database role that may only read.
#[derive(Clone)]
pub struct PartBackends {
    /// The API's.
    pub api: Backends,
    /// The projector's.
    pub projector: Backends,
    /// The scheduler's.
    pub scheduler: Backends,
}

impl From<Backends> for PartBackends {
    fn from(backends: Backends) -> Self {
        Self {
            api: backends.clone(),
            projector: backends.clone(),
            scheduler: backends,
        }
    }
}

/// Which parts a process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parts {
    /// The HTTP API.
    pub api: bool,
    /// The read-model projector.
    pub projector: bool,
    /// The scheduler (one is active at a time; more are standbys).
    pub scheduler: bool,
}

impl Parts {
    /// Every part.
    pub const ALL: Parts = Parts {
        api: true,
        projector: true,
        scheduler: true,
    };
}

/// Running services, stopped together.
pub struct Running {
    /// Where the API listens, if it runs.
    pub addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<(&'static str, JoinHandle<anyhow::Result<()>>)>,
}

impl Running {
    fn shutdown_signal(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.stop.subscribe();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }

    /// Waits until any service stops (an error) or `signal` resolves, then stops the rest gracefully.
    pub async fn until(mut self, signal: impl Future<Output = ()>) -> anyhow::Result<()> {
        let first = {
            let watched = futures_select(&mut self.tasks);
            tokio::select! {
                () = signal => None,
                ended = watched => Some(ended),
            }
        };
        let result = self.stop_all().await;
        match first {
            Some((name, Ok(Ok(())))) => anyhow::bail!("{name} stopped unexpectedly"),
            Some((name, Ok(Err(e)))) => Err(e.context(format!("{name} failed"))),
            Some((name, Err(e))) => anyhow::bail!("{name} panicked: {e}"),
            None => result,
        }
    }

    /// Stops every service and waits for them.
    pub async fn stop_all(&mut self) -> anyhow::Result<()> {
        self.stop.send_replace(true);
        for (name, task) in self.tasks.drain(..) {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(%name, error = %e, "stopped with an error"),
                Err(e) if e.is_cancelled() => {}
                Err(e) => tracing::warn!(%name, error = %e, "panicked"),
            }
        }
        Ok(())
    }
}

async fn futures_select(
    tasks: &mut [(&'static str, JoinHandle<anyhow::Result<()>>)],
) -> (
    &'static str,
    Result<anyhow::Result<()>, tokio::task::JoinError>,
) {
    if tasks.is_empty() {
        return std::future::pending().await;
    }
    let (result, index, _) =
        futures::future::select_all(tasks.iter_mut().map(|(_, task)| task)).await;
    (tasks[index].0, result)
}

/// Starts `parts` on `backends`; the API listens on `addr` (port 0: any free port).
pub async fn run(
    config: &Config,
    backends: impl Into<PartBackends>,
    parts: Parts,
    addr: SocketAddr,
) -> anyhow::Result<Running> {
    let backends: PartBackends = backends.into();
    // The metrics recorder first: a gauge a part sets once as it starts (its leading) is not lost.
    hive_api::metrics::handle();
    let (stop, _) = watch::channel(false);
    let mut running = Running {
        addr: None,
        stop,
        tasks: Vec::new(),
    };
    // The recorder first: the parts record from their start (the leadership gauges once, then on
    // each change).
    hive_api::metrics::handle();
    if let (false, Some(metrics_addr)) = (parts.api, config.metrics_addr) {
        let listener = tokio::net::TcpListener::bind(metrics_addr)
            .await
            .with_context(|| format!("listen on {metrics_addr} for /metrics"))?;
        let shutdown = running.shutdown_signal();
        running.tasks.push((
            "metrics",
            tokio::spawn(async move {
                axum::serve(listener, hive_api::metrics::standalone())
                    .with_graceful_shutdown(shutdown)
                    .await
                    .map_err(Into::into)
            }),
        ));
    }
    if parts.projector {
        let projector = Projector::new(
            open_projector_database(&backends.projector.database_url).await?,
            backends.projector.log.clone(),
            config.projector(),
        );
        let shutdown = running.shutdown_signal();
        running.tasks.push((
            "projector",
            tokio::spawn(async move { projector.run(shutdown).await.map_err(Into::into) }),
        ));
    }
    if parts.scheduler {
        let scheduler = hive_scheduler::Scheduler::new(
            backends.scheduler.log.clone(),
            backends.scheduler.heartbeats.clone(),
            config.scheduler(),
        );
        let shutdown = running.shutdown_signal();
        running.tasks.push((
            "scheduler",
            tokio::spawn(async move { scheduler.run(shutdown).await.map_err(Into::into) }),
        ));
    }
    if parts.api {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listen on {addr}"))?;
        let bound = listener.local_addr()?;
        running.addr = Some(bound);
        let spawner = hive_spawner::Spawner::new(
            config
                .spawner(format!("http://{}", reachable(bound)))
                .context("locate the hive binary for spawned agents")?,
            backends.api.log.clone(),
        );
        let api = &backends.api;
        let state = patiently("the API's state", async || {
            hive_api::AppState::new(
                api.db.clone(),
                api.log.clone(),
                api.heartbeats.clone(),
                api.tokens.clone(),
                config.api(),
            )
            .await
        })
        .await
        .context("start the API")?
        .with_spawner(spawner);
        let shutdown = running.shutdown_signal();
        running.tasks.push((
            "api",
            tokio::spawn(async move {
                hive_api::serve(listener, state, shutdown)
                    .await
                    .map_err(Into::into)
            }),
        ));
    }
    Ok(running)
}

/// The address a local process reaches a listener bound to `addr` at (loopback for a wildcard).
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, addr.port()))
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
        }
        _ => addr,
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn termination() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install a SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install a SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}

#[cfg(test)]
mod tests {
    use super::admin_url;

    #[test]
    fn the_admin_url_is_the_servers_postgres_database_with_the_same_parameters() {
        let cases = [
            (
                "postgres://u:p@db:5432/hive",
                "postgres://u:p@db:5432/postgres",
                "hive",
            ),
            (
                "postgres://u@localhost/hive_1?host=/var/run/postgresql",
                "postgres://u@localhost/postgres?host=/var/run/postgresql",
                "hive_1",
            ),
            (
                "postgres://u@db/hive?sslmode=require&application_name=a/b",
                "postgres://u@db/postgres?sslmode=require&application_name=a/b",
                "hive",
            ),
        ];
        for (url, admin, name) in cases {
            assert_eq!(
                admin_url(url).unwrap(),
                (admin.to_owned(), name.to_owned()),
                "{url}"
            );
        }
        for bad in [
            "postgres://db",
            "postgres://db/",
            "postgres://db/hive-1",
            "hive",
        ] {
            assert!(admin_url(bad).is_err(), "{bad}");
        }
    }
}
