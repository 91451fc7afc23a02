//! Limits and weights are read only after a write to their directory ([reader] watch_settled):
//! a test that writes them between scrapes, on real cgroups, and requires every scrape to show
//! what the kernel shows at that moment, for every cgroup; and that they hold no descriptors.

use crate::support::{
    exclusive, hierarchies, is_root, sample_value, skip_unless, unique, CgroupGuard,
};

/// A random number generator good enough to pick cgroups, files and values (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

/// The series a setting's content gives, and their values (None: no series).
type Expected = Vec<(&'static str, Option<f64>)>;

/// One settled file: where it is, what to write into it, and the series and value podstat must
/// show for the file's content as the kernel gives it back.
struct Setting {
    hierarchy: &'static str,
    file: &'static str,
    write: fn(&mut Rng) -> String,
    expect: fn(&str) -> Expected,
}

fn num(s: &str) -> f64 {
    s.trim().parse::<f64>().expect("a number")
}

/// What cAdvisor exports for a limit that may read `max` or v1's page-rounded 2^63: 0.
fn limit(s: &str) -> Option<f64> {
    match s.trim() {
        "max" => Some(0.0),
        v => {
            let v: u64 = v.parse().expect("a limit");
            Some(if v > 1 << 62 { 0.0 } else { v as f64 })
        }
    }
}

/// `pids.max`, the same on v1 (in `hierarchy`) and v2: `max` one time in four.
const fn pids_max(hierarchy: &'static str) -> Setting {
    Setting {
        hierarchy,
        file: "pids.max",
        write: |r| match r.next(4) {
            0 => "max".to_string(),
            _ => (1 + r.next(100_000)).to_string(),
        },
        expect: |s| vec![("container_threads_max", limit(s))],
    }
}

const V1: &[Setting] = &[
    Setting {
        hierarchy: "cpu",
        file: "cpu.cfs_quota_us",
        write: |r| (1_000 + r.next(1_000_000)).to_string(),
        // -1: no quota, and no series (cAdvisor writes none either).
        expect: |s| {
            vec![(
                "container_spec_cpu_quota",
                Some(num(s)).filter(|q| *q >= 0.0),
            )]
        },
    },
    Setting {
        hierarchy: "cpu",
        file: "cpu.cfs_period_us",
        write: |r| (1_000 + r.next(999_000)).to_string(),
        expect: |s| vec![("container_spec_cpu_period", Some(num(s)))],
    },
    Setting {
        hierarchy: "cpu",
        file: "cpu.shares",
        write: |r| (2 + r.next(262_142)).to_string(),
        expect: |s| vec![("container_spec_cpu_shares", Some(num(s)))],
    },
    Setting {
        hierarchy: "memory",
        file: "memory.limit_in_bytes",
        write: |r| ((64 << 20) + r.next(1 << 30)).to_string(),
        expect: |s| vec![("container_spec_memory_limit_bytes", limit(s))],
    },
    Setting {
        hierarchy: "memory",
        file: "memory.soft_limit_in_bytes",
        write: |r| (r.next(1 << 30)).to_string(),
        expect: |s| vec![("container_spec_memory_reservation_limit_bytes", limit(s))],
    },
    pids_max("pids"),
];

const V2: &[Setting] = &[
    Setting {
        hierarchy: "",
        file: "cpu.max",
        write: |r| format!("{} {}", 1_000 + r.next(1_000_000), 1_000 + r.next(999_000)),
        expect: |s| {
            let (quota, period) = s.trim().split_once(' ').expect("quota period");
            vec![
                ("container_spec_cpu_period", Some(num(period))),
                (
                    "container_spec_cpu_quota",
                    (quota != "max").then(|| num(quota)),
                ),
            ]
        },
    },
    Setting {
        hierarchy: "",
        file: "cpu.weight",
        write: |r| (1 + r.next(10_000)).to_string(),
        expect: |s| {
            let w = num(s);
            vec![(
                "container_spec_cpu_shares",
                Some(2.0 + ((w - 1.0) * 262_142.0 / 9_999.0).floor()),
            )]
        },
    },
    Setting {
        hierarchy: "",
        file: "memory.max",
        write: |r| ((64 << 20) + r.next(1 << 30)).to_string(),
        expect: |s| vec![("container_spec_memory_limit_bytes", limit(s))],
    },
    Setting {
        hierarchy: "",
        file: "memory.min",
        write: |r| r.next(1 << 30).to_string(),
        expect: |s| vec![("container_spec_memory_reservation_limit_bytes", limit(s))],
    },
    pids_max(""),
];

fn agent(top: &str, watch_settled: bool) -> podstat::agent::Agent {
    let config = podstat::config::parse(
        &format!(
            "[server]\nmin_collect_interval_ms = 0\n[reader]\nwatch_settled = {watch_settled}\n\
             [discovery]\nraw_include = [\"/{top}/*\"]\n[collectors]\nprocess_files = false\n"
        ),
        "test",
    )
    .expect("config");
    podstat::agent::Agent::new(&config).expect("agent")
}

fn scrape(agent: &podstat::agent::Agent) -> String {
    String::from_utf8(agent.scrape().to_vec()).expect("utf8")
}

#[test]
fn limits_written_between_scrapes_are_never_stale() {
    let _heavy = exclusive();
    if skip_unless(is_root(), "root (creates cgroups)") {
        return;
    }
    let hierarchies = hierarchies();
    let v2 = hierarchies.len() == 1;
    let settings = if v2 { V2 } else { V1 };
    let root_of = |h: &str| {
        hierarchies
            .iter()
            .find(|p| {
                v2 || p.ends_with(h)
                    || p.to_string_lossy().contains(&format!("/{h},"))
                    || p.to_string_lossy().ends_with(&format!(",{h}"))
            })
            .unwrap_or_else(|| panic!("no {h} hierarchy in {hierarchies:?}"))
            .clone()
    };
    let top = unique("podstat-settled-");
    const CGROUPS: usize = 12;
    let rels: Vec<String> = std::iter::once(top.clone())
        .chain((0..CGROUPS).map(|i| format!("{top}/c{i}")))
        .collect();
    let mut guard = CgroupGuard { dirs: Vec::new() };
    for h in &hierarchies {
        for rel in &rels {
            let dir = h.join(rel);
            std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
            guard.dirs.push(dir);
            if v2 && rel == &top {
                std::fs::write(
                    h.join(rel).join("cgroup.subtree_control"),
                    "+cpu +memory +pids",
                )
                .expect("enable controllers");
            }
        }
    }
    let file = |s: &Setting, i: usize| {
        root_of(s.hierarchy)
            .join(format!("{top}/c{i}"))
            .join(s.file)
    };
    let watched = agent(&top, true);
    let unwatched = agent(&top, false);
    let check = |body: &str, round: usize| {
        for i in 0..CGROUPS {
            let id = format!("id=\"/{top}/c{i}\"");
            for s in settings {
                let kernel = std::fs::read_to_string(file(s, i)).expect("read the setting");
                for (family, want) in (s.expect)(&kernel) {
                    let got = sample_value(body, family, &[&id]);
                    assert_eq!(
                        got, want,
                        "round {round}: {family} of c{i} (the kernel's {}: {kernel:?})",
                        s.file
                    );
                }
            }
        }
    };
    check(&scrape(&watched), 0);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id()));
    let mut writes = 0;
    for round in 1..=300 {
        // Up to three writes, then a scrape; some rounds write nothing.
        for _ in 0..rng.next(4) {
            let s = &settings[rng.next(settings.len() as u64) as usize];
            let i = rng.next(CGROUPS as u64) as usize;
            // The kernel refuses some combinations (a v1 quota below 1 ms of a new period):
            // whatever it keeps is what the check compares against.
            if std::fs::write(file(s, i), (s.write)(&mut rng)).is_ok() {
                writes += 1;
            }
        }
        check(&scrape(&watched), round);
    }
    assert!(writes > 200, "only {writes} writes went through");
    // The settled files hold no descriptors: the agent that watches keeps fewer, by about one
    // per setting per cgroup.
    let body = scrape(&watched);
    let plain = scrape(&unwatched);
    check(&plain, 301);
    let kept = |b: &str| sample_value(b, "podstat_kept_descriptors", &[]).expect("kept");
    let spared = kept(&plain) - kept(&body);
    assert!(
        spared >= (CGROUPS * settings.len()) as f64,
        "watching spared {spared} descriptors for {CGROUPS} cgroups of {} settings",
        settings.len()
    );
    let watches = sample_value(&body, "podstat_settled_watches", &[]).expect("watches");
    assert!(watches >= CGROUPS as f64, "{watches} directories watched");
    eprintln!("{writes} writes over 300 scrapes; {spared} descriptors spared, {watches} watches");
    drop((watched, unwatched));
}

