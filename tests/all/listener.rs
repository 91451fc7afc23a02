//! The listener under abuse and under its web config: connection floods, slow and idle
//! clients, collections that take long, TLS (server and client certificates, reloads) and
//! basic auth. Real sockets, real TLS handshakes (rustls, certificates from rcgen).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::support::{
    exclusive, fixture_node_args, free_port, http_get, is_root, make_cgroups, move_into,
    prometheus_as_root, rss_kib, sample_value, skip_unless, start_podstat, start_podstat_logged,
    unique, wait_for, ChildGuard, Log,
};

fn fixture_args(addr: &str) -> Vec<String> {
    let mut args = vec!["--listen".to_string(), addr.to_string()];
    args.extend(fixture_node_args());
    args
}

/// A config file with `server_keys` in [server] and, if given, podstat reporting the raw
/// cgroups under the test's own top directory.
fn write_config(dir: &Path, server_keys: &str) -> String {
    write_config_watching(dir, server_keys, None)
}

fn write_config_watching(dir: &Path, server_keys: &str, top: Option<&str>) -> String {
    let path = dir.join("podstat.toml");
    let discovery = top.map_or(String::new(), |t| {
        format!("[discovery]\nraw_include = [\"/{t}/*\"]\n")
    });
    std::fs::write(&path, format!("[server]\n{server_keys}\n{discovery}")).expect("write config");
    path.display().to_string()
}

/// Starts podstat, keeping its log, and waits until its port takes connections (a TLS
/// listener does not answer plain HTTP, so `start_podstat`'s wait cannot be used).
fn start_raw(args: &[String], addr: &str) -> (ChildGuard, Log) {
    let (guard, log) = crate::support::spawn_podstat_logged(args);
    wait_for(Duration::from_secs(20), || TcpStream::connect(addr).ok())
        .expect("podstat did not start listening");
    (guard, log)
}

/// podstat over the fixture node on a free port with `flag value`, and its log; `tls`: its port
/// answers TLS only, so only a TCP connect is waited for.
fn over_fixtures(flag: &str, value: &Path, tls: bool) -> (ChildGuard, String, Log) {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut args = fixture_args(&addr);
    args.extend([flag.to_string(), value.display().to_string()]);
    let (child, log) = if tls {
        start_raw(&args, &addr)
    } else {
        start_podstat_logged(&args.iter().map(String::as_str).collect::<Vec<_>>(), &addr)
    };
    (child, addr, log)
}

/// podstat reading this machine's cgroups with `config`, on `addr`.
fn start_on_host(config: &str, addr: &str) -> ChildGuard {
    start_podstat(
        &["--config", config, "--listen", addr, "--log-level", "error"],
        addr,
    )
}

fn metric(addr: &str, name: &str, needles: &[&str]) -> f64 {
    let (_, _, body) = http_get(addr, "/metrics", "").expect("metrics");
    sample_value(&String::from_utf8_lossy(&body), name, needles).unwrap_or(f64::NAN)
}

/// Seconds until the server closes `s` (reads return 0), waiting at most `limit`.
fn closed_after(mut s: TcpStream, limit: Duration) -> Option<f64> {
    let start = Instant::now();
    s.set_read_timeout(Some(limit)).expect("timeout");
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(start.elapsed().as_secs_f64()),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Some(start.elapsed().as_secs_f64())
            }
            Err(_) => return None,
        }
    }
}

