//! Real cgroups, real processes, a real network namespace: podstat's numbers must agree with
//! the kernel. Needs root (skips loudly otherwise; fails under CI).
//!
//! Everything lives under a uniquely named top cgroup in each hierarchy and two uniquely named
//! network namespaces; guards kill the processes by PID and remove exactly those directories
//! and namespaces, even when an assertion fails.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{
    hierarchies, is_root, move_into, sample_value, skip_unless, unique, veth_pair, which,
    CgroupGuard, ChildGuard, NetnsGuard,
};

const POD_UID: &str = "0f1e2d3c-4b5a-4968-8778-695a4b3c2d1e";
const BUSY_ID: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const MEM_ID: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const SANDBOX_ID: &str = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";
/// A pod with `hostNetwork: true`: its one container's process is in the host's namespace.
const HOST_POD_UID: &str = "1a2b3c4d-5e6f-4a8b-9cad-bedcfe0a1b2c";
const HOST_NET_ID: &str = "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd";
const HOLD_BYTES: u64 = 64 << 20;

/// Sends `count` UDP datagrams of `size` bytes from inside network namespace `ns` to `to`.
fn send_udp_from(ns: &str, to: &str, count: usize, size: usize) {
    let ns_path = format!("/run/netns/{ns}");
    let to = to.to_owned();
    std::thread::spawn(move || {
        let f = std::fs::File::open(&ns_path).expect("open netns");
        // setns affects only this thread, which exits afterwards.
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let sock = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind");
        let payload = vec![0x5a_u8; size];
        for _ in 0..count {
            // ICMP unreachable answers may surface as errors on later sends; they do not matter.
            let _ = sock.send_to(&payload, &to);
        }
    })
    .join()
    .expect("sender thread");
}

fn proc_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = &stat[stat.rfind(')').expect(")") + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the comm.
    (f[11].parse::<f64>().expect("utime") + f[12].parse::<f64>().expect("stime")) / 100.0
}

