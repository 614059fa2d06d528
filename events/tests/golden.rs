//! The stored form is a contract: every event type's envelope, as written today, must equal its golden
//! fixture in `tests/fixtures/`, and every fixture must still decode. Run with `HIVE_BLESS=1` to write the
//! fixtures of new event types (never to change old ones: a changed fixture is a broken contract).

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use hive_events::agent::AgentEvent;
use hive_events::aggregate::EventSchema;
use hive_events::envelope::{decode, encode};
use hive_events::project::ProjectEvent;
use hive_events::task::{Limits, TaskEvent, TimeLimit};
use hive_events::{
    Actor, AgentId, AggregateKind, DomainEvent, EventId, EventMeta, Priority, TaskId,
};
use hive_events::{Capability, Labels, ProjectId};
use serde_json::json;
use uuid::Uuid;

fn at() -> DateTime<Utc> {
    "2026-01-02T03:04:05.123456Z".parse().unwrap()
}

fn meta(n: u128) -> EventMeta {
    EventMeta {
        event_id: EventId::from_uuid(Uuid::from_u128(
            0x0190_0000_0000_7000_8000_0000_0000_0000 + n,
        )),
        occurred_at: at(),
        correlation_id: Uuid::from_u128(0xC0),
        causation_id: Some(Uuid::from_u128(0xCA)),
        actor: Actor::new("operator"),
    }
}

fn agent_id() -> AgentId {
    AgentId::from_uuid(Uuid::from_u128(0xA6E))
}

fn all_events() -> Vec<(AggregateKind, Uuid, DomainEvent)> {
    let agent = agent_id().as_uuid();
    let task = Uuid::from_u128(0x7A5C);
    let project = Uuid::from_u128(0x960);
    let caps = vec![
        Capability::new("git").unwrap(),
        Capability::new("rust").unwrap(),
    ];
    let a = |e| (AggregateKind::Agent, agent, DomainEvent::Agent(e));
    let t = |e| (AggregateKind::Task, task, DomainEvent::Task(e));
    vec![
        a(AgentEvent::AgentRegistered {
            name: Some("builder-1".into()),
            agent_type: "worker".into(),
            capabilities: caps.clone(),
            max_concurrent_tasks: 2,
            labels: Labels::new([("pool".to_owned(), "gpu".to_owned())].into()).unwrap(),
        }),
        a(AgentEvent::AgentReady {}),
        a(AgentEvent::AgentLost {
            reason: "heartbeat_timeout".into(),
        }),
        a(AgentEvent::AgentRecovered {}),
        a(AgentEvent::AgentDraining {}),
        a(AgentEvent::AgentDeregistered {
            reason: Some("shutdown".into()),
        }),
        t(TaskEvent::TaskCreated {
            title: "Build the thing".into(),
            description: Some("All of it".into()),
            task_type: Some("code".into()),
            priority: Priority::new(8).unwrap(),
            required_capabilities: caps,
            depends_on: vec![TaskId::from_uuid(Uuid::from_u128(0xD1))],
            waiting_on: vec![TaskId::from_uuid(Uuid::from_u128(0xD1))],
            project_id: Some(ProjectId::from_uuid(project)),
            pinned_agent: Some(agent_id()),
            max_attempts: 3,
            labels: Labels::new([("team".to_owned(), "infra".to_owned())].into()).unwrap(),
            not_before: Some(at()),
            limits: Limits {
                timeout_secs: Some(3600),
                heartbeat_timeout_secs: Some(60),
                cancel_grace_secs: 5,
            },
        }),
        t(TaskEvent::TaskQueued {}),
        t(TaskEvent::TaskAssigned {
            agent_id: agent_id(),
            lease_expires_at: at(),
        }),
        t(TaskEvent::TaskStarted {}),
        t(TaskEvent::TaskProgressed {
            percent: Some(40),
            message: Some("compiling".into()),
        }),
        t(TaskEvent::TaskCompleted {
            result: json!({"artifact": "target/release/hive", "tests": 42}),
        }),
        t(TaskEvent::TaskFailed {
            error: "exit status 1".into(),
            retryable: true,
        }),
        t(TaskEvent::TaskRetryScheduled { retry_at: at() }),
        t(TaskEvent::TaskRequeued {
            reason: "agent_lost".into(),
        }),
        t(TaskEvent::TaskDeadLettered {
            reason: "attempts exhausted".into(),
        }),
        t(TaskEvent::TaskCancelled {
            reason: Some("no longer needed".into()),
            cancelled_by: Some("operator".into()),
        }),
        t(TaskEvent::TaskBlocked {
            reason: "dependency cancelled".into(),
        }),
        (
            AggregateKind::Project,
            project,
            DomainEvent::Project(ProjectEvent::ProjectCreated {
                name: "alpha".into(),
                description: Some("The first".into()),
                project_type: Some("software".into()),
            }),
        ),
        // New event types go last, so that the metadata of the fixtures before them never changes.
        t(TaskEvent::TaskAccepted {}),
        t(TaskEvent::TaskRetried {}),
        t(TaskEvent::TaskUnblocked {}),
        t(TaskEvent::TaskTimedOut {
            limit: TimeLimit::HeartbeatTimeout,
            after_secs: 60,
        }),
    ]
}

