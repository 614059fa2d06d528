//! An agent's work: `hive audit agent` (on the log, or through the API) and
//! `GET /api/v1/agents/{id}/tasks` find the tasks an agent held in the projector's index
//! (`agent_tasks`) and read the log only outside it. Each answer is held to the log itself: every
//! event of the agent and of each task it was assigned, in log order, none missing and none extra —
//! with the projection behind, on a database upgraded in place, without a database at all.
//!
//! Long because each test builds a history whose every event it then checks against the log.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::Utc;
use hive_eventlog::{CommandContext, EventLog};
use hive_events::agent::{Agent, AgentCommand};
use hive_events::task::{NewTask, Task, TaskCommand};
use hive_events::{Actor, AgentId, AggregateKind, TaskId};
use hive_projector::agent_tasks::{Held, Page, held};
use hive_projector::{Projector, ProjectorConfig, READ_MODELS};
use hive_tests::process::hive_command;
use hive_tests::{World, agent_program, scenario};
use serde_json::Value;
use uuid::Uuid;

fn ctx() -> CommandContext {
    CommandContext::new(Actor::new("test"))
}

/// A registered agent, ready.
async fn agent(log: &EventLog) -> Uuid {
    let id = AgentId::new().as_uuid();
    let register = AgentCommand::Register {
        name: None,
        agent_type: "worker".into(),
        capabilities: Vec::new(),
        max_concurrent_tasks: 2,
        labels: Default::default(),
    };
    log.create::<Agent>(id, &ctx(), register).await.unwrap();
    log.execute::<Agent>(id, &ctx(), AgentCommand::MarkReady)
        .await
        .unwrap();
    id
}

/// A new task, queued.
async fn task(log: &EventLog) -> Uuid {
    let id = TaskId::new().as_uuid();
    let new = NewTask::titled("audited");
    log.create::<Task>(id, &ctx(), TaskCommand::Create(new))
        .await
        .unwrap();
    id
}

/// Orders `steps` to `task`, one after another.
async fn steps(log: &EventLog, task: Uuid, steps: Vec<TaskCommand>) {
    for step in steps {
        log.execute::<Task>(task, &ctx(), step).await.unwrap();
    }
}

fn assign(agent: Uuid) -> TaskCommand {
    TaskCommand::Assign {
        agent_id: AgentId::from_uuid(agent),
        lease_expires_at: Utc::now() + chrono::Duration::minutes(1),
    }
}

fn start(agent: Uuid) -> TaskCommand {
    TaskCommand::Start {
        agent_id: AgentId::from_uuid(agent),
    }
}

fn complete(agent: Uuid) -> TaskCommand {
    TaskCommand::Complete {
        agent_id: AgentId::from_uuid(agent),
        result: serde_json::json!({"by": agent}),
    }
}

/// The agents and tasks of [`work`].
struct Work {
    a: Uuid,
    b: Uuid,
    c: Uuid,
    t1: Uuid,
    t2: Uuid,
    t3: Uuid,
}

/// Work that changes hands, amid other agents' work: T1 is assigned to A, taken back when A is lost,
/// then assigned to B, which completes it; T2 is assigned to B, which releases it on a restart, then
/// to A (recovered), which completes it; T3 is C's alone.
async fn work(log: &EventLog) -> Work {
    scenario(log, 3, 10).await;
    let (a, b, c) = (agent(log).await, agent(log).await, agent(log).await);
    let (t1, t2, t3) = (task(log).await, task(log).await, task(log).await);
    steps(log, t1, vec![assign(a), start(a)]).await;
    let lost = AgentCommand::MarkLost {
        reason: "heartbeat_timeout".into(),
    };
    log.execute::<Agent>(a, &ctx(), lost).await.unwrap();
    let requeue = TaskCommand::Requeue {
        reason: "agent_lost".into(),
    };
    steps(log, t1, vec![requeue, assign(b)]).await;
    let release = TaskCommand::Release {
        agent_id: AgentId::from_uuid(b),
        reason: "agent_restarted".into(),
    };
    let accept = TaskCommand::Accept {
        agent_id: AgentId::from_uuid(b),
    };
    steps(log, t2, vec![assign(b), accept, release]).await;
    log.execute::<Agent>(a, &ctx(), AgentCommand::Recover)
        .await
        .unwrap();
    steps(log, t2, vec![assign(a), start(a), complete(a)]).await;
    steps(log, t1, vec![start(b), complete(b)]).await;
    steps(log, t3, vec![assign(c), start(c), complete(c)]).await;
    scenario(log, 3, 10).await;
    Work {
        a,
        b,
        c,
        t1,
        t2,
        t3,
    }
}

