//! Memory files: `memory.stat` (v1 and v2 key sets), `memory.events`, v1 `memory.oom_control`.

use super::{for_each_flat_keyed, for_each_picked, ParseError};

/// The `memory.stat` values podstat exports, named by their cAdvisor meaning.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MemoryStat {
    pub rss: Option<u64>,
    pub cache: Option<u64>,
    pub mapped_file: Option<u64>,
    pub swap: Option<u64>,
    pub active_file: Option<u64>,
    pub inactive_file: Option<u64>,
    pub pgfault: Option<u64>,
    pub pgmajfault: Option<u64>,
    /// v2 only: `anon + file` is the root cgroup's usage (the root has no `memory.current`).
    pub anon_plus_file: Option<u64>,
    /// v2 only (Linux 5.18+): `kernel`, all kernel memory charged to the cgroup.
    pub kernel: Option<u64>,
}

/// v2 `memory.stat` (always hierarchical).
pub fn memory_stat_v2(bytes: &[u8]) -> Result<MemoryStat, ParseError> {
    let mut s = MemoryStat::default();
    for_each_flat_keyed(bytes, |k, v| match k {
        b"anon" => s.rss = Some(v),
        b"file" => s.cache = Some(v),
        b"file_mapped" => s.mapped_file = Some(v),
        b"active_file" => s.active_file = Some(v),
        b"inactive_file" => s.inactive_file = Some(v),
        b"pgfault" => s.pgfault = Some(v),
        b"pgmajfault" => s.pgmajfault = Some(v),
        b"kernel" => s.kernel = Some(v),
        _ => {}
    })?;
    if let (Some(a), Some(f)) = (s.rss, s.cache) {
        s.anon_plus_file = Some(a.saturating_add(f));
    }
    Ok(s)
}

/// v1 `memory.stat`. With `use_hierarchy=1` (the default everywhere since 2013) cAdvisor reads
/// the `total_*` keys, which include descendants; the fault counters are always the local keys.
/// `total_inactive_file` is used for the working set in both cases, as cAdvisor does.
pub fn memory_stat_v1(bytes: &[u8], hierarchical: bool) -> Result<MemoryStat, ParseError> {
    // rss, cache, mapped_file, swap, active_file, inactive_file, pgfault, pgmajfault
    let mut v = [None; 8];
    // By length first: one comparison for the few keys of a picked length, none for the
    // ~30 others (a small gain: finding the lines was what cost, see `super::lines`).
    for_each_picked(
        bytes,
        |k| {
            let is = |name: &[u8]| k == name;
            match k.len() {
                3 if !hierarchical && is(b"rss") => Some(0),
                4 if !hierarchical && is(b"swap") => Some(3),
                5 if !hierarchical && is(b"cache") => Some(1),
                7 if is(b"pgfault") => Some(6),
                9 if hierarchical && is(b"total_rss") => Some(0),
                10 if is(b"pgmajfault") => Some(7),
                10 if hierarchical && is(b"total_swap") => Some(3),
                11 if hierarchical && is(b"total_cache") => Some(1),
                11 if !hierarchical && is(b"mapped_file") => Some(2),
                11 if !hierarchical && is(b"active_file") => Some(4),
                17 if hierarchical && is(b"total_mapped_file") => Some(2),
                17 if hierarchical && is(b"total_active_file") => Some(4),
                19 if is(b"total_inactive_file") => Some(5),
                _ => None,
            }
        },
        &mut v,
    )?;
    Ok(MemoryStat {
        rss: v[0],
        cache: v[1],
        mapped_file: v[2],
        swap: v[3],
        active_file: v[4],
        inactive_file: v[5],
        pgfault: v[6],
        pgmajfault: v[7],
        anon_plus_file: None,
        kernel: None,
    })
}

/// v2 `memory.events` (and the `oom_kill` line of v1 `memory.oom_control`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MemoryEvents {
    pub high: Option<u64>,
    pub max: Option<u64>,
    pub oom: Option<u64>,
    pub oom_kill: Option<u64>,
}

pub fn memory_events(bytes: &[u8]) -> Result<MemoryEvents, ParseError> {
    let mut e = MemoryEvents::default();
    for_each_flat_keyed(bytes, |k, v| match k {
        b"high" => e.high = Some(v),
        b"max" => e.max = Some(v),
        b"oom" => e.oom = Some(v),
        b"oom_kill" => e.oom_kill = Some(v),
        _ => {}
    })?;
    Ok(e)
}

/// v1 `memory.oom_control`; `oom_kill` exists since Linux 4.13, older kernels give `None`.
pub fn oom_control_kills(bytes: &[u8]) -> Result<Option<u64>, ParseError> {
    Ok(memory_events(bytes)?.oom_kill)
}

/// cgroup v1 reports "no limit" as PAGE_COUNTER_MAX rounded to the page size
/// (9223372036854771712 on 4 KiB pages); cAdvisor exports anything above 2^62 as 0.
pub fn limit_or_zero(value: u64) -> u64 {
    if value > (1u64 << 62) {
        0
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_local_vs_hierarchical() {
        let text =
            b"cache 10\nrss 20\ntotal_cache 100\ntotal_rss 200\ntotal_inactive_file 7\npgfault 3\n";
        let h = memory_stat_v1(text, true).expect("parse");
        assert_eq!(
            (h.rss, h.cache, h.inactive_file),
            (Some(200), Some(100), Some(7))
        );
        let l = memory_stat_v1(text, false).expect("parse");
        assert_eq!((l.rss, l.cache, l.pgfault), (Some(20), Some(10), Some(3)));
    }

    #[test]
    fn unlimited_is_zero() {
        assert_eq!(limit_or_zero(9223372036854771712), 0);
        assert_eq!(limit_or_zero(2147483648), 2147483648);
    }
}
