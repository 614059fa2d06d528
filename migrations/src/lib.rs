//! The schema history of Hive's read models. An applied migration is never edited: a change is a new
//! migration. The read models are derived data (they can be rebuilt from the log at any time), so each
//! migration is plain SQL, easy to read beside the entities in `hive-schema`.

pub use sea_orm_migration::prelude::*;

mod m0001_read_models;
mod m0002_pinned_tasks;
mod m0003_read_role;
mod m0004_draining_agents;
mod m0005_agent_tasks;
mod m0006_task_control;
mod m0007_task_search;
mod m0008_task_search_index;

/// Every migration, in order.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m0001_read_models::Migration),
            Box::new(m0002_pinned_tasks::Migration),
            Box::new(m0003_read_role::Migration),
            Box::new(m0004_draining_agents::Migration),
            Box::new(m0005_agent_tasks::Migration),
            Box::new(m0006_task_control::Migration),
            Box::new(m0007_task_search::Migration),
            Box::new(m0008_task_search_index::Migration),
        ]
    }
}
