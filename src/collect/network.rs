//! Network counters per pod, read from `/proc/<pid>/net/dev` of a process of the pod: all
//! containers of a pod share one network namespace, so one read per pod is enough.
//!
//! The series go on the sandbox (pause) row when it can be told from the path and process name,
//! else on the pod row. Pods in the host network namespace get no network series: they would
//! report the host's interfaces as their own (cAdvisor does, and sums over pods multiply host
//! traffic). The root `/` carries the host namespace's interfaces. Docker and Podman containers
//! off Kubernetes are each their own "pod": their row gets their namespace's interfaces, as
//! cAdvisor's Docker handler reports them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::{fresh, Ctx, TargetState};
use crate::discovery::layout::standalone_container_id;
use crate::discovery::{CgroupKind, Target};
use crate::parse::netdev::InterfaceStats;
use crate::parse::{netdev, pids};
use crate::reader::{FileCache, ReadError};
use crate::snapshot::ContainerSample;

/// What podstat learned about a cgroup's first process, kept on the cgroup while that PID
/// stays its first: whether it is `pause`, its network namespace, and the directory of its
/// `net/dev` (whose descriptor the cgroup's file cache keeps). Re-probing every scrape cost a
/// `comm` read, a readlink and an open per pod.
#[derive(Debug)]
pub struct PidProbe {
    pid: u32,
    pause: bool,
    netns: Option<PathBuf>,
    net_dir: PathBuf,
}

impl PidProbe {
    fn new(proc_root: &Path, pid: u32) -> PidProbe {
        let pid_dir = proc_root.join(pid.to_string());
        PidProbe {
            pid,
            pause: std::fs::read(pid_dir.join("comm"))
                .map(|c| crate::parse::trim(&c) == b"pause")
                .unwrap_or(false),
            netns: std::fs::read_link(pid_dir.join("ns").join("net")).ok(),
            net_dir: pid_dir.join("net"),
        }
    }
}

/// Runs `f` on the probe of `target`'s process `pid`, probing anew when the PID changed.
fn with_probe<T>(
    proc_root: &Path,
    target: &Target,
    state: &TargetState,
    pid: u32,
    f: impl FnOnce(&PidProbe, &mut FileCache) -> T,
) -> T {
    let mut probe = state.probe.lock().unwrap_or_else(|p| p.into_inner());
    let mut files = target.files.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(old) = probe.take_if(|p| p.pid != pid) {
        files.forget_dir(&old.net_dir);
    }
    let probe = probe.get_or_insert_with(|| PidProbe::new(proc_root, pid));
    f(probe, &mut files)
}

/// The host's network namespace: PID 1's. Where PID 1 cannot be inspected (seen as root on a
/// Firecracker VM whose init holds capabilities podstat lacks: EACCES), kthreadd's (PID 2):
/// kernel threads live in the initial namespaces, and its link is readable where PID 1's is
/// not. Without either (no host PID namespace), podstat's own, which is the host's in the
/// deployments the docs describe (a host service, or a pod with `hostNetwork: true`);
/// otherwise only podstat's own pod would lose its network series. Found by the cluster test
/// (tests/cluster): the DaemonSet's pod took its own namespace for the host's and dropped its
/// network series. `first` logs a fallback once, not on every refresh.
fn host_netns(proc_root: &Path, first: bool) -> Option<PathBuf> {
    let pid1 = proc_root.join("1").join("ns").join("net");
    let error = match std::fs::read_link(&pid1) {
        Ok(netns) => return Some(netns),
        Err(e) => e,
    };
    if let Some(netns) = kthreadd_netns(proc_root) {
        if first {
            tracing::info!(
                file = %pid1.display(),
                error = %error,
                netns = %netns.display(),
                "PID 1's network namespace cannot be read; the host's is kthreadd's (PID 2)"
            );
        }
        return Some(netns);
    }
    let own = std::fs::read_link(proc_root.join("self").join("ns").join("net")).ok();
    if first {
        tracing::warn!(
            file = %pid1.display(),
            error = %error,
            own = ?own,
            "cannot read the host's network namespace; taking podstat's own as the host's"
        );
    }
    own
}

