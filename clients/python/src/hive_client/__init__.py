"""hive_client: the Python client of Hive's HTTP API.

- `Client` and `AsyncClient` (the same methods, sync and async) send commands with an
  `Idempotency-Key` and retry them safely, read your own writes (`Hive-Min-Seq`), raise typed errors
  (`hive_client.errors`), and follow the event log (`events()`).
- `hive_client.models` (every request and answer) and `hive_client.events` (every event type) are
  generated from the API's OpenAPI and AsyncAPI documents (`docs/contract/`).
- `hive_client.agent` runs a worker: a handler function per task.
"""

from . import errors, events, models
from ._async_client import AsyncClient
from ._core import AUTO, Answer, MinSeq
from ._sync_client import Client
from ._typed import typed_event
from .errors import (
    Conflict,
    ConnectionFailed,
    Forbidden,
    HiveError,
    InvalidInput,
    NotFound,
    ServerError,
    Unauthorized,
    Unavailable,
    UnexpectedAnswer,
)

__all__ = [
    "AUTO",
    "Answer",
    "AsyncClient",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "Forbidden",
    "HiveError",
    "InvalidInput",
    "MinSeq",
    "NotFound",
    "ServerError",
    "Unauthorized",
    "Unavailable",
    "UnexpectedAnswer",
    "errors",
    "events",
    "models",
    "typed_event",
]
