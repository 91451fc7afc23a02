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
