//! Prometheus metrics: one recorder per process (the `metrics` facade, exported by
//! `metrics-exporter-prometheus`), fed by every part of Hive that runs in it: HTTP requests here,
//! commands and conflicts in the event log, batches and dead letters in the projector, queue depth and
//! assignment latency in the scheduler. `GET /metrics` adds gauges read at scrape time: agents and tasks
//! by status, projection lag, and the process's memory and CPU.

use std::sync::OnceLock;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::AppState;

/// Buckets of the latency histograms, in seconds: 0.1 ms to 10 s.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0,
];
/// Buckets of the projector's batch sizes.
const BATCH_BUCKETS: [f64; 9] = [1.0, 2.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 2000.0];
/// Buckets of the events a command's load folds (past its snapshot: at most 64 plus what came
/// meanwhile, unless a snapshot could not be used).
const LOAD_BUCKETS: [f64; 9] = [1.0, 4.0, 16.0, 32.0, 64.0, 128.0, 1000.0, 10000.0, 100000.0];

/// The process's recorder, installed on first use.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("hive_projector_batch_size".into()),
                    &BATCH_BUCKETS,
                )
            })
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("hive_command_load_events".into()),
                    &LOAD_BUCKETS,
                )
            })
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("hive_store_sync_writes".into()),
                    &BATCH_BUCKETS,
                )
            })
            .expect("valid buckets");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was installed already; /metrics shows only its own");
        }
        describe();
        // Histogram samples pile up in the recorder until they are folded into their buckets, which
        // rendering does; with nobody scraping, that was every request's sample kept forever (tens of
        // MB after a few million requests). Fold them a few times a minute whoever scrapes.
        let upkept = handle.clone();
        let spawned = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkept.run_upkeep();
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no metrics upkeep thread: histograms grow until scraped");
        }
        handle
    })
}

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "hive_http_shed_total",
        "Requests answered 503 overloaded: the API was working on its maximum already"
    );
    describe_gauge!(
        "hive_http_requests_in_flight",
        "Requests the API is working on (streams, /livez and /metrics not counted)"
    );
    describe_counter!(
        "hive_http_requests_total",
        "HTTP requests by route, method and status"
    );
    describe_histogram!(
        "hive_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request latency by route and method"
    );
    describe_counter!(
        "hive_api_reads_ahead_of_read_models_total",
        "reads of a task answered from the log: its row did not reflect its latest events yet"
    );
    describe_counter!(
        "hive_commands_appended_total",
        "commands appended to the log, by aggregate"
    );
    describe_histogram!(
        "hive_log_append_seconds",
        Unit::Seconds,
        "an append's publish to its acknowledgement by JetStream (stored, and fsynced when the server syncs every write; the hive's own sync of the store is hive_store_sync_seconds)"
    );
    describe_histogram!(
        "hive_store_sync_seconds",
        Unit::Seconds,
        "one sync of a nats-server's store by this process (group commit: HIVE_NATS_STORE_DIR, hive up's own nats-server)"
    );
    describe_histogram!(
        "hive_store_sync_writes",
        "the waits one sync of the store answered: how many writes shared it"
    );
    describe_counter!(
        "hive_append_conflicts_total",
        "appends that lost an optimistic-concurrency race, by aggregate"
    );
    describe_counter!(
        "hive_command_states_total",
        "states commands were decided on, by aggregate and where from: kept (the state the last command on it left), log (its history read), caller (a state the caller folded: the scheduler's)"
    );
    describe_histogram!(
        "hive_command_load_events",
        "events a command's load folded: those past the aggregate's snapshot, or its whole history"
    );
    describe_counter!(
        "hive_snapshot_loads_total",
        "loads that started from an aggregate's snapshot, by aggregate"
    );
    describe_counter!(
        "hive_snapshots_ignored_total",
        "stored snapshots not used (the aggregate folded from its first event), by aggregate and reason"
    );
    describe_counter!(
        "hive_snapshots_saved_total",
        "aggregates' snapshots saved, by aggregate"
    );
    describe_counter!(
        "hive_snapshots_unsaved_total",
        "snapshots not saved, by aggregate and reason (too_large, raced, failed)"
    );
    describe_histogram!(
        "hive_projector_batch_size",
        "events per projector transaction"
    );
    describe_counter!(
        "hive_projector_events_total",
        "events applied to the read models"
    );
    describe_counter!("hive_dead_letters_total", "events sent to dead letters");
    describe_gauge!(
        "hive_projector_checkpoint",
        "the projector's committed sequence"
    );
    describe_gauge!(
        "hive_projector_leading",
        "1 while this projector holds the lease and folds, 0 while it stands by"
    );
    describe_counter!(
        "hive_projector_checkpoint_conflicts_total",
        "batches refused because another projector had moved the checkpoint"
    );
    describe_gauge!(
        "hive_scheduler_leading",
        "1 while this scheduler holds the lease and schedules, 0 while it stands by"
    );
    describe_gauge!(
        "hive_projection_lag_events",
        "events the read models are behind the log"
    );
    describe_gauge!("hive_log_last_seq", "the log's last sequence");
    describe_gauge!(
        "hive_scheduler_queue_depth",
        "queued tasks on the active scheduler's board"
    );
    describe_histogram!(
        "hive_scheduler_assignment_latency_seconds",
        Unit::Seconds,
        "time from a task becoming queued to its assignment"
    );
    describe_counter!("hive_scheduler_assignments_total", "assignments made");
    describe_gauge!("hive_agents", "agents by status");
    describe_gauge!("hive_tasks", "tasks by status");
    // Counters exist from the start (at zero), so dashboards and alerts see them before the first event.
    for aggregate in ["agent", "task", "project"] {
        metrics::counter!("hive_commands_appended_total", "aggregate" => aggregate).increment(0);
        metrics::counter!("hive_append_conflicts_total", "aggregate" => aggregate).increment(0);
        metrics::counter!("hive_snapshot_loads_total", "aggregate" => aggregate).increment(0);
        metrics::counter!("hive_snapshots_saved_total", "aggregate" => aggregate).increment(0);
    }
    metrics::counter!("hive_dead_letters_total").increment(0);
    metrics::counter!("hive_http_shed_total").increment(0);
    metrics::gauge!("hive_http_requests_in_flight").increment(0.0);
    metrics::counter!("hive_projector_events_total").increment(0);
    metrics::counter!("hive_scheduler_assignments_total").increment(0);
}

