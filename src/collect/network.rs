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

use super::Ctx;
use crate::discovery::CgroupKind;
use crate::parse::{cgroup_procs, netdev};
use crate::reader::ReadError;
use crate::snapshot::ContainerSample;

/// `process_collected`: the process collector ran, so `first_pid` is already known.
pub fn collect(ctx: &mut Ctx, samples: &mut [ContainerSample], process_collected: bool) {
    let host_netns = netns_of(&ctx.proc_root, "1");
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
    let mut plan: Vec<(usize, u32)> = Vec::with_capacity(pods.len() + 1);
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
        let Some(&(_, any_pid)) = with_pids.first() else {
            continue;
        };
        let sandbox = with_pids
            .iter()
            .find(|(_, pid)| is_pause(&ctx.proc_root, *pid))
            .copied();
        let (row, pid) = match (sandbox, pod_row) {
            (Some((row, pid)), _) => (row, pid),
            (None, Some(row)) => (*row, any_pid),
            (None, None) => (with_pids[0].0, any_pid),
        };
        let pid_text = pid.to_string();
        if host_netns.is_some() && netns_of(&ctx.proc_root, &pid_text) == host_netns {
            continue;
        }
        plan.push((row, pid));
    }
    if let Some(row) = root_row {
        plan.push((row, 1));
    }
    for (row, pid) in plan {
        let dir = ctx.proc_root.join(pid.to_string()).join("net");
        let mut interfaces = Vec::new();
        let result = match ctx.reader.read(&dir, "dev") {
            Ok(bytes) => netdev::net_dev(bytes, |name, stats| {
                if !netdev::is_ignored_interface(name) {
                    interfaces.push((Arc::from(String::from_utf8_lossy(name).as_ref()), stats));
                }
            }),
            // The process exited between listing and reading: the pod is being torn down.
            Err(ReadError::Missing(_) | ReadError::Vanished(_)) => continue,
            Err(e) => {
                ctx.record_error("network read failed", &dir.join("dev"), &e);
                continue;
            }
        };
        match result {
            Ok(()) => samples[row].stats.network = interfaces,
            Err(e) => ctx.record_error("net/dev not understood", &dir.join("dev"), &e),
        }
    }
}

/// The `net:[inode]` link of a process's network namespace, if readable.
fn netns_of(proc_root: &Path, pid: &str) -> Option<PathBuf> {
    std::fs::read_link(proc_root.join(pid).join("ns").join("net")).ok()
}

/// The sandbox runs only `pause`; checked by the process name.
fn is_pause(proc_root: &Path, pid: u32) -> bool {
    std::fs::read(proc_root.join(pid.to_string()).join("comm"))
        .map(|c| crate::parse::trim(&c) == b"pause")
        .unwrap_or(false)
}
