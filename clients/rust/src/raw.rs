//! The low-level request: one HTTP request to the API as the caller builds it, sent once (no
//! idempotency key, no retry, no `Hive-Min-Seq`) on the client's connection pool with its token, and
//! the answer as it came: status, headers, body. For callers that check the HTTP layer itself, and for
//! measurements that must not pay for more than one request.

use std::time::Duration;

use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Client, ClientError};

/// A request being built by [`Client::request`].
#[must_use = "a request does nothing until sent"]
pub struct Request {
    url: String,
    inner: reqwest::RequestBuilder,
    token: Option<String>,
    silence: Duration,
}

impl Request {
    pub(crate) fn new(client: &Client, method: Method, path: &str) -> Self {
        let url = client.url(path);
        Self {
            inner: client.http.request(method, &url),
            url,
            token: client.token.clone(),
            silence: client.silence,
        }
    }

    /// Adds a header (a name or value that is not valid fails at [`Request::send`]).
    pub fn header(mut self, name: impl AsRef<str>, value: impl AsRef<str>) -> Self {
        self.inner = self.inner.header(name.as_ref(), value.as_ref());
        self
    }

    /// Sends `body` as JSON (with `Content-Type: application/json`).
    pub fn json(mut self, body: &impl Serialize) -> Self {
        self.inner = self.inner.json(body);
        self
    }

    /// Sends `body` as it is, with no `Content-Type` unless one is set.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.inner = self.inner.body(body.into());
        self
    }

    /// Adds query parameters.
    pub fn query(mut self, pairs: &[(&str, &str)]) -> Self {
        self.inner = self.inner.query(pairs);
        self
    }

    /// Gives up when the answer has not come (and for a stream: ended) within `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.inner = self.inner.timeout(timeout);
        self
    }

    /// Sends `token` instead of the client's.
    pub fn bearer(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self
    }

    /// Sends `token` instead of the client's (`None`: no `Authorization` at all).
    pub fn token(mut self, token: Option<&str>) -> Self {
        self.token = token.map(str::to_owned);
        self
    }

    /// Sends it once.
    pub async fn send(self) -> Result<Response, ClientError> {
        let request = match &self.token {
            Some(token) => self.inner.bearer_auth(token),
            None => self.inner,
        };
        match request.send().await {
            Ok(inner) => Ok(Response {
                inner,
                silence: self.silence,
            }),
            Err(source) => Err(ClientError::Unreachable {
                url: self.url,
                source,
            }),
        }
    }
}

/// The answer to a [`Request`], whatever its status.
#[derive(Debug)]
pub struct Response {
    inner: reqwest::Response,
    /// How long its body may go without a byte when read as a stream of events.
    silence: Duration,
}

impl Response {
    /// Its status.
    pub fn status(&self) -> StatusCode {
        self.inner.status()
    }

    /// Its headers.
    pub fn headers(&self) -> &HeaderMap {
        self.inner.headers()
    }

    /// The header `name`, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.inner.headers().get(name)?.to_str().ok()
    }

    /// The URL that answered.
    pub fn url(&self) -> &str {
        self.inner.url().as_str()
    }

    /// Its body.
    pub async fn bytes(self) -> Result<Bytes, ClientError> {
        let url = self.url().to_owned();
        self.inner
            .bytes()
            .await
            .map_err(|source| ClientError::Unreachable { url, source })
    }

    /// Its body as text.
    pub async fn text(self) -> Result<String, ClientError> {
        let bytes = self.bytes().await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Its body read as JSON, whatever the status.
    pub async fn json<T: DeserializeOwned>(self) -> Result<T, ClientError> {
        let url = self.url().to_owned();
        let bytes = self.bytes().await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::BadAnswer {
            url,
            reason: format!("not the JSON expected: {e}"),
        })
    }

    /// Its body as JSON if its status is a success (`null` when empty), else the error it carries.
    pub async fn answer(self) -> Result<serde_json::Value, ClientError> {
        let status = self.status().as_u16();
        let retry_after = self.header("retry-after").map(str::to_owned);
        let url = self.url().to_owned();
        let bytes = self.bytes().await?;
        if status >= 300 {
            return Err(ClientError::refused(status, &bytes, retry_after.as_deref()));
        }
        if bytes.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::BadAnswer {
            url,
            reason: format!("not JSON: {e}"),
        })
    }

    /// Itself if its status is a success (a stream to read), else the error its body carries.
    pub async fn succeeded(self) -> Result<Self, ClientError> {
        if self.status().is_success() {
            return Ok(self);
        }
        let url = self.url().to_owned();
        Err(self.answer().await.err().unwrap_or(ClientError::BadAnswer {
            url,
            reason: "a redirect".into(),
        }))
    }

    /// Its body as it arrives.
    pub fn bytes_stream(self) -> impl Stream<Item = Result<Bytes, ClientError>> + Send + use<> {
        let url = self.url().to_owned();
        self.inner.bytes_stream().map(move |chunk| {
            chunk.map_err(|source| ClientError::Unreachable {
                url: url.clone(),
                source,
            })
        })
    }

    /// Its body read as server-sent events. Ends when the connection does (an error first, if it
    /// broke), or with an error once it has been silent for the client's `silence`
    /// ([`Client::with_silence`]).
    pub fn sse(self) -> impl Stream<Item = Result<SseEvent, ClientError>> + Send + use<> {
        let url = self.url().to_owned();
        let silence = self.silence;
        let bytes = self
            .inner
            .bytes_stream()
            .map(|chunk| chunk.map_err(std::io::Error::other));
        // Each chunk awaited at most `silence`; a silent connection yields one error and ends.
        let alive = futures::stream::unfold(Some(bytes), move |bytes| async move {
            let mut bytes = bytes?;
            match tokio::time::timeout(silence, bytes.next()).await {
                Ok(Some(chunk)) => Some((chunk, Some(bytes))),
                Ok(None) => None,
                Err(_) => Some((
                    Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no byte for {silence:?}: the connection is taken for dead"),
                    )),
                    None,
                )),
            }
        });
        alive.eventsource().map(move |event| {
            event
                .map(|e| SseEvent {
                    event: e.event,
                    id: e.id,
                    data: e.data,
                })
                .map_err(|e| ClientError::BadAnswer {
                    url: url.clone(),
                    reason: format!("the event stream broke: {e}"),
                })
        })
    }
}

/// One server-sent event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    /// Its name (`message` when the server gave none).
    pub event: String,
    /// Its id (`""` when none).
    pub id: String,
    /// Its data.
    pub data: String,
}
