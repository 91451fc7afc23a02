//! The one place that reads files on the scrape path. It reuses one buffer and one path buffer
//! for every read, and sorts failures into "the file is not there", "the cgroup or process is
//! gone" and real I/O errors, because the collectors treat those three very differently.
//!
//! Cgroup files are read through a per-cgroup [`FileCache`]: the descriptor is kept open and
//! re-read with `pread` at offset 0, because cgroupfs (kernfs seq_file) regenerates the content
//! on each read from offset 0, and an open/read/close costs several times a pread (see
//! `benches/floor.rs`). A removed cgroup answers ENODEV on its kept descriptors, which is the
//! same "vanished" signal as before; a cgroup recreated under the same path is a new target
//! (discovery keys targets by inode) with a new cache. Open descriptors are bounded by an
//! [`FdBudget`]; past it, files are opened and closed per read as without the cache.

use std::fs::File;
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use crate::config::MaxOpenFiles;

pub mod companion;
pub mod gated;
pub mod settled;

pub use settled::Settled;
use settled::{FileWatch, Stamp};

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// ENOENT: the file does not exist (controller off, old kernel) or its cgroup was removed;
    /// or EOPNOTSUPP: it exists but its feature is off (a kernel booted with PSI disabled that
    /// still shows the `*.pressure` files, 4.20 to about 6.0, fails every read of them).
    #[error("{0}: no such file, or its feature is off")]
    Missing(PathBuf),
    /// ENODEV/ESRCH: the cgroup or process went away between open and read.
    #[error("{0}: gone while reading")]
    Vanished(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl ReadError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            ReadError::Missing(p) | ReadError::Vanished(p) | ReadError::Io { path: p, .. } => p,
        }
    }
}

/// How many descriptors the file caches may hold open together, shared by all of them.
#[derive(Debug, Clone)]
pub struct FdBudget {
    kept: Arc<Kept>,
    limit: usize,
}

/// The descriptors the caches hold: which numbers, and so how many. The numbers let the
/// process_files collector count podstat's own descriptors without a readlink for each kept
/// cgroup file (it knows they are not sockets): at 1,000 containers that is ~19,000 readlinks,
/// about half a scrape's CPU, spent by podstat on looking at itself.
#[derive(Debug, Default)]
struct Kept(Mutex<KeptSet>);

#[derive(Debug, Default)]
struct KeptSet {
    /// One bit per descriptor number.
    bits: Vec<u64>,
    /// The bits set.
    count: usize,
}

impl Kept {
    fn set(&self) -> MutexGuard<'_, KeptSet> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl KeptSet {
    fn insert(&mut self, fd: usize) {
        let (word, bit) = (fd / 64, 1u64 << (fd % 64));
        if self.bits.len() <= word {
            self.bits.resize(word + 1, 0);
        }
        if self.bits[word] & bit == 0 {
            self.bits[word] |= bit;
            self.count += 1;
        }
    }

    fn remove(&mut self, fd: usize) {
        let (word, bit) = (fd / 64, 1u64 << (fd % 64));
        if let Some(w) = self.bits.get_mut(word).filter(|w| **w & bit != 0) {
            *w &= !bit;
            self.count -= 1;
        }
    }
}

/// The descriptor numbers the caches hold open, fixed while this is held: closing a kept
/// descriptor waits for it (so the holder must not close one itself).
pub struct KeptNumbers<'a>(MutexGuard<'a, KeptSet>);

impl KeptNumbers<'_> {
    pub fn contains(&self, fd: usize) -> bool {
        self.0
            .bits
            .get(fd / 64)
            .is_some_and(|word| word & (1u64 << (fd % 64)) != 0)
    }

    pub fn count(&self) -> u64 {
        self.0.count as u64
    }

    /// One past the highest kept number (0 when none is kept).
    pub fn end(&self) -> usize {
        let bits = &self.0.bits;
        bits.iter()
            .rposition(|w| *w != 0)
            .map_or(0, |i| i * 64 + 64 - bits[i].leading_zeros() as usize)
    }
}

/// Descriptors left for logs, the kubelet connection, the listener and reads outside the
/// caches; the HTTP connections get their own share on top ([`FdBudget::from_config`]).
const FD_RESERVE: u64 = 256;

/// Raises the soft RLIMIT_NOFILE to the hard limit and returns the new soft limit. podstat
/// uses epoll, never select(), so descriptors above 1024 are safe.
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(std::io::Error::from)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(std::io::Error::from)?;
        return Ok(hard);
    }
    Ok(soft)
}