/// Records every request: count by route, method and status; latency by route and method.
pub async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let began = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("hive_http_requests_total", "route" => route.clone(), "method" => method.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("hive_http_request_duration_seconds", "route" => route, "method" => method)
        .record(began.elapsed().as_secs_f64());
    response
}

/// `GET /metrics` for the API.
pub(crate) fn routes() -> utoipa_axum::router::OpenApiRouter<AppState> {
    utoipa_axum::router::OpenApiRouter::new().routes(utoipa_axum::routes!(scrape))
}

#[utoipa::path(get, path = "/metrics", tag = "system", summary = "Prometheus metrics (text format)", responses((status = 200, description = "The Prometheus text exposition format, version 0.0.4", body = String, content_type = "text/plain")))]
async fn scrape(State(state): State<AppState>) -> Response {
    let checkpoint = state.progress.checkpoint();
    let head = state.progress.head();
    metrics::gauge!("hive_projection_lag_events").set(head.saturating_sub(checkpoint) as f64);
    metrics::gauge!("hive_log_last_seq").set(head as f64);
    metrics::gauge!("hive_http_requests_in_flight").set(crate::overload::in_flight(&state) as f64);
    if let Ok(status) = crate::routes::system::status_body(&state).await {
        for (counts, name) in [(status.agents, "hive_agents"), (status.tasks, "hive_tasks")] {
            for (status, count) in counts.by_status {
                metrics::gauge!(name, "status" => status).set(count as f64);
            }
        }
    }
    render()
}

/// The exposition, with the process's own metrics brought up to date.
pub fn render() -> Response {
    let handle = handle();
    metrics_process::Collector::default().collect();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response()
}

/// A router with `GET /metrics` only, for a process that runs no API (a projector or a scheduler on its
/// own).
pub fn standalone() -> Router {
    handle();
    metrics_process::Collector::default().describe();
    Router::new().route("/metrics", get(|| async { render() }))
}
