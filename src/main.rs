//! Entry point: parse flags, load config, then serve or run a subcommand.
//! Exit codes: 0 ok, 1 runtime failure, 2 bad usage or bad config.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

use podstat::agent::Agent;
use podstat::cli::{Cli, Command};
use podstat::config::{self, Config};
use podstat::http::connections::{Connections, Limits};
use podstat::http::delegated::DelegatedAuth;
use podstat::http::server::Server;
use podstat::http::webconfig::{BasicAuth, WebConfigWatch};

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

/// Every check the agent makes of its config before serving, for --check-config (so "ok"
/// means the agent will start) and for a reload, which puts the filters it built in force.
fn full_check(config: &Config) -> Result<podstat::policy::Policy, String> {
    let policy = podstat::policy::Policy::new(config)?;
    podstat::meta::source::check(config)?;
    WebConfigWatch::new(&config.server.web_config_file).map_err(|e| e.to_string())?;
    if config.server.kubernetes_auth {
        podstat::http::delegated::check(&config.kubernetes)?;
    }
    Ok(policy)
}

fn main() -> ExitCode {
    podstat::malloc_tuning::apply();
    let cli = Cli::parse();
    if cli.print_default_config {
        print!("{}", config::DEFAULT_CONFIG);
        return ExitCode::SUCCESS;
    }
    if let Some(path) = &cli.check_config {
        return check_config(path);
    }
    if let Some(Command::MetricsTable) = cli.command {
        print!("{}", podstat::exposition::names::markdown_table());
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
        return cardinality_of(url, *top);
    }
    let (agent, web) = match start(&config, cli.command.is_none()) {
        Ok(started) => started,
        Err(code) => return code,
    };
    if matches!(
        cli.command,
        Some(Command::Once | Command::Cardinality { .. })
    ) {
        // One collection: fetch the pod metadata first so the labels are filled (the source
        // decides; `none` fetches nothing).
        if let Err(e) = fetch_metadata_once(&agent, &config) {
            tracing::warn!(error = %e, "no pod metadata; labels stay empty");
        }
    }
    if let Some(Command::Cardinality { top, .. }) = cli.command {
        let body = String::from_utf8_lossy(&agent.scrape().to_vec()).into_owned();
        print!(
            "{}",
            podstat::exposition::cardinality::report(&body).render(top)
        );
        return ExitCode::SUCCESS;
    }
    if let Some(Command::Once) = cli.command {
        return print_once(&agent);
    }
    let cli = Arc::new(cli);
    let reload = move || -> Result<(Config, podstat::policy::Policy), String> {
        let path = cli
            .config
            .as_ref()
            .ok_or("podstat runs on its built-in config (no --config file)")?;
        let mut c = config::load(path).map_err(|e| e.to_string())?;
        cli.apply(&mut c);
        let policy = full_check(&c)?;
        Ok((c, policy))
    };
    match serve(agent, &config, web, reload) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "podstat stopped");
            ExitCode::FAILURE
        }
    }
}

/// The agent on a checked config, and the web config when it will serve (`serving`); the exit
/// code (2: the config, 1: anything else) when it cannot start.
fn start(config: &Config, serving: bool) -> Result<(Arc<Agent>, WebConfigWatch), ExitCode> {
    let invalid = |e: &dyn std::fmt::Display| {
        eprintln!("podstat: invalid config: {e}");
        ExitCode::from(2)
    };
    podstat::meta::source::check(config).map_err(|e| invalid(&e))?;
    let web = if serving {
        WebConfigWatch::new(&config.server.web_config_file).map_err(|e| invalid(&e))?
    } else {
        WebConfigWatch::none()
    };
    match Agent::new(config) {
        Ok(a) => Ok((Arc::new(a), web)),
        Err(e @ podstat::agent::StartError::Config(_)) => {
            eprintln!("podstat: {e}");
            Err(ExitCode::from(2))
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            Err(ExitCode::FAILURE)
        }
    }
}

