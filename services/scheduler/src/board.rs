//! The scheduler's picture of the hive, folded from the log through the domain's replay loop: the queue
//! (priority, then age), each agent's load and last heartbeat, and the open tasks' lifecycles. What is
//! due for each is the domain's answer ([`Lifecycle::due`], [`Agent::due`]); the board keeps only the
//! indexes and the matching of queued tasks to agents. Pure: time and randomness come in as arguments,
//! so it is tested without servers.
//!
//! Long because the fold, its indexes and the matching must change together (an index the fold
//! forgets is a wrong assignment); the snapshot's image is the same state.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use hive_eventlog::RawEvent;
use hive_events::agent::{Agent, AgentCommand, AgentStatus};
use hive_events::replay::{Fold, OnRejected, Replay};
use hive_events::subject::Subjects;
use hive_events::task::{Lifecycle, TaskCommand, TaskEvent, TaskStatus};
use hive_events::wire::Stop;
use hive_events::{AgentId, DomainEvent, Envelope, Policy, TaskId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A command the board finds due, with the state it was decided on, that state's last sequence, and
/// the event that made it due.
#[derive(Clone, Debug)]
pub enum Action {
    /// A command to a task.
    Task(Uuid, TaskCommand, Box<Lifecycle>, u64, Cause),
    /// A command to an agent.
    Agent(Uuid, AgentCommand, Agent, u64, Cause),
}

/// The event a follow-up answers: the aggregate's last event, whose flow (correlation id) the
/// follow-up joins and whose id it records as its causation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cause {
    /// The flow the event belongs to.
    pub correlation_id: Uuid,
    /// The event's id.
    pub event_id: Uuid,
}

impl Action {
    /// What made it due.
    pub fn cause(&self) -> Cause {
        match self {
            Self::Task(.., cause) | Self::Agent(.., cause) => *cause,
        }
    }
}

