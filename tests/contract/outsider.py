"""An outside client of Hive, written only from its published documents — the OpenAPI document at
/api/v1/openapi.json and the AsyncAPI document at /api/v1/asyncapi.json — with Python's standard library
and `jsonschema`: no Rust, no Hive client. It checks every answer it gets against the documents as it
goes, and:

1. creates work: tasks, each in a flow of its own (`X-Correlation-Id`), one sent twice with the same
   `Idempotency-Key` (created once);
2. follows the live feed from sequence N (the log's head before the work), cuts its connection
   mid-flow while more work is created, reconnects with `Last-Event-ID`, and checks that it saw every
   task event of the log after N once, in order, with no `resync`;
3. audits one flow: the command it sent and everything it caused, in order, with each event's
   causation.

Environment: HIVE_URL (e.g. http://127.0.0.1:8080), HIVE_TOKEN (an operator's token). Exits 0 when
every check held; prints what it saw.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
import uuid
from typing import Any, Iterator

from jsonschema import Draft7Validator, Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

BASE = os.environ["HIVE_URL"].rstrip("/")
TOKEN = os.environ["HIVE_TOKEN"]
OPENAPI_URI = "urn:hive:openapi"


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: Any) -> None:
        self.status = status
        self.headers = headers
        self.body = body


def call(method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
         token: bool = True) -> Answer:
    request = urllib.request.Request(BASE + path, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {TOKEN}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, data, timeout=30) as response:
            raw = response.read()
            status, answer_headers = response.status, dict(response.headers.items())
    except urllib.error.HTTPError as error:
        raw = error.read()
        status, answer_headers = error.code, dict(error.headers.items())
    lower = {k.lower(): v for k, v in answer_headers.items()}
    return Answer(status, lower, json.loads(raw) if raw else None)


def expect(condition: bool, what: str) -> None:
    if not condition:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


# The documents, public.
openapi = call("GET", "/api/v1/openapi.json", token=False).body
asyncapi = call("GET", "/api/v1/asyncapi.json", token=False).body
registry: Registry = Registry().with_resource(  # type: ignore[call-arg]
    OPENAPI_URI, Resource.from_contents(openapi, default_specification=DRAFT202012)
)


def pointer(*parts: str) -> str:
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)


def operation(method: str, template: str) -> dict[str, Any]:
    op = openapi["paths"].get(template, {}).get(method.lower())
    expect(op is not None, f"{method} {template} is in the OpenAPI document")
    return op


def check_answer(method: str, template: str, answer: Answer) -> Any:
    """The answer's status, content and headers are documented for the operation, and its body
    validates against the documented schema."""
    responses = operation(method, template)["responses"]
    documented = responses.get(str(answer.status))
    expect(documented is not None,
           f"{method} {template} documents status {answer.status} ({answer.body})")
    content = documented.get("content", {}).get("application/json")
    expect(content is not None and "schema" in content,
           f"{method} {template} {answer.status} documents a JSON schema")
    ref = "#" + pointer("paths", template, method.lower(), "responses", str(answer.status),
                        "content", "application/json", "schema")
    validator = Draft202012Validator({"$ref": OPENAPI_URI + ref}, registry=registry)
    errors = [f"{e.message} at {list(e.absolute_path)}" for e in validator.iter_errors(answer.body)]
    expect(not errors, f"{method} {template} {answer.status} matches its schema: {errors}")
    for header in documented.get("headers", {}):
        if header.lower() == "hive-projection-seq" and method == "GET":
            expect(header.lower() in answer.headers, f"{method} {template} answers {header}")
    return answer.body


def parameter(method: str, template: str, name: str, where: str) -> None:
    params = operation(method, template).get("parameters", [])
    expect(any(p.get("name", "").lower() == name.lower() and p.get("in") == where for p in params),
           f"{method} {template} documents the {where} parameter {name}")


# What the AsyncAPI document says an event's data is, by type.
messages = asyncapi["components"]["schemas"]
task_channel = asyncapi["channels"]["task"]
expect(task_channel["address"].endswith(".task.{aggregate_id}"), "tasks have a channel of their own")
data_validators = {
    name: Draft7Validator(messages[name]["properties"]["data"])
    for name in task_channel["messages"]
}


def check_event(record: dict[str, Any]) -> None:
    kind = record["type"]
    expect(kind in data_validators, f"{kind} is a message of the task channel")
    expected_version = messages[kind]["properties"]["schema_version"]["const"]
    expect(record["schema_version"] <= expected_version, f"{kind} at a version the document knows")
    if record["schema_version"] == expected_version:
        errors = [e.message for e in data_validators[kind].iter_errors(record["data"])]
        expect(not errors, f"{kind}'s data matches the AsyncAPI document: {errors}")


# The headers this client relies on are documented where it uses them.
for name in ("Idempotency-Key", "X-Correlation-Id"):
    parameter("POST", "/api/v1/tasks", name, "header")
parameter("GET", "/api/v1/tasks/{id}", "Hive-Min-Seq", "header")
parameter("GET", "/api/v1/stream", "Last-Event-ID", "header")
parameter("GET", "/api/v1/stream", "after_seq", "query")


def create_task(title: str, flow: str, key: str | None = None) -> dict[str, Any]:
    headers = {"X-Correlation-Id": flow, "Idempotency-Key": key or str(uuid.uuid4())}
    answer = call("POST", "/api/v1/tasks", {"title": title, "task_type": "outsider"}, headers)
    expect(answer.status == 201, f"a task is created: {answer.status} {answer.body}")
    return check_answer("POST", "/api/v1/tasks", answer)


def log_page(query: str) -> dict[str, Any]:
    answer = call("GET", f"/api/v1/events?{query}")
    expect(answer.status == 200, f"the log answers: {answer.body}")
    return check_answer("GET", "/api/v1/events", answer)


def whole_log(path: str) -> list[dict[str, Any]]:
    """Every item of a filtered log, following each page's `next`."""
    items: list[dict[str, Any]] = []
    while True:
        answer = call("GET", path)
        page = check_answer("GET", "/api/v1/events", answer)
        items.extend(page["items"])
        if not page["more"]:
            return items
        path = page["next"]


