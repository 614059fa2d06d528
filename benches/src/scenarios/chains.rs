//! Chains: end-to-end latencies, one step of the hive after another: agent spawn → ready, task created
//! → assigned (in the log, and as a client polling the API sees it), event → visible in the API,
//! event → SSE client, dead agent → its task requeued, a cancel answered → its executor gone.

use hive_client::Method;
use hive_events::task::TaskStatus;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hive::Backends;
use hive_events::AggregateKind;

use super::{Servers, memory_row, row};
use crate::hive_process::HiveProcess;
use crate::report::{Latencies, Row, Table, peak_rss_mib};
use crate::wait::eventually;

/// End-to-end latencies: agent spawn → ready, task created → assigned, event → visible in the API,
/// event → SSE client, dead agent → its task requeued.
pub async fn chains(servers: &Servers, samples: u32) -> anyhow::Result<Vec<Table>> {
    let (hive, backends) = servers.hive("chains").await?;
    let http = hive.http();
    let mut rows = vec![
        spawn_to_ready(&http, &backends, (samples / 10).max(3)).await?,
        created_to_assigned(&hive, &http, &backends, samples).await?,
    ];
    rows.extend(created_to_seen_assigned(&hive, &http, samples).await?);
    rows.extend([
        event_to_api(&hive, &http, &backends, samples).await?,
        event_to_sse(&hive, &http, samples).await?,
        dead_agent_to_requeued(&hive, &http, &backends, (samples / 10).max(3)).await?,
        cancel_to_executor_gone(&http, (samples / 10).max(3)).await?,
        memory_row(
            "hive RSS after the chains",
            crate::hive_process::rss_mib(hive.pid()),
        ),
        memory_row("hive peak RSS", peak_rss_mib(Some(hive.pid()))),
    ]);
    if let Err(e) = hive.save_metrics("chains").await {
        eprintln!("the hive's metrics were not kept: {e}");
    }
    Ok(vec![Table {
        title: "chains".into(),
        rows,
    }])
}

/// Waits (at most 20 s) for an event of `event_type` on `sub`.
async fn wait_for(sub: &mut async_nats::Subscriber, event_type: &str) -> anyhow::Result<()> {
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(m) = sub.next().await {
            if hive_events::envelope::decode(&m.payload, None)
                .is_ok_and(|e| e.event.event_type() == event_type)
            {
                return Ok(());
            }
        }
        anyhow::bail!("the subscription ended")
    })
    .await
    .map_err(|_| anyhow::anyhow!("no {event_type} within 20 s"))?
}

/// Spawn → ready: a real `hive agent` process each time, `spawns` times.
async fn spawn_to_ready(
    http: &hive_client::Client,
    backends: &Backends,
    spawns: u32,
) -> anyhow::Result<Row> {
    let log = &backends.log;
    let mut latencies = Latencies::default();
    for _ in 0..spawns {
        let id = uuid::Uuid::now_v7();
        let mut sub = log
            .client()
            .subscribe(log.subjects().of(AggregateKind::Agent, id))
            .await?;
        latencies
            .measure(async {
                let r = http
                    .request(Method::POST, "/api/v1/agents/spawn")
                    .json(&serde_json::json!({"agent_id": id, "exec": "true", "max_concurrent_tasks": 16}))
                    .send()
                    .await?;
                anyhow::ensure!(r.status() == 201, "spawn: {}", r.status());
                wait_for(&mut sub, "AgentReady").await
            })
            .await?;
    }
    Ok(row(
        format!("agent spawn → ready ({spawns} processes)"),
        None,
        None,
        Some(&mut latencies),
        "Python system's target: 5 s",
    ))
}

/// Task created → assigned (the agents spawned before take them).
async fn created_to_assigned(
    hive: &HiveProcess,
    http: &hive_client::Client,
    backends: &Backends,
    samples: u32,
) -> anyhow::Result<Row> {
    let log = &backends.log;
    let mut latencies = Latencies::default();
    let tasks = log
        .client()
        .subscribe(format!(
            "{}.task.*",
            log.subjects().all().trim_end_matches(".>")
        ))
        .await?;
    let mut tasks = Box::pin(tasks);
    for n in 0..samples {
        latencies
            .measure(async {
                let created = hive.post_task(http, format!("chain {n}")).await?;
                let id = created["task_id"].as_str().unwrap_or_default().to_owned();
                tokio::time::timeout(Duration::from_secs(20), async {
                    while let Some(m) = tasks.next().await {
                        if m.subject.ends_with(&id)
                            && hive_events::envelope::decode(&m.payload, None)
                                .is_ok_and(|e| e.event.event_type() == "TaskAssigned")
                        {
                            return;
                        }
                    }
                })
                .await?;
                anyhow::Ok(())
            })
            .await?;
    }
    Ok(row(
        format!("task created → assigned ({samples})"),
        None,
        None,
        Some(&mut latencies),
        "from the POST; Python system's target: 2 s",
    ))
}

