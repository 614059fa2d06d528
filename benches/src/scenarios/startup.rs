//! Start-up on a long history (issue 16: start-up should follow open work, not history). A log of
//! `events` events, nearly all of tasks long finished, is loaded and projected first, as a hive that
//! ran for a long time leaves it; then each part starts as its own process on it and is timed from its
//! spawn to its first useful act:
//! - `hive up`: healthy; the log's last task read correctly; a task created once healthy assigned to a
//!   live agent (the scheduler has folded the log);
//! - a standby scheduler taking over cold (`hive serve scheduler`, the previous leader gone): a task
//!   waiting for it assigned;
//! - an API alone (`hive serve api`): its first correct answer;
//! - `hive audit agent`: one agent's history and that of every task it touched.
//!
//! The fleet is the same at every length ([`AGENTS`] agents), so only the history grows.
//!
//! A hive that ran on such a log has a snapshot of its scheduler's board: by default the run leaves the
//! oldest one a leader may leave, [`hive_scheduler::SNAPSHOT_EVERY`] − 1 events before the head, so the
//! scheduler folds the longest tail it can meet. `cold`: no snapshot (the first start after an upgrade).

use std::time::{Duration, Instant};

use futures::StreamExt;
use hive_client::{Client, MinSeq};
use hive_eventlog::audit::Record;
use hive_events::AggregateKind;
use serde_json::json;
use uuid::Uuid;

use super::project::project_backlog;
use super::{Servers, unique};
use crate::hive_process::{HiveProcess, Served};
use crate::report::{Row, Table};
use crate::wait::eventually;

/// How long any one start may take before the run fails.
const PATIENCE: Duration = Duration::from_secs(600);

/// The fleet of the loaded log, at every length (its agents take turns on the tasks).
const AGENTS: u64 = 200;

/// How many times each part is started: the rows show the median and the slowest.
const RUNS: usize = 5;

/// A row of one part's start-ups (the median as p50, the slowest as p99 and max).
fn took(what: &str, mut runs: Vec<Duration>, note: &str) -> Row {
    eprintln!("{what}: {runs:?}");
    runs.sort();
    let (median, slowest) = (runs[runs.len() / 2], runs[runs.len() - 1]);
    Row {
        what: what.into(),
        rate: None,
        raw: None,
        latency: Some((median, slowest, slowest)),
        rss: None,
        note: format!(
            "{note}{}median of {}",
            if note.is_empty() { "" } else { "; " },
            runs.len()
        ),
    }
}

