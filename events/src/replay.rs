//! The one replay loop: stored bytes → decode (upcasting old versions, checking the subject) → bound →
//! fold, with an explicit policy for an event that cannot be folded.
//!
//! Everything that reads the log folds it through a [`Replay`]: the command path (one aggregate,
//! stopping at a bad event), audit (one aggregate or the whole log up to a point, passing bad events
//! over), the projector (dead-lettering them) and the scheduler (passing them over). What differs is
//! only where the states live — a [`Fold`] — and the [`OnRejected`] policy each caller names.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::aggregate::{Aggregate, AggregateKind, EventSchema};
use crate::envelope::{DomainEvent, Envelope, decode};
use crate::subject::Subjects;

/// What a replay does with an event it cannot fold: bytes that are no known event, an envelope that
/// disagrees with its subject, or an event the fold refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnRejected {
    /// Stop with the rejection: the state cannot be trusted past it.
    Stop,
    /// Keep the state as it was, hand the rejection to the caller, and go on.
    Skip,
}

/// Where a replay stops: the events after it are not folded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Until {
    /// Fold everything.
    #[default]
    End,
    /// Up to and including this sequence.
    Seq(u64),
    /// Up to and including this time (the events' `occurred_at`).
    Time(DateTime<Utc>),
}

/// An event a replay could not fold, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// Its sequence.
    pub seq: u64,
    /// The aggregate whose history holds it, as its subject names it (`None`: a subject that names
    /// no aggregate).
    pub aggregate: Option<(AggregateKind, Uuid)>,
    /// Why it cannot be folded.
    pub reason: String,
}

/// What feeding one event did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fed {
    /// It was folded.
    Folded,
    /// It could not be folded and was passed over ([`OnRejected::Skip`]); the state is as it was.
    Skipped(Rejected),
    /// It lies beyond the replay's bound: nothing more is folded.
    Past,
}

/// The states a replay folds into: one aggregate ([`Folded`]) or a service's own map of many.
pub trait Fold {
    /// Folds the event at `seq` onto its aggregate, or says why it cannot; a refused event must leave
    /// every state as it was.
    fn fold(&mut self, seq: u64, envelope: Envelope) -> Result<(), String>;
}

/// The replay loop's settings: which subjects it reads, what it does with a bad event, where it stops.
#[derive(Clone, Debug)]
pub struct Replay {
    subjects: Subjects,
    on_rejected: OnRejected,
    until: Until,
}

impl Replay {
    /// A replay of the log whose subjects are `subjects`, to its end.
    pub fn new(subjects: Subjects, on_rejected: OnRejected) -> Self {
        Self {
            subjects,
            on_rejected,
            until: Until::End,
        }
    }

    /// The same replay, stopping at `until`.
    pub fn until(mut self, until: Until) -> Self {
        self.until = until;
        self
    }

    /// Decodes the event stored at `seq` on `subject`: the envelope must name the aggregate its
    /// subject names.
    pub fn decode(&self, seq: u64, subject: &str, payload: &[u8]) -> Result<Envelope, Rejected> {
        let aggregate = self.subjects.parse(subject);
        let rejected = |reason| Rejected {
            seq,
            aggregate,
            reason,
        };
        let expected =
            aggregate.ok_or_else(|| rejected(format!("subject {subject} names no aggregate")))?;
        if crate::values::holds_nul(payload) {
            return Err(rejected(
                "a text holds a NUL character (\\u0000), which no read model can store".into(),
            ));
        }
        let envelope = decode(payload, Some(expected)).map_err(|e| rejected(e.to_string()))?;
        let unstorable = {
            let carried = match &envelope.event {
                DomainEvent::Task(event) => Some(event.times()),
                _ => None,
            };
            std::iter::once(&envelope.meta.occurred_at)
                .chain(carried.into_iter().flatten())
                .find(|at| !crate::values::storable_time(at))
                .copied()
        };
        if let Some(at) = unstorable {
            return Err(rejected(format!(
                "a time ({at}) before 4712 BC, which no read model can store"
            )));
        }
        Ok(envelope)
    }

    /// Feeds one event, already [decoded](Replay::decode), to `fold`. Under [`OnRejected::Stop`] a
    /// rejection is the error; under [`OnRejected::Skip`] it is [`Fed::Skipped`].
    pub fn feed(
        &self,
        fold: &mut impl Fold,
        seq: u64,
        decoded: Result<Envelope, Rejected>,
    ) -> Result<Fed, Rejected> {
        if let Until::Seq(last) = self.until
            && seq > last
        {
            return Ok(Fed::Past);
        }
        let folded = decoded.and_then(|envelope| {
            if let Until::Time(last) = self.until
                && envelope.meta.occurred_at > last
            {
                return Ok(Fed::Past);
            }
            let aggregate = Some((envelope.aggregate, envelope.aggregate_id));
            fold.fold(seq, envelope)
                .map(|()| Fed::Folded)
                .map_err(|reason| Rejected {
                    seq,
                    aggregate,
                    reason,
                })
        });
        match (folded, self.on_rejected) {
            (Err(rejected), OnRejected::Skip) => Ok(Fed::Skipped(rejected)),
            (result, _) => result,
        }
    }

    /// Decodes and feeds the event stored at `seq` on `subject`.
    pub fn feed_stored(
        &self,
        fold: &mut impl Fold,
        seq: u64,
        subject: &str,
        payload: &[u8],
    ) -> Result<Fed, Rejected> {
        self.feed(fold, seq, self.decode(seq, subject, payload))
    }
}

/// One aggregate folded from its history: its state and the sequence of the last event folded.
#[derive(Clone, Debug)]
pub struct Folded<A> {
    /// The aggregate whose history this is.
    pub id: Uuid,
    /// Its state (`None`: it did not exist yet).
    pub state: Option<A>,
    /// The sequence of its last event folded (0: none).
    pub last_seq: u64,
}

impl<A> Folded<A> {
    /// Aggregate `id` before its first event.
    pub fn new(id: Uuid) -> Self {
        Self {
            id,
            state: None,
            last_seq: 0,
        }
    }
}

impl<A: Aggregate> Fold for Folded<A> {
    fn fold(&mut self, seq: u64, envelope: Envelope) -> Result<(), String> {
        if envelope.aggregate_id != self.id {
            return Err(format!(
                "an event of {} {} in the history of {}",
                envelope.aggregate, envelope.aggregate_id, self.id
            ));
        }
        let at = envelope.meta.occurred_at;
        self.state = Some(envelope.event.apply_to(self.state.clone(), at)?);
        self.last_seq = seq;
        Ok(())
    }
}

impl DomainEvent {
    /// Folds this event onto `state`, an aggregate of the event's own kind `A` (an event of another
    /// kind is refused).
    pub fn apply_to<A: Aggregate>(self, state: Option<A>, at: DateTime<Utc>) -> Result<A, String> {
        let event =
            A::Event::from_domain(self).ok_or_else(|| format!("not an event of a {}", A::KIND))?;
        A::apply(state, &event, at).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests;
