//! Shared test helpers: fixture paths, skip rules, and guards that clean up what a test
//! created (cgroups, network namespaces, processes) even when the test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Skips (returns true) when a requirement is missing; panics instead under CI.
pub fn skip_unless(ok: bool, what: &str) -> bool {
    if ok {
        return false;
    }
    if in_ci() {
        panic!("required for this test under CI but missing: {what}");
    }
    eprintln!("\n!!!!! SKIPPED: {what} !!!!!\n");
    true
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

pub fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(bin))
            .find(|p| p.is_file())
    })
}

/// A name unique to this test run, so parallel runs on one machine never collide.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A child process killed (by PID) and reaped on drop.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Cgroup directories removed on drop, deepest first, after moving any process still inside
/// back to the parent of the test's top directory. Only directories the test made are touched.
pub struct CgroupGuard {
    pub dirs: Vec<PathBuf>,
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        let mut dirs = self.dirs.clone();
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            for _ in 0..50 {
                match std::fs::remove_dir(&d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    // EBUSY while a killed process is still being reaped by the kernel.
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    }
}

/// A network namespace (`ip netns add`) deleted on drop.
pub struct NetnsGuard {
    pub name: String,
}

impl NetnsGuard {
    pub fn new(name: &str) -> NetnsGuard {
        let status = Command::new("ip").args(["netns", "add", name]).status();
        assert!(status.is_ok_and(|s| s.success()), "ip netns add {name}");
        NetnsGuard { name: name.into() }
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

/// Joins two namespaces of the test by a veth pair: `eth0` in `pod` with `pod_addr`, `peer_if`
/// in `peer` with `peer_addr` (CIDR), both up.
pub fn veth_pair(
    pod: &NetnsGuard,
    peer: &NetnsGuard,
    peer_if: &str,
    pod_addr: &str,
    peer_addr: &str,
) {
    let link = ["-n", &pod.name, "link", "add", "eth0", "type", "veth"];
    run(
        "ip",
        &[&link[..], &["peer", "name", peer_if, "netns", &peer.name]].concat(),
    );
    run(
        "ip",
        &["-n", &pod.name, "addr", "add", pod_addr, "dev", "eth0"],
    );
    run(
        "ip",
        &["-n", &peer.name, "addr", "add", peer_addr, "dev", peer_if],
    );
    run("ip", &["-n", &pod.name, "link", "set", "eth0", "up"]);
    run("ip", &["-n", &peer.name, "link", "set", peer_if, "up"]);
}

pub fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Polls `f` until it returns Some or the deadline passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Some(v) = f() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// Decodes a gzip body (podstat writes its own; flate2 is the independent decoder).
pub fn gunzip(gz: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(gz), &mut out)
        .expect("valid gzip");
    out
}

/// Finds the value of the sample whose line starts with `name{` and contains every `needle`.
pub fn sample_value(body: &str, name: &str, needles: &[&str]) -> Option<f64> {
    body.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| needles.iter().all(|n| l.contains(n)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Plain HTTP/1.0 GET on loopback, returning (status line, headers, body).
pub fn http_get(
    addr: &str,
    path: &str,
    extra_headers: &str,
) -> std::io::Result<(String, String, Vec<u8>)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{extra_headers}\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let body = raw[split + 4..].to_vec();
    let (status, headers) = head.split_once("\r\n").unwrap_or((&head, ""));
    Ok((status.to_owned(), headers.to_owned(), body))
}

/// Starts the podstat binary with `args`, waiting until it answers on `addr`.
pub fn start_podstat(args: &[&str], addr: &str) -> ChildGuard {
    let child = Command::new(env!("CARGO_BIN_EXE_podstat"))
        .args(args)
        .spawn()
        .expect("start podstat");
    let guard = ChildGuard(child);
    wait_until_healthy(addr);
    guard
}

/// Waits until podstat answers `/healthz` on `addr`.
fn wait_until_healthy(addr: &str) {
    wait_for(Duration::from_secs(20), || {
        http_get(addr, "/healthz", "").ok()
    })
    .expect("podstat did not start listening");
}

/// Waits until `pid` lives in the network namespace `ns` (`ip netns exec` and `nsenter` switch
/// namespace, then exec their command: a process moved into a cgroup before the switch would
/// be seen in the old namespace).
pub fn wait_in_netns(pid: u32, ns: &NetnsGuard) {
    use std::os::unix::fs::MetadataExt;
    let target = std::fs::metadata(format!("/run/netns/{}", ns.name)).expect("netns");
    let inside = wait_for(Duration::from_secs(5), || {
        let m = std::fs::metadata(format!("/proc/{pid}/ns/net")).ok()?;
        (m.dev() == target.dev() && m.ino() == target.ino()).then_some(())
    });
    assert!(
        inside.is_some(),
        "process {pid} never entered netns {}",
        ns.name
    );
}

/// A loopback port for a server the test is about to start. Bind-then-release alone races: the
/// kernel hands ports of its ephemeral range (`net.ipv4.ip_local_port_range`) to outgoing
/// connections of every process (Prometheus' scrapes, the tests' own clients), and the next
/// test may draw the same one. So ports are taken below that range, where no outgoing
/// connection is given one, from a counter shared by every test of this binary (started at an
/// offset from the PID, so two test runs on one machine do not walk the same ports), and each is
/// checked to be free before it is handed out.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOWEST: u32 = 10_000;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .filter(|low| *low > LOWEST + 1_000)
        .unwrap_or(32_768);
    let span = ephemeral_low - LOWEST;
    let offset = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = LOWEST + (offset + n) % span;
        let port = u16::try_from(port).expect("port below 65536");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port below {ephemeral_low}");
}

/// podstat's log lines (stderr), kept for tests that wait for what podstat says.
#[derive(Clone, Default)]
pub struct Log(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl Log {
    /// Copies `stderr` line by line into the log (and to this process's stderr, where a
    /// failing test shows it) until it closes.
    fn follow(stderr: std::process::ChildStderr) -> Log {
        let log = Log::default();
        let lines = log.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                eprintln!("podstat: {line}");
                lines
                    .0
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(line);
            }
        });
        log
    }