/// The sequences of every event of `agent` and of `tasks`, in log order: what its audit must print,
/// read off the log itself.
async fn expected(world: &World, agent: Uuid, tasks: &[Uuid]) -> Vec<u64> {
    let subjects = world.log().subjects();
    let mut wanted: BTreeSet<String> = tasks
        .iter()
        .map(|t| subjects.of(AggregateKind::Task, *t))
        .collect();
    wanted.insert(subjects.of(AggregateKind::Agent, agent));
    let log = world.log().read_to_head(1).await.unwrap();
    log.iter()
        .filter(|raw| wanted.contains(&raw.subject))
        .map(|raw| raw.seq)
        .collect()
}

/// The sequences of `--json` audit lines.
fn seqs(lines: &str) -> Vec<u64> {
    lines
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

/// `hive audit agent ID --json` on the log and the read models: its stdout.
fn audit(world: &World, agent: Uuid) -> String {
    let output = hive_command(world, &["audit", "agent", &agent.to_string(), "--json"]);
    assert!(output.status.success(), "{output:?}");
    assert!(output.stderr.is_empty(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// The same with no read-model database: its stdout and stderr.
fn audit_without_database(world: &World, agent: Uuid) -> (String, String) {
    let home = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(agent_program())
        .args(["audit", "agent", &agent.to_string(), "--json"])
        .env("HIVE_NATS_URL", &world.nats_url)
        .env_remove("HIVE_DATABASE_URL")
        .env("HIVE_NAMESPACE", &world.config.namespace)
        .env("HIVE_HOME", home.path())
        .env("HIVE_LOG", "warn")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    (
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// Runs a projector until its checkpoint reaches `seq`, then stops it (on an empty database it
/// rebuilds first, in bulk, as a projector does).
async fn project_to(world: &World, seq: u64) {
    let projector = Projector::new(
        world.db().clone(),
        world.log().clone(),
        ProjectorConfig::default(),
    );
    let mut checkpoint = projector.checkpoint();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(projector.run(async move {
        let _ = stopped.await;
    }));
    tokio::time::timeout(Duration::from_secs(30), checkpoint.wait_for(|c| *c >= seq))
        .await
        .expect("the projector catches up")
        .unwrap();
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
}

/// What the index holds for `agent`, all of it.
async fn index(world: &World, agent: Uuid) -> Held {
    held(world.db(), READ_MODELS, agent, Page::default())
        .await
        .unwrap()
}

fn tasks_of(held: &Held) -> BTreeSet<Uuid> {
    held.tasks.iter().map(|(task, _)| *task).collect()
}

fn verify(world: &World) {
    let output = hive_command(world, &["verify"]);
    assert!(output.status.success(), "{output:?}");
}

#[tokio::test]
async fn an_agents_audit_has_every_task_it_held_in_log_order_though_the_projection_lags() {
    let world = World::new().await;
    let log = world.log();
    let work = work(log).await;
    let projected = log.last_seq().await.unwrap();
    // On an empty database the projector rebuilds in bulk: the index is written with the rest.
    project_to(&world, projected).await;
    let indexed = index(&world, work.a).await;
    assert_eq!(tasks_of(&indexed), BTreeSet::from([work.t1, work.t2]));
    assert_eq!((indexed.after, indexed.through), (0, projected));
    // In the order A was first assigned each.
    assert_eq!(indexed.tasks[0].0, work.t1);

    // The projector stops; A is assigned another task, which only the log knows.
    let t4 = task(log).await;
    steps(log, t4, vec![assign(work.a)]).await;
    assert!(!tasks_of(&index(&world, work.a).await).contains(&t4));

    for (agent, tasks) in [
        (work.a, vec![work.t1, work.t2, t4]),
        (work.b, vec![work.t1, work.t2]),
        (work.c, vec![work.t3]),
    ] {
        let expected = expected(&world, agent, &tasks).await;
        let audited = audit(&world, agent);
        assert_eq!(seqs(&audited), expected, "agent {agent}");
        // Without the read models: every task event is read, the same answer, and a warning says so.
        let (scanned, warned) = audit_without_database(&world, agent);
        assert_eq!(scanned, audited, "agent {agent}, scanning the log");
        assert!(
            warned.contains("warning: no read-model database"),
            "{warned}"
        );
    }

    // Caught up, by batches this time: the index has it, and agrees with the log.
    let head = log.last_seq().await.unwrap();
    project_to(&world, head).await;
    let indexed = index(&world, work.a).await;
    assert_eq!(tasks_of(&indexed), BTreeSet::from([work.t1, work.t2, t4]));
    assert_eq!((indexed.after, indexed.through), (0, head));
    verify(&world);
}

#[tokio::test]
async fn the_api_pages_an_agents_tasks_and_the_remote_audit_prints_what_the_log_audit_prints() {
    let world = World::new().await;
    let log = world.log();
    let work = work(log).await;
    let projected = log.last_seq().await.unwrap();
    project_to(&world, projected).await;
    // After the checkpoint: A's third task.
    let t4 = task(log).await;
    steps(log, t4, vec![assign(work.a)]).await;
    let api = world
        .run(hive::Parts {
            api: true,
            projector: false,
            scheduler: false,
        })
        .await;

    // A page at a time, in the order A was first assigned each, the stretch of the log said.
    let url = |query: &str| format!("/api/v1/agents/{}/tasks{query}", work.a);
    let mut pages = Vec::new();
    let mut query = "?limit=1".to_owned();
    loop {
        let response = api.get(&url(&query)).await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.header("hive-projection-seq"),
            Some(projected.to_string().as_str())
        );
        let page: Value = response.json().await.unwrap();
        assert_eq!(
            (
                page["indexed_after"].as_u64(),
                page["indexed_through"].as_u64()
            ),
            (Some(0), Some(projected))
        );
        pages.push(
            page["items"][0]["task_id"]
                .as_str()
                .unwrap()
                .parse::<Uuid>()
                .unwrap(),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("?limit=1&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(pages, [work.t1, work.t2]);
    let (_, newest) = api.get_at(&url("?order=desc"), projected).await;
    let newest: Vec<&str> = newest["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["task_id"].as_str().unwrap())
        .collect();
    assert_eq!(newest, [work.t2.to_string(), work.t1.to_string()]);
    // The same set as the index, and B's and C's.
    for (agent, tasks) in [
        (work.b, BTreeSet::from([work.t1, work.t2])),
        (work.c, BTreeSet::from([work.t3])),
    ] {
        let held = api.http.tasks_held(agent).await.unwrap();
        let listed: BTreeSet<Uuid> = held.tasks.iter().copied().collect();
        assert_eq!(listed, tasks);
        assert_eq!(listed, tasks_of(&index(&world, agent).await));
        assert_eq!((held.indexed_after, held.indexed_through), (0, projected));
    }
    for (query, status) in [("?limit=0", 400), ("?cursor=abc", 400), ("?limit=501", 400)] {
        let (got, body) = api.get_at(&url(query), 0).await;
        assert_eq!(got, status, "{query}: {body}");
    }
    let (status, body) = api
        .get_at(&format!("/api/v1/agents/{}/tasks", Uuid::now_v7()), 0)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );

    // Through the API with a viewer's token: what the log itself prints, the task the index does
    // not hold yet included.
    let viewer = world.token(hive_eventlog::Role::Viewer).await;
    for agent in [work.a, work.b, work.c] {
        let args = ["audit", "agent", &agent.to_string(), "--json"];
        let remote = hive_tests::process::hive_over_api(&api.url(""), &viewer, &args).await;
        assert_eq!(remote, audit(&world, agent), "agent {agent}");
    }
    let expected_a = expected(&world, work.a, &[work.t1, work.t2, t4]).await;
    assert_eq!(seqs(&audit(&world, work.a)), expected_a);

    // A read that asks for the head waits for the projection, which then lists the new task.
    let head = log.last_seq().await.unwrap();
    let projector = world
        .run(hive::Parts {
            api: false,
            projector: true,
            scheduler: false,
        })
        .await;
    let (status, page) = api.get_at(&url(""), head).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["items"].as_array().unwrap().len(), 3, "{page}");
    assert!(page["indexed_through"].as_u64().unwrap() >= head);
    projector.stop().await;
    api.stop().await;
}

#[tokio::test]
async fn an_index_added_to_a_database_with_read_models_begins_at_its_checkpoint_until_a_rebuild() {
    use hive_migrations::MigratorTrait;
    use sea_orm::ConnectionTrait;
    let world = World::new().await;
    let log = world.log();
    let work = work(log).await;
    let upgraded_at = log.last_seq().await.unwrap();
    project_to(&world, upgraded_at).await;
    // The read models as they were before the index, then migration m0005 (and those after it) on
    // them.
    let migrations = hive_migrations::Migrator::migrations();
    let index_at = migrations
        .iter()
        .position(|m| m.name() == "m0005_agent_tasks")
        .unwrap();
    let since_index = u32::try_from(migrations.len() - index_at).unwrap();
    hive_migrations::Migrator::down(world.db(), Some(since_index))
        .await
        .unwrap();
    hive_migrations::Migrator::up(world.db(), None)
        .await
        .unwrap();
    let indexed = index(&world, work.a).await;
    assert_eq!(indexed.tasks, [], "an empty index");
    assert_eq!((indexed.after, indexed.through), (upgraded_at, upgraded_at));

    // Later work is indexed; the older is read from the log, and the audits are complete.
    let t4 = task(log).await;
    steps(log, t4, vec![assign(work.a)]).await;
    let mut head = log.last_seq().await.unwrap();
    project_to(&world, head).await;
    assert_eq!(tasks_of(&index(&world, work.a).await), BTreeSet::from([t4]));
    let expected_a = expected(&world, work.a, &[work.t1, work.t2, t4]).await;
    assert_eq!(seqs(&audit(&world, work.a)), expected_a);
    let expected_b = expected(&world, work.b, &[work.t1, work.t2]).await;
    assert_eq!(seqs(&audit(&world, work.b)), expected_b);
    // `hive verify` holds the index to what the log names over the stretch it covers.
    verify(&world);

    // A projector of an earlier version, which keeps no index, moves the checkpoint past T5's
    // assignment to B (its rows undone here, as it would not have written them): the next batch
    // begins the index again after that gap, and the audits read what came before from the log.
    let t5 = task(log).await;
    steps(log, t5, vec![assign(work.b)]).await;
    let old_projector_reached = log.last_seq().await.unwrap();
    project_to(&world, old_projector_reached).await;
    world
        .db()
        .execute_unprepared(&format!(
            "DELETE FROM agent_tasks WHERE first_seq > {head}; \
             UPDATE projection_checkpoints SET agent_tasks_through = {head}"
        ))
        .await
        .unwrap();
    let t6 = task(log).await;
    steps(log, t6, vec![assign(work.b)]).await;
    head = log.last_seq().await.unwrap();
    project_to(&world, head).await;
    let indexed = index(&world, work.b).await;
    assert_eq!(tasks_of(&indexed), BTreeSet::from([t6]));
    assert_eq!(
        (indexed.after, indexed.through),
        (old_projector_reached, head)
    );
    assert_eq!(tasks_of(&index(&world, work.a).await), BTreeSet::new());
    let expected_b = expected(&world, work.b, &[work.t1, work.t2, t5, t6]).await;
    assert_eq!(seqs(&audit(&world, work.b)), expected_b);
    assert_eq!(seqs(&audit(&world, work.a)), expected_a);
    verify(&world);

    // A rebuild indexes the whole log.
    let rebuilt = hive_command(&world, &["projections", "rebuild", READ_MODELS]);
    assert!(rebuilt.status.success(), "{rebuilt:?}");
    let indexed = index(&world, work.b).await;
    assert_eq!(
        tasks_of(&indexed),
        BTreeSet::from([work.t1, work.t2, t5, t6])
    );
    assert_eq!((indexed.after, indexed.through), (0, head));
    assert_eq!(seqs(&audit(&world, work.b)), expected_b);
    verify(&world);
}
