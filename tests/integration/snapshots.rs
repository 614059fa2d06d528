//! Aggregates with long histories load from a snapshot and the events after it: commands on them are
//! decided as on the whole history, a command repeated long after JetStream's duplicate window is
//! still answered as a duplicate, a history with an event that cannot be folded still answers
//! `corrupt_history`, and a snapshot that cannot be trusted — garbage, another fold version, a
//! sequence the log does not hold or holds another event at, a log restored from an older backup —
//! is passed over.
//!
//! Long because each way a snapshot may not be trusted is its own case against a real bucket.

use std::time::Duration;

use futures::StreamExt;
use hive_client::Method;
use hive_eventlog::{CommandContext, CommandError, EventLog, LogConfig, Snapshots};
use hive_events::agent::{Agent, AgentCommand};
use hive_events::aggregate::Aggregate;
use hive_events::task::{Lifecycle, TaskCommand, TaskStatus};
use hive_events::{Actor, AgentId, AggregateKind};
use hive_tests::api::{id, report};
use hive_tests::{World, until};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::backup::{back_up, config_of};

fn ctx() -> CommandContext {
    CommandContext::new(Actor::new("test"))
}

/// A context whose command is idempotent under `key`.
fn keyed(key: &str) -> CommandContext {
    let mut ctx = ctx();
    ctx.idempotent("test", key);
    ctx
}

/// `log` without snapshots: every load folds the whole history.
async fn whole(log: &EventLog, config: &LogConfig) -> EventLog {
    EventLog::open(log.client(), config).await.unwrap()
}

/// `log`, saving a snapshot once a load folded more than `after` events past the last one.
async fn snapshotting(log: &EventLog, after: usize) -> EventLog {
    log.with_snapshots(Snapshots::open(log).await.unwrap().after(after))
}

/// Appends what `commands` decide on `A` `id`, each decided on the state folded here (no load, so
/// no snapshot either): a long history in little time. The state after them and its last seq.
async fn append<A: Aggregate>(
    log: &EventLog,
    id: Uuid,
    mut state: A,
    mut seq: u64,
    commands: impl IntoIterator<Item = (CommandContext, A::Command)>,
) -> (A, u64)
where
    A::Command: Clone,
{
    for (ctx, command) in commands {
        let event = A::decide(Some(&state), command.clone()).expect("a command the rules take");
        let done = log
            .execute_on::<A>(id, &ctx, command, state.clone(), seq)
            .await
            .expect("appended");
        assert!(!done.duplicate);
        state = A::apply(Some(state), &event, ctx.now).unwrap();
        seq = done.seq;
    }
    (state, seq)
}

/// The snapshot bucket of `world`.
async fn bucket(world: &World) -> async_nats::jetstream::kv::Store {
    async_nats::jetstream::new(world.log().client())
        .get_key_value(world.namespace().aggregate_snapshots())
        .await
        .expect("the snapshot bucket")
}

/// The snapshot stored under `key`, once one covers `seq` (at most 20 s): waited for on the bucket's
/// own watch.
async fn snapshot_covering(world: &World, key: &str, seq: u64) -> Value {
    let mut watch = bucket(world).await.watch_with_history(key).await.unwrap();
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(entry) = watch.next().await {
            let entry = entry.unwrap();
            if let Ok(value) = serde_json::from_slice::<Value>(&entry.value)
                && value["seq"].as_u64() >= Some(seq)
            {
                return value;
            }
        }
        panic!("the watch ended")
    })
    .await;
    found.unwrap_or_else(|_| panic!("no snapshot {key} covering seq {seq} within 20 s"))
}

fn progress(agent_id: AgentId, n: usize) -> TaskCommand {
    TaskCommand::Progress {
        agent_id,
        percent: Some((n % 100) as u8),
        message: Some(format!("step {n}")),
    }
}

/// A running task of a registered agent, on a hive of `world` (API and projector, no scheduler): the
/// agent's and the task's ids, and the task's state and last seq.
async fn running_task(
    world: &World,
    hive: &hive_tests::TestHive,
) -> (String, String, Lifecycle, u64) {
    let (status, registered) = hive
        .post(
            "/api/v1/agents",
            json!({"agent_type": "worker", "max_concurrent_tasks": 1}),
        )
        .await;
    assert_eq!(status, 201, "{registered}");
    let agent = id(&registered, "agent_id");
    let (status, created) = hive.post("/api/v1/tasks", json!({"title": "long"})).await;
    assert_eq!(status, 201, "{created}");
    let task = id(&created, "task_id");
    // No scheduler runs: the task is assigned by hand.
    let assign = TaskCommand::Assign {
        agent_id: AgentId::from_uuid(agent.parse().unwrap()),
        lease_expires_at: chrono::Utc::now() + chrono::Duration::hours(1),
    };
    world
        .log()
        .execute::<Lifecycle>(task.parse().unwrap(), &ctx(), assign)
        .await
        .unwrap();
    for action in ["accept", "start"] {
        report(hive, &task, action, json!({"agent_id": agent})).await;
    }
    let loaded = world
        .log()
        .load::<Lifecycle>(task.parse().unwrap())
        .await
        .unwrap();
    (agent, task, loaded.state.unwrap(), loaded.last_seq)
}

