//! Collection: runs the enabled collectors over every discovered cgroup and builds a
//! [`Snapshot`]. One file per collector; [`REGISTRY`] is the explicit list of them.
//!
//! Failure policy (the same for every collector):
//! - a file that is absent while its cgroup still exists is "not available": the series is
//!   omitted, nothing is counted;
//! - a cgroup that disappears mid-read (ENOENT on its directory, ENODEV, ESRCH) drops the whole
//!   container from this snapshot, so no scrape ever shows half a container;
//! - a file that cannot be parsed or read is counted (`podstat_read_errors_total`), logged with
//!   the file and cgroup, marks its collector unsuccessful, and the rest is still reported.

mod blkio;
mod cpu;
mod devices;
mod files;
mod filesystem;
mod layers;
mod machine;
mod memory;
mod network;
mod oom;
mod pressure;
mod process;
mod spec;
mod state;
mod tasks;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{CollectorsConfig, Config};
use crate::discovery::{CgroupMode, Discovery, Target};
use crate::meta::join::{first_unlisted_by_pod, refresh_due, resolve_cached, JoinPolicy, Resolved};
use crate::meta::MetaIndex;
use crate::parse::ParseError;
use crate::policy::Policy;
use crate::reader::{FdBudget, ReadError, Reader};
use crate::snapshot::{CollectorRun, ContainerSample, ContainerStats, ErrorCounts, Snapshot};

pub use devices::DeviceNames;
pub use state::{StateTable, TargetState, Tracked};

/// The container disappeared while being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vanished;

pub type CollectFn = fn(&mut Ctx, &Tracked, &mut ContainerStats) -> Result<(), Vanished>;

/// A per-container collector: its name (the `collector` label) and whether config enables it.
pub struct CollectorDef {
    pub name: &'static str,
    pub enabled: fn(&CollectorsConfig) -> bool,
    pub collect: CollectFn,
}

/// Every per-container collector, in the order they run. Network (per pod) and machine
/// (per host) run after this pass.
pub const REGISTRY: &[CollectorDef] = &[
    spec::DEF,
    cpu::DEF,
    memory::DEF,
    oom::DEF,
    blkio::DEF,
    process::DEF,
    files::DEF,
    tasks::DEF,
    pressure::DEF,
];

/// State shared by the collectors during one collection.
pub struct Ctx {
    pub reader: Reader,
    pub mode: CgroupMode,
    pub proc_root: PathBuf,
    pub sys_root: PathBuf,
    /// The host's `/etc/machine-id` and `/etc/os-release` (`[paths]`).
    pub machine_id_file: PathBuf,
    pub os_release_file: PathBuf,
    pub devices: DeviceNames,
    /// v1 `memory.use_hierarchy` of the root (1 on every modern system).
    pub memory_hierarchical: bool,
    errors: ErrorCounts,
    collector_failed: bool,
    collector: &'static str,
    /// The last [`Ctx::parse`] found no file (as opposed to a file it could not use).
    last_absent: bool,
    /// Host figures, read at most every [`HOST_REFRESH`].
    pub host: HostCache,
    /// The host's filesystems and their usage figures.
    pub fs: filesystem::FsCache,
    /// The writable layers of Docker and CRI-O containers and their last walks.
    pub layers: layers::LayerCache,
    /// The PIDs of the current target's `cgroup.procs`, as the process collector read them,
    /// kept for the process_files collector (`listed` says they are this target's), so the
    /// file is read once per cgroup.
    pub pids: Vec<u32>,
    pub pids_listed: bool,
    /// Whether the process collector should keep the PIDs (process_files is on).
    pub keep_pids: bool,
    /// podstat's own PID as `proc_root` numbers it (its `self` link: a host /proc mounted in
    /// a container shows the host's number).
    pub own_pid: Option<u32>,
    /// Whether the size of a `/proc/<pid>/fd` directory is its number of open descriptors
    /// (Linux 6.2 on; before, it is 0), seen on podstat's own, which always has some.
    pub fd_dir_sizes: bool,
    /// Processes whose descriptor links could not be read at the last collection.
    pub refused_links: files::RefusedLinks,
}

