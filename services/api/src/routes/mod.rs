//! Every route, one module per resource.

pub mod agents;
pub mod assignments;
pub mod compat;
pub mod dashboard;
pub mod history;
pub mod lifecycle;
pub mod projections;
pub mod projects;
pub mod spawn;
pub mod stream;
pub mod system;
pub mod tasks;
pub mod travel;

use axum::Router;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::AppState;
use crate::error::{ApiError, Code};
use hive_eventlog::Committed;

/// All routes; unknown paths and methods answer in the API's error format.
pub fn all() -> Router<AppState> {
    Router::new()
        .merge(system::routes())
        .merge(agents::routes())
        .merge(tasks::routes())
        .merge(projects::routes())
        .merge(projections::routes())
        .merge(history::routes())
        .merge(lifecycle::routes())
        .merge(assignments::routes())
        .merge(compat::routes())
        .merge(dashboard::routes())
        .merge(spawn::routes())
        .merge(stream::routes())
        .fallback(|| async { ApiError::new(Code::NotFound, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                Code::MethodNotAllowed,
                "this route does not take that method",
            )
        })
}

/// The answer to a command: `status` with `body`, marked when it repeats a first answer.
pub fn committed<T: Serialize>(status: StatusCode, committed: Committed, body: T) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    if committed.duplicate {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}
