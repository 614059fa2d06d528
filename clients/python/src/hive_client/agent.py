"""A worker helper: a Python process becomes an agent of a hive by giving `run` a handler.

```python
from hive_client.agent import Task, run

def handle(task: Task) -> dict[str, str]:
    task.progress(50, "halfway")
    return {"echo": task.assignment.title}

run(handle, capabilities=["python"])   # HIVE_URL, HIVE_TOKEN from the environment
```

It does what `hive agent` does: registers with an operator's token (or acts as an agent whose own token
and `agent_id` it is given), heartbeats, receives its assignments by push (reopening the stream when it
drops), and for each one accepts it, starts it, runs the handler (a plain function runs in a thread, a
coroutine function on the loop; up to `max_concurrent_tasks` at once), reports its progress (the
latest, at most every 250 ms) and completes it with the handler's result, or fails it when the handler
raises (`TaskFailed(..., retryable=False)` for good). On SIGTERM or SIGINT it drains: takes nothing new,
lets running tasks finish (up to `drain_timeout`), then deregisters. When its agent is deregistered by
someone else (its heartbeat refused), it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from . import errors
from ._async_client import AsyncClient
from .models import Assignment

log = logging.getLogger("hive_client.agent")
PROGRESS_EVERY = 0.25
RECONNECT_MIN, RECONNECT_MAX = 0.1, 5.0

Result = dict[str, Any] | None
Handler = Callable[["Task"], Result | Awaitable[Result]]


class TaskFailed(Exception):
    """Raised by a handler: the task failed; `retryable=False` says another attempt cannot help."""

    def __init__(self, error: str, *, retryable: bool = True) -> None:
        super().__init__(error)
        self.error = error
        self.retryable = retryable


@dataclass
class Task:
    """One assignment in the handler's hands."""

    assignment: Assignment
    agent_id: str
    _loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.get_running_loop)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _latest: tuple[int | None, str] | None = None
    cancelled: bool = False
    """Set when the hive refused a progress report: the task was requeued or cancelled, so its result
    will be refused too; a long handler may check it and stop early."""

    @property
    def task_id(self) -> str:
        return str(self.assignment.task_id.root)

    def progress(self, percent: int | None = None, message: str = "") -> None:
        """Reports progress (from a thread or the loop; never blocks): the latest is sent."""
        if percent is not None and not 0 <= percent <= 100:
            raise ValueError(f"percent must be 0 to 100, not {percent}")
        self._latest = (percent, message)
        self._loop.call_soon_threadsafe(self._changed.set)


