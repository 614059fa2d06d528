//! The JetStream stream itself: create, append, load one aggregate, read from a sequence.
//!
//! Long because the stream adapter is one type whose operations share its handles, its watched readers
//! and its error mapping.

use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind, stream::DirectGetErrorKind};
use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use hive_events::AggregateKind;
use hive_events::subject::Subjects;
use thiserror::Error;
use tracing::instrument;
use uuid::Uuid;

use crate::Namespace;
use crate::durable::StoreSync;
use crate::recent::Recent;
use crate::snapshot::Snapshots;

/// How the stream is set up.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// The names we own.
    pub namespace: Namespace,
    /// How long JetStream remembers a `Nats-Msg-Id` to drop a repeat (idempotency beyond this window
    /// still holds for commands on an existing aggregate: their history is checked too).
    pub duplicate_window: Duration,
    /// Stream replicas: 1 on one server, 3 on a cluster.
    pub replicas: usize,
    /// Largest event accepted, in bytes.
    pub max_event_bytes: i32,
    /// How many times a command is decided after losing races before it answers a conflict.
    pub command_attempts: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            namespace: Namespace::default(),
            duplicate_window: Duration::from_secs(10 * 60),
            replicas: 1,
            max_event_bytes: 1024 * 1024,
            command_attempts: crate::command::MAX_ATTEMPTS,
        }
    }
}

/// The log could not be reached or answered oddly.
#[derive(Debug, Error)]
#[error("event log: {what}: {source}")]
pub struct LogError {
    what: &'static str,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl LogError {
    /// An error of `what`, caused by `source`.
    pub fn new(
        what: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            what,
            source: source.into(),
        }
    }
}

/// Why an append did not happen.
#[derive(Debug, Error)]
pub enum AppendError {
    /// Another event was appended to the subject since the expected sequence.
    #[error("the aggregate changed since it was read")]
    Conflict,
    /// The log failed.
    #[error(transparent)]
    Log(#[from] LogError),
}

/// How many events one read of a history asks for (a longer one takes several reads).
const READ_BATCH: usize = 256;

/// How long a read of a history waits for each answer.
const READ_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// One stored event, undecoded.
#[derive(Clone, Debug)]
pub struct RawEvent {
    /// Its position in the log.
    pub seq: u64,
    /// The subject it was stored on.
    pub subject: String,
    /// The stored bytes.
    pub payload: Bytes,
    /// The `Nats-Msg-Id` it was appended with, if any.
    pub msg_id: Option<String>,
    /// Read from the log in order: how many later events were already stored when this one was
    /// delivered (0 for a single read). A reader far behind uses it to batch.
    pub pending: u64,
}

/// The result of an append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// The event's sequence (the first one's, for a repeat).
    pub seq: u64,
    /// True when the server had already stored this `Nats-Msg-Id`: nothing was appended.
    pub duplicate: bool,
}

/// The event log. Cheap to clone (every request's state holds one).
#[derive(Clone)]
pub struct EventLog {
    inner: std::sync::Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    js: jetstream::Context,
    /// Holds the stream's info as read at open: cloning it per request cost an allocation storm.
    stream: jetstream::stream::Stream,
    subjects: Subjects,
    namespace: Namespace,
    replicas: usize,
    command_attempts: usize,
    /// Where the command path keeps long histories' states ([`EventLog::with_snapshots`]).
    snapshots: Option<Snapshots>,
    /// What makes an acknowledged append durable when nats-server does not fsync it
    /// ([`EventLog::with_store_sync`]).
    store_sync: Option<StoreSync>,
    /// The states the command path decided on last ([`crate::recent`]).
    recent: Recent,
}

/// The stream's settings for `config`.
pub(crate) fn stream_config(config: &LogConfig) -> jetstream::stream::Config {
    jetstream::stream::Config {
        name: config.namespace.stream(),
        description: Some("Hive's event log: the only source of truth".into()),
        subjects: vec![config.namespace.subjects().all()],
        storage: jetstream::stream::StorageType::File,
        retention: jetstream::stream::RetentionPolicy::Limits,
        num_replicas: config.replicas,
        duplicate_window: config.duplicate_window,
        max_message_size: config.max_event_bytes,
        allow_direct: true,
        deny_delete: true,
        deny_purge: true,
        ..Default::default()
    }
}

