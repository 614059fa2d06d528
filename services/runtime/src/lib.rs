//! The agent runtime behind `hive agent`: the process that makes a worker an agent of a hive.
//!
//! It registers (or attaches to an id the spawner registered), heartbeats, receives its assignments by
//! push (the API's server-sent event stream), and for each one accepts it, starts it, runs the executor
//! (see [`executor`] for its contract), streams its progress and reports the outcome. It runs up to its
//! `max_concurrent_tasks` at once. On SIGTERM it drains: takes nothing new, lets the running tasks
//! finish (up to a timeout, after which they are killed and failed as retryable), then deregisters.
//! When its agent is deregistered by someone else it stops at its next heartbeat, which is refused
//! (with 401 when it acts with the agent's own token, which the deregistration revoked). A task taken
//! from it (cancelled, timed out, requeued) is stopped at once: the scheduler pushes a `stop` on the
//! same stream, and the executor's process group gets SIGTERM, then SIGKILL after the task's
//! `cancel_grace_secs`. A stop it missed (the stream was down) is made up for at the executor's next
//! progress report, which is refused.

/// The HTTP client the runtime talks to the API with: [`hive_client`].
pub use hive_client as client;
pub mod executor;
mod work;

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use futures::StreamExt;
use hive_events::task::TaskStatus;
use hive_events::wire::{Assignment, ErrorCode, Push, Report, Stop, TaskAction};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use uuid::Uuid;

pub use client::{Client, ClientError};
use work::work;

/// How the runtime runs.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// The hive's API, for example `http://127.0.0.1:8080`.
    pub api: String,
    /// Attach to this already registered agent instead of registering a new one.
    pub agent_id: Option<Uuid>,
    /// A name for a new agent.
    pub name: Option<String>,
    /// A new agent's type.
    pub agent_type: String,
    /// A new agent's capabilities.
    pub capabilities: Vec<String>,
    /// How many tasks run at once.
    pub max_concurrent_tasks: u32,
    /// The executor, run under `sh -c` once per task.
    pub exec: String,
    /// How often it heartbeats.
    pub heartbeat_interval: Duration,
    /// How long a drain waits for running tasks before killing them.
    pub drain_timeout: Duration,
    /// The API token: the agent's own (a spawned agent's), or one that may register agents (an
    /// operator's), traded for the new agent's own at registration.
    pub token: Option<String>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            api: "http://127.0.0.1:8080".into(),
            agent_id: None,
            name: None,
            agent_type: "worker".into(),
            capabilities: Vec::new(),
            max_concurrent_tasks: 1,
            exec: "cat".into(),
            heartbeat_interval: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(30),
            token: None,
        }
    }
}

/// Why the runtime stopped.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Hive refused or could not be reached where the runtime cannot go on without it.
    #[error("{0}")]
    Api(#[from] ClientError),
}

/// Least and most time between two attempts to reopen the assignment stream.
const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// Least time between two progress reports of one task (later lines replace earlier unsent ones).
pub(crate) const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Runs until `shutdown` resolves (then drains and deregisters) or the agent is deregistered.
/// `started` receives the agent's id once it has registered or attached and sent its first heartbeat.
pub async fn run(
    config: RuntimeConfig,
    shutdown: impl Future<Output = ()>,
    started: Option<tokio::sync::oneshot::Sender<Uuid>>,
) -> Result<(), RuntimeError> {
    let client = Client::new(&config.api).with_token(config.token.clone());
    let (agent, client) = match config.agent_id {
        Some(id) => (id, client),
        None => {
            let (id, own) = client
                .register(
                    config.name.as_deref(),
                    &config.agent_type,
                    &config.capabilities,
                    config.max_concurrent_tasks,
                )
                .await?;
            // From here on it acts as the agent, with the agent's own token.
            let token = own.or(config.token.clone());
            (id, client.with_token(token))
        }
    };
    client.heartbeat(agent).await?;
    tracing::info!(%agent, api = client.base(), "agent running");
    if let Some(started) = started {
        let _ = started.send(agent);
    }
    give_back_leftovers(&client, agent).await;

    let mut agent_run = AgentRun {
        client: client.clone(),
        agent,
        config: &config,
        running: JoinSet::new(),
        in_flight: HashMap::new(),
        stops: HashMap::new(),
        waiting: VecDeque::new(),
    };
    let (pushes, mut pushed) = mpsc::channel(64);
    let reader = tokio::spawn(read_pushes(client.clone(), agent, pushes));
    let mut beat = tokio::time::interval(config.heartbeat_interval);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    beat.tick().await;
    let mut shutdown = std::pin::pin!(shutdown);
    let deregistered = loop {
        tokio::select! {
            () = &mut shutdown => break false,
            _ = beat.tick() => {
                if agent_run.beat().await {
                    break true;
                }
            }
            Some(push) = pushed.recv() => match push {
                Push::Assignment(assignment) => agent_run.take(assignment),
                Push::Stop(stop) => agent_run.stop(&stop),
            },
            Some(finished) = agent_run.running.join_next_with_id() => agent_run.finished(finished),
        }
    };
    reader.abort();
    if deregistered {
        tracing::info!(%agent, "the agent was deregistered (or its token revoked): stopping");
        agent_run.running.shutdown().await;
        return Ok(());
    }
    agent_run.drain().await;
    Ok(())
}

