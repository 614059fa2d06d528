//! Projects, the hive's status and health, an entity's history, and the dead letters.

use hive_events::AggregateKind;
use reqwest::Method;
use serde_json::Value;
use uuid::Uuid;

use crate::agent::with_query;
use crate::{Client, ClientError};

impl Client {
    /// Creates a project of `body` (`{name, description?, type?}`): `{project_id, seq}`. (Projects are
    /// not listed by the API: a project's tasks are, with [`Client::tasks`] and `project_id`.)
    pub async fn create_project(&self, body: &Value) -> Result<Value, ClientError> {
        self.post("/api/v1/projects", body).await
    }

    /// The project `id`, with its task counts and progress.
    pub async fn project(&self, id: Uuid) -> Result<Value, ClientError> {
        self.get(&format!("/api/v1/projects/{id}")).await
    }

    /// Agents and tasks by status, the log's last sequence, the projection's lag (`/status`).
    pub async fn status(&self) -> Result<Value, ClientError> {
        self.get("/status").await
    }

    /// `/health`, healthy (200) or not (503): its body either way.
    pub async fn health(&self) -> Result<Value, ClientError> {
        let response = self.request(Method::GET, "/health").send().await?;
        if response.status() == 503 {
            return response.json().await;
        }
        response.answer().await
    }

    /// The entity's history from the log (`{aggregate, aggregate_id, events, last_seq, more}`), every
    /// event with its `seq`: all of it.
    pub async fn history(&self, kind: AggregateKind, id: Uuid) -> Result<Value, ClientError> {
        let path = format!("/api/v1/{}s/{id}/events", kind.as_str());
        self.get(&path).await
    }

    /// The entity as it was at event `seq`, folded from its history.
    pub async fn state_at(
        &self,
        kind: AggregateKind,
        id: Uuid,
        seq: u64,
    ) -> Result<Value, ClientError> {
        let path = format!("/api/v1/{}s/{id}?at_seq={seq}", kind.as_str());
        self.get(&path).await
    }

    /// A page of the events the projector could not fold (`GET /api/v1/dead-letters`): `query` as it
    /// takes it (`limit`, `cursor`, `order`): `{items, next_cursor}`, each item `{id, projection, seq,
    /// subject, reason, payload, created_at}`.
    pub async fn dead_letters(&self, query: &[(&str, &str)]) -> Result<Value, ClientError> {
        self.get(&with_query("/api/v1/dead-letters", query)).await
    }

    /// Asks the leading projector to fold dead letter `id`'s aggregate again
    /// (`POST /api/v1/dead-letters/{id}/retry`, an operator's): `{dead_letter_id, seq, aggregate,
    /// aggregate_id, checkpoint, resolved, dead_letters}` when its event folds now; refused with
    /// [`crate::ErrorCode::CorruptHistory`] (the message says why) when it still cannot be folded, and
    /// with [`crate::ErrorCode::NotFound`] when there is no such dead letter (a repeat of a retry that
    /// succeeded finds none).
    pub async fn retry_dead_letter(&self, id: i64) -> Result<Value, ClientError> {
        self.post(
            &format!("/api/v1/dead-letters/{id}/retry"),
            &serde_json::json!({}),
        )
        .await
    }
}
