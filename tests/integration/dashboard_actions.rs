//! The dashboard's actions in headless Chromium: an operator's session cancels, retries and requeues
//! a task and drains an agent, each after a confirmation, and the API shows the change; a refusal
//! shows as a message. A viewer's session has no buttons, and its cookie commands nothing, not even
//! with the session's CSRF proof; an operator's cookie commands nothing without it. The agents list
//! hides deregistered agents unless asked.

use hive_devservers::browser::Browser;
use hive_eventlog::Role;
use hive_events::AggregateKind;
use hive_tests::api::id;
use hive_tests::{TestHive, World};
use serde_json::{Value, json};

use crate::browser::{browser, click, open_dashboard_as, post, seen, watch};

/// Waits (at most 5 s) for `selector` to match on the page.
async fn shows(browser: &Browser, selector: &str) {
    watch(browser, selector).await;
    assert!(
        seen(browser, selector).await.is_some(),
        "{selector} never showed"
    );
}

/// Opens the history panel of `id` by clicking `row` (closing an open panel first: it covers the page's
/// right half).
async fn open_panel(browser: &Browser, row: &str, id: &str) {
    browser
        .run("document.querySelector('#history').hidden = true;")
        .await
        .unwrap();
    shows(browser, row).await;
    click(browser, row).await;
    shows(
        browser,
        &format!(r#"#history[data-entity="{id}"]:not([hidden])"#),
    )
    .await;
}

/// Clicks the open panel's `action` button on `id`, confirms it, and waits for the page's message
/// about it: `ok` (done) or `bad` (refused).
async fn confirm(browser: &Browser, id: &str, action: &str, outcome: &str) {
    let button = format!(r#"#history:not([hidden]) #actions button[data-action="{action}"]"#);
    shows(browser, &button).await;
    click(browser, &button).await;
    shows(browser, "#confirm:not([hidden])").await;
    click(browser, "#confirm-yes").await;
    shows(
        browser,
        &format!(r#"#message.{outcome}[data-about="{action} {id}"]:not([hidden])"#),
    )
    .await;
}

/// POSTs `path` from the page, as a script there (or a forger sending the page's cookie) would: with
/// the session's CSRF proof if `proof`.
async fn post_from_page(browser: &Browser, path: &str, proof: bool) -> Value {
    browser
        .client
        .execute_async(
            r#"const [path, proof, done] = arguments;
            (async () => {
                const headers = { "content-type": "application/json" };
                if (proof) headers["x-hive-csrf"] = (await (await fetch("/api/v1/session")).json()).csrf;
                const r = await fetch(path, { method: "POST", headers, body: "{}" });
                done({ status: r.status, body: await r.json().catch(() => null) });
            })();"#,
            vec![json!(path), json!(proof)],
        )
        .await
        .expect("a request from the page")
}

/// Waits for event `event_type` of task `task`: its sequence.
async fn task_event(world: &World, task: &str, event_type: &str) -> u64 {
    let task = task.parse().expect("a task id");
    world
        .wait_for_event(AggregateKind::Task, task, event_type)
        .await
}

#[tokio::test]
async fn an_operator_cancels_retries_requeues_and_drains_from_the_dashboard() {
    let world = World::new().await;
    let hive = world.full_hive().await;
    let operator = world.token(Role::Operator).await;
    let browser = browser().await;
    open_dashboard_as(&browser, &hive, &operator).await;
    shows(&browser, "#who").await;
    let who = browser
        .run("return document.querySelector('#who').textContent;")
        .await
        .unwrap();
    assert_eq!(who, "test operator (operator)");

    // A task no agent can take stays queued.
    let waiting = post(
        &hive,
        "/api/v1/tasks",
        json!({"title": "waits", "required_capabilities": ["nobody"]}),
    )
    .await;
    let waiting = id(&waiting, "task_id");
    // The operator's cookie alone commands nothing: the session's CSRF proof must come with it.
    let cancel = format!("/api/v1/tasks/{waiting}/cancel");
    let refused = post_from_page(&browser, &cancel, false).await;
    assert_eq!(refused["status"], 403, "{refused}");
    assert_eq!(refused["body"]["error"]["code"], "forbidden");
    assert!(
        refused["body"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("X-Hive-Csrf"),
        "{refused}"
    );

    // Cancel, from the queue's row, after a confirmation.
    let row = format!(r#"#queued tbody tr[data-task-id="{waiting}"]"#);
    open_panel(&browser, &row, &waiting).await;
    confirm(&browser, &waiting, "cancel", "ok").await;
    let seq = task_event(&world, &waiting, "TaskCancelled").await;
    let now = hive.read_at(&format!("/api/v1/tasks/{waiting}"), seq).await;
    assert_eq!(now["state"], "cancelled", "{now}");
    let history = hive
        .read_at(&format!("/api/v1/tasks/{waiting}/events"), seq)
        .await;
    let last = history["events"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        (last["type"].as_str(), last["actor"].as_str()),
        (Some("TaskCancelled"), Some("operator:test operator")),
        "the cookie acted as the operator"
    );

    // A cancelled task cannot be retried: the API's refusal shows on the page.
    confirm(&browser, &waiting, "retry", "bad").await;
    let shown = browser
        .run("return document.querySelector('#message').textContent;")
        .await
        .unwrap();
    assert!(
        shown.as_str().unwrap().starts_with("retry refused (409)"),
        "{shown}"
    );

    // An agent, ready, runs two tasks: one to requeue, one that fails for good.
    let agent = post(
        &hive,
        "/api/v1/agents",
        json!({"agent_type": "actor", "max_concurrent_tasks": 3}),
    )
    .await;
    let agent = id(&agent, "agent_id");
    post(
        &hive,
        &format!("/api/v1/agents/{agent}/heartbeat"),
        json!({}),
    )
    .await;
    let requeued = run(&world, &hive, &agent, json!({"title": "to requeue"})).await;
    let failed = run(
        &world,
        &hive,
        &agent,
        json!({"title": "fails", "max_attempts": 1}),
    )
    .await;
    post(
        &hive,
        &format!("/api/v1/tasks/{failed}/fail"),
        json!({"agent_id": agent, "error": "broken", "retryable": false}),
    )
    .await;
    let dead = task_event(&world, &failed, "TaskDeadLettered").await;

    // Requeue, from the running task's row.
    let row = format!(r#"#running tbody tr[data-task-id="{requeued}"]"#);
    open_panel(&browser, &row, &requeued).await;
    confirm(&browser, &requeued, "requeue", "ok").await;
    task_event(&world, &requeued, "TaskRequeued").await;

    // Retry, from the dead-lettered task's event on the live feed.
    let row = format!(r#"#feed li[data-seq="{dead}"]"#);
    open_panel(&browser, &row, &failed).await;
    confirm(&browser, &failed, "retry", "ok").await;
    task_event(&world, &failed, "TaskRetried").await;

    // Drain, from the agent's row.
    let row = format!(r#"#agents tbody tr[data-agent-id="{agent}"]"#);
    open_panel(&browser, &row, &agent).await;
    confirm(&browser, &agent, "drain", "ok").await;
    let agent_id = agent.parse().unwrap();
    let seq = world
        .wait_for_event(AggregateKind::Agent, agent_id, "AgentDraining")
        .await;
    let now = hive.read_at(&format!("/api/v1/agents/{agent}"), seq).await;
    assert_eq!(now["status"], "draining", "{now}");
    browser.close().await;
    hive.stop().await;
}

/// Creates task `body`, waits for the scheduler to assign it to `agent`, and has the agent accept and
/// start it: the task's id.
async fn run(world: &World, hive: &TestHive, agent: &str, body: Value) -> String {
    let task = id(&post(hive, "/api/v1/tasks", body).await, "task_id");
    task_event(world, &task, "TaskAssigned").await;
    for action in ["accept", "start"] {
        post(
            hive,
            &format!("/api/v1/tasks/{task}/{action}"),
            json!({"agent_id": agent}),
        )
        .await;
    }
    task
}

#[tokio::test]
async fn a_viewer_sees_no_buttons_and_its_cookie_commands_nothing_and_deregistered_agents_hide() {
    let world = World::new().await;
    let hive = world.hive().await;
    let viewer = world.token(Role::Viewer).await;
    let task = id(
        &post(&hive, "/api/v1/tasks", json!({"title": "watched"})).await,
        "task_id",
    );
    // Two agents, one of them deregistered.
    let live = id(
        &post(&hive, "/api/v1/agents", json!({"agent_type": "live"})).await,
        "agent_id",
    );
    let gone = id(
        &post(&hive, "/api/v1/agents", json!({"agent_type": "gone"})).await,
        "agent_id",
    );
    let done = post(
        &hive,
        &format!("/api/v1/agents/{gone}/deregister"),
        json!({}),
    )
    .await;
    let seq = done["seq"].as_u64().unwrap();

    // The JSON the page starts from lists the deregistered agent only when asked.
    let ids = |c: &Value| -> Vec<String> {
        c["agents"]["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["agent_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let shown = hive.read_at("/dashboard/coordination", seq).await;
    assert_eq!(ids(&shown), [live.as_str()]);
    let asked = "/dashboard/coordination?include_deregistered=true";
    let all = hive.read_at(asked, seq).await;
    assert_eq!(ids(&all), [live.as_str(), gone.as_str()]);

    let browser = browser().await;
    open_dashboard_as(&browser, &hive, &viewer).await;
    let who = browser
        .run("return document.querySelector('#who').textContent;")
        .await
        .unwrap();
    assert_eq!(who, "test viewer (viewer, read only)");

    // The page's list hides the deregistered agent (read in the same answer as the live one), until
    // asked.
    shows(&browser, &format!(r#"#agents tr[data-agent-id="{live}"]"#)).await;
    let hidden = browser
        .run(&format!(
            r#"return document.querySelector('#agents tr[data-agent-id="{gone}"]') === null;"#
        ))
        .await
        .unwrap();
    assert_eq!(hidden, true);
    click(&browser, "#show-deregistered").await;
    shows(
        &browser,
        &format!(r#"#agents tr[data-agent-id="{gone}"] td.status-deregistered"#),
    )
    .await;

    // The task's panel opens with no buttons.
    let row = format!(r#"#queued tbody tr[data-task-id="{task}"]"#);
    open_panel(&browser, &row, &task).await;
    let buttons = browser
        .run("return document.querySelectorAll('#actions button').length;")
        .await
        .unwrap();
    assert_eq!(buttons, 0);

    // A forged command with the viewer's cookie is refused, even with the session's CSRF proof.
    let cancel = format!("/api/v1/tasks/{task}/cancel");
    for proof in [true, false] {
        let refused = post_from_page(&browser, &cancel, proof).await;
        assert_eq!(refused["status"], 403, "{refused}");
        assert_eq!(refused["body"]["error"]["code"], "forbidden");
    }
    let now = hive.read_at(&format!("/api/v1/tasks/{task}"), 0).await;
    assert_eq!(now["state"], "queued", "{now}");
    browser.close().await;
    hive.stop().await;
}
