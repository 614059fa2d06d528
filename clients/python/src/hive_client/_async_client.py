"""`AsyncClient`: the asynchronous client, a thin httpx transport around the sans-IO core. The sync
`Client` is written from this file by scripts/generate (scripts/unasync.py): edit this one."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncGenerator, Mapping
from dataclasses import replace
from types import TracebackType
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from . import errors
from ._core import (
    AUTO,
    Answer,
    Core,
    EventsCursor,
    MinSeq,
    Request,
    SSEDecoder,
    model,
    parse,
    query,
)
from .models import (
    AgentCommitted,
    AgentStatusView,
    AgentView,
    Assignment,
    Change,
    Create,
    Health,
    History,
    Issued,
    ListAgentView,
    ListTaskView,
    ProjectCommitted,
    ProjectView,
    Register,
    Registered,
    Report,
    SpawnBody,
    Spawned,
    Status,
    TaskCommitted,
    TaskView,
)

Id = uuid.UUID | str
M = TypeVar("M", bound=BaseModel)
STREAM_TIMEOUT = httpx.Timeout(10.0, read=40.0)  # the API sends a keep-alive every 15 s


class AsyncClient:
    """A client of one hive's HTTP API.

    `url` and `token` default to `HIVE_URL` and `HIVE_TOKEN`. Commands send an `Idempotency-Key`
    (a new one unless given) and are tried again, with the same key, on 503/429 (after `Retry-After`)
    and on a lost connection, at most `max_attempts` times in all. Reads wait (`Hive-Min-Seq`) for the
    highest sequence this client's commands were answered with, unless told otherwise (`min_seq`).
    Refusals raise `hive_client.errors.HiveError` subclasses.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        max_attempts: int = 5,
        backoff: float = 0.1,
        max_backoff: float = 5.0,
        read_your_writes: bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        url = url or os.environ.get("HIVE_URL") or "http://127.0.0.1:8080"
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"the hive's URL must start with http:// or https://, not {url!r}")
        self.url = url.rstrip("/")
        token = token if token is not None else os.environ.get("HIVE_TOKEN")
        self._core = Core(
            token=token,
            max_attempts=max_attempts,
            backoff=backoff,
            max_backoff=max_backoff,
            read_your_writes=read_your_writes,
        )
        self._http = httpx.AsyncClient(base_url=self.url, timeout=timeout, transport=transport)

    @property
    def token(self) -> str | None:
        """The bearer token this client sends."""
        return self._core.token

    @property
    def seen_seq(self) -> int:
        """The highest sequence this client's commands were answered with (its reads wait for it)."""
        return self._core.seen_seq

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Closes the client's connections."""
        await self._http.aclose()

    async def _send(self, request: Request) -> Answer:
        """Sends a request, trying again as the core's policy says (the same request, the same key)."""
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._http.request(
                    request.method,
                    request.path,
                    params=request.params,
                    headers=request.headers,
                    content=request.body,
                )
                return self._core.answer(
                    request, response.status_code, response.headers, response.content
                )
            except httpx.TransportError as e:
                error: errors.HiveError = errors.ConnectionFailed(
                    f"{request.method} {request.path}: {e.__class__.__name__}: {e}"
                )
            except (errors.Unavailable, errors.ConnectionFailed) as e:
                error = e
            delay = self._core.retry_delay(attempt, error)
            if delay is None:
                raise error
            await asyncio.sleep(delay)

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: BaseModel | Mapping[str, Any] | None = None,
        params: Mapping[str, object] | None = None,
        headers: Mapping[str, str] | None = None,
        min_seq: MinSeq = AUTO,
        idempotency_key: str | None = None,
    ) -> Answer:
        """Any route: a `GET` is a read (with `Hive-Min-Seq` as `min_seq` says), anything else a
        command (with an `Idempotency-Key`, retried). Returns the answer's status, headers and JSON."""
        method = method.upper()
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/': {path!r}")
        if method in ("GET", "HEAD"):
            request = self._core.read(path, params, min_seq=min_seq, headers=headers)
            request = Request(method, request.path, request.params, request.headers)
        else:
            request = self._core.command(
                method, path, json, idempotency_key=idempotency_key, headers=headers
            )
            if params:
                request = replace(request, params=query(params))
        return await self._send(request)

    async def _get(
        self,
        model: type[M],
        path: str,
        params: Mapping[str, object] | None = None,
        min_seq: MinSeq = AUTO,
    ) -> M:
        return parse(model, await self._send(self._core.read(path, params, min_seq=min_seq)))

    async def _post(
        self,
        model: type[M],
        path: str,
        body: BaseModel | Mapping[str, Any] | None,
        key: str | None,
        **flow: Any,
    ) -> M:
        request = self._core.command("POST", path, body, idempotency_key=key, **flow)
        return parse(model, await self._send(request))

    # The hive.

    async def health(self) -> Health:
        """`GET /health` (an unhealthy hive answers 503: `Unavailable`)."""
        return await self._get(Health, "/health", min_seq=None)

    async def status(self, *, min_seq: MinSeq = AUTO) -> Status:
        """`GET /api/v1/system/status`: agents and tasks by status, the log's head, the projection."""
        return await self._get(Status, "/api/v1/system/status", min_seq=min_seq)

    async def issue_token(
        self, role: str, name: str, *, idempotency_key: str | None = None
    ) -> Issued:
        """`POST /api/v1/tokens` (admin): a new token of `role` (admin, operator or viewer)."""
        body = {"role": role, "name": name}
        return await self._post(Issued, "/api/v1/tokens", body, idempotency_key)

    # Agents.

    async def register_agent(
        self,
        capabilities: list[str] | None = None,
        *,
        agent_type: str = "worker",
        max_concurrent_tasks: int = 1,
        name: str | None = None,
        idempotency_key: str | None = None,
    ) -> Registered:
        """`POST /api/v1/agents`: a new agent, with its own token."""
        body = model(
            Register,
            {
                "agent_type": agent_type,
                "capabilities": capabilities,
                "max_concurrent_tasks": max_concurrent_tasks,
                "name": name,
            },
        )
        return await self._post(Registered, "/api/v1/agents", body, idempotency_key)

    async def spawn_agent(
        self,
        capabilities: list[str] | None = None,
        *,
        agent_type: str | None = None,
        max_concurrent_tasks: int | None = None,
        name: str | None = None,
        agent_id: Id | None = None,
        exec: str | None = None,
        idempotency_key: str | None = None,
    ) -> Spawned:
        """`POST /api/v1/agents/spawn` (admin): an agent run by a supervised `hive agent` process."""
        body = model(
            SpawnBody,
            {
                "capabilities": capabilities,
                "agent_type": agent_type,
                "max_concurrent_tasks": max_concurrent_tasks,
                "name": name,
                "agent_id": agent_id,
                "exec": exec,
            },
        )
        return await self._post(Spawned, "/api/v1/agents/spawn", body, idempotency_key)

    async def get_agent(self, agent_id: Id, *, min_seq: MinSeq = AUTO) -> AgentView:
        """`GET /api/v1/agents/{id}`."""
        return await self._get(AgentView, f"/api/v1/agents/{agent_id}", min_seq=min_seq)

    async def list_agents(
        self,
        *,
        status: str | None = None,
        capability: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        order: str | None = None,
        min_seq: MinSeq = AUTO,
    ) -> ListAgentView:
        """`GET /api/v1/agents`: a page of agents (`next_cursor` for the next)."""
        params = {
            "status": status,
            "capability": capability,
            "limit": limit,
            "cursor": cursor,
            "order": order,
        }
        return await self._get(ListAgentView, "/api/v1/agents", params, min_seq)

    async def heartbeat(self, agent_id: Id) -> AgentStatusView:
        """`POST /api/v1/agents/{id}/heartbeat`."""
        path = f"/api/v1/agents/{agent_id}/heartbeat"
        return await self._post(AgentStatusView, path, {}, None)

    async def drain_agent(
        self, agent_id: Id, *, idempotency_key: str | None = None
    ) -> AgentCommitted:
        """`POST /api/v1/agents/{id}/drain`: it takes no new task."""
        path = f"/api/v1/agents/{agent_id}/drain"
        return await self._post(AgentCommitted, path, {}, idempotency_key)

    async def deregister_agent(
        self, agent_id: Id, *, reason: str | None = None, idempotency_key: str | None = None
    ) -> AgentCommitted:
        """`POST /api/v1/agents/{id}/deregister` (its tokens are revoked)."""
        path = f"/api/v1/agents/{agent_id}/deregister"
        body = {"reason": reason} if reason else {}
        return await self._post(AgentCommitted, path, body, idempotency_key)

    async def assignments(self, agent_id: Id) -> AsyncGenerator[Assignment]:
        """The agent's assignment stream (`GET /api/v1/agents/{id}/assignments`): its current
        assignments, then each new one, until the connection ends (the caller reopens it)."""
        request = self._core.read(
            f"/api/v1/agents/{agent_id}/assignments",
            min_seq=None,
            headers={"Accept": "text/event-stream"},
        )
        decoder = SSEDecoder()
        async with self._http.stream(
            "GET", request.path, headers=request.headers, timeout=STREAM_TIMEOUT
        ) as response:
            if response.status_code != 200:
                await response.aread()
                self._core.answer(request, response.status_code, response.headers, response.content)
            async for line in response.aiter_lines():
                sse = decoder.feed(line)
                if sse is not None and sse.event == "assignment":
                    yield Assignment.model_validate_json(sse.data)

    # Tasks.

    async def create_task(
        self,
        title: str,
        *,
        description: str | None = None,
        task_type: str | None = None,
        priority: int | str | None = None,
        required_capabilities: list[str] | None = None,
        depends_on: list[Id] | None = None,
        project_id: Id | None = None,
        max_attempts: int | None = None,
        pinned_agent: Id | None = None,
        idempotency_key: str | None = None,
        correlation_id: Id | None = None,
    ) -> TaskCommitted:
        """`POST /api/v1/tasks`. `priority`: 1..10 or low, normal, medium, high, critical."""
        body = model(
            Create,
            {
                "title": title,
                "description": description,
                "task_type": task_type,
                "priority": priority,
                "required_capabilities": required_capabilities,
                "depends_on": depends_on,
                "project_id": project_id,
                "max_attempts": max_attempts,
                "pinned_agent": pinned_agent,
            },
        )
        return await self._post(
            TaskCommitted, "/api/v1/tasks", body, idempotency_key, correlation_id=correlation_id
        )

    async def get_task(self, task_id: Id, *, min_seq: MinSeq = AUTO) -> TaskView:
        """`GET /api/v1/tasks/{id}`."""
        return await self._get(TaskView, f"/api/v1/tasks/{task_id}", min_seq=min_seq)

    async def list_tasks(
        self,
        *,
        status: str | None = None,
        agent_id: Id | None = None,
        project_id: Id | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        order: str | None = None,
        min_seq: MinSeq = AUTO,
    ) -> ListTaskView:
        """`GET /api/v1/tasks`: a page of tasks (`next_cursor` for the next)."""
        params = {
            "status": status,
            "agent_id": agent_id,
            "project_id": project_id,
            "limit": limit,
            "cursor": cursor,
            "order": order,
        }
        return await self._get(ListTaskView, "/api/v1/tasks", params, min_seq)

    async def task_action(
        self,
        task_id: Id,
        action: str,
        report: Report | Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        correlation_id: Id | None = None,
        causation_id: Id | None = None,
    ) -> TaskCommitted:
        """`POST /api/v1/tasks/{id}/{action}`: accept, start, progress, complete, fail, release
        (the assigned agent's reports), requeue, cancel, retry (an operator's)."""
        return await self._post(
            TaskCommitted,
            f"/api/v1/tasks/{task_id}/{action}",
            report or {},
            idempotency_key,
            correlation_id=correlation_id,
            causation_id=causation_id,
        )

    async def cancel_task(self, task_id: Id, *, reason: str | None = None) -> TaskCommitted:
        """Cancels a task that has not finished."""
        return await self.task_action(task_id, "cancel", Report(reason=reason))

    async def retry_task(self, task_id: Id) -> TaskCommitted:
        """Gives a failed or dead-lettered task a new round of attempts."""
        return await self.task_action(task_id, "retry")

    async def report(
        self, assignment: Assignment, agent_id: Id, action: str, **fields: Any
    ) -> TaskCommitted:
        """An agent's report on its assignment (`accept`, `start`, `progress`, `complete`, `fail`,
        `release`) in the assignment's flow; `fields` are `Report`'s (percent, message, result, ...)."""
        report = model(Report, {"agent_id": str(agent_id), **fields})
        return await self.task_action(
            assignment.task_id.root,
            action,
            report,
            correlation_id=assignment.correlation_id,
            causation_id=assignment.causation_id,
        )

    # Projects.

    async def create_project(
        self,
        name: str,
        *,
        description: str | None = None,
        type: str | None = None,
        idempotency_key: str | None = None,
    ) -> ProjectCommitted:
        """`POST /api/v1/projects`."""
        body = {
            k: v
            for k, v in {"name": name, "description": description, "type": type}.items()
            if v is not None
        }
        return await self._post(ProjectCommitted, "/api/v1/projects", body, idempotency_key)

    async def get_project(self, project_id: Id, *, min_seq: MinSeq = AUTO) -> ProjectView:
        """`GET /api/v1/projects/{id}`: with its task counts and progress."""
        return await self._get(ProjectView, f"/api/v1/projects/{project_id}", min_seq=min_seq)

    # The log.

    async def history(
        self,
        aggregate: str,
        entity_id: Id,
        *,
        after_seq: int | None = None,
        limit: int | None = None,
    ) -> History:
        """An entity's history from the log (`GET /api/v1/{aggregate}s/{id}/events`): its audit."""
        if aggregate not in ("agent", "task", "project"):
            raise ValueError(f"aggregate must be agent, task or project, not {aggregate!r}")
        path = f"/api/v1/{aggregate}s/{entity_id}/events"
        params = {"after_seq": after_seq, "limit": limit}
        return await self._get(History, path, params, min_seq=None)

    async def events(
        self,
        after_seq: int = 0,
        *,
        aggregate: str | None = None,
        aggregate_id: Id | None = None,
        type: str | None = None,
        actor: str | None = None,
        correlation_id: Id | None = None,
        follow: bool = True,
        page_size: int = 1000,
    ) -> AsyncGenerator[Change]:
        """Every event of the log after `after_seq` that the filters keep, once each, in order: the
        log's pages until caught up, then (with `follow`) the live stream, reconnected after a lost
        connection from the last event seen (`Last-Event-ID`). Without `follow`, it ends caught up."""
        cursor = EventsCursor(
            after_seq,
            aggregate=aggregate,
            aggregate_id=aggregate_id,
            type=type,
            actor=actor,
            correlation_id=correlation_id,
            follow=follow,
            page_size=page_size,
        )
        failures = 0
        while not cursor.done:
            if cursor.paging:
                for item in cursor.on_page(await self._send(cursor.page_request(self._core))):
                    yield item
                continue
            request = cursor.stream_request(self._core)
            error: errors.HiveError = errors.ConnectionFailed("the stream ended")
            try:
                async with self._http.stream(
                    "GET",
                    request.path,
                    params=request.params,
                    headers=request.headers,
                    timeout=STREAM_TIMEOUT,
                ) as response:
                    if response.status_code != 200:
                        await response.aread()
                        self._core.answer(
                            request, response.status_code, response.headers, response.content
                        )
                    failures = 0
                    decoder = SSEDecoder()
                    async for line in response.aiter_lines():
                        sse = decoder.feed(line)
                        if sse is None:
                            continue
                        change = cursor.on_sse(sse)
                        if change is not None:
                            yield change
                        if cursor.paging:
                            break
            except httpx.TransportError as e:
                error = errors.ConnectionFailed(f"the stream: {e.__class__.__name__}: {e}")
            except errors.Unavailable as e:
                error = e
            if cursor.paging:
                continue
            failures += 1
            delay = self._core.retry_delay(failures, error)
            if delay is None:
                raise error
            await asyncio.sleep(delay)
