//! The log as one stream: [`Client::events`] catches up by paging `GET /api/v1/events`, then follows
//! `GET /api/v1/stream` and, when its connection drops, reconnects with `Last-Event-ID` (the API then
//! sends every later event from the log before the live feed), after a back-off. Each event is yielded
//! once, in the log's order: the sequence of the last one yielded is where every page and reconnect
//! resumes, and an event at or below it is never yielded again.

use std::collections::VecDeque;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use hive_events::AggregateKind;
use reqwest::Method;
use serde_json::Value;
use uuid::Uuid;

use crate::{Client, ClientError, MinSeq, SseEvent};

/// Events asked for a page while catching up (the API's maximum).
const PAGE: u32 = 1_000;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Which events [`Client::events`] yields: all, one aggregate kind's, or one entity's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only this kind's events (`aggregate=` of a page, `topics=` of the stream).
    pub aggregate: Option<AggregateKind>,
    /// Only this entity's events (`aggregate_id=` of a page, `entity=` of the stream).
    pub aggregate_id: Option<Uuid>,
}

impl EventFilter {
    /// Every event.
    pub fn all() -> Self {
        Self::default()
    }

    /// The events of one kind of aggregate.
    pub fn aggregate(kind: AggregateKind) -> Self {
        Self {
            aggregate: Some(kind),
            aggregate_id: None,
        }
    }

    /// The events of one entity.
    pub fn entity(kind: AggregateKind, id: Uuid) -> Self {
        Self {
            aggregate: Some(kind),
            aggregate_id: Some(id),
        }
    }

    /// The page of the log after `after`.
    fn page_path(&self, after: u64) -> String {
        let mut path = format!("/api/v1/events?after_seq={after}&limit={PAGE}");
        if let Some(kind) = self.aggregate {
            path.push_str(&format!("&aggregate={}", kind.as_str()));
        }
        if let Some(id) = self.aggregate_id {
            path.push_str(&format!("&aggregate_id={id}"));
        }
        path
    }

    /// The stream of this filter's events, and nothing else: no status ticks and no heartbeats (which
    /// `entity=` of an agent would add but for the topics).
    fn stream_path(&self) -> String {
        let topics = self
            .aggregate
            .map_or("agent,task,project", AggregateKind::as_str);
        let mut path = format!("/api/v1/stream?topics={topics}");
        if let Some(id) = self.aggregate_id {
            path.push_str(&format!("&entity={id}"));
        }
        path
    }

    /// Whether `record` is one of this filter's (the server filters already; this keeps a record of
    /// another kind out whatever it sends).
    fn admits(&self, record: &Value) -> bool {
        self.aggregate
            .is_none_or(|kind| record["aggregate"].as_str() == Some(kind.as_str()))
            && self
                .aggregate_id
                .is_none_or(|id| record["aggregate_id"].as_str() == Some(&id.to_string()))
    }
}

impl Client {
    /// The log's events after `after_seq` that `filter` admits, each an audit record (as
    /// `/api/v1/events` answers it, with `seq`), once and in order: what the log holds, then each new
    /// event as it is projected, for as long as the stream is polled. A dropped connection is resumed
    /// where it left off; the stream yields an error and ends only when Hive refuses it (a token that
    /// may not read the log) or stays unreachable for as many attempts as the client makes.
    pub fn events(
        &self,
        after_seq: u64,
        filter: EventFilter,
    ) -> impl Stream<Item = Result<Value, ClientError>> + Send + use<> {
        let follow = Follow {
            client: self.clone(),
            filter,
            last: after_seq,
            page: VecDeque::new(),
            caught_up: false,
            live: None,
            failures: 0,
            done: false,
        };
        futures::stream::unfold(follow, |mut follow| async move {
            let item = follow.next().await?;
            Some((item, follow))
        })
    }
}

/// Where [`Client::events`] stands.
struct Follow {
    client: Client,
    filter: EventFilter,
    /// The sequence of the last event yielded (or skipped by the filter): where the next page or
    /// reconnect resumes.
    last: u64,
    /// Events read with a page, not yet yielded.
    page: VecDeque<Value>,
    /// The pages reached the log's end: from here on, the stream.
    caught_up: bool,
    live: Option<BoxStream<'static, Result<SseEvent, ClientError>>>,
    /// Failures in a row (reading a page, connecting, a stream that broke before an event came).
    failures: u32,
    done: bool,
}

impl Follow {
    async fn next(&mut self) -> Option<Result<Value, ClientError>> {
        while !self.done {
            if let Some(record) = self.page.pop_front() {
                if let Some(record) = self.take(record) {
                    return Some(Ok(record));
                }
                continue;
            }
            let step = if !self.caught_up {
                self.read_page().await
            } else {
                match &mut self.live {
                    None => self.connect().await,
                    Some(live) => match live.next().await {
                        Some(Ok(event)) => match self.live_event(event) {
                            Some(record) => return Some(Ok(record)),
                            None => Ok(()),
                        },
                        Some(Err(e)) => Err(e),
                        None => Err(ClientError::BadAnswer {
                            url: self.filter.stream_path(),
                            reason: "the stream ended".into(),
                        }),
                    },
                }
            };
            if let Err(e) = step
                && let Some(e) = self.failed(e).await
            {
                self.done = true;
                return Some(Err(e));
            }
        }
        None
    }

