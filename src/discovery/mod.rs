//! Discovery: finds the cgroups to report by walking the host's hierarchy, and turns each
//! into a [`Target`] (its directories per controller, its kind, its labels).
//!
//! Targets are kept between scrapes keyed by path and inode: an unchanged cgroup keeps its
//! rendered label strings and start time, and a cgroup removed and recreated under the same
//! path (a new inode, or a removal its parent's watch reported, for a filesystem that hands
//! the freed inode number to the new directory) becomes a new target, so no state leaks from
//! the old container.

pub mod layout;
pub mod mounts;
mod watch;

use std::os::unix::fs::DirEntryExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::UNIX_EPOCH;

use crate::config::DiscoveryConfig;
use crate::labels::Labels;
use crate::reader::FileCache;
pub use layout::{CgroupKind, Runtime};
pub use mounts::{CgroupLayout, CgroupMode};
use nix::sys::inotify::WatchDescriptor;
use watch::{Changes, DirWatcher};

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
    /// Creation time since the Unix epoch: the earliest mtime of the cgroup directory and its
    /// `cgroup.procs`, as cAdvisor derives it for containerd and raw cgroups. To the
    /// nanosecond, which tells which of a pod's unlisted cgroups came first (its sandbox).
    pub created: std::time::Duration,
    /// Descriptors kept open for this cgroup's files; closed when the target is dropped.
    pub files: Mutex<FileCache>,
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
        let created = dirs.main().and_then(creation_time).unwrap_or_default();
        Target {
            path,
            kind,
            inode,
            dirs,
            labels,
            created,
            files: Mutex::new(FileCache::default()),
        }
    }

    /// Creation time in whole seconds since the Unix epoch, as cAdvisor reports it
    /// (`container_start_time_seconds`); 0 when unknown.
    pub fn start_time(&self) -> f64 {
        self.created.as_secs() as f64
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

/// When the cgroup was made: the earlier mtime of the directory and its `cgroup.procs`, as
/// cAdvisor derives it for containerd and raw cgroups. `container_start_time_seconds` is its
/// whole seconds, as the kubelet's cAdvisor prints it (`CreationTime.Unix()`), so the two agree
/// to the digit.
fn creation_time(dir: &Path) -> Option<std::time::Duration> {
    let mtime = |p: &Path| {
        std::fs::metadata(p)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
    };
    [mtime(dir), mtime(&dir.join("cgroup.procs"))]
        .into_iter()
        .flatten()
        .min()
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

/// A cgroup directory below which discovery looks for children, with what it found there
/// at its last listing.
struct DirNode {
    dir: PathBuf,
    /// Path relative to the hierarchy root: "" for the root, else "/a/b".
    rel: String,
    depth: usize,
    /// The inotify watch that says whether `children` is still current (None: list every walk).
    watch: Option<WatchDescriptor>,
    /// False until listed, and after a failed listing.
    listed: bool,
    /// Sorted by name, descending (the order the golden files were written in).
    children: Vec<Child>,
}

struct Child {
    name: String,
    inode: u64,
    /// Reported on (raw cgroups only when the include/exclude patterns say so).
    target: Option<Arc<Target>>,
    /// Walked below (root, QoS, pod and raw cgroups; containers are leaves).
    descend: bool,
    /// Its own children, once walked.
    node: Option<Box<DirNode>>,
}

/// Counts of one walk, for self-metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalkStats {
    /// Directories listed in this walk (the rest were unchanged under a live watch).
    pub dirs_listed: u64,
    /// Directories walked below, listed or not.
    pub dirs_walked: u64,
    /// Directories watched for changes now.
    pub watches: u64,
}

/// Walks the hierarchy and keeps the targets between walks.
pub struct Discovery {
    pub layout: CgroupLayout,
    config: DiscoveryConfig,
    root: Option<Arc<Target>>,
    tree: Option<Box<DirNode>>,
    watcher: DirWatcher,
    changes: Changes,
    last: WalkStats,
}

impl Discovery {
    pub fn new(layout: CgroupLayout, config: DiscoveryConfig) -> Discovery {
        let watcher = DirWatcher::new(config.watch);
        Discovery {
            layout,
            config,
            root: None,
            tree: None,
            watcher,
            changes: Changes::default(),
            last: WalkStats::default(),
        }
    }

    /// What the last [`Discovery::refresh`] did.
    pub fn last_walk(&self) -> WalkStats {
        self.last
    }

    /// Returns the current targets, in walk order (parents before children, siblings sorted),
    /// so the exposition is stable between scrapes. Directories whose watch saw no change since
    /// their last listing are not listed again.
    pub fn refresh(&mut self) -> Result<Vec<Arc<Target>>, DiscoveryError> {
        let root = self
            .layout
            .walk_root()
            .ok_or_else(|| DiscoveryError::NoHierarchy("the configured cgroup root".into()))?
            .to_path_buf();
        self.watcher.drain(&mut self.changes);
        // The root is looked up again only when its watch says it may have changed (or there
        // is no watch): a cold path walk to it was a measurable share of a small collection.
        let root_watch = self.tree.as_ref().and_then(|t| t.watch);
        let root_target = match &self.root {
            Some(t) if !self.changes.touches(root_watch) => Arc::clone(t),
            _ => self.root_target(&root)?,
        };
        let mut walk = Walk {
            layout: &self.layout,
            config: &self.config,
            watcher: &mut self.watcher,
            changes: &self.changes,
            stats: WalkStats::default(),
        };
        let mut found = Vec::with_capacity(self.last.dirs_walked as usize * 4 + 1);
        found.push(root_target);
        let tree = self
            .tree
            .get_or_insert_with(|| Box::new(DirNode::new(root.clone(), String::new(), 0)));
        let walked = walk.expand(tree, &mut found);
        let mut stats = walk.stats;
        self.changes.clear();
        if let Err(source) = walked {
            // Listing the root failed: report it, and list it again next time.
            return Err(DiscoveryError::Walk {
                path: root.display().to_string(),
                source,
            });
        }
        stats.watches = self.watcher.watches() as u64;
        self.last = stats;
        Ok(found)
    }

    /// The root's target after looking the root up: the known one while its inode is the
    /// same, else a new one, with nothing known below the old root kept.
    fn root_target(&mut self, root: &Path) -> Result<Arc<Target>, DiscoveryError> {
        let root_meta = std::fs::metadata(root).map_err(|source| DiscoveryError::Walk {
            path: root.display().to_string(),
            source,
        })?;
        let root_inode = std::os::unix::fs::MetadataExt::ino(&root_meta);
        if let Some(t) = self.root.as_ref().filter(|t| t.inode == root_inode) {
            return Ok(Arc::clone(t));
        }
        // A new hierarchy under the same mount point: nothing known below it holds.
        if let Some(old) = self.tree.take() {
            unwatch_tree(&mut self.watcher, &old);
        }
        let t = Arc::new(Target::new(
            &self.layout,
            String::from("/"),
            CgroupKind::Root,
            root_inode,
        ));
        self.root = Some(Arc::clone(&t));
        Ok(t)
    }
}

impl DirNode {
    fn new(dir: PathBuf, rel: String, depth: usize) -> DirNode {
        DirNode {
            dir,
            rel,
            depth,
            watch: None,
            listed: false,
            children: Vec::new(),
        }
    }
}

fn unwatch_tree(watcher: &mut DirWatcher, node: &DirNode) {
    if let Some(wd) = node.watch {
        watcher.unwatch(wd);
    }
    for child in &node.children {
        unwatch_child(watcher, child);
    }
}

/// Stops watching everything walked below `child` (it is gone, or no longer the same cgroup).
fn unwatch_child(watcher: &mut DirWatcher, child: &Child) {
    if let Some(n) = &child.node {
        unwatch_tree(watcher, n);
    }
}

/// One walk over the cached tree.
struct Walk<'a> {
    layout: &'a CgroupLayout,
    config: &'a DiscoveryConfig,
    watcher: &'a mut DirWatcher,
    changes: &'a Changes,
    stats: WalkStats,
}

