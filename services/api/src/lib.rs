//! Hive's HTTP API (axum, JSON).
//!
//! Commands (`POST`) go through the event log's command path ([`hive_eventlog::command`]) and answer with
//! the appended event's `seq`; reads (`GET`) come from the Postgres read models, honour `Hive-Min-Seq`
//! and say which checkpoint they reflect ([`consistency`]). Every error is the JSON of [`error`]'s code
//! table; bad input is a 4xx, never a 500. Routes live in [`routes`], one module per resource.

pub mod auth;
pub mod consistency;
pub mod error;
pub mod extract;
pub mod feed;
pub mod metrics;
pub mod openapi;
pub mod overload;
pub mod routes;
pub mod search;
pub mod views;
pub mod waiting;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use hive_eventlog::EventLog;
use sea_orm::DatabaseConnection;
use tokio::net::TcpListener;

pub use consistency::Progress;

/// How the API behaves.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// How long a read waits for `Hive-Min-Seq` before answering 503.
    pub min_seq_timeout: Duration,
    /// Largest request body, in bytes.
    pub body_limit: usize,
    /// The projection the reads come from.
    pub projection: String,
    /// How often the checkpoint and log head are refreshed when no notice arrives.
    pub refresh: Duration,
    /// Projector lag (events) above which `/health` says degraded.
    pub degraded_lag: u64,
    /// How long the checkpoint may stand still behind the log's head before `/health` says the
    /// projector is stalled (degraded): a projector that died leaves a small lag that never shrinks.
    pub stall: Duration,
    /// Requests worked on at once before the rest are shed ([`overload`]).
    pub max_in_flight: usize,
    /// Routes (as routed, e.g. `/status`) anyone may read without a token ([`auth`]).
    pub public_reads: Vec<String>,
    /// Whether the database is a replica of the projector's, whose own checkpoint `Hive-Min-Seq` must
    /// wait for ([`consistency`]); `None`: asked of the database (a physical standby is in recovery).
    pub database_replica: Option<bool>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            min_seq_timeout: Duration::from_secs(2),
            body_limit: 1024 * 1024,
            projection: "read_models".into(),
            refresh: Duration::from_millis(500),
            degraded_lag: 10_000,
            stall: Duration::from_secs(10),
            max_in_flight: 4_096,
            public_reads: vec!["/livez".into(), "/health".into()],
            database_replica: None,
        }
    }
}

/// What every handler shares: one reference to it, cloned for every request and every layer that
/// takes the state (a clone of each field was a tenth of the API's CPU under commands: an atomic
/// increment and decrement per shared field, a dozen times a request).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The state itself ([`AppState`]).
#[derive(Clone)]
pub struct Shared {
    /// The read-model database.
    pub db: DatabaseConnection,
    /// The event log.
    pub log: EventLog,
    /// Agents' heartbeats.
    pub heartbeats: hive_eventlog::Heartbeats,
    /// The projection's checkpoint and the log's head.
    pub progress: Progress,
    /// Settings.
    pub config: Arc<ApiConfig>,
    /// Set when the server begins to shut down, so that endless streams end.
    pub closing: Arc<tokio::sync::watch::Sender<bool>>,
    /// Events as the read models commit them, for the live stream and the dashboard.
    pub feed: feed::Feed,
    /// Starts spawned agents' runtimes; absent, `POST /api/v1/agents/spawn` answers 503.
    pub spawner: Option<hive_spawner::Spawner>,
    /// `/status` computed at a checkpoint, reused until the checkpoint moves.
    pub status_cache: Arc<tokio::sync::Mutex<Option<(u64, routes::system::CountsByKind)>>>,
    /// `/status`'s answer, serialized, with the checkpoint and the log's head it was made at: reads
    /// ask for it far more often than either moves.
    pub status_answer: Arc<std::sync::Mutex<Option<(u64, u64, axum::body::Bytes)>>>,
    /// The ready agents at the last checkpoint a task's waiting reason was read at ([`waiting`]).
    pub ready_agents: Arc<waiting::ReadyAgents>,
    /// Slots of the requests being worked on ([`overload`]).
    pub in_flight: Arc<tokio::sync::Semaphore>,
    /// Who may call, as what ([`auth`]).
    pub grants: auth::Grants,
}

impl AppState {
    /// State for an API over `db` and `log`, following the configured projection.
    pub async fn new(
        db: DatabaseConnection,
        log: EventLog,
        heartbeats: hive_eventlog::Heartbeats,
        tokens: hive_eventlog::Tokens,
        config: ApiConfig,
    ) -> Result<Self, error::ApiError> {
        let progress = Progress::follow(
            db.clone(),
            log.clone(),
            &config.projection,
            config.refresh,
            config.database_replica,
        )
        .await?;
        let feed = feed::Feed::start(log.clone(), progress.clone(), heartbeats.clone()).await?;
        let in_flight = Arc::new(tokio::sync::Semaphore::new(config.max_in_flight.max(1)));
        let grants = auth::Grants::follow(tokens);
        Ok(Self(Arc::new(Shared {
            grants,
            feed,
            db,
            log,
            heartbeats,
            progress,
            config: Arc::new(config),
            spawner: None,
            status_cache: Arc::default(),
            status_answer: Arc::default(),
            ready_agents: Arc::default(),
            in_flight,
            closing: Arc::new(tokio::sync::watch::Sender::new(false)),
        })))
    }

    /// The same state, spawning agents with `spawner`.
    pub fn with_spawner(self, spawner: hive_spawner::Spawner) -> Self {
        let mut shared = Arc::unwrap_or_clone(self.0);
        shared.spawner = Some(spawner);
        Self(Arc::new(shared))
    }
}

/// The API's routes.
pub fn router(state: AppState) -> Router {
    let limit = state.config.body_limit;
    metrics::handle();
    metrics_process::Collector::default().describe();
    routes::all(&state.config.public_reads)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            consistency::read_your_writes,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authorize,
        ))
        .route_layer(axum::middleware::from_fn(metrics::track))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            overload::shed,
        ))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            routes::system::panic_answer,
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http().make_span_with(request_span))
        .with_state(state)
}

/// The span of one HTTP request: its method and path, and the flow a command joins (recorded by the
/// [`extract::Command`] extractor: the caller's `X-Correlation-Id`, or a new one).
fn request_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        correlation_id = tracing::field::Empty,
    )
}

/// Serves the API on `listener` until `shutdown` resolves, then stops the agents it spawned (they drain
/// and deregister through it, so it still serves meanwhile), ends endless streams and finishes the
/// requests in flight.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let closing = state.closing.clone();
    let spawner = state.spawner.clone();
    let signal = async move {
        shutdown.await;
        if let Some(spawner) = spawner {
            spawner.shutdown().await;
        }
        closing.send_replace(true);
    };
    // Routes made once and shared by every connection: axum's default makes every connection rebuild
    // the whole route table with its boxed services (about 45 KB a connection, 23 MB at 500 clients).
    let routes = router(state).with_state(());
    axum::serve(listener, tower::make::Shared::new(routes))
        .with_graceful_shutdown(signal)
        .await
}
