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
        localpg::SUPERUSER_PASSWORD
    ));
    text.push_str(&format!(
        "\n[admin]\nusers = [\"{}\"]\n",
        localpg::SUPERUSER
    ));
    let path = cluster.dir().join("switchyard.toml");
    if let Err(e) = std::fs::write(&path, &text) {
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
            localpg::SUPERUSER_PASSWORD
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
    drop(rt);
    eprintln!("stopping the demo cluster...");
    drop(cluster);
    code
}
