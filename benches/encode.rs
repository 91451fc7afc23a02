//! The container-series encoder at 100, 1000 and 5000 cgroups: time per scrape from criterion,
//! and allocations per scrape from a counting allocator (printed before the timings).
//! `cargo bench --bench encode`.

// A counting global allocator needs `unsafe impl GlobalAlloc`; it only forwards to `System`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

use hinted_deflate::{GzipCarry, HintedGzip, LineHint};
use podstat::agent::CHUNK;
use podstat::discovery::{CgroupKind, Dirs, Runtime, Target};
use podstat::exposition::encode::Encoder;
use podstat::exposition::names::encode_containers;
use podstat::labels::render_label_prefix;
use podstat::labels::Labels;
use podstat::meta::join::Resolved;
use podstat::parse::blkio::DeviceIo;
use podstat::parse::netdev::InterfaceStats;
use podstat::parse::psi::Pressure;
use podstat::snapshot::{ContainerSample, ContainerStats, DeviceStats};

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A cAdvisor-shaped container: systemd-driver path, every group filled, one device, one
/// interface on every third row (the sandbox).
fn samples(n: usize, random_ids: bool) -> Vec<ContainerSample> {
    (0..n)
        .map(|i| {
            // Real container IDs are random hex, which compresses far less than `{i:064x}`.
            let id = if random_ids {
                let h = |k: u64| (k + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29) ^ (k + 7).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
                let k = i as u64 * 4;
                format!("{:016x}{:016x}{:016x}{:016x}", h(k), h(k + 1), h(k + 2), h(k + 3))
            } else {
                format!("{i:064x}")
            };
            let path = format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{:08x}_d529_44ae_9f99_90d3798d6426.slice/cri-containerd-{id}.scope",
                i / 3
            );
            // Labels as a joined Kubernetes container has them.
            let labels = Labels {
                container: format!("app-{}", i % 3),
                id: path.clone(),
                image: "registry.example.com/team/app:1.2.3".into(),
                name: id.clone(),
                namespace: "default".into(),
                pod: format!("app-7d4b9c-{:05x}", i / 3),
            };
            let resolved = Arc::new(Resolved {
                generation: 0,
                prefix: render_label_prefix(&labels),
                namespace: labels.namespace.clone(),
                truncated: 0,
                unknown: false,
                sandbox: false,
                first_unlisted: false,
            });
            let target = Arc::new(Target {
                path,
                kind: CgroupKind::Container { pod_uid: String::new(), id, runtime: Runtime::Containerd },
                inode: i as u64,
                dirs: Dirs::default(),
                labels,
                created: std::time::Duration::from_secs(1_700_000_000),
                files: Default::default(),
            });
            let p = Some(Pressure { some_total_usec: Some(1234), full_total_usec: Some(56) });
            let stats = ContainerStats {
                cpu_usage_seconds: Some(12.5 + i as f64),
                cpu_user_seconds: Some(10.0),
                cpu_system_seconds: Some(2.5),
                cfs_periods: Some(100),
                cfs_throttled_periods: Some(3),
                cfs_throttled_seconds: Some(0.25),
                spec_cpu_period: Some(100_000),
                spec_cpu_quota: Some(50_000),
                spec_cpu_shares: Some(1024),
                spec_memory_limit: Some(1 << 30),
                spec_memory_swap_limit: Some(0),
                spec_memory_reservation: Some(0),
                memory_usage: Some(123_456_789),
                memory_working_set: Some(100_000_000),
                memory_rss: Some(80_000_000),
                memory_cache: Some(40_000_000),
                memory_mapped_file: Some(1_000_000),
                memory_swap: Some(0),
                memory_max_usage: Some(130_000_000),
                memory_pgfault: Some(12345),
                memory_pgmajfault: Some(12),
                memory_active_file: Some(20_000_000),
                memory_inactive_file: Some(23_456_789),
                oom_kills: Some(0),
                memory_events_high: Some(0),
                memory_events_max: Some(0),
                devices: vec![DeviceStats {
                    device: Arc::from("/dev/nvme0n1"),
                    major: Arc::from("259"),
                    minor: Arc::from("0"),
                    io: DeviceIo { major: 259, minor: 0, read_bytes: 4096, write_bytes: 8192, reads: 1, writes: 2, ..DeviceIo::default() },
                }],
                processes: Some(1),
                threads: Some(12),
                threads_max: Some(0),
                first_pid: Some(1),
                cpu_pressure: p,
                memory_pressure: p,
                io_pressure: p,
                network: if i % 3 == 0 {
                    vec![(Arc::from("eth0"), InterfaceStats { rx_bytes: 1 << 20, tx_bytes: 1 << 19, ..Default::default() })]
                } else {
                    Vec::new()
                },
                ..ContainerStats::default()
            };
            ContainerSample { target, labels: resolved, stats }
        })
        .collect()
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_containers");
    for n in [100usize, 1000, 5000] {
        let data = samples(n, false);
        let mut enc = Encoder::default();
        encode_containers(&mut enc, &data); // size the buffer once
        let before = ALLOCS.load(Ordering::Relaxed);
        enc.buf.clear();
        encode_containers(&mut enc, &data);
        let allocs = ALLOCS.load(Ordering::Relaxed) - before;
        let series = enc.buf.iter().filter(|&&b| b == b'\n').count();
        println!("encode {n} containers: {} bytes, ~{series} lines, {allocs} allocations per scrape (warm buffer)", enc.buf.len());
        group.bench_with_input(BenchmarkId::from_parameter(n), &data, |b, data| {
            b.iter(|| {
                enc.buf.clear();
                encode_containers(&mut enc, data);
            })
        });
    }
    group.finish();
}

