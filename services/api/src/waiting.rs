//! `waiting_reason`: why each task of an answer is not running, as the domain decides it
//! ([`Lifecycle::waiting_reason`]) from the task's row and what the read models say of its
//! dependencies and of the agents that could take it. Read once per answer, for all its tasks.

use std::collections::HashMap;
use std::sync::Arc;

use hive_events::agent::AgentStatus;
use hive_events::task::{Candidate, TaskStatus};
use hive_events::{AgentId, Capability, TaskId};
use hive_schema::{agents, tasks};
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, FromQueryResult, QueryFilter, QuerySelect,
};
use uuid::Uuid;

use crate::AppState;
use crate::error::ApiResult;
use crate::views::{TaskView, holding_states, task_of_row};

/// What the reasons of a set of tasks read: their dependencies' statuses, and the agents.
pub struct Facts {
    dependencies: HashMap<Uuid, TaskStatus>,
    agents: Arc<Vec<Candidate>>,
}

/// The ready agents, with their room, as the read models stood at a checkpoint: shared by every read
/// at that checkpoint (a client polling its queued task reads them once each time the projection
/// moves, not once a poll).
#[derive(Default)]
pub struct ReadyAgents(std::sync::Mutex<Option<(u64, Arc<Vec<Candidate>>)>>);

impl ReadyAgents {
    /// The ready agents as of `checkpoint` or later: kept, or read (and kept) when the projection
    /// moved since.
    async fn at(
        &self,
        db: &impl ConnectionTrait,
        checkpoint: u64,
    ) -> ApiResult<Arc<Vec<Candidate>>> {
        let kept = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some((at, ready)) = kept
            && at == checkpoint
        {
            return Ok(ready);
        }
        let ready =
            Arc::new(candidates(db, agents::Column::Status.eq(AgentStatus::Ready.as_str())).await?);
        // Read after `checkpoint` was: as of it or later, never older.
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((checkpoint, ready.clone()));
        Ok(ready)
    }
}

/// An agent as a waiting reason reads it: with its load (the open tasks it holds).
#[derive(FromQueryResult)]
struct Loaded {
    id: Uuid,
    status: String,
    capabilities: Vec<String>,
    max_concurrent_tasks: i32,
    load: i64,
}

impl Facts {
    /// The facts `rows` need: their open dependencies (of the waiting and blocked ones) and, when one
    /// is queued, the ready agents and those a queued one is pinned to, with their loads.
    pub async fn of(state: &AppState, rows: &[tasks::Model]) -> ApiResult<Self> {
        let db = &state.db;
        // Before any read: what is read is as of it or later.
        let checkpoint = state.progress.checkpoint();
        let waiting = [TaskStatus::Waiting.as_str(), TaskStatus::Blocked.as_str()];
        let wanted: Vec<Uuid> = rows
            .iter()
            .filter(|r| waiting.contains(&r.status.as_str()))
            .flat_map(|r| r.depends_on.iter().copied())
            .collect();
        let mut dependencies = HashMap::new();
        for chunk in wanted.chunks(10_000) {
            let found = tasks::Entity::find()
                .select_only()
                .column(tasks::Column::Id)
                .column(tasks::Column::Status)
                .filter(tasks::Column::Id.is_in(chunk.iter().copied()))
                .into_tuple::<(Uuid, String)>()
                .all(db)
                .await?;
            for (id, status) in found {
                if let Some(status) = TaskStatus::parse(&status) {
                    dependencies.insert(id, status);
                }
            }
        }
        let queued: Vec<&tasks::Model> = rows
            .iter()
            .filter(|r| r.status == TaskStatus::Queued.as_str())
            .collect();
        let mut agents = Arc::default();
        if !queued.is_empty() {
            agents = state.ready_agents.at(db, checkpoint).await?;
            // Pinned to an agent that is not ready: that one too (why the task waits is its state).
            let missing: Vec<Uuid> = queued
                .iter()
                .filter_map(|r| r.pinned_agent)
                .filter(|pinned| !agents.iter().any(|a| a.id.as_uuid() == *pinned))
                .collect();
            if !missing.is_empty() {
                let pinned = candidates(db, agents::Column::Id.is_in(missing)).await?;
                agents = Arc::new(agents.iter().cloned().chain(pinned).collect());
            }
        }
        Ok(Self {
            dependencies,
            agents,
        })
    }

    /// The view of `row`, with why it is not running.
    pub fn view(&self, row: tasks::Model) -> ApiResult<TaskView> {
        let (_, task) = task_of_row(row.clone())?;
        let mut view = TaskView::try_from(row)?;
        // A dependency the read models do not hold yet is still open.
        let dependency = |task: TaskId| {
            self.dependencies
                .get(&task.as_uuid())
                .copied()
                .unwrap_or(TaskStatus::Waiting)
        };
        view.waiting_reason =
            task.lifecycle
                .waiting_reason(chrono::Utc::now(), dependency, &self.agents);
        Ok(view)
    }
}

/// The agents `filter` selects, with whether each has room (its tasks held against its maximum).
async fn candidates(
    db: &impl ConnectionTrait,
    filter: sea_orm::sea_query::SimpleExpr,
) -> ApiResult<Vec<Candidate>> {
    // Each agent's load in the same statement (one round trip, one snapshot): a queued task's read
    // under load waited for two.
    let load = Query::select()
        .expr(Expr::col((tasks::Entity, tasks::Column::Id)).count())
        .from(tasks::Entity)
        .and_where(
            Expr::col((tasks::Entity, tasks::Column::AgentId))
                .equals((agents::Entity, agents::Column::Id)),
        )
        .and_where(Expr::col((tasks::Entity, tasks::Column::Status)).is_in(holding_states()))
        .to_owned();
    let rows = agents::Entity::find()
        .select_only()
        .columns([
            agents::Column::Id,
            agents::Column::Status,
            agents::Column::Capabilities,
            agents::Column::MaxConcurrentTasks,
        ])
        .column_as(Expr::SubQuery(None, Box::new(load.into())), "load")
        .filter(filter)
        .into_model::<Loaded>()
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|agent| {
            Some(Candidate {
                id: AgentId::from_uuid(agent.id),
                status: AgentStatus::parse(&agent.status)?,
                capabilities: agent
                    .capabilities
                    .iter()
                    .filter_map(|c| Capability::new(c.as_str()).ok())
                    .collect(),
                has_room: agent.load < i64::from(agent.max_concurrent_tasks),
            })
        })
        .collect())
}
