//! The event log: one JetStream stream that is the only source of truth of Hive.
//!
//! [`log`] owns the stream: it creates or updates it at start, appends with optimistic concurrency on the
//! aggregate's subject (`Nats-Expected-Last-Subject-Sequence`) and idempotency (`Nats-Msg-Id`), loads one
//! aggregate's history, and reads the log in order from any sequence. [`command`] is the write path on top:
//! load, fold, decide, append, and on a lost race reload and decide again, a bounded number of times;
//! [`snapshot`] keeps long histories' states so that a load folds only what came after.
//! [`backup`] takes a consistent backup of the stream and the tokens from a live hive and restores
//! one into an empty stream, every event at its own sequence.
//! [`Namespace`] names everything a deployment (or a test) owns in NATS, so tests never share a stream.

pub mod audit;
pub mod backup;
pub mod command;
pub mod durable;
pub mod kv;
pub mod leadership;
pub mod log;
pub mod objects;
pub mod patience;
pub mod recent;
pub mod snapshot;
pub mod tokens;
pub mod users;

pub use command::{CommandContext, CommandError, Committed};
pub use durable::StoreSync;
pub use kv::{Beat, Heartbeats};
pub use leadership::{Lease, LeaseOf};
pub use log::{AppendError, EventLog, LogConfig, LogError, RawEvent};
pub use objects::{Covered, Objects};
pub use patience::patiently;
pub use recent::Recent;
pub use snapshot::Snapshots;
pub use tokens::{Grant, Role, Tokens};

/// The names a deployment owns in NATS: `<ns>.events.>` in stream `<NS>_EVENTS`, projection notices on
/// `<ns>.projections.<name>`. Production uses `hive`; each test its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace(String);

impl Namespace {
    /// A namespace: a single subject token of letters, digits, `-` and `_`.
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        Self::parse(&name).unwrap_or_else(|| {
            panic!("a namespace is one token of letters, digits, '-' and '_': {name:?}")
        })
    }

    /// `name` as a namespace, if it is one (a single subject token of letters, digits, `-` and `_`).
    pub fn parse(name: &str) -> Option<Self> {
        (!name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        .then(|| Self(name.to_owned()))
    }

    /// The namespace's token.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The event stream's name.
    pub fn stream(&self) -> String {
        format!("{}_EVENTS", self.0.to_ascii_uppercase().replace('-', "_"))
    }

    /// The subject scheme of the events.
    pub fn subjects(&self) -> hive_events::subject::Subjects {
        hive_events::subject::Subjects::new(format!("{}.events", self.0))
    }

    /// Where a projection announces each committed checkpoint.
    pub fn projection_notices(&self, projection: &str) -> String {
        format!("{}.projections.{projection}", self.0)
    }

    /// Where the API asks projection `projection`'s leading projector to fold a dead letter's
    /// aggregate again (a request; the projector answers its reply subject).
    pub fn refold_requests(&self, projection: &str) -> String {
        format!("{}.refold.{projection}", self.0)
    }
}

impl Default for Namespace {
    fn default() -> Self {
        Self::new("hive")
    }
}
