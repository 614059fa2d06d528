//! One run of the executor for one task.
//!
//! The contract, for whoever writes an executor:
//! - it runs under `sh -c "<exec>"`, with the task's JSON on stdin and `HIVE_TASK_ID`, `HIVE_AGENT_ID`,
//!   `HIVE_API_URL` and `HIVE_ATTEMPT` in its environment;
//! - each line on stdout is progress (a line beginning `NN%` also sets the percentage), except a line
//!   that is a JSON object: that is a result, not news of one;
//! - exit status 0 completes the task, with the last stdout line as the result when it is a JSON object
//!   (otherwise `{"output": <the end of stdout>}`);
//! - any other status fails it; status 65 (`EX_DATAERR`: the task itself is wrong) fails it for good,
//!   every other failure may be retried. The end of stderr becomes the error message;
//! - it runs in a process group of its own. When its task is taken from the agent (cancelled, timed
//!   out, requeued), the whole group gets SIGTERM, then SIGKILL after the task's `cancel_grace_secs`;
//!   whatever of the group is left when the executor ends that way is killed too.

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio::sync::watch;
use tokio_util::codec::{FramedRead, LinesCodec};

/// The exit status by which an executor says its task cannot succeed, however often it is tried.
pub const EXIT_DO_NOT_RETRY: i32 = 65;

/// Longest line read from an executor; the rest of a longer line is dropped.
const MAX_LINE: usize = 64 * 1024;
/// How much of the end of stdout and stderr is kept for the result or the error.
const TAIL_BYTES: usize = 4 * 1024;

/// How a run ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// It exited 0; the task's result.
    Completed(Value),
    /// It failed.
    Failed {
        /// What went wrong.
        error: String,
        /// Whether another attempt may succeed.
        retryable: bool,
    },
    /// It was stopped: its task was taken from the agent.
    Stopped,
}

/// The latest progress line.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Progress {
    /// The percentage, when the line gave one.
    pub percent: Option<u8>,
    /// The line.
    pub message: String,
}

impl Progress {
    /// Reads one stdout line: `NN% message`, or just a message.
    pub fn parse(line: &str) -> Self {
        let trimmed = line.trim();
        if let Some((number, rest)) = trimmed.split_once('%')
            && let Ok(percent) = number.trim().parse::<u16>()
        {
            return Self {
                percent: Some(percent.min(100) as u8),
                message: rest.trim().to_owned(),
            };
        }
        Self {
            percent: None,
            message: trimmed.to_owned(),
        }
    }
}

/// Whether `line` is a JSON object: a result, which is not reported as progress.
fn is_json_object(line: &str) -> bool {
    let line = line.trim();
    line.starts_with('{') && serde_json::from_str::<serde_json::Map<String, Value>>(line).is_ok()
}

/// The last lines of a stream, at most [`TAIL_BYTES`] of them.
#[derive(Default)]
struct Tail {
    lines: VecDeque<String>,
    bytes: usize,
}

impl Tail {
    fn push(&mut self, line: String) {
        self.bytes += line.len() + 1;
        self.lines.push_back(line);
        while self.bytes > TAIL_BYTES && self.lines.len() > 1 {
            let dropped = self.lines.pop_front().unwrap_or_default();
            self.bytes -= dropped.len() + 1;
        }
    }

    fn last(&self) -> Option<&str> {
        self.lines
            .iter()
            .rev()
            .map(|l| l.trim())
            .find(|l| !l.is_empty())
    }

    fn text(&self) -> String {
        let lines: Vec<&str> = self.lines.iter().map(String::as_str).collect();
        lines.join("\n").trim().to_owned()
    }
}

/// Reads `stream` line by line into a tail, handing each line to `each`.
async fn read_lines(
    stream: impl AsyncRead + Unpin,
    mut each: impl FnMut(&str),
) -> std::io::Result<Tail> {
    let mut lines = FramedRead::new(stream, LinesCodec::new_with_max_length(MAX_LINE));
    let mut tail = Tail::default();
    while let Some(line) = lines.next().await {
        match line {
            Ok(line) => {
                each(&line);
                tail.push(line);
            }
            // Too long: the codec drops the rest of it and goes on.
            Err(tokio_util::codec::LinesCodecError::MaxLineLengthExceeded) => {}
            Err(tokio_util::codec::LinesCodecError::Io(e)) => return Err(e),
        }
    }
    Ok(tail)
}

/// The executor's process group: killed when dropped, unless the executor ended on its own.
struct Group {
    leader: Option<Pid>,
    armed: bool,
}

