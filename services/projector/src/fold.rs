//! The log folded in memory into the rows the read models should hold: what the projector must have
//! written, computed the simplest way. `hive verify` compares it with the tables ([`crate::verify`]), and
//! a rebuild writes it in bulk ([`crate::rebuild`]).

use std::collections::{BTreeMap, BTreeSet};

use hive_eventlog::RawEvent;
use hive_events::DomainEvent;
use hive_events::agent::Agent;
use hive_events::envelope::decode;
use hive_events::project::Project;
use hive_events::subject::Subjects;
use hive_events::task::Task;
use hive_schema::{agents, projects, tasks};
use uuid::Uuid;

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
    fn apply(
        &mut self,
        id: Uuid,
        seq: u64,
        event: &A::Event,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), String> {
        let current = self.states.remove(&id);
        let (state, last) = match current {
            Some((state, last)) => (Some(state), last),
            None => (None, 0),
        };
        match A::apply(state.clone(), event, at) {
            Ok(next) => {
                self.states.insert(id, (next, seq));
                Ok(())
            }
            Err(e) => {
                if let Some(state) = state {
                    self.states.insert(id, (state, last));
                }
                Err(e.to_string())
            }
        }
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

/// Folds the log one event at a time, in order.
pub struct Folder {
    subjects: Subjects,
    agents: States<Agent>,
    tasks: States<Task>,
    projects: States<Project>,
    dead: Vec<DeadLetter>,
    last_seq: u64,
}

impl Folder {
    /// An empty fold of the log whose subjects are `subjects`.
    pub fn new(subjects: Subjects) -> Self {
        Self {
            subjects,
            agents: States::default(),
            tasks: States::default(),
            projects: States::default(),
            dead: Vec::new(),
            last_seq: 0,
        }
    }

    /// Folds the next event of the log.
    pub fn apply(&mut self, raw: &RawEvent) {
        self.last_seq = raw.seq;
        let applied = self
            .subjects
            .parse(&raw.subject)
            .ok_or_else(|| format!("subject {} names no aggregate", raw.subject))
            .and_then(|expected| decode(&raw.payload, Some(expected)).map_err(|e| e.to_string()))
            .and_then(|e| {
                let (id, at) = (e.aggregate_id, e.meta.occurred_at);
                match &e.event {
                    DomainEvent::Agent(ev) => self.agents.apply(id, raw.seq, ev, at),
                    DomainEvent::Task(ev) => self.tasks.apply(id, raw.seq, ev, at),
                    DomainEvent::Project(ev) => self.projects.apply(id, raw.seq, ev, at),
                }
            });
        if let Err(reason) = applied {
            self.dead.push(DeadLetter {
                seq: raw.seq,
                subject: raw.subject.clone(),
                payload: raw.payload.to_vec(),
                reason,
            });
        }
    }

    /// The last sequence folded.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The rows, and the dead letters with their reasons.
    pub fn finish(self) -> (Folded, Vec<DeadLetter>) {
        let mut folded = Folded {
            dead: self.dead.iter().map(|d| d.seq).collect(),
            last_seq: self.last_seq,
            ..Default::default()
        };
        folded.agents = self.agents.rows(&mut folded.counts);
        folded.tasks = self.tasks.rows(&mut folded.counts);
        folded.projects = self.projects.rows(&mut folded.counts);
        (folded, self.dead)
    }
}

/// The log folded from the start up to `at`: through sequence `N`, or up to the first event that
/// happened after a time.
pub async fn fold_until(
    log: &hive_eventlog::EventLog,
    at: hive_eventlog::audit::At,
) -> Result<Folded, hive_eventlog::LogError> {
    use futures::StreamExt;
    use hive_eventlog::audit::At;
    let mut folder = Folder::new(log.subjects().clone());
    let head = log.last_seq().await?;
    let last = match at {
        At::Seq(seq) => seq.min(head),
        At::Time(_) => head,
    };
    if last == 0 {
        return Ok(folder.finish().0);
    }
    let mut events = Box::pin(log.read_from(1).await?);
    while let Some(event) = events.next().await {
        let event = event?;
        if let At::Time(time) = at
            && hive_events::envelope::decode(&event.payload, None)
                .is_ok_and(|e| e.meta.occurred_at > time)
        {
            break;
        }
        folder.apply(&event);
        if event.seq >= last {
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
    use hive_schema::{dead_letters, projection_checkpoints, status_counts};
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
    folded.last_seq = projection_checkpoints::Entity::find_by_id(projection.to_owned())
        .one(db)
        .await?
        .map_or(0, |r| r.seq as u64);
    Ok(folded)
}
