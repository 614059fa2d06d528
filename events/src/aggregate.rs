//! What every aggregate has in common: a kind, an event type with a stable name and version, a pure fold
//! and a pure decision.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{DecodeError, DomainError, FoldError};

/// The kinds of aggregate; each instance has its own subject in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum AggregateKind {
    /// A worker that runs tasks.
    Agent,
    /// A unit of work.
    Task,
    /// A group of tasks.
    Project,
}

impl AggregateKind {
    /// Every kind.
    pub const ALL: [AggregateKind; 3] = [Self::Agent, Self::Task, Self::Project];

    /// The name used in subjects and envelopes.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Task => "task",
            Self::Project => "project",
        }
    }
}

impl fmt::Display for AggregateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AggregateKind {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "agent" => Ok(Self::Agent),
            "task" => Ok(Self::Task),
            "project" => Ok(Self::Project),
            _ => Err(()),
        }
    }
}

/// An aggregate's events: serialized adjacently tagged (`{"type": .., "data": {..}}`), each type with a
/// current schema version and an upcaster for older ones.
pub trait EventSchema: Serialize + DeserializeOwned + Clone + fmt::Debug + Send + Sync {
    /// The stable type name of this event, as stored.
    fn event_type(&self) -> &'static str;

    /// The event of this schema that `event` is, if it is one.
    fn from_domain(event: crate::DomainEvent) -> Option<Self>;

    /// The schema version this build writes for `event_type`.
    fn current_version(_event_type: &str) -> u16 {
        1
    }

    /// Turns `data` stored at `version` into the current version's shape.
    fn upcast(
        event_type: &str,
        version: u16,
        data: serde_json::Value,
    ) -> Result<serde_json::Value, DecodeError> {
        if version == Self::current_version(event_type) {
            Ok(data)
        } else {
            Err(DecodeError::UnsupportedVersion {
                event_type: event_type.to_owned(),
                version,
            })
        }
    }
}

/// An aggregate: a state folded from its events, and the rules that turn a command into the next event.
///
/// The version of the folds' meaning. A snapshot (a state, or the scheduler's board, saved with the
/// sequence it covers) records it and is trusted only by a build of the same version: bump it whenever
/// an `apply`, an upcaster or the shape of a folded state changes, and every snapshot is folded again
/// from the log instead.
pub const FOLD_VERSION: u32 = 2;

/// Every command yields exactly one event. That keeps each append atomic on its own (one publish with
/// optimistic concurrency on the subject); follow-ups that a fact makes due (requeue a failed task, queue
/// a task whose dependencies completed) are new commands decided by the services that react to events.
pub trait Aggregate:
    Sized + Clone + fmt::Debug + Send + Sync + Serialize + DeserializeOwned + 'static
{
    /// The events of this aggregate.
    type Event: EventSchema;
    /// The commands this aggregate accepts.
    type Command;
    /// Which kind it is.
    const KIND: AggregateKind;
    /// Which state of its kind this type folds: the kind's whole state (its name, by default), or
    /// the name of the part a type folds alone (a task's lifecycle), so that what is kept per
    /// state — a snapshot — is never taken for another type's.
    const STATE: &'static str = Self::KIND.as_str();

    /// Folds one event onto the state (`None`: the aggregate does not exist yet). `at` is the event's
    /// `occurred_at`. An event that cannot follow the state is an error, never a panic.
    fn apply(
        state: Option<Self>,
        event: &Self::Event,
        at: DateTime<Utc>,
    ) -> Result<Self, FoldError>;

    /// Decides the event a command yields on the current state, or why it is refused.
    fn decide(state: Option<&Self>, command: Self::Command) -> Result<Self::Event, DomainError>;

    /// The name of the state the aggregate is in, for messages and the read model.
    fn state_name(state: Option<&Self>) -> &'static str;

    /// Folds a whole history.
    fn fold<'a>(
        events: impl IntoIterator<Item = (&'a Self::Event, DateTime<Utc>)>,
    ) -> Result<Option<Self>, FoldError>
    where
        Self::Event: 'a,
    {
        events.into_iter().try_fold(None, |state, (event, at)| {
            Self::apply(state, event, at).map(Some)
        })
    }
}

/// The error for an event that does not fit `state`.
pub(crate) fn refuse_event<A: Aggregate>(state: Option<&A>, event: &A::Event) -> FoldError {
    FoldError {
        aggregate: A::KIND.as_str(),
        event: event.event_type(),
        state: A::state_name(state),
    }
}

/// The error for a command that `state` does not allow.
pub(crate) fn refuse_command<A: Aggregate>(
    state: Option<&A>,
    command: &'static str,
) -> DomainError {
    match state {
        None => DomainError::NotFound {
            aggregate: A::KIND.as_str(),
        },
        Some(_) => DomainError::InvalidTransition {
            aggregate: A::KIND.as_str(),
            command,
            state: A::state_name(state),
        },
    }
}

/// Checks a free-text field's length in characters.
pub(crate) fn check_text(
    field: &'static str,
    value: &str,
    min: usize,
    max: usize,
) -> Result<(), DomainError> {
    let len = value.chars().count();
    if len < min || len > max {
        return Err(DomainError::invalid(
            field,
            format!("must be {min} to {max} characters, got {len}"),
        ));
    }
    Ok(())
}

/// Asserts that `A`'s fold refuses exactly the events its rules never decide: for every given state
/// and every kind of event (one of each, `kinds` in all, taken from what the `commands` decide), `apply`
/// accepts it iff some command decides an event of that kind from that state.
#[cfg(test)]
pub(crate) fn assert_fold_accepts_exactly_what_is_decided<A: Aggregate>(
    states: &[Option<A>],
    commands: impl Fn() -> Vec<A::Command>,
    kinds: usize,
    at: DateTime<Utc>,
) {
    let decided = |from: &Option<A>| -> Vec<A::Event> {
        commands()
            .into_iter()
            .filter_map(|c| A::decide(from.as_ref(), c).ok())
            .collect()
    };
    let mut seen = std::collections::HashSet::new();
    let samples: Vec<A::Event> = states
        .iter()
        .flat_map(decided)
        .filter(|e| seen.insert(e.event_type()))
        .collect();
    assert_eq!(
        samples.len(),
        kinds,
        "every kind of event is decided somewhere"
    );
    for from in states {
        let allowed: Vec<&str> = decided(from).iter().map(|e| e.event_type()).collect();
        for event in &samples {
            let folded = A::apply(from.clone(), event, at);
            assert_eq!(
                folded.is_ok(),
                allowed.contains(&event.event_type()),
                "{} + {}",
                A::state_name(from.as_ref()),
                event.event_type()
            );
        }
    }
}
