//! The `hive` command line: a thin front over the `hive` library.

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use hive::config::{Config, Overrides};
use hive::{Parts, connect, run};

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
    /// Create the read-model database if missing and bring its schema up to date. Safe on a running
    /// system: migrations only add.
    Migrate,
}

#[derive(Clone, Copy, ValueEnum)]
enum Part {
    /// The HTTP API.
    Api,
    /// The read-model projector (migrates the database at start).
    Projector,
    /// The scheduler; run several for standbys (one is active at a time).
    Scheduler,
}

fn required(value: &Option<String>, name: &str) -> anyhow::Result<String> {
    value
        .clone()
        .with_context(|| format!("{name} must be set for this command"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HIVE_LOG")
                .unwrap_or_else(|_| "info,sqlx=warn,sea_orm=warn,async_nats=warn".into()),
        )
        .init();
    let config = Config::load(&cli.overrides).map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
    match cli.command {
        Command::Up => hive::up::up(config).await,
        Command::Migrate => {
            let url = required(&config.database_url, "HIVE_DATABASE_URL")?;
            hive::ensure_database(&url).await?;
            let db = sea_orm::Database::connect(url.as_str()).await?;
            <hive_migrations::Migrator as hive_migrations::MigratorTrait>::up(&db, None).await?;
            println!("read models migrated");
            Ok(())
        }
        Command::Serve { part } => {
            let nats = required(&config.nats_url, "HIVE_NATS_URL")?;
            let db = required(&config.database_url, "HIVE_DATABASE_URL")?;
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
            running.until(hive::termination()).await
        }
    }
}
