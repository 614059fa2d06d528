//! The board's snapshot: the active scheduler saves its board, with the sequence it covers, in an
//! object store beside the log every [`SNAPSHOT_EVERY`] events or more; a new leader starts from it and
//! folds only the events after it, so taking over costs what is open, not what happened.
//!
//! A snapshot is derived, never trusted over the log. It is used only when it decodes, was written by
//! a build whose folds mean the same ([`FOLD_VERSION`]), and the log still holds, at the sequence it
//! covers, the very event it was folded up to (its subject and digest: a stream re-created or restored
//! from another history does not). Anything else is logged, counted and passed over: the board is
//! folded from the log's first event, as without a snapshot.

use hive_eventlog::{Covered, EventLog, LogError, Objects};
use hive_events::aggregate::FOLD_VERSION;
use serde::{Deserialize, Serialize};

use crate::board::{Board, Restored};

/// How many events the scheduler folds between two snapshots, at least.
pub const SNAPSHOT_EVERY: u64 = 10_000;

/// The object the snapshot is stored under.
const OBJECT: &str = "board";

/// The snapshot's format: a line of JSON saying what the board after it needs to be trusted (readable
/// with any tool), then the board in postcard (the same serde types in a compact binary: a UUID in 16
/// bytes, no field names; JSON's was ~650 bytes a queued task). Format 1 was the whole snapshot in
/// JSON: one of those is passed over (the board folded from the log, once). Postcard does not
/// describe itself: a change to the shape of what the board holds (`Open`, `Held`, `Cause`, the
/// folded states) must bump this or `FOLD_VERSION`, else an old snapshot could decode wrongly.
const FORMAT: u32 = 2;

#[derive(Serialize)]
struct Saving<'a> {
    format: u32,
    fold_version: u32,
    covered: &'a Covered,
}

#[derive(Deserialize)]
struct Saved {
    format: u32,
    fold_version: u32,
    covered: Covered,
}

/// Where the board's snapshot is kept.
#[derive(Clone)]
pub struct Snapshots {
    log: EventLog,
    objects: Objects,
}

/// Why a snapshot was passed over.
#[derive(Debug, thiserror::Error)]
pub enum Untrusted {
    /// Its bytes are not a snapshot of this build's board.
    #[error("it does not decode: {0}")]
    Undecodable(String),
    /// Another build's folds wrote it.
    #[error("it was folded by fold version {0}, this build's is {FOLD_VERSION}")]
    OtherFolds(u32),
    /// The log does not hold, at the sequence it covers, the event it was folded up to.
    #[error("the log does not hold the event at seq {0} that it was folded up to")]
    OtherHistory(u64),
    /// Its board claims another sequence than the event it names.
    #[error("its board covers seq {board}, its pin seq {pin}")]
    Inconsistent {
        /// What the board says.
        board: u64,
        /// What the pin says.
        pin: u64,
    },
}

impl Snapshots {
    /// The store of `log`'s namespace, created if missing.
    pub async fn open(log: &EventLog) -> Result<Self, LogError> {
        let name = log.namespace().board_snapshots();
        let objects =
            Objects::open(log, name, "The scheduler's board, folded from the log").await?;
        Ok(Self {
            log: log.clone(),
            objects,
        })
    }

    /// The board the last snapshot holds, when there is one it can trust; `Ok(None)` when there is
    /// none, or none to trust (the reason logged and counted).
    pub async fn load(&self) -> Result<Option<Board>, LogError> {
        let Some(bytes) = self.objects.get(OBJECT).await? else {
            return Ok(None);
        };
        match self.trust(&bytes).await? {
            Ok(board) => Ok(Some(board)),
            Err(why) => {
                metrics::counter!("hive_scheduler_snapshots_ignored_total").increment(1);
                tracing::warn!(reason = %why, "the board's snapshot is not trusted; folding the log from the start");
                Ok(None)
            }
        }
    }

    async fn trust(&self, bytes: &[u8]) -> Result<Result<Board, Untrusted>, LogError> {
        let undecodable = |why: String| Ok(Err(Untrusted::Undecodable(why)));
        let Some(line) = bytes.iter().position(|b| *b == b'\n') else {
            return undecodable("no header line".into());
        };
        let saved: Saved = match serde_json::from_slice(&bytes[..line]) {
            Ok(saved) => saved,
            Err(e) => return undecodable(format!("its header: {e}")),
        };
        if saved.format != FORMAT {
            return undecodable(format!(
                "format {}, this build reads format {FORMAT}",
                saved.format
            ));
        }
        if saved.fold_version != FOLD_VERSION {
            return Ok(Err(Untrusted::OtherFolds(saved.fold_version)));
        }
        if !saved.covered.holds(&self.log).await? {
            return Ok(Err(Untrusted::OtherHistory(saved.covered.seq)));
        }
        let restored: Restored = match postcard::take_from_bytes(&bytes[line + 1..]) {
            Ok((restored, [])) => restored,
            Ok((_, rest)) => return undecodable(format!("{} bytes after its board", rest.len())),
            Err(e) => return undecodable(format!("its board: {e}")),
        };
        let board = Board::restore(restored);
        if board.last_seq() != saved.covered.seq {
            return Ok(Err(Untrusted::Inconsistent {
                board: board.last_seq(),
                pin: saved.covered.seq,
            }));
        }
        Ok(Ok(board))
    }