#[test]
fn slow_idle_and_kept_alive_connections_are_closed_on_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut args = fixture_args(&addr);
    args.extend([
        "--config".into(),
        write_config(
            dir.path(),
            "header_read_timeout = \"1s\"\nidle_timeout = \"3s\"\nmax_connections = 16",
        ),
    ]);
    let _podstat = start_podstat(&args.iter().map(String::as_str).collect::<Vec<_>>(), &addr);

    // Half a request line, then nothing: the header timeout (1 s), not the idle one (3 s).
    let mut half = TcpStream::connect(&addr).expect("connect");
    half.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .expect("write");
    // Slowloris: a byte every 200 ms keeps the socket busy but not the request complete.
    let slow = TcpStream::connect(&addr).expect("connect");
    let mut slow_writer = slow.try_clone().expect("clone");
    let dripping = std::thread::spawn(move || {
        for b in b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
            if slow_writer.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    // Connected, silent: the idle timeout.
    let idle = TcpStream::connect(&addr).expect("connect");
    // One request answered, then kept alive and silent: the idle timeout again, from the end
    // of the response, not the header timeout.
    let mut kept = TcpStream::connect(&addr).expect("connect");
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    kept.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    while !String::from_utf8_lossy(&got).contains("\"status\"") {
        let n = kept.read(&mut buf).expect("response");
        assert!(n > 0, "closed before answering");
        got.extend_from_slice(&buf[..n]);
    }

    let handles: Vec<_> = [
        ("half", half),
        ("slow", slow),
        ("idle", idle),
        ("kept", kept),
    ]
    .into_iter()
    .map(|(name, s)| std::thread::spawn(move || (name, closed_after(s, Duration::from_secs(8)))))
    .collect();
    let mut times = std::collections::BTreeMap::new();
    for h in handles {
        let (name, t) = h.join().expect("join");
        times.insert(name, t.unwrap_or_else(|| panic!("{name}: never closed")));
    }
    let _ = dripping.join();
    for name in ["half", "slow"] {
        assert!(
            (0.8..2.5).contains(&times[name]),
            "{name} closed after {:.2}s, header timeout is 1s: {times:?}",
            times[name]
        );
    }
    for name in ["idle", "kept"] {
        assert!(
            (2.5..5.0).contains(&times[name]),
            "{name} closed after {:.2}s, idle timeout is 3s: {times:?}",
            times[name]
        );
    }
    assert_eq!(
        metric(
            &addr,
            "podstat_http_connections_closed_total",
            &["reason=\"header_timeout\""]
        ),
        2.0
    );
    assert_eq!(
        metric(
            &addr,
            "podstat_http_connections_closed_total",
            &["reason=\"idle_timeout\""]
        ),
        2.0
    );
}

/// Raises this process's soft descriptor limit to the hard one (the flood holds thousands).
fn raise_own_nofile() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit");
    hard
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Families with a series for the cgroup `id`.
fn families_of(body: &str, id: &str) -> std::collections::BTreeSet<String> {
    let needle = format!("id=\"{id}\"");
    body.lines()
        .filter(|l| !l.starts_with('#') && l.contains(&needle))
        .filter_map(|l| l.split(['{', ' ']).next().map(str::to_string))
        .collect()
}

#[test]
fn a_connection_flood_takes_nothing_from_scrapes_probes_or_new_containers() {
    let Some(prometheus) = prometheus_as_root() else {
        return;
    };
    let _heavy = exclusive();
    let hard = raise_own_nofile();
    let idle_n: usize = if hard >= 14_000 {
        10_000
    } else {
        (hard as usize) / 2
    };
    let half_n: usize = 2_000.min(idle_n / 5);

    let top = unique("podstat-flood-");
    let hierarchies = crate::support::hierarchies();
    let rels: Vec<String> = (0..6).map(|i| format!("{top}/c{i}")).collect();
    // c0 exists before the flood (the reference); c1..c5 appear during it.
    let _cgroups = make_cgroups(&hierarchies, &[top.clone(), rels[0].clone()]);
    // Declared before the processes, so they are killed before their cgroups are removed.
    let mut guards = Vec::new();
    let mut sleepers: Vec<ChildGuard> = Vec::new();
    let spawn_in = |rel: &str| {
        let child = std::process::Command::new("sleep")
            .arg("300")
            .spawn()
            .expect("sleep");
        move_into(&hierarchies, rel, child.id());
        ChildGuard(child)
    };
    sleepers.push(spawn_in(&rels[0]));

    let dir = tempfile::tempdir().expect("tempdir");
    let addr = format!("127.0.0.1:{}", free_port());
    let config = write_config_watching(
        dir.path(),
        "max_connections = 64\nmin_collect_interval_ms = 0",
        Some(&top),
    );
    let podstat = start_on_host(&config, &addr);
    let pid = podstat.pid();
    let (_, _, body) = http_get(&addr, "/metrics", "").expect("metrics");
    let reference = families_of(&String::from_utf8_lossy(&body), &format!("/{}", rels[0]));
    assert!(reference.len() > 20, "reference container: {reference:?}");
    std::thread::sleep(Duration::from_secs(2));
    let baseline_rss = rss_kib(pid);
    // Descriptors other than the kept cgroup files (new containers add kept files of their own).
    let other_fds = |addr: &str| {
        let kept = metric(addr, "podstat_kept_descriptors", &[]);
        open_fds(pid).saturating_sub(kept as usize)
    };
    let baseline_fds = other_fds(&addr);
    let flood_started = Instant::now();

    let prom_dir = tempfile::tempdir().expect("tempdir");
    let (_prom, prom_addr) = crate::support::start_prometheus(
        &prometheus,
        &format!(
            "global:\n  scrape_interval: 3s\n  scrape_timeout: 3s\nscrape_configs:\n  - job_name: flood\n    static_configs:\n      - targets: ['{addr}']\n"
        ),
        prom_dir.path(),
    );
    // Prometheus up and scraping before the flood.
    wait_for(Duration::from_secs(30), || {
        crate::e2e_prometheus::query(&prom_addr, "up{job=\"flood\"} == 1").filter(|v| !v.is_empty())
    })
    .expect("Prometheus never scraped podstat");
    let flood_start = std::time::SystemTime::now();

    // The flood, from its own thread: idle connections, then half-sent requests.
    let target = addr.clone();
    let flooder = std::thread::spawn(move || {
        let mut held = Vec::with_capacity(idle_n + half_n);
        let mut failed = 0usize;
        for i in 0..idle_n + half_n {
            match TcpStream::connect(&target) {
                Ok(mut s) => {
                    if i >= idle_n {
                        let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-A: ");
                    }
                    held.push(s);
                }
                Err(_) => failed += 1,
            }
        }
        (held, failed)
    });
    // Meanwhile: probes and scrapes from new connections, and new containers.
    let mut probes = 0;
    let mut probe_failures = Vec::new();
    let mut slowest = Duration::ZERO;
    let mut created = 1;
    while !flooder.is_finished() || created < rels.len() {
        if created < rels.len() {
            guards.push(make_cgroups(
                &crate::support::hierarchies(),
                &rels[created..=created],
            ));
            sleepers.push(spawn_in(&rels[created]));
            created += 1;
        }
        for path in ["/healthz", "/readyz", "/metrics"] {
            let t = Instant::now();
            match http_get(&addr, path, "") {
                Ok((status, _, _)) if status.contains(" 200 ") => {}
                other => probe_failures.push(format!("{path}: {other:?}")),
            }
            slowest = slowest.max(t.elapsed());
            probes += 1;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (held, connect_failures) = flooder.join().expect("flooder");
    assert_eq!(connect_failures, 0, "the kernel refused flood connections");
    let evicted = metric(
        &addr,
        "podstat_http_connections_closed_total",
        &["reason=\"evicted\""],
    );
    let open = metric(&addr, "podstat_http_connections", &[]);
    let fds_during = other_fds(&addr);
    let flood_took = flood_started.elapsed();
    // Every new container has every family the reference has.
    let (_, _, body) = http_get(&addr, "/metrics", "").expect("metrics");
    let body = String::from_utf8_lossy(&body).into_owned();
    for rel in &rels[1..] {
        let families = families_of(&body, &format!("/{rel}"));
        assert_eq!(
            families, reference,
            "{rel} created during the flood lacks series"
        );
    }
    drop(held);
    assert!(
        probe_failures.is_empty(),
        "{} of {probes} probes failed: {probe_failures:?}",
        probe_failures.len()
    );
    assert!(
        evicted >= (idle_n + half_n - 64) as f64,
        "the flood did not reach the limit: {evicted} evicted"
    );
    assert!(open <= 64.0, "{open} connections open, limit 64");
    assert!(
        fds_during <= baseline_fds + 64 + 8,
        "descriptors during the flood: {fds_during}, before: {baseline_fds}"
    );
    // Prometheus missed no scrape: up was 1 at every one since the flood started.
    std::thread::sleep(Duration::from_secs(2));
    let window = flood_start.elapsed().map_or(10, |d| d.as_secs() + 1);
    let min_up = crate::e2e_prometheus::query(
        &prom_addr,
        &format!("min_over_time(up{{job=\"flood\"}}[{window}s])"),
    )
    .and_then(|v| v.first()?["value"][1].as_str()?.parse::<f64>().ok());
    assert_eq!(min_up, Some(1.0), "a scrape failed during the flood");
    // Memory back near where it was once the flood is gone.
    let settled = wait_for(Duration::from_secs(30), || {
        let rss = rss_kib(pid);
        (rss <= baseline_rss * 2).then_some(rss)
    });
    assert!(
        settled.is_some(),
        "RSS {} KiB after the flood, {baseline_rss} KiB before",
        rss_kib(pid)
    );
    eprintln!(
        "flood: {idle_n} idle + {half_n} half-open in {flood_took:?}, {evicted} evicted, {probes} probes (slowest {slowest:?}), descriptors besides kept files {baseline_fds} -> {fds_during}, RSS {baseline_rss} -> {} KiB (settled in {:?})",
        rss_kib(pid),
        flood_started.elapsed() - flood_took
    );
}

#[test]
fn health_is_answered_while_a_long_collection_runs() {
    if skip_unless(is_root(), "root (creates cgroups with real processes)") {
        return;
    }
    let _heavy = exclusive();
    let top = unique("podstat-slowcollect-");
    let rels: Vec<String> = std::iter::once(top.clone())
        .chain((0..2000).map(|i| format!("{top}/c{i}")))
        .collect();
    let _cgroups = make_cgroups(&crate::support::hierarchies(), &rels);
    let dir = tempfile::tempdir().expect("tempdir");
    let addr = format!("127.0.0.1:{}", free_port());
    let config = write_config_watching(dir.path(), "min_collect_interval_ms = 0", Some(&top));
    let _podstat = start_on_host(&config, &addr);
    wait_for(Duration::from_secs(60), || {
        http_get(&addr, "/readyz", "")
            .ok()
            .filter(|(s, _, _)| s.contains(" 200 "))
    })
    .expect("never ready");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scraper = {
        let (addr, stop) = (addr.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut durations = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                let _ = http_get(&addr, "/metrics", "");
                durations.push(t.elapsed());
            }
            durations
        })
    };
    let mut probe_times = Vec::new();
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        let t = Instant::now();
        let (status, _, _) = http_get(&addr, "/readyz", "").expect("readyz");
        assert!(status.contains(" 200 "), "{status}");
        probe_times.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let scrapes = scraper.join().expect("scraper");
    let mut sorted = scrapes.clone();
    sorted.sort();
    let median_scrape = sorted[sorted.len() / 2];
    probe_times.sort();
    let p95_probe = probe_times[probe_times.len() * 95 / 100];
    eprintln!(
        "{} scrapes (median {median_scrape:?}), {} probes (p95 {p95_probe:?}, max {:?})",
        scrapes.len(),
        probe_times.len(),
        probe_times.last()
    );
    // Only meaningful when a collection takes far longer than a probe may.
    assert!(
        median_scrape >= Duration::from_millis(150),
        "collections too quick to tell ({median_scrape:?}); make more cgroups"
    );
    assert!(
        p95_probe < median_scrape / 3,
        "probes wait for collections: p95 {p95_probe:?}, collection {median_scrape:?}"
    );
}

// ---- TLS and basic auth ----

struct Pki {
    ca_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("ca");
        Pki {
            ca_pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A leaf certificate (PEM) and its key (PEM); `expired` makes one that ended in 2021.
    fn leaf(&self, names: &[&str], client: bool, expired: bool) -> (String, String) {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.extended_key_usages = vec![if client {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        }];
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        (cert.pem(), key.serialize_pem())
    }
}

fn der_certs(pem: &str) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("pem")
}

fn der_key(pem: &str) -> PrivateKeyDer<'static> {
    use rustls::pki_types::pem::PemObject;
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).expect("key pem")
}