/// An error unless the stream of `info` has a leader (a stream on one server always has).
pub(crate) fn led(info: &jetstream::stream::Info) -> Result<(), LogError> {
    match &info.cluster {
        Some(cluster) if cluster.leader.is_none() => Err(LogError::new(
            "find the stream's leader",
            format!("{} has no leader yet", info.config.name),
        )),
        _ => Ok(()),
    }
}

impl EventLog {
    /// Connects to the stream, creating it or bringing its settings up to date (idempotent).
    #[instrument(skip_all, fields(stream = %config.namespace.stream()), err)]
    pub async fn open(client: async_nats::Client, config: &LogConfig) -> Result<Self, LogError> {
        let js = jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(5))
            .max_ack_inflight(4096)
            .build(client);
        let stream_config = stream_config(config);
        // Create or update only when the settings differ: on a cluster, services that all create the
        // same stream at once wait for each other's answers.
        let current = match js.get_stream(config.namespace.stream()).await {
            Ok(stream) => {
                let have = &stream.cached_info().config;
                (have.subjects == stream_config.subjects
                    && have.num_replicas == stream_config.num_replicas
                    && have.duplicate_window == stream_config.duplicate_window
                    && have.max_message_size == stream_config.max_message_size)
                    .then_some(stream)
            }
            Err(_) => None,
        };
        let stream = match current {
            Some(stream) => stream,
            None => {
                js.create_or_update_stream(stream_config)
                    .await
                    .map_err(|e| LogError::new("create or update the stream", e))?;
                js.get_stream(config.namespace.stream())
                    .await
                    .map_err(|e| LogError::new("open the stream", e))?
            }
        };
        Ok(Self::of(js, stream, config, config.replicas))
    }

    /// Connects to the stream as it is, changing nothing (an error if there is none): for the
    /// operators' commands that only read, which must not bring its settings to theirs. The replicas
    /// are the stream's own, so the buckets opened beside it keep theirs too.
    pub async fn open_existing(
        client: async_nats::Client,
        config: &LogConfig,
    ) -> Result<Self, LogError> {
        let js = jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(5))
            .build(client);
        let stream = js
            .get_stream(config.namespace.stream())
            .await
            .map_err(|e| LogError::new("open the stream", e))?;
        let replicas = stream.cached_info().config.num_replicas;
        Ok(Self::of(js, stream, config, replicas))
    }

    fn of(
        js: jetstream::Context,
        stream: jetstream::stream::Stream,
        config: &LogConfig,
        replicas: usize,
    ) -> Self {
        Self {
            inner: std::sync::Arc::new(Inner {
                js,
                stream,
                subjects: config.namespace.subjects(),
                namespace: config.namespace.clone(),
                replicas,
                command_attempts: config.command_attempts.max(1),
                snapshots: None,
                store_sync: None,
                recent: Recent::default(),
            }),
        }
    }

    /// The same log, whose command path loads aggregates from `snapshots` and keeps them there
    /// ([`crate::snapshot`]). Without, every load folds the whole history.
    pub fn with_snapshots(&self, snapshots: Snapshots) -> Self {
        Self {
            inner: std::sync::Arc::new(Inner {
                snapshots: Some(snapshots),
                ..(*self.inner).clone()
            }),
        }
    }

    /// The same log, whose appends answer only once `sync` has synced the store after their ack
    /// ([`crate::durable`]): for a nats-server on this host that does not fsync every write.
    pub fn with_store_sync(&self, sync: StoreSync) -> Self {
        Self {
            inner: std::sync::Arc::new(Inner {
                store_sync: Some(sync),
                ..(*self.inner).clone()
            }),
        }
    }

    /// The same log, whose command path keeps the states it decided on in `recent` (shared with
    /// the other logs given it: the parts of one process) rather than in its own.
    pub fn with_recent(&self, recent: Recent) -> Self {
        Self {
            inner: std::sync::Arc::new(Inner {
                recent,
                ..(*self.inner).clone()
            }),
        }
    }

    /// The states its command path decided on last.
    pub fn recent(&self) -> &Recent {
        &self.inner.recent
    }

    /// What makes its acknowledged writes durable, when nats-server does not.
    pub fn store_sync(&self) -> Option<&StoreSync> {
        self.inner.store_sync.as_ref()
    }

    /// The snapshots the command path uses, if it uses any.
    pub fn snapshots(&self) -> Option<&Snapshots> {
        self.inner.snapshots.as_ref()
    }

    /// On how many servers the stream (and each bucket beside it) keeps its data.
    pub fn replicas(&self) -> usize {
        self.inner.replicas
    }

    /// How many times a command is decided after losing races before it answers a conflict.
    pub fn command_attempts(&self) -> usize {
        self.inner.command_attempts
    }

    /// The subject scheme.
    pub fn subjects(&self) -> &Subjects {
        &self.inner.subjects
    }

    /// The namespace.
    pub fn namespace(&self) -> &Namespace {
        &self.inner.namespace
    }

    /// The NATS client underneath.
    pub fn client(&self) -> async_nats::Client {
        self.inner.js.client()
    }

    /// The stream's handle (for the backup, which reads it whole).
    pub(crate) fn stream(&self) -> &jetstream::stream::Stream {
        &self.inner.stream
    }

    /// Appends `payload` to `subject` if the subject's last event is still `expected` (0: none yet).
    /// With `msg_id`, a repeat within the duplicate window appends nothing and answers the first seq.
    /// Answers once the event is durable: acknowledged, and synced when the log has a store sync.
    pub async fn append(
        &self,
        subject: &str,
        expected: u64,
        msg_id: Option<&str>,
        payload: Bytes,
    ) -> Result<Appended, AppendError> {
        let appended = self
            .append_unsynced(subject, expected, msg_id, payload)
            .await?;
        self.synced().await?;
        Ok(appended)
    }

    /// Returns once whatever the log acknowledged before the call is durable: at once, unless the log
    /// has a store sync ([`EventLog::with_store_sync`]), then after a sync begun now.
    pub async fn synced(&self) -> Result<(), LogError> {
        crate::durable::on(self.store_sync()).await
    }

    /// Like [`EventLog::append`], answering on the acknowledgement, before any store sync.
    pub(crate) async fn append_unsynced(
        &self,
        subject: &str,
        expected: u64,
        msg_id: Option<&str>,
        payload: Bytes,
    ) -> Result<Appended, AppendError> {
        let began = std::time::Instant::now();
        loop {
            let mut publish = jetstream::message::PublishMessage::build()
                .payload(payload.clone())
                .expected_last_subject_sequence(expected);
            if let Some(id) = msg_id {
                publish = publish.message_id(id);
            }
            let ack = self
                .inner
                .js
                .send_publish(subject.to_owned(), publish)
                .await
                .map_err(|e| LogError::new("publish", e))?
                .await;
            match ack {
                Ok(ack) => {
                    metrics::histogram!("hive_log_append_seconds")
                        .record(began.elapsed().as_secs_f64());
                    return Ok(Appended {
                        seq: ack.sequence,
                        duplicate: ack.duplicate,
                    });
                }
                Err(e) if lost_the_race(&e) => return Err(AppendError::Conflict),
                // A clustered stream refuses a repeat of a key whose first publish it has not
                // committed yet: once it has, the same publish is answered as a repeat (or, if the
                // first failed, appended).
                Err(e) if key_in_flight(&e) && began.elapsed() < KEY_IN_FLIGHT_PATIENCE => {
                    tokio::time::sleep(KEY_IN_FLIGHT_PAUSE).await;
                }
                Err(e) => return Err(LogError::new("append", e).into()),
            }
        }
    }

    /// One aggregate's events, in order.
    #[instrument(skip(self), err)]
    pub async fn history(&self, kind: AggregateKind, id: Uuid) -> Result<Vec<RawEvent>, LogError> {
        let mut events = Vec::new();
        self.read_on(&self.inner.subjects.of(kind, id), 1, &mut events)
            .await?;
        Ok(events)
    }

    /// Appends to `events` every event on `subject` from sequence `from` on, in order: up to
    /// [`READ_BATCH`] of them a request.
    pub(crate) async fn read_on(
        &self,
        subject: &str,
        mut from: u64,
        events: &mut Vec<RawEvent>,
    ) -> Result<(), LogError> {
        loop {
            let (batch, more) = self.batch_on(subject, from).await?;
            let Some(last) = batch.last() else {
                return Ok(());
            };
            from = last.seq + 1;
            events.extend(batch);
            if !more {
                return Ok(());
            }
        }
    }

    /// Up to [`READ_BATCH`] events on `subject` from sequence `from` on, in order, in one request
    /// (nats-server's batched direct get, read while no write lands), and whether the log held more
    /// after them: a history of a few events costs one round trip, not one per event and one more.
    pub(crate) async fn batch_on(
        &self,
        subject: &str,
        from: u64,
    ) -> Result<(Vec<RawEvent>, bool), LogError> {
        use async_nats::StatusCode;
        use futures::StreamExt;
        let failed = |e: &dyn std::fmt::Display| LogError::new("load history", e.to_string());
        let client = self.client();
        let inbox = client.new_inbox();
        let mut answers = client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| failed(&e))?;
        let request =
            serde_json::json!({"seq": from, "next_by_subj": subject, "batch": READ_BATCH});
        client
            .publish_with_reply(
                format!("$JS.API.DIRECT.GET.{}", self.inner.namespace.stream()),
                inbox,
                request.to_string().into(),
            )
            .await
            .map_err(|e| failed(&e))?;
        let mut events = Vec::new();
        loop {
            let answer = tokio::time::timeout(READ_PATIENCE, answers.next())
                .await
                .map_err(|_| failed(&"no answer in time"))?
                .ok_or_else(|| failed(&"the answers ended"))?;
            let header = |name: &str| {
                answer
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(name))
                    .map(|v| v.as_str().to_owned())
            };
            match answer.status {
                // The end of the batch: how many matching events the log held past it.
                Some(status) if status.as_u16() == 204 => {
                    let pending = header("Nats-Num-Pending").and_then(|n| n.parse::<u64>().ok());
                    return Ok((events, pending.unwrap_or(0) > 0));
                }
                // None at all from `from` on.
                Some(StatusCode::NOT_FOUND) => return Ok((events, false)),
                Some(status) => {
                    let why = answer.description.clone().unwrap_or_default();
                    return Err(failed(&format!("status {status}: {why}")));
                }
                None => {
                    let seq = header("Nats-Sequence").and_then(|n| n.parse::<u64>().ok());
                    let (Some(seq), Some(subject)) = (seq, header("Nats-Subject")) else {
                        return Err(failed(&"an answer without its sequence or subject"));
                    };
                    events.push(RawEvent {
                        pending: 0,
                        seq,
                        subject,
                        msg_id: msg_id(answer.headers.as_ref()),
                        payload: answer.payload,
                    });
                }
            }
        }
    }

    /// One aggregate's first event (its creation), if it has one: a single read.
    pub async fn first(&self, kind: AggregateKind, id: Uuid) -> Result<Option<RawEvent>, LogError> {
        self.next_on(&self.inner.subjects.of(kind, id), 1).await
    }

    /// The first event on `subject` at or after sequence `from`.
    pub(crate) async fn next_on(
        &self,
        subject: &str,
        from: u64,
    ) -> Result<Option<RawEvent>, LogError> {
        match self
            .inner
            .stream
            .direct_get_next_for_subject(subject, Some(from))
            .await
        {
            Ok(message) => Ok(Some(raw(message))),
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(LogError::new("load history", e)),
        }
    }

    /// Whether the stream holds an event at `seq`, as its leader says (a replica that lags may not
    /// have it yet).
    async fn holds(&self, seq: u64) -> Result<bool, LogError> {
        use async_nats::jetstream::stream::RawMessageErrorKind;
        match self.inner.stream.get_raw_message(seq).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => Ok(false),
            Err(e) => Err(LogError::new("get an event", e)),
        }
    }

    /// The event at `seq`, if there is one.
    pub async fn get(&self, seq: u64) -> Result<Option<RawEvent>, LogError> {
        match self.inner.stream.direct_get(seq).await {
            Ok(message) => Ok(Some(raw(message))),
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(LogError::new("get an event", e)),
        }
    }

    /// The sequence of the last event, once the stream can take writes: on a cluster still electing the
    /// stream's leader, an error.
    pub async fn ready(&self) -> Result<u64, LogError> {
        let info = self.info().await?;
        led(&info)?;
        Ok(info.state.last_sequence)
    }

    /// The sequence of the last event in the log (0 when empty).
    pub async fn last_seq(&self) -> Result<u64, LogError> {
        Ok(self.info().await?.state.last_sequence)
    }

    /// The stream's state and settings, as the server has them now.
    async fn info(&self) -> Result<jetstream::stream::Info, LogError> {
        self.inner
            .stream
            .get_info()
            .await
            .map_err(|e| LogError::new("read the stream's state", e))
    }

    /// Every event from `seq` on, in order, then new ones as they are appended. Nothing is acknowledged:
    /// the reader keeps its own checkpoint.
    pub async fn read_from(
        &self,
        seq: u64,
    ) -> Result<impl Stream<Item = Result<RawEvent, LogError>> + Send + use<>, LogError> {
        self.read(jetstream::consumer::DeliverPolicy::ByStartSequence {
            start_sequence: seq.max(1),
        })
        .await
    }

    /// Every event stored at or after `time`, in order, then new ones as they are appended.
    pub async fn read_from_time(
        &self,
        time: chrono::DateTime<chrono::Utc>,
    ) -> Result<impl Stream<Item = Result<RawEvent, LogError>> + Send + use<>, LogError> {
        self.read(jetstream::consumer::DeliverPolicy::ByStartTime { start_time: time })
            .await
    }

    async fn read(
        &self,
        deliver_policy: jetstream::consumer::DeliverPolicy,
    ) -> Result<impl Stream<Item = Result<RawEvent, LogError>> + Send + use<>, LogError> {
        // The last event before the first one wanted (unknown for a read from a time: until the first
        // event arrives, the reader cannot tell a quiet log from a lost reader).
        let before = match deliver_policy {
            jetstream::consumer::DeliverPolicy::ByStartSequence { start_sequence } => {
                start_sequence.saturating_sub(1)
            }
            _ => u64::MAX,
        };
        let consumer = self
            .inner
            .stream
            .create_consumer(jetstream::consumer::pull::OrderedConfig {
                // No filter: the stream holds only the log's subjects, and a reader of all of them
                // spares the server the per-subject count a filter costs on a long log.
                deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(|e| LogError::new("create a reader", e))?;
        let messages = consumer
            .messages()
            .await
            .map_err(|e| LogError::new("read the log", e))?;
        let events = messages
            .map_err(|e| LogError::new("read the log", e))
            .and_then(|message| std::future::ready(raw_of(message)));
        Ok(watched(self.clone(), Box::pin(events), before))
    }

    /// At most `max` events from `from` on whose subjects match `filter` (a wildcard of
    /// [`Subjects::matching`]), in order, among those the log holds at the time of the call, and how
    /// many more matching ones it held then: a page of the log, for readers that come back for the
    /// next one.
    pub async fn page(
        &self,
        from: u64,
        filter: String,
        max: usize,
    ) -> Result<(Vec<RawEvent>, u64), LogError> {
        use futures::StreamExt;
        let consumer = self
            .inner
            .stream
            .create_consumer(jetstream::consumer::pull::OrderedConfig {
                filter_subject: filter,
                deliver_policy: jetstream::consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: from.max(1),
                },
                ..Default::default()
            })
            .await
            .map_err(|e| LogError::new("create a reader", e))?;
        // What matches now; the reader would wait for more after it.
        let matching = consumer.cached_info().num_pending;
        let name = consumer.cached_info().name.clone();
        let wanted = usize::try_from(matching).unwrap_or(usize::MAX).min(max);
        let mut events = Vec::with_capacity(wanted);
        let read = async {
            if wanted == 0 {
                return Ok(());
            }
            let mut messages = consumer
                .messages()
                .await
                .map_err(|e| LogError::new("read the log", e))?;
            while events.len() < wanted {
                let Some(message) = messages.next().await else {
                    return Err(LogError::new("read the log", "the reader ended"));
                };
                let message = message.map_err(|e| LogError::new("read the log", e))?;
                events.push(raw_of(message)?);
            }
            Ok(())
        }
        .await;
        // A reader per page: gone at once, or pages would pile up consumers on the stream until its
        // limit (the server drops an idle one only after a while).
        if let Err(e) = self.inner.stream.delete_consumer(&name).await {
            tracing::debug!(error = %e, "could not delete a page's reader; it lapses by itself");
        }
        read?;
        Ok((events, matching - wanted as u64))
    }

    /// Every event from `from` up to the log's last event at the time of the call, in order.
    pub async fn read_to_head(&self, from: u64) -> Result<Vec<RawEvent>, LogError> {
        use futures::StreamExt;
        let head = self.last_seq().await?;
        if head < from.max(1) {
            return Ok(Vec::new());
        }
        let mut events = Vec::with_capacity(usize::try_from(head - from.max(1) + 1).unwrap_or(0));
        let mut stream = Box::pin(self.read_from(from).await?);
        while let Some(event) = stream.next().await {
            let event = event?;
            let seq = event.seq;
            events.push(event);
            if seq >= head {
                break;
            }
        }
        Ok(events)
    }

    /// Publishes `payload` on a core NATS subject (no persistence), for notices such as a projection's
    /// new checkpoint.
    pub async fn notify(&self, subject: String, payload: Bytes) -> Result<(), LogError> {
        self.inner
            .js
            .client()
            .publish(subject, payload)
            .await
            .map_err(|e| LogError::new("publish a notice", e))
    }

    /// Publishes a notice of kind `kind` (in its [`PUSH_KIND`] header) on a core NATS subject: the
    /// subject's readers tell kinds apart by it.
    pub async fn notify_as(
        &self,
        subject: String,
        kind: &str,
        payload: Bytes,
    ) -> Result<(), LogError> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(PUSH_KIND, kind);
        self.inner
            .js
            .client()
            .publish_with_headers(subject, headers, payload)
            .await
            .map_err(|e| LogError::new("publish a notice", e))
    }
}