    /// `record` if it comes after the last event yielded and the filter admits it; moves past it.
    fn take(&mut self, record: Value) -> Option<Value> {
        let seq = record["seq"].as_u64()?;
        if seq <= self.last {
            return None;
        }
        self.last = seq;
        self.failures = 0;
        self.filter.admits(&record).then_some(record)
    }

    async fn read_page(&mut self) -> Result<(), ClientError> {
        // The log itself, not the read models: nothing to wait for.
        let page = self
            .client
            .get_at(&self.filter.page_path(self.last), MinSeq::None)
            .await?;
        self.page
            .extend(page["items"].as_array().into_iter().flatten().cloned());
        self.caught_up = page["more"] != Value::Bool(true);
        // A filtered page may end past its last item: resume there (the events between are not ours).
        if let Some(last) = page["last_seq"].as_u64()
            && self.page.is_empty()
        {
            self.last = self.last.max(last);
        }
        Ok(())
    }

    async fn connect(&mut self) -> Result<(), ClientError> {
        let response = self
            .client
            .request(Method::GET, &self.filter.stream_path())
            .header("Last-Event-ID", self.last.to_string())
            .send()
            .await?
            .succeeded()
            .await?;
        self.live = Some(response.sse().boxed());
        Ok(())
    }

    /// The record an item of the stream carries, if it is a new event of ours. A `resync` (the feed
    /// dropped events before this client read them) drops the connection, so that the reconnect
    /// reads them from the log.
    fn live_event(&mut self, event: SseEvent) -> Option<Value> {
        match event.event.as_str() {
            "event" => {
                let record: Value = serde_json::from_str(&event.data).ok()?;
                self.take(record)
            }
            "resync" => {
                self.live = None;
                None
            }
            _ => None,
        }
    }

    /// After `e`: waits to try again, or answers `e` when it is not worth it.
    async fn failed(&mut self, e: ClientError) -> Option<ClientError> {
        self.live = None;
        let refused_for_good = matches!(e, ClientError::Refused { .. }) && !e.is_transient();
        self.failures += 1;
        if refused_for_good || self.failures > self.client.attempts {
            return Some(e);
        }
        let backoff = FIRST_BACKOFF
            .saturating_mul(1 << (self.failures - 1).min(10))
            .min(MAX_BACKOFF);
        let wait = e.retry_after().unwrap_or(backoff);
        tracing::debug!(error = %e, after = self.last, ?wait, "the event stream resumes");
        tokio::time::sleep(wait).await;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_filter_names_its_pages_and_its_stream() {
        let id = Uuid::nil();
        let agent = EventFilter::entity(AggregateKind::Agent, id);
        assert_eq!(
            agent.page_path(5),
            format!("/api/v1/events?after_seq=5&limit=1000&aggregate=agent&aggregate_id={id}")
        );
        // The agent's heartbeats are not events: only its topic is asked for.
        assert_eq!(
            agent.stream_path(),
            format!("/api/v1/stream?topics=agent&entity={id}")
        );
        assert_eq!(
            EventFilter::all().stream_path(),
            "/api/v1/stream?topics=agent,task,project"
        );
    }

    fn follow(filter: EventFilter, last: u64) -> Follow {
        Follow {
            client: Client::new("http://127.0.0.1:1"),
            filter,
            last,
            page: VecDeque::new(),
            caught_up: true,
            live: None,
            failures: 0,
            done: false,
        }
    }

    fn sse(event: &str, data: Value) -> SseEvent {
        SseEvent {
            event: event.into(),
            id: data["seq"].to_string(),
            data: data.to_string(),
        }
    }

    #[test]
    fn each_event_is_taken_once_in_order_and_other_items_pass() {
        let mut follow = follow(EventFilter::aggregate(AggregateKind::Task), 2);
        let task = |seq| json!({"seq": seq, "aggregate": "task"});
        assert_eq!(
            follow.live_event(sse("event", task(2))),
            None,
            "seen already"
        );
        assert_eq!(follow.live_event(sse("event", task(3))), Some(task(3)));
        assert_eq!(follow.live_event(sse("event", task(3))), None, "twice");
        assert_eq!(follow.live_event(sse("status", json!({"lag": 0}))), None);
        assert_eq!(follow.live_event(sse("heartbeat", json!({"seq": 9}))), None);
        let agent = json!({"seq": 4, "aggregate": "agent"});
        assert_eq!(follow.live_event(sse("event", agent)), None, "not ours");
        assert_eq!(follow.last, 4);
        assert_eq!(follow.live_event(sse("event", task(5))), Some(task(5)));
    }
}
