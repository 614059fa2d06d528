//! Query: reads under load beside the trivial handler of the same server.

use super::{Servers, beside_trivial, memory_row};
use crate::report::{Table, peak_rss_mib};
use hive_client::Method;

/// Reads under load at 10, 50, 100 and 500 clients (wrk), beside the trivial handler of the same
/// server; the hive's memory idle and under the load.
pub async fn query(
    servers: &Servers,
    tasks: u64,
    seconds: u32,
    levels: &[u32],
) -> anyhow::Result<Vec<Table>> {
    let (hive, backends) = servers.hive("query").await?;
    let idle = crate::hive_process::rss_mib(hive.pid());
    // Data: a log of about `tasks` tasks' lives, projected by the hive.
    crate::load::load(&backends.log, tasks * 6).await?;
    let head = backends.log.last_seq().await?;
    let http = hive.http();
    hive.wait_projected(&http, head).await?;
    let projected = crate::hive_process::rss_mib(hive.pid());
    let one: serde_json::Value = http
        .request(Method::GET, "/api/v1/tasks?limit=1")
        .send()
        .await?
        .json()
        .await?;
    let task = one["items"][0]["task_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let paths = [
        ("/status".to_owned(), "/status".to_owned()),
        (
            format!("/api/v1/tasks/{task}"),
            "/api/v1/tasks/{id}".to_owned(),
        ),
        (
            "/api/v1/tasks?status=queued".to_owned(),
            "/api/v1/tasks?status=queued".to_owned(),
        ),
    ];
    let mut rows = Vec::new();
    for &clients in levels {
        rows.extend(beside_trivial(&hive, clients, seconds, &paths, "")?);
    }
    let after = crate::hive_process::rss_mib(hive.pid());
    for (what, mib) in [
        ("hive RSS idle (all parts in one process)", idle),
        ("hive RSS after projecting the data", projected),
        ("hive RSS after the reads", after),
        ("hive peak RSS", peak_rss_mib(Some(hive.pid()))),
    ] {
        rows.push(memory_row(what, mib));
    }
    Ok(vec![Table {
        title: format!("query ({head} events, {seconds} s per run)"),
        rows,
    }])
}
