//! The stored form of an event: a JSON envelope
//! `{event_id, type, schema_version, aggregate, aggregate_id, occurred_at, correlation_id, causation_id,
//! actor, data}`. The stream sequence is the event's global position and is never stored inside it.
//!
//! [`encode`] writes the current version; [`decode`] reads any version this build knows, upcasting old
//! `data` first, and checks the envelope against the subject it came from.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::agent::AgentEvent;
use crate::aggregate::{AggregateKind, EventSchema};
use crate::error::DecodeError;
use crate::ids::EventId;
use crate::project::ProjectEvent;
use crate::task::TaskEvent;

/// Who caused an event: `operator`, `agent:<id>`, `system:scheduler`, a service's name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct Actor(#[schemars(length(min = 1, max = 128))] String);

impl Actor {
    /// An actor by name; blank names become `anonymous`, long ones are cut to 128 characters.
    pub fn new(name: impl Into<String>) -> Self {
        let name: String = name.into().trim().chars().take(128).collect();
        if name.is_empty() {
            Self("anonymous".into())
        } else {
            Self(name)
        }
    }

    /// The actor's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What every event carries besides its data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventMeta {
    /// The event's own id (UUID v7).
    pub event_id: EventId,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// The request or flow it belongs to; shared by everything one request caused.
    pub correlation_id: Uuid,
    /// The event or command that caused it directly, if any.
    pub causation_id: Option<Uuid>,
    /// Who caused it.
    pub actor: Actor,
}

impl EventMeta {
    /// Metadata for an event that happens now, with a fresh id.
    pub fn new(
        occurred_at: DateTime<Utc>,
        correlation_id: Uuid,
        causation_id: Option<Uuid>,
        actor: Actor,
    ) -> Self {
        Self {
            event_id: EventId::new(),
            occurred_at,
            correlation_id,
            causation_id,
            actor,
        }
    }
}

/// An event of any aggregate.
#[derive(Clone, Debug, PartialEq)]
pub enum DomainEvent {
    /// An agent's event.
    Agent(AgentEvent),
    /// A task's event.
    Task(TaskEvent),
    /// A project's event.
    Project(ProjectEvent),
}

impl DomainEvent {
    /// The stored type name.
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::Agent(e) => e.event_type(),
            Self::Task(e) => e.event_type(),
            Self::Project(e) => e.event_type(),
        }
    }

    /// The name of the status its agent or task is in after it, where the event alone says so (a
    /// reader of the feed learns a task's new status from here, without folding).
    pub fn status_after(&self) -> Option<&'static str> {
        match self {
            Self::Agent(e) => e.status_after().map(crate::agent::AgentStatus::as_str),
            Self::Task(e) => Some(e.status_after().as_str()),
            Self::Project(_) => None,
        }
    }
}

/// A decoded event: metadata, which aggregate instance it belongs to, and the event itself.
#[derive(Clone, Debug, PartialEq)]
pub struct Envelope<E = DomainEvent> {
    /// Id, time, correlation, causation, actor.
    pub meta: EventMeta,
    /// The aggregate's kind.
    pub aggregate: AggregateKind,
    /// The aggregate's id.
    pub aggregate_id: Uuid,
    /// The event.
    pub event: E,
}

impl Envelope<DomainEvent> {
    /// The task and the agent this event names as the task's holder, if it names one
    /// ([`TaskEvent::agent_named`]: an assignment). Both readers that ask which agents held which
    /// tasks — `hive audit agent` over the log, and the projector's index of them — ask here.
    pub fn holding(&self) -> Option<(Uuid, crate::AgentId)> {
        match &self.event {
            DomainEvent::Task(event) => Some((self.aggregate_id, event.agent_named()?)),
            DomainEvent::Agent(_) | DomainEvent::Project(_) => None,
        }
    }
}

/// An event as stored in the log: the body of every message on `<prefix>.<aggregate>.<aggregate_id>`.
#[derive(Serialize, Deserialize, schemars::JsonSchema)]
#[schemars(title = "Envelope")]
pub(crate) struct Stored {
    /// The event's own id (a UUID v7, so ids sort by creation time).
    event_id: EventId,
    /// The event's type, such as `TaskCreated`: says what `data` holds.
    #[serde(rename = "type")]
    event_type: String,
    /// The version of the type's `data` it was written at; a reader upcasts older versions.
    #[schemars(range(min = 1))]
    schema_version: u16,
    /// The kind of aggregate it belongs to (the subject's second-to-last token).
    aggregate: AggregateKind,
    /// The aggregate's id (the subject's last token).
    aggregate_id: Uuid,
    /// When it happened (RFC 3339, UTC, to the microsecond).
    occurred_at: DateTime<Utc>,
    /// The flow it belongs to: shared by a client's command and everything that command caused.
    correlation_id: Uuid,
    /// The event or request that caused it directly, if known.
    causation_id: Option<Uuid>,
    /// Who caused it: `operator`, `agent:<id>`, `system:scheduler`, a token's name.
    actor: Actor,
    /// The event's own fields, by `type` and `schema_version`.
    data: serde_json::Value,
}

