//! Hive's Rust client of its HTTP API: commands sent with an idempotency key and retried on transient
//! failures under the same key, reads, an agent's registration, heartbeats and reports, and its
//! assignment stream. The agent runtime (`hive agent`), the CLI's commands against an API and the
//! integration tests use it.

use std::time::Duration;

use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use hive_events::AgentId;
use hive_events::task::TaskStatus;
use hive_events::wire::{Assignment, Flow, Report, TaskAction};
use serde_json::{Value, json};
use uuid::Uuid;

/// A call to Hive's API that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Hive answered with an error.
    #[error("{status} {code}: {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// Hive's error code.
        code: String,
        /// What Hive said.
        message: String,
    },
    /// Hive could not be reached, or its answer could not be read.
    #[error("cannot reach hive at {url}: {source}")]
    Unreachable {
        /// The URL called.
        url: String,
        /// Why.
        source: reqwest::Error,
    },
}

impl ClientError {
    /// The HTTP status Hive answered, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Refused { status, .. } => Some(*status),
            Self::Unreachable { .. } => None,
        }
    }

    /// Hive refused a report because the task is not this agent's to run any more: assigned to
    /// another (403 `not_assignee`), or no longer running (409 `invalid_transition`).
    pub fn no_longer_ours(&self) -> bool {
        matches!(self, Self::Refused { code, .. } if code == "not_assignee" || code == "invalid_transition")
    }

    /// Worth trying again: Hive was unreachable or temporarily unable to answer.
    fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Refused { status, .. } => *status == 429 || *status >= 500,
        }
    }
}

/// How often and how long a report is retried while Hive is unreachable.
const ATTEMPTS: u32 = 8;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// A client of one Hive API.
#[derive(Clone, Debug)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

impl Client {
    /// A client of the API at `base` (for example `http://127.0.0.1:8080`).
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
            token: None,
        }
    }

    /// The same client, sending `token` (`Authorization: Bearer`) with every request.
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// The token it sends, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// The API's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends one POST; retries transient failures with back-off under one idempotency key, so a retried
    /// command is applied once.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.post_in(path, body, None).await
    }

    /// Like [`Client::post`], in `flow` (sent as `X-Correlation-Id` and `X-Causation-Id`), if given.
    pub async fn post_in(
        &self,
        path: &str,
        body: &Value,
        flow: Option<Flow>,
    ) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let key = Uuid::now_v7().to_string();
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            let mut request = self.authorized(self.http.post(&url));
            if let Some(flow) = flow {
                request = request.header("X-Correlation-Id", flow.correlation_id.to_string());
                if let Some(cause) = flow.causation_id {
                    request = request.header("X-Causation-Id", cause.to_string());
                }
            }
            let sent = request
                .header("Idempotency-Key", &key)
                .timeout(Duration::from_secs(10))
                .json(body)
                .send()
                .await;
            let result = match sent {
                Ok(response) => answer(&url, response).await,
                Err(source) => Err(ClientError::Unreachable {
                    url: url.clone(),
                    source,
                }),
            };
            match result {
                Err(e) if e.is_transient() && attempt < ATTEMPTS => {
                    tracing::debug!(%url, error = %e, attempt, "retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    /// Sends one GET.
    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.read(path, None).await
    }

    /// GETs `path` once the read models hold at least event `min_seq` (`head`: all the log holds now).
    async fn read(&self, path: &str, min_seq: Option<&str>) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.get(&url);
        if let Some(min) = min_seq {
            request = request.header("Hive-Min-Seq", min);
        }
        match self
            .authorized(request)
            .timeout(Duration::from_secs(10))
            .send()
            .await
        {
            Ok(response) => answer(&url, response).await,
            Err(source) => Err(ClientError::Unreachable { url, source }),
        }
    }

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
        let answer = self.post("/api/v1/agents", &body).await?;
        let id = answer["agent_id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| ClientError::Refused {
                status: 200,
                code: "bad_answer".into(),
                message: format!("no agent_id in {answer}"),
            })?;
        Ok((id, answer["token"].as_str().map(str::to_owned)))
    }

    /// Reports the agent alive.
    pub async fn heartbeat(&self, agent: Uuid) -> Result<(), ClientError> {
        self.post(&format!("/api/v1/agents/{agent}/heartbeat"), &json!({}))
            .await
            .map(drop)
    }

    /// Reports on a task as `agent`: `action` is accept, start, progress, complete or fail.
    pub async fn report(
        &self,
        task: Uuid,
        agent: Uuid,
        action: TaskAction,
        mut report: Report,
        flow: Option<Flow>,
    ) -> Result<(), ClientError> {
        report.agent_id = Some(AgentId::from_uuid(agent));
        let body = serde_json::to_value(&report).unwrap_or_default();
        let action = action.as_str();
        self.post_in(&format!("/api/v1/tasks/{task}/{action}"), &body, flow)
            .await
            .map(drop)
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
        let page = self.read(&path, Some("head")).await?;
        Ok(page["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["task_id"].as_str()?.parse().ok())
            .collect())
    }

    /// The agent's assignments as Hive pushes them (server-sent events), those already assigned first.
    /// Ends when the connection does.
    pub async fn assignments(
        &self,
        agent: Uuid,
    ) -> Result<impl Stream<Item = Assignment> + Send + use<>, ClientError> {
        let url = format!("{}/api/v1/agents/{agent}/assignments", self.base);
        let response = match self.authorized(self.http.get(&url)).send().await {
            Ok(response) if response.status().is_success() => response,
            Ok(response) => return Err(answer(&url, response).await.unwrap_err()),
            Err(source) => return Err(ClientError::Unreachable { url, source }),
        };
        Ok(response
            .bytes_stream()
            .eventsource()
            .take_while(|event| std::future::ready(event.is_ok()))
            .filter_map(|event| async move {
                let event = event.ok()?;
                (event.event == "assignment")
                    .then(|| serde_json::from_str(&event.data).ok())
                    .flatten()
            }))
    }
}

/// A response's JSON body, or the error it carries.
async fn answer(url: &str, response: reqwest::Response) -> Result<Value, ClientError> {
    let status = response.status().as_u16();
    let body: Value = match response.json().await {
        Ok(body) => body,
        Err(source) if status < 300 => {
            return Err(ClientError::Unreachable {
                url: url.to_owned(),
                source,
            });
        }
        Err(_) => Value::Null,
    };
    if status < 300 {
        return Ok(body);
    }
    Err(ClientError::Refused {
        status,
        code: body["error"]["code"].as_str().unwrap_or("unknown").into(),
        message: body["error"]["message"]
            .as_str()
            .unwrap_or("no message")
            .into(),
    })
}
