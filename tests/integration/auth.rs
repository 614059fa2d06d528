//! Authentication and authorization: every role (and no token, and a bad one) against every class of
//! route — public reads, reads, commands, admin routes, an agent's own routes and another agent's, a
//! task assigned to the agent and one that is not; the dashboard's cookie and its CSRF proof; revocation; the actor that
//! events name.
//!
//! Long because the role × route matrix is one table, checked in one place (the dashboard's cookie is
//! one more way to present a token, so its checks stand beside the bearer token's).

use hive_client::Method;
use std::collections::BTreeMap;

use hive_eventlog::{CommandContext, Role};
use hive_events::task::{Task, TaskCommand};
use hive_events::{Actor, AgentId};
use hive_tests::process::hive_up;
use hive_tests::{TestHive, World};
use serde_json::{Value, json};

/// A request of a route class.
struct Probe {
    name: &'static str,
    method: &'static str,
    path: String,
    body: Option<Value>,
}

async fn send(hive: &TestHive, probe: &Probe, token: Option<&str>) -> u16 {
    let http = hive_client::Client::new(&hive.base);
    let method = match probe.method {
        "GET" => Method::GET,
        "POST" => Method::POST,
        _ => unreachable!(),
    };
    let mut request = http.request(method, &probe.path).token(None);
    if let Some(token) = token {
        request = request.bearer(token);
    }
    if let Some(body) = &probe.body {
        request = request.json(body);
    }
    request.send().await.expect("a request").status().as_u16()
}

