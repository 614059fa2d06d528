//! `hive-bench <scenario>`: runs a scenario on servers it starts itself (or on `--nats-url` and
//! `--database-url`), measures the raw limit of the same machine in the same run, and prints a table.

mod load;
mod report;
mod scenarios;

use clap::{Parser, Subcommand};

/// Hive's benchmarks.
#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    /// NATS to use instead of starting nats-server.
    #[arg(long, global = true)]
    nats_url: Option<String>,
    /// PostgreSQL (a database URL) to use instead of starting one.
    #[arg(long, global = true)]
    database_url: Option<String>,
}

#[derive(Subcommand)]
enum Scenario {
    /// Load a log, project it, rebuild the read models from it, verify them, read histories.
    Rebuild {
        /// Events in the log.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let servers = scenarios::Servers::start(cli.nats_url, cli.database_url).await?;
            match cli.scenario {
                Scenario::Rebuild { events } => scenarios::rebuild(&servers, events).await,
            }
        })
}
