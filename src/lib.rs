//! switchyard: a replication-aware PostgreSQL proxy and load balancer.
//!
//! The crate is a library plus a thin binary (`src/main.rs`) so that integration tests and the
//! demo can start the same components the daemon runs.

pub mod auth;
pub mod config;
pub mod localpg;
pub mod sql;