impl Group {
    fn signal(&self, signal: Signal) {
        if let Some(leader) = self.leader {
            // Gone already (ESRCH) is what we want anyway.
            let _ = killpg(leader, signal);
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if self.armed {
            self.signal(Signal::SIGKILL);
        }
    }
}

/// Runs `exec` for `task` and waits for it; progress lines go to `progress`. When `stop` resolves
/// (with the grace), the executor's process group gets SIGTERM, then SIGKILL once the grace is over,
/// and the run ends [`Outcome::Stopped`]. Dropping the future kills the group at once.
pub async fn run(
    exec: &str,
    task: &Value,
    env: &[(&str, String)],
    progress: &watch::Sender<Progress>,
    stop: impl Future<Output = Duration>,
) -> Outcome {
    let mut command = tokio::process::Command::new("sh");
    command
        .arg("-c")
        .arg(exec)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    hive_devservers::die_with_parent(command.as_std_mut());
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            return Outcome::Failed {
                error: format!("could not start the executor {exec:?}: {e}"),
                retryable: true,
            };
        }
    };
    let leader = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw);
    let mut group = Group {
        leader,
        armed: true,
    };
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Outcome::Failed {
            error: "the executor's pipes were not open".into(),
            retryable: true,
        };
    };
    let input = format!("{task}\n");
    let feed = async move {
        // An executor that never reads its input closes the pipe: that is its business.
        let _ = stdin.write_all(input.as_bytes()).await;
        drop(stdin);
    };
    let out = read_lines(stdout, |line| {
        if !is_json_object(line) {
            progress.send_replace(Progress::parse(line));
        }
    });
    let err = read_lines(stderr, |_| {});
    // Stopping runs beside the executor and never ends: the executor ends once it is killed.
    let stopped = AtomicBool::new(false);
    let stopping = async {
        let grace = stop.await;
        stopped.store(true, Ordering::Relaxed);
        group.signal(Signal::SIGTERM);
        tokio::time::sleep(grace).await;
        group.signal(Signal::SIGKILL);
        std::future::pending::<()>().await;
    };
    let ((), out, err, status) = tokio::select! {
        ended = async { tokio::join!(feed, out, err, child.wait()) } => ended,
        () = stopping => unreachable!("stopping never ends"),
    };
    if stopped.load(Ordering::Relaxed) {
        // Whatever of its group outlived it is killed as `group` drops.
        return Outcome::Stopped;
    }
    group.armed = false;
    let (out, err) = (out.unwrap_or_default(), err.unwrap_or_default());
    match status {
        Ok(status) if status.success() => Outcome::Completed(result_of(&out)),
        Ok(status) => {
            let how = match status.code() {
                Some(code) => format!("the executor exited with status {code}"),
                None => "the executor was killed by a signal".to_owned(),
            };
            let why = Some(err.text())
                .filter(|t| !t.is_empty())
                .or_else(|| out.last().map(str::to_owned));
            Outcome::Failed {
                error: match why {
                    Some(why) => format!("{how}: {why}"),
                    None => how,
                },
                retryable: status.code() != Some(EXIT_DO_NOT_RETRY),
            }
        }
        Err(e) => Outcome::Failed {
            error: format!("could not wait for the executor: {e}"),
            retryable: true,
        },
    }
}

