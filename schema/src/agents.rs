//! One row per agent: its folded state and the stream sequence of its last event.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize)]
#[sea_orm(table_name = "agents")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub name: Option<String>,
    pub agent_type: String,
    pub capabilities: Vec<String>,
    pub max_concurrent_tasks: i32,
    pub status: String,
    pub draining: bool,
    pub registered_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub last_seq: i64,
    pub labels: Json,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
