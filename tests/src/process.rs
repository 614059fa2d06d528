//! Processes of the real `hive` binary (`hive-under-test`) the tests start and watch: `hive agent`
//! ([`AgentProcess`]), `hive up` ([`hive_up`]), one part of a hive ([`part`]), one-shot commands
//! ([`migrate`], [`admin_token`], [`hive_command`]), and the processes whose command line names
//! something ([`processes_with`]).

use std::path::Path;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::World;
use crate::servers::agent_program;

/// The processes whose command line mentions `needle` (an agent's id, say).
pub fn processes_with(needle: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

/// A `hive agent` process; killed when dropped.
pub struct AgentProcess {
    child: tokio::process::Child,
}

impl AgentProcess {
    /// Wraps a started `hive agent`.
    pub(crate) fn new(child: tokio::process::Child) -> Self {
        Self { child }
    }

    /// Sends it `signal`.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = self.child.id().expect("the agent is running");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).expect("signal");
    }

    /// Waits (at most 20 s) for it to exit; answers whether it exited with status 0.
    pub async fn exited(&mut self) -> bool {
        tokio::time::timeout(std::time::Duration::from_secs(20), self.child.wait())
            .await
            .expect("the agent exits within 20 s")
            .expect("wait for the agent")
            .success()
    }
}

/// `hive migrate` with `env`: the schema, the stream and its buckets.
pub async fn migrate(env: &[(&str, String)]) {
    let migrated = tokio::process::Command::new(agent_program())
        .arg("migrate")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("HIVE_LOG", "warn")
        .output()
        .await
        .unwrap();
    assert!(
        migrated.status.success(),
        "hive migrate: {}",
        String::from_utf8_lossy(&migrated.stderr)
    );
}

/// An admin token issued with `hive tokens issue` in `env`'s hive.
pub async fn admin_token(env: &[(&str, String)]) -> String {
    let issued = tokio::process::Command::new(agent_program())
        .args(["tokens", "issue", "--role", "admin", "--name", "test"])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("HIVE_LOG", "warn")
        .output()
        .await
        .unwrap();
    assert!(issued.status.success(), "{issued:?}");
    let token = String::from_utf8(issued.stdout).unwrap().trim().to_owned();
    assert!(token.starts_with("hive_"), "{token}");
    token
}

/// A process of the real binary; SIGTERM when dropped.
pub struct Part(tokio::process::Child);

impl Part {
    /// Kills it with SIGKILL, as a crash would, and waits for it to exit.
    pub async fn kill(&mut self) {
        let _ = self.0.kill().await;
    }
}

impl Drop for Part {
    fn drop(&mut self) {
        if let Some(pid) = self.0.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
    }
}

/// Starts `hive ARGS` with `env`, its output appended to `log`: one part of a hive (or a whole
/// one), stopped with SIGTERM when dropped.
pub fn part(args: &[&str], env: &[(&str, String)], log: &Path) -> Part {
    // Appended to: a part started again after a kill keeps its predecessor's lines.
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("a log file");
    let mut command = tokio::process::Command::new(agent_program());
    command
        .args(args)
        .env("HIVE_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone().expect("a log file"))
        .stderr(out)
        .kill_on_drop(true);
    hive_devservers::die_with_parent(command.as_std_mut());
    Part(command.spawn().expect("start a hive part"))
}

/// Runs `hive up` in `home` against the world's database; answers its API's base URL and the admin
/// token it printed, once it serves.
pub async fn hive_up(
    world: &World,
    home: &std::path::Path,
    extra: &[(&str, String)],
) -> (tokio::process::Child, String, String) {
    // Its log is shown only when asked for, as the tests' own is.
    let stderr = match std::env::var_os("HIVE_TEST_LOG") {
        Some(_) => std::process::Stdio::inherit(),
        None => std::process::Stdio::null(),
    };
    hive_up_with_stderr(world, home, extra, stderr).await
}

/// [`hive_up`], its stderr (its log) sent to `stderr`; `extra` environment variables override the
/// defaults.
pub async fn hive_up_with_stderr(
    world: &World,
    home: &std::path::Path,
    extra: &[(&str, String)],
    stderr: std::process::Stdio,
) -> (tokio::process::Child, String, String) {
    use tokio::io::AsyncBufReadExt;
    let port = hive_devservers::free_port().unwrap();
    let mut command = tokio::process::Command::new(agent_program());
    command
        .arg("up")
        .env("HIVE_HOME", home)
        .env("HIVE_DATABASE_URL", &world.database_url)
        .env_remove("HIVE_NATS_URL")
        .env(
            "HIVE_NATS_PORT",
            hive_devservers::free_port().unwrap().to_string(),
        )
        .env("HIVE_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("HIVE_NAMESPACE", &world.config.namespace)
        .env("HIVE_LOG", "warn")
        .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true);
    hive_devservers::die_with_parent(command.as_std_mut());
    let mut child = command.spawn().unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let token = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(token) = line.split("Authorization: Bearer ").nth(1) {
                return token.split_whitespace().next().unwrap().to_owned();
            }
        }
        panic!("hive up ended without printing its admin token");
    })
    .await
    .expect("hive up printed its admin token");
    // Read the rest, so that no later line of it meets a closed pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, format!("http://127.0.0.1:{port}"), token)
}

/// Runs the real `hive` program against this world.
pub fn hive_command(world: &World, args: &[&str]) -> std::process::Output {
    std::process::Command::new(agent_program())
        .args(args)
        .env("HIVE_NATS_URL", &world.nats_url)
        .env("HIVE_DATABASE_URL", &world.database_url)
        .env("HIVE_NAMESPACE", &world.config.namespace)
        .env("HIVE_HOME", std::env::temp_dir())
        .env("HIVE_LOG", "warn")
        .output()
        .expect("run hive")
}

/// Runs the real `hive` program through the API at `api` (`--api`) with `token`, and no NATS or
/// database of its own: its standard output, once it succeeded. Without blocking, since the API
/// answering it may live on the caller's runtime.
pub async fn hive_over_api(api: &str, token: &str, args: &[&str]) -> String {
    let output = hive_over_api_output(api, token, args).await;
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).expect("UTF-8")
}

/// [`hive_over_api`]'s whole outcome (exit status, stdout, stderr), succeeded or not.
pub async fn hive_over_api_output(api: &str, token: &str, args: &[&str]) -> std::process::Output {
    over_api(api, token, args).output().await.expect("run hive")
}

/// The real `hive` program, ready to run `args` through the API at `api` with `token` (and no NATS
/// or database of its own); the caller starts it (and may read its output as it comes).
pub fn over_api(api: &str, token: &str, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(agent_program());
    command
        .args(args)
        .args(["--api", api])
        .env("HIVE_TOKEN", token)
        .env("HIVE_HOME", std::env::temp_dir())
        .env("HIVE_LOG", "warn")
        .env_remove("HIVE_NATS_URL")
        .env_remove("HIVE_DATABASE_URL")
        .kill_on_drop(true);
    command
}
