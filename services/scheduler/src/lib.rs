//! The scheduler: one active instance (a lease in JetStream KV; standbys take over when it lapses)
//! folds the log into a [`board::Board`] (from its last [`snapshot`] on) and, on every event, assigns
//! queued tasks to agents and issues the follow-ups that facts make due (retries with back-off, dead letters, dependencies, requeues
//! after a lapsed lease or a lost agent, agents made ready or recovered by their heartbeats). Time-based
//! rules wake it at the board's next deadline, not on a polling timer.
//!
//! Every decision is an ordinary command on the event log, appended with optimistic concurrency on the
//! aggregate: even two schedulers at once could never assign one task twice.
//!
//! Long because leading (the lease, the snapshot, the reader that reads on) and issuing decisions
//! share the loop's state.

pub mod board;
pub mod snapshot;

use std::time::Duration;

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use hive_eventlog::{
    CommandContext, CommandError, EventLog, Heartbeats, LeaseOf, LogError, RawEvent, leadership,
};
use hive_events::aggregate::EventSchema;
use hive_events::envelope::decode_as;
use hive_events::task::{Lifecycle, TaskCommand, TaskEvent};
use hive_events::wire::{Assignment, Push, Stop};
use hive_events::{Actor, AgentId, AggregateKind, TaskId, agent::Agent};
use tokio::sync::watch;
use tracing::Instrument;

pub use board::{Action, Board, Cause};
pub use hive_events::Policy;
pub use snapshot::{SNAPSHOT_EVERY, Snapshots};

/// How soon the scheduler decides again after one of its commands failed.
const RETRY_AFTER_FAILURE: Duration = Duration::from_millis(200);
/// Least time between two looks for what falls due (follow-ups, the next deadline) while events keep
/// coming. A look reads every agent, and of the open tasks only those that changed or whose time came
/// (the board's timers); one an event would read every agent thousands of times a second. An event's
/// assignments are decided at once; its follow-ups (a dependent released, a retry scheduled) within
/// this.
const SCAN_EVERY: Duration = Duration::from_millis(5);

/// How the scheduler runs.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// The scheduling rules' timings.
    pub policy: Policy,
    /// How long the leader lease lasts without renewal; a standby takes over within about this long.
    pub leader_ttl: Duration,
    /// This instance's name in the lease.
    pub instance: String,
    /// How many events it folds between two snapshots of its board, at least ([`SNAPSHOT_EVERY`]).
    pub snapshot_every: u64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            policy: Policy::default(),
            leader_ttl: Duration::from_secs(5),
            instance: format!("scheduler-{}", uuid::Uuid::new_v4().simple()),
            snapshot_every: SNAPSHOT_EVERY,
        }
    }
}

/// The scheduler.
pub struct Scheduler {
    log: EventLog,
    heartbeats: Heartbeats,
    config: SchedulerConfig,
    leading: watch::Sender<bool>,
}

impl Scheduler {
    /// A scheduler on `log`, reading heartbeats from `heartbeats`.
    pub fn new(log: EventLog, heartbeats: Heartbeats, config: SchedulerConfig) -> Self {
        Self {
            log,
            heartbeats,
            config,
            leading: watch::Sender::new(false),
        }
    }

    /// True while this instance is the active scheduler.
    pub fn leading(&self) -> watch::Receiver<bool> {
        self.leading.subscribe()
    }