#[test]
fn real_cgroups_agree_with_the_kernel() {
    let _heavy = crate::support::exclusive();
    if skip_unless(is_root(), "root (creates cgroups and network namespaces)")
        || skip_unless(which("ip").is_some(), "iproute2 `ip`")
        || skip_unless(
            which("python3").is_some(),
            "python3 (holds a known amount of memory)",
        )
    {
        return;
    }
    let hierarchies = hierarchies();
    assert!(!hierarchies.is_empty(), "no cgroup hierarchy");
    let top = unique("podstat-test-");
    let pod_rel = format!("{top}/kubepods/burstable/pod{POD_UID}");
    let host_pod_rel = format!("{top}/kubepods/burstable/pod{HOST_POD_UID}");
    let rels: Vec<String> = vec![
        top.clone(),
        format!("{top}/kubepods"),
        format!("{top}/kubepods/burstable"),
        pod_rel.clone(),
        format!("{pod_rel}/{BUSY_ID}"),
        format!("{pod_rel}/{MEM_ID}"),
        format!("{pod_rel}/{SANDBOX_ID}"),
        host_pod_rel.clone(),
        format!("{host_pod_rel}/{HOST_NET_ID}"),
    ];
    let mut cgroups = CgroupGuard { dirs: Vec::new() };
    for h in &hierarchies {
        for rel in &rels {
            let dir = h.join(rel);
            std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
            cgroups.dirs.push(dir.clone());
            if hierarchies.len() == 1 && !rel.ends_with("dd") && !rel.ends_with("cc") {
                // Pure v2: enable the controllers for the children.
                let _ =
                    std::fs::write(dir.join("cgroup.subtree_control"), "+cpu +memory +pids +io");
            }
        }
    }

    // Network: the pod's namespace and a peer namespace joined by a veth pair.
    let pod_ns = NetnsGuard::new(&unique("pstp"));
    let peer_ns = NetnsGuard::new(&unique("pstq"));
    veth_pair(
        &pod_ns,
        &peer_ns,
        &unique("pv"),
        "169.254.77.2/30",
        "169.254.77.1/30",
    );

    // Processes: a sandbox in the pod netns, a CPU burner, a memory holder.
    let sandbox = ChildGuard(
        Command::new("ip")
            .args(["netns", "exec", &pod_ns.name, "sleep", "600"])
            .spawn()
            .expect("sandbox"),
    );
    let busy = ChildGuard(
        Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .expect("busy"),
    );
    let mut mem = ChildGuard(
        Command::new("python3")
            .args(["-c", &format!("import sys,time\nsys.stdin.readline()\nb=bytearray({HOLD_BYTES})\nprint('held',flush=True)\ntime.sleep(600)")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("memory holder"),
    );
    crate::support::wait_in_netns(sandbox.pid(), &pod_ns);
    move_into(
        &hierarchies,
        &format!("{pod_rel}/{SANDBOX_ID}"),
        sandbox.pid(),
    );
    move_into(&hierarchies, &format!("{pod_rel}/{BUSY_ID}"), busy.pid());
    let host_net = ChildGuard(
        Command::new("sleep")
            .arg("600")
            .spawn()
            .expect("host-network process"),
    );
    move_into(
        &hierarchies,
        &format!("{host_pod_rel}/{HOST_NET_ID}"),
        host_net.pid(),
    );
    move_into(&hierarchies, &format!("{pod_rel}/{MEM_ID}"), mem.pid());
    // Allocate only after the move, so the pages are charged to the test cgroup.
    writeln!(mem.0.stdin.as_mut().expect("stdin")).expect("go");
    let mut line = String::new();
    BufReader::new(mem.0.stdout.as_mut().expect("stdout"))
        .read_line(&mut line)
        .expect("held");
    assert_eq!(line.trim(), "held");

    let config =
        podstat::config::parse("[server]\nmin_collect_interval_ms = 0\n", "test").expect("config");
    let agent = podstat::agent::Agent::new(&config).expect("agent");
    // Series are picked by the test's own cgroup paths, never by a bare container ID: the agent
    // reads the whole host, and tests running beside this one make cgroups of their own.
    let id_in = |dir: &str, leaf: &str| format!("id=\"/{dir}/{leaf}\"");
    let id = |leaf: &str| id_in(&pod_rel, leaf);
    let pod_id = format!("id=\"/{pod_rel}\"");

    let body1 = String::from_utf8(agent.scrape().to_vec()).expect("utf8");
    let cpu1 = sample_value(&body1, "container_cpu_usage_seconds_total", &[&id(BUSY_ID)])
        .expect("busy cpu 1");
    let kernel1 = proc_cpu_seconds(busy.pid());

    send_udp_from(&peer_ns.name, "169.254.77.2:9", 200, 1000);
    send_udp_from(&pod_ns.name, "169.254.77.1:9", 100, 1000);
    std::thread::sleep(Duration::from_secs(2));

    let body2 = String::from_utf8(agent.scrape().to_vec()).expect("utf8");
    // The whole host's output, this test's cgroups and every other: no series twice.
    crate::support::assert_no_duplicate_series(&body2);
    let cpu2 = sample_value(&body2, "container_cpu_usage_seconds_total", &[&id(BUSY_ID)])
        .expect("busy cpu 2");
    let kernel2 = proc_cpu_seconds(busy.pid());
    let (ours, theirs) = (cpu2 - cpu1, kernel2 - kernel1);
    assert!(theirs > 0.5, "the burner did not burn: {theirs}s");
    // /proc/<pid>/stat has 10 ms ticks; allow 5% plus two ticks per reading.
    assert!(
        (ours - theirs).abs() <= 0.05 * theirs + 0.04,
        "podstat {ours}s vs kernel {theirs}s"
    );

    let usage =
        sample_value(&body2, "container_memory_usage_bytes", &[&id(MEM_ID)]).expect("mem usage");
    assert!(usage >= HOLD_BYTES as f64, "usage {usage} < {HOLD_BYTES}");
    let ws = sample_value(&body2, "container_memory_working_set_bytes", &[&id(MEM_ID)])
        .expect("working set");
    assert!(ws >= HOLD_BYTES as f64 && ws <= usage);
    assert_eq!(
        sample_value(&body2, "container_processes", &[&id(BUSY_ID)]),
        Some(1.0)
    );
    // The cgroup was made seconds ago (on hybrid hosts it has no `unified/` twin to stat).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let started = sample_value(&body2, "container_start_time_seconds", &[&id(BUSY_ID)])
        .expect("start time of the busy container");
    assert!(
        (now - 120.0..=now + 1.0).contains(&started),
        "start time {started}, now {now}"
    );
    assert_eq!(started.fract(), 0.0, "whole seconds, as the kubelet prints");
    let seen = sample_value(&body2, "container_last_seen", &[&id(BUSY_ID)]).expect("last seen");
    assert!(
        (now - 5.0..=now + 1.0).contains(&seen) && seen.fract() == 0.0,
        "last seen {seen}, now {now}"
    );
    assert!(sample_value(&body2, "container_threads", &[&id(MEM_ID)]).is_some_and(|t| t >= 1.0));

    // The pod's network comes from the sandbox's namespace, once, on the pod row (the sandbox
    // runs `sleep`, not `pause`, so it is not recognised as the sandbox).
    let rx = sample_value(
        &body2,
        "container_network_receive_bytes_total",
        &[&pod_id, "interface=\"eth0\""],
    )
    .expect("pod rx");
    let tx = sample_value(
        &body2,
        "container_network_transmit_bytes_total",
        &[&pod_id, "interface=\"eth0\""],
    )
    .expect("pod tx");
    assert!(rx >= 200_000.0, "rx {rx}");
    assert!(tx >= 100_000.0, "tx {tx}");
    assert_eq!(
        body2
            .matches(&format!(
                "container_network_receive_bytes_total{{container=\"\",{pod_id}"
            ))
            .count(),
        1
    );
    assert!(!body2
        .lines()
        .any(|l| l.starts_with("container_network") && l.contains(&id(BUSY_ID))));
    // A pod in the host's namespace does not report the host's interfaces as its own (the
    // test runs in the host's namespace, as root on the CI machine, so a process left in it
    // stands for a `hostNetwork` pod).
    assert!(
        body2.contains(&id_in(&host_pod_rel, HOST_NET_ID)),
        "the host-network container is reported"
    );
    let leaked: Vec<&str> = body2
        .lines()
        .filter(|l| l.starts_with("container_network") && l.contains(&host_pod_rel))
        .collect();
    assert!(
        leaked.is_empty(),
        "host interfaces reported for the pod: {leaked:?}"
    );

    // Remove a container between scrapes: the next scrape succeeds without its series.
    drop(mem);
    for h in &hierarchies {
        let dir = h.join(format!("{pod_rel}/{MEM_ID}"));
        crate::support::wait_for(Duration::from_secs(5), || std::fs::remove_dir(&dir).ok())
            .expect("rmdir mem cgroup");
    }
    let body3 = String::from_utf8(agent.scrape().to_vec()).expect("utf8");
    assert!(
        !body3.contains(&id(MEM_ID)),
        "removed container still reported"
    );
    assert!(body3.contains(&id(BUSY_ID)));
    assert_eq!(
        sample_value(&body3, "container_scrape_error", &[]),
        Some(0.0)
    );

    // Recreate it under the same path, twice, the second time with no scrape in between: the
    // descriptors kept for the old cgroup must not leak its numbers into the new one.
    let mem_dirs: Vec<PathBuf> = hierarchies
        .iter()
        .map(|h| h.join(format!("{pod_rel}/{MEM_ID}")))
        .collect();
    for dir in &mem_dirs {
        std::fs::create_dir(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    }
    let body4 = String::from_utf8(agent.scrape().to_vec()).expect("utf8");
    let fresh_usage = |body: &str| {
        sample_value(body, "container_memory_usage_bytes", &[&id(MEM_ID)])
            .expect("recreated container reported")
    };
    assert!(
        fresh_usage(&body4) < 64.0 * 1024.0 * 1024.0,
        "old usage leaked"
    );
    for dir in &mem_dirs {
        std::fs::remove_dir(dir).unwrap_or_else(|e| panic!("rmdir {}: {e}", dir.display()));
        std::fs::create_dir(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    }
    let body5 = String::from_utf8(agent.scrape().to_vec()).expect("utf8");
    assert!(fresh_usage(&body5) < 64.0 * 1024.0 * 1024.0);
    assert_eq!(
        sample_value(&body5, "container_scrape_error", &[]),
        Some(0.0)
    );
    assert!(
        sample_value(&body5, "podstat_kept_descriptors", &[]).is_some_and(|n| n > 0.0),
        "the agent keeps descriptors by default"
    );
    drop((busy, sandbox, host_net));
    drop((pod_ns, peer_ns));
    drop(cgroups);
}

/// `max_open_files = "auto"` sizes the descriptor budget from the memory limit of the cgroup
/// podstat runs in (read through /proc/self/cgroup and mountinfo on this real host).
#[test]
fn descriptor_budget_follows_podstats_own_memory_limit() {
    if skip_unless(is_root(), "root (creates a memory cgroup)") {
        return;
    }
    let mountinfo = std::fs::read("/proc/self/mountinfo").expect("mountinfo");
    let mounts = podstat::parse::procfs::cgroup_mounts(&mountinfo).expect("mounts");
    let layout = podstat::discovery::CgroupLayout::from_mounts(
        &mounts,
        std::path::Path::new("/sys/fs/cgroup"),
    );
    let (hierarchy, limit_file) = match (&layout.memory, &layout.unified) {
        (Some(m), _) => (m.clone(), "memory.limit_in_bytes"),
        (None, Some(u)) => (u.clone(), "memory.max"),
        _ => panic!("no memory hierarchy"),
    };
    let dir = hierarchy.join(unique("podstat-memlimit-"));
    std::fs::create_dir(&dir).expect("mkdir");
    let _cgroup = CgroupGuard {
        dirs: vec![dir.clone()],
    };
    const LIMIT: u64 = 40 << 20;
    std::fs::write(dir.join(limit_file), LIMIT.to_string()).expect("set the limit");

    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .expect("getrlimit");
    // The shell moves itself into the cgroup, then becomes podstat.
    let script = format!(
        "echo $$ > {procs} && ulimit -n {hard} && exec {bin} once",
        procs = dir.join("cgroup.procs").display(),
        bin = env!("CARGO_BIN_EXE_podstat"),
    );
    let out = Command::new("sh")
        .args(["-c", &script])
        .output()
        .expect("run podstat once");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body = String::from_utf8_lossy(&out.stdout);
    let budget = sample_value(&body, "podstat_kept_descriptors_limit", &[]).expect("budget");
    let by_memory = podstat::memlimit::descriptors_within(LIMIT) as f64;
    let by_rlimit = hard.saturating_sub(256) as f64;
    assert!(
        by_memory < by_rlimit,
        "the limit chosen must be the binding one"
    );
    assert_eq!(
        budget, by_memory,
        "40 MiB leaves 8 MiB for 5 KiB descriptors"
    );
    let kept = sample_value(&body, "podstat_kept_descriptors", &[]).expect("kept");
    assert!(kept <= budget, "{kept} kept over a budget of {budget}");
}

/// Descriptors of a process whose links podstat may not read are still counted, at every
/// scrape (after the first, they are counted from the size of the fd directory without a
/// listing), and none of them is a socket; a readable process beside it is counted link by
/// link. podstat runs without CAP_SYS_PTRACE (as a DaemonSet given only DAC_READ_SEARCH does),
/// so the kernel's ptrace read check refuses it the links of another user's process.
#[test]
fn descriptors_of_a_process_whose_links_are_refused_are_counted() {
    if skip_unless(is_root(), "root (creates cgroups, runs processes as another user)")
        || skip_unless(which("setpriv").is_some(), "util-linux `setpriv`")
        // Another user may not run a python3 under /root (pyenv's).
        || skip_unless(
            std::path::Path::new("/usr/bin/python3").exists(),
            "/usr/bin/python3",
        )
    {
        return;
    }
    let hierarchies = hierarchies();
    let top = unique("podstat-refused-");
    let pod_rel = format!("{top}/kubepods/besteffort/pod{POD_UID}");
    let rel = format!("{pod_rel}/{BUSY_ID}");
    let rels = vec![
        top.clone(),
        format!("{top}/kubepods"),
        format!("{top}/kubepods/besteffort"),
        pod_rel.clone(),
        rel.clone(),
    ];
    let _cgroups = crate::support::make_cgroups(&hierarchies, &rels);
    // CAP_SYS_PTRACE out of the bounding and inheritable sets: root exec'ing keeps no more.
    let no_ptrace = ["--inh-caps=-sys_ptrace", "--bounding-set=-sys_ptrace"];
    let holder = |as_user: &[&str], sockets: usize, files: usize| {
        let script = format!(
            "import socket,time\ns=[socket.socket() for _ in range({sockets})]\n\
             f=[open('/dev/null') for _ in range({files})]\nprint('ready',flush=True)\ntime.sleep(600)"
        );
        let mut child = ChildGuard(
            Command::new("setpriv")
                .args(no_ptrace)
                .args(as_user)
                .args(["/usr/bin/python3", "-c", &script])
                .current_dir("/")
                .stdout(Stdio::piped())
                .spawn()
                .expect("setpriv python3"),
        );
        let mut line = String::new();
        BufReader::new(child.0.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("ready line");
        assert_eq!(line.trim(), "ready");
        child
    };
    let other_user = ["--reuid=65534", "--regid=65534", "--clear-groups"];
    let refused = holder(&other_user, 5, 60);
    // Root with the same capabilities as podstat: its links may be read.
    let readable = holder(&[], 3, 10);
    for child in [&refused, &readable] {
        move_into(&hierarchies, &rel, child.pid());
    }
    // The precondition: without CAP_SYS_PTRACE the other user's links are refused.
    let probe = Command::new("setpriv")
        .args(no_ptrace)
        .args(["readlink", &format!("/proc/{}/fd/0", refused.pid())])
        .output()
        .expect("setpriv readlink");
    assert!(
        !probe.status.success(),
        "a process without CAP_SYS_PTRACE read another user's links: the test proves nothing"
    );
    // The kernel's count, read here with every capability.
    let kernel_files = |pid: u32| crate::support::open_files(pid).expect("fd dir");
    let (refused_fds, refused_sockets) = kernel_files(refused.pid());
    let (readable_fds, readable_sockets) = kernel_files(readable.pid());
    assert!(refused_fds >= 65.0 && refused_sockets == 5.0 && readable_sockets == 3.0);

    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("podstat.toml");
    std::fs::write(&config, "[server]\nmin_collect_interval_ms = 0\n").expect("config");
    let addr = format!("127.0.0.1:{}", crate::support::free_port());
    let podstat = ChildGuard(
        Command::new("setpriv")
            .args(no_ptrace)
            .arg(env!("CARGO_BIN_EXE_podstat"))
            .args(["--config", &config.to_string_lossy(), "--listen", &addr])
            .args(["--log-level", "warn"])
            .spawn()
            .expect("setpriv podstat"),
    );
    crate::support::wait_for(Duration::from_secs(20), || {
        crate::support::http_get(&addr, "/healthz", "").ok()
    })
    .expect("podstat did not start listening");
    let id = format!("id=\"/{rel}\"");
    for round in 0..4 {
        let (_, _, body) = crate::support::http_get(&addr, "/metrics", "").expect("scrape");
        let body = String::from_utf8_lossy(&body);
        assert_eq!(
            sample_value(&body, "container_file_descriptors", &[&id]),
            Some(refused_fds + readable_fds),
            "round {round}: every descriptor of both processes"
        );
        assert_eq!(
            sample_value(&body, "container_sockets", &[&id]),
            Some(readable_sockets),
            "round {round}: the readable process's sockets, none of the refused one's {refused_sockets}"
        );
    }
    drop(podstat);
}
