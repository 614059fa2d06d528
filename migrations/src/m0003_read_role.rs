//! `hive_read`: a role that may only read the read models, for the API (least privilege). It cannot log
//! in; a login role is made a member of it (`hive migrate` does it for `HIVE_API_DATABASE_URL`'s user).
//! Tables the owner creates later (new migrations, a rebuild's shadow tables that are swapped in) are
//! readable by it too.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0003_read_role"
    }
}

/// Roles belong to the whole server, and databases migrating at once (tests) race to create one.
const CREATE_ROLE: &str = "DO $$ BEGIN \
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'hive_read') THEN \
        CREATE ROLE hive_read NOLOGIN; \
    END IF; \
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; \
END $$";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(CREATE_ROLE).await?;
        db.execute_unprepared(
            "GRANT USAGE ON SCHEMA public TO hive_read; \
             GRANT SELECT ON ALL TABLES IN SCHEMA public TO hive_read; \
             ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO hive_read",
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "ALTER DEFAULT PRIVILEGES REVOKE SELECT ON TABLES FROM hive_read; \
                 REVOKE SELECT ON ALL TABLES IN SCHEMA public FROM hive_read; \
                 REVOKE USAGE ON SCHEMA public FROM hive_read",
            )
            .await?;
        Ok(())
    }
}
