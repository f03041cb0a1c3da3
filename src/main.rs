//! The `switchyard` command: run the proxy, check a config, run a demo cluster, classify SQL.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod demo;

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "A replication-aware PostgreSQL proxy and load balancer"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Run {
        /// Configuration file.
        #[arg(long, short, default_value = "config/switchyard.toml")]
        config: PathBuf,
    },
    /// Validate a configuration file and print what it would do (exit 0 valid, 2 invalid).
    Check {
        /// Configuration file.
        #[arg(long, short, default_value = "config/switchyard.toml")]
        config: PathBuf,
    },
    /// Start a throwaway local primary and replicas with the proxy in front of them.
    Demo {
        /// Number of streaming replicas.
        #[arg(long, default_value_t = 2)]
        replicas: usize,
        /// Proxy port.
        #[arg(long, default_value_t = 6432)]
        port: u16,
        /// HTTP (metrics) port.
        #[arg(long, default_value_t = 9930)]
        http_port: u16,
    },
    /// Print where each SQL string would be routed: `replica` or `primary`, a tab, the reason.
    /// With no SQL arguments, reads statements from standard input (split on top-level `;`).
    Classify {
        /// Configuration file for write_functions/read_functions (optional).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// SQL strings.
        sql: Vec<String>,
    },
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SWITCHYARD_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// One thread (the default) runs every connection on a single event loop, like PgBouncer: no
/// cross-thread wakeups, which on a small machine shared with PostgreSQL is the fastest choice.
/// More workers use tokio's work-stealing scheduler (0 = one per CPU).
fn runtime(workers: usize) -> tokio::runtime::Runtime {
    if workers == 1 {
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
    }
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if workers > 1 {
        b.worker_threads(workers);
    }
    b.enable_all().build().expect("tokio runtime")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => {
            // The warnings `run` would log about this configuration (on stderr).
            init_tracing();
            match switchyard::config::load(&config) {
                Ok(c) => {
                    print!("{}", c.describe());
                    println!("configuration {} is valid", config.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("invalid configuration: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Run { config } => {
            init_tracing();
            // A SIGHUP before the server takes the signals over (while the configuration is
            // read) must not end the process, as its default action would; from then on it
            // reloads.
            // SAFETY: setting a signal's disposition to SIG_IGN, before any thread starts.
            unsafe {
                libc::signal(libc::SIGHUP, libc::SIG_IGN);
            }
            let loaded = match switchyard::config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!("invalid configuration: {e}");
                    return ExitCode::from(2);
                }
            };
            let rt = runtime(loaded.config.workers);
            let code = rt.block_on(async move {
                match switchyard::server::Server::bind(loaded, Some(config)).await {
                    Ok(server) => {
                        server.run().await;
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        tracing::error!("{e}");
                        ExitCode::from(1)
                    }
                }
            });
            // Not waiting for blocking jobs still running (a host-name lookup the resolver
            // does not answer, a reload reading a file on hung storage): dropping the runtime
            // would wait for them without limit.
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
            code
        }
        Command::Demo {
            replicas,
            port,
            http_port,
        } => {
            init_tracing();
            demo::run(replicas, port, http_port)
        }
        Command::Classify { config, sql } => classify(config, sql),
    }
}

fn classify(config: Option<PathBuf>, sql: Vec<String>) -> ExitCode {
    let classifier = match config {
        Some(path) => match switchyard::config::load(&path) {
            Ok(c) => switchyard::sql::Classifier::new(
                &c.config.routing.write_functions,
                &c.config.routing.read_functions,
            ),
            Err(e) => {
                eprintln!("invalid configuration: {e}");
                return ExitCode::from(2);
            }
        },
        None => switchyard::sql::Classifier::default(),
    };
    use std::io::Write;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if sql.is_empty() {
        let mut input = String::new();
        if std::io::Read::read_to_string(&mut std::io::stdin(), &mut input).is_err() {
            eprintln!("standard input is not UTF-8 text");
            return ExitCode::from(2);
        }
        for stmt in switchyard::sql::split_statements(&input) {
            let _ = writeln!(out, "{}", switchyard::sql::classify_line(&classifier, stmt));
        }
    } else {
        for s in &sql {
            let _ = writeln!(out, "{}", switchyard::sql::classify_line(&classifier, s));
        }
    }
    ExitCode::SUCCESS
}
