//! Parts that run as one leader at a time (the scheduler, the projector): a [`Lease`] in a key-value
//! bucket decides who leads, and [`lead`] is the one loop every such part runs: stand by until the lease
//! is ours, work while renewing it, stand by again when it is lost.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures::FutureExt;

use crate::kv::Bucket;
use crate::{EventLog, LogError, Namespace};

/// Runs `work` while this instance holds the lease of `of` as `holder`, until `shutdown` resolves
/// (`Ok`) or `work` fails (its `Err`, the lease given up at once). The lease is renewed every `ttl / 3`
/// while `work` runs; when it is lost, `work` is dropped where it stands and the instance stands by,
/// trying for the lease every `ttl / 10`. `work` returning `Ok` gives the lease up and stands by too.
/// `leading` is told each change (false first, before the lease is tried).
pub async fn lead<E, Fut>(
    of: LeaseOf,
    log: &EventLog,
    holder: &str,
    ttl: Duration,
    shutdown: impl Future<Output = ()>,
    leading: impl Fn(bool),
    mut work: impl FnMut() -> Fut,
) -> Result<(), E>
where
    Fut: Future<Output = Result<(), E>>,
{
    let mut shutdown = std::pin::pin!(shutdown.fuse());
    let poll = ttl / 10;
    leading(false);
    // A cluster still electing its leaders cannot create the bucket yet: keep trying.
    let mut lease = loop {
        match Lease::open_of(of, log, holder, ttl).await {
            Ok(lease) => break lease,
            Err(e) => tracing::warn!(error = %e, "the lease bucket is not ready; retrying"),
        }
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            () = tokio::time::sleep(poll) => {}
        }
    };
    loop {
        if lease.try_acquire().await {
            tracing::info!(holder, lease = ?of, "leading");
            leading(true);
            // None: shut down; Some(None): the lease lost; Some(Some(result)): the work ended.
            let turn = tokio::select! {
                () = &mut shutdown => None,
                ended = lease.renewing(work()) => Some(ended),
            };
            leading(false);
            lease.release().await;
            match turn {
                None => return Ok(()),
                Some(None) => tracing::warn!(holder, lease = ?of, "lost the lease; standing by"),
                Some(Some(Ok(()))) => {}
                Some(Some(Err(e))) => return Err(e),
            }
        }
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            () = tokio::time::sleep(poll) => {}
        }
    }
}

/// A lease that at most one holder has at a time: a key created only if absent, renewed with a
/// compare-and-set on its revision, and gone `ttl` after its last renewal when the holder dies.
pub struct Lease {
    bucket: Bucket,
    holder: String,
    revision: Option<u64>,
}

/// Which part's leadership a [`Lease`] decides: each has a bucket of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseOf {
    /// The scheduler's (`<ns>_scheduler`).
    Scheduler,
    /// The read-model projector's (`<ns>_projector`).
    Projector,
}

impl LeaseOf {
    /// Its bucket's name in namespace `ns`.
    pub fn bucket(self, ns: &Namespace) -> String {
        match self {
            LeaseOf::Scheduler => ns.scheduler_lease(),
            LeaseOf::Projector => ns.projector_lease(),
        }
    }

    fn description(self) -> &'static str {
        match self {
            LeaseOf::Scheduler => "Which Hive scheduler is active",
            LeaseOf::Projector => "Which Hive projector is active",
        }
    }
}

const LEADER: &str = "leader";

impl Lease {
    /// Opens the lease bucket of `of` for `holder`.
    pub async fn open_of(
        of: LeaseOf,
        log: &EventLog,
        holder: impl Into<String>,
        ttl: Duration,
    ) -> Result<Self, LogError> {
        let bucket = Bucket::open(
            log,
            of.bucket(log.namespace()),
            of.description(),
            ttl,
            jetstream::stream::StorageType::Memory,
        )
        .await?;
        Ok(Self {
            bucket,
            holder: holder.into(),
            revision: None,
        })
    }

    /// Takes the lease if nobody holds it. True when we hold it now.
    pub async fn try_acquire(&mut self) -> bool {
        let holder = Bytes::from(self.holder.clone());
        let created = self.bucket.store().create(LEADER, holder.clone()).await;
        let created = match created {
            Err(e) if e.kind() != kv::CreateErrorKind::AlreadyExists => {
                // Not held by another: the bucket may be gone (a restarted server). Open it again.
                self.bucket
                    .run(|store| {
                        let holder = holder.clone();
                        async move {
                            store
                                .create(LEADER, holder)
                                .await
                                .map_err(|e| LogError::new("take the lease", e))
                        }
                    })
                    .await
                    .ok()
            }
            other => other.ok(),
        };
        match created {
            Some(revision) => {
                self.revision = Some(revision);
                true
            }
            None => false,
        }
    }

    /// Renews a held lease. False when it was lost (it lapsed and someone else took it).
    pub async fn renew(&mut self) -> bool {
        let Some(revision) = self.revision else {
            return false;
        };
        match self
            .bucket
            .store()
            .update(LEADER, Bytes::from(self.holder.clone()), revision)
            .await
        {
            Ok(revision) => {
                self.revision = Some(revision);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, bucket = %self.bucket.name, "lost the lease");
                self.revision = None;
                false
            }
        }
    }

    /// Gives a held lease up at once, so a standby need not wait for it to lapse.
    pub async fn release(&mut self) {
        if let Some(revision) = self.revision.take() {
            let _ = self
                .bucket
                .store()
                .delete_expect_revision(LEADER, Some(revision))
                .await;
        }
    }

    /// Runs `work` while renewing the lease every `ttl / 3`: its answer, or `None` once the lease is
    /// lost (`work` dropped where it stands).
    async fn renewing<T>(&mut self, work: impl Future<Output = T>) -> Option<T> {
        let mut renew = tokio::time::interval(self.bucket.max_age / 3);
        renew.tick().await;
        let mut work = std::pin::pin!(work);
        loop {
            tokio::select! {
                done = &mut work => return Some(done),
                _ = renew.tick() => {
                    if !self.renew().await {
                        return None;
                    }
                }
            }
        }
    }

    /// Who holds the lease now, if anyone.
    pub async fn holder(&self) -> Option<String> {
        self.bucket
            .store()
            .get(LEADER)
            .await
            .ok()
            .flatten()
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    }
}
