//! The event log and the command path: optimistic concurrency, idempotency, history.

use std::sync::Arc;

use bytes::Bytes;
use hive_eventlog::{AppendError, CommandContext, CommandError};
use hive_events::agent::{Agent, AgentCommand};
use hive_events::task::{NewTask, Task, TaskCommand};
use hive_events::{Actor, AgentId, AggregateKind, DomainError, TaskId};
use hive_tests::World;
use tokio::sync::Barrier;

fn ctx() -> CommandContext {
    CommandContext::new(Actor::new("test"))
}

fn new_task() -> TaskCommand {
    TaskCommand::Create(NewTask::titled("contended"))
}

#[tokio::test]
async fn concurrent_appends_on_one_aggregate_exactly_one_wins_each_round() {
    let world = World::new().await;
    let log = world.log().clone();
    let subject = log.subjects().of(AggregateKind::Task, uuid::Uuid::now_v7());
    let writers = 8;
    let rounds = 10;
    let mut expected = 0;
    for round in 0..rounds {
        let barrier = Arc::new(Barrier::new(writers));
        let attempts = (0..writers).map(|w| {
            let (log, subject, barrier) = (log.clone(), subject.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let payload = Bytes::from(format!("round {round} writer {w}"));
                log.append(&subject, expected, None, payload).await
            })
        });
        let results = futures::future::join_all(attempts).await;
        let wins: Vec<u64> = results
            .iter()
            .filter_map(|r| r.as_ref().unwrap().as_ref().ok().map(|a| a.seq))
            .collect();
        let conflicts = results
            .iter()
            .filter(|r| matches!(r.as_ref().unwrap(), Err(AppendError::Conflict)))
            .count();
        assert_eq!(wins.len(), 1, "round {round}: exactly one writer wins");
        assert_eq!(
            conflicts,
            writers - 1,
            "round {round}: every other writer is told it lost"
        );
        expected = wins[0];
    }
    let history = log
        .history(
            AggregateKind::Task,
            log.subjects().parse(&subject).unwrap().1,
        )
        .await
        .unwrap();
    assert_eq!(history.len(), rounds, "one event per round, none lost");
}

#[tokio::test]
async fn concurrent_commands_are_decided_again_and_none_is_lost() {
    let world = World::new().await;
    let log = world.log().clone();
    let id = TaskId::new().as_uuid();
    let agent = AgentId::new();
    log.create::<Task>(id, &ctx(), new_task()).await.unwrap();
    let lease = chrono::Utc::now();
    log.execute::<Task>(
        id,
        &ctx(),
        TaskCommand::Assign {
            agent_id: agent,
            lease_expires_at: lease,
        },
    )
    .await
    .unwrap();
    log.execute::<Task>(id, &ctx(), TaskCommand::Start { agent_id: agent })
        .await
        .unwrap();

    let reports = 6;
    let barrier = Arc::new(Barrier::new(reports));
    let handles = (0..reports).map(|n| {
        let (log, barrier) = (log.clone(), barrier.clone());
        tokio::spawn(async move {
            barrier.wait().await;
            let progress = TaskCommand::Progress {
                agent_id: agent,
                percent: Some(n as u8 * 10),
                message: Some(format!("step {n}")),
            };
            log.execute::<Task>(id, &ctx(), progress).await
        })
    });
    let results = futures::future::join_all(handles).await;
    let mut seqs: Vec<u64> = results
        .into_iter()
        .map(|r| r.unwrap().unwrap().seq)
        .collect();
    seqs.sort();
    seqs.dedup();
    assert_eq!(seqs.len(), reports, "every report became its own event");
    let loaded = log.load::<Task>(id).await.unwrap();
    assert_eq!(loaded.events.len(), 3 + reports);

    // Two cancels race: the loser decides again on the new state and is refused by the rules.
    let cancels = (0..2).map(|_| {
        let log = log.clone();
        tokio::spawn(async move {
            log.execute::<Task>(
                id,
                &ctx(),
                TaskCommand::Cancel {
                    reason: None,
                    by: None,
                },
            )
            .await
        })
    });
    let results = futures::future::join_all(cancels).await;
    let ok = results
        .iter()
        .filter(|r| r.as_ref().unwrap().is_ok())
        .count();
    assert_eq!(ok, 1);
    assert!(results.iter().any(|r| matches!(
        r.as_ref().unwrap(),
        Err(CommandError::Domain(DomainError::InvalidTransition { .. }))
    )));
}

