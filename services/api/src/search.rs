//! Finding tasks by what they are about: labels, type, a required capability, a creation window and
//! text in the title (`GET /api/v1/tasks`). Each filter is one that an index of the read models
//! (migration m0007) serves, so a filtered page stays fast however many tasks there are.

use chrono::{DateTime, Utc};
use hive_events::Labels;
use hive_schema::tasks;
use sea_orm::sea_query::extension::postgres::PgBinOper;
use sea_orm::sea_query::{Expr, ExprTrait, SimpleExpr};
use sea_orm::{ColumnTrait, QueryFilter, Select};

use crate::error::{ApiError, ApiResult};

/// The search filters of the task list, as read from its query string.
#[derive(Debug, Default)]
pub struct TaskSearch {
    /// `label=key:value` pairs, every one required.
    pub labels: Vec<(String, String)>,
    /// The task type.
    pub task_type: Option<String>,
    /// A capability the task requires.
    pub capability: Option<String>,
    /// Created at or after.
    pub created_after: Option<DateTime<Utc>>,
    /// Created at or before.
    pub created_before: Option<DateTime<Utc>>,
    /// Text in the title, any case.
    pub q: Option<String>,
}

/// `column @> {"k": "v", ...}`: rows whose labels include every one of `labels`.
pub fn labelled(
    column: impl sea_orm::sea_query::IntoColumnRef,
    labels: &[(String, String)],
) -> SimpleExpr {
    let wanted: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    let wanted = Expr::val(serde_json::Value::Object(wanted)).cast_as("jsonb");
    Expr::col(column).binary(PgBinOper::Contains, wanted)
}

/// How far a task's creation may lag behind its id's time (the request that made both).
const ID_SLACK: chrono::Duration = chrono::Duration::minutes(1);

/// The least UUIDv7 of the millisecond `at` (every id made then or later is not less).
fn id_floor(at: DateTime<Utc>) -> uuid::Uuid {
    let ms = u128::try_from(at.timestamp_millis()).unwrap_or(0);
    uuid::Uuid::from_u128(ms << 80)
}

/// The longest text a `q` filter takes.
const Q_MAX: usize = 200;

impl TaskSearch {
    /// Reads the `label` parameters (repeatable) of `raw_query`, each `key:value`; the others come
    /// parsed already.
    pub fn labels_of(raw_query: Option<&str>) -> ApiResult<Vec<(String, String)>> {
        let pairs = url::form_urlencoded::parse(raw_query.unwrap_or_default().as_bytes());
        let mut labels = Vec::new();
        for (_, value) in pairs.filter(|(k, _)| k == "label") {
            let Some((k, v)) = value.split_once(':') else {
                return Err(ApiError::invalid(
                    "label",
                    format!("{value:?} is not key:value"),
                ));
            };
            Labels::check_key(k).map_err(|e| ApiError::invalid("label", e))?;
            labels.push((k.to_owned(), v.to_owned()));
        }
        if labels.len() > Labels::MAX {
            return Err(ApiError::invalid(
                "label",
                format!("at most {} label filters", Labels::MAX),
            ));
        }
        Ok(labels)
    }

    /// `query` narrowed to the tasks that match every filter.
    pub fn apply(&self, mut query: Select<tasks::Entity>) -> ApiResult<Select<tasks::Entity>> {
        if !self.labels.is_empty() {
            // `labels @> {"k": "v", ...}`, which the GIN index on labels serves.
            query = query
                .filter(labelled(tasks::Column::Labels, &self.labels))
                // The partial index's own predicate, as text, not a parameter: a generic plan
                // could not prove a parameter's value implies it, and would not use the index.
                .filter(Expr::cust("tasks.labels <> '{}'::jsonb"));
        }
        if let Some(task_type) = &self.task_type {
            query = query.filter(tasks::Column::TaskType.eq(task_type.as_str()));
        }
        if let Some(capability) = &self.capability {
            // `required_capabilities @> ARRAY[$cap]`, served by its GIN index.
            let wanted = Expr::val(vec![capability.clone()]);
            query = query
                .filter(
                    Expr::col(tasks::Column::RequiredCapabilities)
                        .binary(PgBinOper::Contains, wanted),
                )
                .filter(Expr::cust("tasks.required_capabilities <> '{}'"));
        }
        // A task's id is a UUIDv7 made in the request that created it, so its time is its creation's
        // within the request's life: bounding the ids too (a minute wider) lets the page walk the
        // primary key through the window alone, where the planner, blind to that correlation, would
        // walk it from the list's start.
        if let Some(after) = self.created_after {
            query = query
                .filter(tasks::Column::CreatedAt.gte(after))
                .filter(tasks::Column::Id.gte(id_floor(after - ID_SLACK)));
        }
        if let Some(before) = self.created_before {
            query = query
                .filter(tasks::Column::CreatedAt.lte(before))
                .filter(tasks::Column::Id.lt(id_floor(before + ID_SLACK)));
        }
        if let Some(q) = &self.q {
            if q.is_empty() || q.chars().count() > Q_MAX {
                return Err(ApiError::invalid("q", format!("1 to {Q_MAX} characters")));
            }
            // `title ILIKE '%q%'`, its wildcards escaped; the trigram index serves it.
            let escaped = q
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            query = query.filter(
                Expr::col(tasks::Column::Title)
                    .binary(PgBinOper::ILike, Expr::val(format!("%{escaped}%"))),
            );
        }
        Ok(query)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_made_at_a_time_is_not_below_that_times_floor_and_below_the_next_ones() {
        let at: DateTime<Utc> = "2026-12-03T20:00:00.123Z".parse().unwrap();
        let ts = uuid::Timestamp::from_unix(
            uuid::NoContext,
            u64::try_from(at.timestamp()).unwrap(),
            at.timestamp_subsec_nanos(),
        );
        let id = uuid::Uuid::new_v7(ts);
        assert!(id_floor(at) <= id);
        assert!(id < id_floor(at + chrono::Duration::milliseconds(1)));
        assert!(id_floor(at - chrono::Duration::milliseconds(1)) < id_floor(at));
    }
}
