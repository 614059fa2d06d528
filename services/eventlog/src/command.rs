//! The write path: fold the aggregate from the log, decide, append with optimistic concurrency; on a lost
//! race, reload and decide again (a bounded number of times), so no command is applied to a stale state.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use hive_events::aggregate::{Aggregate, EventSchema};
use hive_events::envelope::encode;
use hive_events::replay::{Folded, OnRejected, Replay};
use hive_events::subject::Subjects;
use hive_events::{Actor, DomainError, EventMeta};
use sha2::{Digest, Sha256};
use thiserror::Error;
use tracing::instrument;
use uuid::Uuid;

use crate::log::{AppendError, EventLog, LogError, RawEvent};
use crate::snapshot::{Keys, Record, Stored};

/// How many times a command is decided after losing races before it answers a conflict, by default.
pub const MAX_ATTEMPTS: usize = 8;

/// Most events a state kept for the next command holds past its snapshot (the keys of each).
const KEPT_EVENTS: usize = 256;
/// Most keys of the events its snapshot covers a state kept for the next command holds (8 bytes
/// each).
const KEPT_COVERED: usize = 4_096;

/// Who sends a command, in which flow, and with which idempotency key.
#[derive(Clone, Debug)]
pub struct CommandContext {
    /// Who causes the event.
    pub actor: Actor,
    /// The flow it belongs to (a request id).
    pub correlation_id: Uuid,
    /// What caused it directly, if known.
    pub causation_id: Option<Uuid>,
    /// The `Nats-Msg-Id` of a command a client may repeat ([`CommandContext::idempotent`]): a
    /// repeated command with the same id answers the first result and appends nothing.
    pub idempotency_key: Option<String>,
    /// The time the event happens at.
    pub now: DateTime<Utc>,
    /// Answer once the log acknowledged the event, before the store's sync makes it durable
    /// ([`crate::StoreSync`]; the same when there is none): for a caller that folds its decisions
    /// back from the log, and syncs before it tells anyone outside the log of them (the scheduler).
    pub before_sync: bool,
}

impl CommandContext {
    /// A context for `actor`, now, in a new flow.
    pub fn new(actor: Actor) -> Self {
        Self {
            actor,
            correlation_id: Uuid::now_v7(),
            causation_id: None,
            idempotency_key: None,
            now: now_micros(),
            before_sync: false,
        }
    }

    /// Makes the command idempotent under a client's `key`, scoped to `scope` (who sends it and to
    /// which resource): JetStream's duplicate window spans the whole stream, so the same key sent by
    /// another caller, or for another command, must not count as a repeat of this one.
    pub fn idempotent(&mut self, scope: &str, key: &str) {
        let mut digest = Sha256::new();
        for part in [self.actor.as_str(), scope, key] {
            digest.update(part.len().to_be_bytes());
            digest.update(part.as_bytes());
        }
        self.idempotency_key = Some(format!("idem-{}", hex::encode(digest.finalize())));
    }
}

/// Now, to the microsecond: what PostgreSQL keeps, so a state folded from the log and the same state read
/// back from a read-model row are equal.
pub fn now_micros() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

/// A command that became (or had already become) an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Committed {
    /// The event's position in the log.
    pub seq: u64,
    /// The aggregate it belongs to (for a repeated create, the first one's id).
    pub aggregate_id: Uuid,
    /// True when the command had already been applied: nothing new was appended.
    pub duplicate: bool,
    /// The id of the event appended now (`None` for a repeat).
    pub event_id: Option<Uuid>,
}

