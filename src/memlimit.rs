//! podstat's own memory limit, which sizes how many cgroup files it may keep open.
//!
//! Each kept descriptor pins about 4.5 KiB of kernel memory (the `struct file` and the
//! seq_file's page buffer, measured: 15 255 descriptors = 67.7 MiB of
//! `memory.kmem.usage_in_bytes`), and the kernel charges it to podstat's memory cgroup. A
//! budget that ignores the limit gets the agent OOM-killed on a big node; one that ignores the
//! room under it leaves CPU on the table (a kept descriptor saves ~8 µs per scrape). So
//! `[reader] max_open_files = "auto"` keeps as many as fit in the limit after a reserve for
//! the process itself.
//!
//! The limit is found the way the process sees itself: its cgroup path in `/proc/self/cgroup`,
//! mapped through each cgroup mount's root (mountinfo's fourth field) to a directory, then the
//! smallest limit from there up to the mount point (a pod-level limit bounds its containers).
//! A mount whose root is outside the process's cgroup namespace (`/..`, the host's hierarchy
//! bind-mounted into a container) cannot show the process's own cgroup and is skipped.

use std::path::{Path, PathBuf};

use crate::parse::procfs::CgroupMount;

/// Kernel memory one kept descriptor pins, rounded up from the measured ~4.5 KiB.
pub const KEPT_FD_BYTES: u64 = 5 * 1024;

/// Memory left for the process itself before any goes to kept descriptors: its RSS stays under
/// 20 MiB at 1000 containers, and a quarter of larger limits is kept free for bursts (a
/// metadata fetch, a slow scraper holding a body).
const RESERVE_MIN: u64 = 32 * 1024 * 1024;

/// Descriptors that fit in `limit` bytes after the reserve.
pub fn descriptors_within(limit: u64) -> usize {
    let reserve = RESERVE_MIN.max(limit / 4);
    usize::try_from(limit.saturating_sub(reserve) / KEPT_FD_BYTES).unwrap_or(usize::MAX)
}

/// Where a memory limit of this process can be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitDir {
    /// The process's own cgroup directory under one mount.
    pub dir: PathBuf,
    /// The mount point: ancestors are read up to here, not above.
    pub mount_point: PathBuf,
    /// `memory.max` (v2) or `memory.limit_in_bytes` (v1).
    pub file: &'static str,
}

/// The directories of the process's own memory cgroup, from `/proc/self/cgroup` and the
/// cgroup mounts of `/proc/self/mountinfo`.
pub fn own_memory_dirs(self_cgroup: &[u8], mounts: &[CgroupMount]) -> Vec<LimitDir> {
    let text = String::from_utf8_lossy(self_cgroup);
    let mut v1_path = None;
    let mut v2_path = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            v2_path = Some(path);
        } else if controllers.split(',').any(|c| c == "memory") {
            v1_path = Some(path);
        }
    }
    let mut dirs = Vec::new();
    for mount in mounts {
        let (path, file) = match &mount.controllers {
            None => (v2_path, "memory.max"),
            Some(c) if c.iter().any(|c| c == "memory") => (v1_path, "memory.limit_in_bytes"),
            Some(_) => continue,
        };
        let Some(path) = path else { continue };
        if let Some(rel) = relative_to_root(path, &mount.root) {
            let dir = if rel.is_empty() {
                mount.mount_point.clone()
            } else {
                mount.mount_point.join(rel)
            };
            dirs.push(LimitDir {
                dir,
                mount_point: mount.mount_point.clone(),
                file,
            });
        }
    }
    dirs
}

/// `path` below the mount's `root` ("" for the root itself), or None when the mount does not
/// show it (another subtree, or a root outside this cgroup namespace).
fn relative_to_root<'a>(path: &'a str, root: &Path) -> Option<&'a str> {
    let root = root.to_str()?;
    if root.starts_with("/..") || path.starts_with("/..") {
        return None;
    }
    let root = root.trim_end_matches('/');
    let rest = path.strip_prefix(root)?;
    if !rest.is_empty() && !rest.starts_with('/') {
        return None; // "/docker/ab" is not below "/docker/a"
    }
    Some(rest.trim_start_matches('/'))
}

/// A limit file's value: None for "max" (v2) and for v1's "no limit" (PAGE_COUNTER_MAX).
pub fn parse_limit(bytes: &[u8]) -> Option<u64> {
    let value = crate::parse::trim(bytes);
    if value == b"max" {
        return None;
    }
    let n = crate::parse::parse_u64(value).ok()?;
    (crate::parse::memory::limit_or_zero(n) != 0).then_some(n)
}

/// The smallest limit set on `dir` or an ancestor up to its mount point.
pub fn effective_limit(found: &LimitDir) -> Option<u64> {
    let mut dir = found.dir.as_path();
    let mut smallest: Option<u64> = None;
    loop {
        if let Some(limit) = std::fs::read(dir.join(found.file))
            .ok()
            .and_then(|b| parse_limit(&b))
        {
            smallest = Some(smallest.map_or(limit, |s| s.min(limit)));
        }
        if dir == found.mount_point {
            return smallest;
        }
        dir = dir.parent()?;
    }
}

