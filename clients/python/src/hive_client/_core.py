"""The client's logic without any I/O (sans-IO), shared by `Client` and `AsyncClient`: how a request is
built (token, `Idempotency-Key`, `Hive-Min-Seq`), how an answer is read (JSON, the sequence it
commits, the typed error it is), when to try again, the server-sent events decoder, and the cursor
that walks the log from its pages to its live stream without a gap or a repeat."""

from __future__ import annotations

import contextlib
import json
import random
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from . import errors
from .models import Change, Page


class _Auto:
    """The default `min_seq`: the highest sequence this client's commands were answered with."""

    def __repr__(self) -> str:
        return "AUTO"


AUTO: Final = _Auto()
MinSeq = int | Literal["head"] | None | _Auto
"""What a read waits for: `AUTO` (read your own writes), an event's sequence, `"head"` (the log's
last event now), or None (no wait)."""

M = TypeVar("M", bound=BaseModel)
ALL_TOPICS: Final = "agent,task,project"
AGGREGATES: Final = frozenset({"agent", "task", "project"})


@dataclass(frozen=True)
class Request:
    """One HTTP request, ready for a transport."""

    method: str
    path: str
    params: dict[str, str | list[str]] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    command: bool = False


@dataclass(frozen=True)
class Answer:
    """An answer of the API: its status, headers (lower-case names) and JSON body (None if empty)."""

    status: int
    headers: Mapping[str, str]
    body: Any

    @property
    def replayed(self) -> bool:
        """Whether a command was a repeat of an earlier one with the same `Idempotency-Key`."""
        return self.headers.get("idempotent-replayed") == "true"


def query(params: Mapping[str, object] | None) -> dict[str, str | list[str]]:
    """Query parameters as strings, leaving out the ones not given; a mapping is the parameter
    repeated, once per `key:value` pair (`label=team:infra&label=env:prod`)."""
    out: dict[str, str | list[str]] = {}
    for name, value in (params or {}).items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            if value:
                out[name] = [f"{k}:{v}" for k, v in value.items()]
        elif isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif isinstance(value, (list, tuple)):
            out[name] = ",".join(str(v) for v in value)
        else:
            out[name] = str(getattr(value, "value", value))
    return out


def model(kind: type[M], fields: Mapping[str, Any]) -> M:
    """A request body built from a method's arguments; arguments the contract refuses raise
    `InvalidInput` before anything is sent."""
    try:
        return kind.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'body'}: {error['msg']}"
            for error in e.errors()
        )
        raise errors.InvalidInput(problems, code="invalid_input") from None


def body_of(value: BaseModel | Mapping[str, Any] | None) -> bytes:
    """A request body as JSON: a model without the fields left unset, or a mapping as it is."""
    if isinstance(value, BaseModel):
        return value.model_dump_json(exclude_none=True).encode()
    return json.dumps(dict(value or {}), default=str).encode()


