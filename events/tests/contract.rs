//! The published contract is generated from the Rust types and checked against what is stored: the
//! committed AsyncAPI document (`docs/contract/asyncapi.json`) equals the generated one — a change of an
//! event type without its document fails here; run with `HIVE_BLESS=1` to rewrite it — and every golden
//! fixture validates against its event type's schema.

use std::path::PathBuf;

use hive_events::agent::AgentEvent;
use hive_events::aggregate::{AggregateKind, EventSchema};
use hive_events::contract::{self, EventType};
use hive_events::project::ProjectEvent;
use hive_events::subject::Subjects;
use hive_events::task::TaskEvent;
use serde_json::Value;

fn committed() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/contract/asyncapi.json")
}

fn fixtures() -> impl Iterator<Item = Value> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
}

fn validator(event: &EventType) -> jsonschema::Validator {
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft7)
        .should_validate_formats(true)
        .build(&contract::event_schema(event))
        .unwrap_or_else(|e| panic!("{}'s schema is not a schema: {e}", event.name))
}

fn errors(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect()
}

/// `data` stored at `version`, upcast as a reader of the log does.
fn upcast(kind: AggregateKind, name: &str, version: u16, data: Value) -> Value {
    match kind {
        AggregateKind::Agent => AgentEvent::upcast(name, version, data),
        AggregateKind::Task => TaskEvent::upcast(name, version, data),
        AggregateKind::Project => ProjectEvent::upcast(name, version, data),
    }
    .unwrap()
}

#[test]
fn the_committed_asyncapi_document_is_the_generated_one() {
    let generated = contract::asyncapi("HIVE_EVENTS", &Subjects::default());
    let path = committed();
    if std::env::var_os("HIVE_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut text = serde_json::to_string_pretty(&generated).unwrap();
        text.push('\n');
        std::fs::write(&path, text).unwrap();
    }
    let on_disk: Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| {
            panic!("{}: {e}; run with HIVE_BLESS=1 to write it", path.display())
        }))
        .unwrap();
    assert!(
        on_disk == generated,
        "{} is not what the event types generate: an event type changed without its published \
         contract. Run `HIVE_BLESS=1 cargo test -p hive-events --test contract`, and check that the \
         change is compatible (docs/api.md, \"Versioning\").",
        path.display()
    );
}

#[test]
fn every_golden_fixture_validates_against_its_event_types_schema() {
    let types = contract::event_types();
    let mut checked = 0;
    for mut stored in fixtures() {
        let name = stored["type"].as_str().unwrap().to_owned();
        let event = types
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("{name} has a fixture and no schema"));
        let validator = validator(event);
        let version = u16::try_from(stored["schema_version"].as_u64().unwrap()).unwrap();
        if version < event.version {
            // An older version is not the current one: a reader tells them apart by
            // `schema_version`, and validates it once upcast.
            assert!(!validator.is_valid(&stored), "{name} v{version}");
            stored["data"] = upcast(event.aggregate, &name, version, stored["data"].take());
            stored["schema_version"] = event.version.into();
        }
        let found = errors(&validator, &stored);
        assert!(found.is_empty(), "{name} v{version}: {found:?}");
        checked += 1;
    }
    assert!(
        checked >= types.len(),
        "{checked} fixtures for {} types",
        types.len()
    );
}

#[test]
fn the_schemas_refuse_what_the_domain_refuses() {
    let types = contract::event_types();
    let created = types.iter().find(|t| t.name == "TaskCreated").unwrap();
    let validator = validator(created);
    let good: Value = fixtures()
        .find(|f| f["type"] == "TaskCreated" && f["schema_version"] == 3)
        .unwrap();
    assert!(errors(&validator, &good).is_empty());
    let broken = |edit: &dyn Fn(&mut Value)| {
        let mut event = good.clone();
        edit(&mut event);
        !errors(&validator, &event).is_empty()
    };
    assert!(broken(&|e| e["data"]["priority"] = 11.into()));
    assert!(broken(
        &|e| e["data"]["required_capabilities"] = serde_json::json!(["Not Valid"])
    ));
    assert!(broken(&|e| e["aggregate"] = "agent".into()));
    assert!(broken(&|e| e["occurred_at"] = "yesterday".into()));
    assert!(broken(&|e| e["event_id"] = "not-a-uuid".into()));
    assert!(broken(&|e| {
        e["data"].as_object_mut().unwrap().remove("title");
    }));
    assert!(broken(&|e| {
        e.as_object_mut().unwrap().remove("correlation_id");
    }));
    // A field added later (a compatible change) does not break an old reader's validation.
    assert!(!broken(
        &|e| e["data"]["owner"] = serde_json::json!({"team": "a"})
    ));
}
