//! Agents: register, read, list, heartbeat, drain, deregister, spawn; an agent's assignment stream,
//! and the tasks it ever held.

use futures::{Stream, StreamExt};
use hive_events::wire::{Assignment, Push};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{Client, ClientError};

impl Client {
    /// Registers a new agent; answers its id and its own token.
    pub async fn register(
        &self,
        name: Option<&str>,
        agent_type: &str,
        capabilities: &[String],
        max_concurrent_tasks: u32,
    ) -> Result<(Uuid, Option<String>), ClientError> {
        let body = json!({
            "name": name, "agent_type": agent_type, "capabilities": capabilities,
            "max_concurrent_tasks": max_concurrent_tasks,
        });
        let answer = self.register_agent(&body).await?;
        let id = uuid_of(&answer, "agent_id", "/api/v1/agents")?;
        Ok((id, answer["token"].as_str().map(str::to_owned)))
    }

    /// Registers an agent of `body` (`{name?, agent_type, capabilities, max_concurrent_tasks}`):
    /// `{agent_id, seq, token}`.
    pub async fn register_agent(&self, body: &Value) -> Result<Value, ClientError> {
        self.post("/api/v1/agents", body).await
    }

    /// The agent `id`.
    pub async fn agent(&self, id: Uuid) -> Result<Value, ClientError> {
        self.get(&format!("/api/v1/agents/{id}")).await
    }

    /// A page of agents: `query` as `GET /api/v1/agents` takes it (`status`, `capability`, `limit`,
    /// `cursor`, `order`): `{items, next_cursor}`.
    pub async fn agents(&self, query: &[(&str, &str)]) -> Result<Value, ClientError> {
        self.get(&with_query("/api/v1/agents", query)).await
    }

    /// A page of the tasks the agent ever held: `query` as `GET /api/v1/agents/{id}/tasks` takes it
    /// (`limit`, `cursor`, `order`): `{items, next_cursor, indexed_after, indexed_through}`.
    pub async fn agent_tasks(
        &self,
        agent: Uuid,
        query: &[(&str, &str)],
    ) -> Result<Value, ClientError> {
        self.get(&with_query(&format!("/api/v1/agents/{agent}/tasks"), query))
            .await
    }

