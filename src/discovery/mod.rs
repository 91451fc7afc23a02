//! Discovery: finds the cgroups to report by walking the host's hierarchy, and turns each
//! into a [`Target`] (its directories per controller, its kind, its labels).
//!
//! Targets are kept between scrapes keyed by path and inode: an unchanged cgroup keeps its
//! rendered label strings and start time, and a cgroup removed and recreated under the same
//! path (new inode) becomes a new target, so no state leaks from the old container.

pub mod layout;
pub mod mounts;

use std::collections::HashMap;
use std::os::unix::fs::DirEntryExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::UNIX_EPOCH;

use crate::config::DiscoveryConfig;
use crate::meta::join::Resolved;
use crate::reader::FileCache;
pub use layout::{CgroupKind, Runtime};
pub use mounts::{CgroupLayout, CgroupMode};

/// The per-controller directories of one cgroup (those that exist in this layout).
#[derive(Debug, Clone, Default)]
pub struct Dirs {
    pub unified: Option<PathBuf>,
    pub cpu: Option<PathBuf>,
    pub cpuacct: Option<PathBuf>,
    pub memory: Option<PathBuf>,
    pub blkio: Option<PathBuf>,
    pub pids: Option<PathBuf>,
}

impl Dirs {
    /// The directory that exists for every cgroup of this layout: the unified one on pure v2;
    /// on v1 and hybrid the CPU accounting one (the walked hierarchy). On hybrid hosts a cgroup
    /// created only in the v1 controllers has no `unified/` twin, so that one cannot be used.
    pub fn main(&self) -> Option<&Path> {
        self.unified
            .as_deref()
            .filter(|_| self.cpu.is_none() && self.memory.is_none())
            .or(self.cpuacct.as_deref())
            .or(self.cpu.as_deref())
            .or(self.memory.as_deref())
    }

    /// True when `dir` is one of these directories (the same allocation, not an equal path):
    /// only a cgroup's own files go through its descriptor cache.
    pub fn owns(&self, dir: &Path) -> bool {
        [
            &self.unified,
            &self.cpu,
            &self.cpuacct,
            &self.memory,
            &self.blkio,
            &self.pids,
        ]
        .into_iter()
        .flatten()
        .any(|d| std::ptr::eq(d.as_path(), dir))
    }
}

/// The six label values every container series carries (kubelet `/metrics/cadvisor` shape).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels {
    pub container: String,
    pub id: String,
    pub image: String,
    pub name: String,
    pub namespace: String,
    pub pod: String,
}

/// One cgroup podstat reports on.
#[derive(Debug)]
pub struct Target {
    /// Path relative to the hierarchy root, `/` for the root: the `id` label.
    pub path: String,
    pub kind: CgroupKind,
    pub inode: u64,
    pub dirs: Dirs,
    /// The labels known from the path alone (`id`, and `name` for containers).
    pub labels: Labels,
    /// Creation time (unix seconds): the earliest mtime of the cgroup directory and its
    /// `cgroup.procs`, as cAdvisor derives it for containerd and raw cgroups.
    pub start_time: f64,
    /// Descriptors kept open for this cgroup's files; closed when the target is dropped.
    pub files: Mutex<FileCache>,
    /// Labels resolved against the pod metadata, for the generation they were built from.
    pub resolved: Mutex<Option<Arc<Resolved>>>,
    /// This cgroup already asked for an early metadata fetch.
    pub refresh_requested: AtomicBool,
    /// Its first process, as the network collector last probed it.
    pub probe: Mutex<Option<crate::collect::PidProbe>>,
}

impl Target {
    fn new(layout: &CgroupLayout, path: String, kind: CgroupKind, inode: u64) -> Target {
        let rel = path.trim_start_matches('/');
        let join = |root: &Option<PathBuf>| {
            root.as_ref().map(|r| {
                if rel.is_empty() {
                    r.clone()
                } else {
                    r.join(rel)
                }
            })
        };
        let dirs = Dirs {
            unified: join(&layout.unified),
            cpu: join(&layout.cpu),
            cpuacct: join(&layout.cpuacct),
            memory: join(&layout.memory),
            blkio: join(&layout.blkio),
            pids: join(&layout.pids),
        };
        let name = match &kind {
            // containerd's alias is the container ID; the kubelet shows it as `name`.
            CgroupKind::Container { id, .. } => id.clone(),
            _ => String::new(),
        };
        let labels = Labels {
            id: path.clone(),
            name,
            ..Labels::default()
        };
        let start_time = dirs.main().map(creation_time).unwrap_or(0.0);
        Target {
            path,
            kind,
            inode,
            dirs,
            labels,
            start_time,
            files: Mutex::new(FileCache::default()),
            resolved: Mutex::new(None),
            refresh_requested: AtomicBool::new(false),
            probe: Mutex::new(None),
        }
    }

