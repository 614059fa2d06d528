//! Control of running work, with real `hive agent` processes: a cancel stops the executor's whole
//! process group at once (pushed, not at its next progress line), a task past its `timeout_secs` or
//! `heartbeat_timeout_secs` fails `timed_out`, is stopped and retried as its policy says, and a task
//! created with `not_before` waits for its time, even across a scheduler's restart.

use std::path::Path;

use chrono::{DateTime, SubsecRound, Utc};
use hive_devservers::process_gone;
use hive_events::AggregateKind;
use hive_tests::api::{create_task, events_of, types};
use hive_tests::wait::{PATIENCE, until};
use hive_tests::{TestHive, World};
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use uuid::Uuid;

/// An executor that appends its shell's pid and its background `sleep 600`'s to `dir/pids-<task>`,
/// says `started` (one progress line), and then waits in silence for the sleep.
fn sleeping_executor(dir: &Path) -> String {
    let pids = format!("'{}/pids-'$HIVE_TASK_ID", dir.display());
    format!("echo $$ >> {pids}; sleep 600 & echo $! >> {pids}; echo started; wait")
}

/// The pids [`sleeping_executor`] recorded for `task`, once there are `n`.
async fn pids(dir: &Path, task: &str, n: usize) -> Vec<i32> {
    let file = dir.join(format!("pids-{task}"));
    until(
        PATIENCE,
        "the executor's pids",
        || {},
        async || {
            let text = std::fs::read_to_string(&file).ok()?;
            let pids: Vec<i32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
            (pids.len() >= n).then_some(pids)
        },
    )
    .await
}

async fn all_gone(pids: &[i32]) {
    until(
        PATIENCE,
        "no process of the executor left",
        || {},
        async || pids.iter().all(|p| process_gone(*p)).then_some(()),
    )
    .await;
}

/// A task's view once the read models reflect `seq`.
async fn view(hive: &TestHive, task: &str, seq: u64) -> Value {
    let (status, view) = hive.get_at(&format!("/api/v1/tasks/{task}"), seq).await;
    assert_eq!(status, 200, "{view}");
    view
}

#[tokio::test]
async fn a_cancel_stops_the_executor_and_its_whole_process_group_at_once() {
    let world = World::new().await;
    let hive = world.full_hive().await;
    let dir = tempfile::tempdir().unwrap();
    let exec = sleeping_executor(dir.path());
    let runtime = hive.agent_process(&["--capabilities", "control", "--exec", &exec]);
    let task = create_task(
        &hive,
        json!({"title": "runaway", "required_capabilities": ["control"], "cancel_grace_secs": 30}),
    )
    .await;
    let uuid: Uuid = task.parse().unwrap();
    world
        .wait_for_event(AggregateKind::Task, uuid, "TaskProgressed")
        .await;
    let pids = pids(dir.path(), &task, 2).await;
    assert!(!pids.iter().any(|p| process_gone(*p)), "it runs");

    let (status, cancelled) = hive
        .post(
            &format!("/api/v1/tasks/{task}/cancel"),
            json!({"reason": "runaway"}),
        )
        .await;
    assert_eq!(status, 200, "{cancelled}");
    // The executor says nothing more, so only the pushed stop can end it; SIGTERM does, long before
    // the 30 s grace.
    all_gone(&pids).await;
    let seq = cancelled["seq"].as_u64().unwrap();
    let task_view = view(&hive, &task, seq).await;
    assert_eq!(task_view["state"], "cancelled");
    assert_eq!(task_view["reason"], "runaway");
    let events = events_of(&hive, &task, seq).await;
    let cancel = events.last().unwrap();
    assert_eq!(cancel["type"], "TaskCancelled");
    assert_eq!(
        task_view["cancelled_by"], cancel["actor"],
        "who cancelled it"
    );
    assert_eq!(cancel["data"]["cancelled_by"], cancel["actor"]);

    // The runtime lives on and takes the next task.
    let next = create_task(
        &hive,
        json!({"title": "next", "required_capabilities": ["control"]}),
    )
    .await;
    world
        .wait_for_event(AggregateKind::Task, next.parse().unwrap(), "TaskProgressed")
        .await;
    runtime.signal(Signal::SIGKILL);
    hive.stop().await;
}