async fn register(hive: &TestHive) -> (String, String) {
    let (status, body) = hive
        .post("/api/v1/agents", json!({"agent_type": "worker"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let token = body["token"].as_str().expect("an agent token").to_owned();
    assert!(token.starts_with("hive_"));
    (body["agent_id"].as_str().unwrap().to_owned(), token)
}

#[tokio::test]
async fn every_role_against_every_class_of_route() {
    let world = World::new().await;
    let hive = world.hive().await;
    let admin = world.admin_token.clone();
    let operator = world.token(Role::Operator).await;
    let viewer = world.token(Role::Viewer).await;
    let (agent, agent_token) = register(&hive).await;
    let (other, _) = register(&hive).await;

    // A task assigned to `agent`, and one that is not.
    let (_, mine) = hive.post("/api/v1/tasks", json!({"title": "mine"})).await;
    let (_, theirs) = hive.post("/api/v1/tasks", json!({"title": "theirs"})).await;
    let (mine, theirs) = (
        mine["task_id"].as_str().unwrap().to_owned(),
        theirs["task_id"].as_str().unwrap().to_owned(),
    );
    let assigned = world
        .log()
        .execute::<Task>(
            mine.parse().unwrap(),
            &CommandContext::new(Actor::new("test")),
            TaskCommand::Assign {
                agent_id: AgentId::from_uuid(agent.parse().unwrap()),
                lease_expires_at: chrono::Utc::now() + chrono::Duration::hours(1),
            },
        )
        .await
        .unwrap();
    let (status, _) = hive
        .get_at(&format!("/api/v1/tasks/{mine}"), assigned.seq)
        .await;
    assert_eq!(status, 200);

    let probe = |name, method, path: String, body: Option<Value>| Probe {
        name,
        method,
        path,
        body,
    };
    let probes = [
        probe("public read", "GET", "/health".into(), None),
        probe("read", "GET", "/status".into(), None),
        probe("read a list", "GET", "/api/v1/tasks".into(), None),
        probe(
            "command",
            "POST",
            "/api/v1/tasks".into(),
            Some(json!({"title": "t"})),
        ),
        probe("admin", "GET", "/api/v1/tokens".into(), None),
        probe(
            "its own agent",
            "POST",
            format!("/api/v1/agents/{agent}/heartbeat"),
            None,
        ),
        probe(
            "its own record",
            "GET",
            format!("/api/v1/agents/{agent}"),
            None,
        ),
        probe(
            "another agent",
            "POST",
            format!("/api/v1/agents/{other}/heartbeat"),
            None,
        ),
        probe("its task", "GET", format!("/api/v1/tasks/{mine}"), None),
        probe(
            "its task list",
            "GET",
            format!("/api/v1/tasks?agent_id={agent}"),
            None,
        ),
        probe(
            "another's task list",
            "GET",
            format!("/api/v1/tasks?agent_id={other}"),
            None,
        ),
        probe(
            "another task",
            "GET",
            format!("/api/v1/tasks/{theirs}"),
            None,
        ),
        probe(
            "report on its task",
            "POST",
            format!("/api/v1/tasks/{mine}/accept"),
            Some(json!({})),
        ),
        probe(
            "cancel a task",
            "POST",
            format!("/api/v1/tasks/{theirs}/cancel"),
            Some(json!({})),
        ),
    ];
    let callers: [(&str, Option<&str>); 6] = [
        ("none", None),
        ("bad", Some("hive_0000")),
        ("viewer", Some(&viewer)),
        ("agent", Some(&agent_token)),
        ("operator", Some(&operator)),
        ("admin", Some(&admin)),
    ];
    // What each caller gets, per route class (callers in the order above). A report names its agent:
    // the agent's token does, an operator or admin must say which (422 without). The cancel changes
    // state, so the admin's comes after the operator's (409).
    let expected: BTreeMap<&str, [u16; 6]> = [
        ("public read", [200, 200, 200, 200, 200, 200]),
        ("read", [401, 401, 200, 403, 200, 200]),
        ("read a list", [401, 401, 200, 403, 200, 200]),
        ("command", [401, 401, 403, 403, 201, 201]),
        ("admin", [401, 401, 403, 403, 403, 200]),
        ("its own agent", [401, 401, 403, 200, 200, 200]),
        ("its own record", [401, 401, 200, 200, 200, 200]),
        ("another agent", [401, 401, 403, 403, 200, 200]),
        ("its task", [401, 401, 200, 200, 200, 200]),
        ("its task list", [401, 401, 200, 200, 200, 200]),
        ("another's task list", [401, 401, 200, 403, 200, 200]),
        ("another task", [401, 401, 200, 403, 200, 200]),
        ("report on its task", [401, 401, 403, 200, 422, 422]),
        ("cancel a task", [401, 401, 403, 403, 200, 409]),
    ]
    .into_iter()
    .collect();
    let mut wrong = Vec::new();
    for probe in &probes {
        for (n, (caller, token)) in callers.iter().enumerate() {
            let got = send(&hive, probe, *token).await;
            let want = expected[probe.name][n];
            if got != want {
                wrong.push(format!(
                    "{} {} as {caller}: {got}, expected {want}",
                    probe.method, probe.path
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    hive.stop().await;
}

#[tokio::test]
async fn answers_say_why_and_events_name_the_caller() {
    let world = World::new().await;
    let hive = world.hive().await;
    let operator = world.token(Role::Operator).await;
    let http = hive_client::Client::new(&hive.base);

    let none = http.request(Method::GET, "/status").send().await.unwrap();
    assert_eq!(none.status(), 401);
    assert_eq!(
        none.headers()["www-authenticate"],
        "Bearer realm=\"hive\"",
        "401 says how to authenticate"
    );
    let body: Value = none.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthenticated");

    let viewer = world.token(Role::Viewer).await;
    let refused = hive_tests::json(
        http.request(Method::POST, "/api/v1/tasks")
            .bearer(&viewer)
            .json(&json!({"title": "no"})),
    )
    .await;
    assert_eq!(refused["error"]["code"], "forbidden", "{refused}");

    // The event names the operator's token, whatever a header claims.
    let created = hive_tests::json(
        http.request(Method::POST, "/api/v1/tasks")
            .bearer(&operator)
            .header("Hive-Actor", "someone-else")
            .json(&json!({"title": "by the operator"})),
    )
    .await;
    let task = created["task_id"].as_str().unwrap();
    let (_, history) = hive
        .get_at(
            &format!("/api/v1/tasks/{task}/events"),
            created["seq"].as_u64().unwrap(),
        )
        .await;
    assert_eq!(
        history["events"][0]["actor"], "operator:test operator",
        "{history}"
    );
    hive.stop().await;
}

#[tokio::test]
async fn the_dashboard_cookie_commands_only_with_its_csrf_proof_and_revocation_is_at_once() {
    let world = World::new().await;
    let hive = world.hive().await;
    let viewer = world.token(Role::Viewer).await;
    let http = hive_client::Client::new(&hive.base);

    // A bad token gets no cookie.
    let bad = http
        .request(Method::POST, "/api/v1/session")
        .json(&json!({"token": "hive_nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    let session = http
        .request(Method::POST, "/api/v1/session")
        .json(&json!({ "token": world.admin_token }))
        .send()
        .await
        .unwrap();
    assert_eq!(session.status(), 204);
    let cookie = session.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_owned();
    let read = http
        .request(Method::GET, "/status")
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200, "the cookie reads");
    let command = http
        .request(Method::POST, "/api/v1/tasks")
        .header("cookie", &pair)
        .json(&json!({"title": "forged"}))
        .send()
        .await
        .unwrap();
    assert_eq!(command.status(), 403, "no command on the cookie alone");
    // With the session's CSRF proof, the cookie commands as its token may; never an admin's route.
    let me = hive_tests::json(
        http.request(Method::GET, "/api/v1/session")
            .header("cookie", &pair),
    )
    .await;
    assert_eq!(
        (&me["role"], &me["may_command"]),
        (&json!("admin"), &json!(true))
    );
    let csrf = me["csrf"].as_str().unwrap();
    for (path, body, status) in [
        ("/api/v1/tasks", json!({"title": "from the page"}), 201),
        (
            "/api/v1/tokens",
            json!({"role": "viewer", "name": "x"}),
            403,
        ),
    ] {
        let sent = http
            .request(Method::POST, path)
            .header("cookie", &pair)
            .header("x-hive-csrf", csrf)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(sent.status(), status, "{path}");
    }

    // Revoked through the API: refused at once.
    let listed: Value = hive.get("/api/v1/tokens").await.json().await.unwrap();
    let id = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["role"] == "viewer")
        .expect("the viewer token is listed")["token_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        !listed.to_string().contains(&viewer),
        "tokens are never shown again"
    );
    let ok = |token: &str| {
        let request = http.request(Method::GET, "/status").bearer(token);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(ok(&viewer).await, 200);
    let revoked = hive
        .http
        .request(Method::DELETE, &format!("/api/v1/tokens/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 204);
    assert_eq!(ok(&viewer).await, 401);

    // An admin issues a token through the API; it works at once.
    let (status, issued) = hive
        .post("/api/v1/tokens", json!({"role": "operator", "name": "ci"}))
        .await;
    assert_eq!(status, 201, "{issued}");
    assert_eq!(ok(issued["token"].as_str().unwrap()).await, 200);
    let (status, _) = hive
        .post("/api/v1/tokens", json!({"role": "agent", "name": "x"}))
        .await;
    assert_eq!(status, 422, "agent tokens come with their agent");
    hive.stop().await;
}

#[tokio::test]
async fn a_deregistered_agent_token_is_revoked() {
    let world = World::new().await;
    let hive = world.hive().await;
    let as_agent = |token: &str, method: Method, path: &str| {
        let request = hive.http.request(method, path).bearer(token);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let (agent, token) = register(&hive).await;
    let record = format!("/api/v1/agents/{agent}");
    // Its token works (it deregisters itself with it), then no more.
    let deregister = format!("/api/v1/agents/{agent}/deregister");
    assert_eq!(as_agent(&token, Method::POST, &deregister).await, 200);
    assert_eq!(as_agent(&token, Method::GET, &record).await, 401);
    // The same when an operator deregisters it.
    let (other, token) = register(&hive).await;
    let (status, _) = hive
        .http
        .request(Method::DELETE, &format!("/api/v1/agents/{other}"))
        .send()
        .await
        .map(|r| (r.status().as_u16(), ()))
        .unwrap();
    assert_eq!(status, 200);
    let record = format!("/api/v1/agents/{other}");
    assert_eq!(as_agent(&token, Method::GET, &record).await, 401);
    hive.stop().await;
}

#[tokio::test]
async fn hive_up_prints_a_development_admin_token_and_keeps_it_in_its_home() {
    use std::os::unix::fs::PermissionsExt;
    let world = World::new().await;
    let home = tempfile::tempdir().unwrap();
    let (mut up, base, token) = hive_up(&world, home.path(), &[]).await;
    let file = home.path().join("admin.token");
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), token);
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600,
        "readable by its owner only"
    );
    let http = hive_client::Client::new(&base);
    let status = |token: Option<String>| {
        let request = http.request(Method::GET, "/status").token(token.as_deref());
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status(None).await, 401);
    assert_eq!(status(Some(token.clone())).await, 200);
    // The Agent Hive 2.0 routes work with it too.
    assert_eq!(
        http.request(Method::GET, "/debug-agents")
            .bearer(&token)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    up.kill().await.unwrap();
    up.wait().await.unwrap();

    // Started again in the same home, it keeps the token.
    let (mut again, _, kept) = hive_up(&world, home.path(), &[]).await;
    assert_eq!(kept, token);
    again.kill().await.unwrap();
}