/// gzip of a container body as `/metrics` makes it once per collection: the hinted writer
/// (crates/hinted-deflate) against flate2 with zlib-rs at level 1 (the stock writer behind
/// `gzip_writer = "zlib-rs"`), for 100 and 1000 containers, sequential and random IDs.
fn gzip(c: &mut Criterion) {
    use std::io::Write;
    for (n, random_ids) in [(100, false), (100, true), (1000, false), (1000, true)] {
        let data = samples(n, random_ids);
        let mut enc = Encoder {
            buf: Vec::new(),
            hints: Some(Vec::new()),
        };
        encode_containers(&mut enc, &data);
        let (body, hints) = (enc.buf, enc.hints.unwrap_or_default());
        let ids = if random_ids { "random" } else { "sequential" };
        let mut sizes = (0, 0);
        c.bench_function(&format!("gzip_zlib_rs_level1/{n}/{ids}"), |b| {
            b.iter(|| {
                let mut gz = flate2::write::GzEncoder::new(
                    Vec::with_capacity(body.len() / 8),
                    flate2::Compression::fast(),
                );
                let _ = gz.write_all(&body);
                sizes.0 = gz.finish().map(|v| v.len()).unwrap_or(0);
            })
        });
        // Fresh: every body starts from nothing (the first scrape). Carried: each starts from
        // what the previous one left, as the agent's steady state does.
        let mut carry = Some(GzipCarry::default());
        for carried in [false, true] {
            let name = if carried {
                "gzip_hinted_carried"
            } else {
                "gzip_hinted"
            };
            c.bench_function(&format!("{name}/{n}/{ids}"), |b| {
                b.iter(|| {
                    // In CHUNK pieces written into the window, as the agent feeds it.
                    let mut gz = if carried {
                        HintedGzip::resume(carry.take().unwrap_or_default())
                    } else {
                        HintedGzip::new()
                    };
                    let (mut from, mut h) = (0usize, 0usize);
                    let mut shifted = Vec::new();
                    while from < body.len() {
                        let mut to = (from + CHUNK).min(body.len());
                        while to < body.len() && body[to - 1] != b'\n' {
                            to += 1;
                        }
                        let window = gz.window();
                        let at = window.len() as u32;
                        window.extend_from_slice(&body[from..to]);
                        shifted.clear();
                        while h < hints.len() && (hints[h].value_start as usize) < to {
                            let x = hints[h];
                            let moved = |v: u32| v - from as u32 + at;
                            shifted.push(LineHint {
                                start: moved(x.start),
                                prefix_start: moved(x.prefix_start),
                                prefix_end: moved(x.prefix_end),
                                value_start: moved(x.value_start),
                                container: x.container,
                            });
                            h += 1;
                        }
                        gz.compress_appended(&shifted);
                        from = to;
                    }
                    let (out, left) = gz.finish_carry();
                    sizes.1 = out.len();
                    if carried {
                        carry = Some(left);
                    }
                })
            });
        }
        println!(
            "gzip {n} containers, {ids} ids: {} KiB -> zlib-rs {} KiB, hinted {} KiB",
            body.len() / 1024,
            sizes.0 / 1024,
            sizes.1 / 1024
        );
    }
}

criterion_group!(benches, encode, gzip);
criterion_main!(benches);
