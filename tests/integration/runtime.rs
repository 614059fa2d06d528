//! The agent runtime (`hive agent`) as a process, held to its promises: it runs at most
//! `max_concurrent_tasks` at once, SIGTERM drains it (the running task finishes, nothing new is
//! taken, then it deregisters and exits 0), and it stops when an operator deregisters its agent.
//!
//! Long because its tests share a harness of held executors (`Record`, `release`) only they use.

use hive_client::Method;
use std::collections::HashSet;
use std::path::Path;

use hive_events::AggregateKind;
use hive_tests::{AgentProcess, TestHive, World};
use nix::sys::signal::Signal;
use serde_json::json;
use uuid::Uuid;

use hive_tests::api::{create_task, events_of, id, types};
use hive_tests::wait::{PATIENCE, until};

/// An agent registered through the API for `max` tasks at once with `capabilities` (its runtime, if any,
/// attaches to it).
async fn register_for(hive: &TestHive, max: usize, capabilities: &[&str]) -> String {
    let (status, body) = hive
        .post(
            "/api/v1/agents",
            json!({"agent_type": "worker", "max_concurrent_tasks": max, "capabilities": capabilities}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    id(&body, "agent_id")
}

/// An executor that writes `start <task>` to `dir/record` when it starts and `end <task>` just before
/// it exits, and in between waits until the test releases its task (see [`release`]).
fn held_executor(dir: &Path) -> String {
    let dir = dir.display();
    format!(
        r#"read task; echo "start $HIVE_TASK_ID" >> '{dir}/record'; while [ ! -e "{dir}/release-$HIVE_TASK_ID" ]; do sleep 0.01; done; echo "end $HIVE_TASK_ID" >> '{dir}/record'"#
    )
}

/// Lets [`held_executor`]'s run of `task` finish.
fn release(dir: &Path, task: &str) {
    std::fs::write(dir.join(format!("release-{task}")), "").unwrap();
}

/// Runs `hive agent` with `args`, its log in `dir`, where [`held_back`] reads it.
fn logged_runtime(hive: &TestHive, args: &[&str], dir: &Path) -> AgentProcess {
    hive.agent_process_logging(
        args,
        "warn,hive_runtime=debug",
        Some(&dir.join("runtime.log")),
    )
}

/// The lines in which the runtime said it holds an assignment back for want of room.
fn held_back(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("runtime.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("no room yet"))
        .map(str::to_owned)
        .collect()
}

/// What [`held_executor`] recorded.
#[derive(Debug, Default)]
struct Record {
    /// Started and not ended, in the order they started.
    running: Vec<String>,
    started: Vec<String>,
    ended: HashSet<String>,
    /// The most that ran at the same time.
    most_at_once: usize,
}

impl Record {
    fn read(dir: &Path) -> Self {
        let text = std::fs::read_to_string(dir.join("record")).unwrap_or_default();
        let mut record = Self::default();
        // Only whole lines: one may be being written.
        for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
            match line.trim_end().split_once(' ') {
                Some(("start", task)) => {
                    record.running.push(task.to_owned());
                    record.started.push(task.to_owned());
                    record.most_at_once = record.most_at_once.max(record.running.len());
                }
                Some(("end", task)) => {
                    record.running.retain(|t| t != task);
                    record.ended.insert(task.to_owned());
                }
                _ => panic!("a stray line in the record: {line:?}"),
            }
        }
        record
    }
}

/// Releases the held `tasks` one at a time, each time once exactly `max` of them run (or all that are
/// left, at the end) and the one released before has ended: whenever room frees up, the runtime has
/// more work than room. Answers the whole record.
async fn release_one_at_a_time(dir: &Path, tasks: &[String], max: usize) -> Record {
    let mut released = HashSet::new();
    while released.len() < tasks.len() {
        let expected = max.min(tasks.len() - released.len());
        let record = until(
            PATIENCE,
            "the released tasks ended and the next ones running",
            || {},
            async || {
                let record = Record::read(dir);
                let settled = released.iter().all(|t| record.ended.contains(t));
                (settled && record.running.len() >= expected).then_some(record)
            },
        )
        .await;
        assert_eq!(record.running.len(), expected, "{record:?}");
        let next = record.running[0].clone();
        release(dir, &next);
        released.insert(next);
    }
    until(
        PATIENCE,
        "every task ended",
        || {},
        async || {
            let record = Record::read(dir);
            (record.ended.len() == tasks.len()).then_some(record)
        },
    )
    .await
}

/// Runs five held tasks through a runtime started with `runtime`, running `max` at once, of which
/// `held_back_at_start` are given to it beyond its room at the start (the others beyond its room wait
/// in the scheduler's queue).
async fn run_more_tasks_than_room(
    world: &World,
    hive: &TestHive,
    runtime: &[&str],
    max: usize,
    held_back_at_start: usize,
) {
    const TASKS: usize = 5;
    let dir = tempfile::tempdir().unwrap();
    let exec = held_executor(dir.path());
    let mut args = runtime.to_vec();
    args.extend(["--exec", &exec]);
    let mut process = logged_runtime(hive, &args, dir.path());
    let mut tasks = Vec::new();
    for n in 0..TASKS {
        tasks.push(create_task(hive, json!({"title": format!("held {n}")})).await);
    }
    // Nothing is released before the runtime has every assignment it is to be given in hand.
    until(
        PATIENCE,
        "the assignments beyond its room held back",
        || {},
        async || (held_back(dir.path()).len() == held_back_at_start).then_some(()),
    )
    .await;
    let record = release_one_at_a_time(dir.path(), &tasks, max).await;
    assert_eq!(record.most_at_once, max, "{record:?}");
    assert_eq!(
        record.started.iter().collect::<HashSet<_>>(),
        tasks.iter().collect::<HashSet<_>>(),
        "each task ran once"
    );
    assert_eq!(record.started.len(), TASKS, "each task ran once");
    for task in &tasks {
        world
            .wait_for_event(AggregateKind::Task, task.parse().unwrap(), "TaskCompleted")
            .await;
    }
    process.signal(Signal::SIGTERM);
    assert!(process.exited().await, "a clean exit");
}

#[tokio::test]
async fn a_runtime_runs_its_max_concurrent_tasks_at_once_and_never_more() {
    let world = World::new().await;
    let hive = world.full_hive().await;
    // It registers itself for two at once; five tasks wait for it.
    run_more_tasks_than_room(&world, &hive, &["--max-concurrent-tasks", "2"], 2, 0).await;
    hive.stop().await;
}

#[tokio::test]
async fn a_runtime_keeps_to_its_own_limit_when_given_more_assignments() {
    let world = World::new().await;
    let hive = world.full_hive().await;
    // Registered for five but run for two: the scheduler assigns it all five at once (as when two
    // schedulers both believed they led), so only the runtime's own limit holds the other three back.
    let agent = register_for(&hive, 5, &[]).await;
    run_more_tasks_than_room(
        &world,
        &hive,
        &["--agent-id", &agent, "--max-concurrent-tasks", "2"],
        2,
        3,
    )
    .await;
    hive.stop().await;
}

#[tokio::test]
async fn sigterm_lets_the_running_task_finish_takes_nothing_new_then_deregisters() {
    let world = World::new().await;
    let hive = world.full_hive().await;
    let dir = tempfile::tempdir().unwrap();
    // Registered for three, run one at a time: when SIGTERM comes, one task runs, a second assignment
    // waits in the runtime for room, and the scheduler still sees room for a third.
    let agent = register_for(&hive, 3, &["drain"]).await;
    let agent_uuid: Uuid = agent.parse().unwrap();
    let mut runtime = logged_runtime(
        &hive,
        &[
            "--agent-id",
            &agent,
            "--max-concurrent-tasks",
            "1",
            "--heartbeat-secs",
            "0.2",
            "--exec",
            &held_executor(dir.path()),
        ],
        dir.path(),
    );
    world
        .wait_for_event(AggregateKind::Agent, agent_uuid, "AgentReady")
        .await;
    let task = |title: &str| json!({"title": title, "required_capabilities": ["drain"]});
    let running = create_task(&hive, task("running")).await;
    world
        .wait_for_event(AggregateKind::Task, running.parse().unwrap(), "TaskStarted")
        .await;
    let waiting = create_task(&hive, task("waiting")).await;
    world
        .wait_for_event(
            AggregateKind::Task,
            waiting.parse().unwrap(),
            "TaskAssigned",
        )
        .await;
    until(
        PATIENCE,
        "the first task running",
        || {},
        async || (Record::read(dir.path()).running == [running.clone()]).then_some(()),
    )
    .await;
    // The runtime has the second in hand, waiting for room.
    until(
        PATIENCE,
        "the second task held back",
        || {},
        async || {
            held_back(dir.path())
                .iter()
                .any(|l| l.contains(&waiting))
                .then_some(())
        },
    )
    .await;

    runtime.signal(Signal::SIGTERM);
    world
        .wait_for_event(AggregateKind::Agent, agent_uuid, "AgentDraining")
        .await;
    let later = create_task(&hive, task("created while it drains")).await;
    // A probe the scheduler acts on only after it has seen `later`: an agent registered after it (and
    // unable to take it) made ready by its heartbeat. Once the probe is ready, the scheduler has
    // decided about `later` too.
    let probe = register_for(&hive, 1, &[]).await;
    let (status, _) = hive
        .post(&format!("/api/v1/agents/{probe}/heartbeat"), json!({}))
        .await;
    assert_eq!(status, 200);
    let probe_ready = world
        .wait_for_event(AggregateKind::Agent, probe.parse().unwrap(), "AgentReady")
        .await;
    let (_, view) = hive
        .get_at(&format!("/api/v1/agents/{agent}"), probe_ready)
        .await;
    assert_eq!(view["status"], "draining", "it waits for its running task");
    release(dir.path(), &running);
    assert!(runtime.exited().await, "a clean exit");

    let completed = world
        .wait_for_event(
            AggregateKind::Task,
            running.parse().unwrap(),
            "TaskCompleted",
        )
        .await;
    let deregistered = world
        .wait_for_event(AggregateKind::Agent, agent_uuid, "AgentDeregistered")
        .await;
    assert!(
        completed < deregistered,
        "the task completed (seq {completed}) before the agent deregistered (seq {deregistered})"
    );
    let record = Record::read(dir.path());
    assert_eq!(
        record.started,
        std::slice::from_ref(&running),
        "nothing else ran"
    );
    // The waiting assignment was dropped, not accepted, and went back to the queue with the agent.
    let requeued = world
        .wait_for_event(
            AggregateKind::Task,
            waiting.parse().unwrap(),
            "TaskRequeued",
        )
        .await;
    let events = events_of(&hive, &waiting, requeued).await;
    assert!(!types(&events).contains(&"TaskAccepted"), "{events:?}");
    let requeue = events.iter().find(|e| e["type"] == "TaskRequeued").unwrap();
    assert_eq!(requeue["data"]["reason"], "agent_deregistered");
    // The task created during the drain was never given to the draining agent.
    let events = events_of(&hive, &later, deregistered).await;
    assert!(!types(&events).contains(&"TaskAssigned"), "{events:?}");

    // Both were there to be taken: another agent takes them.
    let mut other = hive.agent_process(&["--capabilities", "drain", "--exec", "cat"]);
    for task in [&waiting, &later] {
        let done = world
            .wait_for_event(AggregateKind::Task, task.parse().unwrap(), "TaskCompleted")
            .await;
        let (_, view) = hive.get_at(&format!("/api/v1/tasks/{task}"), done).await;
        assert_ne!(view["agent_id"], agent.as_str(), "{view}");
    }
    other.signal(Signal::SIGTERM);
    assert!(other.exited().await);
    hive.stop().await;
}

#[tokio::test]
async fn an_unsupervised_runtime_stops_when_an_operator_deregisters_its_agent() {
    let world = World::new().await;
    let hive = world.full_hive().await;
    // It registers itself, and from then on acts with the agent's own token.
    let name = format!("unsupervised-{}", Uuid::new_v4().simple());
    let mut runtime =
        hive.agent_process(&["--name", &name, "--heartbeat-secs", "0.2", "--exec", "cat"]);
    let agent = until_agent_named(&hive, &name).await;
    world
        .wait_for_event(AggregateKind::Agent, agent.parse().unwrap(), "AgentReady")
        .await;

    // No supervisor tells it: its next heartbeat, refused (the agent's token went with the agent),
    // does.
    let response = hive
        .http
        .request(Method::DELETE, &format!("/api/v1/agents/{agent}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(runtime.exited().await, "a clean exit");
    hive.stop().await;
}

#[tokio::test]
async fn a_task_an_operator_requeues_is_stopped_on_its_old_agent_and_run_by_another() {
    let world = World::new().await;
    let hive = world.full_hive().await;
    let dir = tempfile::tempdir().unwrap();
    // The first run prints progress until it is stopped, leaving its pid; a later run completes.
    let marker = dir.path().join("first");
    let exec = format!(
        "read task; if [ -e {m} ]; then echo '{{\"again\": true}}'; \
         else echo $$ > {m}; while true; do echo tick; sleep 0.05; done; fi",
        m = marker.display()
    );
    let first = register_for(&hive, 1, &["requeue"]).await;
    let mut first_runtime = hive.agent_process(&["--agent-id", &first, "--exec", &exec]);
    world
        .wait_for_event(AggregateKind::Agent, first.parse().unwrap(), "AgentReady")
        .await;
    let task = create_task(
        &hive,
        json!({"title": "taken back", "required_capabilities": ["requeue"]}),
    )
    .await;
    let task_uuid: Uuid = task.parse().unwrap();
    world
        .wait_for_event(AggregateKind::Task, task_uuid, "TaskProgressed")
        .await;
    let executor: i32 = until(
        PATIENCE,
        "the executor's pid",
        || {},
        async || std::fs::read_to_string(&marker).ok()?.trim().parse().ok(),
    )
    .await;

    // Another agent comes; the operator takes the task from the first.
    let second = register_for(&hive, 1, &["requeue"]).await;
    let mut second_runtime = hive.agent_process(&["--agent-id", &second, "--exec", &exec]);
    world
        .wait_for_event(AggregateKind::Agent, second.parse().unwrap(), "AgentReady")
        .await;
    let (status, body) = hive
        .post(
            &format!("/api/v1/tasks/{task}/requeue"),
            json!({"reason": "operator moved it"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // The old run is stopped (its next progress report was refused); the other agent completes it.
    until(
        PATIENCE,
        "the old run stopped",
        || {},
        async || {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(executor), None)
                .is_err()
                .then_some(())
        },
    )
    .await;
    let done = world
        .wait_for_event(AggregateKind::Task, task_uuid, "TaskCompleted")
        .await;
    let events = events_of(&hive, &task, done).await;
    let requeued = events.iter().find(|e| e["type"] == "TaskRequeued").unwrap();
    assert_eq!(requeued["data"]["reason"], "operator moved it");
    let (_, view) = hive.get_at(&format!("/api/v1/tasks/{task}"), done).await;
    assert_eq!(view["agent_id"], second.as_str());
    assert_eq!(view["result"], json!({"again": true}));
    for runtime in [&mut first_runtime, &mut second_runtime] {
        runtime.signal(Signal::SIGTERM);
        assert!(runtime.exited().await);
    }
    hive.stop().await;
}

/// The id of the agent called `name`, once it has registered.
async fn until_agent_named(hive: &TestHive, name: &str) -> String {
    until(
        PATIENCE,
        "the agent registered",
        || {},
        async || {
            let (_, agents) = hive.get_at("/api/v1/agents", 0).await;
            agents["items"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["name"] == name)
                .map(|agent| id(agent, "agent_id"))
        },
    )
    .await
}
