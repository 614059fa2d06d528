//! The scheduler's picture of the hive, folded from the log with the domain's own `apply`: the queue
//! (priority, then age), each agent's load, and what is due — assignments, retries, requeues after a
//! lapse, dependencies released or blocked. Pure: time and randomness come in as arguments, so the
//! rules are tested without servers.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use hive_eventlog::RawEvent;
use hive_events::agent::{Agent, AgentCommand, AgentEvent, AgentStatus};
use hive_events::envelope::decode;
use hive_events::subject::Subjects;
use hive_events::task::{Task, TaskCommand, TaskStatus};
use hive_events::{AgentId, Aggregate, Capability, DomainEvent, Priority, TaskId};
use uuid::Uuid;

/// Timings the rules use.
#[derive(Clone, Debug)]
pub struct Policy {
    /// How long an assigned agent has to accept (or start) a task before it is requeued.
    pub assignment_lease: Duration,
    /// How long after its last heartbeat an agent is lost.
    pub heartbeat_timeout: Duration,
    /// The first retry's back-off; each further attempt doubles it.
    pub retry_base: Duration,
    /// The longest back-off.
    pub retry_cap: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            assignment_lease: Duration::from_secs(30),
            heartbeat_timeout: Duration::from_secs(15),
            retry_base: Duration::from_secs(1),
            retry_cap: Duration::from_secs(300),
        }
    }
}

/// A command the board finds due.
#[derive(Clone, Debug)]
pub enum Action {
    /// A command to a task, decided on the state the board holds.
    Task(Uuid, TaskCommand, Box<Task>, u64),
    /// A command to an agent, decided on the state the board holds.
    Agent(Uuid, AgentCommand, Agent, u64),
}

impl Action {
    /// The aggregate it is for.
    pub fn target(&self) -> Uuid {
        match self {
            Self::Task(id, ..) | Self::Agent(id, ..) => *id,
        }
    }
}

struct Held<A> {
    state: A,
    seq: u64,
}

/// An open task as the board holds it: the domain's state less its payload (title, description,
/// result, messages), which scheduling never reads. A long queue costs ~300 B a task, not the ~800
/// the whole `Task` took inline in the map (and twice that while the map grew); an assignment reads
/// the payload it announces from the task's first event.
struct Open {
    /// The sequence of its last event.
    seq: u64,
    /// The sequence of its creation: its age in the queue.
    created_seq: u64,
    status: TaskStatus,
    priority: Priority,
    attempts: u32,
    max_attempts: u32,
    last_error_retryable: bool,
    agent_id: Option<AgentId>,
    /// The agent it was last given to: a task back in the queue (failed, released, requeued) goes to
    /// another agent when one can take it.
    last_agent: Option<AgentId>,
    pinned_agent: Option<AgentId>,
    lease_expires_at: Option<DateTime<Utc>>,
    retry_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    required_capabilities: Box<[Capability]>,
    depends_on: Box<[TaskId]>,
}

impl Open {
    fn new(task: Task, seq: u64, created_seq: u64) -> Box<Self> {
        Box::new(Self {
            seq,
            created_seq,
            status: task.status,
            priority: task.priority,
            attempts: task.attempts,
            max_attempts: task.max_attempts,
            last_error_retryable: task.last_error_retryable,
            agent_id: task.agent_id,
            last_agent: task.agent_id,
            pinned_agent: task.pinned_agent,
            lease_expires_at: task.lease_expires_at,
            retry_at: task.retry_at,
            created_at: task.created_at,
            updated_at: task.updated_at,
            required_capabilities: task.required_capabilities.into(),
            depends_on: task.depends_on.into(),
        })
    }

