//! `hive-bench <scenario>`: runs a scenario on servers it starts itself (or on `--nats-url` and
//! `--database-url`), measures the raw limit of the same machine in the same run, and prints a table.

mod hive_process;
mod load;
mod report;
mod scenarios;
mod screen;
mod wait;
mod wrk;

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
    /// Start nats-server fsyncing every write before its ack (`sync_interval: always`; default:
    /// nats-server's two-minute interval, as on a replicated cluster).
    #[arg(long, global = true)]
    nats_sync_always: bool,
    /// Start nats-server on its two-minute interval and have the hive and the library sync its store
    /// before they take an ack as durable, one sync for every group of writes, as `hive up` does.
    #[arg(long, global = true, conflicts_with = "nats_sync_always")]
    nats_store_sync: bool,
    /// Start a JetStream cluster of three nats-servers and keep the stream on three replicas (an
    /// event is acknowledged once a majority holds it); with `--nats-sync-always`, every node also
    /// fsyncs every write.
    #[arg(long, global = true)]
    nats_cluster: bool,
    /// Run the scenario this many times and print each figure's median (a noisy machine).
    #[arg(long, global = true, default_value_t = 1)]
    runs: u32,
}

#[derive(Subcommand, Clone, Copy)]
enum Scenario {
    /// Load a log, project it, rebuild the read models from it, verify them, read histories.
    Rebuild {
        /// Events in the log.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
    },
    /// Commands appended: raw JetStream publish, the library, HTTP from 64 clients.
    Ingest {
        /// Commands through the library (and raw events).
        #[arg(long, default_value_t = 50_000)]
        commands: u64,
        /// Seconds of each HTTP run.
        #[arg(long, default_value_t = 10)]
        seconds: u32,
    },
    /// Events per second into the read models (the projector on a backlog) beside multi-row inserts
    /// of the same number of rows into PostgreSQL.
    Project {
        /// Events in the log.
        #[arg(long, default_value_t = 200_000)]
        events: u64,
    },
    /// Memory of every hive process (the hive and the agents it spawned), idle and under a load of
    /// commands, assignments, executions and reads.
    Footprint {
        /// Agents the hive spawns.
        #[arg(long, default_value_t = 4)]
        agents: u32,
        /// Seconds of load.
        #[arg(long, default_value_t = 10)]
        seconds: u32,
    },
    /// Far more clients than the API works on at once: the excess is shed quickly (503), the rest
    /// served, and the API recovers when the load stops.
    Overload {
        /// Tasks in the read models.
        #[arg(long, default_value_t = 20_000)]
        tasks: u64,
        /// Concurrent clients.
        #[arg(long, default_value_t = 2_000)]
        clients: u32,
        /// Seconds of each run.
        #[arg(long, default_value_t = 10)]
        seconds: u32,
    },
    /// Reads at 10, 50, 100 and 500 clients beside the trivial handler; the hive's memory.
    Query {
        /// Tasks in the read models.
        #[arg(long, default_value_t = 20_000)]
        tasks: u64,
        /// Seconds of each run.
        #[arg(long, default_value_t = 10)]
        seconds: u32,
    },
    /// A filtered page of the task list (labels, type, capability, a time window, title text) at
    /// `tasks` tasks, beside the trivial handler.
    Search {
        /// Tasks in the read model.
        #[arg(long, default_value_t = 1_000_000)]
        tasks: u64,
        /// Seconds of each run.
        #[arg(long, default_value_t = 10)]
        seconds: u32,
    },
    /// Spawn → ready, created → assigned, event → API, event → SSE.
    Chains {
        /// Samples of each chain.
        #[arg(long, default_value_t = 200)]
        samples: u32,
    },
    /// The dashboard's reads on a big hive.
    Dashboard {
        /// Tasks (each with its whole life in the log).
        #[arg(long, default_value_t = 100_000)]
        tasks: u64,
        /// Agents.
        #[arg(long, default_value_t = 1_000)]
        agents: u64,
    },
    /// Event → on screen: the dashboard in headless Chromium while tasks are created, quiet and beside
    /// a steady load of other commands.
    Screen {
        /// Samples (tasks, one every 20 ms) in each phase.
        #[arg(long, default_value_t = 500)]
        samples: u32,
        /// Other commands a second in the loaded phase.
        #[arg(long, default_value_t = 1_000)]
        background: u32,
    },
    /// Start-up on a long history: `hive up`, a standby scheduler taking over cold, an API alone and
    /// `hive audit agent`, each timed from its spawn on a log of `events` events (nearly all of
    /// finished tasks), loaded and projected first.
    Startup {
        /// Events in the log.
        #[arg(long, default_value_t = 100_000)]
        events: u64,
        /// Start with no snapshot of the scheduler's board (the first start after an upgrade): the
        /// scheduler folds the whole log. By default the snapshot a leader leaves at worst is there.
        #[arg(long)]
        cold: bool,
    },
    /// A command on a task with a long history (loaded from its snapshot and the events after it)
    /// beside the same command on a fresh task, on one `hive up`; the whole history's load beside.
    History {
        /// Progress reports in the long task's history.
        #[arg(long, default_value_t = 10_000)]
        events: u64,
        /// Commands measured on each task.
        #[arg(long, default_value_t = 500)]
        samples: u32,
    },
    /// Every scenario, tiny: proves the harness runs and produces its figures (CI).
    Smoke,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let servers = scenarios::Servers::start(
                cli.nats_url,
                cli.database_url,
                cli.nats_sync_always,
                cli.nats_store_sync,
                cli.nats_cluster,
            )
            .await?;
            let mut runs = Vec::new();
            for _ in 0..cli.runs.max(1) {
                runs.push(run(&servers, cli.scenario).await?);
            }
            for table in report::medians(runs) {
                report::print(&table);
            }
            if matches!(cli.scenario, Scenario::Smoke) {
                println!("\nsmoke: every scenario ran");
            }
            Ok(())
        })
}

