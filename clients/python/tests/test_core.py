"""The sans-IO core alone: no hive needed."""

from __future__ import annotations

import json
import uuid

import pytest

from hive_client import AUTO, errors, events, typed_event
from hive_client._core import Answer, Core, EventsCursor, ServerSentEvent, SSEDecoder
from hive_client.models import Change


def change(seq: int, kind: str = "TaskCreated") -> dict[str, object]:
    return {"seq": seq, "type": kind, "aggregate": "task", "actor": "t", "state": "queued"}


def test_commands_carry_a_key_and_reads_wait_for_the_last_write() -> None:
    core = Core(token="hive_x")
    command = core.command("POST", "/api/v1/tasks", {"title": "a"})
    assert command.headers["Idempotency-Key"]
    assert command.headers["Authorization"] == "Bearer hive_x"
    assert core.command("POST", "/x", idempotency_key="k").headers["Idempotency-Key"] == "k"
    assert "Hive-Min-Seq" not in core.read("/api/v1/tasks").headers
    core.answer(command, 201, {}, json.dumps({"task_id": "t", "seq": 41}).encode())
    assert core.read("/api/v1/tasks").headers["Hive-Min-Seq"] == "41"
    assert core.read("/x", min_seq=None).headers.get("Hive-Min-Seq") is None
    assert core.read("/x", min_seq="head").headers["Hive-Min-Seq"] == "head"
    assert core.read("/x", min_seq=7).headers["Hive-Min-Seq"] == "7"
    assert core.read("/x", min_seq=AUTO).headers["Hive-Min-Seq"] == "41"
    with pytest.raises(ValueError, match="min_seq"):
        core.read("/x", min_seq="soon")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="min_seq"):
        core.read("/x", min_seq=-1)


def test_errors_are_typed_by_status_with_the_apis_code() -> None:
    core = Core(token=None)
    request = core.read("/x")
    body = json.dumps({"error": {"code": "not_found", "message": "task t not found"}}).encode()
    with pytest.raises(errors.NotFound) as raised:
        core.answer(request, 404, {}, body)
    assert (raised.value.status, raised.value.code, raised.value.message) == (
        404,
        "not_found",
        "task t not found",
    )
    for status, kind in [
        (400, errors.InvalidInput),
        (401, errors.Unauthorized),
        (403, errors.Forbidden),
        (409, errors.Conflict),
        (422, errors.InvalidInput),
        (429, errors.Unavailable),
        (503, errors.Unavailable),
        (500, errors.ServerError),
        (418, errors.HiveError),
    ]:
        with pytest.raises(kind):
            core.answer(request, status, {}, b"")
    with pytest.raises(errors.Unavailable) as busy:
        core.answer(request, 503, {"Retry-After": "2"}, b"{}")
    assert busy.value.retry_after == 2.0


def test_only_busy_or_lost_is_retried_and_within_bounds() -> None:
    core = Core(token=None, max_attempts=3, backoff=0.1, max_backoff=0.4)
    busy = errors.Unavailable("busy", status=503, code="overloaded", retry_after=1.5)
    assert core.retry_delay(1, busy) == 1.5
    lost = errors.ConnectionFailed("reset")
    assert 0.05 <= (core.retry_delay(1, lost) or 0) <= 0.1
    assert core.retry_delay(3, lost) is None
    assert core.retry_delay(1, errors.Conflict("no", status=409)) is None
    assert all(core.backoff_delay(n) <= 0.4 for n in range(1, 40))
    with pytest.raises(ValueError):
        Core(token=None, max_attempts=0)


def test_sse_decoder_follows_the_standard() -> None:
    decoder = SSEDecoder()
    lines = [": comment", "event: event", "id: 5", 'data: {"a":', "data: 1}", "", "", "data: x", ""]
    events = [e for e in map(decoder.feed, lines) if e is not None]
    assert events == [
        ServerSentEvent("event", '{"a":\n1}', "5"),
        ServerSentEvent("message", "x", None),
    ]


def test_the_cursor_pages_then_streams_without_repeats() -> None:
    core = Core(token=None)
    cursor = EventsCursor(10, aggregate="task", page_size=2)
    assert cursor.page_request(core).params == {
        "after_seq": "10",
        "limit": "2",
        "aggregate": "task",
    }
    page = {"items": [change(11), change(12)], "last_seq": 12, "more": True, "head": 20}
    assert [c.seq for c in cursor.on_page(Answer(200, {}, page))] == [11, 12]
    page = {"items": [change(14)], "last_seq": 20, "more": False, "head": 20}
    assert [c.seq for c in cursor.on_page(Answer(200, {}, page))] == [14]
    assert not cursor.paging
    stream = cursor.stream_request(core)
    assert stream.headers["Last-Event-ID"] == "20"
    assert stream.params == {"topics": "task"}

    def sse(seq: int) -> ServerSentEvent:
        return ServerSentEvent("event", json.dumps(change(seq)), str(seq))

    assert cursor.on_sse(sse(19)) is None  # already had it
    assert cursor.on_sse(ServerSentEvent("status", "{}", None)) is None
    got = cursor.on_sse(sse(21))
    assert got is not None and got.seq == 21
    assert cursor.on_sse(sse(21)) is None
    cursor.on_sse(ServerSentEvent("resync", "{}", None))
    assert cursor.paging and cursor.page_request(core).params["after_seq"] == "21"


def test_the_cursor_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="aggregate"):
        EventsCursor(0, aggregate="tasks")
    with pytest.raises(ValueError, match="after_seq"):
        EventsCursor(-1)
    with pytest.raises(ValueError, match="page_size"):
        EventsCursor(0, page_size=0)
    cursor = EventsCursor(0, type="TaskCompleted")
    cursor.paging = False
    ignored = ServerSentEvent("event", json.dumps(change(1)), "1")
    assert cursor.on_sse(ignored) is None and cursor.after == 1


def test_an_event_type_this_client_does_not_know_reads_as_an_envelope() -> None:
    fields = {
        "seq": 3,
        "type": "TaskTeleported",
        "schema_version": 1,
        "aggregate": "task",
        "aggregate_id": str(uuid.uuid4()),
        "event_id": str(uuid.uuid4()),
        "correlation_id": str(uuid.uuid4()),
        "causation_id": None,
        "actor": "operator",
        "occurred_at": "2026-12-03T12:00:00Z",
        "data": {"to": "mars"},
    }
    known = typed_event(Change.model_validate({**fields, "type": "TaskQueued", "data": {}}))
    assert isinstance(known, events.TaskQueued)
    unknown = typed_event(Change.model_validate(fields))
    assert type(unknown) is events.Envelope and unknown.data == {"to": "mars"}