/// One HTTPS GET; Err when the TLS handshake or the exchange fails.
fn tls_get(
    addr: &str,
    trusted_ca: &str,
    client: Option<(&str, &str)>,
    path: &str,
    extra_headers: &str,
) -> Result<(String, String), String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in der_certs(trusted_ca) {
        roots.add(c).map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(der_certs(cert), der_key(key))
            .map_err(|e| e.to_string())?,
        None => builder.with_no_client_auth(),
    };
    let name = ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{extra_headers}\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    match tls.read_to_end(&mut raw) {
        Ok(_) => {}
        // Without close_notify, after a complete response.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(e.to_string()),
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no response: {text:?}"))?;
    Ok((
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    ))
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Authorization: Basic {}\r\n",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[test]
fn tls_client_certificates_and_basic_auth_guard_the_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let server_ca = Pki::new("server CA");
    let client_ca = Pki::new("client CA");
    let stranger_ca = Pki::new("someone else's CA");
    let (server_cert, server_key) = server_ca.leaf(&["127.0.0.1"], false, false);
    std::fs::write(d.join("server.crt"), &server_cert).expect("write");
    std::fs::write(d.join("server.key"), &server_key).expect("write");
    std::fs::write(d.join("clients.crt"), &client_ca.ca_pem).expect("write");
    let hash = bcrypt::hash("s3cret", 4).expect("bcrypt");
    // Relative paths: relative to the web config's directory, as in exporter-toolkit.
    let web = d.join("web.yml");
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: clients.crt\nbasic_auth_users:\n  prometheus: {hash}\nhttp_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n"
        ),
    )
    .expect("write web config");
    let (_podstat, addr, log) = over_fixtures("--web.config.file", &web, true);

    let (good_cert, good_key) = client_ca.leaf(&["prometheus"], true, false);
    let (old_cert, old_key) = client_ca.leaf(&["prometheus"], true, true);
    let (foreign_cert, foreign_key) = stranger_ca.leaf(&["prometheus"], true, false);
    let good = Some((good_cert.as_str(), good_key.as_str()));
    let auth = basic("prometheus", "s3cret");
    let get = |client, path: &str, headers: &str| {
        tls_get(&addr, &server_ca.ca_pem, client, path, headers)
    };

    let (status, body) = get(good, "/metrics", &auth).expect("authorised scrape");
    assert!(status.contains(" 200 "), "{status}");
    assert!(
        body.contains("container_cpu_usage_seconds_total"),
        "no metrics"
    );
    // Wrong or missing passwords, and a user that does not exist.
    for headers in [
        String::new(),
        basic("prometheus", "guess"),
        basic("root", "s3cret"),
    ] {
        let (status, _) = get(good, "/metrics", &headers).expect("answered");
        assert!(status.contains(" 401 "), "{headers:?}: {status}");
    }
    // Health answers without credentials, with nothing more than its status.
    let (status, body) = get(good, "/healthz", "").expect("health");
    assert!(status.contains(" 200 "), "{status}");
    assert_eq!(body.trim(), "{\"status\":\"ok\"}");
    let (_, body) = get(good, "/healthz", &auth).expect("health");
    assert!(
        body.contains("cgroup_reader"),
        "an authenticated client gets details: {body}"
    );
    // No certificate, an expired one, one from another CA: no response at all.
    for (what, client) in [
        ("no client certificate", None),
        (
            "an expired certificate",
            Some((old_cert.as_str(), old_key.as_str())),
        ),
        (
            "a certificate of another CA",
            Some((foreign_cert.as_str(), foreign_key.as_str())),
        ),
    ] {
        let r = get(client, "/metrics", &auth);
        assert!(r.is_err(), "{what}: served {r:?}");
    }
    // A client that does not trust the server's CA refuses it.
    assert!(tls_get(&addr, &stranger_ca.ca_pem, good, "/metrics", &auth).is_err());
    // Plain HTTP on the TLS port gets no metrics.
    let plain = http_get(&addr, "/metrics", "");
    assert!(
        plain
            .as_ref()
            .map_or(true, |(s, _, _)| !s.contains(" 200 ")),
        "{plain:?}"
    );

    // The certificate is renewed by another CA: new connections get the new one, no restart.
    let renewed_ca = Pki::new("renewed server CA");
    let (new_cert, new_key) = renewed_ca.leaf(&["127.0.0.1"], false, false);
    std::fs::write(d.join("server.key"), &new_key).expect("write");
    std::fs::write(d.join("server.crt"), &new_cert).expect("write");
    let renewed = wait_for(Duration::from_secs(10), || {
        tls_get(&addr, &renewed_ca.ca_pem, good, "/metrics", &auth).ok()
    });
    assert!(
        renewed.is_some_and(|(s, _)| s.contains(" 200 ")),
        "renewed certificate not used"
    );
    assert!(
        get(good, "/metrics", &auth).is_err(),
        "old certificate still served"
    );

    // A broken change is refused and the last good config kept.
    let refused = log.count("web config not reloaded");
    std::fs::write(&web, "tls_server_config: [nonsense\n").expect("write");
    // The files are looked at when a connection comes (at most once a second), so connect
    // until podstat says it refused the change.
    let noticed = wait_for(Duration::from_secs(5), || {
        let _ = tls_get(&addr, &renewed_ca.ca_pem, good, "/healthz", "");
        (log.count("web config not reloaded") > refused).then_some(())
    });
    assert!(
        noticed.is_some(),
        "podstat did not say that it refused the broken web config"
    );
    let (status, body) = tls_get(&addr, &renewed_ca.ca_pem, good, "/metrics", &auth)
        .expect("still served with the last good config");
    assert!(status.contains(" 200 "), "{status}");
    let failures =
        sample_value(&body, "podstat_http_tls_handshake_failures_total", &[]).unwrap_or(0.0);
    let unauthorized = sample_value(&body, "podstat_http_unauthorized_total", &[]).unwrap_or(0.0);
    assert!(failures >= 4.0, "handshake failures counted: {failures}");
    assert_eq!(unauthorized, 3.0);
}