/// PID 2's network namespace if PID 2 is the kernel's kthreadd (parent 0): in a PID namespace
/// of a container, PID 2 is an ordinary process of it.
fn kthreadd_netns(proc_root: &Path) -> Option<PathBuf> {
    let pid2 = proc_root.join("2");
    let stat = std::fs::read(pid2.join("stat")).ok()?;
    match crate::parse::procfs::stat_comm_ppid(&stat) {
        Some((b"kthreadd", 0)) => {}
        _ => return None,
    }
    std::fs::read_link(pid2.join("ns").join("net")).ok()
}

/// What reading a pod's network through one of its processes gave.
enum Through {
    Interfaces(Vec<(Arc<str>, InterfaceStats)>),
    /// The process is in the host's network namespace (a `hostNetwork` pod).
    HostNetwork,
    /// The process exited before its `net/dev` could be read.
    Gone,
    /// Its `net/dev` was read but not understood.
    Failed(PathBuf, String),
    /// Its `net/dev` could not be read.
    Unreadable(ReadError),
}

/// Reads the interfaces of `pid`'s network namespace, `pid` being a process of `target`.
fn read_through(
    ctx: &mut Ctx,
    target: &Target,
    state: &TargetState,
    pid: u32,
    host_netns: Option<&PathBuf>,
) -> Through {
    let proc_root = ctx.proc_root.clone();
    with_probe(&proc_root, target, state, pid, |probe, files| {
        if host_netns.is_some() && probe.netns.as_ref() == host_netns {
            return Through::HostNetwork;
        }
        let mut interfaces = Vec::new();
        let parsed = match ctx.reader.read_cached(files, &probe.net_dir, "dev") {
            Ok(Some(bytes)) => netdev::net_dev(bytes, |name, stats| {
                if !netdev::is_ignored_interface(name) {
                    interfaces.push((Arc::from(String::from_utf8_lossy(name).as_ref()), stats));
                }
            }),
            Ok(None) | Err(ReadError::Missing(_) | ReadError::Vanished(_)) => return Through::Gone,
            Err(e) => return Through::Unreadable(e),
        };
        match parsed {
            Ok(()) => Through::Interfaces(interfaces),
            Err(e) => Through::Failed(probe.net_dir.join("dev"), format!("not understood: {e}")),
        }
    })
}

/// The PIDs of `target` listed now (not the ones the process collector saw earlier in this
/// collection), at most [`MAX_PIDS_TRIED`].
fn listed_pids(ctx: &mut Ctx, target: &Target) -> Vec<u32> {
    let Some(dir) = target.main_dir() else {
        return Vec::new();
    };
    let mut files = target.files.lock().unwrap_or_else(|p| p.into_inner());
    match ctx.reader.read_cached(&mut files, dir, "cgroup.procs") {
        Ok(Some(bytes)) => pids(bytes).take(MAX_PIDS_TRIED).collect(),
        _ => Vec::new(),
    }
}

/// PIDs tried per container cgroup once the first one turned out to be gone: a pod whose
/// processes all exit faster than this many reads has no network to report anyway.
const MAX_PIDS_TRIED: usize = 16;

/// Who gets network series: `(row that gets them, candidates to read through as (row, first
/// PID), the sandbox's first)`, one entry per pod with a process and per Docker or Podman
/// container, and the root row (read through PID 1).
struct Plan {
    reads: Vec<(usize, Vec<(usize, u32)>)>,
    root_row: Option<usize>,
}

