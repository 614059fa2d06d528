//! Orchestration end to end: the scheduler assigns on events, agents report over HTTP, failures retry
//! and dead-letter, lost agents give their tasks back, dependencies release their dependents, a standby
//! scheduler takes over (in this process, and as a `hive serve scheduler` process when the leading one
//! is killed with SIGKILL), and Agent Hive 2.0's routes answer.

use std::time::{Duration, Instant};

use hive_events::AggregateKind;
use hive_tests::{TestHive, World};
use serde_json::{Value, json};
use uuid::Uuid;

use hive_tests::process::part;
use hive_tests::until;

fn id(body: &Value, field: &str) -> String {
    body[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} in {body}"))
        .to_owned()
}

async fn ready_agent(hive: &TestHive, world: &World, caps: &[&str], max: u32) -> String {
    let (status, body) = hive
        .post(
            "/api/v1/agents",
            json!({"agent_type": "worker", "capabilities": caps, "max_concurrent_tasks": max}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let agent = id(&body, "agent_id");
    let (status, beat) = hive
        .post(&format!("/api/v1/agents/{agent}/heartbeat"), json!({}))
        .await;
    assert_eq!(status, 200, "{beat}");
    world
        .wait_for_event(AggregateKind::Agent, agent.parse().unwrap(), "AgentReady")
        .await;
    agent
}

/// Heartbeats for an agent every 100 ms until dropped, so a short heartbeat timeout loses only the
/// agents a test means to lose, however slow the machine.
struct KeepAlive(tokio::task::JoinHandle<()>);

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn keep_alive(world: &World, agent: &str) -> KeepAlive {
    let heartbeats = world.heartbeats().await;
    let agent: Uuid = agent.parse().unwrap();
    KeepAlive(tokio::spawn(async move {
        loop {
            heartbeats
                .beat(agent, chrono::Utc::now())
                .await
                .expect("beat");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }))
}

async fn report(hive: &TestHive, task: &str, action: &str, body: Value) -> Value {
    let (status, answer) = hive
        .post(&format!("/api/v1/tasks/{task}/{action}"), body)
        .await;
    assert_eq!(status, 200, "{action}: {answer}");
    answer
}

#[tokio::test]
async fn a_task_reaches_a_capable_agent_by_push_and_completes() {
    let world = World::new().await;
    let hive = world.full_hive().await;
    let _other = ready_agent(&hive, &world, &["python"], 4).await;
    let agent = ready_agent(&hive, &world, &["rust", "git"], 1).await;
    let mut assignments = hive.assignments(&agent).await;

    let (_, created) = hive
        .post(
            "/api/v1/tasks",
            json!({"title": "build", "required_capabilities": ["rust"]}),
        )
        .await;
    let task = id(&created, "task_id");
    let pushed = assignments.next().await;
    assert_eq!(pushed["task_id"], task.as_str());
    assert_eq!(pushed["title"], "build");

    let who = json!({"agent_id": agent});
    report(&hive, &task, "accept", who.clone()).await;
    report(&hive, &task, "start", who.clone()).await;
    report(
        &hive,
        &task,
        "progress",
        json!({"agent_id": agent, "percent": 50, "message": "halfway"}),
    )
    .await;
    let done = report(
        &hive,
        &task,
        "complete",
        json!({"agent_id": agent, "result": {"ok": true}}),
    )
    .await;
    let (_, view) = hive
        .get_at(
            &format!("/api/v1/tasks/{task}"),
            done["seq"].as_u64().unwrap(),
        )
        .await;
    assert_eq!(
        (view["state"].as_str(), view["status"].as_str()),
        (Some("completed"), Some("completed"))
    );
    assert_eq!(view["result"], json!({"ok": true}));
    assert_eq!(view["agent_id"], agent.as_str());

    // Only the assigned agent may report, and only what its state allows.
    let (status, body) = hive
        .post(
            &format!("/api/v1/tasks/{task}/fail"),
            json!({"agent_id": agent, "error": "late"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("invalid_transition"))
    );
    let (_, other_task) = hive
        .post(
            "/api/v1/tasks",
            json!({"title": "second", "required_capabilities": ["rust"]}),
        )
        .await;
    let second = id(&other_task, "task_id");
    assert_eq!(assignments.next().await["task_id"], second.as_str());
    let (status, body) = hive
        .post(
            &format!("/api/v1/tasks/{second}/accept"),
            json!({"agent_id": Uuid::now_v7()}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("not_assignee"))
    );
    let (status, body) = hive
        .post(&format!("/api/v1/tasks/{second}/accept"), json!({}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("validation_failed"))
    );
    hive.stop().await;
}

#[tokio::test]
async fn a_failing_task_is_retried_with_backoff_then_dead_lettered() {
    let mut world = World::new().await;
    world.config.retry_base_secs = 0.05;
    let hive = world.full_hive().await;
    let agent = ready_agent(&hive, &world, &[], 1).await;
    let mut assignments = hive.assignments(&agent).await;
    let (_, created) = hive
        .post(
            "/api/v1/tasks",
            json!({"title": "flaky", "max_attempts": 2}),
        )
        .await;
    let task = id(&created, "task_id");
    let task_uuid: Uuid = task.parse().unwrap();

    for attempt in 1..=2 {
        let pushed = assignments.next().await;
        assert_eq!(
            (pushed["task_id"].as_str(), pushed["attempt"].as_u64()),
            (Some(task.as_str()), Some(attempt))
        );
        report(&hive, &task, "start", json!({"agent_id": agent})).await;
        report(
            &hive,
            &task,
            "fail",
            json!({"agent_id": agent, "error": format!("boom {attempt}")}),
        )
        .await;
    }
    world
        .wait_for_event(AggregateKind::Task, task_uuid, "TaskRetryScheduled")
        .await;
    let dead = world
        .wait_for_event(AggregateKind::Task, task_uuid, "TaskDeadLettered")
        .await;
    let (_, view) = hive.get_at(&format!("/api/v1/tasks/{task}"), dead).await;
    assert_eq!(
        (view["state"].as_str(), view["attempts"].as_u64()),
        (Some("dead_lettered"), Some(2))
    );
    assert_eq!(view["last_error"], "boom 2");

    // An operator gives it another round.
    report(&hive, &task, "retry", json!({})).await;
    let pushed = assignments.next().await;
    assert_eq!(
        (pushed["task_id"].as_str(), pushed["attempt"].as_u64()),
        (Some(task.as_str()), Some(1))
    );
    hive.stop().await;
}

#[tokio::test]
async fn a_lost_agent_gives_its_tasks_back_and_recovers_on_its_next_heartbeat() {
    let mut world = World::new().await;
    world.config.heartbeat_timeout_secs = 0.5;
    let hive = world.full_hive().await;
    let first = ready_agent(&hive, &world, &[], 1).await;
    let first_alive = keep_alive(&world, &first).await;
    let mut first_assignments = hive.assignments(&first).await;
    let (_, created) = hive
        .post("/api/v1/tasks", json!({"title": "survives"}))
        .await;
    let task = id(&created, "task_id");
    assert_eq!(first_assignments.next().await["task_id"], task.as_str());
    report(&hive, &task, "accept", json!({"agent_id": first})).await;

    // The first agent stops heartbeating: it is lost and its task goes back to the queue.
    drop(first_alive);
    let first_uuid: Uuid = first.parse().unwrap();
    world
        .wait_for_event(AggregateKind::Agent, first_uuid, "AgentLost")
        .await;
    world
        .wait_for_event(AggregateKind::Task, task.parse().unwrap(), "TaskRequeued")
        .await;
    let second = ready_agent(&hive, &world, &[], 1).await;
    let _second_alive = keep_alive(&world, &second).await;
    let mut second_assignments = hive.assignments(&second).await;
    assert_eq!(second_assignments.next().await["task_id"], task.as_str());
    let (_, history) = hive
        .get_at(&format!("/api/v1/tasks/{task}/events"), 0)
        .await;
    let requeued = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "TaskRequeued")
        .unwrap()
        .clone();
    assert_eq!(requeued["data"]["reason"], "agent_lost");

    let (status, _) = hive
        .post(&format!("/api/v1/agents/{first}/heartbeat"), json!({}))
        .await;
    assert_eq!(status, 200);
    world
        .wait_for_event(AggregateKind::Agent, first_uuid, "AgentRecovered")
        .await;
    hive.stop().await;
}

#[tokio::test]
async fn an_assignment_not_accepted_in_time_is_requeued() {
    let mut world = World::new().await;
    world.config.assignment_lease_secs = 0.3;
    let hive = world.full_hive().await;
    let agent = ready_agent(&hive, &world, &[], 1).await;
    let (_, created) = hive
        .post("/api/v1/tasks", json!({"title": "ignored"}))
        .await;
    let task: Uuid = id(&created, "task_id").parse().unwrap();
    world
        .wait_for_event(AggregateKind::Task, task, "TaskAssigned")
        .await;
    // Keep the agent alive, but never accept: the lease lapses and the task is assigned again.
    let (status, _) = hive
        .post(&format!("/api/v1/agents/{agent}/heartbeat"), json!({}))
        .await;
    assert_eq!(status, 200);
    world
        .wait_for_event(AggregateKind::Task, task, "TaskRequeued")
        .await;
    world
        .wait_for_nth_event(AggregateKind::Task, task, "TaskAssigned", 2)
        .await;
    hive.stop().await;
}

#[tokio::test]
async fn dependents_wait_for_completion_and_are_blocked_by_a_cancel() {
    let world = World::new().await;
    let hive = world.full_hive().await;
    let agent = ready_agent(&hive, &world, &[], 2).await;
    let mut assignments = hive.assignments(&agent).await;
    let (_, first) = hive.post("/api/v1/tasks", json!({"title": "first"})).await;
    let first = id(&first, "task_id");
    assert_eq!(assignments.next().await["task_id"], first.as_str());
    let (_, doomed) = hive
        .post(
            "/api/v1/tasks",
            json!({"title": "doomed", "required_capabilities": ["nobody"]}),
        )
        .await;
    let doomed = id(&doomed, "task_id");
    let (_, after) = hive
        .post(
            "/api/v1/tasks",
            json!({"title": "after", "depends_on": [first]}),
        )
        .await;
    let after = id(&after, "task_id");
    let (_, never) = hive
        .post(
            "/api/v1/tasks",
            json!({"title": "never", "depends_on": [doomed]}),
        )
        .await;
    let never = id(&never, "task_id");

    report(&hive, &first, "start", json!({"agent_id": agent})).await;
    report(&hive, &first, "complete", json!({"agent_id": agent})).await;
    assert_eq!(
        assignments.next().await["task_id"],
        after.as_str(),
        "released by its dependency"
    );

    report(
        &hive,
        &doomed,
        "cancel",
        json!({"reason": "no agent can do it"}),
    )
    .await;
    let blocked = world
        .wait_for_event(AggregateKind::Task, never.parse().unwrap(), "TaskBlocked")
        .await;
    let (_, view) = hive
        .get_at(&format!("/api/v1/tasks/{never}"), blocked)
        .await;
    assert_eq!(
        (view["state"].as_str(), view["status"].as_str()),
        (Some("blocked"), Some("failed"))
    );
    assert!(view["reason"].as_str().unwrap().contains(&doomed));
    hive.stop().await;
}

#[tokio::test]
async fn a_standby_scheduler_takes_over_when_the_active_one_dies() {
    let mut world = World::new().await;
    world.config.leader_ttl_secs = 0.6;
    let api = world
        .run(hive::Parts {
            api: true,
            projector: true,
            scheduler: false,
        })
        .await;
    let scheduler = async |world: &World| {
        let heartbeats = world.heartbeats().await;
        let config = world.config.scheduler();
        hive_scheduler::Scheduler::new(world.log().clone(), heartbeats, config)
    };
    let first = scheduler(&world).await;
    let mut first_leads = first.leading();
    let first_task = tokio::spawn(first.run(std::future::pending()));
    first_leads.wait_for(|l| *l).await.unwrap();
    let second = scheduler(&world).await;
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
async fn agent_hive_2_routes_answer_as_before() {
    let world = World::new().await;
    let hive = world.full_hive().await;
    let (_, registered) = hive
        .post(
            "/api/v1/agents",
            json!({"agent_type": "claude-code", "capabilities": []}),
        )
        .await;
    let agent = id(&registered, "agent_id");
    let (_, status) = hive.get_at(&format!("/api/agents/{agent}/status"), 0).await;
    assert_eq!(status["status"], "registered");
    hive.post(&format!("/api/v1/agents/{agent}/heartbeat"), json!({}))
        .await;
    let ready = world
        .wait_for_event(AggregateKind::Agent, agent.parse().unwrap(), "AgentReady")
        .await;
    let (_, status) = hive
        .get_at(&format!("/api/agents/{agent}/status"), ready)
        .await;
    assert_eq!(status["status"], "ready");

    let (status, project) = hive
        .post(
            "/api/v1/projects",
            json!({"name": "legacy", "description": "d", "type": "web"}),
        )
        .await;
    assert_eq!(status, 201);
    let project = id(&project, "project_id");
    let mut assignments = hive.assignments(&agent).await;
    let (status, task) = hive
        .post(
            &format!("/api/v1/projects/{project}/tasks"),
            json!({"task_type": "feature", "description": "Add login", "priority": "high", "assigned_agent": agent}),
        )
        .await;
    assert_eq!(status, 201, "{task}");
    let task = id(&task, "task_id");
    let pushed = assignments.next().await;
    assert_eq!(pushed["task_id"], task.as_str(), "pinned to its agent");
    let assigned = pushed["seq"].as_u64().unwrap();
    let (_, view) = hive
        .get_at(&format!("/api/v1/tasks/{task}"), assigned)
        .await;
    assert_eq!(view["project_id"], project.as_str());
    assert_eq!(view["pinned_agent"], agent.as_str());

    let (status, dump) = hive.get_at("/debug-agents", ready).await;
    assert_eq!(status, 200);
    assert_eq!(dump["agent_count"], 1);
    assert_eq!(dump["agents"][0]["agent_id"], agent.as_str());
    hive.stop().await;
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
    let scheduler = hive_scheduler::Scheduler::new(
        world.log().clone(),
        world.heartbeats().await,
        world.config.scheduler(),
    );
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
    let http = reqwest::Client::new();
    let assignments_by_standby = async || -> Option<f64> {
        let text = http
            .get(format!("http://127.0.0.1:{standby_metrics}/metrics"))
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