impl FdBudget {
    /// The budget for `configured`, never more than the soft RLIMIT_NOFILE allows (minus a
    /// reserve). `Auto` also keeps the kernel memory of kept descriptors inside podstat's own
    /// memory limit, looked up through `proc_root` (see [`crate::memlimit`]); `Count(0)` is the
    /// RLIMIT alone. Logs what it chose.
    ///
    /// `connections` descriptors (`[server] max_connections`) are set apart as well, so no
    /// number of HTTP clients can take a descriptor from the caches, nor the caches from them.
    pub fn from_config(configured: MaxOpenFiles, proc_root: &Path, connections: usize) -> FdBudget {
        use nix::sys::resource::{getrlimit, Resource};
        let soft = getrlimit(Resource::RLIMIT_NOFILE)
            .map(|(soft, _)| soft)
            .unwrap_or(1024);
        let reserve = FD_RESERVE.saturating_add(u64::try_from(connections).unwrap_or(u64::MAX));
        let allowed = usize::try_from(soft.saturating_sub(reserve)).unwrap_or(usize::MAX);
        let memory = (configured == MaxOpenFiles::Auto)
            .then(|| crate::memlimit::own_memory_limit(proc_root))
            .flatten();
        let limit = match (configured, &memory) {
            (MaxOpenFiles::Count(0), _) | (MaxOpenFiles::Auto, None) => allowed,
            (MaxOpenFiles::Count(n), _) => n.min(allowed),
            (MaxOpenFiles::Auto, Some((bytes, _))) => {
                crate::memlimit::descriptors_within(*bytes).min(allowed)
            }
        };
        match &memory {
            Some((bytes, file)) => tracing::info!(
                kept_descriptors_limit = limit,
                memory_limit = bytes,
                limit_file = %file.display(),
                "cgroup files kept open within the memory limit (about 5 KiB of kernel memory each)"
            ),
            None => tracing::info!(
                kept_descriptors_limit = limit,
                "cgroup files kept open (bounded by RLIMIT_NOFILE and [reader] max_open_files; no memory limit applies)"
            ),
        }
        FdBudget::new(limit)
    }

    pub fn new(limit: usize) -> FdBudget {
        FdBudget {
            kept: Arc::new(Kept::default()),
            limit,
        }
    }

    /// Descriptors held open by file caches now.
    pub fn in_use(&self) -> usize {
        self.kept.set().count
    }

    /// Which descriptor numbers the caches hold. Dropping a kept file waits while this is held.
    pub fn kept_numbers(&self) -> KeptNumbers<'_> {
        KeptNumbers(self.kept.set())
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Keeps `file` when the budget has room.
    fn try_keep(&self, file: File) -> Option<KeptFile> {
        let mut set = self.kept.set();
        if set.count >= self.limit {
            return None;
        }
        set.insert(fd_number(&file));
        drop(set);
        Some(KeptFile {
            file,
            budget: Arc::clone(&self.kept),
        })
    }
}

fn fd_number(file: &File) -> usize {
    usize::try_from(file.as_raw_fd()).unwrap_or(0)
}

/// A kept descriptor; gives its budget slot back when closed.
#[derive(Debug)]
struct KeptFile {
    file: File,
    budget: Arc<Kept>,
}

impl Drop for KeptFile {
    fn drop(&mut self) {
        // The number is cleared before the descriptor closes (the field drops after this), so
        // a number reused by a new socket is never taken for a kept file.
        self.budget.set().remove(fd_number(&self.file));
    }
}

#[derive(Debug)]
enum Slot {
    Open(KeptFile),
    /// ENOENT at the last lookup; looked up again after this many more reads are skipped.
    /// Files appear later only when a controller is enabled on a live cgroup, which is rare,
    /// so this trades a short delay in that case for no failed open per scrape otherwise.
    Absent {
        skip: u32,
    },
    /// A settled file (see [`settled`]): its content at the stamped read, served until the
    /// file is written to. No descriptor is kept for it.
    Settled {
        bytes: Box<[u8]>,
        stamp: Stamp,
        watch: FileWatch,
    },
    /// A counter that a setting can stop (see [`gated`]): its content at the stamped read,
    /// served while the setting stops it. The descriptor is kept only while it does not (a
    /// read while the gate is open stamps nothing that can be served).
    Gated {
        kept: Option<KeptFile>,
        bytes: Box<[u8]>,
        stamp: Stamp,
        /// For a counter that a write resets.
        watch: Option<FileWatch>,
    },
    /// A counter that moves only with a companion read before it (see [`companion`]): its
    /// content at the last read, served while the companion's key is what it was then. The
    /// descriptor is closed while it is served.
    Keyed {
        kept: Option<KeptFile>,
        bytes: Box<[u8]>,
        /// The companion's key at the last read; None: nothing to serve yet.
        key: Option<u64>,
        at: Instant,
    },
}

/// Reads skipped before an absent file is looked up again.
const ABSENT_RECHECK: u32 = 16;

/// The kept descriptors of one cgroup, keyed by file name and directory (a cgroup has one
/// directory per v1 controller, and `cpu.stat` exists in two of them on hybrid hosts).
#[derive(Debug, Default)]
pub struct FileCache {
    slots: Vec<(&'static str, usize, Slot)>,
    /// Where the next lookup starts: the collectors read a cgroup's files in the same order
    /// every time, so the slot after the last one found is almost always the one wanted.
    next: usize,
}

impl FileCache {
    /// Adds a slot for the file just read; the next lookup starts after it.
    fn push(&mut self, name: &'static str, dir_key: usize, slot: Slot) {
        // A cache fills once to ~19 slots; growing by 8 instead of doubling keeps ~0.4 MiB of
        // unused capacity off a 1000-container node.
        if self.slots.len() == self.slots.capacity() {
            self.slots.reserve_exact(8);
        }
        self.slots.push((name, dir_key, slot));
        self.next = self.slots.len();
    }

