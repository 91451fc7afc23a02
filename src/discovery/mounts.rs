//! Where the cgroup hierarchies are and which mode the host runs: v1, v2 or hybrid.
//!
//! The mode comes from mountinfo (cgroup2 mounts and v1 mounts with their controllers). Only
//! mounts at or below the configured cgroup root count, so an agent that sees both its own
//! `/sys/fs/cgroup` and the host's bind mount at `/host/sys/fs/cgroup` picks the host's. When no
//! such mount exists (a fixture tree in a test, a copied tree), the layout is probed from the
//! directory itself.

use std::path::{Path, PathBuf};

use crate::parse::procfs::CgroupMount;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupMode {
    V1,
    V2,
    Hybrid,
}

impl CgroupMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CgroupMode::V1 => "v1",
            CgroupMode::V2 => "v2",
            CgroupMode::Hybrid => "hybrid",
        }
    }
}

/// Directories of the hierarchies podstat reads. On v2 only `unified` is set; on hybrid the
/// v1 controllers are set and `unified` (usually without controllers) gives PSI files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupLayout {
    pub unified: Option<PathBuf>,
    pub cpu: Option<PathBuf>,
    pub cpuacct: Option<PathBuf>,
    pub memory: Option<PathBuf>,
    pub blkio: Option<PathBuf>,
    pub pids: Option<PathBuf>,
}

impl CgroupLayout {
    pub fn mode(&self) -> Option<CgroupMode> {
        let v1 = self.cpu.is_some() || self.cpuacct.is_some() || self.memory.is_some();
        match (v1, self.unified.is_some()) {
            (true, true) => Some(CgroupMode::Hybrid),
            (true, false) => Some(CgroupMode::V1),
            (false, true) => Some(CgroupMode::V2),
            (false, false) => None,
        }
    }

    /// The hierarchy whose tree is walked for discovery: v2's, else the CPU accounting one
    /// (runc creates every container in all controllers, so one tree is enough).
    pub fn walk_root(&self) -> Option<&Path> {
        match self.mode()? {
            CgroupMode::V2 => self.unified.as_deref(),
            _ => self
                .cpuacct
                .as_deref()
                .or(self.cpu.as_deref())
                .or(self.memory.as_deref()),
        }
    }

    /// Builds the layout from the cgroup mounts of mountinfo, keeping those under `root`.
    pub fn from_mounts(mounts: &[CgroupMount], root: &Path) -> CgroupLayout {
        let mut layout = CgroupLayout::default();
        for m in mounts.iter().filter(|m| m.mount_point.starts_with(root)) {
            match &m.controllers {
                None => {
                    // A v2 mount at the root wins over a nested one (`unified` on hybrid).
                    if layout.unified.is_none() || m.mount_point == root {
                        layout.unified = Some(m.mount_point.clone());
                    }
                }
                Some(controllers) => {
                    for c in controllers {
                        let slot = match c.as_str() {
                            "cpu" => &mut layout.cpu,
                            "cpuacct" => &mut layout.cpuacct,
                            "memory" => &mut layout.memory,
                            "blkio" => &mut layout.blkio,
                            "pids" => &mut layout.pids,
                            _ => continue,
                        };
                        slot.get_or_insert_with(|| m.mount_point.clone());
                    }
                }
            }
        }
        layout
    }

    /// Probes a directory that is not a mount point: `cgroup.controllers` at the top means v2;
    /// controller sub-directories mean v1, plus `unified/` for hybrid.
    pub fn probe(root: &Path) -> CgroupLayout {
        if root.join("cgroup.controllers").is_file() {
            return CgroupLayout {
                unified: Some(root.to_path_buf()),
                ..CgroupLayout::default()
            };
        }
        let dir = |names: &[&str], probe_file: &str| {
            names
                .iter()
                .map(|n| root.join(n))
                .find(|p| p.join(probe_file).is_file())
        };
        CgroupLayout {
            unified: dir(&["unified"], "cgroup.controllers"),
            cpu: dir(&["cpu", "cpu,cpuacct"], "cpu.shares"),
            cpuacct: dir(&["cpuacct", "cpu,cpuacct"], "cpuacct.usage"),
            memory: dir(&["memory"], "memory.usage_in_bytes"),
            blkio: dir(&["blkio"], "cgroup.procs"),
            pids: dir(&["pids"], "cgroup.procs"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(point: &str, controllers: Option<&[&str]>) -> CgroupMount {
        CgroupMount {
            mount_point: PathBuf::from(point),
            root: PathBuf::from("/"),
            controllers: controllers.map(|c| c.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn hybrid_from_mounts() {
        let mounts = [
            mount("/sys/fs/cgroup/unified", None),
            mount("/sys/fs/cgroup/cpu,cpuacct", Some(&["cpu", "cpuacct"])),
            mount("/sys/fs/cgroup/memory", Some(&["memory"])),
            mount("/sys/fs/cgroup/systemd", Some(&["name=systemd"])),
        ];
        let l = CgroupLayout::from_mounts(&mounts, Path::new("/sys/fs/cgroup"));
        assert_eq!(l.mode(), Some(CgroupMode::Hybrid));
        assert_eq!(l.walk_root(), Some(Path::new("/sys/fs/cgroup/cpu,cpuacct")));
    }

    #[test]
    fn host_bind_mount_wins_over_own_cgroupfs() {
        let mounts = [
            mount("/sys/fs/cgroup", None),
            mount("/host/sys/fs/cgroup", None),
        ];
        let l = CgroupLayout::from_mounts(&mounts, Path::new("/host/sys/fs/cgroup"));
        assert_eq!(l.unified, Some(PathBuf::from("/host/sys/fs/cgroup")));
        assert_eq!(l.mode(), Some(CgroupMode::V2));
    }
}