def sse(after: int | None, last_event_id: str | None) -> Iterator[tuple[str, str, str]]:
    """(event, id, data) of GET /api/v1/stream, task events only."""
    query = "?topics=task" + (f"&after_seq={after}" if after is not None else "")
    request = urllib.request.Request(BASE + "/api/v1/stream" + query)
    request.add_header("Authorization", f"Bearer {TOKEN}")
    request.add_header("Accept", "text/event-stream")
    if last_event_id is not None:
        request.add_header("Last-Event-ID", last_event_id)
    response = urllib.request.urlopen(request, timeout=30)
    expect(response.status == 200, "the stream opens")
    expect(response.headers.get("Content-Type", "").startswith("text/event-stream"),
           "the stream is text/event-stream")
    event, event_id, data = "message", "", []
    try:
        for raw in response:
            line = raw.decode().rstrip("\r\n")
            if line == "":
                if data:
                    yield event, event_id, "\n".join(data)
                event, data = "message", []
            elif line.startswith(":"):
                continue
            else:
                field, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if field == "event":
                    event = value
                elif field == "id":
                    event_id = value
                elif field == "data":
                    data.append(value)
    finally:
        response.close()


# 1. Work, each task in its own flow; the first one sent twice under one key.
head = log_page("limit=1")["head"]
flows = [str(uuid.uuid4()) for _ in range(6)]
key = str(uuid.uuid4())
first = create_task("outsider 0", flows[0], key)
again = create_task("outsider 0", flows[0], key)
expect(again == first, f"a repeated command answers the first result: {first} {again}")
tasks = [first] + [create_task(f"outsider {n}", flows[n]) for n in (1, 2)]
read = call("GET", f"/api/v1/tasks/{first['task_id']}", headers={"Hive-Min-Seq": str(first["seq"])})
expect(read.status == 200, f"the task reads back: {read.body}")
check_answer("GET", "/api/v1/tasks/{id}", read)
expect(read.body["title"] == "outsider 0", "its title")

# 2. The feed from N = the head before the work; cut after a few events, more work meanwhile, resumed
# with Last-Event-ID; until every task completed.
seen: list[int] = []
completed: set[str] = set()
last_id: str | None = None
cut = False
while len(completed) < len(flows):
    for event, event_id, data in sse(head if last_id is None else None, last_id):
        expect(event != "resync", "no resync")
        if event != "event":
            continue
        record = json.loads(data)
        check_event(record)
        expect(str(record["seq"]) == event_id, "each event's SSE id is its sequence")
        seen.append(record["seq"])
        last_id = event_id
        if record["type"] == "TaskCompleted":
            completed.add(record["aggregate_id"])
        if not cut and len(seen) == 4:
            cut = True
            tasks += [create_task(f"outsider {n}", flows[n]) for n in (3, 4, 5)]
            break  # the connection is cut here, with more work on the way
        if len(completed) == len(flows):
            break
expect(cut, "the connection was cut mid-flow")
expect(len(seen) == len(set(seen)), f"no event twice: {seen}")
expect(seen == sorted(seen), f"in order: {seen}")
in_log = [e["seq"] for e in whole_log(f"/api/v1/events?aggregate=task&after_seq={head}&limit=7")
          if e["seq"] <= seen[-1]]
expect(seen == in_log, f"every task event of the log after {head}, no gap: {seen} vs {in_log}")
expect({t["task_id"] for t in tasks} == completed, "every task completed")

# 3. One flow, audited: the command and everything it caused, in order, with causation.
flow = whole_log(f"/api/v1/events?correlation_id={flows[0]}&limit=2")
types = [e["type"] for e in flow]
print(f"flow {flows[0]}:")
for e in flow:
    cause = e.get("causation_id")
    print(f"  {e['seq']:>6} {e['type']:<16} {e['actor']:<24} caused by {cause or '-'}")
    expect(e["correlation_id"] == flows[0], "every event of the flow carries its id")
expect(types[0] == "TaskCreated", f"the flow begins with the command's event: {types}")
order = ["TaskCreated", "TaskAssigned", "TaskAccepted", "TaskStarted", "TaskCompleted"]
expect([t for t in types if t in order] == order, f"it runs its course in order: {types}")
expect(types.count("TaskCreated") == 1, "the repeated command appended nothing")
seen_ids: set[str] = set()
for e in flow:
    if e is not flow[0]:
        expect(e.get("causation_id") in seen_ids,
               f"{e['type']} names the earlier event of the flow it answers")
    seen_ids.add(e["event_id"])
print(f"ok: {len(seen)} task events followed across a cut connection, {len(flow)} events in one flow")
