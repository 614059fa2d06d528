"""The transport of `AsyncClient`: the requests the sans-IO core builds, sent with httpx and tried
again as the core's policy says. scripts/generate writes the sync module from the async one
(scripts/unasync.py): edit the async one."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Mapping
from dataclasses import replace
from types import TracebackType
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from . import errors
from ._core import AUTO, Answer, Core, MinSeq, Request, parse, query

Id = uuid.UUID | str
M = TypeVar("M", bound=BaseModel)
B = TypeVar("B", bound="_AsyncBase")
STREAM_TIMEOUT = httpx.Timeout(10.0, read=40.0)  # the API sends a keep-alive every 15 s


class _AsyncBase:
    """What `AsyncClient` is made of below its methods: the connection, the core, the retries.

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

    async def __aenter__(self: B) -> B:
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
            request = replace(request, method=method)
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
