//! Golden tests: a fixture cgroup v2 tree (systemd driver, containerd) and a v1 tree (cgroupfs
//! driver) give exactly the expected exposition, which `promtool check metrics` also accepts.
//! `UPDATE_GOLDEN=1 cargo test golden` rewrites the expected files.

use std::fs::File;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use crate::support::{fixtures, golden_dir, gunzip, sample_value, skip_unless, which};

/// Copies a fixture tree (without `.gitkeep` markers) and pins every directory's and
/// `cgroup.procs`' mtime, so `container_start_time_seconds` does not depend on checkout time.
pub fn copy_pinned(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read fixture dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_pinned(&entry.path(), &target);
        } else if entry.file_name() != ".gitkeep" {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
    let pinned = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    for p in [to.to_path_buf(), to.join("cgroup.procs")] {
        if let Ok(f) = File::open(&p) {
            f.set_modified(pinned).expect("set mtime");
        }
    }
}

/// Durations and wall-clock times differ between runs; everything else must match byte for
/// byte.
pub fn normalise(body: &str) -> String {
    body.lines()
        .map(|l| {
            if l.starts_with("podstat_scrape_duration_seconds")
                || l.starts_with("podstat_collector_duration_seconds{")
                || l.starts_with("podstat_metadata_age_seconds ")
                || l.starts_with("podstat_metadata_last_success_timestamp_seconds ")
                || l.starts_with("container_last_seen{")
            {
                match l.rsplit_once(' ') {
                    Some((head, _)) => format!("{head} 0"),
                    None => l.to_owned(),
                }
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// An agent over a pinned copy of a fixture cgroup tree (with the fixture proc and sys trees),
/// configured with `settings` besides the paths; the copy lives as long as the `TempDir`.
fn agent_on(cgroup_fixture: &str, settings: &str) -> (tempfile::TempDir, podstat::agent::Agent) {
    let (tmp, cg) = pinned_tree(cgroup_fixture);
    let agent = agent_over(&cg, settings);
    (tmp, agent)
}

/// A pinned copy of a fixture cgroup tree, at the returned path in the `TempDir`.
fn pinned_tree(cgroup_fixture: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cg = tmp.path().join("cgroup");
    copy_pinned(&fixtures().join(cgroup_fixture), &cg);
    (tmp, cg)
}

/// An agent over the cgroup tree at `cg` (with the fixture proc and sys trees), configured
/// with `settings` besides the paths.
fn agent_over(cg: &std::path::Path, settings: &str) -> podstat::agent::Agent {
    let toml = format!(
        "[paths]\ncgroup_root = {:?}\nproc_root = {:?}\nsys_root = {:?}\n\
         machine_id_file = {:?}\nos_release_file = {:?}\n{settings}",
        cg,
        fixtures().join("proc-node"),
        fixtures().join("sys-node"),
        fixtures().join("etc-node/machine-id"),
        fixtures().join("etc-node/os-release"),
    );
    let config = podstat::config::parse(&toml, "test").expect("config");
    podstat::agent::Agent::new(&config).expect("agent")
}

fn render(cgroup_fixture: &str) -> String {
    // A small descriptor budget (below any RLIMIT_NOFILE) keeps the output independent of the
    // machine's limit and exercises both the kept and the open-per-read paths.
    let (_tmp, agent) = agent_on(
        cgroup_fixture,
        "[reader]\nmax_open_files = 64\n[server]\nmin_collect_interval_ms = 0\n",
    );
    let first = normalise(&String::from_utf8(agent.scrape().to_vec()).expect("utf8"));
    // The second collection reads through the descriptors the first one kept (and skips the
    // files the first found absent, and the counters that cannot have moved, whose descriptors
    // it closes); apart from the counts of opened and kept files it must be identical.
    let rendered = agent.scrape();
    let second_raw = rendered.to_vec();
    // What gzip scrapers get decodes to exactly the plain body (podstat writes its own gzip).
    assert!(
        gunzip(&rendered.gzipped()) == second_raw,
        "gzip body differs from the plain body"
    );
    let second = normalise(&String::from_utf8(second_raw).expect("utf8"));
    let without_opens = |s: &str| -> String {
        s.lines()
            .filter(|l| {
                !l.starts_with("podstat_files_read ")
                    && !l.starts_with("podstat_kept_descriptors ")
                    && !l.starts_with("podstat_discovery_dirs_listed ")
                    && !l.starts_with("podstat_collections_total ")
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        without_opens(&first),
        without_opens(&second),
        "kept descriptors changed the output"
    );
    let listed = |s: &str| sample_value(s, "podstat_discovery_dirs_listed", &[]).unwrap_or(-1.0);
    assert!(listed(&first) > 0.0, "the first walk lists the tree");
    assert_eq!(
        listed(&second),
        0.0,
        "nothing changed, nothing listed again"
    );
    let opens = |s: &str| sample_value(s, "podstat_files_read", &[]).unwrap_or(0.0);
    assert!(
        opens(&second) < opens(&first),
        "the second collection reused descriptors"
    );
    first
}

fn check(cgroup_fixture: &str, golden: &str) {
    let actual = render(cgroup_fixture);
    compare_with_golden(&actual, golden);
    // Twice: a second collection over the same tree must give the same output.
    assert_eq!(render(cgroup_fixture), actual, "second collection differs");
}

/// Compares `actual` with `tests/golden/<golden>` byte for byte, showing the first differing
/// lines; `UPDATE_GOLDEN=1` writes the file instead.
pub fn compare_with_golden(actual: &str, golden: &str) {
    crate::support::assert_no_duplicate_series(actual);
    let path = golden_dir().join(golden);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("write golden");
    }
    let expected =
        std::fs::read_to_string(&path).expect("golden file (UPDATE_GOLDEN=1 creates it)");
    if actual != expected {
        let diff: Vec<String> = expected
            .lines()
            .zip(actual.lines())
            .filter(|(e, a)| e != a)
            .take(10)
            .map(|(e, a)| format!("- {e}\n+ {a}"))
            .collect();
        panic!(
            "{golden} differs ({} expected lines, {} actual):\n{}",
            expected.lines().count(),
            actual.lines().count(),
            diff.join("\n")
        );
    }
}

#[test]
fn golden_v2_systemd_containerd() {
    check(
        "cgroup-v2/kubepods-systemd-containerd",
        "v2_systemd_containerd.prom",
    );
}

#[test]
fn golden_v1_cgroupfs() {
    check("cgroup-v1/kubepods-cgroupfs", "v1_cgroupfs.prom");
}

#[test]
fn golden_v2_has_the_compat_shape() {
    let body = render("cgroup-v2/kubepods-systemd-containerd");
    // 9 containers (incl. 3 sandboxes), 3 pods, QoS levels and root, each with a start time.
    let starts = body
        .lines()
        .filter(|l| l.starts_with("container_start_time_seconds{"))
        .count();
    assert_eq!(starts, 1 + 3 + 3 + 9, "{body}");
    // Network appears once per pod, on the pause sandbox, with lo dropped.
    let rx: Vec<&str> = body
        .lines()
        .filter(|l| l.starts_with("container_network_receive_bytes_total{"))
        .collect();
    assert_eq!(
        rx.iter()
            .filter(|l| l.contains("cri-containerd-146d3f31"))
            .count(),
        1,
        "{rx:?}"
    );
    assert!(rx.iter().all(|l| !l.contains("interface=\"lo\"")));
    // Root gets host interfaces minus veth/docker/lo.
    assert!(rx
        .iter()
        .any(|l| l.contains("id=\"/\"") && l.contains("interface=\"eth0\"")));
    assert!(!rx
        .iter()
        .any(|l| l.contains("docker0") || l.contains("veth")));
    // Guaranteed pod (no QoS level) is classified as a pod.
    assert!(body
        .contains("id=\"/kubepods.slice/kubepods-pod5cec4eb5_edd9_4831_9ca3_5cfb04fc6d82.slice\""));
}

#[test]
fn golden_files_pass_promtool() {
    let Some(promtool) = which("promtool") else {
        assert!(!skip_unless(false, "promtool (Debian package prometheus)"));
        return;
    };
    for golden in [
        "v2_systemd_containerd.prom",
        "v1_cgroupfs.prom",
        "v2_kubelet_labels.prom",
    ] {
        let out = std::process::Command::new(&promtool)
            .args(["check", "metrics"])
            .stdin(File::open(golden_dir().join(golden)).expect("golden"))
            .output()
            .expect("run promtool");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        // promtool's lint notes (e.g. "counter metrics should have _total") are warnings about
        // cAdvisor's own names; only errors fail the check.
        assert!(
            out.status.success() || !text.contains("error"),
            "{golden}: {text}"
        );
        assert!(
            !text.contains("error while linting") && !text.contains("text format parsing error"),
            "{golden}: {text}"
        );
    }
}

/// Scrapes within `min_collect_interval_ms` share one collection; once it is too old to serve,
/// the agent lets it go instead of holding it (samples and gzip body) until the next scrape.
#[test]
fn a_collection_is_shared_within_the_interval_and_released_after() {
    let (_tmp, agent) = agent_on(
        "cgroup-v2/kubepods-systemd-containerd",
        "[server]\nmin_collect_interval_ms = 300\n",
    );
    let first = agent.scrape();
    let second = agent.scrape();
    assert!(
        std::sync::Arc::ptr_eq(&first, &second),
        "a scrape within the interval collects again"
    );
    assert!(
        !agent.release_stale(),
        "a collection young enough to serve was released"
    );
    let kept = std::sync::Arc::downgrade(&first);
    drop((first, second));
    assert!(kept.upgrade().is_some(), "the agent keeps the collection");
    std::thread::sleep(Duration::from_millis(350));
    assert!(agent.release_stale(), "a stale collection was kept");
    assert!(
        kept.upgrade().is_none(),
        "released, yet something still holds the collection"
    );
    let third = agent.scrape();
    let collections = |r: &std::sync::Arc<podstat::agent::Rendered>| {
        sample_value(
            &String::from_utf8(r.to_vec()).expect("utf8"),
            "podstat_collections_total",
            &[],
        )
    };
    assert_eq!(
        collections(&third),
        Some(2.0),
        "the scrape after the release collects anew"
    );
}

#[test]
fn a_gzip_body_buffer_is_reused_only_once_nothing_serves_it() {
    let (_tmp, agent) = agent_on(
        "cgroup-v2/kubepods-systemd-containerd",
        "[server]\nmin_collect_interval_ms = 0\n",
    );
    let first = agent.scrape();
    let first_gz = first.gzipped();
    let first_plain = first.to_vec();
    drop(first);
    // The agent let the first collection go when it made the second, but a response still
    // holds the first body: its buffer must not be written again.
    let second = agent.scrape();
    let second_gz = second.gzipped();
    let third = agent.scrape();
    let _ = third.gzipped();
    assert_eq!(
        agent.spare_gzip_capacity(),
        0,
        "a body still being served was recycled"
    );
    assert!(gunzip(&first_gz) == first_plain, "a held body changed");
    assert!(gunzip(&second_gz) == second.to_vec(), "a held body changed");
    let held = first_gz.len();
    drop((first_gz, second, second_gz));
    assert!(
        agent.spare_gzip_capacity() >= held,
        "the buffer of a body nothing holds was not kept for the next"
    );
    let fourth = agent.scrape();
    assert!(
        gunzip(&fourth.gzipped()) == fourth.to_vec(),
        "a body written into a reused buffer is wrong"
    );
    assert_eq!(
        agent.spare_gzip_capacity(),
        0,
        "the kept buffer was not used"
    );
}

/// A node past deflate's window (300 containers, ~80 KiB per family): families start at
/// different containers (see `names::next_first`), and the gzip body still decodes to exactly
/// the plain one, with every container once in every family.
#[test]
fn the_stock_gzip_writer_serves_the_same_body() {
    let (_tmp, agent) = agent_on(
        "cgroup-v2/kubepods-systemd-containerd",
        "[server]\nmin_collect_interval_ms = 0\ngzip_writer = \"zlib-rs\"\n",
    );
    let (_tmp2, hinted) = agent_on(
        "cgroup-v2/kubepods-systemd-containerd",
        "[server]\nmin_collect_interval_ms = 0\n",
    );
    let (stock, ours) = (agent.scrape(), hinted.scrape());
    let (stock_gz, ours_gz) = (stock.gzipped(), ours.gzipped());
    assert!(
        gunzip(&stock_gz) == stock.to_vec(),
        "zlib-rs body differs from the plain body"
    );
    assert!(
        gunzip(&ours_gz) == ours.to_vec(),
        "hinted body differs from the plain body"
    );
    // Two different writers: the same text, not the same bytes.
    assert_ne!(stock_gz, ours_gz, "gzip_writer was not applied");
}

#[test]
fn a_large_node_gzips_to_its_plain_body_with_every_series_once() {
    let (_tmp, cg) = pinned_tree("cgroup-v2/kubepods-systemd-containerd");
    let pod = cg.join(
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod434308bc_89fa_4a68_8fb5_d27bbeb79919.slice",
    );
    let model = pod.join(
        "cri-containerd-0c0fd195c17af08a1745d6d87e570ddf827050a82369b584ff5e9ff0ff50bde4.scope",
    );
    let ids: Vec<String> = (0..300u64)
        .map(|i| {
            let mut x = i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            (0..64)
                .map(|_| {
                    x = x.rotate_left(5) ^ 0x2545_F491_4F6C_DD1D;
                    char::from_digit((x & 15) as u32, 16).unwrap_or('0')
                })
                .collect()
        })
        .collect();
    for id in &ids {
        copy_pinned(&model, &pod.join(format!("cri-containerd-{id}.scope")));
    }
    let agent = agent_over(&cg, "[server]\nmin_collect_interval_ms = 0\n");
    for _ in 0..2 {
        let rendered = agent.scrape();
        let plain = rendered.to_vec();
        assert!(
            gunzip(&rendered.gzipped()) == plain,
            "gzip body differs from the plain body"
        );
        let body = String::from_utf8(plain).expect("utf8");
        // Each family's series ids, in body order.
        let mut families: Vec<(&str, Vec<&str>)> = Vec::new();
        for line in body.lines().filter(|l| l.starts_with("container_")) {
            let Some((name, rest)) = line.split_once('{') else {
                continue;
            };
            let id = rest
                .split("id=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("");
            match families.last_mut() {
                Some((n, list)) if *n == name => list.push(id),
                _ => families.push((name, vec![id])),
            }
        }
        let known: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
        let ours = |id: &str| {
            id.rsplit_once("cri-containerd-")
                .and_then(|(_, r)| r.strip_suffix(".scope"))
                .is_some_and(|hex| known.contains(hex))
        };
        // Families with a line for every container: each of ours once, and where they start.
        let mut firsts = std::collections::BTreeSet::new();
        for (name, list) in &families {
            let mut mine: Vec<&str> = list.iter().copied().filter(|id| ours(id)).collect();
            let lines = mine.len();
            mine.sort_unstable();
            mine.dedup();
            if lines == ids.len() {
                assert_eq!(mine.len(), ids.len(), "{name}: a container twice");
                firsts.insert(list.iter().find(|id| ours(id)));
            }
        }
        for name in [
            "container_cpu_usage_seconds_total",
            "container_memory_usage_bytes",
        ] {
            let list = families.iter().find(|f| f.0 == name).map(|f| &f.1);
            let n = list.map_or(0, |l| l.iter().filter(|id| ours(id)).count());
            assert_eq!(n, ids.len(), "{name}");
        }
        assert!(
            firsts.len() > 1,
            "every family starts with the same container"
        );
    }
}

/// A FIFO and a link to /dev/zero where a container's memory.stat and cpu.stat belong (a
/// hostile or broken tree): the collection finishes, counts two I/O errors, and only those
/// files' series are missing.
#[test]
fn a_fifo_or_a_device_in_the_tree_costs_only_its_own_series() {
    let (_tmp, cg) = pinned_tree("cgroup-v2/kubepods-systemd-containerd");
    let container = walk_dirs(&cg)
        .into_iter()
        .find(|d| d.to_string_lossy().ends_with(".scope") && d.join("memory.stat").exists())
        .expect("a container directory");
    std::fs::remove_file(container.join("memory.stat")).expect("rm memory.stat");
    nix::unistd::mkfifo(
        &container.join("memory.stat"),
        nix::sys::stat::Mode::S_IRUSR,
    )
    .expect("mkfifo");
    std::fs::remove_file(container.join("cpu.stat")).expect("rm cpu.stat");
    std::os::unix::fs::symlink("/dev/zero", container.join("cpu.stat")).expect("symlink");
    let agent = agent_over(&cg, "[server]\nmin_collect_interval_ms = 0\n");
    // On a thread, so that a hang fails the test instead of stopping it.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(String::from_utf8(agent.scrape().to_vec()).expect("utf-8"));
    });
    let body = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the collection finished");
    assert_eq!(
        sample_value(&body, "podstat_read_errors_total", &["kind=\"io\""]),
        Some(2.0)
    );
    let id = format!(
        "id=\"/{}\"",
        container
            .strip_prefix(&cg)
            .expect("under the root")
            .display()
    );
    // That container's CPU and memory.stat series are gone, its other files still read.
    assert_eq!(
        sample_value(&body, "container_cpu_usage_seconds_total", &[&id]),
        None
    );
    assert_eq!(sample_value(&body, "container_memory_rss", &[&id]), None);
    assert!(sample_value(&body, "container_memory_usage_bytes", &[&id]).is_some());
    // Every other container keeps its CPU series.
    let others = body
        .lines()
        .filter(|l| l.starts_with("container_cpu_usage_seconds_total{") && !l.contains(&id))
        .count();
    assert!(others > 3, "{others}");
}

/// A link in the tree to a directory outside it (here a copy of a container, shaped like one)
/// is neither walked nor read: a bind-mounted tree cannot lead podstat out of its roots.
#[test]
fn links_out_of_the_tree_are_not_followed() {
    let (_tmp, cg) = pinned_tree("cgroup-v2/kubepods-systemd-containerd");
    let container = walk_dirs(&cg)
        .into_iter()
        .find(|d| d.to_string_lossy().ends_with(".scope") && d.join("memory.stat").exists())
        .expect("a container directory");
    let outside = tempfile::tempdir().expect("tempdir");
    let copy = outside.path().join("elsewhere");
    std::fs::create_dir(&copy).expect("mkdir");
    for entry in std::fs::read_dir(&container).expect("read_dir").flatten() {
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            std::fs::copy(entry.path(), copy.join(entry.file_name())).expect("copy");
        }
    }
    let parent = container.parent().expect("pod directory");
    let link_name = format!("cri-containerd-{}.scope", "ee".repeat(32));
    std::os::unix::fs::symlink(&copy, parent.join(&link_name)).expect("symlink");
    let agent = agent_over(&cg, "[server]\nmin_collect_interval_ms = 0\n");
    let body = String::from_utf8(agent.scrape().to_vec()).expect("utf-8");
    assert!(
        !body.contains(&link_name),
        "a linked directory was reported"
    );
    assert!(body.contains("container_cpu_usage_seconds_total{"));
}

fn walk_dirs(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
                out.push(e.path());
            }
        }
    }
    out
}

