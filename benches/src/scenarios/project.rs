//! Project: events per second into the read models, beside plain multi-row inserts of as many rows.

use std::time::{Duration, Instant};

use hive::Backends;
use hive_projector::{Projector, ProjectorConfig};
use hive_schema::tasks;
use sea_orm::{ActiveModelTrait, ConnectionTrait, EntityTrait, IntoActiveModel, TransactionTrait};

use super::{Servers, rate, row, unique};
use crate::report::{Latencies, Table};

/// Runs the projector from an empty database until it has applied event `head`: the time it took and
/// each batch's time (from the previous checkpoint to the next).
pub(super) async fn project_backlog(
    backends: &Backends,
    head: u64,
) -> anyhow::Result<(Duration, Latencies)> {
    // Its own pool, as the hive opens it (its connections' settings).
    let projector = Projector::new(
        hive::open_projector_database(&backends.database_url).await?,
        backends.log.clone(),
        ProjectorConfig {
            rebuild_when_empty: false,
            ..ProjectorConfig::default()
        },
    );
    let mut checkpoint = projector.checkpoint();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let began = Instant::now();
    let running = tokio::spawn(projector.run(async move {
        let _ = stopped.await;
    }));
    let mut batches = Latencies::default();
    while *checkpoint.borrow_and_update() < head {
        // Each batch: from the previous checkpoint to the next.
        batches.measure(checkpoint.changed()).await?;
    }
    let elapsed = began.elapsed();
    let _ = stop.send(());
    running.await??;
    Ok((elapsed, batches))
}

/// Events per second into the read models: the projector on a backlog, batch by batch (each batch one
/// transaction: read the rows it touches, upsert them, the status counts, the checkpoint), beside the
/// raw limit of writing as many rows of the same shape with plain multi-row inserts, in transactions of
/// the projector's largest batch.
pub async fn project(servers: &Servers, events: u64) -> anyhow::Result<Vec<Table>> {
    let namespace = unique("project");
    let backends = servers.backends(&namespace).await?;
    crate::load::load(&backends.log, events).await?;
    let head = backends.log.last_seq().await?;
    let (elapsed, mut batches) = project_backlog(&backends, head).await?;
    let projected = rate(head, elapsed);
    let per_transaction = ProjectorConfig::default().batch_max;
    let (raw, written, mut transactions) =
        raw_inserts(servers, &namespace, &backends, head, per_transaction).await?;
    Ok(vec![Table {
        title: format!("project ({head} events)"),
        rows: vec![
            row(
                format!("raw multi-row inserts ({per_transaction} rows a transaction)"),
                Some(raw),
                None,
                Some(&mut transactions),
                format!("{written} task rows; latency per transaction"),
            ),
            row(
                "projector on a backlog (events into the read models)",
                Some(projected),
                Some(raw),
                Some(&mut batches),
                format!(
                    "{:.1} s; latency per batch (up to {per_transaction} events)",
                    elapsed.as_secs_f64()
                ),
            ),
        ],
    }])
}

/// The raw limit: `head` task rows, as the projector wrote them, inserted into a copy of the table,
/// `per_transaction` rows a transaction. Answers the rate, the rows written and each transaction's
/// latency.
async fn raw_inserts(
    servers: &Servers,
    namespace: &str,
    backends: &Backends,
    head: u64,
    per_transaction: usize,
) -> anyhow::Result<(f64, u64, Latencies)> {
    let rows: Vec<tasks::Model> = tasks::Entity::find().all(&backends.db).await?;
    anyhow::ensure!(!rows.is_empty(), "the projection wrote no task");
    backends
        .db
        .execute_unprepared(
            "DROP SCHEMA IF EXISTS raw_limit CASCADE; CREATE SCHEMA raw_limit; \
             CREATE TABLE raw_limit.tasks (LIKE public.tasks INCLUDING ALL)",
        )
        .await?;
    let mut options = sea_orm::ConnectOptions::new(servers.database(namespace));
    options
        .max_connections(1)
        .set_schema_search_path("raw_limit")
        .sqlx_logging(false);
    let raw_db = sea_orm::Database::connect(options).await?;
    let per_statement = 1_000;
    let mut transactions = Latencies::default();
    let mut written = 0u64;
    let mut source = rows.iter().cycle();
    let began = Instant::now();
    while written < head {
        let n = per_transaction.min((head - written) as usize);
        let batch: Vec<tasks::Model> = source
            .by_ref()
            .take(n)
            .map(|row| tasks::Model {
                id: uuid::Uuid::now_v7(),
                ..row.clone()
            })
            .collect();
        transactions
            .measure(async {
                let txn = raw_db.begin().await?;
                for chunk in batch.chunks(per_statement) {
                    tasks::Entity::insert_many(
                        chunk
                            .iter()
                            .map(|row| row.clone().into_active_model().reset_all()),
                    )
                    .exec_without_returning(&txn)
                    .await?;
                }
                txn.commit().await?;
                anyhow::Ok(())
            })
            .await?;
        written += n as u64;
    }
    let raw = rate(written, began.elapsed());
    raw_db.close().await?;
    backends
        .db
        .execute_unprepared("DROP SCHEMA raw_limit CASCADE")
        .await?;
    Ok((raw, written, transactions))
}
