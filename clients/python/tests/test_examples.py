"""The examples and the benchmark's smoke, run as a user runs them, against the test hive."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

from hive_client import Client

from .conftest import Hive, wait_until

HERE = Path(__file__).resolve().parents[1]


def test_quickstart_example(hive: Hive) -> None:
    done = subprocess.run(
        [sys.executable, str(HERE / "examples" / "quickstart.py")],
        env=hive.env(),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "project progress: 100%" in done.stdout


def test_the_quickstart_runs_from_a_fresh_venv_with_the_package_installed(
    hive: Hive, tmp_path: Path
) -> None:
    """As a user does it: `pip install ./clients/python` (a built package, not this checkout's
    sources) into a new venv, then the quick start from a directory that is not the checkout."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(HERE)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    where = subprocess.run(
        [str(python), "-c", "import hive_client; print(hive_client.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert str(venv) in where.stdout, f"imported from the venv, not the checkout: {where.stdout}"
    done = subprocess.run(
        [str(python), str(HERE / "examples" / "quickstart.py")],
        cwd=tmp_path,
        env=hive.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "project progress: 100%" in done.stdout


def test_agent_example(hive: Hive, admin: Client, operator_token: str, capability: str) -> None:
    log = hive.home / f"agent-{capability}.log"
    with open(log, "w") as out:
        agent = subprocess.Popen(
            [sys.executable, str(HERE / "examples" / "agent.py"), capability],
            env=hive.env(operator_token),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        found = wait_until(
            lambda: re.search(r"agent (\S+) running", log.read_text()), timeout=30, what="the agent"
        )
        agent_id = found.group(1)
        task = admin.create_task("drawkcab", required_capabilities=[capability])
        for change in admin.events(task.seq - 1, aggregate_id=task.task_id):
            if change.type == "TaskCompleted":
                break
        assert admin.get_task(task.task_id).result == {"reversed": "backward"}
    finally:
        agent.send_signal(signal.SIGTERM)
        code = agent.wait(timeout=30)
    assert code == 0, log.read_text()
    assert admin.get_agent(agent_id, min_seq="head").status == "deregistered"


def test_benchmark_smoke(hive: Hive) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(HERE / "bench" / "bench.py"),
            "--smoke",
            "--url",
            hive.url,
            "--token",
            hive.admin_token,
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "events() catch-up" in done.stdout
