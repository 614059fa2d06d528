//! Dashboard: its reads on a big hive.

use hive_client::Method;
use std::time::Duration;

use super::{Servers, memory_row, row, sequential_gets};
use crate::hive_process::HiveProcess;
use crate::report::Table;
use crate::wait::eventually;

/// The dashboard's reads at scale: a hive with `tasks` tasks (their whole lives) and `agents` agents;
/// the time of the page's starting JSON, of a page of agents, and of the queue's first page.
pub async fn dashboard(servers: &Servers, tasks: u64, agents: u64) -> anyhow::Result<Vec<Table>> {
    let (hive, backends) = servers.hive("dashboard").await?;
    crate::load::load_with_agents(&backends.log, tasks * 6, agents).await?;
    let http = hive.http();
    hive.wait_projected(&http, backends.log.last_seq().await?)
        .await?;
    heartbeat_every_agent(&hive, &http, &backends).await?;
    // The scheduler marks them ready.
    eventually(
        Duration::from_secs(60),
        Duration::from_millis(100),
        "every agent ready",
        async || {
            let status: serde_json::Value = http
                .request(Method::GET, "/status")
                .send()
                .await?
                .json()
                .await?;
            Ok((status["agents"]["by_status"]["ready"].as_u64() >= Some(agents)).then_some(()))
        },
    )
    .await?;
    let head = backends.log.last_seq().await?;
    hive.wait_projected(&http, head).await?;
    let mut rows = Vec::new();
    for (what, path) in [
        (
            "GET /dashboard/coordination (the page's start)",
            "/dashboard/coordination".to_owned(),
        ),
        (
            "GET /api/v1/agents?limit=100 (a page of agents)",
            "/api/v1/agents?limit=100".to_owned(),
        ),
        (
            "GET /api/v1/tasks?status=completed&limit=50",
            "/api/v1/tasks?status=completed&limit=50".to_owned(),
        ),
        ("GET /dashboard (the page)", "/dashboard".to_owned()),
    ] {
        let mut latencies = sequential_gets(&http, &format!("{}{path}", hive.base), 50).await?;
        rows.push(row(
            what,
            None,
            None,
            Some(&mut latencies),
            "50 sequential requests",
        ));
    }
    rows.extend(crate::screen::page_at_scale(&hive, tasks, agents).await?);
    rows.push(memory_row(
        "hive RSS",
        crate::hive_process::rss_mib(hive.pid()),
    ));
    Ok(vec![Table {
        title: format!("dashboard at scale ({tasks} tasks, {agents} agents, {head} events)"),
        rows,
    }])
}

/// Every agent of the hive heartbeats once (the page shows each one's last heartbeat), page by page.
async fn heartbeat_every_agent(
    hive: &HiveProcess,
    http: &hive_client::Client,
    backends: &hive::Backends,
) -> anyhow::Result<()> {
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{}/api/v1/agents?limit=500", hive.base);
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: serde_json::Value = http.request(Method::GET, &url).send().await?.json().await?;
        for agent in page["items"].as_array().into_iter().flatten() {
            if let Some(id) = agent["agent_id"].as_str().and_then(|a| a.parse().ok()) {
                backends.heartbeats.beat(id, chrono::Utc::now()).await?;
            }
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return Ok(()),
        }
    }
}