#[tokio::test]
async fn a_command_that_keeps_losing_races_gives_up_after_its_attempts_with_a_conflict() {
    let world = World::new().await;
    let config = hive_eventlog::LogConfig {
        namespace: hive_eventlog::Namespace::new(&world.config.namespace),
        command_attempts: 2,
        ..Default::default()
    };
    let log = hive_eventlog::EventLog::open(world.log().client().clone(), &config)
        .await
        .unwrap();
    let id = TaskId::new().as_uuid();
    log.create::<Task>(id, &ctx(), new_task()).await.unwrap();
    let created = log.load::<Task>(id).await.unwrap();
    let cancel = || TaskCommand::Cancel {
        reason: None,
        by: None,
    };

    // A writer that decided on a state another writer has since changed loses the race and decides
    // again on the fresh state (here: the rules refuse to cancel a cancelled task).
    let stale = created.state.clone().unwrap();
    let won = log
        .execute_on::<Task>(id, &ctx(), cancel(), stale.clone(), created.last_seq)
        .await
        .unwrap();
    assert!(!won.duplicate);
    let again = log
        .execute_on::<Task>(id, &ctx(), cancel(), stale.clone(), created.last_seq)
        .await;
    assert!(
        matches!(
            again,
            Err(CommandError::Domain(DomainError::InvalidTransition { .. }))
        ),
        "{again:?}"
    );

    // With a single attempt there is no deciding again: a stale state is a conflict at once, the
    // 409 the API answers, and nothing is appended.
    let once = hive_eventlog::EventLog::open(
        world.log().client().clone(),
        &hive_eventlog::LogConfig {
            command_attempts: 1,
            ..config
        },
    )
    .await
    .unwrap();
    let before = once.load::<Task>(id).await.unwrap().events.len();
    let conflict = once
        .execute_on::<Task>(id, &ctx(), cancel(), stale, created.last_seq)
        .await;
    assert!(
        matches!(conflict, Err(CommandError::Conflict { attempts: 1, .. })),
        "{conflict:?}"
    );
    let answer = hive_api::error::ApiError::from(conflict.unwrap_err());
    assert_eq!(answer.code().status(), 409);
    assert_eq!(answer.code().as_str(), "conflict");
    assert_eq!(once.load::<Task>(id).await.unwrap().events.len(), before);
}

#[tokio::test]
async fn a_repeated_command_with_the_same_key_returns_the_first_answer_and_appends_nothing() {
    let world = World::new().await;
    let log = world.log();
    let mut keyed = ctx();
    keyed.idempotency_key = Some("create-agent-1".into());
    let register = AgentCommand::Register {
        name: Some("a".into()),
        agent_type: "worker".into(),
        capabilities: vec![],
        max_concurrent_tasks: 1,
        labels: Default::default(),
    };
    let first = log
        .create::<Agent>(AgentId::new().as_uuid(), &keyed, register.clone())
        .await
        .unwrap();
    let again = log
        .create::<Agent>(AgentId::new().as_uuid(), &keyed, register)
        .await
        .unwrap();
    assert!(!first.duplicate);
    assert!(again.duplicate);
    assert_eq!(
        (again.seq, again.aggregate_id),
        (first.seq, first.aggregate_id)
    );

    // On an existing aggregate the key is found in its history even without the server's window.
    keyed.idempotency_key = Some("drain-1".into());
    let drain = log
        .execute::<Agent>(first.aggregate_id, &keyed, AgentCommand::Drain)
        .await
        .unwrap();
    let drain_again = log
        .execute::<Agent>(first.aggregate_id, &keyed, AgentCommand::Drain)
        .await
        .unwrap();
    assert_eq!(drain_again.seq, drain.seq);
    assert!(drain_again.duplicate);
    assert_eq!(
        log.last_seq().await.unwrap(),
        2,
        "nothing else was appended"
    );
}

