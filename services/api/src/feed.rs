//! The live feed behind `GET /api/v1/stream` and the dashboard: every event appended to the log, released
//! to subscribers only once the read models have committed it (so a client that reacts to an event by
//! reading finds it applied); a status tick (checkpoint, head) after each commit, at most every
//! [`TICK`], and at least every [`IDLE_TICK`] when nothing happens (so a chart of rates falls to zero
//! and moves on); and each agent's heartbeat as its bucket records it (heartbeats are not events).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use hive_eventlog::audit::Record;
use hive_eventlog::{EventLog, Heartbeats};
use serde::Serialize;
use tokio::sync::broadcast;

use crate::consistency::{Progress, Tasks};

/// Least time between two status ticks.
pub const TICK: Duration = Duration::from_millis(200);
/// Most time between two status ticks: an idle hive still ticks.
pub const IDLE_TICK: Duration = Duration::from_secs(1);
/// Events held while the projection catches up; beyond it the oldest are dropped (subscribers are told
/// to resync).
const MAX_PENDING: usize = 100_000;
/// Items a slow subscriber may fall behind before it is told to resync.
const CHANNEL: usize = 4_096;

/// One item of the feed.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FeedItem {
    /// An event, now reflected in the read models.
    Event(Box<Change>),
    /// Where the projection stands.
    Status {
        /// The read models' checkpoint.
        checkpoint: u64,
        /// The log's last event.
        head: u64,
    },
    /// An agent's heartbeat.
    Heartbeat {
        /// The agent.
        agent_id: uuid::Uuid,
        /// When it beat.
        at: chrono::DateTime<chrono::Utc>,
    },
    /// Items were lost (the subscriber or the feed fell too far behind): reload.
    Resync,
}

/// An event on the feed: its record, and the status its agent or task is in after it (as the domain
/// folds it; absent where the event alone does not say, as for an agent's recovery).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Change {
    /// The event.
    #[serde(flatten)]
    pub record: Record,
    /// The status its agent or task is in after it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<&'static str>,
}

/// The events the read models do not reflect yet, by aggregate, as the feed reads them: a read of one
/// of those aggregates folds them onto its row (what the projector is about to write) rather than
/// answer a row that is behind, so a client polling a task sees its assignment as soon as the log
/// holds it, not one projection later, and without reading the log again. Bounded by the events the
/// feed holds (shared bytes).
#[derive(Clone, Default)]
pub struct Unreflected(Arc<Mutex<Unreflecting>>);

#[derive(Default)]
struct Unreflecting {
    by_aggregate: HashMap<uuid::Uuid, Unfolded>,
    /// The events let go of unreflected (see [`Unfolded::dropped`]), in order, with their aggregates:
    /// forgotten once the read models pass them.
    dropped: VecDeque<(u64, uuid::Uuid)>,
}

/// One aggregate's events that the read models do not reflect yet.
#[derive(Clone, Debug, Default)]
pub struct Unfolded {
    /// In order.
    pub events: Vec<hive_eventlog::RawEvent>,
    /// The latest of its events the feed let go of before the read models reflected it (0: none): a
    /// row below it misses that event, and only the log can complete it.
    pub dropped: u64,
}

impl Unfolded {
    /// The sequence of its latest event the feed saw.
    pub fn latest(&self) -> u64 {
        self.events.last().map_or(self.dropped, |e| e.seq)
    }

    /// Its events after `seq`, when they are all it has after `seq` (none let go of above it).
    pub fn after(&self, seq: u64) -> Option<impl Iterator<Item = &hive_eventlog::RawEvent>> {
        (self.dropped <= seq).then(|| self.events.iter().filter(move |e| e.seq > seq))
    }
}

impl Unreflected {
    /// What the read models did not reflect of aggregate `id` when this was called. Taken before its
    /// row is read, each of its events the feed saw is in the row or here.
    pub fn of(&self, id: uuid::Uuid) -> Option<Unfolded> {
        self.lock().by_aggregate.get(&id).cloned()
    }

    fn saw(&self, id: uuid::Uuid, raw: &hive_eventlog::RawEvent) {
        let mut inner = self.lock();
        inner
            .by_aggregate
            .entry(id)
            .or_default()
            .events
            .push(raw.clone());
    }

    /// The read models reflect event `seq` of `id` and every one before it.
    fn reflected(&self, id: uuid::Uuid, seq: u64) {
        let mut inner = self.lock();
        inner.forget(id, seq);
        while let Some(&(dropped, of)) = inner.dropped.front()
            && dropped <= seq
        {
            inner.dropped.pop_front();
            inner.forget(of, seq);
        }
    }