#[tokio::test]
async fn a_task_with_a_long_history_is_decided_from_its_snapshot_and_the_events_after_it() {
    let world = World::new().await;
    let hive = world.hive().await;
    let (agent, task, state, seq) = running_task(&world, &hive).await;
    let task_id: Uuid = task.parse().unwrap();
    let agent_id = AgentId::from_uuid(agent.parse().unwrap());
    let reports = (0..600).map(|n| (keyed(&format!("report {n}")), progress(agent_id, n)));
    let (_, head) = append(world.log(), task_id, state, seq, reports).await;

    // The first load folds the whole history and saves a snapshot at its last event, behind the
    // command's back; the state is the whole history's.
    let log = world.log();
    let first = log.load::<Lifecycle>(task_id).await.unwrap();
    assert_eq!(first.snapshot, None);
    assert!(first.events.len() > 600, "{}", first.events.len());
    assert_eq!(first.last_seq, head);
    let key = format!("task.{task}.lifecycle");
    let stored = snapshot_covering(&world, &key, head).await;
    assert_eq!(stored["seq"], head);
    assert_eq!(stored["kind"], "task");
    assert_eq!(stored["folds"], "lifecycle");
    assert_eq!(stored["state"]["status"], "running");
    let from_snapshot = log.load::<Lifecycle>(task_id).await.unwrap();
    assert_eq!(from_snapshot.snapshot, Some(head));
    assert!(from_snapshot.events.is_empty());
    assert_eq!(from_snapshot.state, first.state);

    // Commands through the API are decided on the snapshot and what came after it, and are right.
    let command = |action: &str, body: Value, key: &str| {
        hive.http
            .command(Method::POST, &format!("/api/v1/tasks/{task}/{action}"))
            .json(&body)
            .idempotency_key(key.to_owned())
            .send()
    };
    let one_more = command(
        "progress",
        json!({"agent_id": agent, "percent": 99}),
        "last",
    )
    .await
    .unwrap();
    let after = log.load::<Lifecycle>(task_id).await.unwrap();
    assert_eq!(
        after.snapshot,
        Some(head),
        "the later command read only the tail"
    );
    assert_eq!(after.events.len(), 1);
    assert_eq!(after.events[0].seq, one_more["seq"].as_u64().unwrap());
    let done = command(
        "complete",
        json!({"agent_id": agent, "result": {"ok": true}}),
        "done",
    )
    .await
    .unwrap();
    let refused = command("progress", json!({"agent_id": agent, "percent": 1}), "late").await;
    let refused = refused.unwrap_err().to_string();
    assert!(refused.contains("invalid_transition"), "{refused}");
    let again = command(
        "progress",
        json!({"agent_id": agent, "percent": 99}),
        "last",
    )
    .await
    .unwrap();
    assert_eq!(
        again["seq"], one_more["seq"],
        "a repeat is answered as before"
    );
    let (_, view) = hive
        .get_at(
            &format!("/api/v1/tasks/{task}"),
            done["seq"].as_u64().unwrap(),
        )
        .await;
    assert_eq!(view["state"], "completed", "{view}");
    assert_eq!(view["progress"], 100, "{view}");

    // The same state as the whole history folded gives.
    let loaded = log.load::<Lifecycle>(task_id).await.unwrap();
    let full = whole(log, &world.config.log())
        .await
        .load::<Lifecycle>(task_id)
        .await
        .unwrap();
    assert_eq!(loaded.state, full.state);
    assert_eq!(loaded.last_seq, full.last_seq);
    assert_eq!(full.state.unwrap().status, TaskStatus::Completed);
    hive.stop().await;
}

