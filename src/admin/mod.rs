//! Operator access: the HTTP endpoints (`/metrics`, `/livez`, `/readyz`, `/status`) and the
//! admin console, which speaks the PostgreSQL protocol (`psql -d switchyard`, `SHOW POOLS`).

mod commands;
pub mod console;
mod extended;
mod http;
mod table;
mod views;

pub use http::{serve, status_json};
