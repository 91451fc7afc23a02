//! Parsers against real kernel files (tests/fixtures, sources in tests/fixtures/SOURCES.md).

use std::path::Path;

use podstat::discovery::{CgroupLayout, CgroupMode};
use podstat::parse::{blkio, cpu, memory, netdev, procfs, psi, single_u64};

use crate::support::fixtures;

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn v2_cpu_stat_and_max() {
    let st = cpu::cpu_stat(&read("cgroup-v2/telegraf_v2-cgroup/cpu.stat")).expect("cpu.stat");
    assert!(st.usage_usec.is_some() && st.nr_bursts.is_some());
    assert_eq!(
        st.usage_usec.map(|u| u >= st.user_usec.unwrap_or(0)),
        Some(true)
    );
    let max = cpu::cpu_max(&read("cgroup-v2/telegraf_v2-cgroup/cpu.max")).expect("cpu.max");
    assert_eq!(
        (max.quota_usec, max.period_usec),
        (Some(4_800_000), 100_000)
    );
}

#[test]
fn v1_cpu_files() {
    let base = "cgroup-v1/kubepods-cgroupfs/cpuacct/kubepods/burstable/pod7a96c459-d529-44ae-9f99-90d3798d6426/1d3d308a7d48a27814a68bf33a44acf4441c9c02463ca0bc1cdfdc8c0b4a8496";
    let st = cpu::cpuacct_stat(&read(&format!("{base}/cpuacct.stat"))).expect("cpuacct.stat");
    let usage_ns = single_u64(&read(&format!("{base}/cpuacct.usage"))).expect("usage");
    // user+system ticks (10 ms) must be close to the ns total.
    let ticks_ns = (st.user_ticks + st.system_ticks) * 10_000_000;
    assert!(
        ticks_ns.abs_diff(usage_ns) < usage_ns / 5 + 100_000_000,
        "{ticks_ns} vs {usage_ns}"
    );
    let docker = "cgroup-v1/kubepods-cgroupfs/cpu/kubepods/burstable/pod7a96c459-d529-44ae-9f99-90d3798d6426/b29faf21b7eff959f64b4192c34d5d67a707fe8561e9eaa608cb27693fba4242/cpu.stat";
    let throttled = cpu::cpu_stat(&read(docker)).expect("cpu.stat");
    assert_eq!(throttled.nr_throttled, Some(1046));
    assert!(throttled.throttled_ns.is_some());
}

#[test]
fn memory_stat_both_versions() {
    let v2 = memory::memory_stat_v2(&read(
        "cgroup-v2/selinux-host_user-session-scope_no-io-file/memory.stat",
    ))
    .expect("v2");
    assert!(v2.rss.is_some() && v2.cache.is_some() && v2.inactive_file.is_some());
    let v1 = memory::memory_stat_v1(
        &read("cgroup-v1/kubepods-cgroupfs/memory/kubepods/burstable/pod7a96c459-d529-44ae-9f99-90d3798d6426/memory.stat"),
        true,
    )
    .expect("v1");
    assert!(v1.rss.is_some() && v1.inactive_file.is_some() && v1.pgfault.is_some());
    let limit = single_u64(&read("cgroup-v1/kubepods-cgroupfs/memory/kubepods/burstable/pod7a96c459-d529-44ae-9f99-90d3798d6426/b29faf21b7eff959f64b4192c34d5d67a707fe8561e9eaa608cb27693fba4242/memory.limit_in_bytes")).expect("limit");
    assert_eq!(
        memory::limit_or_zero(limit),
        0,
        "Docker fixture is unlimited"
    );
    let events =
        memory::memory_events(&read("cgroup-v2/telegraf_v2-cgroup/memory.events")).expect("events");
    assert!(events.oom_kill.is_some());
}

#[test]
fn io_stat_edge_cases() {
    let mut out = Vec::new();
    blkio::io_stat(
        &read("cgroup-v2/io.stat-edge-cases/io.stat_loop-devices-joined-on-one-line"),
        &mut out,
    )
    .expect("joined");
    assert!(!out.is_empty());
    let mut out = Vec::new();
    blkio::io_stat(
        &read("cgroup-v2/io.stat-edge-cases/io.stat_dm-nvme-plus-trailing-bare-devices"),
        &mut out,
    )
    .expect("bare");
    assert!(out
        .iter()
        .any(|d| (d.major, d.minor) == (259, 0) && d.read_bytes > 0));
    let mut out = Vec::new();
    blkio::blkio_v1(
        &read("cgroup-v1/telegraf-blkio/blkio.throttle.io_serviced"),
        blkio::BlkioKind::Ops,
        &mut out,
    )
    .expect("v1");
    assert_eq!(out.len(), 26, "one entry per distinct MAJ:MIN in the file");
}

