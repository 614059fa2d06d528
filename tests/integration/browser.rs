//! The dashboard in a real browser: headless Chromium driven through chromedriver (WebDriver). An
//! agent registered and a task created through the API show up on the open page, without a reload,
//! within a second; a screenshot of the page is kept in `target/test-artifacts/`.

use std::time::{SystemTime, UNIX_EPOCH};

use hive_devservers::browser::Browser;
use hive_tests::{TestHive, World};
use serde_json::{Value, json};

async fn browser() -> Browser {
    Browser::start().await.expect("headless Chromium")
}

async fn watch(browser: &Browser, selector: &str) {
    browser.watch(selector).await.expect("install a watcher");
}

async fn seen(browser: &Browser, selector: &str) -> Option<f64> {
    browser.seen(selector).await.expect("wait for the element")
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1e3
}

async fn post(hive: &TestHive, path: &str, body: Value) -> Value {
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
    browser
        .client
        .goto(&hive.url(&format!("/dashboard#token={}", hive.token)))
        .await
        .expect("open the dashboard");
    // The page is live once its stream said hello.
    watch(&browser, "#conn.live").await;
    assert!(
        seen(&browser, "#conn.live").await.is_some(),
        "the stream connects"
    );
    let loaded_url = browser.client.current_url().await.unwrap();

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
    assert_eq!(
        browser.client.current_url().await.unwrap(),
        loaded_url,
        "no reload"
    );

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
    let (_, queued) = hive
        .get_at("/api/v1/tasks?status=queued&limit=50", head)
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
