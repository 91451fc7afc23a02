//! Pure cgroup v2 on a real kernel: tests/vm/run.sh boots a Debian kernel with cgroup2 only,
//! runs workloads in kubelet-shaped trees of both drivers, freezes them and leaves podstat's
//! output (`once` and a scrape of the server) between two copies of the kernel's files. Here
//! every sample of every container, pod and QoS row is recomputed from those files, by rules
//! written again from the kernel's documentation (not podstat's code), and must lie between the
//! two copies.
//!
//! `PODSTAT_VM_RESULTS=DIR` compares the results of an earlier `tests/vm/run.sh DIR` instead of
//! booting the guest again.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{skip_unless, which};

#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

impl Sample {
    fn label(&self, key: &str) -> &str {
        self.labels.get(key).map_or("", String::as_str)
    }
}

/// The exposition's sample lines (podstat writes no timestamps and no escaped quotes in the
/// labels these rows carry).
fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let value: f64 = value.parse().expect("sample value");
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.strip_suffix('}').expect("closing brace")),
            None => (series, ""),
        };
        let mut map = BTreeMap::new();
        let mut rest = labels;
        while let Some((key, after)) = rest.split_once("=\"") {
            let end = after.find('"').expect("closing quote");
            map.insert(key.to_owned(), after[..end].to_owned());
            rest = after[end + 1..].trim_start_matches(',');
        }
        samples.push(Sample {
            name: name.to_owned(),
            labels: map,
            value,
        });
    }
    samples
}

/// One copy of the guest's files (tests/vm/guest/init, `dump`).
struct Copy {
    dir: PathBuf,
    /// (cgroup as an `id` label, file name) → contents, from `grep -r ''` over the trees.
    files: HashMap<(String, String), String>,
    /// Every cgroup of the trees, as `id` labels.
    cgroups: BTreeSet<String>,
}

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

impl Copy {
    fn load(dir: PathBuf) -> Copy {
        let mut files: HashMap<(String, String), String> = HashMap::new();
        let text = std::fs::read_to_string(dir.join("cgroup-files")).expect("cgroup-files");
        for line in text.lines() {
            let (path, content) = line.split_once(':').expect("path:line");
            let (cgroup, file) = path.rsplit_once('/').expect("cgroup/file");
            let cgroup = cgroup
                .strip_prefix(CGROUP_ROOT)
                .expect("under the cgroup root");
            let entry = files
                .entry((cgroup.to_owned(), file.to_owned()))
                .or_default();
            entry.push_str(content);
            entry.push('\n');
        }
        let mut copy = Copy {
            dir,
            files,
            cgroups: BTreeSet::new(),
        };
        copy.cgroups = copy
            .text("mtimes")
            .lines()
            .filter_map(|l| l.split_once(' ')?.1.strip_suffix("/cgroup.procs"))
            .map(|dir| {
                dir.strip_prefix(CGROUP_ROOT)
                    .expect("under the cgroup root")
                    .to_owned()
            })
            .collect();
        copy
    }

