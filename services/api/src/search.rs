//! Finding tasks by what they are about: labels, type, a required capability, a creation window and
//! text in the title (`GET /api/v1/tasks`). Each filter is one that an index of the read models
//! (migrations m0007, m0008) serves, so a filtered page stays fast however many tasks there are.

use chrono::{DateTime, Utc};
use hive_events::Labels;
use hive_schema::tasks;
use sea_orm::sea_query::extension::postgres::PgBinOper;
use sea_orm::sea_query::{
    Asterisk, CommonTableExpression, Expr, ExprTrait, Query, SelectStatement, SimpleExpr,
    WithClause,
};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect, QueryTrait,
    Select,
};

use crate::error::{ApiError, ApiResult};
use crate::views::Order;

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

    /// A page of `rows` tasks of `query` (the list in id `order`, its other filters and cursor
    /// applied, limited to `rows`) that match every filter.
    ///
    /// The planner cannot see that filters correlate: for a combination of common filters that
    /// matches few tasks (a type and a capability no task of that type requires) it walks the list
    /// in order through every row. So a page first walks [`WALK`] tasks of the list; if they did not
    /// fill it, and the matches it saw promise to fill it within [`WALK_ON`] more, it walks on; what is
    /// still missing then comes from the search index (one scan that intersects the filters'
    /// postings), beyond where the walks ended, sorted. The statements do not share a snapshot: a
    /// task that changes meanwhile is judged as it is when its part is read.
    pub async fn page<C: ConnectionTrait>(
        &self,
        db: &C,
        query: Select<tasks::Entity>,
        order: Order,
        rows: u64,
    ) -> ApiResult<Vec<tasks::Model>> {
        let mut query = self.windowed(query);
        let Some(indexed) = self.indexed()? else {
            return Ok(query.all(db).await?);
        };
        let mut found = walk(db, &query, &indexed, order, WALK, rows).await?;
        let mut length = WALK;
        loop {
            let missing = rows - found.len() as u64;
            if missing == 0 {
                return Ok(found);
            }
            let Some(end) = last_walked(db, &query, length).await? else {
                // The walk reached the end of the list.
                return Ok(found);
            };
            query = query.filter(match order {
                Order::Asc => tasks::Column::Id.gt(end),
                Order::Desc => tasks::Column::Id.lt(end),
            });
            let seen = found.len() as u64;
            // Walk on only once, and only when the matches seen so far, as dense further on,
            // fill the page within `WALK_ON` tasks.
            if length == WALK_ON || seen == 0 || missing * WALK / seen > WALK_ON {
                break;
            }
            length = WALK_ON;
            found.extend(walk(db, &query, &indexed, order, length, missing).await?);
        }
        let missing = rows - found.len() as u64;
        found.extend(from_index(db, query, indexed, order, missing).await?);
        Ok(found)
    }

    /// `query` narrowed to the creation window.
    fn windowed(&self, mut query: Select<tasks::Entity>) -> Select<tasks::Entity> {
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
        query
    }

    /// The filters the search index serves (labels, capability, type, title), all of them; `None`
    /// without any.
    fn indexed(&self) -> ApiResult<Option<Condition>> {
        let mut all = Condition::all();
        if !self.labels.is_empty() {
            all = all.add(labelled(tasks::Column::Labels, &self.labels));
        }
        if let Some(task_type) = &self.task_type {
            all = all.add(tasks::Column::TaskType.eq(task_type.as_str()));
        }
        if let Some(capability) = &self.capability {
            let wanted = Expr::val(vec![capability.clone()]);
            all = all.add(
                Expr::col(tasks::Column::RequiredCapabilities).binary(PgBinOper::Contains, wanted),
            );
        }
        if let Some(q) = &self.q {
            if q.is_empty() || q.chars().count() > Q_MAX {
                return Err(ApiError::invalid("q", format!("1 to {Q_MAX} characters")));
            }
            // `title ILIKE '%q%'`, its wildcards escaped.
            let escaped = q
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            all = all.add(
                Expr::col(tasks::Column::Title)
                    .binary(PgBinOper::ILike, Expr::val(format!("%{escaped}%"))),
            );
        }
        Ok((!all.is_empty()).then_some(all))
    }
}

/// How many tasks of the list a page walks before it judges how dense the matches are.
const WALK: u64 = 2_500;

/// The most tasks a second walk reads, when the first found matches but too few.
const WALK_ON: u64 = 40_000;

/// The first `rows` tasks that match `indexed` among the first `length` of `query`.
async fn walk<C: ConnectionTrait>(
    db: &C,
    query: &Select<tasks::Entity>,
    indexed: &Condition,
    order: Order,
    length: u64,
    rows: u64,
) -> ApiResult<Vec<tasks::Model>> {
    let walked = query.clone().limit(length).into_query();
    let mut page = Query::select();
    page.from_subquery(walked, tasks::Entity)
        .cond_where(indexed.clone());
    first_in_order(db, page, order, rows).await
}

/// The first `rows` tasks in id `order` of `page`, whose source is named `tasks`.
async fn first_in_order<C: ConnectionTrait>(
    db: &C,
    mut page: SelectStatement,
    order: Order,
    rows: u64,
) -> ApiResult<Vec<tasks::Model>> {
    page.column(Asterisk)
        .order_by((tasks::Entity, tasks::Column::Id), order.into())
        .limit(rows);
    let statement = db.get_database_backend().build(&page);
    Ok(tasks::Entity::find()
        .from_raw_sql(statement)
        .all(db)
        .await?)
}

/// The id of the `length`th task of `query`, where a walk of that length ended; `None` when the
/// list is shorter.
async fn last_walked<C: ConnectionTrait>(
    db: &C,
    query: &Select<tasks::Entity>,
    length: u64,
) -> ApiResult<Option<uuid::Uuid>> {
    Ok(query
        .clone()
        .select_only()
        .column(tasks::Column::Id)
        .offset(length - 1)
        .limit(1)
        .into_tuple()
        .one(db)
        .await?)
}

/// The first `rows` tasks of `query` that match `indexed`, found through the search index: every
/// match is read (a materialized set, so the planner cannot walk the list in order instead), then
/// sorted.
async fn from_index<C: ConnectionTrait>(
    db: &C,
    query: Select<tasks::Entity>,
    indexed: Condition,
    order: Order,
    rows: u64,
) -> ApiResult<Vec<tasks::Model>> {
    let mut matches = query.filter(indexed).into_query();
    matches.clear_order_by().reset_limit();
    let matching = CommonTableExpression::new()
        .table_name("matches")
        .query(matches)
        .materialized(true)
        .to_owned();
    let mut page = Query::select();
    page.from_as("matches", tasks::Entity)
        .with_cte(WithClause::new().cte(matching).to_owned());
    first_in_order(db, page, order, rows).await
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