#[tokio::test]
async fn history_and_replay_come_back_in_order() {
    let world = World::new().await;
    let log = world.log();
    let a = AgentId::new().as_uuid();
    let register = AgentCommand::Register {
        name: None,
        agent_type: "worker".into(),
        capabilities: vec!["rust".into()],
        max_concurrent_tasks: 1,
        labels: Default::default(),
    };
    log.create::<Agent>(a, &ctx(), register).await.unwrap();
    let t = TaskId::new().as_uuid();
    log.create::<Task>(t, &ctx(), new_task()).await.unwrap();
    log.execute::<Agent>(a, &ctx(), AgentCommand::MarkReady)
        .await
        .unwrap();

    let history = log.history(AggregateKind::Agent, a).await.unwrap();
    assert_eq!(
        history.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 3]
    );
    let all = log.read_to_head(1).await.unwrap();
    assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    let tail = log.read_to_head(3).await.unwrap();
    assert_eq!(tail.len(), 1);
    assert!(
        log.history(AggregateKind::Task, uuid::Uuid::now_v7())
            .await
            .unwrap()
            .is_empty()
    );
}

/// A history is read in batches of events a request: one longer than several batches, its events
/// interleaved with another aggregate's, comes back whole, in order, with each event's bytes and key.
#[tokio::test]
async fn a_history_longer_than_several_reads_comes_back_whole_and_in_order() {
    let world = World::new().await;
    let log = world.log();
    let (ours, theirs) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let subject = |id| log.subjects().of(AggregateKind::Task, id);
    let (mut last_ours, mut last_theirs, mut appended) = (0, 0, Vec::new());
    for n in 0..700 {
        let key = format!("key {n}");
        let payload = Bytes::from(format!("event {n}"));
        let at = log
            .append(&subject(ours), last_ours, Some(&key), payload)
            .await
            .unwrap();
        last_ours = at.seq;
        appended.push((at.seq, key, format!("event {n}")));
        let other = Bytes::from(format!("other {n}"));
        last_theirs = log
            .append(&subject(theirs), last_theirs, None, other)
            .await
            .unwrap()
            .seq;
    }
    let read = |events: Vec<hive_eventlog::RawEvent>| {
        events
            .into_iter()
            .map(|e| {
                assert_eq!(e.subject, subject(ours));
                (
                    e.seq,
                    e.msg_id.unwrap(),
                    String::from_utf8(e.payload.to_vec()).unwrap(),
                )
            })
            .collect::<Vec<_>>()
    };
    let history = log.history(AggregateKind::Task, ours).await.unwrap();
    assert_eq!(read(history), appended);
    assert_eq!(
        log.history(AggregateKind::Task, theirs)
            .await
            .unwrap()
            .len(),
        700
    );
}

