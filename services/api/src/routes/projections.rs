//! `GET /api/v1/projections`: each projection's checkpoint beside the log's head, its lag and its dead
//! letters.

use axum::Json;
use axum::extract::State;
use hive_projector::status::projections;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::ApiResult;
#[allow(unused_imports)]
use crate::error::ErrorBody;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

#[utoipa::path(get, path = "/api/v1/projections", tag = "system", summary = "Each projection's checkpoint, lag and dead letters", responses((status = 200, description = "OK"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn list(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let head = state.progress.head_now().await?;
    let items = projections(&state.db, head).await?;
    Ok(Json(
        json!({"log": {"last_seq": head}, "projections": items}),
    ))
}