#[test]
fn check_config_rejects_a_bad_web_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let web = dir.path().join("web.yml");
    std::fs::write(&web, "basic_auth_users:\n  prometheus: not-a-hash\n").expect("write");
    let config = write_config(
        dir.path(),
        &format!("web_config_file = \"{}\"", web.display()),
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_podstat"))
        .args(["--check-config", &config])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a bcrypt hash"), "{stderr}");
}

// ---- delegated authentication (TokenReview + SubjectAccessReview) ----

/// A fake API server answering TokenReviews and SubjectAccessReviews like a real one would for
/// a cluster where `prom-token` belongs to monitoring:prometheus (allowed nodes/metrics on
/// node-a) and `nobody-token` to default:nobody (no rights); podstat must present `podstat-sa`.
fn fake_review_server(
    cert: &crate::fake_kubelet::TestCert,
) -> (
    String,
    Arc<std::sync::atomic::AtomicUsize>,
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<()>,
) {
    use http_body_util::BodyExt;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let url = format!("https://{}", listener.local_addr().expect("addr"));
    let reviews = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let acceptor = tokio_rustls::TlsAcceptor::from(cert.server_config());
    let counted = Arc::clone(&reviews);
    let (stop, thread) = crate::fake_kubelet::serve_on_thread(listener, move |tcp| {
        let acceptor = acceptor.clone();
        let counted = Arc::clone(&counted);
        async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(
                move |req: hyper::Request<hyper::body::Incoming>| {
                    let counted = Arc::clone(&counted);
                    async move {
                        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let own = req
                            .headers()
                            .get("authorization")
                            .is_some_and(|v| v.as_bytes() == b"Bearer podstat-sa");
                        let path = req.uri().path().to_owned();
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let review: serde_json::Value =
                            serde_json::from_slice(&body).unwrap_or_default();
                        let spec = &review["spec"];
                        let (status, answer) = if !own {
                            (401, serde_json::json!({"kind": "Status"}))
                        } else if path.ends_with("/tokenreviews") {
                            let user = match spec["token"].as_str() {
                                Some("prom-token") => {
                                    Some("system:serviceaccount:monitoring:prometheus")
                                }
                                Some("nobody-token") => {
                                    Some("system:serviceaccount:default:nobody")
                                }
                                _ => None,
                            };
                            (
                                201,
                                serde_json::json!({"status": match user {
                                    Some(u) => serde_json::json!({"authenticated": true, "user": {"username": u, "uid": "1", "groups": ["system:serviceaccounts"]}}),
                                    None => serde_json::json!({"authenticated": false}),
                                }}),
                            )
                        } else if path.ends_with("/subjectaccessreviews") {
                            let ra = &spec["resourceAttributes"];
                            let allowed = spec["user"]
                                == "system:serviceaccount:monitoring:prometheus"
                                && ra["verb"] == "get"
                                && ra["resource"] == "nodes"
                                && ra["subresource"] == "metrics"
                                && ra["name"] == "node-a";
                            (201, serde_json::json!({"status": {"allowed": allowed}}))
                        } else {
                            (404, serde_json::json!({}))
                        };
                        let mut r = hyper::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from(answer.to_string()),
                        ));
                        *r.status_mut() = hyper::StatusCode::from_u16(status).expect("status");
                        Ok::<_, std::convert::Infallible>(r)
                    }
                },
            );
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
        }
    });
    (url, reviews, stop, thread)
}

