//! Scheduler leadership: a standby scheduler takes over when the active one dies (in this process, and
//! as a `hive serve scheduler` process when the leading one is killed with SIGKILL), and a scheduler
//! that starts late still sees the heartbeats sent before it, and schedulers racing for the lease never
//! assign a task twice.
//!
//! Long because each takeover (in process, as a process, racing, from a snapshot) needs its own run
//! of servers and schedulers.

use hive_client::Method;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt;

use hive_events::AggregateKind;
use hive_tests::api::{create_task, id, ready_agent, spawn};
use hive_tests::process::part;
use hive_tests::{World, until};
use serde_json::json;
use uuid::Uuid;

#[tokio::test]
async fn a_standby_scheduler_takes_over_when_the_active_one_dies() {
    let mut world = World::new().await;
    world.config.leader_ttl_secs = 0.6;
    let api = world.hive().await;
    let first = world.scheduler().await;
    let mut first_leads = first.leading();
    let first_task = tokio::spawn(first.run(std::future::pending()));
    first_leads.wait_for(|l| *l).await.unwrap();
    let second = world.scheduler().await;
    let mut second_leads = second.leading();
    let second_task = tokio::spawn(second.run(std::future::pending()));

    let agent = ready_agent(&api, &world, &[], 5).await;
    let mut assignments = api.assignments(&agent).await;
    let (_, one) = api.post("/api/v1/tasks", json!({"title": "one"})).await;
    assert_eq!(
        assignments.next().await["task_id"],
        id(&one, "task_id").as_str()
    );
    assert!(!*second_leads.borrow(), "only one scheduler is active");

    // The active one dies without releasing its lease; the standby takes over once it lapses.
    first_task.abort();
    let died = std::time::Instant::now();
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        second_leads.wait_for(|l| *l),
    )
    .await
    .expect("the standby takes over")
    .unwrap();
    let took_over = died.elapsed();
    assert!(
        took_over < std::time::Duration::from_millis(2_000),
        "took over after {took_over:?}"
    );
    let (_, two) = api.post("/api/v1/tasks", json!({"title": "two"})).await;
    assert_eq!(
        assignments.next().await["task_id"],
        id(&two, "task_id").as_str()
    );
    second_task.abort();
    api.stop().await;
}

