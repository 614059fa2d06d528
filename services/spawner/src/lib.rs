//! Spawned agents: `POST /api/v1/agents/spawn` registers an agent and hands it here, which starts a real
//! `hive agent` process attached to it and supervises it.
//!
//! - A runtime that exits with status 0 stopped on purpose (it drained and deregistered): it stays
//!   stopped. Any other exit is a crash: it is restarted with back-off, at most `max_restarts` times in a
//!   row (the count resets once a run has lasted [`STABLE_RUN`]). After that it is left stopped and the
//!   agent is not touched: it stays registered, the scheduler marks it lost once its heartbeats lapse
//!   (requeueing its tasks), and it stays lost until an operator deregisters it.
//! - When the agent is deregistered (by anyone), its runtime gets SIGTERM at once: the supervisor
//!   listens to the agent's event subject.
//! - [`Spawner::shutdown`] sends SIGTERM to every runtime and waits for them (they drain and
//!   deregister), then SIGKILL after `stop_grace`.
//! - Every runtime dies with the process that spawned it, should that process be killed outright.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hive_eventlog::EventLog;
use hive_events::AggregateKind;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// A run that lasts this long is healthy again: the restart count starts over.
pub const STABLE_RUN: Duration = Duration::from_secs(60);
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How agents are spawned.
#[derive(Clone, Debug)]
pub struct SpawnerConfig {
    /// The `hive` binary whose `agent` subcommand is the runtime.
    pub program: PathBuf,
    /// The API the runtimes talk to.
    pub api_url: String,
    /// The executor of an agent spawned without one.
    pub default_exec: String,
    /// How often runtimes heartbeat.
    pub heartbeat_interval: Duration,
    /// How long a runtime may drain when stopped.
    pub drain_timeout: Duration,
    /// Restarts in a row after which a crashing runtime is left stopped.
    pub max_restarts: u32,
    /// How long a stopped runtime has between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
    /// `HIVE_LOG` for the runtimes (unset: they inherit ours).
    pub log_filter: Option<String>,
}

/// One agent to spawn.
#[derive(Clone)]
pub struct Spec {
    /// The registered agent the runtime attaches to.
    pub agent_id: Uuid,
    /// Its executor (the default when absent).
    pub exec: Option<String>,
    /// How many tasks it runs at once.
    pub max_concurrent_tasks: u32,
    /// The agent's own API token, handed to its runtime in `HIVE_TOKEN` (not on its command line,
    /// which every user of the host can read).
    pub token: Option<String>,
}

impl std::fmt::Debug for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("Spec")
            .field("agent_id", &self.agent_id)
            .field("exec", &self.exec)
            .field("max_concurrent_tasks", &self.max_concurrent_tasks)
            .finish_non_exhaustive()
    }
}

