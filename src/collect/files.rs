//! Open files of a cgroup's processes: `container_file_descriptors` (entries of
//! `/proc/<pid>/fd` over the PIDs of `cgroup.procs`), `container_sockets` (those that link to
//! `socket:[…]`) and `container_ulimits_soft` (`Max open files` of the first process), as
//! cAdvisor's process group counts them.
//!
//! The cost grows with descriptors, not cgroups: a listing per process and a readlink per
//! descriptor (the kubelet's own cost driver, kubernetes#99183), which is why it has a switch
//! (`[collectors] process_files`).

use super::{CollectorDef, Ctx, Tracked, Vanished};
use crate::discovery::CgroupMode;
use crate::parse::{pids, procfs};
use crate::reader::{FdBudget, KeptNumbers};
use crate::snapshot::ContainerStats;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

pub const DEF: CollectorDef = CollectorDef {
    name: "process_files",
    enabled: |c| c.process_files,
    collect,
};

fn collect(ctx: &mut Ctx, t: &Tracked, s: &mut ContainerStats) -> Result<(), Vanished> {
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
        let own = (Some(*pid) == ctx.own_pid)
            .then(|| ctx.reader.budget().map(FdBudget::kept_numbers))
            .flatten();
        if let Some((open, own_sockets)) = own.and_then(|kept| own_files(&path, &kept)) {
            inspected += 1;
            fds += open;
            sockets += own_sockets;
        } else if ctx.fd_dir_sizes && std::fs::metadata(&path).is_ok_and(|m| m.len() == 0) {
            // No descriptor open: one stat instead of a listing. Kernel threads have none, and
            // on v1 every one of them is in the root cgroup (65 of its 71 processes on the
            // development VM; hundreds on a large node).
            inspected += 1;
        } else if let Ok(entries) = std::fs::read_dir(&path) {
            // A process that exits, or one podstat may not inspect, has no descriptors to count.
            inspected += 1;
            let mut links_readable = true;
            for entry in entries.flatten() {
                fds += 1;
                if !links_readable {
                    continue;
                }
                match std::fs::read_link(entry.path()) {
                    Ok(link) => {
                        let is_socket =
                            link.as_os_str().as_encoded_bytes().starts_with(b"socket:[");
                        sockets += u64::from(is_socket);
                    }
                    // The kernel decides per process whether its links may be read (ptrace's
                    // read check), so one refusal is a refusal of all: none is a socket to
                    // cAdvisor either, which tries each. (This VM's PID 1, ~300 descriptors.)
                    Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                        links_readable = false;
                    }
                    // Closed since the listing.
                    Err(_) => {}
                }
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

/// podstat's own descriptors and sockets, without listing `fd_dir` (podstat's `/proc/<pid>/fd`)
/// and reading each link: podstat keeps thousands of cgroup files open (~19,000 at 1,000
/// containers), and the listing alone costs the kernel a dentry per descriptor, 14 ms of a
/// 54 ms scrape at 500 containers. The kept ones are known not to be sockets; the others are
/// found by number. None (then the caller lists the directory) before Linux 6.2, where the
/// directory's size is not its number of open descriptors, or when a descriptor opened or
/// closed meanwhile so the numbers do not add up.
fn own_files(fd_dir: &Path, kept: &KeptNumbers) -> Option<(u64, u64)> {
    let open = std::fs::metadata(fd_dir).ok()?.len();
    let mut others = open.checked_sub(kept.count())?;
    if open == 0 {
        return None;
    }
    // Descriptor numbers are handed out lowest first, so the others sit in the gaps between
    // the kept ones or just above them.
    let end = kept.end() + 4096;
    let (mut sockets, mut fd, mut path) = (0, 0, fd_dir.to_path_buf());
    while others > 0 {
        if fd >= end {
            return None;
        }
        if !kept.contains(fd) {
            path.push(fd.to_string());
            // stat follows the link to the open file: a socket's inode is a socket.
            if let Ok(meta) = std::fs::metadata(&path) {
                others -= 1;
                sockets += u64::from(meta.file_type().is_socket());
            }
            path.pop();
        }
        fd += 1;
    }
    Some((open, sockets))
}
