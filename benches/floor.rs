//! The floor: the cost of only reading and parsing the files podstat reads for every cgroup,
//! writing nothing, measured two ways: open/read/close per file per pass, and descriptors kept
//! open and re-read with `pread` at offset 0 (cgroupfs regenerates content on each read).
//! `benches/scrape.sh` runs this next to the real agent; alone:
//! `cargo bench --bench floor -- [cgroup_root] [passes]`.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::Instant;

const V1: &[(&str, &[&str])] = &[
    ("cpuacct", &["cpuacct.usage", "cpuacct.stat"]),
    (
        "cpu",
        &[
            "cpu.stat",
            "cpu.cfs_period_us",
            "cpu.cfs_quota_us",
            "cpu.shares",
            "cgroup.procs",
        ],
    ),
    (
        "memory",
        &[
            "memory.usage_in_bytes",
            "memory.max_usage_in_bytes",
            "memory.failcnt",
            "memory.stat",
            "memory.limit_in_bytes",
            "memory.memsw.limit_in_bytes",
            "memory.soft_limit_in_bytes",
            "memory.oom_control",
        ],
    ),
    (
        "blkio",
        &[
            "blkio.throttle.io_service_bytes_recursive",
            "blkio.throttle.io_serviced_recursive",
        ],
    ),
    ("pids", &["pids.current", "pids.max"]),
];
const V2: &[&str] = &[
    "cpu.stat",
    "cpu.max",
    "cpu.weight",
    "memory.current",
    "memory.stat",
    "memory.swap.current",
    "memory.swap.max",
    "memory.min",
    "memory.max",
    "memory.peak",
    "memory.events",
    "io.stat",
    "cgroup.procs",
    "pids.current",
    "pids.max",
    "cpu.pressure",
    "memory.pressure",
    "io.pressure",
];

fn parse_any(bytes: &[u8]) -> usize {
    // A token parse stands in for the real parsers (a few µs at most, see `cargo bench --bench parse`).
    let mut n: usize = 0;
    let _ = podstat::parse::for_each_flat_keyed(bytes, |_, v| n = n.wrapping_add(v as usize));
    n
}

fn main() {
    let args: Vec<String> = std::env::args().filter(|a| !a.starts_with("--")).collect();
    let root = PathBuf::from(args.get(1).map_or("/sys/fs/cgroup", String::as_str));
    let passes: usize = args.get(2).and_then(|p| p.parse().ok()).unwrap_or(20);
    let mut config = podstat::config::default_config().expect("default config");
    config.paths.cgroup_root = root;
    let layout = podstat::agent::detect_layout(&config).expect("layout");
    let mut discovery =
        podstat::discovery::Discovery::new(layout.clone(), config.discovery.clone());
    let targets = discovery.refresh().expect("discovery");
    let mut files: Vec<PathBuf> = Vec::new();
    for t in &targets {
        if layout.mode() == Some(podstat::discovery::CgroupMode::V2) {
            if let Some(d) = &t.dirs.unified {
                files.extend(V2.iter().map(|f| d.join(f)));
            }
        } else {
            for (ctrl, names) in V1 {
                let dir = match *ctrl {
                    "cpuacct" => &t.dirs.cpuacct,
                    "cpu" => &t.dirs.cpu,
                    "memory" => &t.dirs.memory,
                    "blkio" => &t.dirs.blkio,
                    _ => &t.dirs.pids,
                };
                if let Some(d) = dir {
                    files.extend(names.iter().map(|f| d.join(f)));
                }
            }
        }
    }
    files.retain(|f| f.exists());
    let mut buf = vec![0u8; 64 * 1024];
    let mut sink = 0usize;
    let t0 = Instant::now();
    for _ in 0..passes {
        for f in &files {
            if let Ok(file) = File::open(f) {
                if let Ok(n) = file.read_at(&mut buf, 0) {
                    sink = sink.wrapping_add(parse_any(&buf[..n]));
                }
            }
        }
    }
    let open_ms = t0.elapsed().as_secs_f64() * 1e3 / passes as f64;
    let kept: Vec<File> = files.iter().filter_map(|f| File::open(f).ok()).collect();
    let t1 = Instant::now();
    for _ in 0..passes {
        for file in &kept {
            if let Ok(n) = file.read_at(&mut buf, 0) {
                sink = sink.wrapping_add(parse_any(&buf[..n]));
            }
        }
    }
    let pread_ms = t1.elapsed().as_secs_f64() * 1e3 / passes as f64;
    println!(
        "floor: {} cgroups, {} files, open+read+close {open_ms:.2} ms/pass, kept fds + pread {pread_ms:.2} ms/pass (checksum {})",
        targets.len(),
        files.len(),
        sink % 10
    );
}