#[tokio::test]
async fn a_command_repeated_after_the_window_and_older_than_the_snapshot_is_a_duplicate() {
    let world = World::new().await;
    // JetStream's shortest duplicate window: it forgets a key a tenth of a second after its event.
    let config = LogConfig {
        duplicate_window: Duration::from_millis(100),
        ..world.config.log()
    };
    let log = whole(world.log(), &config).await;
    let log = snapshotting(&log, 16).await;
    let agent = AgentId::new().as_uuid();
    let register = AgentCommand::Register {
        name: None,
        agent_type: "worker".into(),
        capabilities: vec![],
        max_concurrent_tasks: 1,
        labels: Default::default(),
    };
    log.create::<Agent>(agent, &ctx(), register).await.unwrap();
    let lost = || AgentCommand::MarkLost {
        reason: "heartbeat_timeout".into(),
    };
    let once = keyed("lost once");
    let first = log.execute::<Agent>(agent, &once, lost()).await.unwrap();
    // Lost and recovered a hundred times since, and ready again: a loss would be appended.
    let loaded = log.load::<Agent>(agent).await.unwrap();
    let commands = (0..101).map(|n| {
        let command = if n % 2 == 0 {
            AgentCommand::Recover
        } else {
            lost()
        };
        (keyed(&format!("flap {n}")), command)
    });
    let (state, head) = append(&log, agent, loaded.state.unwrap(), first.seq, commands).await;
    assert!(state.takes_work());
    log.load::<Agent>(agent).await.unwrap();
    snapshot_covering(&world, &format!("agent.{agent}"), head).await;

    // Wait until JetStream forgot the key: a probe sent after it is taken again.
    let js = async_nats::jetstream::new(log.client());
    let probe_subject = log.subjects().of(AggregateKind::Task, Uuid::now_v7());
    let probe = async || {
        let message = async_nats::jetstream::message::PublishMessage::build()
            .payload("not an event".into())
            .message_id("probe");
        let ack = js.send_publish(probe_subject.clone(), message).await;
        ack.unwrap().await.unwrap()
    };
    assert!(!probe().await.duplicate);
    until(
        Duration::from_secs(10),
        "the duplicate window to pass",
        || {},
        async || (!probe().await.duplicate).then_some(()),
    )
    .await;

    let loaded = log.load::<Agent>(agent).await.unwrap();
    assert_eq!(loaded.snapshot, Some(head));
    let key = once.idempotency_key.as_deref();
    assert!(!loaded.events.iter().any(|e| e.msg_id.as_deref() == key));
    let last = log.last_seq().await.unwrap();
    let again = log.execute::<Agent>(agent, &once, lost()).await.unwrap();
    assert!(again.duplicate, "{again:?}");
    assert_eq!(again.seq, first.seq);
    assert_eq!(log.last_seq().await.unwrap(), last, "nothing appended");
    // A new key is not taken for an old one.
    let new = log
        .execute::<Agent>(agent, &keyed("lost again"), lost())
        .await
        .unwrap();
    assert!(!new.duplicate && new.seq > last);
}

#[tokio::test]
async fn a_snapshot_that_cannot_be_trusted_is_passed_over_and_commands_stay_right() {
    let world = World::new().await;
    let hive = world.hive().await;
    let (agent, task, state, seq) = running_task(&world, &hive).await;
    let task_id: Uuid = task.parse().unwrap();
    let agent_id = AgentId::from_uuid(agent.parse().unwrap());
    let created_seq = world
        .wait_for_event(AggregateKind::Task, task_id, "TaskCreated")
        .await;
    let reports = (0..100).map(|n| (ctx(), progress(agent_id, n)));
    let (_, head) = append(world.log(), task_id, state, seq, reports).await;
    let log = world.log();
    log.load::<Lifecycle>(task_id).await.unwrap();
    let key = format!("task.{task}.lifecycle");
    let good = snapshot_covering(&world, &key, head).await;
    let bucket = bucket(&world).await;
    let full = whole(log, &world.config.log()).await;

    // Each untrusted snapshot says the task was cancelled: trusted, it would refuse the report.
    let cancelled = |mut value: Value| {
        value["state"]["status"] = "cancelled".into();
        serde_json::to_vec(&value).unwrap()
    };
    let with = |field: &str, to: Value| {
        let mut value = good.clone();
        value[field] = to;
        cancelled(value)
    };
    let untrusted = [
        ("garbage", b"garbage".to_vec()),
        ("fold version", with("fold_version", 999.into())),
        (
            "a seq the log does not hold",
            with("seq", (head + 1000).into()),
        ),
        ("another event at its seq", with("seq", created_seq.into())),
    ];
    for (what, value) in untrusted {
        bucket.put(&key, value.into()).await.unwrap();
        let loaded = log.load::<Lifecycle>(task_id).await.unwrap();
        assert_eq!(loaded.snapshot, None, "{what}");
        let expected = full.load::<Lifecycle>(task_id).await.unwrap();
        assert_eq!(loaded.state, expected.state, "{what}");
        assert_eq!(loaded.last_seq, expected.last_seq, "{what}");
        let done = log
            .execute::<Lifecycle>(task_id, &ctx(), progress(agent_id, 1))
            .await;
        assert!(done.is_ok(), "{what}: {done:?}");
    }
    // Trusted, such a state refuses the report: the checks above are not vacuous.
    let now = snapshotting(log, 0).await.load::<Lifecycle>(task_id).await;
    let good = snapshot_covering(&world, &key, now.unwrap().last_seq).await;
    bucket.put(&key, cancelled(good).into()).await.unwrap();
    // (Through a log that keeps no state from the commands above: it loads.)
    let trusted = log
        .with_recent(hive_eventlog::Recent::default())
        .execute::<Lifecycle>(task_id, &ctx(), progress(agent_id, 1))
        .await;
    assert!(
        matches!(trusted, Err(CommandError::Domain(_))),
        "{trusted:?}"
    );
    hive.stop().await;
}

