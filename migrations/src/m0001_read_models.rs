//! The first read models: agents, tasks, projects, status counts, checkpoints and dead letters.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m0001_read_models"
    }
}

const UP: &str = r#"
CREATE TABLE agents (
    id                   uuid PRIMARY KEY,
    name                 text,
    agent_type           text NOT NULL,
    capabilities         text[] NOT NULL,
    max_concurrent_tasks integer NOT NULL,
    status               text NOT NULL,
    registered_at        timestamptz NOT NULL,
    updated_at           timestamptz NOT NULL,
    last_seq             bigint NOT NULL
);
CREATE INDEX agents_status ON agents (status, id);
CREATE INDEX agents_capabilities ON agents USING gin (capabilities);

CREATE TABLE tasks (
    id                    uuid PRIMARY KEY,
    title                 text NOT NULL,
    description           text,
    task_type             text,
    priority              smallint NOT NULL,
    required_capabilities text[] NOT NULL,
    depends_on            uuid[] NOT NULL,
    project_id            uuid,
    max_attempts          integer NOT NULL,
    attempts              integer NOT NULL,
    status                text NOT NULL,
    agent_id              uuid,
    lease_expires_at      timestamptz,
    progress              smallint,
    progress_message      text,
    result                jsonb,
    last_error            text,
    last_error_retryable  boolean NOT NULL,
    retry_at              timestamptz,
    reason                text,
    created_at            timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL,
    last_seq              bigint NOT NULL
);
CREATE INDEX tasks_status ON tasks (status, id);
CREATE INDEX tasks_agent ON tasks (agent_id, id) WHERE agent_id IS NOT NULL;
CREATE INDEX tasks_project ON tasks (project_id, id) WHERE project_id IS NOT NULL;

CREATE TABLE projects (
    id           uuid PRIMARY KEY,
    name         text NOT NULL,
    description  text,
    project_type text,
    created_at   timestamptz NOT NULL,
    last_seq     bigint NOT NULL
);

CREATE TABLE status_counts (
    kind   text NOT NULL,
    status text NOT NULL,
    count  bigint NOT NULL,
    PRIMARY KEY (kind, status)
);

CREATE TABLE projection_checkpoints (
    name       text PRIMARY KEY,
    seq        bigint NOT NULL,
    updated_at timestamptz NOT NULL
);

CREATE TABLE dead_letters (
    id         bigserial PRIMARY KEY,
    projection text NOT NULL,
    seq        bigint NOT NULL,
    subject    text NOT NULL,
    payload    bytea NOT NULL,
    reason     text NOT NULL,
    created_at timestamptz NOT NULL,
    UNIQUE (projection, seq)
);
"#;

const DOWN: &str = r#"
DROP TABLE dead_letters;
DROP TABLE projection_checkpoints;
DROP TABLE status_counts;
DROP TABLE projects;
DROP TABLE tasks;
DROP TABLE agents;
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