/// Why a command did not become an event.
#[derive(Debug, Error)]
pub enum CommandError {
    /// A rule refused it.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// Other writers kept changing the aggregate.
    #[error(
        "the {aggregate} kept changing while this command was decided ({attempts} attempts); try again"
    )]
    Conflict {
        /// Which kind of aggregate.
        aggregate: &'static str,
        /// How many attempts were made.
        attempts: usize,
    },
    /// The aggregate's history holds an event this build cannot fold (the projector dead-lettered it):
    /// no command is decided on a state that passed over a fact.
    #[error("the history of this {aggregate} holds an event that cannot be folded, at seq {seq}")]
    Corrupt {
        /// Which kind of aggregate.
        aggregate: &'static str,
        /// The sequence of the first event that cannot be folded.
        seq: u64,
        /// Why it cannot (for the log and admins; not for the public answer).
        reason: String,
    },
    /// The log failed.
    #[error(transparent)]
    Log(#[from] LogError),
}

/// Folds `events` onto `folded`, stopping at the first one that cannot be folded: no command is
/// decided on a state that passed over a fact.
pub(crate) fn fold_on<A: Aggregate>(
    subjects: &Subjects,
    folded: &mut Folded<A>,
    events: &[RawEvent],
) -> Result<(), CommandError> {
    let replay = Replay::new(subjects.clone(), OnRejected::Stop);
    for raw in events {
        replay
            .feed_stored(folded, raw.seq, &raw.subject, &raw.payload)
            .map_err(|rejected| CommandError::Corrupt {
                aggregate: A::KIND.as_str(),
                seq: rejected.seq,
                reason: rejected.reason,
            })?;
    }
    Ok(())
}

/// An aggregate as folded from the log.
pub struct Loaded<A> {
    /// Its state (`None`: it does not exist).
    pub state: Option<A>,
    /// The sequence of its last event (0: none).
    pub last_seq: u64,
    /// Its events, undecoded: those after the snapshot it was loaded from, or all of them.
    pub events: Vec<RawEvent>,
    /// The sequence of the last event the snapshot it was loaded from covers (`None`: it was folded
    /// from its first event).
    pub snapshot: Option<u64>,
    /// The `Nats-Msg-Id`s of the events that snapshot covers.
    covered: Keys,
    /// Whether `events` and `covered` hold the key of every event of its history (false for a
    /// state a caller knows, whose events are not at hand).
    whole: bool,
}

impl<A> Loaded<A> {
    /// A state a caller already knows, folded up to `last_seq` (its events are not at hand).
    fn known(state: Option<A>, last_seq: u64) -> Self {
        Self {
            state,
            last_seq,
            events: Vec::new(),
            snapshot: None,
            covered: Keys::default(),
            whole: false,
        }
    }

    /// Whether it is worth keeping for the next command ([`crate::recent`]): it holds the key of
    /// every event of its history, and few (a long history is loaded from its snapshot again, which
    /// a command past it saves anew; its keys are not kept over and over in memory).
    fn worth_keeping(&self) -> bool {
        self.whole
            && self.state.is_some()
            && self.events.len() <= KEPT_EVENTS
            && self.covered.len() <= KEPT_COVERED
    }

    /// The history of an aggregate that does not exist yet.
    fn none() -> Self {
        Self {
            whole: true,
            ..Self::known(None, 0)
        }
    }

    /// This state moved on by `event` (occurred at `at`), appended after its last one as `raw` (its
    /// key kept, not its payload: only the keys are looked at again). Folded as decided, not decoded
    /// back from its bytes: the bytes were encoded from it a moment ago.
    fn moved_on_by(self, raw: RawEvent, event: &A::Event, at: DateTime<Utc>) -> Option<Self>
    where
        A: Aggregate,
    {
        let state = A::apply(self.state, event, at).ok()?;
        let last_seq = raw.seq;
        let mut events = self.events;
        events.push(raw);
        Some(Self {
            state: Some(state),
            last_seq,
            events,
            ..self
        })
    }
}

