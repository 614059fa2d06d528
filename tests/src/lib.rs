//! The test harness: one real nats-server and one real PostgreSQL per test binary, started on first use
//! and killed with the process; each test gets its own database and its own NATS namespace (stream
//! `<NS>_EVENTS`, subjects `<ns>.events.>`), so tests never see each other's data.

use std::net::SocketAddr;
use std::sync::OnceLock;

use bytes::Bytes;
use hive::{Backends, Config, Parts, Running};
use hive_devservers::{Durability, NatsServer, Postgres};
use hive_eventlog::{EventLog, Namespace};
use sea_orm::DatabaseConnection;

struct Servers {
    nats_url: String,
    pg: Postgres,
    _nats: NatsServer,
    _dir: tempfile::TempDir,
}

fn servers() -> &'static Servers {
    static SERVERS: OnceLock<Servers> = OnceLock::new();
    SERVERS.get_or_init(|| {
        // Each test has its own runtime; the servers outlive them all, so they start on a runtime of
        // their own, on a thread of their own.
        std::thread::spawn(|| {
            tokio::runtime::Runtime::new().unwrap().block_on(async {
                let dir = tempfile::tempdir().expect("a temp dir");
                let nats = NatsServer::start(&dir.path().join("nats"), None, &[])
                    .await
                    .expect("start nats-server");
                let pg = Postgres::start(&dir.path().join("pg"), None, Durability::Throwaway)
                    .await
                    .expect("start postgres");
                Servers {
                    nats_url: nats.url(),
                    pg,
                    _nats: nats,
                    _dir: dir,
                }
            })
        })
        .join()
        .expect("start the test servers")
    })
}

/// Sets up tracing once; silent unless `HIVE_TEST_LOG` names a filter.
pub fn init_tracing() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        if let Ok(filter) = std::env::var("HIVE_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
    });
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
}

impl World {
    /// A new world.
    pub async fn new() -> Self {
        init_tracing();
        let servers = servers();
        let id = uuid::Uuid::new_v4().simple().to_string();
        let short = &id[..12];
        let config = Config {
            namespace: format!("t{short}"),
            min_seq_timeout_ms: 5_000,
            db_pool: 5,
            ..Config::default()
        };
        let database = format!("test_{short}");
        let database_url = servers.pg.url(&database);
        let backends = hive::connect(&config, &servers.nats_url, &database_url, true)
            .await
            .expect("connect the test backends");
        Self {
            config,
            nats_url: servers.nats_url.clone(),
            database_url,
            database,
            backends,
        }
    }

    /// The URL of the server's `postgres` database, to act on the test database from outside.
    pub fn admin_url(&self) -> String {
        servers().pg.url("postgres")
    }

    /// The event log.
    pub fn log(&self) -> &EventLog {
        &self.backends.log
    }

    /// The read-model database.
    pub fn db(&self) -> &DatabaseConnection {
        &self.backends.db
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

    /// Starts `parts` of a hive on this world, the API on a free port.
    pub async fn run(&self, parts: Parts) -> TestHive {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let running = hive::run(&self.config, self.backends.clone(), parts, addr)
            .await
            .expect("start the hive");
        let base = running
            .addr
            .map(|a| format!("http://{a}"))
            .unwrap_or_default();
        TestHive {
            running,
            base,
            http: reqwest::Client::new(),
        }
    }

    /// Starts API and projector.
    pub async fn hive(&self) -> TestHive {
        self.run(Parts {
            api: true,
            projector: true,
        })
        .await
    }
}

/// A running hive (API and/or projector) for one test.
pub struct TestHive {
    running: Running,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// A client.
    pub http: reqwest::Client,
}

impl TestHive {
    /// The URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// GET `path`, asserting nothing.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.expect("GET")
    }

    /// GET `path` once the read models reflect `seq`, returning the status and JSON body.
    pub async fn get_at(&self, path: &str, seq: u64) -> (u16, serde_json::Value) {
        let response = self
            .http
            .get(self.url(path))
            .header("Hive-Min-Seq", seq.to_string())
            .send()
            .await
            .expect("GET");
        let status = response.status().as_u16();
        (
            status,
            response.json().await.unwrap_or(serde_json::Value::Null),
        )
    }

    /// POST JSON to `path`, returning the status and JSON body.
    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let response = self
            .http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .expect("POST");
        let status = response.status().as_u16();
        (
            status,
            response.json().await.unwrap_or(serde_json::Value::Null),
        )
    }

    /// Stops it.
    pub async fn stop(mut self) {
        self.running.stop_all().await.expect("stop the hive");
    }
}