    /// Closes what was kept for `dir` (a directory that is no longer used, such as the
    /// `/proc/<pid>/net` of a process that was replaced).
    pub fn forget_dir(&mut self, dir: &Path) {
        let key = dir.as_os_str().as_encoded_bytes().as_ptr() as usize;
        self.slots.retain(|(_, d, _)| *d != key);
    }

    /// Slot `i` failed a read with `err`: an absent file (or one whose feature is off) waits
    /// [`ABSENT_RECHECK`] reads before it is looked up again; any other failure drops the slot,
    /// so the next read starts afresh.
    fn failed(&mut self, i: usize, err: &ReadError) {
        if matches!(err, ReadError::Missing(_)) {
            let skip = ABSENT_RECHECK;
            self.slots[i].2 = Slot::Absent { skip };
        } else {
            self.slots.swap_remove(i);
        }
    }

    /// The slot of `name` in the directory `dir_key`, leaving where the next lookup starts.
    fn peek(&self, dir_key: usize, name: &str) -> Option<&Slot> {
        self.slots
            .iter()
            .find(|(n, d, _)| *d == dir_key && *n == name)
            .map(|(_, _, slot)| slot)
    }

    /// The slot of `name` in the directory `dir_key`; the next lookup starts after it.
    fn find(&mut self, dir_key: usize, name: &'static str) -> Option<usize> {
        // Names are literals: the same address almost always, so that is compared first.
        let is_it = |(n, d, _): &(&'static str, usize, Slot)| {
            *d == dir_key && (std::ptr::eq(*n, name) || *n == name)
        };
        let found = match self.slots.get(self.next) {
            Some(slot) if is_it(slot) => Some(self.next),
            _ => self.slots.iter().position(is_it),
        }?;
        self.next = found + 1;
        Some(found)
    }

    /// Descriptors this cache holds open.
    pub fn open_count(&self) -> usize {
        self.slots
            .iter()
            .filter(|(_, _, s)| {
                matches!(
                    s,
                    Slot::Open(_)
                        | Slot::Gated { kept: Some(_), .. }
                        | Slot::Keyed { kept: Some(_), .. }
                )
            })
            .count()
    }
}

/// Copies `content` into `bytes`, reusing its allocation when the length is the same.
fn store(bytes: &mut Box<[u8]>, content: &[u8]) {
    if bytes.len() == content.len() {
        bytes.copy_from_slice(content);
    } else {
        *bytes = content.into();
    }
}

/// The descriptor of a kept file's slot, taken out of it (the slot is left to be replaced).
fn take_open(slot: &mut Slot) -> Option<KeptFile> {
    match std::mem::replace(slot, Slot::Absent { skip: 0 }) {
        Slot::Open(file) => Some(file),
        other => {
            *slot = other;
            None
        }
    }
}

/// Reads whole small files into a reused buffer.
pub struct Reader {
    buf: Vec<u8>,
    path: PathBuf,
    /// Files opened since the last [`Reader::take_opens`], for self-metrics.
    opens: u64,
    budget: Option<FdBudget>,
    /// Reads settled files only after a change (None: every file on every read).
    settled: Option<Arc<Settled>>,
}

impl Default for Reader {
    fn default() -> Self {
        Reader::new(None)
    }
}

fn classify(path: &Path, e: std::io::Error) -> ReadError {
    const ENODEV: i32 = 19;
    const ESRCH: i32 = 3;
    const EOPNOTSUPP: i32 = 95;
    match (e.kind(), e.raw_os_error()) {
        // A feature switched off is the same to a reader as a file that is not there: no
        // series, and neither an error counted nor a warning logged per cgroup per scrape.
        (ErrorKind::NotFound, _) | (_, Some(EOPNOTSUPP)) => ReadError::Missing(path.to_path_buf()),
        (_, Some(ENODEV | ESRCH)) => ReadError::Vanished(path.to_path_buf()),
        _ => ReadError::Io {
            path: path.to_path_buf(),
            source: e,
        },
    }
}

/// Opens `path` for reading if it is a regular file, as every cgroupfs, procfs and sysfs file
/// podstat reads is. A FIFO in its place would block the open or the first read forever (the
/// whole collection with it), and a device (a link to `/dev/zero`) would be read without end:
/// the open does not block (O_NONBLOCK, which regular files ignore) and anything but a regular
/// file is an I/O error for that file, counted and logged like any other. Nor is a symbolic
/// link followed (O_NOFOLLOW): kernel files are never links, and one in a tree podstat reads
/// (a bind-mounted or copied tree) could point anywhere on the host, `/etc/shadow` included.
/// Directories that are links are not walked either (discovery looks at the entry itself).
fn open_kernel_file(path: &Path) -> std::io::Result<File> {
    use nix::fcntl::OFlag;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NONBLOCK | OFlag::O_NOFOLLOW).bits())
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(nix::errno::Errno::ELOOP as i32) {
                std::io::Error::new(
                    ErrorKind::InvalidInput,
                    "a symbolic link: no cgroup or proc file is, and podstat does not follow links",
                )
            } else {
                e
            }
        })?;
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        return Err(std::io::Error::new(
            ErrorKind::InvalidInput,
            format!("not a regular file ({kind:?}): no cgroup or proc file is"),
        ));
    }
    Ok(file)
}

