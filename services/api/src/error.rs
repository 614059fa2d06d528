//! One table of error codes: each maps to an HTTP status, and every error answers
//! `{"error": {"code": "...", "message": "..."}}`. Domain refusals are 4xx, lost races 409, and failures of
//! our own infrastructure 503 with no internals in the message (those go to the log).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hive_eventlog::CommandError;
use hive_events::DomainError;

/// Every error code the API answers with: the table its clients read too ([`hive_events::wire::ErrorCode`]).
pub use hive_events::wire::ErrorCode as Code;

/// The status `code` answers with.
fn status_of(code: Code) -> StatusCode {
    StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// Every error's body.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
}

/// An error's code and message.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    code: Code,
    /// What went wrong, for people.
    message: String,
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    code: Code,
    message: String,
}

impl ApiError {
    /// An answer with `code` and `message`.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// A 404 for an entity.
    pub fn not_found(what: &str, id: impl std::fmt::Display) -> Self {
        Self::new(Code::NotFound, format!("{what} {id} not found"))
    }

    /// A 422 for a field.
    pub fn invalid(field: &str, message: impl std::fmt::Display) -> Self {
        Self::new(Code::ValidationFailed, format!("{field}: {message}"))
    }

    /// A 503 for a failed backing service; the detail is logged, not answered.
    pub fn unavailable(what: &'static str, detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, "{what} failed");
        Self::new(
            Code::Unavailable,
            format!("{what} is unavailable; try again"),
        )
    }

    /// The code.
    pub fn code(&self) -> Code {
        self.code
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = status_of(self.code);
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.code == Code::Unauthenticated {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"hive\""),
            );
        }
        response
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        let code = match &e {
            DomainError::Invalid { .. } => Code::ValidationFailed,
            DomainError::NotFound { .. } => Code::NotFound,
            DomainError::AlreadyExists { .. } => Code::AlreadyExists,
            DomainError::InvalidTransition { .. } => Code::InvalidTransition,
            // The attempt's assignee is no more: to the agent, the task is not its own any more.
            DomainError::NotAssignee | DomainError::AttemptOver { .. } => Code::NotAssignee,
        };
        Self::new(code, e.to_string())
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Domain(d) => d.into(),
            CommandError::Conflict { .. } => Self::new(Code::Conflict, e.to_string()),
            CommandError::Corrupt { ref reason, .. } => {
                // Why the event cannot be folded is for the log (and the dead letter); the caller
                // learns which event stops the command.
                tracing::error!(error = %e, %reason, "corrupt history");
                Self::new(
                    Code::CorruptHistory,
                    format!("{e}; the event is listed at /api/v1/dead-letters"),
                )
            }
            CommandError::Log(e) => Self::unavailable("the event log", e),
        }
    }
}

impl From<sea_orm::DbErr> for ApiError {
    fn from(e: sea_orm::DbErr) -> Self {
        use sea_orm::{DbErr, RuntimeErr};
        // A value the database cannot take (a NUL byte in a filter, found by the fuzzer; a number out
        // of range: SQLSTATE class 22, data exceptions) is the request's fault, not an outage.
        if let DbErr::Query(RuntimeErr::SqlxError(sqlx)) | DbErr::Exec(RuntimeErr::SqlxError(sqlx)) =
            &e
            && let Some(db) = sqlx.as_database_error()
            && db.code().is_some_and(|code| code.starts_with("22"))
        {
            return Self::new(
                Code::BadRequest,
                format!("a value the read models cannot hold: {}", db.message()),
            );
        }
        Self::unavailable("the read-model database", e)
    }
}

impl From<hive_eventlog::LogError> for ApiError {
    fn from(e: hive_eventlog::LogError) -> Self {
        Self::unavailable("the event log", e)
    }
}

/// The result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;