    /// How many lines so far contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Waits until more than `seen` lines contain `needle`.
    pub fn wait_for_more(&self, needle: &str, seen: usize, timeout: Duration) -> bool {
        wait_for(timeout, || (self.count(needle) > seen).then_some(())).is_some()
    }
}

/// Starts the podstat binary with `args`, following its log; waits for nothing.
pub fn spawn_podstat_logged<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (ChildGuard, Log) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_podstat"))
        .args(args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start podstat");
    let log = Log::follow(child.stderr.take().expect("stderr"));
    (ChildGuard(child), log)
}

/// As `start_podstat`, keeping what podstat logs.
pub fn start_podstat_logged(args: &[&str], addr: &str) -> (ChildGuard, Log) {
    let (guard, log) = spawn_podstat_logged(args);
    wait_until_healthy(addr);
    (guard, log)
}

/// The hierarchies to create the test's cgroups in (every v1 controller podstat reads, or the
/// unified one on a pure v2 host).
pub fn hierarchies() -> Vec<PathBuf> {
    let mountinfo = std::fs::read("/proc/self/mountinfo").expect("mountinfo");
    let mounts = podstat::parse::procfs::cgroup_mounts(&mountinfo).expect("mounts");
    let layout = podstat::discovery::CgroupLayout::from_mounts(
        &mounts,
        std::path::Path::new("/sys/fs/cgroup"),
    );
    match layout.mode() {
        Some(podstat::discovery::CgroupMode::V2) => layout.unified.into_iter().collect(),
        _ => {
            let mut v: Vec<PathBuf> = [
                layout.cpu,
                layout.cpuacct,
                layout.memory,
                layout.blkio,
                layout.pids,
            ]
            .into_iter()
            .flatten()
            .collect();
            v.dedup();
            v
        }
    }
}

