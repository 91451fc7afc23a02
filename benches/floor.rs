//! The floor: the cost of only reading and parsing the files podstat reads for every cgroup,
//! writing nothing, measured two ways: open/read/close per file per pass, and descriptors kept
//! open and re-read with `pread` at offset 0 (cgroupfs regenerates content on each read).
//! `benches/scrape.sh` runs this next to the real agent; alone:
//! `cargo bench --bench floor -- [cgroup_root] [passes] [pause_ms | interleave]`. Figures are
//! CPU time per pass; with `pause_ms`, each pass follows a pause, as podstat's scrapes do; with
//! `interleave`, a pass runs for each line on stdin (`open` or `pread`), so the bench script can
//! put the floor's passes between podstat's scrapes, and the figures are printed at its end.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

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

fn open_read_parse(path: &PathBuf, buf: &mut [u8]) -> usize {
    match File::open(path).and_then(|f| f.read_at(buf, 0)) {
        Ok(n) => parse_any(&buf[..n]),
        Err(_) => 0,
    }
}

fn thread_cpu_ms() -> f64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(|t| t.tv_sec() as f64 * 1e3 + t.tv_nsec() as f64 / 1e6)
        .unwrap_or(0.0)
}

fn main() {
    let args: Vec<String> = std::env::args().filter(|a| !a.starts_with("--")).collect();
    let root = PathBuf::from(args.get(1).map_or("/sys/fs/cgroup", String::as_str));
    let passes: usize = args.get(2).and_then(|p| p.parse().ok()).unwrap_or(20);
    // `interleave`: a pass per line on stdin (`open` or `pread`), results at its end.
    let interleaved = args.get(3).is_some_and(|a| a == "interleave");
    let pause_ms: u64 = args.get(3).and_then(|p| p.parse().ok()).unwrap_or(0);
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
    // CPU time of this thread over the passes only, so a pause between passes (the scrape
    // interval podstat sees, `pause_ms`) measures the floor under the same cold caches.
    let mut cpu_ms_per_pass = |pass: &mut dyn FnMut(&mut Vec<u8>) -> usize| -> f64 {
        let mut total = 0.0;
        for _ in 0..passes {
            if pause_ms > 0 {
                std::thread::sleep(std::time::Duration::from_millis(pause_ms));
            }
            let t0 = thread_cpu_ms();
            sink = sink.wrapping_add(pass(&mut buf));
            total += thread_cpu_ms() - t0;
        }
        total / passes as f64
    };
    let open_pass = |buf: &mut Vec<u8>| {
        let mut n = 0usize;
        for f in &files {
            n = n.wrapping_add(open_read_parse(f, buf));
        }
        n
    };
    let open_ms = if interleaved {
        0.0
    } else {
        cpu_ms_per_pass(&mut |buf| open_pass(buf))
    };
    // Keep as many descriptors as RLIMIT_NOFILE allows (raised to the hard limit, as podstat
    // does); the files past it are opened per pass, which is the cheapest reader possible
    // under that limit.
    let limit = podstat::reader::raise_nofile_limit().unwrap_or(1024);
    // Leave room under the limit for the per-pass opens of the rest (podstat leaves 256).
    let room = usize::try_from(limit.saturating_sub(256)).unwrap_or(usize::MAX);
    let mut kept: Vec<File> = Vec::with_capacity(files.len().min(room));
    let mut not_kept: Vec<&PathBuf> = Vec::new();
    for f in &files {
        // A v1 PID list re-read through a kept descriptor is the kernel's cached list from the
        // first read (podstat reopens it for that reason): no correct reader keeps it.
        let v1_pid_list = f.ends_with("cgroup.procs")
            && layout.mode() != Some(podstat::discovery::CgroupMode::V2);
        match (kept.len() < room && !v1_pid_list).then(|| File::open(f)) {
            Some(Ok(file)) => kept.push(file),
            _ => not_kept.push(f),
        }
    }
    let pread_pass = |buf: &mut Vec<u8>| {
        let mut n = 0usize;
        for file in &kept {
            if let Ok(len) = file.read_at(buf, 0) {
                n = n.wrapping_add(parse_any(&buf[..len]));
            }
        }
        for f in &not_kept {
            n = n.wrapping_add(open_read_parse(f, buf));
        }
        n
    };
    let (open_ms, pread_ms) = if interleaved {
        println!("ready");
        // Passes when told, between the agent's scrapes, so both see the same machine: on a
        // shared VM the speed of a pass drifts by tens of percent over minutes.
        let (mut open, mut pread) = ((0.0, 0u32), (0.0, 0u32));
        for line in std::io::stdin().lines().map_while(Result::ok) {
            let t0 = thread_cpu_ms();
            let into = if line.trim() == "open" {
                sink = sink.wrapping_add(open_pass(&mut buf));
                &mut open
            } else {
                sink = sink.wrapping_add(pread_pass(&mut buf));
                &mut pread
            };
            let ms = thread_cpu_ms() - t0;
            into.0 += ms;
            into.1 += 1;
            // Each pass too, so the bench script can pair it with the scrape next to it.
            println!("pass {} {ms:.4}", line.trim());
        }
        let per = |(ms, n): (f64, u32)| ms / f64::from(n.max(1));
        (per(open), per(pread))
    } else {
        (open_ms, cpu_ms_per_pass(&mut |buf| pread_pass(buf)))
    };
    println!(
        "floor: {} cgroups, {} files, open+read+close {open_ms:.2} ms/pass, kept fds + pread {pread_ms:.2} ms/pass ({} kept, RLIMIT_NOFILE {limit}; checksum {})",
        targets.len(),
        files.len(),
        kept.len(),
        sink % 10
    );
}
