//! Tasks: create, read, list, cancel, retry, requeue; an agent's reports on its tasks.

use hive_events::AgentId;
use hive_events::task::TaskStatus;
use hive_events::wire::{Report, TaskAction};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::agent::with_query;
use crate::{Client, ClientError, Command, Method, MinSeq};

impl Client {
    /// Creates a task of `body` (`{title, description?, priority?, required_capabilities?, depends_on?,
    /// project_id?, max_attempts?, …}`): `{task_id, seq}`.
    pub async fn create_task(&self, body: &Value) -> Result<Value, ClientError> {
        self.post("/api/v1/tasks", body).await
    }

    /// The task `id`.
    pub async fn task(&self, id: Uuid) -> Result<Value, ClientError> {
        self.get(&format!("/api/v1/tasks/{id}")).await
    }

    /// A page of tasks: `query` as `GET /api/v1/tasks` takes it (`status`, `agent_id`, `project_id`,
    /// `limit`, `cursor`, `order`): `{items, next_cursor}`.
    pub async fn tasks(&self, query: &[(&str, &str)]) -> Result<Value, ClientError> {
        self.get(&with_query("/api/v1/tasks", query)).await
    }

    /// Cancels the task, for `reason` if given: `{task_id, seq}`.
    pub async fn cancel(&self, task: Uuid, reason: Option<&str>) -> Result<Value, ClientError> {
        self.post(
            &format!("/api/v1/tasks/{task}/cancel"),
            &reason_body(reason),
        )
        .await
    }

    /// Puts an assigned, accepted or running task back in the queue (its agent stops holding it), for
    /// `reason` if given (`requeued` otherwise): `{task_id, seq}`.
    pub async fn requeue(&self, task: Uuid, reason: Option<&str>) -> Result<Value, ClientError> {
        self.post(
            &format!("/api/v1/tasks/{task}/requeue"),
            &reason_body(reason),
        )
        .await
    }

    /// Gives a failed or dead-lettered task a new round of attempts: `{task_id, seq}`.
    pub async fn retry(&self, task: Uuid) -> Result<Value, ClientError> {
        self.post(&format!("/api/v1/tasks/{task}/retry"), &json!({}))
            .await
    }

    /// A report on a task as `agent` (`action`: accept, start, progress, complete, fail or release),
    /// to send (`.send()`), in a flow (`.flow(..)`). Its `attempt` names the attempt it is about, so
    /// that it is refused once that attempt is over. A report that may be sent again after its answer
    /// was lost takes a key of its own (`.idempotency_key(..)`, the same each time): it is then
    /// applied once, and answered as the first time.
    pub fn report(
        &self,
        task: Uuid,
        agent: Uuid,
        action: TaskAction,
        mut report: Report,
    ) -> Command<'_> {
        report.agent_id = Some(AgentId::from_uuid(agent));
        self.command(
            Method::POST,
            &format!("/api/v1/tasks/{task}/{}", action.as_str()),
        )
        .json(&report)
    }

    /// The ids of the agent's tasks in `status`, as of all the log holds now (a task its previous
    /// process accepted just before it died may not be projected yet).
    pub async fn tasks_of(
        &self,
        agent: Uuid,
        status: TaskStatus,
    ) -> Result<Vec<Uuid>, ClientError> {
        let status = status.as_str();
        let path = format!("/api/v1/tasks?agent_id={agent}&status={status}&limit=500");
        let page = self.get_at(&path, MinSeq::Head).await?;
        Ok(page["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["task_id"].as_str()?.parse().ok())
            .collect())
    }
}

/// A command's body naming `reason`, if given.
fn reason_body(reason: Option<&str>) -> Value {
    match reason {
        Some(reason) => json!({ "reason": reason }),
        None => json!({}),
    }
}