impl Action {
    /// The aggregate it is for.
    pub fn target(&self) -> Uuid {
        match self {
            Self::Task(id, ..) | Self::Agent(id, ..) => *id,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Held<A> {
    state: A,
    seq: u64,
    cause: Cause,
}

/// An open task as the board holds it: the lifecycle the rules read (never its title, description or
/// reports), and what the board indexes it by.
#[derive(Serialize, Deserialize)]
struct Open {
    lifecycle: Lifecycle,
    /// The sequence of its last event.
    seq: u64,
    /// The sequence of its creation: its age in the queue.
    created_seq: u64,
    /// Its last event.
    cause: Cause,
    /// The agent it was last given to: a task back in the queue (failed, released, requeued) goes to
    /// another agent when one can take it.
    last_agent: Option<AgentId>,
}

impl Open {
    fn queue_key(&self, id: Uuid) -> (Reverse<u8>, u64, Uuid) {
        (Reverse(self.lifecycle.priority.get()), self.created_seq, id)
    }
}

/// The folded state.
#[derive(Default)]
pub struct Board {
    /// Every task not completed or cancelled (a dead-lettered one may be retried by an operator).
    tasks: HashMap<Uuid, Box<Open>>,
    /// Cancelled tasks, whose dependents stay blocked. A completed task is forgotten: a dependency the
    /// board does not hold completed (the command path refuses unknown dependencies).
    cancelled: HashSet<Uuid>,
    agents: HashMap<Uuid, Held<Agent>>,
    queue: BTreeSet<(Reverse<u8>, u64, Uuid)>,
    /// The open tasks each agent holds (its load is their number).
    held: HashMap<Uuid, HashSet<Uuid>>,
    /// Waiting and blocked tasks by each of their dependencies: decided again when it changes.
    dependents: HashMap<Uuid, HashSet<Uuid>>,
    /// Each open task's [`Lifecycle::due_at`], in time order: what falls due without an event.
    timers: BTreeSet<(DateTime<Utc>, Uuid)>,
    /// Open tasks to decide again at the next look, other than by their time: their event came, a
    /// dependency or their agent changed, or a command for them failed. A look at the open tasks
    /// reads these and the timers that passed, never the whole board.
    dirty: HashSet<Uuid>,
    beats: HashMap<Uuid, DateTime<Utc>>,
    /// Aggregates with a command in flight: nothing more is decided for them until their next event.
    pending: HashSet<Uuid>,
    /// Aggregates whose history holds an event the domain cannot fold: the command path refuses every
    /// command on them (`corrupt_history`), so nothing is decided for them any more.
    corrupt: HashSet<Uuid>,
    last_seq: u64,
    /// Stops the events folded since the last [`Board::take_stops`] call for: each agent to tell to
    /// stop a task taken from it.
    stops: Vec<(AgentId, Stop)>,
    /// The creations of the tasks created last (not in a snapshot): what an assignment tells its
    /// agent, without reading the task's first event back from the log.
    creations: Creations,
}

/// The [`CREATIONS`] task creations folded last, by task.
#[derive(Default)]
struct Creations {
    by_task: HashMap<Uuid, TaskEvent>,
    order: std::collections::VecDeque<Uuid>,
}

/// How many task creations the board keeps: a task is usually assigned within moments of its
/// creation, and one that waited longer has its creation read back from the log.
const CREATIONS: usize = 1_024;
/// The largest creation kept, in bytes of its text (the API takes larger ones): the creations kept
/// take a few megabytes at most.
const CREATION_BYTES: usize = 4_096;

/// About how many bytes `created`'s variable parts take.
fn creation_bytes(created: &TaskEvent) -> usize {
    let TaskEvent::TaskCreated {
        title,
        description,
        task_type,
        required_capabilities,
        depends_on,
        waiting_on,
        labels,
        ..
    } = created
    else {
        return 0;
    };
    let text = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    title.len()
        + text(description)
        + text(task_type)
        + required_capabilities
            .iter()
            .map(|c| c.as_str().len())
            .sum::<usize>()
        + (depends_on.len() + waiting_on.len()) * 16
        + labels
            .pairs()
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
}

impl Creations {
    fn keep(&mut self, id: Uuid, created: TaskEvent) {
        if creation_bytes(&created) > CREATION_BYTES {
            return;
        }
        if self.by_task.insert(id, created).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > CREATIONS {
            if let Some(oldest) = self.order.pop_front() {
                self.by_task.remove(&oldest);
            }
        }
    }
}

/// The replay the board folds with: an event the domain refuses is passed over, the state kept as it
/// was (the projector dead-letters it).
pub fn replay(subjects: Subjects) -> Replay {
    Replay::new(subjects, OnRejected::Skip)
}

impl Fold for Board {
    fn fold(&mut self, seq: u64, envelope: Envelope) -> Result<(), String> {
        let (id, at) = (envelope.aggregate_id, envelope.meta.occurred_at);
        let cause = Cause {
            correlation_id: envelope.meta.correlation_id,
            event_id: envelope.meta.event_id.as_uuid(),
        };
        self.pending.remove(&id);
        match envelope.event {
            DomainEvent::Agent(_) => {
                let current = self.agents.get(&id);
                if current.is_some_and(|h| h.seq >= seq) {
                    return Ok(());
                }
                let state: Agent = envelope
                    .event
                    .apply_to(current.map(|h| h.state.clone()), at)?;
                self.agents.insert(id, Held { state, seq, cause });
                // Its tasks follow it (lost or gone: requeued).
                if let Some(tasks) = self.held.get(&id) {
                    self.dirty.extend(tasks.iter().copied());
                }
                self.forget_if_gone(id);
            }
            DomainEvent::Task(_) => {
                let current = self.tasks.get(&id);
                if current.is_some_and(|o| o.seq >= seq) {
                    return Ok(());
                }
                let before = current.map(|o| o.lifecycle.clone());
                if let (None, DomainEvent::Task(created @ TaskEvent::TaskCreated { .. })) =
                    (&before, &envelope.event)
                {
                    self.creations.keep(id, created.clone());
                }
                let stop = match (&before, &envelope.event) {
                    (Some(before), DomainEvent::Task(event)) => {
                        Stop::after(TaskId::from_uuid(id), before, event)
                    }
                    _ => None,
                };
                let lifecycle: Lifecycle = envelope.event.apply_to(before, at)?;
                self.stops.extend(stop);
                let current = self.tasks.remove(&id);
                if let Some(open) = &current {
                    self.unindex(id, open);
                }
                match lifecycle.status {
                    TaskStatus::Completed => {}
                    TaskStatus::Cancelled => {
                        self.cancelled.insert(id);
                    }
                    _ => {
                        let open = Box::new(Open {
                            last_agent: lifecycle
                                .agent_id
                                .or(current.as_ref().and_then(|o| o.last_agent)),
                            created_seq: current.as_ref().map_or(seq, |o| o.created_seq),
                            lifecycle,
                            seq,
                            cause,
                        });
                        self.index(id, &open);
                        self.tasks.insert(id, open);
                        self.dirty.insert(id);
                    }
                }
                if let Some(waiting) = self.dependents.get(&id) {
                    self.dirty.extend(waiting.iter().copied());
                }
            }
            DomainEvent::Project(_) => {}
        }
        Ok(())
    }
}

/// What a snapshot keeps of a board: what the log made it. Its indexes (the queue, the loads) are
/// rebuilt from it; heartbeats come from their bucket and commands in flight are not kept.
#[derive(Serialize)]
pub struct Image<'a> {
    tasks: &'a HashMap<Uuid, Box<Open>>,
    cancelled: &'a HashSet<Uuid>,
    agents: &'a HashMap<Uuid, Held<Agent>>,
    corrupt: &'a HashSet<Uuid>,
    last_seq: u64,
}

/// An [`Image`] read back.
#[derive(Deserialize)]
pub struct Restored {
    tasks: HashMap<Uuid, Box<Open>>,
    cancelled: HashSet<Uuid>,
    agents: HashMap<Uuid, Held<Agent>>,
    corrupt: HashSet<Uuid>,
    last_seq: u64,
}

impl Board {
    /// What a snapshot keeps of it.
    pub fn image(&self) -> Image<'_> {
        Image {
            tasks: &self.tasks,
            cancelled: &self.cancelled,
            agents: &self.agents,
            corrupt: &self.corrupt,
            last_seq: self.last_seq,
        }
    }

    /// The board a snapshot kept, its indexes rebuilt.
    pub fn restore(image: Restored) -> Self {
        let mut board = Board {
            cancelled: image.cancelled,
            agents: image.agents,
            corrupt: image.corrupt,
            last_seq: image.last_seq,
            ..Board::default()
        };
        for (id, open) in image.tasks {
            board.index(id, &open);
            board.tasks.insert(id, open);
            board.dirty.insert(id);
        }
        board
    }

    /// The creation of task `id`, if it was among the last tasks created (otherwise the log has it).
    pub fn creation(&self, id: Uuid) -> Option<TaskEvent> {
        self.creations.by_task.get(&id).cloned()
    }

    /// How many aggregates it holds: what a snapshot of it costs.
    pub fn size(&self) -> usize {
        self.tasks.len() + self.agents.len() + self.cancelled.len()
    }

    /// The last sequence folded.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Folds one event from the log through `replay` ([`replay`]); events at or below what the board
    /// already folded for their aggregate are ignored.
    pub fn apply(&mut self, raw: &RawEvent, replay: &Replay) {
        // Delivered again (a reader that reset itself): folded already, in order.
        if raw.seq <= self.last_seq {
            return;
        }
        self.last_seq = raw.seq;
        if let Ok(hive_events::replay::Fed::Skipped(rejected)) =
            replay.feed_stored(self, raw.seq, &raw.subject, &raw.payload)
            && let Some((_, id)) = rejected.aggregate
            && self.corrupt.insert(id)
        {
            tracing::warn!(
                %id, seq = rejected.seq, reason = %rejected.reason,
                "a history holds an event that cannot be folded: nothing more is decided for it"
            );
        }
    }

    fn unindex(&mut self, id: Uuid, task: &Open) {
        if task.lifecycle.status == TaskStatus::Queued {
            self.queue.remove(&task.queue_key(id));
        }
        if let Some(agent) = task.lifecycle.holder() {
            let agent = agent.as_uuid();
            if let Some(tasks) = self.held.get_mut(&agent) {
                tasks.remove(&id);
                if tasks.is_empty() {
                    self.held.remove(&agent);
                }
            }
            self.forget_if_gone(agent);
        }
        if let Some(at) = task.lifecycle.due_at() {
            self.timers.remove(&(at, id));
        }
        if task.lifecycle.waits_on_dependencies() {
            for dep in &task.lifecycle.depends_on {
                let dep = dep.as_uuid();
                if let Some(waiting) = self.dependents.get_mut(&dep) {
                    waiting.remove(&id);
                    if waiting.is_empty() {
                        self.dependents.remove(&dep);
                    }
                }
            }
        }
    }

    /// Forgets a deregistered agent once it holds no task: nothing is ever decided for it again, and
    /// a fleet that comes and goes for years would otherwise fill the board with agents long gone.
    fn forget_if_gone(&mut self, agent: Uuid) {
        let gone = self
            .agents
            .get(&agent)
            .is_some_and(|a| a.state.status == AgentStatus::Deregistered);
        if gone && self.load_of(agent) == 0 {
            self.agents.remove(&agent);
            self.held.remove(&agent);
            self.beats.remove(&agent);
        }
    }

    fn index(&mut self, id: Uuid, task: &Open) {
        if task.lifecycle.status == TaskStatus::Queued {
            self.queue.insert(task.queue_key(id));
        }
        if let Some(agent) = task.lifecycle.holder() {
            self.held.entry(agent.as_uuid()).or_default().insert(id);
        }
        if let Some(at) = task.lifecycle.due_at() {
            self.timers.insert((at, id));
        }
        if task.lifecycle.waits_on_dependencies() {
            for dep in &task.lifecycle.depends_on {
                self.dependents.entry(dep.as_uuid()).or_default().insert(id);
            }
        }
    }

    /// The stops due since the last call: each agent to tell to stop a task taken from it (see
    /// [`Stop::after`]).
    pub fn take_stops(&mut self) -> Vec<(AgentId, Stop)> {
        std::mem::take(&mut self.stops)
    }

    /// Notes a heartbeat.
    pub fn beat(&mut self, agent: Uuid, at: DateTime<Utc>) {
        let last = self.beats.entry(agent).or_insert(at);
        *last = (*last).max(at);
    }

    /// Forgets that a command for `id` is in flight (it failed; the state decides again).
    pub fn settle(&mut self, id: Uuid) {
        self.pending.remove(&id);
        if self.tasks.contains_key(&id) {
            self.dirty.insert(id);
        }
    }

    /// Whether nothing is to be decided for `id` now: a command for it is in flight, or its history is
    /// corrupt.
    fn settled(&self, id: &Uuid) -> bool {
        self.pending.contains(id) || self.corrupt.contains(id)
    }

    /// An agent's current load.
    pub fn load_of(&self, agent: Uuid) -> usize {
        self.held.get(&agent).map_or(0, HashSet::len)
    }

    /// The queued tasks, in the order they are served.
    pub fn queued(&self) -> impl Iterator<Item = Uuid> + '_ {
        self.queue.iter().map(|(_, _, id)| *id)
    }

