//! The dashboard in a real browser: headless Chromium driven through chromedriver (WebDriver). An
//! agent registered and a task created through the API show up on the open page, without a reload,
//! within a second; a task's row opens its history, the same as the audit API's; a dead letter shows up
//! as the projector makes it; a screenshot of the page is kept in `target/test-artifacts/`.

use std::time::{SystemTime, UNIX_EPOCH};

use hive_devservers::browser::Browser;
use hive_tests::{TestHive, World};
use serde_json::{Value, json};

pub(crate) async fn browser() -> Browser {
    Browser::start().await.expect("headless Chromium")
}

pub(crate) async fn watch(browser: &Browser, selector: &str) {
    browser.watch(selector).await.expect("install a watcher");
}

pub(crate) async fn seen(browser: &Browser, selector: &str) -> Option<f64> {
    browser.seen(selector).await.expect("wait for the element")
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1e3
}

pub(crate) async fn post(hive: &TestHive, path: &str, body: Value) -> Value {
    let (status, answer) = hive.post(path, body).await;
    assert!(status == 200 || status == 201, "{path}: {status} {answer}");
    answer
}

#[tokio::test]
async fn the_dashboard_shows_a_new_agent_and_task_within_a_second_without_reloading() {
    let world = World::new().await;
    // No scheduler: the task stays in the queue for the page to show.
    let hive = world.hive().await;
    let browser = browser().await;
    open_dashboard(&browser, &hive).await;

    // Watch for rows whose ids are not known yet: any agent row, any queued row.
    watch(&browser, "#agents tbody tr").await;
    watch(&browser, "#queued tbody tr").await;
    let sent = now_ms();
    let agent = post(
        &hive,
        "/api/v1/agents",
        json!({"agent_type": "browser-test"}),
    )
    .await;
    let agent_seen = seen(&browser, "#agents tbody tr")
        .await
        .expect("the agent shows up");
    let sent_task = now_ms();
    let task = post(
        &hive,
        "/api/v1/tasks",
        json!({"title": "seen in a browser"}),
    )
    .await;
    let task_seen = seen(&browser, "#queued tbody tr")
        .await
        .expect("the task shows up");

    let agent_id = agent["agent_id"].as_str().unwrap();
    let task_id = task["task_id"].as_str().unwrap();
    let rows = browser
        .client
        .execute(
            r#"return [
                document.querySelector('#agents tbody tr').dataset.agentId,
                document.querySelector('#queued tbody tr').dataset.taskId,
                document.querySelector('#queued tbody tr td:nth-child(2)').textContent,
            ];"#,
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(rows, json!([agent_id, task_id, "seen in a browser"]));
    let (agent_ms, task_ms) = (agent_seen - sent, task_seen - sent_task);
    assert!(
        agent_ms < 1_000.0,
        "the agent took {agent_ms:.0} ms to show"
    );
    assert!(task_ms < 1_000.0, "the task took {task_ms:.0} ms to show");
    assert!(not_reloaded(&browser).await, "no reload");

    // The counts follow (throttled): the screenshot shows the page settled.
    watch(&browser, r#"#task-counts[data-total="1"]"#).await;
    seen(&browser, r#"#task-counts[data-total="1"]"#)
        .await
        .expect("the task is counted");
    let png = browser.client.screenshot().await.expect("a screenshot");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("dashboard.png"), png).unwrap();
    eprintln!("event → on screen: agent {agent_ms:.0} ms, task {task_ms:.0} ms");
    browser.close().await;
    hive.stop().await;
}

#[tokio::test]
async fn under_load_the_dashboard_keeps_up_and_agrees_with_the_api() {
    use futures::StreamExt;
    const TASKS: usize = 1_000;
    const AGENTS: usize = 120;
    let world = World::new().await;
    let hive = world.hive().await;
    let browser = browser().await;
    browser
        .client
        .goto(&hive.url(&format!("/dashboard#token={}", hive.token)))
        .await
        .unwrap();
    watch(&browser, "#conn.live").await;
    assert!(seen(&browser, "#conn.live").await.is_some());
    let tasks_counted = format!(r#"#task-counts[data-total="{TASKS}"]"#);
    let agents_counted = format!(r#"#agent-counts[data-total="{AGENTS}"]"#);
    watch(&browser, &tasks_counted).await;
    watch(&browser, &agents_counted).await;

    // The load: tasks and agents created by 32 clients at once.
    let requests = (0..TASKS)
        .map(|n| ("/api/v1/tasks", json!({"title": format!("load {n}")})))
        .chain((0..AGENTS).map(|_| ("/api/v1/agents", json!({"agent_type": "loaded"}))));
    futures::stream::iter(requests)
        .for_each_concurrent(32, |(path, body)| {
            let hive = &hive;
            async move {
                post(hive, path, body).await;
            }
        })
        .await;
    let load_ended = now_ms();
    let tasks_seen = seen(&browser, &tasks_counted)
        .await
        .expect("every task counted");
    let agents_seen = seen(&browser, &agents_counted)
        .await
        .expect("every agent counted");
    eprintln!(
        "after the load: tasks counted {:.0} ms, agents {:.0} ms after the last request",
        tasks_seen - load_ended,
        agents_seen - load_ended
    );

    // What the page shows is what the API answers.
    let head = world.log().last_seq().await.unwrap();
    // The page lists newest first.
    let (_, queued) = hive
        .get_at("/api/v1/tasks?status=queued&limit=50&order=desc", head)
        .await;
    let api_ids: Vec<&str> = queued["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["task_id"].as_str().unwrap())
        .collect();
    // The queue list follows the counts by at most one throttle period: wait for its last row.
    let last_row = format!(
        r#"#queued tbody tr:nth-child({})[data-task-id="{}"]"#,
        api_ids.len(),
        api_ids.last().unwrap()
    );
    watch(&browser, &last_row).await;
    seen(&browser, &last_row)
        .await
        .expect("the queue list settles");
    // So does the agents page (re-read at most every 500 ms).
    watch(&browser, "#agents tbody tr:nth-child(100)").await;
    seen(&browser, "#agents tbody tr:nth-child(100)")
        .await
        .expect("the agents page settles");
    let shown = browser
        .client
        .execute(
            r#"return {
                queued: [...document.querySelectorAll('#queued tbody tr')].map(r => r.dataset.taskId),
                agents: document.querySelectorAll('#agents tbody tr').length,
                more_agents: !document.querySelector('#agents-next').disabled,
            };"#,
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(shown["queued"], json!(api_ids));
    assert_eq!(shown["agents"], 100, "the first page of agents");
    assert_eq!(shown["more_agents"], true, "and a next page");
    browser.close().await;
    hive.stop().await;
}

#[tokio::test]
async fn the_queue_says_why_a_task_is_not_running() {
    let world = World::new().await;
    let hive = world.full_hive().await;
    let task = post(
        &hive,
        "/api/v1/tasks",
        json!({"title": "needs a gpu", "required_capabilities": ["gpu"]}),
    )
    .await;
    let task_id = task["task_id"].as_str().unwrap();
    let browser = browser().await;
    open_dashboard(&browser, &hive).await;
    let cell = format!(
        r#"#queued tbody tr[data-task-id="{task_id}"] td.why[data-code="no_capable_agent"]"#
    );
    watch(&browser, &cell).await;
    seen(&browser, &cell).await.expect("the reason shows");
    let text = browser
        .run(&format!(
            "return document.querySelector('{}').textContent;",
            cell.replace('\'', "\\'")
        ))
        .await
        .unwrap();
    assert_eq!(text, "no live agent has gpu");
    browser.close().await;
    hive.stop().await;
}

/// Opens the dashboard and waits until its stream is live; then marks the window, so that a reload
/// (which would make a new one) shows.
async fn open_dashboard(browser: &Browser, hive: &TestHive) {
    open_dashboard_as(browser, hive, &hive.token).await;
}

/// [`open_dashboard`], signed in with `token`.
pub(crate) async fn open_dashboard_as(browser: &Browser, hive: &TestHive, token: &str) {
    browser
        .client
        .goto(&hive.url(&format!("/dashboard#token={token}")))
        .await
        .expect("open the dashboard");
    watch(browser, "#conn.live").await;
    assert!(
        seen(browser, "#conn.live").await.is_some(),
        "the stream connects"
    );
    browser.run("window.__loaded_once = true;").await.unwrap();
}

/// Clicks the element `selector` finds, finding it again if the page replaced it meanwhile.
pub(crate) async fn click(browser: &Browser, selector: &str) {
    use fantoccini::error::{CmdError, ErrorStatus};
    hive_tests::until(
        std::time::Duration::from_secs(2),
        &format!("click {selector}: an element that stays"),
        || {},
        async || {
            let clicked = match browser
                .client
                .find(fantoccini::Locator::Css(selector))
                .await
            {
                Ok(element) => element.click().await,
                Err(e) => Err(e),
            };
            match clicked {
                Ok(()) => Some(()),
                Err(CmdError::Standard(e)) if e.error == ErrorStatus::StaleElementReference => None,
                Err(e) => panic!("click {selector}: {e}"),
            }
        },
    )
    .await
}

async fn not_reloaded(browser: &Browser) -> bool {
    browser
        .run("return window.__loaded_once === true;")
        .await
        .unwrap()
        == json!(true)
}

#[tokio::test]
async fn a_task_row_opens_its_history_and_a_dead_letter_shows_without_reloading() {
    let world = World::new().await;
    let hive = world.full_hive().await;
    let browser = browser().await;
    open_dashboard(&browser, &hive).await;

    // A task that runs: created, assigned by the scheduler, accepted and started by its agent.
    let agent = post(&hive, "/api/v1/agents", json!({"agent_type": "historian"})).await;
    let agent_id = agent["agent_id"].as_str().unwrap().to_owned();
    post(
        &hive,
        &format!("/api/v1/agents/{agent_id}/heartbeat"),
        json!({}),
    )
    .await;
    let task = post(&hive, "/api/v1/tasks", json!({"title": "has a history"})).await;
    let task_id = task["task_id"].as_str().unwrap().to_owned();
    world
        .wait_for_event(
            hive_events::AggregateKind::Task,
            task_id.parse().unwrap(),
            "TaskAssigned",
        )
        .await;
    for action in ["accept", "start"] {
        post(
            &hive,
            &format!("/api/v1/tasks/{task_id}/{action}"),
            json!({"agent_id": agent_id}),
        )
        .await;
    }
    let row = format!(r#"#running tbody tr[data-task-id="{task_id}"]"#);
    watch(&browser, &row).await;
    seen(&browser, &row).await.expect("the running task shows");

    // Its row opens its history: the same events as the audit API's, in the same order.
    click(&browser, &row).await;
    let panel = format!(r#"#history[data-entity="{task_id}"]:not([hidden])"#);
    watch(&browser, &panel).await;
    seen(&browser, &panel).await.expect("the history opens");
    let (status, audit) = hive
        .get_at(&format!("/api/v1/tasks/{task_id}/events"), 0)
        .await;
    assert_eq!(status, 200, "{audit}");
    let expected: Vec<Value> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| json!([e["seq"].to_string(), e["type"]]))
        .collect();
    let shown = browser
        .run(
            r#"return [...document.querySelectorAll('#history-events tr')]
                .map(r => [r.dataset.seq, r.children[2].textContent]);"#,
        )
        .await
        .unwrap();
    assert_eq!(shown, json!(expected));
    let types: Vec<&str> = expected.iter().map(|e| e[1].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["TaskCreated", "TaskAssigned", "TaskAccepted", "TaskStarted"]
    );

    // A heartbeat is no event, yet the agent's row shows it as the bucket records it.
    let agent_row = format!(r#"#agents tr[data-agent-id="{agent_id}"] td.beat"#);
    watch(&browser, &agent_row).await;
    seen(&browser, &agent_row).await.expect("the agent's row");
    post(
        &hive,
        &format!("/api/v1/agents/{agent_id}/heartbeat"),
        json!({}),
    )
    .await;
    let at = world
        .heartbeats()
        .await
        .last(agent_id.parse().unwrap())
        .await
        .unwrap()
        .expect("a heartbeat")
        .timestamp_millis();
    let shown = browser
        .client
        .execute_async(
            r#"const [selector, at, done] = arguments, began = Date.now();
            (function poll() {
                const cell = document.querySelector(selector);
                if (cell && Date.parse(cell.dataset.at) === at) return done(Date.now() - began);
                if (Date.now() - began > 2000) return done(null);
                setTimeout(poll, 5);
            })();"#,
            vec![json!(agent_row), json!(at)],
        )
        .await
        .unwrap();
    assert!(shown.is_number(), "the heartbeat at {at} never showed");

    // A message the projector cannot read becomes a dead letter, and the open page shows it.
    let subject = format!(
        "{}.task.{}",
        world.log().subjects().all().trim_end_matches(".>"),
        uuid::Uuid::now_v7()
    );
    let dead = "#dead tbody tr[data-seq]";
    watch(&browser, dead).await;
    let sent = now_ms();
    let poison = world.publish_raw(&subject, "not json").await;
    let shown_at = seen(&browser, dead).await.expect("the dead letter shows");
    let seq = browser
        .run("return document.querySelector('#dead tbody tr').dataset.seq;")
        .await
        .unwrap();
    assert_eq!(seq, json!(poison.to_string()));
    let ms = shown_at - sent;
    assert!(ms < 1_000.0, "the dead letter took {ms:.0} ms to show");
    assert!(not_reloaded(&browser).await, "the page was not reloaded");
    eprintln!("poison → dead letter on screen: {ms:.0} ms");
    browser.close().await;
    hive.stop().await;
}