/// A counter's value in `file` (`key` of a `key value` file, or the whole file).
fn kernel_count(file: &std::path::Path, key: Option<&str>) -> f64 {
    let text =
        std::fs::read_to_string(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
    match key {
        None => num(&text),
        Some(key) => text
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
            .map(num)
            .unwrap_or_else(|| panic!("no {key} in {}: {text:?}", file.display())),
    }
}

/// Real v1 cgroups for a test of counters: `top` and its children `c0`.. in every hierarchy,
/// with a scratch directory on disk; processes started in them are killed (by PID) before the
/// cgroups are removed. None where the test cannot run (not root, or not v1).
struct V1Cgroups {
    hierarchies: Vec<std::path::PathBuf>,
    top: String,
    scratch: tempfile::TempDir,
    // Dropped in this order: the processes, then their cgroups.
    children: Vec<crate::support::ChildGuard>,
    _guard: crate::support::CgroupGuard,
}

impl V1Cgroups {
    fn new(prefix: &str, count: usize) -> Option<V1Cgroups> {
        if skip_unless(is_root(), "root (creates cgroups)") {
            return None;
        }
        let hierarchies = hierarchies();
        if skip_unless(hierarchies.len() > 1, "cgroup v1 (v2 has no such counters)") {
            return None;
        }
        let top = unique(prefix);
        let rels: Vec<String> = std::iter::once(top.clone())
            .chain((0..count).map(|i| format!("{top}/c{i}")))
            .collect();
        let guard = crate::support::make_cgroups(&hierarchies, &rels);
        let scratch = tempfile::tempdir_in("/var/tmp").expect("a directory on disk");
        Some(V1Cgroups {
            hierarchies,
            top,
            scratch,
            children: Vec::new(),
            _guard: guard,
        })
    }

    /// Child `i`'s directory in the hierarchy of `controller`.
    fn dir(&self, controller: &str, i: usize) -> std::path::PathBuf {
        self.hierarchies
            .iter()
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().split(',').any(|c| c == controller))
            })
            .unwrap_or_else(|| panic!("no {controller} hierarchy in {:?}", self.hierarchies))
            .join(format!("{}/c{i}", self.top))
    }

    /// Runs `script` with sh in child `i` (every hierarchy).
    fn run_in(&mut self, i: usize, script: &str) {
        let child = std::process::Command::new("sh")
            .args(["-c", script])
            .spawn()
            .expect("spawn");
        let child = crate::support::ChildGuard(child);
        crate::support::move_into(
            &self.hierarchies,
            &format!("{}/c{i}", self.top),
            child.pid(),
        );
        self.children.push(child);
    }
}

