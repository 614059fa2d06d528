//! The event contract and the pure domain of Hive.
//!
//! Everything that happens to an agent, a task or a project is an event in the log. This crate says what
//! those events are and how they are stored ([`envelope`]), which subject each aggregate instance lives on
//! ([`subject`]), and the rules of each aggregate ([`agent`], [`task`], [`project`]): a state, a pure fold
//! (`apply`) and a pure decision (`decide`) with an explicit transition table. The same fold serves the
//! command handler, the projector, the scheduler, `verify` and audit replay.
//!
//! No I/O happens here: time, ids and outside facts come in through the commands, so every rule is a plain
//! function that is tested given/when/then. Old stored versions are upcast on read ([`envelope::decode`]).

pub mod agent;
pub mod aggregate;
pub mod contract;
pub mod envelope;
pub mod error;
pub mod ids;
pub mod labels;
pub mod policy;
pub mod project;
pub mod replay;
pub mod subject;
pub mod task;
pub mod values;
pub mod wire;

pub use aggregate::{Aggregate, AggregateKind};
pub use envelope::{Actor, DomainEvent, Envelope, EventMeta};
pub use error::{DecodeError, DomainError, FoldError};
pub use ids::{AgentId, EventId, ProjectId, TaskId};
pub use labels::Labels;
pub use policy::Policy;
pub use values::{Capability, Priority};
