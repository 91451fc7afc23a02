//! Property tests: no parser panics on arbitrary bytes, and label escaping round-trips.

use proptest::prelude::*;

use podstat::parse::{blkio, cpu, memory, netdev, procfs, psi};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = podstat::parse::single_u64(&bytes);
        let _ = podstat::parse::single_i64(&bytes);
        let _ = podstat::parse::max_or_u64(&bytes);
        let _ = podstat::parse::cgroup_procs(&bytes);
        let _ = cpu::cpu_stat(&bytes);
        let _ = cpu::cpuacct_stat(&bytes);
        let _ = cpu::cpu_max(&bytes);
        let _ = memory::memory_stat_v1(&bytes, true);
        let _ = memory::memory_stat_v2(&bytes);
        let _ = memory::memory_events(&bytes);
        let _ = psi::pressure(&bytes);
        let _ = netdev::net_dev(&bytes, |_, _| {});
        let _ = blkio::io_stat(&bytes, &mut Vec::new());
        let _ = blkio::blkio_v1(&bytes, blkio::BlkioKind::Bytes, &mut Vec::new());
        let _ = procfs::cpu_topology(&bytes);
        let _ = procfs::os_release_pretty_name(&bytes);
        let _ = procfs::meminfo_totals(&bytes);
        let _ = procfs::cgroup_mounts(&bytes);
    }

    #[test]
    fn lines_are_what_splitting_at_newlines_gives(
        bytes in proptest::collection::vec(prop_oneof![Just(b'\n'), any::<u8>()], 0..100)
    ) {
        let found: Vec<&[u8]> = podstat::parse::lines(&bytes).collect();
        let split: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
        prop_assert_eq!(found, split);
    }

    #[test]
    fn text_shaped_input_never_panics(lines in proptest::collection::vec("[a-z_:0-9 =.-]{0,40}", 0..20)) {
        let text = lines.join("\n");
        let b = text.as_bytes();
        let _ = cpu::cpu_stat(b);
        let _ = memory::memory_stat_v2(b);
        let _ = psi::pressure(b);
        let _ = netdev::net_dev(b, |_, _| {});
        let _ = blkio::io_stat(b, &mut Vec::new());
        let _ = blkio::blkio_v1(b, blkio::BlkioKind::Ops, &mut Vec::new());
    }

    #[test]
    fn label_escaping_round_trips(value in "\\PC{0,40}") {
        let mut out = Vec::new();
        podstat::labels::escape_label_value(&mut out, &value);
        let escaped = String::from_utf8(out).expect("utf8");
        prop_assert!(!escaped.contains('\n'));
        // Unescape as Prometheus' text parser does.
        let mut back = String::new();
        let mut chars = escaped.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some('n') => back.push('\n'),
                    Some(other) => back.push(other),
                    None => prop_assert!(false, "dangling backslash"),
                }
            } else {
                prop_assert!(c != '"', "unescaped quote");
                back.push(c);
            }
        }
        prop_assert_eq!(back, value);
    }
}