/// v1 counters that a setting stops (`cpu.stat` without a quota, `memory.failcnt` without a
/// limit) are read only after the setting lets them move (`src/reader/gated.rs`). Real cgroups
/// with processes that get throttled and hit their memory limit; quotas and limits set and
/// removed, and failcnt reset, at random between scrapes: every scrape must show a value the
/// kernel showed between just before and just after it, which is the kernel's exact value
/// whenever the counter did not move (the gated case).
#[test]
fn counters_a_setting_stops_are_never_stale() {
    let _heavy = exclusive();
    const CGROUPS: usize = 3;
    let Some(mut cgroups) = V1Cgroups::new("podstat-gated-", CGROUPS) else {
        return;
    };
    // Each cgroup: a process that runs about half the time (throttled under a quota), and one
    // that rewrites an 8 MiB file (its page cache hits a 4 MiB limit, which counts failures).
    for i in 0..CGROUPS {
        let file = cgroups.scratch.path().join(format!("c{i}"));
        cgroups.run_in(
            i,
            "while :; do i=0; while [ $i -lt 3000 ]; do i=$((i+1)); done; sleep 0.01; done",
        );
        cgroups.run_in(
            i,
            &format!(
                "while :; do dd if=/dev/zero of={} bs=1M count=8 conv=notrunc 2>/dev/null; sleep 0.1; done",
                file.display()
            ),
        );
    }
    let top = cgroups.top.clone();
    // (family, file, key, controller): the counters and where the kernel shows them.
    let counters: [(&str, &str, Option<&str>, &str); 4] = [
        (
            "container_cpu_cfs_periods_total",
            "cpu.stat",
            Some("nr_periods"),
            "cpu",
        ),
        (
            "container_cpu_cfs_throttled_periods_total",
            "cpu.stat",
            Some("nr_throttled"),
            "cpu",
        ),
        (
            "container_cpu_cfs_throttled_seconds_total",
            "cpu.stat",
            Some("throttled_time"),
            "cpu",
        ),
        ("container_memory_failcnt", "memory.failcnt", None, "memory"),
    ];
    let read_all = || -> Vec<f64> {
        (0..CGROUPS)
            .flat_map(|i| counters.iter().map(move |counter| (i, counter)))
            .map(|(i, (_, file, key, controller))| {
                kernel_count(&cgroups.dir(controller, i).join(file), *key)
            })
            .collect()
    };
    let has_quota =
        |i: usize| kernel_count(&cgroups.dir("cpu", i).join("cpu.cfs_quota_us"), None) >= 0.0;
    let watched = agent(&top, true);
    let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ u64::from(std::process::id()));
    let (mut exact, mut changed, mut stopped_nonzero) = (0, 0, 0);
    let mut last = vec![None; CGROUPS * counters.len()];
    for round in 0..120 {
        for i in 0..CGROUPS {
            if rng.next(3) == 0 {
                let quota = if rng.next(2) == 0 { "-1" } else { "2000" };
                std::fs::write(cgroups.dir("cpu", i).join("cpu.cfs_quota_us"), quota)
                    .expect("quota");
            }
            if rng.next(4) == 0 {
                let limit = if rng.next(2) == 0 { "-1" } else { "4194304" };
                // The kernel refuses a limit below what it cannot reclaim: then it stays.
                let _ = std::fs::write(
                    cgroups.dir("memory", i).join("memory.limit_in_bytes"),
                    limit,
                );
            }
            if rng.next(6) == 0 {
                std::fs::write(cgroups.dir("memory", i).join("memory.failcnt"), "0")
                    .expect("reset");
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(rng.next(60)));
        let before = read_all();
        let quotas: Vec<bool> = (0..CGROUPS).map(has_quota).collect();
        let body = scrape(&watched);
        let after = read_all();
        for (i, &quota) in quotas.iter().enumerate() {
            let id = format!("id=\"/{top}/c{i}\"");
            for (k, (family, file, _, _)) in counters.iter().enumerate() {
                let at = i * counters.len() + k;
                let (lo, hi) = (before[at], after[at]);
                let got = sample_value(&body, family, &[&id]);
                let got = match got {
                    // cAdvisor and podstat write the CFS counters only under a quota.
                    None if *file == "cpu.stat" && !quota => continue,
                    None => panic!("round {round}: no {family} for c{i}"),
                    Some(got) => got,
                };
                let got = if family.ends_with("seconds_total") {
                    got * 1e9
                } else {
                    got
                };
                // Seconds are written with their nanoseconds: compare in nanoseconds, to one.
                assert!(
                    got >= lo - 1.0 && got <= hi + 1.0,
                    "round {round}: {family} of c{i} is {got}, the kernel's {file} went {lo} → {hi}"
                );
                exact += usize::from(lo == hi);
                stopped_nonzero += usize::from(*file == "memory.failcnt" && lo == hi && lo > 0.0);
                let slot = &mut last[at];
                changed += usize::from(slot.is_some_and(|was| was != got));
                *slot = Some(got);
            }
        }
    }
    eprintln!(
        "{exact} readings the kernel held still during the scrape, {changed} that changed \
         since the scrape before; {stopped_nonzero} still failure counts above 0"
    );
    // The test must have seen counters move and stop, or it proved nothing about the gate.
    assert!(
        changed > 50,
        "only {changed} readings changed: nothing was throttled or limited"
    );
    assert!(
        stopped_nonzero > 20,
        "only {stopped_nonzero} still failcnt readings above 0"
    );
}

