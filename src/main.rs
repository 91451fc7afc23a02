//! Entry point: parse flags, load config, then serve or run a subcommand.
//! Exit codes: 0 ok, 1 runtime failure, 2 bad usage or bad config.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

use podstat::agent::Agent;
use podstat::cli::{Cli, Command};
use podstat::config::{self, Config, MetadataSource};

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

/// What the metadata source needs from the environment (the Downward API's NODE_NAME and
/// HOST_IP) when the config leaves it out: checked at start and by --check-config alike.
fn metadata_source_check(config: &Config) -> Result<(), String> {
    match config.kubernetes.source {
        MetadataSource::Kubelet => {
            podstat::meta::kubelet::kubelet_url(&config.kubernetes).map(|_| ())
        }
        #[cfg(feature = "apiserver")]
        MetadataSource::ApiServer => {
            podstat::meta::apiserver::node_name(&config.kubernetes).map(|_| ())
        }
        _ => Ok(()),
    }
}

fn main() -> ExitCode {
    podstat::malloc_tuning::apply();
    let cli = Cli::parse();
    if cli.print_default_config {
        print!("{}", config::DEFAULT_CONFIG);
        return ExitCode::SUCCESS;
    }
    if let Some(path) = &cli.check_config {
        return match config::load(path) {
            Ok(c) => match podstat::policy::Policy::new(&c)
                .map_err(|e| e.to_string())
                .and_then(|_| metadata_source_check(&c))
            {
                Ok(()) => {
                    println!("{}: ok", path.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("podstat: invalid config: {}: {e}", path.display());
                    ExitCode::from(2)
                }
            },
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
    if config.reader.keep_files_open && cli.command.is_none() {
        match podstat::reader::raise_nofile_limit() {
            Ok(limit) => tracing::info!(nofile = limit, "descriptor limit"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot raise RLIMIT_NOFILE; fewer cgroup files stay open")
            }
        }
    }
    if let Some(Command::Cardinality {
        url: Some(url),
        top,
    }) = &cli.command
    {
        return match fetch_plain(url) {
            Ok(body) => {
                print!(
                    "{}",
                    podstat::expose::cardinality::report(&body).render(*top)
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("podstat: cannot read {url}: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let Err(e) = metadata_source_check(&config) {
        eprintln!("podstat: invalid config: {e}");
        return ExitCode::from(2);
    }
    let agent = match Agent::new(&config) {
        Ok(a) => Arc::new(a),
        Err(e @ podstat::agent::StartError::Config(_)) => {
            eprintln!("podstat: {e}");
            return ExitCode::from(2);
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::FAILURE;
        }
    };
    if matches!(
        cli.command,
        Some(Command::Once | Command::Cardinality { .. })
    ) {
        // One collection: fetch the pod metadata first so the labels are filled.
        if config.kubernetes.source != MetadataSource::None {
            if let Err(e) = fetch_metadata_once(&agent, &config) {
                tracing::warn!(error = %e, "no pod metadata; labels stay empty");
            }
        }
    }
    if let Some(Command::Cardinality { top, .. }) = cli.command {
        let body = String::from_utf8_lossy(&agent.scrape().to_vec()).into_owned();
        print!(
            "{}",
            podstat::expose::cardinality::report(&body).render(top)
        );
        return ExitCode::SUCCESS;
    }
    if let Some(Command::Once) = cli.command {
        let rendered = agent.scrape();
        let mut out = std::io::stdout().lock();
        let mut chunks = rendered.chunks();
        let mut chunk = Vec::new();
        let written = (|| {
            while chunks.next_chunk(&mut chunk) {
                out.write_all(&chunk)?;
                chunk.clear();
            }
            out.flush()
        })();
        return match written {
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

fn small_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn fetch_metadata_once(agent: &Agent, config: &Config) -> anyhow::Result<()> {
    let runtime = small_runtime()?;
    #[cfg(feature = "apiserver")]
    if config.kubernetes.source == MetadataSource::ApiServer {
        // Run the watch until its first list is in, bounded by the request timeout.
        let watch = podstat::meta::apiserver::run(
            Arc::clone(agent.meta()),
            config.kubernetes.clone(),
            config.labels.clone(),
            config.limits.max_pod_labels,
        );
        let meta = Arc::clone(agent.meta());
        return runtime.block_on(async move {
            let listed = async {
                while meta.health().last_success.is_none() {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            };
            tokio::select! {
                () = watch => anyhow::bail!("the pod watch ended"),
                r = tokio::time::timeout(config.kubernetes.request_timeout.0, listed) => {
                    r.map_err(|_| anyhow::anyhow!("no pod list from the API server in time"))
                }
            }
        });
    }
    runtime.block_on(async {
        let mut client = podstat::meta::kubelet::KubeletClient::new(&config.kubernetes)?;
        podstat::meta::kubelet::refresh_once(
            &mut client,
            agent.meta(),
            &config.labels,
            config.limits.max_pod_labels,
        )
        .await?;
        Ok(())
    })
}

/// GET over plain HTTP (a podstat on loopback), body as text.
fn fetch_plain(url: &str) -> anyhow::Result<String> {
    use anyhow::Context;
    use http_body_util::BodyExt;
    let uri: hyper::Uri = url.parse().context("bad URL")?;
    small_runtime()?.block_on(async {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Empty<bytes::Bytes>>();
        let response = tokio::time::timeout(std::time::Duration::from_secs(30), client.get(uri))
            .await
            .context("timed out")??;
        anyhow::ensure!(response.status().is_success(), "HTTP {}", response.status());
        let body = response.into_body().collect().await?.to_bytes();
        Ok(String::from_utf8_lossy(&body).into_owned())
    })
}

fn serve(agent: Arc<Agent>, config: &Config) -> anyhow::Result<()> {
    use anyhow::Context;
    // One thread serves HTTP, collects for /metrics (see `server::handle` for why not on the
    // blocking pool) and runs the metadata source; the pool decodes pod lists and warms up.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(4)
        .thread_keep_alive(std::time::Duration::from_secs(3600))
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.server.listen))?;
        tracing::info!(listen = %listener.local_addr()?, "serving /metrics");
        match config.kubernetes.source {
            MetadataSource::None => {}
            MetadataSource::Kubelet => {
                tokio::spawn(podstat::meta::kubelet::run(
                    Arc::clone(agent.meta()),
                    config.kubernetes.clone(),
                    config.labels.clone(),
                    config.limits.max_pod_labels,
                ));
            }
            #[cfg(feature = "apiserver")]
            MetadataSource::ApiServer => {
                tokio::spawn(podstat::meta::apiserver::run(
                    Arc::clone(agent.meta()),
                    config.kubernetes.clone(),
                    config.labels.clone(),
                    config.limits.max_pod_labels,
                ));
            }
            #[cfg(not(feature = "apiserver"))]
            MetadataSource::ApiServer => {}
        }
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
