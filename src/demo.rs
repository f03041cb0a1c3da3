//! `switchyard demo`: a real local primary and streaming replicas behind the proxy, removed
//! again on Ctrl-C or SIGTERM.

use std::process::ExitCode;

use switchyard::localpg::{self, ClusterOptions, LocalCluster, PgBinaries};

pub fn run(replicas: usize, port: u16, http_port: u16) -> ExitCode {
    if let Err(e) = PgBinaries::find() {
        eprintln!("{e}");
        return ExitCode::from(1);
    }
    eprintln!("starting a primary and {replicas} streaming replica(s)...");
    let cluster = match LocalCluster::start(ClusterOptions {
        replicas,
        ..Default::default()
    }) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("could not start the demo cluster: {e}");
            return ExitCode::from(1);
        }
    };
    // The superuser's password is this run's own: the fixed one the cluster starts with
    // would let any local user in as superuser (and run programs with `COPY ... TO
    // PROGRAM`) while the demo runs, directly or through the proxy.
    let admin_password = format!("{:016x}", rand::random::<u64>());
    if let Err(e) = cluster.primary().psql(&format!(
        "ALTER ROLE {} PASSWORD '{admin_password}'",
        localpg::SUPERUSER
    )) {
        eprintln!("could not set the demo superuser's password: {e}");
        return ExitCode::from(1);
    }
    // The proxy's unix socket goes into the cluster's directory, removed with it.
    let socket_dir = cluster.dir().display().to_string();
    let mut text = format!(
        "listen = \"127.0.0.1:{port}\"\nhttp_listen = \"127.0.0.1:{http_port}\"\nunix_socket_dir = {socket_dir:?}\npool_mode = \"transaction\"\nshutdown_timeout = \"5s\"\n\n[health]\ninterval = \"500ms\"\n"
    );
    for n in cluster.nodes() {
        text.push_str(&format!(
            "\n[[backends]]\nname = \"{}\"\naddress = \"{}\"\n",
            n.name(),
            n.addr()
        ));
    }
    text.push_str(&format!(
        "\n[[users]]\nname = \"{}\"\npassword = \"{}\"\n\n[[users]]\nname = \"{}\"\npassword = \"{}\"\n",
        localpg::APP_USER,
        localpg::APP_PASSWORD,
        localpg::SUPERUSER,
        admin_password
    ));
    text.push_str(&format!(
        "\n[admin]\nusers = [\"{}\"]\n",
        localpg::SUPERUSER
    ));
    let path = cluster.dir().join("switchyard.toml");
    // Only this user may read it: it holds the superuser's password.
    let written = {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
    };
    if let Err(e) = written {
        eprintln!("cannot write {}: {e}", path.display());
        return ExitCode::from(1);
    }
    let loaded = match switchyard::config::load(&path) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("demo configuration is invalid: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let nodes: Vec<(String, String, String)> = cluster
        .nodes()
        .iter()
        .map(|n| {
            (
                n.name().to_owned(),
                n.addr(),
                n.data_dir().display().to_string(),
            )
        })
        .collect();
    let code = rt.block_on(async move {
        let server = match switchyard::server::Server::bind(loaded, Some(path.clone())).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(1);
            }
        };
        // (The ports bound: 0 asks the system for free ones.)
        let port = server.local_addr().port();
        let http_port = server.http_addr().map_or(http_port, |a| a.port());
        println!();
        println!("switchyard demo is running: 1 primary + {replicas} replica(s) behind the proxy.");
        for (name, addr, dir) in &nodes {
            println!("  {name} at {addr} (data in {dir})");
        }
        println!();
        println!(
            "Connect:  psql \"host=127.0.0.1 port={port} user={} password={} dbname={}\"",
            localpg::APP_USER,
            localpg::APP_PASSWORD,
            localpg::APP_DB
        );
        println!(
            "Local:    psql \"host={socket_dir} port={port} user={} password={} dbname={}\"  (the unix socket)",
            localpg::APP_USER,
            localpg::APP_PASSWORD,
            localpg::APP_DB
        );
        println!(
            "Admin:    psql \"host=127.0.0.1 port={port} user={} password={} dbname=switchyard\" -c 'SHOW BACKENDS'",
            localpg::SUPERUSER,
            admin_password
        );
        println!("Metrics:  curl http://127.0.0.1:{http_port}/metrics");
        println!("Status:   curl http://127.0.0.1:{http_port}/status");
        println!(
            "Config:   {}  (edit and `kill -HUP {}` to reload)",
            path.display(),
            std::process::id()
        );
        println!("Press Ctrl-C to stop; everything is removed.");
        server.run().await;
        ExitCode::SUCCESS
    });
    // (Not waiting without limit for blocking jobs still running: see main.rs.)
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    eprintln!("stopping the demo cluster...");
    drop(cluster);
    code
}