#[tokio::test]
async fn a_history_with_an_event_that_cannot_be_folded_stays_corrupt_and_gets_no_snapshot_past_it()
{
    let world = World::new().await;
    let hive = world.hive().await;
    let (agent, task, state, seq) = running_task(&world, &hive).await;
    let task_id: Uuid = task.parse().unwrap();
    let agent_id = AgentId::from_uuid(agent.parse().unwrap());
    let log = world.log();
    let reports = (0..100).map(|n| (ctx(), progress(agent_id, n)));
    let (state, head) = append(log, task_id, state, seq, reports).await;
    log.load::<Lifecycle>(task_id).await.unwrap();
    let key = format!("task.{task}.lifecycle");
    snapshot_covering(&world, &key, head).await;

    // A publisher that bypasses the command path writes bytes that are no event, then events on.
    let subject = log.subjects().of(AggregateKind::Task, task_id);
    let poison = world.publish_raw(&subject, "{\"not\": \"an event\"}").await;
    let reports = (0..100).map(|n| (ctx(), progress(agent_id, n)));
    append(log, task_id, state, poison, reports).await;

    for log in [log.clone(), whole(log, &world.config.log()).await] {
        let refused = log.load::<Lifecycle>(task_id).await.err();
        assert!(
            matches!(refused, Some(CommandError::Corrupt { seq, .. }) if seq == poison),
            "{refused:?}"
        );
    }
    let (status, body) = hive
        .post(&format!("/api/v1/tasks/{task}/cancel"), json!({}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("corrupt_history")),
        "{body}"
    );
    // A failed load saves nothing: the snapshot is still the one before the poison.
    let stored = bucket(&world).await.get(&key).await.unwrap().unwrap();
    let stored: Value = serde_json::from_slice(&stored).unwrap();
    assert_eq!(stored["seq"], head);
    hive.stop().await;
}

#[tokio::test]
async fn a_log_restored_from_an_older_backup_is_not_misled_by_the_snapshots_left_in_the_bucket() {
    let mut world = World::new().await;
    let hive = world.hive().await;
    let (agent, task, state, seq) = running_task(&world, &hive).await;
    hive.stop().await;
    let task_id: Uuid = task.parse().unwrap();
    let agent_id = AgentId::from_uuid(agent.parse().unwrap());
    let reports = |from: usize| (from..from + 100).map(move |n| (ctx(), progress(agent_id, n)));
    let (state, backed_up) = append(world.log(), task_id, state, seq, reports(0)).await;
    let tmp = tempfile::tempdir().unwrap();
    let (dir, manifest) = back_up(&world, &tmp).await;
    assert_eq!(manifest.last_seq, backed_up);
    // Later work, and a snapshot of it.
    let (_, head) = append(world.log(), task_id, state.clone(), backed_up, reports(100)).await;
    world.log().load::<Lifecycle>(task_id).await.unwrap();
    let key = format!("task.{task}.lifecycle");
    snapshot_covering(&world, &key, head).await;

    // The backup replaces the log; the bucket keeps the snapshot of the history that is gone.
    hive::backup::restore(&config_of(&world), &dir, true)
        .await
        .unwrap();
    world.reconnect().await;
    let log = world.log();
    // Other work after the restore: the log holds another event of the task at the snapshot's seq.
    let (_, new_head) = append(log, task_id, state, backed_up, reports(1000)).await;
    assert_eq!(new_head, head);
    let stale = bucket(&world).await.get(&key).await.unwrap().unwrap();
    let stale: Value = serde_json::from_slice(&stale).unwrap();
    assert_eq!(
        stale["seq"], head,
        "the bucket still holds the gone history's snapshot"
    );
    let loaded = log.load::<Lifecycle>(task_id).await.unwrap();
    assert_eq!(loaded.snapshot, None);
    let full = whole(log, &world.config.log())
        .await
        .load::<Lifecycle>(task_id)
        .await
        .unwrap();
    assert_eq!((loaded.state, loaded.last_seq), (full.state, full.last_seq));
}