fn result_of(out: &Tail) -> Value {
    match out.last().map(serde_json::from_str::<Value>) {
        Some(Ok(value)) if value.is_object() => value,
        _ => json!({"output": out.text()}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run_sh(exec: &str) -> (Outcome, Progress) {
        let (tx, _) = watch::channel(Progress::default());
        let task = json!({"task_id": "t1", "title": "echo me"});
        let env = [("HIVE_TASK_ID", "t1".to_owned())];
        let outcome = run(exec, &task, &env, &tx, std::future::pending()).await;
        (outcome, tx.borrow().clone())
    }

    #[tokio::test]
    async fn the_last_json_line_is_the_result_and_lines_are_progress() {
        let (outcome, progress) =
            run_sh(r#"read task; echo "40% working on $HIVE_TASK_ID"; echo '{"done": true}'"#)
                .await;
        assert_eq!(outcome, Outcome::Completed(json!({"done": true})));
        // The result line is not progress: the last progress is the line before it.
        assert_eq!(progress.percent, Some(40));
        assert_eq!(progress.message, "working on t1");
    }

    #[tokio::test]
    async fn plain_output_becomes_the_output_field() {
        let (outcome, _) = run_sh("cat; echo bye").await;
        assert_eq!(
            outcome,
            Outcome::Completed(
                json!({"output": "{\"task_id\":\"t1\",\"title\":\"echo me\"}\nbye"})
            )
        );
    }

    #[tokio::test]
    async fn a_failure_carries_stderr_and_status_65_is_final() {
        let (outcome, _) = run_sh("echo 'no such file' >&2; exit 3").await;
        assert_eq!(
            outcome,
            Outcome::Failed {
                error: "the executor exited with status 3: no such file".into(),
                retryable: true
            }
        );
        let (outcome, _) = run_sh("exit 65").await;
        assert!(matches!(
            outcome,
            Outcome::Failed {
                retryable: false,
                ..
            }
        ));
    }

    #[tokio::test]
    async fn a_stop_kills_the_whole_group_and_sigkill_follows_the_grace() {
        let dir = std::env::temp_dir().join(format!("hive-stop-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pids = dir.join("pids");
        // The shell ignores SIGTERM (and so does its background sleep, which inherits that): only
        // the SIGKILL after the grace ends them.
        let exec = format!(
            "trap '' TERM; sleep 600 & echo $! > {p}; echo $$ >> {p}; echo started; wait",
            p = pids.display()
        );
        let (tx, mut lines) = watch::channel(Progress::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<Duration>();
        let task = json!({});
        let run = run(&exec, &task, &[], &tx, async { stopped.await.unwrap() });
        let order = async {
            lines.wait_for(|p| p.message == "started").await.unwrap();
            let before = std::time::Instant::now();
            stop.send(Duration::from_millis(300)).unwrap();
            before
        };
        let (outcome, before) = tokio::join!(run, order);
        assert_eq!(outcome, Outcome::Stopped);
        assert!(
            before.elapsed() >= Duration::from_millis(300),
            "SIGTERM was ignored: only the SIGKILL after the grace ended it"
        );
        let pids = std::fs::read_to_string(&pids).unwrap();
        // A killed process lingers a moment while the kernel tears it down.
        for pid in pids.lines() {
            let pid: i32 = pid.trim().parse().unwrap();
            let gone = hive_devservers::eventually(
                Duration::from_secs(2),
                Duration::from_millis(10),
                async || hive_devservers::process_gone(pid).then_some(()),
            )
            .await;
            assert!(gone.is_some(), "process {pid} is left");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn an_executor_that_ignores_its_input_still_completes() {
        let (outcome, _) = run_sh("true").await;
        assert_eq!(outcome, Outcome::Completed(json!({"output": ""})));
    }

    fn example(name: &str) -> String {
        format!(
            "{}/../../examples/executors/{name}",
            env!("CARGO_MANIFEST_DIR")
        )
    }

    async fn run_example(name: &str, task: Value, path: Option<&str>) -> Outcome {
        let (tx, _) = watch::channel(Progress::default());
        let mut env = vec![
            ("HIVE_TASK_ID", "t1".to_owned()),
            ("HIVE_ATTEMPT", "1".to_owned()),
        ];
        if let Some(path) = path {
            env.push(("PATH", path.to_owned()));
        }
        run(&example(name), &task, &env, &tx, std::future::pending()).await
    }

    #[tokio::test]
    async fn the_shell_example_runs_shell_tasks_and_acknowledges_others() {
        let shell = json!({"task_type": "shell", "description": "echo hello"});
        assert_eq!(
            run_example("shell.sh", shell, None).await,
            Outcome::Completed(json!({"exit_status": 0, "output": "hello\n"}))
        );
        let other = json!({"task_type": "review", "title": "look"});
        assert_eq!(
            run_example("shell.sh", other, None).await,
            Outcome::Completed(json!({"acknowledged": true}))
        );
        let failing = json!({"task_type": "shell", "description": "exit 4"});
        assert_eq!(
            run_example("shell.sh", failing, None).await,
            Outcome::Failed {
                error: "the executor exited with status 1: the command exited with status 4".into(),
                retryable: true
            }
        );
    }

    #[tokio::test]
    async fn the_coding_agent_example_drives_the_cli_it_finds() {
        let task = json!({"title": "add a test", "description": "for the parser"});
        let bare = std::env::temp_dir().join(format!("hive-bare-{}", std::process::id()));
        std::fs::create_dir_all(&bare).unwrap();
        // Our PATH without any directory that holds a coding-agent CLI.
        let base = std::env::var("PATH")
            .unwrap_or_default()
            .split(':')
            .filter(|dir| {
                ["claude", "codex", "aider"]
                    .iter()
                    .all(|cli| !std::path::Path::new(dir).join(cli).exists())
            })
            .collect::<Vec<_>>()
            .join(":");
        let none = run_example("coding-agent.sh", task.clone(), Some(&base)).await;
        assert!(
            matches!(&none, Outcome::Failed { retryable: false, error } if error.contains("no coding-agent CLI")),
            "{none:?}"
        );
        // A stand-in `claude` that answers as `claude -p --output-format json` does.
        let fake = bare.join("claude");
        std::fs::write(
            &fake,
            "#!/bin/sh\nprintf '{\"result\": \"%s\"}' \"$2\" | tr '\\n' ' '\n",
        )
        .unwrap();
        std::process::Command::new("chmod")
            .arg("+x")
            .arg(&fake)
            .status()
            .unwrap();
        let path = format!("{}:{base}", bare.display());
        let Outcome::Completed(result) = run_example("coding-agent.sh", task, Some(&path)).await
        else {
            panic!("the fake claude completes");
        };
        assert_eq!(result["result"], "add a test  for the parser");
        assert!(result["workdir"].is_string());
        std::fs::remove_dir_all(&bare).unwrap();
    }

    #[test]
    fn progress_lines_parse() {
        assert_eq!(
            Progress::parse(" 50% halfway "),
            Progress {
                percent: Some(50),
                message: "halfway".into()
            }
        );
        assert_eq!(Progress::parse("250%").percent, Some(100));
        assert_eq!(Progress::parse("about 5% done").percent, None);
        assert!(super::is_json_object(r#" {"answer": 42} "#));
        assert!(!super::is_json_object("{ not json"));
        assert!(!super::is_json_object("[1, 2]"));
    }
}
