//! The read models of Hive as sea-orm entities: `agents`, `tasks`, `projects`, the `status_counts` that
//! answer `/status` without a scan, `agent_tasks` (the tasks each agent ever held), the
//! `projection_checkpoints` each projector commits with its rows, and the `dead_letters` of events
//! that could not be applied. No logic lives here: rows are written by the projector (which owns the
//! mapping from the domain's folded state) and read by the API.
#![allow(missing_docs)] // entity fields are documented by the migrations that create them

pub mod agent_tasks;
pub mod agents;
pub mod dead_letters;
pub mod projection_checkpoints;
pub mod projects;
pub mod status_counts;
pub mod tasks;
