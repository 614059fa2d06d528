//! Why a task is not running, as the domain answers it.

use super::*;
use crate::agent::AgentStatus;
use crate::task::{Candidate, WaitingReason};
use crate::values::Capability;

fn candidate(n: u128, caps: &[&str], status: AgentStatus, has_room: bool) -> Candidate {
    Candidate {
        id: AgentId::from_uuid(uuid::Uuid::from_u128(n)),
        status,
        capabilities: caps.iter().map(|c| Capability::new(*c).unwrap()).collect(),
        has_room,
    }
}

fn reason(task: &Lifecycle, deps: S, agents: &[Candidate]) -> Option<WaitingReason> {
    task.waiting_reason(at(), |_| deps, agents)
}

#[test]
fn a_queued_task_says_which_agents_it_lacks() {
    // It requires `rust`.
    let queued = given(Some(S::Queued)).unwrap().lifecycle;
    let rust = || vec![Capability::new("rust").unwrap()];
    assert_eq!(
        reason(&queued, S::Completed, &[]),
        Some(WaitingReason::NoCapableAgent {
            capabilities: rust()
        })
    );
    let gpu_only = candidate(1, &["gpu"], AgentStatus::Ready, true);
    let lost_rust = candidate(2, &["rust"], AgentStatus::Lost, true);
    assert_eq!(
        reason(&queued, S::Completed, &[gpu_only.clone(), lost_rust]),
        Some(WaitingReason::NoCapableAgent {
            capabilities: rust()
        }),
        "a lost agent is no candidate"
    );
    let full = |n| candidate(n, &["rust", "gpu"], AgentStatus::Ready, false);
    assert_eq!(
        reason(
            &queued,
            S::Completed,
            &[gpu_only.clone(), full(3), full(4), full(5)]
        ),
        Some(WaitingReason::AgentsFull { matching: 3 })
    );
    let room = candidate(6, &["rust"], AgentStatus::Ready, true);
    assert_eq!(
        reason(&queued, S::Completed, &[full(3), room]),
        Some(WaitingReason::Assigning {})
    );
}

#[test]
fn a_pinned_task_waits_for_its_agent() {
    let pinned_to = candidate(9, &["rust"], AgentStatus::Lost, true);
    let new = NewTask {
        pinned_agent: Some(pinned_to.id),
        ..new_task(vec![])
    };
    let queued = run(None, [TaskCommand::Create(new)]).unwrap().lifecycle;
    assert_eq!(
        reason(&queued, S::Completed, std::slice::from_ref(&pinned_to)),
        Some(WaitingReason::PinnedAgentUnavailable {
            agent: pinned_to.id,
            status: Some(AgentStatus::Lost)
        })
    );
    assert_eq!(
        reason(&queued, S::Completed, &[]),
        Some(WaitingReason::PinnedAgentUnavailable {
            agent: pinned_to.id,
            status: None
        })
    );
}

#[test]
fn a_waiting_task_names_its_open_dependencies_its_time_or_what_blocks_it() {
    let waiting = given(Some(S::Waiting)).unwrap().lifecycle;
    assert_eq!(
        reason(&waiting, S::Running, &[]),
        Some(WaitingReason::WaitingOn { tasks: vec![dep()] })
    );
    assert_eq!(
        reason(&waiting, S::DeadLettered, &[]),
        Some(WaitingReason::BlockedBy {
            task: dep(),
            status: S::DeadLettered
        })
    );
    let later = at() + chrono::Duration::minutes(5);
    let delayed = Lifecycle {
        not_before: Some(later),
        ..waiting.clone()
    };
    assert_eq!(
        reason(&delayed, S::Completed, &[]),
        Some(WaitingReason::NotBefore { at: later })
    );
    let blocked = given(Some(S::Blocked)).unwrap().lifecycle;
    assert!(matches!(
        reason(&blocked, S::Cancelled, &[]),
        Some(WaitingReason::BlockedBy { .. })
    ));
}

#[test]
fn failed_assigned_and_finished_tasks_say_so_and_a_running_one_says_nothing() {
    let scheduled = given(Some(S::RetryScheduled)).unwrap().lifecycle;
    assert_eq!(
        reason(&scheduled, S::Completed, &[]),
        Some(WaitingReason::RetryAt { at: at() })
    );
    assert_eq!(
        reason(
            &given(Some(S::DeadLettered)).unwrap().lifecycle,
            S::Completed,
            &[]
        ),
        Some(WaitingReason::DeadLettered {})
    );
    let assigned = given(Some(S::Assigned)).unwrap().lifecycle;
    assert_eq!(
        reason(&assigned, S::Completed, &[]),
        Some(WaitingReason::AwaitingAgent {
            agent: agent(),
            lease_expires_at: Some(at())
        })
    );
    for done in [S::Running, S::Completed, S::Cancelled] {
        assert_eq!(
            reason(&given(Some(done)).unwrap().lifecycle, S::Completed, &[]),
            None
        );
    }
}
