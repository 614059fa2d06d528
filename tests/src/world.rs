//! A fresh world for each test: its own database and NATS namespace on the run's shared servers
//! ([`crate::servers`]), tokens of its hive, raw access to its log, and hives started on it
//! ([`crate::http::TestHive`]).

use std::net::SocketAddr;

use bytes::Bytes;
use hive::{Backends, Config, Parts};
use hive_eventlog::{EventLog, Namespace};
use sea_orm::DatabaseConnection;

use crate::http::{TestHive, authorized_client};
use crate::servers::{agent_program, init_tracing, servers};

/// Issues a token of `role` in `tokens`.
pub async fn issue_token(tokens: &hive_eventlog::Tokens, role: hive_eventlog::Role) -> String {
    tokens
        .issue(&hive_eventlog::Grant::new(role, format!("test {role}")))
        .await
        .expect("issue a token")
        .0
}

/// A fresh world for one test: its own database and NATS namespace on the shared servers.
pub struct World {
    /// The configuration a hive on this world runs with.
    pub config: Config,
    /// NATS URL.
    pub nats_url: String,
    /// The test's database URL.
    pub database_url: String,
    /// The test's database name.
    pub database: String,
    /// Connected, migrated backends.
    pub backends: Backends,
    /// An admin token of this world's hive (the test clients send it).
    pub admin_token: String,
}

impl World {
    /// A new world.
    pub async fn new() -> Self {
        Self::on_nats(servers().nats_url.clone()).await
    }

    /// A new world on the NATS server at `nats_url` (one a test starts and stops itself), with the
    /// run's PostgreSQL.
    pub async fn on_nats(nats_url: String) -> Self {
        init_tracing();
        let servers = servers();
        let id = uuid::Uuid::new_v4().simple().to_string();
        let short = &id[..12];
        let config = Config {
            namespace: format!("t{short}"),
            min_seq_timeout_ms: 5_000,
            db_pool: 5,
            agent_program: Some(agent_program()),
            agent_log_filter: Some("warn".into()),
            agent_drain_timeout_secs: 5.0,
            ..Config::default()
        };
        let database = format!("test_{short}");
        let database_url = servers.pg.url(&database);
        let backends = hive::connect(&config, &nats_url, &database_url, true)
            .await
            .expect("connect the test backends");
        let admin_token = issue_token(&backends.tokens, hive_eventlog::Role::Admin).await;
        Self {
            config,
            nats_url,
            database_url,
            database,
            backends,
            admin_token,
        }
    }

    /// A new token of `role` for this world's hive.
    pub async fn token(&self, role: hive_eventlog::Role) -> String {
        issue_token(&self.backends.tokens, role).await
    }

    /// The URL of this world's read models as `hive_api`, a role that may only read them (made once per
    /// test run: roles belong to the whole server).
    pub async fn reader_url(&self) -> String {
        static MADE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
        let url = hive::with_credentials(&self.database_url, "hive_api", "hive_api")
            .expect("a database URL");
        MADE.get_or_init(async || {
            hive::provision_reader(self.db(), &url)
                .await
                .expect("make the read-only role");
        })
        .await;
        url
    }

    /// The URL of the server's `postgres` database, to act on the test database from outside.
    pub fn admin_url(&self) -> String {
        servers().pg.url("postgres")
    }

    /// The URL of database `name` on the test server (created by whoever connects first, as `hive up`
    /// does).
    pub fn database_url_named(&self, name: &str) -> String {
        servers().pg.url(name)
    }

    /// [`World::database_url_named`] through the server's Unix socket (`?host=<its directory>`).
    pub fn socket_url_named(&self, name: &str) -> String {
        servers().pg.socket_url(name)
    }

    /// Drops this world's read-model database (closing our connections first).
    pub async fn drop_database(&self) {
        use sea_orm::ConnectionTrait;
        self.backends.db.clone().close().await.ok();
        let admin = sea_orm::Database::connect(self.admin_url())
            .await
            .expect("connect as admin");
        admin
            .execute_unprepared(&format!("DROP DATABASE \"{}\" WITH (FORCE)", self.database))
            .await
            .expect("drop the database");
        admin.close().await.ok();
    }

    /// Connects again, as `hive up` does at start: creating and migrating the database if needed.
    pub async fn reconnect(&mut self) {
        self.backends = hive::connect(&self.config, &self.nats_url, &self.database_url, true)
            .await
            .expect("connect the test backends");
    }

    /// The event log.
    pub fn log(&self) -> &EventLog {
        &self.backends.log
    }

    /// The read-model database.
    pub fn db(&self) -> &DatabaseConnection {
        &self.backends.db
    }

