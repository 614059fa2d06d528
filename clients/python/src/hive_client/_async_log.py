"""The log and the streams of `AsyncClient`: an entity's history, `events()` (the log's pages, then
its live stream, resumed after a lost connection), an agent's assignments. scripts/generate writes
the sync module from the async one (scripts/unasync.py): edit the async one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import httpx

from . import errors
from ._async_base import STREAM_TIMEOUT, Id, _AsyncBase
from ._core import EventsCursor, SSEDecoder
from .models import Assignment, Change, History


class _AsyncLog(_AsyncBase):
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