    /// The feed let go of event `seq` of `id` before the read models reflected it.
    fn dropped(&self, id: uuid::Uuid, seq: u64) {
        let mut inner = self.lock();
        let unfolded = inner.by_aggregate.entry(id).or_default();
        unfolded.events.retain(|e| e.seq > seq);
        unfolded.dropped = unfolded.dropped.max(seq);
        inner.dropped.push_back((seq, id));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Unreflecting> {
        // A panic while held leaves a map that is still whole: go on with it.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Unreflecting {
    /// Forgets what the read models reflect of `id` once they reached `seq`.
    fn forget(&mut self, id: uuid::Uuid, seq: u64) {
        if let Some(unfolded) = self.by_aggregate.get_mut(&id) {
            unfolded.events.retain(|e| e.seq > seq);
            if unfolded.events.is_empty() && unfolded.dropped <= seq {
                self.by_aggregate.remove(&id);
            }
        }
    }
}

/// The feed of one API process. Cheap to clone.
#[derive(Clone)]
pub struct Feed {
    tx: broadcast::Sender<Arc<FeedItem>>,
    /// What the read models do not reflect yet, by aggregate.
    pub unreflected: Unreflected,
    /// The highest sequence the feed will never release: dropped when the projection fell more than
    /// [`MAX_PENDING`] events behind, or before its start.
    dropped_through: Arc<AtomicU64>,
    _tasks: Arc<Tasks>,
}

impl Feed {
    /// Follows the log from its current end, releasing events as `progress` passes them, and the
    /// heartbeats bucket.
    pub async fn start(
        log: EventLog,
        progress: Progress,
        heartbeats: Heartbeats,
    ) -> Result<Self, hive_eventlog::LogError> {
        let (tx, _) = broadcast::channel(CHANNEL);
        // From what the read models have not reached yet (a client resuming from the log counts on
        // the feed for everything after the checkpoint), but never more than it may hold.
        let head = log.last_seq().await?;
        let unreached = progress.checkpoint() + 1;
        let from = unreached.max(head.saturating_sub(MAX_PENDING as u64) + 1);
        let skipped = if from > unreached { from - 1 } else { 0 };
        let dropped_through = Arc::new(AtomicU64::new(skipped));
        let unreflected = Unreflected::default();
        let events = tokio::spawn(follow(
            log,
            progress,
            tx.clone(),
            from,
            Held {
                dropped_through: dropped_through.clone(),
                unreflected: unreflected.clone(),
            },
        ));
        // Followed before the API serves: a heartbeat it takes from now on is on the feed.
        let first = heartbeats.follow().await?;
        let beats = tokio::spawn(follow_heartbeats(heartbeats, first, tx.clone()));
        Ok(Self {
            tx,
            unreflected,
            dropped_through,
            _tasks: Arc::new(Tasks(vec![events, beats])),
        })
    }

    /// The highest sequence the feed will never release (0: none so far).
    pub fn dropped_through(&self) -> u64 {
        self.dropped_through.load(Ordering::Acquire)
    }

    /// A new subscriber, receiving what is released from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<FeedItem>> {
        self.tx.subscribe()
    }
}

/// What the feed keeps track of beside the events it holds.
struct Held {
    /// See [`Feed::dropped_through`].
    dropped_through: Arc<AtomicU64>,
    /// See [`Unreflected`].
    unreflected: Unreflected,
}

async fn follow(
    log: EventLog,
    progress: Progress,
    tx: broadcast::Sender<Arc<FeedItem>>,
    mut next: u64,
    held: Held,
) {
    let subjects = log.subjects().clone();
    let aggregate = |raw: &hive_eventlog::RawEvent| subjects.parse(&raw.subject).map(|(_, id)| id);
    let mut checkpoint = progress.checkpoint_watch();
    // Held as stored (cheap, shared bytes) until the read models reach them, whether or not someone
    // listens (a client that subscribes meanwhile and resumes from the log counts on every event after
    // the checkpoint coming through here); decoded on release, and only while someone listens.
    let mut pending: VecDeque<hive_eventlog::RawEvent> = VecDeque::new();
    let mut last_tick = tokio::time::Instant::now() - TICK;
    let mut tick_due = false;
    loop {
        let mut events = match log.read_from(next).await {
            Ok(events) => Box::pin(events),
            Err(e) => {
                tracing::warn!(error = %e, "the live feed cannot read the log; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        loop {
            let wait_tick = last_tick + TICK;
            let idle_tick = last_tick + IDLE_TICK;
            tokio::select! {
                event = events.next() => {
                    match event {
                        Some(Ok(raw)) => {
                            next = raw.seq + 1;
                            if let Some(id) = aggregate(&raw) {
                                held.unreflected.saw(id, &raw);
                            }
                            pending.push_back(raw);
                            if pending.len() > MAX_PENDING
                                && let Some(dropped) = pending.pop_front()
                            {
                                held.dropped_through.fetch_max(dropped.seq, Ordering::AcqRel);
                                // (Reads of its aggregate fold its history from the log until its
                                // row reflects it.)
                                if let Some(id) = aggregate(&dropped) {
                                    held.unreflected.dropped(id, dropped.seq);
                                }
                                let _ = tx.send(Arc::new(FeedItem::Resync));
                            }
                        }
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "the live feed lost the log; resuming");
                            break;
                        }
                        None => break,
                    }
                }
                changed = checkpoint.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    tick_due = true;
                }
                () = tokio::time::sleep_until(wait_tick), if tick_due => {}
                () = tokio::time::sleep_until(idle_tick), if !tick_due => tick_due = true,
            }
            let reached = *checkpoint.borrow();
            while pending.front().is_some_and(|raw| raw.seq <= reached) {
                let Some(raw) = pending.pop_front() else {
                    break;
                };
                if let Some(id) = aggregate(&raw) {
                    held.unreflected.reflected(id, raw.seq);
                }
                if tx.receiver_count() > 0 {
                    let (record, state) = Record::with_status(&raw, &subjects);
                    let _ = tx.send(Arc::new(FeedItem::Event(Box::new(Change {
                        record,
                        state,
                    }))));
                }
            }
            if tick_due && last_tick.elapsed() >= TICK {
                tick_due = false;
                last_tick = tokio::time::Instant::now();
                let status = FeedItem::Status {
                    checkpoint: reached,
                    head: progress.head().max(next.saturating_sub(1)),
                };
                let _ = tx.send(Arc::new(status));
            }
        }
    }
}