fn stored(kind: AggregateKind, id: Uuid, event: &DomainEvent, n: u128) -> Vec<u8> {
    match event {
        DomainEvent::Agent(e) => encode(&meta(n), kind, id, e),
        DomainEvent::Task(e) => encode(&meta(n), kind, id, e),
        DomainEvent::Project(e) => encode(&meta(n), kind, id, e),
    }
}

fn fixture(event_type: &str, version: u16) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{event_type}.v{version}.json"))
}

#[test]
fn every_event_matches_its_golden_fixture_and_round_trips() {
    let bless = std::env::var_os("HIVE_BLESS").is_some();
    for (n, (kind, id, event)) in all_events().into_iter().enumerate() {
        let bytes = stored(kind, id, &event, n as u128);
        let written: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let version = written["schema_version"].as_u64().unwrap() as u16;
        let path = fixture(event.event_type(), version);
        if bless && !path.exists() {
            std::fs::write(
                &path,
                serde_json::to_string_pretty(&written).unwrap() + "\n",
            )
            .unwrap();
        }
        let golden: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&path).unwrap_or_else(|_| panic!("missing fixture {}", path.display())),
        )
        .unwrap();
        assert_eq!(
            written,
            golden,
            "{} drifted from its fixture",
            event.event_type()
        );

        let decoded = decode(&std::fs::read(&path).unwrap(), Some((kind, id))).unwrap();
        assert_eq!(decoded.event, event);
        assert_eq!(decoded.meta, meta(n as u128));
    }
}

#[test]
fn every_fixture_on_disk_still_decodes() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut count = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        decode(&bytes, None).unwrap();
        count += 1;
    }
    // Every current event, plus the older versions still in logs: TaskCreated v1 and v2, TaskCancelled
    // v1, AgentRegistered v1.
    assert_eq!(count, all_events().len() + 4);
}

/// The agent an event names as its task's holder is the `agent_id` its stored data carries: the rule
/// an auditor reads off a record's data and the one the projector's index applies to decoded events
/// are the same, for every stored event type and version.
#[test]
fn the_agent_an_event_names_is_its_stored_data_agent_id() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let stored: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let in_data = stored["data"]["agent_id"]
            .as_str()
            .map(|id| AgentId::from_uuid(id.parse().unwrap()));
        let named = decode(&bytes, None)
            .unwrap()
            .holding()
            .map(|(_, agent)| agent);
        let task = stored["aggregate"] == "task";
        assert_eq!(named, in_data.filter(|_| task), "{}", path.display());
    }
}

#[test]
fn task_created_v1_upcasts_to_v2_without_a_pinned_agent() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let v1 = decode(
        &std::fs::read(dir.join("TaskCreated.v1.json")).unwrap(),
        None,
    )
    .unwrap();
    let v2 = decode(
        &std::fs::read(dir.join("TaskCreated.v2.json")).unwrap(),
        None,
    )
    .unwrap();
    let (
        DomainEvent::Task(TaskEvent::TaskCreated {
            pinned_agent: none,
            title: t1,
            ..
        }),
        DomainEvent::Task(TaskEvent::TaskCreated {
            pinned_agent: some,
            title: t2,
            ..
        }),
    ) = (v1.event, v2.event)
    else {
        panic!("both fixtures are TaskCreated");
    };
    assert_eq!((none, some), (None, Some(agent_id())));
    assert_eq!(t1, t2);
}

#[test]
fn bad_bytes_are_decode_errors() {
    use hive_events::DecodeError;
    assert!(matches!(
        decode(b"not json", None),
        Err(DecodeError::Malformed(_))
    ));
    let (kind, id, event) = all_events().remove(1);
    let good: serde_json::Value = serde_json::from_slice(&stored(kind, id, &event, 0)).unwrap();
    let mut unknown = good.clone();
    unknown["type"] = json!("AgentTeleported");
    assert!(matches!(
        decode(&serde_json::to_vec(&unknown).unwrap(), None),
        Err(DecodeError::UnknownType { .. })
    ));
    let mut future = good.clone();
    future["schema_version"] = json!(99);
    assert!(matches!(
        decode(&serde_json::to_vec(&future).unwrap(), None),
        Err(DecodeError::UnsupportedVersion { .. })
    ));
    let other = Uuid::from_u128(1);
    assert!(matches!(
        decode(&serde_json::to_vec(&good).unwrap(), Some((kind, other))),
        Err(DecodeError::WrongSubject { .. })
    ));
    let mut bad_data = all_events().remove(0);
    if let DomainEvent::Agent(AgentEvent::AgentRegistered { .. }) = bad_data.2 {
        let mut v: serde_json::Value =
            serde_json::from_slice(&stored(bad_data.0, bad_data.1, &bad_data.2, 0)).unwrap();
        v["data"]["max_concurrent_tasks"] = json!("many");
        bad_data.2 = DomainEvent::Agent(AgentEvent::AgentReady {});
        assert!(matches!(
            decode(&serde_json::to_vec(&v).unwrap(), None),
            Err(DecodeError::BadData { .. })
        ));
    }
}

#[test]
fn every_event_type_is_covered() {
    let _ = EventSchema::event_type(&AgentEvent::AgentReady {});
    assert_eq!(all_events().len(), 6 + 16 + 1);
}