/// `process_collected`: the process collector ran, so `first_pid` is already known.
/// `states[i]` is what is kept about `samples[i]`'s cgroup.
pub fn collect(
    ctx: &mut Ctx,
    samples: &mut [ContainerSample],
    states: &[Arc<TargetState>],
    process_collected: bool,
) {
    let host_netns = cached_host_netns(ctx);
    let plan = plan(ctx, samples, states, process_collected);
    for (row, candidates) in plan.reads {
        if let Some(interfaces) =
            pod_network(ctx, samples, states, &candidates, host_netns.as_ref())
        {
            samples[row].stats.network = interfaces;
        }
    }
    if let Some(row) = plan.root_row {
        let target = Arc::clone(&samples[row].target);
        match read_through(ctx, &target, &states[row], 1, None) {
            Through::Interfaces(interfaces) => samples[row].stats.network = interfaces,
            Through::Failed(path, e) => ctx.record_error("network read failed", &path, &e),
            Through::Unreadable(e) => ctx.record_read_error("network read failed", &e),
            Through::HostNetwork | Through::Gone => {}
        }
    }
}

/// The host's network namespace, looked up at most once per [`super::HOST_REFRESH`].
fn cached_host_netns(ctx: &mut Ctx) -> Option<PathBuf> {
    if let Some(netns) = fresh(&ctx.host.netns) {
        return netns;
    }
    let netns = host_netns(&ctx.proc_root, ctx.host.netns.is_none());
    ctx.host.netns = Some((Instant::now(), netns.clone()));
    netns
}

fn plan(
    ctx: &mut Ctx,
    samples: &[ContainerSample],
    states: &[Arc<TargetState>],
    process_collected: bool,
) -> Plan {
    // pod uid -> (pod row index, container row indices)
    let mut pods: HashMap<&str, (Option<usize>, Vec<usize>)> = HashMap::new();
    let mut root_row = None;
    let mut standalone = Vec::new();
    for (i, s) in samples.iter().enumerate() {
        match &s.target.kind {
            CgroupKind::Pod { uid } => pods.entry(uid.as_str()).or_default().0 = Some(i),
            CgroupKind::Container { pod_uid, .. } => {
                pods.entry(pod_uid.as_str()).or_default().1.push(i)
            }
            CgroupKind::Root => root_row = Some(i),
            CgroupKind::Raw if standalone_container_id(&s.target.path).is_some() => {
                standalone.push(i)
            }
            _ => {}
        }
    }
    let pid_of = |ctx: &mut Ctx, i: usize| -> Option<u32> {
        if process_collected {
            // The process collector already read cgroup.procs: None means no process.
            return samples[i].stats.first_pid;
        }
        listed_pids(ctx, &samples[i].target).first().copied()
    };
    let mut reads = Vec::with_capacity(pods.len() + standalone.len());
    for (pod_row, containers) in pods.values() {
        let with_pids: Vec<(usize, u32)> = containers
            .iter()
            .filter_map(|&i| Some((i, pid_of(ctx, i)?)))
            .collect();
        if !with_pids.is_empty() {
            reads.push(pod_read(
                &ctx.proc_root,
                samples,
                states,
                *pod_row,
                with_pids,
            ));
        }
    }
    for i in standalone {
        if let Some(pid) = pid_of(ctx, i) {
            reads.push((i, vec![(i, pid)]));
        }
    }
    Plan { reads, root_row }
}

/// The row that gets a pod's series and its containers in the order to read through: the
/// sandbox (the container whose process is `pause`, else the one the pod list leaves out; the
/// kubelet's cAdvisor reports the pod's network on the sandbox row) first, since it lives as
/// long as the pod's namespace; without one, the pod row.
fn pod_read(
    proc_root: &Path,
    samples: &[ContainerSample],
    states: &[Arc<TargetState>],
    pod_row: Option<usize>,
    mut with_pids: Vec<(usize, u32)>,
) -> (usize, Vec<(usize, u32)>) {
    let is_pause = |&(i, pid): &(usize, u32)| {
        with_probe(proc_root, &samples[i].target, &states[i], pid, |p, _| {
            p.pause
        })
    };
    let sandbox = with_pids.iter().position(is_pause).or_else(|| {
        let listed_out: Vec<usize> = (0..with_pids.len())
            .filter(|&k| samples[with_pids[k].0].labels.sandbox)
            .collect();
        (listed_out.len() == 1).then(|| listed_out[0])
    });
    let row = match (sandbox, pod_row) {
        (Some(k), _) => with_pids[k].0,
        (None, Some(row)) => row,
        (None, None) => with_pids[0].0,
    };
    if let Some(k) = sandbox {
        with_pids.swap(0, k);
    }
    (row, with_pids)
}

