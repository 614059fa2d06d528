//! Configuration in layers: defaults, then a TOML file (`--config`, else `$HIVE_HOME/hive.toml` if it
//! exists), then `HIVE_*` environment variables, then command-line flags. Secrets (database URLs with
//! passwords) are never printed: see [`Config::redacted`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Everything `hive` can be told.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Config {
    /// Where `hive up` keeps the servers it starts (`HIVE_HOME`).
    pub home: PathBuf,
    /// NATS server(s), comma-separated (`HIVE_NATS_URL`); unset: `hive up` starts nats-server.
    pub nats_url: Option<String>,
    /// PostgreSQL URL of the read models (`HIVE_DATABASE_URL`); unset: `hive up` starts PostgreSQL.
    pub database_url: Option<String>,
    /// PostgreSQL URL the API reads the read models with (`HIVE_API_DATABASE_URL`): a role that may
    /// only read, which `hive migrate` makes of this URL's user (a member of `hive_read`). Unset: the
    /// API uses `database_url`, except under a PostgreSQL that `hive up` started, where it makes
    /// `hive_api`.
    pub api_database_url: Option<String>,
    /// Whether the API's database is a replica of the projector's (`HIVE_API_DATABASE_REPLICA`): the API
    /// then follows the checkpoint the replica has replayed, not the projector's notices. Unset: asked
    /// of the database (a physical streaming replica is in recovery); set it for a logical replica.
    pub api_database_replica: Option<bool>,
    /// Where the API listens (`HIVE_HTTP_ADDR`).
    pub http_addr: SocketAddr,
    /// Preferred port of a nats-server started by `hive up` (`HIVE_NATS_PORT`; 0: any free port).
    pub nats_port: u16,
    /// Preferred port of a PostgreSQL started by `hive up` (`HIVE_PG_PORT`; 0: any free port).
    pub pg_port: u16,
    /// The names owned in NATS: stream `<NS>_EVENTS`, subjects `<ns>.events.>` (`HIVE_NAMESPACE`).
    pub namespace: String,
    /// Stream replicas (`HIVE_STREAM_REPLICAS`): 1 on one server, 3 on a cluster.
    pub stream_replicas: usize,
    /// How long JetStream drops a repeated `Idempotency-Key`, in seconds (`HIVE_DUPLICATE_WINDOW_SECS`).
    pub duplicate_window_secs: u64,
    /// How long a read waits for `Hive-Min-Seq`, in milliseconds (`HIVE_MIN_SEQ_TIMEOUT_MS`).
    pub min_seq_timeout_ms: u64,
    /// Most events the projector folds into one transaction (`HIVE_PROJECTOR_BATCH_MAX`).
    pub projector_batch_max: usize,
    /// How many times a command is decided after losing races on its aggregate before it answers 409
    /// `conflict` (`HIVE_COMMAND_ATTEMPTS`).
    pub command_attempts: usize,
    /// Projector lag, in events, above which `/health` says degraded (`HIVE_HEALTH_DEGRADED_LAG`).
    pub health_degraded_lag: u64,
    /// How long the checkpoint may stand still behind the log's head before `/health` says the
    /// projector is stalled (degraded), in seconds (`HIVE_HEALTH_STALL_SECS`).
    pub health_stall_secs: f64,
    /// Largest request body in bytes (`HIVE_BODY_LIMIT_BYTES`).
    pub body_limit_bytes: usize,
    /// Database connections per process (`HIVE_DB_POOL`).
    pub db_pool: u32,
    /// Requests the API works on at once; more are answered 503 `overloaded` at once
    /// (`HIVE_HTTP_MAX_IN_FLIGHT`). Streams, `/livez` and `/metrics` are not counted.
    pub http_max_in_flight: usize,
    /// Routes anyone may read without a token, comma-separated as routed, e.g. `/livez,/health,/metrics`
    /// (`HIVE_PUBLIC_READS`). Every other call needs a bearer token.
    pub public_reads: String,
    /// How long after its last heartbeat an agent is lost, in seconds (`HIVE_HEARTBEAT_TIMEOUT_SECS`).
    pub heartbeat_timeout_secs: f64,
    /// How long an agent has to accept an assignment, in seconds (`HIVE_ASSIGNMENT_LEASE_SECS`).
    pub assignment_lease_secs: f64,
    /// The first retry's back-off in seconds, doubled per attempt (`HIVE_RETRY_BASE_SECS`).
    pub retry_base_secs: f64,
    /// The longest retry back-off in seconds (`HIVE_RETRY_CAP_SECS`).
    pub retry_cap_secs: f64,
    /// How long the active scheduler's lease, and the active projector's, last unrenewed, in seconds
    /// (`HIVE_LEADER_TTL_SECS`): a standby takes over within about this.
    pub leader_ttl_secs: f64,
    /// The store directory of a nats-server on this host that does not fsync every write
    /// (`HIVE_NATS_STORE_DIR`): an append is answered only once a sync of that filesystem began after
    /// its acknowledgement, one sync for every group of writes (group commit). `hive up` sets it for
    /// the nats-server it starts. Unset: nats-server's own setting decides (`sync_interval: always`,
    /// or a replicated stream).
    pub nats_store_dir: Option<PathBuf>,
    /// The sync of `nats_store_dir` shared by every part in this process (made by `hive up`).
    #[serde(skip)]
    pub store_sync: Option<hive_eventlog::StoreSync>,
    /// The aggregates' states the command path decided on last, shared by every part of this
    /// process (the scheduler's assignment moves on the state the API's next command on the task
    /// decides on): [`hive_eventlog::recent`].
    #[serde(skip)]
    pub recent: hive_eventlog::Recent,
    /// How many events the active scheduler folds between two snapshots of its board, at least
    /// (`HIVE_SCHEDULER_SNAPSHOT_EVERY`; more when the board is larger, so a snapshot costs at most about
    /// one event's work per event folded): what a new leader folds beyond the last snapshot.
    pub scheduler_snapshot_every: u64,
    /// The executor of agents spawned without one, run under `sh -c` per task (`HIVE_AGENT_EXEC`).
    /// The default, `cat`, answers each task with the task itself.
    pub agent_exec: String,
    /// How often agent runtimes heartbeat, in seconds (`HIVE_AGENT_HEARTBEAT_SECS`).
    pub agent_heartbeat_secs: f64,
    /// How long a stopping agent runtime waits for its running tasks, in seconds
    /// (`HIVE_AGENT_DRAIN_TIMEOUT_SECS`).
    pub agent_drain_timeout_secs: f64,
    /// The program spawned agents run (its `agent` subcommand); unset: this `hive` binary
    /// (`HIVE_AGENT_PROGRAM`).
    pub agent_program: Option<PathBuf>,
    /// The log filter of spawned agents; unset: they inherit `HIVE_LOG` (`HIVE_AGENT_LOG_FILTER`).
    pub agent_log_filter: Option<String>,
    /// Crashes in a row after which a spawned agent is left stopped (`HIVE_SPAWN_MAX_RESTARTS`).
    pub spawn_max_restarts: u32,
    /// Where a process without the API (`hive serve projector|scheduler`) serves `GET /metrics`
    /// (`HIVE_METRICS_ADDR`); the API serves it on its own address.
    pub metrics_addr: Option<SocketAddr>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            home: PathBuf::from(".hive"),
            nats_url: None,
            database_url: None,
            api_database_url: None,
            api_database_replica: None,
            http_addr: "127.0.0.1:8080".parse().expect("a valid default address"),
            nats_port: 4222,
            pg_port: 5433,
            namespace: "hive".into(),
            stream_replicas: 1,
            duplicate_window_secs: 600,
            min_seq_timeout_ms: 2_000,
            command_attempts: 8,
            projector_batch_max: 2_000,
            health_degraded_lag: 10_000,
            health_stall_secs: 10.0,
            body_limit_bytes: 1024 * 1024,
            db_pool: 20,
            http_max_in_flight: 4_096,
            public_reads: "/livez,/health".into(),
            heartbeat_timeout_secs: 15.0,
            assignment_lease_secs: 30.0,
            retry_base_secs: 1.0,
            retry_cap_secs: 300.0,
            leader_ttl_secs: 5.0,
            nats_store_dir: None,
            store_sync: None,
            recent: hive_eventlog::Recent::default(),
            scheduler_snapshot_every: hive_scheduler::SNAPSHOT_EVERY,
            agent_exec: "cat".into(),
            agent_heartbeat_secs: 5.0,
            agent_drain_timeout_secs: 30.0,
            agent_program: None,
            agent_log_filter: None,
            spawn_max_restarts: 5,
            metrics_addr: None,
        }
    }
}