/// Task created → seen assigned by an outside client: the POST, then `GET /api/v1/tasks/{id}` every
/// millisecond (no `Hive-Min-Seq`: the client does not know the assignment's sequence) until the task
/// has an agent. With where the time went: the POST's own answer, each GET, and how many GETs a task
/// took.
async fn created_to_seen_assigned(
    hive: &HiveProcess,
    http: &hive_client::Client,
    samples: u32,
) -> anyhow::Result<Vec<Row>> {
    let mut latencies = Latencies::default();
    let mut posts = Latencies::default();
    let mut gets = Latencies::default();
    let mut reads = 0u32;
    for n in 0..samples {
        latencies
            .measure(async {
                let created = posts
                    .measure(hive.post_task(http, format!("seen {n}")))
                    .await?;
                let id = created["task_id"].as_str().unwrap_or_default().to_owned();
                eventually(
                    Duration::from_secs(20),
                    Duration::from_millis(1),
                    "the task seen assigned",
                    async || {
                        reads += 1;
                        let view: serde_json::Value = gets
                            .measure(async {
                                http.request(Method::GET, &format!("/api/v1/tasks/{id}"))
                                    .send()
                                    .await?
                                    .json()
                                    .await
                            })
                            .await?;
                        Ok(view["agent_id"].is_string().then_some(()))
                    },
                )
                .await
            })
            .await?;
    }
    Ok(vec![
        row(
            format!("task created → seen assigned by a client ({samples})"),
            None,
            None,
            Some(&mut latencies),
            "from the POST, polling GET /api/v1/tasks/{id} every 1 ms",
        ),
        row(
            "  of which: the POST's answer",
            None,
            None,
            Some(&mut posts),
            "",
        ),
        row(
            "  of which: each GET's answer",
            None,
            None,
            Some(&mut gets),
            format!(
                "{:.2} GETs a task",
                f64::from(reads) / f64::from(samples.max(1))
            ),
        ),
    ])
}

/// Event → visible in the API: the POST's answer to the projector's checkpoint notice.
async fn event_to_api(
    hive: &HiveProcess,
    http: &hive_client::Client,
    backends: &Backends,
    samples: u32,
) -> anyhow::Result<Row> {
    let log = &backends.log;
    let mut notices = log
        .client()
        .subscribe(log.namespace().projection_notices("read_models"))
        .await?;
    let mut latencies = Latencies::default();
    for n in 0..samples {
        let created = hive.post_task(http, format!("visible {n}")).await?;
        let seq = created["seq"].as_u64().unwrap_or(u64::MAX);
        latencies
            .measure(tokio::time::timeout(Duration::from_secs(20), async {
                while let Some(m) = notices.next().await {
                    if std::str::from_utf8(&m.payload)
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok())
                        >= Some(seq)
                    {
                        return;
                    }
                }
            }))
            .await?;
    }
    Ok(row(
        format!("event → visible in the API ({samples})"),
        None,
        None,
        Some(&mut latencies),
        "from the append's ack to the committed checkpoint",
    ))
}

/// Event → SSE client: the POST to its `TaskCreated` on the dashboard's stream.
async fn event_to_sse(
    hive: &HiveProcess,
    http: &hive_client::Client,
    samples: u32,
) -> anyhow::Result<Row> {
    let response = http
        .request(Method::GET, "/api/v1/stream?topics=task")
        .send()
        .await?;
    let mut sse = Box::pin(response.sse());
    let mut latencies = Latencies::default();
    for n in 0..samples {
        latencies
            .measure(async {
                let created = hive.post_task(http, format!("streamed {n}")).await?;
                let id = created["task_id"].as_str().unwrap_or_default().to_owned();
                tokio::time::timeout(Duration::from_secs(20), async {
                    while let Some(Ok(e)) = sse.next().await {
                        if e.event == "event"
                            && e.data.contains(&id)
                            && e.data.contains("TaskCreated")
                        {
                            return;
                        }
                    }
                })
                .await?;
                anyhow::Ok(())
            })
            .await?;
    }
    Ok(row(
        format!("event → SSE client ({samples})"),
        None,
        None,
        Some(&mut latencies),
        "from the POST; the dashboard's feed",
    ))
}

