//! Counters that a setting stops: while it does, the counter cannot move, so its file is not
//! read (nor kept open) until the setting is written or the safety net comes due.
//!
//! - v1 `cpu.stat` (`nr_periods`, `nr_throttled`, `throttled_time`) moves only while the
//!   cgroup has a CFS quota: the period timer returns before counting when `cpu.cfs_quota_us`
//!   is -1 (`do_sched_cfs_period_timer`), and the write that removes a quota unthrottles the
//!   cgroup's runqueues, adding their throttled time, before it returns. Checked on kernel
//!   6.18: a busy process under a quota, the quota removed, then `cpu.stat` unchanged for as
//!   long as it was watched. A parent's quota throttles a child's tasks but counts in the
//!   parent's file. (The `wait_sum` line that schedstats adds does move, but podstat does not
//!   export it.) v2's `cpu.stat` has CPU usage too and is never gated: its directory has no
//!   `cpu.cfs_quota_us`, which is how the gate is found.
//! - v1 `memory.failcnt` counts charges refused at this cgroup's own limit
//!   (`page_counter_try_charge` counts the failure on the counter that refused it, not on its
//!   children), so it cannot move while `memory.limit_in_bytes` is unlimited. A write to it
//!   resets it, so it is watched for writes as a settled file is.
//!
//! What makes it safe: the counter is served from a read made after the setting's last read,
//! and only while that setting is current (no write since, see [`super::settled`]). A write
//! that opens the gate and one that closes it again between two scrapes both queue an event,
//! so the setting is read again and the counter after it.

/// How a counter file is stopped by a setting in the same directory.
#[derive(Debug)]
pub struct Gate {
    /// The settled file whose content decides.
    pub setting: &'static str,
    /// Whether the setting, as read, stops the counter.
    pub stops: fn(&[u8]) -> bool,
    /// Whether a write to the counter's own file changes it (a reset): then it is watched too.
    pub reset_by_write: bool,
}

const CPU_STAT: Gate = Gate {
    setting: "cpu.cfs_quota_us",
    stops: no_quota,
    reset_by_write: false,
};

const FAILCNT: Gate = Gate {
    setting: "memory.limit_in_bytes",
    stops: no_limit,
    reset_by_write: true,
};

/// The gate of counter file `name`, if a setting can stop it.
pub fn gate_of(name: &str) -> Option<&'static Gate> {
    match name {
        "cpu.stat" => Some(&CPU_STAT),
        "memory.failcnt" => Some(&FAILCNT),
        _ => None,
    }
}

fn no_quota(setting: &[u8]) -> bool {
    setting.trim_ascii() == b"-1"
}

/// v1 shows "no limit" as the largest page count in bytes (9223372036854771712 with 4 KiB
/// pages); anything above 2^62 bytes is past any memory a machine has, as cAdvisor's and
/// podstat's own reading of the limit take it.
fn no_limit(setting: &[u8]) -> bool {
    std::str::from_utf8(setting.trim_ascii())
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .is_some_and(|bytes| bytes > 1 << 62)
}

