//! Hive's error codes: the one table the API answers from and its clients read. Every error is
//! `{"error": {"code": "...", "message": "..."}}`; each code has one HTTP status.

use serde::{Deserialize, Serialize};

/// Every error code the API answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
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

impl ErrorCode {
    /// Every code.
    pub const ALL: [ErrorCode; 18] = [
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

    /// The code of `name`, if it is one of Hive's.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|code| code.as_str() == name)
    }

    /// The HTTP status it answers with.
    pub const fn status(self) -> u16 {
        match self {
            Self::BadRequest | Self::InvalidJson => 400,
            Self::Unauthenticated => 401,
            Self::Forbidden | Self::NotAssignee => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::AlreadyExists
            | Self::InvalidTransition
            | Self::Conflict
            | Self::CorruptHistory => 409,
            Self::PayloadTooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::ValidationFailed => 422,
            Self::Internal => 500,
            Self::ProjectionLagging | Self::Unavailable | Self::Overloaded => 503,
        }
    }

    /// Answered when the request may succeed if sent again shortly (503, with `Retry-After`).
    pub const fn is_transient(self) -> bool {
        matches!(
            self,
            Self::ProjectionLagging | Self::Unavailable | Self::Overloaded
        )
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

// Written by hand rather than derived so that the OpenAPI document keeps the component's name (`Code`)
// and description it had when the API owned the table.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for ErrorCode {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .enum_values(Some(Self::ALL.map(ErrorCode::as_str)))
            .description(Some(
                "The error's stable code (docs/api.md lists each with its status).",
            ))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for ErrorCode {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("Code")
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    #[test]
    fn each_name_parses_back_and_serializes_as_itself() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::json!(code.as_str())
            );
        }
        assert_eq!(ErrorCode::parse("teapot"), None);
    }

    #[test]
    fn the_transient_codes_are_the_503s() {
        for code in ErrorCode::ALL {
            assert_eq!(code.is_transient(), code.status() == 503, "{code}");
        }
    }
}
