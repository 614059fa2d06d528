//! hive-client against a real hive: a command whose answer is lost is sent again under its key and
//! applied once; reads see the client's own writes; `events()` follows the log across cut connections
//! and yields what paging the whole log yields, no event lost or doubled.

use std::time::Duration;

use futures::{Stream, StreamExt};
use hive_client::{ErrorCode, EventFilter, MinSeq};
use hive_events::AggregateKind;
use hive_tests::World;
use hive_tests::proxy::Proxy;
use serde_json::{Value, json};
use uuid::Uuid;

/// The next event of `events` (at most 20 s away).
async fn next(
    events: &mut (impl Stream<Item = Result<Value, hive_client::ClientError>> + Unpin),
) -> Value {
    tokio::time::timeout(Duration::from_secs(20), events.next())
        .await
        .expect("an event within 20 s")
        .expect("the stream goes on")
        .expect("an event, not an error")
}

/// What identifies an event: its sequence, type, entity and id.
fn identity(record: &Value) -> (u64, String, String, String) {
    (
        record["seq"].as_u64().expect("a seq"),
        record["type"].to_string(),
        record["aggregate_id"].to_string(),
        record["event_id"].to_string(),
    )
}

/// The whole log, paged through `/api/v1/events` with small pages.
async fn whole_log(client: &hive_client::Client) -> Vec<Value> {
    let (mut all, mut after) = (Vec::new(), 0);
    loop {
        let path = format!("/api/v1/events?after_seq={after}&limit=7");
        let page = client.get_at(&path, MinSeq::None).await.unwrap();
        all.extend(page["items"].as_array().unwrap().iter().cloned());
        after = page["last_seq"].as_u64().unwrap();
        if page["more"] != true {
            return all;
        }
    }
}

#[tokio::test]
async fn a_command_whose_answer_is_lost_is_sent_again_under_its_key_and_applied_once() {
    let world = World::new().await;
    let hive = world.hive().await;
    let proxy = Proxy::to(&hive.base).await;
    let client = hive_tests::authorized_client(&proxy.url(), &hive.token);

    // Hive appends the task, its answer never arrives: the client sends the command again.
    proxy.lose_next_answer();
    let created = client
        .create_task(&json!({"title": "exactly once"}))
        .await
        .expect("the command succeeds when sent again");
    assert_eq!(proxy.answers_lost(), 1, "the first answer was lost");

    let created_events: Vec<Value> = whole_log(&hive.http)
        .await
        .into_iter()
        .filter(|r| r["type"] == "TaskCreated")
        .collect();
    assert_eq!(created_events.len(), 1, "{created_events:?}");
    assert_eq!(created_events[0]["aggregate_id"], created["task_id"]);
    assert_eq!(created_events[0]["seq"], created["seq"]);

    // A key the caller chose works the same way across calls.
    let again = async || {
        client
            .command(hive_client::Method::POST, "/api/v1/tasks")
            .idempotency_key("mine-1")
            .json(&json!({"title": "keyed"}))
            .send()
            .await
            .unwrap()
    };
    assert_eq!(again().await, again().await);
    hive.stop().await;
}

#[tokio::test]
async fn reads_see_the_clients_own_writes_and_errors_are_typed() {
    let world = World::new().await;
    let hive = world.hive().await;
    let client = hive_tests::authorized_client(&hive.base, &hive.token);

    let created = client.create_task(&json!({"title": "mine"})).await.unwrap();
    let seq = created["seq"].as_u64().unwrap();
    let task: Uuid = created["task_id"].as_str().unwrap().parse().unwrap();
    // A clone (another part of the same program) shares what the client wrote.
    let reader = client.clone();
    assert_eq!(reader.written_seq(), seq);
    let view = reader.task(task).await.expect("the task, read right after");
    assert_eq!(view["title"], "mine");
    let listed = reader.tasks(&[("status", "pending")]).await.unwrap();
    assert_eq!(listed["items"][0]["task_id"], created["task_id"]);

    // Per read: a sequence the log does not hold is refused, with Hive's code.
    let beyond = reader
        .get_at("/status", MinSeq::At(seq + 1_000))
        .await
        .unwrap_err();
    assert!(beyond.is(ErrorCode::BadRequest), "{beyond}");
    assert_eq!(beyond.status(), Some(400));
    let missing = reader.task(Uuid::now_v7()).await.unwrap_err();
    assert!(missing.is(ErrorCode::NotFound), "{missing}");
    // Without a token: unauthenticated.
    let anonymous = hive_client::Client::new(&hive.base);
    let refused = anonymous.status().await.unwrap_err();
    assert!(refused.is(ErrorCode::Unauthenticated), "{refused}");
    hive.stop().await;
}

