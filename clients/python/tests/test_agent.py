"""The worker helper runs tasks end to end, reports progress, fails on request, drains on stop."""

from __future__ import annotations

import asyncio
import threading

import pytest

from hive_client import AsyncClient
from hive_client.agent import Task, TaskFailed, Worker, run

from .conftest import Hive

TERMINAL = {"TaskCompleted", "TaskFailed", "TaskDeadLettered"}


def test_the_worker_runs_tasks_end_to_end(hive: Hive, operator_token: str, capability: str) -> None:
    handled: list[str] = []

    def handle(task: Task) -> dict[str, str]:
        assert (
            threading.current_thread() is not threading.main_thread()
        )  # a plain function: a thread
        handled.append(task.assignment.title)
        if task.assignment.title == "refuse":
            raise TaskFailed("refused on purpose", retryable=False)
        task.progress(50, "half way")
        return {"upper": task.assignment.title.upper()}

    async def main() -> None:
        worker = Worker(
            handle,
            capabilities=[capability],
            url=hive.url,
            token=operator_token,
            max_concurrent_tasks=2,
            heartbeat_interval=0.5,
            drain_timeout=5,
        )
        stop = asyncio.Event()
        running = asyncio.create_task(worker.run(stop))
        async with AsyncClient(hive.url, hive.admin_token) as client:
            head = (await client.status(min_seq=None)).log
            titles = ["one", "two", "three", "refuse"]
            tasks = {
                (
                    await client.create_task(t, required_capabilities=[capability], max_attempts=1)
                ).task_id: t
                for t in titles
            }
            ended: dict[str, str] = {}
            async for change in client.events(head.last_seq if head else 0, aggregate="task"):
                if change.aggregate_id in tasks and change.type in TERMINAL:
                    ended.setdefault(tasks[change.aggregate_id], str(change.type))
                    if len(ended) == len(tasks):
                        break
            assert ended == {
                "one": "TaskCompleted",
                "two": "TaskCompleted",
                "three": "TaskCompleted",
                "refuse": "TaskFailed",
            }
            done = {t.title: t for t in (await client.list_tasks(agent_id=worker.agent_id)).items}
            assert done["two"].result == {"upper": "TWO"}
            history = await client.history("task", next(k for k, v in tasks.items() if v == "one"))
            kinds = [e.type for e in history.events]
            assert kinds[:2] == ["TaskCreated", "TaskAssigned"] and kinds[-1] == "TaskCompleted"
            assert {"TaskAccepted", "TaskStarted"} <= set(kinds)

            stop.set()  # as SIGTERM does: drain, then deregister
            await asyncio.wait_for(running, timeout=15)
            assert worker.agent_id is not None
            agent = await client.get_agent(worker.agent_id, min_seq="head")
            assert agent.status == "deregistered"

    asyncio.run(main())
    assert sorted(handled) == ["one", "refuse", "three", "two"]


def test_an_async_handler_runs_on_the_loop(
    hive: Hive, operator_token: str, capability: str
) -> None:
    async def handle(task: Task) -> dict[str, int]:
        await asyncio.sleep(0)
        return {"attempt": task.assignment.attempt}

    async def main() -> None:
        worker = Worker(
            handle,
            capabilities=[capability],
            url=hive.url,
            token=operator_token,
            heartbeat_interval=0.5,
        )
        stop = asyncio.Event()
        running = asyncio.create_task(worker.run(stop))
        async with AsyncClient(hive.url, hive.admin_token) as client:
            task = await client.create_task("async", required_capabilities=[capability])
            async for change in client.events(task.seq - 1, aggregate_id=task.task_id):
                if change.type == "TaskCompleted":
                    break
            assert (await client.get_task(task.task_id)).result == {"attempt": 1}
        stop.set()
        await asyncio.wait_for(running, timeout=15)

    asyncio.run(main())


def test_a_drain_that_times_out_gives_the_task_back(
    hive: Hive, operator_token: str, capability: str
) -> None:
    release = threading.Event()
    started = threading.Event()

    def stuck(task: Task) -> None:
        started.set()
        release.wait(30)

    async def main() -> None:
        worker = Worker(
            stuck,
            capabilities=[capability],
            url=hive.url,
            token=operator_token,
            heartbeat_interval=0.5,
            drain_timeout=0.5,
        )
        stop = asyncio.Event()
        running = asyncio.create_task(worker.run(stop))
        async with AsyncClient(hive.url, hive.admin_token) as client:
            task = await client.create_task("stuck", required_capabilities=[capability])
            await asyncio.to_thread(started.wait, 30)
            stop.set()
            await asyncio.wait_for(running, timeout=15)
            history = await client.history("task", task.task_id)
            failed = [e for e in history.events if e.type == "TaskFailed"]
            assert (
                failed and isinstance(failed[0].data, dict) and failed[0].data["retryable"] is True
            )
        release.set()

    asyncio.run(main())


def test_run_exits_with_the_refusal(hive: Hive) -> None:
    with pytest.raises(SystemExit, match="unauthenticated"):
        run(lambda task: None, url=hive.url, token="hive_" + "0" * 64, capabilities=["py-nobody"])