    /// The heartbeat bucket.
    pub async fn heartbeats(&self) -> hive_eventlog::Heartbeats {
        hive_eventlog::Heartbeats::open(self.log(), std::time::Duration::from_secs(600))
            .await
            .expect("open the heartbeat bucket")
    }

    /// The namespace.
    pub fn namespace(&self) -> Namespace {
        Namespace::new(&self.config.namespace)
    }

    /// Publishes raw bytes straight into the stream, as a buggy or hostile publisher would.
    pub async fn publish_raw(&self, subject: &str, payload: impl Into<Bytes>) -> u64 {
        let js = async_nats::jetstream::new(self.log().client());
        js.publish(subject.to_owned(), payload.into())
            .await
            .expect("publish")
            .await
            .expect("ack")
            .sequence
    }

    /// Waits (at most 20 s) until the log holds an event of `event_type` for aggregate `id`, and answers
    /// its sequence: a test waits on the fact itself, not on time.
    pub async fn wait_for_event(
        &self,
        kind: hive_events::AggregateKind,
        id: uuid::Uuid,
        event_type: &str,
    ) -> u64 {
        self.wait_for_nth_event(kind, id, event_type, 1).await
    }

    /// Like [`World::wait_for_event`], for the `n`-th such event.
    pub async fn wait_for_nth_event(
        &self,
        kind: hive_events::AggregateKind,
        id: uuid::Uuid,
        event_type: &str,
        n: usize,
    ) -> u64 {
        use futures::StreamExt;
        let subject = self.log().subjects().of(kind, id);
        let mut seen = 0;
        let found = tokio::time::timeout(std::time::Duration::from_secs(20), async {
            // A reader that fails (a stall on a busy machine) is replaced, reading on after the last
            // event it gave.
            let mut next = 1;
            loop {
                let mut events = Box::pin(self.log().read_from(next).await.expect("read the log"));
                while let Some(Ok(event)) = events.next().await {
                    next = event.seq + 1;
                    if event.subject != subject {
                        continue;
                    }
                    let Ok(envelope) = hive_events::envelope::decode(&event.payload, None) else {
                        continue;
                    };
                    if envelope.event.event_type() == event_type {
                        seen += 1;
                        if seen == n {
                            return event.seq;
                        }
                    }
                }
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("no {event_type} #{n} for {kind} {id} within 20 s"))
    }

    /// Starts `parts` of a hive on this world, the API on a free port.
    pub async fn run(&self, parts: Parts) -> TestHive {
        let mut backends = hive::PartBackends::from(self.backends.clone());
        // The API reads as `hive up` runs it: through a role that may only read.
        if parts.api {
            let url = self.reader_url().await;
            backends.api.db = sea_orm::Database::connect(url.as_str())
                .await
                .expect("connect as the API's read-only role");
            backends.api.database_url = url;
        }
        self.run_with(backends, parts).await
    }

    /// Starts `parts` of a hive on `backends` as given (a replica as the API's database, say), the API
    /// on a free port.
    pub async fn run_with(&self, backends: hive::PartBackends, parts: Parts) -> TestHive {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let running = hive::run(&self.config, backends, parts, addr)
            .await
            .expect("start the hive");
        let base = running
            .addr
            .map(|a| format!("http://{a}"))
            .unwrap_or_default();
        TestHive {
            running,
            http: authorized_client(&base, &self.admin_token),
            base,
            token: self.admin_token.clone(),
        }
    }

    /// Starts API and projector (no scheduler: tests of the core drive tasks by hand).
    pub async fn hive(&self) -> TestHive {
        self.run(Parts {
            api: true,
            projector: true,
            scheduler: false,
        })
        .await
    }

    /// Starts every part, the scheduler included.
    pub async fn full_hive(&self) -> TestHive {
        self.run(Parts::ALL).await
    }

    /// A scheduler on this world's log, running in a task of its own once it leads: abort the handle
    /// to kill it (its lease then lapses, as a dead process's would).
    pub async fn leading_scheduler(&self) -> tokio::task::AbortHandle {
        let scheduler = self.scheduler().await;
        let mut leading = scheduler.leading();
        let running = tokio::spawn(scheduler.run(std::future::pending()));
        leading.wait_for(|l| *l).await.expect("the scheduler leads");
        running.abort_handle()
    }

    /// A scheduler on this world's log, not yet running (beside a [`World::hive`], which has none).
    pub async fn scheduler(&self) -> hive_scheduler::Scheduler {
        let heartbeats = self.heartbeats().await;
        hive_scheduler::Scheduler::new(self.log().clone(), heartbeats, self.config.scheduler())
    }
}