    /// How many tasks are queued.
    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    /// Assignments due now: every queued task, highest priority then oldest first, to the least-loaded
    /// agent that takes work, may take the task and has room — another than the one it last had, when
    /// one can take it; a task nobody can serve is passed over, not waited on. Marks each as in flight.
    pub fn assignments(&mut self, now: DateTime<Utc>, policy: &Policy) -> Vec<Action> {
        let mut room: HashMap<Uuid, usize> = self
            .agents
            .iter()
            .filter(|(id, a)| a.state.takes_work() && !self.settled(id))
            .filter_map(|(id, a)| {
                let free =
                    (a.state.max_concurrent_tasks as usize).saturating_sub(self.load_of(*id));
                (free > 0).then_some((*id, free))
            })
            .collect();
        let mut actions = Vec::new();
        // Who may take a task is all the walk looks at; room only shrinks during it: once tasks of
        // one kind found no taker, the rest of that kind are passed over (a queue of thousands that
        // no free agent can take is walked once a kind, not once a task and agent).
        let mut no_taker = HashSet::new();
        for (_, _, task_id) in &self.queue {
            if room.is_empty() {
                break;
            }
            if self.settled(task_id) {
                continue;
            }
            let task = &self.tasks[task_id];
            let takers = task.lifecycle.takers();
            if no_taker.contains(&takers) {
                continue;
            }
            let best = room
                .iter()
                .filter(|(agent, _)| {
                    let caps = &self.agents[*agent].state.capabilities;
                    task.lifecycle
                        .can_be_taken_by(AgentId::from_uuid(**agent), caps)
                })
                .map(|(agent, free)| {
                    let max = self.agents[agent].state.max_concurrent_tasks as usize;
                    let again = task.last_agent.is_some_and(|a| a.as_uuid() == *agent);
                    (again, max - free, *agent)
                })
                .min();
            let Some((_, _, agent)) = best else {
                no_taker.insert(takers);
                continue;
            };
            let free = room.get_mut(&agent).expect("a candidate has room");
            *free -= 1;
            if *free == 0 {
                room.remove(&agent);
            }
            let command = TaskCommand::Assign {
                agent_id: AgentId::from_uuid(agent),
                lease_expires_at: now + policy.lease(),
            };
            let state = Box::new(task.lifecycle.clone());
            actions.push(Action::Task(*task_id, command, state, task.seq, task.cause));
        }
        for action in &actions {
            self.pending.insert(action.target());
        }
        actions
    }

