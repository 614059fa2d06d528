//! Search: a filtered page of the task list (`GET /api/v1/tasks` with labels, type, capability, a
//! creation window, text in the title) at a given number of tasks, beside the trivial handler of the
//! same server. The tasks are written straight into the read model (one `INSERT … SELECT` over
//! `generate_series`): what is measured is the query path, and a million tasks' lives through the
//! log would take the run's whole budget to project.

use sea_orm::ConnectionTrait;

use super::{Servers, beside_trivial, memory_row};
use crate::report::{Table, peak_rss_mib};

/// Clients of each run.
const CLIENTS: [u32; 2] = [1, 10];

/// Writes `tasks` tasks into the read model: one in 50 teams (`label team:tN`), envs `prod`,
/// `staging`, `dev` (`label env:…`; a fifth of the tasks have no labels), four task types, one of 20
/// required capabilities, one created a second after another (its id a UUIDv7 of that time, as the
/// API's are), titles of a verb and a hex word.
async fn fill(db: &sea_orm::DatabaseConnection, tasks: u64) -> anyhow::Result<()> {
    db.execute_unprepared(&format!(
        "INSERT INTO tasks (id, title, task_type, priority, required_capabilities, depends_on,
                            max_attempts, attempts, status, last_error_retryable, created_at,
                            updated_at, last_seq, labels)
         SELECT (substr(ms, 1, 8) || '-' || substr(ms, 9, 4) || '-7000-8000-'
                   || lpad(to_hex(g), 12, '0'))::uuid,
                (ARRAY['build', 'deploy', 'review', 'test', 'refactor'])[g % 5 + 1] || ' '
                  || md5(g::text),
                (ARRAY['code', 'review', 'deploy', 'test'])[g % 4 + 1],
                5, ARRAY['cap' || (g % 20)], '{{}}', 3, 1, 'completed', false,
                timestamptz '2026-01-01' + g * interval '1 second',
                timestamptz '2026-01-01' + g * interval '1 second', g,
                CASE WHEN g % 5 = 0 THEN '{{}}'::jsonb
                     ELSE jsonb_build_object('team', 't' || (g % 50),
                                             'env', (ARRAY['prod', 'staging', 'dev'])[g % 3 + 1])
                END
         FROM generate_series(1, {tasks}) AS g,
              -- A UUIDv7 of the creation's millisecond, as the API makes them.
              LATERAL (SELECT lpad(to_hex((extract(epoch FROM timestamptz '2026-01-01'
                                   + g * interval '1 second') * 1000)::bigint), 12, '0') AS ms) AS t;
         ANALYZE tasks;"
    ))
    .await?;
    Ok(())
}

/// A filtered page of the task list at `tasks` tasks, `seconds` per run, beside `/livez`.
pub async fn search(servers: &Servers, tasks: u64, seconds: u32) -> anyhow::Result<Vec<Table>> {
    let (hive, backends) = servers.hive("search").await?;
    fill(&backends.db, tasks).await?;
    // A title word that one task in a million has (the md5 of the middle task's number).
    let rare: String = {
        let row = backends
            .db
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                format!("SELECT substr(md5(({tasks} / 2)::text), 1, 8) AS word"),
            ))
            .await?
            .ok_or_else(|| anyhow::anyhow!("no word"))?;
        row.try_get("", "word")?
    };
    // A window of an hour in the middle.
    let from = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")?
        + chrono::Duration::seconds(i64::try_from(tasks / 2)?);
    let to = from + chrono::Duration::hours(1);
    let window = format!(
        "created_after={}&created_before={}",
        from.format("%Y-%m-%dT%H:%M:%SZ"),
        to.format("%Y-%m-%dT%H:%M:%SZ")
    );
    let queries = [
        "label=team:t7".to_owned(),
        "label=team:t7&label=env:prod".to_owned(),
        "task_type=review&capability=cap3".to_owned(),
        window,
        format!("q={rare}"),
        "q=refactor".to_owned(),
        "label=team:t7&q=deploy&order=desc".to_owned(),
    ];
    let paths: Vec<(String, String)> = queries
        .iter()
        .map(|q| (format!("/api/v1/tasks?{q}"), format!("/api/v1/tasks?{q}")))
        .collect();
    let mut rows = Vec::new();
    // One client: a page's own time; ten: two cores shared by ten clients, the API and PostgreSQL.
    for clients in CLIENTS {
        rows.extend(beside_trivial(
            &hive,
            clients,
            seconds,
            &paths,
            ", a page of 50",
        )?);
    }
    rows.push(memory_row("hive peak RSS", peak_rss_mib(Some(hive.pid()))));
    Ok(vec![Table {
        title: format!("search ({tasks} tasks in the read model, {seconds} s per run)"),
        rows,
    }])
}