impl EventLog {
    /// Folds aggregate `A` with `id` from its history: from its snapshot on, when one is stored
    /// and the log confirms it ([`crate::snapshot`]), and saving a new one (in the background) when
    /// more than [`crate::Snapshots::events_between`] events were folded past the last.
    pub async fn load<A: Aggregate>(&self, id: Uuid) -> Result<Loaded<A>, CommandError> {
        let subject = self.subjects().of(A::KIND, id);
        // The history first: one too short ever to be snapshotted (most are) is read whole in that
        // one round trip; a longer one's snapshot is read next.
        let (mut events, more) = self.batch_on(&subject, 1).await?;
        let stored = match self.snapshots() {
            Some(snapshots) if more || events.len() > snapshots.events_between() => {
                snapshots.read::<A>(id).await
            }
            _ => Stored::default(),
        };
        let (mut folded, covered, snapshot) = match self.trusted::<A>(&stored, id, &subject).await?
        {
            Some(snapshot) => {
                metrics::counter!("hive_snapshot_loads_total", "aggregate" => A::KIND.as_str())
                    .increment(1);
                // The events after it: among those read, when they were the whole history.
                if more {
                    events.clear();
                    self.read_on(&subject, snapshot.seq + 1, &mut events)
                        .await?;
                } else {
                    events.retain(|e| e.seq > snapshot.seq);
                }
                let folded = Folded {
                    id,
                    state: Some(snapshot.state),
                    last_seq: snapshot.seq,
                };
                (folded, snapshot.msg_ids, Some(snapshot.seq))
            }
            None => {
                if let Some(last) = events.last().filter(|_| more) {
                    let next = last.seq + 1;
                    self.read_on(&subject, next, &mut events).await?;
                }
                (Folded::<A>::new(id), Keys::default(), None)
            }
        };
        metrics::histogram!("hive_command_load_events", "aggregate" => A::KIND.as_str())
            .record(events.len() as f64);
        // An error at a bad event: no snapshot is ever saved past one.
        fold_on(self.subjects(), &mut folded, &events)?;
        if let (Some(snapshots), Some(state), Some(last)) =
            (self.snapshots(), &folded.state, events.last())
            && events.len() > snapshots.events_between()
        {
            match Record::of(id, state, last, covered.and(&events)) {
                Ok(record) => snapshots.save_behind(A::KIND, stored.revision, record),
                Err(e) => tracing::warn!(error = %e, "could not encode a snapshot"),
            }
        }
        Ok(Loaded {
            state: folded.state,
            last_seq: folded.last_seq,
            events,
            snapshot,
            covered,
            whole: true,
        })
    }

    /// The sequence of the event of `A`'s aggregate `id` appended under `key`, if any: looked for
    /// among the loaded events, and in the whole history only when the key may be older than the
    /// snapshot they were loaded from.
    async fn appended_under<A: Aggregate>(
        &self,
        loaded: &Loaded<A>,
        id: Uuid,
        key: &str,
    ) -> Result<Option<u64>, LogError> {
        let under = |e: &&RawEvent| e.msg_id.as_deref() == Some(key);
        if let Some(event) = loaded.events.iter().find(under) {
            return Ok(Some(event.seq));
        }
        if !loaded.covered.may_hold(key) {
            return Ok(None);
        }
        tracing::debug!("the key may be older than the snapshot: looking in the whole history");
        let history = self.history(A::KIND, id).await?;
        Ok(history.iter().find(under).map(|e| e.seq))
    }

    /// Decides `command` on aggregate `A` with `id` and appends the event.
    pub async fn execute<A: Aggregate>(
        &self,
        id: Uuid,
        ctx: &CommandContext,
        command: A::Command,
    ) -> Result<Committed, CommandError>
    where
        A::Command: Clone,
    {
        self.run::<A>(id, ctx, command, None).await
    }

    /// Like [`EventLog::execute`], deciding first on a state the caller already folded up to `last_seq`
    /// (a service that follows the log); on a lost race it reloads from the log like any command.
    pub async fn execute_on<A: Aggregate>(
        &self,
        id: Uuid,
        ctx: &CommandContext,
        command: A::Command,
        state: A,
        last_seq: u64,
    ) -> Result<Committed, CommandError>
    where
        A::Command: Clone,
    {
        let known = Loaded::known(Some(state), last_seq);
        self.run::<A>(id, ctx, command, Some(known)).await
    }