/// The stored bytes of `event`, at its schema's current version.
pub fn encode<E: EventSchema>(
    meta: &EventMeta,
    aggregate: AggregateKind,
    aggregate_id: Uuid,
    event: &E,
) -> Vec<u8> {
    let event_type = event.event_type();
    let data = match serde_json::to_value(event) {
        Ok(serde_json::Value::Object(mut tagged)) => tagged
            .remove("data")
            .unwrap_or_else(|| serde_json::Value::Object(Default::default())),
        // Every event enum is adjacently tagged with struct variants, so this cannot happen; an empty
        // object keeps the envelope well-formed all the same.
        _ => serde_json::Value::Object(Default::default()),
    };
    let stored = Stored {
        event_id: meta.event_id,
        event_type: event_type.to_owned(),
        schema_version: E::current_version(event_type),
        aggregate,
        aggregate_id,
        occurred_at: meta.occurred_at,
        correlation_id: meta.correlation_id,
        causation_id: meta.causation_id,
        actor: meta.actor.clone(),
        data,
    };
    serde_json::to_vec(&stored).expect("an envelope always serializes")
}

fn typed<E: EventSchema>(
    aggregate: AggregateKind,
    event_type: String,
    version: u16,
    data: serde_json::Value,
) -> Result<E, DecodeError> {
    let data = E::upcast(&event_type, version, data)?;
    let mut tagged = serde_json::Map::with_capacity(2);
    tagged.insert("type".into(), serde_json::Value::String(event_type));
    tagged.insert("data".into(), data);
    serde_json::from_value(serde_json::Value::Object(tagged)).map_err(|source| {
        let event_type = source_type(&source);
        if source.to_string().starts_with("unknown variant") {
            DecodeError::UnknownType {
                aggregate: aggregate.as_str(),
                event_type,
            }
        } else {
            DecodeError::BadData { event_type, source }
        }
    })
}

fn source_type(err: &serde_json::Error) -> String {
    // serde names the offending variant in its message: `unknown variant `X`, expected ...`.
    let msg = err.to_string();
    msg.split('`').nth(1).unwrap_or_default().to_owned()
}

struct Parsed {
    meta: EventMeta,
    aggregate: AggregateKind,
    aggregate_id: Uuid,
    event_type: String,
    version: u16,
    data: serde_json::Value,
}

fn parse(bytes: &[u8], expected: Option<(AggregateKind, Uuid)>) -> Result<Parsed, DecodeError> {
    let stored: Stored = serde_json::from_slice(bytes).map_err(DecodeError::Malformed)?;
    if let Some((kind, id)) = expected
        && (kind != stored.aggregate || id != stored.aggregate_id)
    {
        return Err(DecodeError::WrongSubject {
            envelope: format!("{}.{}", stored.aggregate, stored.aggregate_id),
            subject: format!("{kind}.{id}"),
        });
    }
    Ok(Parsed {
        meta: EventMeta {
            event_id: stored.event_id,
            occurred_at: stored.occurred_at,
            correlation_id: stored.correlation_id,
            causation_id: stored.causation_id,
            actor: stored.actor,
        },
        aggregate: stored.aggregate,
        aggregate_id: stored.aggregate_id,
        event_type: stored.event_type,
        version: stored.schema_version,
        data: stored.data,
    })
}

/// Decodes stored bytes into an event of any aggregate, upcasting old versions. When `expected` is given
/// (the kind and id parsed from the subject), the envelope must agree with it.
pub fn decode(
    bytes: &[u8],
    expected: Option<(AggregateKind, Uuid)>,
) -> Result<Envelope<DomainEvent>, DecodeError> {
    let p = parse(bytes, expected)?;
    let (kind, t, v, d) = (p.aggregate, p.event_type, p.version, p.data);
    let event = match kind {
        AggregateKind::Agent => DomainEvent::Agent(typed(kind, t, v, d)?),
        AggregateKind::Task => DomainEvent::Task(typed(kind, t, v, d)?),
        AggregateKind::Project => DomainEvent::Project(typed(kind, t, v, d)?),
    };
    Ok(Envelope {
        meta: p.meta,
        aggregate: kind,
        aggregate_id: p.aggregate_id,
        event,
    })
}

/// Decodes stored bytes into an event of one aggregate's schema `E`; the envelope must name `kind`/`id`.
pub fn decode_as<E: EventSchema>(
    bytes: &[u8],
    kind: AggregateKind,
    id: Uuid,
) -> Result<Envelope<E>, DecodeError> {
    let p = parse(bytes, Some((kind, id)))?;
    let event = typed(kind, p.event_type, p.version, p.data)?;
    Ok(Envelope {
        meta: p.meta,
        aggregate: kind,
        aggregate_id: id,
        event,
    })
}
