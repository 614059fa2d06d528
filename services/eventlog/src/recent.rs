//! The states the command path decided on last, by aggregate: a command on an aggregate whose last
//! event this process appended (or read) decides on the state that append left, without reading the
//! history from the log again. An agent's reports on its task (accept, start, complete) each read the
//! task's history back otherwise: a round trip to nats-server a command, most of a command's work
//! besides its append.
//!
//! A state kept here is only ever a guess, never an answer: a command decided on it is appended
//! with the state's sequence as its expected last one, so if another writer (another process, or a
//! command of this one in flight) appended since, the append is refused and the command is decided
//! again on the history read from the log; and a rule that refuses the command on a kept state is
//! asked again on the history read from the log, so a state that is behind never refuses a command
//! the log's would take. Reads (`EventLog::load`) never use it.
//!
//! Bounded: two generations of at most [`GENERATION`] states each; when the newer fills up, the
//! older is dropped. A state is taken out while a command decides on it, and put back (moved on by
//! the command's event) only once that event is appended.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use uuid::Uuid;

/// States in each of the two generations, at most: a task's is a few hundred bytes and its events'
/// keys (their payloads are not kept).
pub const GENERATION: usize = 1_024;

type Slot = (TypeId, Uuid);

/// The aggregates' states the command path decided on last. Cheap to clone: clones share the
/// states, so the parts of one process (the API's commands, the scheduler's) move them on together.
#[derive(Clone, Default)]
pub struct Recent {
    inner: Arc<Mutex<Generations>>,
}

#[derive(Default)]
struct Generations {
    newer: HashMap<Slot, Box<dyn Any + Send>>,
    older: HashMap<Slot, Box<dyn Any + Send>>,
}

impl std::fmt::Debug for Recent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recent").field("held", &self.len()).finish()
    }
}

impl Recent {
    fn lock(&self) -> MutexGuard<'_, Generations> {
        // A panic while holding it leaves only maps of complete entries behind.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes the state of type `T` kept for aggregate `id` out, if there is one.
    pub(crate) fn take<T: Any + Send>(&self, id: Uuid) -> Option<T> {
        let slot = (TypeId::of::<T>(), id);
        let mut inner = self.lock();
        let kept = match inner.newer.remove(&slot) {
            Some(kept) => kept,
            None => inner.older.remove(&slot)?,
        };
        kept.downcast::<T>().ok().map(|kept| *kept)
    }

    /// `look` at the state of type `T` kept for aggregate `id`, if there is one (leaving it kept).
    pub(crate) fn peek<T: Any + Send, R>(&self, id: Uuid, look: impl FnOnce(&T) -> R) -> Option<R> {
        let slot = (TypeId::of::<T>(), id);
        let inner = self.lock();
        let kept = inner.newer.get(&slot).or_else(|| inner.older.get(&slot))?;
        kept.downcast_ref::<T>().map(look)
    }

    /// Keeps `state` for aggregate `id`, in place of any kept before.
    pub(crate) fn put<T: Any + Send>(&self, id: Uuid, state: T) {
        let slot = (TypeId::of::<T>(), id);
        let mut inner = self.lock();
        inner.older.remove(&slot);
        // A state already in the newer generation is replaced there: rotating it into the older
        // one first would leave its old value behind, to be taken later.
        let mut dropped = None;
        if !inner.newer.contains_key(&slot) && inner.newer.len() >= GENERATION {
            let newer = std::mem::take(&mut inner.newer);
            dropped = Some(std::mem::replace(&mut inner.older, newer));
        }
        inner.newer.insert(slot, Box::new(state));
        drop(inner);
        // The older generation's states are freed outside the lock.
        drop(dropped);
    }

    /// How many states are kept.
    pub(crate) fn len(&self) -> usize {
        let inner = self.lock();
        inner.newer.len() + inner.older.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_is_taken_once_by_its_type_and_the_oldest_go_first() {
        let recent = Recent::default();
        let id = Uuid::now_v7();
        recent.put(id, 7u64);
        assert_eq!(recent.take::<u32>(id), None, "another type's state");
        assert_eq!(recent.take::<u64>(id), Some(7));
        assert_eq!(recent.take::<u64>(id), None, "taken out");

        let ids: Vec<Uuid> = (0..GENERATION * 2 + 1).map(|_| Uuid::now_v7()).collect();
        for (n, id) in ids.iter().enumerate() {
            recent.put(*id, n);
        }
        assert!(recent.len() <= GENERATION * 2);
        assert_eq!(recent.take::<usize>(ids[0]), None, "the oldest are dropped");
        let last = ids.len() - 1;
        assert_eq!(recent.take::<usize>(ids[last]), Some(last));
        assert_eq!(recent.take::<usize>(ids[GENERATION]), Some(GENERATION));
    }
}
