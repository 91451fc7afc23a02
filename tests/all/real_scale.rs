//! Real cgroups and namespaces at the sizes where short reads and exiting processes used to
//! lose numbers silently: a pod namespace with 60 interfaces (`net/dev` over a page), a
//! container with 1,000 processes (`cgroup.procs` over a page), and a pod whose processes exit
//! and are replaced while it is scraped. Needs root (skips loudly otherwise; fails under CI).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{
    hierarchies, is_root, make_cgroups, move_into, sample_value, skip_unless, unique, which,
    ChildGuard, NetnsGuard,
};

/// Pod UIDs of their own per test: the network collector groups a pod's cgroups by UID.
const CROWD_POD_UID: &str = "5ca1e000-4b5a-4968-8778-695a4b3c2d1e";
const CHURN_POD_UID: &str = "5ca1e001-4b5a-4968-8778-695a4b3c2d1e";
const TASKS_POD_UID: &str = "5ca1e003-4b5a-4968-8778-695a4b3c2d1e";
const LAYER_POD_UID: &str = "5ca1e004-4b5a-4968-8778-695a4b3c2d1e";

/// A container ID unique to this run and `tag` (the agents read the whole host, where other
/// tests make container cgroups of their own).
fn container_id(tag: u32) -> String {
    format!("{:056x}{tag:08x}", std::process::id())
}

/// An agent in the test process. Its descriptor budget is small because every agent of the
/// test binary (other tests run beside this one) shares one RLIMIT_NOFILE, which is raised to
/// its hard limit as podstat's main does (the soft 1024 ran out with several agents at once).
fn agent() -> podstat::agent::Agent {
    podstat::reader::raise_nofile_limit().expect("raise RLIMIT_NOFILE");
    let config = podstat::config::parse(
        "[server]\nmin_collect_interval_ms = 0\n[reader]\nmax_open_files = 300\n",
        "test",
    )
    .expect("config");
    podstat::agent::Agent::new(&config).expect("agent")
}

fn scrape(agent: &podstat::agent::Agent) -> String {
    let body = String::from_utf8(agent.scrape().to_vec()).expect("utf8");
    crate::support::assert_no_duplicate_series(&body);
    body
}

/// The interface names of `family` on the row `id`.
fn interfaces(body: &str, family: &str, id: &str) -> Vec<String> {
    let prefix = format!("{family}{{");
    let id = format!("id=\"{id}\"");
    body.lines()
        .filter(|l| l.starts_with(&prefix) && l.contains(&id))
        .filter_map(|l| {
            let at = l.find("interface=\"")? + "interface=\"".len();
            Some(l[at..at + l[at..].find('"')?].to_owned())
        })
        .collect()
}

fn root_ready(what: &str) -> bool {
    !(skip_unless(is_root(), what)
        || skip_unless(which("ip").is_some(), "iproute2 `ip`")
        || skip_unless(which("nsenter").is_some(), "util-linux `nsenter`"))
}

/// A command that runs in network namespace `ns` and nothing else: unlike `ip netns exec`,
/// nsenter does not remount /sys, so the processes still see the cgroup tree. It execs the
/// program in place, so the child's PID is the program's.
fn in_netns(ns: &str) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{ns}")).arg("--");
    c
}

