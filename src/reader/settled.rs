//! Files whose content changes only when it is written, or whose changes the kernel announces,
//! are read once and then again only after a notification: the limits and weights (`cpu.max`,
//! `memory.max`, `pids.max`, v1's `cpu.cfs_quota_us`, `memory.limit_in_bytes`, …) and v2's
//! `memory.events`. A kept descriptor for them would cost kernel memory for a read that is not
//! needed, so they are closed after each read.
//!
//! How a change is seen: an inotify watch with `IN_MODIFY` on the file itself. A `write(2)` to
//! it queues the event before the write returns (fsnotify_modify in vfs_write; checked on v1
//! and v2 cgroupfs), so a collection that starts after a write sees it: each collection first
//! drains the queue, and a file with an event is read again. `cpu.weight` is also watched
//! through `cpu.weight.nice`, which sets it. The kernel announces `memory.events` changes the
//! same way (cgroup_file_notify), at most every 20 ms per file and from a workqueue: a count can
//! be one such interval late, never more. The files are watched, not their directories: a
//! directory watch for `IN_MODIFY` makes every read of every file in it (`memory.stat`,
//! `cpu.stat`, … on every scrape) pass through fsnotify's parent lookup, a cost on the hot
//! path that watching the file alone does not add. A file that cannot be
//! watched (the `fs.inotify.max_user_watches` limit) is read on every collection through a
//! kept descriptor like any other, and a queue overflow makes every settled file be read
//! again. As a safety net each one is re-read at least every `[reader] settled_refresh` (5 minutes)
//! anyway.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

/// Whether `name` is a settled file: a limit or weight, changed only by a write to it (or, for
/// `cpu.weight`, to `cpu.weight.nice`), or v2's `memory.events`, whose changes the kernel
/// announces.
pub fn is_settled(name: &str) -> bool {
    matches!(
        name,
        "cpu.max"
            | "cpu.weight"
            | "memory.max"
            | "memory.high"
            | "memory.low"
            | "memory.min"
            | "memory.swap.max"
            | "pids.max"
            | "memory.events"
            | "cpu.cfs_period_us"
            | "cpu.cfs_quota_us"
            | "cpu.shares"
            | "memory.limit_in_bytes"
            | "memory.memsw.limit_in_bytes"
            | "memory.soft_limit_in_bytes"
    )
}

/// One inotify instance for every watched cgroup file, shared by the readers' caches.
#[derive(Debug)]
pub struct Settled {
    inner: Mutex<Inner>,
    /// Bumped when the kernel dropped events: every settled file is read again.
    epoch: AtomicU64,
    refresh: Duration,
    limit_warned: AtomicBool,
}

#[derive(Debug)]
struct Inner {
    inotify: Inotify,
    by_watch: HashMap<WatchDescriptor, Arc<AtomicU64>>,
}

/// A watched file: its change count, and its watches (the file, and for `cpu.weight` also
/// `cpu.weight.nice`), removed when the slot that holds them goes.
#[derive(Debug)]
pub struct FileWatch {
    wds: Vec<WatchDescriptor>,
    changes: Arc<AtomicU64>,
    owner: Arc<Settled>,
}

impl Drop for FileWatch {
    fn drop(&mut self) {
        self.owner.lock().unwatch(&self.wds);
    }
}

impl Inner {
    fn unwatch(&mut self, wds: &[WatchDescriptor]) {
        for wd in wds {
            self.by_watch.remove(wd);
            // EINVAL when the file's cgroup was removed (the kernel dropped the watch): expected.
            let _ = self.inotify.rm_watch(*wd);
        }
    }
}

/// The bit of a change count that says the watch ended.
const DEAD: u64 = 1 << 63;

impl FileWatch {
    /// Whether the kernel ended one of its watches: the slot is to be watched afresh.
    pub fn is_dead(&self) -> bool {
        self.changes.load(Ordering::Relaxed) & DEAD != 0
    }
}

/// Files whose writes change `name` too.
fn also_set_by(name: &str) -> &'static [&'static str] {
    match name {
        "cpu.weight" => &["cpu.weight.nice"],
        _ => &[],
    }
}

/// What a settled read saw: the file's change count and the overflow epoch before the
/// read, and when it was made. Equal counts later mean nothing was written since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    changes: u64,
    epoch: u64,
    at: Instant,
}

impl Stamp {
    /// When the read it stamps began.
    pub fn at(&self) -> Instant {
        self.at
    }

    /// This stamp with the change count moved on: current for no later check.
    pub fn changed(self) -> Stamp {
        Stamp {
            changes: self.changes.wrapping_sub(1),
            ..self
        }
    }
}

