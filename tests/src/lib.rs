//! The test harness of Hive's integration tests. One real nats-server and one real PostgreSQL per test
//! binary ([`servers`], started on first use and killed with the process); each test makes a
//! [`World`] ([`world`]): its own database and its own NATS namespace (stream `<NS>_EVENTS`, subjects
//! `<ns>.events.>`) on them, so tests never see each other's data. On a world a test starts a hive
//! in-process ([`TestHive`], [`http`]) or the real binary as processes ([`process`], on a JetStream
//! [`cluster`] if it likes), talks to it over HTTP ([`api`], [`sse`], [`exposition`]; through a
//! [`proxy`] that can cut connections, if it likes), fills its log
//! ([`scenario`] generated, [`scripted`] fixed), and waits for what it expects ([`wait`]).

pub mod api;
pub mod cluster;
pub mod exposition;
pub mod http;
pub mod process;
pub mod proxy;
pub mod scenario;
pub mod scripted;
pub mod servers;
pub mod sse;
pub mod wait;
pub mod world;

pub use http::{TestHive, authorized_client, json};
pub use process::{AgentProcess, processes_with};
pub use scenario::scenario;
pub use servers::{agent_program, init_tracing, test_tools};
pub use sse::Assignments;
pub use wait::{eventually, until};
pub use world::{World, issue_token};
