//! `POST /api/v1/dead-letters/{id}/retry`: an operator asks for a dead letter's aggregate to be folded
//! again (after an upcaster fix, say). The API may only read the read models, so it asks the leading
//! projector, their one writer, over NATS ([`hive_projector::refold`]) and answers what it did, or why
//! the event still cannot be folded. (The list of dead letters is in [`super::history`].)

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use hive_projector::refold::{RefoldAnswer, RefoldRequest, Refolded};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
#[allow(unused_imports)]
use crate::error::ErrorBody;
use crate::error::{ApiError, ApiResult, Code};
use crate::extract::Path;

/// How long the projector may take: it reads the aggregate's history and writes one transaction.
const REFOLD_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(retry))
}

#[utoipa::path(post, path = "/api/v1/dead-letters/{id}/retry", operation_id = "retry_dead_letter", tag = "history", summary = "Fold a dead letter's aggregate again", description = "The leading projector folds the aggregate's whole history up to its checkpoint as this build reads it (after an upcaster fix, say). If the dead-lettered event folds now, the aggregate's read-model row and its dead letters become what that fold gives (those of its events that fold are dead letters no more; one the new fold refuses becomes one), and the answer says what changed. If it still cannot be folded, nothing changes: 409 `corrupt_history`, whose message says why. Appends nothing to the log.", params(("id" = i64, Path, description = "the dead letter (its `id` in `GET /api/v1/dead-letters`)")), responses((status = 200, body = Refolded), (status = 404, description = "no such dead letter (or it was resolved already)", body = ErrorBody), (status = 409, description = "corrupt_history: the event still cannot be folded; the message says why", body = ErrorBody), (status = 503, description = "no projector leads now, or it could not do it; try again", body = ErrorBody)))]
async fn retry(State(state): State<AppState>, Path(id): Path<i64>) -> ApiResult<Json<Refolded>> {
    let subject = state
        .log
        .namespace()
        .refold_requests(&state.config.projection);
    let request = serde_json::to_vec(&RefoldRequest { dead_letter: id })
        .map_err(|e| ApiError::new(Code::Internal, e.to_string()))?;
    let asked = async_nats::Request::new()
        .payload(request.into())
        .timeout(Some(REFOLD_TIMEOUT));
    let reply = state
        .log
        .client()
        .send_request(subject, asked)
        .await
        .map_err(|e| ApiError::unavailable("the leading projector", e))?;
    let answer: RefoldAnswer = serde_json::from_slice(&reply.payload)
        .map_err(|e| ApiError::unavailable("the leading projector", e))?;
    match answer {
        RefoldAnswer::Refolded(refolded) => {
            // The counts may have changed without the checkpoint moving.
            *state.status_cache.lock().await = None;
            if let Ok(mut answer) = state.status_answer.lock() {
                *answer = None;
            }
            Ok(Json(refolded))
        }
        RefoldAnswer::StillDead { seq, reason } => Err(ApiError::new(
            Code::CorruptHistory,
            format!("the event at seq {seq} still cannot be folded: {reason}"),
        )),
        RefoldAnswer::NotFound => Err(ApiError::not_found("dead letter", id)),
        RefoldAnswer::Failed { message } => {
            Err(ApiError::unavailable("the leading projector", message))
        }
    }
}