#[test]
fn pressure_files() {
    let p = psi::pressure(&read("proc/pressure/node-exporter_proc-pressure_cpu")).expect("cpu");
    assert!(p.some_total_usec.is_some() && p.full_total_usec.is_some());
    let p = psi::pressure(&read("proc/pressure/procfs_proc-pressure_cpu_some-only"))
        .expect("some-only");
    assert!(p.full_total_usec.is_none());
    let p = psi::pressure(&read("proc/pressure/node-exporter_proc-pressure_irq"))
        .expect("irq full only");
    assert!(p.some_total_usec.is_none());
}

#[test]
fn net_dev_files() {
    let mut names = Vec::new();
    netdev::net_dev(
        &read("proc/net-dev/host_veth-docker0-lo-eth0.net-dev"),
        |n, _| names.push(String::from_utf8_lossy(n).into_owned()),
    )
    .expect("host");
    assert_eq!(names.len(), 4, "{names:?}");
    let mut eth0 = None;
    netdev::net_dev(
        &read("proc/net-dev/container-netns_lo-eth0.net-dev"),
        |n, s| {
            if n == b"eth0" {
                eth0 = Some(s)
            }
        },
    )
    .expect("container");
    assert!(eth0.is_some_and(|s| s.rx_bytes > 0 && s.tx_bytes > 0));
    netdev::net_dev(
        &read("proc/net-dev/cadvisor-testdata_no-trailing-newline.net-dev"),
        |_, _| {},
    )
    .expect("irregular spacing");
}

#[test]
fn mountinfo_modes() {
    let hybrid = procfs::cgroup_mounts(&read("proc/mountinfo/hybrid_ubuntu1804_host.mountinfo"))
        .expect("hybrid");
    let layout = CgroupLayout::from_mounts(&hybrid, Path::new("/sys/fs/cgroup"));
    assert_eq!(layout.mode(), Some(CgroupMode::Hybrid));
    let v2 = procfs::cgroup_mounts(&read(
        "proc/mountinfo/v2_node-exporter-fixture_bindmount-host.mountinfo",
    ))
    .expect("v2");
    assert_eq!(
        CgroupLayout::from_mounts(&v2, Path::new("/sys/fs/cgroup")).mode(),
        Some(CgroupMode::V2)
    );
    let v1 = procfs::cgroup_mounts(&read(
        "proc/mountinfo/v1_node-exporter-fixture_host.mountinfo",
    ))
    .expect("v1");
    assert_eq!(
        CgroupLayout::from_mounts(&v1, Path::new("/sys/fs/cgroup")).mode(),
        Some(CgroupMode::V1)
    );
}

#[test]
fn meminfo_and_cpuinfo() {
    let (mem, _swap) = procfs::meminfo_totals(&read("proc-node/meminfo")).expect("meminfo");
    assert!(mem > 1 << 30);
    let cpus = procfs::cpu_topology(&read("proc-node/cpuinfo")).expect("cpuinfo");
    assert!(
        cpus.logical >= 1 && cpus.cores >= 1 && cpus.sockets >= 1,
        "{cpus:?}"
    );
}

/// Inputs on which the fuzzer (fuzz/, target `procfs`) made a parser panic, kept so that it
/// never comes back: every procfs parser must return, a value or an error.
#[test]
fn fuzzer_findings_no_longer_panic() {
    let dir = fixtures().join("fuzz-regressions/procfs");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("fuzz-regressions") {
        let data = std::fs::read(entry.expect("entry").path()).expect("read");
        let _ = podstat::parse::procfs::cgroup_mounts(&data);
        let _ = podstat::parse::procfs::filesystems(&data);
        let _ = podstat::parse::procfs::root_overlay_upperdir(&data);
        let _ = podstat::parse::procfs::diskstats(&data);
        let _ = podstat::parse::procfs::meminfo_totals(&data);
        let _ = podstat::parse::procfs::cpu_topology(&data);
        let _ = podstat::parse::procfs::limits_max_open_files(&data);
        let _ = podstat::parse::procfs::stat_state(&data);
        let _ = podstat::parse::procfs::os_release_pretty_name(&data);
        n += 1;
    }
    assert!(n >= 10, "{n} inputs");
}