    /// Runs until `shutdown` resolves: waits for the lease, leads while it holds it, and waits again
    /// if it loses it.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), LogError> {
        let leading = |leading| self.set_leading(leading);
        let (instance, ttl) = (&self.config.instance, self.config.leader_ttl);
        // A failed log gives the lease up; this instance (or another) leads again from the log.
        leadership::lead(
            LeaseOf::Scheduler,
            &self.log,
            instance,
            ttl,
            shutdown,
            leading,
            || async {
                let result = self.lead().await;
                if let Err(e) = &result {
                    tracing::warn!(error = %e, "scheduler interrupted");
                }
                Ok(())
            },
        )
        .await
    }

    fn set_leading(&self, leading: bool) {
        self.leading.send_replace(leading);
        metrics::gauge!("hive_scheduler_leading").set(if leading { 1.0 } else { 0.0 });
    }

    /// Leads until the log fails (the lease renewed meanwhile, and this dropped when it is lost).
    async fn lead(&self) -> Result<(), LogError> {
        let head = self.log.last_seq().await?;
        // Without its store (not ready yet on a cluster electing its leaders), the scheduler still
        // schedules: it folds the log from the start and saves nothing.
        let snapshots = Snapshots::open(&self.log)
            .await
            .inspect_err(|e| tracing::warn!(error = %e, "the board's snapshots cannot be opened; folding the log from the start"))
            .ok();
        let mut board = match &snapshots {
            Some(snapshots) => Self::board_to_start(snapshots).await,
            None => Board::default(),
        };
        let mut saving = Saving::after(board.last_seq());
        let replay = board::replay(self.log.subjects().clone());
        let mut events = Box::pin(self.log.read_from(board.last_seq() + 1).await?);
        let mut beats = Box::pin(self.heartbeats.watch().await?);
        let policy = &self.config.policy;
        let mut failed = false;
        // When the board was last looked at whole, and the next deadline it found then.
        let mut scanned = std::time::Instant::now()
            .checked_sub(SCAN_EVERY)
            .unwrap_or_else(std::time::Instant::now);
        let mut deadline = None;
        let mut scan_owed = true;
        loop {
            let caught_up = board.last_seq() >= head;
            let mut wake = deadline
                .map(|at: chrono::DateTime<chrono::Utc>| {
                    (at - chrono::Utc::now()).to_std().unwrap_or_default()
                })
                .unwrap_or(Duration::from_secs(3600));
            if scan_owed {
                wake = wake.min(SCAN_EVERY.saturating_sub(scanned.elapsed()));
            }
            if snapshots.is_some()
                && let Some(due) = saving.due_in(&board, self.config.snapshot_every)
            {
                wake = wake.min(due);
            }
            if failed {
                // A command failed (a transient log error, or a race): decide again shortly even if
                // nothing else happens.
                wake = wake.min(RETRY_AFTER_FAILURE);
            }
            let mut by_event = false;
            tokio::select! {
                event = events.next() => {
                    by_event = true;
                    if let Err(e) = fold_ready(&mut board, event, &mut events, &replay) {
                        // A reader that failed (or stalled) is replaced, reading on after what the
                        // board holds: nothing is folded twice or passed over.
                        tracing::warn!(error = %e, after = board.last_seq(), "the scheduler's log reader failed; reading on");
                        events = Box::pin(self.log.read_from(board.last_seq() + 1).await?);
                    }
                    // Stops are told as they happen: those of the history a new leader catches up
                    // on are long told (or their runtimes long gone).
                    let stops = board.take_stops();
                    if board.last_seq() >= head {
                        self.tell_stops(stops).await;
                    }
                }
                Some(beat) = beats.next() => board.beat(beat.agent, beat.at),
                () = tokio::time::sleep(wake), if caught_up => {}
                () = saving.stored() => {}
            }
            if board.last_seq() >= head {
                // Woken by an event soon after the last look: its assignments now, the
                // rest at the next look (owed, within `SCAN_EVERY`).
                let scan = !by_event || failed || scanned.elapsed() >= SCAN_EVERY;
                scan_owed = !scan;
                if scan {
                    scanned = std::time::Instant::now();
                }
                failed = !self.act(&mut board, scan).await;
                if scan {
                    deadline = board.next_deadline(policy);
                }
                if let Some(snapshots) = &snapshots {
                    saving
                        .consider(&board, snapshots, self.config.snapshot_every)
                        .await;
                }
            }
        }
    }

    /// The board to lead with: the snapshot's, when there is one to trust, else an empty one (the
    /// whole log is folded).
    async fn board_to_start(snapshots: &Snapshots) -> Board {
        match snapshots.load().await {
            Ok(Some(board)) => {
                tracing::info!(
                    covers = board.last_seq(),
                    aggregates = board.size(),
                    "the board starts from its snapshot"
                );
                board
            }
            Ok(None) => Board::default(),
            Err(e) => {
                tracing::warn!(error = %e, "the board's snapshot cannot be read; folding the log from the start");
                Board::default()
            }
        }
    }

    /// Issues every command that is due, concurrently (each on its own aggregate): the assignments,
    /// and with `scan` everything else due (see [`Board::follow_ups`]). False when any of them failed.
    async fn act(&self, board: &mut Board, scan: bool) -> bool {
        let now = hive_eventlog::command::now_micros();
        let mut actions = if scan {
            board.follow_ups(now, &self.config.policy, rand::random::<f64>)
        } else {
            Vec::new()
        };
        actions.extend(board.assignments(now, &self.config.policy));
        metrics::gauge!("hive_scheduler_queue_depth").set(board.queue_len() as f64);
        if actions.is_empty() {
            return true;
        }
        let issued = actions.into_iter().map(|action| {
            // What an assignment tells its agent, if the board still has it.
            let created = match &action {
                Action::Task(id, TaskCommand::Assign { .. }, ..) => board.creation(*id),
                _ => None,
            };
            self.issue(action, created)
        });
        let results = futures::future::join_all(issued).await;
        let mut all_applied = true;
        for (target, result) in results {
            if let Err(e) = result {
                // The state moved under us (another writer) or the log failed: decide again on the
                // next event or deadline.
                tracing::debug!(%target, error = %e, "scheduler command not applied");
                board.settle(target);
                all_applied = false;
            }
        }
        all_applied
    }

    /// Appends one decision, in the flow of the event that made it due (its correlation id, and that
    /// event as its causation).
    async fn issue(
        &self,
        action: Action,
        created: Option<TaskEvent>,
    ) -> (uuid::Uuid, Result<(), CommandError>) {
        let target = action.target();
        let cause = action.cause();
        let mut ctx = CommandContext::new(Actor::new("system:scheduler"));
        // The board folds its decisions back from the log; nobody outside it hears of them before
        // they are synced (`push`): the next events are folded meanwhile.
        ctx.before_sync = true;
        ctx.correlation_id = cause.correlation_id;
        ctx.causation_id = Some(cause.event_id);
        let span = tracing::info_span!("decision", %target, correlation_id = %cause.correlation_id);
        let result = async {
            match action {
                Action::Agent(id, command, state, seq, _) => self
                    .log
                    .execute_on::<Agent>(id, &ctx, command, state, seq)
                    .await
                    .map(|_| ()),
                Action::Task(id, command, state, seq, _) => {
                    self.issue_to_task(id, &ctx, command, *state, seq, created)
                        .await
                }
            }
        }
        .instrument(span)
        .await;
        (target, result)
    }

    async fn issue_to_task(
        &self,
        id: uuid::Uuid,
        ctx: &CommandContext,
        command: TaskCommand,
        state: Lifecycle,
        seq: u64,
        created: Option<TaskEvent>,
    ) -> Result<(), CommandError> {
        let TaskCommand::Assign { agent_id, .. } = command else {
            let done = self
                .log
                .execute_on::<Lifecycle>(id, ctx, command, state, seq);
            return done.await.map(|_| ());
        };
        let (queued_at, attempt) = (state.updated_at, state.attempts + 1);
        // What the agent is told is the task's creation: kept by the board for the tasks created
        // last, else read from the log while the assignment is appended.
        let creation = async {
            match created {
                Some(created) => Ok(created),
                None => creation(&self.log, id).await,
            }
        };
        let (done, created) = tokio::join!(
            self.log
                .execute_on::<Lifecycle>(id, ctx, command, state, seq),
            creation
        );
        let done = done?;
        // How long the task waited in the queue: since its last event (it became queued).
        let waited = (chrono::Utc::now() - queued_at)
            .to_std()
            .unwrap_or_default();
        metrics::histogram!("hive_scheduler_assignment_latency_seconds")
            .record(waited.as_secs_f64());
        metrics::counter!("hive_scheduler_assignments_total").increment(1);
        match assignment(id, created, attempt, done.seq) {
            Ok(body) => {
                let body = body.in_flow(ctx.correlation_id, done.event_id);
                self.announce(agent_id.as_uuid(), &body).await
            }
            Err(e) => tracing::warn!(task = %id, error = %e, "could not read the assigned task"),
        }
        Ok(())
    }

    /// Tells each agent's runtime to stop a task taken from it (a push, like an assignment; a runtime
    /// that misses it learns at its next report on the task, which is refused).
    async fn tell_stops(&self, stops: Vec<(AgentId, Stop)>) {
        for (agent, stop) in stops {
            let subject = self.log.namespace().assignments(agent.as_uuid());
            let body = match serde_json::to_vec(&stop) {
                Ok(body) => Bytes::from(body),
                Err(e) => return tracing::warn!(error = %e, "could not encode a stop"),
            };
            self.push(subject, Some(Push::STOP), body).await;
            metrics::counter!("hive_scheduler_stops_total").increment(1);
        }
    }

    /// Tells the agent's runtime about its new assignment (a push; a lost one lapses and is requeued).
    async fn announce(&self, agent: uuid::Uuid, assignment: &Assignment) {
        let subject = self.log.namespace().assignments(agent);
        let body = match serde_json::to_vec(assignment) {
            Ok(body) => Bytes::from(body),
            Err(e) => return tracing::warn!(error = %e, "could not encode an assignment"),
        };
        self.push(subject, None, body).await;
    }

    /// Pushes `body` (of `kind`, else an assignment) to an agent's runtime once what it tells of is
    /// durable: under a store sync, after a sync begun now (in the background, the board folding on
    /// meanwhile); else at once, the event being durable on its acknowledgement.
    async fn push(&self, subject: String, kind: Option<&'static str>, body: Bytes) {
        if self.log.store_sync().is_none() {
            return send(&self.log, subject, kind, body).await;
        }
        let log = self.log.clone();
        tokio::spawn(async move {
            match log.synced().await {
                Ok(()) => send(&log, subject, kind, body).await,
                Err(e) => tracing::warn!(error = %e, "not synced: an agent is not told"),
            }
        });
    }
}

