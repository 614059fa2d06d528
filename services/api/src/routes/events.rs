//! `GET /api/v1/events`: the log itself, in order, a page at a time: each event as its audit record
//! (with the status it leaves its agent or task in), filtered by aggregate, entity, type, actor, flow
//! and time. A reader keeps the page's `last_seq` and asks for `after_seq=` it next time: nothing is
//! skipped and nothing comes twice, whether the log grew meanwhile or not.

use axum::Json;
use axum::extract::{RawQuery, State};
use chrono::{DateTime, Utc};
use hive_eventlog::audit::Record;
use hive_events::AggregateKind;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::AppState;
use crate::error::{ApiError, ApiResult, Code};
use crate::extract::Query;
use crate::feed::Change;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(events))
}

/// Events examined at most for one page: a filter that matches little still answers promptly, with
/// the place to go on from.
const SCAN: usize = 10_000;

/// The filters and the page.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct Filter {
    /// Events after this sequence (0, the default: from the start).
    after_seq: Option<u64>,
    /// 1 to 1,000 events, default 100.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// Only this kind's events: `agent`, `task` or `project`.
    #[param(value_type = Option<AggregateKind>)]
    aggregate: Option<String>,
    /// Only this entity's events.
    aggregate_id: Option<Uuid>,
    /// Only events of this type (e.g. `TaskAssigned`).
    #[serde(rename = "type")]
    #[param(rename = "type")]
    event_type: Option<String>,
    /// Only events this actor caused (e.g. `system:scheduler`).
    actor: Option<String>,
    /// Only events of this flow.
    correlation_id: Option<Uuid>,
    /// Only events that occurred at or after this RFC 3339 time.
    since: Option<DateTime<Utc>>,
    /// Only events that occurred at or before this RFC 3339 time.
    until: Option<DateTime<Utc>>,
}

/// A page of the log.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Page {
    /// The events that matched, in order.
    items: Vec<Change>,
    /// The last sequence this page examined: ask `after_seq=` it for the next page.
    last_seq: u64,
    /// Whether more events followed `last_seq` in the log (of the kind and entity asked for) when
    /// this page was read.
    more: bool,
    /// The log's last sequence just before this page was read: a reader that wants the log as it is
    /// now, not as it keeps growing, stops there.
    head: u64,
    /// When `more`: the path and query of the next page (the same filters, `after_seq` this page's
    /// `last_seq`).
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// `query` with `after_seq` set to `after`, the other pairs as they came.
fn next_page(query: Option<&str>, after: u64) -> String {
    let mut pairs: Vec<&str> = query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("after_seq="))
        .collect();
    let after = format!("after_seq={after}");
    pairs.insert(0, &after);
    format!("/api/v1/events?{}", pairs.join("&"))
}

#[utoipa::path(get, path = "/api/v1/events", tag = "history", summary = "The log in order, a page at a time, filtered", params(Filter), responses((status = 200, body = Page)))]
async fn events(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    Query(filter): Query<Filter>,
) -> ApiResult<Json<Page>> {
    let limit = match filter.limit.unwrap_or(100) {
        n @ 1..=1_000 => n,
        n => {
            return Err(ApiError::new(
                Code::BadRequest,
                format!("limit must be 1 to 1000, got {n}"),
            ));
        }
    };
    let kind = match filter.aggregate.as_deref() {
        None => None,
        Some(name) => Some(name.parse::<AggregateKind>().map_err(|()| {
            ApiError::new(
                Code::BadRequest,
                format!("aggregate {name:?} is none of agent, task, project"),
            )
        })?),
    };
    let after = filter.after_seq.unwrap_or(0);
    let head = state.progress.head_now().await?;
    let subjects = state.log.subjects();
    let wildcard = subjects.matching(kind, filter.aggregate_id);
    // Filters the subject cannot express are applied here, over at most SCAN events.
    let narrow = filter.event_type.is_some()
        || filter.actor.is_some()
        || filter.correlation_id.is_some()
        || filter.since.is_some()
        || filter.until.is_some();
    let scan = if narrow { SCAN } else { limit };
    let (raws, beyond) = match after.checked_add(1) {
        Some(from) => state.log.page(from, wildcard, scan).await?,
        None => (Vec::new(), 0),
    };
    let mut page = Page {
        items: Vec::new(),
        last_seq: after,
        more: beyond > 0,
        head,
        next: None,
    };
    for (n, raw) in raws.iter().enumerate() {
        let (record, status) = Record::with_status(raw, subjects);
        page.last_seq = raw.seq;
        if wanted(&filter, &record) {
            page.items.push(Change {
                record,
                state: status,
            });
            if page.items.len() == limit {
                page.more |= n + 1 < raws.len();
                break;
            }
        }
    }
    if page.more {
        page.next = Some(next_page(query.as_deref(), page.last_seq));
    }
    Ok(Json(page))
}

#[cfg(test)]
#[test]
fn the_next_page_keeps_the_filters_and_moves_after_seq() {
    assert_eq!(next_page(None, 7), "/api/v1/events?after_seq=7");
    assert_eq!(
        next_page(
            Some("aggregate=task&after_seq=3&limit=2&since=2026-01-01T00%3A00%3A00Z"),
            9
        ),
        "/api/v1/events?after_seq=9&aggregate=task&limit=2&since=2026-01-01T00%3A00%3A00Z"
    );
}

/// Whether `record` passes the filters the subject could not apply.
fn wanted(filter: &Filter, record: &Record) -> bool {
    filter
        .event_type
        .as_deref()
        .is_none_or(|t| record.event_type.as_deref() == Some(t))
        && filter
            .actor
            .as_deref()
            .is_none_or(|a| record.actor.as_deref() == Some(a))
        && filter
            .correlation_id
            .is_none_or(|c| record.correlation_id == Some(c))
        && filter
            .since
            .is_none_or(|t| record.occurred_at.is_some_and(|at| at >= t))
        && filter
            .until
            .is_none_or(|t| record.occurred_at.is_some_and(|at| at <= t))
}
