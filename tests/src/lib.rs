//! The test harness: one real nats-server and one real PostgreSQL per test binary, started on first use
//! and killed with the process; each test gets its own database and its own NATS namespace (stream
//! `<NS>_EVENTS`, subjects `<ns>.events.>`), so tests never see each other's data.

pub mod exposition;

use std::net::SocketAddr;
use std::sync::OnceLock;

use bytes::Bytes;
use futures::StreamExt;
use hive::{Backends, Config, Parts, Running};
use hive_devservers::{Durability, NatsServer, Postgres};
use hive_eventlog::{EventLog, Namespace};
use hive_events::agent::{Agent, AgentCommand};
use hive_events::project::{Project, ProjectCommand};
use hive_events::task::{NewTask, Task, TaskCommand};
use hive_events::{AgentId, Priority, ProjectId, TaskId};
use sea_orm::DatabaseConnection;
use serde_json::json;

struct Servers {
    nats_url: String,
    pg: Postgres,
    _nats: NatsServer,
}

/// Where this test process keeps its servers' data: `$TMPDIR/hive-test-servers/<pid>` (PostgreSQL's
/// user must reach it). The servers live in a static, which is never dropped, so a run cannot remove its
/// own directory: each run removes those of runs that have ended.
fn servers_dir() -> std::path::PathBuf {
    let base = std::env::temp_dir().join("hive-test-servers");
    if let Ok(entries) = std::fs::read_dir(&base) {
        for entry in entries.flatten() {
            let pid = entry.file_name().to_string_lossy().parse::<u32>().ok();
            if pid.is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = base.join(std::process::id().to_string());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("the test servers' directory");
    dir
}

fn servers() -> &'static Servers {
    static SERVERS: OnceLock<Servers> = OnceLock::new();
    SERVERS.get_or_init(|| {
        // Each test has its own runtime; the servers outlive them all, so they start on a runtime of
        // their own, on a thread of their own.
        std::thread::spawn(|| {
            tokio::runtime::Runtime::new().unwrap().block_on(async {
                let dir = servers_dir();
                let nats = NatsServer::start(&dir.join("nats"), None, Durability::Throwaway, &[])
                    .await
                    .expect("start nats-server");
                let pg = Postgres::start(&dir.join("pg"), None, Durability::Throwaway)
                    .await
                    .expect("start postgres");
                Servers {
                    nats_url: nats.url(),
                    pg,
                    _nats: nats,
                }
            })
        })
        .join()
        .expect("start the test servers")
    })
}

/// The `hive` program the tests spawn agents of: `hive-under-test`, which cargo builds beside the test
/// binary (`target/<profile>/`, one level above `deps/`).
pub fn agent_program() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let program = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("hive-under-test"))
        .expect("the target directory");
    assert!(
        program.exists(),
        "{} is missing: run the tests with cargo, which builds it",
        program.display()
    );
    program
}

