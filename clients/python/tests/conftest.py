"""One real hive for the session: `hive up` with its own HIVE_HOME in a temp dir, its API on a free
port, its own nats-server and PostgreSQL (ports chosen by the OS). Each test isolates itself with its
own capability (so only its agents take its tasks), projects and agents. The binary: HIVE_BIN, else
$CARGO_TARGET_DIR/debug/hive, else <repo>/target/debug/hive; nats-server: HIVE_NATS_SERVER (as
scripts/test exports it), else the one on PATH."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from hive_client import Client
from hive_client.testing import LocalHive, find_hive_bin

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


@dataclass
class Hive:
    url: str
    admin_token: str
    home: Path

    def client(self, token: str | None = None) -> Client:
        return Client(self.url, token or self.admin_token)

    def env(self, token: str | None = None) -> dict[str, str]:
        """An environment for a subprocess that uses this hive."""
        return {**os.environ, "HIVE_URL": self.url, "HIVE_TOKEN": token or self.admin_token}


@pytest.fixture(scope="session")
def hive() -> Iterator[Hive]:
    try:
        binary = find_hive_bin(REPO)
    except FileNotFoundError as e:
        raise pytest.UsageError(str(e)) from None
    # Spawned agents heartbeat every second, so they are ready (and stop) sooner.
    with LocalHive(binary, env={"HIVE_AGENT_HEARTBEAT_SECS": "1"}) as local:
        yield Hive(local.url, local.admin_token, local.home)


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
