//! The operator's commands over a hive's API, through `hive-client`: `hive task
//! list|show|create|cancel|retry|requeue`, `hive agent list|show|drain|deregister` and `hive dead-letters
//! list|retry`. The API is `--api URL` (or `HIVE_API_URL`, else the configured `http_addr`) and the
//! token `HIVE_TOKEN` or `$HIVE_HOME/admin.token`, as for every `--api` command; reads need a viewer's
//! token, commands an operator's.
//!
//! Reads wait for the read models to hold all the log held when they were asked (`Hive-Min-Seq:
//! head`), so a script that creates a task and then shows it finds it, though each command is a
//! client of its own.
//!
//! Output ([`print`]): a table (a list) or one field a line (an entity) by default; with `--json`, JSON
//! lines, one object a line: a list's items, the entity, or the command's answer as the API gave it;
//! with `--watch`, the entity again each time it changes. A refusal ends the command with a non-zero
//! exit and the API's status, code and message on stderr.

mod new_task;
mod print;

use new_task::NewTask;

use clap::Subcommand;
use hive_client::{AggregateKind, Client};
use serde_json::json;
use uuid::Uuid;

use crate::config::Config;

/// Where the API is, and how to print.
#[derive(clap::Args)]
pub struct Remote {
    /// The hive's API [env: HIVE_API_URL, default: http://<http_addr>]
    #[arg(long, env = "HIVE_API_URL", hide_env = true)]
    api: Option<String>,
    /// JSON lines instead of a table: one JSON object a line.
    #[arg(long)]
    json: bool,
}

impl Remote {
    fn client(&self, config: &Config) -> anyhow::Result<Client> {
        crate::cli::api_client(config, &crate::cli::api_url(config, self.api.clone()))
    }

    /// Prints the list at `path` filtered by those of `filters` (query parameters) given.
    async fn list(
        &self,
        config: &Config,
        path: &str,
        filters: &[(&str, Option<String>)],
        page: &Page,
        columns: print::Columns,
    ) -> anyhow::Result<()> {
        let client = self.client(config)?;
        let query = filters
            .iter()
            .filter_map(|(key, value)| Some(((*key).to_owned(), value.clone()?)))
            .collect();
        print::list(&client, path, query, page, self.json, columns).await
    }

    /// Prints entity `kind` `id`, once, or with `watch` again at each change.
    async fn show(
        &self,
        config: &Config,
        kind: AggregateKind,
        id: Uuid,
        watch: bool,
        columns: print::Columns,
    ) -> anyhow::Result<()> {
        let client = self.client(config)?;
        let path = format!("/api/v1/{}s/{id}", kind.as_str());
        let show = print::Show::new(&client, &path, self.json, columns);
        match watch {
            true => show.watch(kind, id).await,
            false => show.once().await,
        }
    }
}

