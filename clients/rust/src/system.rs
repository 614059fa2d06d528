//! Projects, the hive's status and health, and an entity's history.

use hive_events::AggregateKind;
use reqwest::Method;
use serde_json::Value;
use uuid::Uuid;

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
}