    fn text(&self, name: &str) -> String {
        let path = self.dir.join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn cgroup_file(&self, cgroup: &str, file: &str) -> Option<String> {
        self.files
            .get(&(cgroup.to_owned(), file.to_owned()))
            .cloned()
    }

    /// The value after `key ` in a flat-keyed file (memory.stat, cpu.stat, memory.events).
    fn keyed(&self, cgroup: &str, file: &str, key: &str) -> Option<f64> {
        self.cgroup_file(cgroup, file)?
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// A one-value file; "max" (no limit) is `None`.
    fn single(&self, cgroup: &str, file: &str) -> Option<Option<f64>> {
        let text = self.cgroup_file(cgroup, file)?;
        let word = text.split_whitespace().next()?;
        Some(if word == "max" {
            None
        } else {
            Some(
                word.parse()
                    .unwrap_or_else(|_| panic!("{cgroup}/{file}: {text}")),
            )
        })
    }

    /// `total=` of the `some` or `full` line of a PSI file, in seconds.
    fn pressure(&self, cgroup: &str, resource: &str, line: &str) -> Option<f64> {
        let text = self.cgroup_file(cgroup, &format!("{resource}.pressure"))?;
        let l = text.lines().find(|l| l.starts_with(line))?;
        let total: f64 = l.split("total=").nth(1)?.trim().parse().ok()?;
        Some(total / 1e6)
    }

    /// The IDs listed in `cgroup.procs` or `cgroup.threads`.
    fn ids(&self, cgroup: &str, file: &str) -> Vec<u32> {
        self.cgroup_file(cgroup, file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    fn procs(&self, cgroup: &str) -> Vec<u32> {
        self.ids(cgroup, "cgroup.procs")
    }

    /// Per PID: (descriptors, of them sockets), from `ls -l /proc/[0-9]*/fd/`.
    fn descriptors(&self) -> HashMap<u32, (u64, u64)> {
        let mut out = HashMap::new();
        let mut current = None;
        for line in self.text("fds").lines() {
            if let Some(dir) = line.strip_suffix(':') {
                current = dir
                    .trim_start_matches("/proc/")
                    .trim_end_matches("/fd/")
                    .parse::<u32>()
                    .ok();
                if let Some(pid) = current {
                    out.insert(pid, (0, 0));
                }
            } else if let (Some(pid), true) = (current, line.contains(" -> ")) {
                let entry = out.entry(pid).or_insert((0, 0));
                entry.0 += 1;
                if line.contains("-> socket:[") {
                    entry.1 += 1;
                }
            }
        }
        out
    }

    /// Per PID: the soft "Max open files" (unlimited: -1).
    fn open_file_limits(&self) -> HashMap<u32, f64> {
        self.text("limits")
            .lines()
            .filter_map(|l| {
                let pid = l.strip_prefix("/proc/")?.split('/').next()?.parse().ok()?;
                let soft = l.split(':').nth(1)?.split_whitespace().nth(3)?;
                let soft = if soft == "unlimited" {
                    -1.0
                } else {
                    soft.parse().ok()?
                };
                Some((pid, soft))
            })
            .collect()
    }

    /// Per thread ID: its state letter (/proc/<pid>/task/<tid>/stat, after the command's `)`).
    fn thread_states(&self) -> HashMap<u32, char> {
        self.text("task-stats")
            .lines()
            .filter_map(|l| {
                let tid = l.split("/task/").nth(1)?.split('/').next()?.parse().ok()?;
                let state = l.rsplit_once(") ")?.1.chars().next()?;
                Some((tid, state))
            })
            .collect()
    }

    /// Per path: its mtime in seconds (`stat -c '%Y %n'`).
    fn mtimes(&self) -> HashMap<String, i64> {
        self.text("mtimes")
            .lines()
            .filter_map(|l| {
                let (t, path) = l.split_once(' ')?;
                Some((path.to_owned(), t.parse().ok()?))
            })
            .collect()
    }

    /// Per interface: the 16 counters of /proc/<pid>/net/dev.
    fn net_dev(&self, file: &str) -> HashMap<String, Vec<f64>> {
        self.text(file)
            .lines()
            .skip(2)
            .filter_map(|l| {
                let (name, counters) = l.split_once(':')?;
                let v: Vec<f64> = counters
                    .split_whitespace()
                    .filter_map(|c| c.parse().ok())
                    .collect();
                (v.len() == 16).then(|| (name.trim().to_owned(), v))
            })
            .collect()
    }

    /// `major:minor` → `/dev/<name>`, from /sys/block/<name>/dev.
    fn block_devices(&self) -> HashMap<String, String> {
        self.text("block-devices")
            .lines()
            .filter_map(|l| {
                let (name, majmin) = l.strip_prefix("/sys/block/")?.split_once("/dev:")?;
                Some((majmin.trim().to_owned(), format!("/dev/{name}")))
            })
            .collect()
    }

    fn time(&self) -> f64 {
        self.text("time").trim().parse().expect("time")
    }
}

/// One copy with the per-process tables read once.
struct Kernel {
    copy: Copy,
    descriptors: HashMap<u32, (u64, u64)>,
    open_file_limits: HashMap<u32, f64>,
    thread_states: HashMap<u32, char>,
    mtimes: HashMap<String, i64>,
    pod_net: HashMap<String, Vec<f64>>,
    block_devices: HashMap<String, String>,
    time: f64,
}

impl Kernel {
    fn load(dir: PathBuf) -> Kernel {
        let copy = Copy::load(dir);
        Kernel {
            descriptors: copy.descriptors(),
            open_file_limits: copy.open_file_limits(),
            thread_states: copy.thread_states(),
            mtimes: copy.mtimes(),
            pod_net: copy.net_dev("pod-net-dev"),
            block_devices: copy.block_devices(),
            time: copy.time(),
            copy,
        }
    }

    /// The io.stat line of the device a sample names (`/dev/<name>`, or `major:minor` for a
    /// device /sys/block does not list).
    fn io_stat(&self, cgroup: &str, device: &str, key: &str) -> Option<f64> {
        let majmin = self
            .block_devices
            .iter()
            .find(|(_, name)| name.as_str() == device)
            .map_or(device, |(majmin, _)| majmin.as_str());
        let text = self.copy.cgroup_file(cgroup, "io.stat")?;
        let line = text.lines().find(|l| l.split(' ').next() == Some(majmin))?;
        line.split(' ')
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
    }

    /// What the kernel's files say `sample` of the cgroup `id` should be. `Err`: podstat wrote
    /// a sample the kernel has no value for.
    fn expected(&self, id: &str, s: &Sample, net_pod: &str) -> Result<f64, String> {
        let c = &self.copy;
        let missing = || format!("no kernel value for {} of {id}", s.name);
        let stat = |file: &str, key: &str| c.keyed(id, file, key).ok_or_else(missing);
        let usec = |key: &str| stat("cpu.stat", key).map(|v| v / 1e6);
        let limit = |file: &str| {
            c.single(id, file)
                .ok_or_else(missing)
                .map(|v| v.unwrap_or(0.0))
        };
        let psi = |res: &str, line: &str| c.pressure(id, res, line).ok_or_else(missing);
        let net = |field: usize| {
            if id != net_pod {
                return Err(format!(
                    "network series on {id}, which has no network namespace of its own"
                ));
            }
            self.pod_net
                .get(s.label("interface"))
                .map(|v| v[field])
                .ok_or_else(|| {
                    format!(
                        "interface {} not in the pod's /proc/<pid>/net/dev",
                        s.label("interface")
                    )
                })
        };
        let io = |key: &str| self.io_stat(id, s.label("device"), key).ok_or_else(missing);
        let procs = || c.procs(id);
        let threads_in = |state: &[char]| {
            c.ids(id, "cgroup.threads")
                .iter()
                .filter(|t| {
                    self.thread_states
                        .get(t)
                        .is_some_and(|st| state.contains(st))
                })
                .count() as f64
        };
        match s.name.as_str() {
            "container_cpu_usage_seconds_total" => usec("usage_usec"),
            "container_cpu_user_seconds_total" => usec("user_usec"),
            "container_cpu_system_seconds_total" => usec("system_usec"),
            "container_cpu_cfs_periods_total" => stat("cpu.stat", "nr_periods"),
            "container_cpu_cfs_throttled_periods_total" => stat("cpu.stat", "nr_throttled"),
            "container_cpu_cfs_throttled_seconds_total" => usec("throttled_usec"),
            "container_memory_usage_bytes" => limit("memory.current"),
            "container_memory_working_set_bytes" => {
                let usage = limit("memory.current")?;
                Ok((usage - stat("memory.stat", "inactive_file")?).max(0.0))
            }
            "container_memory_rss" => stat("memory.stat", "anon"),
            "container_memory_cache" => stat("memory.stat", "file"),
            "container_memory_mapped_file" => stat("memory.stat", "file_mapped"),
            "container_memory_kernel_usage" => stat("memory.stat", "kernel"),
            "container_memory_total_active_file_bytes" => stat("memory.stat", "active_file"),
            "container_memory_total_inactive_file_bytes" => stat("memory.stat", "inactive_file"),
            "container_memory_swap" => limit("memory.swap.current"),
            "container_memory_max_usage_bytes" => limit("memory.peak"),
            "container_memory_failures_total" => stat("memory.stat", s.label("failure_type")),
            "container_memory_events_high_total" => stat("memory.events", "high"),
            "container_memory_events_max_total" => stat("memory.events", "max"),
            "container_oom_events_total" => stat("memory.events", "oom_kill"),
            "container_pressure_cpu_waiting_seconds_total" => psi("cpu", "some"),
            "container_pressure_cpu_stalled_seconds_total" => psi("cpu", "full"),
            "container_pressure_memory_waiting_seconds_total" => psi("memory", "some"),
            "container_pressure_memory_stalled_seconds_total" => psi("memory", "full"),
            "container_pressure_io_waiting_seconds_total" => psi("io", "some"),
            "container_pressure_io_stalled_seconds_total" => psi("io", "full"),
            "container_spec_cpu_period" => c
                .cgroup_file(id, "cpu.max")
                .and_then(|t| t.split_whitespace().nth(1)?.parse().ok())
                .ok_or_else(missing),
            "container_spec_cpu_quota" => match c.single(id, "cpu.max") {
                Some(Some(quota)) => Ok(quota),
                _ => Err(format!("a quota for {id}, whose cpu.max has none")),
            },
            "container_spec_cpu_shares" => {
                let weight = limit("cpu.weight")?;
                Ok(2.0 + ((weight - 1.0) * 262_142.0 / 9_999.0).floor())
            }
            "container_spec_memory_limit_bytes" => limit("memory.max"),
            "container_spec_memory_reservation_limit_bytes" => limit("memory.min"),
            "container_spec_memory_swap_limit_bytes" => limit("memory.swap.max"),
            "container_threads" => limit("pids.current"),
            "container_threads_max" => limit("pids.max"),
            "container_processes" => Ok(procs().len() as f64),
            "container_file_descriptors" | "container_sockets" => {
                let sockets = s.name == "container_sockets";
                Ok(procs()
                    .iter()
                    .filter_map(|p| self.descriptors.get(p))
                    .map(|(all, sock)| if sockets { *sock } else { *all } as f64)
                    .fold(0.0, |a, b| a + b))
            }
            "container_ulimits_soft" => procs()
                .first()
                .and_then(|p| self.open_file_limits.get(p).copied())
                .ok_or_else(|| format!("a ulimit for {id}, which has no process")),
            "container_tasks_state" => Ok(match s.label("state") {
                "running" => threads_in(&['R']),
                "sleeping" => threads_in(&['S']),
                "uninterruptible" => threads_in(&['D']),
                "stopped" => threads_in(&['T', 't']),
                other => return Err(format!("unknown task state {other}")),
            }),
            "container_start_time_seconds" => {
                let dir = format!("/sys/fs/cgroup{id}");
                [dir.clone(), format!("{dir}/cgroup.procs")]
                    .iter()
                    .filter_map(|p| self.mtimes.get(p))
                    .min()
                    .map(|t| *t as f64)
                    .ok_or_else(missing)
            }
            "container_network_receive_bytes_total" => net(0),
            "container_network_receive_packets_total" => net(1),
            "container_network_receive_errors_total" => net(2),
            "container_network_receive_packets_dropped_total" => net(3),
            "container_network_transmit_bytes_total" => net(8),
            "container_network_transmit_packets_total" => net(9),
            "container_network_transmit_errors_total" => net(10),
            "container_network_transmit_packets_dropped_total" => net(11),
            "container_fs_reads_bytes_total" => io("rbytes"),
            "container_fs_writes_bytes_total" => io("wbytes"),
            "container_fs_reads_total" => io("rios"),
            "container_fs_writes_total" => io("wios"),
            "container_blkio_device_usage_total" => match s.label("operation") {
                "Read" => io("rbytes"),
                "Write" => io("wbytes"),
                other => Err(format!("operation {other} on cgroup v2")),
            },
            other => Err(format!(
                "{other} on {id}: not a family cgroup v2 provides for a container"
            )),
        }
    }
}

/// Families that depend on time rather than on the frozen files: checked against the clock.
const CLOCK_FAMILIES: &[&str] = &["container_last_seen"];
/// Smoothed across collections by podstat itself (a 10 s time constant), so no file holds them.
const SMOOTHED_FAMILIES: &[&str] = &[
    "container_cpu_load_average_10s",
    "container_cpu_load_d_average_10s",
];

/// Families every container with a process has on cgroup v2 with the default collectors and
/// `tasks = true`.
const EVERY_CONTAINER: &[&str] = &[
    "container_cpu_usage_seconds_total",
    "container_cpu_user_seconds_total",
    "container_cpu_system_seconds_total",
    "container_memory_usage_bytes",
    "container_memory_working_set_bytes",
    "container_memory_rss",
    "container_memory_cache",
    "container_memory_mapped_file",
    "container_memory_kernel_usage",
    "container_memory_total_active_file_bytes",
    "container_memory_total_inactive_file_bytes",
    "container_memory_swap",
    "container_memory_max_usage_bytes",
    "container_memory_failures_total",
    "container_memory_events_high_total",
    "container_memory_events_max_total",
    "container_oom_events_total",
    "container_pressure_cpu_waiting_seconds_total",
    "container_pressure_cpu_stalled_seconds_total",
    "container_pressure_memory_waiting_seconds_total",
    "container_pressure_memory_stalled_seconds_total",
    "container_pressure_io_waiting_seconds_total",
    "container_pressure_io_stalled_seconds_total",
    "container_spec_cpu_period",
    "container_spec_cpu_shares",
    "container_spec_memory_limit_bytes",
    "container_spec_memory_reservation_limit_bytes",
    "container_spec_memory_swap_limit_bytes",
    "container_threads",
    "container_threads_max",
    "container_processes",
    "container_file_descriptors",
    "container_sockets",
    "container_ulimits_soft",
    "container_tasks_state",
    "container_cpu_load_average_10s",
    "container_cpu_load_d_average_10s",
    "container_start_time_seconds",
    "container_last_seen",
];

/// Families only some containers have: (family, the pod list name of a container that must).
const SOME_CONTAINERS: &[(&str, &str)] = &[
    ("container_spec_cpu_quota", "burner"),
    ("container_cpu_cfs_periods_total", "burner"),
    ("container_cpu_cfs_throttled_periods_total", "burner"),
    ("container_cpu_cfs_throttled_seconds_total", "burner"),
    ("container_fs_reads_bytes_total", "io"),
    ("container_fs_writes_bytes_total", "io"),
    ("container_fs_reads_total", "io"),
    ("container_fs_writes_total", "io"),
    ("container_blkio_device_usage_total", "io"),
];

const NETWORK_FAMILIES: &[&str] = &[
    "container_network_receive_bytes_total",
    "container_network_receive_packets_total",
    "container_network_receive_errors_total",
    "container_network_receive_packets_dropped_total",
    "container_network_transmit_bytes_total",
    "container_network_transmit_packets_total",
    "container_network_transmit_errors_total",
    "container_network_transmit_packets_dropped_total",
];

/// The cgroup whose cgroup.procs lists `pid`, as an `id` label.
fn cgroup_of(copy: &Copy, pid: u32) -> Option<String> {
    copy.cgroups
        .iter()
        .find(|c| copy.procs(c).contains(&pid))
        .cloned()
}

/// (container ID → (pod, namespace, container, image)) from the pod list the guest served.
fn listed_containers(pods_json: &str) -> HashMap<String, [String; 4]> {
    let list: serde_json::Value = serde_json::from_str(pods_json).expect("pod list JSON");
    let mut out = HashMap::new();
    for pod in list["items"].as_array().expect("items") {
        let name = pod["metadata"]["name"].as_str().expect("pod name");
        let ns = pod["metadata"]["namespace"].as_str().expect("namespace");
        for st in pod["status"]["containerStatuses"]
            .as_array()
            .expect("statuses")
        {
            let id = st["containerID"].as_str().expect("containerID");
            let id = id.trim_start_matches("containerd://").to_owned();
            let spec_image = pod["spec"]["containers"]
                .as_array()
                .expect("containers")
                .iter()
                .find(|c| c["name"] == st["name"])
                .and_then(|c| c["image"].as_str())
                .expect("spec image");
            out.insert(
                id,
                [
                    name.to_owned(),
                    ns.to_owned(),
                    st["name"].as_str().expect("name").to_owned(),
                    spec_image.to_owned(),
                ],
            );
        }
    }
    out
}

struct Report {
    checked: usize,
    rows: usize,
    mismatches: Vec<String>,
}

/// Compares one output of podstat (`once` or the server's) with the two copies of a phase.
fn compare(phase: &Path, output: &str) -> Report {
    let before = Kernel::load(phase.join("before"));
    let after = Kernel::load(phase.join("after"));
    let text = std::fs::read_to_string(phase.join(output)).expect("podstat output");
    let samples = parse_exposition(&text);
    let sandbox: u32 =
        std::fs::read_to_string(phase.parent().expect("results").join("sandbox.pid"))
            .expect("sandbox.pid")
            .trim()
            .parse()
            .expect("pid");
    // The pod's network goes on its sandbox's row (the container the pod list leaves out), as
    // the kubelet's cAdvisor reports it.
    let net_pod = cgroup_of(&before.copy, sandbox).expect("the sandbox's cgroup");
    let listed = listed_containers(&before.copy.text("../pods.json"));

    let mut report = Report {
        checked: 0,
        rows: 0,
        mismatches: Vec::new(),
    };
    let mut rows: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for s in &samples {
        let id = s.label("id");
        if !id.starts_with("/kubepods") {
            continue; // the root row, and podstat's own self-metrics
        }
        rows.entry(id).or_default().insert(s.name.as_str());
        if let Some(listed) = listed.get(s.label("name")) {
            let got = [
                s.label("pod"),
                s.label("namespace"),
                s.label("container"),
                s.label("image"),
            ];
            if got != [&listed[0], &listed[1], &listed[2], &listed[3]].map(String::as_str) {
                report
                    .mismatches
                    .push(format!("{id}: labels {got:?}, pod list says {listed:?}"));
            }
        }
        if SMOOTHED_FAMILIES.contains(&s.name.as_str()) {
            continue;
        }
        let range = if CLOCK_FAMILIES.contains(&s.name.as_str()) {
            Ok((before.time, after.time))
        } else {
            before.expected(id, s, &net_pod).and_then(|b| {
                after
                    .expected(id, s, &net_pod)
                    .map(|a| (b.min(a), b.max(a)))
            })
        };
        report.checked += 1;
        // Counts, bytes and whole seconds must be exact; seconds made from microseconds may be
        // a rounding apart (far below the microsecond they count in).
        let slack = if s.name.ends_with("_seconds_total") {
            1e-9
        } else {
            0.0
        };
        match range {
            Ok((lo, hi)) if s.value >= lo - slack && s.value <= hi + slack => {}
            Ok((lo, hi)) => report.mismatches.push(format!(
                "{id} {}{:?}: podstat {} but the kernel {lo}..{hi}",
                s.name,
                s.labels
                    .iter()
                    .filter(
                        |(k, _)| !["id", "name", "container", "pod", "namespace", "image"]
                            .contains(&k.as_str())
                    )
                    .collect::<Vec<_>>(),
                s.value
            )),
            Err(e) => report.mismatches.push(e),
        }
    }
    report.rows = rows.len();

    // Every cgroup of the trees is a row, and every row has what the kernel can give it.
    for cg in &before.copy.cgroups {
        let Some(families) = rows.get(cg.as_str()) else {
            report.mismatches.push(format!("{cg}: no row at all"));
            continue;
        };
        let leaf_name = cg.rsplit('/').next().unwrap_or_default();
        let id = leaf_name
            .trim_start_matches("cri-containerd-")
            .trim_end_matches(".scope");
        let container = listed.get(id).map(|l| l[2].as_str());
        if container.is_some() && !before.copy.procs(cg).is_empty() {
            for family in EVERY_CONTAINER {
                if !families.contains(family) {
                    report
                        .mismatches
                        .push(format!("{cg} ({container:?}): no {family}"));
                }
            }
        }
        for (family, who) in SOME_CONTAINERS {
            if container == Some(*who) && !families.contains(family) {
                report.mismatches.push(format!("{cg} ({who}): no {family}"));
            }
        }
        let has_network = NETWORK_FAMILIES
            .iter()
            .filter(|f| families.contains(*f))
            .count();
        if *cg == net_pod && has_network != NETWORK_FAMILIES.len() {
            report.mismatches.push(format!("{cg} (the sandbox of the pod with a network namespace): {has_network} of 8 network families"));
        }
    }
    // Every interface of the pod but lo: eth0 and net1..net12.
    let interfaces: BTreeSet<&str> = samples
        .iter()
        .filter(|s| s.name == "container_network_receive_bytes_total" && s.label("id") == net_pod)
        .map(|s| s.label("interface"))
        .collect();
    let want: BTreeSet<&str> = before
        .pod_net
        .keys()
        .map(String::as_str)
        .filter(|i| *i != "lo")
        .collect();
    if interfaces != want {
        report.mismatches.push(format!(
            "pod interfaces {interfaces:?}, the namespace has {want:?}"
        ));
    }
    report
}

/// The workloads did what they are there for, so that agreeing on their numbers means
/// something: read from the kernel's own copy of phase 1.
fn assert_the_workloads_ran(phase: &Path) {
    let k = Kernel::load(phase.join("before"));
    let listed = listed_containers(&k.copy.text("../pods.json"));
    let all = &k.copy.cgroups;
    let cgroup = |container: &str| {
        let id = listed
            .iter()
            .find(|(_, l)| l[2] == container)
            .map(|(id, _)| id.clone())
            .unwrap_or_else(|| panic!("{container} not in the pod list"));
        all.iter()
            .find(|c| c.contains(&id))
            .cloned()
            .unwrap_or_else(|| panic!("no cgroup for {container}"))
    };
    let stat = |container: &str, file: &str, key: &str| {
        k.copy
            .keyed(&cgroup(container), file, key)
            .unwrap_or_else(|| panic!("{container}: no {key} in {file}"))
    };
    assert_eq!(
        stat("oom", "memory.events", "oom_kill"),
        1.0,
        "the OOM kill"
    );
    assert!(
        stat("burner", "cpu.stat", "nr_throttled") > 0.0,
        "the burner was throttled"
    );
    assert!(
        stat("holder", "memory.events", "high") > 0.0,
        "the holder went over memory.high"
    );
    let swapped = k
        .copy
        .single(&cgroup("swap"), "memory.swap.current")
        .flatten()
        .unwrap_or(0.0);
    assert!(swapped > 8.0 * 1024.0 * 1024.0, "swapped out: {swapped}");
    let vda = k
        .block_devices
        .iter()
        .find(|(_, n)| n.as_str() == "/dev/vda")
        .map(|(m, _)| m.clone())
        .expect("vda");
    let io = |key: &str| k.io_stat(&cgroup("io"), &vda, key).unwrap_or(0.0);
    assert!(
        io("rbytes") >= 16.0 * 1048576.0 && io("wbytes") >= 16.0 * 1048576.0,
        "direct IO: {} read, {} written",
        io("rbytes"),
        io("wbytes")
    );
    assert_eq!(
        k.copy.procs(&cgroup("many")).len(),
        101,
        "the container of many processes"
    );
    let eth0 = k.pod_net.get("eth0").expect("eth0 in the pod");
    assert!(
        eth0[0] >= 40.0 * 1400.0 && eth0[8] >= 40.0 * 900.0,
        "pings through eth0: {eth0:?}"
    );
    assert_eq!(k.pod_net.len(), 14, "lo, eth0 and net1..net12 in the pod");
}

#[test]
fn a_pure_cgroup_v2_kernel_agrees_with_podstat() {
    let (results, booted) = match std::env::var_os("PODSTAT_VM_RESULTS") {
        Some(dir) => (PathBuf::from(dir), false),
        None => {
            let ready = which("qemu-system-x86_64").is_some() && which("busybox").is_some();
            if skip_unless(
                ready,
                "qemu-system-x86 and busybox-static (the pure cgroup v2 guest)",
            ) {
                return;
            }
            let _heavy = crate::support::exclusive();
            let dir = tempfile::tempdir().expect("tempdir").keep();
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vm/run.sh");
            let status = Command::new("bash")
                .arg(&script)
                .arg(&dir)
                .arg(env!("CARGO_BIN_EXE_podstat"))
                .status()
                .expect("run tests/vm/run.sh");
            assert!(
                status.success(),
                "tests/vm/run.sh failed (results and console in {})",
                dir.display()
            );
            (dir, true)
        }
    };
    if let Ok(reason) = std::fs::read_to_string(results.join("FAILED")) {
        panic!(
            "the guest failed: {reason} (console: {})",
            results.join("console.log").display()
        );
    }
    let kernel = std::fs::read_to_string(results.join("kernel")).unwrap_or_default();
    assert_the_workloads_ran(&results.join("workloads"));
    let mut failures = Vec::new();
    for phase in ["workloads", "scale"] {
        for output in ["once.prom", "server.prom"] {
            let report = compare(&results.join(phase), output);
            eprintln!(
                "vm ({}): {phase}/{output}: {} rows, {} samples checked against the kernel, {} mismatches",
                kernel.trim(),
                report.rows,
                report.checked,
                report.mismatches.len()
            );
            // At least the rows the guest made, each with its families (not a vacuous pass).
            let pods =
                std::fs::read_to_string(results.join(phase).join("pods.json")).expect("pods.json");
            let rows = 17 + 3 * (pods.matches("\"uid\"").count() - 3);
            assert!(
                report.rows >= rows && report.checked >= 40 * rows,
                "{phase}/{output}: {} rows, {} samples",
                report.rows,
                report.checked
            );
            failures.extend(
                report
                    .mismatches
                    .into_iter()
                    .map(|m| format!("{phase}/{output}: {m}")),
            );
        }
    }
    // Kept for a look when something differs.
    if failures.is_empty() && booted {
        let _ = std::fs::remove_dir_all(&results);
    }
    assert!(
        failures.is_empty(),
        "{} mismatches, the first 40:\n{}",
        failures.len(),
        failures
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