/// Which page of a list, and how many.
#[derive(clap::Args)]
pub struct Page {
    /// At most this many (1 to 500).
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Every one, page after page (ignores --limit's bound, not its page size).
    #[arg(long)]
    all: bool,
    /// Newest first.
    #[arg(long)]
    desc: bool,
    /// Another query parameter the API's list takes, as KEY=VALUE (repeatable).
    #[arg(long = "filter", value_name = "KEY=VALUE", value_parser = key_value)]
    filters: Vec<(String, String)>,
}

/// An entity to show.
#[derive(clap::Args)]
pub struct Shown {
    /// Its id.
    id: Uuid,
    /// Follow the hive's live stream and print it again whenever an event changes it.
    #[arg(long)]
    watch: bool,
    #[command(flatten)]
    remote: Remote,
}

/// An entity to command, and why.
#[derive(clap::Args)]
pub struct Ordered {
    /// Its id.
    id: Uuid,
    /// Why (recorded in its history).
    #[arg(long)]
    reason: Option<String>,
    #[command(flatten)]
    remote: Remote,
}

/// `hive task …`.
#[derive(Subcommand)]
pub enum TaskCommand {
    /// List tasks, oldest first. Safe on a live hive: it only reads.
    List {
        /// Only in this state (queued, running, …) or Agent Hive 2.0 status (pending, …).
        #[arg(long)]
        status: Option<String>,
        /// Only those held by this agent.
        #[arg(long)]
        agent: Option<Uuid>,
        /// Only this project's.
        #[arg(long)]
        project: Option<Uuid>,
        #[command(flatten)]
        page: Page,
        #[command(flatten)]
        remote: Remote,
    },
    /// A task's fields; with --watch, again each time it changes (until interrupted). Only reads.
    Show(Shown),
    /// Create a task; prints its id.
    Create {
        #[command(flatten)]
        task: NewTask,
        #[command(flatten)]
        remote: Remote,
    },
    /// Cancel a task (any that is not completed, dead-lettered or cancelled yet).
    Cancel(Ordered),
    /// Give a failed or dead-lettered task a new round of attempts.
    Retry {
        /// The task.
        id: Uuid,
        #[command(flatten)]
        remote: Remote,
    },
    /// Put an assigned, accepted or running task back in the queue (its agent no longer holds it).
    Requeue(Ordered),
}

/// `hive agent …` (beside running one).
#[derive(Subcommand)]
pub enum AgentCommand {
    /// List agents, oldest first. Safe on a live hive: it only reads.
    List {
        /// Only in this status (registered, ready, draining, lost, deregistered).
        #[arg(long)]
        status: Option<String>,
        /// Only those with this capability.
        #[arg(long)]
        capability: Option<String>,
        #[command(flatten)]
        page: Page,
        #[command(flatten)]
        remote: Remote,
    },
    /// An agent's fields; with --watch, again each time it changes (until interrupted). Only reads.
    Show(Shown),
    /// Drain an agent: it takes no new task, and finishes those it runs.
    Drain {
        /// The agent.
        id: Uuid,
        #[command(flatten)]
        remote: Remote,
    },
    /// Deregister an agent: its tokens are revoked, its tasks go back to the queue, and a spawned
    /// agent's process is stopped.
    Deregister(Ordered),
}

/// `hive dead-letters …`.
#[derive(Subcommand)]
pub enum DeadLettersCommand {
    /// Events the projector could not fold, with why, oldest first. Safe on a live hive: it only reads.
    List {
        #[command(flatten)]
        page: Page,
        #[command(flatten)]
        remote: Remote,
    },
    /// Fold a dead letter's aggregate again (after an upcaster fix, say): the leading projector folds
    /// its history up to its checkpoint and, if the event folds now, writes the aggregate's row and
    /// drops the dead letter; otherwise it says why the event still cannot be folded (exit non-zero).
    /// Safe on a live hive: the projector does it between two batches.
    Retry {
        /// The dead letter's id (from `list`).
        id: i64,
        #[command(flatten)]
        remote: Remote,
    },
}

/// Runs `hive task …`.
pub async fn task(config: &Config, command: TaskCommand) -> anyhow::Result<()> {
    use print::Columns;
    match command {
        TaskCommand::List {
            status,
            agent,
            project,
            page,
            remote,
        } => {
            let (agent, project) = (agent.map(|a| a.to_string()), project.map(|p| p.to_string()));
            let filters = [
                ("status", status),
                ("agent_id", agent),
                ("project_id", project),
            ];
            let path = "/api/v1/tasks";
            remote
                .list(config, path, &filters, &page, Columns::TASKS)
                .await
        }
        TaskCommand::Show(Shown { id, watch, remote }) => {
            let task = AggregateKind::Task;
            remote.show(config, task, id, watch, Columns::TASKS).await
        }
        TaskCommand::Create { task, remote } => {
            let client = remote.client(config)?;
            let answer = client.create_task(&task.body()).await?;
            print::done(&answer, remote.json, || {
                format!("created task {}", answer["task_id"].as_str().unwrap_or("?"))
            })
        }
        TaskCommand::Cancel(Ordered { id, reason, remote }) => {
            let answer = remote.client(config)?.cancel(id, reason.as_deref()).await?;
            print::done(&answer, remote.json, || format!("cancelled task {id}"))
        }
        TaskCommand::Retry { id, remote } => {
            let answer = remote.client(config)?.retry(id).await?;
            print::done(&answer, remote.json, || format!("task {id} queued again"))
        }
        TaskCommand::Requeue(Ordered { id, reason, remote }) => {
            let answer = remote
                .client(config)?
                .requeue(id, reason.as_deref())
                .await?;
            print::done(&answer, remote.json, || format!("requeued task {id}"))
        }
    }
}

/// Runs `hive agent list|show|drain|deregister`.
pub async fn agent(config: &Config, command: AgentCommand) -> anyhow::Result<()> {
    use print::Columns;
    match command {
        AgentCommand::List {
            status,
            capability,
            page,
            remote,
        } => {
            let filters = [("status", status), ("capability", capability)];
            let path = "/api/v1/agents";
            remote
                .list(config, path, &filters, &page, Columns::AGENTS)
                .await
        }
        AgentCommand::Show(Shown { id, watch, remote }) => {
            let agent = AggregateKind::Agent;
            remote.show(config, agent, id, watch, Columns::AGENTS).await
        }
        AgentCommand::Drain { id, remote } => {
            let answer = remote.client(config)?.drain(id).await?;
            print::done(&answer, remote.json, || format!("agent {id} draining"))
        }
        AgentCommand::Deregister(Ordered { id, reason, remote }) => {
            let client = remote.client(config)?;
            let path = format!("/api/v1/agents/{id}/deregister");
            let body = reason.map_or_else(|| json!({}), |r| json!({ "reason": r }));
            let answer = client.post(&path, &body).await?;
            print::done(&answer, remote.json, || format!("deregistered agent {id}"))
        }
    }
}

/// Runs `hive dead-letters …`.
pub async fn dead_letters(config: &Config, command: DeadLettersCommand) -> anyhow::Result<()> {
    match command {
        DeadLettersCommand::List { page, remote } => {
            let (path, columns) = ("/api/v1/dead-letters", print::Columns::DEAD_LETTERS);
            remote.list(config, path, &[], &page, columns).await
        }
        DeadLettersCommand::Retry { id, remote } => {
            let client = remote.client(config)?;
            let answer = client
                .retry_dead_letter(id)
                .await
                .map_err(|e| anyhow::anyhow!("dead letter {id} was not folded again: {e}"))?;
            print::done(&answer, remote.json, || print::refolded(&answer))
        }
    }
}

/// `KEY=VALUE`.
fn key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .filter(|(key, _)| !key.is_empty())
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_need_a_key() {
        assert_eq!(key_value("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(key_value("=b").is_err());
        assert!(key_value("ab").is_err());
    }
}