/// Gives back, undone, the tasks this agent had accepted or started before (a previous run of it that
/// died): nobody is working on them any more. Released, not failed: they are queued again at once,
/// with no back-off, for any agent (the scheduler prefers another one).
async fn give_back_leftovers(client: &Client, agent: Uuid) {
    let taken_up = TaskStatus::ALL.into_iter().filter(|s| s.taken_up());
    for status in taken_up {
        let tasks = match client.tasks_of(agent, status).await {
            Ok(tasks) => tasks,
            Err(e) => {
                tracing::warn!(%agent, error = %e, "could not list the tasks to give back");
                continue;
            }
        };
        for task in tasks {
            let body = Report {
                reason: Some("agent_restarted".into()),
                ..Report::default()
            };
            if let Err(e) = client
                .report(task, agent, TaskAction::Release, body)
                .send()
                .await
            {
                tracing::warn!(%task, error = %e, "could not give back a task");
            }
        }
    }
}

/// Reads the assignment stream (assignments and stops) into `out`, reopening it whenever it ends,
/// until `out` closes.
async fn read_pushes(client: Client, agent: Uuid, out: mpsc::Sender<Push>) {
    let mut backoff = RECONNECT_MIN;
    while !out.is_closed() {
        match client.pushes(agent).await {
            Ok(stream) => {
                backoff = RECONNECT_MIN;
                let mut stream = std::pin::pin!(stream);
                while let Some(push) = stream.next().await {
                    if out.send(push).await.is_err() {
                        return;
                    }
                }
                tracing::debug!(%agent, "assignment stream ended; reopening");
            }
            Err(e) => tracing::warn!(%agent, error = %e, "cannot open the assignment stream"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RECONNECT_MAX);
    }
}

struct AgentRun<'a> {
    client: Client,
    agent: Uuid,
    config: &'a RuntimeConfig,
    running: JoinSet<()>,
    /// The task and attempt each running job works on.
    in_flight: HashMap<tokio::task::Id, (Uuid, u32)>,
    /// How to stop each running task: its attempt, and where to send the grace.
    stops: HashMap<Uuid, (u32, oneshot::Sender<Duration>)>,
    /// Assignments beyond `max_concurrent_tasks`, started as room frees up.
    waiting: VecDeque<(Uuid, Assignment)>,
}