/// How long host figures (`machine_cpu_cores`, MemTotal and SwapTotal) are kept. They change
/// only with CPU or memory hotplug, and `/proc/cpuinfo` is ~1.5 KiB of text per CPU that the
/// kernel formats on every read: at 0 containers it was 20 % of a collection on 2 CPUs, more
/// on a 64-CPU node. cAdvisor refreshes its machine info every 5 minutes.
pub const HOST_REFRESH: Duration = Duration::from_secs(60);

/// A value and when it was read.
#[derive(Debug, Default)]
pub struct HostCache {
    pub cpu: Option<(Instant, crate::parse::procfs::CpuTopology)>,
    /// Boot ID, machine ID, system UUID, kernel and OS version.
    pub identity: Option<(Instant, std::sync::Arc<crate::snapshot::HostIdentity>)>,
    /// MemTotal and SwapTotal, bytes.
    pub memory: Option<(Instant, (u64, u64))>,
    /// The host's network namespace (`/proc/1/ns/net`; None where it cannot be read, as in
    /// a container without host PID access): it does not change, and it was a readlink per
    /// scrape.
    pub netns: Option<(Instant, Option<PathBuf>)>,
}

/// `cached` if it is younger than [`HOST_REFRESH`].
pub fn fresh<T: Clone>(cached: &Option<(Instant, T)>) -> Option<T> {
    cached
        .as_ref()
        .and_then(|(at, v)| (at.elapsed() < HOST_REFRESH).then(|| v.clone()))
}

impl Ctx {
    pub fn new(mode: CgroupMode, proc_root: PathBuf, sys_root: PathBuf, reader: Reader) -> Ctx {
        let own_pid = std::fs::read_link(proc_root.join("self"))
            .ok()
            .and_then(|l| l.to_str().and_then(|l| l.parse().ok()));
        let fd_dir_sizes = std::fs::metadata(proc_root.join("self/fd")).is_ok_and(|m| m.len() > 0);
        Ctx {
            reader,
            mode,
            proc_root,
            devices: DeviceNames::new(sys_root.clone()),
            sys_root,
            machine_id_file: PathBuf::from("/etc/machine-id"),
            os_release_file: PathBuf::from("/etc/os-release"),
            memory_hierarchical: true,
            errors: ErrorCounts::default(),
            collector_failed: false,
            collector: "",
            last_absent: false,
            host: HostCache::default(),
            fs: filesystem::FsCache::default(),
            layers: layers::LayerCache::default(),
            pids: Vec::new(),
            pids_listed: false,
            keep_pids: false,
            own_pid,
            fd_dir_sizes,
            refused_links: files::RefusedLinks::default(),
        }
    }

    /// Reads and parses `dir/name` for `target`.
    ///
    /// `Ok(None)`: the controller directory is not in this layout, the file is absent, or it
    /// could not be read or parsed (counted and logged). `Err(Vanished)`: the cgroup is gone.
    pub fn parse<T>(
        &mut self,
        target: &Target,
        dir: Option<&Path>,
        name: &'static str,
        parse: impl FnOnce(&[u8]) -> Result<T, ParseError>,
    ) -> Result<Option<T>, Vanished> {
        self.parse_keyed(target, dir, name, None, parse)
    }

