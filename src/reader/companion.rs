//! Counters that move only together with another counter of the same cgroup, read before
//! them: while the companion's content is what it was at the counter's last read, the counter
//! cannot have moved either, and what that read gave is served without a read.
//!
//! - v1 `cpuacct.stat` with `cpuacct.usage`. Since Linux 5.18 `cpuacct.stat` is the tick
//!   counts scaled to the precise run time (`cputime_adjust` over `cpuacct.usage`'s sum), and
//!   that function returns its previous result whenever the run time has not grown. Before
//!   5.18 it is the tick counts alone; a tick is charged to the task it interrupts, whose run
//!   time the same tick's `update_curr` charges to `cpuacct.usage`.
//! - v1 `blkio.throttle.io_service_bytes*` with `blkio.throttle.io_serviced*`: every bio that
//!   adds bytes also adds one to the operations, in the same accounting step.
//!
//! Both companions are monotonic counters (a write of 0 resets `cpuacct.usage`, and reaching
//! the same value again by the next scrape is not a case to design for), so the same content
//! at two reads means no change in between, and the counter's read, made between those two,
//! still holds. The key is a hash of the companion's whole content; the settled files' safety
//! net (`[reader] settled_refresh`) re-reads a counter however still its companion is.
//!
//! On v2 there is nothing to pair: `cpu.stat` and `io.stat` are one file each.

use std::hash::Hasher;

/// The key of a companion's content.
pub fn key(content: &[u8]) -> u64 {
    // SipHash with fixed keys: stable across reads, and no pair of real contents is expected
    // to collide (2^-64).
    let mut hasher = std::hash::DefaultHasher::new();
    hasher.write(content);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::super::{FdBudget, FileCache, Reader, Settled};
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_counter_is_read_again_only_when_its_companion_moved() {
        let d = tempfile::tempdir().expect("tempdir");
        let dir = d.path();
        let write = |body: &str| std::fs::write(dir.join("cpuacct.stat"), body).expect("write");
        write("user 1\nsystem 2\n");
        let settled = Settled::new(Duration::from_secs(3600));
        let mut reader = Reader::new(Some(FdBudget::new(8))).with_settled(settled);
        let mut cache = FileCache::default();
        let mut read = |key: u64| {
            reader.take_opens();
            let bytes = reader
                .read_cached_keyed(&mut cache, dir, "cpuacct.stat", key)
                .expect("read")
                .expect("present");
            let text = String::from_utf8_lossy(bytes).into_owned();
            (text, reader.take_opens() > 0, cache.open_count())
        };
        let (usage_a, usage_b) = (key(b"1000\n"), key(b"1001\n"));
        assert_eq!(read(usage_a), ("user 1\nsystem 2\n".into(), true, 1));
        // The file is changed here only to show what is read; the kernel would not change it
        // while the companion stood still.
        write("user 3\nsystem 4\n");
        assert_eq!(read(usage_a), ("user 1\nsystem 2\n".into(), false, 0));
        assert_eq!(read(usage_b), ("user 3\nsystem 4\n".into(), true, 1));
        write("user 5\nsystem 6\n");
        // Through the descriptor kept by that read, while the companion moves.
        assert_eq!(read(usage_a), ("user 5\nsystem 6\n".into(), false, 1));
        write("user 7\nsystem 8\n");
        assert_eq!(read(usage_a), ("user 5\nsystem 6\n".into(), false, 0));
    }

    #[test]
    fn without_the_safety_net_or_settled_files_every_read_is_made() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::write(d.path().join("cpuacct.stat"), "user 1\n").expect("write");
        for settled in [Settled::new(Duration::ZERO), None] {
            let mut reader = Reader::new(None).with_settled(settled);
            let mut cache = FileCache::default();
            for _ in 0..3 {
                reader.take_opens();
                reader
                    .read_cached_keyed(&mut cache, d.path(), "cpuacct.stat", 7)
                    .expect("read");
                assert_eq!(reader.take_opens(), 1);
            }
        }
    }
}