/// Asks `check` every `every` until it answers, for at most `within`: its answer, or `None` when time
/// ran out. The one way the tests wait for a condition they cannot be told about.
pub async fn eventually<T>(
    within: std::time::Duration,
    every: std::time::Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> Option<T> {
    tokio::time::timeout(within, async {
        loop {
            if let Some(found) = check().await {
                return found;
            }
            tokio::time::sleep(every).await;
        }
    })
    .await
    .ok()
}

/// The processes whose command line mentions `needle` (an agent's id, say).
pub fn processes_with(needle: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .collect()
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

/// Issues a token of `role` in `tokens`.
pub async fn issue_token(tokens: &hive_eventlog::Tokens, role: hive_eventlog::Role) -> String {
    tokens
        .issue(&hive_eventlog::Grant::new(role, format!("test {role}")))
        .await
        .expect("issue a token")
        .0
}

/// Sends `request` and reads its answer's JSON body, whatever the status.
pub async fn json(request: reqwest::RequestBuilder) -> serde_json::Value {
    request
        .send()
        .await
        .expect("a request")
        .json()
        .await
        .expect("a JSON answer")
}

/// A client that sends `token` as its bearer token.
pub fn authorized_client(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().expect("a header value"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("an HTTP client")
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
        let backends = hive::connect(&config, &servers.nats_url, &database_url, true)
            .await
            .expect("connect the test backends");
        let admin_token = issue_token(&backends.tokens, hive_eventlog::Role::Admin).await;
        Self {
            config,
            nats_url: servers.nats_url.clone(),
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
        let mut events = Box::pin(self.log().read_from(1).await.expect("read the log"));
        let mut seen = 0;
        let found = tokio::time::timeout(std::time::Duration::from_secs(20), async {
            while let Some(event) = events.next().await {
                let event = event.expect("read the log");
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
            panic!("the log ended");
        })
        .await;
        found.unwrap_or_else(|_| panic!("no {event_type} #{n} for {kind} {id} within 20 s"))
    }

    /// Starts `parts` of a hive on this world, the API on a free port.
    pub async fn run(&self, parts: Parts) -> TestHive {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut backends = hive::PartBackends::from(self.backends.clone());
        // The API reads as `hive up` runs it: through a role that may only read.
        if parts.api {
            let url = self.reader_url().await;
            backends.api.db = sea_orm::Database::connect(url.as_str())
                .await
                .expect("connect as the API's read-only role");
            backends.api.database_url = url;
        }
        let running = hive::run(&self.config, backends, parts, addr)
            .await
            .expect("start the hive");
        let base = running
            .addr
            .map(|a| format!("http://{a}"))
            .unwrap_or_default();
        TestHive {
            running,
            base,
            http: authorized_client(&self.admin_token),
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
}

/// A running hive (API and/or projector) for one test.
pub struct TestHive {
    running: Running,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// A client that sends [`TestHive::token`].
    pub http: reqwest::Client,
    /// The admin token its client sends.
    pub token: String,
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

    /// `/metrics`, parsed as Prometheus text, every line of it checked ([`exposition::parse`]).
    pub async fn scrape(&self) -> prometheus_parse::Scrape {
        let text = self.get("/metrics").await.text().await.expect("/metrics");
        exposition::parse(&text)
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

    /// The agent's assignment stream (server-sent events), read by the agent runtime's own client.
    pub async fn assignments(&self, agent: &str) -> Assignments {
        let stream = hive_runtime::Client::new(&self.base)
            .with_token(Some(self.token.clone()))
            .assignments(agent.parse().expect("an agent id"))
            .await
            .expect("open the assignment stream");
        Assignments {
            stream: Box::pin(stream),
        }
    }

    /// Runs `hive agent` as its own process against this hive, with `args` after `agent --api <url>`.
    pub fn agent_process(&self, args: &[&str]) -> AgentProcess {
        self.agent_process_logging(args, "warn", None)
    }

    /// [`TestHive::agent_process`], logging by `filter` (`HIVE_LOG`) into file `log` if given (else
    /// the test's output), so that a test can await what only the runtime knows.
    pub fn agent_process_logging(
        &self,
        args: &[&str],
        filter: &str,
        log: Option<&std::path::Path>,
    ) -> AgentProcess {
        let mut command = tokio::process::Command::new(agent_program());
        command
            .arg("agent")
            .arg("--api")
            .arg(&self.base)
            .args(args)
            .env("HIVE_LOG", filter)
            // Registers with it, then acts with the agent's own token.
            .env("HIVE_TOKEN", &self.token)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        if let Some(log) = log {
            let file = std::fs::File::create(log).expect("the agent's log file");
            command
                .stdout(file.try_clone().expect("the agent's log file"))
                .stderr(file);
        }
        hive_devservers::die_with_parent(command.as_std_mut());
        AgentProcess {
            child: command.spawn().expect("start hive agent"),
        }
    }

    /// Stops it.
    pub async fn stop(mut self) {
        self.running.stop_all().await.expect("stop the hive");
    }
}

/// A `hive agent` process; killed when dropped.
pub struct AgentProcess {
    child: tokio::process::Child,
}

impl AgentProcess {
    /// Sends it `signal`.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = self.child.id().expect("the agent is running");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).expect("signal");
    }

    /// Waits (at most 20 s) for it to exit; answers whether it exited with status 0.
    pub async fn exited(&mut self) -> bool {
        tokio::time::timeout(std::time::Duration::from_secs(20), self.child.wait())
            .await
            .expect("the agent exits within 20 s")
            .expect("wait for the agent")
            .success()
    }
}

/// An agent's assignments as they are pushed.
pub struct Assignments {
    stream: std::pin::Pin<Box<dyn futures::Stream<Item = serde_json::Value> + Send>>,
}

impl Assignments {
    /// The next assignment (at most 20 s away).
    pub async fn next(&mut self) -> serde_json::Value {
        use futures::StreamExt;
        tokio::time::timeout(std::time::Duration::from_secs(20), self.stream.next())
            .await
            .expect("an assignment within 20 s")
            .expect("the stream stays open")
    }
}

fn ctx() -> hive_eventlog::CommandContext {
    hive_eventlog::CommandContext::new(hive_events::Actor::new("test"))
}

/// A hive's life, written straight to the log: agents registering, getting ready and lost, tasks queued, assigned, run,
/// completed, failed, retried and cancelled, in a project. Returns the log's last sequence.
pub async fn scenario(log: &EventLog, agents: usize, tasks: usize) -> u64 {
    let project = ProjectId::new().as_uuid();
    let create = ProjectCommand::Create {
        name: "scenario".into(),
        description: None,
        project_type: Some("test".into()),
    };
    log.create::<Project>(project, &ctx(), create)
        .await
        .unwrap();
    let mut agent_ids = Vec::new();
    for n in 0..agents {
        let id = AgentId::new();
        let register = AgentCommand::Register {
            name: Some(format!("agent-{n}")),
            agent_type: "worker".into(),
            capabilities: vec!["rust".into()],
            max_concurrent_tasks: 2,
        };
        log.create::<Agent>(id.as_uuid(), &ctx(), register)
            .await
            .unwrap();
        log.execute::<Agent>(id.as_uuid(), &ctx(), AgentCommand::MarkReady)
            .await
            .unwrap();
        if n % 3 == 2 {
            let lost = AgentCommand::MarkLost {
                reason: "heartbeat_timeout".into(),
            };
            log.execute::<Agent>(id.as_uuid(), &ctx(), lost)
                .await
                .unwrap();
        }
        agent_ids.push(id);
    }
    let agent_ids = &agent_ids;
    let one_task = async |n: usize| {
        let id = TaskId::new().as_uuid();
        let new = NewTask {
            title: format!("task {n}"),
            description: Some("do it".into()),
            task_type: Some("code".into()),
            priority: Priority::new((n % 10 + 1) as i64).unwrap(),
            required_capabilities: vec!["rust".into()],
            depends_on: vec![],
            waiting_on: vec![],
            project_id: Some(ProjectId::from_uuid(project)),
            pinned_agent: None,
            max_attempts: 2,
        };
        log.create::<Task>(id, &ctx(), TaskCommand::Create(new))
            .await
            .unwrap();
        let agent = agent_ids[n % agent_ids.len()];
        let steps: Vec<TaskCommand> = match n % 5 {
            0 => vec![],
            1 => vec![TaskCommand::Cancel {
                reason: Some("not needed".into()),
            }],
            _ => {
                let mut steps = vec![
                    TaskCommand::Assign {
                        agent_id: agent,
                        lease_expires_at: chrono::Utc::now(),
                    },
                    TaskCommand::Start { agent_id: agent },
                    TaskCommand::Progress {
                        agent_id: agent,
                        percent: Some(50),
                        message: Some("half".into()),
                    },
                ];
                if n % 5 == 2 {
                    steps.push(TaskCommand::Complete {
                        agent_id: agent,
                        result: json!({"n": n}),
                    });
                } else if n % 5 == 3 {
                    steps.push(TaskCommand::Fail {
                        agent_id: agent,
                        error: "boom".into(),
                        retryable: true,
                    });
                    steps.push(TaskCommand::ScheduleRetry {
                        retry_at: chrono::Utc::now(),
                    });
                }
                steps
            }
        };
        for step in steps {
            log.execute::<Task>(id, &ctx(), step).await.unwrap();
        }
    };
    // Tasks advance side by side, as in a busy hive (and so that large scenarios load quickly).
    futures::stream::iter(0..tasks)
        .for_each_concurrent(32, one_task)
        .await;
    log.last_seq().await.unwrap()
}