    /// The snapshot of `board`, encoded, pinned to the log's event at the board's last sequence;
    /// `None` when the board folded nothing yet (or the log no longer holds that event).
    pub async fn encode(&self, board: &Board) -> Result<Option<Encoded>, LogError> {
        if board.last_seq() == 0 {
            return Ok(None);
        }
        let Some(covered) = Covered::of(&self.log, board.last_seq()).await? else {
            return Ok(None);
        };
        let saving = Saving {
            format: FORMAT,
            fold_version: FOLD_VERSION,
            covered: &covered,
        };
        // Tens of milliseconds of CPU on a large board: on a multi-threaded runtime the worker's
        // other tasks (requests, commands) move to another thread meanwhile, instead of waiting.
        let encode = || {
            let started = std::time::Instant::now();
            let mut encoded = Encoded::default();
            serde_json::to_writer(&mut encoded, &saving).map_err(|e| e.to_string())?;
            std::io::Write::write_all(&mut encoded, b"\n").map_err(|e| e.to_string())?;
            postcard::to_io(&board.image(), &mut encoded).map_err(|e| e.to_string())?;
            encoded.took = started.elapsed();
            Ok::<_, String>(encoded)
        };
        let encoded = match tokio::runtime::Handle::current().runtime_flavor() {
            tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(encode),
            _ => encode(),
        };
        encoded
            .map(Some)
            .map_err(|e| LogError::new("encode the board's snapshot", e))
    }

    /// Stores an encoded snapshot in place of the last one.
    pub async fn save(&self, encoded: &Encoded) -> Result<(), LogError> {
        self.objects.put_pieces(OBJECT, &encoded.pieces).await
    }

    /// Stores any bytes as the snapshot (what cannot be trusted is found out on load).
    pub async fn save_bytes(&self, bytes: &[u8]) -> Result<(), LogError> {
        self.objects.put(OBJECT, bytes).await
    }
}

/// An encoded snapshot, in pieces of at most [`PIECE`] bytes: encoding a board of 100k tasks (tens of
/// MB) never grows one buffer by doubling it, which held the old and the new buffer at once and left
/// up to half of the last one unused, so it takes about its own size in memory, not up to three times.
#[derive(Default)]
pub struct Encoded {
    pieces: Vec<Vec<u8>>,
    /// How long the encoding itself took (not the read of the event it is pinned to).
    took: std::time::Duration,
}

/// The size of an [`Encoded`]'s pieces.
const PIECE: usize = 1 << 20;

impl Encoded {
    /// Its size in bytes.
    pub fn len(&self) -> usize {
        self.pieces.iter().map(Vec::len).sum()
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How long encoding the board took: what spaces a leader's snapshots.
    pub fn took(&self) -> std::time::Duration {
        self.took
    }

    /// Its bytes in one buffer.
    pub fn to_vec(&self) -> Vec<u8> {
        self.pieces.concat()
    }
}

impl std::io::Write for Encoded {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.pieces.last().is_none_or(|piece| piece.len() >= PIECE) {
            self.pieces.push(Vec::with_capacity(PIECE));
        }
        let Some(piece) = self.pieces.last_mut() else {
            return Ok(0);
        };
        let n = bytes.len().min(PIECE - piece.len());
        piece.extend_from_slice(&bytes[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{Encoded, PIECE};

    #[test]
    fn an_encoding_is_its_bytes_in_pieces_of_at_most_a_piece() {
        // Two and a half pieces of JSON, written as serde_json writes: many small writes.
        let value: Vec<String> = (0..150_000).map(|n| format!("value number {n}")).collect();
        let mut encoded = Encoded::default();
        serde_json::to_writer(&mut encoded, &value).unwrap();
        let whole = serde_json::to_vec(&value).unwrap();
        assert!(whole.len() > 2 * PIECE, "{} bytes", whole.len());
        assert_eq!(encoded.len(), whole.len());
        assert_eq!(encoded.to_vec(), whole);
        assert_eq!(encoded.pieces.len(), whole.len().div_ceil(PIECE));
        assert!(encoded.pieces.iter().all(|piece| piece.len() <= PIECE));
        assert!(
            encoded.pieces[..encoded.pieces.len() - 1]
                .iter()
                .all(|piece| piece.len() == PIECE),
            "only the last piece is partly filled"
        );
        assert!(Encoded::default().is_empty());
    }
}
