"""One real hive for the session: `hive up` with its own HIVE_HOME in a temp dir, its API on a free
port, its own nats-server and PostgreSQL (ports chosen by the OS). Each test isolates itself with its
own capability (so only its agents take its tasks), projects and agents. The binary: HIVE_BIN, else
$CARGO_TARGET_DIR/debug/hive, else <repo>/target/debug/hive; nats-server: HIVE_NATS_SERVER (as
scripts/test exports it), else the one on PATH."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from hive_client import Client

from .proxy import Proxy

REPO = Path(__file__).resolve().parents[3]
T = TypeVar("T")


def wait_until(condition: Callable[[], T | None], timeout: float = 30.0, what: str = "") -> T:
    """Polls `condition` until it returns something truthy (the condition is the synchronisation: the
    short pause between polls only spares the CPU)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")
        time.sleep(0.05)


def hive_bin() -> Path:
    candidates = [os.environ.get("HIVE_BIN")]
    if os.environ.get("CARGO_TARGET_DIR"):
        candidates.append(os.path.join(os.environ["CARGO_TARGET_DIR"], "debug", "hive"))
    candidates.append(str(REPO / "target" / "debug" / "hive"))
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise pytest.UsageError(f"no hive binary (HIVE_BIN, or build it: cargo build -p hive): {candidates}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Hive:
    url: str
    admin_token: str
    home: Path
    bin: Path

    def client(self, token: str | None = None, **options: object) -> Client:
        return Client(self.url, token or self.admin_token, **options)  # type: ignore[arg-type]

    def env(self, token: str | None = None) -> dict[str, str]:
        """An environment for a subprocess that uses this hive."""
        return {**os.environ, "HIVE_URL": self.url, "HIVE_TOKEN": token or self.admin_token}


@pytest.fixture(scope="session")
def hive() -> Iterator[Hive]:
    binary = hive_bin()
    home = Path(tempfile.mkdtemp(prefix="hive-py-"))
    home.chmod(0o755)  # PostgreSQL runs as its own user under root: it must reach its data dir
    port = free_port()
    env = {
        **os.environ,
        "HIVE_HOME": str(home / "hive"),
        "HIVE_HTTP_ADDR": f"127.0.0.1:{port}",
        "HIVE_NATS_PORT": "0",
        "HIVE_PG_PORT": "0",
        "HIVE_LOG": os.environ.get("HIVE_LOG", "warn"),
        "HIVE_AGENT_HEARTBEAT_SECS": "1",
    }
    nats = os.environ.get("HIVE_NATS_SERVER") or shutil.which("nats-server")
    if nats:
        env["HIVE_NATS_SERVER"] = nats
    log = open(home / "hive.log", "w")  # noqa: SIM115 (closed at teardown)
    process = subprocess.Popen([str(binary), "up"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    token_file = home / "hive" / "admin.token"

    def up() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"hive up exited {process.returncode}: {(home / 'hive.log').read_text()}")
        try:
            return token_file.exists() and httpx.get(f"{url}/livez", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(up, timeout=90, what="hive up")
        yield Hive(url, token_file.read_text().strip(), home, binary)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def admin(hive: Hive) -> Iterator[Client]:
    with hive.client() as client:
        yield client


@pytest.fixture(scope="session")
def operator_token(admin: Client) -> str:
    return admin.issue_token("operator", "python-tests").token


@pytest.fixture(scope="session")
def viewer_token(admin: Client) -> str:
    return admin.issue_token("viewer", "python-tests-viewer").token


@pytest.fixture
def capability() -> str:
    """A capability of this test's own: only its agents take its tasks."""
    return f"py-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def proxy(hive: Hive) -> Iterator[Proxy]:
    port = int(hive.url.rsplit(":", 1)[1])
    with Proxy("127.0.0.1", port) as p:
        yield p