/// The header that names the kind of a notice published with [`EventLog::notify_as`].
pub const PUSH_KIND: &str = "Hive-Push";

/// How long a reader waits for its next event before it asks whether the log moved on without it.
const STALL_CHECK: Duration = Duration::from_secs(1);

type Events = std::pin::Pin<Box<dyn Stream<Item = Result<RawEvent, LogError>> + Send>>;

/// `events`, in order and without a gap, ended by an error when they stop coming while the log holds
/// later ones, or when one is skipped. An ordered consumer served by a cluster node that dies can be
/// left waiting forever, with no error (seen when the stream's leader is killed under load: the
/// projector stopped, silently, while writes went on); and one that resets itself after nats-server
/// restarts can skip events, also silently (seen in the chaos test: the read models missed a few
/// events for good). Every reader restarts from its own checkpoint on an error. A quiet log costs one
/// stream-info request a second.
fn watched(
    log: EventLog,
    events: Events,
    before: u64,
) -> impl Stream<Item = Result<RawEvent, LogError>> {
    futures::stream::unfold(Some((log, events, before)), |state| async move {
        let (log, mut events, mut last) = state?;
        loop {
            match tokio::time::timeout(STALL_CHECK, futures::StreamExt::next(&mut events)).await {
                Ok(Some(Ok(event))) => {
                    if last != u64::MAX && event.seq <= last {
                        // Delivered again (a consumer that reset itself): already passed on.
                        continue;
                    }
                    if last != u64::MAX && event.seq > last + 1 {
                        match log.holds(last + 1).await {
                            // The stream holds what the reader skipped: it is lost.
                            Ok(true) => {
                                metrics::counter!("hive_log_reader_gaps_total").increment(1);
                                let lost = format!(
                                    "the reader skipped from {last} to {}: the reader is lost",
                                    event.seq
                                );
                                return Some((Err(LogError::new("read the log", lost)), None));
                            }
                            Ok(false) => tracing::warn!(
                                after = last,
                                next = event.seq,
                                "events missing from the log itself"
                            ),
                            Err(e) => return Some((Err(e), None)),
                        }
                    }
                    last = event.seq;
                    return Some((Ok(event), Some((log, events, last))));
                }
                Ok(Some(Err(e))) => return Some((Err(e), Some((log, events, last)))),
                Ok(None) => return None,
                Err(_) => match log.last_seq().await {
                    Ok(head) if last != u64::MAX && head > last => {
                        metrics::counter!("hive_log_reader_stalls_total").increment(1);
                        let lost = format!(
                            "no event after {last} for {STALL_CHECK:?} while the log holds {head}: the reader is lost"
                        );
                        return Some((Err(LogError::new("read the log", lost)), None));
                    }
                    _ => {}
                },
            }
        }
    })
}

