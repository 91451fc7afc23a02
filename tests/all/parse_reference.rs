//! Property tests against a reference: each case makes values, writes them the way the kernel
//! writes the file (real key sets, unknown keys mixed in, random order, files longer than a
//! page), parses the text and requires exactly the values it started from. The expected values
//! come from the generated data and the kernel's documented meaning of each key, never from
//! the parser under test.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use proptest::prelude::*;

use podstat::parse::{blkio, cpu, memory, netdev, procfs, psi};

/// Keys of a 6.1 v2 `memory.stat`, in the kernel's order.
const MEMORY_STAT_V2_KEYS: &[&str] = &[
    "anon",
    "file",
    "kernel",
    "kernel_stack",
    "pagetables",
    "sec_pagetables",
    "percpu",
    "sock",
    "vmalloc",
    "shmem",
    "zswap",
    "zswapped",
    "file_mapped",
    "file_dirty",
    "file_writeback",
    "swapcached",
    "anon_thp",
    "file_thp",
    "shmem_thp",
    "inactive_anon",
    "active_anon",
    "inactive_file",
    "active_file",
    "unevictable",
    "slab_reclaimable",
    "slab_unreclaimable",
    "slab",
    "workingset_refault_anon",
    "workingset_refault_file",
    "workingset_activate_anon",
    "workingset_activate_file",
    "workingset_restore_anon",
    "workingset_restore_file",
    "workingset_nodereclaim",
    "pgscan",
    "pgsteal",
    "pgscan_kswapd",
    "pgscan_direct",
    "pgsteal_kswapd",
    "pgsteal_direct",
    "pgfault",
    "pgmajfault",
    "pgrefill",
    "pgactivate",
    "pgdeactivate",
    "pglazyfree",
    "pglazyfreed",
    "thp_fault_alloc",
    "thp_collapse_alloc",
];

/// Local keys of a v1 `memory.stat`; each also appears as `total_<key>` after them.
const MEMORY_STAT_V1_KEYS: &[&str] = &[
    "cache",
    "rss",
    "rss_huge",
    "shmem",
    "mapped_file",
    "dirty",
    "writeback",
    "swap",
    "pgpgin",
    "pgpgout",
    "pgfault",
    "pgmajfault",
    "inactive_anon",
    "active_anon",
    "inactive_file",
    "active_file",
    "unevictable",
];

/// A value map over `keys`: every key present with a random value (some near u64::MAX).
fn values_for(keys: &'static [&'static str]) -> impl Strategy<Value = Vec<u64>> {
    proptest::collection::vec(prop_oneof![any::<u64>(), 0..100_000u64], keys.len())
}

fn render_flat(pairs: &[(String, u64)]) -> String {
    pairs.iter().fold(String::new(), |mut s, (k, v)| {
        let _ = writeln!(s, "{k} {v}");
        s
    })
}

