//! Open files of a cgroup's processes: `container_file_descriptors` (entries of
//! `/proc/<pid>/fd` over the PIDs of `cgroup.procs`), `container_sockets` (those that link to
//! `socket:[…]`) and `container_ulimits_soft` (`Max open files` of the first process), as
//! cAdvisor's process group counts them.
//!
//! The cost grows with descriptors, not cgroups: a listing per process and a readlink per
//! descriptor (the kubelet's own cost driver, kubernetes#99183), which is why it has a switch
//! (`[collectors] process_files`). Where the count is all there is to learn, a stat of the fd
//! directory replaces the listing: a process with none open, and one whose links podstat may not
//! read ([`RefusedLinks`]).

use super::{CollectorDef, Ctx, Tracked, Vanished};
use crate::discovery::CgroupMode;
use crate::parse::{pids, procfs};
use crate::reader::{FdBudget, KeptNumbers};
use crate::snapshot::ContainerStats;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

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
        let counted = own
            .and_then(|kept| own_files(&path, &kept))
            .or_else(|| files_of(&mut path, *pid, ctx.fd_dir_sizes, &mut ctx.refused_links));
        if let Some((open, open_sockets)) = counted {
            inspected += 1;
            fds += open;
            sockets += open_sockets;
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

/// Processes whose descriptor links podstat may not read, from this collection and the one
/// before. The kernel decides per process (ptrace's read check): without CAP_SYS_PTRACE that is
/// every process of another user, and this VM's PID 1 (~300 descriptors) even with it. Listing
/// such a process's fd directory costs a dentry per descriptor only to count them, which the
/// directory's size tells (6.2 on); so a process refused at the last collection is counted by a
/// stat, once a readlink of its `cwd` (the same check: both are `proc_pid_readlink`) shows it
/// still is refused.
#[derive(Debug, Default)]
pub struct RefusedLinks {
    previous: HashSet<u32>,
    current: HashSet<u32>,
}

impl RefusedLinks {
    /// Forgets the processes not refused in the collection that just ended (exited ones too).
    pub fn next_collection(&mut self) {
        std::mem::swap(&mut self.previous, &mut self.current);
        self.current.clear();
    }
}

/// The descriptors and sockets of the process whose `fd` directory is `fd_dir`
/// (`<proc>/<pid>/fd`, restored on return); None when it is gone or may not be inspected.
fn files_of(
    fd_dir: &mut PathBuf,
    pid: u32,
    fd_dir_sizes: bool,
    refused: &mut RefusedLinks,
) -> Option<(u64, u64)> {
    if fd_dir_sizes {
        let open = std::fs::metadata(&*fd_dir).ok()?.len();
        // No descriptor open: kernel threads have none, and on v1 every one of them is in the
        // root cgroup (65 of its 71 processes on the development VM; hundreds on a large node).
        if open == 0 {
            return Some((0, 0));
        }
        if refused.previous.contains(&pid) {
            fd_dir.set_file_name("cwd");
            let still = std::fs::read_link(&*fd_dir)
                .is_err_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied);
            fd_dir.set_file_name("fd");
            if still {
                refused.current.insert(pid);
                return Some((open, 0));
            }
        }
    }
    let entries = std::fs::read_dir(&*fd_dir).ok()?;
    let (mut fds, mut sockets, mut links_readable) = (0, 0, true);
    for entry in entries.flatten() {
        fds += 1;
        if !links_readable {
            continue;
        }
        match std::fs::read_link(entry.path()) {
            Ok(link) => {
                let is_socket = link.as_os_str().as_encoded_bytes().starts_with(b"socket:[");
                sockets += u64::from(is_socket);
            }
            // One refusal is a refusal of all: none is a socket to cAdvisor either, which
            // tries each.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                links_readable = false;
                refused.current.insert(pid);
            }
            // Closed since the listing.
            Err(_) => {}
        }
    }
    Some((fds, sockets))
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
    let (mut sockets, mut fd) = (0, 0);
    while others > 0 {
        if fd >= end {
            return None;
        }
        if !kept.contains(fd) {
            if let Some(is_socket) = own_descriptor_is_socket(fd) {
                others -= 1;
                sockets += u64::from(is_socket);
            }
        }
        fd += 1;
    }
    Some((open, sockets))
}

/// Whether podstat's own descriptor `fd` is a socket; None when the number is not open. An
/// fstat of the number itself: a stat of `/proc/self/fd/<n>` walks procfs to the same file
/// (~1.5 µs against ~0.2), and the kept descriptors closed while their files are served leave
/// gaps, each a failed lookup before.
#[allow(unsafe_code)]
fn own_descriptor_is_socket(fd: usize) -> Option<bool> {
    let fd = libc::c_int::try_from(fd).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes one `struct stat` into the buffer it is given, which is one, and
    // touches nothing else; a number that is not open is EBADF. The descriptor is neither
    // taken over nor closed.
    if unsafe { libc::fstat(fd, stat.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: fstat returned 0, so it filled the buffer.
    let mode = unsafe { stat.assume_init() }.st_mode;
    Some(mode & libc::S_IFMT == libc::S_IFSOCK)
}