/// A [`sleeping_executor`]'s task created with `limits` (and `max_attempts`) on a hive with one
/// runtime, run until it is dead-lettered: its history then.
struct DeadLettered {
    _world: World,
    hive: TestHive,
    dir: tempfile::TempDir,
    runtime: hive_tests::AgentProcess,
    task: String,
    done: u64,
    events: Vec<Value>,
}

impl DeadLettered {
    async fn after(limits: Value) -> Self {
        let world = World::new().await;
        let hive = world.full_hive().await;
        let dir = tempfile::tempdir().unwrap();
        let exec = sleeping_executor(dir.path());
        let runtime = hive.agent_process(&["--capabilities", "limited", "--exec", &exec]);
        let mut body = limits;
        body["title"] = "limited".into();
        body["required_capabilities"] = json!(["limited"]);
        let task = create_task(&hive, body).await;
        let done = world
            .wait_for_event(
                AggregateKind::Task,
                task.parse().unwrap(),
                "TaskDeadLettered",
            )
            .await;
        let events = events_of(&hive, &task, done).await;
        Self {
            _world: world,
            hive,
            dir,
            runtime,
            task,
            done,
            events,
        }
    }

    /// Its events of `event_type`.
    fn all(&self, event_type: &str) -> Vec<&Value> {
        self.events
            .iter()
            .filter(|e| e["type"] == event_type)
            .collect()
    }

    /// Its view then.
    async fn view(&self) -> Value {
        view(&self.hive, &self.task, self.done).await
    }

    /// Waits until every one of its `runs` runs' executors is gone, then stops the hive.
    async fn stopped_after(self, runs: usize) {
        all_gone(&pids(self.dir.path(), &self.task, 2 * runs).await).await;
        self.runtime.signal(Signal::SIGKILL);
        self.hive.stop().await;
    }
}

#[tokio::test]
async fn a_task_past_its_timeout_fails_timed_out_is_stopped_and_retried_as_its_policy_says() {
    let dead = DeadLettered::after(json!({"timeout_secs": 2, "max_attempts": 2})).await;
    let (timed_out, types) = (dead.all("TaskTimedOut"), types(&dead.events));
    assert_eq!(timed_out.len(), 2, "each attempt timed out: {types:?}");
    assert_eq!(
        timed_out[0]["data"],
        json!({"limit": "timeout", "after_secs": 2})
    );
    assert_eq!(timed_out[0]["actor"], "system:scheduler");
    assert!(
        types.contains(&"TaskRetryScheduled"),
        "the first was retried: {types:?}"
    );
    let task_view = dead.view().await;
    assert_eq!(task_view["state"], "dead_lettered");
    assert_eq!(task_view["attempts"], 2);
    assert_eq!(task_view["timeout_secs"], 2);
    assert!(
        task_view["last_error"]
            .as_str()
            .unwrap()
            .starts_with("timed_out"),
        "{task_view}"
    );
    // Both runs' executors were stopped.
    dead.stopped_after(2).await;
}

