//! Parser throughput on real fixture files: `cargo bench --bench parse`.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

use podstat::parse::{blkio, cpu, memory, netdev, psi};

fn fixture(rel: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{rel}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap_or_default()
}

fn parsers(c: &mut Criterion) {
    let v2 = "cgroup-v2/telegraf_v2-cgroup";
    let memory_stat = fixture(&format!("{v2}/memory.stat"));
    let cpu_stat = fixture(&format!("{v2}/cpu.stat"));
    let io_stat = fixture(&format!("{v2}/io.stat"));
    let pressure = fixture(&format!("{v2}/memory.pressure"));
    let net_dev = fixture("proc/net-dev/host_veth-docker0-lo-eth0.net-dev");
    let blkio_v1 = fixture("cgroup-v1/telegraf-blkio/blkio.throttle.io_serviced");
    let memory_stat_v1 = fixture("cgroup-v1/kubepods-cgroupfs/memory/memory.stat");
    c.bench_function("memory_stat_v2", |b| {
        b.iter(|| memory::memory_stat_v2(black_box(&memory_stat)))
    });
    c.bench_function("memory_stat_v1", |b| {
        b.iter(|| memory::memory_stat_v1(black_box(&memory_stat_v1), true))
    });
    c.bench_function("memory_stat_v1_every_key", |b| {
        // The generic flat-keyed parse of the same file, as the floor reader does it.
        b.iter(|| {
            let mut n = 0u64;
            let _ = podstat::parse::for_each_flat_keyed(black_box(&memory_stat_v1), |_, v| {
                n = n.wrapping_add(v)
            });
            n
        })
    });
    c.bench_function("cpu_stat", |b| {
        b.iter(|| cpu::cpu_stat(black_box(&cpu_stat)))
    });
    let mut devices = Vec::new();
    c.bench_function("io_stat", |b| {
        b.iter(|| {
            devices.clear();
            blkio::io_stat(black_box(&io_stat), &mut devices)
        })
    });
    c.bench_function("blkio_v1_26_devices", |b| {
        b.iter(|| {
            devices.clear();
            blkio::blkio_v1(black_box(&blkio_v1), blkio::BlkioKind::Ops, &mut devices)
        })
    });
    c.bench_function("pressure", |b| {
        b.iter(|| psi::pressure(black_box(&pressure)))
    });
    c.bench_function("net_dev", |b| {
        b.iter(|| {
            netdev::net_dev(black_box(&net_dev), |_, s| {
                black_box(s);
            })
        })
    });
}

criterion_group!(benches, parsers);
criterion_main!(benches);