#[test]
fn files_longer_than_a_read_are_counted_whole() {
    let _heavy = crate::support::exclusive();
    if !root_ready("root (creates cgroups, processes and a network namespace)") {
        return;
    }
    let hierarchies = hierarchies();
    let top = unique("podstat-scale-");
    let pod_rel = format!("{top}/kubepods/besteffort/pod{CROWD_POD_UID}");
    let (sandbox_id, crowd_id) = (container_id(0x5a), container_id(0xc0));
    let rels = vec![
        top.clone(),
        format!("{top}/kubepods"),
        format!("{top}/kubepods/besteffort"),
        pod_rel.clone(),
        format!("{pod_rel}/{sandbox_id}"),
        format!("{pod_rel}/{crowd_id}"),
    ];
    let cgroups = make_cgroups(&hierarchies, &rels);

    // A pod namespace with 60 interfaces: its net/dev is ~7.5 KB, about two reads' worth. They
    // are veth pairs whose peers are in a second namespace (this kernel may lack `dummy`).
    const INTERFACES: usize = 60;
    let ns = NetnsGuard::new(&unique("psts"));
    let peer = NetnsGuard::new(&unique("pstt"));
    let mut batch = Command::new("ip")
        .args(["-n", &ns.name, "-batch", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("ip -batch");
    {
        use std::io::Write;
        let mut stdin = batch.stdin.take().expect("stdin");
        for i in 0..INTERFACES {
            writeln!(
                stdin,
                "link add podnet{i} type veth peer name peer{i} netns {}",
                peer.name
            )
            .expect("batch line");
        }
    }
    assert!(batch.wait().expect("ip -batch").success(), "ip -batch");
    let sandbox = ChildGuard(
        in_netns(&ns.name)
            .args(["sleep", "600"])
            .spawn()
            .expect("sandbox"),
    );

    // A container with 1,000 processes (in the pod's namespace, as a pod's containers are):
    // its cgroup.procs is ~6 KB.
    const CROWD: usize = 1000;
    let mut crowd: Vec<ChildGuard> = (0..CROWD)
        .map(|_| {
            ChildGuard(
                in_netns(&ns.name)
                    .args(["sleep", "600"])
                    .spawn()
                    .expect("sleep"),
            )
        })
        .collect();
    for child in &crowd {
        move_into(&hierarchies, &format!("{pod_rel}/{crowd_id}"), child.pid());
    }
    crate::support::wait_in_netns(sandbox.pid(), &ns);
    move_into(
        &hierarchies,
        &format!("{pod_rel}/{sandbox_id}"),
        sandbox.pid(),
    );

    // One more process in the crowd, holding seven sockets.
    let holder = ChildGuard(
        in_netns(&ns.name)
            .args([
                "python3",
                "-c",
                "import socket,time\ns=[socket.socket() for _ in range(7)]\ntime.sleep(600)",
            ])
            .spawn()
            .expect("socket holder"),
    );
    move_into(&hierarchies, &format!("{pod_rel}/{crowd_id}"), holder.pid());
    let crowd_id_label = format!("id=\"/{pod_rel}/{crowd_id}\"");
    // The kernel's count, read here independently of podstat: fd entries and socket links.
    let kernel_files = || {
        let procs = std::fs::read_to_string(
            hierarchies[0]
                .join(&pod_rel)
                .join(&crowd_id)
                .join("cgroup.procs"),
        )
        .expect("cgroup.procs");
        let (mut fds, mut sockets) = (0.0, 0.0);
        for pid in procs.lines() {
            // None of these processes exits by itself: a listed one that is gone was killed.
            let pid: u32 = pid.parse().expect("a PID");
            let (open, open_sockets) = crate::support::open_files(pid)
                .ok_or_else(|| format!("listed process {pid} is gone"))?;
            fds += open;
            sockets += open_sockets;
        }
        Ok::<_, String>((fds, sockets))
    };
    // Who killed a process of the crowd, when one is gone (by its exit status).
    let mut deaths = || -> String {
        let dead: Vec<String> = crowd
            .iter_mut()
            .filter_map(|c| Some(format!("{}: {}", c.pid(), c.0.try_wait().ok()??)))
            .collect();
        format!("{} of the crowd died: {dead:?}", dead.len())
    };
    let holder_ready = crate::support::wait_for(Duration::from_secs(10), || {
        kernel_files().ok().filter(|(_, sockets)| *sockets >= 7.0)
    });
    if holder_ready.is_none() {
        panic!("the holder's sockets: {:?}; {}", kernel_files(), deaths());
    }

    let agent = agent();
    for round in 0..2 {
        // Twice: the first read opens the files, the second goes through kept descriptors.
        let body = scrape(&agent);
        let (fds, sockets) = match kernel_files() {
            Ok(counts) => counts,
            Err(e) => panic!("round {round}: {e}; {}", deaths()),
        };
        assert_eq!(
            sample_value(&body, "container_file_descriptors", &[&crowd_id_label]),
            Some(fds),
            "round {round}: descriptors of 1,001 processes"
        );
        assert_eq!(
            sample_value(&body, "container_sockets", &[&crowd_id_label]),
            Some(sockets),
            "round {round}: sockets"
        );
        assert!(sockets >= 7.0, "{sockets}");
        let first = std::fs::read_to_string(
            hierarchies[0]
                .join(&pod_rel)
                .join(&crowd_id)
                .join("cgroup.procs"),
        )
        .expect("cgroup.procs")
        .lines()
        .next()
        .map(str::to_owned)
        .expect("a process");
        let limits = std::fs::read_to_string(format!("/proc/{first}/limits")).expect("limits");
        let soft = limits
            .lines()
            .find_map(|l| l.strip_prefix("Max open files"))
            .and_then(|rest| rest.split_whitespace().next())
            .map(|v| {
                if v == "unlimited" {
                    -1.0
                } else {
                    v.parse::<f64>().expect("number")
                }
            })
            .expect("Max open files");
        assert_eq!(
            sample_value(
                &body,
                "container_ulimits_soft",
                &[&crowd_id_label, "max_open_files"]
            ),
            Some(soft),
            "round {round}: soft NOFILE of the first process"
        );
        let procs_file = hierarchies[0]
            .join(&pod_rel)
            .join(&crowd_id)
            .join("cgroup.procs");
        let kernel = std::fs::read_to_string(&procs_file)
            .expect("cgroup.procs")
            .lines()
            .count();
        assert_eq!(kernel, CROWD + 1, "the kernel lists every process");
        assert_eq!(
            sample_value(
                &body,
                "container_processes",
                &[&format!("id=\"/{pod_rel}/{crowd_id}\"")]
            ),
            Some((CROWD + 1) as f64),
            "round {round}: every process of the crowd counted"
        );
        let mut seen = interfaces(
            &body,
            "container_network_receive_bytes_total",
            &format!("/{pod_rel}"),
        );
        seen.sort();
        let mut want: Vec<String> = (0..INTERFACES).map(|i| format!("podnet{i}")).collect();
        want.sort();
        assert_eq!(seen, want, "round {round}: every interface of the pod");
    }
    drop(crowd);
    drop(holder);
    drop(sandbox);
    drop((ns, peer));
    drop(cgroups);
}

#[test]
fn a_pods_network_survives_its_processes_exiting() {
    let _heavy = crate::support::exclusive();
    if !root_ready("root (creates cgroups, processes and a network namespace)")
        || skip_unless(which("bash").is_some(), "bash (reaps its children)")
    {
        return;
    }
    let hierarchies = hierarchies();
    let top = unique("podstat-churn-");
    let pod_rel = format!("{top}/kubepods/besteffort/pod{CHURN_POD_UID}");
    let churn_id = container_id(0xc4);
    let rels = vec![
        top.clone(),
        format!("{top}/kubepods"),
        format!("{top}/kubepods/besteffort"),
        pod_rel.clone(),
        format!("{pod_rel}/{churn_id}"),
    ];
    // 300 more pods, one container each, as on a real node: the PID that the process
    // collector finds must still be alive when the network pass reaches the pod, after every
    // other cgroup has been read.
    let fillers: Vec<String> = (0..300u32)
        .flat_map(|i| {
            let pod = format!("{top}/kubepods/besteffort/pod5ca1e002-0000-4000-8000-{i:012x}");
            let container = format!("{pod}/{}", container_id(0x1000 + i));
            [pod, container]
        })
        .collect();
    let cgroups = make_cgroups(&hierarchies, &[rels, fillers].concat());
    let ns = NetnsGuard::new(&unique("pstc"));
    let peer = NetnsGuard::new(&unique("pstd"));
    crate::support::run(
        "ip",
        &[
            "-n", &ns.name, "link", "add", "podnet0", "type", "veth", "peer", "name", "peer0",
            "netns", &peer.name,
        ],
    );

    // The container's processes live 100 ms each and a new one starts every 25 ms: whichever
    // PID a scrape finds first is gone within 25 ms. Each child moves itself into the
    // container (the loop itself stays outside it), so the oldest process, the one listed
    // first, is always about to exit. bash, not sh: it reaps its children as they exit.
    let procs: Vec<String> = hierarchies
        .iter()
        .map(|h| {
            h.join(&pod_rel)
                .join(&churn_id)
                .join("cgroup.procs")
                .display()
                .to_string()
        })
        .collect();
    let join = procs
        .iter()
        .map(|p| format!("echo $$ > {p}"))
        .collect::<Vec<_>>()
        .join("; ");
    let script = format!("while :; do sh -c '{join}; exec sleep 0.1' & sleep 0.025; done");
    let churner = ChildGuard(
        in_netns(&ns.name)
            .args(["bash", "-c", &script])
            .spawn()
            .expect("churner"),
    );
    let id = format!("/{pod_rel}");
    crate::support::wait_for(Duration::from_secs(5), || {
        let procs = std::fs::read_to_string(&procs[0]).ok()?;
        (procs.lines().count() >= 2).then_some(())
    })
    .expect("the churning container has processes");

    let agent = agent();
    let mut missing = Vec::new();
    let started = Instant::now();
    const SCRAPES: usize = 100;
    for scrape_no in 0..SCRAPES {
        let body = scrape(&agent);
        if interfaces(&body, "container_network_receive_bytes_total", &id) != ["podnet0"] {
            missing.push(scrape_no);
        }
        std::thread::sleep(Duration::from_millis(17));
    }
    let took = started.elapsed();
    drop(churner);
    drop((ns, peer));
    // Let the last children (100 ms) exit before the guard removes the cgroups.
    std::thread::sleep(Duration::from_millis(300));
    drop(cgroups);
    assert!(
        missing.is_empty(),
        "{} of {SCRAPES} scrapes ({took:?}) lacked the pod's network: {missing:?}",
        missing.len()
    );
}

/// The root row's filesystem figures against `df` (an independent reader of the same kernel
/// figures) and `/proc/diskstats` read before and after the scrape.
#[test]
fn host_filesystems_agree_with_df_and_diskstats() {
    if skip_unless(which("df").is_some(), "coreutils `df`") {
        return;
    }
    let df = Command::new("df")
        .args(["-B1", "--output=source,size,used,itotal", "/"])
        .output()
        .expect("df");
    let df = String::from_utf8_lossy(&df.stdout).into_owned();
    let row: Vec<&str> = df
        .lines()
        .nth(1)
        .expect("df row")
        .split_whitespace()
        .collect();
    let (device, size, used, inodes) = (
        row[0].to_owned(),
        row[1].parse::<f64>().expect("size"),
        row[2].parse::<f64>().expect("used"),
        row[3].parse::<f64>().expect("inodes"),
    );
    let diskstats = || {
        let name = device.trim_start_matches("/dev/").to_owned();
        std::fs::read_to_string("/proc/diskstats")
            .expect("diskstats")
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.get(2) == Some(&name.as_str())).then(|| f[5].parse::<f64>().expect("sectors"))
            })
    };
    let before = diskstats();
    let body = scrape(&agent());
    let after = diskstats();
    let on_root = |family: &str| {
        sample_value(
            &body,
            family,
            &["id=\"/\"", &format!("device=\"{device}\"")],
        )
    };
    assert_eq!(
        on_root("container_fs_limit_bytes"),
        Some(size),
        "capacity of {device}"
    );
    assert_eq!(
        on_root("container_fs_inodes_total"),
        Some(inodes),
        "inodes of {device}"
    );
    // Other tests write files while this one runs: usage may move between df and the scrape.
    let ours = on_root("container_fs_usage_bytes").expect("usage");
    assert!(
        (ours - used).abs() <= (256 << 20) as f64,
        "usage {ours} vs df {used}"
    );
    if let (Some(before), Some(after)) = (before, after) {
        let sectors = on_root("container_fs_sector_reads_total").expect("sectors read");
        assert!(
            (before..=after).contains(&sectors),
            "{before} <= {sectors} <= {after}"
        );
    }
}