#[tokio::test]
async fn hive_ups_appends_answer_after_a_sync_of_its_store_one_for_every_group() {
    let world = World::new().await;
    let home = tempfile::tempdir().unwrap();
    let config = hive::Config {
        home: home.path().to_path_buf(),
        nats_url: None,
        nats_port: 0,
        database_url: Some(world.database_url.clone()),
        ..world.config.clone()
    };
    let (endpoints, mut servers) = hive::up::backends(&config).await.unwrap();
    let started = servers.nats().expect("hive up started a nats-server");
    // It fsyncs no write itself: the hive syncs its store, once for every group of writes.
    assert!(!hive_tests::cluster::syncs_every_write(&started.monitoring_url()).await);
    let store = servers.nats_store().expect("its store").to_path_buf();
    let sync = hive_eventlog::StoreSync::open(&store).unwrap();
    let config = hive::Config {
        nats_store_dir: Some(store),
        store_sync: Some(sync.clone()),
        ..config
    };
    let admin = endpoints.nats(hive_eventlog::users::Service::Admin);
    let log = hive::open_log(&config, admin).await.unwrap();
    let append = |log: hive_eventlog::EventLog, body: String| async move {
        let subject = log.subjects().of(AggregateKind::Task, uuid::Uuid::now_v7());
        log.append(&subject, 0, None, Bytes::from(body)).await
    };

    let before = sync.syncs();
    append(log.clone(), "alone".into()).await.unwrap();
    assert_eq!(
        sync.syncs(),
        before + 1,
        "a lone append waits for one sync, begun after its ack"
    );
    let before = sync.syncs();
    let appends = (0..64).map(|i| tokio::spawn(append(log.clone(), format!("together {i}"))));
    for appended in futures::future::join_all(appends).await {
        appended.unwrap().unwrap();
    }
    let syncs = sync.syncs() - before;
    assert!(
        (1..64).contains(&syncs),
        "64 appends at once took {syncs} syncs"
    );
    // A decision answered on its ack (the scheduler's: it syncs before it tells an agent) waits for
    // none; a command does.
    let mut on_ack = ctx();
    on_ack.before_sync = true;
    let before = sync.syncs();
    log.create::<Task>(uuid::Uuid::now_v7(), &on_ack, new_task())
        .await
        .unwrap();
    assert_eq!(sync.syncs(), before);
    log.create::<Task>(uuid::Uuid::now_v7(), &ctx(), new_task())
        .await
        .unwrap();
    assert_eq!(sync.syncs(), before + 1);
    servers.stop();

    let throwaway = hive_devservers::NatsServer::start(
        &home.path().join("throwaway"),
        None,
        hive_devservers::Durability::Throwaway,
        &[],
    )
    .await
    .unwrap();
    assert!(!hive_tests::cluster::syncs_every_write(&throwaway.monitoring_url()).await);
}

#[tokio::test]
async fn a_state_kept_from_the_last_command_is_only_a_guess_the_log_corrects() {
    let world = World::new().await;
    let log = world.log().clone();
    // Another process on the same log: its own kept states.
    let other = hive_eventlog::EventLog::open(log.client().clone(), &world.config.log())
        .await
        .unwrap();
    let id = TaskId::new().as_uuid();
    let agent = AgentId::new();
    let created = log.create::<Task>(id, &ctx(), new_task()).await.unwrap();
    assert_eq!(
        log.kept::<Task>(id),
        Some(created.seq),
        "kept after the create"
    );

    // Assigned behind this log's back: the state it kept says queued, where a start is refused;
    // the start is decided again on the log's state, and taken.
    let assigned = other
        .execute::<Task>(
            id,
            &ctx(),
            TaskCommand::Assign {
                agent_id: agent,
                lease_expires_at: chrono::Utc::now() + chrono::Duration::minutes(5),
            },
        )
        .await
        .unwrap();
    let started = log
        .execute::<Task>(id, &ctx(), TaskCommand::Start { agent_id: agent })
        .await
        .unwrap();
    assert!(started.seq > assigned.seq && !started.duplicate);
    assert_eq!(log.kept::<Task>(id), Some(started.seq));

    // A report the other process appended meanwhile makes the kept state stale where a completion
    // is taken on both: the append is refused for its expected sequence and decided again.
    let progress = |n: u8| TaskCommand::Progress {
        agent_id: agent,
        percent: Some(n),
        message: None,
    };
    let mut keyed = ctx();
    keyed.idempotency_key = Some("progress-10".into());
    let reported = other
        .execute::<Task>(id, &keyed, progress(10))
        .await
        .unwrap();
    // The same report repeated here, where the kept state does not know it: the first answer.
    let repeated = log.execute::<Task>(id, &keyed, progress(10)).await.unwrap();
    assert!(repeated.duplicate, "{repeated:?}");
    assert_eq!(repeated.seq, reported.seq);
    let completed = log
        .execute::<Task>(
            id,
            &ctx(),
            TaskCommand::Complete {
                agent_id: agent,
                result: serde_json::json!({}),
            },
        )
        .await
        .unwrap();
    // And repeated again here, with the kept state that now holds its key.
    let again = log.execute::<Task>(id, &keyed, progress(10)).await;
    assert!(
        matches!(&again, Ok(c) if c.duplicate && c.seq == reported.seq),
        "{again:?}"
    );
    let history = log.history(AggregateKind::Task, id).await.unwrap();
    let seqs: Vec<u64> = history.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        [
            created.seq,
            assigned.seq,
            started.seq,
            reported.seq,
            completed.seq
        ],
        "each command once, in the order decided"
    );
    let state = log.load::<Task>(id).await.unwrap().state.unwrap();
    assert_eq!(
        state.lifecycle.status,
        hive_events::task::TaskStatus::Completed
    );
}