/// Publishes each heartbeat the bucket records (`beats`, then a new watch whenever one ends: its
/// nats-server restarted, say).
async fn follow_heartbeats(
    heartbeats: Heartbeats,
    beats: impl futures::Stream<Item = hive_eventlog::Beat> + Send,
    tx: broadcast::Sender<Arc<FeedItem>>,
) {
    let publish = |beat: hive_eventlog::Beat| {
        if tx.receiver_count() > 0 {
            let _ = tx.send(Arc::new(FeedItem::Heartbeat {
                agent_id: beat.agent,
                at: beat.at,
            }));
        }
    };
    let mut beats = Some(beats.boxed());
    loop {
        if let Some(mut following) = beats.take() {
            while let Some(beat) = following.next().await {
                publish(beat);
            }
            tracing::warn!("the heartbeats watch ended; following again");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        match heartbeats.follow().await {
            Ok(again) => beats = Some(again.boxed()),
            Err(e) => tracing::warn!(error = %e, "the live feed cannot follow heartbeats"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(seq: u64) -> hive_eventlog::RawEvent {
        hive_eventlog::RawEvent {
            seq,
            subject: String::new(),
            payload: Default::default(),
            msg_id: None,
            pending: 0,
        }
    }

    fn seqs(unfolded: &Unfolded, after: u64) -> Option<Vec<u64>> {
        Some(unfolded.after(after)?.map(|e| e.seq).collect())
    }

    #[test]
    fn an_aggregate_is_held_until_the_read_models_reflect_its_latest_event() {
        let (a, b) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
        let unreflected = Unreflected::default();
        for (id, seq) in [(a, 1), (b, 2), (a, 3)] {
            unreflected.saw(id, &raw(seq));
        }
        let held = unreflected.of(a).unwrap();
        assert_eq!((held.latest(), seqs(&held, 0)), (3, Some(vec![1, 3])));
        assert_eq!(seqs(&held, 1), Some(vec![3]), "after a row at 1");
        unreflected.reflected(a, 1);
        unreflected.reflected(b, 2);
        assert!(unreflected.of(b).is_none());
        assert_eq!(seqs(&unreflected.of(a).unwrap(), 0), Some(vec![3]));
        unreflected.reflected(a, 3);
        assert!(unreflected.of(a).is_none());
    }

    #[test]
    fn an_event_let_go_of_unreflected_sends_reads_below_it_to_the_log() {
        let a = uuid::Uuid::now_v7();
        let unreflected = Unreflected::default();
        for seq in [1, 2, 3] {
            unreflected.saw(a, &raw(seq));
        }
        unreflected.dropped(a, 1);
        unreflected.dropped(a, 2);
        let held = unreflected.of(a).unwrap();
        assert_eq!(held.latest(), 3);
        assert_eq!(seqs(&held, 1), None, "a row at 1 misses event 2");
        assert_eq!(seqs(&held, 2), Some(vec![3]), "a row at 2 has it");
        unreflected.reflected(a, 3);
        assert!(unreflected.of(a).is_none(), "forgotten once reflected");

        // Let go of with nothing after it: forgotten once the read models pass it, whatever they
        // reflect next.
        let b = uuid::Uuid::now_v7();
        unreflected.saw(b, &raw(4));
        unreflected.dropped(b, 4);
        assert_eq!(unreflected.of(b).unwrap().latest(), 4);
        unreflected.saw(a, &raw(5));
        unreflected.reflected(a, 5);
        assert!(unreflected.of(b).is_none());
    }
}
