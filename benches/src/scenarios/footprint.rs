//! Footprint: the memory of every hive process, idle and under load.

use hive_client::Method;
use hive_events::agent::AgentStatus;
use std::time::Duration;

use super::{Servers, wrk_row};
use crate::hive_process::{HiveProcess, rss_mib};
use crate::report::{Row, Table, pss_mib};
use crate::wait::eventually;
use crate::wrk::WrkResult;

/// What the hive's processes hold: the sum of their resident sets, and of their proportional sets
/// (shared pages, like the one binary's code, counted once).
#[derive(Default)]
struct Footprint {
    rss: f64,
    pss: f64,
    processes: usize,
    /// The hive's own (the first process).
    hive_rss: f64,
}

fn footprint_of(hive: &HiveProcess) -> Footprint {
    let pids = hive.pids();
    Footprint {
        rss: pids.iter().map(|p| rss_mib(*p)).sum(),
        pss: pids.iter().map(|p| pss_mib(*p)).sum(),
        processes: pids.len(),
        hive_rss: rss_mib(pids[0]),
    }
}

/// The memory of every hive process (`hive up` and the agents it spawned), idle and under a load of
/// commands (64 clients creating tasks, which the scheduler assigns and the agents run) and reads (100
/// clients on `/status`) at once.
pub async fn footprint(servers: &Servers, agents: u32, seconds: u32) -> anyhow::Result<Vec<Table>> {
    let (hive, _) = servers.hive("footprint").await?;
    spawn_ready_agents(&hive, agents).await?;
    let idle = footprint_of(&hive);
    let (posted, read, peak) = peak_under_load(&hive, seconds).await?;
    let after = footprint_of(&hive);
    let memory = |what: String, f: &Footprint| Row {
        what,
        rate: None,
        raw: None,
        latency: None,
        rss: Some(f.rss),
        note: format!(
            "{} processes (the hive {:.0} MiB); PSS {:.0} MiB (shared pages once)",
            f.processes, f.hive_rss, f.pss
        ),
    };
    Ok(vec![Table {
        title: format!("footprint (hive up + {agents} spawned agents, {seconds} s of load)"),
        rows: vec![
            memory("all hive processes, idle".into(), &idle),
            wrk_row(
                "under load: POST /api/v1/tasks, 64 clients".into(),
                &posted,
                None,
                String::new(),
            ),
            wrk_row(
                "under load: GET /status, 100 clients".into(),
                &read,
                None,
                String::new(),
            ),
            memory("all hive processes, peak under the load".into(), &peak),
            memory("all hive processes, after the load".into(), &after),
        ],
    }])
}

/// Has the hive spawn `agents` agents, one after the other, each awaited until ready.
async fn spawn_ready_agents(hive: &HiveProcess, agents: u32) -> anyhow::Result<()> {
    let http = hive.http();
    for _ in 0..agents {
        let r = http
            .request(Method::POST, "/api/v1/agents/spawn")
            .json(&serde_json::json!({"exec": "true", "max_concurrent_tasks": 4}))
            .send()
            .await?;
        anyhow::ensure!(r.status() == 201, "spawn: {}", r.status());
        let spawned: serde_json::Value = r.json().await?;
        let id = spawned["agent_id"].as_str().unwrap_or_default().to_owned();
        eventually(
            Duration::from_secs(20),
            Duration::from_millis(20),
            &format!("agent {id} ready"),
            async || {
                let view: serde_json::Value = http
                    .request(Method::GET, &format!("/api/v1/agents/{id}"))
                    .send()
                    .await?
                    .json()
                    .await?;
                // No status yet (not projected): keep asking.
                let status = serde_json::from_value::<Option<AgentStatus>>(view["status"].clone())?;
                Ok((status == Some(AgentStatus::Ready)).then_some(()))
            },
        )
        .await?;
    }
    Ok(())
}

/// `seconds` of 64 clients creating tasks beside 100 reading `/status`, the hive's processes sampled
/// every 100 ms meanwhile: both runs' results and the peak footprint.
async fn peak_under_load(
    hive: &HiveProcess,
    seconds: u32,
) -> anyhow::Result<(WrkResult, WrkResult, Footprint)> {
    let (post_url, read_url) = (
        format!("{}/api/v1/tasks", hive.base),
        format!("{}/status", hive.base),
    );
    let (post_token, read_token) = (hive.token.clone(), hive.token.clone());
    let posting = tokio::task::spawn_blocking(move || {
        crate::wrk::run(
            &post_token,
            &post_url,
            64,
            seconds,
            Some(crate::wrk::POST_TASK),
        )
    });
    let reading = tokio::task::spawn_blocking(move || {
        crate::wrk::run(&read_token, &read_url, 100, seconds, None)
    });
    let mut peak = Footprint::default();
    // Sampling, not synchronising: the loads end by themselves.
    while !(posting.is_finished() && reading.is_finished()) {
        let now = footprint_of(hive);
        if now.rss > peak.rss {
            peak.rss = now.rss;
            peak.processes = now.processes;
            peak.hive_rss = now.hive_rss;
        }
        peak.pss = peak.pss.max(now.pss);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((posting.await??, reading.await??, peak))
}
