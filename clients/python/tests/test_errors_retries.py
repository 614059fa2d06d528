"""Typed errors, and retries that never double a command."""

from __future__ import annotations

import threading
import uuid

import httpx
import pytest

from hive_client import (
    Client,
    Conflict,
    ConnectionFailed,
    Forbidden,
    InvalidInput,
    NotFound,
    Unauthorized,
    Unavailable,
)
from hive_client.testing import free_port

from .conftest import Hive


def test_refusals_raise_typed_errors(hive: Hive, admin: Client, viewer_token: str) -> None:
    with pytest.raises(NotFound) as missing:
        admin.get_task(uuid.uuid4())
    assert (missing.value.status, missing.value.code) == (404, "not_found")
    with pytest.raises(InvalidInput) as invalid:
        admin.request("POST", "/api/v1/tasks", json={"title": "x", "priority": 99})
    assert (invalid.value.status, invalid.value.code) == (422, "validation_failed")
    with hive.client("hive_" + "0" * 64) as stranger, pytest.raises(Unauthorized) as refused:
        stranger.status()
    assert (refused.value.status, refused.value.code) == (401, "unauthenticated")
    with hive.client(viewer_token) as viewer:
        assert viewer.status().tasks.total >= 0  # a viewer reads
        with pytest.raises(Forbidden) as forbidden:
            viewer.create_task("not allowed")
    assert (forbidden.value.status, forbidden.value.code) == (403, "forbidden")
    agent = admin.register_agent(["py-conflict"])
    admin.deregister_agent(agent.agent_id)
    with pytest.raises(Conflict) as conflict:
        admin.drain_agent(agent.agent_id)
    assert conflict.value.status == 409


def test_a_hive_out_of_reach_is_a_connection_error() -> None:
    client = Client(f"http://127.0.0.1:{free_port()}", "t", max_attempts=2, backoff=0.01)
    with client, pytest.raises(ConnectionFailed) as lost:
        client.create_task("nowhere")
    assert lost.value.status is None and lost.value.code == "connection"


def test_a_repeated_key_appends_once_and_says_replayed(admin: Client) -> None:
    key = str(uuid.uuid4())
    first = admin.request(
        "POST",
        "/api/v1/tasks",
        json={"title": "once", "required_capabilities": ["py-nobody"]},
        idempotency_key=key,
    )
    again = admin.request(
        "POST",
        "/api/v1/tasks",
        json={"title": "once", "required_capabilities": ["py-nobody"]},
        idempotency_key=key,
    )
    assert first.body == again.body
    assert (first.replayed, again.replayed) == (False, True)
    history = admin.history("task", first.body["task_id"])
    assert [e.type for e in history.events] == ["TaskCreated"]


class Flaky(httpx.BaseTransport):
    """Forwards to the hive, but loses the first answer of each command (after the hive acted on
    it) or answers it with 503 instead: a retry must not double the command."""

    def __init__(self, fault: str) -> None:
        self.inner = httpx.HTTPTransport()
        self.fault = fault
        self.keys: list[str] = []
        self.lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return self.inner.handle_request(request)
        with self.lock:
            self.keys.append(request.headers["idempotency-key"])
            first = len(self.keys) == 1
        if first and self.fault == "busy":
            return httpx.Response(
                503,
                headers={"Retry-After": "0.2"},
                json={"error": {"code": "overloaded", "message": "busy"}},
            )
        response = self.inner.handle_request(request)
        if first and self.fault == "lost":
            response.read()
            raise httpx.ReadError("connection reset after the command landed", request=request)
        return response


@pytest.mark.parametrize("fault", ["lost", "busy"])
def test_a_retried_command_is_never_doubled(hive: Hive, fault: str) -> None:
    transport = Flaky(fault)
    with Client(hive.url, hive.admin_token, transport=transport, backoff=0.01) as client:
        task = client.create_task(f"retried after {fault}", required_capabilities=["py-nobody"])
        assert len(transport.keys) == 2 and transport.keys[0] == transport.keys[1]
        assert [e.type for e in client.history("task", task.task_id).events] == ["TaskCreated"]
        assert client.get_task(task.task_id).title == f"retried after {fault}"


def test_retries_are_bounded(hive: Hive) -> None:
    class Busy(httpx.BaseTransport):
        calls = 0

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            Busy.calls += 1
            return httpx.Response(
                503,
                headers={"Retry-After": "0"},
                json={"error": {"code": "unavailable", "message": "down"}},
            )

    client = Client(hive.url, "t", transport=Busy(), max_attempts=3)
    with client, pytest.raises(Unavailable) as busy:
        client.create_task("never")
    assert Busy.calls == 3 and busy.value.code == "unavailable"