/// A dead agent → its task requeued: `silent` agents that heartbeat once, take a task each, and fall
/// silent. Measured from each one's last heartbeat (acknowledged) to its task's TaskRequeued.
async fn dead_agent_to_requeued(
    hive: &HiveProcess,
    http: &hive_client::Client,
    backends: &Backends,
    silent: u32,
) -> anyhow::Result<Row> {
    let log = &backends.log;
    let timeout = Duration::from_secs(15);
    let mut beats = Vec::new();
    let mut waits = Vec::new();
    for _ in 0..silent {
        let registered: serde_json::Value = http
            .request(Method::POST, "/api/v1/agents")
            .json(&serde_json::json!({"agent_type": "silent", "capabilities": ["silent-bench"], "max_concurrent_tasks": 1}))
            .send()
            .await?
            .json()
            .await?;
        let agent = registered["agent_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let beat = format!("{}/api/v1/agents/{agent}/heartbeat", hive.base);
        anyhow::ensure!(
            http.request(Method::POST, &beat)
                .send()
                .await?
                .status()
                .is_success(),
            "heartbeat"
        );
        let created = http
            .request(Method::POST, "/api/v1/tasks")
            .json(&serde_json::json!({"title": "outlived", "required_capabilities": ["silent-bench"]}))
            .send()
            .await?;
        let created: serde_json::Value = created.json().await?;
        let task = created["task_id"].as_str().unwrap_or_default().to_owned();
        let sub = log
            .client()
            .subscribe(log.subjects().of(AggregateKind::Task, task.parse()?))
            .await?;
        waits.push((task, sub));
        beats.push(beat);
    }
    // Each agent's last heartbeat comes once its task is assigned to it (the first made it ready).
    let mut last_beats = Vec::new();
    for (beat, (task, _)) in beats.iter().zip(&waits) {
        let view = format!("{}/api/v1/tasks/{task}", hive.base);
        eventually(
            Duration::from_secs(20),
            Duration::from_millis(10),
            &format!("task {task} assigned"),
            async || {
                let view: serde_json::Value = http
                    .request(Method::GET, &view)
                    .send()
                    .await?
                    .json()
                    .await?;
                // No state yet (not projected): keep asking.
                let state = serde_json::from_value::<Option<TaskStatus>>(view["state"].clone())?;
                Ok(state.is_some_and(|s| s.holds_agent()).then_some(()))
            },
        )
        .await?;
        anyhow::ensure!(
            http.request(Method::POST, beat)
                .send()
                .await?
                .status()
                .is_success(),
            "heartbeat"
        );
        last_beats.push(Instant::now());
    }
    // Awaited together, so each is timed when its own event arrives.
    let requeues = waits
        .iter_mut()
        .zip(last_beats)
        .map(|((_, sub), last)| async move {
            tokio::time::timeout(
                timeout + Duration::from_secs(20),
                wait_for(sub, "TaskRequeued"),
            )
            .await
            .map_err(|_| anyhow::anyhow!("no TaskRequeued"))??;
            anyhow::Ok(last.elapsed())
        });
    let mut latencies = Latencies::default();
    for took in futures::future::join_all(requeues).await {
        latencies.push(took?);
    }
    Ok(row(
        format!("dead agent → its task requeued ({silent} agents)"),
        None,
        None,
        Some(&mut latencies),
        format!(
            "from its last heartbeat; timeout {} s, target timeout + 1 s",
            timeout.as_secs()
        ),
    ))
}

/// A cancel answered → its executor gone: one spawned agent whose executor becomes `sleep 600` and
/// records its pid; each of `samples` tasks is cancelled once its executor runs, timed from the
/// cancel's answer until the process is gone (looked for every millisecond).
async fn cancel_to_executor_gone(http: &hive_client::Client, samples: u32) -> anyhow::Result<Row> {
    let dir = tempfile::tempdir()?;
    let exec = format!(
        "echo $$ > '{}/pid-'$HIVE_TASK_ID; exec sleep 600",
        dir.path().display()
    );
    let spawned = http
        .request(Method::POST, "/api/v1/agents/spawn")
        .json(&serde_json::json!({"exec": exec, "capabilities": ["cancel-bench"]}))
        .send()
        .await?;
    anyhow::ensure!(spawned.status() == 201, "spawn: {}", spawned.status());
    let mut latencies = Latencies::default();
    for _ in 0..samples {
        let created: serde_json::Value = http
            .request(Method::POST, "/api/v1/tasks")
            .json(
                &serde_json::json!({"title": "runaway", "required_capabilities": ["cancel-bench"]}),
            )
            .send()
            .await?
            .json()
            .await?;
        let task = created["task_id"].as_str().unwrap_or_default().to_owned();
        let pid_file = dir.path().join(format!("pid-{task}"));
        let pid: i32 = eventually(
            Duration::from_secs(20),
            Duration::from_millis(5),
            "the executor running",
            // Not written yet: not running yet.
            async || {
                Ok(std::fs::read_to_string(&pid_file)
                    .ok()
                    .and_then(|p| p.trim().parse().ok()))
            },
        )
        .await?;
        let cancel = http
            .request(Method::POST, &format!("/api/v1/tasks/{task}/cancel"))
            .json(&serde_json::json!({"reason": "bench"}))
            .send()
            .await?;
        anyhow::ensure!(cancel.status().is_success(), "cancel: {}", cancel.status());
        let answered = Instant::now();
        eventually(
            Duration::from_secs(20),
            Duration::from_millis(1),
            "the executor gone",
            async || Ok(hive_devservers::process_gone(pid).then_some(())),
        )
        .await?;
        latencies.push(answered.elapsed());
    }
    Ok(row(
        format!("cancel answered → executor gone ({samples})"),
        None,
        None,
        Some(&mut latencies),
        "a real `hive agent`; pushed stop, SIGTERM to its process group; goal < 1 s",
    ))
}
