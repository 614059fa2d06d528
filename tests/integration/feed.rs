//! Reading the log from outside: `GET /api/v1/events` page by page with its filters, and a live stream
//! that resumes after the last event a client saw, with nothing missed and nothing twice.

use hive_client::Method;
use std::collections::BTreeSet;

use hive_eventlog::Role;
use hive_tests::api::id;
use hive_tests::sse::Feed;
use hive_tests::{World, authorized_client, json};
use serde_json::{Value, json as body};

fn seqs(items: &Value) -> Vec<u64> {
    items
        .as_array()
        .expect("items")
        .iter()
        .map(|e| e["seq"].as_u64().expect("a seq"))
        .collect()
}

#[tokio::test]
async fn the_log_pages_in_order_with_its_filters_for_a_viewer() {
    let world = World::new().await;
    let hive = world.hive().await;
    let (_, agent) = hive
        .post("/api/v1/agents", body!({"agent_type": "w"}))
        .await;
    let mut tasks = Vec::new();
    for n in 0..5 {
        let (_, task) = hive
            .post("/api/v1/tasks", body!({"title": format!("t{n}")}))
            .await;
        tasks.push(task);
    }
    let head = world.log().last_seq().await.unwrap();
    let viewer = authorized_client(&hive.base, &world.token(Role::Viewer).await);
    let page = |query: String| {
        let viewer = viewer.clone();
        let url = hive.url(&format!("/api/v1/events?{query}"));
        async move { json(viewer.request(Method::GET, &url)).await }
    };

    // Two at a time, following last_seq: every event once, in order.
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let answer = page(format!("limit=2&after_seq={after}")).await;
        seen.extend(seqs(&answer["items"]));
        after = answer["last_seq"].as_u64().unwrap();
        if answer["more"] == false {
            break;
        }
    }
    assert_eq!(seen, (1..=head).collect::<Vec<_>>());

    // Filters: a kind, an entity, a type, a flow.
    let agents = page("aggregate=agent".into()).await;
    assert_eq!(seqs(&agents["items"]), [agent["seq"].as_u64().unwrap()]);
    let first = id(&tasks[0], "task_id");
    let one = page(format!("aggregate_id={first}")).await;
    assert_eq!(one["items"][0]["type"], "TaskCreated");
    assert_eq!(
        one["items"][0]["state"], "queued",
        "the status it leaves its task in"
    );
    let created = page("type=TaskCreated&limit=3".into()).await;
    assert_eq!(seqs(&created["items"]).len(), 3);
    assert_eq!(created["more"], true);
    // `next` is the following page, with the same filters.
    let next = created["next"].as_str().unwrap();
    let rest = json(viewer.request(Method::GET, next)).await;
    assert_eq!(seqs(&rest["items"]).len(), 2, "{next}");
    assert!(
        rest["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["type"] == "TaskCreated")
    );
    assert_eq!(
        (&rest["more"], rest.get("next")),
        (&Value::Bool(false), None)
    );
    let flow = one["items"][0]["correlation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let by_flow = page(format!("correlation_id={flow}")).await;
    assert_eq!(seqs(&by_flow["items"]), [tasks[0]["seq"].as_u64().unwrap()]);
    // An entity's history pages the same way.
    let cancelled = hive
        .post(&format!("/api/v1/tasks/{first}/cancel"), body!({}))
        .await
        .1;
    let page_of = |path: String| {
        let viewer = viewer.clone();
        let url = hive.url(&path);
        async move { json(viewer.request(Method::GET, &url)).await }
    };
    let one = page_of(format!("/api/v1/tasks/{first}/events?limit=1")).await;
    assert_eq!(
        (seqs(&one["events"]).len(), &one["more"]),
        (1, &Value::Bool(true))
    );
    let after = one["last_seq"].as_u64().unwrap();
    let rest = page_of(format!(
        "/api/v1/tasks/{first}/events?after_seq={after}&limit=1"
    ))
    .await;
    assert_eq!(seqs(&rest["events"]), [cancelled["seq"].as_u64().unwrap()]);
    assert_eq!(rest["more"], false);
    // Nothing after the head; a bad filter is a 400.
    let head = world.log().last_seq().await.unwrap();
    let none = page(format!("after_seq={head}")).await;
    assert_eq!(
        (none["items"].as_array().unwrap().len(), &none["more"]),
        (0, &Value::Bool(false))
    );
    let bad = viewer
        .request(Method::GET, "/api/v1/events?aggregate=robot")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    hive.stop().await;
}

#[tokio::test]
async fn a_stream_resumed_with_last_event_id_misses_nothing_and_repeats_nothing() {
    let world = World::new().await;
    let hive = world.hive().await;
    let mut feed = Feed::open(&hive, "?topics=task").await;
    let mut received = Vec::new();
    for n in 0..3 {
        hive.post("/api/v1/tasks", body!({"title": format!("before {n}")}))
            .await;
        received.push(feed.next_event().await);
    }
    let last = received.last().unwrap()["seq"].as_u64().unwrap();
    drop(feed);
    // Cut off: the log goes on without the client.
    let mut created = BTreeSet::new();
    for n in 0..20 {
        let (_, task) = hive
            .post("/api/v1/tasks", body!({"title": format!("while away {n}")}))
            .await;
        created.insert(task["seq"].as_u64().unwrap());
    }
    let mut feed = Feed::open_with(&hive, "?topics=task", Some(last)).await;
    // And keeps going while the client catches up.
    for n in 0..5 {
        let (_, task) = hive
            .post("/api/v1/tasks", body!({"title": format!("after {n}")}))
            .await;
        created.insert(task["seq"].as_u64().unwrap());
    }
    let mut resumed = Vec::new();
    while resumed.len() < created.len() {
        let (name, data) = feed.next().await;
        assert_ne!(name, "resync", "a resumed stream needs no resync");
        if name == "event" {
            resumed.push(data["seq"].as_u64().unwrap());
        }
    }
    assert_eq!(
        resumed,
        created.iter().copied().collect::<Vec<_>>(),
        "in order, once each"
    );
    assert!(resumed[0] > last);

    // A client that cannot set headers says where with after_seq.
    let mut again = Feed::open(&hive, &format!("?topics=task&after_seq={last}")).await;
    assert_eq!(
        again.next_event().await["seq"].as_u64(),
        resumed.first().copied()
    );
    hive.stop().await;
}

/// The events a resuming client has not seen may still be on their way to the read models: they
/// reach it once projected, even though they came while nobody listened.
#[tokio::test]
async fn a_stream_resumed_while_the_projection_is_behind_gets_every_event_once_projected() {
    let world = World::new().await;
    let api = world
        .run(hive::Parts {
            api: true,
            projector: false,
            scheduler: false,
        })
        .await;
    // Nobody listens and nothing is projected while these are appended.
    let mut created = Vec::new();
    for n in 0..5 {
        let (status, task) = api
            .post(
                "/api/v1/tasks",
                body!({"title": format!("unprojected {n}")}),
            )
            .await;
        assert_eq!(status, 201);
        created.push(task["seq"].as_u64().unwrap());
    }
    let mut feed = Feed::open_with(&api, "?topics=task", Some(0)).await;
    let projector = world
        .run(hive::Parts {
            api: false,
            projector: true,
            scheduler: false,
        })
        .await;
    let mut resumed = Vec::new();
    while resumed.len() < created.len() {
        resumed.push(feed.next_event().await["seq"].as_u64().unwrap());
    }
    assert_eq!(resumed, created);
    projector.stop().await;
    api.stop().await;
}

/// `hive audit … --api` and `hive projections status --api` with a viewer token, and no NATS or
/// database credentials at all, print what reading the log and the database themselves prints; `hive
/// audit correlation` shows one flow.
#[tokio::test]
async fn audit_through_the_api_with_a_viewer_token_prints_what_the_log_itself_prints() {
    use hive_tests::scripted;
    let world = World::new().await;
    let head = hive_tests::scripted::load_scripted(&world).await;
    let hive = world.hive().await;
    hive.get_at("/status", head).await;
    let viewer = world.token(Role::Viewer).await;
    let direct = |args: &[&str]| {
        let output = hive_tests::process::hive_command(&world, args);
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let over_http = async |args: &[&str]| {
        hive_tests::process::hive_over_api(&hive.url(""), &viewer, args).await
    };
    let flow = "00000000-0000-0000-0000-0000000000f0";
    let at_time = scripted::time_of(9);
    for args in [
        vec!["audit", "agent", scripted::AGENT],
        vec!["audit", "task", scripted::T2, "--json"],
        vec!["audit", "project", scripted::PROJECT],
        vec![
            "audit",
            "log",
            "--from",
            "2026-01-01T00:00:09Z",
            "--to",
            "12",
        ],
        vec![
            "audit",
            "log",
            "--from",
            "3",
            "--to",
            "2026-01-01T00:00:07Z",
            "--json",
        ],
        vec!["audit", "correlation", flow, "--json"],
        vec!["audit", "correlation", flow],
        vec!["audit", "state", "task", scripted::T1, "--at", &at_time],
        vec![
            "audit",
            "state",
            "task",
            scripted::T2,
            "--at",
            "12",
            "--json",
        ],
        vec!["audit", "state", "agent", scripted::AGENT, "--at", "18"],
        vec!["audit", "state", "project", scripted::PROJECT, "--at", "18"],
        vec!["projections", "status"],
        vec!["projections", "status", "--json"],
    ] {
        let expected = direct(&args);
        assert!(!expected.is_empty(), "{args:?}");
        assert_eq!(over_http(&args).await, expected, "hive {}", args.join(" "));
    }
    let flow_lines = direct(&["audit", "correlation", flow, "--json"]);
    assert!(
        flow_lines.lines().count() > 10,
        "the scripted history is one flow"
    );
    assert!(flow_lines.lines().all(|l| l.contains(flow)));
    let status = direct(&["projections", "status", "--json"]);
    let status: Value = serde_json::from_str(status.lines().next().unwrap()).unwrap();
    assert_eq!(
        (
            status["checkpoint"].as_u64(),
            status["dead_letters"].as_u64()
        ),
        (Some(head), Some(1)),
        "the scripted history's unreadable event"
    );
    hive.stop().await;
}

/// On a quiet log the backlog ends with the last event the feed had released: status ticks follow at
/// once, not after the next append.
#[tokio::test]
async fn a_resumed_stream_on_a_quiet_log_goes_live_after_its_backlog() {
    let world = World::new().await;
    let hive = world.hive().await;
    let mut seqs = Vec::new();
    for n in 0..3 {
        let (_, task) = hive
            .post("/api/v1/tasks", body!({"title": format!("t{n}")}))
            .await;
        seqs.push(task["seq"].as_u64().unwrap());
    }
    hive.get_at("/status", seqs[2]).await;
    let mut feed = Feed::open_with(&hive, "?topics=task,status", Some(seqs[0])).await;
    let mut backlog = Vec::new();
    while backlog.len() < 2 {
        let (name, data) = feed.next().await;
        if name == "event" {
            backlog.push(data["seq"].as_u64().unwrap());
        }
    }
    assert_eq!(backlog, seqs[1..]);
    // Nothing is appended any more; the live feed's ticks come through all the same.
    assert_eq!(
        feed.next_named("status").await["head"].as_u64(),
        Some(seqs[2])
    );
    hive.stop().await;
}
