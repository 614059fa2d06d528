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

/// The aggregates that have events the read models do not reflect yet, each with the sequence of its
/// latest such event, as the feed sees them: a read of one of them answers from the log (its history,
/// folded) rather than from a row that is behind, so a client polling a task sees its assignment as
/// soon as the log holds it, not one projection later. Bounded by the events the feed holds.
#[derive(Clone, Default)]
pub struct Unreflected(Arc<Mutex<HashMap<uuid::Uuid, u64>>>);

impl Unreflected {
    /// The sequence of the latest event of aggregate `id` that the read models do not reflect yet.
    pub fn latest(&self, id: uuid::Uuid) -> Option<u64> {
        self.lock().get(&id).copied()
    }

    fn saw(&self, id: uuid::Uuid, seq: u64) {
        self.lock().insert(id, seq);
    }

    /// The read models reflect event `seq` of `id`: forgotten unless a later one came.
    fn reflected(&self, id: uuid::Uuid, seq: u64) {
        let mut map = self.lock();
        if map.get(&id).is_some_and(|latest| *latest <= seq) {
            map.remove(&id);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<uuid::Uuid, u64>> {
        // A panic while held leaves a map that is still whole: go on with it.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
                                held.unreflected.saw(id, raw.seq);
                            }
                            pending.push_back(raw);
                            if pending.len() > MAX_PENDING
                                && let Some(dropped) = pending.pop_front()
                            {
                                held.dropped_through.fetch_max(dropped.seq, Ordering::AcqRel);
                                // (Reads of its aggregate fall back on its row, however far behind.)
                                if let Some(id) = aggregate(&dropped) {
                                    held.unreflected.reflected(id, dropped.seq);
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
