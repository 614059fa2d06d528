//! One table of error codes: each maps to an HTTP status, and every error answers
//! `{"error": {"code": "...", "message": "..."}}`. Domain refusals are 4xx, lost races 409, and failures of
//! our own infrastructure 503 with no internals in the message (those go to the log).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hive_eventlog::CommandError;
use hive_events::DomainError;

/// Every error code the API answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// A malformed request (header, query, path).
    BadRequest,
    /// The body is not valid JSON.
    InvalidJson,
    /// The body is not declared as JSON.
    UnsupportedMediaType,
    /// The body is larger than the limit.
    PayloadTooLarge,
    /// A field is missing or not acceptable.
    ValidationFailed,
    /// No token, or one that is not valid.
    Unauthenticated,
    /// The token's role may not do this.
    Forbidden,
    /// No such entity or route.
    NotFound,
    /// The route exists, not with this method.
    MethodNotAllowed,
    /// The entity exists already.
    AlreadyExists,
    /// The entity's state does not allow the command.
    InvalidTransition,
    /// Only the assigned agent may report on the task.
    NotAssignee,
    /// Other writers kept winning the race.
    Conflict,
    /// The entity's history holds an event that cannot be folded (a dead letter): no command is
    /// decided on it until an operator repairs it.
    CorruptHistory,
    /// `Hive-Min-Seq` was not reached in time.
    ProjectionLagging,
    /// A backing service is down.
    Unavailable,
    /// More requests at once than the API works on; try again shortly.
    Overloaded,
    /// A bug of ours.
    Internal,
}

impl Code {
    /// Every code.
    pub const ALL: [Code; 18] = [
        Self::BadRequest,
        Self::InvalidJson,
        Self::UnsupportedMediaType,
        Self::PayloadTooLarge,
        Self::ValidationFailed,
        Self::Unauthenticated,
        Self::Forbidden,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::AlreadyExists,
        Self::InvalidTransition,
        Self::NotAssignee,
        Self::Conflict,
        Self::CorruptHistory,
        Self::ProjectionLagging,
        Self::Unavailable,
        Self::Overloaded,
        Self::Internal,
    ];

    /// The code's stable name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::InvalidJson => "invalid_json",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::PayloadTooLarge => "payload_too_large",
            Self::ValidationFailed => "validation_failed",
            Self::Unauthenticated => "unauthenticated",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::AlreadyExists => "already_exists",
            Self::InvalidTransition => "invalid_transition",
            Self::NotAssignee => "not_assignee",
            Self::Conflict => "conflict",
            Self::CorruptHistory => "corrupt_history",
            Self::ProjectionLagging => "projection_lagging",
            Self::Unavailable => "unavailable",
            Self::Overloaded => "overloaded",
            Self::Internal => "internal",
        }
    }

    /// The HTTP status it answers with.
    pub const fn status(self) -> StatusCode {
        match self {
            Self::BadRequest | Self::InvalidJson => StatusCode::BAD_REQUEST,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::ValidationFailed => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::AlreadyExists
            | Self::InvalidTransition
            | Self::Conflict
            | Self::CorruptHistory => StatusCode::CONFLICT,
            Self::NotAssignee => StatusCode::FORBIDDEN,
            Self::ProjectionLagging | Self::Unavailable | Self::Overloaded => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl serde::Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl utoipa::PartialSchema for Code {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .enum_values(Some(Self::ALL.map(Code::as_str)))
            .description(Some(
                "The error's stable code (docs/api.md lists each with its status).",
            ))
            .into()
    }
}

impl utoipa::ToSchema for Code {}

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
        let status = self.code.status();
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
            DomainError::NotAssignee => Code::NotAssignee,
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
