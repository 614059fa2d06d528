//! `GET /api/v1/projections`: each projection's checkpoint beside the log's head, its lag and its dead
//! letters.

use axum::Json;
use axum::extract::State;
use hive_projector::status::{ProjectionStatus, projections};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::system::LogHead;
use crate::AppState;
use crate::error::ApiResult;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

/// Every projection's standing beside the log's head.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Projections {
    log: LogHead,
    projections: Vec<ProjectionStatus>,
}

#[utoipa::path(get, path = "/api/v1/projections", operation_id = "list_projections", tag = "system", summary = "Each projection's checkpoint, lag and dead letters", responses((status = 200, body = Projections)))]
async fn list(State(state): State<AppState>) -> ApiResult<Json<Projections>> {
    let head = state.progress.head_now().await?;
    let projections = projections(&state.db, head).await?;
    Ok(Json(Projections {
        log: LogHead { last_seq: head },
        projections,
    }))
}
