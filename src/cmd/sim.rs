//! `sim`: runs the simulator in the foreground (the in-process API is
//! `server::sim::Simulator`). Owns only argument handling and the runtime.

use anyhow::{bail, Context};

use crate::cli::SimArgs;
use crate::cmd::exit;
use crate::server::sim::{SimConfig, Simulator};

pub fn run(args: SimArgs) -> anyhow::Result<i32> {
    if !args.listen.ip().is_loopback() {
        bail!(
            "--listen {}: the simulator (and its unauthenticated /_sim/ control routes) listens on loopback only, e.g. 127.0.0.1:8080",
            args.listen
        );
    }
    let mut config = match &args.config {
        Some(path) => SimConfig::from_toml_file(path)?,
        None => SimConfig::default(),
    };
    if let Some(seed) = args.seed {
        config.seed = seed;
    }
    if let Some(ms) = args.settle_delay_ms {
        config.settle_delay_ms = ms;
    }
    if args.lenient_signatures {
        config.lenient_signatures = true;
    }
    for setting in &args.faults {
        config
            .faults
            .set(setting)
            .with_context(|| format!("--fault {setting}"))?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let handle = Simulator::start_on(listener, config).await?;
        println!("{}", handle.base_url());
        crate::say!(
            "simulator ready: base URL {} ; control routes under {}/_sim/ ; Ctrl-C stops",
            handle.base_url(),
            handle.root_url()
        );
        tokio::signal::ctrl_c()
            .await
            .context("cannot wait for Ctrl-C")?;
        handle.shutdown().await;
        anyhow::Ok(exit::OK)
    })
}
