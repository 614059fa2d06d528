//! The servers every test of a run shares: one real nats-server and one real PostgreSQL, started on
//! first use on a thread and runtime of their own, and killed with the process. Also where the `hive`
//! binary under test lives, and the tests' tracing.

use std::sync::OnceLock;

use hive_devservers::{Durability, NatsServer, Postgres};

/// The run's servers.
pub(crate) struct Servers {
    /// NATS's URL.
    pub(crate) nats_url: String,
    /// PostgreSQL.
    pub(crate) pg: Postgres,
    _nats: NatsServer,
}

/// Where this test process keeps its servers' data: `$TMPDIR/hive-test-servers/<pid>` (PostgreSQL's
/// user must reach it). The servers live in a static, which is never dropped, so a run cannot remove its
/// own directory: each run removes those of runs that have ended.
fn servers_dir() -> std::path::PathBuf {
    let base = std::env::temp_dir().join("hive-test-servers");
    if let Ok(entries) = std::fs::read_dir(&base) {
        for entry in entries.flatten() {
            let pid = entry.file_name().to_string_lossy().parse::<u32>().ok();
            if pid.is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = base.join(std::process::id().to_string());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("the test servers' directory");
    dir
}

/// The run's servers, started by the first caller.
pub(crate) fn servers() -> &'static Servers {
    static SERVERS: OnceLock<Servers> = OnceLock::new();
    SERVERS.get_or_init(|| {
        // Each test has its own runtime; the servers outlive them all, so they start on a runtime of
        // their own, on a thread of their own.
        std::thread::spawn(|| {
            tokio::runtime::Runtime::new().unwrap().block_on(async {
                let dir = servers_dir();
                let nats = NatsServer::start(&dir.join("nats"), None, Durability::Throwaway, &[])
                    .await
                    .expect("start nats-server");
                let pg = Postgres::start(&dir.join("pg"), None, Durability::Throwaway)
                    .await
                    .expect("start postgres");
                Servers {
                    nats_url: nats.url(),
                    pg,
                    _nats: nats,
                }
            })
        })
        .join()
        .expect("start the test servers")
    })
}

/// Where `scripts/install-deps --test-tools` installs the outside tools the tests run (schemathesis
/// and its Python, the AsyncAPI parser): `$XDG_CACHE_HOME/hive`, else `~/.cache/hive`.
pub fn test_tools() -> std::path::PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
        });
    cache.join("hive")
}

/// The `hive` program the tests spawn agents of: `hive-under-test`, which cargo builds beside the test
/// binary (`target/<profile>/`, one level above `deps/`).
pub fn agent_program() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let program = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("hive-under-test"))
        .expect("the target directory");
    assert!(
        program.exists(),
        "{} is missing: run the tests with cargo, which builds it",
        program.display()
    );
    program
}

/// Sets up tracing once; silent unless `HIVE_TEST_LOG` names a filter.
pub fn init_tracing() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        if let Ok(filter) = std::env::var("HIVE_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
    });
}
