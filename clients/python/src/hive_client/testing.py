"""A real hive for tests and benchmarks: `hive up` in a temp dir, on a free port, with its own
nats-server and PostgreSQL (ports chosen by the OS), stopped (SIGTERM) and removed on exit.

```python
with LocalHive() as hive:            # the binary: HIVE_BIN, $CARGO_TARGET_DIR/debug/hive or ./target/debug/hive
    with Client(hive.url, hive.admin_token) as client:
        ...
```
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx


def find_hive_bin(repo: Path | None = None) -> Path:
    """The `hive` binary: HIVE_BIN, else $CARGO_TARGET_DIR/debug/hive, else <repo>/target/debug/hive."""
    candidates = [os.environ.get("HIVE_BIN")]
    if os.environ.get("CARGO_TARGET_DIR"):
        candidates.append(os.path.join(os.environ["CARGO_TARGET_DIR"], "debug", "hive"))
    candidates.append(str((repo or Path.cwd()) / "target" / "debug" / "hive"))
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise FileNotFoundError(
        f"no hive binary among {[c for c in candidates if c]}: set HIVE_BIN, or cargo build -p hive"
    )


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalHive:
    """`hive up` of its own (see the module). `env` adds to the hive's environment."""

    def __init__(
        self, binary: Path | None = None, *, env: dict[str, str] | None = None, timeout: float = 90
    ) -> None:
        self.binary = binary or find_hive_bin()
        self.extra_env = env or {}
        self.timeout = timeout
        self.home = Path(tempfile.mkdtemp(prefix="hive-py-"))
        self.home.chmod(0o755)  # under root, PostgreSQL runs as its own user: it must reach its dir
        self.url = f"http://127.0.0.1:{free_port()}"
        self.admin_token = ""
        self.log_path = self.home / "hive.log"
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> LocalHive:
        env = {
            **os.environ,
            "HIVE_HOME": str(self.home / "hive"),
            "HIVE_HTTP_ADDR": self.url.removeprefix("http://"),
            "HIVE_NATS_PORT": "0",
            "HIVE_PG_PORT": "0",
            "HIVE_LOG": os.environ.get("HIVE_LOG", "warn"),
            **self.extra_env,
        }
        nats = os.environ.get("HIVE_NATS_SERVER") or shutil.which("nats-server")
        if nats:
            env["HIVE_NATS_SERVER"] = nats
        with open(self.log_path, "wb") as log:
            self._process = subprocess.Popen(
                [str(self.binary), "up"], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            self._wait_up()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_up(self) -> None:
        assert self._process is not None
        token = self.home / "hive" / "admin.token"
        deadline = time.monotonic() + self.timeout
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"hive up exited {self._process.returncode}: {self.log_path.read_text()[-4000:]}"
                )
            try:
                if token.exists() and httpx.get(f"{self.url}/livez", timeout=2).status_code == 200:
                    self.admin_token = token.read_text().strip()
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"hive up did not answer in {self.timeout} s: {self.log_path}")
            time.sleep(0.1)  # polling the condition above

    def env(self, token: str | None = None) -> dict[str, str]:
        """An environment for a process that uses this hive (HIVE_URL, HIVE_TOKEN)."""
        return {**os.environ, "HIVE_URL": self.url, "HIVE_TOKEN": token or self.admin_token}

    def stop(self) -> None:
        """Stops the hive (SIGTERM, then SIGKILL after 30 s) and removes its files."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        shutil.rmtree(self.home, ignore_errors=True)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
