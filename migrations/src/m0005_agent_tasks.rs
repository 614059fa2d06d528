//! `agent_tasks`: every task each agent ever held (a row per agent and task, with the sequence of the
//! first assignment of the task to the agent), so that `hive audit agent` and
//! `GET /api/v1/agents/{id}/tasks` read an agent's tasks instead of scanning the log.
//!
//! Which stretch of the log the index covers is kept beside the checkpoint, in the same row and
//! transaction: the events after `agent_tasks_after` up to `agent_tasks_through`. A fresh database
//! (and every rebuild, whose shadow tables start empty) indexes from the start: 0. A database that
//! already holds read models gets an empty index here, so the index begins at its checkpoint: readers
//! scan the log up to `agent_tasks_after` for older work, until `hive projections rebuild` fills the
//! index and sets it to 0. The projector moves `agent_tasks_through` with each checkpoint it writes;
//! should a projector of an earlier version (which does not keep the index) move the checkpoint
//! meanwhile, the next batch finds `agent_tasks_through` behind it and begins the index again (empty)
//! after that gap, so the index holds exactly what the stretch it claims names.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0005_agent_tasks"
    }
}

/// The checkpoint table is altered first: its lock holds a running projector's next batch until this
/// migration commits, so no batch falls between the checkpoint read here and the index's first row.
const UP: &str = r#"
ALTER TABLE projection_checkpoints
    ADD COLUMN agent_tasks_after   bigint NOT NULL DEFAULT 0,
    ADD COLUMN agent_tasks_through bigint NOT NULL DEFAULT 0;
UPDATE projection_checkpoints SET agent_tasks_after = seq, agent_tasks_through = seq;

CREATE TABLE agent_tasks (
    agent_id  uuid NOT NULL,
    task_id   uuid NOT NULL,
    first_seq bigint NOT NULL,
    PRIMARY KEY (agent_id, task_id)
);
CREATE UNIQUE INDEX agent_tasks_in_order ON agent_tasks (agent_id, first_seq);
"#;

const DOWN: &str = r#"
DROP TABLE agent_tasks;
ALTER TABLE projection_checkpoints
    DROP COLUMN agent_tasks_after,
    DROP COLUMN agent_tasks_through;
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(UP).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(DOWN).await?;
        Ok(())
    }
}