/// A host file that cannot be read (here /proc/diskstats is a directory) counts as an I/O
/// error, not as one that was read and not understood.
#[test]
fn an_unreadable_host_file_is_an_io_error_not_a_parse_error() {
    let (tmp, cg) = pinned_tree("cgroup-v2/kubepods-systemd-containerd");
    let proc_root = tmp.path().join("proc");
    copy_pinned(&fixtures().join("proc-node"), &proc_root);
    std::fs::remove_file(proc_root.join("diskstats")).expect("rm diskstats");
    std::fs::create_dir(proc_root.join("diskstats")).expect("mkdir diskstats");
    let toml = format!(
        "[paths]\ncgroup_root = {:?}\nproc_root = {:?}\nsys_root = {:?}\n\
         machine_id_file = {:?}\nos_release_file = {:?}\n",
        cg,
        proc_root,
        fixtures().join("sys-node"),
        fixtures().join("etc-node/machine-id"),
        fixtures().join("etc-node/os-release"),
    );
    let config = podstat::config::parse(&toml, "test").expect("config");
    let agent = podstat::agent::Agent::new(&config).expect("agent");
    let body = String::from_utf8(agent.scrape().to_vec()).expect("utf-8");
    let errors = |kind: &str| {
        sample_value(
            &body,
            "podstat_read_errors_total",
            &[&format!("kind=\"{kind}\"")],
        )
    };
    assert_eq!(errors("io"), Some(1.0), "{body}");
    assert_eq!(errors("parse"), Some(0.0));
    assert_eq!(
        sample_value(
            &body,
            "podstat_collector_success",
            &["collector=\"filesystem\""]
        ),
        Some(0.0)
    );
}