/// The pod's interfaces, read through the first of `candidates` (container row, PID) whose
/// process is still there. A pod's namespace outlives any one of its processes, so when the
/// PID seen earlier in this collection has exited, the pod's cgroups are listed again and
/// their live processes tried: one short-lived process must not drop the pod's series. None:
/// a host-network pod, a read error (counted), or no process of the pod left.
fn pod_network(
    ctx: &mut Ctx,
    samples: &[ContainerSample],
    states: &[Arc<TargetState>],
    candidates: &[(usize, u32)],
    host_netns: Option<&PathBuf>,
) -> Option<Vec<(Arc<str>, InterfaceStats)>> {
    let mut tried: Vec<u32> = Vec::new();
    for pass in 0..2 {
        for &(i, first_pid) in candidates {
            let target = &samples[i].target;
            let pids = if pass == 0 {
                vec![first_pid]
            } else {
                listed_pids(ctx, target)
            };
            for pid in pids {
                if tried.contains(&pid) {
                    continue;
                }
                tried.push(pid);
                match read_through(ctx, target, &states[i], pid, host_netns) {
                    Through::Interfaces(interfaces) => return Some(interfaces),
                    Through::HostNetwork => return None,
                    Through::Failed(path, e) => {
                        ctx.record_error("network read failed", &path, &e);
                        return None;
                    }
                    Through::Unreadable(e) => {
                        ctx.record_read_error("network read failed", &e);
                        return None;
                    }
                    Through::Gone => {}
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A proc tree with `/proc/<pid>/ns/net` links and `/proc/<pid>/stat` files.
    fn proc_tree(links: &[(&str, &str)], stats: &[(&str, &str)]) -> tempfile::TempDir {
        let root = tempfile::tempdir().expect("temp dir");
        for (pid, target) in links {
            let ns = root.path().join(pid).join("ns");
            std::fs::create_dir_all(&ns).expect("ns dir");
            symlink(target, ns.join("net")).expect("net link");
        }
        for (pid, stat) in stats {
            std::fs::create_dir_all(root.path().join(pid)).expect("pid dir");
            std::fs::write(root.path().join(pid).join("stat"), stat).expect("stat");
        }
        root
    }

    const KTHREADD: &str = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 2\n";

    #[test]
    fn host_netns_is_pid_1s_where_readable() {
        let root = proc_tree(
            &[("1", "net:[1]"), ("2", "net:[2]"), ("self", "net:[9]")],
            &[("2", KTHREADD)],
        );
        assert_eq!(host_netns(root.path(), false), Some("net:[1]".into()));
    }

    #[test]
    fn host_netns_falls_back_to_kthreadd_then_to_podstats_own() {
        let root = proc_tree(&[("2", "net:[2]"), ("self", "net:[9]")], &[("2", KTHREADD)]);
        assert_eq!(host_netns(root.path(), true), Some("net:[2]".into()));
        // In a PID namespace of its own, PID 2 is an ordinary process: not the host's.
        let root = proc_tree(
            &[("2", "net:[2]"), ("self", "net:[9]")],
            &[("2", "2 (sh) S 1 2 2 0 -1 0\n")],
        );
        assert_eq!(host_netns(root.path(), true), Some("net:[9]".into()));
    }
}