/// Sends a push to an agent's runtime (at most once: a lost one lapses).
async fn send(log: &EventLog, subject: String, kind: Option<&'static str>, body: Bytes) {
    let sent = match kind {
        Some(kind) => log.notify_as(subject, kind, body).await,
        None => log.notify(subject, body).await,
    };
    if let Err(e) = sent {
        tracing::debug!(error = %e, "could not push to an agent");
    }
}

/// Folds `first` and every event already delivered after it (up to 10,000) before anything is
/// decided. An error when the reader failed or ended.
fn fold_ready<S>(
    board: &mut Board,
    first: Option<Result<RawEvent, LogError>>,
    events: &mut S,
    replay: &hive_events::replay::Replay,
) -> Result<(), LogError>
where
    S: futures::Stream<Item = Result<RawEvent, LogError>> + Unpin,
{
    let Some(event) = first else {
        return Err(LogError::new("read the log", "the reader ended"));
    };
    board.apply(&event?, replay);
    for _ in 0..10_000 {
        match events.next().now_or_never() {
            Some(Some(event)) => board.apply(&event?, replay),
            _ => break,
        }
    }
    Ok(())
}

/// How many times the last snapshot's encoding a leader waits before it encodes the next. At ten, the
/// snapshots of a board of 127k queued tasks (83 MB of JSON, 0.38 s to encode; postcard since: a fifth
/// of the bytes, a third of the time) took a tenth of a core and were most of the HTTP commands' p99
/// (BENCHMARKS.md, "The allocator, and the board's snapshots").
const SNAPSHOT_SPACING: u32 = 50;

