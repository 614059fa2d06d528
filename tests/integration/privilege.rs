//! Least privilege: `hive up` runs each part as its own NATS user, allowed only what that part does, and
//! the API reads PostgreSQL through a role that may only read. The whole hive works so; and each
//! user's forbidden moves are refused, changing nothing.

use hive_client::Method;
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
use hive_eventlog::Namespace;
use hive_eventlog::users::Service;
use hive_tests::World;
use sea_orm::ConnectionTrait;
use serde_json::Value;

use hive_tests::api::a_spawned_agent_runs_a_task;
use hive_tests::cluster::refusals;
use hive_tests::process::hive_up;

/// A JetStream context as `service`, which waits 1 s for answers (a refused request gets none).
async fn as_service(url: &str, service: Service, password: &str) -> jetstream::Context {
    let client =
        async_nats::ConnectOptions::with_user_and_password(service.user(), password.to_owned())
            .custom_inbox_prefix(service.inbox_prefix())
            .connect(url)
            .await
            .unwrap_or_else(|e| panic!("connect as {}: {e}", service.user()));
    jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(1))
        .build(client)
}

#[tokio::test]
async fn hive_up_runs_each_part_as_a_user_that_may_do_only_its_part() {
    let world = World::new().await;
    let home = tempfile::tempdir().unwrap();
    let reader = hive::with_credentials(&world.database_url, "hive_api_up", "s3cret").unwrap();
    let (mut up, base, token) = hive_up(
        &world,
        home.path(),
        &[
            ("HIVE_API_DATABASE_URL", reader.clone()),
            ("HIVE_SCHEDULER_SNAPSHOT_EVERY", "1".to_owned()),
        ],
    )
    .await;
    let http = hive_tests::authorized_client(&base, &token);

    // The whole hive works: an agent spawned through the Agent Hive 2.0 route runs a task that the
    // scheduler assigned, and the API reads the projected result.
    let done = a_spawned_agent_runs_a_task(&http, "/api/agents/spawn", || {}).await;
    let task = done["task_id"].as_str().expect("a task").to_owned();

    // The users' passwords are where hive up keeps them (readable by its owner only).
    let secrets: Value =
        serde_json::from_str(&std::fs::read_to_string(home.path().join("secrets.json")).unwrap())
            .unwrap();
    let endpoints: Value =
        serde_json::from_str(&std::fs::read_to_string(home.path().join("endpoints.json")).unwrap())
            .unwrap();
    let admin_url = endpoints["nats_url"].as_str().unwrap();
    let url = format!("nats://{}", admin_url.rsplit('@').next().unwrap());
    let password = |s: Service| secrets["nats"][s.name()].as_str().unwrap().to_owned();
    let ns = Namespace::new(&world.config.namespace);
    let admin = as_service(&url, Service::Admin, &password(Service::Admin)).await;
    let mut stream = admin.get_stream(ns.stream()).await.unwrap();
    let before = stream.info().await.unwrap().state.last_sequence;
    // The scheduler, as its own user, saves its board's snapshot.
    let snapshot = async || {
        let boards = admin.get_object_store(ns.board_snapshots()).await.ok()?;
        boards.get("board").await.ok().map(|_| ())
    };
    hive_tests::until(
        Duration::from_secs(10),
        "the board's snapshot",
        || {},
        snapshot,
    )
    .await;
    let event_subject = ns
        .subjects()
        .all()
        .replace('>', "task.00000000-0000-0000-0000-000000000000");

    // Only the command path publishes events: the projector may not.
    let projector = as_service(&url, Service::Projector, &password(Service::Projector)).await;
    let published = match projector.publish(event_subject.clone(), "{}".into()).await {
        Ok(ack) => ack.await.is_ok(),
        Err(_) => false,
    };
    assert!(!published, "the projector published an event");
    // No one but the admin deletes or purges the log.
    let api = as_service(&url, Service::Api, &password(Service::Api)).await;
    assert!(api.delete_stream(ns.stream()).await.is_err());
    assert!(
        api.get_stream(ns.stream())
            .await
            .unwrap()
            .purge()
            .await
            .is_err()
    );
    // The tokens are the API's alone.
    let scheduler = as_service(&url, Service::Scheduler, &password(Service::Scheduler)).await;
    let tokens = scheduler.get_key_value(ns.tokens()).await.unwrap();
    assert!(tokens.put("x", "{}".into()).await.is_err());
    assert!(tokens.get("x").await.is_err(), "the scheduler read a token");
    let tokens = projector.get_key_value(ns.tokens()).await.unwrap();
    assert!(tokens.put("x", "{}".into()).await.is_err());
    // An integrator reads the log with a durable consumer of its own, and does nothing else.
    let integrator = as_service(&url, Service::Integrator, &password(Service::Integrator)).await;
    let log = integrator.get_stream(ns.stream()).await.unwrap();
    let durable = log
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some(hive_eventlog::users::INTEGRATOR_CONSUMER.into()),
            ..Default::default()
        })
        .await
        .expect("an integrator keeps a durable consumer");
    let mut batch = durable.fetch().max_messages(3).messages().await.unwrap();
    let first = batch.next().await.expect("an event").expect("read");
    assert_eq!(first.info().unwrap().stream_sequence, 1);
    first.ack().await.expect("an integrator acknowledges");
    let published = match integrator.publish(event_subject, "{}".into()).await {
        Ok(ack) => ack.await.is_ok(),
        Err(_) => false,
    };
    assert!(!published, "an integrator published an event");
    // Hive's own readers are not its to read from.
    let other = log
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some("someone-else".into()),
            ..Default::default()
        })
        .await;
    assert!(
        other.is_err(),
        "an integrator made a consumer that is not its own"
    );
    assert!(log.purge().await.is_err(), "an integrator purged the log");
    // Nothing changed.
    let after = stream.info().await.unwrap().state.last_sequence;
    assert_eq!(after, before, "no event appended by a refused user");
    assert!(
        admin
            .get_key_value(ns.tokens())
            .await
            .unwrap()
            .get("x")
            .await
            .unwrap()
            .is_none()
    );

    // The API's database role reads and only reads.
    let db = sea_orm::Database::connect(reader.as_str()).await.unwrap();
    let count = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT count(*) AS n FROM tasks",
        ))
        .await
        .unwrap()
        .unwrap();
    assert!(count.try_get::<i64>("", "n").unwrap() >= 1);
    for write in [
        "UPDATE projection_checkpoints SET seq = 0",
        "DELETE FROM tasks",
        "INSERT INTO status_counts (kind, status, count) VALUES ('task', 'x', 1)",
        "CREATE TABLE intruder (id int)",
    ] {
        let refused = db.execute_unprepared(write).await.unwrap_err().to_string();
        assert!(refused.contains("permission denied"), "{write}: {refused}");
    }

    // A rebuild swaps in new tables: the API still reads them.
    let rebuilt = tokio::process::Command::new(hive_tests::agent_program())
        .args(["projections", "rebuild", "--all"])
        .env("HIVE_HOME", home.path())
        .env("HIVE_NAMESPACE", &world.config.namespace)
        .env("HIVE_LOG", "warn")
        .output()
        .await
        .unwrap();
    assert!(rebuilt.status.success(), "{rebuilt:?}");
    let view = http
        .request(Method::GET, &format!("{base}/api/v1/tasks/{task}"))
        .send()
        .await
        .unwrap();
    assert_eq!(view.status(), 200, "the API reads the rebuilt tables");
    up.kill().await.unwrap();
    // The parts themselves were never refused anything: the server refused exactly this test's nine
    // attempts.
    let refused = refusals(&home.path().join("nats"));
    assert_eq!(refused.len(), 9, "{}", refused.join("\n"));
}