/// `--check-config`: 0 when the file passes every check the agent makes at start, else 2.
fn check_config(path: &std::path::Path) -> ExitCode {
    match config::load(path) {
        Ok(c) => match full_check(&c) {
            Ok(_) => {
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
    }
}

/// `podstat cardinality --url`: the report of a running agent's /metrics.
fn cardinality_of(url: &str, top: usize) -> ExitCode {
    match fetch_plain(url) {
        Ok(body) => {
            print!(
                "{}",
                podstat::exposition::cardinality::report(&body).render(top)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("podstat: cannot read {url}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `podstat once`: one collection to stdout, chunk by chunk.
fn print_once(agent: &Agent) -> ExitCode {
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
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("podstat: cannot write output: {e}");
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
    small_runtime()?.block_on(podstat::meta::source::fetch_once(agent.meta(), config))
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

fn serve(
    agent: Arc<Agent>,
    config: &Config,
    web: WebConfigWatch,
    reload: impl Fn() -> Result<(Config, podstat::policy::Policy), String> + Send + 'static,
) -> anyhow::Result<()> {
    use anyhow::Context;
    // Two workers: a collection for /metrics runs on one (`server::run_blocking`) while the
    // other answers health probes and runs the metadata source; the blocking pool decodes pod
    // lists, warms up and takes over a worker's queue while it collects.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .thread_keep_alive(std::time::Duration::from_secs(3600))
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let listener = listen(config.server.listen)
            .with_context(|| format!("cannot listen on {}", config.server.listen))?;
        let server = http_server(&agent, config, web)?;
        tracing::info!(
            listen = %listener.local_addr()?,
            tls = server.web.current().tls.is_some(),
            basic_auth = server.web.current().auth_required(),
            kubernetes_auth = server.delegated.is_some(),
            "serving /metrics"
        );
        podstat::meta::source::spawn(agent.meta(), config);
        let (move_to, moves) = tokio::sync::mpsc::channel(1);
        tokio::spawn(reload_on_hangup(
            Arc::clone(&server),
            config.clone(),
            reload,
            move_to,
        ));
        // First discovery right away, so /readyz turns ready without waiting for a scrape.
        let warm = Arc::clone(&agent);
        tokio::task::spawn_blocking(move || {
            warm.scrape();
        });
        podstat::http::server::serve(server, listener, moves, shutdown_signal())
            .await
            .context("server failed")
    })
}

/// The HTTP server's shared state: its connection slots (whose counts the agent's
/// self-metrics report), web config and, with `kubernetes_auth`, the token reviewer.
fn http_server(
    agent: &Arc<Agent>,
    config: &Config,
    web: WebConfigWatch,
) -> anyhow::Result<Arc<Server>> {
    let delegated = if config.server.kubernetes_auth {
        Some(DelegatedAuth::new(&config.kubernetes).map_err(anyhow::Error::msg)?)
    } else {
        None
    };
    let connections = Connections::new(Limits {
        max: config.server.max_connections,
        header_timeout: config.server.header_read_timeout.0,
        idle_timeout: config.server.idle_timeout.0,
    });
    agent.report_connections(Arc::clone(&connections) as _);
    Ok(Arc::new(Server {
        agent: Arc::clone(agent),
        gzip: config.server.gzip,
        connections,
        web,
        auth: BasicAuth::default(),
        delegated,
    }))
}

/// SIGHUP: the config file is read and checked again (everything `--check-config` checks). A
/// config that fails is logged and the running one kept. One that passes puts its filters,
/// series budget, web config (TLS, users) and listen address in force at once, with no scrape
/// dropped (connections to the old address finish as they are); the sections that need a
/// restart (the other [server] keys, paths, collectors, discovery, the metadata source,
/// labels) are named in a warning if they changed.
async fn reload_on_hangup(
    server: Arc<Server>,
    mut running: Config,
    reload: impl Fn() -> Result<(Config, podstat::policy::Policy), String>,
    move_to: tokio::sync::mpsc::Sender<tokio::net::TcpListener>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot handle SIGHUP; config reloads need a restart");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the config");
        let mut next = match reload() {
            Ok((c, policy)) => {
                server.agent.replace_policy(policy);
                c
            }
            Err(e) => {
                tracing::error!(error = %e, "config not reloaded; the running config stays in force");
                continue;
            }
        };
        if !server.web.switch_to(&next.server.web_config_file) {
            next.server.web_config_file = running.server.web_config_file.clone();
        }
        if next.server.listen != running.server.listen {
            match listen(next.server.listen) {
                Ok(l) => {
                    let _ = move_to.send(l).await;
                }
                Err(e) => {
                    tracing::error!(listen = %next.server.listen, error = %e, "cannot listen on the new address; still on the old one");
                    next.server.listen = running.server.listen;
                }
            }
        }
        let restart = sections_needing_restart(&running, &next);
        if restart.is_empty() {
            tracing::info!("config reloaded");
        } else {
            tracing::warn!(
                sections = %restart.join(", "),
                "config reloaded: filters, max_series, the web config and listen are in force; these changed sections take effect at the next restart"
            );
        }
        running = next;
    }
}

/// The config sections that differ between `a` and `b` and are only read at start.
fn sections_needing_restart(a: &Config, b: &Config) -> Vec<&'static str> {
    let differs =
        |x: &dyn std::fmt::Debug, y: &dyn std::fmt::Debug| format!("{x:?}") != format!("{y:?}");
    let mut out = Vec::new();
    let limits = |c: &Config| (c.limits.max_label_value_length, c.limits.max_pod_labels);
    // listen and web_config_file are applied by the reload itself.
    let server = |c: &Config| {
        let mut s = c.server.clone();
        s.listen = a.server.listen;
        s.web_config_file = a.server.web_config_file.clone();
        s
    };
    for (name, changed) in [
        ("server", differs(&server(a), &server(b))),
        ("paths", differs(&a.paths, &b.paths)),
        ("reader", differs(&a.reader, &b.reader)),
        ("log", differs(&a.log, &b.log)),
        ("collectors", differs(&a.collectors, &b.collectors)),
        ("discovery", differs(&a.discovery, &b.discovery)),
        ("kubernetes", differs(&a.kubernetes, &b.kubernetes)),
        ("labels", differs(&a.labels, &b.labels)),
        ("limits", limits(a) != limits(b)),
    ] {
        if changed {
            out.push(name);
        }
    }
    out
}

/// The listening socket, with a deep accept queue: under a connection flood, a full queue
/// makes the kernel drop SYNs, and each dropped one costs its client (a scraper too) a 1 s
/// retransmit. Queued connections hold no descriptor of podstat's. The kernel caps the depth
/// at net.core.somaxconn.
fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(8192)
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
