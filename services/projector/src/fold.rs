//! The log folded in memory into the rows the read models should hold: what the projector must have
//! written, computed the simplest way. `hive verify` compares it with the tables ([`crate::verify`]), and
//! a rebuild writes it in bulk ([`crate::rebuild`]).

use std::collections::{BTreeMap, BTreeSet};

use hive_eventlog::RawEvent;
use hive_events::agent::Agent;
use hive_events::project::Project;
use hive_events::replay::{Fed, Fold, OnRejected, Replay};
use hive_events::subject::Subjects;
use hive_events::task::Task;
use hive_events::{DomainEvent, Envelope};
use hive_schema::{agents, projects, tasks};
use uuid::Uuid;

use crate::agent_tasks::{self, Holdings};
use crate::rows::ReadModel;

/// The contents of the read models: expected (from the log) or actual (from the tables).
#[derive(Debug, Default, PartialEq)]
pub struct Folded {
    /// `agents` rows by id.
    pub agents: BTreeMap<Uuid, agents::Model>,
    /// `tasks` rows by id.
    pub tasks: BTreeMap<Uuid, tasks::Model>,
    /// `projects` rows by id.
    pub projects: BTreeMap<Uuid, projects::Model>,
    /// `status_counts` (kind, status) → count, zero counts left out.
    pub counts: BTreeMap<(String, String), i64>,
    /// Sequences that are dead letters.
    pub dead: BTreeSet<u64>,
    /// The last sequence folded (the checkpoint).
    pub last_seq: u64,
    /// `agent_tasks`: the tasks each agent held, as the events the index covers name them.
    pub agent_tasks: Holdings,
    /// The index covers the events after this sequence ...
    pub agent_tasks_after: u64,
    /// ... up to and including this one.
    pub agent_tasks_through: u64,
}

/// An event that cannot be applied, and why (the same reasons the projector gives).
#[derive(Clone, Debug, PartialEq)]
pub struct DeadLetter {
    /// Its sequence.
    pub seq: u64,
    /// Its subject.
    pub subject: String,
    /// Its bytes.
    pub payload: Vec<u8>,
    /// Why.
    pub reason: String,
}

struct States<A> {
    states: BTreeMap<Uuid, (A, u64)>,
}

impl<A> Default for States<A> {
    fn default() -> Self {
        Self {
            states: BTreeMap::new(),
        }
    }
}

impl<A: ReadModel> States<A> {
    fn apply(&mut self, seq: u64, envelope: Envelope) -> Result<(), String> {
        let (id, at) = (envelope.aggregate_id, envelope.meta.occurred_at);
        let state = self.states.get(&id).map(|(state, _)| state.clone());
        let next = envelope.event.apply_to(state, at)?;
        self.states.insert(id, (next, seq));
        Ok(())
    }

    fn rows(
        self,
        counts: &mut BTreeMap<(String, String), i64>,
    ) -> BTreeMap<Uuid, <A::Entity as sea_orm::EntityTrait>::Model> {
        self.states
            .into_iter()
            .map(|(id, (state, seq))| {
                if let Some(kind) = A::COUNTED_AS {
                    *counts
                        .entry((kind.to_owned(), state.status().to_owned()))
                        .or_default() += 1;
                }
                (id, A::to_row(id, &state, seq))
            })
            .collect()
    }
}

/// Every aggregate's state, by kind, and the holdings the events in `indexed` name.
struct All {
    agents: States<Agent>,
    tasks: States<Task>,
    projects: States<Project>,
    holdings: Holdings,
    /// The events whose holdings the index keeps: after the first, up to the second.
    indexed: (u64, u64),
}

impl Fold for All {
    fn fold(&mut self, seq: u64, envelope: Envelope) -> Result<(), String> {
        // As the projector does: whether or not the fold applies it.
        if seq > self.indexed.0 && seq <= self.indexed.1 {
            agent_tasks::note(&mut self.holdings, seq, &envelope);
        }
        match envelope.event {
            DomainEvent::Agent(_) => self.agents.apply(seq, envelope),
            DomainEvent::Task(_) => self.tasks.apply(seq, envelope),
            DomainEvent::Project(_) => self.projects.apply(seq, envelope),
        }
    }
}

/// Folds the log one event at a time, in order.
pub struct Folder {
    replay: Replay,
    all: All,
    dead: Vec<DeadLetter>,
    last_seq: u64,
}

impl Folder {
    /// An empty fold of the log whose subjects are `subjects`.
    pub fn new(subjects: Subjects) -> Self {
        Self {
            // As the projector: an event that cannot be folded is a dead letter, and the fold goes on.
            replay: Replay::new(subjects, OnRejected::Skip),
            all: All {
                agents: States::default(),
                tasks: States::default(),
                projects: States::default(),
                holdings: Holdings::new(),
                indexed: (0, u64::MAX),
            },
            dead: Vec::new(),
            last_seq: 0,
        }
    }

    /// The same fold, stopping at `at`.
    pub fn until(mut self, at: hive_eventlog::audit::At) -> Self {
        self.replay = self.replay.until(at);
        self
    }

