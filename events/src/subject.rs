//! Where events live in the log: one subject per aggregate instance, `<prefix>.<aggregate>.<id>`, which
//! gives per-entity order and per-entity optimistic concurrency. The prefix is `hive.events` in production;
//! tests use their own so that each has its own stream.

use uuid::Uuid;

use crate::aggregate::AggregateKind;

/// The subject scheme of one event stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
}

impl Subjects {
    /// The production prefix.
    pub const DEFAULT_PREFIX: &'static str = "hive.events";

    /// A scheme with `prefix` (dot-separated tokens, no wildcards).
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The subject of one aggregate instance.
    pub fn of(&self, kind: AggregateKind, id: Uuid) -> String {
        format!("{}.{}.{}", self.prefix, kind.as_str(), id)
    }

    /// The wildcard that covers every event.
    pub fn all(&self) -> String {
        format!("{}.>", self.prefix)
    }

    /// The wildcard that covers the events of one kind of aggregate, one aggregate, or both named.
    pub fn matching(&self, kind: Option<AggregateKind>, id: Option<Uuid>) -> String {
        match (kind, id) {
            (None, None) => self.all(),
            (Some(kind), None) => format!("{}.{}.*", self.prefix, kind.as_str()),
            (None, Some(id)) => format!("{}.*.{id}", self.prefix),
            (Some(kind), Some(id)) => self.of(kind, id),
        }
    }

    /// The aggregate kind and id a subject names, if it is one of ours.
    pub fn parse(&self, subject: &str) -> Option<(AggregateKind, Uuid)> {
        let rest = subject.strip_prefix(&self.prefix)?.strip_prefix('.')?;
        let (kind, id) = rest.split_once('.')?;
        Some((kind.parse().ok()?, Uuid::parse_str(id).ok()?))
    }
}

impl Default for Subjects {
    fn default() -> Self {
        Self::new(Self::DEFAULT_PREFIX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_round_trip() {
        let s = Subjects::default();
        let id = Uuid::now_v7();
        let subject = s.of(AggregateKind::Task, id);
        assert_eq!(subject, format!("hive.events.task.{id}"));
        assert_eq!(s.parse(&subject), Some((AggregateKind::Task, id)));
        assert_eq!(s.parse("hive.events.task.not-a-uuid"), None);
        assert_eq!(s.parse("hive.events.robot.0"), None);
        assert_eq!(s.parse("other.events.task.x"), None);
        assert_eq!(s.all(), "hive.events.>");
    }
}