    /// [`Ctx::parse`] of a counter that moves only with a companion read before it, whose
    /// content had `key` ([`crate::reader::companion::key`]); None: no companion was read.
    pub fn parse_keyed<T>(
        &mut self,
        target: &Target,
        dir: Option<&Path>,
        name: &'static str,
        key: Option<u64>,
        parse: impl FnOnce(&[u8]) -> Result<T, ParseError>,
    ) -> Result<Option<T>, Vanished> {
        self.last_absent = true;
        let Some(dir) = dir else { return Ok(None) };
        // A v1 PID list read through a kept descriptor is the list made at its first read
        // after open, kept by the kernel until no read came for a second (cgroup-v1.c's
        // pidlist cache): scrapes less than a second apart would see the processes of the
        // first one forever. v2 makes a new list at every read from offset 0.
        let stale_if_kept = self.mode != CgroupMode::V2 && matches!(name, "cgroup.procs" | "tasks");
        let read = if target.dirs.owns(dir) && !stale_if_kept {
            let mut files = target.files.lock().unwrap_or_else(|p| p.into_inner());
            match key {
                Some(key) => self.reader.read_cached_keyed(&mut files, dir, name, key),
                None => self.reader.read_cached(&mut files, dir, name),
            }
        } else {
            self.reader.read(dir, name).map(Some)
        };
        let parsed = match read {
            Ok(Some(bytes)) => {
                self.last_absent = false;
                parse(bytes)
            }
            // Absent at a recent read while the other files of the cgroup were read fine.
            Ok(None) => return Ok(None),
            Err(ReadError::Missing(_)) => {
                return if target.main_dir().is_some_and(|d| !d.exists()) {
                    Err(self.vanished())
                } else {
                    Ok(None)
                };
            }
            Err(ReadError::Vanished(_)) => return Err(self.vanished()),
            Err(e @ ReadError::Io { .. }) => {
                self.last_absent = false;
                self.errors.io += 1;
                self.collector_failed = true;
                tracing::warn!(collector = self.collector, cgroup = %target.path, error = %e, "read failed");
                return Ok(None);
            }
        };
        match parsed {
            Ok(v) => Ok(Some(v)),
            Err(e) => {
                self.errors.parse += 1;
                self.collector_failed = true;
                tracing::warn!(
                    collector = self.collector,
                    cgroup = %target.path,
                    file = %self.reader.last_path().display(),
                    error = %e,
                    "unexpected file content"
                );
                Ok(None)
            }
        }
    }

    /// True when the last [`Ctx::parse`] returned None because the file (or its controller
    /// directory) does not exist, not because it could not be read or parsed.
    pub fn last_absent(&self) -> bool {
        self.last_absent
    }

    fn vanished(&mut self) -> Vanished {
        self.errors.vanished += 1;
        Vanished
    }

    /// Counts a parse error found outside [`Ctx::parse`] (network, machine).
    pub fn record_error(&mut self, what: &str, path: &Path, error: &dyn std::fmt::Display) {
        self.errors.parse += 1;
        self.collector_failed = true;
        tracing::warn!(collector = self.collector, file = %path.display(), error = %error, "{what}");
    }

    /// Records a file that could not be read (not one that was read and not understood):
    /// `io`, or `vanished` when its cgroup or process went away meanwhile.
    pub fn record_read_error(&mut self, what: &str, error: &ReadError) {
        match error {
            ReadError::Vanished(_) => self.errors.vanished += 1,
            _ => self.errors.io += 1,
        }
        self.collector_failed = true;
        tracing::warn!(collector = self.collector, file = %error.path().display(), error = %error, "{what}");
    }
}

/// Runs a full collection: discovery, every enabled collector over every target, network per
/// pod, machine figures.
pub struct Engine {
    pub discovery: Discovery,
    pub ctx: Ctx,
    collectors: CollectorsConfig,
    join: JoinPolicy,
    /// Where the host's `/` is visible, for filesystem usage.
    rootfs: PathBuf,
    /// What is kept about each cgroup between collections.
    states: StateTable,
}

