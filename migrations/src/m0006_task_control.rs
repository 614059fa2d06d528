//! Control of running work (TaskCreated v3, TaskCancelled v2): a task's labels, `not_before`, time
//! limits and grace, and who cancelled it. (When a run started and was last heard from are not kept:
//! only the scheduler reads them, folded from the log, and a column added to a database with read
//! models would hold them wrong for the tasks running at the upgrade.)

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0006_task_control"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "ALTER TABLE tasks
                   ADD COLUMN labels jsonb NOT NULL DEFAULT '{}',
                   ADD COLUMN not_before timestamptz,
                   ADD COLUMN timeout_secs integer,
                   ADD COLUMN heartbeat_timeout_secs integer,
                   ADD COLUMN cancel_grace_secs integer NOT NULL DEFAULT 10,
                   ADD COLUMN cancelled_by text",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "ALTER TABLE tasks
                   DROP COLUMN labels, DROP COLUMN not_before, DROP COLUMN timeout_secs,
                   DROP COLUMN heartbeat_timeout_secs, DROP COLUMN cancel_grace_secs,
                   DROP COLUMN cancelled_by",
            )
            .await?;
        Ok(())
    }
}
