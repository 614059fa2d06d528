//! The `hive` command line: a thin front over the library. `main.rs` only calls [`main`], so that the
//! tests build the very same program.
//!
//! Long because it is the whole command-line surface (clap's types are its `--help`); the work is in
//! `ops`, `up` and the service crates.

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use uuid::Uuid;

use crate::config::{Config, Overrides};
use crate::{Parts, connect, run};

/// Hive: a control plane for fleets of autonomous agents, event-sourced on NATS JetStream with
/// PostgreSQL read models.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    overrides: Overrides,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole hive in one process (API, projector and scheduler). For HIVE_NATS_URL or HIVE_DATABASE_URL
    /// left unset, start nats-server or PostgreSQL under $HIVE_HOME and stop it on exit.
    Up,
    /// Run one part against configured servers (HIVE_NATS_URL, HIVE_DATABASE_URL).
    Serve {
        /// Which part.
        part: Part,
    },
    /// Create the read-model database if missing and bring its schema up to date; with `HIVE_NATS_URL`,
    /// also create the event stream and its buckets (or bring their settings up to date), so that
    /// services started next find them. Safe on a running system: migrations only add.
    Migrate,
    /// Run an agent: register (or attach to --agent-id), heartbeat, take pushed assignments and run the
    /// executor once per task with the task's JSON on stdin. SIGTERM drains it, then deregisters it.
    /// With a subcommand instead: list, show, drain or deregister the hive's agents through its API.
    #[command(args_conflicts_with_subcommands = true)]
    Agent {
        #[command(subcommand)]
        command: Option<crate::operator::AgentCommand>,
        #[command(flatten)]
        run: AgentArgs,
    },
    /// Tasks through the hive's API: list, show (and watch), create, cancel, retry, requeue. The token
    /// is HIVE_TOKEN (a viewer's reads, an operator's commands), or $HIVE_HOME/admin.token.
    Task {
        #[command(subcommand)]
        command: crate::operator::TaskCommand,
    },
    /// Events the projector could not fold, through the hive's API: list them, or retry one (fold its
    /// aggregate again, after an upcaster fix, say).
    DeadLetters {
        #[command(subcommand)]
        command: crate::operator::DeadLettersCommand,
    },
    /// Rebuild the read models from the log, or see where each projection stands.
    Projections {
        #[command(subcommand)]
        command: ProjectionsCommand,
    },
    /// Fold the whole log in memory and compare it with the read models, row by row and field by
    /// field; print each difference and exit non-zero on any.
    Verify,
    /// Back up the event log and the tokens bucket into DIR (a new or empty directory): every event up
    /// to the log's last when the backup begins, with its sequence, subject, headers and bytes, and a
    /// manifest.json with each file's SHA-256. Safe on a live hive: it only reads, and writes go on
    /// meanwhile (those appended after it began are left for the next backup). Needs the admin's
    /// HIVE_NATS_URL (or a running `hive up` in HIVE_HOME).
    Backup {
        /// Where to write it.
        dir: std::path::PathBuf,
    },
    /// Restore a backup into an empty event stream (HIVE_NAMESPACE's, with HIVE_STREAM_REPLICAS
    /// replicas), each event at its own sequence, and its tokens; then rebuild the read models from
    /// it. A backup whose files do not match its manifest's checksums is refused. Runs on the servers
    /// `hive up` would use: the configured ones, or those under HIVE_HOME, started for the restore.
    /// NOT safe on a live hive: stop every service on the namespace first (refused beside a running
    /// `hive up`).
    Restore {
        /// The backup's directory.
        dir: std::path::PathBuf,
        /// Restore even if the stream holds events: delete the stream (every event in it, for good)
        /// and the tokens bucket first. Without it, a stream that is not empty is left untouched.
        #[arg(long)]
        force: bool,
    },
    /// API tokens: issue one (shown once), list them, revoke one. Needs HIVE_NATS_URL (or a running
    /// `hive up` in HIVE_HOME).
    Tokens {
        #[command(subcommand)]
        command: TokensCommand,
    },
    /// Print the nats-server configuration of Hive's users: one per service (api, projector,
    /// scheduler, admin), each allowed only the subjects it needs; only the API and the scheduler may
    /// publish events. Each password is read from $HIVE_NATS_<SERVICE>_PASSWORD when the server
    /// starts. Services connect as theirs with HIVE_NATS_URL=nats://hive-<service>:<password>@host.
    NatsUsers,
    /// The log for auditors: an entity's history, an agent's work, a stretch of the log, one flow, or
    /// an entity as it was at a sequence or a time. Reads the log itself (admin NATS credentials), or a
    /// hive's API with `--api` and a viewer token. An agent's work finds the agent's tasks in the read
    /// models' index of them (HIVE_DATABASE_URL), and reads the log's task events only where the index
    /// does not reach; without the database, in the whole log (slower). Safe on a live hive: it only
    /// reads.
    Audit {
        #[command(subcommand)]
        query: AuditCommand,
        /// JSON lines instead of a table (`state`: one compact JSON line instead of pretty JSON).
        #[arg(long, global = true)]
        json: bool,
        /// Read through this hive's API (e.g. http://127.0.0.1:8080) instead of the log itself; the
        /// token is HIVE_TOKEN (a viewer's will do), or $HIVE_HOME/admin.token.
        #[arg(long, global = true, env = "HIVE_API_URL")]
        api: Option<String>,
    },
}

