//! The restore's writer: events appended at their own sequences, many in flight at once.
//!
//! Each message carries `Nats-Expected-Last-Sequence` = its sequence minus one, so the stream stores
//! it there or refuses it, and acknowledgements are taken in order. A message the stream drops as a
//! repeat of a `Nats-Msg-Id` still in its (restore) window makes every later one in flight fail their
//! expectation: those are sent again, from the dropped one on, once the window has passed.

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishAckFuture};
use bytes::Bytes;

use super::BackupError;
use crate::LogError;

/// Appends awaiting their acknowledgement at most: a round trip per this many events, not per event.
const IN_FLIGHT: usize = 256;
/// How many times one event is sent again after the stream took it for a repeat.
const REPEATS: u32 = 20;

/// One message to store at `seq`.
#[derive(Clone)]
pub(super) struct Message {
    /// Where it must land.
    pub(super) seq: u64,
    /// Its subject.
    pub(super) subject: String,
    /// Its headers, without the sequence condition (added here).
    pub(super) headers: HeaderMap,
    /// Its bytes.
    pub(super) payload: Bytes,
    /// A filler that keeps `seq` empty: deleted once stored.
    pub(super) filler: bool,
}

/// Appends messages in order, each at its sequence.
pub(super) struct Appender {
    js: jetstream::Context,
    stream: jetstream::stream::Stream,
    /// How long the stream remembers a `Nats-Msg-Id`.
    window: Duration,
    in_flight: VecDeque<(Message, u32, PublishAckFuture)>,
}

impl Appender {
    /// A writer into `stream` through `js`, whose duplicate window is `window`.
    pub(super) fn new(
        js: jetstream::Context,
        stream: jetstream::stream::Stream,
        window: Duration,
    ) -> Self {
        Self {
            js,
            stream,
            window,
            in_flight: VecDeque::new(),
        }
    }

    /// Sends `message`, after settling the oldest one in flight if there are too many.
    pub(super) async fn push(&mut self, message: Message) -> Result<(), BackupError> {
        while self.in_flight.len() >= IN_FLIGHT {
            self.settle().await?;
        }
        self.send(message, 0).await
    }

    /// Settles everything in flight.
    pub(super) async fn finish(&mut self) -> Result<(), BackupError> {
        while !self.in_flight.is_empty() {
            self.settle().await?;
        }
        Ok(())
    }

    async fn send(&mut self, message: Message, repeats: u32) -> Result<(), BackupError> {
        let publish = jetstream::message::PublishMessage::build()
            .payload(message.payload.clone())
            .headers(message.headers.clone())
            .expected_last_sequence(message.seq - 1);
        let ack = self
            .js
            .send_publish(message.subject.clone(), publish)
            .await
            .map_err(|e| LogError::new("publish", e))?;
        self.in_flight.push_back((message, repeats, ack));
        Ok(())
    }

    /// Takes the oldest acknowledgement.
    async fn settle(&mut self) -> Result<(), BackupError> {
        let Some((message, repeats, ack)) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let seq = message.seq;
        match ack.await {
            Ok(ack) if ack.duplicate && repeats < REPEATS => {
                // Every later one in flight fails its expectation: wait for them, then send all
                // again once the stream has forgotten the repeated id.
                let later: Vec<_> = self.in_flight.drain(..).collect();
                let mut again = Vec::with_capacity(later.len());
                for (message, repeats, ack) in later {
                    let _ = ack.await;
                    again.push((message, repeats));
                }
                tokio::time::sleep(self.window).await;
                self.send(message, repeats + 1).await?;
                for (message, repeats) in again {
                    self.send(message, repeats).await?;
                }
                Ok(())
            }
            Ok(ack) if ack.duplicate || ack.sequence != seq => Err(BackupError::Sequence {
                expected: seq,
                actual: ack.sequence,
                why: "the stream took it as a repeat of an earlier Nats-Msg-Id".into(),
            }),
            Ok(_) if message.filler => {
                self.stream
                    .delete_message(seq)
                    .await
                    .map_err(|e| LogError::new("keep a gap", e))?;
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(e) if crate::log::lost_the_race(&e) => Err(BackupError::Sequence {
                expected: seq,
                actual: 0,
                why: format!(
                    "the stream's last sequence is not {}: something else writes to it (stop every \
                         hive service on it while restoring)",
                    seq - 1
                ),
            }),
            Err(e) => Err(LogError::new("restore an event", e).into()),
        }
    }
}