/// Pads a flat-keyed file past a page with keys the parsers must pass over.
fn with_unknown_keys(mut pairs: Vec<(String, u64)>, extra: usize) -> Vec<(String, u64)> {
    for i in 0..extra {
        pairs.insert(
            (i * 7) % (pairs.len() + 1),
            (format!("future_counter_{i}_with_a_long_name"), i as u64),
        );
    }
    pairs
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn memory_stat_v2_gives_the_written_values(
        values in values_for(MEMORY_STAT_V2_KEYS),
        extra in 0..200usize,
    ) {
        let map: BTreeMap<&str, u64> = MEMORY_STAT_V2_KEYS.iter().copied().zip(values.iter().copied()).collect();
        let pairs: Vec<_> = MEMORY_STAT_V2_KEYS.iter().map(|k| (k.to_string(), map[k])).collect();
        let text = render_flat(&with_unknown_keys(pairs, extra));
        let s = memory::memory_stat_v2(text.as_bytes()).expect("parse");
        prop_assert_eq!(s.rss, Some(map["anon"]));
        prop_assert_eq!(s.cache, Some(map["file"]));
        prop_assert_eq!(s.mapped_file, Some(map["file_mapped"]));
        prop_assert_eq!(s.active_file, Some(map["active_file"]));
        prop_assert_eq!(s.inactive_file, Some(map["inactive_file"]));
        prop_assert_eq!(s.pgfault, Some(map["pgfault"]));
        prop_assert_eq!(s.pgmajfault, Some(map["pgmajfault"]));
        prop_assert_eq!(s.kernel, Some(map["kernel"]));
        prop_assert_eq!(s.anon_plus_file, Some(map["anon"].saturating_add(map["file"])));
        prop_assert_eq!(s.swap, None, "v2 memory.stat has no swap key");
    }

    #[test]
    fn memory_stat_v1_picks_total_keys_when_hierarchical(
        local in values_for(MEMORY_STAT_V1_KEYS),
        total in values_for(MEMORY_STAT_V1_KEYS),
        hierarchical in any::<bool>(),
        extra in 0..100usize,
    ) {
        let mut pairs: Vec<(String, u64)> =
            MEMORY_STAT_V1_KEYS.iter().map(|k| (k.to_string(), 0)).collect();
        for (p, v) in pairs.iter_mut().zip(&local) { p.1 = *v; }
        // The kernel writes hierarchical_memory_limit between the local and total keys.
        pairs.push(("hierarchical_memory_limit".into(), 9_223_372_036_854_771_712));
        pairs.extend(MEMORY_STAT_V1_KEYS.iter().zip(&total).map(|(k, v)| (format!("total_{k}"), *v)));
        let text = render_flat(&with_unknown_keys(pairs, extra));
        let s = memory::memory_stat_v1(text.as_bytes(), hierarchical).expect("parse");
        let at = |name: &str| MEMORY_STAT_V1_KEYS.iter().position(|k| *k == name).expect("key");
        // cAdvisor's rule: the hierarchical sums when use_hierarchy is on, local otherwise;
        // faults always local; the working set always subtracts total_inactive_file.
        let pick = |name: &str| Some(if hierarchical { total[at(name)] } else { local[at(name)] });
        prop_assert_eq!(s.rss, pick("rss"));
        prop_assert_eq!(s.cache, pick("cache"));
        prop_assert_eq!(s.mapped_file, pick("mapped_file"));
        prop_assert_eq!(s.swap, pick("swap"));
        prop_assert_eq!(s.active_file, pick("active_file"));
        prop_assert_eq!(s.inactive_file, Some(total[at("inactive_file")]));
        prop_assert_eq!(s.pgfault, Some(local[at("pgfault")]));
        prop_assert_eq!(s.pgmajfault, Some(local[at("pgmajfault")]));
    }

    #[test]
    fn cpu_stat_of_either_version(
        v2 in any::<bool>(),
        vals in proptest::collection::vec(0..u64::MAX / 1000, 8),
        present in proptest::collection::vec(any::<bool>(), 8),
    ) {
        let keys: [&str; 8] = if v2 {
            ["usage_usec", "user_usec", "system_usec", "nr_periods", "nr_throttled", "throttled_usec", "nr_bursts", "burst_usec"]
        } else {
            ["nr_periods", "nr_throttled", "throttled_time", "nr_bursts", "burst_time", "wait_sum", "x", "y"]
        };
        let pairs: Vec<(String, u64)> = keys.iter().zip(&vals).zip(&present)
            .filter(|(_, p)| **p).map(|((k, v), _)| (k.to_string(), *v)).collect();
        let got = |k: &str| pairs.iter().find(|(key, _)| key == k).map(|(_, v)| *v);
        if pairs.is_empty() {
            prop_assert!(cpu::cpu_stat(b"").is_err(), "an empty cpu.stat is an error");
            return Ok(());
        }
        let s = cpu::cpu_stat(render_flat(&pairs).as_bytes()).expect("parse");
        prop_assert_eq!(s.usage_usec, got("usage_usec"));
        prop_assert_eq!(s.user_usec, got("user_usec"));
        prop_assert_eq!(s.system_usec, got("system_usec"));
        prop_assert_eq!(s.nr_periods, got("nr_periods"));
        prop_assert_eq!(s.nr_throttled, got("nr_throttled"));
        prop_assert_eq!(s.nr_bursts, got("nr_bursts"));
        let throttled_ns = if v2 { got("throttled_usec").map(|u| u * 1000) } else { got("throttled_time") };
        prop_assert_eq!(s.throttled_ns, throttled_ns);
    }

    #[test]
    fn memory_events_gives_each_counter(vals in proptest::collection::vec(any::<u64>(), 5)) {
        let text = format!("low {}\nhigh {}\nmax {}\noom {}\noom_kill {}\noom_group_kill 0\n",
            vals[0], vals[1], vals[2], vals[3], vals[4]);
        let e = memory::memory_events(text.as_bytes()).expect("parse");
        prop_assert_eq!((e.high, e.max, e.oom, e.oom_kill), (Some(vals[1]), Some(vals[2]), Some(vals[3]), Some(vals[4])));
    }

    #[test]
    fn io_stat_gives_each_devices_counters(
        devices in proptest::collection::btree_map((0..300u32, 0..1024u32), proptest::collection::vec(any::<u64>(), 6), 1..40),
        bare in proptest::collection::vec((0..300u32, 0..1024u32), 0..4),
    ) {
        let mut text = String::new();
        // Devices without stats as bare tokens with no newline, as some kernels print them.
        for (major, minor) in &bare {
            if !devices.contains_key(&(*major, *minor)) { let _ = write!(text, "{major}:{minor} "); }
        }
        for ((major, minor), v) in &devices {
            let _ = writeln!(text, "{major}:{minor} rbytes={} wbytes={} rios={} wios={} dbytes={} dios={}",
                v[0], v[1], v[2], v[3], v[4], v[5]);
        }
        let mut out = Vec::new();
        blkio::io_stat(text.as_bytes(), &mut out).expect("parse");
        prop_assert_eq!(out.len(), devices.len());
        for d in &out {
            let v = &devices[&(d.major, d.minor)];
            prop_assert_eq!((d.read_bytes, d.write_bytes, d.reads, d.writes), (v[0], v[1], v[2], v[3]));
        }
    }

    #[test]
    fn blkio_v1_merges_bytes_and_ops(
        devices in proptest::collection::btree_map((0..300u32, 0..1024u32), proptest::collection::vec(any::<u64>(), 7), 1..40),
    ) {
        let (mut bytes, mut ops) = (String::new(), String::new());
        for ((major, minor), v) in &devices {
            for (op, value) in [("Read", v[0]), ("Write", v[1]), ("Sync", v[2]), ("Async", v[3]), ("Discard", v[4]), ("Total", v[0].wrapping_add(v[1]))] {
                let _ = writeln!(bytes, "{major}:{minor} {op} {value}");
            }
            for (op, value) in [("Read", v[5]), ("Write", v[6]), ("Sync", 0), ("Async", 0), ("Discard", 0), ("Total", 0)] {
                let _ = writeln!(ops, "{major}:{minor} {op} {value}");
            }
        }
        bytes.push_str("Total 12345\n");
        ops.push_str("Total 678\n");
        let mut out = Vec::new();
        blkio::blkio_v1(bytes.as_bytes(), blkio::BlkioKind::Bytes, &mut out).expect("bytes");
        blkio::blkio_v1(ops.as_bytes(), blkio::BlkioKind::Ops, &mut out).expect("ops");
        prop_assert_eq!(out.len(), devices.len());
        for d in &out {
            let v = &devices[&(d.major, d.minor)];
            prop_assert_eq!((d.read_bytes, d.write_bytes, d.reads, d.writes), (v[0], v[1], v[5], v[6]));
            prop_assert_eq!((d.sync_bytes, d.async_bytes, d.discard_bytes), (Some(v[2]), Some(v[3]), Some(v[4])));
            prop_assert_eq!(d.total_bytes, Some(v[0].wrapping_add(v[1])));
        }
    }

    #[test]
    fn pressure_gives_the_totals(
        some in any::<u64>(), full in proptest::option::of(any::<u64>()),
        avgs in proptest::collection::vec(0.0f64..100.0, 6),
    ) {
        let mut text = format!("some avg10={:.2} avg60={:.2} avg300={:.2} total={some}\n", avgs[0], avgs[1], avgs[2]);
        if let Some(full) = full {
            let _ = writeln!(text, "full avg10={:.2} avg60={:.2} avg300={:.2} total={full}", avgs[3], avgs[4], avgs[5]);
        }
        let p = psi::pressure(text.as_bytes()).expect("parse");
        prop_assert_eq!((p.some_total_usec, p.full_total_usec), (Some(some), full));
    }

    #[test]
    fn net_dev_gives_every_interface(
        interfaces in proptest::collection::btree_map("[a-z][a-z0-9@._-]{0,14}", proptest::collection::vec(any::<u64>(), 16), 1..60),
    ) {
        // The kernel's format: "%6s:%8llu %7llu ..." – a name of 7+ characters runs into the
        // first counter when that counter is wide.
        let mut text = String::from("Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n");
        for (name, v) in &interfaces {
            let _ = write!(text, "{name:>6}:{:8}", v[0]);
            for value in &v[1..] { let _ = write!(text, " {value:7}"); }
            text.push('\n');
        }
        let mut seen = BTreeMap::new();
        netdev::net_dev(text.as_bytes(), |name, s| {
            seen.insert(String::from_utf8_lossy(name).into_owned(), s);
        }).expect("parse");
        prop_assert_eq!(seen.len(), interfaces.len());
        for (name, v) in &interfaces {
            let s = seen[name];
            prop_assert_eq!(
                [s.rx_bytes, s.rx_packets, s.rx_errors, s.rx_dropped, s.tx_bytes, s.tx_packets, s.tx_errors, s.tx_dropped],
                [v[0], v[1], v[2], v[3], v[8], v[9], v[10], v[11]]
            );
        }
    }

    #[test]
    fn cgroup_procs_counts_every_pid(pids in proptest::collection::vec(0..4_194_304u64, 0..3000)) {
        // Thousands of PIDs: longer than the page the kernel hands out per read.
        let text = pids.iter().fold(String::new(), |mut s, p| { let _ = writeln!(s, "{p}"); s });
        let (count, first) = podstat::parse::cgroup_procs(text.as_bytes()).expect("parse");
        prop_assert_eq!(count, pids.len() as u64);
        // PID 0: a process not visible from this PID namespace.
        prop_assert_eq!(first, pids.iter().copied().find(|p| *p != 0).map(|p| p as u32));
        let listed: Vec<u32> = podstat::parse::pids(text.as_bytes()).collect();
        let expected: Vec<u32> = pids.iter().filter(|p| **p != 0).map(|p| *p as u32).collect();
        prop_assert_eq!(listed, expected);
    }

    #[test]
    fn stat_state_after_any_command(comm in "[ -~]{0,15}", state in "[RSDTtZXIPW]") {
        // The command may hold spaces and parentheses; the state follows the last ')'.
        let text = format!("4242 ({comm}) {state} 1 4242 4242 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 1 0 12345 1000000 200 18446744073709551615\n");
        prop_assert_eq!(procfs::stat_state(text.as_bytes()).expect("parse"), state.as_bytes()[0]);
    }

    #[test]
    fn limits_gives_the_soft_open_files(soft in proptest::option::of(0..1u64 << 40), hard in 0..1u64 << 40) {
        let soft_text = soft.map_or("unlimited".to_string(), |s| s.to_string());
        let text = format!("Limit                     Soft Limit           Hard Limit           Units     \nMax cpu time              unlimited            unlimited            seconds   \nMax open files            {soft_text:<21}{hard:<21}files     \nMax processes             63704                63704                processes \n");
        let expected = soft.map_or(-1.0, |s| s as f64);
        prop_assert_eq!(procfs::limits_max_open_files(text.as_bytes()).expect("parse"), expected);
    }
}