#[tokio::test]
async fn events_follow_the_log_across_cut_connections_losing_and_doubling_nothing() {
    let world = World::new().await;
    let hive = world.hive().await;
    let proxy = Proxy::to(&hive.base).await;
    let follower = hive_tests::authorized_client(&proxy.url(), &hive.token);
    let create = async |title: String| {
        hive.http
            .create_task(&json!({ "title": title }))
            .await
            .unwrap()
    };
    for n in 0..5 {
        create(format!("before {n}")).await;
    }

    let mut events = Box::pin(follower.events(0, EventFilter::all()));
    let mut seen = Vec::new();
    // These come from a page of the log.
    for _ in 0..5 {
        seen.push(next(&mut events).await);
    }
    for round in 0..4 {
        let mut last = 0;
        for n in 0..3 {
            last = create(format!("round {round} {n}")).await["seq"]
                .as_u64()
                .unwrap();
        }
        // Written after the last cut, so read over a new connection; then that one is cut too, and
        // more is written while it is down.
        while seen.last().unwrap()["seq"].as_u64().unwrap() < last {
            seen.push(next(&mut events).await);
        }
        assert!(
            proxy.cut() >= 1,
            "a live connection to cut in round {round}"
        );
        create(format!("round {round} while cut")).await;
    }
    let head = world.log().last_seq().await.unwrap();
    while seen.last().unwrap()["seq"].as_u64().unwrap() < head {
        seen.push(next(&mut events).await);
    }

    let log = whole_log(&hive.http).await;
    assert_eq!(log.len() as u64, head);
    assert_eq!(
        seen.iter().map(identity).collect::<Vec<_>>(),
        log.iter().map(identity).collect::<Vec<_>>()
    );
    hive.stop().await;
}

#[tokio::test]
async fn events_of_one_agent_are_its_events_and_never_its_heartbeats() {
    let world = World::new().await;
    let hive = world.hive().await;
    let client = &hive.http;
    let body = json!({"agent_type": "worker", "capabilities": [], "max_concurrent_tasks": 1});
    let agent: Uuid = client.register_agent(&body).await.unwrap()["agent_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    client.register_agent(&body).await.unwrap();
    client
        .create_task(&json!({"title": "not the agent's"}))
        .await
        .unwrap();

    let mut events = Box::pin(client.events(0, EventFilter::entity(AggregateKind::Agent, agent)));
    let registered = next(&mut events).await;
    assert_eq!(registered["type"], "AgentRegistered");
    assert_eq!(registered["aggregate_id"], agent.to_string());

    // Heartbeats go by on the stream of this entity; the next event is the drain.
    for _ in 0..3 {
        client.heartbeat(agent).await.unwrap();
    }
    let drained = client.drain(agent).await.unwrap();
    let mut after = next(&mut events).await;
    while after["seq"].as_u64() < drained["seq"].as_u64() {
        assert_eq!(after["aggregate_id"], agent.to_string(), "{after}");
        after = next(&mut events).await;
    }
    assert_eq!(after["seq"], drained["seq"], "{after}");
    assert_eq!(after["aggregate_id"], agent.to_string());
    hive.stop().await;
}

/// A connection that goes silent without closing (its peer gone, a NAT that forgot it) is taken for
/// dead after the client's `silence`, and `events()` goes on over a new one from where it was.
#[tokio::test]
async fn events_leave_a_silent_connection_and_go_on_from_where_they_were() {
    let world = World::new().await;
    let hive = world.hive().await;
    let proxy = Proxy::to(&hive.base).await;
    let follower = hive_tests::authorized_client(&proxy.url(), &hive.token)
        .with_silence(Duration::from_millis(500));
    let first = hive
        .http
        .create_task(&json!({"title": "before"}))
        .await
        .unwrap();
    let mut events = Box::pin(follower.events(0, EventFilter::aggregate(AggregateKind::Task)));
    assert_eq!(next(&mut events).await["seq"], first["seq"]);

    // Once the stream is open, it falls silent, and the log goes on.
    let (seen, later) = tokio::join!(next(&mut events), async {
        hive_tests::eventually(
            Duration::from_secs(10),
            Duration::from_millis(10),
            async || (proxy.requests_to("/api/v1/stream") == 1).then_some(()),
        )
        .await;
        assert!(proxy.stall() >= 1, "the stream's connection to stall");
        hive.http
            .create_task(&json!({"title": "while silent"}))
            .await
            .unwrap()
    });
    assert_eq!(seen["seq"], later["seq"], "{seen}");
    assert_eq!(seen["type"], "TaskCreated");
    assert_eq!(proxy.requests_to("/api/v1/stream"), 2, "one reconnect");
    hive.stop().await;
}
