//! Agents' labels (AgentRegistered v2), and indexes for finding tasks (`GET /api/v1/tasks`
//! filters): labels (containment), a required
//! capability, the type, the creation time, and text in the title (trigrams, from the `pg_trgm`
//! extension that PostgreSQL ships; trusted, so the database's owner may create it).
//!
//! The label and capability indexes leave out the rows with none (most tasks, in a fleet that does not
//! use them): a task's every event rewrites its row, and an index it cannot match costs on every write.
//! The queries say `<> '{}'` beside their containment so that the planner may use them.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0007_task_search"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // The extension lives in `public`, named in full: a rebuild runs these migrations again with
        // its shadow schema alone on the search path.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public;
                 CREATE INDEX tasks_labels ON tasks USING gin (labels jsonb_path_ops)
                   WHERE labels <> '{}'::jsonb;
                 CREATE INDEX tasks_required_capabilities ON tasks USING gin (required_capabilities)
                   WHERE required_capabilities <> '{}';
                 CREATE INDEX tasks_task_type ON tasks (task_type, id) WHERE task_type IS NOT NULL;
                 CREATE INDEX tasks_created_at ON tasks (created_at, id);
                 CREATE INDEX tasks_title_trigrams ON tasks USING gin (title public.gin_trgm_ops);
                 ALTER TABLE agents ADD COLUMN labels jsonb NOT NULL DEFAULT '{}';",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "DROP INDEX tasks_labels, tasks_required_capabilities, tasks_task_type,
                   tasks_created_at, tasks_title_trigrams;
                 ALTER TABLE agents DROP COLUMN labels",
            )
            .await?;
        Ok(())
    }
}