#[test]
fn bearer_tokens_are_reviewed_by_the_api_server_and_failures_close_the_door() {
    let cert = crate::fake_kubelet::TestCert::generate();
    let (api, reviews, stop, thread) = fake_review_server(&cert);
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    std::fs::write(&token, "podstat-sa\n").expect("write");
    let ca = cert.write_ca(dir.path());
    let config = dir.path().join("podstat.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nkubernetes_auth = true\n[kubernetes]\napiserver_url = {api:?}\nnode_name = \"node-a\"\ntoken_file = {token:?}\nca_file = {ca:?}\nrequest_timeout = \"2s\"\n"
        ),
    )
    .expect("write");
    let (_podstat, addr, _log) = over_fixtures("--config", &config, false);
    let get = |headers: &str| {
        let (status, head, body) = http_get(&addr, "/metrics", headers).expect("metrics");
        (status, head, String::from_utf8_lossy(&body).into_owned())
    };
    let (status, head, _) = get("");
    assert!(status.contains(" 401 "), "{status}");
    assert!(
        head.to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{head}"
    );
    let (status, _, _) = get("Authorization: Bearer forged\r\n");
    assert!(status.contains(" 401 "), "{status}");
    let (status, _, _) = get("Authorization: Bearer nobody-token\r\n");
    assert!(status.contains(" 403 "), "{status}");
    let (status, _, body) = get("Authorization: Bearer prom-token\r\n");
    assert!(status.contains(" 200 "), "{status}");
    assert!(body.contains("container_cpu_usage_seconds_total"));
    // Cached: five more scrapes with the same token ask the API server nothing.
    let asked = reviews.load(std::sync::atomic::Ordering::SeqCst);
    for _ in 0..5 {
        let (status, _, _) = get("Authorization: Bearer prom-token\r\n");
        assert!(status.contains(" 200 "), "{status}");
    }
    assert_eq!(reviews.load(std::sync::atomic::Ordering::SeqCst), asked);
    // Health stays open, and says no more than its status.
    let (status, _, body) = http_get(&addr, "/readyz", "").expect("readyz");
    assert!(status.contains(" 200 "), "{status}");
    assert_eq!(String::from_utf8_lossy(&body).trim(), "{\"status\":\"ok\"}");
    // The API server goes away: an unreviewed token is refused, never let through.
    let _ = stop.send(());
    let _ = thread.join();
    let (status, _, _) = get("Authorization: Bearer another-token\r\n");
    assert!(status.contains(" 503 "), "{status}");
}
