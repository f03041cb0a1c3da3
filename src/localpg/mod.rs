//! Throwaway local PostgreSQL clusters: one primary plus N streaming replicas on 127.0.0.1,
//! used by `switchyard demo` and by the integration tests.
//!
//! ```no_run
//! use switchyard::localpg::{ClusterOptions, LocalCluster};
//! let cluster = LocalCluster::start(ClusterOptions::default()).unwrap();
//! println!("primary at {}", cluster.primary().addr());
//! cluster.primary().psql("CREATE TABLE t (id int)").unwrap();
//! cluster.wait_replicas_caught_up(std::time::Duration::from_secs(10)).unwrap();
//! // dropping the cluster stops every node and removes its directory
//! ```
//!
//! Everything here is blocking (`std::process`); call it from `spawn_blocking` or a plain
//! thread when inside an async runtime if blocking the executor matters.
//!
//! When the current process runs as root, every server binary runs as the `postgres` OS user
//! (PostgreSQL refuses to run as root) and the cluster directory is owned by that user.
//!
//! Set `SWITCHYARD_KEEP_PGDIR=1` to keep cluster directories (data dirs and `server.log`s)
//! after the cluster is dropped, for debugging. Set `SWITCHYARD_PG_BINDIR` to force the
//! directory PostgreSQL's binaries are taken from.

mod binaries;
mod cluster;
mod node;
mod util;

pub use binaries::PgBinaries;
pub use cluster::{ClusterOptions, LocalCluster};
pub use node::{Lsn, Node};

/// Superuser created by initdb; password set during bootstrap.
pub const SUPERUSER: &str = "postgres";
pub const SUPERUSER_PASSWORD: &str = "postgres";
/// Application role (SCRAM-SHA-256 password), owner of [`APP_DB`].
pub const APP_USER: &str = "app";
pub const APP_PASSWORD: &str = "app";
/// Database owned by [`APP_USER`].
pub const APP_DB: &str = "app";
/// Role whose password is stored as MD5; pg_hba requires `md5` auth for it.
pub const MD5_USER: &str = "md5_user";
pub const MD5_PASSWORD: &str = "md5pass";
/// Role that pg_hba authenticates with cleartext `password` auth.
pub const PLAIN_USER: &str = "plain_user";
pub const PLAIN_PASSWORD: &str = "plainpass";
/// Role without a password; pg_hba trusts it on 127.0.0.1.
pub const TRUST_USER: &str = "trust_user";
/// A second ordinary SCRAM role.
pub const OTHER_USER: &str = "other";
pub const OTHER_PASSWORD: &str = "other";

/// pg_hba.conf written into every node (replaces the generated one).
pub const PG_HBA_CONF: &str = "\
local all all trust
local replication all trust
host replication all 127.0.0.1/32 trust
host all trust_user 127.0.0.1/32 trust
host all md5_user 127.0.0.1/32 md5
host all plain_user 127.0.0.1/32 password
host all all 127.0.0.1/32 scram-sha-256
";

/// Errors from starting or driving a local cluster. Messages are meant to be read by a
/// person: they include the command that failed, its stderr and the tail of the server log.
#[derive(Debug, thiserror::Error)]
pub enum LocalPgError {
    #[error("PostgreSQL server binaries not found: {0}")]
    BinariesNotFound(String),
    #[error("{0}")]
    NoServerUser(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("timed out after {secs}s waiting for {what}{detail}")]
    Timeout {
        what: String,
        secs: u64,
        detail: String,
    },
    #[error("SQL on {node} failed: {sql}\n{detail}")]
    Sql {
        node: String,
        sql: String,
        detail: String,
    },
}

impl LocalPgError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        LocalPgError::Io {
            context: context.into(),
            source,
        }
    }
}
