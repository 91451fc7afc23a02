//! The single table of metric families podstat exposes: name, type, help, group and where the
//! value comes from. The encoder, docs/metrics.md (`podstat metrics-table`) and the
//! tests all read this table, so names cannot drift between code and docs.
//!
//! Names, types and label names follow cAdvisor as served by the kubelet's
//! `/metrics/cadvisor`, so existing dashboards and recording rules work unchanged.

use super::encode::{Encoder, MetricType};
use crate::snapshot::{ContainerSample, ContainerStats, FsStats, MachineStats};

use MetricType::{Counter, Gauge};

/// Writes the samples of one family for one cgroup, or only counts them (for the series
/// budget, which must know a cgroup's series before deciding to encode it).
pub struct Out<'a> {
    enc: Option<&'a mut Encoder>,
    name: &'static str,
    prefix: &'a str,
    /// The cgroup's index among the samples (identifies its prefix to the gzip writer).
    container: usize,
    count: usize,
}

impl Out<'_> {
    fn f(&mut self, v: Option<f64>) {
        self.with(&[], v);
    }
    fn u(&mut self, v: Option<u64>) {
        self.f(v.map(|v| v as f64));
    }
    fn with(&mut self, extra: &[(&str, &str)], v: Option<f64>) {
        if let Some(v) = v {
            self.count += 1;
            if let Some(enc) = self.enc.as_deref_mut() {
                enc.container_sample(self.container, self.name, self.prefix, extra, v);
            }
        }
    }
    /// [`Out::with`] for extra labels fixed at compile time, written out (`cpu="total"`): a
    /// fifth of the container lines carry one, and escaping the same constant values on every
    /// line was ~2 % of a scrape's user instructions.
    fn with_rendered(&mut self, extra: &'static str, v: Option<f64>) {
        if let Some(v) = v {
            self.count += 1;
            if let Some(enc) = self.enc.as_deref_mut() {
                enc.container_sample_rendered(self.container, self.name, self.prefix, extra, v);
            }
        }
    }
}

/// Which container families are emitted (`[filters] drop_metrics` clears entries), by index
/// into [`CONTAINER_FAMILIES`].
pub type FamilyMask = [bool];

/// The mask for a drop list; unknown names are an error (a typo would silently keep the
/// family).
pub fn family_mask(drop: &[String]) -> Result<Vec<bool>, String> {
    for name in drop {
        let known = CONTAINER_FAMILIES.iter().any(|f| f.name == name)
            || MACHINE_FAMILIES.iter().any(|f| f.name == name)
            || VERSION_INFO.name == name;
        if !known {
            return Err(format!("drop_metrics: unknown metric family {name:?}"));
        }
    }
    Ok(CONTAINER_FAMILIES
        .iter()
        .map(|f| !drop.iter().any(|d| d == f.name))
        .collect())
}

/// Series `sample` adds to the exposition under `mask`.
pub fn count_series(sample: &ContainerSample, mask: &FamilyMask) -> usize {
    let mut out = Out {
        enc: None,
        name: "",
        prefix: "",
        container: 0,
        count: 0,
    };
    for (family, on) in CONTAINER_FAMILIES.iter().zip(mask) {
        if *on {
            (family.emit)(sample, &mut out);
        }
    }
    out.count
}

/// One metric family podstat writes: container families (the default `E`), machine families
/// (`E` = [`MachineValue`]) and self-metrics (`E` = `()`, written by hand in selfmetrics.rs)
/// share this shape, and the docs' metric table is made from all three lists.
pub struct Family<E = ContainerEmit> {
    pub name: &'static str,
    pub kind: MetricType,
    /// The config switch (`[collectors]`) that produces it; `spec` is always on; `machine` and
    /// `self` for the others.
    pub group: &'static str,
    /// Extra labels (for container families: beyond `container,id,image,name,namespace,pod`).
    pub labels: &'static str,
    pub help: &'static str,
    /// cgroup v1 and v2 source, for the docs.
    pub source: &'static str,
    pub emit: E,
}

/// Writes a container family's samples of one cgroup.
pub type ContainerEmit = fn(&ContainerSample, &mut Out);
/// A machine family's one value, when the machine figure was read.
pub type MachineValue = fn(&MachineStats) -> Option<f64>;

fn s(sample: &ContainerSample) -> &ContainerStats {
    &sample.stats
}

/// CFS counters only mean something under a quota; cAdvisor omits them otherwise.
fn with_quota(st: &ContainerStats, v: Option<f64>) -> Option<f64> {
    st.spec_cpu_quota.filter(|&q| q > 0).and(v)
}

fn per_device(
    sample: &ContainerSample,
    o: &mut Out,
    pick: fn(&crate::parse::blkio::DeviceIo) -> u64,
) {
    for d in &sample.stats.devices {
        o.with(&[("device", &d.device)], Some(pick(&d.io) as f64));
    }
}

fn per_interface(
    sample: &ContainerSample,
    o: &mut Out,
    pick: fn(&crate::parse::netdev::InterfaceStats) -> u64,
) {
    for (name, st) in &sample.stats.network {
        o.with(&[("interface", name)], Some(pick(st) as f64));
    }
}

/// One series per host filesystem (root row only).
fn per_fs(sample: &ContainerSample, o: &mut Out, pick: fn(&FsStats) -> Option<f64>) {
    for f in &sample.stats.filesystems {
        o.with(&[("device", &f.device)], pick(f));
    }
}

/// The root's diskstats operations per filesystem, for the two families the block IO collector
/// also writes: a filesystem on a whole disk has the disk's name, which must not be written
/// twice under one label set.
fn per_fs_unless_device(
    sample: &ContainerSample,
    o: &mut Out,
    pick: fn(&procfs_core::DiskStat) -> u64,
) {
    let st = &sample.stats;
    for f in &st.filesystems {
        if st.devices.iter().any(|d| d.device == f.device) {
            continue;
        }
        o.with(
            &[("device", &f.device)],
            f.disk.as_ref().map(|d| pick(d) as f64),
        );
    }
}