class Core:
    """What a client knows between requests (its address, token, retry policy, the highest sequence
    its commands were answered with) and the rules of the protocol; no I/O."""

    def __init__(
        self,
        *,
        token: str | None,
        max_attempts: int = 5,
        backoff: float = 0.1,
        max_backoff: float = 5.0,
        read_your_writes: bool = True,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if backoff < 0 or max_backoff < backoff:
            raise ValueError("backoff must be >= 0 and max_backoff >= backoff")
        self.token = token
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.read_your_writes = read_your_writes
        self._seen_seq = 0
        self._lock = threading.Lock()

    @property
    def seen_seq(self) -> int:
        """The highest sequence a command of this client was answered with (0: none yet)."""
        return self._seen_seq

    def saw(self, seq: int) -> None:
        """Remembers a committed sequence, so later reads wait for it."""
        with self._lock:
            self._seen_seq = max(self._seen_seq, seq)

    def _auth(self, headers: dict[str, str]) -> dict[str, str]:
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def min_seq_header(self, min_seq: MinSeq) -> str | None:
        if isinstance(min_seq, _Auto):
            return str(self._seen_seq) if self.read_your_writes and self._seen_seq else None
        if min_seq is None:
            return None
        if min_seq == "head":
            return "head"
        if isinstance(min_seq, bool) or not isinstance(min_seq, int) or min_seq < 0:
            raise ValueError(
                f"min_seq must be AUTO, None, 'head' or a sequence >= 0, not {min_seq!r}"
            )
        return str(min_seq)

    def read(
        self,
        path: str,
        params: Mapping[str, object] | None = None,
        *,
        min_seq: MinSeq = AUTO,
        headers: Mapping[str, str] | None = None,
    ) -> Request:
        """A `GET`, with `Hive-Min-Seq` as `min_seq` says."""
        all_headers = self._auth(dict(headers or {}))
        wait = self.min_seq_header(min_seq)
        if wait is not None:
            all_headers["Hive-Min-Seq"] = wait
        return Request("GET", path, query(params), all_headers)

    def command(
        self,
        method: str,
        path: str,
        body: BaseModel | Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        correlation_id: uuid.UUID | str | None = None,
        causation_id: uuid.UUID | str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Request:
        """A command, with an `Idempotency-Key` (a new one unless given) that every retry repeats."""
        all_headers = self._auth(dict(headers or {}))
        all_headers["Idempotency-Key"] = idempotency_key or str(uuid.uuid4())
        all_headers["Content-Type"] = "application/json"
        if correlation_id is not None:
            all_headers["X-Correlation-Id"] = str(correlation_id)
        if causation_id is not None:
            all_headers["X-Causation-Id"] = str(causation_id)
        return Request(method, path, {}, all_headers, body_of(body), command=True)

    def answer(
        self, request: Request, status: int, headers: Mapping[str, str], content: bytes
    ) -> Answer:
        """Reads an answer: raises the typed error of a refusal; remembers the sequence a command
        committed."""
        lowered = {k.lower(): v for k, v in headers.items()}
        body: Any = None
        if content:
            try:
                body = json.loads(content)
            except ValueError:
                if status < 400 and lowered.get("content-type", "").startswith("application/json"):
                    raise errors.UnexpectedAnswer(
                        f"{request.method} {request.path}: the answer is not JSON", status=status
                    ) from None
                body = content.decode(errors="replace")
        if status >= 400:
            raise self.error(status, lowered, body)
        if request.command and isinstance(body, dict):
            seq = body.get("seq")
            if isinstance(seq, int) and not isinstance(seq, bool):
                self.saw(seq)
        return Answer(status, lowered, body)

    @staticmethod
    def error(status: int, headers: Mapping[str, str], body: Any) -> errors.HiveError:
        """The typed error of a refused request."""
        code, message = "unknown", f"HTTP {status}"
        detail = body.get("error") if isinstance(body, dict) else None
        if isinstance(detail, dict):
            code = str(detail.get("code", code))
            message = str(detail.get("message", message))
        elif isinstance(body, str) and body:
            message = body[:500]
        retry_after: float | None = None
        with contextlib.suppress(ValueError):
            retry_after = float(headers.get("retry-after", ""))
        return errors.error_for(status)(message, status=status, code=code, retry_after=retry_after)

    def retry_delay(self, attempt: int, error: errors.HiveError) -> float | None:
        """How long to wait before trying a request again after `attempt` attempts ended in `error`;
        None: give up. Only a busy hive (503, 429) or a lost connection is tried again: the same
        request, with the same `Idempotency-Key`, so a command that did land is not doubled."""
        if attempt >= self.max_attempts:
            return None
        if not isinstance(error, (errors.Unavailable, errors.ConnectionFailed)):
            return None
        if error.retry_after is not None:
            return min(max(error.retry_after, 0.0), 60.0)
        return self.backoff_delay(attempt)

    def backoff_delay(self, attempt: int) -> float:
        """Doubling back-off with equal jitter, capped."""
        ceiling = min(self.max_backoff, self.backoff * 2.0 ** min(attempt - 1, 30))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


def parse(model: type[M], answer: Answer) -> M:
    """An answer's body as the contract's model for it."""
    try:
        return model.model_validate(answer.body)
    except ValidationError as e:
        raise errors.UnexpectedAnswer(
            f"the answer is not a {model.__name__}: {e}", status=answer.status
        ) from None


@dataclass
class ServerSentEvent:
    """One server-sent event: its name, data and id."""

    event: str
    data: str
    id: str | None


class SSEDecoder:
    """Server-sent events from the lines of a stream, as the HTML standard parses them."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, line: str) -> ServerSentEvent | None:
        """Takes one line (without its end); returns the event a blank line completes."""
        if not line:
            if not self._data:
                self._event, self._id = "", None
                return None
            sse = ServerSentEvent(self._event or "message", "\n".join(self._data), self._id)
            self._event, self._data, self._id = "", [], None
            return sse
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
        return None


class EventsCursor:
    """Where a reader of the log is: it pages `/api/v1/events` until it has caught up, then follows
    `/api/v1/stream` from the last sequence it has (`Last-Event-ID`), and after a `resync` pages
    again. Each event passes once, in order: anything at or below the last sequence is dropped."""

    def __init__(
        self,
        after_seq: int = 0,
        *,
        aggregate: str | None = None,
        aggregate_id: uuid.UUID | str | None = None,
        type: str | None = None,
        actor: str | None = None,
        correlation_id: uuid.UUID | str | None = None,
        follow: bool = True,
        page_size: int = 1000,
    ) -> None:
        if isinstance(after_seq, bool) or not isinstance(after_seq, int) or after_seq < 0:
            raise ValueError(f"after_seq must be a sequence >= 0, not {after_seq!r}")
        if aggregate is not None and aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be agent, task or project, not {aggregate!r}")
        if not 1 <= page_size <= 1000:
            raise ValueError("page_size must be 1 to 1000")
        self.after = after_seq
        self.aggregate = aggregate
        self.aggregate_id = str(aggregate_id) if aggregate_id is not None else None
        self.type = type
        self.actor = actor
        self.correlation_id = str(correlation_id) if correlation_id is not None else None
        self.follow = follow
        self.page_size = page_size
        self.paging = True
        self.done = False

    def page_request(self, core: Core) -> Request:
        params = {
            "after_seq": self.after,
            "limit": self.page_size,
            "aggregate": self.aggregate,
            "aggregate_id": self.aggregate_id,
            "type": self.type,
            "actor": self.actor,
            "correlation_id": self.correlation_id,
        }
        # The log is read directly: nothing to wait for.
        return core.read("/api/v1/events", params, min_seq=None)

    def on_page(self, answer: Answer) -> list[Change]:
        """The new events of a page; after the last page, the stream is next (or the end)."""
        page: Page = parse(Page, answer)
        fresh = [c for c in page.items if c.seq > self.after]
        self.after = max(self.after, page.last_seq, *(c.seq for c in fresh))
        if not page.more:
            self.paging = False
            self.done = not self.follow
        return fresh

    def stream_request(self, core: Core) -> Request:
        # Only the aggregates' events: `status` and `heartbeat` items are not events of the log.
        params = {"topics": self.aggregate or ALL_TOPICS, "entity": self.aggregate_id}
        headers = {"Accept": "text/event-stream", "Last-Event-ID": str(self.after)}
        return core.read("/api/v1/stream", params, min_seq=None, headers=headers)

    def on_sse(self, sse: ServerSentEvent) -> Change | None:
        """The event a stream item carries, if it is a new one that the filters keep."""
        if sse.event == "resync":
            # The stream lost items: the log still has them.
            self.paging = True
            return None
        if sse.event != "event":
            return None
        try:
            change = Change.model_validate_json(sse.data)
        except ValidationError as e:
            raise errors.UnexpectedAnswer(f"a stream event is not a Change: {e}") from None
        if change.seq <= self.after:
            return None
        self.after = change.seq
        return change if self._keeps(change) else None

    def _keeps(self, change: Change) -> bool:
        """The filters the stream cannot apply itself."""
        if self.type is not None and change.type != self.type:
            return False
        if self.actor is not None and change.actor != self.actor:
            return False
        return self.correlation_id is None or str(change.correlation_id) == self.correlation_id