class Worker:
    """An agent run by a handler: see the module's documentation. `await worker.run(stop)` runs until
    `stop` is set (then drains) or the agent is deregistered."""

    def __init__(
        self,
        handler: Handler,
        *,
        capabilities: list[str] | None = None,
        url: str | None = None,
        token: str | None = None,
        agent_id: str | None = None,
        agent_type: str = "worker",
        name: str | None = None,
        max_concurrent_tasks: int = 1,
        heartbeat_interval: float = 5.0,
        drain_timeout: float = 30.0,
    ) -> None:
        if not callable(handler):
            raise TypeError("handler must be a function taking a Task")
        if max_concurrent_tasks < 1:
            raise ValueError("max_concurrent_tasks must be at least 1")
        self.handler = handler
        self.capabilities = capabilities or []
        self.url, self.token = url, token
        self.agent_id = agent_id
        self.agent_type, self.name = agent_type, name
        self.max_concurrent_tasks = max_concurrent_tasks
        self.heartbeat_interval = heartbeat_interval
        self.drain_timeout = drain_timeout
        self.started = asyncio.Event()
        self._in_hand: set[str] = set()
        self._running: dict[asyncio.Task[None], Task] = {}

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        async with AsyncClient(self.url, self.token) as operator:
            if self.agent_id is None:
                registered = await operator.register_agent(
                    self.capabilities,
                    agent_type=self.agent_type,
                    max_concurrent_tasks=self.max_concurrent_tasks,
                    name=self.name,
                )
                self.agent_id, self.token = str(registered.agent_id), registered.token
            # From here on it acts as the agent, with the agent's own token.
            async with AsyncClient(operator.url, self.token) as client:
                await client.heartbeat(self.agent_id)
                log.info("agent %s running against %s", self.agent_id, client.url)
                self.started.set()
                await self._serve(client, self.agent_id, stop)

    async def _serve(self, client: AsyncClient, agent: str, stop: asyncio.Event) -> None:
        room = asyncio.Semaphore(self.max_concurrent_tasks)
        gone = asyncio.Event()
        reader = asyncio.create_task(self._read(client, agent, room))
        beat = asyncio.create_task(self._beat(client, agent, gone))
        ended = asyncio.create_task(stop.wait())
        await asyncio.wait([ended, asyncio.create_task(gone.wait())], return_when="FIRST_COMPLETED")
        reader.cancel()
        if gone.is_set():
            log.warning("agent %s was deregistered (or its token revoked): stopping", agent)
            for job in list(self._running):
                job.cancel()
        else:
            log.info("agent %s draining (%d running)", agent, len(self._running))
            with contextlib.suppress(errors.HiveError):
                await client.drain_agent(agent)
            if self._running:
                _, late = await asyncio.wait(list(self._running), timeout=self.drain_timeout)
                for job in late:
                    # Given back for another attempt (a handler in a thread cannot be stopped: its
                    # result, if it ever comes, is dropped).
                    task = self._running.pop(job, None)
                    job.cancel()
                    if task is None or job.done():
                        continue  # it ended meanwhile, and reported itself
                    with contextlib.suppress(errors.HiveError):
                        await client.report(
                            task.assignment,
                            agent,
                            "fail",
                            retryable=True,
                            error="the agent stopped before the task finished",
                        )
            with contextlib.suppress(errors.HiveError):
                await client.deregister_agent(agent, reason="the agent's runtime stopped")
        beat.cancel()
        ended.cancel()
        await asyncio.gather(reader, beat, *self._running, return_exceptions=True)

    async def _beat(self, client: AsyncClient, agent: str, gone: asyncio.Event) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                await client.heartbeat(agent)
            except (errors.Unauthorized, errors.NotFound, errors.Conflict):
                gone.set()
                return
            except errors.HiveError as e:
                log.warning("heartbeat failed: %s", e)

    async def _read(self, client: AsyncClient, agent: str, room: asyncio.Semaphore) -> None:
        """Reads the assignment stream, reopening it whenever it ends, and starts each new task."""
        delay = RECONNECT_MIN
        while True:
            try:
                async for assignment in client.assignments(agent):
                    delay = RECONNECT_MIN
                    task_id = str(assignment.task_id.root)
                    if task_id in self._in_hand:
                        continue
                    self._in_hand.add(task_id)
                    await room.acquire()
                    task = Task(assignment, agent)
                    job = asyncio.create_task(self._work(client, task, room))
                    self._running[job] = task
                    job.add_done_callback(lambda done: self._running.pop(done, None))
            except errors.HiveError as e:
                log.warning("assignment stream: %s", e)
            except Exception as e:  # httpx's stream errors: reopen
                log.debug("assignment stream ended: %r", e)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX)

    async def _work(self, client: AsyncClient, task: Task, room: asyncio.Semaphore) -> None:
        a = task.assignment
        try:
            try:
                await client.report(a, task.agent_id, "accept")
                await client.report(a, task.agent_id, "start")
            except errors.HiveError as e:
                log.info("task %s not taken: %s", task.task_id, e)
                return
            reporter = asyncio.create_task(self._report_progress(client, task))
            fields: dict[str, Any]
            try:
                action, fields = "complete", {"result": _as_result(await self._call(task))}
            except TaskFailed as e:
                action, fields = "fail", {"error": e.error, "retryable": e.retryable}
            except Exception as e:
                log.exception("task %s: the handler raised", task.task_id)
                action, fields = "fail", {"error": f"{type(e).__name__}: {e}", "retryable": True}
            finally:
                reporter.cancel()
            try:
                await client.report(a, task.agent_id, action, **fields)
            except errors.HiveError as e:
                log.warning("task %s: could not %s it: %s", task.task_id, action, e)
        finally:
            self._in_hand.discard(task.task_id)
            room.release()

    async def _call(self, task: Task) -> Any:
        if inspect.iscoroutinefunction(self.handler):
            return await self.handler(task)
        result = await asyncio.to_thread(self.handler, task)
        return await result if inspect.isawaitable(result) else result

    async def _report_progress(self, client: AsyncClient, task: Task) -> None:
        while True:
            await task._changed.wait()
            task._changed.clear()
            if task._latest is None:
                continue
            percent, message = task._latest
            try:
                await client.report(
                    task.assignment, task.agent_id, "progress", percent=percent, message=message
                )
            except (errors.Forbidden, errors.Conflict, errors.NotFound):
                task.cancelled = True
                return
            except errors.HiveError as e:
                log.debug("progress not reported: %s", e)
            await asyncio.sleep(PROGRESS_EVERY)


def _as_result(value: Any) -> dict[str, Any] | None:
    if value is None or isinstance(value, dict):
        return value
    return {"value": value}


def run(handler: Handler, **options: Any) -> None:
    """Runs a `Worker(handler, **options)` until SIGTERM or SIGINT (then drains and deregisters).
    A refusal it cannot go on without (a bad token, no hive) exits with its message."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stop.set)
        await Worker(handler, **options).run(stop)

    try:
        asyncio.run(main())
    except errors.HiveError as e:
        # A refusal the worker cannot go on without (registration, its first heartbeat): say it plainly.
        raise SystemExit(f"hive_client.agent: {e}") from None
