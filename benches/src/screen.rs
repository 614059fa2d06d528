//! Event → on screen: the dashboard open in headless Chromium while tasks are created through the API,
//! once on a quiet hive and once beside a steady load of other commands. Each sample is timed from the
//! moment its command is sent to two sights, each in the frame that paints it (the page records them
//! itself, so WebDriver's round trips are not counted): its line entering the page's live feed, and its
//! task's row entering the queue (or running) table. The floor: a frame of the browser, which both wait
//! for.

use hive_client::Method;
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use hive_devservers::browser::Browser;

use crate::hive_process::HiveProcess;
use crate::report::{Latencies, Table};
use crate::scenarios::{Servers, row};

/// Records, for each line added to the feed (by seq) and each task row first added to the queue or
/// running table (by task id), when it entered the page (epoch ms). Both are added in a frame's
/// animation callbacks, so they are painted at the end of that same frame.
const RECORD: &str = r#"
    const record = (into, key) => (records) => {
        const at = performance.timeOrigin + performance.now();
        for (const r of records) for (const n of r.addedNodes) {
            const id = n.dataset && n.dataset[key];
            if (id && !(id in into)) into[id] = at;
        }
    };
    window.__shown = {};
    window.__rows = {};
    new MutationObserver(record(window.__shown, 'seq')).observe(document.querySelector('#feed'), { childList: true });
    for (const table of ['#queued tbody', '#running tbody'])
        new MutationObserver(record(window.__rows, 'taskId')).observe(document.querySelector(table), { childList: true });
"#;

/// The intervals between 61 frames (ms).
const FRAMES: &str = r#"
    const done = arguments[0], at = [];
    const frame = (t) => { at.push(t); if (at.length < 61) requestAnimationFrame(frame); else done(at.slice(1).map((t, i) => t - at[i])); };
    requestAnimationFrame(frame);
"#;

/// Polls, once a frame, until the page shows its whole first picture of a big hive: `arguments[1]`
/// agents with their heartbeats (a full page) and the task counts at `arguments[0]`. Answers the time since the
/// navigation began (ms), the JS heap (bytes) and the page's element count.
const WHOLE_PICTURE: &str = r#"
    const [total, shown, done] = arguments;
    const check = () => {
        const agents = document.querySelectorAll('#agents tbody tr');
        const beats = document.querySelectorAll('#agents tbody td.beat[data-at]');
        const counted = document.querySelector('#task-counts')?.dataset.total;
        if (agents.length >= shown && beats.length >= shown && counted == total) {
            done([performance.now(), performance.memory ? performance.memory.usedJSHeapSize : 0,
                  document.getElementsByTagName('*').length]);
        } else if (performance.now() > 20000) {
            done(`not shown within 20 s: ${agents.length} agents, ${beats.length} heartbeats, ${counted} tasks`);
        } else requestAnimationFrame(check);
    };
    check();
"#;