#[derive(Subcommand)]
enum TokensCommand {
    /// Issue a token and print it (it is shown only now).
    Issue {
        /// admin, operator or viewer.
        #[arg(long)]
        role: hive_eventlog::Role,
        /// Who holds it.
        #[arg(long)]
        name: String,
    },
    /// Every token's id, role, holder and time of issue (never the tokens).
    List,
    /// Revoke a token by its id.
    Revoke {
        /// The token's id (from `list`).
        id: String,
    },
}

#[derive(Subcommand)]
enum ProjectionsCommand {
    /// Rebuild projections from the log's first event into shadow tables, then swap them in.
    ///
    /// Safe on a running system: the live read models keep serving, and the live projector keeps
    /// projecting, until the swap, one short transaction during which reads wait (none fails). The
    /// events appended meanwhile are caught up before the swap. One rebuild runs at a time.
    Rebuild {
        /// Every projection.
        #[arg(long)]
        all: bool,
        /// The projection to rebuild (`read_models`).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        name: Option<String>,
    },
    /// Each projection's checkpoint, the log's head, the lag and the dead-letter count.
    Status {
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
        /// Ask this hive's API (e.g. http://127.0.0.1:8080) instead of its database and log; the
        /// token is HIVE_TOKEN (a viewer's will do), or $HIVE_HOME/admin.token.
        #[arg(long, env = "HIVE_API_URL")]
        api: Option<String>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// An agent's history and that of every task it was ever assigned, in log order.
    Agent {
        /// The agent.
        id: Uuid,
    },
    /// A task's history.
    Task {
        /// The task.
        id: Uuid,
    },
    /// A project's history.
    Project {
        /// The project.
        id: Uuid,
    },
    /// One flow: the command a client sent and everything it caused (the scheduler's decisions, the
    /// agent's reports), in log order, each with its causation.
    Correlation {
        /// The flow's correlation id (the `X-Correlation-Id` a client sent, or an event's).
        id: Uuid,
    },
    /// The whole log, or the stretch between two points (sequences or RFC 3339 times, both included).
    Log {
        /// From this sequence or time.
        #[arg(long)]
        from: Option<String>,
        /// Up to this sequence or time.
        #[arg(long)]
        to: Option<String>,
    },
    /// An entity as it was at a sequence or a time, folded from its history: its read-model row as
    /// pretty JSON, or one compact JSON line with --json.
    State {
        /// agent, task or project.
        kind: Kind,
        /// The entity.
        id: Uuid,
        /// A sequence number or an RFC 3339 time.
        #[arg(long)]
        at: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    Agent,
    Task,
    Project,
}

impl From<Kind> for hive_events::AggregateKind {
    fn from(kind: Kind) -> Self {
        match kind {
            Kind::Agent => Self::Agent,
            Kind::Task => Self::Task,
            Kind::Project => Self::Project,
        }
    }
}

fn at(text: &Option<String>) -> anyhow::Result<Option<hive_eventlog::audit::At>> {
    text.as_deref()
        .map(hive_eventlog::audit::parse_at)
        .transpose()
        .map_err(|e| anyhow::anyhow!(e))
}

/// Connects to the configured servers (those of a running `hive up` in the same `HIVE_HOME` are found in
/// its endpoints file).
async fn backends(config: &Config, migrate: bool) -> anyhow::Result<crate::Backends> {
    let nats = nats_url(config)?;
    let db = database_url(config);
    let db = required(
        &db,
        "HIVE_DATABASE_URL (or a running `hive up` in HIVE_HOME)",
    )?;
    connect(config, &nats, &db, migrate).await
}

/// The configured read-model database's URL, or that of a running `hive up` in the same `HIVE_HOME`.
fn database_url(config: &Config) -> Option<String> {
    config
        .database_url
        .clone()
        .or_else(|| crate::up::endpoints(&config.home).map(|r| r.1))
}

/// The configured NATS URL, or that of a running `hive up` in the same `HIVE_HOME`.
fn nats_url(config: &Config) -> anyhow::Result<String> {
    let nats = config
        .nats_url
        .clone()
        .or_else(|| crate::up::endpoints(&config.home).map(|r| r.0));
    required(&nats, "HIVE_NATS_URL (or a running `hive up` in HIVE_HOME)")
}

/// The nats-server users of namespace `ns`, passwords from the server's environment (what
/// `compose/nats.conf` holds for namespace `hive`).
pub fn nats_users(ns: &hive_eventlog::Namespace) -> String {
    use hive_eventlog::users;
    format!(
        "# Hive's NATS users (`hive nats-users`): one per service, each allowed only what it needs.\n\
         # Each password comes from the server's environment.\n{}",
        users::server_config(ns, |s| format!("${}", s.password_variable()))
    )
}

/// Makes `HIVE_API_DATABASE_URL`'s user a role that may only read the read models, if it is set.
async fn provision_api_reader(
    config: &Config,
    owner: &sea_orm::DatabaseConnection,
) -> anyhow::Result<()> {
    if let Some(url) = &config.api_database_url {
        crate::provision_reader(owner, url).await?;
        println!(
            "{} may read the read models, and only read them",
            Config::redacted(url)
        );
    }
    Ok(())
}

#[derive(clap::Args)]
struct AgentArgs {
    /// The hive's API [env: HIVE_API_URL, default: http://<http_addr>]
    #[arg(long, env = "HIVE_API_URL", hide_env = true)]
    api: Option<String>,
    /// Attach to this registered agent (a spawned one) instead of registering a new one.
    #[arg(long)]
    agent_id: Option<Uuid>,
    /// A name for a new agent.
    #[arg(long)]
    name: Option<String>,
    /// A new agent's type.
    #[arg(long, default_value = "worker")]
    agent_type: String,
    /// A new agent's capabilities (comma-separated, or repeat the flag).
    #[arg(long = "capabilities", value_delimiter = ',')]
    capabilities: Vec<String>,
    /// How many tasks run at once.
    #[arg(long, default_value_t = 1)]
    max_concurrent_tasks: u32,
    /// The executor, run under `sh -c` once per task [default: HIVE_AGENT_EXEC, else `cat`]
    #[arg(long)]
    exec: Option<String>,
    /// Seconds between heartbeats [default: HIVE_AGENT_HEARTBEAT_SECS, else 5]
    #[arg(long)]
    heartbeat_secs: Option<f64>,
    /// Seconds a drain waits for running tasks [default: HIVE_AGENT_DRAIN_TIMEOUT_SECS, else 30]
    #[arg(long)]
    drain_timeout_secs: Option<f64>,
    /// The API token: the agent's own (with --agent-id), or an operator's to register a new agent,
    /// which then acts with the token it is given [env: HIVE_TOKEN]
    #[arg(long, env = "HIVE_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl AgentArgs {
    fn config(self, config: &Config) -> anyhow::Result<hive_runtime::RuntimeConfig> {
        let secs = |value: Option<f64>, default: f64, name: &str| {
            let value = value.unwrap_or(default);
            Duration::try_from_secs_f64(value)
                .ok()
                .filter(|d| !d.is_zero())
                .with_context(|| format!("{name} must be a positive number of seconds"))
        };
        anyhow::ensure!(
            self.max_concurrent_tasks >= 1,
            "--max-concurrent-tasks must be at least 1"
        );
        Ok(hive_runtime::RuntimeConfig {
            api: api_url(config, self.api),
            agent_id: self.agent_id,
            name: self.name,
            agent_type: self.agent_type,
            capabilities: self.capabilities,
            max_concurrent_tasks: self.max_concurrent_tasks,
            exec: self.exec.unwrap_or_else(|| config.agent_exec.clone()),
            heartbeat_interval: secs(
                self.heartbeat_secs,
                config.agent_heartbeat_secs,
                "--heartbeat-secs",
            )?,
            drain_timeout: secs(
                self.drain_timeout_secs,
                config.agent_drain_timeout_secs,
                "--drain-timeout-secs",
            )?,
            token: self.token,
        })
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Part {
    /// The HTTP API.
    Api,
    /// The read-model projector (migrates the database at start); run several for standbys (one folds
    /// at a time).
    Projector,
    /// The scheduler; run several for standbys (one is active at a time).
    Scheduler,
}

/// The API `api` names, or the one this configuration serves (`http://<http_addr>`).
pub(crate) fn api_url(config: &Config, api: Option<String>) -> String {
    api.unwrap_or_else(|| format!("http://{}", config.http_addr))
}

/// The token for `--api`: HIVE_TOKEN, or the development admin token `hive up` keeps in its home.
fn api_token(config: &Config) -> anyhow::Result<String> {
    if let Ok(token) = std::env::var("HIVE_TOKEN")
        && !token.trim().is_empty()
    {
        return Ok(token.trim().to_owned());
    }
    let path = config.home.join(crate::up::ADMIN_TOKEN);
    std::fs::read_to_string(&path)
        .map(|t| t.trim().to_owned())
        .map_err(|e| anyhow::anyhow!("no HIVE_TOKEN, and {} cannot be read: {e}", path.display()))
}

/// A client of the hive at `url`, with [`api_token`].
pub(crate) fn api_client(config: &Config, url: &str) -> anyhow::Result<hive_client::Client> {
    Ok(hive_client::Client::new(url).with_token(Some(api_token(config)?)))
}

fn required(value: &Option<String>, name: &str) -> anyhow::Result<String> {
    value
        .clone()
        .with_context(|| format!("{name} must be set for this command"))
}

/// The `hive` program.
pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // An agent waits on one stream and a few child processes: one thread serves it, and each of the
    // fleet's agent processes then holds about half the memory of a thread per core.
    let mut runtime = match cli.command {
        Command::Agent { command: None, .. } => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    runtime
        .enable_all()
        .build()
        .context("start the async runtime")?
        .block_on(run_cli(cli))
}

async fn run_cli(cli: Cli) -> anyhow::Result<()> {
    // The log goes to stderr: stdout carries what a command answers (`--json` lines, a token, a
    // report), which must stay parseable whatever HIVE_LOG lets through.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colours only for a person: a log file or a pipe gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HIVE_LOG")
                .unwrap_or_else(|_| "info,sqlx=warn,sea_orm=warn,async_nats=warn".into()),
        )
        .init();
    let config = Config::load(&cli.overrides).map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
    match cli.command {
        Command::Up => crate::up::up(config).await,
        Command::Projections { command } => match command {
            ProjectionsCommand::Rebuild { all, name } => {
                let backends = backends(&config, true).await?;
                let names = match (all, name) {
                    (true, _) => vec![hive_projector::READ_MODELS.to_owned()],
                    (false, Some(name)) => vec![name],
                    (false, None) => anyhow::bail!("name a projection or give --all"),
                };
                crate::ops::rebuild_projections(&backends, &names).await
            }
            ProjectionsCommand::Status { json, api } => {
                let all = match api {
                    Some(url) => crate::remote::projections(&api_client(&config, &url)?).await?,
                    None => {
                        let backends = backends(&config, false).await?;
                        let head = backends.log.last_seq().await?;
                        hive_projector::status::projections(&backends.db, head).await?
                    }
                };
                crate::ops::projections_status(&all, json)
            }
        },
        Command::Tokens { command } => {
            let tokens = backends(&config, false).await?.tokens;
            match command {
                TokensCommand::Issue { role, name } => {
                    anyhow::ensure!(
                        role != hive_eventlog::Role::Agent,
                        "an agent's token is issued when it is registered or spawned"
                    );
                    let (token, id) = tokens.issue(&hive_eventlog::Grant::new(role, name)).await?;
                    eprintln!("token id {id} (shown once below)");
                    println!("{token}");
                }
                TokensCommand::List => {
                    for (id, grant) in tokens.all().await? {
                        let agent = grant.agent_id.map(|a| a.to_string()).unwrap_or_default();
                        println!(
                            "{id}  {:<8}  {}  {}  {agent}",
                            grant.role,
                            grant.issued_at.to_rfc3339(),
                            grant.name
                        );
                    }
                }
                TokensCommand::Revoke { id } => {
                    anyhow::ensure!(tokens.revoke(&id).await?, "no token {id}");
                    println!("revoked {id}");
                }
            }
            Ok(())
        }
        Command::Backup { dir } => {
            crate::backup::backup(&config, &nats_url(&config)?, &dir).await?;
            Ok(())
        }
        Command::Restore { dir, force } => {
            crate::backup::restore(&config, &dir, force).await?;
            Ok(())
        }
        Command::Verify => crate::ops::verify(&backends(&config, false).await?).await,
        Command::Audit { query, json, api } => {
            use crate::ops::AuditQuery;
            use hive_events::AggregateKind;
            let query = match query {
                AuditCommand::Agent { id } => AuditQuery::AgentWork(id),
                AuditCommand::Task { id } => AuditQuery::Entity(AggregateKind::Task, id),
                AuditCommand::Project { id } => AuditQuery::Entity(AggregateKind::Project, id),
                AuditCommand::Correlation { id } => AuditQuery::Correlation(id),
                AuditCommand::Log { from, to } => AuditQuery::Log {
                    from: at(&from)?,
                    to: at(&to)?,
                },
                AuditCommand::State {
                    kind,
                    id,
                    at: point,
                } => {
                    let point =
                        hive_eventlog::audit::parse_at(&point).map_err(|e| anyhow::anyhow!(e))?;
                    let kind = kind.into();
                    let subjects = hive_events::subject::Subjects::default();
                    let history = match api {
                        Some(url) => {
                            let client = api_client(&config, &url)?;
                            crate::remote::raw_history(&client, &subjects, kind, id).await?
                        }
                        None => {
                            let log = crate::open_log(&config, &nats_url(&config)?).await?;
                            return crate::ops::state(
                                &log.history(kind, id).await?,
                                log.subjects(),
                                kind,
                                id,
                                point,
                                json,
                            );
                        }
                    };
                    return crate::ops::state(&history, &subjects, kind, id, point, json);
                }
            };
            let causes = matches!(query, AuditQuery::Correlation(_));
            let records = match api {
                Some(url) => {
                    crate::remote::audit_records(&api_client(&config, &url)?, query).await?
                }
                None => {
                    let log = crate::open_log(&config, &nats_url(&config)?).await?;
                    // Only an agent's work reads the read models: its index of the agent's tasks.
                    let db = match query {
                        AuditQuery::AgentWork(_) => {
                            crate::agent_work::index(database_url(&config).as_deref()).await
                        }
                        _ => None,
                    };
                    crate::ops::audit_records(&log, db.as_ref(), query).await?
                }
            };
            crate::ops::print_records(&records, json, causes)
        }
        Command::Agent {
            command: Some(command),
            ..
        } => crate::operator::agent(&config, command).await,
        Command::Task { command } => crate::operator::task(&config, command).await,
        Command::DeadLetters { command } => crate::operator::dead_letters(&config, command).await,
        Command::Agent { command: None, run } => {
            let runtime = run.config(&config)?;
            hive_runtime::run(runtime, crate::termination(), None)
                .await
                .map_err(Into::into)
        }
        Command::NatsUsers => {
            print!("{}", nats_users(&config.log().namespace));
            Ok(())
        }
        Command::Migrate if config.nats_url.is_some() => {
            let backends = backends(&config, true).await?;
            provision_api_reader(&config, &backends.db).await?;
            println!("read models migrated; event log ready");
            Ok(())
        }
        Command::Migrate => {
            let url = required(&config.database_url, "HIVE_DATABASE_URL")?;
            crate::ensure_database(&url).await?;
            let db = sea_orm::Database::connect(url.as_str()).await?;
            <hive_migrations::Migrator as hive_migrations::MigratorTrait>::up(&db, None).await?;
            provision_api_reader(&config, &db).await?;
            println!("read models migrated");
            Ok(())
        }
        Command::Serve { part } => {
            let nats = required(&config.nats_url, "HIVE_NATS_URL")?;
            // The API only reads the read models: as its read-only role when there is one (then the
            // owner's URL need not be given to it at all).
            let db = match (&part, &config.api_database_url) {
                (Part::Api, Some(url)) => url.clone(),
                _ => required(&config.database_url, "HIVE_DATABASE_URL")?,
            };

            let none = Parts {
                api: false,
                projector: false,
                scheduler: false,
            };
            let parts = match part {
                Part::Api => Parts { api: true, ..none },
                Part::Projector => Parts {
                    projector: true,
                    ..none
                },
                Part::Scheduler => Parts {
                    scheduler: true,
                    ..none
                },
            };
            let backends = connect(&config, &nats, &db, parts.projector).await?;
            let running = run(&config, backends, parts, config.http_addr).await?;
            if let Some(addr) = running.addr {
                tracing::info!(%addr, "API listening");
            }
            running.until(crate::termination()).await
        }
    }
}
