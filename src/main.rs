//! Entry point: parse flags, load config, then serve or run a subcommand.
//! Exit codes: 0 ok, 1 runtime failure, 2 bad usage or bad config.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

use podstat::agent::Agent;
use podstat::cli::{Cli, Command};
use podstat::config::{self, Config};

fn load_config(cli: &Cli) -> Result<Config, ExitCode> {
    let loaded = match &cli.config {
        Some(path) => config::load(path),
        None => config::default_config(),
    };
    match loaded {
        Ok(mut c) => {
            cli.apply(&mut c);
            Ok(c)
        }
        Err(e) => {
            eprintln!("podstat: invalid config: {e}");
            Err(ExitCode::from(2))
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.print_default_config {
        print!("{}", config::DEFAULT_CONFIG);
        return ExitCode::SUCCESS;
    }
    if let Some(path) = &cli.check_config {
        return match config::load(path) {
            Ok(_) => {
                println!("{}: ok", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("podstat: invalid config: {e}");
                ExitCode::from(2)
            }
        };
    }
    if let Some(Command::MetricsTable) = cli.command {
        print!("{}", podstat::expose::names::markdown_table());
        return ExitCode::SUCCESS;
    }
    let config = match load_config(&cli) {
        Ok(c) => c,
        Err(code) => return code,
    };
    podstat::logging::init(&config.log);
    let agent = match Agent::new(&config) {
        Ok(a) => Arc::new(a),
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    if let Some(Command::Once) = cli.command {
        let rendered = agent.scrape();
        let mut out = std::io::stdout().lock();
        return match out.write_all(&rendered.body).and_then(|()| out.flush()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("podstat: cannot write output: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match serve(agent, &config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "podstat stopped");
            ExitCode::FAILURE
        }
    }
}

fn serve(agent: Arc<Agent>, config: &Config) -> anyhow::Result<()> {
    use anyhow::Context;
    // Two workers: HTTP is light and collection runs on the blocking pool.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(4)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.server.listen))?;
        tracing::info!(listen = %listener.local_addr()?, "serving /metrics");
        // First discovery right away, so /readyz turns ready without waiting for a scrape.
        let warm = Arc::clone(&agent);
        tokio::task::spawn_blocking(move || {
            warm.scrape();
        });
        podstat::expose::server::serve(agent, listener, config.server.gzip, shutdown_signal())
            .await
            .context("server failed")
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
        }
        _ => {
            tracing::warn!("cannot install signal handlers; stop with SIGKILL");
            std::future::pending::<()>().await;
        }
    }
}
