"""An event of the log as its own type (`hive_client.events`), from the record the API serves."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from . import events
from .models import Record

_EVENT: TypeAdapter[Any] = TypeAdapter(events.Event)
_ENVELOPE_FIELDS = set(events.Envelope.model_fields)


def typed_event(record: Record) -> BaseModel:
    """The event a record (or a `Change`, as `events()` yields) holds, as its type's model in
    `hive_client.events` (`TaskCreated`, `AgentReady`, ...), its `data` typed too. A type this client
    does not know, or an older `schema_version` of one, comes back as a plain `events.Envelope`.
    Tell them apart with `isinstance` (`isinstance(e, events.TaskCreated)`)."""
    fields = record.model_dump(mode="json", include=_ENVELOPE_FIELDS)
    try:
        event: BaseModel = _EVENT.validate_python(fields).root
        return event
    except ValidationError:
        return events.Envelope.model_validate(fields)
