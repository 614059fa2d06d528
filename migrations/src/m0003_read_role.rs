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

/// Roles belong to the whole server, and databases migrating at once (tests) race to create one. An
/// owner without the right to create roles (a managed database) gets a notice, not a failure: the
/// migration must not stop the projector, which migrates at start; the API then reads as the owner.
/// The default privileges cover tables created later by the role that migrates, which is the one
/// that rebuilds.
const READ_ROLE: &str = "DO $$ BEGIN \
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'hive_read') THEN \
        BEGIN \
            CREATE ROLE hive_read NOLOGIN; \
        EXCEPTION \
            WHEN duplicate_object OR unique_violation THEN NULL; \
            WHEN insufficient_privilege THEN \
                RAISE NOTICE 'no right to create role hive_read: the API cannot read through it'; \
                RETURN; \
        END; \
    END IF; \
    GRANT USAGE ON SCHEMA public TO hive_read; \
    GRANT SELECT ON ALL TABLES IN SCHEMA public TO hive_read; \
    ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO hive_read; \
END $$";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(READ_ROLE)
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
