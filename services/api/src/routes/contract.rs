//! The event log's published contract: `GET /api/v1/asyncapi.json`, the AsyncAPI 3 document of this
//! deployment's stream (its name and subjects), generated from the event types (`hive_events::contract`).

use axum::Json;
use axum::extract::State;
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(asyncapi))
}

/// The AsyncAPI 3.1 document of the event stream: its subjects, headers, the envelope and the JSON
/// Schema of every event type at its current version. Public, as the OpenAPI document is.
#[utoipa::path(get, path = "/api/v1/asyncapi.json", tag = "system", summary = "The event log's AsyncAPI 3 document", responses((status = 200, description = "AsyncAPI 3.1 JSON", content_type = "application/json", body = Object)))]
async fn asyncapi(State(state): State<AppState>) -> Json<Value> {
    let log = &state.log;
    Json(hive_events::contract::asyncapi(
        &log.namespace().stream(),
        log.subjects(),
    ))
}