impl AgentRun<'_> {
    /// Heartbeats once. True when the agent is deregistered (or unknown), so the runtime must stop:
    /// `not_found` or `invalid_transition`, or `unauthenticated` once its token is refused
    /// (deregistering an agent revokes its tokens, and without a valid token it could do nothing more
    /// anyway).
    async fn beat(&self) -> bool {
        const GONE: [ErrorCode; 3] = [
            ErrorCode::Unauthenticated,
            ErrorCode::NotFound,
            ErrorCode::InvalidTransition,
        ];
        match self.client.heartbeat(self.agent).await {
            Ok(()) => false,
            Err(e) if GONE.into_iter().any(|code| e.is(code)) => {
                tracing::warn!(
                    agent = %self.agent, error = %e,
                    "heartbeat refused: the agent was deregistered or its token revoked"
                );
                true
            }
            Err(e) => {
                tracing::warn!(agent = %self.agent, error = %e, "heartbeat failed");
                false
            }
        }
    }

    /// Starts work on a pushed assignment unless it is already in hand; without room, it waits for room.
    /// (The scheduler keeps within our limit, except for a moment when two schedulers both believed
    /// they led; a task that waits too long loses its lease and goes to someone else.) A later
    /// attempt of a task in hand is another assignment: the earlier attempt is over, and its job's
    /// reports are refused from now on.
    fn take(&mut self, assignment: Assignment) {
        let task = assignment.task_id.as_uuid();
        let attempt = assignment.attempt;
        let in_hand = self.in_flight.values().any(|held| *held == (task, attempt))
            || self
                .waiting
                .iter()
                .any(|(t, a)| *t == task && a.attempt == attempt);
        if in_hand {
            return;
        }
        if self.in_flight.len() >= self.config.max_concurrent_tasks as usize {
            tracing::debug!(%task, "no room yet: the assignment waits");
            self.waiting.push_back((task, assignment));
            return;
        }
        self.start(task, assignment);
    }

    fn start(&mut self, task: Uuid, assignment: Assignment) {
        let client = self.client.clone();
        let agent = self.agent;
        let exec = self.config.exec.clone();
        let (stop, stopped) = oneshot::channel();
        let attempt = assignment.attempt;
        self.stops.insert(task, (attempt, stop));
        let job = self
            .running
            .spawn(async move { work(&client, agent, task, &exec, assignment, stopped).await });
        self.in_flight.insert(job.id(), (task, attempt));
    }

    /// Stops `stop`'s attempt of its task, if it is in hand: a waiting one is dropped, a running one's
    /// executor is stopped. Another attempt (a later assignment of the same task) is left alone.
    fn stop(&mut self, stop: &Stop) {
        let task = stop.task_id.as_uuid();
        let grace = Duration::from_secs(u64::from(stop.grace_secs));
        self.waiting
            .retain(|(t, a)| !(*t == task && a.attempt == stop.attempt));
        if self
            .stops
            .get(&task)
            .is_some_and(|(attempt, _)| *attempt == stop.attempt)
            && let Some((_, sender)) = self.stops.remove(&task)
        {
            tracing::info!(%task, reason = ?stop.reason, ?grace, "stopping the task's executor");
            let _ = sender.send(grace);
        }
    }

    /// Forgets a job that ended, however it ended.
    fn finished(&mut self, result: Result<(tokio::task::Id, ()), tokio::task::JoinError>) {
        let id = match &result {
            Ok((id, ())) => *id,
            Err(e) => {
                tracing::warn!(error = %e, "a task's job ended abnormally");
                e.id()
            }
        };
        // (A later attempt's job of the same task may have taken its place in `stops`.)
        if let Some((task, attempt)) = self.in_flight.remove(&id)
            && self.stops.get(&task).is_some_and(|(a, _)| *a == attempt)
        {
            self.stops.remove(&task);
        }
        if self.in_flight.len() < self.config.max_concurrent_tasks as usize
            && let Some((task, assignment)) = self.waiting.pop_front()
        {
            self.start(task, assignment);
        }
    }

    /// Takes nothing new, lets running tasks finish (at most the drain timeout), then deregisters.
    async fn drain(mut self) {
        let agent = self.agent;
        tracing::info!(%agent, running = self.running.len(), "draining");
        // Not started: their leases lapse and the scheduler gives them to others.
        self.waiting.clear();
        if let Err(e) = self
            .client
            .post(&format!("/api/v1/agents/{agent}/drain"), &json!({}))
            .await
        {
            tracing::warn!(%agent, error = %e, "could not mark the agent draining");
        }
        let deadline = tokio::time::sleep(self.config.drain_timeout);
        let mut deadline = std::pin::pin!(deadline);
        let mut beat = tokio::time::interval(self.config.heartbeat_interval);
        loop {
            tokio::select! {
                finished = self.running.join_next_with_id() => {
                    match finished {
                        Some(finished) => self.finished(finished),
                        None => break,
                    }
                }
                _ = beat.tick() => {
                    if self.beat().await {
                        self.running.shutdown().await;
                        return;
                    }
                }
                () = &mut deadline => {
                    tracing::warn!(%agent, left = self.running.len(), "drain timed out: stopping tasks");
                    self.running.shutdown().await;
                    for (_, (task, attempt)) in self.in_flight.drain() {
                        let body = Report {
                            error: Some("the agent stopped before the task finished".into()),
                            retryable: Some(true),
                            attempt: Some(attempt),
                            ..Report::default()
                        };
                        if let Err(e) = self.client.report(task, agent, TaskAction::Fail, body).send().await {
                            tracing::warn!(%task, error = %e, "could not give back a task");
                        }
                    }
                    break;
                }
            }
        }
        let body = json!({"reason": "the agent's runtime stopped"});
        match self
            .client
            .post(&format!("/api/v1/agents/{agent}/deregister"), &body)
            .await
        {
            Ok(_) => tracing::info!(%agent, "deregistered"),
            Err(e) => tracing::warn!(%agent, error = %e, "could not deregister"),
        }
    }
}
