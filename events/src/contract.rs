//! The log's published contract, generated from the Rust types so that it cannot drift from them: a JSON
//! Schema (draft 7) of the envelope and of every event type at its current version, and an AsyncAPI 3
//! document of the stream that carries them. The API serves the document at `GET /api/v1/asyncapi.json`;
//! a copy is committed in `docs/contract/asyncapi.json` and a test fails when the two differ.
//!
//! Each event type's schema is the whole envelope with `type`, `schema_version` and `aggregate` fixed and
//! `data` described, inline (no `$ref`), so a reader can validate a message with any JSON Schema library
//! from that one object.

use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::transform::RecursiveTransform;
use schemars::{JsonSchema, Schema};
use serde_json::{Map, Value, json};

use crate::agent::AgentEvent;
use crate::aggregate::{AggregateKind, EventSchema};
use crate::envelope::Stored;
use crate::project::ProjectEvent;
use crate::subject::Subjects;
use crate::task::TaskEvent;

/// One event type of the contract.
#[derive(Clone, Debug, PartialEq)]
pub struct EventType {
    /// The aggregate it belongs to.
    pub aggregate: AggregateKind,
    /// Its stored name, such as `TaskCreated`.
    pub name: String,
    /// The `schema_version` this build writes.
    pub version: u16,
    /// What it means (the Rust variant's documentation).
    pub description: String,
    /// The JSON Schema of its `data` at `version`.
    pub data: Value,
}

/// A UUID's text form. Draft 7 has no `uuid` format, so validators of that draft ignore it: the
/// pattern says the same to every one of them.
const UUID_PATTERN: &str =
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

fn generator() -> SchemaGenerator {
    SchemaSettings::draft07()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .with_transform(RecursiveTransform(|schema: &mut Schema| {
            if schema.get("format").and_then(Value::as_str) == Some("uuid") {
                schema.insert("pattern".into(), UUID_PATTERN.into());
            }
        }))
        .for_serialize()
        .into_generator()
}

fn schema_of<T: JsonSchema>() -> Value {
    generator().into_root_schema_for::<T>().to_value()
}

/// The event types of one aggregate, from its adjacently tagged enum's schema (one `oneOf` branch per
/// variant: `{"type": {"const": name}, "data": {..}}`).
fn types_of<E: EventSchema + JsonSchema>(aggregate: AggregateKind) -> Vec<EventType> {
    let schema = schema_of::<E>();
    let branches = schema["oneOf"].as_array().cloned().unwrap_or_default();
    branches
        .into_iter()
        .map(|branch| {
            let name = branch["properties"]["type"]["const"]
                .as_str()
                .expect("an adjacently tagged variant's schema names its type")
                .to_owned();
            EventType {
                aggregate,
                version: E::current_version(&name),
                description: branch["description"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                data: branch["properties"]["data"].clone(),
                name,
            }
        })
        .collect()
}

/// Every event type, by aggregate, in declaration order.
pub fn event_types() -> Vec<EventType> {
    let mut types = types_of::<AgentEvent>(AggregateKind::Agent);
    types.extend(types_of::<TaskEvent>(AggregateKind::Task));
    types.extend(types_of::<ProjectEvent>(AggregateKind::Project));
    types
}

/// The schema every stored event satisfies, whatever its type.
pub fn envelope_schema() -> Value {
    let mut schema = schema_of::<Stored>();
    if let Some(object) = schema.as_object_mut() {
        object.remove("$schema");
    }
    schema
}

/// The schema of one event type's stored form at its current version.
pub fn event_schema(event: &EventType) -> Value {
    let mut schema = envelope_schema();
    schema["title"] = json!(event.name);
    schema["description"] = json!(event.description);
    let properties = &mut schema["properties"];
    properties["type"] = json!({"const": event.name});
    properties["schema_version"] = json!({
        "const": event.version,
        "description": "This build writes this version; older ones may be in the log (see the message's description)."
    });
    properties["aggregate"] = json!({"const": event.aggregate.as_str()});
    properties["data"] = event.data.clone();
    schema
}

/// The headers a message may carry.
fn headers_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "Nats-Msg-Id": {
                "type": "string",
                "description": "Present when the command carried an `Idempotency-Key`: `idem-` and the SHA-256 (hex) of the caller, the resource and the key. JetStream drops a repeat within the stream's duplicate window, so a retried command is appended once."
            },
            "Nats-Expected-Last-Subject-Sequence": {
                "type": "string",
                "pattern": "^[0-9]+$",
                "description": "Set by the writer on publish: the last sequence of this subject it decided on. JetStream refuses the append when another event came first (optimistic concurrency per aggregate); the writer reloads and decides again."
            }
        }
    })
}