/// Load and project `events`, then start each part on them, [`RUNS`] times.
pub async fn startup(servers: &Servers, events: u64, cold: bool) -> anyhow::Result<Vec<Table>> {
    let namespace = unique("startup");
    let backends = servers.backends(&namespace).await?;
    let log = &backends.log;
    // The same fleet whatever the history's length: what is open stays the same, only the past grows.
    let loaded = crate::load::load_with_agents(log, events, AGENTS).await?;
    let head = log.last_seq().await?;
    project_backlog(&backends, head).await?;
    let last_task = *loaded.tasks.last().expect("a task");
    let some_agent = first_agent(log).await?;
    let database = servers.database(&namespace);
    let mut rows = Vec::new();
    let snapshots = hive_scheduler::Snapshots::open(log).await?;
    let (snapshot, left) = if cold {
        ("none: the scheduler folds the whole log".to_owned(), None)
    } else {
        let (covers, encoded) = leave_a_snapshot(log, head).await?;
        let said = format!(
            "the board at seq {covers}: the scheduler folds {} events",
            head - covers
        );
        (said, Some(encoded))
    };
    // Before each start, the scheduler meets the same old snapshot (the last start's scheduler may
    // have saved a newer one), or none.
    let again = async || match &left {
        Some(encoded) => snapshots.save(encoded).await,
        None => snapshots.save_bytes(b"none").await,
    };

    // `hive up`, every part in one process.
    let (mut healthy, mut answered, mut scheduled) = (Vec::new(), Vec::new(), Vec::new());
    let mut token = String::new();
    let mut agent = None;
    for _ in 0..RUNS {
        again().await?;
        let began = Instant::now();
        let hive = HiveProcess::start(servers, &namespace).await?;
        healthy.push(began.elapsed());
        let http = hive.http();
        read_correctly(&http, last_task).await?;
        answered.push(began.elapsed());
        let live = LiveAgent::register(&http).await?;
        let task = live.task_for(&http).await?;
        assigned(log, task).await?;
        scheduled.push(began.elapsed());
        token = hive.token.clone();
        agent = Some(live);
        drop(hive); // SIGTERM: its scheduler gives up its lease as it stops
    }
    let agent = agent.expect("one run at least");
    rows.push(took("hive up: spawn → healthy", healthy, ""));
    rows.push(took(
        "hive up: spawn → the log's last task read correctly",
        answered,
        "",
    ));
    rows.push(took(
        "hive up: spawn → a task created once healthy is assigned",
        scheduled,
        "to a live agent registered then: the scheduler has folded the log",
    ));

    // A standby scheduler taking over cold: the API and the projector run, a task waits for it.
    let api = Served::start("api", servers, &namespace).await?;
    let _projector = Served::start("projector", servers, &namespace).await?;
    let http = Client::new(&api.base).with_token(Some(token.clone()));
    agent.keep_alive(&http);
    let mut took_over = Vec::new();
    for _ in 0..RUNS {
        let waiting = agent.task_for(&http).await?;
        again().await?;
        let began = Instant::now();
        let scheduler = Served::start("scheduler", servers, &namespace).await?;
        assigned(log, waiting).await?;
        took_over.push(began.elapsed());
        drop(scheduler); // SIGTERM: it gives up its lease
    }
    rows.push(took(
        "standby scheduler taking over cold: spawn → a waiting task assigned",
        took_over,
        "hive serve scheduler; the previous leader released its lease",
    ));

    // An API alone, started beside the running one.
    let mut first_answer = Vec::new();
    for _ in 0..RUNS {
        let began = Instant::now();
        let second = Served::start("api", servers, &namespace).await?;
        let http = Client::new(&second.base).with_token(Some(token.clone()));
        read_correctly(&http, last_task).await?;
        first_answer.push(began.elapsed());
    }
    rows.push(took(
        "API alone: spawn → first correct answer",
        first_answer,
        "hive serve api: GET the log's last task (Hive-Min-Seq: head)",
    ));

    // An auditor's question about one agent.
    let mut audits = Vec::new();
    let mut records = 0;
    for _ in 0..RUNS {
        let began = Instant::now();
        let audit = crate::hive_process::hive_command()?
            .args(["audit", "agent", &some_agent.to_string(), "--json"])
            .env("HIVE_NATS_URL", &servers.nats_url)
            .env("HIVE_DATABASE_URL", &database)
            .env("HIVE_NAMESPACE", &namespace)
            .env("HIVE_LOG", "warn")
            .output()?;
        audits.push(began.elapsed());
        anyhow::ensure!(
            audit.status.success(),
            "hive audit agent: {}",
            String::from_utf8_lossy(&audit.stderr)
        );
        let output = String::from_utf8_lossy(&audit.stdout);
        records = serde_json::from_str::<Vec<serde_json::Value>>(&output)
            .map_or_else(|_| output.lines().count(), |all| all.len());
    }
    rows.push(took(
        "hive audit agent (one of the log's agents)",
        audits,
        &format!("{records} records of the agent and its tasks"),
    ));

    rows.push(storage(&backends, head).await?);
    Ok(vec![Table {
        title: format!(
            "start-up on a log of {head} events ({} tasks, nearly all finished); snapshot: {snapshot}",
            loaded.tasks.len()
        ),
        rows,
    }])
}

/// What the history costs to keep: the stream's bytes (JetStream's count, as stored) and the read
/// models' database.
async fn storage(backends: &hive::Backends, head: u64) -> anyhow::Result<Row> {
    use sea_orm::ConnectionTrait;
    let log = &backends.log;
    let js = async_nats::jetstream::new(log.client());
    let stream = js
        .get_stream(log.namespace().stream())
        .await?
        .info()
        .await?
        .state
        .bytes;
    let database = backends
        .db
        .query_one_raw(sea_orm::Statement::from_string(
            backends.db.get_database_backend(),
            "SELECT pg_database_size(current_database()) AS bytes",
        ))
        .await?
        .map(|row| row.try_get::<i64>("", "bytes"))
        .transpose()?
        .unwrap_or_default();
    let mib = |bytes: f64| bytes / (1024.0 * 1024.0);
    Ok(Row {
        what: "storage: the log, the read models".into(),
        rate: None,
        raw: None,
        latency: None,
        rss: None,
        note: format!(
            "stream {:.0} MiB ({:.0} bytes an event), read-model database {:.0} MiB",
            mib(stream as f64),
            stream as f64 / head.max(1) as f64,
            mib(database as f64)
        ),
    })
}