    /// Like [`EventLog::execute`] for a command that creates a new aggregate under a fresh id: it skips
    /// loading a history that cannot exist (if the id is taken after all, it falls back to a full load).
    pub async fn create<A: Aggregate>(
        &self,
        id: Uuid,
        ctx: &CommandContext,
        command: A::Command,
    ) -> Result<Committed, CommandError>
    where
        A::Command: Clone,
    {
        self.run::<A>(id, ctx, command, Some(Loaded::none())).await
    }

    /// The append boundary: its span carries the aggregate, the actor and the flow. A refusal (a rule,
    /// or other writers winning every attempt) is the command's answer, not a failure of the hive: it
    /// is logged at debug; a log that failed or a history that cannot be folded at error.
    #[instrument(name = "append", skip(self, ctx, command, known), fields(aggregate = A::KIND.as_str(), %id, actor = %ctx.actor, correlation_id = %ctx.correlation_id))]
    async fn run<A: Aggregate>(
        &self,
        id: Uuid,
        ctx: &CommandContext,
        command: A::Command,
        known: Option<Loaded<A>>,
    ) -> Result<Committed, CommandError>
    where
        A::Command: Clone,
    {
        let result = self.decide_and_append(id, ctx, command, known).await;
        match &result {
            Err(e @ (CommandError::Domain(_) | CommandError::Conflict { .. })) => {
                tracing::debug!(error = %e, "refused");
            }
            Err(e @ (CommandError::Corrupt { .. } | CommandError::Log(_))) => {
                tracing::error!(error = %e, "not appended");
            }
            Ok(_) => {}
        }
        result
    }

    async fn decide_and_append<A: Aggregate>(
        &self,
        id: Uuid,
        ctx: &CommandContext,
        command: A::Command,
        mut known: Option<Loaded<A>>,
    ) -> Result<Committed, CommandError>
    where
        A::Command: Clone,
    {
        let subject = self.subjects().of(A::KIND, id);
        let key = ctx.idempotency_key.as_deref();
        // A state kept from the last command is a guess ([`crate::recent`]): tried once, and not
        // counted among the attempts (a guess that was behind is no race lost).
        let mut guess = known.is_none();
        let mut attempts = 0;
        while attempts < self.command_attempts() {
            let kept = match guess {
                true => self.recent().take::<Loaded<A>>(id),
                false => None,
            };
            let from_kept = kept.is_some();
            if !from_kept {
                attempts += 1;
            }
            let (loaded, from) = match (known.take(), kept) {
                (Some(known), _) => (known, "caller"),
                (None, Some(kept)) => (kept, "kept"),
                (None, None) => (self.load::<A>(id).await?, "log"),
            };
            metrics::counter!("hive_command_states_total", "aggregate" => A::KIND.as_str(), "from" => from)
                .increment(1);
            if let Some(key) = key
                && let Some(seq) = self.appended_under(&loaded, id, key).await?
            {
                self.keep(id, loaded);
                return Ok(Committed {
                    seq,
                    aggregate_id: id,
                    duplicate: true,
                    event_id: None,
                });
            }
            let event = match A::decide(loaded.state.as_ref(), command.clone()) {
                Ok(event) => event,
                Err(refused) if from_kept => {
                    // The kept state may be behind: the log's answers.
                    tracing::debug!(error = %refused, "refused on the kept state; deciding on the log's");
                    guess = false;
                    continue;
                }
                Err(refused) => {
                    self.keep(id, loaded);
                    return Err(refused.into());
                }
            };
            let meta = EventMeta::new(
                ctx.now,
                ctx.correlation_id,
                ctx.causation_id,
                ctx.actor.clone(),
            );
            let payload = Bytes::from(encode(&meta, A::KIND, id, &event));
            // Acknowledged, the state it leaves is kept at once, before the store's sync: another
            // part of this process that follows the log (the scheduler) may append the next event
            // within the sync's time, and moves the kept state on only from the one it follows.
            let appended = self
                .append_unsynced(&subject, loaded.last_seq, key, payload)
                .await;
            if let Ok(appended) = &appended {
                if !appended.duplicate {
                    let raw = RawEvent {
                        seq: appended.seq,
                        subject: subject.clone(),
                        payload: Bytes::new(),
                        msg_id: key.map(str::to_owned),
                        pending: 0,
                    };
                    self.moved_on(id, loaded, raw, &event, ctx.now);
                }
                if !ctx.before_sync {
                    self.synced().await?;
                }
            }
            match appended {
                Ok(appended) if appended.duplicate => {
                    return self.first_answer(appended.seq, id).await;
                }
                Ok(appended) => {
                    tracing::debug!(seq = appended.seq, event = event.event_type(), "appended");
                    metrics::counter!("hive_commands_appended_total", "aggregate" => A::KIND.as_str())
                        .increment(1);
                    return Ok(Committed {
                        seq: appended.seq,
                        aggregate_id: id,
                        duplicate: false,
                        event_id: Some(meta.event_id.as_uuid()),
                    });
                }
                Err(AppendError::Conflict) => {
                    guess = false;
                    tracing::debug!("lost the race; deciding again");
                    metrics::counter!("hive_append_conflicts_total", "aggregate" => A::KIND.as_str())
                        .increment(1);
                }
                Err(AppendError::Log(e)) => return Err(e.into()),
            }
        }
        Err(CommandError::Conflict {
            aggregate: A::KIND.as_str(),
            attempts: self.command_attempts(),
        })
    }

