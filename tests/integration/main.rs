//! Hive's integration tests, one binary: real nats-server and PostgreSQL, a fresh database and NATS
//! namespace per test.

mod agents;
mod api;
mod api_limits;
mod audit;
mod auth;
mod backup;
mod browser;
mod chaos;
mod client;
mod cluster;
mod contract;
mod control;
mod dashboard;
mod dashboard_actions;
mod docs;
mod feed;
mod fuzz;
mod history;
mod leadership;
mod log;
mod metrics;
mod operator_cli;
mod orchestration;
mod privilege;
mod projector;
mod replay;
mod replicas;
mod restore;
mod runtime;
mod search;
mod snapshots;
mod standby;
mod supervision;
mod team;
mod topology;
