//! Open files of a cgroup's processes: `container_file_descriptors` (entries of
//! `/proc/<pid>/fd` over the PIDs of `cgroup.procs`), `container_sockets` (those that link to
//! `socket:[…]`) and `container_ulimits_soft` (`Max open files` of the first process), as
//! cAdvisor's process group counts them.
//!
//! The cost grows with descriptors, not cgroups: a listing per process and a readlink per
//! descriptor (the kubelet's own cost driver, kubernetes#99183), which is why it has a switch
//! (`[collectors] process_files`).

use super::{CollectorDef, Ctx, Vanished};
use crate::discovery::{CgroupMode, Target};
use crate::parse::{pids, procfs};
use crate::snapshot::ContainerStats;

pub const DEF: CollectorDef = CollectorDef {
    name: "process_files",
    enabled: |c| c.process_files,
    collect,
};

fn collect(ctx: &mut Ctx, t: &Target, s: &mut ContainerStats) -> Result<(), Vanished> {
    let procs_dir = if ctx.mode == CgroupMode::V2 {
        t.dirs.unified.as_deref()
    } else {
        t.dirs.cpu.as_deref().or(t.dirs.cpuacct.as_deref())
    };
    // The process collector's reading of cgroup.procs when it ran for this cgroup.
    let listed = if ctx.pids_listed {
        std::mem::take(&mut ctx.pids)
    } else {
        match ctx.parse(t, procs_dir, "cgroup.procs", |b| {
            Ok(pids(b).collect::<Vec<u32>>())
        })? {
            Some(listed) => listed,
            None => return Ok(()),
        }
    };
    let (mut fds, mut sockets, mut inspected) = (0u64, 0u64, 0usize);
    let mut path = ctx.proc_root.clone();
    for pid in &listed {
        path.push(pid.to_string());
        path.push("fd");
        // A process that exits, or one podstat may not inspect, has no descriptors to count.
        if let Ok(entries) = std::fs::read_dir(&path) {
            inspected += 1;
            for entry in entries.flatten() {
                fds += 1;
                let is_socket = std::fs::read_link(entry.path())
                    .is_ok_and(|l| l.as_os_str().as_encoded_bytes().starts_with(b"socket:["));
                sockets += u64::from(is_socket);
            }
        }
        path.pop();
        path.pop();
    }
    // Processes listed but none of them inspectable (no access to the host's /proc, or all gone
    // since the listing) is not "no descriptors": no series, rather than a zero.
    if listed.is_empty() || inspected > 0 {
        s.file_descriptors = Some(fds);
        s.sockets = Some(sockets);
    }
    if let Some(first) = listed.first() {
        let dir = ctx.proc_root.join(first.to_string());
        // Gone since the listing: no series rather than a guess.
        if let Ok(bytes) = ctx.reader.read(&dir, "limits") {
            s.ulimit_open_files = procfs::limits_max_open_files(bytes).ok();
        }
    }
    // Hand the buffer back for the next cgroup.
    ctx.pids = listed;
    ctx.pids_listed = false;
    Ok(())
}