/// The dashboard in headless Chromium on a hive of `tasks` tasks and `agents` agents: from navigation
/// to its whole first picture, then (with more than a page of agents) a click to the next page of
/// agents until it shows.
pub async fn page_at_scale(
    hive: &HiveProcess,
    tasks: u64,
    agents: u64,
) -> anyhow::Result<Vec<crate::report::Row>> {
    let shown = agents.min(100);
    // What the counts must show: the hive's own total (the generator makes about `tasks`).
    let status: serde_json::Value = hive
        .http()
        .request(Method::GET, "/status")
        .send()
        .await?
        .json()
        .await?;
    let tasks = status["tasks"]["total"].as_u64().unwrap_or(tasks);
    let browser = Browser::start().await?;
    browser
        .client
        .goto(&format!("{}/dashboard#token={}", hive.base, hive.token))
        .await?;
    let answer = browser
        .client
        .execute_async(
            WHOLE_PICTURE,
            vec![serde_json::json!(tasks), serde_json::json!(shown)],
        )
        .await?;
    let picture: (f64, f64, f64) = serde_json::from_value(answer.clone())
        .map_err(|_| anyhow::anyhow!("the dashboard's first picture: {answer}"))?;
    // The next page of agents: from the click to its rows on screen.
    if agents <= shown {
        browser.close().await;
        let mut load = Latencies::default();
        load.push(Duration::from_secs_f64(picture.0 / 1e3));
        return Ok(vec![row(
            "the page in Chromium: navigation → its whole first picture",
            None,
            None,
            Some(&mut load),
            format!("{shown} agents with heartbeats and the counts of {tasks} tasks"),
        )]);
    }
    let answer = browser
            .client
            .execute_async(
                r#"
                const done = arguments[0], button = document.querySelector('#agents-next');
                const check = (first, t0) => {
                    const row = document.querySelector('#agents tbody tr');
                    if (row && row.dataset.agentId !== first) done(performance.now() - t0);
                    else if (performance.now() - t0 > 5000) done(`no next page within 5 s: ${document.querySelector('#agents-page').textContent}`);
                    else requestAnimationFrame(() => check(first, t0));
                };
                // Clicked as a person would: once the button says there is a next page.
                const click = () => {
                    if (button.disabled) return requestAnimationFrame(click);
                    const first = document.querySelector('#agents tbody tr').dataset.agentId;
                    const t0 = performance.now();
                    button.click();
                    check(first, t0);
                };
                click();
                "#,
                vec![],
            )
            .await?;
    let next_page: f64 = serde_json::from_value(answer.clone())
        .map_err(|_| anyhow::anyhow!("the next page of agents: {answer}"))?;
    browser.close().await;
    let ms = |v: f64| Duration::from_secs_f64(v / 1e3);
    let mut load = Latencies::default();
    load.push(ms(picture.0));
    let mut next = Latencies::default();
    next.push(ms(next_page));
    Ok(vec![
        row(
            "the page in Chromium: navigation → its whole first picture",
            None,
            None,
            Some(&mut load),
            format!(
                "{shown} agents with heartbeats and the counts of {tasks} tasks; JS heap {:.1} MB, {} elements",
                picture.1 / 1e6,
                picture.2
            ),
        ),
        row(
            "the page in Chromium: click → the next page of agents shown",
            None,
            None,
            Some(&mut next),
            "one sample",
        ),
    ])
}

/// `samples` tasks one every 20 ms, quiet and beside `background` other commands a second.
pub async fn screen(
    servers: &Servers,
    samples: u32,
    background: u32,
) -> anyhow::Result<Vec<Table>> {
    let (hive, _) = servers.hive("screen").await?;
    let browser = Browser::start().await?;
    browser
        .client
        .goto(&format!("{}/dashboard#token={}", hive.base, hive.token))
        .await?;
    browser.watch("#conn.live").await?;
    browser
        .seen("#conn.live")
        .await?
        .context("the dashboard's stream did not connect")?;
    browser.run(RECORD).await?;

    let frames: Vec<f64> =
        serde_json::from_value(browser.client.execute_async(FRAMES, vec![]).await?)?;
    let mut frame = Latencies::default();
    frames
        .iter()
        .for_each(|ms| frame.push(Duration::from_secs_f64(ms / 1e3)));

    let http = hive.http();
    let quiet = sample(&hive, &http, &browser, samples, "quiet").await?;
    let load = Background::start(&hive, background);
    let loaded = sample(&hive, &http, &browser, samples, "loaded").await?;
    let background_done = load.stop().await;
    browser.close().await;
    let mut rows = vec![row(
        "a frame of the browser (the floor)",
        None,
        None,
        Some(&mut frame),
        format!("{} frames", frames.len()),
    )];
    for (mut sight, phase, note) in [
        (quiet, "quiet".to_owned(), "one task every 20 ms".to_owned()),
        (
            loaded,
            format!("beside {background} commands/s"),
            format!("{background_done} background commands"),
        ),
    ] {
        rows.push(row(
            format!("command sent → its line in the feed, {phase}"),
            None,
            None,
            Some(&mut sight.line),
            format!("{note}; {} not shown within 5 s", sight.line_missed),
        ));
        rows.push(row(
            format!("command sent → its row on screen, {phase}"),
            None,
            None,
            Some(&mut sight.row),
            format!(
                "the task's row in the queue or running table; {} not shown within 5 s",
                sight.row_missed
            ),
        ));
    }
    Ok(vec![Table {
        title: format!(
            "event → on screen (the dashboard in headless Chromium; {samples} samples each)"
        ),
        rows,
    }])
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
        * 1e3
}

