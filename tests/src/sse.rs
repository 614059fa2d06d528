//! Server-sent events as the tests read them: an agent's assignment stream.

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
