//! Chaos: a hive of separate processes (API, projector, scheduler, a spawned agent) on its own
//! nats-server and PostgreSQL, under a steady load of commands and reads, while each of the projector,
//! the scheduler, the agent, nats-server and PostgreSQL in turn is killed with SIGKILL at a random
//! moment and started again (the agent by its supervisor, the spawner). After every round the hive
//! recovers by itself: a new task is acknowledged, projected, assigned, run and completed; the time it
//! takes after the component is back is measured (target < 2 s, asserted < 10 s). At the end every
//! acknowledged command is in the log exactly once, nothing else is, every acknowledged task has run
//! to completion, and `hive verify` finds the read models equal to the fold of the log. Each part runs
//! as its own NATS user, as under `hive up`, and is never refused anything. `HIVE_CHAOS_KEEP=1` keeps
//! the servers' data and the logs.
//!
//! Long because it is one scenario with the restartable hive (`Hive`) that only it uses.

use hive_client::Method;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hive_devservers::{Durability, NatsServer, Postgres, free_port};
use hive_eventlog::Namespace;
use hive_eventlog::users::{self, Service};
use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use hive_tests::cluster::{assert_each_acknowledged_task_created_once, refusals};
use hive_tests::process::{Part, admin_token, migrate, part};
use hive_tests::until;

/// Rounds of each component: 5 components × 4 = 20 kills.
const ROUNDS_EACH: usize = 4;

/// Acknowledged creations: idempotency key → task id.
type Acked = Arc<Mutex<BTreeMap<String, String>>>;

