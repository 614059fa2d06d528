//! Hive's Rust client of its HTTP API, used by every part of Hive that talks to the API: the agent
//! runtime (`hive agent`), the CLI's commands against an API, the integration tests and the benchmarks.
//!
//! A [`Client`] holds one connection pool, a base URL and a token. On it:
//! - commands ([`command`]): sent with an `Idempotency-Key` (the caller's, or a new one) and retried on
//!   a broken connection, 429 and 503 (after `Retry-After`) under the same key, so a retried command is
//!   applied once; the highest `seq` they were answered with is remembered (by every clone) and sent as
//!   `Hive-Min-Seq` with the next reads, so a read sees the client's own writes;
//! - reads, retried the same way, with that `Hive-Min-Seq` or another ([`MinSeq`]);
//! - typed helpers of the common operations ([`agent`], [`task`], [`system`]);
//! - [`Client::events`]: the log as a stream, paged then followed live, across reconnects ([`events`]);
//! - [`Client::request`]: one raw request, sent once, answered as it came ([`raw`]), for checks of the
//!   HTTP layer itself and for measurements.
//!
//! Every failure is a [`ClientError`], with Hive's error code ([`Code`], [`ErrorCode`]) when it refused.

pub mod agent;
pub mod command;
pub mod error;
pub mod events;
pub mod raw;
pub mod system;
pub mod task;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use agent::TasksHeld;
pub use command::{Command, MinSeq};
pub use error::{ClientError, Code};
pub use events::EventFilter;
/// The kinds of aggregate an [`EventFilter`] names.
pub use hive_events::AggregateKind;
pub use hive_events::wire::ErrorCode;
pub use raw::{Request, Response, SseEvent};
/// HTTP names the low-level request uses, so that its callers need no HTTP crate of their own.
pub use reqwest::{Method, StatusCode, header};

/// How many times a command or read is sent before its transient failure is answered.
const ATTEMPTS: u32 = 8;
/// How long a stream may go without a byte before it is taken for dead: the API sends a keep-alive
/// every 15 s, so a connection silent this long lost its peer without being closed (a host gone, a
/// NAT that forgot it), and waiting on it would wait forever.
const SILENCE: Duration = Duration::from_secs(40);

/// A client of one Hive API. Clones share the connection pool and the sequence their commands reached.
#[derive(Clone, Debug)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
    /// The highest `seq` a command of this client (or a clone) was answered with.
    written: Arc<AtomicU64>,
    attempts: u32,
    silence: Duration,
}

impl Client {
    /// A client of the API at `base` (for example `http://127.0.0.1:8080`), with no token.
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
            token: None,
            written: Arc::default(),
            attempts: ATTEMPTS,
            silence: SILENCE,
        }
    }

    /// The same client (its pool and remembered sequence), sending `token` (`Authorization: Bearer`)
    /// with every request; `None`: no token.
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// The same client, sending a command or read at most `attempts` times (at least once) before
    /// answering its transient failure.
    pub fn with_attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    /// The same client, taking a stream (server-sent events) for dead after `silence` without a byte
    /// (default 40 s; the API sends a keep-alive every 15 s): the stream then ends with an error, and
    /// [`Client::events`] reconnects.
    pub fn with_silence(mut self, silence: Duration) -> Self {
        self.silence = silence;
        self
    }

    /// The token it sends, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The API's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The highest `seq` a command of this client (or of a clone) was answered with: what its reads
    /// wait for by default ([`MinSeq::Written`]).
    pub fn written_seq(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Remembers `seq` as written (the highest stays).
    pub fn saw_seq(&self, seq: u64) {
        self.written.fetch_max(seq, Ordering::Relaxed);
    }

    /// One request of `method` to `path` (under the base URL, or an absolute URL: a `next` link, another
    /// node), with the client's token: see [`Request`].
    pub fn request(&self, method: Method, path: &str) -> Request {
        Request::new(self, method, path)
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Client;

    #[test]
    fn paths_join_the_base_and_urls_stay() {
        let client = Client::new("http://127.0.0.1:1/");
        assert_eq!(client.url("/status"), "http://127.0.0.1:1/status");
        assert_eq!(client.url("http://other:2/x"), "http://other:2/x");
    }

    #[test]
    fn clones_share_the_sequence_written() {
        let client = Client::new("http://127.0.0.1:1");
        let clone = client.clone().with_token(Some("hive_x".into()));
        clone.saw_seq(7);
        client.saw_seq(3);
        assert_eq!(client.written_seq(), 7);
        assert_eq!(clone.written_seq(), 7);
    }
}
