//! Commands and reads with Hive's guarantees: a command carries an `Idempotency-Key` and is sent again
//! under the same key when the connection broke or Hive asked for patience (429, 503 after its
//! `Retry-After`), so it is applied once however often it is sent; a read carries `Hive-Min-Seq`, by
//! default the highest `seq` the client's commands were answered with, so it sees their effect.

use std::time::Duration;

use hive_events::wire::Flow;
use reqwest::Method;
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{Client, ClientError};

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// The longest `Retry-After` obeyed: a longer one is answered to the caller sooner rather than later.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);
/// How long one attempt may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Which sequence a read waits for the read models to reflect (`Hive-Min-Seq`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MinSeq {
    /// The highest `seq` the client's commands were answered with (none before its first).
    #[default]
    Written,
    /// None: whatever the read models hold now.
    None,
    /// At least this event.
    At(u64),
    /// All that the log holds when the read arrives (`head`).
    Head,
}

impl MinSeq {
    /// The header's value, given the sequence the client wrote up to.
    fn header(self, written: u64) -> Option<String> {
        match self {
            Self::Written if written > 0 => Some(written.to_string()),
            Self::Written | Self::None => None,
            Self::At(seq) => Some(seq.to_string()),
            Self::Head => Some("head".to_owned()),
        }
    }
}

/// A command being built by [`Client::command`].
#[must_use = "a command does nothing until sent"]
pub struct Command<'a> {
    client: &'a Client,
    method: Method,
    path: String,
    body: Option<Value>,
    key: Option<String>,
    flow: Option<Flow>,
}

impl Command<'_> {
    /// Its JSON body (a POST without one sends `{}`).
    pub fn json(mut self, body: &impl Serialize) -> Self {
        self.body = Some(serde_json::to_value(body).unwrap_or_default());
        self
    }

    /// Sends it under `key` rather than a new one: a command sent again with the same key (by this
    /// process or another of the same caller) is applied once, and answered as the first time.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sends it in `flow` (`X-Correlation-Id` and `X-Causation-Id`).
    pub fn flow(mut self, flow: Option<Flow>) -> Self {
        self.flow = flow;
        self
    }

    /// Sends it, again under the same key while it fails transiently; its answer. Remembers the
    /// answer's `seq` for the client's later reads.
    pub async fn send(self) -> Result<Value, ClientError> {
        let key = self.key.unwrap_or_else(|| Uuid::now_v7().to_string());
        let body = match (&self.body, &self.method) {
            (Some(body), _) => Some(body),
            (None, &Method::POST) => Some(&json!({})),
            (None, _) => None,
        };
        let answer = self
            .client
            .retrying(&self.path, || {
                let mut request = self
                    .client
                    .request(self.method.clone(), &self.path)
                    .header("Idempotency-Key", &key);
                if let Some(flow) = self.flow {
                    request = request.header("X-Correlation-Id", flow.correlation_id.to_string());
                    if let Some(cause) = flow.causation_id {
                        request = request.header("X-Causation-Id", cause.to_string());
                    }
                }
                match body {
                    Some(body) => request.json(body),
                    None => request,
                }
            })
            .await?;
        if let Some(seq) = answer["seq"].as_u64() {
            self.client.saw_seq(seq);
        }
        Ok(answer)
    }
}

impl Client {
    /// A command (`POST`, `DELETE`) to `path`: see [`Command`].
    pub fn command(&self, method: Method, path: &str) -> Command<'_> {
        Command {
            client: self,
            method,
            path: path.to_owned(),
            body: None,
            key: None,
            flow: None,
        }
    }

    /// POSTs the command `body` to `path` under a new idempotency key, retried under it: its answer.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.command(Method::POST, path).json(body).send().await
    }

    /// Like [`Client::post`], in `flow` (sent as `X-Correlation-Id` and `X-Causation-Id`), if given.
    pub async fn post_in(
        &self,
        path: &str,
        body: &Value,
        flow: Option<Flow>,
    ) -> Result<Value, ClientError> {
        self.command(Method::POST, path)
            .json(body)
            .flow(flow)
            .send()
            .await
    }

    /// GETs `path` once the read models reflect the client's own commands ([`MinSeq::Written`]).
    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.get_at(path, MinSeq::Written).await
    }

    /// GETs `path` once the read models reflect `min_seq`, retried while Hive cannot answer yet.
    pub async fn get_at(&self, path: &str, min_seq: MinSeq) -> Result<Value, ClientError> {
        let min = min_seq.header(self.written_seq());
        self.retrying(path, || {
            let request = self.request(Method::GET, path);
            match &min {
                Some(min) => request.header("Hive-Min-Seq", min),
                None => request,
            }
        })
        .await
    }

    /// Sends the request `build` makes until it succeeds, fails for good, or has been sent as often as
    /// the client tries: its JSON answer.
    pub(crate) async fn retrying(
        &self,
        path: &str,
        build: impl Fn() -> crate::Request,
    ) -> Result<Value, ClientError> {
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            let result = match build().timeout(TIMEOUT).send().await {
                Ok(response) => response.answer().await,
                Err(e) => Err(e),
            };
            match result {
                Err(e) if e.is_transient() && attempt < self.attempts => {
                    let wait = e.retry_after().map_or(backoff, |w| w.min(MAX_RETRY_AFTER));
                    tracing::debug!(path, error = %e, attempt, ?wait, "retrying");
                    tokio::time::sleep(wait).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    attempt += 1;
                }
                result => return result,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::MinSeq;

    #[test]
    fn min_seq_headers() {
        assert_eq!(MinSeq::Written.header(0), None);
        assert_eq!(MinSeq::Written.header(12).as_deref(), Some("12"));
        assert_eq!(MinSeq::None.header(12), None);
        assert_eq!(MinSeq::At(3).header(12).as_deref(), Some("3"));
        assert_eq!(MinSeq::Head.header(12).as_deref(), Some("head"));
    }
}
