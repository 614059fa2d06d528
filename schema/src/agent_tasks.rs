//! Every task each agent ever held: a row per (agent, task) with the first event that named the agent
//! as the task's holder (an assignment). Kept by the projector in the same transaction as the other
//! read models, so that an agent's audit reads the tasks it held instead of scanning the log. The
//! range of the log it covers is in the projection's checkpoint row (`agent_tasks_after`,
//! `agent_tasks_through`).
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "agent_tasks")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub agent_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub task_id: Uuid,
    pub first_seq: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