/// diskstats milliseconds in seconds. (cAdvisor divides them by 1e9, so its figures are a
/// millionth of these: google/cadvisor#1642.)
fn ms(v: u64) -> f64 {
    v as f64 / 1e3
}

fn usec(v: Option<u64>) -> Option<f64> {
    v.map(|v| v as f64 / 1e6)
}

/// `container_blkio_device_usage_total`: bytes per device and operation (v1: every row of
/// `io_service_bytes`; v2: read and write).
fn device_usage(sample: &ContainerSample, o: &mut Out) {
    for d in &sample.stats.devices {
        let io = &d.io;
        let ops = [
            ("Read", Some(io.read_bytes)),
            ("Write", Some(io.write_bytes)),
            ("Sync", io.sync_bytes),
            ("Async", io.async_bytes),
            ("Discard", io.discard_bytes),
            ("Total", io.total_bytes),
        ];
        for (operation, value) in ops {
            let labels = [
                ("device", &*d.device),
                ("major", &*d.major),
                ("minor", &*d.minor),
                ("operation", operation),
            ];
            o.with(&labels, value.map(|v| v as f64));
        }
    }
}

/// Every container family, sorted by name.
pub const CONTAINER_FAMILIES: &[Family] = &[
    Family { name: "container_blkio_device_usage_total", kind: Counter, group: "diskio", labels: "device, major, minor, operation",
        help: "Bytes transferred per block device and operation.",
        source: "v1 blkio.throttle.io_service_bytes_recursive (Read, Write, Sync, Async, Discard, Total); v2 io.stat rbytes, wbytes (Read, Write)",
        emit: device_usage },
    Family { name: "container_cpu_cfs_periods_total", kind: Counter, group: "cpu", labels: "",
        help: "Number of elapsed CFS enforcement periods (only under a CPU quota).",
        source: "v1 cpu.stat nr_periods; v2 cpu.stat nr_periods",
        emit: |x, o| { let st = s(x); o.f(with_quota(st, st.cfs_periods.map(|v| v as f64))) } },
    Family { name: "container_cpu_cfs_throttled_periods_total", kind: Counter, group: "cpu", labels: "",
        help: "Number of CFS periods in which the cgroup was throttled (only under a CPU quota).",
        source: "v1 cpu.stat nr_throttled; v2 cpu.stat nr_throttled",
        emit: |x, o| { let st = s(x); o.f(with_quota(st, st.cfs_throttled_periods.map(|v| v as f64))) } },
    Family { name: "container_cpu_cfs_throttled_seconds_total", kind: Counter, group: "cpu", labels: "",
        help: "Total time the cgroup was throttled, in seconds (only under a CPU quota).",
        source: "v1 cpu.stat throttled_time (ns); v2 cpu.stat throttled_usec",
        emit: |x, o| { let st = s(x); o.f(with_quota(st, st.cfs_throttled_seconds)) } },
    Family { name: "container_cpu_load_average_10s", kind: Gauge, group: "tasks", labels: "",
        help: "Running threads, averaged over a 10 s time constant, in milli-tasks.",
        source: "state R in /proc/<tid>/stat over tasks / cgroup.threads, smoothed across collections",
        emit: |x, o| o.f(s(x).load_average.map(|l| l.0)) },
    Family { name: "container_cpu_load_d_average_10s", kind: Gauge, group: "tasks", labels: "",
        help: "Uninterruptible threads, averaged over a 10 s time constant, in milli-tasks.",
        source: "state D in /proc/<tid>/stat, smoothed across collections",
        emit: |x, o| o.f(s(x).load_average.map(|l| l.1)) },
    Family { name: "container_cpu_system_seconds_total", kind: Counter, group: "cpu", labels: "",
        help: "CPU time spent in kernel mode, in seconds.",
        source: "v1 cpuacct.stat system (USER_HZ ticks); v2 cpu.stat system_usec",
        emit: |x, o| o.f(s(x).cpu_system_seconds) },
    Family { name: "container_cpu_usage_seconds_total", kind: Counter, group: "cpu", labels: "cpu",
        help: "CPU time consumed, in seconds (cpu=\"total\": all CPUs together).",
        source: "v1 cpuacct.usage (ns); v2 cpu.stat usage_usec",
        emit: |x, o| o.with_rendered(r#"cpu="total""#, s(x).cpu_usage_seconds) },
    Family { name: "container_cpu_user_seconds_total", kind: Counter, group: "cpu", labels: "",
        help: "CPU time spent in user mode, in seconds.",
        source: "v1 cpuacct.stat user (USER_HZ ticks); v2 cpu.stat user_usec",
        emit: |x, o| o.f(s(x).cpu_user_seconds) },
    Family { name: "container_file_descriptors", kind: Gauge, group: "process_files", labels: "",
        help: "Open file descriptors of the cgroup's processes.",
        source: "entries of /proc/<pid>/fd over cgroup.procs",
        emit: |x, o| o.u(s(x).file_descriptors) },
    Family { name: "container_fs_inodes_free", kind: Gauge, group: "filesystem", labels: "device",
        help: "Free inodes of the filesystem (root row: the host's filesystems; Docker and CRI-O containers: 0, as cAdvisor writes it).",
        source: "statvfs f_ffree of each mounted filesystem; containers: 0",
        emit: |x, o| per_fs(x, o, |f| f.usage.map(|u| u.inodes_free as f64)) },
    Family { name: "container_fs_inodes_total", kind: Gauge, group: "filesystem", labels: "device",
        help: "Inodes of the filesystem (Docker and CRI-O containers: the inodes their writable layer uses, as cAdvisor counts them).",
        source: "statvfs f_files; containers: inodes of the overlay upperdir (a walk every 60 s off the scrape path)",
        emit: |x, o| per_fs(x, o, |f| f.usage.map(|u| u.inodes as f64)) },
    Family { name: "container_fs_io_current", kind: Gauge, group: "filesystem", labels: "device",
        help: "I/Os in progress on the filesystem's block device.",
        source: "/proc/diskstats field 12",
        emit: |x, o| per_fs(x, o, |f| f.disk.as_ref().map(|d| d.in_progress as f64)) },
    Family { name: "container_fs_io_time_seconds_total", kind: Counter, group: "filesystem", labels: "device",
        help: "Time the filesystem's block device was busy, in seconds.",
        source: "/proc/diskstats field 13 (ms)",
        emit: |x, o| per_fs(x, o, |f| f.disk.as_ref().map(|d| ms(d.time_in_progress))) },
    Family { name: "container_fs_io_time_weighted_seconds_total", kind: Counter, group: "filesystem", labels: "device",
        help: "Weighted I/O time of the filesystem's block device, in seconds.",
        source: "/proc/diskstats field 14 (ms)",
        emit: |x, o| per_fs(x, o, |f| f.disk.as_ref().map(|d| ms(d.weighted_time_in_progress))) },
    Family { name: "container_fs_limit_bytes", kind: Gauge, group: "filesystem", labels: "device",
        help: "Capacity of the filesystem, in bytes (Docker and CRI-O containers: of the filesystem under their writable layer).",
        source: "statvfs f_blocks * f_frsize",
        emit: |x, o| per_fs(x, o, |f| f.usage.map(|u| u.capacity_bytes as f64)) },
    Family { name: "container_fs_read_seconds_total", kind: Counter, group: "filesystem", labels: "device",
        help: "Time spent reading on the filesystem's block device, in seconds.",
        source: "/proc/diskstats field 7 (ms)",
        emit: |x, o| per_fs(x, o, |f| f.disk.as_ref().map(|d| ms(d.time_reading))) },
    Family { name: "container_fs_reads_bytes_total", kind: Counter, group: "diskio", labels: "device",
        help: "Bytes read from block devices.",
        source: "v1 blkio.throttle.io_service_bytes_recursive Read; v2 io.stat rbytes",
        emit: |x, o| per_device(x, o, |d| d.read_bytes) },
    Family { name: "container_fs_reads_merged_total", kind: Counter, group: "filesystem", labels: "device",
        help: "Reads merged on the filesystem's block device.",
        source: "/proc/diskstats field 5",
        emit: |x, o| per_fs(x, o, |f| f.disk.as_ref().map(|d| d.merged as f64)) },
    Family { name: "container_fs_reads_total", kind: Counter, group: "diskio", labels: "device",
        help: "Read operations completed on block devices.",
        source: "v1 blkio.throttle.io_serviced_recursive Read; v2 io.stat rios; root: also /proc/diskstats field 4 of each filesystem",
        emit: |x, o| { per_device(x, o, |d| d.reads); per_fs_unless_device(x, o, |d| d.reads) } },
    Family { name: "container_fs_sector_reads_total", kind: Counter, group: "filesystem", labels: "device",
        help: "Sectors read on the filesystem's block device.",
        source: "/proc/diskstats field 6",
        emit: |x, o| per_fs(x, o, |f| f.disk.as_ref().map(|d| d.sectors_read as f64)) },
    Family { name: "container_fs_sector_writes_total", kind: Counter, group: "filesystem", labels: "device",
        help: "Sectors written on the filesystem's block device.",
        source: "/proc/diskstats field 10",
        emit: |x, o| per_fs(x, o, |f| f.disk.as_ref().map(|d| d.sectors_written as f64)) },
    Family { name: "container_fs_usage_bytes", kind: Gauge, group: "filesystem", labels: "device",
        help: "Bytes used on the filesystem (Docker and CRI-O containers: by the files of their writable layer).",
        source: "statvfs (f_blocks - f_bfree) * f_frsize; containers: allocated blocks under the overlay upperdir, as du counts them",
        emit: |x, o| per_fs(x, o, |f| f.usage.map(|u| u.used_bytes as f64)) },
    Family { name: "container_fs_write_seconds_total", kind: Counter, group: "filesystem", labels: "device",
        help: "Time spent writing on the filesystem's block device, in seconds.",
        source: "/proc/diskstats field 11 (ms)",
        emit: |x, o| per_fs(x, o, |f| f.disk.as_ref().map(|d| ms(d.time_writing))) },
    Family { name: "container_fs_writes_bytes_total", kind: Counter, group: "diskio", labels: "device",
        help: "Bytes written to block devices.",
        source: "v1 blkio.throttle.io_service_bytes_recursive Write; v2 io.stat wbytes",
        emit: |x, o| per_device(x, o, |d| d.write_bytes) },
    Family { name: "container_fs_writes_merged_total", kind: Counter, group: "filesystem", labels: "device",
        help: "Writes merged on the filesystem's block device.",
        source: "/proc/diskstats field 9",
        emit: |x, o| per_fs(x, o, |f| f.disk.as_ref().map(|d| d.writes_merged as f64)) },
    Family { name: "container_fs_writes_total", kind: Counter, group: "diskio", labels: "device",
        help: "Write operations completed on block devices.",
        source: "v1 blkio.throttle.io_serviced_recursive Write; v2 io.stat wios; root: also /proc/diskstats field 8 of each filesystem",
        emit: |x, o| { per_device(x, o, |d| d.writes); per_fs_unless_device(x, o, |d| d.writes) } },
    Family { name: "container_last_seen", kind: Gauge, group: "spec", labels: "",
        help: "Last time the container was seen by podstat, in seconds since the Unix epoch (the collection's time).",
        source: "the collection's wall-clock time, whole seconds",
        emit: |x, o| o.f(s(x).last_seen) },
    Family { name: "container_memory_cache", kind: Gauge, group: "memory", labels: "",
        help: "Page cache memory, in bytes.",
        source: "v1 memory.stat total_cache; v2 memory.stat file",
        emit: |x, o| o.u(s(x).memory_cache) },
    Family { name: "container_memory_events_high_total", kind: Counter, group: "oom", labels: "",
        help: "Times the cgroup was throttled for exceeding memory.high (v2 only).",
        source: "v2 memory.events high",
        emit: |x, o| o.u(s(x).memory_events_high) },
    Family { name: "container_memory_events_max_total", kind: Counter, group: "oom", labels: "",
        help: "Times the cgroup hit memory.max (v2 only).",
        source: "v2 memory.events max",
        emit: |x, o| o.u(s(x).memory_events_max) },
    Family { name: "container_memory_failcnt", kind: Counter, group: "memory", labels: "",
        help: "Times the memory limit was hit (v1 only; see container_memory_events_max_total on v2).",
        source: "v1 memory.failcnt",
        emit: |x, o| o.u(s(x).memory_failcnt) },
    Family { name: "container_memory_failures_total", kind: Counter, group: "memory", labels: "failure_type, scope",
        help: "Page faults of the cgroup (both scopes carry the same value, as in cAdvisor).",
        source: "memory.stat pgfault, pgmajfault",
        emit: |x, o| {
            let st = s(x);
            let (minor, major) = (st.memory_pgfault.map(|v| v as f64), st.memory_pgmajfault.map(|v| v as f64));
            o.with_rendered(r#"failure_type="pgfault",scope="container""#, minor);
            o.with_rendered(r#"failure_type="pgfault",scope="hierarchy""#, minor);
            o.with_rendered(r#"failure_type="pgmajfault",scope="container""#, major);
            o.with_rendered(r#"failure_type="pgmajfault",scope="hierarchy""#, major);
        } },
    Family { name: "container_memory_kernel_usage", kind: Gauge, group: "memory", labels: "",
        help: "Kernel memory charged to the cgroup, in bytes.",
        source: "v1 memory.kmem.usage_in_bytes; v2 memory.stat kernel (Linux 5.18+; cAdvisor reports 0 on v2)",
        emit: |x, o| o.u(s(x).memory_kernel) },
    Family { name: "container_memory_mapped_file", kind: Gauge, group: "memory", labels: "",
        help: "Memory-mapped file pages, in bytes.",
        source: "v1 memory.stat total_mapped_file; v2 memory.stat file_mapped",
        emit: |x, o| o.u(s(x).memory_mapped_file) },
    Family { name: "container_memory_max_usage_bytes", kind: Gauge, group: "memory", labels: "",
        help: "Highest memory usage recorded, in bytes.",
        source: "v1 memory.max_usage_in_bytes; v2 memory.peak",
        emit: |x, o| o.u(s(x).memory_max_usage) },
    Family { name: "container_memory_rss", kind: Gauge, group: "memory", labels: "",
        help: "Anonymous memory (RSS), in bytes.",
        source: "v1 memory.stat total_rss; v2 memory.stat anon",
        emit: |x, o| o.u(s(x).memory_rss) },
    Family { name: "container_memory_swap", kind: Gauge, group: "memory", labels: "",
        help: "Swap used, in bytes.",
        source: "v1 memory.stat total_swap; v2 memory.swap.current",
        emit: |x, o| o.u(s(x).memory_swap) },
    Family { name: "container_memory_total_active_file_bytes", kind: Gauge, group: "memory", labels: "",
        help: "Active file-backed memory, in bytes.",
        source: "v1 memory.stat total_active_file; v2 memory.stat active_file",
        emit: |x, o| o.u(s(x).memory_active_file) },
    Family { name: "container_memory_total_inactive_file_bytes", kind: Gauge, group: "memory", labels: "",
        help: "Inactive file-backed memory, in bytes.",
        source: "v1 memory.stat total_inactive_file; v2 memory.stat inactive_file",
        emit: |x, o| o.u(s(x).memory_inactive_file) },
    Family { name: "container_memory_usage_bytes", kind: Gauge, group: "memory", labels: "",
        help: "Memory usage including page cache, in bytes.",
        source: "v1 memory.usage_in_bytes; v2 memory.current (root: anon + file)",
        emit: |x, o| o.u(s(x).memory_usage) },
    Family { name: "container_memory_working_set_bytes", kind: Gauge, group: "memory", labels: "",
        help: "Working set: usage minus inactive file cache, in bytes (the kubelet's eviction signal).",
        source: "usage - memory.stat (total_)inactive_file, floored at 0",
        emit: |x, o| o.u(s(x).memory_working_set) },
    Family { name: "container_network_receive_bytes_total", kind: Counter, group: "network", labels: "interface",
        help: "Bytes received.",
        source: "/proc/<pid>/net/dev of a process of the pod",
        emit: |x, o| per_interface(x, o, |n| n.rx_bytes) },
    Family { name: "container_network_receive_errors_total", kind: Counter, group: "network", labels: "interface",
        help: "Receive errors.",
        source: "/proc/<pid>/net/dev",
        emit: |x, o| per_interface(x, o, |n| n.rx_errors) },
    Family { name: "container_network_receive_packets_dropped_total", kind: Counter, group: "network", labels: "interface",
        help: "Packets dropped while receiving.",
        source: "/proc/<pid>/net/dev",
        emit: |x, o| per_interface(x, o, |n| n.rx_dropped) },
    Family { name: "container_network_receive_packets_total", kind: Counter, group: "network", labels: "interface",
        help: "Packets received.",
        source: "/proc/<pid>/net/dev",
        emit: |x, o| per_interface(x, o, |n| n.rx_packets) },
    Family { name: "container_network_transmit_bytes_total", kind: Counter, group: "network", labels: "interface",
        help: "Bytes transmitted.",
        source: "/proc/<pid>/net/dev",
        emit: |x, o| per_interface(x, o, |n| n.tx_bytes) },
    Family { name: "container_network_transmit_errors_total", kind: Counter, group: "network", labels: "interface",
        help: "Transmit errors.",
        source: "/proc/<pid>/net/dev",
        emit: |x, o| per_interface(x, o, |n| n.tx_errors) },
    Family { name: "container_network_transmit_packets_dropped_total", kind: Counter, group: "network", labels: "interface",
        help: "Packets dropped while transmitting.",
        source: "/proc/<pid>/net/dev",
        emit: |x, o| per_interface(x, o, |n| n.tx_dropped) },
    Family { name: "container_network_transmit_packets_total", kind: Counter, group: "network", labels: "interface",
        help: "Packets transmitted.",
        source: "/proc/<pid>/net/dev",
        emit: |x, o| per_interface(x, o, |n| n.tx_packets) },
    Family { name: "container_oom_events_total", kind: Counter, group: "oom", labels: "",
        help: "Processes of the cgroup killed by the OOM killer.",
        source: "v1 memory.oom_control oom_kill; v2 memory.events oom_kill",
        emit: |x, o| o.u(s(x).oom_kills) },
    Family { name: "container_pressure_cpu_stalled_seconds_total", kind: Counter, group: "pressure", labels: "",
        help: "Time all non-idle tasks were stalled on CPU, in seconds (PSI full).",
        source: "cpu.pressure full total (v2, or the unified hierarchy on hybrid hosts)",
        emit: |x, o| o.f(usec(s(x).cpu_pressure.and_then(|p| p.full_total_usec))) },
    Family { name: "container_pressure_cpu_waiting_seconds_total", kind: Counter, group: "pressure", labels: "",
        help: "Time at least one task waited for CPU, in seconds (PSI some).",
        source: "cpu.pressure some total",
        emit: |x, o| o.f(usec(s(x).cpu_pressure.and_then(|p| p.some_total_usec))) },
    Family { name: "container_pressure_io_stalled_seconds_total", kind: Counter, group: "pressure", labels: "",
        help: "Time all non-idle tasks were stalled on IO, in seconds (PSI full).",
        source: "io.pressure full total",
        emit: |x, o| o.f(usec(s(x).io_pressure.and_then(|p| p.full_total_usec))) },
    Family { name: "container_pressure_io_waiting_seconds_total", kind: Counter, group: "pressure", labels: "",
        help: "Time at least one task waited for IO, in seconds (PSI some).",
        source: "io.pressure some total",
        emit: |x, o| o.f(usec(s(x).io_pressure.and_then(|p| p.some_total_usec))) },
    Family { name: "container_pressure_memory_stalled_seconds_total", kind: Counter, group: "pressure", labels: "",
        help: "Time all non-idle tasks were stalled on memory, in seconds (PSI full).",
        source: "memory.pressure full total",
        emit: |x, o| o.f(usec(s(x).memory_pressure.and_then(|p| p.full_total_usec))) },
    Family { name: "container_pressure_memory_waiting_seconds_total", kind: Counter, group: "pressure", labels: "",
        help: "Time at least one task waited for memory, in seconds (PSI some).",
        source: "memory.pressure some total",
        emit: |x, o| o.f(usec(s(x).memory_pressure.and_then(|p| p.some_total_usec))) },
    Family { name: "container_processes", kind: Gauge, group: "process", labels: "",
        help: "Processes in the cgroup itself (not its children).",
        source: "cgroup.procs line count",
        emit: |x, o| o.u(s(x).processes) },
    Family { name: "container_sockets", kind: Gauge, group: "process_files", labels: "",
        help: "Open sockets of the cgroup's processes.",
        source: "entries of /proc/<pid>/fd linking to socket:[...] over cgroup.procs",
        emit: |x, o| o.u(s(x).sockets) },
    Family { name: "container_spec_cpu_period", kind: Gauge, group: "spec", labels: "",
        help: "CFS period of the CPU limit, in microseconds.",
        source: "v1 cpu.cfs_period_us; v2 cpu.max period",
        emit: |x, o| o.u(s(x).spec_cpu_period) },
    Family { name: "container_spec_cpu_quota", kind: Gauge, group: "spec", labels: "",
        help: "CFS quota of the CPU limit, in microseconds per period (absent when unlimited).",
        source: "v1 cpu.cfs_quota_us; v2 cpu.max quota",
        emit: |x, o| o.u(s(x).spec_cpu_quota) },
    Family { name: "container_spec_cpu_shares", kind: Gauge, group: "spec", labels: "",
        help: "CPU shares (v2 cpu.weight converted to shares as cAdvisor does).",
        source: "v1 cpu.shares; v2 2 + (cpu.weight - 1) * 262142 / 9999",
        emit: |x, o| o.u(s(x).spec_cpu_shares) },
    Family { name: "container_spec_memory_limit_bytes", kind: Gauge, group: "spec", labels: "",
        help: "Memory limit, in bytes (0 when unlimited; the root reports the machine's memory).",
        source: "v1 memory.limit_in_bytes; v2 memory.max",
        emit: |x, o| o.u(s(x).spec_memory_limit) },
    Family { name: "container_spec_memory_reservation_limit_bytes", kind: Gauge, group: "spec", labels: "",
        help: "Memory reservation, in bytes (0 when unset).",
        source: "v1 memory.soft_limit_in_bytes; v2 memory.min",
        emit: |x, o| o.u(s(x).spec_memory_reservation) },
    Family { name: "container_spec_memory_swap_limit_bytes", kind: Gauge, group: "spec", labels: "",
        help: "Swap limit, in bytes (v1: memory+swap; v2: swap only; 0 when unlimited).",
        source: "v1 memory.memsw.limit_in_bytes; v2 memory.swap.max",
        emit: |x, o| o.u(s(x).spec_memory_swap_limit) },
    Family { name: "container_start_time_seconds", kind: Gauge, group: "spec", labels: "",
        help: "Start time of the cgroup since the Unix epoch, in seconds.",
        source: "earliest mtime of the cgroup directory and its cgroup.procs, whole seconds",
        emit: |x, o| o.f(Some(x.target.start_time()).filter(|&t| t > 0.0)) },
    Family { name: "container_tasks_state", kind: Gauge, group: "tasks", labels: "state",
        help: "Threads of the cgroup by state (running, sleeping, uninterruptible, stopped).",
        source: "state letter of /proc/<tid>/stat over v1 tasks / v2 cgroup.threads",
        emit: |x, o| {
            let t = s(x).tasks;
            o.with_rendered(r#"state="running""#, t.map(|t| t.running as f64));
            o.with_rendered(r#"state="sleeping""#, t.map(|t| t.sleeping as f64));
            o.with_rendered(r#"state="stopped""#, t.map(|t| t.stopped as f64));
            o.with_rendered(r#"state="uninterruptible""#, t.map(|t| t.uninterruptible as f64));
        } },
    Family { name: "container_threads", kind: Gauge, group: "process", labels: "",
        help: "Tasks (threads) in the cgroup and its children.",
        source: "pids.current",
        emit: |x, o| o.u(s(x).threads) },
    Family { name: "container_threads_max", kind: Gauge, group: "process", labels: "",
        help: "Task limit of the cgroup (0 when unlimited).",
        source: "pids.max",
        emit: |x, o| o.u(s(x).threads_max) },
    Family { name: "container_ulimits_soft", kind: Gauge, group: "process_files", labels: "ulimit",
        help: "Soft ulimit of the cgroup's first process (ulimit=\"max_open_files\"; -1: unlimited).",
        source: "/proc/<pid>/limits Max open files",
        emit: |x, o| o.with_rendered(r#"ulimit="max_open_files""#, s(x).ulimit_open_files) },
];

/// A host-level family: no container labels; the host's `boot_id`, `machine_id` and
/// `system_uuid` on each sample, as the kubelet's cAdvisor writes them.
/// The labels of every machine family (no container labels).
const MACHINE_LABELS: &str = "boot_id, machine_id, system_uuid";

/// Host-level families, sorted by name.
pub const MACHINE_FAMILIES: &[Family<MachineValue>] = &[
    Family { name: "machine_cpu_cores", kind: Gauge, group: "machine", labels: MACHINE_LABELS, source: "",
        help: "Logical CPUs of the machine (/proc/cpuinfo processor lines).",
        emit: |m| m.cpu.map(|c| c.logical as f64) },
    Family { name: "machine_cpu_physical_cores", kind: Gauge, group: "machine", labels: MACHINE_LABELS, source: "",
        help: "Physical cores of the machine (distinct physical id and core id in /proc/cpuinfo; one per CPU where it has none).",
        emit: |m| m.cpu.map(|c| c.cores as f64) },
    Family { name: "machine_cpu_sockets", kind: Gauge, group: "machine", labels: MACHINE_LABELS, source: "",
        help: "CPU sockets of the machine (distinct physical id in /proc/cpuinfo; 1 where it has none).",
        emit: |m| m.cpu.map(|c| c.sockets as f64) },
    Family { name: "machine_memory_bytes", kind: Gauge, group: "machine", labels: MACHINE_LABELS, source: "",
        help: "Memory of the machine, in bytes (MemTotal).",
        emit: |m| m.memory_bytes.map(|v| v as f64) },
    // No identity labels: the kubelet's cAdvisor writes it bare (a real node and tests/cluster).
    Family { name: "machine_scrape_error", kind: Gauge, group: "machine", labels: "", source: "",
        help: "1 if a machine figure could not be read in this collection, else 0.",
        emit: |m| Some(if m.failed { 1.0 } else { 0.0 }) },
    Family { name: "machine_swap_bytes", kind: Gauge, group: "machine", labels: MACHINE_LABELS, source: "",
        help: "Swap of the machine, in bytes (SwapTotal).",
        emit: |m| m.swap_bytes.map(|v| v as f64) },
];

/// cAdvisor's version family, with the kubelet's labels: the host's kernel (`osrelease`) and OS
/// (`os-release` PRETTY_NAME); the cAdvisor and Docker fields empty, as the kubelet leaves them
/// on containerd nodes.
pub const VERSION_INFO: Family<()> = Family {
    name: "cadvisor_version_info",
    kind: Gauge,
    group: "machine",
    labels: "cadvisorRevision, cadvisorVersion, dockerVersion, kernelVersion, osVersion",
    help:
        "Always 1; kernelVersion and osVersion tell the host's kernel and OS (cAdvisor compatible).",
    source: "",
    emit: (),
};

/// Where a streamed encoding stopped: the family and the sample to continue from.
#[derive(Debug, Default, Clone, Copy)]
pub struct FamilyCursor {
    family: usize,
    /// How many of the current family's containers are written.
    sample: usize,
    /// The current family has written a sample (so its header is final).
    nonempty: bool,
    /// The container the current family starts with (see [`next_first`]).
    first: usize,
    /// The current family's sample bytes written in earlier chunks (all of them, once it
    /// ends), and its lines.
    bytes: usize,
    lines: usize,
}

/// How far back, in bytes, a container's line may be for the gzip writer to copy its label
/// prefix into the next family's line: deflate's 32 KiB window, less room for the next
/// family's header and for extra labels its lines have and these do not.
const PREFIX_REACH: usize = 30 * 1024;

/// The container the next family starts with. Each family lists the containers in the same
/// cyclic order, but starts with the first of those whose lines are the current family's last
/// [`PREFIX_REACH`] bytes; so those containers' lines in the next family come within
/// deflate's window of their lines in this one, and the gzip writer copies each one's label
/// prefix (~200 bytes, half of it hex that nothing else repeats) as one match instead of
/// coding it against the line before. A family of all containers in the same order puts every
/// container a whole family back, past the window from ~130 containers on. The text format
/// leaves the order of a family's series free, and a family that fits the window (fewer than
/// ~120 containers) keeps the order it has: then nothing moves.
///
/// `grows`: how many bytes longer the next family's name is than this one's; its lines are
/// that much longer, which puts a container's next line that much farther from its last.
fn next_first(first: usize, containers: usize, written: &FamilyCursor, grows: usize) -> usize {
    if containers == 0 || written.bytes == 0 || written.lines == 0 {
        return first;
    }
    let lines_each = written.lines.div_ceil(containers);
    let bytes_each = written.bytes.div_ceil(containers) + lines_each * grows;
    let reach = PREFIX_REACH / bytes_each;
    if reach >= containers {
        first
    } else {
        (first + containers - reach) % containers
    }
}

/// Encodes every container family, each contiguous, skipping families with no sample.
pub fn encode_containers(enc: &mut Encoder, samples: &[ContainerSample]) {
    encode_containers_until(
        enc,
        samples,
        &ALL_FAMILIES,
        &mut FamilyCursor::default(),
        usize::MAX,
    );
}

/// Every family on (no `drop_metrics`).
pub static ALL_FAMILIES: [bool; CONTAINER_FAMILIES.len()] = [true; CONTAINER_FAMILIES.len()];

/// Encodes from `cursor` on and stops once the buffer holds `limit` bytes, at a sample
/// boundary. Returns true when every family is written. A family's header is only left in
/// the buffer once a sample follows it, so a chunk never ends in a header that turns out to
/// belong to an empty family.
pub fn encode_containers_until(
    enc: &mut Encoder,
    samples: &[ContainerSample],
    mask: &FamilyMask,
    cursor: &mut FamilyCursor,
    limit: usize,
) -> bool {
    // A mask shorter than the table leaves the rest on.
    let on = |family: usize| mask.get(family).copied().unwrap_or(true);
    while let Some(family) = CONTAINER_FAMILIES.get(cursor.family) {
        if !on(cursor.family) {
            cursor.family += 1;
            continue;
        }
        let mark = enc.buf.len();
        if cursor.sample == 0 {
            enc.header(family.name, family.help, family.kind);
        }
        let after_header = enc.buf.len();
        while cursor.sample < samples.len() {
            let index = (cursor.first + cursor.sample) % samples.len();
            let Some(sample) = samples.get(index) else {
                break;
            };
            let mut out = Out {
                enc: Some(&mut *enc),
                name: family.name,
                prefix: &sample.labels.prefix,
                container: index,
                count: 0,
            };
            (family.emit)(sample, &mut out);
            cursor.lines += out.count;
            cursor.sample += 1;
            cursor.nonempty |= enc.buf.len() > after_header;
            if cursor.nonempty && enc.buf.len() >= limit && cursor.sample < samples.len() {
                cursor.bytes += enc.buf.len() - after_header;
                return false;
            }
        }
        if !cursor.nonempty {
            enc.buf.truncate(mark);
        }
        cursor.bytes += enc.buf.len().saturating_sub(after_header);
        let next_name = (cursor.family + 1..CONTAINER_FAMILIES.len())
            .find(|&f| on(f))
            .and_then(|f| CONTAINER_FAMILIES.get(f))
            .map_or(0, |f| f.name.len());
        let grows = next_name.saturating_sub(family.name.len());
        *cursor = FamilyCursor {
            family: cursor.family + 1,
            first: next_first(cursor.first, samples.len(), cursor, grows),
            ..FamilyCursor::default()
        };
        if enc.buf.len() >= limit {
            return cursor.family >= CONTAINER_FAMILIES.len();
        }
    }
    true
}

/// The metric list for the README, as a Markdown table.
pub fn markdown_table() -> String {
    let mut out = String::from("| metric | type | extra labels | group | source (cgroup v1; v2) |\n|---|---|---|---|---|\n");
    for f in CONTAINER_FAMILIES {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} |\n",
            f.name,
            f.kind.as_str(),
            if f.labels.is_empty() { "–" } else { f.labels },
            f.group,
            f.source
        ));
    }
    for f in MACHINE_FAMILIES {
        out.push_str(&format!(
            "| `{}` | {} | {} (no container labels) | {} | {} |\n",
            f.name,
            f.kind.as_str(),
            if f.labels.is_empty() { "–" } else { f.labels },
            f.group,
            f.help
        ));
    }
    let v = VERSION_INFO;
    out.push_str(&format!(
        "| `{}` | {} | {} | {} | {} |\n",
        v.name,
        v.kind.as_str(),
        v.labels,
        v.group,
        v.help
    ));
    for f in super::selfmetrics::SELF_FAMILIES {
        out.push_str(&format!(
            "| `{}` | {} | see help | {} | {} |\n",
            f.name,
            f.kind.as_str(),
            f.group,
            f.help
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_unique_and_well_named() {
        let names: Vec<&str> = CONTAINER_FAMILIES.iter().map(|f| f.name).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(names, sorted);
        for f in CONTAINER_FAMILIES {
            assert!(f.name.starts_with("container_"));
            assert_eq!(
                f.kind == Counter,
                // cAdvisor's two exceptions: a counter without the suffix, a gauge with it.
                (f.name.ends_with("_total") && f.name != "container_fs_inodes_total")
                    || f.name == "container_memory_failcnt",
                "{}",
                f.name
            );
        }
    }

    fn sample(i: usize, cpu: Option<f64>, threads: Option<u64>) -> ContainerSample {
        sample_at(format!("/c{i}"), i, cpu, threads)
    }

    fn sample_at(id: String, i: usize, cpu: Option<f64>, threads: Option<u64>) -> ContainerSample {
        use crate::discovery::{CgroupKind, Target};
        use crate::labels::Labels;
        let labels = Labels {
            id,
            ..Labels::default()
        };
        let prefix = crate::labels::render_label_prefix(&labels);
        ContainerSample {
            labels: std::sync::Arc::new(crate::meta::join::Resolved {
                generation: 0,
                prefix,
                namespace: String::new(),
                truncated: 0,
                unknown: false,
                sandbox: false,
                first_unlisted: false,
            }),
            target: std::sync::Arc::new(Target {
                path: labels.id.clone(),
                kind: CgroupKind::Raw,
                inode: i as u64,
                dirs: Default::default(),
                labels,
                created: std::time::Duration::from_secs(1),
                files: Default::default(),
            }),
            stats: ContainerStats {
                cpu_usage_seconds: cpu,
                threads,
                ..ContainerStats::default()
            },
        }
    }

    #[test]
    fn chunked_encoding_equals_whole_encoding_at_any_chunk_size() {
        // Families where only some samples (or none) have a value exercise the header rule.
        let samples: Vec<ContainerSample> = (0..7)
            .map(|i| sample(i, (i % 2 == 0).then_some(i as f64), (i == 6).then_some(3)))
            .collect();
        let mut whole = Encoder::default();
        encode_containers(&mut whole, &samples);
        assert!(!whole.buf.is_empty());
        for step in [1, 2, 50, 333, 4096, usize::MAX / 2] {
            let mut cursor = FamilyCursor::default();
            let mut joined = Vec::new();
            let mut rounds = 0;
            loop {
                let mut enc = Encoder::default();
                let all = [true; CONTAINER_FAMILIES.len()];
                let done = encode_containers_until(&mut enc, &samples, &all, &mut cursor, step);
                joined.extend_from_slice(&enc.buf);
                rounds += 1;
                assert!(rounds < 10_000, "no progress at step {step}");
                if done {
                    break;
                }
            }
            assert_eq!(
                String::from_utf8_lossy(&joined),
                String::from_utf8_lossy(&whole.buf),
                "step {step}"
            );
        }
    }

    /// A kubelet-shaped cgroup path with a pod UID and a container ID that nothing else
    /// shares, as on a node (~130 bytes, most of a line's label prefix).
    fn node_like(i: usize) -> ContainerSample {
        let hex = |seed: usize, n: usize| -> String {
            (0..n)
                .map(|k| {
                    let x = (seed as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (k % 60);
                    char::from_digit((x as u32 ^ (k as u32 * 7)) & 15, 16).unwrap_or('0')
                })
                .collect()
        };
        let mut s = sample_at(
            format!("/kubepods/burstable/pod{}/{}", hex(i / 3, 32), hex(i, 64)),
            i,
            Some(i as f64 * 1.5),
            Some(i as u64 % 50),
        );
        s.stats.memory_usage = Some(1 << 20 | i as u64);
        s.stats.memory_pgfault = Some(i as u64 * 31);
        s
    }

    /// Each family's series as (family, id label) in body order.
    fn series_ids(body: &str) -> Vec<(String, String)> {
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (name, rest) = l.split_once('{')?;
                let id = rest.split("id=\"").nth(1)?.split('"').next()?;
                Some((name.to_string(), id.to_string()))
            })
            .collect()
    }

    #[test]
    fn families_past_the_window_start_where_the_last_one_ended_and_keep_every_series() {
        let samples: Vec<ContainerSample> = (0..400).map(node_like).collect();
        let mut whole = Encoder::default();
        encode_containers(&mut whole, &samples);
        let body = String::from_utf8_lossy(&whole.buf).into_owned();
        let series = series_ids(&body);
        let ids: std::collections::BTreeSet<&str> = samples
            .iter()
            .map(|s| s.target.labels.id.as_str())
            .collect();
        let mut families: Vec<(&str, Vec<&str>)> = Vec::new();
        for (name, id) in &series {
            match families.last_mut() {
                Some((n, v)) if n == name => v.push(id),
                _ => families.push((name, vec![id])),
            }
        }
        let names: std::collections::BTreeSet<&str> = families.iter().map(|f| f.0).collect();
        assert_eq!(names.len(), families.len(), "each family is contiguous");
        assert!(families.len() >= 4, "{} families", families.len());
        let mut rotated = 0;
        for (name, list) in &families {
            // Every container once (four lines each where the family has four).
            let per = list.len() / ids.len();
            assert!(
                per >= 1 && list.len() == per * ids.len(),
                "{name}: {} lines",
                list.len()
            );
            let mut seen: Vec<&str> = list.clone();
            seen.sort_unstable();
            seen.dedup();
            assert_eq!(seen.len(), ids.len(), "{name}");
            assert!(seen.iter().all(|id| ids.contains(id)), "{name}");
            rotated += usize::from(list[0] != families[0].1[0]);
        }
        assert!(rotated > 0, "no family starts elsewhere");

        // What the order is for: a container's line is within deflate's window of its line
        // in the family before, for ~100 containers per family (none in one fixed order).
        let line_starts: Vec<(usize, &str)> = {
            let mut at = 0;
            body.lines()
                .map(|l| {
                    let here = at;
                    at += l.len() + 1;
                    (here, l)
                })
                .filter(|(_, l)| !l.starts_with('#'))
                .collect()
        };
        let mut last_seen: std::collections::HashMap<&str, (usize, &str)> = Default::default();
        let mut near_per_family: std::collections::BTreeMap<&str, usize> = Default::default();
        for ((at, _), (name, id)) in line_starts.iter().zip(&series) {
            if let Some(&(before, family)) = last_seen.get(id.as_str()) {
                if family != name && at - before <= 32 * 1024 {
                    *near_per_family.entry(name.as_str()).or_default() += 1;
                }
            }
            last_seen.insert(id, (*at, name));
        }
        for pair in families.windows(2) {
            let [(_, before), (name, list)] = pair else {
                continue;
            };
            // (Past a family of four lines per container, fewer containers fit.)
            if before.len() == ids.len() && list.len() == ids.len() {
                let near = near_per_family.get(name).copied().unwrap_or(0);
                assert!(
                    near >= 90,
                    "{name}: {near} of {} within the window",
                    ids.len()
                );
            }
        }

        // Streaming in chunks makes the same body.
        for step in [1, 700, 4096, 65_536] {
            let mut cursor = FamilyCursor::default();
            let mut joined = Vec::new();
            loop {
                let mut enc = Encoder::default();
                let done =
                    encode_containers_until(&mut enc, &samples, &ALL_FAMILIES, &mut cursor, step);
                joined.extend_from_slice(&enc.buf);
                if done {
                    break;
                }
            }
            assert!(joined == whole.buf, "step {step}");
        }
    }

    #[test]
    fn a_family_that_fits_the_window_keeps_its_order() {
        let written = |bytes, lines| FamilyCursor {
            bytes,
            lines,
            ..FamilyCursor::default()
        };
        assert_eq!(next_first(0, 100, &written(100 * 250, 100), 0), 0);
        assert_eq!(next_first(7, 100, &written(0, 0), 0), 7);
        // 1000 containers of 256-byte lines: the last 120 start the next family.
        assert_eq!(next_first(0, 1000, &written(256_000, 1000), 0), 880);
        assert_eq!(next_first(900, 1000, &written(256_000, 1000), 0), 780);
        // Longer names next: fewer fit.
        assert_eq!(next_first(0, 1000, &written(256_000, 1000), 64), 904);
        // Four lines per container: a quarter as many.
        assert_eq!(next_first(0, 1000, &written(1_024_000, 4000), 0), 970);
    }
}
