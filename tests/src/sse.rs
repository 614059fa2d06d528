//! Server-sent events as the tests read them: an agent's assignment stream, and the live feed.

use std::time::Duration;

use futures::Stream;
use hive_client::Method;
use serde_json::Value;

use crate::http::TestHive;

use futures::StreamExt;

/// An agent's assignments as they are pushed.
pub struct Assignments {
    stream: std::pin::Pin<Box<dyn futures::Stream<Item = serde_json::Value> + Send>>,
}

impl Assignments {
    /// Wraps the agent runtime's assignment stream.
    pub(crate) fn new(
        stream: impl futures::Stream<Item = serde_json::Value> + Send + 'static,
    ) -> Self {
        Self {
            stream: Box::pin(stream),
        }
    }

    /// The next assignment (at most 20 s away).
    pub async fn next(&mut self) -> serde_json::Value {
        tokio::time::timeout(std::time::Duration::from_secs(20), self.stream.next())
            .await
            .expect("an assignment within 20 s")
            .expect("the stream stays open")
    }
}

/// An open `/api/v1/stream`, read as SSE.
pub struct Feed {
    events: std::pin::Pin<Box<dyn Stream<Item = (String, Value)> + Send>>,
}

impl Feed {
    /// Opens `/api/v1/stream{query}` and reads its `hello`.
    pub async fn open(hive: &TestHive, query: &str) -> Self {
        Self::open_with(hive, query, None).await
    }

    /// Like [`Feed::open`], resuming after the event `last_event_id` (sent as `Last-Event-ID`).
    pub async fn open_with(hive: &TestHive, query: &str, last_event_id: Option<u64>) -> Self {
        let mut request = hive
            .http
            .request(Method::GET, &format!("/api/v1/stream{query}"));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        let events = response.sse().filter_map(|e| async move {
            let e = e.ok()?;
            Some((e.event, serde_json::from_str(&e.data).ok()?))
        });
        let mut feed = Self {
            events: Box::pin(events),
        };
        assert_eq!(feed.next().await.0, "hello");
        feed
    }

    /// The next item (at most 10 s away).
    pub async fn next(&mut self) -> (String, Value) {
        tokio::time::timeout(Duration::from_secs(10), self.events.next())
            .await
            .expect("an item within 10 s")
            .expect("the stream stays open")
    }

    /// The next log event, passing over status ticks.
    pub async fn next_event(&mut self) -> Value {
        self.next_named("event").await
    }

    /// The next item named `name`, passing over the others.
    pub async fn next_named(&mut self, name: &str) -> Value {
        loop {
            let (named, data) = self.next().await;
            if named == name {
                return data;
            }
        }
    }
}