/// The board's snapshots as the leader takes them: one at a time, stored in the background, once the
/// board folded at least `every` events past the last one, and no sooner than [`SNAPSHOT_SPACING`]
/// times what encoding the last one took the leader after it (a large board is saved less often, so
/// its snapshots take at most a fiftieth of the leader's time). The store's own wall time does not
/// space them: it is spent in the background and, on a loaded machine, mostly waiting (one slow fsync
/// must not leave a small board unsaved for fifty times as long).
struct Saving {
    /// The sequence the last snapshot covers.
    saved: u64,
    /// When the next one may be taken.
    next: std::time::Instant,
    /// The snapshot being stored.
    storing: Option<tokio::task::JoinHandle<()>>,
}

impl Saving {
    fn after(saved: u64) -> Self {
        Self {
            saved,
            next: std::time::Instant::now(),
            storing: None,
        }
    }

    /// Resolves once the snapshot being stored is stored (never, when none is).
    /// Cancel-safe: a select may drop it and call it again.
    async fn stored(&mut self) {
        let Some(storing) = &mut self.storing else {
            return std::future::pending().await;
        };
        let _ = storing.await;
        self.storing = None;
    }

    /// How long until a snapshot that is due may be taken (`None`: none is due, or one is being
    /// stored and [`Saving::stored`] wakes the leader): a board that stops moving is still saved.
    fn due_in(&self, board: &Board, every: u64) -> Option<Duration> {
        let due = board.last_seq() >= self.saved.saturating_add(every) && self.storing.is_none();
        due.then(|| {
            self.next
                .saturating_duration_since(std::time::Instant::now())
        })
    }