    /// Every task the agent ever held, as the projector's index holds them, page by page, and the
    /// stretch of the log the pages cover together ([`TasksHeld`]).
    pub async fn tasks_held(&self, agent: Uuid) -> Result<TasksHeld, ClientError> {
        let url = format!("/api/v1/agents/{agent}/tasks");
        let mut held = TasksHeld::default();
        let mut cursor: Option<String> = None;
        for page in 0u64.. {
            let mut query = vec![("limit", "500")];
            if let Some(cursor) = &cursor {
                query.push(("cursor", cursor));
            }
            let answer = self.agent_tasks(agent, &query).await?;
            let seq = |field: &str| {
                answer[field]
                    .as_u64()
                    .ok_or_else(|| ClientError::BadAnswer {
                        url: url.clone(),
                        reason: format!("no {field} in {answer}"),
                    })
            };
            // The index only grows (a rebuild swaps in one that covers all the old one did, and
            // more), and each page goes on in first-held order from the one before: with the
            // first page's end and the latest beginning, what a page may have missed stays
            // outside the stretch.
            let (after, through) = (seq("indexed_after")?, seq("indexed_through")?);
            held.indexed_after = held.indexed_after.max(after);
            if page == 0 {
                held.indexed_through = through;
            }
            for item in answer["items"].as_array().into_iter().flatten() {
                held.tasks.push(uuid_of(item, "task_id", &url)?);
            }
            match answer["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        Ok(held)
    }

    /// Reports the agent alive.
    pub async fn heartbeat(&self, agent: Uuid) -> Result<(), ClientError> {
        self.post(&format!("/api/v1/agents/{agent}/heartbeat"), &json!({}))
            .await
            .map(drop)
    }

    /// Drains the agent: it takes no new task. `{agent_id, seq}`.
    pub async fn drain(&self, agent: Uuid) -> Result<Value, ClientError> {
        self.post(&format!("/api/v1/agents/{agent}/drain"), &json!({}))
            .await
    }

    /// Deregisters the agent (its tokens are revoked). `{agent_id, seq}`.
    pub async fn deregister(&self, agent: Uuid) -> Result<Value, ClientError> {
        self.command(Method::DELETE, &format!("/api/v1/agents/{agent}"))
            .send()
            .await
    }

    /// Spawns an agent of `body` (`{agent_type?, capabilities?, max_concurrent_tasks?, name?,
    /// agent_id?, exec?}`): a supervised `hive agent` process. `{agent_id, seq}`.
    pub async fn spawn(&self, body: &Value) -> Result<Value, ClientError> {
        self.post("/api/v1/agents/spawn", body).await
    }

    /// The agent's assignments as Hive pushes them (server-sent events), those already assigned first.
    /// Ends when the connection does. (Its runtime reads [`Client::pushes`], which carries stops too.)
    pub async fn assignments(
        &self,
        agent: Uuid,
    ) -> Result<impl Stream<Item = Assignment> + Send + use<>, ClientError> {
        Ok(self.pushes(agent).await?.filter_map(|push| async move {
            match push {
                Push::Assignment(assignment) => Some(assignment),
                Push::Stop(_) => None,
            }
        }))
    }

    /// Everything Hive pushes to the agent's runtime: its assignments (those already assigned first),
    /// and an order to stop each task taken from it (cancelled, timed out, requeued). Ends when the
    /// connection does.
    pub async fn pushes(
        &self,
        agent: Uuid,
    ) -> Result<impl Stream<Item = Push> + Send + use<>, ClientError> {
        let response = self
            .request(Method::GET, &format!("/api/v1/agents/{agent}/assignments"))
            .send()
            .await?
            .succeeded()
            .await?;
        Ok(response
            .sse()
            .take_while(|event| std::future::ready(event.is_ok()))
            .filter_map(|event| async move {
                let event = event.ok()?;
                match event.event.as_str() {
                    "assignment" => serde_json::from_str(&event.data).ok().map(Push::Assignment),
                    Push::STOP => serde_json::from_str(&event.data).ok().map(Push::Stop),
                    _ => None,
                }
            }))
    }
}

/// Every task an agent ever held, as [`Client::tasks_held`] read them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TasksHeld {
    /// The tasks, in the order the agent first held each.
    pub tasks: Vec<Uuid>,
    /// They are every task the events after this sequence assigned to the agent (0: from the
    /// log's start; more on a database upgraded in place and not rebuilt since) ...
    pub indexed_after: u64,
    /// ... up to and including this one: the log's task events outside that stretch may name more.
    pub indexed_through: u64,
}

/// `path` with `query` (values percent-encoded).
pub(crate) fn with_query(path: &str, query: &[(&str, &str)]) -> String {
    if query.is_empty() {
        return path.to_owned();
    }
    let mut url = reqwest::Url::parse("http://hive/").expect("a URL");
    url.query_pairs_mut().extend_pairs(query);
    format!("{path}?{}", url.query().unwrap_or(""))
}

/// The id `field` of an answer.
pub(crate) fn uuid_of(answer: &Value, field: &str, url: &str) -> Result<Uuid, ClientError> {
    answer[field]
        .as_str()
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| ClientError::BadAnswer {
            url: url.to_owned(),
            reason: format!("no {field} in {answer}"),
        })
}

#[cfg(test)]
mod tests {
    use super::with_query;

    #[test]
    fn queries_are_encoded() {
        assert_eq!(with_query("/a", &[]), "/a");
        assert_eq!(
            with_query(
                "/a",
                &[("status", "ready"), ("since", "2026-01-01T00:00:00+01:00")]
            ),
            "/a?status=ready&since=2026-01-01T00%3A00%3A00%2B01%3A00"
        );
    }
}