/// Why an agent was not spawned.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// A runtime for this agent is already running here.
    #[error("agent {0} already has a running runtime")]
    AlreadyRunning(Uuid),
    /// The hive is shutting down.
    #[error("the hive is shutting down")]
    ShuttingDown,
    /// The process could not be started.
    #[error("could not start {program}: {source}")]
    Start {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Starts and supervises agent runtimes. Cheap to clone.
#[derive(Clone)]
pub struct Spawner {
    inner: Arc<Inner>,
}

struct Inner {
    config: SpawnerConfig,
    log: EventLog,
    supervised: Mutex<HashMap<Uuid, JoinHandle<()>>>,
    stopping: watch::Sender<bool>,
}

impl Spawner {
    /// A spawner whose runtimes talk to `config.api_url`; `log` tells it of deregistrations.
    pub fn new(config: SpawnerConfig, log: EventLog) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                log,
                supervised: Mutex::new(HashMap::new()),
                stopping: watch::Sender::new(false),
            }),
        }
    }

    /// Starts a runtime for `spec.agent_id` and supervises it. Answers once the process has started.
    pub async fn spawn(&self, spec: Spec) -> Result<(), SpawnError> {
        if *self.inner.stopping.borrow() {
            return Err(SpawnError::ShuttingDown);
        }
        let agent = spec.agent_id;
        // Listen for the deregistration before the runtime can deregister, so none is missed.
        let subject = self.inner.log.subjects().of(AggregateKind::Agent, agent);
        let events = self.inner.log.client().subscribe(subject).await.ok();
        let mut supervised = self.lock();
        if supervised.get(&agent).is_some_and(|s| !s.is_finished()) {
            return Err(SpawnError::AlreadyRunning(agent));
        }
        let child = self.inner.start(&spec)?;
        let inner = self.inner.clone();
        let supervisor = tokio::spawn(async move {
            inner.supervise(spec, child, events).await;
        });
        supervised.insert(agent, supervisor);
        Ok(())
    }

    /// The agents whose runtimes are supervised here now.
    pub fn running(&self) -> Vec<Uuid> {
        self.lock()
            .iter()
            .filter(|(_, s)| !s.is_finished())
            .map(|(id, _)| *id)
            .collect()
    }

    /// Stops every runtime (SIGTERM, then SIGKILL after the grace) and waits for them.
    pub async fn shutdown(&self) {
        self.inner.stopping.send_replace(true);
        let supervisors: Vec<_> = self.lock().drain().map(|(_, s)| s).collect();
        if !supervisors.is_empty() {
            tracing::info!(agents = supervisors.len(), "stopping spawned agents");
        }
        for supervisor in supervisors {
            let _ = supervisor.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, JoinHandle<()>>> {
        self.inner
            .supervised
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Inner {
    fn start(&self, spec: &Spec) -> Result<Child, SpawnError> {
        let config = &self.config;
        let mut command = Command::new(&config.program);
        command
            .arg("agent")
            .arg("--api")
            .arg(&config.api_url)
            .arg("--agent-id")
            .arg(spec.agent_id.to_string())
            .arg("--exec")
            .arg(spec.exec.as_deref().unwrap_or(&config.default_exec))
            .arg("--max-concurrent-tasks")
            .arg(spec.max_concurrent_tasks.to_string())
            .arg("--heartbeat-secs")
            .arg(config.heartbeat_interval.as_secs_f64().to_string())
            .arg("--drain-timeout-secs")
            .arg(config.drain_timeout.as_secs_f64().to_string())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let Some(filter) = &config.log_filter {
            command.env("HIVE_LOG", filter);
        }
        match &spec.token {
            Some(token) => command.env("HIVE_TOKEN", token),
            None => command.env_remove("HIVE_TOKEN"),
        };
        hive_devservers::die_with_parent(command.as_std_mut());
        command.spawn().map_err(|source| SpawnError::Start {
            program: config.program.display().to_string(),
            source,
        })
    }

    async fn supervise(
        &self,
        spec: Spec,
        mut child: Child,
        events: Option<async_nats::Subscriber>,
    ) {
        let agent = spec.agent_id;
        let mut stopping = self.stopping.subscribe();
        let deregistered = deregistration(events);
        let mut deregistered = std::pin::pin!(deregistered);
        let mut restarts = 0;
        loop {
            let began = Instant::now();
            let status = tokio::select! {
                status = child.wait() => status,
                () = stopped(&mut stopping) => {
                    self.terminate(agent, &mut child).await;
                    return;
                }
                () = &mut deregistered => {
                    tracing::info!(%agent, "agent deregistered: stopping its runtime");
                    self.terminate(agent, &mut child).await;
                    return;
                }
            };
            match status {
                Ok(status) if status.success() => {
                    tracing::info!(%agent, "agent runtime stopped");
                    return;
                }
                Ok(status) => tracing::warn!(%agent, %status, "agent runtime crashed"),
                Err(e) => tracing::warn!(%agent, error = %e, "lost track of the agent runtime"),
            }
            if began.elapsed() >= STABLE_RUN {
                restarts = 0;
            }
            restarts += 1;
            if restarts > self.config.max_restarts {
                tracing::error!(%agent, restarts = self.config.max_restarts, "agent runtime keeps crashing: left stopped");
                return;
            }
            let backoff = FIRST_BACKOFF
                .saturating_mul(1 << (restarts - 1).min(10))
                .min(MAX_BACKOFF);
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = stopped(&mut stopping) => return,
            }
            match self.start(&spec) {
                Ok(started) => {
                    tracing::info!(%agent, restart = restarts, "agent runtime restarted");
                    child = started;
                }
                Err(e) => {
                    tracing::error!(%agent, error = %e, "cannot restart the agent runtime");
                    return;
                }
            }
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited within the grace.
    async fn terminate(&self, agent: Uuid, child: &mut Child) {
        if let Some(pid) = child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
        if tokio::time::timeout(self.config.stop_grace, child.wait())
            .await
            .is_err()
        {
            tracing::warn!(%agent, "agent runtime ignored SIGTERM: killing it");
            let _ = child.kill().await;
        }
    }
}

/// Resolves once the spawner is stopping.
async fn stopped(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|s| *s).await;
}

/// Resolves when an `AgentDeregistered` event passes on the subscription (never, without one).
async fn deregistration(events: Option<async_nats::Subscriber>) {
    let Some(mut events) = events else {
        return std::future::pending().await;
    };
    while let Some(message) = events.next().await {
        if let Ok(envelope) = hive_events::envelope::decode(&message.payload, None)
            && envelope.event.event_type() == "AgentDeregistered"
        {
            return;
        }
    }
    std::future::pending().await
}
