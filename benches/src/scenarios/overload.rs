//! Overload: far more clients than the API works on at once.

use super::{Servers, memory_row, row, sequential_gets, wrk_row};
use crate::report::{Table, peak_rss_mib};

/// Many more clients than the machine has cores (2,000 by default): every request is answered, served
/// or shed at once with 503 `overloaded` when more than `HIVE_HTTP_MAX_IN_FLIGHT` are in the works,
/// none times out, and the API serves normally as soon as the load stops.
pub async fn overload(
    servers: &Servers,
    tasks: u64,
    clients: u32,
    seconds: u32,
) -> anyhow::Result<Vec<Table>> {
    let (hive, backends) = servers.hive("overload").await?;
    crate::load::load(&backends.log, tasks * 6).await?;
    let head = backends.log.last_seq().await?;
    let http = hive.http();
    hive.wait_projected(&http, head).await?;
    let mut rows = Vec::new();
    for path in ["/status", "/api/v1/tasks?status=queued"] {
        let r = crate::wrk::run(
            &hive.token,
            &format!("{}{path}", hive.base),
            clients,
            seconds,
            None,
        )?;
        rows.push(wrk_row(
            format!("GET {path}, {clients} clients"),
            &r,
            None,
            format!(", of which {} shed (503 overloaded)", r.non_2xx),
        ));
    }
    let mut after = sequential_gets(&http, "/status", 20).await?;
    rows.push(row(
        "GET /status once the load stops",
        None,
        None,
        Some(&mut after),
        "20 sequential requests, all 200",
    ));
    rows.push(memory_row("hive peak RSS", peak_rss_mib(Some(hive.pid()))));
    Ok(vec![Table {
        title: format!("overload ({clients} clients, {seconds} s per run)"),
        rows,
    }])
}
