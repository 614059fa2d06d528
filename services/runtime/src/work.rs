//! One task worked through by an executor: accept, start, run while reporting progress, then complete
//! or fail it; every report in the assignment's flow.

use hive_events::wire::{Assignment, Flow, Report, TaskAction};
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use uuid::Uuid;

use crate::PROGRESS_EVERY;
use crate::client::Client;
use crate::executor::{self, Outcome, Progress};

/// Works one task through: accept, start, run the executor while reporting its progress, then complete
/// or fail it. A refused accept means the task is no longer ours (its lease lapsed): nothing to do.
/// `stop` resolving (with the grace) stops the executor: the task was taken from the agent, and the
/// hive already knows how it ended.
#[tracing::instrument(skip_all, fields(%task, attempt = assignment.attempt, correlation_id = ?assignment.correlation_id))]
pub(crate) async fn work(
    client: &Client,
    agent: Uuid,
    task: Uuid,
    exec: &str,
    assignment: Assignment,
    stop: oneshot::Receiver<Duration>,
) {
    // Every report joins the assignment's flow.
    let flow = assignment.flow();
    if let Err(e) = client
        .report(task, agent, TaskAction::Accept, Report::default(), flow)
        .await
    {
        tracing::info!(%task, error = %e, "assignment not accepted");
        return;
    }
    if let Err(e) = client
        .report(task, agent, TaskAction::Start, Report::default(), flow)
        .await
    {
        tracing::warn!(%task, error = %e, "could not start the task");
        return;
    }
    let mut env = vec![
        ("HIVE_TASK_ID", task.to_string()),
        ("HIVE_AGENT_ID", agent.to_string()),
        ("HIVE_API_URL", client.base().to_owned()),
        ("HIVE_ATTEMPT", assignment.attempt.to_string()),
    ];
    // The executor may call the API as its agent (report progress, read its task).
    if let Some(token) = client.token() {
        env.push(("HIVE_TOKEN", token.to_owned()));
    }
    // The executor reads the assignment as JSON on its stdin.
    let input = serde_json::to_value(&assignment).unwrap_or_default();
    let (progress, lines) = watch::channel(Progress::default());
    let reporting = report_progress(client, agent, task, lines, flow);
    let stop = async {
        match stop.await {
            Ok(grace) => grace,
            // Nobody will ever stop it (the runtime is going away, and drops the run).
            Err(_) => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        outcome = executor::run(exec, &input, &env, &progress, stop) => outcome,
        // Dropping the run kills the executor.
        () = reporting => {
            tracing::info!(%task, "the task is no longer ours (requeued or cancelled): executor stopped");
            return;
        }
    };
    let (action, body) = match outcome {
        Outcome::Stopped => {
            return tracing::info!(%task, "the task was taken from this agent: executor stopped");
        }
        Outcome::Completed(result) => (
            TaskAction::Complete,
            Report {
                result: Some(result),
                ..Report::default()
            },
        ),
        Outcome::Failed { error, retryable } => (
            TaskAction::Fail,
            Report {
                error: Some(error),
                retryable: Some(retryable),
                ..Report::default()
            },
        ),
    };
    // A task whose end is never reported stays running for good (its agent lives on): while Hive
    // cannot answer (a server restarting), the report is sent again, for up to five minutes.
    // Often: the job holds one of the agent's slots meanwhile, which the next task may be waiting for.
    let patience = std::time::Instant::now() + END_REPORT_PATIENCE;
    let mut backoff = Duration::from_millis(100);
    loop {
        match client.report(task, agent, action, body.clone(), flow).await {
            Ok(()) => return tracing::info!(%task, action = action.as_str(), "task reported"),
            Err(e) if e.is_transient() && std::time::Instant::now() < patience => {
                tracing::debug!(%task, error = %e, ?backoff, "the task's end not reported yet; again");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
            Err(e) => {
                return tracing::warn!(%task, action = action.as_str(), error = %e, "could not report the task's end");
            }
        }
    }
}

/// How long a task's end report is sent again while Hive cannot answer.
const END_REPORT_PATIENCE: Duration = Duration::from_secs(300);

/// Reports the latest progress line, at most every [`PROGRESS_EVERY`]. Ends only when a report is
/// refused because the task is no longer this agent's to run (an operator requeued or cancelled it).
async fn report_progress(
    client: &Client,
    agent: Uuid,
    task: Uuid,
    mut lines: watch::Receiver<Progress>,
    flow: Option<Flow>,
) {
    loop {
        if lines.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        let line = lines.borrow_and_update().clone();
        let body = Report {
            percent: line.percent,
            message: Some(line.message),
            ..Report::default()
        };
        match client
            .report(task, agent, TaskAction::Progress, body, flow)
            .await
        {
            Ok(()) => {}
            Err(e) if e.no_longer_ours() => return,
            Err(e) => tracing::debug!(%task, error = %e, "progress not reported"),
        }
        tokio::time::sleep(PROGRESS_EVERY).await;
    }
}
