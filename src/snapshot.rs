//! The result of one collection: every reported cgroup with its stats, the machine, and the
//! agent's own figures. Encoding reads only this, so a snapshot can be served to several
//! scrapers without touching the filesystem again.

use std::sync::Arc;
use std::time::Duration;

use crate::discovery::Target;
use crate::meta::join::Resolved;
use crate::parse::blkio::DeviceIo;
use crate::parse::netdev::InterfaceStats;
use crate::parse::procfs::CpuTopology;
use crate::parse::psi::Pressure;

/// Block IO of one device, with the device label already resolved (`/dev/sda`, or empty).
#[derive(Debug, Clone)]
pub struct DeviceStats {
    pub device: Arc<str>,
    /// The device's numbers, as labels of `container_blkio_device_usage_total`.
    pub major: Arc<str>,
    pub minor: Arc<str>,
    pub io: DeviceIo,
}

/// Everything read for one cgroup. `None` means "not available here" (controller off, old
/// kernel, file unreadable), and the encoder omits the series rather than inventing a zero.
#[derive(Debug, Clone, Default)]
pub struct ContainerStats {
    // cpu
    pub cpu_usage_seconds: Option<f64>,
    pub cpu_user_seconds: Option<f64>,
    pub cpu_system_seconds: Option<f64>,
    pub cfs_periods: Option<u64>,
    pub cfs_throttled_periods: Option<u64>,
    pub cfs_throttled_seconds: Option<f64>,
    // spec
    pub spec_cpu_period: Option<u64>,
    pub spec_cpu_quota: Option<u64>,
    pub spec_cpu_shares: Option<u64>,
    pub spec_memory_limit: Option<u64>,
    pub spec_memory_swap_limit: Option<u64>,
    pub spec_memory_reservation: Option<u64>,
    // memory
    pub memory_usage: Option<u64>,
    pub memory_working_set: Option<u64>,
    pub memory_rss: Option<u64>,
    pub memory_cache: Option<u64>,
    pub memory_mapped_file: Option<u64>,
    pub memory_swap: Option<u64>,
    pub memory_failcnt: Option<u64>,
    pub memory_max_usage: Option<u64>,
    pub memory_pgfault: Option<u64>,
    pub memory_pgmajfault: Option<u64>,
    pub memory_active_file: Option<u64>,
    pub memory_inactive_file: Option<u64>,
    /// v1 `memory.kmem.usage_in_bytes`; v2 `memory.stat kernel`.
    pub memory_kernel: Option<u64>,
    // oom / memory.events
    pub oom_kills: Option<u64>,
    pub memory_events_high: Option<u64>,
    pub memory_events_max: Option<u64>,
    // diskIO
    pub devices: Vec<DeviceStats>,
    // process
    pub processes: Option<u64>,
    pub threads: Option<u64>,
    pub threads_max: Option<u64>,
    /// Open descriptors of the cgroup's processes, and how many of them are sockets.
    pub file_descriptors: Option<u64>,
    pub sockets: Option<u64>,
    /// Soft `Max open files` of the cgroup's first process (-1: unlimited).
    pub ulimit_open_files: Option<f64>,
    /// Threads by state, and the load averages in milli-tasks (running, uninterruptible).
    pub tasks: Option<TaskStates>,
    pub load_average: Option<(f64, f64)>,
    /// First visible PID, used to find the pod's network namespace.
    pub first_pid: Option<u32>,
    // pressure
    pub cpu_pressure: Option<Pressure>,
    pub memory_pressure: Option<Pressure>,
    pub io_pressure: Option<Pressure>,
    /// Unix time of the collection, whole seconds (`container_last_seen`).
    pub last_seen: Option<f64>,
    /// The host's filesystems (root row only).
    pub filesystems: Vec<FsStats>,
    // network (only on the row that carries the pod's network, and on `/`)
    pub network: Vec<(Arc<str>, InterfaceStats)>,
}

/// One filesystem of the host, with its `device` label: `statvfs` figures (None until the first
/// background refresh, or where it cannot be inspected) and its block device's diskstats.
#[derive(Debug, Clone)]
pub struct FsStats {
    pub device: Arc<str>,
    pub usage: Option<FsUsage>,
    pub disk: Option<procfs_core::DiskStat>,
}

/// Threads of a cgroup by the state letter of `/proc/<tid>/stat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskStates {
    pub running: u64,
    pub sleeping: u64,
    pub uninterruptible: u64,
    pub stopped: u64,
}

#[derive(Debug, Clone)]
pub struct ContainerSample {
    pub target: Arc<Target>,
    /// The labels of its series (shared with the target's cache).
    pub labels: Arc<Resolved>,
    pub stats: ContainerStats,
}

#[derive(Debug, Clone, Default)]
pub struct MachineStats {
    pub cpu: Option<CpuTopology>,
    pub memory_bytes: Option<u64>,
    pub swap_bytes: Option<u64>,
    pub identity: Arc<HostIdentity>,
    /// A machine figure could not be read or understood in this collection
    /// (`machine_scrape_error`).
    pub failed: bool,
}

/// The labels of the machine families and of `cadvisor_version_info`; empty where the host does
/// not tell (no DMI in a VM, no machine ID file mounted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostIdentity {
    pub boot_id: String,
    pub machine_id: String,
    pub system_uuid: String,
    pub kernel_version: String,
    pub os_version: String,
}

/// Per-collector figures of one collection.
#[derive(Debug, Clone, Default)]
pub struct CollectorRun {
    pub name: &'static str,
    pub duration: Duration,
    pub success: bool,
}

/// Errors of one collection, by kind (the `kind` label of `podstat_read_errors_total`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrorCounts {
    pub parse: u64,
    pub io: u64,
    pub vanished: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub containers: Vec<ContainerSample>,
    pub machine: MachineStats,
    pub collectors: Vec<CollectorRun>,
    pub errors: ErrorCounts,
    /// True when discovery failed: cAdvisor's `container_scrape_error`.
    pub discovery_failed: bool,
    pub duration: Duration,
    pub files_read: u64,
    /// What discovery's walk listed and watched.
    pub walk: crate::discovery::WalkStats,
    /// Directories watched for writes to their settled files (limits, weights).
    pub settled_watches: u64,
    /// Descriptors kept open after this collection, and the most allowed.
    pub kept_descriptors: (usize, usize),
    /// Label values cut to the length limit while rendering labels in this collection.
    pub labels_truncated: u64,
    /// A cgroup of an unknown pod or container appeared: the metadata may be behind.
    pub wants_metadata_refresh: bool,
    /// Cgroups left out by the filters.
    pub filtered: usize,
    /// What the series budget left out.
    pub budget: BudgetOutcome,
}

/// Capacity and usage of one filesystem (`statvfs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsUsage {
    pub capacity_bytes: u64,
    pub used_bytes: u64,
    pub inodes: u64,
    pub inodes_free: u64,
}

/// What the budget left out of one collection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BudgetOutcome {
    /// Container series in the output.
    pub series: usize,
    pub dropped_series: usize,
    pub dropped_cgroups: usize,
}
