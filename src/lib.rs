//! switchyard: a replication-aware PostgreSQL proxy and load balancer.
//!
//! The crate is a library plus a thin binary (`src/main.rs`) so that integration tests and the
//! demo start the same components the daemon runs. Data flows listener → session (startup,
//! auth, relay) → pool → server; the cluster monitor publishes which backend is primary.

pub mod admin;
pub mod app;
pub mod auth;
pub mod balance;
pub mod catalog;
pub mod cluster;
pub mod config;
pub mod localpg;
pub mod metrics;
pub mod net;
pub mod pause;
pub mod peering;
pub mod pool;
pub mod protocol;
pub mod ryw;
pub mod server;
pub mod session;
pub mod sql;
