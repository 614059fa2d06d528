//! Time travel: `?at_seq=N` or `?at_time=<RFC 3339>` on an entity's or the hive's status route answers it
//! as it was then, folded from the log (never from the read models, which only know the present).

use hive_eventlog::RawEvent;
use hive_eventlog::audit::{At, parse_at, state_at};
use hive_events::AggregateKind;
use hive_events::subject::Subjects;
use hive_projector::fold::{Folded, fold_until};
use hive_projector::rows::ReadModel;
use serde::Deserialize;
use uuid::Uuid;

use crate::AppState;
use crate::error::{ApiError, ApiResult, Code};

/// `?at_seq=` / `?at_time=`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AtQuery {
    /// As it was at this event (not beyond the log's last).
    #[param(minimum = 1)]
    at_seq: Option<u64>,
    /// As it was at this RFC 3339 time (not with `at_seq`).
    #[param(format = DateTime)]
    at_time: Option<String>,
}

impl AtQuery {
    /// The point asked for, if any; a sequence beyond the log's end is refused.
    pub(crate) async fn at(&self, state: &AppState) -> ApiResult<Option<At>> {
        match (self.at_seq, &self.at_time) {
            (None, None) => Ok(None),
            (Some(_), Some(_)) => Err(ApiError::new(
                Code::BadRequest,
                "give at_seq or at_time, not both",
            )),
            (Some(0), None) => Err(ApiError::new(
                Code::BadRequest,
                "at_seq counts from 1, the log's first event",
            )),
            (Some(seq), None) => {
                let head = state.progress.head_now().await?;
                if seq > head {
                    return Err(ApiError::new(
                        Code::BadRequest,
                        format!("at_seq {seq} is beyond the log's last event {head}"),
                    ));
                }
                Ok(Some(At::Seq(seq)))
            }
            (None, Some(time)) => match parse_at(time) {
                Ok(At::Time(t)) => Ok(Some(At::Time(t))),
                _ => Err(ApiError::new(
                    Code::BadRequest,
                    format!("at_time {time:?} is not an RFC 3339 time"),
                )),
            },
        }
    }
}

/// The read-model row entity `id` would have had at `at`.
pub(crate) async fn row_at<A: ReadModel>(
    state: &AppState,
    kind: AggregateKind,
    id: Uuid,
    at: At,
) -> ApiResult<<A::Entity as sea_orm::EntityTrait>::Model> {
    let history = state.log.history(kind, id).await?;
    row_from::<A>(&history, state.log.subjects(), kind, id, at)
}

/// The read-model row of aggregate `id` as it was at `at`, folded from its `history`.
pub(crate) fn row_from<A: ReadModel>(
    history: &[RawEvent],
    subjects: &Subjects,
    kind: AggregateKind,
    id: Uuid,
    at: At,
) -> ApiResult<<A::Entity as sea_orm::EntityTrait>::Model> {
    match state_at::<A>(history, subjects, id, at) {
        Some((folded, seq)) => Ok(A::to_row(id, &folded, seq)),
        None if history.is_empty() => Err(ApiError::not_found(kind.as_str(), id)),
        None => Err(ApiError::new(
            Code::NotFound,
            format!(
                "{} {id} did not exist yet at {}",
                kind.as_str(),
                describe(at)
            ),
        )),
    }
}

/// The whole log folded up to `at`.
pub(crate) async fn hive_at(state: &AppState, at: At) -> ApiResult<Folded> {
    Ok(fold_until(&state.log, at).await?)
}

fn describe(at: At) -> String {
    match at {
        At::Seq(seq) => format!("seq {seq}"),
        At::Time(time) => time.to_rfc3339(),
        At::End => "the end of the log".into(),
    }
}