    /// The pod this target belongs to, if any.
    pub fn pod_uid(&self) -> Option<&str> {
        match &self.kind {
            CgroupKind::Pod { uid } => Some(uid),
            CgroupKind::Container { pod_uid, .. } => Some(pod_uid),
            _ => None,
        }
    }

    /// The directory whose disappearance means the container is gone.
    pub fn main_dir(&self) -> Option<&Path> {
        self.dirs.main()
    }
}

fn creation_time(dir: &Path) -> f64 {
    let mtime = |p: &Path| {
        std::fs::metadata(p)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64())
    };
    let candidates = [mtime(dir), mtime(&dir.join("cgroup.procs"))];
    candidates
        .into_iter()
        .flatten()
        .fold(None, |acc: Option<f64>, t| {
            Some(acc.map_or(t, |a| a.min(t)))
        })
        .unwrap_or(0.0)
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("no cgroup hierarchy found under {0} (is cgroupfs mounted there?)")]
    NoHierarchy(String),
    #[error("cannot list {path}: {source}")]
    Walk {
        path: String,
        source: std::io::Error,
    },
}

/// Walks the hierarchy and keeps the targets between walks.
pub struct Discovery {
    pub layout: CgroupLayout,
    config: DiscoveryConfig,
    known: HashMap<String, Arc<Target>>,
}

impl Discovery {
    pub fn new(layout: CgroupLayout, config: DiscoveryConfig) -> Discovery {
        Discovery {
            layout,
            config,
            known: HashMap::new(),
        }
    }

    /// Returns the current targets, in walk order (parents before children, siblings sorted),
    /// so the exposition is stable between scrapes.
    pub fn refresh(&mut self) -> Result<Vec<Arc<Target>>, DiscoveryError> {
        let root = self
            .layout
            .walk_root()
            .ok_or_else(|| DiscoveryError::NoHierarchy("the configured cgroup root".into()))?
            .to_path_buf();
        let root_meta = std::fs::metadata(&root).map_err(|source| DiscoveryError::Walk {
            path: root.display().to_string(),
            source,
        })?;
        let mut found = Vec::with_capacity(self.known.len() + 1);
        let mut next = HashMap::with_capacity(self.known.len() + 1);
        self.visit(
            String::from("/"),
            std::os::unix::fs::MetadataExt::ino(&root_meta),
            CgroupKind::Root,
            &mut found,
            &mut next,
        );
        let mut stack = vec![(root.clone(), String::new(), 0usize)];
        while let Some((dir, rel, depth)) = stack.pop() {
            if depth >= self.config.max_depth {
                continue;
            }
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                // A cgroup removed while walking: nothing below it to report.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) if depth == 0 => {
                    return Err(DiscoveryError::Walk {
                        path: dir.display().to_string(),
                        source,
                    })
                }
                Err(_) => continue,
            };
            let mut children: Vec<(String, u64)> = entries
                .filter_map(Result::ok)
                .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                .filter_map(|e| Some((e.file_name().into_string().ok()?, e.ino())))
                .collect();
            // Sorted so the output does not depend on readdir order (descending: the order the
            // golden files were written in).
            children.sort_unstable_by(|a, b| b.0.cmp(&a.0));
            for (name, inode) in children {
                let child_rel = format!("{rel}/{name}");
                let kind = layout::classify(&child_rel);
                let descend = matches!(
                    kind,
                    CgroupKind::Qos | CgroupKind::Pod { .. } | CgroupKind::Raw | CgroupKind::Root
                );
                let export = match &kind {
                    CgroupKind::Raw => {
                        self.config.raw_include.is_match(&child_rel)
                            && !self.config.raw_exclude.is_match(&child_rel)
                    }
                    CgroupKind::Skip => false,
                    _ => true,
                };
                if export {
                    self.visit(child_rel.clone(), inode, kind, &mut found, &mut next);
                }
                if descend {
                    stack.push((dir.join(&name), child_rel, depth + 1));
                }
            }
        }
        self.known = next;
        Ok(found)
    }

    fn visit(
        &self,
        path: String,
        inode: u64,
        kind: CgroupKind,
        found: &mut Vec<Arc<Target>>,
        next: &mut HashMap<String, Arc<Target>>,
    ) {
        let target = match self.known.get(&path) {
            Some(t) if t.inode == inode => Arc::clone(t),
            _ => Arc::new(Target::new(&self.layout, path.clone(), kind, inode)),
        };
        found.push(Arc::clone(&target));
        next.insert(path, target);
    }
}