impl Walk<'_> {
    /// Emits `node`'s exported children (descending by name), then walks into each child it
    /// descends into (ascending): the order of a depth-first walk with an explicit stack, which
    /// is what the golden files were written with.
    fn expand(&mut self, node: &mut DirNode, found: &mut Vec<Arc<Target>>) -> std::io::Result<()> {
        if node.depth >= self.config.max_depth {
            return Ok(());
        }
        self.stats.dirs_walked += 1;
        if node.watch.is_none() && !node.listed {
            node.watch = self.watcher.watch(&node.dir);
        }
        if !node.listed || self.changes.touches(node.watch) {
            self.stats.dirs_listed += 1;
            if let Err(e) = self.relist(node) {
                node.listed = false;
                node.children.clear();
                if node.depth == 0 && e.kind() != std::io::ErrorKind::NotFound {
                    return Err(e);
                }
                // A cgroup removed while walking: nothing below it to report.
                return Ok(());
            }
        }
        found.extend(node.children.iter().filter_map(|c| c.target.clone()));
        for child in node.children.iter_mut().rev().filter(|c| c.descend) {
            let sub = child.node.get_or_insert_with(|| {
                Box::new(DirNode::new(
                    node.dir.join(&child.name),
                    format!("{}/{}", node.rel, child.name),
                    node.depth + 1,
                ))
            });
            // Errors below the root only ever mean "skip this subtree".
            let _ = self.expand(sub, found);
        }
        Ok(())
    }

    /// Lists `node` again, keeping the targets (and walked subtrees) of children whose name and
    /// inode did not change and that its watch did not see removed.
    fn relist(&mut self, node: &mut DirNode) -> std::io::Result<()> {
        let mut listed: Vec<(String, u64)> = std::fs::read_dir(&node.dir)?
            .filter_map(Result::ok)
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .filter_map(|e| Some((e.file_name().into_string().ok()?, e.ino())))
            .collect();
        listed.sort_unstable_by(|a, b| b.0.cmp(&a.0));
        // Both lists are sorted descending: walk them together.
        let mut old = std::mem::take(&mut node.children).into_iter().peekable();
        let mut children = Vec::with_capacity(listed.len());
        for (name, inode) in listed {
            while let Some(gone) = old.next_if(|c| c.name > name) {
                unwatch_child(self.watcher, &gone);
            }
            if let Some(same) = old.next_if(|c| c.name == name) {
                // The inode alone is not proof: a filesystem may give a recreated directory
                // the number its predecessor freed, which the watch's removal event tells.
                if same.inode == inode && !self.changes.removed(node.watch, &name) {
                    children.push(same);
                    continue;
                }
                // Removed and recreated under the same name: nothing carries over.
                unwatch_child(self.watcher, &same);
            }
            let rel = format!("{}/{name}", node.rel);
            let kind = layout::classify(&rel);
            let descend = matches!(
                kind,
                CgroupKind::Qos | CgroupKind::Pod { .. } | CgroupKind::Raw | CgroupKind::Root
            );
            let export = match &kind {
                CgroupKind::Raw => {
                    self.config.raw_include.is_match(&rel)
                        && !self.config.raw_exclude.is_match(&rel)
                }
                CgroupKind::Skip => false,
                _ => true,
            };
            let target = export.then(|| Arc::new(Target::new(self.layout, rel, kind, inode)));
            children.push(Child {
                name,
                inode,
                target,
                descend,
                node: None,
            });
        }
        // Children that are gone take their watches along.
        for gone in old {
            unwatch_child(self.watcher, &gone);
        }
        node.children = children;
        node.listed = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::default_config;

    const POD: &str = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0a1b2c3d_0000_4000_8000_000000000001.slice";

    fn container(i: usize) -> String {
        format!("{POD}/cri-containerd-{i:064x}.scope")
    }

    /// A v2-shaped tree in a temporary directory (inotify works there as on cgroupfs).
    fn tree(containers: usize) -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::write(d.path().join("cgroup.controllers"), "cpu memory\n").expect("write");
        for i in 0..containers {
            std::fs::create_dir_all(d.path().join(&container(i)[1..])).expect("mkdir");
        }
        std::fs::create_dir_all(d.path().join("system.slice/cron.service")).expect("mkdir");
        d
    }

    fn discovery(root: &Path, watch: bool) -> Discovery {
        let mut config = default_config().expect("default config").discovery;
        config.watch = watch;
        Discovery::new(CgroupLayout::probe(root), config)
    }

    fn paths(targets: &[Arc<Target>]) -> Vec<String> {
        targets.iter().map(|t| t.path.clone()).collect()
    }

    #[test]
    fn unchanged_directories_are_not_listed_again() {
        let d = tree(5);
        let mut watched = discovery(d.path(), true);
        let first = watched.refresh().expect("walk");
        let walk = watched.last_walk();
        assert_eq!(
            walk.dirs_listed, walk.dirs_walked,
            "first walk lists everything"
        );
        assert!(
            walk.watches >= 5,
            "root, kubepods, QoS, pod, system.slice: {walk:?}"
        );
        let second = watched.refresh().expect("walk");
        assert_eq!(watched.last_walk().dirs_listed, 0);
        assert_eq!(paths(&first), paths(&second));
        assert!(
            first.iter().zip(&second).all(|(a, b)| Arc::ptr_eq(a, b)),
            "the same targets, with their kept descriptors and labels"
        );

        let mut unwatched = discovery(d.path(), false);
        let first = unwatched.refresh().expect("walk");
        let second = unwatched.refresh().expect("walk");
        assert!(
            first.iter().zip(&second).all(|(a, b)| Arc::ptr_eq(a, b)),
            "listing a directory again keeps the targets of unchanged cgroups"
        );
        assert_eq!(
            unwatched.last_walk().dirs_listed,
            walk.dirs_walked,
            "without watches every directory is listed"
        );
        assert_eq!(unwatched.last_walk().watches, 0);
    }

    #[test]
    fn created_removed_and_recreated_cgroups_are_seen_at_the_next_walk() {
        let d = tree(2);
        let mut watched = discovery(d.path(), true);
        let mut unwatched = discovery(d.path(), false);
        let before = watched.refresh().expect("walk");
        unwatched.refresh().expect("walk");

        // A new container in the pod: only the pod directory is listed again.
        std::fs::create_dir(d.path().join(&container(7)[1..])).expect("mkdir");
        let after = watched.refresh().expect("walk");
        assert_eq!(watched.last_walk().dirs_listed, 1);
        assert!(paths(&after).contains(&container(7)));
        for t in &before {
            let same = after
                .iter()
                .find(|a| a.path == t.path)
                .expect("still there");
            assert!(
                Arc::ptr_eq(t, same),
                "{} was rebuilt by its directory's relisting",
                t.path
            );
        }
        assert_eq!(paths(&after), paths(&unwatched.refresh().expect("walk")));

        // Removed: gone at once.
        std::fs::remove_dir(d.path().join(&container(0)[1..])).expect("rmdir");
        let after = watched.refresh().expect("walk");
        assert!(!paths(&after).contains(&container(0)));
        assert_eq!(paths(&after), paths(&unwatched.refresh().expect("walk")));

        // Removed and recreated under the same path between two walks: a new target.
        let old = before
            .iter()
            .find(|t| t.path == container(1))
            .expect("container 1")
            .clone();
        // The old directory is held open until the new one exists, so this filesystem cannot
        // hand it the freed inode number (ext4 often does): this case is a new inode.
        let held = std::fs::File::open(d.path().join(&container(1)[1..])).expect("open");
        std::fs::remove_dir(d.path().join(&container(1)[1..])).expect("rmdir");
        std::fs::create_dir(d.path().join(&container(1)[1..])).expect("mkdir");
        drop(held);
        let after = watched.refresh().expect("walk");
        let new = after
            .iter()
            .find(|t| t.path == container(1))
            .expect("container 1 again");
        assert!(
            !Arc::ptr_eq(&old, new),
            "no state carried over from the old cgroup"
        );
        assert_ne!(old.inode, new.inode);

        // Gone and back with the same inode number (here by renaming it away and back, as a
        // reused number would look): the watch saw it leave, so it is a new target too.
        let old = Arc::clone(new);
        let away = d.path().join(&POD[1..]).join("away");
        std::fs::rename(d.path().join(&container(1)[1..]), &away).expect("rename away");
        std::fs::rename(&away, d.path().join(&container(1)[1..])).expect("rename back");
        let after = watched.refresh().expect("walk");
        let new = after
            .iter()
            .find(|t| t.path == container(1))
            .expect("container 1 back");
        assert_eq!(old.inode, new.inode);
        assert!(
            !Arc::ptr_eq(&old, new),
            "a child the watch saw leave is not kept on its inode alone"
        );

        // A whole pod removed, then a new one created: its subtree is walked from scratch.
        std::fs::remove_dir_all(d.path().join(&POD[1..])).expect("rm pod");
        let after = watched.refresh().expect("walk");
        assert!(!paths(&after).iter().any(|p| p.starts_with(POD)));
        std::fs::create_dir_all(d.path().join(&container(9)[1..])).expect("mkdir");
        let after = watched.refresh().expect("walk");
        assert!(paths(&after).contains(&container(9)));
        assert_eq!(paths(&after), paths(&unwatched.refresh().expect("walk")));
        watched.refresh().expect("walk");
        assert_eq!(watched.last_walk().dirs_listed, 0, "quiet again");
    }

    #[test]
    fn renamed_cgroups_are_seen() {
        let d = tree(1);
        let mut watched = discovery(d.path(), true);
        watched.refresh().expect("walk");
        let from = d.path().join("system.slice/cron.service");
        let to = d.path().join("system.slice/atd.service");
        std::fs::rename(&from, &to).expect("rename");
        let after = paths(&watched.refresh().expect("walk"));
        assert!(after.contains(&"/system.slice/atd.service".to_string()));
        assert!(!after.contains(&"/system.slice/cron.service".to_string()));
    }
}