#[tokio::test]
async fn a_scheduler_that_starts_late_still_sees_the_heartbeats_before_it() {
    let world = World::new().await;
    let api = world.hive().await;
    let (status, body) = api
        .post("/api/v1/agents", json!({"agent_type": "worker"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let agent = id(&body, "agent_id");
    let (status, _) = api
        .post(&format!("/api/v1/agents/{agent}/heartbeat"), json!({}))
        .await;
    assert_eq!(status, 200);

    // Only now does a scheduler start; the one heartbeat it missed is still in the bucket.
    let scheduler = world.scheduler().await;
    let running = tokio::spawn(scheduler.run(std::future::pending()));
    world
        .wait_for_event(AggregateKind::Agent, agent.parse().unwrap(), "AgentReady")
        .await;
    running.abort();
    api.stop().await;
}

#[tokio::test]
async fn a_standby_scheduler_process_takes_over_when_the_leader_is_killed() {
    const TTL: Duration = Duration::from_secs(1);
    // Beyond the TTL: the standby tries for the lease every TTL/10, and the server expires it on time
    // give or take a few milliseconds; the rest is for a busy machine.
    const MARGIN: Duration = Duration::from_millis(3_000);
    let world = World::new().await;
    // API and projector here; the schedulers are `hive serve scheduler` processes.
    let api = world.hive().await;
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path();
    let env = |extra: &[(&'static str, String)]| {
        let mut env = vec![
            ("HIVE_NATS_URL", world.nats_url.clone()),
            ("HIVE_DATABASE_URL", world.database_url.clone()),
            ("HIVE_NAMESPACE", world.config.namespace.clone()),
            ("HIVE_HOME", logs.display().to_string()),
            ("HIVE_LEADER_TTL_SECS", TTL.as_secs_f64().to_string()),
        ];
        env.extend_from_slice(extra);
        env
    };
    let show_logs = || {
        for name in ["scheduler-1", "scheduler-2"] {
            let text =
                std::fs::read_to_string(logs.join(format!("{name}.log"))).unwrap_or_default();
            eprintln!("--- {name}\n{text}");
        }
    };
    let js = async_nats::jetstream::new(world.log().client());
    let bucket = world.namespace().scheduler_lease();
    let holder = async || {
        let lease = js.get_key_value(&bucket).await.ok()?;
        let holder = lease.get("leader").await.ok()??;
        Some(String::from_utf8_lossy(&holder).into_owned())
    };

    // The first to start leads; the second, started once the first holds the lease, stands by.
    let mut first = part(
        &["serve", "scheduler"],
        &env(&[]),
        &logs.join("scheduler-1.log"),
    );
    let leader = until(Duration::from_secs(30), "a leader", show_logs, holder).await;
    let standby_metrics = hive_devservers::free_port().unwrap();
    let _second = part(
        &["serve", "scheduler"],
        &env(&[("HIVE_METRICS_ADDR", format!("127.0.0.1:{standby_metrics}"))]),
        &logs.join("scheduler-2.log"),
    );
    // The scheduler's own metrics endpoint: no token.
    let http = hive_client::Client::new(&format!("http://127.0.0.1:{standby_metrics}"));
    let assignments_by_standby = async || -> Option<f64> {
        let text = http
            .request(Method::GET, "/metrics")
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let scrape =
            prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).ok()?;
        let total = scrape
            .samples
            .iter()
            .filter(|s| s.metric == "hive_scheduler_assignments_total")
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(n) => n,
                _ => 0.0,
            })
            .sum();
        Some(total)
    };
    // Once it serves its metrics, the standby is connected and trying for the lease.
    let standby_assigned = until(
        Duration::from_secs(30),
        "the standby's metrics",
        show_logs,
        assignments_by_standby,
    )
    .await;
    assert_eq!(standby_assigned, 0.0, "the standby assigned nothing");

    let mut agent = api.agent_process(&["--exec", "cat", "--max-concurrent-tasks", "4"]);
    let create = async |title: &str| -> Uuid {
        let (status, body) = api.post("/api/v1/tasks", json!({"title": title})).await;
        assert_eq!(status, 201, "{body}");
        id(&body, "task_id").parse().unwrap()
    };
    let before = create("before the kill").await;
    world
        .wait_for_event(AggregateKind::Task, before, "TaskCompleted")
        .await;
    assert_eq!(holder().await.as_ref(), Some(&leader), "one leader so far");

    // SIGKILL: the leader cannot release its lease; the standby takes it once it lapses.
    let killed = Instant::now();
    first.kill().await;
    let during = create("created during the takeover").await;
    let next = until(
        TTL + MARGIN + Duration::from_secs(5),
        "a new leader",
        show_logs,
        async || holder().await.filter(|h| *h != leader),
    )
    .await;
    let took = killed.elapsed();
    assert!(took <= TTL + MARGIN, "{next} took over after {took:?}");
    let after = create("created after the takeover").await;
    for task in [during, after] {
        world
            .wait_for_event(AggregateKind::Task, task, "TaskCompleted")
            .await;
    }
    let standby_assigned = assignments_by_standby().await.unwrap();
    assert!(
        standby_assigned >= 2.0,
        "the standby assigned {standby_assigned}"
    );

    // Each task was assigned once, in the whole log.
    let assigned = assignments_in_log(&world).await;
    for task in [before, during, after] {
        assert_eq!(assigned.get(&task), Some(&1), "assignments of {task}");
    }
    agent.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(agent.exited().await);
    api.stop().await;
}

/// How many `TaskAssigned` each task has in the log, from its start to its head now.
async fn assignments_in_log(world: &World) -> std::collections::HashMap<Uuid, usize> {
    use futures::StreamExt;
    let head = world.log().last_seq().await.unwrap();
    let subjects = world.log().subjects().clone();
    let mut assigned = std::collections::HashMap::new();
    let mut events = Box::pin(world.log().read_from(1).await.unwrap());
    while let Some(event) = events.next().await {
        let event = event.unwrap();
        if let Some((AggregateKind::Task, task)) = subjects.parse(&event.subject) {
            let envelope = hive_events::envelope::decode(&event.payload, None).unwrap();
            if envelope.event.event_type() == "TaskAssigned" {
                *assigned.entry(task).or_default() += 1;
            }
        }
        if event.seq >= head {
            break;
        }
    }
    assigned
}

#[tokio::test]
async fn racing_schedulers_never_assign_a_task_twice() {
    const TASKS: usize = 1_000;
    const AGENTS: usize = 8;
    let mut world = World::new().await;
    world.config.leader_ttl_secs = 0.6;
    // Each new leader starts from a snapshot taken by one of the two while the other also acted.
    world.config.scheduler_snapshot_every = 50;
    let api = world.hive().await;
    let mut leading = Vec::new();
    let mut schedulers = Vec::new();
    for _ in 0..2 {
        let scheduler = world.scheduler().await;
        leading.push(scheduler.leading());
        schedulers.push(tokio::spawn(scheduler.run(std::future::pending())));
    }
    for _ in 0..AGENTS {
        spawn(&api, json!({"exec": "true", "max_concurrent_tasks": 4})).await;
    }

    // Take the lease away from whoever holds it, again and again: the standby takes over while the old
    // leader still believes it leads until its next renewal, so two schedulers act at once.
    let lease_bucket = world.namespace().scheduler_lease();
    let js = async_nats::jetstream::new(world.log().client());
    let lease = js.get_key_value(lease_bucket).await.unwrap();
    let handovers = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let thief = {
        let handovers = handovers.clone();
        tokio::spawn(async move {
            // A bounded number of times, so that the run converges however slow the machine is.
            for _ in 0..12 {
                tokio::time::sleep(Duration::from_millis(250)).await;
                if lease.delete("leader").await.is_ok() {
                    handovers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        })
    };

    let created: Vec<String> = futures::stream::iter(0..TASKS)
        .map(|n| {
            let api = &api;
            async move { create_task(api, json!({"title": format!("task {n}")})).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;

    // Follow the log until every task completed, checking each assignment as it comes.
    let subjects = world.log().subjects().clone();
    let tasks: HashSet<Uuid> = created.iter().map(|t| t.parse().unwrap()).collect();
    let mut held: HashMap<Uuid, bool> = HashMap::new();
    let mut completed: HashSet<Uuid> = HashSet::new();
    let mut assignments = 0;
    let mut log = Box::pin(world.log().read_from(1).await.unwrap());
    tokio::time::timeout(Duration::from_secs(120), async {
        while completed.len() < TASKS {
            let event = log.next().await.unwrap().unwrap();
            let Some((AggregateKind::Task, task)) = subjects.parse(&event.subject) else {
                continue;
            };
            if !tasks.contains(&task) {
                continue;
            }
            let envelope = hive_events::envelope::decode(&event.payload, None).unwrap();
            match envelope.event.event_type() {
                "TaskAssigned" => {
                    assignments += 1;
                    let was_held = held.insert(task, true).unwrap_or(false);
                    assert!(!was_held, "task {task} assigned while assigned");
                }
                "TaskRequeued" | "TaskFailed" | "TaskRetryScheduled" => {
                    held.insert(task, false);
                }
                "TaskCompleted" => {
                    assert!(completed.insert(task), "task {task} completed twice");
                    held.insert(task, false);
                }
                _ => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {} of {TASKS} completed", completed.len()));
    thief.abort();
    assert!(assignments >= TASKS);
    let handovers = handovers.load(std::sync::atomic::Ordering::Relaxed);
    assert!(handovers >= 3, "the lease changed hands {handovers} times");
    for scheduler in schedulers {
        scheduler.abort();
    }
    api.stop().await;
}

#[tokio::test]
async fn a_new_leader_starts_from_the_boards_snapshot_and_trusts_none_of_another_history() {
    use hive_scheduler::Snapshots;
    let mut world = World::new().await;
    world.config.leader_ttl_secs = 0.6;
    world.config.scheduler_snapshot_every = 1;
    let api = world.hive().await;
    let snapshots = Snapshots::open(world.log()).await.unwrap();
    // The first leader makes an agent ready, assigns it a task and saves its board.
    let first = world.leading_scheduler().await;
    let agent = ready_agent(&api, &world, &[], 5).await;
    let mut assignments = api.assignments(&agent).await;
    let one = create_task(&api, json!({"title": "one"})).await;
    assert_eq!(assignments.next().await["task_id"], one.as_str());
    let assigned = world.log().last_seq().await.unwrap();
    let saved = until(
        Duration::from_secs(10),
        "a snapshot covering the assignment",
        || {},
        async || {
            let board = snapshots.load().await.unwrap()?;
            (board.last_seq() >= assigned).then_some(board)
        },
    )
    .await;
    assert_eq!(
        saved.load_of(agent.parse().unwrap()),
        1,
        "the board holds the assignment"
    );
    let encoded = snapshots.encode(&saved).await.unwrap().unwrap();

    // The next leader starts from it and assigns the next task (its board knows the agent's load).
    first.abort();
    let second = world.leading_scheduler().await;
    let two = create_task(&api, json!({"title": "two"})).await;
    assert_eq!(assignments.next().await["task_id"], two.as_str());
    second.abort();

    // What is not trusted: bytes that are no snapshot, another build's folds, a snapshot pinned to
    // an event the log does not hold (another history, or a sequence beyond the log's end), another
    // format (the whole snapshot in JSON, before), a board cut short.
    let bytes = encoded.to_vec();
    let line = bytes
        .iter()
        .position(|b| *b == b'\n')
        .expect("a header line");
    let header: serde_json::Value = serde_json::from_slice(&bytes[..line]).unwrap();
    assert_eq!(header["fold_version"], hive_events::aggregate::FOLD_VERSION);
    let with = |field: &str, value: serde_json::Value| {
        let mut header = header.clone();
        match field {
            "digest" => header["covered"]["digest"] = value,
            _ => header[field] = value,
        }
        let mut changed = serde_json::to_vec(&header).unwrap();
        changed.extend_from_slice(&bytes[line..]);
        changed
    };
    let untrusted = [
        b"not a board".to_vec(),
        with("fold_version", json!(999)),
        with("digest", json!("0".repeat(64))),
        with("format", json!(1)),
        bytes[..bytes.len() - 3].to_vec(),
    ];
    for changed in &untrusted {
        assert_ne!(changed, &bytes);
        snapshots.save_bytes(changed).await.unwrap();
        assert!(
            snapshots.load().await.unwrap().is_none(),
            "trusted: {:.80}",
            String::from_utf8_lossy(changed)
        );
    }
    snapshots.save_bytes(&bytes).await.unwrap();
    assert!(
        snapshots.load().await.unwrap().is_some(),
        "the snapshot itself is trusted"
    );

    // With a snapshot it cannot trust, a leader folds the log from the start and still schedules.
    snapshots.save_bytes(&untrusted[2]).await.unwrap();
    let third = world.leading_scheduler().await;
    let three = create_task(&api, json!({"title": "three"})).await;
    assert_eq!(assignments.next().await["task_id"], three.as_str());
    third.abort();
    api.stop().await;
}