/// The most a file may hold. A cgroup file is a few KiB; `cgroup.procs` of 100,000 processes
/// or `net/dev` of 5,000 interfaces is under 1 MiB. Past this the file is no kernel file podstat
/// expects (a link to `/dev/zero`, a huge regular file) and reading it is an error, not an
/// unbounded allocation.
pub const MAX_FILE_BYTES: usize = 16 << 20;

/// Whether a short read of `name` (read from a cgroup directory) is its end, so the read that
/// returns 0 can be skipped.
///
/// Every cgroup control file is a kernfs seq_file whose `show` writes the whole content as one
/// record, and `seq_read_iter` grows its buffer until that record fits: a read that returns
/// less than was asked returned all of it. The process and thread lists are the exception:
/// they iterate, one record per PID (`cgroup_procs_start/next`), and a read returns about a
/// page of them (819 of 902 PIDs were counted when a short read was taken for the end). So do
/// procfs files such as `/proc/<pid>/net/dev` (one record per interface), which is why
/// anything that is not a `controller.file` name reads on to the zero-length read.
fn short_read_is_end(name: &str) -> bool {
    name.contains('.') && !matches!(name, "cgroup.procs" | "cgroup.threads" | "tasks")
}

/// Reads `file` from offset 0 to its end into `buf`, returning the length read. `buf` stays
/// fully initialised at its full length (grown by doubling), so no read pays for zeroing.
///
/// The end is a read that returns 0, except where `short_is_end` says a short read already
/// was the end (see [`short_read_is_end`]); that skips one syscall per cgroup file per scrape.
/// Each read continues at the offset the last one ended, which a seq_file serves from where it
/// stopped instead of regenerating the file up to that offset.
fn read_whole(file: &File, buf: &mut Vec<u8>, short_is_end: bool) -> std::io::Result<usize> {
    const MIN_ROOM: usize = 4096;
    let mut len = 0;
    loop {
        if buf.len() - len < MIN_ROOM {
            if buf.len() >= MAX_FILE_BYTES {
                // The buffer is reused for every read: give the memory back.
                buf.truncate(64 * 1024);
                buf.shrink_to_fit();
                return Err(std::io::Error::other(format!(
                    "longer than {MAX_FILE_BYTES} bytes: not a cgroup or proc file podstat reads"
                )));
            }
            let grown = (buf.len() * 2).clamp(64 * 1024, MAX_FILE_BYTES);
            buf.resize(grown, 0);
        }
        let room = buf.len() - len;
        let n = loop {
            match file.read_at(&mut buf[len..], len as u64) {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        len += n;
        if n == 0 || (short_is_end && n < room) {
            return Ok(len);
        }
    }
}

impl Reader {
    /// A reader whose cached reads keep descriptors open within `budget` (None: never keep).
    pub fn new(budget: Option<FdBudget>) -> Reader {
        Reader {
            buf: vec![0; 64 * 1024],
            path: PathBuf::with_capacity(512),
            opens: 0,
            budget,
            settled: None,
        }
    }

    /// Serves settled files (limits, weights, v2 `memory.events`) from what was read until
    /// `settled` reports a write to them.
    pub fn with_settled(mut self, settled: Option<Arc<Settled>>) -> Reader {
        self.settled = settled;
        self
    }

    /// Takes in the writes reported since the last call; run before each collection.
    pub fn drain_settled(&self) {
        if let Some(s) = &self.settled {
            s.drain();
        }
    }

    /// Files watched for writes (settled files, and `cpu.weight.nice` for `cpu.weight`).
    pub fn settled_watches(&self) -> usize {
        self.settled.as_ref().map_or(0, |s| s.watches())
    }

    fn set_path(&mut self, dir: &Path, name: &str) {
        self.path.as_mut_os_string().clear();
        self.path.push(dir);
        self.path.push(name);
    }

    /// Reads `dir/name`, opening and closing it. The returned slice lives until the next read.
    pub fn read(&mut self, dir: &Path, name: &str) -> Result<&[u8], ReadError> {
        self.set_path(dir, name);
        self.opens += 1;
        let file = open_kernel_file(&self.path).map_err(|e| classify(&self.path, e))?;
        let len = read_whole(&file, &mut self.buf, false).map_err(|e| classify(&self.path, e))?;
        Ok(&self.buf[..len])
    }

    /// Reads `dir/name` through `cache`: a kept descriptor when there is one, else opens the
    /// file and keeps it if the budget allows. `Ok(None)`: the file was absent at a recent
    /// read of this cgroup and was not looked up again.
    pub fn read_cached(
        &mut self,
        cache: &mut FileCache,
        dir: &Path,
        name: &'static str,
    ) -> Result<Option<&[u8]>, ReadError> {
        let dir_key = dir.as_os_str().as_encoded_bytes().as_ptr() as usize;
        if settled::is_settled(name) {
            if let Some(settled) = self.settled.clone() {
                if let Some(i) = self.settled_slot(&settled, cache, dir_key, dir, name) {
                    return self.read_settled(&settled, cache, i, dir, name);
                }
            }
        }
        if let Some(gate) = gated::gate_of(name) {
            if let Some(settled) = self.settled.clone() {
                match self.read_gated(&settled, cache, dir_key, dir, name, gate) {
                    Some(Ok(len)) => return Ok(len.map(|len| &self.buf[..len])),
                    Some(Err(e)) => return Err(e),
                    None => {}
                }
            }
        }
        if let Some(i) = cache.find(dir_key, name) {
            match &mut cache.slots[i].2 {
                Slot::Open(kept) => {
                    let result = read_whole(&kept.file, &mut self.buf, short_read_is_end(name));
                    return match result {
                        Ok(len) => Ok(Some(&self.buf[..len])),
                        // A failed descriptor is not trusted again: the next read reopens, or,
                        // for a file whose feature is off, waits as for an absent one.
                        Err(e) => Err(self.slot_failed(cache, i, dir, name, e)),
                    };
                }
                Slot::Absent { skip } if *skip > 0 => {
                    *skip -= 1;
                    return Ok(None);
                }
                Slot::Absent { .. }
                | Slot::Settled { .. }
                | Slot::Gated { .. }
                | Slot::Keyed { .. } => {
                    cache.slots.swap_remove(i);
                }
            }
        }
        self.set_path(dir, name);
        self.opens += 1;
        // Absent at the open, or its feature off at the read: either way not looked up again
        // for a while.
        let read = open_kernel_file(&self.path).and_then(|file| {
            read_whole(&file, &mut self.buf, short_read_is_end(name)).map(|len| (file, len))
        });
        let (file, len) = match read {
            Ok(read) => read,
            Err(e) => {
                let err = classify(&self.path, e);
                if matches!(err, ReadError::Missing(_)) {
                    let skip = ABSENT_RECHECK;
                    cache.push(name, dir_key, Slot::Absent { skip });
                }
                return Err(err);
            }
        };
        if let Some(kept) = self.budget.as_ref().and_then(|b| b.try_keep(file)) {
            cache.push(name, dir_key, Slot::Open(kept));
        }
        Ok(Some(&self.buf[..len]))
    }

    /// The settled slot that serves `dir/name`: the one it has (settled, or absent and not due
    /// for a look), or a new one when a watch could be added now (before its first read, so
    /// that no write is missed). None: it could not be watched and is read like any other file.
    fn settled_slot(
        &mut self,
        settled: &Arc<Settled>,
        cache: &mut FileCache,
        dir_key: usize,
        dir: &Path,
        name: &'static str,
    ) -> Option<usize> {
        if let Some(i) = cache.find(dir_key, name) {
            match &cache.slots[i].2 {
                Slot::Settled { watch, .. } if watch.is_dead() => {
                    cache.slots.swap_remove(i);
                }
                Slot::Settled { .. } | Slot::Absent { skip: 1.. } => return Some(i),
                Slot::Open(_) | Slot::Gated { .. } | Slot::Keyed { .. } => return None,
                Slot::Absent { skip: 0 } => {
                    cache.slots.swap_remove(i);
                }
            }
        }
        match settled.watch(dir, name) {
            Ok(Some(watch)) => {
                // Stamped as changed, so that the first read reads it.
                let stamp = settled.stamp(&watch).changed();
                let bytes = Box::default();
                cache.push(
                    name,
                    dir_key,
                    Slot::Settled {
                        bytes,
                        stamp,
                        watch,
                    },
                );
                Some(cache.slots.len() - 1)
            }
            Ok(None) | Err(_) => None,
        }
    }

    /// Reads settled file `name` through slot `i` (from [`Reader::settled_slot`]): what was
    /// read before if nothing was written to it since, else the file again, stamped before the
    /// read so that a write racing with it makes the next collection read it once more.
    fn read_settled(
        &mut self,
        settled: &Settled,
        cache: &mut FileCache,
        i: usize,
        dir: &Path,
        name: &'static str,
    ) -> Result<Option<&[u8]>, ReadError> {
        let (bytes, stamp, watch) = match &mut cache.slots[i].2 {
            Slot::Settled {
                bytes,
                stamp,
                watch,
            } => (bytes, stamp, watch),
            Slot::Absent { skip } => {
                *skip = skip.saturating_sub(1);
                return Ok(None);
            }
            // settled_slot hands out no kept file's slot.
            Slot::Open(_) | Slot::Gated { .. } | Slot::Keyed { .. } => return Ok(None),
        };
        if settled.is_current(watch, stamp) {
            let len = self.serve(bytes);
            return Ok(Some(&self.buf[..len]));
        }
        let before = settled.stamp(watch);
        match self.read_through(&mut None, dir, name, false) {
            Ok(len) => {
                store(bytes, &self.buf[..len]);
                *stamp = before;
                Ok(Some(&self.buf[..len]))
            }
            // Gone or its feature off: looked up (and watched) again later, as an absent file
            // is; any other failure: watched and read afresh next time.
            Err(e) => Err(self.slot_failed(cache, i, dir, name, e)),
        }
    }

    /// Reads gated counter `name` (see [`gated`]): what was read before while its setting
    /// stops it, else the file. None: the directory has no setting to go by (v2's `cpu.stat`;
    /// a setting that could not be watched), the counter cannot be watched, or it is absent:
    /// it is read as any other file. `Some(Ok(Some(len)))`: the content is `self.buf[..len]`.
    fn read_gated(
        &mut self,
        settled: &Arc<Settled>,
        cache: &mut FileCache,
        dir_key: usize,
        dir: &Path,
        name: &'static str,
        gate: &gated::Gate,
    ) -> Option<Result<Option<usize>, ReadError>> {
        // Some(at): the setting stops the counter, as read at `at` and not written since.
        let stopped_since = match cache.peek(dir_key, gate.setting)? {
            Slot::Settled {
                bytes,
                stamp,
                watch,
            } => (settled.is_current(watch, stamp) && (gate.stops)(bytes)).then(|| stamp.at()),
            _ => return None,
        };
        let watch_it = || match gate.reset_by_write {
            true => match settled.watch(dir, name) {
                Ok(Some(watch)) => Some(Some(watch)),
                Ok(None) | Err(_) => None,
            },
            false => Some(None),
        };
        let i = match cache.find(dir_key, name) {
            Some(i) => i,
            None => {
                // Watched before its first read, so that no reset is missed.
                let watch = watch_it()?;
                let stamp = settled.stamp_of(watch.as_ref()).changed();
                let bytes = Box::default();
                let kept = None;
                cache.push(
                    name,
                    dir_key,
                    Slot::Gated {
                        kept,
                        bytes,
                        stamp,
                        watch,
                    },
                );
                cache.slots.len() - 1
            }
        };
        let slot = &mut cache.slots[i].2;
        if let Slot::Open(_) = slot {
            // A file first read before its setting was: it keeps its descriptor.
            let watch = watch_it()?;
            let stamp = settled.stamp_of(watch.as_ref()).changed();
            let bytes = Box::default();
            let kept = take_open(slot);
            *slot = Slot::Gated {
                kept,
                bytes,
                stamp,
                watch,
            };
        }
        let Slot::Gated {
            kept,
            bytes,
            stamp,
            watch,
        } = slot
        else {
            // Absent: looked up again as any absent file is.
            return None;
        };
        if let Some(since) = stopped_since {
            if since < stamp.at() && settled.holds(watch.as_ref(), stamp) {
                // Nothing can change it: its descriptor's kernel memory is not needed.
                *kept = None;
                return Some(Ok(Some(self.serve(bytes))));
            }
        }
        let before = settled.stamp_of(watch.as_ref());
        match self.read_through(kept, dir, name, stopped_since.is_none()) {
            Ok(len) => {
                if stopped_since.is_some() {
                    // Read after the setting that stops it: good until either is written.
                    *kept = None;
                    store(bytes, &self.buf[..len]);
                    *stamp = before;
                } else {
                    // It may move: nothing of this read is served later.
                    *stamp = before.changed();
                }
                Some(Ok(Some(len)))
            }
            Err(e) => Some(Err(self.slot_failed(cache, i, dir, name, e))),
        }
    }

    /// Reads `dir/name`, a counter that moves only with a companion file read before it in
    /// the same collection (see [`companion`]), whose content gave `key`: while the key is the
    /// one of the last read (and that read is younger than the settled files' safety net),
    /// what that read gave, with no read and no descriptor. Without settled files
    /// (`[reader] watch_settled = false`) every read is made, as [`Reader::read_cached`] does.
    pub fn read_cached_keyed(
        &mut self,
        cache: &mut FileCache,
        dir: &Path,
        name: &'static str,
        key: u64,
    ) -> Result<Option<&[u8]>, ReadError> {
        let Some(refresh) = self.settled.as_ref().map(|s| s.refresh()) else {
            return self.read_cached(cache, dir, name);
        };
        let dir_key = dir.as_os_str().as_encoded_bytes().as_ptr() as usize;
        let i = match cache.find(dir_key, name) {
            Some(i) => i,
            None => {
                let (kept, bytes, at) = (None, Box::default(), Instant::now());
                cache.push(
                    name,
                    dir_key,
                    Slot::Keyed {
                        kept,
                        bytes,
                        key: None,
                        at,
                    },
                );
                cache.slots.len() - 1
            }
        };
        let slot = &mut cache.slots[i].2;
        if let Slot::Open(_) = slot {
            let (bytes, at) = (Box::default(), Instant::now());
            let kept = take_open(slot);
            *slot = Slot::Keyed {
                kept,
                bytes,
                key: None,
                at,
            };
        }
        let Slot::Keyed {
            kept,
            bytes,
            key: last_key,
            at,
        } = slot
        else {
            // Absent (or another kind of slot): as any other file.
            return self.read_cached(cache, dir, name);
        };
        if *last_key == Some(key) && at.elapsed() < refresh {
            *kept = None;
            let len = self.serve(bytes);
            return Ok(Some(&self.buf[..len]));
        }
        let before = Instant::now();
        match self.read_through(kept, dir, name, true) {
            Ok(len) => {
                store(bytes, &self.buf[..len]);
                (*last_key, *at) = (Some(key), before);
                Ok(Some(&self.buf[..len]))
            }
            Err(e) => Err(self.slot_failed(cache, i, dir, name, e)),
        }
    }

    /// Copies a stored content into the buffer, as a read would leave it; returns its length.
    fn serve(&mut self, bytes: &[u8]) -> usize {
        let len = bytes.len();
        if self.buf.len() < len {
            self.buf.resize(len, 0);
        }
        self.buf[..len].copy_from_slice(bytes);
        len
    }

    /// The error of a failed read of `dir/name` through slot `i`, which the cache marks as
    /// failed ([`FileCache::failed`]).
    fn slot_failed(
        &mut self,
        cache: &mut FileCache,
        i: usize,
        dir: &Path,
        name: &str,
        e: std::io::Error,
    ) -> ReadError {
        self.set_path(dir, name);
        let err = classify(&self.path, e);
        cache.failed(i, &err);
        err
    }

    /// Reads `dir/name` through `kept` when it holds a descriptor, else opens it, keeping the
    /// descriptor in `kept` if `keep` and the budget allow. Returns the length read into the
    /// buffer.
    fn read_through(
        &mut self,
        kept: &mut Option<KeptFile>,
        dir: &Path,
        name: &str,
        keep: bool,
    ) -> std::io::Result<usize> {
        let short_is_end = short_read_is_end(name);
        if let Some(file) = kept {
            return read_whole(&file.file, &mut self.buf, short_is_end);
        }
        self.set_path(dir, name);
        self.opens += 1;
        let file = open_kernel_file(&self.path)?;
        let len = read_whole(&file, &mut self.buf, short_is_end)?;
        if keep {
            *kept = self.budget.as_ref().and_then(|b| b.try_keep(file));
        }
        Ok(len)
    }

    /// The path of the last read, for error messages.
    pub fn last_path(&self) -> &Path {
        &self.path
    }

    pub fn take_opens(&mut self) -> u64 {
        std::mem::take(&mut self.opens)
    }

    pub fn budget(&self) -> Option<&FdBudget> {
        self.budget.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        for (name, body) in files {
            std::fs::write(d.path().join(name), body).expect("write");
        }
        d
    }

    #[test]
    fn a_fifo_or_a_device_in_place_of_a_kernel_file_is_an_error_not_a_hang() {
        let d = dir_with(&[("cpu.stat", "usage_usec 1\n")]);
        nix::unistd::mkfifo(&d.path().join("memory.stat"), nix::sys::stat::Mode::S_IRUSR)
            .expect("mkfifo");
        std::os::unix::fs::symlink("/dev/zero", d.path().join("io.stat")).expect("symlink");
        // A link to a regular file outside the tree is not followed either.
        let outside = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(outside.path(), "secret 1\n").expect("write");
        std::os::unix::fs::symlink(outside.path(), d.path().join("pids.max")).expect("symlink");
        let mut reader = Reader::new(Some(FdBudget::new(8)));
        let mut cache = FileCache::default();
        // No writer ever opens the FIFO: a blocking open would never return.
        for (name, why) in [
            ("memory.stat", "not a regular file"),
            ("io.stat", "symbolic link"),
            ("pids.max", "symbolic link"),
        ] {
            for _ in 0..2 {
                match reader.read_cached(&mut cache, d.path(), name) {
                    Err(ReadError::Io { path, source }) => {
                        assert_eq!(path, d.path().join(name));
                        assert!(source.to_string().contains(why), "{name}: {source}");
                    }
                    other => panic!("{name}: {other:?}"),
                }
            }
            assert!(matches!(
                reader.read(d.path(), name),
                Err(ReadError::Io { .. })
            ));
        }
        // The regular file beside them still reads, and nothing was kept for the others.
        let got = reader
            .read_cached(&mut cache, d.path(), "cpu.stat")
            .expect("read");
        assert_eq!(got, Some(&b"usage_usec 1\n"[..]));
        assert_eq!(cache.open_count(), 1);
    }

    #[test]
    fn kept_numbers_are_the_open_kept_descriptors() {
        let d = dir_with(&[("a.stat", "1"), ("b.stat", "2"), ("c.stat", "3")]);
        let budget = FdBudget::new(2);
        let mut reader = Reader::new(Some(budget.clone()));
        let mut cache = FileCache::default();
        for name in ["a.stat", "b.stat", "c.stat"] {
            reader
                .read_cached(&mut cache, d.path(), name)
                .expect("read");
        }
        let open: Vec<usize> = std::fs::read_dir("/proc/self/fd")
            .expect("fd dir")
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        {
            let kept = budget.kept_numbers();
            // Two kept (the budget), the third opened and closed.
            assert_eq!(kept.count(), 2);
            let numbers: Vec<usize> = (0..kept.end()).filter(|n| kept.contains(*n)).collect();
            assert_eq!(numbers.len(), 2);
            assert!(
                numbers.iter().all(|n| open.contains(n)),
                "{numbers:?} in {open:?}"
            );
            assert_eq!(kept.end(), numbers[1] + 1);
        }
        drop(cache);
        let kept = budget.kept_numbers();
        assert_eq!((kept.count(), kept.end()), (0, 0));
    }

    #[test]
    fn kept_descriptor_sees_new_content_and_budget_is_returned() {
        let d = dir_with(&[("a", "1\n"), ("b", "2\n")]);
        let dir = d.path().to_path_buf();
        let budget = FdBudget::new(1);
        let mut r = Reader::new(Some(budget.clone()));
        let mut cache = FileCache::default();
        let read = |r: &mut Reader, cache: &mut FileCache, name| {
            r.read_cached(cache, &dir, name)
                .expect("read")
                .expect("present")
                .to_vec()
        };
        assert_eq!(read(&mut r, &mut cache, "a"), b"1\n");
        assert_eq!(read(&mut r, &mut cache, "b"), b"2\n");
        // Only one fits the budget.
        assert_eq!(cache.open_count(), 1);
        assert_eq!(budget.in_use(), 1);
        // Rewritten in place: a pread at 0 sees the new bytes through the kept descriptor.
        std::fs::write(dir.join("a"), "333\n").expect("rewrite");
        assert_eq!(read(&mut r, &mut cache, "a"), b"333\n");
        assert_eq!(
            r.take_opens(),
            2,
            "the second read of a reused the descriptor"
        );
        drop(cache);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn a_feature_switched_off_reads_as_absent_and_only_real_failures_are_errors() {
        let path = Path::new("/sys/fs/cgroup/unified/x/cpu.pressure");
        let kind = |errno| match classify(path, std::io::Error::from_raw_os_error(errno)) {
            ReadError::Missing(p) => ("missing", p),
            ReadError::Vanished(p) => ("vanished", p),
            ReadError::Io { path, .. } => ("io", path),
        };
        // ENOENT, EOPNOTSUPP (PSI off at boot), ENODEV, ESRCH, EIO, EACCES.
        for (errno, want) in [
            (2, "missing"),
            (95, "missing"),
            (19, "vanished"),
            (3, "vanished"),
            (5, "io"),
            (13, "io"),
        ] {
            assert_eq!(kind(errno), (want, path.to_path_buf()), "errno {errno}");
        }
    }

    #[test]
    fn absent_files_are_not_looked_up_every_time() {
        let d = dir_with(&[]);
        let dir = d.path().to_path_buf();
        let mut r = Reader::new(Some(FdBudget::new(8)));
        let mut cache = FileCache::default();
        assert!(matches!(
            r.read_cached(&mut cache, &dir, "x"),
            Err(ReadError::Missing(_))
        ));
        std::fs::write(dir.join("x"), "5\n").expect("write");
        for _ in 0..ABSENT_RECHECK {
            assert!(matches!(r.read_cached(&mut cache, &dir, "x"), Ok(None)));
        }
        assert_eq!(
            r.read_cached(&mut cache, &dir, "x").expect("read"),
            Some(&b"5\n"[..])
        );
    }

    /// procfs iterators hand out about a page per read: `/proc/self/smaps` is many pages (one
    /// record per mapping), and its last mapping (`[vdso]`, `[vsyscall]`, ...) is only seen by a
    /// reader that reads on after a short read.
    #[test]
    fn files_served_a_page_at_a_time_are_read_to_their_end() {
        let want = std::fs::read("/proc/self/smaps").expect("smaps");
        assert!(want.len() > 8192, "smaps is only {} bytes", want.len());
        // The last mapping's header line ("start-end perms offset dev inode path").
        let last_line = |b: &[u8]| {
            let text = String::from_utf8_lossy(b).into_owned();
            text.lines()
                .rfind(|l| {
                    let first = l.split(' ').next().unwrap_or("");
                    first.contains('-') && first.bytes().all(|c| c.is_ascii_hexdigit() || c == b'-')
                })
                .map(str::to_owned)
        };
        let proc_self = Path::new("/proc/self");
        let mut r = Reader::new(Some(FdBudget::new(4)));
        let plain = r.read(proc_self, "smaps").expect("read").to_vec();
        assert_eq!(last_line(&plain), last_line(&want), "read()");
        let mut cache = FileCache::default();
        for round in 0..2 {
            let cached = r
                .read_cached(&mut cache, proc_self, "smaps")
                .expect("read")
                .expect("present")
                .to_vec();
            assert_eq!(
                last_line(&cached),
                last_line(&want),
                "read_cached, round {round}"
            );
        }
        assert_eq!(
            cache.open_count(),
            1,
            "the second round used the kept descriptor"
        );
    }

    #[test]
    fn only_single_record_cgroup_files_end_at_a_short_read() {
        for name in [
            "memory.stat",
            "cpu.stat",
            "io.stat",
            "memory.pressure",
            "pids.max",
        ] {
            assert!(short_read_is_end(name), "{name}");
        }
        for name in ["cgroup.procs", "cgroup.threads", "tasks", "dev", "maps"] {
            assert!(!short_read_is_end(name), "{name}");
        }
    }

    #[test]
    fn a_file_past_the_cap_is_an_error_and_the_buffer_shrinks() {
        let mut r = Reader::new(None);
        // A regular file past the cap (sparse: no disk is written).
        let d = dir_with(&[]);
        let big = std::fs::File::create(d.path().join("huge")).expect("create");
        big.set_len(MAX_FILE_BYTES as u64 + 1).expect("set_len");
        match r.read(d.path(), "huge") {
            Err(ReadError::Io { path, source }) => {
                assert_eq!(path, d.path().join("huge"));
                assert!(source.to_string().contains("longer than"), "{source}");
            }
            other => panic!("expected an I/O error, got {:?}", other.map(<[u8]>::len)),
        }
        assert!(r.buf.capacity() <= 64 * 1024, "{}", r.buf.capacity());
    }

    #[test]
    fn large_files_are_read_whole() {
        let body: String = (0..20_000).map(|i| format!("k{i} {i}\n")).collect();
        let d = dir_with(&[("big", &body)]);
        let mut r = Reader::new(None);
        assert_eq!(
            r.read(d.path(), "big").expect("big").len(),
            body.len(),
            "reads past the first buffer"
        );
    }
}
