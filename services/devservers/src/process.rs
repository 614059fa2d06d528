//! Child processes tied to our life, and running them as an unprivileged user when we are root
//! (PostgreSQL refuses to run as root).

use std::fs::File;
use std::os::unix::fs::chown as chown_raw;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Gid, Pid, Uid, User};

use crate::{DevServerError, io};

/// A server process that dies with us: `PR_SET_PDEATHSIG` kills it when the thread that forked it
/// ends, so every child is forked by one keeper thread that lives as long as the process.
pub struct Child {
    inner: std::process::Child,
    name: &'static str,
}

type Spawn = (Command, mpsc::Sender<std::io::Result<std::process::Child>>);

fn keeper() -> &'static mpsc::Sender<Spawn> {
    static KEEPER: OnceLock<mpsc::Sender<Spawn>> = OnceLock::new();
    KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Spawn>();
        std::thread::Builder::new()
            .name("hive-process-keeper".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
                // The senders live in a static, so this thread never ends while the process lives.
            })
            .expect("spawn the process keeper thread");
        tx
    })
}

/// Whether process `pid` is gone, or a zombie (dead, waiting for its reaper).
pub fn process_gone(pid: i32) -> bool {
    // `pid (comm) state …`: the state follows the last `)` (a command's name may hold one).
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z'))
    })
}

/// Makes the child `command` spawns receive SIGKILL when the thread that spawned it ends (with a
/// multi-threaded tokio runtime, its worker threads live as long as the runtime; a process of ours that is
/// killed outright takes its children with it).
pub fn die_with_parent(command: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and only calls prctl, which is
    // async-signal-safe.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
}

impl Child {
    /// Spawns `command`, tied to our life.
    pub fn spawn(mut command: Command, name: &'static str) -> Result<Self, DevServerError> {
        die_with_parent(&mut command);
        // Its own process group: a Ctrl-C at the terminal signals us alone, and we stop the servers
        // after the parts that use them, in order.
        command.process_group(0);
        let (tx, rx) = mpsc::channel();
        keeper()
            .send((command, tx))
            .map_err(|_| io(format!("spawn {name}"))(std::io::Error::other("keeper gone")))?;
        let inner = rx
            .recv()
            .map_err(|_| io(format!("spawn {name}"))(std::io::Error::other("keeper gone")))?
            .map_err(io(format!("spawn {name}")))?;
        Ok(Self { inner, name })
    }

    /// Whether it has exited.
    pub fn has_exited(&mut self) -> bool {
        !matches!(self.inner.try_wait(), Ok(None))
    }

    /// Sends `signal` and waits for it to exit.
    pub fn terminate(&mut self, signal: Signal) {
        if self.has_exited() {
            return;
        }
        let pid = Pid::from_raw(self.inner.id() as i32);
        if let Err(e) = kill(pid, signal) {
            tracing::warn!(name = self.name, %e, "could not signal");
        }
        let _ = self.inner.wait();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.terminate(Signal::SIGTERM);
    }
}

/// The user to run a server as: `postgres` when we are root (and it then owns `dir`), else ourselves.
pub fn unprivileged_user(dir: &Path) -> Result<Option<(Uid, Gid)>, DevServerError> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    let user = User::from_name("postgres")
        .ok()
        .flatten()
        .ok_or(DevServerError::NotFound(
            "the postgres user",
            "HIVE_DATABASE_URL",
        ))?;
    chown_tree(dir, user.uid, user.gid)?;
    Ok(Some((user.uid, user.gid)))
}

fn chown(path: &Path, uid: Option<Uid>, gid: Option<Gid>) -> std::io::Result<()> {
    chown_raw(path, uid.map(Uid::as_raw), gid.map(Gid::as_raw))
}

fn chown_tree(dir: &Path, uid: Uid, gid: Gid) -> Result<(), DevServerError> {
    chown(dir, Some(uid), Some(gid)).map_err(io(format!("chown {}", dir.display())))?;
    for entry in std::fs::read_dir(dir).map_err(io(format!("read {}", dir.display())))? {
        let path = entry.map_err(io("read a directory entry"))?.path();
        if path.is_dir() {
            chown_tree(&path, uid, gid)?;
        } else {
            chown(&path, Some(uid), Some(gid)).map_err(io(format!("chown {}", path.display())))?;
        }
    }
    Ok(())
}

/// Sets the user and sends output to `log`.
pub fn user_and_log(
    command: &mut Command,
    user: Option<(Uid, Gid)>,
    log: &Path,
) -> Result<(), DevServerError> {
    if let Some((uid, gid)) = user {
        command.uid(uid.as_raw()).gid(gid.as_raw());
    }
    let out = File::create(log).map_err(io(format!("create {}", log.display())))?;
    let err = out.try_clone().map_err(io("clone a log handle"))?;
    if let Some((uid, gid)) = user {
        let _ = chown(log, Some(uid), Some(gid));
    }
    command.stdin(Stdio::null()).stdout(out).stderr(err);
    Ok(())
}

/// Runs a one-off command to completion as `user`.
pub fn run_as(
    mut command: Command,
    user: Option<(Uid, Gid)>,
    log: &Path,
    name: &'static str,
) -> Result<(), DevServerError> {
    user_and_log(&mut command, user, log)?;
    let status = command.status().map_err(io(format!("run {name}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(io(format!("run {name}"))(std::io::Error::other(format!(
            "{name} exited with {status}; see {}",
            log.display()
        ))))
    }
}
