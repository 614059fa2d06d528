//! How the operator's commands print what the API answers: a list as a table (`--json`: an item a
//! line), an entity one field a line (`--json`: one line), again at each change with `--watch`, and
//! a command's answer as a sentence (`--json`: the answer as one line).

use std::io::Write;

use futures::StreamExt;
use hive_client::{AggregateKind, Client, EventFilter, MinSeq};
use serde_json::Value;
use uuid::Uuid;

use super::Page;

/// A list's columns: each a header and the field of an item it shows. An entity shows these fields
/// first.
#[derive(Clone, Copy)]
pub struct Columns(&'static [(&'static str, &'static str)]);

impl Columns {
    /// A task's.
    pub const TASKS: Self = Self(&[
        ("ID", "task_id"),
        ("STATE", "state"),
        ("PRIORITY", "priority"),
        ("ATTEMPTS", "attempts"),
        ("AGENT", "agent_id"),
        ("UPDATED", "updated_at"),
        ("TITLE", "title"),
    ]);
    /// An agent's.
    pub const AGENTS: Self = Self(&[
        ("ID", "agent_id"),
        ("STATUS", "status"),
        ("NAME", "name"),
        ("TYPE", "agent_type"),
        ("CAPABILITIES", "capabilities"),
        ("MAX TASKS", "max_concurrent_tasks"),
        ("UPDATED", "updated_at"),
    ]);
    /// A dead letter's.
    pub const DEAD_LETTERS: Self = Self(&[
        ("ID", "id"),
        ("SEQ", "seq"),
        ("SUBJECT", "subject"),
        ("CREATED", "created_at"),
        ("REASON", "reason"),
    ]);
}

/// The widest a table's cell is shown.
const CELL: usize = 80;

/// Prints the list at `path` filtered by `query`: one page of `page.limit` items, or with `page.all`
/// every page.
pub async fn list(
    client: &Client,
    path: &str,
    mut query: Vec<(String, String)>,
    page: &Page,
    json: bool,
    columns: Columns,
) -> anyhow::Result<()> {
    query.extend(page.filters.iter().cloned());
    query.push(("limit".into(), page.limit.to_string()));
    if page.desc {
        query.push(("order".into(), "desc".into()));
    }
    let header = columns.0.iter().map(|(h, _)| (*h).to_owned()).collect();
    let mut rows: Vec<Vec<String>> = vec![header];
    let mut cursor: Option<String> = None;
    loop {
        let mut encoded = url::form_urlencoded::Serializer::new(String::new());
        encoded.extend_pairs(&query);
        if let Some(cursor) = &cursor {
            encoded.append_pair("cursor", cursor);
        }
        let answer = client
            .get_at(&format!("{path}?{}", encoded.finish()), MinSeq::Head)
            .await?;
        let items = answer["items"].as_array().map_or(&[][..], Vec::as_slice);
        let mut out = std::io::stdout().lock();
        for item in items {
            if json {
                writeln!(out, "{item}")?;
            } else {
                rows.push(
                    columns
                        .0
                        .iter()
                        .map(|(_, f)| cell(&item[f], CELL))
                        .collect(),
                );
            }
        }
        match answer["next_cursor"].as_str() {
            Some(next) if page.all => cursor = Some(next.to_owned()),
            _ => break,
        }
    }
    if !json {
        print!("{}", crate::ops::aligned(&rows));
    }
    Ok(())
}

/// One entity, read from `path`.
pub struct Show<'a> {
    client: &'a Client,
    path: &'a str,
    json: bool,
    columns: Columns,
}

impl<'a> Show<'a> {
    /// The entity at `path`, shown with its `columns` first.
    pub fn new(client: &'a Client, path: &'a str, json: bool, columns: Columns) -> Self {
        Self {
            client,
            path,
            json,
            columns,
        }
    }

    /// Prints it once.
    pub async fn once(&self) -> anyhow::Result<()> {
        self.print(&self.client.get_at(self.path, MinSeq::Head).await?)
    }