    /// The domain's state again, without the payload: all that folding the next event and deciding a
    /// command read.
    fn task(&self) -> Task {
        Task {
            title: String::new(),
            description: None,
            task_type: None,
            priority: self.priority,
            required_capabilities: self.required_capabilities.to_vec(),
            depends_on: self.depends_on.to_vec(),
            project_id: None,
            pinned_agent: self.pinned_agent,
            max_attempts: self.max_attempts,
            attempts: self.attempts,
            status: self.status,
            agent_id: self.agent_id,
            lease_expires_at: self.lease_expires_at,
            progress: None,
            progress_message: None,
            result: None,
            last_error: None,
            last_error_retryable: self.last_error_retryable,
            retry_at: self.retry_at,
            reason: None,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// The folded state.
#[derive(Default)]
pub struct Board {
    /// Every task not completed or cancelled (a dead-lettered one may be retried by an operator).
    tasks: HashMap<Uuid, Box<Open>>,
    /// Cancelled tasks, whose dependents are blocked. A completed task is forgotten: a dependency the
    /// board does not hold completed (the command path refuses unknown dependencies).
    cancelled: HashSet<Uuid>,
    agents: HashMap<Uuid, Held<Agent>>,
    queue: BTreeSet<(Reverse<u8>, u64, Uuid)>,
    load: HashMap<Uuid, usize>,
    beats: HashMap<Uuid, DateTime<Utc>>,
    /// Agents that began to drain: one lost meanwhile comes back ready (the fold knows no better), and
    /// is set draining again before it is given work.
    draining: HashSet<Uuid>,
    /// Aggregates with a command in flight: nothing more is decided for them until their next event.
    pending: HashSet<Uuid>,
    last_seq: u64,
}

fn holds_agent(status: TaskStatus) -> bool {
    matches!(
        status,
        TaskStatus::Assigned | TaskStatus::Accepted | TaskStatus::Running
    )
}

impl Board {
    /// The last sequence folded.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Folds one event from the log. Events the domain refuses are skipped (the projector dead-letters
    /// them); events at or below what the board already folded are ignored.
    pub fn apply(&mut self, raw: &RawEvent, subjects: &Subjects) {
        self.last_seq = self.last_seq.max(raw.seq);
        let Some(expected) = subjects.parse(&raw.subject) else {
            return;
        };
        let Ok(envelope) = decode(&raw.payload, Some(expected)) else {
            return;
        };
        let (id, at) = (envelope.aggregate_id, envelope.meta.occurred_at);
        self.pending.remove(&id);
        match envelope.event {
            DomainEvent::Agent(event) => {
                match &event {
                    AgentEvent::AgentDraining {} => {
                        self.draining.insert(id);
                    }
                    AgentEvent::AgentDeregistered { .. } => {
                        self.draining.remove(&id);
                    }
                    _ => {}
                }
                let current = self.agents.remove(&id);
                if current.as_ref().is_some_and(|h| h.seq >= raw.seq) {
                    self.agents.extend(current.map(|h| (id, h)));
                    return;
                }
                let before = current.as_ref().map(|h| h.state.clone());
                match Agent::apply(current.map(|h| h.state), &event, at) {
                    Ok(state) => {
                        self.agents.insert(
                            id,
                            Held {
                                state,
                                seq: raw.seq,
                            },
                        );
                    }
                    Err(_) => {
                        if let Some(state) = before {
                            self.agents.insert(
                                id,
                                Held {
                                    state,
                                    seq: raw.seq,
                                },
                            );
                        }
                    }
                }
            }
            DomainEvent::Task(event) => {
                let current = self.tasks.remove(&id);
                if let Some(open) = &current {
                    if open.seq >= raw.seq {
                        self.tasks.extend(current.map(|o| (id, o)));
                        return;
                    }
                    self.unindex(id, open);
                }
                let created_seq = current.as_ref().map_or(raw.seq, |o| o.created_seq);
                let before = current.as_ref().map(|o| o.task());
                let next = match Task::apply(before.clone(), &event, at) {
                    Ok(state) => state,
                    Err(_) => match before {
                        Some(state) => state,
                        None => return,
                    },
                };
                match next.status {
                    TaskStatus::Completed => {}
                    TaskStatus::Cancelled => {
                        self.cancelled.insert(id);
                    }
                    _ => {
                        let mut open = Open::new(next, raw.seq, created_seq);
                        if open.last_agent.is_none() {
                            open.last_agent = current.and_then(|o| o.last_agent);
                        }
                        self.index(id, &open);
                        self.tasks.insert(id, open);
                    }
                }
            }
            DomainEvent::Project(_) => {}
        }
    }

    fn unindex(&mut self, id: Uuid, task: &Open) {
        if task.status == TaskStatus::Queued {
            self.queue
                .remove(&(Reverse(task.priority.get()), task.created_seq, id));
        }
        if holds_agent(task.status)
            && let Some(agent) = task.agent_id
            && let Some(load) = self.load.get_mut(&agent.as_uuid())
        {
            *load = load.saturating_sub(1);
        }
    }

    fn index(&mut self, id: Uuid, task: &Open) {
        if task.status == TaskStatus::Queued {
            self.queue
                .insert((Reverse(task.priority.get()), task.created_seq, id));
        }
        if holds_agent(task.status)
            && let Some(agent) = task.agent_id
        {
            *self.load.entry(agent.as_uuid()).or_default() += 1;
        }
    }

    /// Notes a heartbeat.
    pub fn beat(&mut self, agent: Uuid, at: DateTime<Utc>) {
        let last = self.beats.entry(agent).or_insert(at);
        *last = (*last).max(at);
    }

    /// Forgets that a command for `id` is in flight (it failed; the state decides again).
    pub fn settle(&mut self, id: Uuid) {
        self.pending.remove(&id);
    }

    /// An agent's current load.
    pub fn load_of(&self, agent: Uuid) -> usize {
        self.load.get(&agent).copied().unwrap_or(0)
    }

    /// The queued tasks, in the order they are served.
    pub fn queued(&self) -> impl Iterator<Item = Uuid> + '_ {
        self.queue.iter().map(|(_, _, id)| *id)
    }

    /// Assignments due now: every queued task, highest priority then oldest first, to the least-loaded
    /// ready agent that has its capabilities and room — another than the one it last had, when one can
    /// take it; a task nobody can serve is passed over, not waited on. Marks each as in flight.
    pub fn assignments(&mut self, now: DateTime<Utc>, policy: &Policy) -> Vec<Action> {
        let mut room: HashMap<Uuid, usize> = self
            .agents
            .iter()
            .filter(|(id, a)| {
                a.state.status == AgentStatus::Ready
                    && !self.pending.contains(id)
                    && !self.draining.contains(id)
            })
            .filter_map(|(id, a)| {
                let free =
                    (a.state.max_concurrent_tasks as usize).saturating_sub(self.load_of(*id));
                (free > 0).then_some((*id, free))
            })
            .collect();
        let mut actions = Vec::new();
        let lease = chrono::Duration::from_std(policy.assignment_lease).unwrap_or_default();
        for (_, _, task_id) in &self.queue {
            if room.is_empty() {
                break;
            }
            if self.pending.contains(task_id) {
                continue;
            }
            let task = &self.tasks[task_id];
            let best = room
                .iter()
                .filter(|(agent, _)| task.pinned_agent.is_none_or(|p| p.as_uuid() == **agent))
                .filter(|(agent, _)| {
                    let caps = &self.agents[*agent].state.capabilities;
                    task.required_capabilities.iter().all(|c| caps.contains(c))
                })
                .map(|(agent, free)| {
                    let max = self.agents[agent].state.max_concurrent_tasks as usize;
                    let again = task.last_agent.is_some_and(|a| a.as_uuid() == *agent);
                    (again, max - free, *agent)
                })
                .min();
            let Some((_, _, agent)) = best else { continue };
            let free = room.get_mut(&agent).expect("a candidate has room");
            *free -= 1;
            if *free == 0 {
                room.remove(&agent);
            }
            let command = TaskCommand::Assign {
                agent_id: AgentId::from_uuid(agent),
                lease_expires_at: now + lease,
            };
            actions.push(Action::Task(
                *task_id,
                command,
                Box::new(task.task()),
                task.seq,
            ));
        }
        for action in &actions {
            self.pending.insert(action.target());
        }
        actions
    }

    /// Everything else due now: follow-ups of failures, back-offs over, dependencies settled, leases
    /// and heartbeats lapsed, agents that reported in. `jitter` gives numbers in 0..1. Marks each as in
    /// flight.
    pub fn follow_ups(
        &mut self,
        now: DateTime<Utc>,
        policy: &Policy,
        mut jitter: impl FnMut() -> f64,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        let timeout = chrono::Duration::from_std(policy.heartbeat_timeout).unwrap_or_default();
        for (id, held) in &self.agents {
            if self.pending.contains(id) {
                continue;
            }
            let agent = &held.state;
            let beat = self.beats.get(id).copied();
            let command = match agent.status {
                AgentStatus::Registered if beat.is_some_and(|b| b >= agent.registered_at) => {
                    Some(AgentCommand::MarkReady)
                }
                AgentStatus::Lost if beat.is_some_and(|b| b > agent.updated_at) => {
                    Some(AgentCommand::Recover)
                }
                AgentStatus::Ready if self.draining.contains(id) => Some(AgentCommand::Drain),
                AgentStatus::Ready | AgentStatus::Draining => {
                    let last = beat.unwrap_or(agent.updated_at).max(agent.updated_at);
                    (last + timeout <= now).then(|| AgentCommand::MarkLost {
                        reason: "heartbeat_timeout".into(),
                    })
                }
                _ => None,
            };
            if let Some(command) = command {
                actions.push(Action::Agent(*id, command, agent.clone(), held.seq));
            }
        }
        for (id, task) in &self.tasks {
            if self.pending.contains(id) {
                continue;
            }
            let agent_status = task
                .agent_id
                .and_then(|a| self.agents.get(&a.as_uuid()))
                .map(|a| a.state.status);
            let command = match task.status {
                TaskStatus::Failed
                    if task.last_error_retryable && task.attempts < task.max_attempts =>
                {
                    Some(TaskCommand::ScheduleRetry {
                        retry_at: now + backoff(task.attempts, policy, jitter()),
                    })
                }
                TaskStatus::Failed => Some(TaskCommand::DeadLetter {
                    reason: if task.last_error_retryable {
                        format!(
                            "attempts exhausted ({} of {})",
                            task.attempts, task.max_attempts
                        )
                    } else {
                        "the failure is not retryable".into()
                    },
                }),
                TaskStatus::RetryScheduled if task.retry_at.is_none_or(|at| at <= now) => {
                    Some(TaskCommand::Queue)
                }
                TaskStatus::Waiting => self.dependency_verdict(task),
                s if holds_agent(s) && agent_status == Some(AgentStatus::Lost) => {
                    Some(TaskCommand::Requeue {
                        reason: "agent_lost".into(),
                    })
                }
                s if holds_agent(s) && agent_status == Some(AgentStatus::Deregistered) => {
                    Some(TaskCommand::Requeue {
                        reason: "agent_deregistered".into(),
                    })
                }
                TaskStatus::Assigned if task.lease_expires_at.is_some_and(|at| at <= now) => {
                    Some(TaskCommand::Requeue {
                        reason: "lease_expired".into(),
                    })
                }
                _ => None,
            };
            if let Some(command) = command {
                actions.push(Action::Task(*id, command, Box::new(task.task()), task.seq));
            }
        }
        for action in &actions {
            self.pending.insert(action.target());
        }
        actions
    }

    fn dependency_verdict(&self, task: &Open) -> Option<TaskCommand> {
        let mut all_done = true;
        for dep in &task.depends_on {
            let id = dep.as_uuid();
            let unfinished = match self.tasks.get(&id).map(|o| o.status) {
                Some(s @ (TaskStatus::DeadLettered | TaskStatus::Blocked)) => Some(s),
                Some(_) => {
                    all_done = false;
                    None
                }
                None if self.cancelled.contains(&id) => Some(TaskStatus::Cancelled),
                None => None,
            };
            if let Some(s) = unfinished {
                return Some(TaskCommand::Block {
                    reason: format!("dependency {dep} is {}", s.as_str()),
                });
            }
        }
        all_done.then_some(TaskCommand::Queue)
    }

    /// The next moment something falls due without an event: a back-off ends, a lease or a heartbeat
    /// lapses.
    pub fn next_deadline(&self, policy: &Policy) -> Option<DateTime<Utc>> {
        let timeout = chrono::Duration::from_std(policy.heartbeat_timeout).unwrap_or_default();
        let tasks = self.tasks.values().filter_map(|o| match o.status {
            TaskStatus::RetryScheduled => o.retry_at,
            TaskStatus::Assigned => o.lease_expires_at,
            _ => None,
        });
        let agents = self
            .agents
            .iter()
            .filter_map(|(id, h)| match h.state.status {
                AgentStatus::Ready | AgentStatus::Draining => {
                    let beat = self.beats.get(id).copied().unwrap_or(h.state.updated_at);
                    Some(beat.max(h.state.updated_at) + timeout)
                }
                _ => None,
            });
        tasks.chain(agents).min()
    }
}

/// Exponential back-off with "equal jitter": half the doubled delay, plus a random share of the other
/// half, never above the cap.
pub fn backoff(attempts: u32, policy: &Policy, jitter: f64) -> chrono::Duration {
    let doubled = policy
        .retry_base
        .saturating_mul(1u32 << attempts.saturating_sub(1).min(20))
        .min(policy.retry_cap);
    let delay = doubled.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0));
    chrono::Duration::from_std(delay).unwrap_or_default()
}

#[cfg(test)]
mod tests;
