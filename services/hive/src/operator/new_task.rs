//! A new task's fields as `hive task create` takes them: the flags for the fields of the API's task
//! (`POST /api/v1/tasks`), and `--field` for any other it takes (one added after this build, say).

use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::key_value;

/// A new task's fields.
#[derive(clap::Args)]
pub struct NewTask {
    /// Its title.
    #[arg(long)]
    title: String,
    /// What to do.
    #[arg(long)]
    description: Option<String>,
    /// A free-form type.
    #[arg(long = "type")]
    task_type: Option<String>,
    /// 1 to 10, or low, normal, medium, high, critical.
    #[arg(long)]
    priority: Option<String>,
    /// Capabilities an agent needs to take it (comma-separated, or repeat the flag).
    #[arg(long = "capabilities", value_delimiter = ',')]
    capabilities: Vec<String>,
    /// A task that must complete first (repeatable).
    #[arg(long)]
    depends_on: Vec<Uuid>,
    /// Its project.
    #[arg(long)]
    project: Option<Uuid>,
    /// The only agent that may take it.
    #[arg(long)]
    pin: Option<Uuid>,
    /// Attempts before it is dead-lettered (1 to 100).
    #[arg(long)]
    max_attempts: Option<u32>,
    /// Another field of the API's task, as KEY=VALUE; VALUE is JSON if it parses as JSON, else text
    /// (repeatable).
    #[arg(long = "field", value_name = "KEY=VALUE", value_parser = key_value)]
    fields: Vec<(String, String)>,
}

impl NewTask {
    /// The body of `POST /api/v1/tasks`.
    pub(super) fn body(self) -> Value {
        let mut body = Map::new();
        let mut set = |key: &str, value: Value| {
            if !value.is_null() {
                body.insert(key.to_owned(), value);
            }
        };
        set("title", json!(self.title));
        set("description", json!(self.description));
        set("task_type", json!(self.task_type));
        set(
            "priority",
            self.priority.as_deref().map_or(Value::Null, loose),
        );
        if !self.capabilities.is_empty() {
            set("required_capabilities", json!(self.capabilities));
        }
        if !self.depends_on.is_empty() {
            set("depends_on", json!(self.depends_on));
        }
        set("project_id", json!(self.project));
        set("pinned_agent", json!(self.pin));
        set("max_attempts", json!(self.max_attempts));
        for (key, value) in &self.fields {
            set(key, loose(value));
        }
        Value::Object(body)
    }
}

/// `text` as JSON if it is JSON (a number, `true`, an object …), else as a string.
fn loose(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_tasks_body_names_only_what_was_given_and_takes_json_fields() {
        let task = NewTask {
            title: "t".into(),
            description: None,
            task_type: None,
            priority: Some("high".into()),
            capabilities: vec!["gpu".into()],
            depends_on: Vec::new(),
            project: None,
            pin: None,
            max_attempts: Some(2),
            fields: vec![
                ("timeout_secs".into(), "30".into()),
                ("labels".into(), r#"{"team":"a"}"#.into()),
                ("not_before".into(), "2030-01-01T00:00:00Z".into()),
            ],
        };
        assert_eq!(
            task.body(),
            json!({
                "title": "t", "priority": "high", "required_capabilities": ["gpu"],
                "max_attempts": 2, "timeout_secs": 30, "labels": {"team": "a"},
                "not_before": "2030-01-01T00:00:00Z",
            })
        );
    }
}