    /// The same fold, keeping in `agent_tasks` only the holdings the events after `after` up to
    /// `through` name: what an index that covers that stretch of the log holds.
    pub fn indexing(mut self, after: u64, through: u64) -> Self {
        self.all.indexed = (after, through);
        self
    }

    /// Folds the next event of the log; false when it lies past the fold's bound (nothing folded).
    pub fn apply(&mut self, raw: &RawEvent) -> bool {
        let fed = self
            .replay
            .feed_stored(&mut self.all, raw.seq, &raw.subject, &raw.payload);
        let rejected = match fed {
            Ok(Fed::Past) => return false,
            Ok(Fed::Folded) => None,
            Ok(Fed::Skipped(rejected)) | Err(rejected) => Some(rejected),
        };
        self.last_seq = raw.seq;
        if let Some(rejected) = rejected {
            self.dead.push(DeadLetter {
                seq: raw.seq,
                subject: raw.subject.clone(),
                payload: raw.payload.to_vec(),
                reason: rejected.reason,
            });
        }
        true
    }

    /// The last sequence folded.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The rows, and the dead letters with their reasons.
    pub fn finish(self) -> (Folded, Vec<DeadLetter>) {
        let (after, through) = self.all.indexed;
        let mut folded = Folded {
            dead: self.dead.iter().map(|d| d.seq).collect(),
            last_seq: self.last_seq,
            agent_tasks: self.all.holdings,
            agent_tasks_after: after,
            agent_tasks_through: through.min(self.last_seq),
            ..Default::default()
        };
        folded.agents = self.all.agents.rows(&mut folded.counts);
        folded.tasks = self.all.tasks.rows(&mut folded.counts);
        folded.projects = self.all.projects.rows(&mut folded.counts);
        (folded, self.dead)
    }
}

/// The log folded from the start up to `at`: through sequence `N`, or up to the first event that
/// happened after a time.
pub async fn fold_until(
    log: &hive_eventlog::EventLog,
    at: hive_eventlog::audit::At,
) -> Result<Folded, hive_eventlog::LogError> {
    fold_into(log, Folder::new(log.subjects().clone()), at).await
}

/// The log folded from the start up to `at` into `folder`.
pub async fn fold_into(
    log: &hive_eventlog::EventLog,
    folder: Folder,
    at: hive_eventlog::audit::At,
) -> Result<Folded, hive_eventlog::LogError> {
    use futures::StreamExt;
    use hive_eventlog::audit::At;
    let mut folder = folder.until(at);
    let head = log.last_seq().await?;
    let last = match at {
        At::Seq(seq) => seq.min(head),
        At::Time(_) | At::End => head,
    };
    if last == 0 {
        return Ok(folder.finish().0);
    }
    let mut events = Box::pin(log.read_from(1).await?);
    while let Some(event) = events.next().await {
        let event = event?;
        if !folder.apply(&event) || event.seq >= last {
            break;
        }
    }
    Ok(folder.finish().0)
}

/// Folds `events` (the log in order) into the rows the read models should hold.
pub fn fold_log(events: &[RawEvent], subjects: &Subjects) -> Folded {
    let mut folder = Folder::new(subjects.clone());
    for raw in events {
        folder.apply(raw);
    }
    folder.finish().0
}

/// What the read models of `projection` hold now (read through `db`, a transaction for a consistent
/// snapshot), in the shape of [`fold_log`].
pub async fn read_models(
    db: &impl sea_orm::ConnectionTrait,
    projection: &str,
) -> Result<Folded, sea_orm::DbErr> {
    use hive_schema::{agent_tasks, dead_letters, projection_checkpoints, status_counts};
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let mut folded = Folded {
        agents: agents::Entity::find()
            .all(db)
            .await?
            .into_iter()
            .map(|r| (r.id, r))
            .collect(),
        tasks: tasks::Entity::find()
            .all(db)
            .await?
            .into_iter()
            .map(|r| (r.id, r))
            .collect(),
        projects: projects::Entity::find()
            .all(db)
            .await?
            .into_iter()
            .map(|r| (r.id, r))
            .collect(),
        ..Default::default()
    };
    folded.counts = status_counts::Entity::find()
        .all(db)
        .await?
        .into_iter()
        .filter(|r| r.count != 0)
        .map(|r| ((r.kind, r.status), r.count))
        .collect();
    folded.dead = dead_letters::Entity::find()
        .filter(dead_letters::Column::Projection.eq(projection))
        .all(db)
        .await?
        .into_iter()
        .map(|r| r.seq as u64)
        .collect();
    folded.agent_tasks = agent_tasks::Entity::find()
        .all(db)
        .await?
        .into_iter()
        .map(|r| ((r.agent_id, r.task_id), r.first_seq as u64))
        .collect();
    if let Some(checkpoint) = projection_checkpoints::Entity::find_by_id(projection.to_owned())
        .one(db)
        .await?
    {
        folded.last_seq = checkpoint.seq as u64;
        folded.agent_tasks_after = checkpoint.agent_tasks_after as u64;
        folded.agent_tasks_through = checkpoint.agent_tasks_through as u64;
    }
    Ok(folded)
}
