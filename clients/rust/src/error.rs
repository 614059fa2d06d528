//! What a call to Hive's API can fail with: Hive's refusal (its error code, status, message and
//! `Retry-After`), an API that cannot be reached, or an answer that is not what the API promises.

use std::time::Duration;

use hive_events::wire::ErrorCode;
use serde_json::Value;

/// An error code as Hive answered it: one of [`ErrorCode`], or one this client does not know (a newer
/// API's, or a proxy's answer without one), kept as it came.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Code {
    /// One of Hive's codes.
    Known(ErrorCode),
    /// A code this client does not know, or `""` when the answer held none.
    Unknown(String),
}

impl Code {
    /// The code named `name`.
    pub fn parse(name: &str) -> Self {
        ErrorCode::parse(name).map_or_else(|| Self::Unknown(name.to_owned()), Self::Known)
    }

    /// The code as Hive wrote it.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Known(code) => code.as_str(),
            Self::Unknown(name) => name,
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<ErrorCode> for Code {
    fn eq(&self, other: &ErrorCode) -> bool {
        matches!(self, Self::Known(code) if code == other)
    }
}

/// A call to Hive's API that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Hive answered with an error.
    #[error("{status} {code}: {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// Hive's error code.
        code: Code,
        /// What Hive said.
        message: String,
        /// How long Hive asked the caller to wait before trying again (`Retry-After`), if it did.
        retry_after: Option<Duration>,
    },
    /// Hive could not be reached, or the connection broke before its answer was read.
    #[error("cannot reach hive at {url}: {source}")]
    Unreachable {
        /// The URL called.
        url: String,
        /// Why.
        source: reqwest::Error,
    },
    /// Hive answered, not as its API says it does (a body that is not JSON, a field missing).
    #[error("unexpected answer from {url}: {reason}")]
    BadAnswer {
        /// The URL called.
        url: String,
        /// What was wrong with it.
        reason: String,
    },
}

impl ClientError {
    /// The HTTP status Hive answered, if it answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Refused { status, .. } => Some(*status),
            Self::Unreachable { .. } | Self::BadAnswer { .. } => None,
        }
    }

    /// Hive's error code, if it answered with an error.
    pub fn code(&self) -> Option<&Code> {
        match self {
            Self::Refused { code, .. } => Some(code),
            Self::Unreachable { .. } | Self::BadAnswer { .. } => None,
        }
    }

    /// Hive answered with `code`.
    pub fn is(&self, code: ErrorCode) -> bool {
        self.code().is_some_and(|c| *c == code)
    }

    /// How long Hive asked to wait before trying again, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Refused { retry_after, .. } => *retry_after,
            Self::Unreachable { .. } | Self::BadAnswer { .. } => None,
        }
    }

    /// Hive refused a report because the task is not this agent's to run any more: assigned to
    /// another (403 `not_assignee`), or no longer running (409 `invalid_transition`).
    pub fn no_longer_ours(&self) -> bool {
        self.is(ErrorCode::NotAssignee) || self.is(ErrorCode::InvalidTransition)
    }

    /// Worth sending again, under the same idempotency key: Hive was unreachable, the connection
    /// broke, or Hive said it could not answer now (429; 503 with `Retry-After` or one of its
    /// transient codes; a gateway's 502 or 504).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::BadAnswer { .. } => false,
            Self::Refused {
                status,
                code,
                retry_after,
                ..
            } => match status {
                429 | 502 | 504 => true,
                503 => retry_after.is_some() || matches!(code, Code::Known(c) if c.is_transient()),
                _ => false,
            },
        }
    }

    /// The error an answer of `status` with `body` and `Retry-After: retry_after` carries.
    pub(crate) fn refused(status: u16, body: &[u8], retry_after: Option<&str>) -> Self {
        let json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let error = &json["error"];
        let message = match error["message"].as_str() {
            Some(message) => message.to_owned(),
            // Not Hive's error body (a proxy's page, say): what it said, briefly.
            None => String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
        };
        Self::Refused {
            status,
            code: Code::parse(error["code"].as_str().unwrap_or("")),
            message,
            retry_after: retry_after.and_then(parse_retry_after),
        }
    }
}

/// A `Retry-After` value in seconds (Hive sends no dates; a date is ignored, and back-off applies).
fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hives_error_body_gives_its_code_message_and_retry_after() {
        let body = br#"{"error":{"code":"overloaded","message":"busy"}}"#;
        let e = ClientError::refused(503, body, Some("1"));
        assert!(e.is(ErrorCode::Overloaded));
        assert_eq!(e.status(), Some(503));
        assert_eq!(e.retry_after(), Some(Duration::from_secs(1)));
        assert!(e.is_transient());
        assert_eq!(e.to_string(), "503 overloaded: busy");
    }

    #[test]
    fn an_unknown_code_is_kept() {
        let body = br#"{"error":{"code":"quota_exceeded","message":"later"}}"#;
        let e = ClientError::refused(409, body, None);
        assert_eq!(e.code(), Some(&Code::Unknown("quota_exceeded".into())));
        assert!(!e.is_transient());
    }

    #[test]
    fn a_body_that_is_not_hives_is_the_message() {
        let e = ClientError::refused(502, b"<html>bad gateway</html>", None);
        assert_eq!(e.code(), Some(&Code::Unknown(String::new())));
        assert!(e.to_string().contains("bad gateway"));
        assert!(e.is_transient());
    }

    #[test]
    fn refusals_of_the_request_itself_are_not_retried() {
        for (status, code) in [
            (409, "conflict"),
            (422, "validation_failed"),
            (500, "internal"),
        ] {
            let body = format!(r#"{{"error":{{"code":"{code}","message":"no"}}}}"#);
            assert!(!ClientError::refused(status, body.as_bytes(), None).is_transient());
        }
        // A 503 that is not one of Hive's transient refusals (an unhealthy /health) neither.
        assert!(!ClientError::refused(503, br#"{"status":"unhealthy"}"#, None).is_transient());
    }

    #[test]
    fn retry_after_is_seconds() {
        assert_eq!(parse_retry_after(" 2 "), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn a_report_on_a_task_no_longer_ours() {
        let body = br#"{"error":{"code":"not_assignee","message":"no"}}"#;
        assert!(ClientError::refused(403, body, None).no_longer_ours());
    }
}