impl Settled {
    /// None (and a warning) when no inotify instance can be created: every file is then read
    /// on every collection, as before.
    pub fn new(refresh: Duration) -> Option<Arc<Settled>> {
        match Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC) {
            Ok(inotify) => Some(Arc::new(Settled {
                inner: Mutex::new(Inner {
                    inotify,
                    by_watch: HashMap::new(),
                }),
                epoch: AtomicU64::new(0),
                refresh,
                limit_warned: AtomicBool::new(false),
            })),
            Err(e) => {
                tracing::warn!(error = %e, "cannot create an inotify instance; limits and weights will be read on every collection");
                None
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Watches `dir/name` for writes. Call before its first read, so a write between the read
    /// and the watch cannot be missed. `Ok(None)`: it cannot be watched (the watch limit) and
    /// is to be read on every collection; `Err`: it could not be watched because it is not
    /// there (ENOENT) or for another reason.
    pub fn watch(self: &Arc<Self>, dir: &Path, name: &str) -> Result<Option<FileWatch>, Errno> {
        let mut inner = self.lock();
        let changes = Arc::new(AtomicU64::new(0));
        let mut wds = Vec::with_capacity(1);
        for (i, file) in std::iter::once(name)
            .chain(also_set_by(name).iter().copied())
            .enumerate()
        {
            match inner
                .inotify
                .add_watch(&dir.join(file), AddWatchFlags::IN_MODIFY)
            {
                Ok(wd) => {
                    inner.by_watch.insert(wd, Arc::clone(&changes));
                    wds.push(wd);
                }
                // A file that sets this one but does not exist here cannot set it.
                Err(Errno::ENOENT) if i > 0 => {}
                Err(e) => {
                    inner.unwatch(&wds);
                    if e != Errno::ENOSPC {
                        return Err(e);
                    }
                    if !self.limit_warned.swap(true, Ordering::Relaxed) {
                        tracing::warn!(dir = %dir.display(), "inotify watch limit reached (fs.inotify.max_user_watches): limits and weights past it are read on every collection");
                    }
                    return Ok(None);
                }
            }
        }
        Ok(Some(FileWatch {
            wds,
            changes,
            owner: Arc::clone(self),
        }))
    }

    /// Moves every pending event into the watched files' change counts, without blocking. Run at
    /// the start of each collection.
    pub fn drain(&self) {
        let inner = self.lock();
        loop {
            match inner.inotify.read_events() {
                Ok(events) if events.is_empty() => return,
                Ok(events) => {
                    for event in events {
                        if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                            self.epoch.fetch_add(1, Ordering::Relaxed);
                        } else if let Some(changes) = inner.by_watch.get(&event.wd) {
                            // IN_IGNORED: the kernel ended the watch (its file went away): read
                            // the file again and watch it afresh.
                            let dead = if event.mask.contains(AddWatchFlags::IN_IGNORED) {
                                DEAD
                            } else {
                                0
                            };
                            changes.fetch_add(1, Ordering::Relaxed);
                            changes.fetch_or(dead, Ordering::Relaxed);
                        }
                    }
                }
                Err(Errno::EAGAIN) => return,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "reading inotify events failed; reading every limit again");
                    self.epoch.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
    }

    /// What a queue overflow does: every settled file is read again.
    #[cfg(test)]
    pub(super) fn overflowed(&self) {
        self.epoch.fetch_add(1, Ordering::Relaxed);
    }

    /// How long a read is trusted without an event: the safety net.
    pub fn refresh(&self) -> Duration {
        self.refresh
    }

    /// Files watched now.
    pub fn watches(&self) -> usize {
        self.lock().by_watch.len()
    }

    /// The stamp to store with a read of the watched file made now.
    pub fn stamp(&self, file: &FileWatch) -> Stamp {
        self.stamp_of(Some(file))
    }

    /// Whether a read stamped `then` still holds the file's content.
    pub fn is_current(&self, file: &FileWatch, then: &Stamp) -> bool {
        self.holds(Some(file), then)
    }

    /// [`Settled::stamp`] for a file that may have no watch (a gated counter no write
    /// changes, see [`super::gated`]): then only the overflow epoch and the time count.
    pub fn stamp_of(&self, file: Option<&FileWatch>) -> Stamp {
        Stamp {
            changes: file.map_or(0, |f| f.changes.load(Ordering::Relaxed)),
            epoch: self.epoch.load(Ordering::Relaxed),
            at: Instant::now(),
        }
    }

    /// [`Settled::is_current`] for a file that may have no watch.
    pub fn holds(&self, file: Option<&FileWatch>, then: &Stamp) -> bool {
        then.changes == file.map_or(0, |f| f.changes.load(Ordering::Relaxed))
            && then.epoch == self.epoch.load(Ordering::Relaxed)
            && then.at.elapsed() < self.refresh
    }
}

#[cfg(test)]
mod tests {
    use super::super::{FdBudget, FileCache, ReadError, Reader};
    use super::*;

    fn read(reader: &mut Reader, cache: &mut FileCache, dir: &Path, name: &'static str) -> String {
        let bytes = reader.read_cached(cache, dir, name).expect("read");
        String::from_utf8_lossy(bytes.expect("present")).into_owned()
    }

    /// Reads `name` once more and says whether the file was opened for it.
    fn opened(reader: &mut Reader, cache: &mut FileCache, dir: &Path, name: &'static str) -> bool {
        reader.drain_settled();
        reader.take_opens();
        read(reader, cache, dir, name);
        reader.take_opens() > 0
    }

    #[test]
    fn a_settled_file_is_read_again_only_after_a_write_to_it() {
        let d = tempfile::tempdir().expect("tempdir");
        let dir = d.path();
        let file = dir.join("cpu.max");
        std::fs::write(&file, "max 100000\n").expect("write");
        let settled = Settled::new(Duration::from_secs(3600)).expect("inotify");
        let mut reader =
            Reader::new(Some(FdBudget::new(8))).with_settled(Some(Arc::clone(&settled)));
        let mut cache = FileCache::default();
        assert!(opened(&mut reader, &mut cache, dir, "cpu.max"));
        assert_eq!(cache.open_count(), 0, "a settled file keeps no descriptor");
        assert_eq!(settled.watches(), 1);
        assert!(!opened(&mut reader, &mut cache, dir, "cpu.max"));
        assert_eq!(
            read(&mut reader, &mut cache, dir, "cpu.max"),
            "max 100000\n"
        );
        // Writes to other files of the directory do not make it read again.
        std::fs::write(dir.join("cpu.stat"), "usage_usec 1\n").expect("write");
        assert!(!opened(&mut reader, &mut cache, dir, "cpu.max"));
        // A write to the file itself does, once.
        std::fs::write(&file, "50000 100000\n").expect("write");
        assert!(opened(&mut reader, &mut cache, dir, "cpu.max"));
        assert_eq!(
            read(&mut reader, &mut cache, dir, "cpu.max"),
            "50000 100000\n"
        );
        assert!(!opened(&mut reader, &mut cache, dir, "cpu.max"));
        // cpu.weight.nice sets cpu.weight: a write to it counts for cpu.weight.
        std::fs::write(dir.join("cpu.weight"), "100\n").expect("write");
        std::fs::write(dir.join("cpu.weight.nice"), "0\n").expect("write");
        assert!(opened(&mut reader, &mut cache, dir, "cpu.weight"));
        assert!(!opened(&mut reader, &mut cache, dir, "cpu.weight"));
        std::fs::write(dir.join("cpu.weight.nice"), "5\n").expect("write");
        assert!(opened(&mut reader, &mut cache, dir, "cpu.weight"));
        assert_eq!(settled.watches(), 3, "cpu.max, cpu.weight, cpu.weight.nice");
        // A file replaced (its watch ended by the kernel) is read and watched afresh.
        let fresh = dir.with_extension("new");
        std::fs::write(&fresh, "20000 100000\n").expect("write");
        std::fs::rename(&fresh, &file).expect("rename");
        assert!(opened(&mut reader, &mut cache, dir, "cpu.max"));
        assert_eq!(
            read(&mut reader, &mut cache, dir, "cpu.max"),
            "20000 100000\n"
        );
        std::fs::write(&file, "30000 100000\n").expect("write");
        assert!(opened(&mut reader, &mut cache, dir, "cpu.max"));
        assert_eq!(
            read(&mut reader, &mut cache, dir, "cpu.max"),
            "30000 100000\n"
        );
        // Other files are read (and kept) as before.
        assert!(opened(&mut reader, &mut cache, dir, "cpu.stat"));
        assert_eq!(cache.open_count(), 1);
        // The cache gone (its cgroup left discovery): its watches go with it.
        drop(cache);
        assert_eq!(settled.watches(), 0);
    }

    #[test]
    fn the_safety_net_rereads_without_an_event() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::write(d.path().join("pids.max"), "max\n").expect("write");
        let settled = Settled::new(Duration::ZERO).expect("inotify");
        let mut reader = Reader::new(None).with_settled(Some(settled));
        let mut cache = FileCache::default();
        assert!(opened(&mut reader, &mut cache, d.path(), "pids.max"));
        assert!(opened(&mut reader, &mut cache, d.path(), "pids.max"));
    }

    #[test]
    fn an_absent_settled_file_stays_absent_and_a_queue_overflow_rereads_everything() {
        let d = tempfile::tempdir().expect("tempdir");
        let settled = Settled::new(Duration::from_secs(3600)).expect("inotify");
        let mut reader = Reader::new(None).with_settled(Some(Arc::clone(&settled)));
        let mut cache = FileCache::default();
        assert!(matches!(
            reader.read_cached(&mut cache, d.path(), "memory.swap.max"),
            Err(ReadError::Missing(_))
        ));
        assert!(matches!(
            reader.read_cached(&mut cache, d.path(), "memory.swap.max"),
            Ok(None)
        ));
        std::fs::write(d.path().join("memory.max"), "1000\n").expect("write");
        assert!(opened(&mut reader, &mut cache, d.path(), "memory.max"));
        assert!(!opened(&mut reader, &mut cache, d.path(), "memory.max"));
        settled.epoch.fetch_add(1, Ordering::Relaxed);
        assert!(opened(&mut reader, &mut cache, d.path(), "memory.max"));
    }
}