/// Values given as flags; only those given override the other layers.
#[derive(Clone, Debug, Default, Serialize, clap::Args)]
pub struct Overrides {
    /// A TOML file of settings (default: $HIVE_HOME/hive.toml when it exists).
    #[arg(long, global = true)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Where `hive up` keeps its servers' data [env: HIVE_HOME, default: ./.hive]
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub home: Option<PathBuf>,
    /// NATS URL(s), comma-separated [env: HIVE_NATS_URL]
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats_url: Option<String>,
    /// PostgreSQL URL [env: HIVE_DATABASE_URL]
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    /// Address the API listens on [env: HIVE_HTTP_ADDR, default: 127.0.0.1:8080]
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_addr: Option<SocketAddr>,
}

impl Config {
    /// The layered configuration.
    pub fn load(flags: &Overrides) -> Result<Self, Box<figment::Error>> {
        let env_home = std::env::var_os("HIVE_HOME").map(PathBuf::from);
        let home = flags
            .home
            .clone()
            .or(env_home)
            .unwrap_or_else(|| Self::default().home);
        let file = flags
            .config
            .clone()
            .unwrap_or_else(|| home.join("hive.toml"));
        Figment::from(Serialized::defaults(Self::default()))
            .merge(Toml::file(file))
            .merge(Env::prefixed("HIVE_").ignore(&["nats_server", "pg_bin", "log"]))
            .merge(Serialized::defaults(flags))
            .extract()
            .map_err(Box::new)
    }