async fn run(
    servers: &scenarios::Servers,
    scenario: Scenario,
) -> anyhow::Result<Vec<report::Table>> {
    match scenario {
        Scenario::Rebuild { events } => scenarios::rebuild(servers, events).await,
        Scenario::Ingest { commands, seconds } => {
            scenarios::ingest(servers, commands, seconds).await
        }
        Scenario::Project { events } => scenarios::project(servers, events).await,
        Scenario::Footprint { agents, seconds } => {
            scenarios::footprint(servers, agents, seconds).await
        }
        Scenario::Query { tasks, seconds } => {
            scenarios::query(servers, tasks, seconds, &[10, 50, 100, 500]).await
        }
        Scenario::Search { tasks, seconds } => scenarios::search(servers, tasks, seconds).await,
        Scenario::Chains { samples } => scenarios::chains(servers, samples).await,
        Scenario::Overload {
            tasks,
            clients,
            seconds,
        } => scenarios::overload(servers, tasks, clients, seconds).await,
        Scenario::Dashboard { tasks, agents } => scenarios::dashboard(servers, tasks, agents).await,
        Scenario::Screen {
            samples,
            background,
        } => screen::screen(servers, samples, background).await,
        Scenario::Startup { events, cold } => scenarios::startup(servers, events, cold).await,
        Scenario::History { events, samples } => scenarios::history(servers, events, samples).await,
        Scenario::Smoke => {
            let mut tables = scenarios::rebuild(servers, 2_000).await?;
            tables.extend(scenarios::ingest(servers, 500, 1).await?);
            tables.extend(scenarios::project(servers, 2_000).await?);
            tables.extend(scenarios::footprint(servers, 1, 1).await?);
            tables.extend(scenarios::query(servers, 200, 1, &[10]).await?);
            tables.extend(scenarios::search(servers, 2_000, 1).await?);
            tables.extend(scenarios::chains(servers, 10).await?);
            tables.extend(scenarios::overload(servers, 200, 50, 1).await?);
            tables.extend(scenarios::dashboard(servers, 100, 10).await?);
            tables.extend(screen::screen(servers, 5, 50).await?);
            tables.extend(scenarios::startup(servers, 2_000, false).await?);
            tables.extend(scenarios::history(servers, 300, 20).await?);
            Ok(tables)
        }
    }
}