    /// Everything else due now, as the domain decides it for each agent, and for each open task that
    /// may have something due: one whose time came ([`Lifecycle::due_at`]), or that changed (its
    /// event, a dependency, its agent, a failed command) since the last look. A task in neither
    /// cannot have anything new due, so the look costs what changed, not the board. `jitter` gives
    /// numbers in 0..1. Marks each as in flight.
    pub fn follow_ups(
        &mut self,
        now: DateTime<Utc>,
        policy: &Policy,
        mut jitter: impl FnMut() -> f64,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        for (id, held) in &self.agents {
            if self.settled(id) {
                continue;
            }
            let beat = self.beats.get(id).copied();
            if let Some(command) = held.state.due(beat, now, policy) {
                let state = held.state.clone();
                actions.push(Action::Agent(*id, command, state, held.seq, held.cause));
            }
        }
        let dependency = |dep: hive_events::TaskId| {
            let id = dep.as_uuid();
            match self.tasks.get(&id) {
                Some(open) => open.lifecycle.status,
                None if self.cancelled.contains(&id) => TaskStatus::Cancelled,
                None => TaskStatus::Completed,
            }
        };
        while let Some(&(at, id)) = self.timers.first()
            && at <= now
        {
            self.timers.pop_first();
            self.dirty.insert(id);
        }
        // A task settled now is looked at again when it settles (its event, or its command failed).
        for id in std::mem::take(&mut self.dirty) {
            let Some(task) = self.tasks.get(&id) else {
                continue;
            };
            if self.settled(&id) {
                continue;
            }
            let holder = task
                .lifecycle
                .holder()
                .and_then(|a| self.agents.get(&a.as_uuid()))
                .map(|a| a.state.status);
            let due = task
                .lifecycle
                .due(now, policy, holder, dependency, &mut jitter);
            if let Some(command) = due {
                let state = Box::new(task.lifecycle.clone());
                actions.push(Action::Task(id, command, state, task.seq, task.cause));
            }
        }
        for action in &actions {
            self.pending.insert(action.target());
        }
        actions
    }

    /// The next moment something falls due without an event: a back-off ends, a lease or a heartbeat
    /// lapses, a delayed task's time comes, a running task passes a time limit. One already past
    /// (its look still owed) is the next look's.
    pub fn next_deadline(&self, policy: &Policy) -> Option<DateTime<Utc>> {
        // A task's time, once passed, is taken out of the timers by the next look; one settled then
        // is looked at again when it settles.
        let tasks = self.timers.first().map(|(at, _)| *at);
        // Nothing is decided for a settled agent: its deadline would wake the scheduler for nothing,
        // again and again.
        let agents = self
            .agents
            .iter()
            .filter(|(id, _)| !self.settled(id))
            .filter_map(|(id, h)| h.state.deadline(self.beats.get(id).copied(), policy));
        tasks.into_iter().chain(agents).min()
    }
}

#[cfg(test)]
mod tests;