#[tokio::test]
async fn the_parts_of_one_process_move_on_the_states_they_share() {
    let world = World::new().await;
    let shared = hive_eventlog::Recent::default();
    let api = world.log().with_recent(shared.clone());
    let scheduler = world.log().with_recent(shared);
    let id = TaskId::new().as_uuid();
    let agent = AgentId::new();
    api.create::<Task>(id, &ctx(), new_task()).await.unwrap();
    // The scheduler decides on its own state (its board), not on the history: its append moves on
    // the state the API kept, so the agent's next report decides on it.
    let board = api.load::<Task>(id).await.unwrap();
    let assigned = scheduler
        .execute_on::<Task>(
            id,
            &ctx(),
            TaskCommand::Assign {
                agent_id: agent,
                lease_expires_at: chrono::Utc::now() + chrono::Duration::minutes(5),
            },
            board.state.unwrap(),
            board.last_seq,
        )
        .await
        .unwrap();
    assert_eq!(api.kept::<Task>(id), Some(assigned.seq));
    let started = api
        .execute::<Task>(id, &ctx(), TaskCommand::Start { agent_id: agent })
        .await
        .unwrap();
    assert_eq!(api.kept::<Task>(id), Some(started.seq));
}

#[tokio::test]
async fn a_guess_that_was_behind_costs_no_attempt() {
    let world = World::new().await;
    // One attempt: a stale state is a conflict at once, but a kept state that was behind is not
    // a race lost.
    let once = hive_eventlog::EventLog::open(
        world.log().client().clone(),
        &hive_eventlog::LogConfig {
            command_attempts: 1,
            ..world.config.log()
        },
    )
    .await
    .unwrap();
    let other = world.log();
    let id = TaskId::new().as_uuid();
    let agent = AgentId::new();
    let created = once.create::<Task>(id, &ctx(), new_task()).await.unwrap();
    assert_eq!(once.kept::<Task>(id), Some(created.seq));
    let assign = TaskCommand::Assign {
        agent_id: agent,
        lease_expires_at: chrono::Utc::now() + chrono::Duration::minutes(5),
    };
    other.execute::<Task>(id, &ctx(), assign).await.unwrap();
    // Refused on the kept state (queued), taken on the log's.
    let started = once
        .execute::<Task>(id, &ctx(), TaskCommand::Start { agent_id: agent })
        .await;
    assert!(matches!(&started, Ok(c) if !c.duplicate), "{started:?}");
    // Behind again, where the kept state takes the command: its append is refused, the log's
    // state decides.
    let progress = TaskCommand::Progress {
        agent_id: agent,
        percent: Some(5),
        message: None,
    };
    other
        .execute::<Task>(id, &ctx(), progress.clone())
        .await
        .unwrap();
    let reported = once.execute::<Task>(id, &ctx(), progress).await;
    assert!(matches!(&reported, Ok(c) if !c.duplicate), "{reported:?}");
    // A rule's refusal is still the answer, decided on the log's state.
    let cancel = TaskCommand::Cancel {
        reason: None,
        by: None,
    };
    other
        .execute::<Task>(id, &ctx(), cancel.clone())
        .await
        .unwrap();
    let refused = once.execute::<Task>(id, &ctx(), cancel).await;
    assert!(
        matches!(
            refused,
            Err(CommandError::Domain(DomainError::InvalidTransition { .. }))
        ),
        "{refused:?}"
    );
}
