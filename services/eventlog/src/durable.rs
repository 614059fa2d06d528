//! Group commit for a nats-server on this host: many acknowledged writes made durable by one
//! `syncfs(2)` of the filesystem that holds its store.
//!
//! One nats-server cannot share an fsync among publishes: with `sync_interval: always` it fsyncs each
//! message on its own, and nothing else makes an acknowledgement durable (docs/architecture.md,
//! "Durability"). But on one server with an R1 file stream, nats-server hands every message to the
//! kernel (`pwrite` to its block file) before it acknowledges it, and a crash that leaves the block
//! files rebuilds the stream's index, per-subject state and deduplication window from them. So a
//! process on the same host that syncs the store's filesystem after an ack, and only then takes the
//! ack as durable, has what `always` gives, at one sync for every write acknowledged before it began.
//!
//! [`StoreSync::durable`] waits for a sync that began after it was called: a lone write waits for one
//! sync at once (no waiting for company); writes acknowledged while a sync runs share the next. The
//! syncs run on a thread of their own. A failed sync may have lost writes the kernel held: from then
//! on every write is refused (as PostgreSQL stops at a failed fsync), until the process restarts and
//! nats-server recovers what its files hold.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Weak};

use tokio::sync::watch;

use crate::LogError;

/// Syncs the filesystem of a nats-server's store directory for the writes acknowledged before each
/// sync. Cheap to clone: clones share one syncing thread, so all of a process's writers group
/// together.
#[derive(Clone)]
pub struct StoreSync {
    shared: Arc<Shared>,
}

struct Shared {
    dir: PathBuf,
    /// Tickets handed out: one for every wait, in order.
    requested: AtomicU64,
    /// Rings the syncing thread (a wait that needs a sync); dropped with the last clone, which ends
    /// the thread.
    bell: SyncSender<()>,
    synced: watch::Sender<Synced>,
}

/// What the syncs have done so far.
#[derive(Clone, Debug, Default)]
struct Synced {
    /// Every ticket up to this one is covered by a sync that completed.
    covered: u64,
    /// How many syncs completed.
    syncs: u64,
    /// Why a sync failed: every wait fails from then on.
    failed: Option<String>,
}

impl std::fmt::Debug for StoreSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreSync")
            .field("dir", &self.shared.dir)
            .finish_non_exhaustive()
    }
}

impl StoreSync {
    /// Syncs the filesystem that holds `dir` (a nats-server's store directory), from a thread of its
    /// own: a wait wakes it directly, and one sync follows another without a hop through the async
    /// runtime's workers and its blocking pool (each a wake-up, ~0.1 ms on a loaded 2-core machine).
    pub fn open(dir: &Path) -> Result<Self, LogError> {
        let file = File::open(dir).map_err(|e| LogError::new("open the store to sync", e))?;
        // One ring pending is enough: the thread looks at every ticket handed out when it wakes.
        let (bell, rung) = std::sync::mpsc::sync_channel(1);
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            requested: AtomicU64::new(0),
            bell,
            synced: watch::Sender::new(Synced::default()),
        });
        let weak = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("hive-store-sync".into())
            .spawn(move || syncing(&weak, &rung, &file))
            .map_err(|e| LogError::new("start the store's sync", e))?;
        Ok(Self { shared })
    }

    /// Returns once a sync that began after this call has completed: whatever nats-server
    /// acknowledged before the call is then on disk.
    pub async fn durable(&self) -> Result<(), LogError> {
        let ticket = self.shared.requested.fetch_add(1, Ordering::SeqCst) + 1;
        // Refused only when a ring is pending (the thread sees this ticket when it takes it) or the
        // thread ended at a failed sync (said below).
        let _ = self.shared.bell.try_send(());
        let mut synced = self.shared.synced.subscribe();
        let done = synced
            .wait_for(|s| s.covered >= ticket || s.failed.is_some())
            .await
            .map_err(|e| LogError::new("sync the store", e))?;
        match &done.failed {
            None => Ok(()),
            Some(why) => Err(LogError::new(
                "sync the store",
                std::io::Error::other(format!(
                    "a sync of the store failed ({why}): writes since may be lost; restart the hive"
                )),
            )),
        }
    }

    /// How many syncs have completed.
    pub fn syncs(&self) -> u64 {
        self.shared.synced.borrow().syncs
    }
}

/// [`StoreSync::durable`] on `sync`, if there is one; without, an acknowledgement is durable as it is
/// (nats-server fsyncs every write, or a replicated stream's Raft log did).
pub async fn on(sync: Option<&StoreSync>) -> Result<(), LogError> {
    match sync {
        Some(sync) => sync.durable().await,
        None => Ok(()),
    }
}

/// The syncing thread: one sync at a time, each for every ticket handed out before it began; ends
/// when the last [`StoreSync`] is dropped, or at a failed sync.
fn syncing(shared: &Weak<Shared>, rung: &Receiver<()>, file: &File) {
    loop {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let wanted = shared.requested.load(Ordering::SeqCst);
        let covered = shared.synced.borrow().covered;
        if wanted <= covered {
            // Not held while waiting: the last clone's drop ends the wait.
            drop(shared);
            if rung.recv().is_err() {
                return;
            }
            continue;
        }
        let began = std::time::Instant::now();
        let failed = nix::unistd::syncfs(file)
            .err()
            .map(|errno| errno.to_string());
        metrics::histogram!("hive_store_sync_seconds").record(began.elapsed().as_secs_f64());
        metrics::histogram!("hive_store_sync_writes").record((wanted - covered) as f64);
        if let Some(why) = &failed {
            tracing::error!(error = %why, dir = %shared.dir.display(), "a sync of the store failed: refusing writes from now on");
        }
        let stop = failed.is_some();
        shared.synced.send_modify(|s| {
            s.covered = wanted;
            s.syncs += 1;
            if s.failed.is_none() {
                s.failed = failed;
            }
        });
        if stop {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::StoreSync;

    #[tokio::test]
    async fn a_lone_wait_costs_one_sync_and_concurrent_waits_share_them() {
        let dir = std::env::temp_dir();
        let sync = StoreSync::open(&dir).unwrap();
        sync.durable().await.unwrap();
        assert_eq!(sync.syncs(), 1);
        sync.durable().await.unwrap();
        assert_eq!(
            sync.syncs(),
            2,
            "a later wait is not covered by an earlier sync"
        );
        let waits = (0..200).map(|_| {
            let sync = sync.clone();
            tokio::spawn(async move { sync.durable().await })
        });
        for wait in futures::future::join_all(waits).await {
            wait.unwrap().unwrap();
        }
        let grouped = sync.syncs() - 2;
        assert!(
            (1..200).contains(&grouped),
            "200 concurrent waits took {grouped} syncs"
        );
    }
}