/// `[collectors] tasks`: thread states of a container with a busy, a stopped and five sleeping
/// processes, and a load average that follows the busy one.
#[test]
fn task_states_count_the_kernels_thread_states() {
    let _heavy = crate::support::exclusive();
    if !root_ready("root (creates cgroups and processes)") {
        return;
    }
    let hierarchies = hierarchies();
    let top = unique("podstat-tasks-");
    let pod_rel = format!("{top}/kubepods/besteffort/pod{TASKS_POD_UID}");
    let id = container_id(0x7a);
    let rels = vec![
        top.clone(),
        format!("{top}/kubepods"),
        format!("{top}/kubepods/besteffort"),
        pod_rel.clone(),
        format!("{pod_rel}/{id}"),
    ];
    let cgroups = make_cgroups(&hierarchies, &rels);
    let busy = ChildGuard(
        Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .expect("busy"),
    );
    let stopped = ChildGuard(Command::new("sleep").arg("600").spawn().expect("stopped"));
    let sleepers: Vec<ChildGuard> = (0..5)
        .map(|_| ChildGuard(Command::new("sleep").arg("600").spawn().expect("sleeper")))
        .collect();
    let rel = format!("{pod_rel}/{id}");
    for pid in [busy.pid(), stopped.pid()]
        .into_iter()
        .chain(sleepers.iter().map(ChildGuard::pid))
    {
        move_into(&hierarchies, &rel, pid);
    }
    let stopped_pid = nix::unistd::Pid::from_raw(i32::try_from(stopped.pid()).expect("pid"));
    nix::sys::signal::kill(stopped_pid, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP");
    crate::support::wait_for(Duration::from_secs(5), || {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", stopped.pid())).ok()?;
        stat.contains(") T ").then_some(())
    })
    .expect("stopped");

    podstat::reader::raise_nofile_limit().expect("raise RLIMIT_NOFILE");
    let config = podstat::config::parse(
        "[server]\nmin_collect_interval_ms = 0\n[reader]\nmax_open_files = 300\n[collectors]\ntasks = true\n",
        "test",
    )
    .expect("config");
    let agent = podstat::agent::Agent::new(&config).expect("agent");
    let label = format!("id=\"/{rel}\"");
    let state = |body: &str, s: &str| {
        sample_value(
            body,
            "container_tasks_state",
            &[&label, &format!("state=\"{s}\"")],
        )
    };
    let first = scrape(&agent);
    assert_eq!(state(&first, "running"), Some(1.0), "the busy loop");
    assert_eq!(state(&first, "stopped"), Some(1.0), "the stopped sleep");
    assert_eq!(state(&first, "sleeping"), Some(5.0), "the sleepers");
    assert_eq!(state(&first, "uninterruptible"), Some(0.0));
    std::thread::sleep(Duration::from_secs(2));
    let second = scrape(&agent);
    let load = sample_value(&second, "container_cpu_load_average_10s", &[&label]).expect("load");
    // One running thread throughout: 1000 milli-tasks, approached from the first reading.
    assert_eq!(load, 1000.0, "a steady single runner");
    drop((busy, stopped, sleepers));
    drop(cgroups);
}

/// podstat's own cgroup, where it keeps thousands of cgroup files open: process_files counts
/// them without a readlink each (it knows they are not sockets), and the counts must still be
/// the kernel's, sockets included.
#[test]
fn podstats_own_descriptors_are_counted_as_the_kernel_lists_them() {
    let _heavy = crate::support::exclusive();
    if !root_ready("root (creates a cgroup and moves podstat into it)") {
        return;
    }
    let hierarchies = hierarchies();
    // A top-level slice: a raw row by default on a plain host.
    let name = unique("podstat-own-");
    let slice = format!("{name}.slice");
    // Ten more slices, so podstat keeps a few hundred files open.
    let mut rels: Vec<String> = (0..10).map(|i| format!("{name}-{i}.slice")).collect();
    rels.push(slice.clone());
    let cgroups = make_cgroups(&hierarchies, &rels);
    let addr = format!("127.0.0.1:{}", crate::support::free_port());
    let podstat = crate::support::start_podstat(&["--listen", &addr, "--log-level", "warn"], &addr);
    move_into(&hierarchies, &slice, podstat.pid());
    let id_label = format!("id=\"/{slice}\"");
    let kernel = || crate::support::open_files(podstat.pid()).expect("podstat's fd dir");
    let mut last = None;
    // The first scrapes open and keep the files; then the set is stable but for cgroups other
    // tests make or remove meanwhile, hence a few tries.
    let agreed = crate::support::wait_for(Duration::from_secs(20), || {
        let (_, _, body) = crate::support::http_get(&addr, "/metrics", "").expect("scrape");
        let body = String::from_utf8_lossy(&body);
        // Counted after the answer, when the scrape's own connection has been closed; during
        // the collection it was one more descriptor and one more socket.
        std::thread::sleep(Duration::from_millis(200));
        let (fds, sockets) = kernel();
        // The process count too: podstat moved itself in after its first reads of the file
        // (a v1 cgroup.procs kept open and re-read within a second showed the old list).
        let seen = (
            sample_value(&body, "container_file_descriptors", &[&id_label]),
            sample_value(&body, "container_sockets", &[&id_label]),
            sample_value(&body, "container_processes", &[&id_label]),
        );
        let kept = body
            .lines()
            .find_map(|l| l.strip_prefix("podstat_kept_descriptors "))
            .and_then(|v| v.parse::<f64>().ok());
        last = Some((seen, (fds + 1.0, sockets + 1.0), kept));
        (seen == (Some(fds + 1.0), Some(sockets + 1.0), Some(1.0))).then_some(kept)
    });
    let kept = agreed.unwrap_or_else(|| {
        panic!("podstat's (fds, sockets, processes), the kernel's + the scrape's socket, kept: {last:?}")
    });
    // The case the shortcut is for: most of podstat's descriptors are kept cgroup files.
    assert!(
        kept.is_some_and(|k| k > 100.0),
        "kept descriptors: {kept:?}"
    );
    drop(podstat);
    drop(cgroups);
}

/// A CRI-O container whose root is a real overlay: its writable layer is measured as `du`
/// measures it, on the container's row, with the capacity and device of the filesystem under
/// it.
#[test]
fn a_crio_containers_writable_layer_is_measured_like_du() {
    let overlay = std::fs::read_to_string("/proc/filesystems")
        .is_ok_and(|f| f.lines().any(|l| l.ends_with("\toverlay")));
    if !root_ready("root (mounts an overlay, creates cgroups)")
        || skip_unless(overlay, "the overlay filesystem")
        || skip_unless(which("unshare").is_some(), "util-linux `unshare`")
        || skip_unless(which("du").is_some(), "coreutils `du`")
    {
        return;
    }
    let hierarchies = hierarchies();
    let top = unique("podstat-layer-");
    let pod_rel = format!("{top}/kubepods/besteffort/pod{LAYER_POD_UID}");
    let container = format!("crio-{}.scope", container_id(0x1a));
    let rels = vec![
        top.clone(),
        format!("{top}/kubepods"),
        format!("{top}/kubepods/besteffort"),
        pod_rel.clone(),
        format!("{pod_rel}/{container}"),
    ];
    let cgroups = make_cgroups(&hierarchies, &rels);

    // The image: sleep and the libraries it loads. The overlay is mounted in a mount namespace
    // of the container's own, so the host's mount table never shows it.
    let dir = tempfile::tempdir().expect("tempdir");
    let (lower, upper, work, merged) = (
        dir.path().join("lower"),
        dir.path().join("upper"),
        dir.path().join("work"),
        dir.path().join("merged"),
    );
    for d in [&lower, &upper, &work, &merged] {
        std::fs::create_dir(d).expect("mkdir");
    }
    let sleep = which("sleep").expect("sleep");
    std::fs::copy(&sleep, lower.join("sleep")).expect("copy sleep");
    let ldd = Command::new("ldd").arg(&sleep).output().expect("ldd");
    for lib in String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
    {
        let to = lower.join(lib.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().expect("parent")).expect("lib dir");
        std::fs::copy(lib, &to).expect("copy lib");
    }
    // What the container writes: a 300 KB file with a second name, a directory with a file.
    let m = merged.display();
    let script = format!(
        "mount -t overlay overlay -o lowerdir={},upperdir={},workdir={} {m} && \
         head -c 300000 /dev/zero > {m}/data && ln {m}/data {m}/data-again && \
         mkdir {m}/logs && echo started > {m}/logs/app.log && exec chroot {m} /sleep 600",
        lower.display(),
        upper.display(),
        work.display()
    );
    let child = ChildGuard(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .spawn()
            .expect("unshare"),
    );
    crate::support::wait_for(Duration::from_secs(10), || {
        let mounts = std::fs::read_to_string(format!("/proc/{}/mountinfo", child.pid())).ok()?;
        mounts
            .lines()
            .any(|l| l.contains(" / / ") && l.contains("overlay"))
            .then_some(())
    })
    .expect("the container's root is the overlay");
    move_into(&hierarchies, &format!("{pod_rel}/{container}"), child.pid());

    let du = |args: &[&str]| -> f64 {
        let out = Command::new("du")
            .args(args)
            .arg(&upper)
            .output()
            .expect("du");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .expect("du figure")
    };
    let (bytes, inodes) = (du(&["-sx", "-B1"]), du(&["-sx", "--inodes"]));
    let fs = nix::sys::statvfs::statvfs(&upper).expect("statvfs");
    let capacity = (fs.blocks() * fs.fragment_size()) as f64;

    let agent = agent();
    let id_label = format!("id=\"/{pod_rel}/{container}\"");
    // The first walk runs off the scrape path: the figures come with a later scrape.
    let body = crate::support::wait_for(Duration::from_secs(10), || {
        let body = scrape(&agent);
        sample_value(&body, "container_fs_usage_bytes", &[&id_label]).map(|_| body)
    })
    .expect("the layer's usage");
    assert_eq!(
        sample_value(&body, "container_fs_usage_bytes", &[&id_label]),
        Some(bytes),
        "du -sxB1 {}",
        upper.display()
    );
    assert_eq!(
        sample_value(&body, "container_fs_inodes_total", &[&id_label]),
        Some(inodes),
        "du -sx --inodes"
    );
    assert_eq!(
        sample_value(&body, "container_fs_inodes_free", &[&id_label]),
        Some(0.0)
    );
    assert_eq!(
        sample_value(&body, "container_fs_limit_bytes", &[&id_label]),
        Some(capacity)
    );
    // The device label is the root row's name for the same filesystem.
    let line = body
        .lines()
        .find(|l| l.starts_with("container_fs_limit_bytes{") && l.contains(&id_label))
        .expect("limit line");
    let device = line
        .split("device=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("device label");
    assert_eq!(
        sample_value(
            &body,
            "container_fs_limit_bytes",
            &["id=\"/\"", &format!("device=\"{device}\"")]
        ),
        Some(capacity),
        "{device} on the root row"
    );
    crate::support::assert_no_duplicate_series(&body);
    drop(child);
    drop(cgroups);
}
