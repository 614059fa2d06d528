//! One task worked through by an executor: accept, start, run while reporting progress, then complete
//! or fail it; every report in the assignment's flow.

use hive_events::wire::{Assignment, Flow, Report, TaskAction};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};
use uuid::Uuid;

use crate::PROGRESS_EVERY;
use crate::client::{Client, ClientError, Command};
use crate::executor::{self, Outcome, Progress};

/// Works one task through: accept, start, run the executor while reporting its progress, then complete
/// or fail it. A refused accept means the task is no longer ours (its lease lapsed): nothing to do.
/// Every report names the attempt, so none acts on a later one.
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
    let reports = Reports {
        client,
        agent,
        task,
        attempt: assignment.attempt,
        seq: assignment.seq,
        flow: assignment.flow(),
    };
    if let Err(e) = reports
        .until_answered(TaskAction::Accept, Report::default())
        .await
    {
        tracing::info!(%task, error = %e, "assignment not accepted");
        return;
    }
    if let Err(e) = reports
        .until_answered(TaskAction::Start, Report::default())
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
    let reporting = report_progress(&reports, lines);
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
    // A task whose end is never reported stays running for good (its agent lives on).
    match reports.until_answered(action, body).await {
        Ok(()) => tracing::info!(%task, action = action.as_str(), "task reported"),
        Err(e) => {
            tracing::warn!(%task, action = action.as_str(), error = %e, "could not report the task's end");
        }
    }
}

/// How long a report that Hive cannot answer (a server restarting) is sent again.
const REPORT_PATIENCE: Duration = Duration::from_secs(300);

/// The reports on one attempt of a task, each in the assignment's flow and naming the attempt.
struct Reports<'a> {
    client: &'a Client,
    agent: Uuid,
    task: Uuid,
    attempt: u32,
    /// The assignment's sequence: with the attempt, what makes a report's idempotency key its own
    /// (attempts count again from 1 after an operator's retry).
    seq: u64,
    flow: Option<Flow>,
}

impl Reports<'_> {
    /// `action` with `body`, naming the attempt, in the assignment's flow.
    fn report(&self, action: TaskAction, mut body: Report) -> Command<'_> {
        body.attempt = Some(self.attempt);
        let report = self.client.report(self.task, self.agent, action, body);
        report.flow(self.flow)
    }

    /// Sends `action` once (a progress line: the next one replaces it).
    async fn once(&self, action: TaskAction, body: Report) -> Result<(), ClientError> {
        self.report(action, body).send().await.map(drop)
    }

    /// Sends `action` until Hive answers it: while it cannot (a server restarting), again every
    /// 100-500 ms for up to [`REPORT_PATIENCE`], under one idempotency key, so that a report that was
    /// applied but whose answer was lost is answered as the first time rather than refused as a
    /// transition already made. Often: an accept not sent leaves the task to lapse, and a job holds
    /// one of the agent's slots, which the next task may be waiting for.
    async fn until_answered(&self, action: TaskAction, body: Report) -> Result<(), ClientError> {
        let key = format!(
            "{}-{}-{}-{}",
            action.as_str(),
            self.task,
            self.attempt,
            self.seq
        );
        let patience = Instant::now() + REPORT_PATIENCE;
        let mut backoff = Duration::from_millis(100);
        loop {
            let report = self.report(action, body.clone());
            match report.idempotency_key(&key).send().await {
                Ok(_) => return Ok(()),
                Err(e) if e.is_transient() && Instant::now() < patience => {
                    tracing::debug!(task = %self.task, action = action.as_str(), error = %e, ?backoff, "not answered yet; again");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Reports the latest progress line, at most every [`PROGRESS_EVERY`]. Ends only when a report is
/// refused because the task is no longer this agent's to run (an operator requeued or cancelled it).
async fn report_progress(reports: &Reports<'_>, mut lines: watch::Receiver<Progress>) {
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
        match reports.once(TaskAction::Progress, body).await {
            Ok(()) => {}
            Err(e) if e.no_longer_ours() => return,
            Err(e) => tracing::debug!(task = %reports.task, error = %e, "progress not reported"),
        }
        tokio::time::sleep(PROGRESS_EVERY).await;
    }
}