    /// The sequence of the last event of the state of `A`'s aggregate `id` the command path keeps
    /// for its next command ([`crate::recent`]), if it keeps one.
    pub fn kept<A: Aggregate>(&self, id: Uuid) -> Option<u64> {
        self.recent().peek(id, |kept: &Loaded<A>| kept.last_seq)
    }

    /// Keeps `loaded` for the next command on aggregate `id`, when it holds its whole history in
    /// little room ([`Loaded::worth_keeping`]).
    fn keep<A: Aggregate>(&self, id: Uuid, mut loaded: Loaded<A>) {
        if loaded.worth_keeping() {
            // Their keys are looked at again, never their payloads (a result may be a megabyte).
            for event in &mut loaded.events {
                event.payload = Bytes::new();
            }
            self.recent().put(id, loaded);
        }
    }

    /// Keeps the state `raw` (just appended after `loaded`'s last event) leaves aggregate `id` in:
    /// `loaded` moved on by it, or for a state a caller knew (not its history), the state kept
    /// before, if it was at the same event.
    fn moved_on<A: Aggregate>(
        &self,
        id: Uuid,
        loaded: Loaded<A>,
        raw: RawEvent,
        event: &A::Event,
        at: DateTime<Utc>,
    ) {
        let before = match loaded.whole {
            true => Some(loaded),
            false => self
                .recent()
                .take::<Loaded<A>>(id)
                .filter(|kept| kept.last_seq == loaded.last_seq),
        };
        if let Some(after) = before.and_then(|before| before.moved_on_by(raw, event, at)) {
            self.keep(id, after);
        }
    }

    /// The answer a repeated command gets: the first event's seq and aggregate.
    async fn first_answer(&self, seq: u64, fallback: Uuid) -> Result<Committed, CommandError> {
        let aggregate_id = self
            .get(seq)
            .await?
            .and_then(|e| self.subjects().parse(&e.subject))
            .map_or(fallback, |(_, id)| id);
        Ok(Committed {
            seq,
            aggregate_id,
            duplicate: true,
            event_id: None,
        })
    }
}