fn msg_id(headers: Option<&async_nats::HeaderMap>) -> Option<String> {
    headers
        .and_then(|h| h.get("Nats-Msg-Id"))
        .map(|v| v.as_str().to_owned())
}

/// The event a reader delivered.
fn raw_of(message: jetstream::Message) -> Result<RawEvent, LogError> {
    let info = message
        .info()
        .map_err(|e| LogError::new("read the log", e))?;
    let (seq, pending) = (info.stream_sequence, info.pending);
    let message = message.split().0;
    Ok(RawEvent {
        pending,
        seq,
        subject: message.subject.to_string(),
        msg_id: msg_id(message.headers.as_ref()),
        payload: message.payload,
    })
}

fn raw(message: jetstream::message::StreamMessage) -> RawEvent {
    RawEvent {
        pending: 0,
        seq: message.sequence,
        subject: message.subject.to_string(),
        msg_id: msg_id(Some(&message.headers)),
        payload: message.payload,
    }
}

/// Whether a refused publish lost an optimistic-concurrency race (its expected last subject sequence
/// was stale). A clustered stream answers error code 10164 (`wrong last sequence`, without the
/// sequence) where a single server answers 10071, and async-nats names only the latter: taken for a
/// log failure, a race on a cluster failed its command instead of deciding it again.
pub(crate) fn lost_the_race(e: &jetstream::context::PublishError) -> bool {
    use jetstream::ErrorCode;
    e.kind() == PublishErrorKind::WrongLastSequence
        || matches!(
            server_code(e),
            Some(
                ErrorCode::STREAM_WRONG_LAST_SEQUENCE
                    | ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT
            )
        )
}

/// The JetStream error code the server refused a publish with, if it answered one.
fn server_code(e: &jetstream::context::PublishError) -> Option<jetstream::ErrorCode> {
    std::error::Error::source(e)
        .and_then(|source| source.downcast_ref::<jetstream::Error>())
        .map(jetstream::Error::error_code)
}

/// How long an append waits between two publishes of a key whose first publish a clustered stream
/// is still committing.
const KEY_IN_FLIGHT_PAUSE: Duration = Duration::from_millis(2);
/// How long an append waits, at most, for a key's first publish to commit.
const KEY_IN_FLIGHT_PATIENCE: Duration = Duration::from_secs(5);

/// Whether a clustered stream refused a publish because another with its key is being committed
/// (error code 10158, `duplicate message id is in process`).
fn key_in_flight(e: &jetstream::context::PublishError) -> bool {
    server_code(e) == Some(jetstream::ErrorCode::STREAM_DUPLICATE_MESSAGE_CONFLICT)
}