/// Makes `rels` (parents first) in every hierarchy, removed by the returned guard.
pub fn make_cgroups(hierarchies: &[PathBuf], rels: &[String]) -> CgroupGuard {
    let mut guard = CgroupGuard { dirs: Vec::new() };
    for h in hierarchies {
        for rel in rels {
            let dir = h.join(rel);
            std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
            guard.dirs.push(dir);
            if hierarchies.len() == 1 {
                // Pure v2: enable the controllers for the children (leaves refuse, harmlessly).
                let _ = std::fs::write(
                    h.join(rel).join("cgroup.subtree_control"),
                    "+cpu +memory +pids +io",
                );
            }
        }
    }
    guard
}

pub fn move_into(hierarchies: &[PathBuf], rel: &str, pid: u32) {
    for h in hierarchies {
        std::fs::write(h.join(rel).join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("move {pid} into {}: {e}", h.join(rel).display()));
    }
}

/// Fails when two sample lines of `body` have the same name and labels: Prometheus keeps one
/// and drops the other as a duplicate, so a number is silently lost.
pub fn assert_no_duplicate_series(body: &str) {
    let mut seen = std::collections::HashSet::new();
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let series = line.rsplit_once(' ').map_or(line, |(series, _)| series);
        assert!(seen.insert(series), "duplicate series: {series}");
    }
}

/// Held by the tests that load the machine (a thousand processes, a busy CPU measured against
/// the kernel's own accounting): on a 2-CPU runner two of them at once starve each other's
/// measured processes, and a CPU figure sampled by the test then lags the agent's. A failed
/// test poisons the lock; the next one still runs.
pub fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    HEAVY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Starts the real Prometheus at `binary` with `config` (YAML text), its data in `dir`, on a
/// free loopback port; returns it and its address.
pub fn start_prometheus(binary: &Path, config: &str, dir: &Path) -> (ChildGuard, String) {
    let file = dir.join("prometheus.yml");
    std::fs::write(&file, config).expect("write prometheus.yml");
    let addr = format!("127.0.0.1:{}", free_port());
    let child = Command::new(binary)
        .args([
            &format!("--config.file={}", file.display()),
            &format!("--storage.tsdb.path={}", dir.join("data").display()),
            &format!("--web.listen-address={addr}"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start prometheus");
    (ChildGuard(child), addr)
}

/// podstat's flags to read the fixture node (a v2 systemd/containerd tree and its procfs)
/// instead of this machine, logging warnings only.
pub fn fixture_node_args() -> Vec<String> {
    let root = fixtures().join("cgroup-v2/kubepods-systemd-containerd");
    let proc_root = fixtures().join("proc-node");
    vec![
        "--cgroup-root".into(),
        root.display().to_string(),
        "--proc-root".into(),
        proc_root.display().to_string(),
        "--log-level".into(),
        "warn".into(),
    ]
}

/// Resident memory of a process, in KiB (0 once it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// The Prometheus binary, when it is installed and this runs as root (the tests that scrape
/// real cgroups with a real Prometheus need both); None means skip (a failure under CI).
pub fn prometheus_as_root() -> Option<PathBuf> {
    let Some(prometheus) = which("prometheus") else {
        assert!(!skip_unless(
            false,
            "prometheus binary (Debian package prometheus)"
        ));
        return None;
    };
    if skip_unless(is_root(), "root (creates cgroups with real processes)") {
        return None;
    }
    Some(prometheus)
}

/// The descriptors of process `pid` and how many of them are sockets, as the kernel lists them
/// (needs the right to read its links: root with CAP_SYS_PTRACE); None when it is gone.
pub fn open_files(pid: u32) -> Option<(f64, f64)> {
    let (mut fds, mut sockets) = (0.0, 0.0);
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
        fds += 1.0;
        if std::fs::read_link(entry.path())
            .is_ok_and(|l| l.to_string_lossy().starts_with("socket:["))
        {
            sockets += 1.0;
        }
    }
    Some((fds, sockets))
}