/// Creates a task under `key` with `priority`, retrying (same key) until it is acknowledged: its id.
async fn create(
    http: &hive_client::Client,
    base: &str,
    key: &str,
    priority: u8,
    within: Duration,
) -> Option<String> {
    // A loop of its own, not `hive_tests::eventually`: this runs in spawned tasks, and a generic
    // async closure's future is not known to be `Send` (rust-lang/rust#110338).
    let give_up = Instant::now() + within;
    while Instant::now() < give_up {
        let answer = http
            .request(Method::POST, &format!("{base}/api/v1/tasks"))
            .header("Idempotency-Key", key)
            .json(&json!({ "title": key, "priority": priority }))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        if let Ok(r) = answer
            && r.status().is_success()
            && let Ok(body) = r.json::<Value>().await
        {
            return body["task_id"].as_str().map(str::to_owned);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// The time until task `id` is completed, polling its read model.
async fn completed(http: &hive_client::Client, base: &str, id: &str, within: Duration) -> bool {
    let done = hive_tests::eventually(within, Duration::from_millis(20), async || {
        let r = http
            .request(Method::GET, &format!("{base}/api/v1/tasks/{id}"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        let view = r.json::<Value>().await.ok()?;
        (view["state"] == "completed").then_some(())
    })
    .await;
    done.is_some()
}

/// The components a round kills.
#[derive(Clone, Copy, Debug)]
enum Victim {
    Projector,
    Scheduler,
    Agent,
    Nats,
    Postgres,
}

/// The hive under chaos: its servers and its processes, each restartable.
/// (Its processes are dropped, so stopped, before its servers.)
struct Hive {
    projector: Part,
    scheduler: Part,
    api: Part,
    dir: std::path::PathBuf,
    env: Vec<(&'static str, String)>,
    nats: Option<NatsServer>,
    nats_port: u16,
    pg: Option<Postgres>,
    pg_port: u16,
}

impl Hive {
    fn log(&self, name: &str) -> std::path::PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    fn show_logs(&self) {
        for name in ["api", "projector", "scheduler"] {
            let text = std::fs::read_to_string(self.log(name)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            eprintln!("--- {name} (last lines)");
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }

    /// Kills `victim` with SIGKILL and starts it again; answers when it is back.
    async fn kill_and_restart(&mut self, victim: Victim, agent: &str) -> Instant {
        match victim {
            Victim::Projector => {
                self.projector.kill().await;
                let env = env_of(&self.env, Service::Projector);
                self.projector = part(&["serve", "projector"], &env, &self.log("projector"));
            }
            Victim::Scheduler => {
                self.scheduler.kill().await;
                let env = env_of(&self.env, Service::Scheduler);
                self.scheduler = part(&["serve", "scheduler"], &env, &self.log("scheduler"));
            }
            Victim::Agent => {
                // Its supervisor (the API's spawner) starts it again: back once a new process runs.
                let before = hive_tests::processes_with(agent);
                for pid in &before {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(*pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                until(
                    Duration::from_secs(30),
                    "the agent restarted",
                    || self.show_logs(),
                    async || {
                        let now = hive_tests::processes_with(agent);
                        (!now.is_empty() && now.iter().all(|p| !before.contains(p))).then_some(())
                    },
                )
                .await;
            }
            Victim::Nats => {
                let mut nats = self.nats.take().expect("nats-server runs");
                tokio::task::spawn_blocking(move || nats.kill())
                    .await
                    .unwrap();
                self.nats = Some(start_nats(&self.dir, self.nats_port).await);
            }
            Victim::Postgres => {
                let mut pg = self.pg.take().expect("postgres runs");
                tokio::task::spawn_blocking(move || pg.kill())
                    .await
                    .unwrap();
                self.pg = Some(restart_pg(&self.dir, self.pg_port).await);
            }
        }
        Instant::now()
    }
}

/// The password of `service`'s NATS user in this test.
fn password(service: Service) -> String {
    format!("{}-chaos", service.name())
}

/// The nats-server users, as `hive up` gives its own nats-server.
fn users() -> String {
    users::server_config(&Namespace::new("hive"), |s| users::quoted(&password(s)))
}

/// Starts nats-server (again) on its store, with the users.
async fn start_nats(dir: &Path, port: u16) -> NatsServer {
    NatsServer::start_configured(
        &dir.join("nats"),
        Some(port),
        Durability::SyncedByClient,
        &users(),
        &[],
    )
    .await
    .expect("nats-server starts")
}

/// `env` with the NATS URL of `service`'s user.
fn env_of(env: &[(&'static str, String)], service: Service) -> Vec<(&'static str, String)> {
    env.iter()
        .map(|(k, v)| match *k {
            "HIVE_NATS_URL" => (
                *k,
                hive::with_credentials(v, &service.user(), &password(service)).unwrap(),
            ),
            _ => (*k, v.clone()),
        })
        .collect()
}

/// Starts PostgreSQL (again) on its data: after a kill its backends notice the postmaster's death and
/// exit within moments; until then a new postmaster may refuse to start. Its commits are asynchronous
/// (a throw-away server's setting), so a kill loses the last ones: the projector must notice that its
/// checkpoint went back and apply those events again (as after a failover to a replica that lagged).
/// nats-server runs as `hive up` runs it (its store synced by the hive before an acknowledgement counts).
async fn restart_pg(dir: &Path, port: u16) -> Postgres {
    let mut refused = None;
    let started = hive_tests::eventually(
        Duration::from_secs(30),
        Duration::from_millis(100),
        async || match Postgres::start(&dir.join("pg"), Some(port), Durability::Throwaway).await {
            Ok(pg) => Some(pg),
            // Not yet: its old backends are still exiting.
            Err(e) => {
                refused = Some(e);
                None
            }
        },
    )
    .await;
    started.unwrap_or_else(|| panic!("postgres did not restart: {refused:?}"))
}

#[tokio::test]
async fn twenty_kills_lose_nothing_and_the_hive_recovers_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let dir_path = if std::env::var_os("HIVE_CHAOS_KEEP").is_some() {
        dir.keep()
    } else {
        dir.path().to_path_buf()
    };
    eprintln!("chaos: in {}", dir_path.display());
    let nats_port = free_port().unwrap();
    let pg_port = free_port().unwrap();
    let nats = start_nats(&dir_path, nats_port).await;
    let pg = restart_pg(&dir_path, pg_port).await;
    let api_port = free_port().unwrap();
    let env: Vec<(&'static str, String)> = vec![
        ("HIVE_NATS_URL", nats.url()),
        ("HIVE_DATABASE_URL", pg.url("hive")),
        ("HIVE_HOME", dir_path.join("home").display().to_string()),
        // As `hive up` runs its own nats-server: the hive syncs its store for every group of writes.
        (
            "HIVE_NATS_STORE_DIR",
            dir_path.join("nats").display().to_string(),
        ),
        ("HIVE_HTTP_ADDR", format!("127.0.0.1:{api_port}")),
        // Fast failure detection, so that rounds are short.
        ("HIVE_HEARTBEAT_TIMEOUT_SECS", "2".into()),
        ("HIVE_AGENT_HEARTBEAT_SECS", "0.5".into()),
        ("HIVE_ASSIGNMENT_LEASE_SECS", "3".into()),
        ("HIVE_LEADER_TTL_SECS", "1".into()),
        ("HIVE_RETRY_BASE_SECS", "0.1".into()),
        ("HIVE_SPAWN_MAX_RESTARTS", "1000".into()),
        ("HIVE_AGENT_EXEC", "exit 0".into()),
        (
            "HIVE_LOG",
            "info,sqlx=warn,sea_orm=warn,async_nats=warn,tower_http=warn".into(),
        ),
        ("HIVE_AGENT_LOG_FILTER", "warn".into()),
        (
            "HIVE_AGENT_PROGRAM",
            hive_tests::agent_program().display().to_string(),
        ),
    ];
    // Each part as its own NATS user (the operators' commands as the admin).
    let admin = env_of(&env, Service::Admin);
    migrate(&admin).await;
    let token = admin_token(&admin).await;
    let log = |name: &str| dir_path.join(format!("{name}.log"));
    let mut hive = Hive {
        api: part(&["serve", "api"], &env_of(&env, Service::Api), &log("api")),
        projector: part(
            &["serve", "projector"],
            &env_of(&env, Service::Projector),
            &log("projector"),
        ),
        scheduler: part(
            &["serve", "scheduler"],
            &env_of(&env, Service::Scheduler),
            &log("scheduler"),
        ),
        dir: dir_path.clone(),
        env: env.clone(),
        nats: Some(nats),
        nats_port,
        pg: Some(pg),
        pg_port,
    };
    let base = format!("http://127.0.0.1:{api_port}");
    let http = hive_tests::authorized_client(&base, &token);
    until(
        Duration::from_secs(60),
        "a healthy API",
        || hive.show_logs(),
        async || {
            let r = http
                .request(Method::GET, &format!("{base}/health"))
                .send()
                .await
                .ok()?;
            (r.status() == 200).then_some(())
        },
    )
    .await;
    let spawned = hive_tests::json(
        http.request(Method::POST, &format!("{base}/api/v1/agents/spawn"))
            .json(&json!({"max_concurrent_tasks": 8})),
    )
    .await;
    let agent = spawned["agent_id"]
        .as_str()
        .expect("a spawned agent")
        .to_owned();

    // The load: 4 clients creating tasks (5 a second each), 2 reading the status, all through the API.
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for n in 0..4 {
        let (http, base, acked, stop) = (http.clone(), base.clone(), acked.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("load-{n}-{i}");
                i += 1;
                let id = create(&http, &base, &key, 5, Duration::from_secs(60))
                    .await
                    .unwrap_or_else(|| panic!("{key} never acknowledged"));
                acked.lock().await.insert(key, id);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
    }
    for _ in 0..2 {
        let (http, base, stop, reads) = (http.clone(), base.clone(), stop.clone(), reads.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(r) = http
                    .request(Method::GET, &format!("{base}/status"))
                    .send()
                    .await
                    && r.status() == 200
                {
                    reads.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }

    // The rounds: each component in turn, at a random moment.
    let victims = [
        Victim::Projector,
        Victim::Scheduler,
        Victim::Agent,
        Victim::Nats,
        Victim::Postgres,
    ];
    let mut recoveries: Vec<(Victim, Duration)> = Vec::new();
    for round in 0..ROUNDS_EACH * victims.len() {
        let victim = victims[round % victims.len()];
        let pause = rand::rng().random_range(200..800);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let back = hive.kill_and_restart(victim, &agent).await;
        // Recovered: a new task is acknowledged, projected, assigned, run and completed. It outranks the
        // load's tasks, so the time is the hive's, not the queue's.
        let key = format!("probe-{round}");
        let id = create(&http, &base, &key, 10, Duration::from_secs(60)).await;
        let Some(id) = id else {
            hive.show_logs();
            panic!("round {round} ({victim:?}): the probe was never acknowledged");
        };
        acked.lock().await.insert(key, id.clone());
        if !completed(&http, &base, &id, Duration::from_secs(60)).await {
            hive.show_logs();
            panic!("round {round} ({victim:?}): the probe task never completed");
        }
        let took = back.elapsed();
        assert!(
            took < Duration::from_secs(10),
            "round {round} ({victim:?}) took {took:?}"
        );
        recoveries.push((victim, took));
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }

    let mut times: Vec<Duration> = recoveries.iter().map(|(_, d)| *d).collect();
    times.sort();
    eprintln!(
        "chaos: {} rounds, {} commands acknowledged, {} reads; recovery p50 {:?}, max {:?}",
        recoveries.len(),
        acked.lock().await.len(),
        reads.load(Ordering::Relaxed),
        times[times.len() / 2],
        times.last().unwrap()
    );
    for (victim, took) in &recoveries {
        eprintln!("  {victim:?}: {took:?}");
    }

    // Every acknowledged command is in the log once, and nothing else is.
    let acked = acked.lock().await.clone();
    let ids: HashSet<&str> = acked.values().map(String::as_str).collect();
    assert_eq!(ids.len(), acked.len(), "one task per key");
    let client = async_nats::ConnectOptions::with_user_and_password(
        Service::Admin.user(),
        password(Service::Admin),
    )
    .connect(hive.nats.as_ref().unwrap().url())
    .await
    .unwrap();
    let config = hive::Config {
        namespace: "hive".into(),
        ..hive::Config::default()
    };
    let log = hive_eventlog::EventLog::open(client, &config.log())
        .await
        .unwrap();
    let events = log.read_to_head(1).await.unwrap();
    let head = events.last().map_or(0, |e| e.seq);
    assert_each_acknowledged_task_created_once(&events, log.subjects(), &ids);

    // Every acknowledged task runs to completion, and the read models reach the log's head.
    let total = ids.len();
    let settled = hive_tests::eventually(
        Duration::from_secs(60),
        Duration::from_millis(100),
        async || {
            let r = http
                .request(Method::GET, &format!("{base}/status"))
                .header("Hive-Min-Seq", head.to_string())
                .send()
                .await
                .ok()?;
            (r.status() == 200).then_some(())?;
            let counts = r.json::<Value>().await.ok()?;
            (counts["tasks"]["by_status"]["completed"] == total).then_some(counts)
        },
    )
    .await;
    let Some(counts) = settled else {
        for state in [
            "queued",
            "assigned",
            "accepted",
            "running",
            "retry_scheduled",
        ] {
            let open = hive_tests::json(http.request(
                Method::GET,
                &format!("/api/v1/tasks?limit=20&status={state}"),
            ))
            .await;
            for task in open["items"].as_array().into_iter().flatten() {
                eprintln!("chaos: not completed: {task}");
            }
        }
        hive.show_logs();
        panic!("every acknowledged task completed within 60 s");
    };
    assert_eq!(counts["tasks"]["total"], total, "{counts}");
    // Quiet the hive (the scheduler, and the API with the agent it spawned), wait for the projector to
    // reach the log's head, then compare: `hive verify` folds the whole log and compares it with every
    // row.
    hive.scheduler.kill().await;
    hive.api.kill().await;
    let head = log.last_seq().await.unwrap();
    let db = sea_orm::Database::connect(hive.pg.as_ref().unwrap().url("hive"))
        .await
        .unwrap();
    until(
        Duration::from_secs(60),
        "the projector at the log's head",
        || hive.show_logs(),
        async || {
            let standing = hive_projector::status::projections(&db, head).await.ok()?;
            standing
                .iter()
                .any(|p| p.name == hive_projector::READ_MODELS && p.checkpoint >= head)
                .then_some(())
        },
    )
    .await;
    let verified = tokio::process::Command::new(hive_tests::agent_program())
        .arg("verify")
        .envs(admin.iter().map(|(k, v)| (*k, v.as_str())))
        .env("HIVE_LOG", "warn")
        .kill_on_drop(true)
        .output();
    let verified = tokio::time::timeout(Duration::from_secs(60), verified)
        .await
        .expect("hive verify answers within 60 s")
        .unwrap();
    assert!(
        verified.status.success(),
        "hive verify: {}{}",
        String::from_utf8_lossy(&verified.stdout),
        String::from_utf8_lossy(&verified.stderr)
    );
    // Each part ran as its own NATS user throughout (buckets in memory created again after each
    // restart of nats-server included), and was never refused anything.
    let refused = refusals(&dir_path.join("nats"));
    assert!(refused.is_empty(), "{}", refused.join("\n"));
}