/// Leaves the snapshot of the scheduler's board that a leader on this log may have left at worst, the
/// longest tail before the head it would not yet have saved: [`hive_scheduler::SNAPSHOT_EVERY`] − 1
/// events. The sequence it covers, and the snapshot.
async fn leave_a_snapshot(
    log: &hive_eventlog::EventLog,
    head: u64,
) -> anyhow::Result<(u64, hive_scheduler::snapshot::Encoded)> {
    use hive_scheduler::{Board, SNAPSHOT_EVERY, Snapshots};
    let covers = head.saturating_sub(SNAPSHOT_EVERY - 1).max(1);
    let replay = hive_scheduler::board::replay(log.subjects().clone());
    let mut board = Board::default();
    let mut events = Box::pin(log.read_from(1).await?);
    while board.last_seq() < covers {
        match events.next().await {
            Some(Ok(event)) => board.apply(&event, &replay),
            // A reader that stalls on a busy server is replaced, as the scheduler replaces its own.
            failed => {
                eprintln!("reading on after {}: {failed:?}", board.last_seq());
                events = Box::pin(log.read_from(board.last_seq() + 1).await?);
            }
        }
    }
    let snapshots = Snapshots::open(log).await?;
    let encoded = snapshots
        .encode(&board)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no snapshot of an empty board"))?;
    snapshots.save(&encoded).await?;
    Ok((covers, encoded))
}

/// The agent the log's first event registered.
async fn first_agent(log: &hive_eventlog::EventLog) -> anyhow::Result<Uuid> {
    let mut events = Box::pin(log.read_from(1).await?);
    let first = events
        .next()
        .await
        .ok_or_else(|| anyhow::anyhow!("an empty log"))??;
    let subject = first.subject.rsplit('.').next().unwrap_or_default();
    Ok(subject.parse()?)
}

/// Waits until `task` reads as the loader left it: completed.
async fn read_correctly(http: &Client, task: Uuid) -> anyhow::Result<()> {
    eventually(
        PATIENCE,
        Duration::from_millis(5),
        "a correct answer",
        async || {
            let path = format!("/api/v1/tasks/{task}");
            Ok(match http.get_at(&path, MinSeq::Head).await {
                Ok(found) => (found["status"] == "completed").then_some(()),
                Err(_) => None, // not listening yet, or not caught up
            })
        },
    )
    .await
}

/// Waits until the log holds `task`'s assignment.
async fn assigned(log: &hive_eventlog::EventLog, task: Uuid) -> anyhow::Result<()> {
    eventually(
        PATIENCE,
        Duration::from_millis(5),
        "the assignment",
        async || {
            let history = log.history(AggregateKind::Task, task).await?;
            let subjects = log.subjects();
            Ok(history
                .iter()
                .any(|raw| Record::of(raw, subjects).event_type.as_deref() == Some("TaskAssigned"))
                .then_some(()))
        },
    )
    .await
}

/// An agent of a capability of its own, kept alive by heartbeats, so the tasks that need it wait
/// for the scheduler and for nothing else.
struct LiveAgent {
    id: Uuid,
    capability: String,
}

impl LiveAgent {
    async fn register(http: &Client) -> anyhow::Result<Self> {
        let capability = format!("startup-{}", Uuid::now_v7().simple());
        let body = json!({"agent_type": "worker", "capabilities": [capability],
                          "max_concurrent_tasks": 10});
        let id = http.register_agent(&body).await?["agent_id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no agent id"))?;
        let agent = Self { id, capability };
        agent.keep_alive(http);
        Ok(agent)
    }

    /// Heartbeats every second through `http`, for as long as this process runs.
    fn keep_alive(&self, http: &Client) {
        let (http, id) = (http.clone(), self.id);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            loop {
                every.tick().await;
                // A refusal (the API stopping) ends it; another API keeps it alive then.
                if http.heartbeat(id).await.is_err() {
                    return;
                }
            }
        });
    }

    /// A new task only this agent can take.
    async fn task_for(&self, http: &Client) -> anyhow::Result<Uuid> {
        let created = http
            .create_task(&json!({"title": "after start-up",
                                 "required_capabilities": [self.capability]}))
            .await?;
        created["task_id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no task id"))
    }
}
