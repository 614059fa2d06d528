//! One row per task: its folded state and the stream sequence of its last event.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize)]
#[sea_orm(table_name = "tasks")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub title: String,
    pub description: Option<String>,
    pub task_type: Option<String>,
    pub priority: i16,
    pub required_capabilities: Vec<String>,
    pub depends_on: Vec<Uuid>,
    pub project_id: Option<Uuid>,
    pub pinned_agent: Option<Uuid>,
    pub max_attempts: i32,
    pub attempts: i32,
    pub status: String,
    pub agent_id: Option<Uuid>,
    pub lease_expires_at: Option<DateTimeUtc>,
    pub progress: Option<i16>,
    pub progress_message: Option<String>,
    pub result: Option<Json>,
    pub last_error: Option<String>,
    pub last_error_retryable: bool,
    pub retry_at: Option<DateTimeUtc>,
    pub reason: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub last_seq: i64,
    pub labels: Json,
    pub not_before: Option<DateTimeUtc>,
    pub timeout_secs: Option<i32>,
    pub heartbeat_timeout_secs: Option<i32>,
    pub cancel_grace_secs: i32,
    pub cancelled_by: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