#[tokio::test]
async fn hive_up_dead_letters_a_malformed_message_published_with_a_nats_client_then_stops_on_sigterm()
 {
    let world = World::new().await;
    let home = tempfile::tempdir().unwrap();
    let (mut up, base, token) = hive_up(&world, home.path(), &[]).await;
    let http = hive_tests::authorized_client(&base, &token);

    // An operator publishes garbage straight into the log as the admin user `hive up` keeps in its
    // home (what `nats pub --server "$(jq -r .nats_url .hive/endpoints.json)"` does).
    let endpoints: Value =
        serde_json::from_str(&std::fs::read_to_string(home.path().join("endpoints.json")).unwrap())
            .unwrap();
    let url = endpoints["nats_url"].as_str().unwrap();
    let (user, password) = hive::credentials(url).expect("the admin URL carries its credentials");
    let admin = async_nats::ConnectOptions::with_user_and_password(user, password.unwrap())
        .connect(format!("nats://{}", url.rsplit('@').next().unwrap()))
        .await
        .unwrap();
    let subject = Namespace::new(&world.config.namespace)
        .subjects()
        .all()
        .replace('>', &format!("task.{}", uuid::Uuid::new_v4()));
    admin
        .publish(subject.clone(), "this is not json {".into())
        .await
        .unwrap();
    admin.flush().await.unwrap();

    let dead = hive_tests::eventually(
        Duration::from_secs(10),
        Duration::from_millis(20),
        async || {
            let dead = hive_tests::json(http.request(Method::GET, "/api/v1/dead-letters")).await;
            dead["items"]
                .as_array()
                .is_some_and(|i| !i.is_empty())
                .then_some(dead)
        },
    )
    .await
    .expect("a dead letter");
    assert_eq!(dead["items"][0]["subject"], subject.as_str());
    assert_eq!(dead["items"][0]["payload"], "this is not json {");
    // An operator's retry reaches the leading projector from the API's NATS user, and the
    // projector's answer (it may answer a request, nothing more) comes back: the event still cannot
    // be folded (a 503 would say the request or its answer was refused).
    let letter = dead["items"][0]["id"].to_string();
    let retry = hive_tests::process::hive_over_api_output(
        &base,
        &token,
        &["dead-letters", "retry", &letter],
    )
    .await;
    let stderr = String::from_utf8_lossy(&retry.stderr);
    assert_eq!(retry.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("409 corrupt_history"), "{stderr}");
    // It stays healthy and keeps projecting.
    let health = http
        .request(Method::GET, "/health")
        .token(None)
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.json::<Value>().await.unwrap()["status"], "healthy");
    let created = hive_tests::json(
        http.request(Method::POST, "/api/v1/tasks")
            .json(&serde_json::json!({"title": "after the garbage"})),
    )
    .await;
    let task = http
        .request(
            Method::GET,
            &format!(
                "{base}/api/v1/tasks/{}",
                created["task_id"].as_str().unwrap()
            ),
        )
        .header("Hive-Min-Seq", created["seq"].to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(task.status(), 200);

    // SIGTERM stops it cleanly, its nats-server with it.
    let pid = nix::unistd::Pid::from_raw(up.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), up.wait())
        .await
        .expect("hive up stops within 30 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
    let home_path = home.path().to_str().unwrap();
    assert_eq!(hive_tests::processes_with(home_path), Vec::<i32>::new());
}