impl Engine {
    pub fn new(config: &Config, layout: crate::discovery::CgroupLayout) -> Result<Engine, String> {
        let mode = layout.mode().ok_or_else(|| {
            format!(
                "no cgroup hierarchy found under {}",
                config.paths.cgroup_root.display()
            )
        })?;
        let budget = config.reader.keep_files_open.then(|| {
            FdBudget::from_config(
                config.reader.max_open_files,
                &config.paths.proc_root,
                config.server.max_connections,
            )
        });
        let mut ctx = Ctx::new(
            mode,
            config.paths.proc_root.clone(),
            config.paths.sys_root.clone(),
            Reader::new(budget).with_settled(
                config
                    .reader
                    .watch_settled
                    .then(|| crate::reader::Settled::new(config.reader.settled_refresh.0))
                    .flatten(),
            ),
        );
        // process_files runs after process (registry order) and takes its list of PIDs.
        ctx.keep_pids = config.collectors.process && config.collectors.process_files;
        ctx.machine_id_file
            .clone_from(&config.paths.machine_id_file);
        ctx.os_release_file
            .clone_from(&config.paths.os_release_file);
        if let Some(memory) = &layout.memory {
            ctx.memory_hierarchical = std::fs::read(memory.join("memory.use_hierarchy"))
                .map(|b| crate::parse::trim(&b) != b"0")
                .unwrap_or(true);
        }
        Ok(Engine {
            discovery: Discovery::new(layout, config.discovery.clone()),
            ctx,
            collectors: config.collectors,
            rootfs: config.paths.rootfs.clone(),
            join: JoinPolicy::new(&config.kubernetes, config.limits.max_label_value_length),
            states: StateTable::default(),
        })
    }

    /// One collection, with labels from `index`, rows filtered by `policy` (before any of their
    /// files are read) and cut to its series budget: the pipeline, step by step.
    pub fn collect(&mut self, index: &MetaIndex, policy: &Policy) -> Snapshot {
        let started = Instant::now();
        let mut snapshot = Snapshot::default();
        // Writes to limits since the last collection: their files are read again in this one.
        self.ctx.reader.drain_settled();
        self.ctx.refused_links.next_collection();
        let targets = self.discover(&mut snapshot);
        let rows = self.join_and_filter(targets, index, policy, &mut snapshot);
        let states = self.collect_cgroups(rows, &mut snapshot);
        if self.collectors.network {
            // The process collector already read each cgroup's first PID when it ran.
            let pids_known = self.collectors.process;
            self.timed(&mut snapshot, "network", |ctx, s| {
                network::collect(ctx, &mut s.containers, &states, pids_known)
            });
        }
        if self.collectors.filesystem {
            let rootfs = self.rootfs.clone();
            self.timed(&mut snapshot, "filesystem", |ctx, s| {
                filesystem::collect(ctx, &mut s.containers, &rootfs);
                layers::collect(ctx, &mut s.containers, &rootfs);
            });
        }
        if self.collectors.machine {
            self.timed(&mut snapshot, "machine", |ctx, s| {
                s.machine = machine::collect(ctx);
            });
        }
        snapshot.budget = policy.apply_budget(&mut snapshot.containers);
        snapshot.errors = std::mem::take(&mut self.ctx.errors);
        snapshot.files_read = self.ctx.reader.take_opens();
        snapshot.settled_watches = self.ctx.reader.settled_watches() as u64;
        snapshot.kept_descriptors = self
            .ctx
            .reader
            .budget()
            .map_or((0, 0), |b| (b.in_use(), b.limit()));
        snapshot.duration = started.elapsed();
        snapshot
    }

