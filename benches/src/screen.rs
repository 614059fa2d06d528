//! Event → on screen: the dashboard open in headless Chromium while tasks are created through the API,
//! once on a quiet hive and once beside a steady load of other commands. Each sample is timed from the
//! moment its command is sent to its line entering the page's live feed, in the frame that paints it
//! (the page records that itself, so WebDriver's round trips are not counted). The floor: a frame of the
//! browser, which the feed waits for.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use hive_devservers::browser::Browser;

use crate::hive_process::HiveProcess;
use crate::report::{Latencies, Table};
use crate::scenarios::{Servers, row};

/// Records, for each line added to the feed, when it entered the page (epoch ms). The feed adds lines
/// in a frame's animation callbacks, so they are painted at the end of that same frame.
const RECORD: &str = r#"
    window.__shown = {};
    new MutationObserver((records) => {
        const at = performance.timeOrigin + performance.now();
        for (const r of records) for (const n of r.addedNodes)
            if (n.dataset && n.dataset.seq && !(n.dataset.seq in window.__shown)) window.__shown[n.dataset.seq] = at;
    }).observe(document.querySelector('#feed'), { childList: true });
"#;

/// The intervals between 61 frames (ms).
const FRAMES: &str = r#"
    const done = arguments[0], at = [];
    const frame = (t) => { at.push(t); if (at.length < 61) requestAnimationFrame(frame); else done(at.slice(1).map((t, i) => t - at[i])); };
    requestAnimationFrame(frame);
"#;

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
    let (mut quiet, quiet_missed) = sample(&hive, &http, &browser, samples, "quiet").await?;
    let load = Background::start(&hive, background);
    let (mut loaded, loaded_missed) = sample(&hive, &http, &browser, samples, "loaded").await?;
    let background_done = load.stop().await;
    browser.close().await;
    Ok(vec![Table {
        title: format!(
            "event → on screen (the dashboard in headless Chromium; {samples} samples each)"
        ),
        rows: vec![
            row(
                "a frame of the browser (the floor)",
                None,
                None,
                Some(&mut frame),
                format!("{} frames", frames.len()),
            ),
            row(
                "command sent → its line in the feed, quiet",
                None,
                None,
                Some(&mut quiet),
                format!("one task every 20 ms; {quiet_missed} not shown within 5 s"),
            ),
            row(
                format!("command sent → its line in the feed, beside {background} commands/s"),
                None,
                None,
                Some(&mut loaded),
                format!(
                    "{background_done} background commands; {loaded_missed} not shown within 5 s"
                ),
            ),
        ],
    }])
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
        * 1e3
}

/// Creates `samples` tasks, one every 20 ms, and reads when each was on screen: the latencies and how
/// many never showed.
async fn sample(
    hive: &HiveProcess,
    http: &reqwest::Client,
    browser: &Browser,
    samples: u32,
    label: &str,
) -> anyhow::Result<(Latencies, usize)> {
    let mut sent = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for n in 0..samples {
        tick.tick().await;
        let at = now_ms();
        let answer = hive.post_task(http, format!("{label} {n}")).await?;
        let seq = answer["seq"].as_u64().context("a created task's seq")?;
        sent.insert(seq.to_string(), at);
    }
    // Every line is on screen well within 5 s, or counts as not shown.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let shown = loop {
        let shown: HashMap<String, f64> =
            serde_json::from_value(browser.run("return window.__shown;").await?)?;
        if sent.keys().all(|seq| shown.contains_key(seq)) || tokio::time::Instant::now() > deadline
        {
            break shown;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut latencies = Latencies::default();
    let mut missed = 0;
    for (seq, at) in &sent {
        match shown.get(seq) {
            Some(on_screen) => {
                latencies.push(Duration::from_secs_f64((on_screen - at).max(0.0) / 1e3))
            }
            None => missed += 1,
        }
    }
    Ok((latencies, missed))
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
                let (base, stopped, http) = (hive.base.clone(), stopped.clone(), hive.http());
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(period);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    let mut sent = 0;
                    while !*stopped.borrow() {
                        tick.tick().await;
                        let body =
                            serde_json::json!({"title": format!("background {client} {sent}")});
                        if http
                            .post(format!("{base}/api/v1/tasks"))
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