    /// The event log's settings.
    pub fn log(&self) -> hive_eventlog::LogConfig {
        hive_eventlog::LogConfig {
            namespace: hive_eventlog::Namespace::new(&self.namespace),
            duplicate_window: Duration::from_secs(self.duplicate_window_secs),
            replicas: self.stream_replicas,
            command_attempts: self.command_attempts,
            ..Default::default()
        }
    }

    /// The API's settings.
    pub fn api(&self) -> hive_api::ApiConfig {
        hive_api::ApiConfig {
            min_seq_timeout: Duration::from_millis(self.min_seq_timeout_ms),
            degraded_lag: self.health_degraded_lag,
            stall: Duration::try_from_secs_f64(self.health_stall_secs)
                .unwrap_or(Duration::from_secs(10)),
            body_limit: self.body_limit_bytes,
            max_in_flight: self.http_max_in_flight,
            public_reads: self
                .public_reads
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect(),
            database_replica: self.api_database_replica,
            ..Default::default()
        }
    }

    /// The scheduler's settings.
    pub fn scheduler(&self) -> hive_scheduler::SchedulerConfig {
        let secs = Duration::from_secs_f64;
        hive_scheduler::SchedulerConfig {
            policy: hive_scheduler::Policy {
                assignment_lease: secs(self.assignment_lease_secs),
                heartbeat_timeout: secs(self.heartbeat_timeout_secs),
                retry_base: secs(self.retry_base_secs),
                retry_cap: secs(self.retry_cap_secs),
            },
            leader_ttl: secs(self.leader_ttl_secs),
            snapshot_every: self.scheduler_snapshot_every.max(1),
            ..Default::default()
        }
    }

    /// The projector's settings: it folds only while it holds its lease (standbys wait for it).
    pub fn projector(&self) -> hive_projector::ProjectorConfig {
        hive_projector::ProjectorConfig {
            batch_max: self.projector_batch_max.max(1),
            leader_ttl: Some(Duration::from_secs_f64(self.leader_ttl_secs)),
            ..Default::default()
        }
    }

    /// The spawner's settings, for an API reachable at `api_url`.
    pub fn spawner(&self, api_url: String) -> std::io::Result<hive_spawner::SpawnerConfig> {
        let drain_timeout = Duration::from_secs_f64(self.agent_drain_timeout_secs);
        Ok(hive_spawner::SpawnerConfig {
            program: match &self.agent_program {
                Some(program) => program.clone(),
                None => std::env::current_exe()?,
            },
            api_url,
            default_exec: self.agent_exec.clone(),
            heartbeat_interval: Duration::from_secs_f64(self.agent_heartbeat_secs),
            drain_timeout,
            max_restarts: self.spawn_max_restarts,
            stop_grace: drain_timeout + Duration::from_secs(5),
            log_filter: self.agent_log_filter.clone(),
        })
    }

    /// A URL (or comma-separated URLs) with its password replaced, for printing.
    pub fn redacted(url: &str) -> String {
        if url.contains(',') {
            return url
                .split(',')
                .map(Self::redacted)
                .collect::<Vec<_>>()
                .join(",");
        }
        match (url.find("://"), url.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                let userinfo = &url[scheme + 3..at];
                match userinfo.split_once(':') {
                    Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                    None => url.to_owned(),
                }
            }
            _ => url.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            Config::redacted("postgres://hive:s3cret@db:5432/hive"),
            "postgres://hive:***@db:5432/hive"
        );
        assert_eq!(
            Config::redacted("postgres://postgres@127.0.0.1/x"),
            "postgres://postgres@127.0.0.1/x"
        );
        assert_eq!(
            Config::redacted("nats://hive-api:a@n1:4222,nats://hive-api:a@n2:4222"),
            "nats://hive-api:***@n1:4222,nats://hive-api:***@n2:4222"
        );
    }

    #[test]
    fn flags_override_files_and_defaults() {
        let dir = std::env::temp_dir().join(format!("hive-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("hive.toml");
        std::fs::write(
            &file,
            "namespace = \"fromfile\"\nhttp_addr = \"127.0.0.1:9000\"\n",
        )
        .unwrap();
        let flags = Overrides {
            config: Some(file),
            http_addr: Some("127.0.0.1:9100".parse().unwrap()),
            ..Default::default()
        };
        let config = Config::load(&flags).unwrap();
        assert_eq!(config.namespace, "fromfile");
        assert_eq!(config.http_addr.port(), 9100);
        assert_eq!(config.min_seq_timeout_ms, 2_000);
    }
}