fn message(event: &EventType) -> Value {
    let older = if event.version > 1 {
        format!(
            " Versions 1 to {} of it may be in the log: read `schema_version` and upcast them as docs/api.md says.",
            event.version - 1
        )
    } else {
        String::new()
    };
    json!({
        "name": event.name,
        "title": event.name,
        "summary": event.description,
        "description": format!("A `{}` event, schema_version {}.{older}", event.name, event.version),
        "contentType": "application/json",
        "headers": {"$ref": "#/components/schemas/Headers"},
        "payload": {"$ref": format!("#/components/schemas/{}", event.name)},
        "correlationId": {"$ref": "#/components/correlationIds/flow"}
    })
}

/// The AsyncAPI 3.1 document of the event stream `stream`, whose subjects are `subjects`.
pub fn asyncapi(stream: &str, subjects: &Subjects) -> Value {
    let types = event_types();
    let mut channels = Map::new();
    let mut operations = Map::new();
    let mut messages = Map::new();
    let mut schemas = Map::new();
    schemas.insert("Envelope".into(), envelope_schema());
    schemas.insert("Headers".into(), headers_schema());
    for kind in AggregateKind::ALL {
        let of_kind: Vec<&EventType> = types.iter().filter(|t| t.aggregate == kind).collect();
        let name = kind.as_str();
        let mut channel_messages = Map::new();
        for event in &of_kind {
            channel_messages.insert(
                event.name.clone(),
                json!({"$ref": format!("#/components/messages/{}", event.name)}),
            );
            messages.insert(event.name.clone(), message(event));
            schemas.insert(event.name.clone(), event_schema(event));
        }
        channels.insert(
            name.into(),
            json!({
                "address": format!("{}.{name}.{{aggregate_id}}", subjects.prefix()),
                "title": format!("The events of one {name}"),
                "description": format!(
                    "Every event of one {name}, in the order they happened. Each subject holds one aggregate's whole history; the stream's sequence orders all subjects."
                ),
                "parameters": {
                    "aggregate_id": {"description": format!("The {name}'s id (a UUID).")}
                },
                "messages": channel_messages
            }),
        );
        let refs: Vec<Value> = of_kind
            .iter()
            .map(|e| json!({"$ref": format!("#/channels/{name}/messages/{}", e.name)}))
            .collect();
        operations.insert(
            format!("append_{name}_event"),
            json!({
                "action": "send",
                "channel": {"$ref": format!("#/channels/{name}")},
                "title": format!("Hive appends a {name}'s event"),
                "summary": "Only Hive's services write to the log: clients send commands to the HTTP API.",
                "messages": refs
            }),
        );
    }
    json!({
        "asyncapi": "3.1.0",
        "info": {
            "title": "Hive event log",
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!(
                "Every change of an agent, a task or a project is an event in the JetStream stream `{stream}` (subjects `{all}`): Hive's only source of truth. Read it with your own durable consumer (the integrator's NATS user), over HTTP with `GET /api/v1/events` (paged) and `GET /api/v1/stream` (live, resumable), or per entity with `GET /api/v1/{{tasks,agents,projects}}/{{id}}/history`. The stream sequence orders every event and is never stored in the event. An event type's `data` changes compatibly (a new optional field) at the same `schema_version`; any other change raises it, and readers upcast older versions.",
                all = subjects.all()
            )
        },
        "defaultContentType": "application/json",
        "servers": {
            "nats": {
                "host": "localhost:4222",
                "protocol": "nats",
                "description": format!("The deployment's NATS server or cluster; the events are in JetStream stream `{stream}`.")
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "schemas": schemas,
            "correlationIds": {
                "flow": {
                    "description": "The flow an event belongs to: a client's command and everything it caused share it (`hive audit correlation <id>`).",
                    "location": "$message.payload#/correlation_id"
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_is_in_the_contract_once() {
        let types = event_types();
        let mut names: Vec<&str> = types.iter().map(|t| t.name.as_str()).collect();
        assert!(names.contains(&"TaskCreated") && names.contains(&"AgentRegistered"));
        let count = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), count, "a type named twice");
        let created = types.iter().find(|t| t.name == "TaskCreated").unwrap();
        assert_eq!(created.version, 3);
        assert_eq!(created.data["properties"]["priority"]["maximum"], 10);
    }
}