#[tokio::test]
async fn a_silent_task_past_its_heartbeat_timeout_fails_timed_out_and_is_stopped() {
    let dead = DeadLettered::after(json!({"heartbeat_timeout_secs": 1, "max_attempts": 1})).await;
    let timed_out = dead.all("TaskTimedOut")[0];
    assert_eq!(timed_out["data"]["limit"], "heartbeat_timeout");
    // It spoke once (`started`), then fell silent: timed out a second after that line at the least.
    let at = |e: &Value| {
        e["occurred_at"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .unwrap()
    };
    let progressed = dead.all("TaskProgressed")[0];
    assert!(at(timed_out) - at(progressed) >= chrono::Duration::seconds(1));
    assert_eq!(
        dead.view().await["last_error"],
        "timed_out: no progress for its heartbeat_timeout_secs (1 s)"
    );
    dead.stopped_after(1).await;
}

#[tokio::test]
async fn a_delayed_task_waits_then_is_queued_at_its_time_across_a_scheduler_restart() {
    let mut world = World::new().await;
    world.config.leader_ttl_secs = 0.6;
    let api = world.hive().await;
    let first = world.leading_scheduler().await;
    // Microseconds: what the read models keep.
    let not_before = (Utc::now() + chrono::Duration::seconds(3)).trunc_subsecs(6);
    let (status, created) = api
        .post(
            "/api/v1/tasks",
            json!({"title": "later", "not_before": not_before.to_rfc3339()}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let task = created["task_id"].as_str().unwrap().to_owned();
    let task_view = view(&api, &task, created["seq"].as_u64().unwrap()).await;
    assert_eq!(task_view["state"], "waiting");
    assert_eq!(
        task_view["not_before"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .unwrap(),
        not_before
    );
    // The scheduler that saw it created dies; another takes over before its time.
    first.abort();
    let second = world.leading_scheduler().await;
    assert!(Utc::now() < not_before, "the restart came before its time");
    let queued = world
        .wait_for_event(AggregateKind::Task, task.parse().unwrap(), "TaskQueued")
        .await;
    let events = events_of(&api, &task, queued).await;
    let at: DateTime<Utc> = events.last().unwrap()["occurred_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(at >= not_before, "not before its time: {at} < {not_before}");
    assert!(
        at - not_before < chrono::Duration::seconds(1),
        "at its time, to the second: {at} vs {not_before}"
    );
    second.abort();
    api.stop().await;
}

#[tokio::test]
async fn a_delayed_task_is_cancellable_while_it_waits() {
    let world = World::new().await;
    let hive = world.full_hive().await;
    let not_before = Utc::now() + chrono::Duration::hours(1);
    let task = create_task(
        &hive,
        json!({"title": "much later", "not_before": not_before.to_rfc3339()}),
    )
    .await;
    let (status, cancelled) = hive
        .post(&format!("/api/v1/tasks/{task}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200, "{cancelled}");
    let task_view = view(&hive, &task, cancelled["seq"].as_u64().unwrap()).await;
    assert_eq!(task_view["state"], "cancelled");
    hive.stop().await;
}

#[tokio::test]
async fn a_task_that_is_not_running_says_why() {
    let world = World::new().await;
    let hive = world.full_hive().await;
    let reason =
        async |task: &str, seq: u64| view(&hive, task, seq).await["waiting_reason"].clone();
    let gpu = create_task(
        &hive,
        json!({"title": "needs a gpu", "required_capabilities": ["gpu"]}),
    )
    .await;
    let (_, created) = hive.get_at(&format!("/api/v1/tasks/{gpu}"), 0).await;
    let seq = created["seq"].as_u64().unwrap();
    assert_eq!(
        reason(&gpu, seq).await,
        json!({"code": "no_capable_agent", "capabilities": ["gpu"]})
    );
    // One agent with a gpu, room for one task, busy with another: full.
    let agent = hive_tests::api::ready_agent(&hive, &world, &["gpu"], 1).await;
    let assigned = world
        .wait_for_event(AggregateKind::Task, gpu.parse().unwrap(), "TaskAssigned")
        .await;
    let awaiting = reason(&gpu, assigned).await;
    assert_eq!(awaiting["code"], "awaiting_agent");
    assert_eq!(awaiting["agent"], agent.as_str());
    let second = create_task(
        &hive,
        json!({"title": "also needs a gpu", "required_capabilities": ["gpu"]}),
    )
    .await;
    let (_, created) = hive.get_at(&format!("/api/v1/tasks/{second}"), 0).await;
    let seq = created["seq"].as_u64().unwrap();
    assert_eq!(
        reason(&second, seq).await,
        json!({"code": "agents_full", "matching": 1})
    );
    // A task waiting on that one names it.
    let after = create_task(&hive, json!({"title": "after", "depends_on": [second]})).await;
    let (_, created) = hive.get_at(&format!("/api/v1/tasks/{after}"), 0).await;
    let seq = created["seq"].as_u64().unwrap();
    assert_eq!(
        reason(&after, seq).await,
        json!({"code": "waiting_on", "tasks": [second]})
    );
    // The list answers it too.
    let (_, page) = hive.get_at("/api/v1/tasks?status=queued", seq).await;
    let listed = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task_id"] == second.as_str())
        .unwrap();
    assert_eq!(listed["waiting_reason"]["code"], "agents_full");
    hive.stop().await;
}