    /// Prints it, then again each time an event of it (`kind` `id`) changes it, following the hive's
    /// live stream (resuming after a dropped connection) until interrupted.
    pub async fn watch(&self, kind: AggregateKind, id: Uuid) -> anyhow::Result<()> {
        let mut shown = self.client.get_at(self.path, MinSeq::Head).await?;
        self.print(&shown)?;
        // The events after the one the read model last folded.
        let after = shown["seq"].as_u64().unwrap_or(0);
        let mut events = std::pin::pin!(self.client.events(after, EventFilter::entity(kind, id)));
        while let Some(record) = events.next().await {
            let Some(seq) = record?["seq"].as_u64() else {
                continue;
            };
            // The stream sends an event once the read models hold it: this reads it at once.
            let now = self.client.get_at(self.path, MinSeq::At(seq)).await?;
            if now != shown {
                if !self.json {
                    println!();
                }
                self.print(&now)?;
                shown = now;
            }
        }
        Ok(())
    }

    fn print(&self, entity: &Value) -> anyhow::Result<()> {
        if self.json {
            println!("{entity}");
            return Ok(());
        }
        let first = self.columns.0.iter().map(|(_, f)| *f);
        let fields = entity.as_object().into_iter().flatten();
        let rest = fields
            .map(|(k, _)| k.as_str())
            .filter(|k| !self.columns.0.iter().any(|(_, f)| f == k));
        let rows: Vec<Vec<String>> = first
            .chain(rest)
            .map(|field| vec![field.to_owned(), cell(&entity[field], usize::MAX)])
            .collect();
        print!("{}", crate::ops::aligned(&rows));
        std::io::stdout().flush()?;
        Ok(())
    }
}

/// Prints a command's `answer`: as one JSON line, or as the sentence `text` makes (with the
/// sequence of the event it appended, if any).
pub fn done(answer: &Value, json: bool, text: impl FnOnce() -> String) -> anyhow::Result<()> {
    match (json, answer["seq"].as_u64()) {
        (true, _) => println!("{answer}"),
        (false, Some(seq)) => println!("{} (seq {seq})", text()),
        (false, None) => println!("{}", text()),
    }
    Ok(())
}

/// What a dead letter's retry did, in a sentence.
pub fn refolded(answer: &Value) -> String {
    let seqs = |field: &str| match answer[field].as_array() {
        Some(seqs) if !seqs.is_empty() => cell(&answer[field], usize::MAX),
        _ => "none".to_owned(),
    };
    format!(
        "dead letter {} folds now: {} {} folded again up to seq {}; no longer dead letters: {}; \
         still dead letters: {}",
        cell(&answer["dead_letter_id"], CELL),
        cell(&answer["aggregate"], CELL),
        cell(&answer["aggregate_id"], CELL),
        cell(&answer["checkpoint"], CELL),
        seqs("resolved"),
        seqs("dead_letters"),
    )
}

/// A field as a table shows it: text as it is, nothing as `-`, a list comma-separated, anything else
/// as JSON; at most `width` characters.
fn cell(value: &Value, width: usize) -> String {
    let text = match value {
        Value::Null => "-".to_owned(),
        Value::String(text) => text.clone(),
        Value::Array(items) if items.is_empty() => "-".to_owned(),
        Value::Array(items) => items
            .iter()
            .map(|item| cell(item, usize::MAX))
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    };
    let text = text.replace(['\n', '\r'], " ");
    if text.chars().count() > width {
        format!("{}…", text.chars().take(width - 1).collect::<String>())
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cells_are_short_plain_text() {
        assert_eq!(cell(&json!(null), 10), "-");
        assert_eq!(cell(&json!(["a", "b"]), 10), "a,b");
        assert_eq!(cell(&json!([]), 10), "-");
        assert_eq!(cell(&json!(3), 10), "3");
        assert_eq!(cell(&json!("two\nlines"), 10), "two lines");
        assert_eq!(cell(&json!("abcdefghijkl"), 5), "abcd…");
    }

    #[test]
    fn a_retry_says_what_it_resolved() {
        let answer = json!({
            "dead_letter_id": 4, "seq": 9, "aggregate": "task", "aggregate_id": "t",
            "checkpoint": 12, "resolved": [9], "dead_letters": []
        });
        assert_eq!(
            refolded(&answer),
            "dead letter 4 folds now: task t folded again up to seq 12; no longer dead letters: 9; \
             still dead letters: none"
        );
    }
}
