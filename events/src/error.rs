//! The three ways the domain says no: a command refused by a rule ([`DomainError`]), an event that does
//! not fit the state it is folded onto ([`FoldError`]), and stored bytes that are not a known event
//! ([`DecodeError`]).

use thiserror::Error;

/// A command refused by the domain's rules. Each maps to a 4xx answer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DomainError {
    /// A field of the command is not acceptable.
    #[error("{field}: {message}")]
    Invalid {
        /// The field at fault.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The aggregate the command is for does not exist.
    #[error("{aggregate} not found")]
    NotFound {
        /// Which kind of aggregate.
        aggregate: &'static str,
    },
    /// A create command for an aggregate that already exists.
    #[error("{aggregate} already exists")]
    AlreadyExists {
        /// Which kind of aggregate.
        aggregate: &'static str,
    },
    /// The command is not allowed in the aggregate's current state.
    #[error("cannot {command} a {aggregate} that is {state}")]
    InvalidTransition {
        /// Which kind of aggregate.
        aggregate: &'static str,
        /// The command's name.
        command: &'static str,
        /// The state the aggregate is in.
        state: &'static str,
    },
    /// Only the agent the task is assigned to may report on it.
    #[error("task is not assigned to this agent")]
    NotAssignee,
    /// A report about an attempt of a task that is over: the task was taken back and assigned again.
    #[error("attempt {attempt} of the task is over (it is in attempt {current})")]
    AttemptOver {
        /// The attempt the report is about.
        attempt: u32,
        /// The task's attempt now.
        current: u32,
    },
}

impl DomainError {
    /// An [`DomainError::Invalid`] for `field`.
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            message: message.into(),
        }
    }
}

/// An event that cannot be folded onto the state it follows: the log holds an impossible transition.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{event} cannot follow a {aggregate} that is {state}")]
pub struct FoldError {
    /// Which kind of aggregate.
    pub aggregate: &'static str,
    /// The event's type.
    pub event: &'static str,
    /// The state it was folded onto (`absent` for none).
    pub state: &'static str,
}

/// Stored bytes that are not a known event.
#[derive(Debug, Error)]
pub enum DecodeError {
    /// Not JSON, or not an envelope.
    #[error("malformed envelope: {0}")]
    Malformed(#[source] serde_json::Error),
    /// The event type is not one this version of Hive knows.
    #[error("unknown event type {event_type:?} for {aggregate}")]
    UnknownType {
        /// The aggregate named by the envelope.
        aggregate: &'static str,
        /// The type named by the envelope.
        event_type: String,
    },
    /// The schema version is newer than this version of Hive, or has no upcaster.
    #[error("unsupported schema_version {version} of {event_type}")]
    UnsupportedVersion {
        /// The type named by the envelope.
        event_type: String,
        /// The version named by the envelope.
        version: u16,
    },
    /// The `data` does not match the event type's schema.
    #[error("bad data for {event_type}: {source}")]
    BadData {
        /// The type named by the envelope.
        event_type: String,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// The envelope's aggregate or id disagrees with the subject it was stored on.
    #[error("envelope names {envelope} but the subject is {subject}")]
    WrongSubject {
        /// What the envelope says.
        envelope: String,
        /// The subject it was stored on.
        subject: String,
    },
}