    async fn consider(&mut self, board: &Board, snapshots: &Snapshots, every: u64) {
        if board.last_seq() < self.saved.saturating_add(every) {
            return;
        }
        if self.storing.as_ref().is_some_and(|s| s.is_finished()) {
            self.stored().await;
        }
        if self.storing.is_some() || std::time::Instant::now() < self.next {
            return;
        }
        let started = std::time::Instant::now();
        // When none can be taken now, try again a while later (not at once, again and again).
        let later = std::time::Instant::now() + Duration::from_secs(1);
        let encoded = match snapshots.encode(board).await {
            Ok(Some(encoded)) => encoded,
            Ok(None) => return self.next = later,
            Err(e) => {
                self.next = later;
                return tracing::warn!(error = %e, "could not take the board's snapshot");
            }
        };
        // The encoding's own time, not the read of the event it is pinned to (a round trip to the
        // server, long on a busy machine, which would leave a small board unsaved for seconds).
        let took = encoded.took();
        (self.saved, self.next) = (
            board.last_seq(),
            std::time::Instant::now() + took * SNAPSHOT_SPACING,
        );
        let (snapshots, covers) = (snapshots.clone(), self.saved);
        self.storing = Some(tokio::spawn(async move {
            match snapshots.save(&encoded).await {
                Ok(()) => {
                    metrics::counter!("hive_scheduler_snapshots_saved_total").increment(1);
                    metrics::gauge!("hive_scheduler_snapshot_seq").set(covers as f64);
                    tracing::debug!(covers, bytes = encoded.len(), encoding = ?took, took = ?started.elapsed(), "the board's snapshot is saved");
                }
                Err(e) => tracing::warn!(error = %e, "could not save the board's snapshot"),
            }
        }));
    }
}

/// Task `id`'s first event, read from the log.
async fn creation(log: &EventLog, id: uuid::Uuid) -> Result<TaskEvent, String> {
    let raw = log
        .first(AggregateKind::Task, id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the task has no events")?;
    let envelope =
        decode_as::<TaskEvent>(&raw.payload, AggregateKind::Task, id).map_err(|e| e.to_string())?;
    Ok(envelope.event)
}

/// What the agent is told of task `id`, created by `created`, assigned by event `seq`.
fn assignment(
    id: uuid::Uuid,
    created: Result<TaskEvent, String>,
    attempt: u32,
    seq: u64,
) -> Result<Assignment, String> {
    let created = created?;
    let first = created.event_type();
    Assignment::of_created(TaskId::from_uuid(id), created, attempt, seq)
        .ok_or_else(|| format!("its first event is {first}"))
}
