"""Every Python and shell example of the docs runs against the session's hive, as a reader would run
it: from a directory whose `.hive` is that hive's home (so `.hive/admin.token` is its admin token),
with `hive` on PATH, `HIVE_URL` and `HIVE_TOKEN` set, and `localhost:8080` meaning the hive. A doc's
Python blocks run in order in one interpreter (later blocks use what earlier ones made); each shell
block that calls the API (`curl`) runs alone. A block preceded by `<!-- not run: why -->` is skipped,
with its reason there for the reader. The Rust examples run in tests/integration/docs.rs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hive_client import Client, Conflict, InvalidInput
from hive_client.testing import find_hive_bin

from .conftest import REPO, Hive

DOCS = ("README.md", "docs/api.md", "clients/python/README.md")
FENCE = re.compile(r"^```(\w*)\s*$")


@dataclass
class Block:
    doc: str
    line: int
    lang: str
    code: str


def blocks(doc: str) -> list[Block]:
    """The fenced blocks of `doc` that are meant to run."""
    found: list[Block] = []
    lines = (REPO / doc).read_text().splitlines()
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence or not fence.group(1):
            i += 1
            continue
        start = i
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            i += 1
        before = next((line for line in reversed(lines[:start]) if line.strip()), "")
        if not before.startswith("<!-- not run:"):
            found.append(Block(doc, start + 1, fence.group(1), "\n".join(lines[start + 1 : i])))
        i += 1
    return found


def python_blocks(doc: str) -> list[Block]:
    return [b for b in blocks(doc) if b.lang == "python"]


def shell_blocks() -> list[Block]:
    return [b for doc in DOCS for b in blocks(doc) if b.lang == "sh" and "curl " in b.code]


@pytest.fixture
def reader(hive: Hive, admin: Client, tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A reader's directory and environment; afterwards, the agents the examples registered are
    deregistered and their tasks cancelled, so that nothing of theirs runs into later tests (a task
    without required capabilities may go to any agent)."""
    head = admin.status(min_seq=None).log
    after = head.last_seq if head else 0
    (tmp_path / ".hive").symlink_to(hive.home / "hive")
    env = {k: v for k, v in hive.env().items() if k != "HIVE_HOME"}
    env["PATH"] = f"{find_hive_bin(REPO).parent}{os.pathsep}{env.get('PATH', '')}"
    yield tmp_path, env
    made = list(admin.events(after, follow=False))
    for change in made:
        if change.aggregate_id is None:
            continue
        try:
            if change.type == "AgentRegistered":
                admin.deregister_agent(change.aggregate_id, reason="the docs' example is over")
            elif change.type == "TaskCreated":
                admin.cancel_task(change.aggregate_id, reason="the docs' example is over")
        except (Conflict, InvalidInput):
            pass  # already finished, or already gone


def as_run(code: str, hive: Hive) -> str:
    address = hive.url.removeprefix("http://")
    return code.replace("localhost:8080", address).replace("127.0.0.1:8080", address)


def test_the_docs_have_examples_to_run() -> None:
    assert python_blocks("README.md") and python_blocks("docs/api.md")
    assert len(shell_blocks()) >= 3


@pytest.mark.parametrize("doc", [d for d in DOCS if python_blocks(d)])
def test_python_examples(doc: str, hive: Hive, reader: tuple[Path, dict[str, str]]) -> None:
    cwd, env = reader
    program = "\n\n".join(as_run(b.code, hive) for b in python_blocks(doc))
    done = subprocess.run(
        [sys.executable, "-c", program],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"{doc}'s Python examples failed:\n{done.stdout}\n{done.stderr}"


@pytest.mark.parametrize("block", shell_blocks(), ids=lambda b: f"{b.doc}:{b.line}")
def test_shell_examples(block: Block, hive: Hive, reader: tuple[Path, dict[str, str]]) -> None:
    cwd, env = reader
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", as_run(block.code, hive)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"{block.doc}:{block.line} failed:\n{done.stdout}\n{done.stderr}"
    # curl -s prints Hive's answers; none of them may be a refusal the example does not expect.
    refusals = re.findall(r'\{"error":\{"code":"(\w+)"', done.stdout)
    assert set(refusals) <= {"not_found"}, f"{block.doc}:{block.line}: {done.stdout}"
