//! An agent that began to drain stays draining through a loss (the flag is part of its folded state).
//! Rows already draining get it; a lost agent that drained before this migration is set right by
//! `hive projections rebuild` (`hive verify` names it).

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0004_draining_agents"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "ALTER TABLE agents ADD COLUMN draining boolean NOT NULL DEFAULT false; \
                 UPDATE agents SET draining = true WHERE status = 'draining'",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("ALTER TABLE agents DROP COLUMN draining")
            .await?;
        Ok(())
    }
}
