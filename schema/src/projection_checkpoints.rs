//! The last stream sequence each projection has committed; written in the same transaction as its rows.
//! For the read models, also the stretch of the log their `agent_tasks` index covers: the events after
//! `agent_tasks_after` up to `agent_tasks_through` (normally 0 and the checkpoint itself; see
//! migration m0005).
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "projection_checkpoints")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub name: String,
    pub seq: i64,
    pub updated_at: DateTimeUtc,
    pub agent_tasks_after: i64,
    pub agent_tasks_through: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
