//! The hive under test as its own process (the `hive` binary built beside `hive-bench`), so its memory
//! is its own and the load generator does not share its CPU budget in-process.

use hive_client::Method;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::scenarios::Servers;

/// A running `hive up` on the run's servers.
pub struct HiveProcess {
    child: Child,
    wrapped: bool,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// Its admin token (`$HIVE_HOME/admin.token`).
    pub token: String,
    _home: tempfile::TempDir,
}

/// The `hive` binary next to this one.
pub fn hive_binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let hive = me.with_file_name("hive");
    anyhow::ensure!(
        hive.exists(),
        "{} is missing: cargo build --release -p hive -p hive-bench",
        hive.display()
    );
    Ok(hive)
}

impl HiveProcess {
    /// Starts `hive up` with every part on `servers`, in `namespace` (and the database of that name),
    /// and waits until it is healthy.
    pub async fn start(servers: &Servers, namespace: &str) -> anyhow::Result<Self> {
        let home = tempfile::tempdir()?;
        let port = hive_devservers::free_port()?;
        // HIVE_BENCH_HIVE_WRAPPER runs the hive under a profiler, e.g. `heaptrack -o /tmp/hive`.
        let wrapper = std::env::var("HIVE_BENCH_HIVE_WRAPPER").unwrap_or_default();
        let mut words = wrapper.split_whitespace();
        let wrapped = !wrapper.trim().is_empty();
        let mut command = match words.next() {
            Some(program) => {
                let mut c = Command::new(program);
                c.args(words).arg(hive_binary()?);
                c
            }
            None => Command::new(hive_binary()?),
        };
        let child = on_servers(command.arg("up"), servers, namespace, port)
            .env("HIVE_HOME", home.path())
            .env("HIVE_AGENT_LOG_FILTER", "error")
            .spawn()?;
        let base = format!("http://127.0.0.1:{port}");
        let http = hive_client::Client::new(&base);
        crate::wait::eventually(
            Duration::from_secs(60),
            Duration::from_millis(50),
            "hive up healthy",
            async || {
                let healthy = http.request(Method::GET, "/health").send().await;
                Ok(healthy.is_ok_and(|r| r.status() == 200).then_some(()))
            },
        )
        .await?;
        // `hive up` writes its admin token before it serves.
        let token = std::fs::read_to_string(home.path().join("admin.token"))?
            .trim()
            .to_owned();
        Ok(Self {
            child,
            wrapped,
            base,
            token,
            _home: home,
        })
    }

    /// A client that sends the admin token.
    pub fn http(&self) -> hive_client::Client {
        hive_client::Client::new(&self.base).with_token(Some(self.token.clone()))
    }

    /// Saves the hive's `/metrics` as `<HIVE_BENCH_METRICS_DIR>/<name>.prom` when that variable is
    /// set (the hive's own histograms of a scenario: its requests, appends, syncs); else nothing.
    pub async fn save_metrics(&self, name: &str) -> anyhow::Result<()> {
        let Some(dir) = std::env::var_os("HIVE_BENCH_METRICS_DIR") else {
            return Ok(());
        };
        let text = self
            .http()
            .request(Method::GET, "/metrics")
            .send()
            .await?
            .text()
            .await?;
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("{name}.prom")), text)?;
        Ok(())
    }

    /// The hive's pid (under a wrapper, the wrapper's child that runs the hive binary; the wrapper's
    /// own when it replaced itself with the hive, as `env` does, whose children are then agents).
    pub fn pid(&self) -> u32 {
        let own = self.child.id();
        if !self.wrapped {
            return own;
        }
        let hive = hive_binary().ok();
        let runs_hive = |pid: &u32| std::fs::read_link(format!("/proc/{pid}/exe")).ok() == hive;
        if runs_hive(&own) {
            return own;
        }
        children(own).into_iter().find(runs_hive).unwrap_or(own)
    }

    /// The hive and every process it started (its spawned agents): all the hive's processes.
    pub fn pids(&self) -> Vec<u32> {
        let mut all = vec![self.pid()];
        let mut next = 0;
        while next < all.len() {
            all.extend(children(all[next]));
            next += 1;
        }
        all
    }

    /// Waits (at most 15 minutes) until its read models reflect event `head`.
    pub async fn wait_projected(
        &self,
        http: &hive_client::Client,
        head: u64,
    ) -> anyhow::Result<()> {
        let began = std::time::Instant::now();
        loop {
            // Each request waits up to Hive-Min-Seq's timeout before answering 503.
            let r = http
                .request(Method::GET, "/status")
                .header("Hive-Min-Seq", head.to_string())
                .send()
                .await?;
            if r.status() == 200 {
                return Ok(());
            }
            anyhow::ensure!(
                began.elapsed() < Duration::from_secs(900),
                "the projection did not catch up"
            );
        }
    }

    /// Creates a task titled `title` through the API; answers `{task_id, seq}`.
    pub async fn post_task(
        &self,
        http: &hive_client::Client,
        title: String,
    ) -> anyhow::Result<serde_json::Value> {
        Ok(http
            .request(Method::POST, "/api/v1/tasks")
            .json(&serde_json::json!({ "title": title }))
            .send()
            .await?
            .json()
            .await?)
    }
}

