//! Network counters per pod, read from `/proc/<pid>/net/dev` of a process of the pod: all
//! containers of a pod share one network namespace, so one read per pod is enough.
//!
//! The series go on the sandbox (pause) row when it can be told from the path and process name,
//! else on the pod row. Pods in the host network namespace get no network series: they would
//! report the host's interfaces as their own (cAdvisor does, and sums over pods multiply host
//! traffic). The root `/` carries the host namespace's interfaces.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::{fresh, Ctx};
use crate::discovery::{CgroupKind, Target};
use crate::parse::{cgroup_procs, netdev};
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
    pid: u32,
    f: impl FnOnce(&PidProbe, &mut FileCache) -> T,
) -> T {
    let mut probe = target.probe.lock().unwrap_or_else(|p| p.into_inner());
    let mut files = target.files.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(old) = probe.take_if(|p| p.pid != pid) {
        files.forget_dir(&old.net_dir);
    }
    let probe = probe.get_or_insert_with(|| PidProbe::new(proc_root, pid));
    f(probe, &mut files)
}

/// The host's network namespace: PID 1's. Where PID 1 cannot be inspected (seen as root on a
/// Firecracker VM whose init is not dumpable: EACCES), podstat's own, which is the host's in
/// the deployments the docs describe (a host service, or a pod with `hostNetwork: true`);
/// otherwise only podstat's own pod would lose its network series. `first` logs the fallback
/// once, not on every refresh.
fn host_netns(proc_root: &Path, first: bool) -> Option<PathBuf> {
    let pid1 = proc_root.join("1").join("ns").join("net");
    match std::fs::read_link(&pid1) {
        Ok(netns) => Some(netns),
        Err(e) => {
            let own = std::fs::read_link(proc_root.join("self").join("ns").join("net")).ok();
            if first {
                tracing::warn!(
                    file = %pid1.display(),
                    error = %e,
                    own = ?own,
                    "cannot read the host's network namespace; taking podstat's own as the host's"
                );
            }
            own
        }
    }
}

/// `process_collected`: the process collector ran, so `first_pid` is already known.
pub fn collect(ctx: &mut Ctx, samples: &mut [ContainerSample], process_collected: bool) {
    let proc_root = ctx.proc_root.clone();
    let host_netns = match fresh(&ctx.host.netns) {
        Some(netns) => netns,
        None => {
            let netns = host_netns(&proc_root, ctx.host.netns.is_none());
            ctx.host.netns = Some((Instant::now(), netns.clone()));
            netns
        }
    };
    // pod uid -> (pod row index, container row indices)
    let mut pods: HashMap<&str, (Option<usize>, Vec<usize>)> = HashMap::new();
    let mut root_row = None;
    for (i, s) in samples.iter().enumerate() {
        match &s.target.kind {
            CgroupKind::Pod { uid } => pods.entry(uid.as_str()).or_default().0 = Some(i),
            CgroupKind::Container { pod_uid, .. } => {
                pods.entry(pod_uid.as_str()).or_default().1.push(i)
            }
            CgroupKind::Root => root_row = Some(i),
            _ => {}
        }
    }
    // (row that gets the series, row whose process is read, its PID)
    let mut plan: Vec<(usize, usize, u32)> = Vec::with_capacity(pods.len() + 1);
    for (pod_row, containers) in pods.values() {
        let mut pid_of = |i: usize| -> Option<u32> {
            if process_collected {
                // The process collector already read cgroup.procs: None means no process.
                return samples[i].stats.first_pid;
            }
            let target = &samples[i].target;
            let dir = target.main_dir()?;
            let mut files = target.files.lock().unwrap_or_else(|p| p.into_inner());
            let bytes = ctx
                .reader
                .read_cached(&mut files, dir, "cgroup.procs")
                .ok()??;
            cgroup_procs(bytes).ok()?.1
        };
        let with_pids: Vec<(usize, u32)> = containers
            .iter()
            .filter_map(|&i| Some((i, pid_of(i)?)))
            .collect();
        let Some(&first) = with_pids.first() else {
            continue;
        };
        let sandbox = with_pids
            .iter()
            .find(|(i, pid)| with_probe(&proc_root, &samples[*i].target, *pid, |p, _| p.pause))
            .copied();
        let (row, (source, pid)) = match (sandbox, pod_row) {
            (Some(s), _) => (s.0, s),
            (None, Some(row)) => (*row, first),
            (None, None) => (first.0, first),
        };
        let netns = with_probe(&proc_root, &samples[source].target, pid, |p, _| {
            p.netns.clone()
        });
        if host_netns.is_some() && netns == host_netns {
            continue;
        }
        plan.push((row, source, pid));
    }
    if let Some(row) = root_row {
        plan.push((row, row, 1));
    }
    for (row, source, pid) in plan {
        let target = Arc::clone(&samples[source].target);
        let mut interfaces = Vec::new();
        let mut failure: Option<(PathBuf, String)> = None;
        let gone = with_probe(&proc_root, &target, pid, |probe, files| {
            let result = match ctx.reader.read_cached(files, &probe.net_dir, "dev") {
                Ok(Some(bytes)) => netdev::net_dev(bytes, |name, stats| {
                    if !netdev::is_ignored_interface(name) {
                        interfaces.push((Arc::from(String::from_utf8_lossy(name).as_ref()), stats));
                    }
                }),
                // The process exited between listing and reading: the pod is being torn down.
                Ok(None) | Err(ReadError::Missing(_) | ReadError::Vanished(_)) => return true,
                Err(e) => {
                    failure = Some((probe.net_dir.join("dev"), e.to_string()));
                    return false;
                }
            };
            if let Err(e) = result {
                failure = Some((probe.net_dir.join("dev"), format!("not understood: {e}")));
            }
            false
        });
        match failure {
            Some((path, e)) => ctx.record_error("network read failed", &path, &e),
            None if !gone => samples[row].stats.network = interfaces,
            None => {}
        }
    }
}