/// The sum of every sample of `family` for the cgroup `id` (all its devices).
fn sum_samples(body: &str, family: &str, id: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(family) && l[family.len()..].starts_with('{') && l.contains(id))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The sum of `op` over every device of a v1 blkio file.
fn blkio_sum(file: &std::path::Path, op: &str) -> f64 {
    std::fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("read {}: {e}", file.display()))
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (device, o, v) = (f.next()?, f.next()?, f.next()?);
            (device != "Total" && o == op).then(|| num(v))
        })
        .sum()
}

/// v1 counters read only when their companion moved (`src/reader/companion.rs`):
/// `cpuacct.stat` after `cpuacct.usage`, the blkio bytes after the operations. Real cgroups
/// whose processes run and do direct IO in bursts, so that some scrapes find them still and
/// some moving: every scrape must show a value the kernel showed between just before and
/// just after it (exactly it, whenever the counter stood still).
#[test]
fn counters_that_move_with_a_companion_are_never_stale() {
    let _heavy = exclusive();
    const CGROUPS: usize = 3;
    let Some(mut cgroups) = V1Cgroups::new("podstat-companion-", CGROUPS) else {
        return;
    };
    // c0 runs in bursts, c1 writes and reads 1 MiB with O_DIRECT in bursts (so the IO is
    // charged to it: buffered writeback is not, on v1), c2 does both, slower.
    for (i, pause) in [(0, "0.3"), (1, "0.25"), (2, "0.7")] {
        let file = cgroups.scratch.path().join(format!("c{i}"));
        let burn = "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done";
        let io = format!(
            "dd if=/dev/zero of={f} bs=64k count=16 oflag=direct conv=notrunc 2>/dev/null; \
             dd if={f} of=/dev/null bs=64k iflag=direct 2>/dev/null",
            f = file.display()
        );
        let work = match i {
            0 => burn.to_string(),
            1 => io,
            _ => format!("{burn}; {io}"),
        };
        cgroups.run_in(i, &format!("while :; do {work}; sleep {pause}; done"));
    }
    let top = cgroups.top.clone();
    // The families compared, and each one's kernel reading in the kernel's unit (cpuacct.stat
    // counts ticks of 1/100 s).
    let counters = [
        "container_cpu_user_seconds_total",
        "container_cpu_system_seconds_total",
        "container_fs_reads_bytes_total",
        "container_fs_writes_bytes_total",
    ];
    let scale = |k: usize| if k < 2 { 100.0 } else { 1.0 };
    let kernel = |i: usize, k: usize| {
        let stat = cgroups.dir("cpuacct", i).join("cpuacct.stat");
        let bytes = cgroups
            .dir("blkio", i)
            .join("blkio.throttle.io_service_bytes_recursive");
        match k {
            0 => kernel_count(&stat, Some("user")),
            1 => kernel_count(&stat, Some("system")),
            2 => blkio_sum(&bytes, "Read"),
            _ => blkio_sum(&bytes, "Write"),
        }
    };
    let read_all = || -> Vec<f64> {
        (0..CGROUPS)
            .flat_map(|i| (0..counters.len()).map(move |k| (i, k)))
            .map(|(i, k)| kernel(i, k))
            .collect()
    };
    let watched = agent(&top, true);
    let mut rng = Rng(0x9e6c_63d0_676a_9a99 ^ u64::from(std::process::id()));
    let (mut still_nonzero, mut changed) = (0, 0);
    let mut last = vec![None; CGROUPS * counters.len()];
    for round in 0..150 {
        std::thread::sleep(std::time::Duration::from_millis(rng.next(120)));
        let before = read_all();
        let body = scrape(&watched);
        let after = read_all();
        for i in 0..CGROUPS {
            let id = format!("id=\"/{top}/c{i}\"");
            for (k, family) in counters.iter().enumerate() {
                let at = i * counters.len() + k;
                let (lo, hi) = (before[at], after[at]);
                let got = (sum_samples(&body, family, &id) * scale(k)).round();
                assert!(
                    got >= lo && got <= hi,
                    "round {round}: {family} of c{i} is {got}, the kernel's went {lo} → {hi}"
                );
                still_nonzero += usize::from(lo == hi && lo > 0.0);
                let slot = &mut last[at];
                changed += usize::from(slot.is_some_and(|was| was != got));
                *slot = Some(got);
            }
        }
    }
    eprintln!("{changed} readings changed since the scrape before, {still_nonzero} still above 0");
    // Both kinds must have been seen, or the test proved nothing about the pairing.
    assert!(changed > 60, "only {changed} readings changed");
    assert!(
        still_nonzero > 60,
        "only {still_nonzero} still readings above 0"
    );
}