/// One part of the hive as its own process (`hive serve api|projector|scheduler`) on a run's servers;
/// stopped with SIGTERM when dropped.
pub struct Served {
    child: Child,
    /// `http://127.0.0.1:<port>` (the API's; unused by the other parts).
    pub base: String,
}

impl Served {
    /// Starts `hive serve <part>` on `servers` in `namespace` (and the database of that name); for
    /// the API, waits until it listens.
    pub async fn start(part: &str, servers: &Servers, namespace: &str) -> anyhow::Result<Self> {
        let port = hive_devservers::free_port()?;
        let base = format!("http://127.0.0.1:{port}");
        let wrapper = std::env::var(format!("HIVE_BENCH_{}_WRAPPER", part.to_uppercase()))
            .unwrap_or_default();
        let mut words = wrapper.split_whitespace();
        let mut command = match words.next() {
            Some(program) => {
                let mut c = Command::new(program);
                c.args(words).arg(hive_binary()?);
                c
            }
            None => hive_command()?,
        };
        let child = on_servers(command.args(["serve", part]), servers, namespace, port).spawn()?;
        let served = Self { child, base };
        if part == "api" {
            let http = hive_client::Client::new(&served.base);
            crate::wait::eventually(
                Duration::from_secs(600),
                Duration::from_millis(5),
                "hive serve api listening",
                async || {
                    let live = http.request(Method::GET, "/livez").send().await;
                    Ok(live.is_ok_and(|r| r.status() == 200).then_some(()))
                },
            )
            .await?;
        }
        Ok(served)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

/// `command` set to run on a run's servers in `namespace` (its stream on as many replicas as they
/// hold), its API (if it has one) on `port`, logging as `HIVE_BENCH_HIVE_LOG` says (default:
/// warnings).
fn on_servers<'c>(
    command: &'c mut Command,
    servers: &Servers,
    namespace: &str,
    port: u16,
) -> &'c mut Command {
    command
        .env("HIVE_NATS_URL", &servers.nats_url)
        .env("HIVE_DATABASE_URL", servers.database(namespace))
        .env("HIVE_NAMESPACE", namespace)
        .env("HIVE_STREAM_REPLICAS", servers.replicas.to_string())
        .env("HIVE_HTTP_ADDR", format!("127.0.0.1:{port}"));
    if let Some(store) = &servers.nats_store {
        command.env("HIVE_NATS_STORE_DIR", store);
    }
    command
        .env(
            "HIVE_LOG",
            std::env::var("HIVE_BENCH_HIVE_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
}

/// A command running the `hive` binary next to this one.
pub fn hive_command() -> anyhow::Result<Command> {
    Ok(Command::new(hive_binary()?))
}

impl Drop for HiveProcess {
    fn drop(&mut self) {
        // Under a wrapper, stop the hive and let the wrapper finish its report.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

/// The direct children of process `pid` (each thread lists those it started).
fn children(pid: u32) -> Vec<u32> {
    let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut all: Vec<u32> = threads
        .flatten()
        .filter_map(|thread| std::fs::read_to_string(thread.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    all.sort_unstable();
    all
}

/// Current resident memory of process `pid`, in MiB.
pub fn rss_mib(pid: u32) -> f64 {
    crate::report::memory_mib(Some(pid), "VmRSS:")
}