#[cfg(test)]
mod tests {
    use super::super::{FdBudget, FileCache, Reader, Settled};
    use super::*;
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    /// One collection's reads of `names` in `dir`, as the collectors make them (the setting
    /// first): what each read gave, and whether any file was opened for it.
    fn collect(
        reader: &mut Reader,
        cache: &mut FileCache,
        dir: &Path,
        names: &[&'static str],
    ) -> Vec<(String, bool)> {
        reader.drain_settled();
        names
            .iter()
            .map(|name| {
                reader.take_opens();
                let bytes = reader.read_cached(cache, dir, name).expect("read");
                let text = String::from_utf8_lossy(bytes.expect("present")).into_owned();
                (text, reader.take_opens() > 0)
            })
            .collect()
    }

    fn write(dir: &Path, name: &str, body: &str) {
        std::fs::write(dir.join(name), body).expect("write");
    }

    #[test]
    fn a_counter_is_read_while_its_setting_lets_it_move_and_after_each_write() {
        let d = tempfile::tempdir().expect("tempdir");
        let dir = d.path();
        write(dir, "cpu.cfs_quota_us", "-1\n");
        write(dir, "cpu.stat", "nr_periods 0\n");
        let settled = Settled::new(Duration::from_secs(3600)).expect("inotify");
        let mut reader =
            Reader::new(Some(FdBudget::new(8))).with_settled(Some(Arc::clone(&settled)));
        let mut cache = FileCache::default();
        let names = ["cpu.cfs_quota_us", "cpu.stat"];
        let got = collect(&mut reader, &mut cache, dir, &names);
        assert_eq!(got[1], ("nr_periods 0\n".into(), true));
        // No quota: not read again, nor kept open. (The file is changed here only to show
        // that; the kernel does not change it.)
        write(dir, "cpu.stat", "nr_periods 1\n");
        for _ in 0..3 {
            let got = collect(&mut reader, &mut cache, dir, &names);
            assert!(!got[0].1, "the setting is settled");
            assert_eq!(got[1], ("nr_periods 0\n".into(), false));
            assert_eq!(cache.open_count(), 0);
        }
        // A quota: read (and kept) from the next collection on, every time.
        write(dir, "cpu.cfs_quota_us", "50000\n");
        let got = collect(&mut reader, &mut cache, dir, &names);
        assert_eq!(got[0], ("50000\n".into(), true));
        assert_eq!(got[1], ("nr_periods 1\n".into(), true));
        assert_eq!(cache.open_count(), 1);
        write(dir, "cpu.stat", "nr_periods 2\n");
        let got = collect(&mut reader, &mut cache, dir, &names);
        assert_eq!(
            got[1],
            ("nr_periods 2\n".into(), false),
            "through the kept descriptor"
        );
        // Quota removed: read once more after the setting, then served, its descriptor closed.
        write(dir, "cpu.stat", "nr_periods 3\n");
        write(dir, "cpu.cfs_quota_us", "-1\n");
        let got = collect(&mut reader, &mut cache, dir, &names);
        assert_eq!(got[1].0, "nr_periods 3\n");
        assert_eq!(cache.open_count(), 0);
        write(dir, "cpu.stat", "nr_periods 4\n");
        let got = collect(&mut reader, &mut cache, dir, &names);
        assert_eq!(got[1], ("nr_periods 3\n".into(), false));
        // Set and removed between two collections: both writes queue events, so it is read.
        write(dir, "cpu.cfs_quota_us", "20000\n");
        write(dir, "cpu.cfs_quota_us", "-1\n");
        let got = collect(&mut reader, &mut cache, dir, &names);
        assert_eq!(got[1], ("nr_periods 4\n".into(), true));
        // An overflowed event queue rereads everything, the counter included.
        write(dir, "cpu.stat", "nr_periods 5\n");
        settled.overflowed();
        let got = collect(&mut reader, &mut cache, dir, &names);
        assert_eq!(got[1].0, "nr_periods 5\n");
    }

    #[test]
    fn a_stopped_counter_that_a_write_resets_is_read_after_the_reset() {
        let d = tempfile::tempdir().expect("tempdir");
        let dir = d.path();
        write(dir, "memory.limit_in_bytes", "9223372036854771712\n");
        write(dir, "memory.failcnt", "17\n");
        let settled = Settled::new(Duration::from_secs(3600)).expect("inotify");
        let mut reader = Reader::new(None).with_settled(Some(Arc::clone(&settled)));
        let mut cache = FileCache::default();
        let names = ["memory.limit_in_bytes", "memory.failcnt"];
        collect(&mut reader, &mut cache, dir, &names);
        let got = collect(&mut reader, &mut cache, dir, &names);
        assert_eq!(got[1], ("17\n".into(), false));
        assert_eq!(settled.watches(), 2, "the limit and the counter");
        write(dir, "memory.failcnt", "0\n");
        let got = collect(&mut reader, &mut cache, dir, &names);
        assert_eq!(got[1], ("0\n".into(), true));
        let got = collect(&mut reader, &mut cache, dir, &names);
        assert_eq!(got[1], ("0\n".into(), false));
        // A limit: read every time (no descriptor budget here, so opened every time).
        write(dir, "memory.limit_in_bytes", "268435456\n");
        for _ in 0..2 {
            let got = collect(&mut reader, &mut cache, dir, &names);
            assert!(got[1].1);
        }
    }

    #[test]
    fn a_counter_without_its_setting_beside_it_is_read_every_time() {
        // v2's cpu.stat: CPU usage too, and no cpu.cfs_quota_us in its directory.
        let d = tempfile::tempdir().expect("tempdir");
        let dir = d.path();
        write(dir, "cpu.max", "max 100000\n");
        write(dir, "cpu.stat", "usage_usec 1\n");
        let settled = Settled::new(Duration::from_secs(3600)).expect("inotify");
        let mut reader = Reader::new(None).with_settled(Some(settled));
        let mut cache = FileCache::default();
        for _ in 0..3 {
            let got = collect(&mut reader, &mut cache, dir, &["cpu.max", "cpu.stat"]);
            assert!(got[1].1);
        }
    }

    #[test]
    fn what_stops_a_counter() {
        assert!(no_quota(b"-1\n"));
        for open in [&b"50000\n"[..], b"", b"-10\n", b"garbage"] {
            assert!(!no_quota(open), "{open:?}");
        }
        assert!(no_limit(b"9223372036854771712\n"));
        for open in [
            &b"268435456\n"[..],
            b"",
            b"-1\n",
            b"max\n",
            b"4611686018427387904\n",
        ] {
            assert!(!no_limit(open), "{open:?}");
        }
        assert!(gate_of("cpu.stat").is_some() && gate_of("memory.failcnt").is_some());
        assert!(gate_of("cpuacct.usage").is_none() && gate_of("memory.stat").is_none());
    }
}