    /// The cgroups of this collection (none when the walk failed, which the snapshot says).
    fn discover(&mut self, snapshot: &mut Snapshot) -> Vec<Arc<Target>> {
        let targets = match self.discovery.refresh() {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "discovery failed");
                snapshot.discovery_failed = true;
                Vec::new()
            }
        };
        snapshot.walk = self.discovery.last_walk();
        targets
    }

    /// Each cgroup with its labels from the pod metadata, less those the filters drop (before
    /// any of their files are read). Cgroups the metadata does not know ask for an early
    /// fetch, at the backoff's pace.
    fn join_and_filter(
        &mut self,
        targets: Vec<Arc<Target>>,
        index: &MetaIndex,
        policy: &Policy,
        snapshot: &mut Snapshot,
    ) -> Vec<(Tracked, Arc<Resolved>)> {
        let now = Instant::now();
        let mut rows = Vec::with_capacity(targets.len());
        let sandboxes = first_unlisted_by_pod(&targets, index);
        self.states.begin_collection();
        for (target, is_first) in targets.into_iter().zip(sandboxes) {
            let target = self.states.track(target);
            let (labels, fresh) =
                resolve_cached(&target, &target.state.resolved, index, &self.join, is_first);
            if fresh {
                snapshot.labels_truncated += u64::from(labels.truncated);
            }
            if labels.unknown
                && !policy.excludes_by_path(&target)
                && refresh_due(&target.state.refresh, now, &self.join)
            {
                snapshot.wants_metadata_refresh = true;
            }
            if policy.keeps(&target, &labels) {
                rows.push((target, labels));
            } else {
                snapshot.filtered += 1;
            }
        }
        self.states.end_collection();
        rows
    }

    /// Runs the registry's per-cgroup collectors over `rows`; a cgroup that vanishes on the
    /// way is left out. Returns each collected row's state, parallel to `snapshot.containers`.
    fn collect_cgroups(
        &mut self,
        rows: Vec<(Tracked, Arc<Resolved>)>,
        snapshot: &mut Snapshot,
    ) -> Vec<Arc<TargetState>> {
        let enabled: Vec<&CollectorDef> = REGISTRY
            .iter()
            .filter(|d| (d.enabled)(&self.collectors))
            .collect();
        snapshot.collectors = enabled
            .iter()
            .map(|d| CollectorRun {
                name: d.name,
                duration: Duration::ZERO,
                success: true,
            })
            .collect();
        snapshot.containers.reserve(rows.len());
        let mut states = Vec::with_capacity(rows.len());
        // cAdvisor's `container_last_seen`: when the container was last read, in whole seconds.
        let last_seen = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as f64)
            .ok();
        for (target, labels) in rows {
            let mut stats = ContainerStats {
                last_seen,
                ..ContainerStats::default()
            };
            if !self.collect_one(&enabled, &mut snapshot.collectors, &target, &mut stats) {
                tracing::debug!(cgroup = %target.path, "cgroup vanished during collection; skipped");
                continue;
            }
            states.push(Arc::clone(&target.state));
            snapshot.containers.push(ContainerSample {
                target: target.target,
                labels,
                stats,
            });
        }
        states
    }

    /// One cgroup through every enabled collector, timing each; false when it vanished.
    fn collect_one(
        &mut self,
        enabled: &[&CollectorDef],
        runs: &mut [CollectorRun],
        target: &Tracked,
        stats: &mut ContainerStats,
    ) -> bool {
        self.ctx.pids_listed = false;
        // One clock read per collector boundary, not two: the clock is a measurable share of a
        // collection that otherwise only reads kept descriptors.
        let mut t0 = Instant::now();
        for (def, run) in enabled.iter().zip(runs.iter_mut()) {
            self.ctx.collector = def.name;
            self.ctx.collector_failed = false;
            let result = (def.collect)(&mut self.ctx, target, stats);
            let t1 = Instant::now();
            run.duration += t1 - t0;
            t0 = t1;
            run.success &= !self.ctx.collector_failed;
            if result.is_err() {
                return false;
            }
        }
        true
    }

    /// Runs a collector over the whole snapshot (per pod or per host) and records its run.
    fn timed(
        &mut self,
        snapshot: &mut Snapshot,
        name: &'static str,
        f: impl FnOnce(&mut Ctx, &mut Snapshot),
    ) {
        let t0 = Instant::now();
        self.ctx.collector = name;
        self.ctx.collector_failed = false;
        f(&mut self.ctx, snapshot);
        snapshot.collectors.push(CollectorRun {
            name,
            duration: t0.elapsed(),
            success: !self.ctx.collector_failed,
        });
    }
}