/// The memory limit this process runs under, and the file it came from; None when there is
/// none (or it cannot be found, which is treated the same: the descriptor limit still bounds).
pub fn own_memory_limit(proc_root: &Path) -> Option<(u64, PathBuf)> {
    let self_dir = proc_root.join("self");
    let cgroup = std::fs::read(self_dir.join("cgroup")).ok()?;
    let mountinfo = std::fs::read(self_dir.join("mountinfo")).ok()?;
    let mounts = crate::parse::procfs::cgroup_mounts(&mountinfo).ok()?;
    own_memory_dirs(&cgroup, &mounts)
        .into_iter()
        .filter_map(|d| Some((effective_limit(&d)?, d.dir.join(d.file))))
        .min_by_key(|(limit, _)| *limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(point: &str, root: &str, controllers: Option<&[&str]>) -> CgroupMount {
        CgroupMount {
            mount_point: PathBuf::from(point),
            root: PathBuf::from(root),
            controllers: controllers.map(|c| c.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn budget_leaves_a_reserve() {
        assert_eq!(descriptors_within(16 << 20), 0);
        assert_eq!(descriptors_within(96 << 20), (64 << 20) / 5120);
        assert_eq!(descriptors_within(1 << 30), (768 << 20) / 5120);
    }

    #[test]
    fn limit_values() {
        assert_eq!(parse_limit(b"max\n"), None);
        assert_eq!(parse_limit(b"9223372036854771712\n"), None);
        assert_eq!(parse_limit(b"134217728\n"), Some(134_217_728));
        assert_eq!(parse_limit(b"garbage"), None);
    }

    #[test]
    fn root_mapping() {
        let root = |r: &str| PathBuf::from(r);
        assert_eq!(relative_to_root("/a/b", &root("/")), Some("a/b"));
        assert_eq!(
            relative_to_root("/docker/ab", &root("/docker/ab")),
            Some("")
        );
        assert_eq!(
            relative_to_root("/docker/ab/x", &root("/docker/ab")),
            Some("x")
        );
        assert_eq!(relative_to_root("/docker/abc", &root("/docker/ab")), None);
        assert_eq!(relative_to_root("/", &root("/../..")), None);
        assert_eq!(relative_to_root("/../../x", &root("/")), None);
    }

    #[test]
    fn v2_namespaced_container_reads_its_own_mount_not_the_hosts() {
        // A DaemonSet pod in its own cgroup namespace: its cgroup is "/", the runtime's mount
        // shows it at /sys/fs/cgroup, and the host's hierarchy (root outside the namespace)
        // is bind-mounted at /host/sys/fs/cgroup.
        let mounts = [
            mount("/sys/fs/cgroup", "/", None),
            mount("/host/sys/fs/cgroup", "/../../..", None),
        ];
        assert_eq!(
            own_memory_dirs(b"0::/\n", &mounts),
            vec![LimitDir {
                dir: PathBuf::from("/sys/fs/cgroup"),
                mount_point: PathBuf::from("/sys/fs/cgroup"),
                file: "memory.max",
            }]
        );
    }

    #[test]
    fn hybrid_systemd_service_uses_the_v1_memory_hierarchy() {
        let cgroup = include_bytes!(
            "../tests/fixtures/proc/pid-cgroup/hybrid_ubuntu1804_systemd-service_no-trailing-newline.cgroup"
        );
        let mountinfo =
            include_bytes!("../tests/fixtures/proc/mountinfo/hybrid_ubuntu1804_host.mountinfo");
        let mounts = crate::parse::procfs::cgroup_mounts(mountinfo).expect("mountinfo");
        let dirs = own_memory_dirs(cgroup, &mounts);
        assert!(dirs.contains(&LimitDir {
            dir: PathBuf::from("/sys/fs/cgroup/memory/system.slice/networkd-dispatcher.service"),
            mount_point: PathBuf::from("/sys/fs/cgroup/memory"),
            file: "memory.limit_in_bytes",
        }));
        // The unified hierarchy is mapped too (a memory.max there would count); here it has no
        // controllers, so the file is simply absent.
        assert!(dirs.iter().any(|d| d.file == "memory.max"));
    }

    #[test]
    fn v1_container_view_with_mount_roots_at_the_container() {
        let mountinfo =
            include_bytes!("../tests/fixtures/proc/mountinfo/v1_docker-container-view.mountinfo");
        let mounts = crate::parse::procfs::cgroup_mounts(mountinfo).expect("mountinfo");
        let id = "3fc95ce32f84e9346c5fbd3bce38045e478aa5b067603955555cbff8445ba74f";
        let cgroup = format!("9:memory:/docker/{id}\n4:cpu:/docker/{id}\n");
        let dirs = own_memory_dirs(cgroup.as_bytes(), &mounts);
        assert_eq!(
            dirs,
            vec![LimitDir {
                dir: PathBuf::from("testdata/docker/sys/fs/cgroup/memory"),
                mount_point: PathBuf::from("testdata/docker/sys/fs/cgroup/memory"),
                file: "memory.limit_in_bytes",
            }]
        );
    }

    #[test]
    fn smallest_limit_up_to_the_mount_point() {
        let d = tempfile::tempdir().expect("tempdir");
        let pod = d.path().join("kubepods/podx");
        let container = pod.join("c1");
        std::fs::create_dir_all(&container).expect("mkdir");
        std::fs::write(d.path().join("memory.max"), "1000\n").expect("write"); // above: ignored
        std::fs::write(pod.join("memory.max"), "300000000\n").expect("write");
        std::fs::write(container.join("memory.max"), "max\n").expect("write");
        let found = LimitDir {
            dir: container,
            mount_point: d.path().join("kubepods"),
            file: "memory.max",
        };
        assert_eq!(effective_limit(&found), Some(300_000_000));
    }
}
