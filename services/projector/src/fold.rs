//! The whole log folded in memory into the rows the read models should hold: what the projector must
//! have written, computed the simplest way. Tests compare it with the tables; `verify` builds on it.

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

/// The expected contents of the read models.
#[derive(Debug, Default, PartialEq)]
pub struct Folded {
    /// Expected `agents` rows by id.
    pub agents: BTreeMap<Uuid, agents::Model>,
    /// Expected `tasks` rows by id.
    pub tasks: BTreeMap<Uuid, tasks::Model>,
    /// Expected `projects` rows by id.
    pub projects: BTreeMap<Uuid, projects::Model>,
    /// Expected `status_counts` (kind, status) → count, zero counts left out.
    pub counts: BTreeMap<(String, String), i64>,
    /// Sequences that must be dead letters.
    pub dead: BTreeSet<u64>,
    /// The last sequence folded.
    pub last_seq: u64,
}

struct States<A> {
    states: BTreeMap<Uuid, (A, u64)>,
}

impl<A: ReadModel> States<A> {
    fn apply(
        &mut self,
        id: Uuid,
        seq: u64,
        event: &A::Event,
        at: chrono::DateTime<chrono::Utc>,
    ) -> bool {
        let current = self.states.get(&id).map(|(s, _)| s.clone());
        match A::apply(current, event, at) {
            Ok(next) => {
                self.states.insert(id, (next, seq));
                true
            }
            Err(_) => false,
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

impl<A> Default for States<A> {
    fn default() -> Self {
        Self {
            states: BTreeMap::new(),
        }
    }
}

/// Folds `events` (the log in order) into the rows the read models should hold.
pub fn fold_log(events: &[RawEvent], subjects: &Subjects) -> Folded {
    let mut agents = States::<Agent>::default();
    let mut tasks = States::<Task>::default();
    let mut projects = States::<Project>::default();
    let mut folded = Folded::default();
    for raw in events {
        folded.last_seq = raw.seq;
        let applied = subjects
            .parse(&raw.subject)
            .and_then(|expected| decode(&raw.payload, Some(expected)).ok())
            .is_some_and(|e| {
                let (id, at) = (e.aggregate_id, e.meta.occurred_at);
                match &e.event {
                    DomainEvent::Agent(ev) => agents.apply(id, raw.seq, ev, at),
                    DomainEvent::Task(ev) => tasks.apply(id, raw.seq, ev, at),
                    DomainEvent::Project(ev) => projects.apply(id, raw.seq, ev, at),
                }
            });
        if !applied {
            folded.dead.insert(raw.seq);
        }
    }
    folded.agents = agents.rows(&mut folded.counts);
    folded.tasks = tasks.rows(&mut folded.counts);
    folded.projects = projects.rows(&mut folded.counts);
    folded
}

/// The same, read from what the read models hold now, for comparison with [`fold_log`].
pub async fn read_models(
    db: &sea_orm::DatabaseConnection,
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
