//! `GET /api/v1/projections`: each projection's checkpoint beside the log's head, its lag and its dead
//! letters.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use hive_projector::status::projections;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiResult;

pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/projections", get(list))
}

async fn list(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let head = state.progress.head_now().await?;
    let items = projections(&state.db, head).await?;
    Ok(Json(
        json!({"log": {"last_seq": head}, "projections": items}),
    ))
}