/// When a phase's tasks were on screen: as a line of the feed, as a row of a table, and how many of
/// each never showed.
struct Sight {
    line: Latencies,
    line_missed: usize,
    row: Latencies,
    row_missed: usize,
}

/// Creates `samples` tasks, one every 20 ms, and reads when each was on screen.
async fn sample(
    hive: &HiveProcess,
    http: &hive_client::Client,
    browser: &Browser,
    samples: u32,
    label: &str,
) -> anyhow::Result<Sight> {
    // Sent at (epoch ms), by the feed line's key (seq) and by the row's (task id).
    let mut by_seq = HashMap::new();
    let mut by_task = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for n in 0..samples {
        tick.tick().await;
        let at = now_ms();
        let answer = hive.post_task(http, format!("{label} {n}")).await?;
        let seq = answer["seq"].as_u64().context("a created task's seq")?;
        let task = answer["task_id"].as_str().context("a created task's id")?;
        by_seq.insert(seq.to_string(), at);
        by_task.insert(task.to_owned(), at);
    }
    let on_screen = async || -> anyhow::Result<(HashMap<String, f64>, HashMap<String, f64>)> {
        let lines = serde_json::from_value(browser.run("return window.__shown;").await?)?;
        let rows = serde_json::from_value(browser.run("return window.__rows;").await?)?;
        Ok((lines, rows))
    };
    // Every line and row is on screen well within 5 s, or counts as not shown: running out of time is
    // no error here, what is on screen then is counted.
    let _ = crate::wait::eventually(
        Duration::from_secs(5),
        Duration::from_millis(50),
        "every sample on screen",
        async || {
            let (lines, rows) = on_screen().await?;
            let all = by_seq.keys().all(|seq| lines.contains_key(seq))
                && by_task.keys().all(|task| rows.contains_key(task));
            Ok(all.then_some(()))
        },
    )
    .await;
    let (lines, rows) = on_screen().await?;
    let (line, line_missed) = latencies(&by_seq, &lines);
    let (row, row_missed) = latencies(&by_task, &rows);
    Ok(Sight {
        line,
        line_missed,
        row,
        row_missed,
    })
}

/// From sent to shown, for each key sent: the latencies and how many never showed.
fn latencies(sent: &HashMap<String, f64>, shown: &HashMap<String, f64>) -> (Latencies, usize) {
    let mut latencies = Latencies::default();
    let mut missed = 0;
    for (key, at) in sent {
        match shown.get(key) {
            Some(on_screen) => {
                latencies.push(Duration::from_secs_f64((on_screen - at).max(0.0) / 1e3))
            }
            None => missed += 1,
        }
    }
    (latencies, missed)
}

/// Other commands at a steady rate: ten clients, each creating tasks at a tenth of it.
struct Background {
    stop: tokio::sync::watch::Sender<bool>,
    clients: Vec<tokio::task::JoinHandle<u64>>,
}

impl Background {
    fn start(hive: &HiveProcess, per_second: u32) -> Self {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let period = Duration::from_secs_f64(10.0 / f64::from(per_second.max(1)));
        let clients = (0..10)
            .map(|client| {
                let (stopped, http) = (stopped.clone(), hive.http());
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(period);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    let mut sent = 0;
                    while !*stopped.borrow() {
                        tick.tick().await;
                        let body =
                            serde_json::json!({"title": format!("background {client} {sent}")});
                        if http
                            .request(Method::POST, "/api/v1/tasks")
                            .json(&body)
                            .send()
                            .await
                            .is_ok_and(|r| r.status().is_success())
                        {
                            sent += 1;
                        }
                    }
                    sent
                })
            })
            .collect();
        Self { stop, clients }
    }

    /// Stops the clients: how many commands they sent.
    async fn stop(self) -> u64 {
        let _ = self.stop.send(true);
        let mut sent = 0;
        for client in self.clients {
            sent += client.await.unwrap_or(0);
        }
        sent
    }
}
